//! The stored manifest of a version: the signed file entries plus what only the store knows (the
//! chunk list of every file), the daemon-recorded facts (who, when) and the lifecycle status.
//! It is persisted as JSON inside a sealed record (docs/format.md).

use arca_core::api::{Approval, SignerInfo, Status, Transition, VersionInfo, VersionSummary};
use arca_core::manifest::FileEntry;
use arca_core::metadata::PublishedMetadata;
use arca_core::{ChunkId, MerkleRoot, MetadataDigest};

/// A file's chunk: its id and plaintext length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

/// One file of a version: the signed entry and its chunks in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredFile {
    pub entry: FileEntry,
    pub chunks: Vec<ChunkRef>,
}

/// Current version of the record encoding.
pub const RECORD_FORMAT: u32 = 1;

/// Everything arca keeps about one version.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VersionRecord {
    pub format: u32,
    pub metadata: PublishedMetadata,
    pub created_by: String,
    pub created_by_uid: u32,
    pub created_at: u64,
    pub status: Status,
    pub merkle_root: MerkleRoot,
    pub metadata_digest: MetadataDigest,
    /// `None` for an unsigned push (allowed only when the model's policy says so).
    pub signer: Option<SignerInfo>,
    /// Sorted by path (the Merkle order).
    pub files: Vec<StoredFile>,
    /// Every status change, oldest first.
    #[serde(default)]
    pub history: Vec<Transition>,
    /// Production approvals, each verified when it was recorded and again at promotion.
    #[serde(default)]
    pub approvals: Vec<Approval>,
}

impl VersionRecord {
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.entry.size).sum()
    }

    pub fn chunk_count(&self) -> u64 {
        self.files.iter().map(|f| f.chunks.len() as u64).sum()
    }

    pub fn info(&self) -> VersionInfo {
        VersionInfo {
            metadata: self.metadata.clone(),
            created_by: self.created_by.clone(),
            created_by_uid: self.created_by_uid,
            created_at: self.created_at,
            status: self.status,
            merkle_root: self.merkle_root,
            metadata_digest: self.metadata_digest,
            signer: self.signer.clone(),
            total_size: self.total_size(),
            chunks: self.chunk_count(),
            files: self.files.iter().map(|f| f.entry.clone()).collect(),
            history: self.history.clone(),
            approvals: self.approvals.clone(),
        }
    }

    pub fn summary(&self) -> VersionSummary {
        VersionSummary {
            version: self.metadata.version.clone(),
            status: self.status,
            created_by: self.created_by.clone(),
            created_at: self.created_at,
            total_size: self.total_size(),
            files: self.files.len() as u64,
            merkle_root: self.merkle_root,
        }
    }
}
