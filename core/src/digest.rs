//! Whole-file digests computed in one pass: SHA-256 (for interoperability with `sha256sum` and
//! the wider ecosystem) and BLAKE3 (fast, and what the Merkle tree is built from). Both the CLI
//! and the daemon use this one type, so they cannot disagree on what a file's digest is.

use crate::id::{Blake3Digest, Sha256Digest};

/// Streaming hasher for a file's SHA-256 and BLAKE3. SHA-256 comes from ring because its
/// assembly is about twice as fast as portable code on CPUs without SHA extensions, and SHA-256
/// is the slowest step of a push.
pub struct FileHasher {
    sha256: ring::digest::Context,
    blake3: blake3::Hasher,
    len: u64,
}

/// The result of hashing one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigests {
    pub size: u64,
    pub sha256: Sha256Digest,
    pub blake3: Blake3Digest,
}

impl Default for FileHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl FileHasher {
    pub fn new() -> Self {
        Self {
            sha256: ring::digest::Context::new(&ring::digest::SHA256),
            blake3: blake3::Hasher::new(),
            len: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        self.blake3.update(data);
        self.len += data.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> FileDigests {
        let mut sha = [0u8; 32];
        sha.copy_from_slice(self.sha256.finish().as_ref());
        FileDigests {
            size: self.len,
            sha256: Sha256Digest(sha),
            blake3: Blake3Digest(*self.blake3.finalize().as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        let mut h = FileHasher::new();
        h.update(b"abc");
        let d = h.finish();
        assert_eq!(d.size, 3);
        assert_eq!(
            d.sha256.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            d.blake3.to_hex(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }
}
