//! The registry: every operation of the control API, as plain methods over the store and an
//! in-memory catalog, so the HTTP layer stays a thin translation. Permission checks happen here,
//! before any state changes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arca_core::api::{
    CommitUpload, Committed, FileStored, ModelSummary, MountCounters, Permission, SignerInfo,
    Status, StoreStats, TrustKey, TrustedKey, VerifyFailure, VerifyReport, VersionInfo,
    VersionSummary, WhoAmI,
};
use arca_core::audit::EventKind;
use arca_core::digest::FileHasher;
use arca_core::manifest::{merkle_root, FileEntry, FILE_MODES};
use arca_core::metadata::PublishedMetadata;
use arca_core::{ChunkId, ModelName, ModelVersion, RelPath};

use crate::access::AccessTable;
use crate::auth::{resolve_user, Admins, Caller, GroupCache};
use crate::chunker::{ingest, IngestError, IngestFailure};
use crate::crypt::{sealed_chunk_len, CryptError};
use crate::manifest::{StoredFile, VersionRecord, RECORD_FORMAT};
use crate::pins::{PinGuard, Pins};
use crate::store::{BadVersion, Store, StoreError};

mod access;
pub mod audit;
pub mod cache;
pub mod fleet;
mod fleet_gc;
mod gc;
mod lifecycle;
mod rotation;
mod status;

/// Why an operation was refused or failed. Each maps to one API error code.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    SignatureMismatch(String),
    #[error("{0}")]
    UntrustedSigner(String),
    #[error("{0}")]
    DigestMismatch(String),
    #[error("{0}")]
    Integrity(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// An upload that has not been committed.
struct Upload {
    owner_uid: u32,
    metadata: PublishedMetadata,
    files: BTreeMap<RelPath, StoredFile>,
    /// Chunks this upload pinned (see `pins`), released at commit or discard.
    pinned: Vec<ChunkId>,
    /// Chunks this upload wrote; deleted again if it is discarded and nothing else needs them.
    written: Vec<ChunkId>,
    new_stored_bytes: u64,
    touched: Instant,
}

impl Upload {
    fn new(owner_uid: u32, metadata: PublishedMetadata) -> Self {
        Self {
            owner_uid,
            metadata,
            files: BTreeMap::new(),
            pinned: Vec::new(),
            written: Vec::new(),
            new_stored_bytes: 0,
            touched: Instant::now(),
        }
    }
}

/// Uploads idle for longer than this are dropped (their chunks stay unreferenced, reclaimable).
const UPLOAD_IDLE: Duration = Duration::from_secs(3600);
/// Reads of one chunk on a fleet host: found missing, fetched, and evicted again before it
/// was read, this many times, the read fails rather than loop.
const FETCH_ROUNDS: usize = 3;
/// Files in one version; a bound so one push cannot grow a manifest without limit.
const MAX_FILES: usize = 100_000;

type Catalog = BTreeMap<ModelName, BTreeMap<ModelVersion, Arc<VersionRecord>>>;

pub struct Registry {
    store: Arc<Store>,
    catalog: RwLock<Catalog>,
    /// Version records that did not open, failed their audit check or did not match their
    /// signed root at start: never served, reported by `verify` of their model (or of every
    /// model when the record does not say whose it is).
    broken: Vec<BadVersion>,
    uploads: Mutex<HashMap<String, Upload>>,
    /// Chunks uploads and streams rely on (shared with the streams' guards).
    pins: Arc<Pins>,
    /// Serialises commits so that "version exists?" and "write version" are one step.
    commit_lock: Mutex<()>,
    /// Called after every catalog change (the mount republishes its snapshot).
    listeners: Mutex<Vec<Listener>>,
    /// Reads the mount's counters, once a mount is running.
    mount_counters: std::sync::OnceLock<CounterSource>,
    /// Role assignments and model policies; replaced whole (under the commit lock) on change.
    access: RwLock<AccessTable>,
    admins: Admins,
    /// `--environment`: models whose policy does not list it are hidden and refused.
    environment: Option<String>,
    groups: GroupCache,
    /// Mount opens and refusals already in the audit trail this run.
    mount_seen: Mutex<audit::MountSeen>,
    /// The chunks the mount's open files hold, once a mount is running.
    open_chunks: std::sync::OnceLock<gc::OpenChunks>,
    /// One garbage collection at a time.
    gc_lock: Mutex<()>,
    /// One look at a fleet host's chunk cache at a time.
    cache_lock: Mutex<()>,
    /// The data-key rotation job's state, for `status`.
    rotation: Mutex<rotation::RotationJob>,
    /// Bytes per second the rotation may re-seal (0: no limit).
    rotation_rate: u64,
    started: Instant,
    mountpoint: Option<std::path::PathBuf>,
    kek_rotation_path: Option<std::path::PathBuf>,
    /// A fleet host's link to the shared registry (`None`: a single host).
    fleet: Option<Arc<crate::fleet::Fleet>>,
}

/// How the daemon was configured, as far as the registry cares.
pub struct RegistryOptions {
    pub admins: Admins,
    pub environment: Option<String>,
    /// Bytes per second a data-key rotation may re-seal (0: no limit).
    pub rotation_rate: u64,
    /// Where the mount is (for `status`).
    pub mountpoint: Option<std::path::PathBuf>,
    /// Where `rotate-kek` writes the new key-encryption key.
    pub kek_rotation_path: Option<std::path::PathBuf>,
    /// Set on a fleet host (the store's publisher must be this fleet too).
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

/// Where `stats` reads the mount's counters from.
pub type CounterSource = Box<dyn Fn() -> Option<MountCounters> + Send + Sync>;

/// A catalog-change callback.
pub type Listener = Box<dyn Fn() + Send + Sync>;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind, never a half-written store write.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks a record against its own signed statements: Merkle root over its entries, metadata
/// digest, and the publisher's signature over both.
pub fn check_signed(rec: &VersionRecord) -> Result<(), String> {
    let mut entries: Vec<FileEntry> = rec.files.iter().map(|f| f.entry.clone()).collect();
    let root = merkle_root(&mut entries).map_err(|e| format!("file list: {e}"))?;
    if root != rec.merkle_root {
        return Err("Merkle root of the file entries does not match the signed root".into());
    }
    let md = rec
        .metadata
        .digest()
        .map_err(|e| format!("metadata: {e}"))?;
    if md != rec.metadata_digest {
        return Err("metadata digest does not match the signed digest".into());
    }
    match &rec.signer {
        Some(s) => s
            .public_key
            .verify_version(&rec.merkle_root, &rec.metadata_digest, &s.signature)
            .map_err(|_| "publisher signature does not verify".to_string()),
        // Unsigned (admitted by its policy): the sealed record's AEAD is all that binds it.
        None => Ok(()),
    }
}

impl Registry {
    pub fn open(store: Store, opts: RegistryOptions) -> Result<Self> {
        let (catalog, broken) = Self::load_catalog(&store)?;
        let access = store.access_table()?;
        Ok(Self {
            store: Arc::new(store),
            catalog: RwLock::new(catalog),
            broken,
            uploads: Mutex::new(HashMap::new()),
            pins: Arc::new(Pins::default()),
            commit_lock: Mutex::new(()),
            listeners: Mutex::new(Vec::new()),
            mount_counters: std::sync::OnceLock::new(),
            access: RwLock::new(access),
            admins: opts.admins,
            environment: opts.environment,
            groups: GroupCache::new(Duration::from_secs(5)),
            mount_seen: Mutex::new(audit::MountSeen::new()),
            open_chunks: std::sync::OnceLock::new(),
            gc_lock: Mutex::new(()),
            cache_lock: Mutex::new(()),
            rotation: Mutex::new(rotation::RotationJob::default()),
            rotation_rate: opts.rotation_rate,
            started: Instant::now(),
            mountpoint: opts.mountpoint,
            kek_rotation_path: opts.kek_rotation_path,
            fleet: opts.fleet,
        })
    }

    /// The catalog from the store's version records: those that open, pass their audit
    /// binding and match their signed root; the others, with why, never served.
    fn load_catalog(store: &Store) -> Result<(Catalog, Vec<BadVersion>)> {
        let mut catalog = Catalog::new();
        let mut broken = Vec::new();
        for item in store.versions()? {
            match item {
                Ok(rec) => match check_signed(&rec) {
                    Ok(()) => {
                        catalog
                            .entry(rec.metadata.name.clone())
                            .or_default()
                            .insert(rec.metadata.version.clone(), Arc::new(rec));
                    }
                    Err(why) => {
                        let what = format!("{} {}: {why}", rec.metadata.name, rec.metadata.version);
                        tracing::error!(model = %rec.metadata.name, version = %rec.metadata.version, "not serving version {what}");
                        broken.push(BadVersion {
                            version: Some((rec.metadata.name.clone(), rec.metadata.version)),
                            why: what,
                        });
                    }
                },
                Err(bad) => {
                    tracing::error!("not serving a version: {}", bad.why);
                    broken.push(bad);
                }
            }
        }
        Ok((catalog, broken))
    }

    pub fn mountpoint(&self) -> Option<std::path::PathBuf> {
        self.mountpoint.clone()
    }

    pub fn kek_rotation_path(&self) -> Option<std::path::PathBuf> {
        self.kek_rotation_path.clone()
    }

    /// The mount's counters, when a mount is running.
    pub fn mount_counters(&self) -> Option<MountCounters> {
        self.mount_counters.get().and_then(|f| f())
    }

    /// Lets `stats` report the mount's counters (set once, by the mount).
    pub fn set_mount_counters(&self, f: CounterSource) {
        let _ = self.mount_counters.set(f);
    }

    /// Registers a callback run after every catalog change, outside the registry's locks.
    pub fn on_change(&self, f: Listener) {
        lock(&self.listeners).push(f);
    }

    fn changed(&self) {
        for f in lock(&self.listeners).iter() {
            f();
        }
    }

    /// Every version record this daemon serves (for the mount's snapshot): with
    /// `--environment`, only those of models whose policy allows it.
    pub fn records(&self) -> Vec<Arc<VersionRecord>> {
        let all = self
            .catalog()
            .values()
            .flat_map(|v| v.values().cloned())
            .collect();
        access::served(self, all)
    }

    /// The caller of a request, from its socket's peer credentials.
    pub fn caller(&self, uid: u32, gid: u32, pid: Option<i32>, groups: Vec<u32>) -> Caller {
        Caller::from_peer(uid, gid, pid, groups, &self.admins)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A cheap end-to-end read (the catalog lock and one store read), for the watchdog.
    pub fn health(&self) -> Result<()> {
        let _ = self.catalog().len();
        self.store.health()?;
        Ok(())
    }

    fn catalog(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn whoami(&self, c: &Caller) -> WhoAmI {
        WhoAmI {
            uid: c.uid,
            gid: c.gid,
            user: c.user.clone(),
            admin: c.admin,
            daemon_version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn trusted_for(&self, uid: u32) -> Result<Vec<TrustedKey>> {
        Ok(self
            .store
            .trusted_keys()?
            .into_iter()
            .filter(|k| k.uid == uid)
            .collect())
    }

    fn version(&self, name: &ModelName, version: &ModelVersion) -> Option<Arc<VersionRecord>> {
        self.catalog()
            .get(name)
            .and_then(|v| v.get(version))
            .cloned()
    }

    fn readable_version(
        &self,
        c: &Caller,
        name: &ModelName,
        version: &ModelVersion,
    ) -> Result<Arc<VersionRecord>> {
        // Permission first: a caller who may not read a model learns nothing of its versions.
        self.require(c, Some(name), Permission::Read, "read it")?;
        self.version(name, version)
            .ok_or_else(|| RegistryError::NotFound(format!("no version {version} of model {name}")))
    }

    // ---- push ----

    pub fn create_upload(&self, c: &Caller, metadata: PublishedMetadata) -> Result<String> {
        metadata
            .digest()
            .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        let (name, version) = (&metadata.name, &metadata.version);
        self.require(c, Some(name), Permission::Write, "push versions")?;
        self.check_max_versions(c, name)?;
        if self.version(name, version).is_some() {
            return Err(RegistryError::AlreadyExists(format!(
                "model {name} already has version {version}"
            )));
        }
        if let Some(parent) = &metadata.parent_version {
            if self.version(name, parent).is_none() {
                return Err(RegistryError::NotFound(format!(
                    "parent version {parent} of model {name} does not exist"
                )));
            }
        }
        // Under a signing-required policy (the default) a push must be signed by a key trusted
        // for the caller; refusing here saves the upload of bytes that could never be committed.
        if self.access().policy(name).signing_required && self.trusted_for(c.uid)?.is_empty() {
            let message = format!(
                "{} has no trusted signing key: run `arca key gen`, and have an admin run `arca key trust {} KEYFILE` if you are not one",
                c.user, c.user
            );
            self.refusal_event(c, Some(name), Some(version), "signature", &message);
            return Err(RegistryError::UntrustedSigner(message));
        }
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|_| {
            RegistryError::Store(StoreError::Corrupt("random source failed".into()))
        })?;
        let id = hex::encode(id);
        let expired: Vec<Upload> = {
            let mut uploads = lock(&self.uploads);
            let stale: Vec<String> = uploads
                .iter()
                .filter(|(_, u)| u.touched.elapsed() >= UPLOAD_IDLE)
                .map(|(k, _)| k.clone())
                .collect();
            let expired = stale.iter().filter_map(|k| uploads.remove(k)).collect();
            uploads.insert(id.clone(), Upload::new(c.uid, metadata));
            expired
        };
        for u in expired {
            self.discard(u);
        }
        Ok(id)
    }

    /// Drops an uncommitted upload: releases its pins and deletes the chunks it wrote that no
    /// other upload pins and no committed version references. Lock order: pins, then catalog.
    fn discard(&self, up: Upload) {
        self.release(&up.pinned, &up.written);
    }

    /// Releases pins and deletes those of `written` that are then free (see `discard`).
    fn release(&self, pinned: &[ChunkId], written: &[ChunkId]) {
        let result = self.pins.unpin_and_collect(pinned, written, |free| {
            let referenced: HashSet<ChunkId> = {
                let cat = self.catalog();
                let wanted: HashSet<&ChunkId> = free.iter().collect();
                cat.values()
                    .flat_map(|vs| vs.values())
                    .flat_map(|r| r.files.iter())
                    .flat_map(|f| f.chunks.iter())
                    .filter(|c| wanted.contains(&c.id))
                    .map(|c| c.id)
                    .collect()
            };
            let doomed: Vec<ChunkId> = free
                .into_iter()
                .filter(|id| !referenced.contains(id))
                .collect();
            self.store.delete_chunks(&doomed)
        });
        if let Err(e) = result {
            // The chunks stay as unreferenced garbage; nothing refers to them.
            tracing::warn!("discarding an upload's chunks failed: {e}");
        }
    }

    /// Whether `c` may learn how many of an upload's chunks were new: only a reader of every
    /// model (admins included). Deciding from the content instead (shown unless a chunk already
    /// stored is in a model `c` cannot read) would make the figures' absence the answer to
    /// "is this content in a model I cannot read?", so the decision depends on roles alone.
    fn may_see_dedup(&self, c: &Caller) -> bool {
        self.allows(c, None, Permission::Read)
    }

    fn check_upload_owner(&self, c: &Caller, id: &str) -> Result<()> {
        match lock(&self.uploads).get(id) {
            Some(u) if u.owner_uid == c.uid => Ok(()),
            Some(_) => Err(RegistryError::PermissionDenied(
                "that upload belongs to another user".into(),
            )),
            None => Err(RegistryError::NotFound(
                "no such upload (it may have expired)".into(),
            )),
        }
    }

    /// Stores one file of an upload from its byte stream. Blocking: call from a blocking thread.
    pub fn put_file(
        &self,
        c: &Caller,
        id: &str,
        path: RelPath,
        mode: u32,
        body: impl Read + Send,
    ) -> Result<FileStored> {
        self.check_upload_owner(c, id)?;
        if !FILE_MODES.contains(&mode) {
            return Err(RegistryError::BadRequest(format!(
                "file {path}: mode 0{mode:o} refused: a version's files are 0644 or 0755 (`arca push` normalises modes)"
            )));
        }
        {
            let uploads = lock(&self.uploads);
            let u = uploads
                .get(id)
                .ok_or_else(|| RegistryError::NotFound("no such upload".into()))?;
            if u.files.contains_key(&path) {
                return Err(RegistryError::BadRequest(format!(
                    "file {path} was already uploaded"
                )));
            }
            if u.files.len() >= MAX_FILES {
                return Err(RegistryError::BadRequest(format!(
                    "a version holds at most {MAX_FILES} files"
                )));
            }
        }
        let ing = match ingest(&self.store, &self.pins, body) {
            Ok(ing) => ing,
            Err(IngestFailure {
                error,
                pinned,
                written,
            }) => {
                // An interrupted file ends the whole upload: our CLI never resumes one, and
                // keeping it would keep its chunks pinned until it expires.
                self.release(&pinned, &written);
                if let Some(up) = lock(&self.uploads).remove(id) {
                    self.discard(up);
                }
                return Err(match error {
                    IngestError::Read(e) => {
                        RegistryError::BadRequest(format!("file {path}: upload interrupted: {e}"))
                    }
                    IngestError::Store(e) => RegistryError::Store(e),
                });
            }
        };
        let entry = FileEntry {
            path: path.clone(),
            size: ing.digests.size,
            mode,
            sha256: ing.digests.sha256,
            blake3: ing.digests.blake3,
        };
        let shown = self.may_see_dedup(c);
        let stored = FileStored {
            entry: entry.clone(),
            chunks: ing.chunks.len() as u64,
            new_chunks: shown.then_some(ing.written.len() as u64),
            new_stored_bytes: shown.then_some(ing.new_stored_bytes),
        };
        let mut uploads = lock(&self.uploads);
        let Some(u) = uploads.get_mut(id) else {
            drop(uploads);
            self.release(&ing.pinned, &ing.written);
            return Err(RegistryError::NotFound("the upload was aborted".into()));
        };
        if u.files.contains_key(&path) {
            // Two requests raced on one path and the other won. This file's chunks are released
            // here, not kept in the upload: the commit takes `written` off the GC list, and
            // chunks no version references would then be garbage GC never looks at.
            drop(uploads);
            self.release(&ing.pinned, &ing.written);
            return Err(RegistryError::BadRequest(format!(
                "file {path} was already uploaded"
            )));
        }
        u.pinned.extend(ing.pinned);
        u.written.extend(ing.written);
        u.new_stored_bytes += ing.new_stored_bytes;
        u.touched = Instant::now();
        u.files.insert(
            path,
            StoredFile {
                entry,
                chunks: ing.chunks,
            },
        );
        Ok(stored)
    }

    pub fn abort_upload(&self, c: &Caller, id: &str) -> Result<()> {
        self.check_upload_owner(c, id)?;
        if let Some(up) = lock(&self.uploads).remove(id) {
            self.discard(up);
        }
        Ok(())
    }

    /// Commits an upload: recomputes the root and the metadata digest from what was received,
    /// compares them with what the publisher signed, checks the signature and that the key is
    /// trusted for the caller, then makes the version visible in one synced write.
    pub fn commit(&self, c: &Caller, id: &str, req: CommitUpload) -> Result<Committed> {
        self.check_upload_owner(c, id)?;
        // Take the upload out: whatever happens next, it cannot be committed twice.
        let mut up = lock(&self.uploads)
            .remove(id)
            .ok_or_else(|| RegistryError::NotFound("no such upload".into()))?;
        let files = std::mem::take(&mut up.files);
        let pinned = std::mem::take(&mut up.pinned);
        let result = self.commit_files(c, &up, files, req).map(|mut done| {
            if !self.may_see_dedup(c) {
                done.new_chunks = None;
                done.new_stored_bytes = None;
            }
            done
        });
        if let Err(
            e @ (RegistryError::SignatureMismatch(_)
            | RegistryError::UntrustedSigner(_)
            | RegistryError::DigestMismatch(_)),
        ) = &result
        {
            let (m, v) = (&up.metadata.name, &up.metadata.version);
            self.refusal_event(c, Some(m), Some(v), "signature", &e.to_string());
        }
        // Committed or refused, the upload's pins go: a committed version now references its
        // chunks (it is in the catalog before the pins are released).
        match &result {
            Ok(_) => {
                self.pins.unpin_all(&pinned);
                self.changed();
                // Only memory is at stake: the version is committed whatever happens here.
                if let Err(e) = self.store.settle_after_push() {
                    tracing::warn!("flushing memtables after a push failed: {e}");
                }
            }
            Err(_) => {
                up.pinned = pinned;
                self.discard(up);
            }
        }
        result
    }

    fn commit_files(
        &self,
        c: &Caller,
        up: &Upload,
        files: BTreeMap<RelPath, StoredFile>,
        req: CommitUpload,
    ) -> Result<Committed> {
        let mut files: Vec<StoredFile> = files.into_values().collect();
        let mut entries: Vec<FileEntry> = files.iter().map(|f| f.entry.clone()).collect();
        let root =
            merkle_root(&mut entries).map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        files.sort_by(|a, b| {
            a.entry
                .path
                .as_str()
                .as_bytes()
                .cmp(b.entry.path.as_str().as_bytes())
        });
        let md = up
            .metadata
            .digest()
            .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        if root != req.merkle_root {
            return Err(RegistryError::DigestMismatch(format!(
                "the files the daemon received have Merkle root {root}, but the publisher signed {}: a file changed during the push or was corrupted in transit",
                req.merkle_root
            )));
        }
        if md != req.metadata_digest {
            return Err(RegistryError::DigestMismatch(
                "the metadata the daemon received differs from what the publisher signed".into(),
            ));
        }
        let name = up.metadata.name.clone();
        let version = up.metadata.version.clone();
        let signer = match (req.signature, req.public_key) {
            (Some(signature), Some(public_key)) => {
                public_key.verify_version(&root, &md, &signature).map_err(|_| {
                    RegistryError::SignatureMismatch("signature mismatch: the signature does not match the pushed files and metadata".into())
                })?;
                if !self
                    .trusted_for(c.uid)?
                    .iter()
                    .any(|k| k.public_key == public_key)
                {
                    return Err(RegistryError::UntrustedSigner(format!(
                        "untrusted signer: key {} is not trusted for {}",
                        public_key.fingerprint(),
                        c.user
                    )));
                }
                Some(SignerInfo {
                    user: c.user.clone(),
                    uid: c.uid,
                    public_key,
                    signature,
                })
            }
            (None, None) => None,
            _ => {
                return Err(RegistryError::BadRequest(
                    "a commit carries both a signature and its public key, or neither".into(),
                ))
            }
        };
        let rec = VersionRecord {
            format: RECORD_FORMAT,
            metadata: up.metadata.clone(),
            created_by: c.user.clone(),
            created_by_uid: c.uid,
            created_at: now(),
            status: Status::Development,
            merkle_root: root,
            metadata_digest: md,
            signer,
            files,
            history: Vec::new(),
            approvals: Vec::new(),
        };
        // Chunks first, durable; then the version and its event in one synced write. A crash
        // in between leaves only unreferenced chunks.
        self.store.flush_chunks()?;
        // Policy and permission again, under the lock: either may have changed since the upload
        // started, and concurrent pushes must not overshoot max-versions together.
        let precheck = || -> Result<()> {
            if self.version(&name, &version).is_some() {
                return Err(RegistryError::AlreadyExists(format!(
                    "model {name} already has version {version}"
                )));
            }
            self.require(c, Some(&name), Permission::Write, "push versions")?;
            self.check_max_versions(c, &name)?;
            if rec.signer.is_none() && self.access().policy(&name).signing_required {
                return Err(self.refuse(
                    c,
                    Some(&name),
                    Some(&version),
                    "policy",
                    format!("model {name}'s policy requires signed pushes; push with a trusted key (`arca key gen`), or have an admin run `arca policy set {name} --signing-required no`"),
                ));
            }
            Ok(())
        };
        // A fleet host puts the chunks the fleet lacks into packs in the object store first,
        // outside the commit lock (this is the slow part); the log entry then names them. The
        // checks run before as well, against the fleet's state, so a push that would be refused
        // leaves no packs behind (two pushes of one version racing still both upload).
        let mut locs = match &self.fleet {
            Some(f) => {
                {
                    let _g = self.commit_guard_caught_up()?;
                    precheck()?;
                }
                let ids: Vec<ChunkId> = rec
                    .files
                    .iter()
                    .flat_map(|f| f.chunks.iter().map(|c| c.id))
                    .collect();
                f.upload(&self.store, &ids).map_err(fleet::unavailable)?
            }
            None => Vec::new(),
        };
        let mut attempt = 0;
        let _g = loop {
            let g = match self.commit_guard() {
                Err(RegistryError::Store(StoreError::FleetConflict))
                    if attempt < fleet::MAX_ATTEMPTS =>
                {
                    attempt += 1;
                    continue;
                }
                other => other?,
            };
            precheck()?;
            // A chunk the upload relied on may have left the fleet since (fleet GC condemned or
            // deleted its pack; this host learned it catching up just now): upload it again,
            // outside the lock, and try again.
            if let Some(f) = &self.fleet {
                let need = self.chunks_to_upload_again(&rec, &locs)?;
                if !need.is_empty() && attempt >= fleet::MAX_ATTEMPTS {
                    // Never committed with chunks in packs that are leaving the fleet: the
                    // version would be unreadable everywhere once they are gone.
                    return Err(RegistryError::Store(StoreError::FleetUnavailable(format!(
                        "{} chunks of the version were still in packs fleet GC is removing after {} uploads; nothing was changed, push again",
                        need.len(),
                        fleet::MAX_ATTEMPTS
                    ))));
                }
                if !need.is_empty() {
                    drop(g);
                    tracing::info!(
                        model = %name,
                        version = %version,
                        chunks = need.len(),
                        "fleet: chunks of the version are in packs fleet GC condemned or deleted since the upload; uploading them again"
                    );
                    let more = f.upload(&self.store, &need).map_err(fleet::unavailable)?;
                    let again: HashSet<ChunkId> = need.into_iter().collect();
                    locs.retain(|l| !again.contains(&l.id));
                    locs.extend(more);
                    attempt += 1;
                    continue;
                }
            }
            let event = audit::ev(c, EventKind::Registration)
                .model(&name)
                .version(&version)
                .detail("root", rec.merkle_root.to_string())
                .detail("files", rec.files.len().to_string())
                .detail("bytes", rec.total_size().to_string())
                .detail(
                    "signer",
                    rec.signer
                        .as_ref()
                        .map_or("unsigned".into(), |s| s.public_key.fingerprint()),
                );
            // The upload's new chunks are referenced from this write on: off the GC list in it.
            // Only those the version references: anything else the upload wrote stays a candidate,
            // so GC still finds it.
            let used: HashSet<ChunkId> = rec
                .files
                .iter()
                .flat_map(|f| f.chunks.iter().map(|c| c.id))
                .collect();
            let settled: Vec<ChunkId> = up
                .written
                .iter()
                .filter(|id| used.contains(id))
                .copied()
                .collect();
            self.store.stage_chunk_locations(locs.clone());
            let put = self
                .store
                .put_versions_settling(&[&rec], vec![event], &settled);
            self.store.stage_chunk_locations(Vec::new());
            match put {
                Ok(()) => break g,
                Err(StoreError::FleetConflict) if attempt < fleet::MAX_ATTEMPTS => {
                    drop(g);
                    fleet::backoff(attempt);
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let info = rec.info();
        self.catalog
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.clone())
            .or_default()
            .insert(version.clone(), Arc::new(rec));
        tracing::info!(arca_event = EventKind::Registration.as_str(), model = %name, version = %version, user = %c.user, "version committed");
        self.cache_touch(&name, &version);
        Ok(Committed {
            version: info,
            new_chunks: Some(up.written.len() as u64),
            new_stored_bytes: Some(up.new_stored_bytes),
        })
    }

    // ---- read ----

    pub fn list_models(&self, c: &Caller) -> Vec<ModelSummary> {
        self.catalog()
            .iter()
            .filter_map(|(name, versions)| {
                let visible: Vec<&Arc<VersionRecord>> =
                    versions.values().filter(|r| self.may_read(c, r)).collect();
                let latest = visible.last()?;
                Some(ModelSummary {
                    name: name.clone(),
                    versions: visible.len() as u64,
                    latest: latest.metadata.version.clone(),
                    production: visible
                        .iter()
                        .find(|r| r.status == Status::Production)
                        .map(|r| r.metadata.version.clone()),
                })
            })
            .collect()
    }

    pub fn list_versions(&self, c: &Caller, name: &ModelName) -> Result<Vec<VersionSummary>> {
        self.require(c, Some(name), Permission::Read, "list its versions")?;
        let cat = self.catalog();
        let versions = cat
            .get(name)
            .ok_or_else(|| RegistryError::NotFound(format!("no model named {name}")))?;
        let out: Vec<VersionSummary> = versions
            .values()
            .filter(|r| self.may_read(c, r))
            .map(|r| r.summary())
            .collect();
        if out.is_empty() {
            return Err(RegistryError::NotFound(format!("no model named {name}")));
        }
        Ok(out)
    }

    pub fn show(
        &self,
        c: &Caller,
        name: &ModelName,
        version: &ModelVersion,
    ) -> Result<VersionInfo> {
        Ok(self.readable_version(c, name, version)?.info())
    }

    /// The chunks of one file, for streaming it out; checks READ first. The chunks stay pinned
    /// until the returned guard drops, so a deletion and a collection while the file streams
    /// cannot take them away (the look-up and the pin are one step: see `Pins::pin_found`).
    pub fn file_chunks(
        &self,
        c: &Caller,
        name: &ModelName,
        version: &ModelVersion,
        path: &RelPath,
    ) -> Result<(StoredFile, PinGuard)> {
        self.require(c, Some(name), Permission::Read, "read it")?;
        self.require_served(c, name)?;
        let (f, pins) = self.pins.pin_found(|| {
            let rec = self.version(name, version).ok_or_else(|| {
                RegistryError::NotFound(format!("no version {version} of model {name}"))
            })?;
            let f = rec
                .files
                .iter()
                .find(|f| &f.entry.path == path)
                .cloned()
                .ok_or_else(|| {
                    RegistryError::NotFound(format!("{name} {version} has no file {path}"))
                })?;
            let ids = f.chunks.iter().map(|c| c.id).collect();
            Ok::<_, RegistryError>((f, ids))
        })?;
        self.record(vec![audit::ev(c, EventKind::Access)
            .model(name)
            .version(version)
            .detail("file", path.as_str())
            .detail("via", "get")]);
        self.cache_touch(name, version);
        Ok((f, pins))
    }

    /// Reads part of a chunk, authenticating only the 64 KiB segments it touches.
    pub fn read_chunk_range(
        &self,
        id: &ChunkId,
        len: u32,
        offset: u32,
        size: u32,
    ) -> Result<Vec<u8>, ChunkReadError> {
        self.read_chunk_range_by(id, len, offset, size, self.read_deadline())
    }

    /// `read_chunk_range`, waiting on the fleet's store no later than `deadline`.
    pub fn read_chunk_range_by(
        &self,
        id: &ChunkId,
        len: u32,
        offset: u32,
        size: u32,
        deadline: std::time::Instant,
    ) -> Result<Vec<u8>, ChunkReadError> {
        self.read_or_fetch_for(
            crate::fleet::FetchFor::MountPart,
            id,
            len,
            deadline,
            || self.read_chunk_range_here(id, len, offset, size),
            |p| {
                let (a, b) = (offset as usize, offset as usize + size as usize);
                p.get(a..b)
                    .map(<[u8]>::to_vec)
                    .ok_or(ChunkReadError::Crypt(CryptError::Malformed(
                        "range beyond chunk",
                    )))
            },
        )
    }

    /// A chunk read by `here`, or, when it is missing on a fleet host, fetched from its pack;
    /// `from_plain` then takes the plaintext the fetch authenticated (its length checked). A
    /// chunk found here may be evicted before it is read: it is then fetched again, a few times
    /// at most, so eviction can never make a read spin. A single host's read costs one call.
    /// `why`: for the mount, the other chunks a fetch authenticates go to the mount's plaintext
    /// cache (`Fleet::set_plaintext_sink`), and a part of a chunk fetches a short extent; a
    /// `get` or `verify` does not fill the mount's cache with a whole version.
    fn read_or_fetch_for(
        &self,
        why: crate::fleet::FetchFor,
        id: &ChunkId,
        len: u32,
        deadline: std::time::Instant,
        here: impl Fn() -> Result<Vec<u8>, ChunkReadError>,
        from_plain: impl FnOnce(crate::fleet::Plain) -> Result<Vec<u8>, ChunkReadError>,
    ) -> Result<Vec<u8>, ChunkReadError> {
        for _ in 0..FETCH_ROUNDS {
            match here() {
                Err(ChunkReadError::Missing) => match self.fetch_missing(id, why, deadline)? {
                    crate::fleet::Fetched::Unknown => return Err(ChunkReadError::Missing),
                    crate::fleet::Fetched::Cached => continue,
                    crate::fleet::Fetched::Plain(p) => {
                        if p.len() != len as usize {
                            return Err(ChunkReadError::Length);
                        }
                        return from_plain(p);
                    }
                },
                other => return other,
            }
        }
        Err(ChunkReadError::Missing)
    }

    fn read_chunk_range_here(
        &self,
        id: &ChunkId,
        len: u32,
        offset: u32,
        size: u32,
    ) -> Result<Vec<u8>, ChunkReadError> {
        self.store
            .open_sealed_chunk(id, |sealed| {
                let h = crate::crypt::ChunkHeader::parse(sealed)?;
                if h.len != len {
                    return Ok(None);
                }
                self.store
                    .keys()
                    .open_chunk_range(id, sealed, offset as usize, size as usize)
                    .map(Some)
            })
            .map_err(ChunkReadError::Store)?
            .ok_or(ChunkReadError::Missing)?
            .map_err(ChunkReadError::Crypt)?
            .ok_or(ChunkReadError::Length)
    }

    /// Reads and fully verifies one chunk (AEAD of every segment, then the keyed id).
    pub fn read_chunk(&self, id: &ChunkId, expected_len: u32) -> Result<Vec<u8>, ChunkReadError> {
        self.read_chunk_by(id, expected_len, self.read_deadline())
    }

    /// `read_chunk`, waiting on the fleet's store no later than `deadline`.
    pub fn read_chunk_by(
        &self,
        id: &ChunkId,
        expected_len: u32,
        deadline: std::time::Instant,
    ) -> Result<Vec<u8>, ChunkReadError> {
        self.read_chunk_for(crate::fleet::FetchFor::Bulk, id, expected_len, deadline)
    }

    /// `read_chunk` on behalf of `why` (the mount says what kind of reader it has, which sets
    /// how much of a pack a fleet host fetches), waiting on the fleet's store no later than
    /// `deadline`: see `read_or_fetch_for`.
    pub fn read_chunk_for(
        &self,
        why: crate::fleet::FetchFor,
        id: &ChunkId,
        expected_len: u32,
        deadline: std::time::Instant,
    ) -> Result<Vec<u8>, ChunkReadError> {
        self.read_or_fetch_for(
            why,
            id,
            expected_len,
            deadline,
            || self.read_chunk_here(id, expected_len),
            |p| Ok(Arc::try_unwrap(p).unwrap_or_else(|p| p.to_vec())),
        )
    }

    /// Whole chunks that are here (`chunk_is_local`: nothing is fetched), each fully verified
    /// as `read_chunk`'s are, read with as few disk reads as their places allow (a push's
    /// consecutive chunks lie back to back in its pack file: `Store::open_sealed_run`). Each
    /// goes to `done(index in chunks, plaintext)` as soon as it is opened.
    pub fn read_chunk_run(
        &self,
        chunks: &[(ChunkId, u32)],
        mut done: impl FnMut(usize, Result<Vec<u8>, ChunkReadError>),
    ) {
        let ids: Vec<ChunkId> = chunks.iter().map(|c| c.0).collect();
        self.store.open_sealed_run(
            &ids,
            |k, sealed| self.store.keys().open_chunk(&ids[k], sealed),
            |k, got| {
                let plain = got
                    .map_err(ChunkReadError::Store)
                    .and_then(|o| o.ok_or(ChunkReadError::Missing))
                    .and_then(|r| r.map_err(ChunkReadError::Crypt))
                    .and_then(|plain| {
                        if plain.len() == chunks[k].1 as usize {
                            Ok(plain)
                        } else {
                            Err(ChunkReadError::Length)
                        }
                    });
                done(k, plain)
            },
        )
    }

    fn read_chunk_here(&self, id: &ChunkId, expected_len: u32) -> Result<Vec<u8>, ChunkReadError> {
        // Opened straight from RocksDB's pinned buffer: the ciphertext is copied once, into the
        // plaintext buffer, instead of into a `Vec` first.
        let plain = self
            .store
            .open_sealed_chunk(id, |sealed| self.store.keys().open_chunk(id, sealed))
            .map_err(ChunkReadError::Store)?
            .ok_or(ChunkReadError::Missing)?
            .map_err(ChunkReadError::Crypt)?;
        if plain.len() != expected_len as usize {
            return Err(ChunkReadError::Length);
        }
        Ok(plain)
    }

    // ---- verify ----

    pub fn verify(
        &self,
        c: &Caller,
        name: &ModelName,
        version: Option<&ModelVersion>,
    ) -> Result<VerifyReport> {
        self.verify_with(c, name, version, &mut |_, _| {})
    }

    /// `verify`, calling `progress(checked, total)` with the plaintext bytes read so far: once
    /// with 0 when the versions are found and pinned (an error before that is the whole answer),
    /// then after every chunk.
    pub fn verify_with(
        &self,
        c: &Caller,
        name: &ModelName,
        version: Option<&ModelVersion>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<VerifyReport> {
        self.require(c, Some(name), Permission::Read, "verify it")?;
        // The versions and their chunks are found and pinned in one step and stay pinned until
        // the report is done: a deletion and a collection meanwhile cannot make a chunk vanish
        // under the check and pass for damage.
        let (recs, _pins) = self.pins.pin_found(|| {
            let recs: Vec<Arc<VersionRecord>> = match version {
                Some(v) => vec![self.version(name, v).ok_or_else(|| {
                    RegistryError::NotFound(format!("no version {v} of model {name}"))
                })?],
                None => {
                    let cat = self.catalog();
                    let mine: Vec<_> = cat
                        .get(name)
                        .into_iter()
                        .flat_map(|all| all.values())
                        .filter(|r| self.may_read(c, r))
                        .cloned()
                        .collect();
                    // A model whose every record is unusable still gets its report.
                    if mine.is_empty() && !self.broken.iter().any(|b| b.concerns(name)) {
                        return Err(RegistryError::NotFound(format!("no model named {name}")));
                    }
                    mine
                }
            };
            let ids = recs
                .iter()
                .flat_map(|r| r.files.iter())
                .flat_map(|f| f.chunks.iter().map(|c| c.id))
                .collect();
            Ok((recs, ids))
        })?;
        for r in &recs {
            self.cache_touch(&r.metadata.name, &r.metadata.version);
        }
        let total = recs
            .iter()
            .flat_map(|r| r.files.iter())
            .map(|f| f.entry.size)
            .sum();
        let mut done = 0u64;
        progress(done, total);
        let trusted = self.store.trusted_keys()?;
        let mut rep = VerifyReport {
            ok: true,
            versions: 0,
            files: 0,
            chunks: 0,
            bytes: 0,
            failures: Vec::new(),
        };
        for rec in &recs {
            let v = &rec.metadata.version;
            rep.versions += 1;
            let fail = |rep: &mut VerifyReport,
                        file: Option<&RelPath>,
                        chunk: Option<ChunkId>,
                        problem: String| {
                rep.failures.push(VerifyFailure {
                    version: v.clone(),
                    file: file.cloned(),
                    chunk,
                    problem,
                });
            };
            if let Err(why) = check_signed(rec) {
                fail(&mut rep, None, None, why);
            }
            // The record in the store is the one served, and the newest its audit trail knows.
            // Under the commit lock: a change writes the store and then the catalog, and a
            // check between the two would see them disagree.
            let checked = {
                let _g = lock(&self.commit_lock);
                self.store.check_version(rec)
            };
            if let Err(why) = checked {
                // A version deleted since it was pinned has a deletion as its newest event: that
                // is the trail being right about a change, not the record disagreeing with it.
                // A record replaced meanwhile (a promotion) is checked as it is now.
                match self.version(name, v) {
                    Some(cur) if Arc::ptr_eq(&cur, rec) => fail(&mut rep, None, None, why),
                    Some(cur) => {
                        if let Err(why) = self.store.check_version(&cur) {
                            fail(&mut rep, None, None, why);
                        }
                    }
                    None => {
                        tracing::info!(model = %name, version = %v, "version deleted while it was verified")
                    }
                }
            }
            match &rec.signer {
                Some(s)
                    if !trusted
                        .iter()
                        .any(|k| k.uid == s.uid && k.public_key == s.public_key) =>
                {
                    fail(
                        &mut rep,
                        None,
                        None,
                        format!(
                            "signer key {} is no longer trusted for {}",
                            s.public_key.fingerprint(),
                            s.user
                        ),
                    );
                }
                // An unsigned version is only as good as the policy that admitted it: say so
                // once its model requires signing.
                None if self.access().policy(name).signing_required => fail(
                    &mut rep,
                    None,
                    None,
                    "version is unsigned, and its model's policy now requires signing".into(),
                ),
                _ => {}
            }
            for f in &rec.files {
                rep.files += 1;
                let mut h = FileHasher::new();
                let mut chunk_failed = false;
                for cr in &f.chunks {
                    rep.chunks += 1;
                    match self.read_chunk(&cr.id, cr.len) {
                        Ok(p) => h.update(&p),
                        Err(e) => {
                            chunk_failed = true;
                            fail(&mut rep, Some(&f.entry.path), Some(cr.id), e.to_string());
                        }
                    }
                    // A failed chunk counts too: it was examined, and the total must be reached.
                    done += u64::from(cr.len);
                    progress(done, total);
                }
                rep.bytes += h.len();
                if chunk_failed {
                    continue;
                }
                let d = h.finish();
                if d.size != f.entry.size
                    || d.sha256 != f.entry.sha256
                    || d.blake3 != f.entry.blake3
                {
                    fail(
                        &mut rep,
                        Some(&f.entry.path),
                        None,
                        "file content does not match its signed size and digests".into(),
                    );
                }
            }
        }
        // Records that are not served: this model's, and, to readers of every model, those
        // whose model is unknown. Never another model's: verify shows only what the caller
        // may read. Problems that belong to no served version are filed under the first
        // version at hand.
        let sees_all = self.allows(c, None, Permission::Read);
        let fallback = recs
            .first()
            .map(|r| r.metadata.version.clone())
            .or_else(|| {
                self.broken
                    .iter()
                    .find_map(|b| b.version.as_ref().filter(|(m, _)| m == name))
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| "0.0.0".parse().expect("a valid version"));
        let store_wide = |rep: &mut VerifyReport, problem: String| {
            rep.failures.push(VerifyFailure {
                version: fallback.clone(),
                file: None,
                chunk: None,
                problem,
            })
        };
        for b in &self.broken {
            let problem = format!(
                "the store holds a version record that is not served: {}",
                b.why
            );
            match &b.version {
                Some((m, v)) if m == name => rep.failures.push(VerifyFailure {
                    version: v.clone(),
                    file: None,
                    chunk: None,
                    problem,
                }),
                None if sees_all => store_wide(&mut rep, problem),
                _ => {}
            }
        }
        // Records the audit trail vouches for that are gone, or that failed their audit check:
        // the model's own and the store-wide ones (role assignments, trusted keys).
        for (m, v, why) in self.store.missing_versions()? {
            if m.as_ref().is_none_or(|m| m == name) {
                let what = v.map_or(String::new(), |v| format!(" ({name} {v})"));
                store_wide(&mut rep, format!("{why}{what}"));
            }
        }
        for (m, why) in &self.access().faults {
            if m.as_ref().is_none_or(|m| m == name) {
                store_wide(&mut rep, why.clone());
            }
        }
        for why in self.store.trusted_keys_checked()?.1 {
            store_wide(&mut rep, why);
        }
        if let Some(at) = self.store.trail_broken_at() {
            store_wide(
                &mut rep,
                format!("the audit trail was broken at event {at} when arcad started: no version, role, policy or key record is trusted until it is restored (`arca audit verify`)"),
            );
        }
        for f in &rep.failures {
            self.integrity_event(
                "verify",
                name,
                &f.version,
                f.file.as_ref(),
                f.chunk.as_ref(),
                &f.problem,
            );
        }
        rep.ok = rep.failures.is_empty();
        for f in &rep.failures {
            // Absent fields are left out (an `Option` field records only `Some`).
            tracing::warn!(
                arca_event = EventKind::IntegrityViolation.as_str(),
                model = %name,
                version = %f.version,
                file = f.file.as_ref().map(|p| p.as_str()),
                chunk = f.chunk.map(tracing::field::display),
                "integrity failure: {}",
                f.problem
            );
        }
        Ok(rep)
    }

    // ---- keys ----

    pub fn trust_key(&self, c: &Caller, req: TrustKey) -> Result<TrustedKey> {
        self.retrying(|| self.trust_key_once(c, req.clone()))
    }

    fn trust_key_once(&self, c: &Caller, req: TrustKey) -> Result<TrustedKey> {
        // Keys are trusted store-wide, so this needs admin on every model.
        self.require(c, None, Permission::Admin, "trust signing keys")?;
        // Serialised with the other record writers (key rotation re-seals this column family).
        let _g = self.commit_guard()?;
        let (uid, user) = resolve_user(&req.user)
            .ok_or_else(|| RegistryError::NotFound(format!("no user named {}", req.user)))?;
        if let Some(k) = self
            .store
            .trusted_keys()?
            .into_iter()
            .find(|k| k.uid == uid && k.public_key == req.public_key)
        {
            return Ok(k);
        }
        let k = TrustedKey {
            user,
            uid,
            fingerprint: req.public_key.fingerprint(),
            public_key: req.public_key,
            added_by: c.user.clone(),
            added_at: now(),
        };
        let event = audit::ev(c, EventKind::KeyChange)
            .detail("action", "trust")
            .detail("key_user", k.user.clone())
            .detail("fingerprint", k.fingerprint.clone());
        self.store.put_trusted_key(&k, vec![event])?;
        tracing::info!(arca_event = EventKind::KeyChange.as_str(), user = %k.user, fingerprint = %k.fingerprint, by = %c.user, "key trusted");
        Ok(k)
    }

    /// Stops trusting a key: versions it signed then fail `verify` ("no longer trusted"), and
    /// its approvals no longer count at promotion.
    pub fn untrust_key(&self, c: &Caller, req: arca_core::api::UntrustKey) -> Result<TrustedKey> {
        self.retrying(|| self.untrust_key_once(c, req.clone()))
    }

    fn untrust_key_once(&self, c: &Caller, req: arca_core::api::UntrustKey) -> Result<TrustedKey> {
        self.require(c, None, Permission::Admin, "untrust signing keys")?;
        let _g = self.commit_guard()?;
        let (uid, _) = resolve_user(&req.user)
            .ok_or_else(|| RegistryError::NotFound(format!("no user named {}", req.user)))?;
        let k = self
            .store
            .trusted_keys()?
            .into_iter()
            .find(|k| k.uid == uid && k.fingerprint == req.fingerprint)
            .ok_or_else(|| {
                RegistryError::NotFound(format!(
                    "no key {} is trusted for {}",
                    req.fingerprint, req.user
                ))
            })?;
        let event = audit::ev(c, EventKind::KeyChange)
            .detail("action", "untrust")
            .detail("key_user", k.user.clone())
            .detail("fingerprint", k.fingerprint.clone());
        self.store.delete_trusted_key(&k, vec![event])?;
        tracing::info!(arca_event = EventKind::KeyChange.as_str(), user = %k.user, fingerprint = %k.fingerprint, by = %c.user, "key untrusted");
        Ok(k)
    }

    /// Trusted keys name the users who may sign: told only to callers with some role.
    pub fn list_keys(&self, c: &Caller) -> Result<Vec<TrustedKey>> {
        self.require_some_role(c, "list the trusted keys")?;
        Ok(self.store.trusted_keys()?)
    }

    // ---- stats ----

    /// `arca stats`: store-wide figures, for callers with some role.
    pub fn store_stats(&self, c: &Caller) -> Result<StoreStats> {
        self.require_some_role(c, "read the store's figures")?;
        // Store-wide chunk and byte counts would tell a pusher whether their push wrote new
        // chunks, i.e. whether its content was already in a model they cannot read (the dedup
        // oracle, docs/format.md): such callers get the figures of what they may read.
        if self.allows(c, None, Permission::Read) {
            self.stats()
        } else {
            self.stats_of(|r| self.may_read(c, r))
        }
    }

    /// The store-wide figures, unchecked (for `status`, the metrics and the mount).
    pub fn stats(&self) -> Result<StoreStats> {
        self.stats_of(|_| true)
    }

    fn stats_of(&self, counts: impl Fn(&VersionRecord) -> bool) -> Result<StoreStats> {
        let cat = self.catalog();
        let mut seen: HashSet<ChunkId> = HashSet::new();
        let (mut versions, mut stored, mut logical) = (0u64, 0u64, 0u64);
        let mut models = 0u64;
        for recs in cat.values() {
            let mut any = false;
            for rec in recs.values().filter(|r| counts(r)) {
                any = true;
                versions += 1;
                for f in &rec.files {
                    logical += f.entry.size;
                    for cr in &f.chunks {
                        if seen.insert(cr.id) {
                            stored += sealed_chunk_len(cr.len as usize) as u64;
                        }
                    }
                }
            }
            models += u64::from(any);
        }
        Ok(StoreStats {
            models,
            versions,
            chunks: seen.len() as u64,
            stored_bytes: stored,
            logical_bytes: logical,
            mount: self.mount_counters.get().and_then(|f| f()),
        })
    }
}

/// Why a chunk could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ChunkReadError {
    #[error("chunk is missing from the store")]
    Missing,
    #[error("chunk failed authentication or its id check ({0})")]
    Crypt(CryptError),
    #[error("chunk length differs from the manifest")]
    Length,
    #[error(transparent)]
    Store(StoreError),
    /// A fleet host could not fetch the chunk from the object store in time.
    #[error("chunk is not cached here and the fleet's object store did not deliver it: {0}")]
    Unavailable(String),
}
