//! The store: typed, sealed access to RocksDB. It owns the key hierarchy's persisted half
//! (wrapped keys in `meta`), hashes natural keys (model names, users) into row keys so that none
//! appears in the database, and seals every value it writes.

mod append;
pub mod audit;
pub mod binding;
pub mod cache;
pub mod fleet;
pub mod kv;
pub mod packs;
pub mod rotate;

use std::path::{Path, PathBuf};

use arca_core::api::{RoleAssignment, TrustedKey};
use arca_core::audit::{Draft, EventKind};
use arca_core::{ChunkId, ModelName};

use crate::access::{AccessTable, StoredPolicy};

use crate::crypt::{CryptError, Keyring};
use crate::fleet::pack::ChunkLoc;
use crate::keys::{Kek, KeyError, SecretBytes};
use crate::manifest::VersionRecord;
use binding::{Binding, Bindings, Stale};
use kv::{Batch, Cf, Kv, KvError};

const FORMAT_KEY: &[u8] = b"format";
/// Format 2: mutable records carry their audit binding (`binding.rs`); format 1 stores are
/// upgraded at open (`upgrade_v1`).
const FORMAT_VALUE: &[u8] = b"arca-store-v3";
const FORMAT_V1: &[u8] = b"arca-store-v1";
/// Chunks in RocksDB only; upgraded at open by indexing them (`open_cache_index`).
const FORMAT_V2: &[u8] = b"arca-store-v2";
const DEK_CURRENT: &[u8] = b"dek-current";
const ID_KEY: &str = "idk";

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Crypt { what: String, source: CryptError },
    #[error("{0}")]
    Corrupt(String),
    /// An operation that cannot run now (another is in progress).
    #[error("{0}")]
    Busy(String),
    /// The state directory was tampered with in a way that makes it unsafe to open.
    #[error("{0}")]
    Refused(String),
    /// Fleet: another host's change took the log's next seq; nothing was written.
    #[error("another host changed the registry at the same moment")]
    FleetConflict,
    /// Fleet: the object store did not answer; nothing was written anywhere.
    #[error("the fleet's object store is unreachable, so state changes are refused until it answers again (nothing was changed): {0}")]
    FleetUnavailable(String),
    /// Fleet: the change was sent as the log's next entry but the store did not confirm it.
    #[error("the fleet's object store did not confirm the change ({0}); it was not applied on this host, and if the store received it every host, this one included, applies it as soon as it reads the log: check with `arca history` or `arca show` before trying again")]
    FleetUnconfirmed(String),
    /// Fleet: this host stopped applying the log (a fork, a gap, an entry that does not
    /// check); it refuses changes rather than write on top of a log it cannot trust.
    #[error("state changes are refused (nothing was changed): {0}; this host serves what it applied before, until the store is repaired and it is restarted")]
    FleetHalted(String),
}

/// A mutable record written by an audited commit: sealed there, bound to the event that names
/// it (`binding.rs`): the draft at index `by`, or the batch's last one. `json: None` deletes the
/// row.
pub(crate) struct RecordPut {
    pub cf: Cf,
    pub row: [u8; 32],
    pub json: Option<Vec<u8>>,
    pub by: Option<usize>,
}

impl RecordPut {
    fn put<T: serde::Serialize>(cf: Cf, row: [u8; 32], value: &T) -> Result<Self, StoreError> {
        let json = serde_json::to_vec(value)
            .map_err(|e| StoreError::Corrupt(format!("encoding a {} record: {e}", cf.name())))?;
        Ok(Self {
            cf,
            row,
            json: Some(json),
            by: None,
        })
    }

    fn delete(cf: Cf, row: [u8; 32]) -> Self {
        Self {
            cf,
            row,
            json: None,
            by: None,
        }
    }
}

impl StoreError {
    /// The store's file system is full.
    pub fn no_space(&self) -> bool {
        match self {
            StoreError::Kv(k) => k.no_space(),
            // A local pack file's write.
            StoreError::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }
}

/// An open store.
pub struct Store {
    kv: Kv,
    keys: Keyring,
    /// The daemon's own Ed25519 key, signing the audit trail's checkpoints.
    audit_key: arca_core::sign::SecretKey,
    /// Where the audit chain stands; held across each audited commit.
    chain: std::sync::Mutex<audit::Chain>,
    /// Held (read) while a chunk is sealed and written; taken (write) to switch data keys.
    seal_gate: std::sync::RwLock<()>,
    /// The key-encryption key, for wrapping a new data key and for KEK rotation.
    kek: std::sync::RwLock<Kek>,
    /// Events appended since open, by `EventKind::ALL` index (for metrics).
    event_counts: [std::sync::atomic::AtomicU64; arca_core::audit::EventKind::ALL.len()],
    /// Row → newest event that wrote it; updated under the chain lock.
    bindings: std::sync::RwLock<Bindings>,
    /// Fleet hosts: publishes each change to the fleet's log before it is committed here.
    publisher: std::sync::OnceLock<std::sync::Arc<dyn fleet::Publisher>>,
    /// Fleet hosts: the chunk locations the next published change announces.
    staged_locs: std::sync::Mutex<Vec<crate::fleet::log::Located>>,
    /// Chunks and sealed bytes here (the `cache` index's totals, `cache.rs`).
    cache_count: CacheCounters,
    /// Held across a chunk write or delete and its count, so the count stays exact; and
    /// across a write into a local pack file and the rows that index it, or a row's deletion
    /// and the punch of its bytes, so no row ever points at bytes punched out under it.
    cache_lock: std::sync::Mutex<()>,
    /// The local pack files: pushed chunks, and a fleet host's copies of the object store's
    /// packs that fetched chunks live in.
    packs: packs::LocalPacks,
    /// The pack file pushes append to, and its chunks not yet indexed (`append.rs`). Taken
    /// before `cache_lock`, never after.
    appender: std::sync::Mutex<append::Appender>,
}

#[derive(Default)]
struct CacheCounters {
    chunks: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

impl CacheCounters {
    /// Takes chunks and bytes off the totals, never below zero (the totals are counted from
    /// unsealed rows, which someone who writes the state directory can make wrong).
    fn take(&self, chunks: u64, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        for (a, v) in [(&self.chunks, chunks), (&self.bytes, bytes)] {
            let _ = a.fetch_update(Relaxed, Relaxed, |x| Some(x.saturating_sub(v)));
        }
    }
}

/// The keys a fleet host's store must hold (the fleet's, from its keys object): a new store is
/// created with them; an existing one must already hold them.
pub struct SeedKeys {
    pub id_key: SecretBytes,
    pub deks: Vec<(u32, SecretBytes)>,
    pub current: u32,
}

/// A version row the audit trail vouches for that is gone: the model and version its newest
/// event names, and the text `verify` shows.
pub type MissingVersion = (Option<ModelName>, Option<arca_core::ModelVersion>, String);

/// A version record that is not served, and why; `version` names it when the record opened.
#[derive(Debug, Clone)]
pub struct BadVersion {
    pub version: Option<(ModelName, arca_core::ModelVersion)>,
    pub why: String,
}

impl BadVersion {
    /// Whether `verify` of `model` reports it: its own, or one that names no model.
    pub fn concerns(&self, model: &ModelName) -> bool {
        self.version.as_ref().is_none_or(|(m, _)| m == model)
    }
}

/// A policy as stored: the model's name is inside the sealed value (the row key is its hash).
#[derive(serde::Serialize, serde::Deserialize)]
struct PolicyRecord {
    model: ModelName,
    stored: StoredPolicy,
}

fn dek_label(id: u32) -> String {
    format!("dek/{id}")
}

impl Store {
    /// Opens (creating on first use) the store in `state_dir`.
    pub fn open(state_dir: &Path, kek: Kek) -> Result<Self, StoreError> {
        Self::open_with(state_dir, kek, None)
    }

    /// `open`; with `seed`, a new store is created holding those keys (a fleet's), and an
    /// existing one is refused unless it holds them.
    pub fn open_with(
        state_dir: &Path,
        kek: Kek,
        seed: Option<&SeedKeys>,
    ) -> Result<Self, StoreError> {
        let kek_ref = &kek;
        let io = |source| StoreError::Io {
            path: state_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io)?;
        }
        let kv = Kv::open(&state_dir.join("db"))?;
        let format = kv.get(Cf::Meta, FORMAT_KEY)?;
        let created = format.is_none();
        let keys = match format.as_deref() {
            None => {
                // A store is created only where there is nothing: a missing format marker on a
                // database that holds records means someone removed it, and creating keys now
                // would overwrite the wrapped data keys.
                if let Some(cf) = Self::first_nonempty(&kv)? {
                    return Err(StoreError::Refused(format!(
                        "the state directory holds {} records but no format marker: it was tampered with; restore it from a backup",
                        cf.name()
                    )));
                }
                Self::initialise(&kv, kek_ref, seed)?
            }
            Some(f) if f == FORMAT_VALUE || f == FORMAT_V2 || f == FORMAT_V1 => {
                let keys = Self::load_keys(&kv, kek_ref)?;
                if let Some(seed) = seed {
                    let theirs = Keyring::new(Vec::new(), seed.current, seed.id_key.clone());
                    if theirs.chunk_id(b"arca fleet key probe")
                        != keys.chunk_id(b"arca fleet key probe")
                    {
                        return Err(StoreError::Refused(
                            "this state directory holds a store with keys of its own, not the fleet's: a host joins a fleet with an empty state directory".into(),
                        ));
                    }
                }
                keys
            }
            Some(_) => {
                return Err(StoreError::Corrupt(
                    "state directory holds an unknown store format".into(),
                ))
            }
        };
        let audit_key = Self::audit_signing_key(&kv, kek_ref)?;
        let chain = std::sync::Mutex::new(Self::load_chain(&kv, &keys)?);
        let store = Self {
            kv,
            keys,
            audit_key,
            chain,
            event_counts: Default::default(),
            kek: std::sync::RwLock::new(kek),
            seal_gate: std::sync::RwLock::new(()),
            bindings: Default::default(),
            publisher: Default::default(),
            staged_locs: Default::default(),
            cache_count: Default::default(),
            cache_lock: Default::default(),
            packs: packs::LocalPacks::new(&state_dir.join("packs")),
            appender: Default::default(),
        };
        if created {
            store.record_creation()?;
        }
        let v1 = format.as_deref() == Some(FORMAT_V1);
        let mut bindings = store.scan_bindings(!v1)?;
        if v1 {
            store.upgrade_v1(&bindings)?;
            bindings = store.scan_bindings(true)?;
        }
        if let Some(at) = bindings.broken_at() {
            tracing::error!(
                event = at,
                "the audit trail is broken: no version, role, policy or key record can be checked for replay, so none is used; `arca audit verify` names the fault"
            );
        }
        *store.bindings.write().unwrap_or_else(|p| p.into_inner()) = bindings;
        // Every chunk indexed (a store before format 3 once, by one pass over RocksDB's
        // chunks), and the local pack files tidied, before anything reads or writes a chunk.
        store.open_cache_index()?;
        if format.as_deref() != Some(FORMAT_VALUE) && !created {
            let mut b = Batch::default();
            b.put(Cf::Meta, FORMAT_KEY, FORMAT_VALUE.to_vec());
            store.kv.commit(b)?;
            tracing::info!("store upgraded to format 3: new chunks go to local pack files");
        }
        Ok(store)
    }

    /// The first column family holding records that only an existing store has.
    fn first_nonempty(kv: &Kv) -> Result<Option<Cf>, StoreError> {
        for cf in [
            Cf::Versions,
            Cf::Acl,
            Cf::Keys,
            Cf::Audit,
            Cf::Chunks,
            Cf::Cache,
        ] {
            if kv.scan(cf).next().transpose()?.is_some() {
                return Ok(Some(cf));
            }
        }
        Ok(None)
    }

    /// Event 1 of a new store: its creation, with the audit public key it will sign with, so
    /// the key that `audit verify` checks against is itself in the chain.
    fn record_creation(&self) -> Result<(), StoreError> {
        let d = Draft::new(EventKind::Store, "arcad")
            .detail("action", "created")
            .detail("audit_public_key", self.audit_key.public().to_string());
        self.commit_audited(Batch::default(), vec![d], Vec::new(), true)?;
        Ok(())
    }

    /// Format 1 → 2: one audited, synced write that re-seals every version, role, policy and
    /// trusted-key record bound to a `store` event naming them (each policy by an event of its
    /// own that names its model, so a policy row removed later still locks its model). Records
    /// that do not open are left as they are (they stay unusable and `verify` names them). What
    /// the store held at the upgrade is taken as current: replays from before it cannot be told
    /// apart. `format` is not authenticated, so a marker set back to 1 on a format-2 store is
    /// refused: its trail already holds format-2 writes (`Bindings::format2`), and a record that
    /// already carries a binding is never wrapped again.
    fn upgrade_v1(&self, seen: &Bindings) -> Result<(), StoreError> {
        if let Some(at) = seen.broken_at() {
            return Err(StoreError::Refused(format!(
                "the store is marked format 1 but its audit trail is broken at event {at}: not upgrading records the trail cannot vouch for; restore the state directory from a backup"
            )));
        }
        if seen.format2() {
            return Err(StoreError::Refused(
                "the store is marked format 1, but its audit trail holds format-2 writes: the format marker was set back; restore the state directory from a backup".into(),
            ));
        }
        let mut puts = Vec::new();
        let mut drafts = vec![Draft::new(EventKind::Store, "arcad")
            .detail("action", "upgraded")
            .detail("format", "2")
            .detail("audit_public_key", self.audit_key.public().to_string())];
        for cf in [Cf::Versions, Cf::Acl, Cf::Keys] {
            for item in self.kv.scan(cf) {
                let (k, v) = item?;
                let (Ok(row), Ok(json)) = (
                    <[u8; 32]>::try_from(&*k),
                    self.keys.open_record(cf.name(), &k, &v),
                ) else {
                    tracing::error!(
                        "format upgrade: a {} record does not open; left as it is",
                        cf.name()
                    );
                    continue;
                };
                // Format 1 plaintext is JSON (an object or a list); a bound one starts with the
                // big-endian seq, whose first byte is 0 for any real trail.
                if !matches!(json.first(), Some(b'{' | b'[')) {
                    return Err(StoreError::Refused(format!(
                        "the store is marked format 1, but {} record {} already carries an audit binding: the format marker was set back",
                        cf.name(),
                        hex::encode(row)
                    )));
                }
                let mut by = None;
                if cf == Cf::Acl {
                    if let Ok(p) = serde_json::from_slice::<PolicyRecord>(&json) {
                        drafts.push(
                            Draft::new(EventKind::Store, "arcad")
                                .model(&p.model)
                                .detail("action", "upgraded")
                                .detail("record", "policy"),
                        );
                        by = Some(drafts.len() - 1);
                    }
                }
                puts.push(RecordPut {
                    cf,
                    row,
                    json: Some(json),
                    by,
                });
            }
        }
        let n = puts.len();
        drafts[0].details.insert("records".into(), n.to_string());
        let mut b = Batch::default();
        b.put(Cf::Meta, FORMAT_KEY, FORMAT_VALUE.to_vec());
        // The upgrade event names the records no policy event names.
        for p in puts.iter_mut().filter(|p| p.by.is_none()) {
            p.by = Some(0);
        }
        self.commit_audited(b, drafts, puts, true)?;
        tracing::info!(records = n, "store upgraded to format 2");
        Ok(())
    }

    /// First open: new data key 1 and id key, wrapped, written with the format marker in one batch.
    /// With `seed`, the fleet's keys instead of new ones.
    fn initialise(kv: &Kv, kek: &Kek, seed: Option<&SeedKeys>) -> Result<Keyring, StoreError> {
        let (deks, current, idk) = match seed {
            Some(s) => (
                s.deks
                    .iter()
                    .map(|(i, k)| (*i, k.clone()))
                    .collect::<Vec<_>>(),
                s.current,
                s.id_key.clone(),
            ),
            None => (vec![(1, SecretBytes::random()?)], 1, SecretBytes::random()?),
        };
        let mut b = Batch::default();
        for (id, dek) in &deks {
            b.put(
                Cf::Meta,
                dek_label(*id).as_bytes(),
                kek.wrap(&dek_label(*id), dek)?,
            );
        }
        b.put(Cf::Meta, ID_KEY.as_bytes(), kek.wrap(ID_KEY, &idk)?);
        b.put(Cf::Meta, DEK_CURRENT, current.to_le_bytes().to_vec());
        // The audit signing key is made here and only here (`audit_signing_key`).
        let audit = SecretBytes::random()?;
        b.put(
            Cf::Meta,
            audit::AUDIT_KEY_LABEL.as_bytes(),
            kek.wrap(audit::AUDIT_KEY_LABEL, &audit)?,
        );
        b.put(Cf::Meta, FORMAT_KEY, FORMAT_VALUE.to_vec());
        kv.commit(b)?;
        Ok(Keyring::new(deks, current, idk))
    }

    fn load_keys(kv: &Kv, kek: &Kek) -> Result<Keyring, StoreError> {
        let missing = |what: &str| StoreError::Corrupt(format!("store metadata lacks {what}"));
        let cur = kv
            .get(Cf::Meta, DEK_CURRENT)?
            .ok_or_else(|| missing("the current key id"))?;
        let current = u32::from_le_bytes(
            cur.try_into()
                .map_err(|_| missing("a valid current key id"))?,
        );
        let idk = kek.unwrap_key(
            ID_KEY,
            &kv.get(Cf::Meta, ID_KEY.as_bytes())?
                .ok_or_else(|| missing("the id key"))?,
        )?;
        let mut deks = Vec::new();
        for item in kv.scan(Cf::Meta) {
            let (k, v) = item?;
            if let Some(id) = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| s.strip_prefix("dek/"))
                .and_then(|s| s.parse().ok())
            {
                deks.push((id, kek.unwrap_key(&dek_label(id), &v)?));
            }
        }
        if !deks.iter().any(|(id, _)| *id == current) {
            return Err(missing("the current data key"));
        }
        Ok(Keyring::new(deks, current, idk))
    }

    /// Reads the format marker: the store answers.
    pub fn health(&self) -> Result<(), StoreError> {
        match self.kv.get(Cf::Meta, FORMAT_KEY)? {
            Some(_) => Ok(()),
            None => Err(StoreError::Corrupt("the format marker is gone".into())),
        }
    }

    fn kek(&self) -> std::sync::RwLockReadGuard<'_, Kek> {
        self.kek.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// Whether a chunk is here (in RocksDB, or in a local pack file). Chunks a push wrote but
    /// has not made durable yet (`flush_chunks`) are not.
    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool, StoreError> {
        match self.cache_row(id)? {
            // A pack file's row is written only once its bytes are synced (`append.rs`); a
            // fleet host's fetched chunk is checked when read (gone: a miss, fetched again).
            Some(cache::Here::Pack(_)) => Ok(true),
            None => Ok(false),
            // A `chunks` row's index row was written before the chunk, which skipped the WAL
            // (stores before format 3): after a crash the index can name a chunk not there.
            Some(cache::Here::Db(_)) => Ok(self.kv.contains(Cf::Chunks, id.as_bytes())?),
        }
    }

    /// Seals a chunk straight into the buffer of the local pack file pushes append to (not
    /// yet durable, nor here for `has_chunk`: see `flush_chunks`). Returns its sealed length,
    /// 0 if another push has it pending.
    pub fn put_chunk(&self, id: &ChunkId, plaintext: &[u8]) -> Result<usize, StoreError> {
        // Sealing and writing happen under the gate, so once a data-key rotation has switched
        // keys (under the gate's write side) no chunk sealed under the old key is still being
        // written: the rotation's scan, which starts after the switch, sees every such chunk.
        let _gate = self.seal_gate.read().unwrap_or_else(|p| p.into_inner());
        let mut app = self.appender.lock().unwrap_or_else(|p| p.into_inner());
        let loc = self.append(&mut app, id, plaintext, None)?;
        Ok(loc.map_or(0, |l| l.len as usize))
    }

    /// Runs `f` on the sealed bytes of a chunk, if present, without copying them out first.
    /// A chunk in a local pack file is read into a buffer and authenticated first (callers
    /// such as a push's upload or fleet GC's repack pass the bytes on unopened, and a pack
    /// file is easier to write behind arcad's back than RocksDB); one whose bytes are gone or
    /// fail is not here (its row is dropped: a fleet host fetches it again).
    pub fn with_sealed_chunk<R>(
        &self,
        id: &ChunkId,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, StoreError> {
        if self.packed_loc(id)?.is_some() {
            // `open_sealed_chunk` may try more than once, but returns at the first success.
            let mut f = Some(f);
            return Ok(self
                .open_sealed_chunk(id, |sealed| {
                    self.keys
                        .open_chunk(id, sealed)
                        .map(|_| f.take().map(|f| f(sealed)))
                })?
                .and_then(|r| {
                    r.inspect_err(|e| tracing::error!(chunk = %id, "the local copy of a chunk failed authentication ({e}); its row is dropped"))
                        .ok()
                        .flatten()
                }));
        }
        Ok(self.kv.with_chunk(id.as_bytes(), f)?)
    }

    /// `with_sealed_chunk` for a reader that opens the chunk (`f` authenticates it). A chunk
    /// from a local pack file that fails, or whose bytes are gone, is looked up again: if its
    /// row moved meanwhile (a key rotation re-sealed it elsewhere) it is read from there; if
    /// eviction or GC took it (its bytes punched out under the read) it is not here (`None`); if
    /// its row still stands, the local copy is damaged: its row is dropped (a fleet host then
    /// fetches a good copy from the fleet's store; a push of the same bytes puts it back) and
    /// the failure is returned to be reported.
    pub fn open_sealed_chunk<T>(
        &self,
        id: &ChunkId,
        mut f: impl FnMut(&[u8]) -> Result<T, crate::crypt::CryptError>,
    ) -> Result<Option<Result<T, crate::crypt::CryptError>>, StoreError> {
        // A row moves only when a rotation re-seals the chunk: twice in a row is not a race.
        for _ in 0..3 {
            let Some(loc) = self.packed_loc(id)? else {
                return Ok(self.kv.with_chunk(id.as_bytes(), &mut f)?);
            };
            match self.read_packed(&loc)? {
                Some(sealed) => match f(&sealed) {
                    Ok(v) => return Ok(Some(Ok(v))),
                    Err(e) => {
                        if self.drop_damaged_copy(id, &loc, Some(&sealed))? {
                            return Ok(Some(Err(e)));
                        }
                    }
                },
                None => {
                    if self.drop_damaged_copy(id, &loc, None)? {
                        tracing::warn!(chunk = %id, pack = %loc.pack, "the local copy of a chunk is gone from its pack file (removed or truncated behind arcad's back)");
                        return Ok(None);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Opens a run of chunks with as few reads as their places allow: chunks lying back to
    /// back in one local pack file (a push writes a file's chunks so) are read with one `pread`
    /// of up to `RUN_BYTES`, and each is handed to `f(index in ids, sealed)`, which
    /// authenticates it, in place in that buffer. A chunk elsewhere, or one that fails there, is
    /// read alone through `open_sealed_chunk` (which tells a race from damage). Each result goes
    /// to `done(index, what open_sealed_chunk would give)` as soon as it is known, so a reader
    /// waiting for the first chunk of a run does not wait for the last.
    pub fn open_sealed_run<T>(
        &self,
        ids: &[ChunkId],
        mut f: impl FnMut(usize, &[u8]) -> Result<T, crate::crypt::CryptError>,
        mut done: impl FnMut(usize, Result<Option<Result<T, crate::crypt::CryptError>>, StoreError>),
    ) {
        /// Measured on a cold sequential read: past a few hundred KiB a larger read gains
        /// little, and the run's buffer is held until its last chunk is opened.
        const RUN_BYTES: u64 = 1 << 20;
        // `None`: not in a pack file, or its row could not be read: read alone below.
        let locs: Vec<Option<ChunkLoc>> = ids
            .iter()
            .map(|id| self.packed_loc(id).ok().flatten())
            .collect();
        let mut delivered = vec![false; ids.len()];
        let mut i = 0;
        while i < ids.len() {
            let Some(first) = locs[i] else {
                i += 1;
                continue;
            };
            let mut j = i + 1;
            let mut end = first.offset + first.len as u64;
            while let Some(Some(l)) = locs.get(j) {
                if l.pack != first.pack
                    || l.offset != end
                    || end + l.len as u64 - first.offset > RUN_BYTES
                {
                    break;
                }
                end += l.len as u64;
                j += 1;
            }
            // Gone, short or unreadable: each is looked up again alone, below.
            if j - i > 1 {
                if let Ok(Some(run)) =
                    self.packs
                        .read(&first.pack, first.offset, (end - first.offset) as u32)
                {
                    for (k, l) in locs.iter().enumerate().take(j).skip(i) {
                        let Some(l) = l else { continue };
                        let at = (l.offset - first.offset) as usize;
                        if let Ok(v) = f(k, &run[at..at + l.len as usize]) {
                            delivered[k] = true;
                            done(k, Ok(Some(Ok(v))));
                        }
                    }
                }
            }
            i = j;
        }
        for (k, id) in ids.iter().enumerate() {
            if !delivered[k] {
                done(k, self.open_sealed_chunk(id, |s| f(k, s)));
            }
        }
    }

    /// Deletes chunks: indexed ones with their rows (their bytes punched out of a pack file),
    /// and pending ones of a push that failed (never indexed; punched out at the next open).
    pub fn delete_chunks(&self, ids: &[ChunkId]) -> Result<(), StoreError> {
        self.appender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget(ids);
        self.delete_counted(ids).map(|_| ())
    }

    /// After deleting chunks: give back the space of blob files that are now entirely garbage.
    pub fn reclaim_chunk_space(&self) {
        self.kv.compact_chunks();
    }

    /// Makes every chunk written so far durable and indexed (`append.rs`): called before a
    /// version that references them commits.
    pub fn flush_chunks(&self) -> Result<(), StoreError> {
        {
            let mut app = self.appender.lock().unwrap_or_else(|p| p.into_inner());
            self.checkpoint(&mut app, false)?;
        }
        // Chunks a rotation re-sealed in place in RocksDB (stores from before format 3).
        Ok(self.kv.flush_chunks()?)
    }

    /// After a push: moves what it left in the small records' memtables (over 1 MiB per column
    /// family) to table files, so that memory is free again (see `Kv::flush_small_memtables`).
    pub fn settle_after_push(&self) -> Result<(), StoreError> {
        Ok(self.kv.flush_small_memtables(1 << 20)?)
    }

    fn version_row(&self, name: &str, version: &str) -> [u8; 32] {
        self.keys
            .row_key("version", &[name.as_bytes(), version.as_bytes()])
    }

    /// Writes version records in one synced batch: all of them or none. The caller has flushed
    /// the chunks they reference.
    pub fn put_versions(
        &self,
        recs: &[&VersionRecord],
        events: Vec<Draft>,
    ) -> Result<(), StoreError> {
        self.put_versions_settling(recs, events, &[])
    }

    /// As `put_versions`, also taking `settled` (chunks these versions now reference) off the
    /// GC candidate list in the same write.
    pub fn put_versions_settling(
        &self,
        recs: &[&VersionRecord],
        events: Vec<Draft>,
        settled: &[ChunkId],
    ) -> Result<(), StoreError> {
        let mut b = Batch::default();
        for id in settled {
            b.delete(Cf::Gc, id.as_bytes());
        }
        let mut puts = Vec::with_capacity(recs.len());
        for rec in recs {
            let row = self.version_row(
                rec.metadata.name.as_str(),
                &rec.metadata.version.to_string(),
            );
            puts.push(RecordPut::put(Cf::Versions, row, rec)?);
        }
        self.commit_audited(b, events, puts, true).map(|_| ())
    }

    /// Opens a mutable record and checks its audit binding: the JSON, or why it is not used.
    fn open_bound(&self, cf: Cf, row: &[u8], sealed: &[u8]) -> Result<Vec<u8>, String> {
        let mut plain = self
            .keys
            .open_record(cf.name(), row, sealed)
            .map_err(|e| format!("{} record {}: {e}", cf.name(), hex::encode(row)))?;
        let found = Binding::split(&plain).map(|(b, _)| b);
        self.bindings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .check(cf, row, found)
            .map_err(|e: Stale| {
                format!("{} record {} is not used: {e}", cf.name(), hex::encode(row))
            })?;
        plain.drain(..binding::PREFIX_LEN);
        Ok(plain)
    }

    /// Rows of `cf` that the audit trail says hold a record but that are not in the store (a
    /// deletion no event recorded).
    pub fn missing_records(&self, cf: Cf) -> Result<Vec<String>, StoreError> {
        Ok(self
            .missing_rows(cf)?
            .into_iter()
            .map(|(row, seq)| missing_text(cf, &row, seq))
            .collect())
    }

    fn missing_rows(&self, cf: Cf) -> Result<Vec<(arca_core::id::RowKey, u64)>, StoreError> {
        let mut live = self
            .bindings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .live_rows(cf);
        live.sort_by_key(|(_, seq)| *seq);
        let mut out = Vec::new();
        for (row, seq) in live {
            if self.kv.get(cf, row.as_bytes())?.is_none() {
                out.push((row, seq));
            }
        }
        Ok(out)
    }

    /// The event where the audit trail broke, when it was found broken at open.
    pub fn trail_broken_at(&self) -> Option<u64> {
        self.bindings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .broken_at()
    }

    /// Every version record. A record that does not open, decode or pass its audit check is
    /// returned as an error item (naming the version when the record opened, else its row key)
    /// so callers can refuse to expose it without hiding the others.
    pub fn versions(&self) -> Result<Vec<Result<VersionRecord, BadVersion>>, StoreError> {
        let mut out = Vec::new();
        for item in self.kv.scan(Cf::Versions) {
            let (k, v) = item?;
            out.push(self.open_version(&k, &v));
        }
        Ok(out)
    }

    fn open_version(&self, row: &[u8], sealed: &[u8]) -> Result<VersionRecord, BadVersion> {
        let unnamed = |why: String| BadVersion { version: None, why };
        let plain = self
            .keys
            .open_record(Cf::Versions.name(), row, sealed)
            .map_err(|e| unnamed(format!("version record {}: {e}", hex::encode(row))))?;
        let (found, json) = match Binding::split(&plain) {
            Some((b, json)) => (Some(b), json),
            None => (None, &plain[..]),
        };
        let rec: VersionRecord = serde_json::from_slice(json)
            .map_err(|e| unnamed(format!("version record {}: {e}", hex::encode(row))))?;
        // The row key is derived from name and version; a record moved to another row opens
        // (the AEAD binds the row) only if it is the same version, but check anyway.
        if self
            .version_row(
                rec.metadata.name.as_str(),
                &rec.metadata.version.to_string(),
            )
            .as_slice()
            != row
        {
            return Err(unnamed(format!(
                "version record {} is stored under the wrong key",
                hex::encode(row)
            )));
        }
        self.bindings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .check(Cf::Versions, row, found)
            .map_err(|e| BadVersion {
                why: format!(
                    "{} {}: the version record is not used: {e}",
                    rec.metadata.name, rec.metadata.version
                ),
                version: Some((rec.metadata.name.clone(), rec.metadata.version.clone())),
            })?;
        Ok(rec)
    }

    /// Reads a version's record from the store again and checks it as at open: it opens, it
    /// matches the newest event for its row, and it is the record the catalog serves.
    pub fn check_version(&self, rec: &VersionRecord) -> Result<(), String> {
        let row = self.version_row(
            rec.metadata.name.as_str(),
            &rec.metadata.version.to_string(),
        );
        let sealed = self
            .kv
            .get(Cf::Versions, &row)
            .map_err(|e| format!("reading the version record: {e}"))?
            .ok_or("the version record is gone from the store")?;
        let stored = self.open_version(&row, &sealed).map_err(|b| b.why)?;
        if stored.merkle_root != rec.merkle_root
            || stored.status != rec.status
            || stored.history.len() != rec.history.len()
            || stored.approvals.len() != rec.approvals.len()
        {
            return Err("the stored version record differs from the one being served".into());
        }
        Ok(())
    }

    /// Version rows the audit trail says exist but the store lacks, with the model and version
    /// their newest event names.
    pub fn missing_versions(&self) -> Result<Vec<MissingVersion>, StoreError> {
        let mut out = Vec::new();
        for (row, seq) in self.missing_rows(Cf::Versions)? {
            let (m, v) = self.event_subject(seq)?;
            out.push((m, v, missing_text(Cf::Versions, &row, seq)));
        }
        Ok(out)
    }

    /// Removes a version record; its chunks become GC candidates in the same write.
    pub fn delete_version(
        &self,
        rec: &VersionRecord,
        events: Vec<Draft>,
    ) -> Result<(), StoreError> {
        let row = self.version_row(
            rec.metadata.name.as_str(),
            &rec.metadata.version.to_string(),
        );
        let mut b = Batch::default();
        for f in &rec.files {
            for c in &f.chunks {
                b.put(Cf::Gc, c.id.as_bytes(), Vec::new());
            }
        }
        let puts = vec![RecordPut::delete(Cf::Versions, row)];
        self.commit_audited(b, events, puts, true).map(|_| ())
    }

    fn key_row(&self, uid: u32, key: &arca_core::sign::PublicKey) -> [u8; 32] {
        self.keys
            .row_key("trusted-key", &[&uid.to_le_bytes(), key.as_bytes()])
    }

    pub fn put_trusted_key(&self, k: &TrustedKey, events: Vec<Draft>) -> Result<(), StoreError> {
        let row = self.key_row(k.uid, &k.public_key);
        let puts = vec![RecordPut::put(Cf::Keys, row, k)?];
        self.commit_audited(Batch::default(), events, puts, true)
            .map(|_| ())
    }

    /// Removes a trusted key's record (`arca key untrust`).
    pub fn delete_trusted_key(&self, k: &TrustedKey, events: Vec<Draft>) -> Result<(), StoreError> {
        let row = self.key_row(k.uid, &k.public_key);
        let puts = vec![RecordPut::delete(Cf::Keys, row)];
        self.commit_audited(Batch::default(), events, puts, true)
            .map(|_| ())
    }

    /// Every trusted key whose record opens and passes its audit check, and what was wrong with
    /// the others: a record that fails is not trusted (trust falls back to "no").
    pub fn trusted_keys_checked(&self) -> Result<(Vec<TrustedKey>, Vec<String>), StoreError> {
        let mut out = Vec::new();
        let mut faults = Vec::new();
        for item in self.kv.scan(Cf::Keys) {
            let (k, v) = item?;
            let rec = self.open_bound(Cf::Keys, &k, &v).and_then(|plain| {
                serde_json::from_slice::<TrustedKey>(&plain)
                    .map_err(|e| format!("key record {}: {e}", hex::encode(&k)))
            });
            match rec {
                Ok(rec) if self.key_row(rec.uid, &rec.public_key).as_slice() == &*k => {
                    out.push(rec)
                }
                Ok(_) => faults.push(format!(
                    "key record {} is stored under the wrong key",
                    hex::encode(&k)
                )),
                Err(why) => faults.push(why),
            }
        }
        Ok((out, faults))
    }

    /// The trusted keys whose records pass their checks (see `trusted_keys_checked`).
    pub fn trusted_keys(&self) -> Result<Vec<TrustedKey>, StoreError> {
        Ok(self.trusted_keys_checked()?.0)
    }

    fn seal_json<T: serde::Serialize>(
        &self,
        cf: Cf,
        row: &[u8],
        value: &T,
    ) -> Result<Vec<u8>, StoreError> {
        let json = serde_json::to_vec(value)
            .map_err(|e| StoreError::Corrupt(format!("encoding a {} record: {e}", cf.name())))?;
        self.keys
            .seal_record(cf.name(), row, &json)
            .map_err(|source| StoreError::Crypt {
                what: format!("sealing a {} record", cf.name()),
                source,
            })
    }

    fn open_json<T: serde::de::DeserializeOwned>(
        &self,
        cf: Cf,
        row: &[u8],
        sealed: &[u8],
    ) -> Result<T, StoreError> {
        let plain = self
            .keys
            .open_record(cf.name(), row, sealed)
            .map_err(|source| StoreError::Crypt {
                what: format!("{} record {}", cf.name(), hex::encode(row)),
                source,
            })?;
        serde_json::from_slice(&plain).map_err(|e| {
            StoreError::Corrupt(format!("{} record {}: {e}", cf.name(), hex::encode(row)))
        })
    }

    fn roles_row(&self) -> [u8; 32] {
        self.keys.row_key("roles", &[])
    }

    fn policy_row(&self, model: &ModelName) -> [u8; 32] {
        self.keys.row_key("policy", &[model.as_str().as_bytes()])
    }

    /// Replaces the role assignments (one record: a change is one atomic write).
    pub fn put_roles(
        &self,
        roles: &[RoleAssignment],
        events: Vec<Draft>,
    ) -> Result<(), StoreError> {
        let row = self.roles_row();
        let puts = vec![RecordPut::put(Cf::Acl, row, &roles)?];
        self.commit_audited(Batch::default(), events, puts, true)
            .map(|_| ())
    }

    pub fn put_policy(
        &self,
        model: &ModelName,
        p: &StoredPolicy,
        events: Vec<Draft>,
    ) -> Result<(), StoreError> {
        let row = self.policy_row(model);
        let rec = PolicyRecord {
            model: model.clone(),
            stored: p.clone(),
        };
        let puts = vec![RecordPut::put(Cf::Acl, row, &rec)?];
        self.commit_audited(Batch::default(), events, puts, true)
            .map(|_| ())
    }

    /// The role assignments and policies. A record that does not open is an error: access
    /// decisions must not be made on a partial table. A record that opens but fails its audit
    /// check falls back to "deny": stale role assignments are dropped (no one but bootstrap
    /// admins holds a role), a model with a stale policy is locked (`AccessTable::locked`); both
    /// are listed in `faults`.
    pub fn access_table(&self) -> Result<AccessTable, StoreError> {
        let mut t = AccessTable::default();
        let roles_row = self.roles_row();
        for item in self.kv.scan(Cf::Acl) {
            let (k, v) = item?;
            let stale = match self.open_bound(Cf::Acl, &k, &v) {
                Ok(plain) => {
                    if *k == roles_row {
                        t.assignments = self.decode(Cf::Acl, &k, &plain)?;
                        continue;
                    }
                    let rec: PolicyRecord = self.decode(Cf::Acl, &k, &plain)?;
                    if self.policy_row(&rec.model).as_slice() != &*k {
                        return Err(StoreError::Corrupt(format!(
                            "policy record {} is stored under the wrong key",
                            hex::encode(&k)
                        )));
                    }
                    t.policies.insert(rec.model, rec.stored);
                    continue;
                }
                Err(why) => why,
            };
            // Which record it was: the binding failed, but the value itself is authentic (it
            // opened), so it can still say which model it belongs to.
            let plain = self
                .keys
                .open_record(Cf::Acl.name(), &k, &v)
                .map_err(|source| StoreError::Crypt {
                    what: format!("acl record {}", hex::encode(&k)),
                    source,
                })?;
            let json = Binding::split(&plain).map_or(&plain[..], |(_, j)| j);
            if *k == roles_row {
                t.faults.push((None, format!("role assignments: {stale}")));
            } else if let Ok(rec) = serde_json::from_slice::<PolicyRecord>(json) {
                t.faults
                    .push((Some(rec.model.clone()), format!("policy: {stale}")));
                t.locked.insert(rec.model);
            } else {
                t.faults.push((None, stale));
            }
        }
        for (row, seq) in self.missing_rows(Cf::Acl)? {
            let why = missing_text(Cf::Acl, &row, seq);
            // A removed policy would fall back to the defaults, which may be weaker: lock the
            // model its event names instead.
            let model = match row.as_bytes() == &roles_row {
                true => None,
                false => self.event_subject(seq)?.0,
            };
            if let Some(m) = &model {
                t.locked.insert(m.clone());
            }
            t.faults.push((model, why));
        }
        Ok(t)
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        cf: Cf,
        row: &[u8],
        json: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(json).map_err(|e| {
            StoreError::Corrupt(format!("{} record {}: {e}", cf.name(), hex::encode(row)))
        })
    }

    /// Chunk ids that may be unreferenced (see `Cf::Gc`).
    pub fn gc_candidates(&self) -> Result<Vec<ChunkId>, StoreError> {
        let mut out = Vec::new();
        for item in self.kv.scan(Cf::Gc) {
            let (k, _) = item?;
            let id: [u8; 32] = (*k).try_into().map_err(|_| {
                StoreError::Corrupt(format!("gc row {} is not a chunk id", hex::encode(&k)))
            })?;
            out.push(ChunkId(id));
        }
        Ok(out)
    }

    /// Takes chunks off the candidate list (they are referenced after all).
    pub fn settle_candidates(&self, ids: &[ChunkId]) -> Result<(), StoreError> {
        let mut b = Batch::default();
        for id in ids {
            b.delete(Cf::Gc, id.as_bytes());
        }
        Ok(self.kv.commit_opt(b, false)?)
    }

    /// Bytes on disk of the chunk column family (blob and table files).
    /// With a fleet host's local pack files.
    pub fn chunk_disk_bytes(&self) -> Result<u64, StoreError> {
        let packs = self.packs.disk_bytes().map_err(|e| self.packs_error(e))?;
        Ok(self.kv.disk_bytes(Cf::Chunks)? + packs)
    }
}

fn missing_text(cf: Cf, row: &arca_core::id::RowKey, seq: u64) -> String {
    format!(
        "{} record {row} written by audit event {seq} is missing: removed behind the daemon's back",
        cf.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::StoredPolicy;
    use arca_core::api::{Policy, Principal, Role};

    fn kek(dir: &Path) -> Kek {
        match Kek::load(&dir.join("kek")) {
            Ok(k) => k,
            Err(_) => Kek::generate_file(&dir.join("kek")).unwrap(),
        }
    }

    fn roles(user: &str) -> Vec<RoleAssignment> {
        vec![RoleAssignment {
            principal: Principal::User {
                name: user.into(),
                uid: 4242,
            },
            role: Role::MlAdmin,
            model: None,
            granted_by: "root".into(),
            granted_at: 1,
        }]
    }

    fn policy() -> StoredPolicy {
        StoredPolicy {
            policy: Policy::default(),
            updated_by: "root".into(),
            updated_at: 1,
        }
    }

    /// A new store with one role assignment written.
    fn with_roles(state: &Path, dir: &Path) -> Store {
        let s = Store::open(state, kek(dir)).unwrap();
        s.put_roles(
            &roles("alice"),
            vec![Draft::new(EventKind::RoleChange, "root")],
        )
        .unwrap();
        s
    }

    #[test]
    fn a_new_store_records_its_audit_key_in_event_1() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let s = Store::open(&dir.path().join("state"), kek(dir.path())).unwrap();
        let e = s.audit_query(&audit::AuditFilter {
            limit: 10,
            ..Default::default()
        });
        let e = e.unwrap();
        assert_eq!(e[0].seq, 1);
        assert_eq!(e[0].kind, EventKind::Store);
        assert_eq!(
            e[0].details["audit_public_key"],
            s.audit_public_key().to_string()
        );
        assert!(s.audit_verify().unwrap().fault.is_none());
    }

    #[test]
    fn a_format_1_store_is_upgraded_and_its_records_bound() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let state = dir.path().join("state");
        let model: ModelName = "up".parse().unwrap();
        {
            let s = with_roles(&state, dir.path());
            s.put_policy(
                &model,
                &policy(),
                vec![Draft::new(EventKind::PolicyChange, "root")],
            )
            .unwrap();
            // Rewrite every record as format 1 held it (the JSON alone in the envelope), with a
            // trail of format 1 (here: none; its events named no record and no `store` event).
            let mut b = Batch::default();
            for item in s.kv.scan(Cf::Audit) {
                b.delete(Cf::Audit, &item.unwrap().0);
            }
            for cf in [Cf::Acl] {
                for item in s.kv.scan(cf) {
                    let (k, v) = item.unwrap();
                    let plain = s.keys.open_record(cf.name(), &k, &v).unwrap();
                    let (_, json) = Binding::split(&plain).unwrap();
                    b.put(cf, &k, s.keys.seal_record(cf.name(), &k, json).unwrap());
                }
            }
            b.put(Cf::Meta, FORMAT_KEY, FORMAT_V1.to_vec());
            s.kv.commit(b).unwrap();
        }
        let s = Store::open(&state, kek(dir.path())).unwrap();
        assert_eq!(
            s.kv.get(Cf::Meta, FORMAT_KEY).unwrap().as_deref(),
            Some(FORMAT_VALUE)
        );
        let t = s.access_table().unwrap();
        assert!(t.faults.is_empty(), "{:?}", t.faults);
        assert_eq!(t.assignments.len(), 1);
        assert!(t.policies.contains_key(&model));
        let up = s
            .audit_query(&audit::AuditFilter {
                kind: Some(EventKind::Store),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        // One upgrade event for the roles, one naming the model for its policy.
        assert_eq!(up.len(), 2, "{up:?}");
        assert!(up.iter().all(|e| e.details["action"] == "upgraded"));
        assert_eq!(up[1].model.as_ref(), Some(&model));
        assert_eq!(up[0].records.len() + up[1].records.len(), 2);
        assert!(s.audit_verify().unwrap().fault.is_none());
    }

    #[test]
    fn a_format_marker_set_back_to_1_is_refused() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let state = dir.path().join("state");
        {
            let s = with_roles(&state, dir.path());
            let mut b = Batch::default();
            b.put(Cf::Meta, FORMAT_KEY, FORMAT_V1.to_vec());
            s.kv.commit(b).unwrap();
        }
        match Store::open(&state, kek(dir.path())) {
            Err(StoreError::Refused(why)) => assert!(why.contains("set back"), "{why}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("re-upgraded a format-2 store"),
        }
    }

    #[test]
    fn a_trail_emptied_under_records_is_broken() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let state = dir.path().join("state");
        {
            let s = with_roles(&state, dir.path());
            let mut b = Batch::default();
            for item in s.kv.scan(Cf::Audit) {
                b.delete(Cf::Audit, &item.unwrap().0);
            }
            s.kv.commit(b).unwrap();
        }
        let s = Store::open(&state, kek(dir.path())).unwrap();
        assert_eq!(s.trail_broken_at(), Some(1));
        // Events appended afterwards (a refusal, say) do not make it whole again.
        s.append_audit(vec![Draft::new(EventKind::Refusal, "bob")])
            .unwrap();
        let f = s.audit_verify().unwrap().fault.unwrap();
        assert!(f.problem.contains("events were removed"), "{f:?}");
        drop(s);
        let s = Store::open(&state, kek(dir.path())).unwrap();
        assert_eq!(s.trail_broken_at(), Some(1));
        assert!(s.access_table().unwrap().assignments.is_empty());
    }

    #[test]
    fn an_older_record_put_back_is_not_used() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let state = dir.path().join("state");
        let old;
        {
            let s = with_roles(&state, dir.path());
            old = s.kv.scan(Cf::Acl).next().unwrap().unwrap();
            s.put_roles(&[], vec![Draft::new(EventKind::RoleChange, "root")])
                .unwrap();
            assert!(s.access_table().unwrap().faults.is_empty());
            let mut b = Batch::default();
            b.put(Cf::Acl, &old.0, old.1.to_vec());
            s.kv.commit(b).unwrap();
            // Caught at once, not only after a restart.
            let t = s.access_table().unwrap();
            assert!(t.assignments.is_empty());
            assert_eq!(t.faults.len(), 1, "{:?}", t.faults);
        }
        let s = Store::open(&state, kek(dir.path())).unwrap();
        let t = s.access_table().unwrap();
        assert!(t.assignments.is_empty(), "the revoked role came back");
        assert!(
            t.faults[0].1.contains("an older record put back"),
            "{:?}",
            t.faults
        );
    }

    #[test]
    fn no_audit_key_on_a_store_with_records_refuses_to_open() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let state = dir.path().join("state");
        {
            let s = with_roles(&state, dir.path());
            let mut b = Batch::default();
            b.delete(Cf::Meta, audit::AUDIT_KEY_LABEL.as_bytes());
            s.kv.commit(b).unwrap();
        }
        match Store::open(&state, kek(dir.path())) {
            Err(StoreError::Refused(why)) => assert!(why.contains("audit signing key is gone")),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened a store whose audit key was removed"),
        }
    }
}
