//! Ed25519 signatures over a version: what exactly is signed, and the key file formats.
//!
//! The signed message is `"arca.version-signature.v1" || 0x00 || merkle_root || metadata_digest`
//! (32 + 32 bytes). Verification uses `verify_strict`, which rejects small-order keys and
//! non-canonical signatures.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::id::{MerkleRoot, MetadataDigest};

const VERSION_SIG_TAG: &[u8] = b"arca.version-signature.v1\0";
const APPROVAL_SIG_TAG: &[u8] = b"arca.approval.v1\0";
const SECRET_PREFIX: &str = "arca-ed25519-secret-v1:";
const PUBLIC_PREFIX: &str = "arca-ed25519-v1:";

/// Errors from key handling and verification. A failed verification is one opaque variant on
/// purpose: callers must not branch on why a signature is bad.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("not an arca public key (expected {PUBLIC_PREFIX}<64 hex>)")]
    BadPublicKey,
    #[error("not an arca secret key file")]
    BadSecretKey,
    #[error("not a signature (expected 128 hex characters)")]
    BadSignature,
    #[error("signature does not verify")]
    Invalid,
    #[error("the operating system's random source failed")]
    Random,
}

/// A publisher's public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Short fingerprint for listings: the first 16 hex characters of BLAKE3 of the key.
    pub fn fingerprint(&self) -> String {
        hex::encode(&blake3::hash(self.0.as_bytes()).as_bytes()[..8])
    }

    pub fn from_bytes(b: &[u8; 32]) -> Result<Self, SignError> {
        VerifyingKey::from_bytes(b)
            .map(Self)
            .map_err(|_| SignError::BadPublicKey)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Checks an approval (see `approval_message`).
    pub fn verify_approval(
        &self,
        msg: &ApprovalMessage<'_>,
        sig: &Signature,
    ) -> Result<(), SignError> {
        self.0
            .verify_strict(&msg.bytes(), &sig.0)
            .map_err(|_| SignError::Invalid)
    }

    /// Checks a signature made by `SecretKey::sign_message`.
    pub fn verify_message(&self, tagged: &[u8], sig: &Signature) -> Result<(), SignError> {
        self.0
            .verify_strict(tagged, &sig.0)
            .map_err(|_| SignError::Invalid)
    }

    pub fn verify_version(
        &self,
        root: &MerkleRoot,
        meta: &MetadataDigest,
        sig: &Signature,
    ) -> Result<(), SignError> {
        self.0
            .verify_strict(&version_message(root, meta), &sig.0)
            .map_err(|_| SignError::Invalid)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", hex::encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl FromStr for PublicKey {
    type Err = SignError;
    fn from_str(s: &str) -> Result<Self, SignError> {
        let h = s
            .trim()
            .strip_prefix(PUBLIC_PREFIX)
            .ok_or(SignError::BadPublicKey)?;
        let mut b = [0u8; 32];
        hex::decode_to_slice(h, &mut b).map_err(|_| SignError::BadPublicKey)?;
        VerifyingKey::from_bytes(&b)
            .map(Self)
            .map_err(|_| SignError::BadPublicKey)
    }
}

/// An Ed25519 signature.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature(ed25519_dalek::Signature);

impl Signature {
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0.to_bytes()
    }

    pub fn from_bytes(b: &[u8; 64]) -> Self {
        Self(ed25519_dalek::Signature::from_bytes(b))
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.to_bytes()))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl FromStr for Signature {
    type Err = SignError;
    fn from_str(s: &str) -> Result<Self, SignError> {
        let mut b = [0u8; 64];
        hex::decode_to_slice(s.trim(), &mut b).map_err(|_| SignError::BadSignature)?;
        Ok(Self(ed25519_dalek::Signature::from_bytes(&b)))
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(PublicKey);
serde_via_str!(Signature);

/// A publisher's secret key. ed25519-dalek zeroizes it on drop; it has no Debug or Display.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, SignError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|_| SignError::Random)?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn sign_version(&self, root: &MerkleRoot, meta: &MetadataDigest) -> Signature {
        Signature(self.0.sign(&version_message(root, meta)))
    }

    pub fn sign_approval(&self, msg: &ApprovalMessage<'_>) -> Signature {
        Signature(self.0.sign(&msg.bytes()))
    }

    /// Signs a message that begins with its own domain tag (such as an audit checkpoint's), so
    /// it can never be mistaken for a version or an approval signature.
    pub fn sign_message(&self, tagged: &[u8]) -> Signature {
        Signature(self.0.sign(tagged))
    }

    /// The key whose seed is `seed` (the daemon keeps its audit key's seed wrapped by the KEK).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The key file's text: one line, `arca-ed25519-secret-v1:<64 hex>`.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{SECRET_PREFIX}{}\n",
            hex::encode(self.0.to_bytes())
        ))
    }

    pub fn from_file_text(s: &str) -> Result<Self, SignError> {
        let h = s
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SignError::BadSecretKey)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(h, seed.as_mut()).map_err(|_| SignError::BadSecretKey)?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }
}

/// What an approver signs: consent that this exact version (by its Merkle root) goes to
/// `target` under `ticket`.
#[derive(Clone, Copy)]
pub struct ApprovalMessage<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub root: &'a MerkleRoot,
    pub ticket: &'a str,
    pub target: &'a str,
}

impl ApprovalMessage<'_> {
    /// `"arca.approval.v1\0"`, then name, version, root (32 bytes), ticket and target, each
    /// variable-length field preceded by its length as u32 LE.
    pub fn bytes(&self) -> Vec<u8> {
        let mut m = APPROVAL_SIG_TAG.to_vec();
        for (i, f) in [
            self.name.as_bytes(),
            self.version.as_bytes(),
            &self.root.0,
            self.ticket.as_bytes(),
            self.target.as_bytes(),
        ]
        .into_iter()
        .enumerate()
        {
            if i != 2 {
                m.extend_from_slice(&(f.len() as u32).to_le_bytes());
            }
            m.extend_from_slice(f);
        }
        m
    }
}

fn version_message(root: &MerkleRoot, meta: &MetadataDigest) -> Vec<u8> {
    let mut m = Vec::with_capacity(VERSION_SIG_TAG.len() + 64);
    m.extend_from_slice(VERSION_SIG_TAG);
    m.extend_from_slice(root.as_bytes());
    m.extend_from_slice(meta.as_bytes());
    m
}

crate::schema::string_schema!(
    PublicKey,
    "PublicKey",
    crate::schema::string(
        "An Ed25519 public key: arca-ed25519-v1: and its 32 bytes as 64 hex digits (surrounding white space is ignored); it must be a valid curve point",
        r"^\s*arca-ed25519-v1:[0-9a-fA-F]{64}\s*$",
        None,
        "arca-ed25519-v1:3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
    )
);
crate::schema::string_schema!(
    Signature,
    "Signature",
    crate::schema::string(
        "An Ed25519 signature: 64 bytes as 128 hex digits (surrounding white space is ignored)",
        r"^\s*[0-9a-fA-F]{128}\s*$",
        None,
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    )
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Project Wycheproof's Ed25519 vectors through `verify_message` (verify_strict): valid
    /// signatures verify; every invalid one (malleable, truncated, wrong encoding, …) is refused,
    /// whether at parsing the key or signature or at verification.
    #[test]
    fn wycheproof_ed25519() {
        use wycheproof::eddsa::{TestName, TestSet};
        use wycheproof::TestResult;
        let set = TestSet::load(TestName::Ed25519).unwrap();
        let (mut valid, mut invalid) = (0, 0);
        for g in &set.test_groups {
            let key: Option<PublicKey> = format!("{PUBLIC_PREFIX}{}", hex::encode(&g.key.pk[..]))
                .parse()
                .ok();
            for t in &g.tests {
                let sig: Option<Signature> = if t.sig.len() == 64 {
                    hex::encode(&t.sig[..]).parse().ok()
                } else {
                    None
                };
                let ok = match (&key, &sig) {
                    (Some(k), Some(s)) => k.verify_message(&t.msg, s).is_ok(),
                    _ => false,
                };
                match t.result {
                    TestResult::Valid => {
                        assert!(ok, "tc {} ({}) refused", t.tc_id, t.comment);
                        valid += 1;
                    }
                    _ => {
                        assert!(!ok, "tc {} ({}) accepted", t.tc_id, t.comment);
                        invalid += 1;
                    }
                }
            }
        }
        assert!(
            valid > 0 && invalid > 0,
            "{valid} valid, {invalid} invalid vectors"
        );
    }

    #[test]
    fn sign_verify_and_tamper() {
        let k = SecretKey::generate().unwrap();
        let root = MerkleRoot([1; 32]);
        let meta = MetadataDigest([2; 32]);
        let sig = k.sign_version(&root, &meta);
        let pk: PublicKey = k.public().to_string().parse().unwrap();
        pk.verify_version(&root, &meta, &sig).unwrap();
        assert!(pk
            .verify_version(&MerkleRoot([3; 32]), &meta, &sig)
            .is_err());
        assert!(pk
            .verify_version(&root, &MetadataDigest([3; 32]), &sig)
            .is_err());
        let other = SecretKey::generate().unwrap().public();
        assert!(other.verify_version(&root, &meta, &sig).is_err());
        let sig2: Signature = sig.to_string().parse().unwrap();
        assert_eq!(sig, sig2);
    }

    #[test]
    fn approvals_bind_every_field() {
        let k = SecretKey::generate().unwrap();
        let root = MerkleRoot([1; 32]);
        let m = ApprovalMessage {
            name: "m",
            version: "1.0.0",
            root: &root,
            ticket: "T-1",
            target: "production",
        };
        let sig = k.sign_approval(&m);
        k.public().verify_approval(&m, &sig).unwrap();
        let other_root = MerkleRoot([2; 32]);
        for bad in [
            ApprovalMessage { name: "n", ..m },
            ApprovalMessage {
                version: "1.0.1",
                ..m
            },
            ApprovalMessage {
                root: &other_root,
                ..m
            },
            ApprovalMessage { ticket: "T-2", ..m },
            ApprovalMessage {
                target: "staging",
                ..m
            },
        ] {
            assert!(k.public().verify_approval(&bad, &sig).is_err());
        }
    }

    #[test]
    fn key_file_round_trip() {
        let k = SecretKey::generate().unwrap();
        let text = k.to_file_text();
        let k2 = SecretKey::from_file_text(&text).unwrap();
        assert_eq!(k.public(), k2.public());
        assert!(SecretKey::from_file_text("garbage").is_err());
        assert!("arca-ed25519-v1:00".parse::<PublicKey>().is_err());
    }
}
