//! The signed part of a version's manifest: one entry per file and the Merkle root over them.
//!
//! The tree follows RFC 6962 (Certificate Transparency): leaves and inner nodes are hashed with
//! different prefixes, and a level with an odd number of nodes is split at the largest power of
//! two rather than padded by repeating the last node, so no two different file lists share a root.
//! The exact bytes are in docs/format.md.

use crate::id::{Blake3Digest, MerkleRoot, Sha256Digest};
use crate::name::RelPath;

/// What the publisher attests for one file. Chunk lists are not part of it: chunk ids are keyed
/// with the store's secret, which the publisher never sees.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FileEntry {
    pub path: RelPath,
    pub size: u64,
    /// Unix permission bits: 0o644 or 0o755 (`FILE_MODES`) for every version committed since
    /// that rule; older records may hold any mode up to 0o7777, which readers mask (docs/format.md).
    pub mode: u32,
    pub sha256: Sha256Digest,
    pub blake3: Blake3Digest,
}

/// Why a file list has no root.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("a version needs at least one file")]
    Empty,
    #[error("file {0} appears twice")]
    Duplicate(String),
    #[error("file {0} and directory {0} cannot both exist")]
    FileIsDirectory(String),
    #[error("file {0}: mode {1:o} has bits beyond 0o7777")]
    BadMode(String, u32),
}

/// The only modes a new version's file may carry: a plain file or an executable one. No setuid,
/// setgid or sticky bit, no group or world write, nothing a copy made by root could turn into a
/// privilege.
pub const FILE_MODES: [u32; 2] = [0o644, 0o755];

/// The allowed mode closest to `mode`: 0o755 if the owner may execute the file, else 0o644 (as
/// git records modes).
pub fn normalise_mode(mode: u32) -> u32 {
    if mode & 0o100 != 0 {
        0o755
    } else {
        0o644
    }
}

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;
const LEAF_TAG: &[u8] = b"arca.file.v1";

impl FileEntry {
    /// The leaf's bytes: tag, then path length (u32 LE) and path, size (u64 LE), mode (u32 LE),
    /// SHA-256 (32 bytes), BLAKE3 (32 bytes).
    pub fn leaf_bytes(&self) -> Vec<u8> {
        let p = self.path.as_str().as_bytes();
        let mut out = Vec::with_capacity(LEAF_TAG.len() + 4 + p.len() + 8 + 4 + 64);
        out.extend_from_slice(LEAF_TAG);
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.mode.to_le_bytes());
        out.extend_from_slice(self.sha256.as_bytes());
        out.extend_from_slice(self.blake3.as_bytes());
        out
    }

    fn leaf_hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&[LEAF_PREFIX]);
        h.update(&self.leaf_bytes());
        h.finalize().into()
    }
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

fn subtree_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves {
        [one] => *one,
        _ => {
            // Largest power of two strictly less than n (n >= 2).
            let k = 1usize << (usize::BITS - 1 - (leaves.len() - 1).leading_zeros());
            node_hash(&subtree_root(&leaves[..k]), &subtree_root(&leaves[k..]))
        }
    }
}

/// Sorts the entries by path (byte order), checks that they form a valid tree of files, and
/// returns the Merkle root. Both the CLI and the daemon call exactly this.
pub fn merkle_root(entries: &mut [FileEntry]) -> Result<MerkleRoot, ManifestError> {
    if entries.is_empty() {
        return Err(ManifestError::Empty);
    }
    entries.sort_by(|a, b| a.path.as_str().as_bytes().cmp(b.path.as_str().as_bytes()));
    for w in entries.windows(2) {
        if w[0].path == w[1].path {
            return Err(ManifestError::Duplicate(w[0].path.to_string()));
        }
    }
    check_no_file_is_a_directory(entries)?;
    if let Some(e) = entries.iter().find(|e| e.mode & !0o7777 != 0) {
        return Err(ManifestError::BadMode(e.path.to_string(), e.mode));
    }
    let leaves: Vec<[u8; 32]> = entries.iter().map(FileEntry::leaf_hash).collect();
    Ok(MerkleRoot(subtree_root(&leaves)))
}

/// `a` and `a/b` cannot both be files: the mount could not show them.
fn check_no_file_is_a_directory(entries: &[FileEntry]) -> Result<(), ManifestError> {
    let files: std::collections::HashSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    for e in entries {
        let p = e.path.as_str();
        for (i, _) in p.match_indices('/') {
            if files.contains(&p[..i]) {
                return Err(ManifestError::FileIsDirectory(p[..i].to_owned()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(path: &str, byte: u8) -> FileEntry {
        FileEntry {
            path: path.parse().unwrap(),
            size: byte as u64,
            mode: 0o644,
            sha256: Sha256Digest([byte; 32]),
            blake3: Blake3Digest([byte; 32]),
        }
    }

    #[test]
    fn order_independent_and_sensitive_to_every_field() {
        let mut a = vec![entry("b", 1), entry("a", 2), entry("c/d", 3)];
        let mut b = vec![entry("c/d", 3), entry("b", 1), entry("a", 2)];
        let ra = merkle_root(&mut a).unwrap();
        assert_eq!(ra, merkle_root(&mut b).unwrap());
        let mut c = a.clone();
        c[0].mode = 0o600;
        assert_ne!(ra, merkle_root(&mut c).unwrap());
    }

    #[test]
    fn no_duplicated_last_node_weakness() {
        // With the "duplicate the last node" construction, [x, y, z] and [x, y, z, z] share a root.
        let mut three = vec![entry("a", 1), entry("b", 2), entry("c", 3)];
        let mut four = vec![entry("a", 1), entry("b", 2), entry("c", 3), entry("d", 3)];
        four[3].path = "d".parse().unwrap();
        assert_ne!(
            merkle_root(&mut three).unwrap(),
            merkle_root(&mut four).unwrap()
        );
    }

    #[test]
    fn rejects_bad_lists() {
        assert_eq!(merkle_root(&mut []), Err(ManifestError::Empty));
        assert!(matches!(
            merkle_root(&mut [entry("a", 1), entry("a", 2)]),
            Err(ManifestError::Duplicate(_))
        ));
        assert!(matches!(
            merkle_root(&mut [entry("a", 1), entry("a/b", 2)]),
            Err(ManifestError::FileIsDirectory(_))
        ));
    }

    #[test]
    fn modes_normalise_to_the_two_allowed() {
        for (m, want) in [
            (0o644, 0o644),
            (0o755, 0o755),
            (0o4755, 0o755),
            (0o2711, 0o755),
            (0o1777, 0o755),
            (0o777, 0o755),
            (0o666, 0o644),
            (0o600, 0o644),
            (0o070, 0o644),
            (0o0, 0o644),
        ] {
            assert_eq!(normalise_mode(m), want, "{m:o}");
        }
        for m in 0..=0o7777 {
            assert!(FILE_MODES.contains(&normalise_mode(m)));
        }
    }

    #[test]
    fn golden_root() {
        // Pinned so that an accidental change of the leaf or node encoding fails loudly.
        let mut v = vec![entry("a", 1), entry("b", 2), entry("c", 3)];
        let root = merkle_root(&mut v).unwrap();
        assert_eq!(
            root.to_hex(),
            include_str!("../testdata/golden_root_abc.hex").trim()
        );
    }

    proptest! {
        #[test]
        fn distinct_lists_distinct_roots(n in 1usize..40, flip in 0usize..40) {
            let mut v: Vec<FileEntry> = (0..n).map(|i| entry(&format!("f{i:03}"), i as u8)).collect();
            let r1 = merkle_root(&mut v).unwrap();
            let mut w = v.clone();
            let i = flip % n;
            w[i].size += 1;
            prop_assert_ne!(r1, merkle_root(&mut w).unwrap());
            w.pop();
            if !w.is_empty() {
                prop_assert_ne!(r1, merkle_root(&mut w).unwrap());
            }
        }
    }
}
