//! Fixed-size digests and ids as newtypes, so a chunk id can never be passed where a file digest is
//! expected. All of them print and parse as lowercase hex and serialize as hex strings.

use std::fmt;
use std::str::FromStr;

/// Error for a hex string that is not a valid 32-byte id.
#[derive(Debug, thiserror::Error)]
#[error("expected 64 hex characters, got {0:?}")]
pub struct ParseIdError(String);

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), hex::encode(self.0))
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError(s.chars().take(80).collect()))?;
                Ok(Self(out))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// Content address of a chunk: BLAKE3 keyed with the store's id key over the plaintext. Without
    /// the key an id reveals nothing about the content.
    ChunkId
);
id_type!(
    /// SHA-256 of a whole file.
    Sha256Digest
);
id_type!(
    /// Unkeyed BLAKE3 of a whole file.
    Blake3Digest
);
id_type!(
    /// Root of the Merkle tree over a version's file entries (see docs/format.md).
    MerkleRoot
);
id_type!(
    /// Digest of a version's publisher-supplied metadata in canonical form.
    MetadataDigest
);
id_type!(
    /// BLAKE3 of an audit event's canonical encoding (which includes the previous event's hash).
    EventHash
);
id_type!(
    /// The row key of a sealed record in the store: BLAKE3 keyed with the store's id key over the
    /// record's kind and natural key (model name and version, model, uid and key, …).
    RowKey
);
id_type!(
    /// Name of a pack object in a fleet's store: BLAKE3, keyed with a key derived from the id
    /// key, of the pack's exact bytes.
    PackId
);
id_type!(
    /// BLAKE3 of a fleet log entry's exact stored bytes; each entry names its predecessor's.
    EntryHash
);
id_type!(
    /// BLAKE3 of a fleet host's audit segment's exact stored bytes; each segment names its
    /// predecessor's.
    SegmentHash
);

// JSON Schemas for the API document (the ids that appear in the API).
macro_rules! hex_schema {
    ($($t:ident: $what:literal),* $(,)?) => {
        $(crate::schema::string_schema!(
            $t,
            stringify!($t),
            crate::schema::string(
                concat!($what, ": 32 bytes as 64 hex digits"),
                crate::schema::HEX32,
                Some(64),
                crate::schema::HEX32_EXAMPLE,
            )
        );)*
    };
}
hex_schema!(
    ChunkId: "A chunk's content address (keyed BLAKE3 of its plaintext)",
    Sha256Digest: "SHA-256 of a whole file",
    Blake3Digest: "BLAKE3 of a whole file",
    MerkleRoot: "The Merkle root over a version's file entries (docs/format.md)",
    MetadataDigest: "The digest of a version's canonical metadata (docs/format.md)",
    EventHash: "BLAKE3 of an audit event's canonical encoding",
    RowKey: "A sealed record's row key (a keyed hash; names nothing in the clear)",
    EntryHash: "BLAKE3 of a fleet log entry's stored bytes (docs/format.md)",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_bad_input() {
        let id = ChunkId([7u8; 32]);
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<ChunkId>().unwrap(), id);
        assert!("abc".parse::<ChunkId>().is_err());
        assert!("zz".repeat(32).parse::<ChunkId>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ChunkId>(&json).unwrap(), id);
    }
}
