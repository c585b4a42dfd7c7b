//! The key hierarchy. A key-encryption key (KEK) lives in a file outside the database; it wraps
//! the data keys (DEKs, which seal chunks and records) and the id key (which keys chunk ids, row
//! keys and the chunker's seed). Only wrapped keys are stored; every key type zeroizes on drop,
//! has no Debug or Display, and never reaches a log or an error message.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

const KEK_PREFIX: &str = "arca-kek-v1:";
const WRAP_TAG: &[u8] = b"arca.wrap.v1";

/// Errors from loading or unwrapping keys. None of them carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {0} is readable or writable by group or others (mode {1:o}); run: chmod 600 {0}"
    )]
    Permissions(PathBuf, u32),
    #[error("key file {0} is owned by uid {1}, not by the daemon's uid {2}")]
    Owner(PathBuf, u32, u32),
    #[error(
        "key file {0} is not an arca key-encryption key (expected one line {KEK_PREFIX}<64 hex>)"
    )]
    Format(PathBuf),
    #[error("the key-encryption key does not open this store's keys: wrong key file, or the store's key records are damaged")]
    WrongKek,
    #[error("a wrapped key record is malformed")]
    Malformed,
    #[error("the operating system's random source failed")]
    Random,
}

/// 32 secret bytes that zeroize on drop (every copy: a clone is zeroized on its own drop).
#[derive(Clone)]
pub struct SecretBytes(Zeroizing<[u8; 32]>);

impl SecretBytes {
    pub fn random() -> Result<Self, KeyError> {
        let mut b = Zeroizing::new([0u8; 32]);
        getrandom::fill(b.as_mut()).map_err(|_| KeyError::Random)?;
        Ok(Self(b))
    }

    pub fn from_array(b: [u8; 32]) -> Self {
        let mut z = Zeroizing::new([0u8; 32]);
        z.copy_from_slice(&b);
        // `b` was passed by value; the caller's copy is its own to clear.
        Self(z)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The key-encryption key.
pub struct Kek(SecretBytes);

impl Kek {
    /// Reads the KEK file, refusing one that others could read or that another user owns.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions(path.to_owned(), mode));
        }
        let euid = nix::unistd::geteuid().as_raw();
        if meta.uid() != euid {
            return Err(KeyError::Owner(path.to_owned(), meta.uid(), euid));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let hex_part = text
            .trim()
            .strip_prefix(KEK_PREFIX)
            .ok_or_else(|| KeyError::Format(path.to_owned()))?;
        let mut b = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_part, b.as_mut())
            .map_err(|_| KeyError::Format(path.to_owned()))?;
        Ok(Self(SecretBytes(b)))
    }

    /// Creates a new KEK file with mode 0600; fails if the file exists.
    pub fn generate_file(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let key = SecretBytes::random()?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let text = Zeroizing::new(format!("{KEK_PREFIX}{}\n", hex::encode(key.expose())));
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(Self(key))
    }

    /// Wraps `key` for storage under the record name `label` (bound as associated data, so a
    /// wrapped key cannot be moved to another name). Layout: nonce (24) || ciphertext (32) || tag (16).
    pub fn wrap(&self, label: &str, key: &SecretBytes) -> Result<Vec<u8>, KeyError> {
        let cipher = XChaCha20Poly1305::new(self.0.expose().into());
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|_| KeyError::Random)?;
        let mut buf = Zeroizing::new(key.expose().to_vec());
        let tag = cipher
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                &wrap_aad(label),
                buf.as_mut_slice(),
            )
            .map_err(|_| KeyError::Malformed)?;
        let mut out = Vec::with_capacity(24 + 32 + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    pub fn unwrap_key(&self, label: &str, wrapped: &[u8]) -> Result<SecretBytes, KeyError> {
        if wrapped.len() != 24 + 32 + 16 {
            return Err(KeyError::Malformed);
        }
        let cipher = XChaCha20Poly1305::new(self.0.expose().into());
        let mut buf = Zeroizing::new([0u8; 32]);
        buf.copy_from_slice(&wrapped[24..56]);
        cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(&wrapped[..24]),
                &wrap_aad(label),
                buf.as_mut(),
                wrapped[56..].into(),
            )
            .map_err(|_| KeyError::WrongKek)?;
        Ok(SecretBytes(buf))
    }
}

fn wrap_aad(label: &str) -> Vec<u8> {
    let mut aad = WRAP_TAG.to_vec();
    aad.extend_from_slice(label.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_round_trip_and_binding() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kek");
        let kek = Kek::generate_file(&p).unwrap();
        let dek = SecretBytes::random().unwrap();
        let w = kek.wrap("dek/1", &dek).unwrap();
        assert_eq!(kek.unwrap_key("dek/1", &w).unwrap().expose(), dek.expose());
        assert!(matches!(
            kek.unwrap_key("dek/2", &w),
            Err(KeyError::WrongKek)
        ));
        let other = Kek::generate_file(&dir.path().join("kek2")).unwrap();
        assert!(matches!(
            other.unwrap_key("dek/1", &w),
            Err(KeyError::WrongKek)
        ));
        let loaded = Kek::load(&p).unwrap();
        assert_eq!(
            loaded.unwrap_key("dek/1", &w).unwrap().expose(),
            dek.expose()
        );
    }

    #[test]
    fn refuses_readable_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kek");
        Kek::generate_file(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Kek::load(&p).err().unwrap();
        assert!(matches!(e, KeyError::Permissions(_, 0o644)), "{e}");
        assert!(e.to_string().contains("chmod 600"));
    }
}
