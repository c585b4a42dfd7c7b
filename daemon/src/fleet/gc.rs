//! Fleet GC: deciding which packs in the object store go, repacking mostly dead ones, and
//! deleting what the log has given up.
//!
//! The decisions come from this host's verified replica of the log (which chunk each pack
//! serves, the `p` rows of `locs`, and the chunks of every version in the catalog), never from
//! the store's listing: the listing only finds objects no entry names (orphans), and an orphan
//! must also be older than the grace period, by the store's clock, before it is condemned. A
//! store writer who forges listings or times can therefore get garbage deleted, or nothing, but
//! never a pack the log places a live chunk in.
//!
//! The protocol, each step an entry of the log so that every host agrees (docs/operations.md,
//! "Fleet GC"): a run condemns the packs no live version uses (and orphans); a later run, once
//! the grace period has passed since the condemning entry, records them deleted and then
//! deletes the objects. Between the two, hosts that are behind still read from the condemned
//! packs, and a push never relies on a chunk in one (it uploads the chunk again), so nothing
//! makes a condemned pack live again; if something did, the next run rescues it instead.

use std::collections::{BTreeMap, HashMap, HashSet};

use arca_core::api::FleetGcReport;
use arca_core::id::{ChunkId, PackId};

use super::log::{GcWire, Located};
use super::pack::{ChunkLoc, PackBuilder, PACK_TARGET};
use super::{pack_key, Fleet, FleetError};
use crate::remote::{Listed, RemoteError};
use crate::store::Store;

/// Most packs a run lists (32 MiB each: 32 TiB); more is refused rather than half-collected.
const MAX_PACKS: usize = 1_000_000;
/// Live chunks of one pack separated by at most this many dead bytes are read in one ranged
/// GET (a request costs more than reading a little extra).
const COALESCE_GAP: u64 = 1 << 20;

/// A pack this run repacks: its live chunks, in pack order.
#[derive(Debug, Clone)]
pub struct RepackJob {
    pub pack: PackId,
    pub chunks: Vec<(ChunkId, ChunkLoc)>,
}

/// What a run decided from one state of the replica and one listing.
#[derive(Debug, Default)]
pub struct Plan {
    pub wire: GcWire,
    pub repack: Vec<RepackJob>,
    /// Objects still in the store whose deletion an earlier entry recorded (its deleting host
    /// stopped before deleting them): deleted without another entry.
    pub leftovers: Vec<PackId>,
    pub report: FleetGcReport,
}

/// The result of repacking: per source pack, its live chunks' new locations.
#[derive(Debug, Default)]
pub struct Repacked {
    pub moves: BTreeMap<PackId, Vec<Located>>,
    pub new_packs: u64,
    pub new_pack_bytes: u64,
    pub unreadable: u64,
}

fn pack_of_key(key: &str) -> Option<PackId> {
    key.strip_prefix("packs/")?.parse().ok()
}

/// Slack for the clocks of the host that condemned a pack and the one applying its deletion.
const CLOCK_SKEW_MS: u64 = 60_000;

impl Fleet {
    /// Checks another host's fleet GC decisions (entry `e`) against this host's own verified
    /// replica before they are applied: a host holding the fleet's keys could otherwise sign an
    /// entry that condemns or deletes packs that still hold live chunks, or moves live chunks
    /// to where they are not, and every honest host would drop their locations (and an honest
    /// GC run later delete the packs). `Err` names what is wrong; the caller halts on it, as on
    /// any other entry that does not apply.
    ///
    /// Refused: a pack condemned or deleted while this replica places a chunk of a version in
    /// its catalog there (after the entry's own moves); a deletion of a pack no earlier entry
    /// condemned, or before the grace period (this host's `gc_grace_hours`) passed since the
    /// condemning entry, by the entry's time and by this host's clock; a move into a pack that
    /// is condemned or deleted (or condemned by the same entry), or to a location whose length
    /// is not the chunk's, or of a chunk twice.
    pub(super) fn check_gc_entry(
        &self,
        store: &Store,
        e: &super::log::Entry,
    ) -> Result<(), String> {
        let Some(gc) = &e.gc else {
            return Ok(());
        };
        let bad = |why: String| {
            format!(
                "log entry {} (fleet GC by host {}) {why}: this host's replica says otherwise, so it does not apply it",
                e.seq, e.host
            )
        };
        let going: HashSet<PackId> = gc.condemn.iter().chain(&gc.deleted).copied().collect();
        // Every chunk of every version this replica holds, and one version using it (to name).
        let mut live: HashMap<ChunkId, String> = HashMap::new();
        let mut add = |rec: &crate::manifest::VersionRecord| {
            for f in &rec.files {
                for c in &f.chunks {
                    live.entry(c.id).or_insert_with(|| {
                        format!("{} {}", rec.metadata.name, rec.metadata.version)
                    });
                }
            }
        };
        for rec in store
            .versions()
            .map_err(|e| e.to_string())?
            .iter()
            .flatten()
        {
            add(rec);
        }
        // Versions the entry itself writes count as live too (an honest GC entry writes none).
        for r in e.records.iter().filter(|r| r.cf == "versions") {
            if let Some(rec) = r
                .json
                .as_deref()
                .and_then(|j| serde_json::from_str::<crate::manifest::VersionRecord>(j).ok())
            {
                add(&rec);
            }
        }
        let mut moved: HashMap<ChunkId, ChunkLoc> = HashMap::new();
        for l in &gc.moved {
            if moved.insert(l.id, l.loc).is_some() {
                return Err(bad(format!("moves chunk {} twice", l.id)));
            }
            let usable = store.pack_usable(&l.loc.pack).map_err(|e| e.to_string())?;
            if going.contains(&l.loc.pack) || !usable {
                return Err(bad(format!(
                    "moves chunk {} into pack {}, which is condemned or deleted",
                    l.id, l.loc.pack
                )));
            }
            match store.chunk_loc(&l.id).map_err(|e| e.to_string())? {
                Some(old) if old.len != l.loc.len => {
                    return Err(bad(format!(
                        "moves chunk {} to a location of {} sealed bytes, but the chunk has {}",
                        l.id, l.loc.len, old.len
                    )))
                }
                Some(_) => {}
                None => {
                    return Err(bad(format!(
                        "moves chunk {}, which the log places nowhere",
                        l.id
                    )))
                }
            }
        }
        if !going.is_empty() {
            for row in store.pack_rows().map_err(|e| e.to_string())? {
                if !going.contains(&row.pack) {
                    continue;
                }
                let Some(version) = live.get(&row.id) else {
                    continue;
                };
                let at = match moved.get(&row.id) {
                    Some(l) => Some(*l),
                    None => store.chunk_loc(&row.id).map_err(|e| e.to_string())?,
                };
                if at.is_some_and(|l| l.pack == row.pack) {
                    return Err(bad(format!(
                        "condemns or deletes pack {}, where chunk {} of version {version} is located",
                        row.pack, row.id
                    )));
                }
            }
        }
        let grace_ms = self.cfg.gc_grace.as_millis() as u64;
        for p in &gc.deleted {
            if store.pack_deleted(p).map_err(|e| e.to_string())? {
                continue;
            }
            let Some(c) = store.condemned(p).map_err(|e| e.to_string())? else {
                return Err(bad(format!(
                    "deletes pack {p}, which no earlier entry condemned"
                )));
            };
            let due = c.at_ms.saturating_add(grace_ms);
            if e.at_ms < due || super::now_ms().saturating_add(CLOCK_SKEW_MS) < due {
                return Err(bad(format!(
                    "deletes pack {p} before the grace period ({:?}) since its condemnation by entry {} passed",
                    self.cfg.gc_grace, c.seq
                )));
            }
        }
        Ok(())
    }

    /// The packs in the store (key, size, time), by id.
    pub fn list_packs(&self) -> Result<HashMap<PackId, Listed>, FleetError> {
        Ok(self
            .remote
            .list_all("packs/", MAX_PACKS)?
            .into_iter()
            .filter_map(|l| pack_of_key(&l.key).map(|p| (p, l)))
            .collect())
    }

    /// Decides, from this host's replica (`store`, with `live`: every chunk of every version in
    /// the catalog) and a listing of the packs, what to condemn, rescue, delete and repack.
    /// Refuses (`Halted`-free `Config` error naming the chunk) when the replica contradicts
    /// itself: a live chunk without a location, or whose location's pack does not list it.
    pub fn gc_plan(
        &self,
        store: &Store,
        live: &HashSet<ChunkId>,
        listed: &HashMap<PackId, Listed>,
        now: u64,
    ) -> Result<Plan, FleetError> {
        let grace_ms = self.cfg.gc_grace.as_millis() as u64;
        let mut plan = Plan::default();
        let r = &mut plan.report;
        r.grace_secs = self.cfg.gc_grace.as_secs_f64();
        r.packs = listed.len() as u64;
        r.pack_bytes = listed.values().map(|l| l.size).sum();

        // Which chunks each pack serves, and which of them are live.
        let mut serves: HashMap<PackId, Vec<(ChunkId, ChunkLoc)>> = HashMap::new();
        let mut at: HashMap<(PackId, u64), ChunkId> = HashMap::new();
        for row in store.pack_rows()? {
            at.insert((row.pack, row.offset), row.id);
            serves.entry(row.pack).or_default().push((
                row.id,
                ChunkLoc {
                    pack: row.pack,
                    offset: row.offset,
                    len: row.len,
                },
            ));
        }
        for id in live {
            let loc = store.chunk_loc(id)?.ok_or_else(|| {
                FleetError::Config(format!(
                    "chunk {id} of a version in the catalog has no location in the fleet: this host's replica is damaged; not collecting the fleet's packs from it (run GC on another host)"
                ))
            })?;
            if at.get(&(loc.pack, loc.offset)) != Some(id) {
                return Err(FleetError::Config(format!(
                    "chunk {id} of a version in the catalog is located in pack {} at {}, but that pack's rows do not list it there: this host's replica is damaged; not collecting the fleet's packs from it",
                    loc.pack, loc.offset
                )));
            }
        }
        let live_bytes = |p: &PackId| -> u64 {
            serves.get(p).map_or(0, |cs| {
                cs.iter()
                    .filter(|(c, _)| live.contains(c))
                    .map(|(_, l)| l.len as u64)
                    .sum()
            })
        };

        let condemned: HashMap<PackId, crate::store::fleet::Condemned> =
            store.condemned_packs()?.into_iter().collect();
        for (p, c) in &condemned {
            if live_bytes(p) > 0 {
                tracing::warn!(pack = %p, "fleet GC: a condemned pack holds a live chunk again; rescued");
                plan.wire.rescue.push(*p);
            } else if now.saturating_sub(c.at_ms) >= grace_ms {
                plan.wire.deleted.push(*p);
            } else {
                r.waiting += 1;
            }
        }

        let pct = u64::from(self.cfg.repack_dead_percent);
        for (p, chunks) in &serves {
            if condemned.contains_key(p) {
                continue;
            }
            let live_here = live_bytes(p);
            if live_here == 0 {
                plan.wire.condemn.push(*p);
                continue;
            }
            r.live_packs += 1;
            let Some(l) = listed.get(p) else {
                tracing::error!(pack = %p, "fleet GC: the log places live chunks in this pack but the store does not list it");
                r.missing += 1;
                continue;
            };
            // The listed size only chooses what is worth repacking; a lie about it costs a
            // useless repack, never a chunk (a repack moves every live chunk before the pack
            // is condemned).
            let dead = l.size.saturating_sub(live_here);
            if l.size > 0 && dead * 100 >= pct * l.size {
                let mut live_chunks: Vec<(ChunkId, ChunkLoc)> = chunks
                    .iter()
                    .filter(|(c, _)| live.contains(c))
                    .copied()
                    .collect();
                live_chunks.sort_by_key(|(_, l)| l.offset);
                plan.repack.push(RepackJob {
                    pack: *p,
                    chunks: live_chunks,
                });
            }
        }

        for (p, l) in listed {
            if serves.contains_key(p) || condemned.contains_key(p) {
                continue;
            }
            if store.pack_deleted(p)? {
                plan.leftovers.push(*p);
            } else if now.saturating_sub(l.modified_ms) >= grace_ms {
                plan.wire.condemn.push(*p);
                r.orphans += 1;
            } else {
                r.young_orphans += 1;
            }
        }
        if r.missing > 0 && !plan.wire.deleted.is_empty() {
            // A pack the log places live chunks in is not in the store: the replica and the
            // store disagree (a deletion behind arca's back, or a move into a pack that is
            // gone). Nothing more is deleted until an operator has looked; condemning goes on.
            tracing::error!(
                missing = r.missing,
                "fleet GC: deleting nothing this run: live packs are missing from the store"
            );
            plan.wire.deleted.clear();
        }
        plan.wire.condemn.sort();
        plan.wire.deleted.sort();
        plan.wire.rescue.sort();
        r.rescued = plan.wire.rescue.len() as u64;
        Ok(plan)
    }

    /// Copies the live chunks of `jobs` into new packs: each sealed envelope as it is (read
    /// from this host's cache when it holds the chunk, else by ranged GETs of the old pack),
    /// authenticated first, so a damaged chunk is never copied. A pack with a chunk that does
    /// not authenticate or cannot be read is left out (counted in `unreadable`).
    pub fn repack(&self, store: &Store, jobs: &[RepackJob]) -> Result<Repacked, FleetError> {
        let mut out = Repacked::default();
        let mut b = PackBuilder::new();
        // Source pack of each chunk in the builder, to credit its move once the pack is up.
        let mut pending: Vec<PackId> = Vec::new();
        for job in jobs {
            let envelopes = match self.read_live(store, job) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(pack = %job.pack, "fleet GC: not repacking this pack: {e}");
                    out.unreadable += 1;
                    continue;
                }
            };
            for (id, env) in envelopes {
                if !b.is_empty() && b.len() + env.len() > PACK_TARGET {
                    self.flush_repack(store, &mut b, &mut pending, &mut out)?;
                }
                b.add(id, &env)
                    .map_err(|e| FleetError::Config(e.to_string()))?;
                pending.push(job.pack);
            }
        }
        if !b.is_empty() {
            self.flush_repack(store, &mut b, &mut pending, &mut out)?;
        }
        Ok(out)
    }

    fn flush_repack(
        &self,
        store: &Store,
        b: &mut PackBuilder,
        pending: &mut Vec<PackId>,
        out: &mut Repacked,
    ) -> Result<(), FleetError> {
        let full = std::mem::take(b);
        let before = self
            .remote
            .bytes_out
            .load(std::sync::atomic::Ordering::Relaxed);
        let locs = self.put_pack(store, full)?;
        out.new_packs += 1;
        out.new_pack_bytes += self
            .remote
            .bytes_out
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(before);
        for (src, l) in pending.drain(..).zip(locs) {
            out.moves.entry(src).or_default().push(l);
        }
        Ok(())
    }

    /// The sealed envelopes of a job's chunks, each authenticated against its id.
    fn read_live(
        &self,
        store: &Store,
        job: &RepackJob,
    ) -> Result<Vec<(ChunkId, Vec<u8>)>, FleetError> {
        let mut out: Vec<(ChunkId, Vec<u8>)> = Vec::with_capacity(job.chunks.len());
        let mut i = 0;
        while i < job.chunks.len() {
            let (id, loc) = job.chunks[i];
            if let Some(env) = store.with_sealed_chunk(&id, |s| s.to_vec())? {
                if env.len() == loc.len as usize {
                    out.push((id, env));
                    i += 1;
                    continue;
                }
            }
            // A run of chunks not held here, close enough to read in one request.
            let mut j = i + 1;
            let mut end = loc.offset + loc.len as u64;
            while j < job.chunks.len() {
                let (cid, l) = job.chunks[j];
                if l.offset < end
                    || l.offset - end > COALESCE_GAP
                    || l.offset + l.len as u64 - loc.offset > PACK_TARGET as u64 * 2
                    || store.has_chunk(&cid)?
                {
                    break;
                }
                end = l.offset + l.len as u64;
                j += 1;
            }
            let bytes = self
                .remote
                .get_range(&pack_key(&job.pack), loc.offset..end)?;
            for (cid, l) in &job.chunks[i..j] {
                let a = (l.offset - loc.offset) as usize;
                let env =
                    bytes
                        .get(a..a + l.len as usize)
                        .ok_or_else(|| FleetError::Integrity {
                            chunk: *cid,
                            pack: job.pack,
                            why: "short read".into(),
                        })?;
                out.push((*cid, env.to_vec()));
            }
            i = j;
        }
        for (id, env) in &out {
            store
                .keys()
                .open_chunk(id, env)
                .map_err(|e| FleetError::Integrity {
                    chunk: *id,
                    pack: job.pack,
                    why: e.to_string(),
                })?;
        }
        Ok(out)
    }

    /// Deletes pack objects the log has given up, counting what went. A pack already gone
    /// counts as deleted; any other failure is logged and the pack stays, a leftover that a
    /// later run deletes.
    pub fn delete_packs(
        &self,
        packs: &[PackId],
        listed: &HashMap<PackId, Listed>,
        report: &mut FleetGcReport,
    ) {
        for p in packs {
            match self.remote.delete(&pack_key(p)) {
                Ok(()) | Err(RemoteError::NotFound(_)) => {
                    report.deleted_packs += 1;
                    report.deleted_bytes += listed.get(p).map_or(0, |l| l.size);
                }
                Err(e) => {
                    tracing::warn!(pack = %p, "fleet GC: deleting the pack failed ({e}); a later run deletes it");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::log::{Entry, EventWire};
    use crate::fleet::pack::read_index;
    use arca_core::audit::{Draft, EventKind};
    use arca_core::id::EntryHash;
    use bytes::Bytes;
    use std::time::Duration;

    const GRACE_MS: u64 = 10_000;

    fn fleet_and_store(dir: &std::path::Path) -> (Store, Fleet) {
        crate::fleet::test_fleet(
            dir,
            Duration::from_millis(GRACE_MS),
            Duration::from_secs(30),
        )
    }

    /// Applies an entry as another host's: `n` is its seq.
    fn apply(store: &Store, n: u64, at_ms: u64, chunks: Vec<Located>, gc: Option<GcWire>) {
        let e = Entry {
            seq: n,
            prev: EntryHash([n as u8 - 1; 32]),
            host: "b".into(),
            at_ms,
            events: vec![EventWire::from_draft(&Draft::new(
                EventKind::GcRemoval,
                "arcad",
            ))],
            records: Vec::new(),
            chunks,
            gc,
        };
        store.apply_entry(&e, EntryHash([n as u8; 32])).unwrap();
    }

    /// Uploads a pack of `plain` chunks; returns its id, its locations and its size.
    fn pack(store: &Store, fleet: &Fleet, plain: &[&[u8]]) -> (PackId, Vec<Located>, u64) {
        let mut b = PackBuilder::new();
        for p in plain {
            let id = store.keys().chunk_id(p);
            b.add(id, &store.keys().seal_chunk(&id, p).unwrap())
                .unwrap();
        }
        let f = b.finish(store.keys()).unwrap();
        let size = f.bytes.len() as u64;
        fleet
            .remote
            .create(&pack_key(&f.name), Bytes::from(f.bytes))
            .unwrap();
        let locs = f
            .locs
            .into_iter()
            .map(|(id, loc)| Located { id, loc })
            .collect();
        (f.name, locs, size)
    }

    fn listed(p: &PackId, size: u64, modified_ms: u64) -> (PackId, Listed) {
        (
            *p,
            Listed {
                key: pack_key(p),
                size,
                modified_ms,
            },
        )
    }

    #[test]
    fn condemn_repack_wait_rescue_and_delete_through_entries() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let (store, fleet) = fleet_and_store(dir.path());
        let (p1, p2, p3) = (vec![1u8; 100_000], vec![2u8; 300_000], vec![3u8; 50_000]);
        let (c1, c2, c3) = (
            store.keys().chunk_id(&p1),
            store.keys().chunk_id(&p2),
            store.keys().chunk_id(&p3),
        );
        let (pa, la, sa) = pack(&store, &fleet, &[&p1, &p2]);
        let (pb, lb, sb) = pack(&store, &fleet, &[&p3]);
        let now = 1_000_000_000;
        apply(&store, 1, now, [la, lb].concat(), None);

        // c1 live; c2 (in pa) and c3 (pb) dead; an old and a young orphan in the listing.
        let live: HashSet<ChunkId> = [c1].into();
        let (old, young) = (PackId([9; 32]), PackId([8; 32]));
        let listing: HashMap<PackId, Listed> = [
            listed(&pa, sa, now),
            listed(&pb, sb, now),
            listed(&old, 10, now - GRACE_MS),
            listed(&young, 10, now - GRACE_MS + 1),
        ]
        .into();
        let plan = fleet.gc_plan(&store, &live, &listing, now).unwrap();
        let mut want = vec![pb, old];
        want.sort();
        assert_eq!(plan.wire.condemn, want, "the dead pack and the old orphan");
        assert_eq!(plan.report.orphans, 1);
        assert_eq!(plan.report.young_orphans, 1);
        assert_eq!(plan.report.live_packs, 1);
        assert_eq!(plan.repack.len(), 1, "pa is 3/4 dead");
        assert_eq!(plan.repack[0].pack, pa);
        assert_eq!(plan.repack[0].chunks.len(), 1);

        // The repack copies c1 into a new pack that opens and authenticates.
        let done = fleet.repack(&store, &plan.repack).unwrap();
        assert_eq!((done.new_packs, done.unreadable), (1, 0));
        let moves = done.moves[&pa].clone();
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].id, c1);
        let np = moves[0].loc.pack;
        let (bytes, _) = fleet.remote.get(&pack_key(&np)).unwrap();
        let index = read_index(store.keys(), &bytes).unwrap();
        assert_eq!(index[0].0, c1);
        let l = moves[0].loc;
        let env = &bytes[l.offset as usize..l.offset as usize + l.len as usize];
        assert_eq!(store.keys().open_chunk(&c1, env).unwrap(), p1);

        // Entry 2 moves c1 and condemns pa, pb and the orphan.
        let mut condemn = vec![pa, pb, old];
        condemn.sort();
        apply(
            &store,
            2,
            now,
            Vec::new(),
            Some(GcWire {
                condemn: condemn.clone(),
                moved: moves.clone(),
                ..GcWire::default()
            }),
        );
        assert_eq!(store.chunk_loc(&c1).unwrap(), Some(l));
        assert!(
            store.usable_chunk_loc(&c2).unwrap().is_none(),
            "pa is condemned"
        );
        assert!(
            store.chunk_loc(&c2).unwrap().is_some(),
            "but still readable"
        );
        assert_eq!(
            store.condemned(&pa).unwrap().map(|c| (c.seq, c.at_ms)),
            Some((2, now))
        );
        let rows: Vec<_> = store.pack_rows().unwrap();
        assert!(
            !rows.iter().any(|r| r.pack == pa && r.id == c1),
            "c1's row left pa"
        );

        // Within the grace: nothing deleted, three waiting.
        let mut listing = listing;
        listing.insert(
            np,
            Listed {
                key: pack_key(&np),
                size: bytes.len() as u64,
                modified_ms: now,
            },
        );
        let plan = fleet
            .gc_plan(&store, &live, &listing, now + GRACE_MS - 1)
            .unwrap();
        assert!(plan.wire.deleted.is_empty());
        assert_eq!(plan.report.waiting, 3);
        // After it: deleted. Unless a live version uses a condemned pack again: rescued.
        let plan = fleet
            .gc_plan(&store, &live, &listing, now + GRACE_MS)
            .unwrap();
        assert_eq!(plan.wire.deleted, condemn);
        let revived: HashSet<ChunkId> = [c1, c2].into();
        let plan = fleet
            .gc_plan(&store, &revived, &listing, now + GRACE_MS)
            .unwrap();
        assert_eq!(plan.wire.rescue, vec![pa]);
        assert!(!plan.wire.deleted.contains(&pa));

        // Entry 3 deletes them: their locations go; c1 keeps its new one.
        apply(
            &store,
            3,
            now + GRACE_MS,
            Vec::new(),
            Some(GcWire {
                deleted: condemn.clone(),
                ..GcWire::default()
            }),
        );
        assert!(store.pack_deleted(&pa).unwrap());
        assert!(store.condemned(&pa).unwrap().is_none());
        assert_eq!(store.chunk_loc(&c2).unwrap(), None);
        assert_eq!(store.chunk_loc(&c3).unwrap(), None);
        assert_eq!(store.chunk_loc(&c1).unwrap(), Some(l));
        assert!(store.pack_rows().unwrap().iter().all(|r| r.pack == np));
        // A deleted pack still listed (its deleter stopped short) is a leftover, not an orphan.
        let plan = fleet
            .gc_plan(&store, &live, &listing, now + 3 * GRACE_MS)
            .unwrap();
        assert!(plan.leftovers.contains(&pa) && plan.leftovers.contains(&pb));
        assert!(!plan.wire.condemn.contains(&pa));

        // A later push naming c2 in a new pack locates it there; c1 keeps its usable location
        // whatever a later entry says.
        let (q, lq, _) = pack(&store, &fleet, &[&p2, &p1]);
        apply(&store, 4, now, lq, None);
        assert_eq!(store.chunk_loc(&c2).unwrap().map(|l| l.pack), Some(q));
        assert_eq!(store.chunk_loc(&c1).unwrap(), Some(l));
    }

    #[test]
    fn a_replica_missing_a_live_chunks_location_is_refused() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let (store, fleet) = fleet_and_store(dir.path());
        let live: HashSet<ChunkId> = [ChunkId([4; 32])].into();
        let e = fleet
            .gc_plan(&store, &live, &HashMap::new(), 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no location"), "{e}");
    }
}
