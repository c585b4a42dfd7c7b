//! Fleet GC from the registry's side: when it may run, and the order of its steps. What it
//! decides and how it repacks is `fleet/gc.rs`; how hosts apply its entries, `store/fleet.rs`.
//!
//! 1. Under the commit lock, caught up with the log: check that this replica is intact (a
//!    damaged one could see live versions as gone), list the packs, plan.
//! 2. Without the lock (it is slow, and pushes must go on): repack the packs worth it.
//! 3. Under the lock again, caught up: plan again from the state now (another host's entries
//!    may have landed), keep only the moves still valid, and publish the decisions as the
//!    log's next entry; a lost race repeats this step.
//! 4. Delete the objects that entry recorded as deleted.

use std::collections::HashSet;

use arca_core::api::FleetGcReport;
use arca_core::audit::{Draft, EventKind};
use arca_core::ChunkId;

use super::{fleet, Registry, RegistryError, Result};
use crate::auth::Caller;
use crate::fleet::gc::{Plan, Repacked};
use crate::fleet::Fleet;
use crate::store::kv::Cf;
use crate::store::StoreError;

impl Registry {
    /// Every chunk of every version this replica holds, read again from the store and checked
    /// (records that open and match their audit binding, signed roots), after checking that
    /// the replica is whole: fleet GC must never take a version it cannot see for a deleted one.
    fn fleet_gc_live(&self) -> Result<HashSet<ChunkId>> {
        let damaged = |why: String| {
            RegistryError::Store(StoreError::Refused(format!(
                "not collecting the fleet's packs from this host: {why}; run `arca gc` on another fleet host"
            )))
        };
        if let Some(at) = self.store.trail_broken_at() {
            return Err(damaged(format!("its audit trail is broken at event {at}")));
        }
        if let Some(m) = self.store.missing_records(Cf::Versions)?.first() {
            return Err(damaged(format!("a version record is missing ({m})")));
        }
        let (catalog, broken) = Self::load_catalog(&self.store)?;
        if let Some(b) = broken.first() {
            return Err(damaged(format!(
                "a version record does not check ({})",
                b.why
            )));
        }
        Ok(catalog
            .values()
            .flat_map(|vs| vs.values())
            .flat_map(|r| r.files.iter())
            .flat_map(|f| f.chunks.iter().map(|c| c.id))
            .collect())
    }

    /// One fleet GC run (the caller holds the GC lock).
    pub(super) fn gc_fleet(
        &self,
        f: &Fleet,
        c: Option<&Caller>,
        dry_run: bool,
    ) -> Result<FleetGcReport> {
        let (listed, first) = {
            let _g = self.commit_guard_caught_up()?;
            let live = self.fleet_gc_live()?;
            let listed = f.list_packs().map_err(fleet::unavailable)?;
            let plan = f
                .gc_plan(&self.store, &live, &listed, crate::fleet::now_ms())
                .map_err(fleet::unavailable)?;
            (listed, plan)
        };
        if dry_run {
            let mut r = first.report.clone();
            r.condemned = (first.wire.condemn.len() + first.repack.len()) as u64;
            r.repacked = first.repack.len() as u64;
            r.moved_chunks = first.repack.iter().map(|j| j.chunks.len() as u64).sum();
            r.deleted_packs = (first.wire.deleted.len() + first.leftovers.len()) as u64;
            r.deleted_bytes = first
                .wire
                .deleted
                .iter()
                .chain(&first.leftovers)
                .filter_map(|p| listed.get(p))
                .map(|l| l.size)
                .sum();
            return Ok(r);
        }
        let repacked = f
            .repack(&self.store, &first.repack)
            .map_err(fleet::unavailable)?;

        let mut attempt = 0;
        let (plan, seq) = loop {
            let g = self.commit_guard_caught_up()?;
            let live = self.fleet_gc_live()?;
            let mut plan = f
                .gc_plan(&self.store, &live, &listed, crate::fleet::now_ms())
                .map_err(fleet::unavailable)?;
            self.keep_valid_moves(&mut plan, &repacked, &live)?;
            if plan.wire.is_empty() {
                drop(g);
                break (plan, None);
            }
            let actor = c.map_or_else(|| "arcad".to_string(), |c| c.user.clone());
            let mut d = Draft::new(EventKind::GcRemoval, actor)
                .detail("reason", "fleet packs")
                .detail("condemned", plan.wire.condemn.len().to_string())
                .detail("rescued", plan.wire.rescue.len().to_string())
                .detail("deleted", plan.wire.deleted.len().to_string())
                .detail("moved_chunks", plan.wire.moved.len().to_string());
            if let Some(c) = c {
                d = d.peer(c.uid, c.pid);
            }
            match self.store.commit_fleet_gc(plan.wire.clone(), vec![d]) {
                Ok(seq) => break (plan, Some(seq)),
                Err(StoreError::FleetConflict) if attempt < fleet::MAX_ATTEMPTS => {
                    drop(g);
                    fleet::backoff(attempt);
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let mut r = plan.report.clone();
        r.seq = seq;
        r.condemned = plan.wire.condemn.len() as u64;
        r.moved_chunks = plan.wire.moved.len() as u64;
        r.new_packs = repacked.new_packs;
        r.new_pack_bytes = repacked.new_pack_bytes;
        r.unreadable = repacked.unreadable;
        let mut gone = plan.leftovers.clone();
        if seq.is_some() {
            gone.extend(plan.wire.deleted.iter().copied());
        }
        f.delete_packs(&gone, &listed, &mut r);
        tracing::info!(
            seq = ?r.seq,
            condemned = r.condemned,
            orphans = r.orphans,
            repacked = r.repacked,
            moved_chunks = r.moved_chunks,
            deleted_packs = r.deleted_packs,
            deleted_bytes = r.deleted_bytes,
            waiting = r.waiting,
            "fleet GC done"
        );
        Ok(r)
    }

    /// Adds to `plan` the moves of the packs repacked in step 2 that are still right: the
    /// source pack is still usable, every live chunk it serves now was copied, and each
    /// copied chunk is still located there. Such a source is condemned with its moves; any
    /// other copy is left unnamed (its new pack an orphan, collected after the grace period).
    fn keep_valid_moves(
        &self,
        plan: &mut Plan,
        repacked: &Repacked,
        live: &HashSet<ChunkId>,
    ) -> Result<()> {
        let rows = self.store.pack_rows()?;
        let mut repacked_packs = 0u64;
        // A chunk moves once per entry (hosts refuse an entry moving one twice).
        let mut seen: HashSet<ChunkId> = HashSet::new();
        for (src, moves) in &repacked.moves {
            if !self.store.pack_usable(src)? || plan.wire.condemn.contains(src) {
                continue;
            }
            let copied: HashSet<ChunkId> = moves.iter().map(|l| l.id).collect();
            let live_here_all_copied = rows
                .iter()
                .filter(|r| r.pack == *src && live.contains(&r.id))
                .all(|r| copied.contains(&r.id));
            if !live_here_all_copied {
                continue;
            }
            // A destination must be a pack the fleet may still hold: another host's run may
            // have taken a repack's new pack for an orphan (no entry named it yet) and
            // condemned or deleted it while this run was copying; moving chunks there would
            // lose them when it goes.
            let mut dest_ok = true;
            for l in moves {
                if !self.store.pack_usable(&l.loc.pack)? || plan.wire.condemn.contains(&l.loc.pack)
                {
                    dest_ok = false;
                    break;
                }
            }
            if !dest_ok {
                continue;
            }
            let mut still = Vec::with_capacity(moves.len());
            for l in moves {
                if self
                    .store
                    .chunk_loc(&l.id)?
                    .is_some_and(|at| at.pack == *src)
                    && seen.insert(l.id)
                {
                    still.push(l.clone());
                }
            }
            plan.wire.moved.extend(still);
            plan.wire.condemn.push(*src);
            repacked_packs += 1;
        }
        plan.wire.condemn.sort();
        plan.wire.condemn.dedup();
        plan.report.repacked = repacked_packs;
        Ok(())
    }
}

impl Registry {
    /// The chunks of `rec` that have no usable location in the fleet: neither among the ones
    /// this push uploaded (`staged`) nor in the log, once packs fleet GC condemned or deleted
    /// are left out. A push must not rely on them.
    pub(super) fn chunks_to_upload_again(
        &self,
        rec: &crate::manifest::VersionRecord,
        staged: &[crate::fleet::log::Located],
    ) -> Result<Vec<ChunkId>> {
        let staged: std::collections::HashMap<ChunkId, &crate::fleet::pack::ChunkLoc> =
            staged.iter().map(|l| (l.id, &l.loc)).collect();
        let mut seen = HashSet::new();
        let mut need = Vec::new();
        for id in rec.files.iter().flat_map(|f| f.chunks.iter().map(|c| c.id)) {
            if !seen.insert(id) {
                continue;
            }
            let staged_ok = match staged.get(&id) {
                Some(l) => self.store.pack_usable(&l.pack)?,
                None => false,
            };
            if !staged_ok && self.store.usable_chunk_loc(&id)?.is_none() {
                need.push(id);
            }
        }
        Ok(need)
    }
}
