//! The control API between `arca` and `arcad`: one closed set of requests and responses,
//! versioned by path prefix (`/v1/...`), JSON over HTTP/1.1 on a Unix socket. docs/api.md lists
//! every route. The caller's identity is never part of a request: the daemon reads it from the
//! socket's peer credentials.

use crate::id::{ChunkId, MerkleRoot, MetadataDigest};
use crate::manifest::FileEntry;
use crate::metadata::PublishedMetadata;
use crate::name::{ModelName, ModelVersion, RelPath};
use crate::sign::{PublicKey, Signature};

/// Path prefix of this API version.
pub const PREFIX: &str = "/v1";

/// Who the daemon says the caller is.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct WhoAmI {
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub admin: bool,
    pub daemon_version: String,
}

/// `POST /v1/uploads`: start a push.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CreateUpload {
    #[serde(deserialize_with = "object")]
    pub metadata: PublishedMetadata,
}

/// Reads a struct only from a JSON object: serde also takes an array of its fields in order,
/// which the API does not document (the daemon checks that a body is an object; this is for a
/// struct inside one).
fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    use serde::Deserialize;
    let value = serde_json::Value::deserialize(d)?;
    if !value.is_object() {
        return Err(D::Error::custom("expected a JSON object"));
    }
    serde_json::from_value(value).map_err(D::Error::custom)
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UploadCreated {
    pub upload_id: String,
}

/// Query of `PUT /v1/uploads/{id}/files`: the file's bytes are the request body.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// The file's path inside the version.
    pub path: RelPath,
    /// Its mode, in decimal: 420 (0644) or 493 (0755); any other is refused before a byte is
    /// stored (docs/format.md, "File modes").
    #[param(value_type = crate::schema::FileMode, inline)]
    pub mode: u32,
}

/// What the daemon computed from one uploaded file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FileStored {
    pub entry: FileEntry,
    pub chunks: u64,
    /// Chunks (and their sealed bytes) that were not in the store before this file. Absent
    /// unless the caller may read every model: otherwise they would tell whether content exists
    /// in models the caller cannot read (docs/format.md, "What the chunker seed hides").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_chunks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_stored_bytes: Option<u64>,
}

/// `POST /v1/uploads/{id}/commit`: what the publisher computed and signed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CommitUpload {
    pub merkle_root: MerkleRoot,
    pub metadata_digest: MetadataDigest,
    /// Absent for an unsigned push, which only a model whose policy does not require signing
    /// accepts. Both or neither.
    #[serde(default)]
    pub signature: Option<Signature>,
    #[serde(default)]
    pub public_key: Option<PublicKey>,
}

/// A version's lifecycle status (the transitions are governed by issue #4's rules).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Development,
    Staging,
    Production,
    Deprecated,
    Archived,
}

impl Status {
    /// The lifecycle's allowed transitions (the design sketch's): development → staging;
    /// staging → production or development; production → deprecated; deprecated → archived.
    pub fn allowed_targets(self) -> &'static [Status] {
        match self {
            Status::Development => &[Status::Staging],
            Status::Staging => &[Status::Production, Status::Development],
            Status::Production => &[Status::Deprecated],
            Status::Deprecated => &[Status::Archived],
            Status::Archived => &[],
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("unknown status {s:?}: expected development, staging, production, deprecated or archived"))
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Development => "development",
            Status::Staging => "staging",
            Status::Production => "production",
            Status::Deprecated => "deprecated",
            Status::Archived => "archived",
        };
        f.write_str(s)
    }
}

/// Who signed a version.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SignerInfo {
    pub user: String,
    pub uid: u32,
    pub public_key: PublicKey,
    pub signature: Signature,
}

/// Everything `arca show` prints about one version.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct VersionInfo {
    pub metadata: PublishedMetadata,
    pub created_by: String,
    pub created_by_uid: u32,
    /// Seconds since the Unix epoch, by the daemon's clock.
    pub created_at: u64,
    pub status: Status,
    pub merkle_root: MerkleRoot,
    pub metadata_digest: MetadataDigest,
    /// Absent for a version pushed unsigned (allowed only by its model's policy).
    pub signer: Option<SignerInfo>,
    pub total_size: u64,
    pub chunks: u64,
    pub files: Vec<FileEntry>,
    /// Every status change, oldest first.
    #[serde(default)]
    pub history: Vec<Transition>,
    /// Valid approvals for production, oldest first.
    #[serde(default)]
    pub approvals: Vec<Approval>,
}

/// One status change of a version: who, when, from, to, under which ticket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Transition {
    pub from: Status,
    pub to: Status,
    pub by: String,
    pub by_uid: u32,
    pub at: u64,
    pub ticket: Option<String>,
    /// Why, for changes made as a side effect (another version took production) or rollbacks.
    #[serde(default)]
    pub reason: Option<String>,
    /// Order of the change among all of its model's changes (1, 2, …): seconds are too coarse
    /// to order a deprecation and the promotion that caused it.
    #[serde(default)]
    pub seq: u64,
}

/// An approver's signed consent to put this exact version (root) in production under a ticket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Approval {
    pub approver: String,
    pub approver_uid: u32,
    pub ticket: String,
    pub comment: String,
    pub at: u64,
    pub public_key: PublicKey,
    pub signature: Signature,
}

/// `POST /v1/models/{name}/versions/{version}/approvals`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Approve {
    pub ticket: String,
    #[serde(default)]
    pub comment: String,
    pub public_key: PublicKey,
    pub signature: Signature,
}

/// `POST /v1/models/{name}/versions/{version}/promote`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Promote {
    pub to: Status,
    #[serde(default)]
    pub ticket: Option<String>,
}

/// `POST /v1/models/{name}/rollback`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Rollback {
    pub to: ModelVersion,
    pub reason: String,
}

/// One status change of one version, for a model's history.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct HistoryEvent {
    pub version: ModelVersion,
    pub transition: Transition,
}

/// A version and the chain of versions it derives from (parent first).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Lineage {
    pub version: ModelVersion,
    pub ancestors: Vec<ModelVersion>,
}

/// `GET /v1/models/{name}/history`: every status change, oldest first, and each version's lineage.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct History {
    pub events: Vec<HistoryEvent>,
    pub lineage: Vec<Lineage>,
}

/// Response of a commit: the stored version, and how much the push added to the store.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Committed {
    pub version: VersionInfo,
    /// As in `FileStored`: absent unless the caller may read every model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_chunks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_stored_bytes: Option<u64>,
}

/// One line of `arca ls`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ModelSummary {
    pub name: ModelName,
    pub versions: u64,
    pub latest: ModelVersion,
    pub production: Option<ModelVersion>,
}

/// One line of `arca ls NAME`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct VersionSummary {
    pub version: ModelVersion,
    pub status: Status,
    pub created_by: String,
    pub created_at: u64,
    pub total_size: u64,
    pub files: u64,
    pub merkle_root: MerkleRoot,
}

/// A problem found by `verify`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct VerifyFailure {
    pub version: ModelVersion,
    pub file: Option<RelPath>,
    pub chunk: Option<ChunkId>,
    pub problem: String,
}

/// Result of `POST /v1/models/{name}/verify`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct VerifyReport {
    pub ok: bool,
    pub versions: u64,
    pub files: u64,
    pub chunks: u64,
    pub bytes: u64,
    pub failures: Vec<VerifyFailure>,
}

/// One line of `POST /v1/models/{name}/verify?progress=true`: a JSON object per line
/// (`application/x-ndjson`), `progress` lines while chunks are read, then one `report`, or one
/// `error` if the check could not finish (its answer had already begun, so its status is 200).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerifyLine {
    /// Plaintext bytes read so far, of `total` (the size of every file checked).
    Progress {
        checked: u64,
        total: u64,
    },
    Report(VerifyReport),
    Error(ErrorBody),
}

/// `POST /v1/keys`: trust a public key for a user (a name or a numeric uid).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TrustKey {
    pub user: String,
    pub public_key: PublicKey,
}

/// `POST /v1/keys/untrust`: stop trusting a user's key, named by its fingerprint.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UntrustKey {
    pub user: String,
    pub fingerprint: String,
}

/// One trusted publisher key.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TrustedKey {
    pub user: String,
    pub uid: u32,
    pub public_key: PublicKey,
    pub fingerprint: String,
    pub added_by: String,
    pub added_at: u64,
}

/// `GET /v1/store/stats`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StoreStats {
    pub models: u64,
    pub versions: u64,
    pub chunks: u64,
    /// Sum of sealed chunk sizes: what the chunks occupy before RocksDB's own overhead.
    pub stored_bytes: u64,
    /// Sum of the sizes of all files of all versions, counting shared content every time.
    pub logical_bytes: u64,
    /// The FUSE mount's counters since arcad started; absent when running without a mount.
    #[serde(default)]
    pub mount: Option<MountCounters>,
}

/// Counters of the read-only mount.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct MountCounters {
    pub bytes_served: u64,
    pub reads: u64,
    pub read_errors: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_bytes: u64,
    /// Chunks that failed verification (or were missing) and were refused with EIO.
    pub integrity_failures: u64,
}

/// Machine-readable error kinds; the CLI prints `message` and exits non-zero.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    SignatureMismatch,
    UntrustedSigner,
    DigestMismatch,
    IntegrityFailure,
    /// A fleet host's object store is unreachable (or its replica halted): nothing changed.
    Unavailable,
    Internal,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// What an operation needs on a model (the design sketch's `ModelPermission`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Read,
    Write,
    Promote,
    Rollback,
    Delete,
    Admin,
}

impl Permission {
    pub const ALL: [Permission; 6] = [
        Permission::Read,
        Permission::Write,
        Permission::Promote,
        Permission::Rollback,
        Permission::Delete,
        Permission::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Promote => "promote",
            Permission::Rollback => "rollback",
            Permission::Delete => "delete",
            Permission::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named set of permissions (the design sketch's four roles, and no others).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Developer,
    MlEngineer,
    MlAdmin,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Viewer,
        Role::Developer,
        Role::MlEngineer,
        Role::MlAdmin,
    ];

    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Viewer => &[Read],
            Role::Developer => &[Read, Write],
            Role::MlEngineer => &[Read, Write, Promote],
            Role::MlAdmin => &[Read, Write, Promote, Rollback, Delete, Admin],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::MlEngineer => "ml_engineer",
            Role::MlAdmin => "ml_admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}: expected viewer, developer, ml_engineer or ml_admin")
            })
    }
}

/// Who a role is assigned to: a local user or a local group, by number (names can be reused),
/// with the name it had when the assignment was made.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Principal {
    User { uid: u32, name: String },
    Group { gid: u32, name: String },
}

impl Principal {
    /// Same account, whatever name it was recorded with.
    pub fn same(&self, other: &Principal) -> bool {
        match (self, other) {
            (Principal::User { uid: a, .. }, Principal::User { uid: b, .. }) => a == b,
            (Principal::Group { gid: a, .. }, Principal::Group { gid: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::User { name, .. } => f.write_str(name),
            Principal::Group { name, .. } => write!(f, "group:{name}"),
        }
    }
}

/// One role assignment. `model: None` is the wildcard `*`: every model, present and future.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RoleAssignment {
    pub principal: Principal,
    pub role: Role,
    pub model: Option<ModelName>,
    pub granted_by: String,
    pub granted_at: u64,
}

/// `POST /v1/roles` and `POST /v1/roles/revoke`. `principal` is a user name, a uid, or
/// `group:NAME`; the daemon resolves it against the host's account database.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RoleChange {
    pub principal: String,
    pub role: Role,
    #[serde(default)]
    pub model: Option<ModelName>,
}

/// What one user may do on one model (or, with `model: None`, on every model), and why.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct EffectivePermissions {
    pub model: Option<ModelName>,
    pub permissions: Vec<Permission>,
    /// The assignments (or "bootstrap admin") that grant them.
    pub via: Vec<String>,
}

/// `GET /v1/roles`: the matching assignments and, when a user was named, their effective
/// permissions (through their own and their groups' assignments).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RoleListing {
    pub assignments: Vec<RoleAssignment>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub effective: Vec<EffectivePermissions>,
}

/// A model's policy (the design sketch's `set_model_policy`, with its defaults). Encryption is
/// not a setting: every chunk and record is always sealed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Policy {
    /// Production needs `approvals` valid signed approvals.
    pub require_approval: bool,
    pub approvals: u32,
    /// The environments (`arcad --environment NAME`) that may serve this model.
    pub environments: Vec<String>,
    /// Archived versions older than this are removed by GC.
    pub retention_days: u32,
    /// At most this many versions; a push beyond it is refused.
    pub max_versions: u32,
    /// Unsigned pushes are refused.
    pub signing_required: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            require_approval: true,
            approvals: 1,
            environments: vec!["dev".into(), "staging".into(), "prod".into()],
            retention_days: 365,
            max_versions: 50,
            signing_required: true,
        }
    }
}

/// `PUT /v1/models/{name}/policy`: the fields to change; absent ones keep their value.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PolicyUpdate {
    #[serde(default)]
    pub require_approval: Option<bool>,
    #[serde(default)]
    pub approvals: Option<u32>,
    #[serde(default)]
    pub environments: Option<Vec<String>>,
    #[serde(default)]
    pub retention_days: Option<u32>,
    #[serde(default)]
    pub max_versions: Option<u32>,
    #[serde(default)]
    pub signing_required: Option<bool>,
}

/// `GET /v1/models/{name}/policy`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PolicyInfo {
    pub model: ModelName,
    pub policy: Policy,
    /// False while the model runs on the defaults.
    pub explicit: bool,
    #[serde(default)]
    pub updated_by: Option<String>,
    #[serde(default)]
    pub updated_at: Option<u64>,
}

/// `POST /v1/audit/verify`: the whole trail checked.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditVerify {
    pub ok: bool,
    /// Events checked before the first fault (all of them when `ok`).
    pub events: u64,
    pub checkpoints: u64,
    /// The event count the signed head covers.
    pub head_count: Option<u64>,
    pub head_hash: Option<crate::audit::EventHash>,
    pub fault: Option<crate::audit::ChainFault>,
    /// The daemon's audit key: record it somewhere else to check this trail independently.
    pub public_key: PublicKey,
    /// On a fleet host: every pinned host's shipped audit segments, verified (`ok` is false
    /// when any host's are missing or do not check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_hosts: Option<Vec<HostAudit>>,
}

/// One production change in a compliance report.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ProductionChange {
    pub at_ms: u64,
    pub version: Option<ModelVersion>,
    pub from: String,
    pub to: String,
    pub by: String,
    pub ticket: Option<String>,
    pub reason: Option<String>,
}

/// One approval in a compliance report.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ApprovalRecord {
    pub at_ms: u64,
    pub version: Option<ModelVersion>,
    pub approver: String,
    pub ticket: Option<String>,
}

/// `GET /v1/audit/report/{name}`: the design sketch's compliance report for one model and period,
/// with its production history and approvals.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ComplianceReport {
    pub model: ModelName,
    pub from_ms: u64,
    pub to_ms: u64,
    pub generated_at_ms: u64,
    pub total_events: u64,
    pub events_by_type: std::collections::BTreeMap<String, u64>,
    pub unique_users: Vec<String>,
    pub versions_affected: Vec<String>,
    /// Whether the whole trail (not only this model's events) verified when the report was made.
    pub chain_intact: bool,
    pub chain_fault: Option<String>,
    pub production_history: Vec<ProductionChange>,
    pub approvals: Vec<ApprovalRecord>,
    /// On a fleet host: every pinned host's shipped audit segments, verified, whose events
    /// of this model are counted above with this host's own trail (`chain_intact` is false
    /// when any host's segments are missing or do not check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_hosts: Option<Vec<HostAudit>>,
}

/// One fleet host's shipped audit segments (reads, refusals, integrity failures and other
/// events not in the fleet's log), as another host verified them from the object store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct HostAudit {
    pub host: String,
    /// Segments that verified, from the first, in order.
    pub segments: u64,
    /// The host's own trail is covered up to this event id by the verified segments.
    pub shipped_through: u64,
    /// Events the verified segments hold.
    pub events: u64,
    /// Events of the report's model (and period) among them (`audit report` only).
    #[serde(default)]
    pub events_in_report: u64,
    /// The first thing wrong with the host's segments: one missing (a gap, or fewer than the
    /// host's heartbeat says it shipped), one that does not verify (an edit, another host's
    /// signature, a segment replayed at another position), or a broken chain. Events after it
    /// are not counted.
    pub fault: Option<String>,
    /// Age in seconds of the host's signed heartbeat whose count of shipped segments was
    /// checked (`null`: none was); a deletion of segments shipped after it is not seen.
    #[serde(default)]
    pub heartbeat_age_secs: Option<u64>,
}

/// A version, by name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct VersionRef {
    pub name: ModelName,
    pub version: ModelVersion,
}

/// `POST /v1/gc`: what a collection removed (or, with `dry_run`, would remove).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct GcReport {
    pub dry_run: bool,
    /// Archived versions older than their model's retention, removed.
    pub expired_versions: Vec<VersionRef>,
    /// Chunks examined: those recorded as possibly unreferenced.
    pub candidates: u64,
    pub deleted_chunks: u64,
    /// Sealed bytes of the deleted chunks.
    pub deleted_bytes: u64,
    /// Candidates a version in the catalog still uses (taken off the list).
    pub referenced: u64,
    /// Candidates an upload in progress, a `get` or a `verify` holds (examined again next time).
    pub pinned: u64,
    /// Candidates only a file open in the mount still uses (examined again next time).
    pub open_in_mount: u64,
    /// On a fleet host, when the run also collected the fleet's packs in the object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetGcReport>,
}

/// Fleet GC: what a run did (or, dry, would do) to the packs in the fleet's object store.
/// A pack is condemned through the log when no live version has a chunk in it, and deleted by
/// a later run once the grace period has passed since then.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FleetGcReport {
    /// The log entry that recorded this run's decisions (none: nothing to decide, or dry).
    pub seq: Option<u64>,
    /// Seconds from condemnation to deletion, and the age an unreferenced pack must reach to
    /// count as an orphan.
    pub grace_secs: f64,
    /// Packs the store listed when the run started, and their bytes.
    pub packs: u64,
    pub pack_bytes: u64,
    /// Packs holding a chunk of a version in the catalog.
    pub live_packs: u64,
    /// Packs this run condemned: dead, repacked (`repacked`) or orphans (`orphans`).
    pub condemned: u64,
    /// Packs no entry of the log names, older than the grace period (a push that failed or
    /// lost its race), condemned by this run.
    pub orphans: u64,
    /// Packs no entry names, younger than the grace period (perhaps a push in flight): left.
    pub young_orphans: u64,
    /// Packs condemned by an earlier run and still within their grace period.
    pub waiting: u64,
    /// Condemned packs that a version in the catalog uses again: no longer condemned.
    pub rescued: u64,
    /// Packs deleted from the store by this run, and their bytes.
    pub deleted_packs: u64,
    pub deleted_bytes: u64,
    /// Packs whose live chunks were copied into new packs (then condemned).
    pub repacked: u64,
    pub moved_chunks: u64,
    pub new_packs: u64,
    pub new_pack_bytes: u64,
    /// Packs the log says hold live chunks but the store does not list (damage; logged).
    pub missing: u64,
    /// Packs a repack could not read or authenticate: left as they are (logged).
    pub unreadable: u64,
}

/// A data-key rotation's progress (`arca status`, `arca key rotate-dek`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RotationProgress {
    pub target_key: u32,
    pub started_at: u64,
    pub chunks_done: u64,
    /// RocksDB's estimate when the rotation started.
    pub chunks_estimate: u64,
    pub records_done: bool,
    pub finished_at: Option<u64>,
    /// Running in this daemon now (false: finished, or waiting to be resumed).
    pub running: bool,
    /// Why the background job stopped, if it failed.
    pub error: Option<String>,
}

/// `POST /v1/keys/rotate-kek`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct KekRotated {
    /// Where the new key-encryption key now is.
    pub key_file: String,
    pub rewrapped_keys: u64,
    /// Whether the keys wrapped under the old KEK were compacted out of the state directory's
    /// table and log files (false: the compaction failed; see the daemon's log).
    #[serde(default)]
    pub old_wraps_purged: bool,
}

/// `GET /v1/status`: how the daemon and its store are doing.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StatusReport {
    pub daemon_version: String,
    pub uptime_secs: u64,
    pub environment: Option<String>,
    pub models: u64,
    pub versions: u64,
    /// Versions by lifecycle status.
    pub versions_by_status: std::collections::BTreeMap<String, u64>,
    /// Distinct chunks the catalog references, and their sealed size.
    pub chunks: u64,
    pub stored_bytes: u64,
    /// Sum of all files of all versions.
    pub logical_bytes: u64,
    /// logical / stored: how much deduplication saves (1.0 = nothing shared).
    pub dedup_ratio: f64,
    /// Bytes of the chunk column family on disk (including what GC has not reclaimed yet), and
    /// the GC candidates: store-wide, so absent for callers who may not read every model (they
    /// would show whether a push wrote new chunks). The figures above count, for such callers,
    /// only the versions they may read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_candidates: Option<u64>,
    pub mount: Option<MountStatus>,
    pub current_data_key: u32,
    pub rotation: Option<RotationProgress>,
    pub audit_events: u64,
    /// Present on a fleet host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
}

/// A fleet host's replica of the shared log, in `status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FleetStatus {
    pub host: String,
    /// The object store endpoint calls go to now.
    pub endpoint: String,
    /// The newest log entry applied here.
    pub applied_seq: u64,
    /// Seconds since the log was last read successfully (`None`: never since start).
    pub lag_secs: Option<f64>,
    /// The last failure to reach the store, while it lasts.
    pub store_error: Option<String>,
    /// Calls to the store that failed on every endpoint, since start.
    pub store_errors: u64,
    /// Why this host stopped applying the log (a fork, a gap, an entry that does not check):
    /// it serves what it has and refuses changes.
    pub halted: Option<String>,
    /// Evidence that the store shows this host an old view of the log: another host's signed
    /// heartbeat says it applied an entry the store told this host, well after, did not exist.
    /// Cleared once this host applies that entry.
    #[serde(default)]
    pub stale_view: Option<String>,
    pub chunks_fetched: u64,
    pub bytes_fetched: u64,
    /// Ranged GETs of packs made to fetch them.
    pub pack_requests: u64,
    /// Of those, fetches a reader started ahead of a stream too slow to bring its chunk in
    /// time, taking the rest of that stream's extent over.
    #[serde(default)]
    pub take_overs: u64,
    /// Bytes this host put in the store (packs, log entries).
    pub bytes_uploaded: u64,
    /// Chunks fetched from packs that failed authentication (never cached or served).
    pub integrity_failures: u64,
    /// The newest entry in the log, as far as this host knows (its own applied one, or a
    /// higher one a heartbeat reported).
    pub head_seq: u64,
    /// The hash of the newest entry applied here: hosts that applied the same seq and show
    /// the same hash hold the same log (each entry names its predecessor's hash).
    pub applied_hash: crate::id::EntryHash,
    /// Every host's last heartbeat in the store (`arca fleet status`).
    pub hosts: Vec<FleetHostSeen>,
    /// This host's chunk cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<FleetCacheStatus>,
    /// This host's audit segments in the store (`audit/<host>/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_shipping: Option<AuditShipping>,
    /// Whether log entries and audit segments are written with S3 Object Lock retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLockStatus>,
}

/// S3 Object Lock on a fleet's store, in `status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ObjectLockStatus {
    /// Log entries and audit segments are written with retention: no one, the store's
    /// administrator included, can delete or overwrite those versions before it ends
    /// (`GOVERNANCE`: except holders of the store's bypass permission).
    pub in_force: bool,
    /// `COMPLIANCE` or `GOVERNANCE`, when in force.
    pub mode: Option<String>,
    pub days: Option<u32>,
    /// Why it is not in force (the bucket has no Object Lock, the store does not implement it,
    /// `object_lock = "off"`, not checked yet).
    pub reason: Option<String>,
}

/// How far a fleet host has shipped its own audit trail to the store (the events that are not
/// in the fleet's log: reads, refusals, integrity failures, its cache pins).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditShipping {
    /// Segments this host has in the store (known once it has listed them, after start).
    pub segments: u64,
    /// Its trail is in the store up to this event id (the last segment's end).
    pub shipped_through: u64,
    /// Events in its trail after that (of any kind; those from the log are not shipped).
    pub pending: u64,
    /// When a segment was last shipped (ms since the epoch; 0: not since start).
    pub last_shipped_ms: u64,
    /// Why the last attempt failed, while it lasts (the store out of reach: shipping goes on
    /// from the same point once it answers).
    pub error: Option<String>,
    /// Why shipping stopped (this host's newest segment in the store does not verify): events
    /// stay in the local trail.
    pub halted: Option<String>,
}

/// A fleet host's local chunk cache, in `status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FleetCacheStatus {
    /// The limit (`cache_gib`, or a quarter of the state directory's file system).
    pub limit_bytes: u64,
    /// Sealed bytes and chunks cached here now.
    pub cached_bytes: u64,
    pub cached_chunks: u64,
    /// Bytes of chunks of versions this host keeps (production and staging of the models it
    /// serves) and of pinned ones, at the last look (every 30 s and after each fetch that
    /// took the cache over its limit); never evicted.
    pub kept_bytes: u64,
    pub pinned_bytes: u64,
    /// Kept and pinned chunks alone exceed the limit: the cache stays over it.
    pub over_limit: bool,
    /// Chunks and bytes evicted since start, and the eviction passes that evicted any.
    pub evicted_chunks: u64,
    pub evicted_bytes: u64,
    pub evictions: u64,
    /// Blob files of the chunk store on disk, and the garbage (evicted chunks not yet given
    /// back) among them, at the last look.
    pub disk_bytes: u64,
    pub garbage_bytes: u64,
    /// `warm_before_switch_secs`, when set.
    pub warm_before_switch_secs: Option<u64>,
    /// `serve`, when set: the models whose production and staging this host keeps (and
    /// warms), among those its environment serves.
    pub serve: Option<Vec<ModelName>>,
    /// Warm-ups before a switch since start, those that ran out of time, and the last one's
    /// duration.
    pub warmups: u64,
    pub warmups_incomplete: u64,
    pub last_warm_ms: u64,
    /// `arca fleet pin`: versions this host keeps cached whatever the limit.
    pub pins: Vec<FleetPin>,
    /// Why the pins record is not used (it failed its check), if it is not.
    pub pins_error: Option<String>,
}

/// A version pinned in one fleet host's cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FleetPin {
    pub model: ModelName,
    pub version: ModelVersion,
    /// Who pinned it, and when (seconds since the epoch).
    pub by: String,
    pub at: u64,
}

/// One host's heartbeat, as another host reads it from the store.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FleetHostSeen {
    pub host: String,
    pub applied_seq: u64,
    /// Seconds since its heartbeat was written (hosts write one every 5 s).
    pub heartbeat_age_secs: f64,
    pub halted: Option<String>,
    pub store_error: Option<String>,
    /// Set when the heartbeat does not open under the fleet's keys or names another host.
    pub unreadable: Option<String>,
    /// The audit segments the host says it has shipped (`None`: not known to it yet).
    #[serde(default)]
    pub audit_segments: Option<u64>,
}

/// The mount, in `status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct MountStatus {
    pub mountpoint: String,
    /// The mount answered a stat of its root just now.
    pub answering: bool,
    pub counters: MountCounters,
    /// cache hits / (hits + misses), when there were any.
    pub cache_hit_rate: Option<f64>,
}
