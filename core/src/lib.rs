//! Types shared by `arcad`, the mount and the `arca` CLI. Nothing here links RocksDB or opens a
//! socket: this crate holds the vocabulary (ids, names, metadata, manifests, signatures, API
//! messages) and the pure computations both sides must agree on byte for byte.

pub mod api;
pub mod audit;
pub mod digest;
pub mod id;
pub mod manifest;
pub mod metadata;
pub mod name;
mod schema;
pub mod sign;

pub use id::{Blake3Digest, ChunkId, MerkleRoot, MetadataDigest, Sha256Digest};
pub use name::{ModelName, ModelVersion, RelPath};
