//! The store's side of a fleet: this host's RocksDB as a verified replica of the fleet's log.
//!
//! - A change with records (a version, a role, a policy, a trusted key, a deletion) is first
//!   published as the next log entry (`Publisher`): sealed and signed here, created in the
//!   object store by the fleet module with a create-only put. Only once it won its seq is it
//!   committed locally, in one batch with the applied marker, so "applied up to N" and the
//!   state of entry N are one atomic write. A lost race is `StoreError::FleetConflict`: nothing
//!   was written; the registry catches up and re-runs the operation's checks.
//! - Entries of other hosts are applied by `apply_entry` through the same audited commit
//!   (their events enter this host's trail with `fleet_seq` and `fleet_host` details; their
//!   records are bound to those events as local ones are).
//! - Where each fleet chunk sits (pack, offset, length) is kept in the `locs` column family;
//!   a chunk fetched from a pack is authenticated by the caller before `put_fetched_extent` indexes it.
//!
//! Events without records (reads, refusals) stay in this host's own trail, which the fleet
//! module ships to the store in segments (`fleet/audit.rs`), signed with the same host key.

use std::sync::Arc;

use arca_core::audit::Draft;
use arca_core::id::{ChunkId, EntryHash, PackId, RowKey};

use super::kv::{Batch, Cf};
use super::{RecordPut, Store, StoreError};
use crate::fleet::log::{self, Entry, EventWire, GcWire, Located, RecordWire, GENESIS};
use crate::fleet::pack::ChunkLoc;

/// `meta` row: seq (u64 BE) and hash of the newest log entry applied here, in a record
/// envelope: someone who writes the state directory without the KEK cannot move it forward
/// (which would make this host skip entries); putting back an older sealed value only makes it
/// apply entries again, to the same state.
const APPLIED: &[u8] = b"fleet-applied";
/// `locs` rows: `c` + chunk id → `ChunkLoc`; `p` + pack id + offset (u64 BE) → chunk id and
/// sealed length (u32 LE), for extent reads in pack order.
const LOC_BY_CHUNK: u8 = b'c';
const LOC_BY_PACK: u8 = b'p';
/// `locs` rows kept by fleet GC's entries: `k` + pack id → seq (u64 LE) and time (ms, u64
/// LE) of the entry that condemned the pack; `x` + pack id → seq (u64 LE) of the entry that
/// deleted it. Sealed like the locations, so none can be planted.
const CONDEMNED: u8 = b'k';
const DELETED: u8 = b'x';

/// Why publishing failed.
#[derive(Debug)]
pub enum PublishError {
    /// Another host's entry took the seq.
    Conflict,
    /// The object store did not answer: nothing was applied anywhere.
    Unavailable(String),
    /// The create was sent but not confirmed: it may have landed.
    Unconfirmed(String),
    /// This host's replica is halted (or just halted: a gap under the seq it would take).
    Halted(String),
}

/// Appends entries to the fleet's log (implemented by the fleet module, which owns the
/// connection to the object store).
pub trait Publisher: Send + Sync {
    /// This host's name in the fleet.
    fn host(&self) -> &str;
    /// Creates entry `seq` with these stored bytes, only if no entry has that seq.
    fn publish(&self, seq: u64, bytes: &[u8]) -> Result<(), PublishError>;
}

fn loc_by_chunk(id: &ChunkId) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(LOC_BY_CHUNK);
    k.extend_from_slice(id.as_bytes());
    k
}

fn loc_by_pack(pack: &PackId, offset: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(41);
    k.push(LOC_BY_PACK);
    k.extend_from_slice(&pack.0);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

fn pack_row(kind: u8, pack: &PackId) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(kind);
    k.extend_from_slice(&pack.0);
    k
}

/// A pack fleet GC condemned: by the entry at `seq`, written at `at_ms` (the GC host's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condemned {
    pub seq: u64,
    pub at_ms: u64,
}

/// One `p` row: a chunk a pack serves, at an offset.
#[derive(Debug, Clone, Copy)]
pub struct PackRow {
    pub pack: PackId,
    pub offset: u64,
    pub id: ChunkId,
    pub len: u32,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The column families a log entry may write: the mutable records, nothing else (never keys,
/// chunks or the trail itself).
fn entry_cf(name: &str) -> Option<Cf> {
    [Cf::Versions, Cf::Acl, Cf::Keys]
        .into_iter()
        .find(|cf| cf.name() == name)
}

impl Store {
    /// A record from another host's entry must decode as what its column family holds, and a
    /// version record must sit at the row its name and version give: a bad one would stop
    /// this host from loading its catalog or access table at its next start.
    fn check_entry_record(&self, cf: Cf, row: &RowKey, json: &str) -> Result<(), String> {
        match cf {
            Cf::Versions => {
                let rec: crate::manifest::VersionRecord =
                    serde_json::from_str(json).map_err(|e| e.to_string())?;
                let want = self.version_row(
                    rec.metadata.name.as_str(),
                    &rec.metadata.version.to_string(),
                );
                if want != row.0 {
                    return Err("it is not at its version's row".into());
                }
                crate::registry::check_signed(&rec)
            }
            Cf::Keys => serde_json::from_str::<arca_core::api::TrustedKey>(json)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Cf::Acl => {
                let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
                if v.is_array() || v.is_object() {
                    Ok(())
                } else {
                    Err("neither a role list nor a policy".into())
                }
            }
            _ => Err("no entry may write this column family".into()),
        }
    }

    /// A fleet host's state directory opened without `[fleet]` would commit changes no other
    /// host ever sees: refused.
    pub fn was_fleet_host(&self) -> Result<bool, StoreError> {
        Ok(self.kv.get(Cf::Meta, APPLIED)?.is_some())
    }

    /// Marks a store created for a fleet (applied marker at entry 0), so that it is known as a
    /// fleet host's from then on, before it has applied any entry.
    pub fn mark_fleet_host(&self) -> Result<(), StoreError> {
        if self.was_fleet_host()? {
            return Ok(());
        }
        let mut b = Batch::default();
        self.note_applied(&mut b, 0, &GENESIS, &[])?;
        self.kv.commit(b)?;
        Ok(())
    }

    /// Makes this store a fleet replica: from now on every change with records goes through
    /// `p` first.
    pub fn set_publisher(&self, p: Arc<dyn Publisher>) {
        let _ = self.publisher.set(p);
    }

    pub fn in_fleet(&self) -> bool {
        self.publisher.get().is_some()
    }

    /// This host's key for signing log entries: the daemon's audit key.
    pub fn host_public_key(&self) -> arca_core::sign::PublicKey {
        self.audit_key.public()
    }

    /// The seq and hash of the newest entry applied here (0 and `GENESIS` before the first).
    pub fn applied(&self) -> Result<(u64, EntryHash), StoreError> {
        let sealed = self.kv.get(Cf::Meta, APPLIED)?;
        let opened = match sealed {
            None => None,
            Some(s) => Some(
                self.keys
                    .open_record(Cf::Meta.name(), APPLIED, &s)
                    .map_err(|_| {
                        StoreError::Refused(
                            "the fleet's applied marker does not open: the state directory was tampered with; restore it or start this host on an empty one".into(),
                        )
                    })?,
            ),
        };
        match opened {
            None => Ok((0, GENESIS)),
            Some(v) if v.len() == 40 => {
                let seq = u64::from_be_bytes(v[..8].try_into().unwrap_or_default());
                let hash = EntryHash(v[8..].try_into().unwrap_or_default());
                Ok((seq, hash))
            }
            Some(_) => Err(StoreError::Corrupt(
                "the fleet's applied marker is malformed".into(),
            )),
        }
    }

    /// Chunk locations the next published entry announces (set by the registry, under its
    /// commit lock, after uploading the packs that hold them).
    pub fn stage_chunk_locations(&self, locs: Vec<Located>) {
        *self.staged_locs.lock().unwrap_or_else(|p| p.into_inner()) = locs;
    }

    pub fn chunk_loc(&self, id: &ChunkId) -> Result<Option<ChunkLoc>, StoreError> {
        let key = loc_by_chunk(id);
        match self.kv.get(Cf::Locs, &key)? {
            None => Ok(None),
            Some(v) => Ok(ChunkLoc::from_bytes(&self.open_loc(&key, &v)?)),
        }
    }

    /// Location rows are sealed (bound to their key), so none can be planted: a planted one
    /// would make `upload` skip a chunk the fleet does not have, or send reads elsewhere.
    fn open_loc(&self, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.keys
            .open_record(Cf::Locs.name(), key, sealed)
            .map_err(|source| StoreError::Crypt {
                what: "a chunk location row".into(),
                source,
            })
    }

    fn seal_loc(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.keys
            .seal_record(Cf::Locs.name(), key, value)
            .map_err(|source| StoreError::Crypt {
                what: "sealing a chunk location row".into(),
                source,
            })
    }

    /// The chunks stored in `from.pack` from `from.offset` on, in pack order, while they are
    /// contiguous and their total stays within `max_bytes` (at least the first).
    pub fn pack_extent(
        &self,
        from: &ChunkLoc,
        max_bytes: u64,
    ) -> Result<Vec<(ChunkId, ChunkLoc)>, StoreError> {
        let start = loc_by_pack(&from.pack, from.offset);
        let end = loc_by_pack(&from.pack, u64::MAX);
        let mut out: Vec<(ChunkId, ChunkLoc)> = Vec::new();
        let mut next = from.offset;
        for item in self.kv.range(Cf::Locs, &start, &end, false) {
            let (k, v) = item?;
            let PackRow {
                offset, id, len, ..
            } = self.open_pack_row(&k, &v)?;
            let Some(end) = offset.checked_add(len as u64) else {
                break;
            };
            if offset != next || (!out.is_empty() && end - from.offset > max_bytes) {
                break;
            }
            out.push((
                id,
                ChunkLoc {
                    pack: from.pack,
                    offset,
                    len,
                },
            ));
            next = end;
        }
        Ok(out)
    }

    /// The chunks stored in `from.pack` just before `from.offset`, in pack order: the
    /// contiguous run of them that ends where `from` begins, starting at most `max_bytes`
    /// before it.
    pub fn pack_chunks_before(
        &self,
        from: &ChunkLoc,
        max_bytes: u64,
    ) -> Result<Vec<(ChunkId, ChunkLoc)>, StoreError> {
        let first = from.offset.saturating_sub(max_bytes);
        let start = loc_by_pack(&from.pack, first);
        let end = loc_by_pack(&from.pack, from.offset);
        let mut out: Vec<(ChunkId, ChunkLoc)> = Vec::new();
        for item in self.kv.range(Cf::Locs, &start, &end, false) {
            let (k, v) = item?;
            let PackRow {
                offset, id, len, ..
            } = self.open_pack_row(&k, &v)?;
            // A gap starts the run again: only chunks back to back up to `from` count.
            if out
                .last()
                .is_some_and(|(_, l)| l.offset.checked_add(l.len as u64) != Some(offset))
            {
                out.clear();
            }
            out.push((
                id,
                ChunkLoc {
                    pack: from.pack,
                    offset,
                    len,
                },
            ));
        }
        if out
            .last()
            .is_some_and(|(_, l)| l.offset.checked_add(l.len as u64) != Some(from.offset))
        {
            out.clear();
        }
        Ok(out)
    }

    /// Writes the applied marker and the entry's chunk locations into `b` (a chunk keeps the
    /// first location the log gave it: both packs hold the same sealed bytes).
    fn note_applied(
        &self,
        b: &mut Batch,
        seq: u64,
        hash: &EntryHash,
        chunks: &[Located],
    ) -> Result<(), StoreError> {
        let mut v = Vec::with_capacity(40);
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&hash.0);
        let sealed = self
            .keys
            .seal_record(Cf::Meta.name(), APPLIED, &v)
            .map_err(|source| StoreError::Crypt {
                what: "sealing the fleet's applied marker".into(),
                source,
            })?;
        b.put(Cf::Meta, APPLIED, sealed);
        let mut seen = std::collections::HashSet::new();
        for l in chunks {
            if !seen.insert(l.id) {
                continue;
            }
            // A chunk keeps the location it has while that pack is usable; one in a pack fleet
            // GC condemned or deleted moves to the new one (a push uploaded it again).
            if self.usable_chunk_loc(&l.id)?.is_some() {
                continue;
            }
            self.put_location(b, l)?;
        }
        Ok(())
    }

    /// Points chunk `l.id` at `l.loc` in `b`: its `c` row, and its `p` row in the new pack;
    /// its `p` row in the pack it leaves goes, so that a pack's `p` rows list exactly the
    /// chunks it serves (what fleet GC counts in it).
    fn put_location(&self, b: &mut Batch, l: &Located) -> Result<(), StoreError> {
        if let Some(old) = self.chunk_loc(&l.id)? {
            if old != l.loc {
                b.delete(Cf::Locs, &loc_by_pack(&old.pack, old.offset));
            }
        }
        let by_chunk = loc_by_chunk(&l.id);
        b.put(
            Cf::Locs,
            &by_chunk,
            self.seal_loc(&by_chunk, &l.loc.to_bytes())?,
        );
        let mut v = Vec::with_capacity(36);
        v.extend_from_slice(l.id.as_bytes());
        v.extend_from_slice(&l.loc.len.to_le_bytes());
        let by_pack = loc_by_pack(&l.loc.pack, l.loc.offset);
        b.put(Cf::Locs, &by_pack, self.seal_loc(&by_pack, &v)?);
        Ok(())
    }

    /// When fleet GC condemned `pack`, if it did (and did not rescue or delete it since).
    pub fn condemned(&self, pack: &PackId) -> Result<Option<Condemned>, StoreError> {
        let key = pack_row(CONDEMNED, pack);
        let Some(v) = self.kv.get(Cf::Locs, &key)? else {
            return Ok(None);
        };
        let v = self.open_loc(&key, &v)?;
        if v.len() != 16 {
            return Err(StoreError::Corrupt("a malformed condemned-pack row".into()));
        }
        Ok(Some(Condemned {
            seq: u64::from_le_bytes(v[..8].try_into().unwrap_or_default()),
            at_ms: u64::from_le_bytes(v[8..].try_into().unwrap_or_default()),
        }))
    }

    /// Whether an entry of the log deleted `pack`.
    pub fn pack_deleted(&self, pack: &PackId) -> Result<bool, StoreError> {
        let key = pack_row(DELETED, pack);
        match self.kv.get(Cf::Locs, &key)? {
            None => Ok(false),
            Some(v) => self.open_loc(&key, &v).map(|_| true),
        }
    }

    /// Whether a new reference may rely on chunks in `pack`: neither condemned nor deleted.
    pub fn pack_usable(&self, pack: &PackId) -> Result<bool, StoreError> {
        Ok(self.condemned(pack)?.is_none() && !self.pack_deleted(pack)?)
    }

    /// The chunk's location if a push may rely on it: a chunk in a condemned or deleted pack
    /// counts as absent from the fleet, so the push uploads it again.
    pub fn usable_chunk_loc(&self, id: &ChunkId) -> Result<Option<ChunkLoc>, StoreError> {
        match self.chunk_loc(id)? {
            Some(l) if self.pack_usable(&l.pack)? => Ok(Some(l)),
            _ => Ok(None),
        }
    }

    /// Every condemned pack, with when it was condemned.
    pub fn condemned_packs(&self) -> Result<Vec<(PackId, Condemned)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .kv
            .range(Cf::Locs, &[CONDEMNED], &[CONDEMNED + 1], false)
        {
            let (k, _) = item?;
            let pack = k
                .get(1..33)
                .and_then(|s| <[u8; 32]>::try_from(s).ok())
                .map(PackId)
                .ok_or_else(|| StoreError::Corrupt("a malformed condemned-pack key".into()))?;
            if let Some(c) = self.condemned(&pack)? {
                out.push((pack, c));
            }
        }
        Ok(out)
    }

    /// Every `p` row, opened: which chunk each pack serves at which offset.
    pub fn pack_rows(&self) -> Result<Vec<PackRow>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .kv
            .range(Cf::Locs, &[LOC_BY_PACK], &[LOC_BY_PACK + 1], false)
        {
            let (k, v) = item?;
            out.push(self.open_pack_row(&k, &v)?);
        }
        Ok(out)
    }

    fn open_pack_row(&self, k: &[u8], v: &[u8]) -> Result<PackRow, StoreError> {
        let v = self.open_loc(k, v)?;
        if k.len() != 41 || v.len() != 36 {
            return Err(StoreError::Corrupt("a malformed chunk location row".into()));
        }
        Ok(PackRow {
            pack: PackId(k[1..33].try_into().unwrap_or_default()),
            offset: u64::from_be_bytes(k[33..41].try_into().unwrap_or_default()),
            id: ChunkId(v[..32].try_into().unwrap_or_default()),
            len: u32::from_le_bytes(v[32..36].try_into().unwrap_or_default()),
        })
    }

    /// Fleet GC's decisions of the entry at `seq` (written at `at_ms`), into `b`: moved chunks
    /// first, then condemned, rescued and deleted packs. Every host does the same, so all
    /// agree which pack serves each chunk and which packs are going.
    fn apply_gc(&self, b: &mut Batch, seq: u64, at_ms: u64, gc: &GcWire) -> Result<(), StoreError> {
        let mut moved = std::collections::HashSet::new();
        for l in &gc.moved {
            if !moved.insert(l.id) {
                return Err(StoreError::Corrupt(format!(
                    "log entry {seq} moves chunk {} twice",
                    l.id
                )));
            }
            self.put_location(b, l)?;
        }
        let mut when = Vec::with_capacity(16);
        when.extend_from_slice(&seq.to_le_bytes());
        when.extend_from_slice(&at_ms.to_le_bytes());
        for p in &gc.condemn {
            let key = pack_row(CONDEMNED, p);
            b.put(Cf::Locs, &key, self.seal_loc(&key, &when)?);
        }
        for p in &gc.rescue {
            b.delete(Cf::Locs, &pack_row(CONDEMNED, p));
        }
        for p in &gc.deleted {
            // Its chunks' locations go (those still pointing here; a moved chunk points at its
            // new pack), so no read and no push relies on it any more.
            let start = loc_by_pack(p, 0);
            let end = loc_by_pack(p, u64::MAX);
            for item in self.kv.range(Cf::Locs, &start, &end, false) {
                let (k, v) = item?;
                let row = self.open_pack_row(&k, &v)?;
                b.delete(Cf::Locs, &k);
                if !moved.contains(&row.id)
                    && self.chunk_loc(&row.id)?.is_some_and(|l| l.pack == *p)
                {
                    b.delete(Cf::Locs, &loc_by_chunk(&row.id));
                }
            }
            b.delete(Cf::Locs, &pack_row(CONDEMNED, p));
            let key = pack_row(DELETED, p);
            b.put(Cf::Locs, &key, self.seal_loc(&key, &seq.to_le_bytes())?);
        }
        Ok(())
    }

    /// Publishes fleet GC's decisions as the log's next entry, with the run's audit events,
    /// and, having won the seq, applies them here. Returns the entry's seq.
    /// `FleetConflict`: another host's entry took the seq; nothing was written.
    pub fn commit_fleet_gc(&self, gc: GcWire, mut drafts: Vec<Draft>) -> Result<u64, StoreError> {
        let p = self
            .publisher
            .get()
            .ok_or_else(|| StoreError::Refused("not a fleet host".into()))?
            .clone();
        let mut b = Batch::default();
        let seq = self.publish_entry(&p, &mut b, &mut drafts, &[], &[], Some(gc))?;
        self.commit_audited_opt(b, drafts, Vec::new(), true, false)?;
        Ok(seq)
    }

    /// Builds, signs and publishes the next entry (a change's records, from `commit_audited`
    /// on a fleet host, or fleet GC's decisions) and, having won the seq, adds the applied
    /// marker and what applying it means here to `b`, and the fleet details to its events.
    /// Returns its seq.
    pub(super) fn publish_entry(
        &self,
        p: &Arc<dyn Publisher>,
        b: &mut Batch,
        drafts: &mut [Draft],
        records: &[RecordPut],
        owners: &[usize],
        gc: Option<GcWire>,
    ) -> Result<u64, StoreError> {
        let (applied, prev) = self.applied()?;
        let chunks = if gc.is_some() {
            Vec::new()
        } else {
            std::mem::take(&mut *self.staged_locs.lock().unwrap_or_else(|e| e.into_inner()))
        };
        let mut wire = Vec::with_capacity(records.len());
        for (r, by) in records.iter().zip(owners) {
            let json = match &r.json {
                Some(j) => Some(String::from_utf8(j.clone()).map_err(|_| {
                    StoreError::Corrupt(format!("a {} record is not UTF-8 JSON", r.cf.name()))
                })?),
                None => None,
            };
            wire.push(RecordWire {
                cf: r.cf.name().into(),
                row: RowKey(r.row),
                json,
                by: *by,
            });
        }
        let entry = Entry {
            seq: applied + 1,
            prev,
            host: p.host().to_owned(),
            at_ms: now_ms(),
            events: drafts.iter().map(EventWire::from_draft).collect(),
            records: wire,
            chunks,
            gc,
        };
        let bytes = log::seal_entry(&self.keys, &self.audit_key, &entry)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if let Err(e) = p.publish(entry.seq, &bytes) {
            // The staged locations belong to the change, which the registry retries.
            if entry.gc.is_none() {
                *self.staged_locs.lock().unwrap_or_else(|e| e.into_inner()) = entry.chunks;
            }
            return Err(match e {
                PublishError::Conflict => StoreError::FleetConflict,
                PublishError::Unavailable(m) => StoreError::FleetUnavailable(m),
                PublishError::Unconfirmed(m) => StoreError::FleetUnconfirmed(m),
                PublishError::Halted(m) => StoreError::FleetHalted(m),
            });
        }
        self.note_applied(b, entry.seq, &log::entry_hash(&bytes), &entry.chunks)?;
        if let Some(gc) = &entry.gc {
            self.apply_gc(b, entry.seq, entry.at_ms, gc)?;
        }
        for d in drafts.iter_mut() {
            d.details.insert("fleet_seq".into(), entry.seq.to_string());
            d.details.insert("fleet_host".into(), entry.host.clone());
        }
        Ok(entry.seq)
    }

    /// The stored bytes of one of this host's audit segments: sealed under the fleet's keys
    /// and signed with this host's key (the one its log entries carry).
    pub fn seal_audit_segment(
        &self,
        s: &crate::fleet::audit::Segment,
    ) -> Result<Vec<u8>, crate::fleet::audit::SegmentError> {
        crate::fleet::audit::seal_segment(&self.keys, &self.audit_key, s)
    }

    /// This host's heartbeat as stored: sealed with the fleet's keys, signed with its key.
    pub fn seal_heartbeat(
        &self,
        hb: &crate::fleet::heartbeat::Heartbeat,
    ) -> Result<Vec<u8>, crate::fleet::heartbeat::HeartbeatError> {
        crate::fleet::heartbeat::seal(&self.keys, &self.audit_key, hb)
    }

    /// Applies entry `e` (opened and checked by the fleet module: signature, seal, seq) whose
    /// stored bytes hash to `hash`: its records and events in one audited, synced write with
    /// the applied marker. Refuses an entry that is not the next one or does not chain to the
    /// one applied before it.
    pub fn apply_entry(&self, e: &Entry, hash: EntryHash) -> Result<(), StoreError> {
        let (applied, prev) = self.applied()?;
        if e.seq != applied + 1 {
            return Err(StoreError::Corrupt(format!(
                "log entry {} is not the next one (applied: {applied})",
                e.seq
            )));
        }
        if e.prev != prev {
            return Err(StoreError::Corrupt(format!(
                "log entry {} names {} as its predecessor, but entry {applied} applied here is {prev}",
                e.seq, e.prev
            )));
        }
        let mut records = Vec::with_capacity(e.records.len());
        for r in &e.records {
            let cf = entry_cf(&r.cf).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "log entry {} writes column family {:?}, which no entry may write",
                    e.seq, r.cf
                ))
            })?;
            if let Some(json) = &r.json {
                self.check_entry_record(cf, &r.row, json).map_err(|why| {
                    StoreError::Corrupt(format!(
                        "log entry {} writes a {} record that is not valid: {why}",
                        e.seq, r.cf
                    ))
                })?;
            }
            records.push(RecordPut {
                cf,
                row: r.row.0,
                json: r.json.as_ref().map(|j| j.as_bytes().to_vec()),
                by: Some(r.by),
            });
        }
        let drafts: Vec<Draft> = e
            .events
            .iter()
            .map(|w| {
                let mut d = w.to_draft();
                d.details.insert("fleet_seq".into(), e.seq.to_string());
                d.details.insert("fleet_host".into(), e.host.clone());
                d
            })
            .collect();
        if drafts.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "log entry {} has no event",
                e.seq
            )));
        }
        let mut b = Batch::default();
        // A version another host deleted: its chunks here become GC candidates, as they do
        // for a deletion made here.
        for r in records
            .iter()
            .filter(|r| r.cf == Cf::Versions && r.json.is_none())
        {
            if let Some(sealed) = self.kv.get(Cf::Versions, &r.row)? {
                if let Ok(rec) = self.open_version(&r.row, &sealed) {
                    for f in &rec.files {
                        for c in &f.chunks {
                            b.put(Cf::Gc, c.id.as_bytes(), Vec::new());
                        }
                    }
                }
            }
        }
        self.note_applied(&mut b, e.seq, &hash, &e.chunks)?;
        if let Some(gc) = &e.gc {
            self.apply_gc(&mut b, e.seq, e.at_ms, gc)?;
        }
        self.commit_audited_opt(b, drafts, records, true, false)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::log::Located;

    #[test]
    fn extents_run_over_back_to_back_chunks_of_one_pack_and_stop_at_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(
            &dir.path().join("state"),
            crate::keys::Kek::generate_file(&dir.path().join("kek")).unwrap(),
        )
        .unwrap();
        let pack = PackId([3; 32]);
        // Chunks of 100 bytes at 5, 105, 205, then a gap, then 400, 500, 600; and one in
        // another pack.
        let at = [5u64, 105, 205, 400, 500, 600];
        let ids: Vec<ChunkId> = (0..at.len() as u8).map(|i| ChunkId([i + 1; 32])).collect();
        let mut b = Batch::default();
        for (id, off) in ids.iter().zip(at) {
            let loc = ChunkLoc {
                pack,
                offset: off,
                len: 100,
            };
            s.put_location(&mut b, &Located { id: *id, loc }).unwrap();
        }
        let other = ChunkLoc {
            pack: PackId([4; 32]),
            offset: 300,
            len: 100,
        };
        s.put_location(
            &mut b,
            &Located {
                id: ChunkId([9; 32]),
                loc: other,
            },
        )
        .unwrap();
        s.kv.commit(b).unwrap();
        let loc = |i: usize| ChunkLoc {
            pack,
            offset: at[i],
            len: 100,
        };
        let ids_of =
            |v: Vec<(ChunkId, ChunkLoc)>| v.into_iter().map(|(c, _)| c).collect::<Vec<_>>();
        // Forward: up to the gap, or the byte budget.
        assert_eq!(ids_of(s.pack_extent(&loc(0), 1 << 20).unwrap()), ids[..3]);
        assert_eq!(ids_of(s.pack_extent(&loc(0), 200).unwrap()), ids[..2]);
        assert_eq!(ids_of(s.pack_extent(&loc(3), 1 << 20).unwrap()), ids[3..]);
        // Backward: the run that ends where the chunk begins, within the budget; none across
        // the gap, none from another pack.
        assert_eq!(
            ids_of(s.pack_chunks_before(&loc(5), 1 << 20).unwrap()),
            ids[3..5]
        );
        assert_eq!(
            ids_of(s.pack_chunks_before(&loc(5), 100).unwrap()),
            ids[4..5]
        );
        assert!(s.pack_chunks_before(&loc(3), 1 << 20).unwrap().is_empty());
        assert_eq!(
            ids_of(s.pack_chunks_before(&loc(2), 1 << 20).unwrap()),
            ids[..2]
        );
        assert!(s.pack_chunks_before(&loc(0), 1 << 20).unwrap().is_empty());
    }
}
