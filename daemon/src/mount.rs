//! The daemon's side of the FUSE mount: a `ChunkSource` over the registry (verified chunk reads,
//! the READ decision, integrity reports) and the catalog → `Snapshot` translation, republished
//! whenever the catalog changes. All path and read logic lives in `arca-fsmount`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arca_core::api::{MountCounters, Status};
use arca_core::{ChunkId, MerkleRoot, ModelName, ModelVersion, RelPath};
use arca_fsmount::{
    ChunkError, ChunkSource, MountFile, MountHandle, MountOptions, Snapshot, VersionEntry,
};

use crate::fleet::FetchFor;
use crate::manifest::VersionRecord;
use crate::registry::{ChunkReadError, Registry};

/// Verified chunk reads for the mount.
pub struct RegistrySource {
    registry: Arc<Registry>,
}

fn chunk_error(e: ChunkReadError) -> ChunkError {
    match e {
        ChunkReadError::Missing => ChunkError::Missing,
        ChunkReadError::Crypt(c) => ChunkError::Integrity(c.to_string()),
        ChunkReadError::Length => ChunkError::Integrity("length differs from the manifest".into()),
        ChunkReadError::Store(s) => ChunkError::Io(s.to_string()),
        ChunkReadError::Unavailable(s) => ChunkError::Unavailable(s),
    }
}

/// A whole chunk for a reader with no streak to go by: the rest of its pack.
const WHOLE: FetchFor = FetchFor::MountWhole { ahead: u64::MAX };

impl RegistrySource {
    /// A whole chunk for the mount, as `why`, waiting on the fleet's store until `deadline`
    /// (by default the registry's read bound from now).
    fn read(
        &self,
        why: FetchFor,
        id: &ChunkId,
        len: u32,
        deadline: Option<std::time::Instant>,
    ) -> Result<Vec<u8>, ChunkError> {
        let d = deadline.unwrap_or_else(|| self.registry.read_deadline());
        self.registry
            .read_chunk_for(why, id, len, d)
            .map_err(chunk_error)
    }
}

impl ChunkSource for RegistrySource {
    fn chunk(&self, id: &ChunkId, len: u32) -> Result<Vec<u8>, ChunkError> {
        self.read(WHOLE, id, len, None)
    }

    fn chunk_range(
        &self,
        id: &ChunkId,
        len: u32,
        offset: u32,
        size: u32,
    ) -> Result<Vec<u8>, ChunkError> {
        self.registry
            .read_chunk_range(id, len, offset, size)
            .map_err(chunk_error)
    }

    fn is_local(&self, id: &ChunkId) -> bool {
        self.registry.chunk_is_local(id)
    }

    fn chunk_run(
        &self,
        chunks: &[(ChunkId, u32)],
        done: &mut dyn FnMut(usize, Result<Vec<u8>, ChunkError>),
    ) {
        self.registry
            .read_chunk_run(chunks, |k, got| done(k, got.map_err(chunk_error)))
    }

    fn read_bound(&self) -> Option<std::time::Duration> {
        self.registry.fleet().map(|f| f.read_bound())
    }

    fn chunk_by(
        &self,
        id: &ChunkId,
        len: u32,
        deadline: Option<std::time::Instant>,
    ) -> Result<Vec<u8>, ChunkError> {
        self.read(WHOLE, id, len, deadline)
    }

    fn chunk_ahead_by(
        &self,
        id: &ChunkId,
        len: u32,
        deadline: Option<std::time::Instant>,
        streak: u64,
    ) -> Result<Vec<u8>, ChunkError> {
        self.read(FetchFor::MountWhole { ahead: streak }, id, len, deadline)
    }

    fn chunk_near_by(
        &self,
        id: &ChunkId,
        len: u32,
        deadline: Option<std::time::Instant>,
    ) -> Result<Vec<u8>, ChunkError> {
        self.read(FetchFor::MountPart, id, len, deadline)
    }

    fn chunk_range_by(
        &self,
        id: &ChunkId,
        len: u32,
        offset: u32,
        size: u32,
        deadline: Option<std::time::Instant>,
    ) -> Result<Vec<u8>, ChunkError> {
        match deadline {
            Some(d) => self.registry.read_chunk_range_by(id, len, offset, size, d),
            None => self.registry.read_chunk_range(id, len, offset, size),
        }
        .map_err(chunk_error)
    }

    fn may_read(&self, uid: u32, gid: u32, model: &ModelName, version: &ModelVersion) -> bool {
        self.registry.may_read_uid(uid, gid, model, version)
    }

    fn may_list(&self, uid: u32, gid: u32, model: &ModelName) -> bool {
        self.registry.may_list_uid(uid, gid, model)
    }

    fn list_refused(&self, uid: u32, model: &ModelName) {
        self.registry.mount_refused(uid, model, None);
    }

    fn integrity_failure(
        &self,
        model: &ModelName,
        version: &ModelVersion,
        path: &RelPath,
        chunk: &ChunkId,
        error: &str,
    ) {
        tracing::error!(arca_event = arca_core::audit::EventKind::IntegrityViolation.as_str(), model = %model, version = %version, file = %path, chunk = %chunk, "integrity failure in the mount, read refused with EIO: {error}");
        self.registry
            .integrity_event("mount", model, version, Some(path), Some(chunk), error);
    }

    fn opened(
        &self,
        uid: u32,
        pid: u32,
        model: &ModelName,
        version: &ModelVersion,
        path: &RelPath,
    ) {
        self.registry.mount_opened(uid, pid, model, version, path);
    }

    fn closed(&self) {
        self.registry.mount_closed();
    }
}

/// Builds mount snapshots, reusing each version's (immutable) entry between rebuilds so a new
/// push costs the size of its own chunk lists, not the whole catalog's.
#[derive(Default)]
struct SnapshotBuilder {
    entries: HashMap<(ModelName, ModelVersion, MerkleRoot), Arc<VersionEntry>>,
}

impl SnapshotBuilder {
    fn build(&mut self, records: &[Arc<VersionRecord>]) -> Snapshot {
        let mut snap = Snapshot::default();
        let mut live = HashMap::new();
        for r in records {
            let key = (
                r.metadata.name.clone(),
                r.metadata.version.clone(),
                r.merkle_root,
            );
            let entry = self.entries.remove(&key).unwrap_or_else(|| {
                Arc::new(VersionEntry {
                    created_at: r.created_at,
                    merkle_root: r.merkle_root,
                    files: r
                        .files
                        .iter()
                        .map(|f| MountFile {
                            path: f.entry.path.clone(),
                            size: f.entry.size,
                            mode: f.entry.mode,
                            chunks: f.chunks.iter().map(|c| (c.id, c.len)).collect(),
                        })
                        .collect(),
                })
            });
            live.insert(key, entry.clone());
            let m = snap.models.entry(r.metadata.name.clone()).or_default();
            m.versions.insert(r.metadata.version.clone(), entry);
            match r.status {
                Status::Production => m.production = Some(r.metadata.version.clone()),
                Status::Staging => m.staging = Some(r.metadata.version.clone()),
                _ => {}
            }
        }
        self.entries = live;
        snap
    }
}

/// Creates `dir` and any missing parents with mode 0755 whatever the umask (systemd's
/// UMask=0077 would make them 0700, and service users could not reach the mount).
fn create_traversable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if dir.exists() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_traversable(parent)?;
    }
    std::fs::create_dir(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

/// The mount, kept in step with the registry.
pub struct Mount {
    handle: Arc<Mutex<Option<MountHandle>>>,
}

impl Mount {
    /// Clears a stale mount left by a killed daemon, mounts, and subscribes to catalog changes.
    pub fn start(
        registry: &Arc<Registry>,
        mountpoint: &Path,
        opts: MountOptions,
    ) -> anyhow::Result<Self> {
        // A dead FUSE mount left by a killed daemon answers ENOTCONN to everything, mkdir -p
        // included: clear it first.
        arca_fsmount::clear_stale_mount(mountpoint)?;
        create_traversable(mountpoint)?;
        let source = Arc::new(RegistrySource {
            registry: registry.clone(),
        });
        let builder = Arc::new(Mutex::new(SnapshotBuilder::default()));
        let initial = builder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .build(&registry.records());
        let dyn_source: Arc<dyn ChunkSource> = source;
        let handle = Arc::new(Mutex::new(Some(arca_fsmount::mount(
            mountpoint, dyn_source, initial, opts,
        )?)));
        let (h, b, reg) = (handle.clone(), builder, Arc::downgrade(registry));
        registry.on_change(Box::new(move || {
            let Some(reg) = reg.upgrade() else { return };
            // Build and publish under one lock so two changes cannot publish out of order.
            let mut b = b.lock().unwrap_or_else(|p| p.into_inner());
            let snap = b.build(&reg.records());
            if let Some(m) = h.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                m.update(snap);
            }
        }));
        if let (Some(f), Some(m)) = (
            registry.fleet(),
            handle.lock().unwrap_or_else(|p| p.into_inner()).as_ref(),
        ) {
            f.set_plaintext_sink(m.plaintext_sink());
        }
        let h = handle.clone();
        registry.set_open_chunks(Box::new(move || {
            h.lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|m| m.open_chunks())
                .unwrap_or_default()
        }));
        let h = handle.clone();
        registry.set_mount_counters(Box::new(move || {
            h.lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|m| {
                    let s = m.stats();
                    MountCounters {
                        bytes_served: s.bytes_served,
                        reads: s.reads,
                        read_errors: s.read_errors,
                        cache_hits: s.cache_hits,
                        cache_misses: s.cache_misses,
                        cache_bytes: s.cache_bytes,
                        integrity_failures: s.integrity_failures,
                    }
                })
        }));
        Ok(Self { handle })
    }

    /// Unmounts (forcing a busy mount off, so shutdown is never blocked by a reader).
    pub fn stop(&self) -> Result<(), arca_fsmount::MountError> {
        match self.handle.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(m) => m.unmount(),
            None => Ok(()),
        }
    }
}
