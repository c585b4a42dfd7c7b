//! A fleet: many arcad hosts sharing one registry through an S3 object store.
//!
//! What lives in the store (below the configured prefix; docs/format.md, "Fleet objects"):
//! - `fleet/keys`: the fleet's id key and data keys, wrapped by the fleet KEK that every host
//!   holds. Created once, create-only, by the first host to start.
//! - `packs/<pack id>`: immutable packs of sealed chunks (`pack.rs`).
//! - `log/<seq>`: the ordered, signed, sealed, hash-chained log of state changes (`log.rs`).
//! - `audit/<host>/<index>`: each host's own audit events that are not in the log (reads,
//!   refusals, integrity failures), shipped in signed, sealed, hash-chained segments
//!   (`audit.rs`), so every host can report and verify the whole fleet's trail.
//!
//! Each host's RocksDB is a verified replica of the log plus a cache of chunks
//! (`store/fleet.rs`). This module talks to the store only through `remote.rs`.

pub mod audit;
pub mod cache;
mod fetch;
pub mod gc;
pub mod heartbeat;
pub mod log;
pub mod pack;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arca_core::id::{ChunkId, PackId};
use arca_core::sign::PublicKey;
use bytes::Bytes;

use crate::keys::{Kek, SecretBytes};
use crate::remote::{Remote, RemoteConfig, RemoteError};
use crate::store::fleet::{PublishError, Publisher};
use crate::store::{SeedKeys, Store};
use log::{entry_hash, entry_key, open_entry, Located};
use pack::PackBuilder;

/// The `[fleet]` section of the configuration.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// This host's name in the fleet (pinned with its key in every host's `[fleet.hosts]`).
    pub host: String,
    pub remote: RemoteConfig,
    /// Every host's name and entry-signing public key (`arcad --host-key` prints a host's).
    pub hosts: BTreeMap<String, PublicKey>,
    /// How often a host looks for new entries.
    pub poll: Duration,
    /// The local chunk cache: its limit and `warm_before_switch`.
    pub cache: cache::CacheConfig,
    /// Fleet GC: time from a pack's condemnation to its deletion, and the age an unreferenced
    /// pack must reach before it counts as an orphan.
    pub gc_grace: Duration,
    /// Fleet GC: a pack at least this many percent dead is repacked.
    pub repack_dead_percent: u8,
    /// Fleet GC: the periodic GC collects the fleet's packs too (else only `arca gc` does).
    pub gc_packs: bool,
    /// How often this host ships its new audit events to the store (and at clean shutdown).
    pub audit_ship: Duration,
}

const KEYS_OBJECT: &str = "fleet/keys";
/// Reads of objects arca writes small are capped, so an object planted in the bucket cannot
/// make every host read gigabytes into memory: a log entry (a version record with 100,000
/// files is about 30 MB) and the keys object.
const MAX_ENTRY: u64 = 64 << 20;
const MAX_KEYS_OBJECT: u64 = 64 << 10;
/// A missing chunk is fetched with the chunks after it in its pack, up to this many bytes, in
/// one ranged GET: a pack holds at most `PACK_TARGET` bytes of chunks, so a sequential reader
/// costs one request per pack (about 32 per GiB). The bytes are streamed and each chunk is
/// authenticated, cached and handed to its waiters as soon as it is whole, so memory stays at
/// about one chunk per fetch and readers need not wait for the whole extent.
const EXTENT: u64 = pack::PACK_TARGET as u64;
/// The extent of a fetch for a mount reader who wants part of one chunk (a random reader: a
/// 4 KiB read of a safetensors header, a tensor's slice): the chunk and about 1 MiB after it,
/// not the rest of a 32 MiB pack. A sequential reader reads whole chunks and gets `EXTENT`.
const RANDOM_EXTENT: u64 = 1 << 20;
/// The least a sequential mount reader's fetch reads ahead: its window is as long as the
/// stretch it has read in a row (so it doubles from fetch to fetch) and at most `EXTENT`. A
/// reader that stops after a few MiB (a header, the first tensors) costs a few MiB, not a pack;
/// one that reads a whole 1 GiB file costs about five requests for its first pack and one for
/// each after (measured in `fleet_reads.rs`).
const MIN_AHEAD: u64 = 4 << 20;

/// Who a fetch is for: how much of the pack it reads, and where the plaintext goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchFor {
    /// `get`, `verify`, warm-ups: the rest of the pack; plaintext only to waiting readers.
    Bulk,
    /// The mount, a whole chunk for a sequential reader who read `ahead` bytes in a row: that
    /// many bytes of the pack (`MIN_AHEAD` to `EXTENT`; `u64::MAX`: the rest of the pack);
    /// every chunk's plaintext also to the mount's cache (`set_plaintext_sink`).
    MountWhole { ahead: u64 },
    /// The mount, a random reader (part of one chunk, or a whole chunk inside a read that is
    /// not sequential): `RANDOM_EXTENT`; plaintext as above, the first chunk's too.
    MountPart,
}
/// Fetches for readers streaming at once on this host (each on a thread of its own,
/// `fetch.rs`); a reader that finds no room waits for one to end, until its deadline. Reads of
/// cached chunks never wait for them: the mount runs reads of uncached chunks on threads of
/// their own.
const MAX_FETCHES: usize = 4;
/// How often the log is listed past the next entry (to notice a gap: an entry deleted behind
/// arca's back) and the newest applied entry read again (to notice it replaced).
const AUDIT_EVERY: Duration = Duration::from_secs(5);
/// How soon an audit that failed, or found an applied entry missing, is made again. An entry
/// is taken for deleted only when two audits at least this far apart both miss it: a store's
/// gateways may show an overwrite as a delete followed by a create (SeaweedFS filers copy an
/// overwrite to one another that way), and an entry replaced behind arca's back must then be
/// named as the fork it is, not as a deletion.
const RECHECK: Duration = Duration::from_secs(1);
/// How old a sighting of something missing may be and still confirm a later one: audits that
/// failed in between (an outage) must not join a sighting from minutes ago with one of the
/// next brief overwrite into a halt.
const RECHECK_WITHIN: Duration = Duration::from_secs(30);
/// Entries looked at per audit by the sweep over the applied part of the log
/// (`sweep_applied`).
const SWEEP_PAGE: usize = 1000;
/// Keys per listing of the log, and listings one look past a seq may take (`entries_after`):
/// keys under `log/` that are not entry names (planted by a bucket writer) are skipped, but no
/// more than this many pages of them, so a bucket stuffed with them costs a bounded look and
/// a clear error, never a check that passes without having seen the entries.
const LOG_PAGE: usize = 1000;
const MAX_LOG_PAGES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("fleet keys: {0}")]
    Keys(String),
    /// The log holds something this host will not apply; it keeps serving what it has.
    #[error("the fleet's log is halted on this host: {0}")]
    Halted(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A fetched chunk failed authentication: never cached, never served.
    #[error("chunk {chunk} in pack {pack} failed authentication: {why}")]
    Integrity {
        chunk: ChunkId,
        pack: PackId,
        why: String,
    },
    #[error("{0}")]
    Config(String),
    /// This host's audit segments in the store are not as it left them: it ships no more
    /// (its events stay in its own trail) until an operator looks.
    #[error("audit shipping halted: {0}")]
    AuditShipping(String),
}

/// The fleet's key object: wrapped keys, hex-encoded.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeysObject {
    format: u32,
    current: u32,
    id_key: String,
    deks: BTreeMap<u32, String>,
}

const IDK_LABEL: &str = "fleet-idk";
fn dek_label(id: u32) -> String {
    format!("fleet-dek/{id}")
}

/// Reads the fleet's keys, creating them (create-only: one host's set wins) if the fleet is
/// new: only by a host whose own store is new (`may_create`) and only while the log is empty,
/// so a keys object deleted from the store is never replaced by a key set no host can use.
pub fn load_or_create_keys(
    remote: &Remote,
    kek: &Kek,
    may_create: bool,
) -> Result<SeedKeys, FleetError> {
    let bytes = match remote.get_capped(KEYS_OBJECT, MAX_KEYS_OBJECT) {
        Ok(b) => b,
        Err(RemoteError::NotFound(_)) => {
            if !may_create {
                return Err(FleetError::Keys(format!(
                    "{KEYS_OBJECT} is missing from the store, and this host already holds a store: not creating new fleet keys (restore the object from a backup)"
                )));
            }
            if !remote.list_after("log/", "")?.is_empty() {
                return Err(FleetError::Keys(format!(
                    "{KEYS_OBJECT} is missing from the store but its log holds entries: the object was deleted; restore it from a backup"
                )));
            }
            let idk = SecretBytes::random().map_err(|e| FleetError::Keys(e.to_string()))?;
            let dek = SecretBytes::random().map_err(|e| FleetError::Keys(e.to_string()))?;
            let wrap = |label: &str, k: &SecretBytes| {
                kek.wrap(label, k)
                    .map(hex::encode)
                    .map_err(|e| FleetError::Keys(e.to_string()))
            };
            let obj = KeysObject {
                format: 1,
                current: 1,
                id_key: wrap(IDK_LABEL, &idk)?,
                deks: [(1, wrap(&dek_label(1), &dek)?)].into(),
            };
            let json = serde_json::to_vec(&obj).map_err(|e| FleetError::Keys(e.to_string()))?;
            match remote.create(KEYS_OBJECT, Bytes::from(json)) {
                Ok(_) => tracing::info!("fleet: created the fleet's keys"),
                // Another host created them first: theirs stand.
                Err(RemoteError::Exists(_)) => {}
                Err(e) => return Err(e.into()),
            }
            remote.get_capped(KEYS_OBJECT, MAX_KEYS_OBJECT)?
        }
        Err(e) => return Err(e.into()),
    };
    let obj: KeysObject = serde_json::from_slice(&bytes)
        .map_err(|e| FleetError::Keys(format!("{KEYS_OBJECT} is malformed: {e}")))?;
    if obj.format != 1 {
        return Err(FleetError::Keys(format!(
            "{KEYS_OBJECT} has unknown format {}",
            obj.format
        )));
    }
    let unwrap = |label: &str, hexed: &str| {
        let raw = hex::decode(hexed).map_err(|_| FleetError::Keys(format!("{label}: not hex")))?;
        kek.unwrap_key(label, &raw).map_err(|_| {
            FleetError::Keys(format!(
                "{KEYS_OBJECT}: {label} does not unwrap with this host's KEK: the KEK is not the fleet's, or the object was replaced"
            ))
        })
    };
    let id_key = unwrap(IDK_LABEL, &obj.id_key)?;
    let mut deks = Vec::new();
    for (id, w) in &obj.deks {
        deks.push((*id, unwrap(&dek_label(*id), w)?));
    }
    if !obj.deks.contains_key(&obj.current) {
        return Err(FleetError::Keys(format!(
            "{KEYS_OBJECT} lacks its current data key"
        )));
    }
    Ok(SeedKeys {
        id_key,
        deks,
        current: obj.current,
    })
}

/// What `status` and `/metrics` show about the fleet.
#[derive(Debug, Clone, Default)]
pub struct FleetState {
    /// Newest entry applied here.
    pub applied: u64,
    /// Entries applied since start (this host's own included).
    pub entries_applied: u64,
    /// When the log was last read successfully (ms since the epoch; 0: never).
    pub last_ok_ms: u64,
    /// The last failure to reach the store, if the last attempt failed.
    pub last_error: Option<String>,
    /// Why this host stopped applying the log (a fork, a gap, an entry that does not check).
    pub halted: Option<String>,
    /// Whether the halt is in this host's audit trail yet (the registry appends its
    /// `integrity_violation` event: `take_unaudited_halt`).
    pub halt_audited: bool,
    /// Chunks and bytes fetched from packs; chunks that failed authentication.
    pub chunks_fetched: u64,
    pub bytes_fetched: u64,
    /// Ranged GETs of packs (one per extent fetched).
    pub pack_requests: u64,
    /// Fetches that took a slow stream's rest over (`fetch::Flight::too_slow_for`).
    pub take_overs: u64,
    pub integrity_failures: u64,
    /// The newest entry the store showed this host when it last found no entry after it, and
    /// when (ms since the epoch): what `check_view` compares other hosts' heartbeats with.
    pub end_seen: Option<(u64, u64)>,
    /// Evidence that the store shows this host an old view of the log (`check_view`).
    pub stale_view: Option<StaleView>,
}

/// Another host's signed heartbeat contradicting the log as the store showed it to this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleView {
    /// The entry that host says it applied.
    pub seq: u64,
    pub host: String,
    /// In words, naming both.
    pub why: String,
}

pub struct Fleet {
    pub cfg: FleetConfig,
    pub remote: Arc<Remote>,
    /// Pinned hosts, this one included.
    hosts: BTreeMap<String, PublicKey>,
    state: Arc<Mutex<FleetState>>,
    /// When the next audit of the log is due (`audit_log`).
    next_audit: Mutex<Option<Instant>>,
    /// When an audit first found something of the log missing, in the run of audits that
    /// each found something missing (`missing`); cleared by an audit that passes.
    missing_seen: Mutex<Option<Instant>>,
    /// Where the next sweep of the applied part of the log starts (`audit_log`).
    sweep_from: Mutex<u64>,
    last_heartbeat: Mutex<Option<Instant>>,
    /// Set once a heartbeat of this host's reached the store: audit segments are shipped only
    /// after, so no host has segments but no heartbeat (which `audit verify` names a fault).
    heartbeat_written: std::sync::atomic::AtomicBool,
    /// Packs found missing or short in the store before an eviction, and when.
    missing_packs: Mutex<std::collections::HashMap<PackId, Instant>>,
    /// When `check_view` last ran, and where its next sample of other hosts starts.
    last_view: Mutex<(Option<Instant>, usize)>,
    /// Chunks being fetched now, and the fetches running (`fetch.rs`).
    fetches: Arc<fetch::Fetches>,
    /// Where a mount read's fetch hands the other chunks it authenticated (`set_plaintext_sink`).
    sink: std::sync::OnceLock<PlaintextSink>,
    /// This host's chunk cache: limit, recency, figures.
    pub cache: Arc<cache::Cache>,
    /// Where shipping this host's audit trail stands (`ship_audit`).
    ship: Mutex<Shipper>,
}

/// Where shipping this host's trail stands: the next segment's index and `prev`, how far the
/// segments in the store cover the trail, and how far it has looked past that (events from
/// the log alone make no segment).
struct Shipper {
    /// Read from the store (the newest segment, opened): after start, and after a create
    /// found the next index taken.
    ready: bool,
    next: u64,
    prev: arca_core::id::SegmentHash,
    covered_to: u64,
    scanned_to: u64,
    last: Option<Instant>,
    status: arca_core::api::AuditShipping,
}

impl Default for Shipper {
    fn default() -> Self {
        Self {
            ready: false,
            next: 1,
            prev: audit::GENESIS,
            covered_to: 0,
            scanned_to: 0,
            last: None,
            status: arca_core::api::AuditShipping::default(),
        }
    }
}

/// Most objects under `audit/` a report or verify reads (a bound on a listing an attacker
/// could stuff; more is an error, not a sample).
const MAX_AUDIT_OBJECTS: usize = 1_000_000;
/// Most segments one `ship_audit` call writes (the rest go at the next call).
const SHIP_SEGMENTS_PER_CALL: usize = 16;

/// A fetched chunk's verified plaintext.
pub type Plain = Arc<Vec<u8>>;

/// See `Fleet::set_plaintext_sink`.
pub type PlaintextSink = Arc<dyn Fn(&ChunkId, Plain) + Send + Sync>;

/// What `Fleet::fetch` found.
pub enum Fetched {
    /// The fleet has no location for the chunk.
    Unknown,
    /// The chunk is in this host's store now: read it from there.
    Cached,
    /// Fetched just now: cached, and here is its verified plaintext.
    Plain(Plain),
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn pack_key(p: &PackId) -> String {
    format!("packs/{p}")
}

/// How long a pack found missing (or short) in the store is not asked about again before
/// evicting chunks: its chunks stay meanwhile.
const PACK_RECHECK: Duration = Duration::from_secs(600);

impl Fleet {
    /// Whether pack `p` was found missing or short in the last `PACK_RECHECK`.
    pub fn pack_known_missing(&self, p: &PackId) -> bool {
        let mut m = self.missing_packs.lock().unwrap_or_else(|e| e.into_inner());
        match m.get(p) {
            Some(t) if t.elapsed() < PACK_RECHECK => true,
            Some(_) => {
                m.remove(p);
                false
            }
            None => false,
        }
    }

    /// Notes that pack `p` is missing or short (`what`), and says so in the log, once per
    /// `PACK_RECHECK`: the chunks of it this host holds are not evicted.
    pub fn note_missing_pack(&self, p: &PackId, what: &str) {
        let mut m = self.missing_packs.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= 4096 {
            m.retain(|_, t| t.elapsed() < PACK_RECHECK);
        }
        if m.insert(*p, Instant::now()).is_none() {
            tracing::error!(pack = %p, "fleet cache: a pack this host holds chunks of {what}; they are not evicted (it may be the last copy)");
        }
    }

    /// The size of pack `p` in the store, `None` if it is not there: asked before a chunk's
    /// last local copy is evicted, so that a pack the store lost (or someone deleted behind
    /// arca's back) does not take the chunk with it. `Err` if the store could not tell.
    pub fn pack_size(&self, p: &PackId) -> Result<Option<u64>, FleetError> {
        match self.remote.size(&pack_key(p)) {
            Ok(size) => Ok(Some(size)),
            Err(RemoteError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl Fleet {
    /// `own` is this host's entry-signing key; if the config pins this host's name, it must
    /// pin this key.
    pub fn new(
        cfg: FleetConfig,
        remote: Remote,
        own: PublicKey,
        cache: cache::Cache,
    ) -> Result<Self, FleetError> {
        let mut hosts = cfg.hosts.clone();
        match hosts.get(&cfg.host) {
            Some(k) if *k != own => {
                return Err(FleetError::Config(format!(
                    "[fleet.hosts] pins host {} to key {k}, but this host's key is {own} (`arcad --host-key` prints it)",
                    cfg.host
                )))
            }
            _ => {
                hosts.insert(cfg.host.clone(), own);
            }
        }
        if let Some((name, _)) = hosts.iter().find(|(n, k)| **k == own && **n != cfg.host) {
            return Err(FleetError::Config(format!(
                "[fleet.hosts] pins this host's key to host {name}, but this host is {}",
                cfg.host
            )));
        }
        Ok(Self {
            cfg,
            remote: Arc::new(remote),
            hosts,
            state: Arc::default(),
            next_audit: Mutex::new(None),
            missing_seen: Mutex::new(None),
            sweep_from: Mutex::new(0),
            last_heartbeat: Mutex::new(None),
            heartbeat_written: std::sync::atomic::AtomicBool::new(false),
            last_view: Mutex::new((None, 0)),
            missing_packs: Mutex::default(),
            sink: std::sync::OnceLock::new(),
            fetches: Arc::default(),
            cache: Arc::new(cache),
            ship: Mutex::new(Shipper::default()),
        })
    }

    /// The pinned hosts' names, this one included.
    pub fn host_names(&self) -> Vec<String> {
        self.hosts.keys().cloned().collect()
    }

    /// Counts an integrity failure found above this module (a pack the log names, gone).
    pub fn note_integrity_failure(&self) {
        self.state().integrity_failures += 1;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FleetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> FleetState {
        self.state().clone()
    }

    fn halt(&self, why: String) -> FleetError {
        tracing::error!(
            "fleet: {why}; this host stops applying the log and keeps serving what it has"
        );
        let mut s = self.state();
        if s.halted.is_none() {
            s.halted = Some(why.clone());
        }
        FleetError::Halted(s.halted.clone().unwrap_or(why))
    }

    /// The reason this host halted, once: for the registry to record it in the audit trail as
    /// an `integrity_violation` event (the halt itself is decided where no registry is at hand).
    pub fn take_unaudited_halt(&self) -> Option<String> {
        let mut s = self.state();
        match &s.halted {
            Some(h) if !s.halt_audited => {
                let h = h.clone();
                s.halt_audited = true;
                Some(h)
            }
            _ => None,
        }
    }

    fn note_remote(&self, r: &Result<(), RemoteError>) {
        let mut s = self.state();
        match r {
            Ok(()) => {
                s.last_ok_ms = now_ms();
                s.last_error = None;
            }
            Err(e) => s.last_error = Some(e.to_string()),
        }
    }

    /// Applies every entry after the newest applied one, in order. Returns how many it applied.
    /// Stops (and halts this host's replica) at the first entry that does not check out: a bad
    /// signature or seal, an unknown signer, a `prev` that is not the entry applied before it (a
    /// fork), a gap, or the newest applied entry replaced in the store.
    ///
    /// With `warm_before_switch`, an entry that makes a version production or staging (one
    /// that `served` says this host serves) is applied only after that version's chunks are
    /// fetched, or its deadline passed. Such an entry is applied first in a call (entries
    /// before it return at once, so the caller publishes them without waiting for the
    /// warm-up); the caller calls again until nothing is left.
    pub fn catch_up(
        &self,
        store: &Arc<Store>,
        served: &dyn Fn(&crate::manifest::VersionRecord) -> bool,
    ) -> Result<usize, FleetError> {
        if let Some(h) = self.state().halted.clone() {
            return Err(FleetError::Halted(h));
        }
        let (mut seq, mut prev) = store.applied()?;
        let mut n = 0;
        let mut end = None;
        loop {
            let next = seq + 1;
            let asked = now_ms();
            let got = self.remote.get_capped(&entry_key(next), MAX_ENTRY);
            let bytes = match got {
                Ok(b) => b,
                Err(RemoteError::NotFound(_)) => {
                    // The store said, at `asked` or later, that nothing follows `seq`.
                    end = Some((seq, asked));
                    break;
                }
                Err(RemoteError::TooLarge(m)) => {
                    return Err(self.halt(format!("log entry {next}: {m}")));
                }
                Err(e) => {
                    self.note_remote(&Err(RemoteError::Unreachable(e.to_string())));
                    return Err(e.into());
                }
            };
            if bytes.len() as u64 > MAX_ENTRY {
                return Err(self.halt(format!(
                    "log entry {next} is larger than {MAX_ENTRY} bytes, more than any entry arca writes"
                )));
            }
            let e = open_entry(store.keys(), &self.hosts, next, &bytes)
                .map_err(|e| self.halt(format!("{e}")))?;
            if e.prev != prev {
                return Err(self.halt(format!(
                    "fork at log entry {seq}: entry {next} (by host {}) chains to {}, but the entry {seq} applied here is {prev}: two entries claim seq {seq}",
                    e.host, e.prev
                )));
            }
            if let Some(budget) = self.cache.cfg.warm_before_switch {
                let switched = cache::switched_to_kept(store, &e, served);
                if !switched.is_empty() {
                    if n > 0 {
                        // Publish what came before it first.
                        break;
                    }
                    self.warm(store, &switched, budget);
                }
            }
            // Fleet GC's decisions are checked against this host's own replica first: a host
            // holding the fleet's keys must not be able to make the others drop live packs.
            self.check_gc_entry(store, &e)
                .map_err(|why| self.halt(why))?;
            let hash = entry_hash(&bytes);
            // An entry that opened but does not apply (a record of the wrong shape, no event)
            // is as bad as one that does not open: the host stops there, rather than failing
            // on it again at every poll without saying so in `status`.
            store.apply_entry(&e, hash).map_err(|err| match err {
                crate::store::StoreError::Corrupt(m) => self.halt(m),
                other => FleetError::Store(other),
            })?;
            tracing::info!(seq = next, host = %e.host, events = e.events.len(), "fleet: applied log entry");
            seq = next;
            prev = hash;
            n += 1;
        }
        self.note_remote(&Ok(()));
        {
            let mut s = self.state();
            s.applied = seq;
            s.entries_applied += n as u64;
            if end.is_some() {
                s.end_seen = end;
            }
            if s.stale_view.as_ref().is_some_and(|v| seq >= v.seq) {
                tracing::info!(
                    seq,
                    "fleet: the store shows this host the entries another host applied again"
                );
                s.stale_view = None;
            }
        }
        self.audit_log(store, seq)?;
        Ok(n)
    }

    /// Every `AUDIT_EVERY` (every `RECHECK` after one that failed or found an applied entry
    /// missing): the log must hold nothing past a missing entry (a gap: an entry deleted
    /// behind arca's back), and the newest applied entry must still be the bytes this host
    /// applied (not replaced: two entries for one seq).
    fn audit_log(&self, store: &Store, seq: u64) -> Result<(), FleetError> {
        {
            let mut next = self.next_audit.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if next.is_some_and(|t| now < t) {
                return Ok(());
            }
            // Until this audit passes, the next one comes soon.
            *next = Some(now + RECHECK);
        }
        if self.audit_once(store, seq)? {
            *self.next_audit.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Instant::now() + AUDIT_EVERY);
            *self.missing_seen.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        Ok(())
    }

    /// One audit: true if it passed, false if it found an applied entry missing for the
    /// first time (see `missing`).
    fn audit_once(&self, store: &Store, seq: u64) -> Result<bool, FleetError> {
        if let Some(&l) = self.entries_after(seq, 1)?.first() {
            if l > seq + 1 {
                return self.missing(format!(
                    "gap in the log: entry {} is missing but entry {l} exists (an entry was deleted from the store)",
                    seq + 1
                ));
            }
        }
        if let Some(gone) = self.sweep_applied(seq)? {
            return self.missing(format!(
                "log entry {gone}, applied here, is gone from the store (deleted behind arca's back)"
            ));
        }
        if seq > 0 {
            let (_, applied_hash) = store.applied()?;
            match self.remote.get_capped(&entry_key(seq), MAX_ENTRY) {
                Ok(b) if entry_hash(&b) == applied_hash => {}
                Ok(b) => {
                    return Err(self.halt(format!(
                        "fork at log entry {seq}: the store now holds {} there, but this host applied {applied_hash}: two entries claim seq {seq}",
                        entry_hash(&b)
                    )))
                }
                Err(RemoteError::NotFound(_)) => {
                    return self.missing(format!(
                        "log entry {seq}, applied here, is gone from the store (deleted behind arca's back)"
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Something of the log found missing: halts if an audit between `RECHECK` and
    /// `RECHECK_WITHIN` earlier found something missing too, with no audit passing since;
    /// otherwise notes it (false), and the next audit, `RECHECK` later, looks again.
    ///
    /// Any sighting confirms any other, not only the same one: a bucket writer who keeps the
    /// log broken but changes how (planting and removing keys past a gap between audits, so
    /// each finds another first entry past it) must not keep the host from halting. Only an
    /// audit that finds nothing missing clears the sighting.
    fn missing(&self, why: String) -> Result<bool, FleetError> {
        let mut seen = self.missing_seen.lock().unwrap_or_else(|p| p.into_inner());
        match *seen {
            Some(t) if (RECHECK..=RECHECK_WITHIN).contains(&t.elapsed()) => {
                drop(seen);
                Err(self.halt(why))
            }
            Some(t) if t.elapsed() < RECHECK => Ok(false),
            _ => {
                tracing::warn!("fleet: {why}? looking again in {RECHECK:?} before halting");
                *seen = Some(Instant::now());
                Ok(false)
            }
        }
    }

    /// One page of a sweep over the entries this host applied: each of them must still be in
    /// the store. An entry deleted behind arca's back is harmless to hosts that applied it, but
    /// a host that has not (a lagging or a new one) would stop there, or, were it the newest,
    /// take its seq for a change of its own; so every host that applied it names it (once two
    /// audits agree, `missing`). Returns the first applied entry missing, if any. A page is at
    /// most `SWEEP_PAGE` keys, so the cost of an audit stays bounded however long the log grows;
    /// a long log is swept over several audits.
    fn sweep_applied(&self, seq: u64) -> Result<Option<u64>, FleetError> {
        let from = *self.sweep_from.lock().unwrap_or_else(|p| p.into_inner());
        if seq == 0 || from >= seq {
            *self.sweep_from.lock().unwrap_or_else(|p| p.into_inner()) = 0;
            return Ok(None);
        }
        let listed = self.entries_after(from, SWEEP_PAGE)?;
        let mut expect = from + 1;
        for &s in &listed {
            if s > seq || s != expect {
                break;
            }
            expect += 1;
        }
        let page_full = listed.len() >= SWEEP_PAGE;
        let stopped_early = listed.iter().any(|&s| s >= expect && s <= seq);
        if expect <= seq && (!page_full || stopped_early) {
            // The same page is swept again by the next audit.
            return Ok(Some(expect));
        }
        *self.sweep_from.lock().unwrap_or_else(|p| p.into_inner()) = if page_full && expect <= seq {
            expect - 1
        } else {
            0
        };
        Ok(None)
    }

    /// The seqs of up to `want` entries past `seq` in the store, in order, from listings of
    /// `log/` after entry `seq`'s key (0: from the start). Keys that are not entry names (junk a
    /// bucket writer planted between entries) are neither returned nor counted, and a run of
    /// them under one entry's key is stepped over in one listing; at most `MAX_LOG_PAGES`
    /// listings are made, and a log still stuffed past that is an error naming it, never an
    /// answer that missed entries.
    fn entries_after(&self, seq: u64, want: usize) -> Result<Vec<u64>, FleetError> {
        let mut out = Vec::new();
        let mut after = if seq == 0 {
            String::new()
        } else {
            format!("{seq:020}")
        };
        for _ in 0..MAX_LOG_PAGES {
            let page = self.remote.list_after_max("log/", &after, LOG_PAGE)?;
            for l in &page {
                match log::seq_of_key(&l.key) {
                    Some(s) if s > seq => {
                        out.push(s);
                        if out.len() >= want {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
            let Some(last) = page.last() else {
                return Ok(out);
            };
            if page.len() < LOG_PAGE {
                return Ok(out);
            }
            let last = last.key.strip_prefix("log/").unwrap_or(&last.key);
            after = log::skip_junk_after(last);
        }
        Err(FleetError::Remote(RemoteError::Other(format!(
            "more than {} keys under log/ past entry {seq} are not log entries (planted in the bucket behind arca's back): remove the keys under log/ that are not 20 digits",
            (MAX_LOG_PAGES - 1) * LOG_PAGE
        ))))
    }

    /// Puts the chunks among `ids` that the fleet does not have yet into packs, uploads them
    /// (create-only) and returns their locations, for the entry that will reference them.
    pub fn upload(&self, store: &Store, ids: &[ChunkId]) -> Result<Vec<Located>, FleetError> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut b = PackBuilder::new();
        for id in ids {
            // A chunk in a pack fleet GC condemned or deleted counts as absent: uploaded again.
            if !seen.insert(*id) || store.usable_chunk_loc(id)?.is_some() {
                continue;
            }
            let added = store.with_sealed_chunk(id, |sealed| {
                // Closed before it would pass the target, so one extent covers a whole pack.
                if !b.is_empty() && b.len() + sealed.len() > pack::PACK_TARGET {
                    out.extend(self.put_pack(store, std::mem::take(&mut b))?);
                }
                b.add(*id, sealed)
                    .map_err(|e| FleetError::Config(e.to_string()))
            })?;
            match added {
                Some(r) => r?,
                None => {
                    return Err(FleetError::Store(crate::store::StoreError::Corrupt(
                        format!("chunk {id} of the version is not in the local store"),
                    )))
                }
            }
        }
        if !b.is_empty() {
            out.extend(self.put_pack(store, b)?);
        }
        Ok(out)
    }

    fn put_pack(&self, store: &Store, b: PackBuilder) -> Result<Vec<Located>, FleetError> {
        let pack::FinishedPack { name, bytes, locs } = b
            .finish(store.keys())
            .map_err(|e| FleetError::Config(e.to_string()))?;
        let n = bytes.len();
        match self.remote.create(&pack_key(&name), Bytes::from(bytes)) {
            // The name is a keyed hash of the bytes: an existing pack of that name is this one.
            Ok(_) | Err(RemoteError::Exists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(pack = %name, bytes = n, chunks = locs.len(), "fleet: pack uploaded");
        Ok(locs
            .into_iter()
            .map(|(id, loc)| Located { id, loc })
            .collect())
    }

    /// Where the plaintext of chunks a mount read's fetch authenticated goes (besides the
    /// readers waiting for them): the mount's cache, so the reader finds them there instead of
    /// reading each back from RocksDB and decrypting it a second time (measured: most of the
    /// chunks of an extent arrive before any reader waits for them).
    pub fn set_plaintext_sink(&self, sink: PlaintextSink) {
        let _ = self.sink.set(sink);
    }
}

impl Publisher for Fleet {
    fn host(&self) -> &str {
        &self.cfg.host
    }

    fn publish(&self, seq: u64, bytes: &[u8]) -> Result<(), PublishError> {
        if let Some(h) = self.state().halted.clone() {
            return Err(PublishError::Halted(format!(
                "this host's replica of the log is halted ({h}); not writing on top of it"
            )));
        }
        let key = entry_key(seq);
        // Entries past the one this change would take mean that seq is taken, or that it was
        // deleted behind arca's back (a gap): creating it then would put this host's change
        // under entries the other hosts applied after the deleted one, a fork only they would
        // notice. One listing per change.
        let past = match self.entries_after(seq, 1) {
            Ok(l) => l.first().copied(),
            Err(e) => {
                let m = e.to_string();
                self.note_remote(&Err(RemoteError::Unreachable(m.clone())));
                return Err(PublishError::Unavailable(m));
            }
        };
        if let Some(later) = past {
            return match self.remote.get_capped(&key, MAX_ENTRY) {
                // Taken: another host's change came first.
                Ok(_) => Err(PublishError::Conflict),
                Err(RemoteError::NotFound(_)) => Err(PublishError::Halted(
                    self.halt(format!(
                        "gap in the log: entry {seq} is missing but entry {later} exists (an entry was deleted from the store)"
                    ))
                    .to_string(),
                )),
                Err(e) => Err(PublishError::Unavailable(e.to_string())),
            };
        }
        let r = match self
            .remote
            .create_retained(&key, Bytes::copy_from_slice(bytes))
        {
            Ok(_) => Ok(()),
            Err(RemoteError::Exists(_)) => {
                // Ours, if an earlier attempt landed and only its answer was lost.
                match self.remote.get_capped(&key, MAX_ENTRY) {
                    Ok(b) if &b[..] == bytes => Ok(()),
                    Ok(_) => Err(PublishError::Conflict),
                    // Taken, but not readable yet through this gateway (gateways of one store
                    // may share metadata a moment late): another host's, most likely; try
                    // again after catching up.
                    Err(RemoteError::NotFound(_)) => Err(PublishError::Conflict),
                    Err(e) => Err(PublishError::Unconfirmed(e.to_string())),
                }
            }
            // A request that failed before any answer never reached the store only if it
            // never connected; the create may have landed.
            Err(e @ RemoteError::Unreachable(_)) => Err(PublishError::Unconfirmed(e.to_string())),
            Err(e) => Err(PublishError::Unavailable(e.to_string())),
        };
        self.note_remote(&match &r {
            Err(PublishError::Unavailable(m) | PublishError::Unconfirmed(m)) => {
                Err(RemoteError::Unreachable(m.clone()))
            }
            _ => Ok(()),
        });
        if r.is_ok() {
            let mut s = self.state();
            s.applied = seq;
            s.entries_applied += 1;
        }
        r
    }
}

/// A fleet host "a" on a fresh store in `dir`, with an in-memory object store, for unit tests:
/// `gc_grace` and `audit_ship` as the test needs them.
#[cfg(test)]
pub(crate) fn test_fleet(
    dir: &std::path::Path,
    gc_grace: Duration,
    audit_ship: Duration,
) -> (Store, Fleet) {
    let kek = Kek::generate_file(&dir.join("kek")).unwrap();
    let store = Store::open(&dir.join("state"), kek).unwrap();
    store.mark_fleet_host().unwrap();
    let cfg = FleetConfig {
        host: "a".into(),
        remote: RemoteConfig {
            endpoints: vec!["memory".into()],
            bucket: "b".into(),
            region: "r".into(),
            prefix: "arca".into(),
            credentials_file: None,
            ca_file: None,
            timeout: Duration::from_secs(5),
            retention: None,
        },
        hosts: Default::default(),
        poll: Duration::from_millis(500),
        gc_grace,
        repack_dead_percent: 50,
        gc_packs: false,
        cache: cache::CacheConfig::default(),
        audit_ship,
    };
    let c = cache::Cache::new(cfg.cache.clone(), 1 << 30, Vec::new());
    let fleet = Fleet::new(cfg, Remote::memory(), store.host_public_key(), c).unwrap();
    (store, fleet)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gap seen once is looked at again `RECHECK` later before the host halts: a gateway
    /// that shows an overwrite as a delete and a create must not make a host halt for a
    /// deletion. Seen again, it halts; filled in meanwhile, nothing happens.
    #[test]
    fn an_entry_missing_once_is_looked_at_again_before_halting() {
        let dir = tempfile::tempdir().unwrap();
        let (store, fleet) = test_fleet(
            dir.path(),
            Duration::from_secs(1),
            Duration::from_secs(3600),
        );
        let planted = || Bytes::from_static(b"not an entry; the listing is what counts");
        fleet.remote.create(&entry_key(2), planted()).unwrap();

        // Seen once: no halt, and the next audit comes `RECHECK` later, not `AUDIT_EVERY`.
        fleet.audit_log(&store, 0).unwrap();
        assert!(fleet.state().halted.is_none());
        fleet.audit_log(&store, 0).unwrap();
        assert!(fleet.state().halted.is_none(), "too soon to look again");
        // Filled in meanwhile: the audit passes and forgets what it saw.
        fleet.remote.create(&entry_key(1), planted()).unwrap();
        std::thread::sleep(RECHECK);
        fleet.audit_log(&store, 0).unwrap();
        assert!(fleet.state().halted.is_none());
        assert!(fleet.missing_seen.lock().unwrap().is_none());

        // A sighting older than `RECHECK_WITHIN` (audits failed in between) confirms nothing.
        fleet.remote.delete(&entry_key(1)).unwrap();
        *fleet.missing_seen.lock().unwrap() =
            Some(Instant::now() - RECHECK_WITHIN - Duration::from_secs(1));
        // The passing audit put the next one `AUDIT_EVERY` away: as if that had gone by.
        assert!(fleet.next_audit.lock().unwrap().unwrap() > Instant::now() + RECHECK);
        *fleet.next_audit.lock().unwrap() = None;
        fleet.audit_log(&store, 0).unwrap();
        assert!(fleet.state().halted.is_none());
        // A gap that stays, though its writer moves the key past it between audits (so each
        // audit finds another first entry past the gap): seen twice, `RECHECK` apart, it halts
        // the host and names it.
        fleet.remote.delete(&entry_key(2)).unwrap();
        fleet.remote.create(&entry_key(3), planted()).unwrap();
        std::thread::sleep(RECHECK);
        let err = fleet.audit_log(&store, 0).unwrap_err();
        assert!(
            err.to_string()
                .contains("entry 1 is missing but entry 3 exists"),
            "{err}"
        );
        assert!(fleet.state().halted.is_some());
    }
}
