//! A fleet host's chunk cache, as the registry runs it: what this host keeps (production and
//! the newest staging version of the models it serves, and pinned versions), eviction of the least recently used
//! versions' other chunks when the cache is over its limit, the disk space given back, pins
//! (`arca fleet pin`), and the figures for `status` and `/metrics`.
//!
//! Eviction goes by version recency (`fleet/cache.rs`), at chunk granularity: a chunk shared
//! by several versions goes with the most recently used of them, and never while a kept
//! version or a file open in the mount holds it. Only chunks the fleet's store holds are
//! evicted (`Store::evict_chunks`), so every evicted chunk can be fetched (and verified) again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arca_core::api::{FleetCacheStatus, FleetPin, Permission, Status};
use arca_core::audit::EventKind;
use arca_core::id::PackId;
use arca_core::{ChunkId, ModelName, ModelVersion};

use super::{audit, lock, now, Registry, RegistryError, Result};
use crate::auth::Caller;
use crate::fleet::cache::{LOW_WATER, SAVE_EVERY};
use crate::fleet::pack::ChunkLoc;
use crate::fleet::Fleet;
use crate::manifest::VersionRecord;
use crate::store::cache::CachePin;

/// Chunks deleted per write while evicting.
const EVICT_BATCH: usize = 1024;
/// Garbage (evicted chunks in blob files that also hold live ones) is collected once it is
/// more than this share of the limit: a collection copies every live chunk, so doing it for
/// less would rewrite the cache for little space.
const MAX_GARBAGE_SHARE: f64 = 0.2;
/// Packs whose presence one pass asks the store about (one HEAD each), at most.
const MAX_PACK_CHECKS: usize = 256;
/// How long one look at the cache may spend fetching pinned versions' chunks.
const PIN_FETCH_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

/// What one look at the cache found and did.
#[derive(Debug, Default)]
pub struct CachePass {
    pub evicted_chunks: usize,
    pub evicted_bytes: u64,
}

impl Registry {
    fn cache_fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// A use of a version (a file opened, pushed, read by `get` or `verify`): it is now the
    /// most recently used. Nothing on a single host.
    pub(super) fn cache_touch(&self, name: &ModelName, version: &ModelVersion) {
        if let Some(f) = self.cache_fleet() {
            f.cache.touch(self.store.version_row_key(name, version));
            // A push adds chunks without a fetch: the cache thread looks now, not in 30 s
            // (opens come here too, as often as a reader likes: passes are paced).
            f.cache.wake_if_over(self.store.cache_count().bytes);
        }
    }

    /// A file closed in the mount: the chunks it held (never evicted while it was open) may
    /// go now (`Cache::wake_if_over`). Nothing on a single host.
    pub fn mount_closed(&self) {
        if let Some(f) = self.cache_fleet() {
            f.cache.wake_if_over(self.store.cache_count().bytes);
        }
    }

    /// Whether this host keeps `model`'s production and staging cached (and warms them): its
    /// environment serves the model, and its `serve` list, if set, names it.
    pub(super) fn keeps_model(&self, model: &ModelName) -> bool {
        self.serves(model) && self.cache_fleet().is_none_or(|f| f.cache.cfg.keeps(model))
    }

    /// The versions this host keeps cached (`kept_versions`), and its pins (if the pins record
    /// opens; why not, otherwise).
    fn kept(
        &self,
    ) -> (
        Vec<Arc<VersionRecord>>,
        Vec<Arc<VersionRecord>>,
        Option<String>,
    ) {
        let kept = kept_versions(self.records(), |m| self.keeps_model(m));
        let (pins, err) = match self.store.cache_pins() {
            Ok(p) => (p, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let pinned = pins
            .iter()
            .filter_map(|p| self.version(&p.model, &p.version))
            .collect();
        (kept, pinned, err)
    }

    /// Sealed bytes of `ids` cached here (each chunk once).
    fn cached_bytes_of(&self, ids: &HashSet<ChunkId>) -> Result<u64> {
        let mut n = 0;
        for id in ids {
            n += self.store.cached_len(id)?.unwrap_or(0) as u64;
        }
        Ok(n)
    }

    /// One look at the cache: the kept and pinned figures, then, if the cache is over its
    /// limit, eviction down to `LOW_WATER` of it and the space given back.
    pub fn cache_pass(&self) -> Result<CachePass> {
        let Some(f) = self.cache_fleet() else {
            return Ok(CachePass::default());
        };
        // One pass at a time (the thread, and tests or an operator asking).
        let _g = lock(&self.cache_lock);
        let limit = f.cache.limit;
        let (kept, pinned, pins_error) = self.kept();
        let chunks_of = |recs: &[Arc<VersionRecord>]| -> HashSet<ChunkId> {
            recs.iter()
                .flat_map(|r| r.files.iter().flat_map(|f| f.chunks.iter().map(|c| c.id)))
                .collect()
        };
        let kept_ids = chunks_of(&kept);
        let pinned_ids = chunks_of(&pinned);
        let kept_bytes = self.cached_bytes_of(&kept_ids)?;
        let pinned_bytes = self.cached_bytes_of(&pinned_ids)?;
        let mut protected = kept_ids;
        protected.extend(pinned_ids);
        let protected_bytes = self.cached_bytes_of(&protected)?;
        let over_limit = protected_bytes > limit;
        {
            let before = f.cache.stats();
            if over_limit && !before.over_limit {
                tracing::warn!(
                    kept = kept_bytes,
                    pinned = pinned_bytes,
                    limit,
                    "fleet cache: the versions this host keeps (production, staging, pins) take more than the cache limit; they are not evicted, so the cache stays over it: raise cache_gib or unpin"
                );
            }
            if let Some(e) = &pins_error {
                if before.pins_error.as_ref() != Some(e) {
                    tracing::error!("fleet cache: pins are not used: {e}");
                }
            }
        }
        let mut pass = CachePass::default();
        if self.store.cache_count().bytes > limit {
            pass = self.evict(f, limit, &protected)?;
        }
        let max_garbage = (limit as f64 * MAX_GARBAGE_SHARE) as u64;
        let (disk, garbage) = if pass.evicted_chunks > 0 {
            self.store.reclaim_evicted(max_garbage)?
        } else {
            self.store.chunk_blob_bytes()?
        };
        f.cache.update(|s| {
            s.kept_bytes = kept_bytes;
            s.pinned_bytes = pinned_bytes;
            s.over_limit = over_limit;
            s.evicted_chunks += pass.evicted_chunks as u64;
            s.evicted_bytes += pass.evicted_bytes;
            s.evictions += (pass.evicted_chunks > 0) as u64;
            s.disk_bytes = disk;
            s.garbage_bytes = garbage;
            s.pins_error = pins_error;
        });
        Ok(pass)
    }

    /// Evicts chunks of the least recently used versions, none in `protected` nor held by a
    /// file open in the mount, until the cache is at `LOW_WATER` of `limit`.
    fn evict(&self, f: &Fleet, limit: u64, protected: &HashSet<ChunkId>) -> Result<CachePass> {
        let target = (limit as f64 * LOW_WATER) as u64;
        let open = self.open_chunks.get().map(|o| o()).unwrap_or_default();
        // Every catalog version, least recently used first (never-used ones first of all, in
        // catalog order).
        let mut order: Vec<(u64, Arc<VersionRecord>)> = self
            .catalog()
            .values()
            .flat_map(|v| v.values().cloned())
            .map(|r| {
                let row = self
                    .store
                    .version_row_key(&r.metadata.name, &r.metadata.version);
                (f.cache.last_use(&row), r)
            })
            .collect();
        order.sort_by_key(|(t, _)| *t);
        // A chunk goes with the last version (in that order) that uses it: a chunk shared
        // with a more recently used version stays until that one's turn.
        let mut last: HashMap<ChunkId, usize> = HashMap::new();
        for (i, (_, r)) in order.iter().enumerate() {
            for c in r.files.iter().flat_map(|f| f.chunks.iter()) {
                last.insert(c.id, i);
            }
        }
        // Each pack is asked about once per pass (a HEAD: its size in the store, which must
        // cover the chunk), at most `MAX_PACK_CHECKS` packs a pass, none once the store did not
        // answer, and none found missing or short in the last `PACK_RECHECK` (`Fleet`): a
        // store missing packs (or out of reach) must not turn every pass into a flood of
        // requests. A chunk whose pack is not confirmed stays here.
        let mut packs: HashMap<PackId, Option<u64>> = HashMap::new();
        let mut heads = 0usize;
        let mut unreachable = false;
        let mut in_store = |l: &ChunkLoc| -> bool {
            let end = l.offset.saturating_add(l.len as u64);
            if let Some(size) = packs.get(&l.pack) {
                return size.is_some_and(|s| end <= s);
            }
            if unreachable || heads >= MAX_PACK_CHECKS || f.pack_known_missing(&l.pack) {
                return false;
            }
            heads += 1;
            let size = match f.pack_size(&l.pack) {
                Ok(Some(size)) => Some(size),
                Ok(None) => {
                    f.note_missing_pack(&l.pack, "is missing from the store");
                    None
                }
                Err(e) => {
                    tracing::warn!(pack = %l.pack, "fleet cache: cannot check that the store holds a pack before evicting its chunks: {e}; no chunk is evicted until it can");
                    unreachable = true;
                    None
                }
            };
            packs.insert(l.pack, size);
            let fits = size.is_some_and(|s| end <= s);
            if size.is_some() && !fits {
                f.note_missing_pack(&l.pack, "is shorter in the store than a chunk of it");
            }
            fits
        };
        let mut pass = CachePass::default();
        let mut batch = Vec::with_capacity(EVICT_BATCH);
        let mut size = self.store.cache_count().bytes;
        'versions: for (i, (_, r)) in order.iter().enumerate() {
            for c in r.files.iter().flat_map(|f| f.chunks.iter()) {
                if last.get(&c.id) != Some(&i) || protected.contains(&c.id) || open.contains(&c.id)
                {
                    continue;
                }
                let Some(len) = self.store.cached_len(&c.id)? else {
                    continue;
                };
                batch.push(c.id);
                // Counted as it is chosen: evict_chunks skips a chunk the fleet's store does
                // not hold, and the real count is read again after each batch.
                size = size.saturating_sub(len as u64);
                if batch.len() == EVICT_BATCH || size <= target {
                    let (n, bytes) = self.store.evict_chunks(&batch, &mut in_store)?;
                    batch.clear();
                    pass.evicted_chunks += n;
                    pass.evicted_bytes += bytes;
                    size = self.store.cache_count().bytes;
                    if size <= target {
                        break 'versions;
                    }
                }
            }
        }
        if !batch.is_empty() {
            let (n, bytes) = self.store.evict_chunks(&batch, &mut in_store)?;
            pass.evicted_chunks += n;
            pass.evicted_bytes += bytes;
        }
        if pass.evicted_chunks > 0 {
            tracing::info!(
                chunks = pass.evicted_chunks,
                bytes = pass.evicted_bytes,
                cached = self.store.cache_count().bytes,
                limit,
                "fleet cache: evicted the least recently used chunks"
            );
        }
        Ok(pass)
    }

    /// Saves the recency hints if they changed (versions no longer in the catalog dropped).
    fn save_cache_hints(&self, f: &Fleet) {
        let live: HashSet<[u8; 32]> = self
            .catalog()
            .values()
            .flat_map(|v| v.values())
            .map(|r| {
                self.store
                    .version_row_key(&r.metadata.name, &r.metadata.version)
            })
            .collect();
        if let Some(h) = f.cache.hints_to_save(&live) {
            if let Err(e) = self.store.save_cache_recency(&h) {
                tracing::warn!("fleet cache: saving the recency hints: {e}");
            }
        }
    }

    /// Fetches what pinned versions lack, for at most `PIN_FETCH_BUDGET` per look (so an
    /// over-full cache is looked at again soon); the next look goes on.
    fn fetch_pinned(&self, f: &Fleet) {
        let (_, pinned, _) = self.kept();
        if pinned.is_empty() || f.status().halted.is_some() {
            return;
        }
        let recs: Vec<VersionRecord> = pinned.iter().map(|r| (**r).clone()).collect();
        match f.fetch_all(&self.store, &recs, PIN_FETCH_BUDGET) {
            Ok((_, 0)) => {}
            Ok((complete, n)) => tracing::info!(
                fetches = n,
                complete,
                "fleet cache: fetched chunks of pinned versions"
            ),
            Err(e) => tracing::warn!("fleet cache: fetching pinned versions: {e}"),
        }
    }

    /// The cache's figures for `status`.
    pub(super) fn cache_status(&self, f: &Fleet) -> FleetCacheStatus {
        let st = f.cache.stats();
        let count = self.store.cache_count();
        let pins = self
            .store
            .cache_pins()
            .unwrap_or_default()
            .into_iter()
            .map(|p| FleetPin {
                model: p.model,
                version: p.version,
                by: p.by,
                at: p.at,
            })
            .collect();
        FleetCacheStatus {
            limit_bytes: f.cache.limit,
            cached_bytes: count.bytes,
            cached_chunks: count.chunks,
            kept_bytes: st.kept_bytes,
            pinned_bytes: st.pinned_bytes,
            over_limit: st.over_limit,
            evicted_chunks: st.evicted_chunks,
            evicted_bytes: st.evicted_bytes,
            evictions: st.evictions,
            disk_bytes: st.disk_bytes,
            garbage_bytes: st.garbage_bytes,
            warm_before_switch_secs: f.cache.cfg.warm_before_switch.map(|d| d.as_secs()),
            serve: f
                .cache
                .cfg
                .serve
                .as_ref()
                .map(|s| s.iter().cloned().collect()),
            warmups: st.warmups,
            warmups_incomplete: st.warmups_incomplete,
            last_warm_ms: st.last_warm_ms,
            pins,
            pins_error: st.pins_error,
        }
    }

    /// `arca fleet pin` / `unpin`: keeps a version cached on this host whatever the limit, or
    /// stops keeping it. A pin spends this host's disk, which every model on it shares, so it
    /// needs admin on `*` (as GC does); refused callers change nothing but the audit trail.
    pub fn set_cache_pin(
        &self,
        c: &Caller,
        name: &ModelName,
        version: &ModelVersion,
        pin: bool,
    ) -> Result<Vec<FleetPin>> {
        let what = if pin {
            "pin a version in this host's cache"
        } else {
            "unpin a version in this host's cache"
        };
        self.require(c, None, Permission::Admin, what)?;
        if self.cache_fleet().is_none() {
            return Err(RegistryError::BadRequest(
                "this daemon is a single host: it keeps every chunk; pins are for fleet hosts' caches".into(),
            ));
        }
        let out = {
            // Under the commit lock: two pin changes never lose one another's.
            let _g = lock(&self.commit_lock);
            let mut pins = self.store.cache_pins()?;
            let had = pins
                .iter()
                .position(|p| &p.model == name && &p.version == version);
            match (pin, had) {
                (true, None) => {
                    if self.version(name, version).is_none() {
                        return Err(RegistryError::NotFound(format!(
                            "no version {version} of model {name}"
                        )));
                    }
                    pins.push(CachePin {
                        model: name.clone(),
                        version: version.clone(),
                        by: c.user.clone(),
                        by_uid: c.uid,
                        at: now(),
                    });
                }
                (false, Some(i)) => {
                    pins.remove(i);
                }
                (true, Some(_)) => {
                    return Err(RegistryError::AlreadyExists(format!(
                        "{name} {version} is already pinned on this host"
                    )))
                }
                (false, None) => {
                    return Err(RegistryError::NotFound(format!(
                        "{name} {version} is not pinned on this host"
                    )))
                }
            }
            let ev = audit::ev(c, EventKind::CachePin)
                .model(name)
                .version(version)
                .detail("pinned", if pin { "true" } else { "false" });
            self.store.put_cache_pins(&pins, vec![ev])?;
            pins.into_iter()
                .map(|p| FleetPin {
                    model: p.model,
                    version: p.version,
                    by: p.by,
                    at: p.at,
                })
                .collect()
        };
        if pin {
            // Fetched by the cache thread now, not at the first read: a pin says "have it here".
            if let Some(f) = self.cache_fleet() {
                f.cache.wake();
            }
        }
        Ok(out)
    }
}

/// The versions a host keeps cached whatever the limit, among `records`: of each model it
/// serves (`serves`: its `--environment` and `serve` list), the production version and the
/// newest staging one (the one moved to staging last). Older staging versions are cached like
/// any other: a user who may move a model's versions to staging must not be able to make
/// every host keep as many of them as they like, nor a host keep models it does not serve.
fn kept_versions(
    records: Vec<Arc<VersionRecord>>,
    serves: impl Fn(&ModelName) -> bool,
) -> Vec<Arc<VersionRecord>> {
    let mut kept = Vec::new();
    let mut staging: HashMap<ModelName, Arc<VersionRecord>> = HashMap::new();
    for r in records {
        if !serves(&r.metadata.name) {
            continue;
        }
        match r.status {
            Status::Production => kept.push(r),
            Status::Staging => {
                let newer = staging
                    .get(&r.metadata.name)
                    .is_none_or(|s| staged_order(&r) > staged_order(s));
                if newer {
                    staging.insert(r.metadata.name.clone(), r);
                }
            }
            _ => {}
        }
    }
    kept.extend(staging.into_values());
    kept
}

/// Orders a model's staging versions by when they were moved there: the model's change order
/// (seconds are too coarse), then the time, then creation (a version without the transition).
fn staged_order(r: &VersionRecord) -> (u64, u64, u64, String) {
    let (seq, at) = r
        .history
        .iter()
        .rev()
        .find(|t| t.to == Status::Staging)
        .map_or((0, 0), |t| (t.seq, t.at));
    (seq, at, r.created_at, r.metadata.version.to_string())
}

/// Looks at the cache every `SAVE_EVERY`, and at once when a fetch took it over its limit.
pub fn spawn_cache_thread(registry: Arc<Registry>) {
    let Some(f) = registry.fleet().cloned() else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("arca-fleet-cache".into())
        .spawn(move || loop {
            let began = std::time::Instant::now();
            if let Err(e) = registry.cache_pass() {
                tracing::warn!("fleet cache: {e}");
            }
            registry.save_cache_hints(&f);
            registry.fetch_pinned(&f);
            f.cache.wait_paced(SAVE_EVERY, began);
        });
    if let Err(e) = spawned {
        tracing::error!("fleet: cannot start the cache thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arca_core::api::Transition;
    use arca_core::metadata::PublishedMetadata;
    use arca_core::{MerkleRoot, MetadataDigest};

    /// Version `v` of model `m` in `status`, moved there as the model's change `seq`.
    fn rec(m: &str, v: &str, status: Status, seq: u64) -> Arc<VersionRecord> {
        let metadata = PublishedMetadata::new(m.parse().unwrap(), v.parse().unwrap());
        Arc::new(VersionRecord {
            format: crate::manifest::RECORD_FORMAT,
            metadata,
            created_by: "u".into(),
            created_by_uid: 1,
            created_at: 100,
            status,
            merkle_root: MerkleRoot([0; 32]),
            metadata_digest: MetadataDigest([0; 32]),
            signer: None,
            files: Vec::new(),
            history: vec![Transition {
                from: Status::Development,
                to: status,
                by: "u".into(),
                by_uid: 1,
                // The same second for all: the change order decides.
                at: 200,
                ticket: None,
                reason: None,
                seq,
            }],
            approvals: Vec::new(),
        })
    }

    fn names(v: &[Arc<VersionRecord>]) -> Vec<String> {
        let mut n: Vec<String> = v
            .iter()
            .map(|r| format!("{}@{}", r.metadata.name, r.metadata.version))
            .collect();
        n.sort();
        n
    }

    #[test]
    fn a_host_keeps_production_and_the_newest_staging_of_the_models_it_serves() {
        let recs = vec![
            rec("a", "1.0.0", Status::Production, 1),
            // Moved to staging in the order 1.1.0, 1.3.0, 1.2.0: 1.2.0 is the newest.
            rec("a", "1.1.0", Status::Staging, 2),
            rec("a", "1.3.0", Status::Staging, 3),
            rec("a", "1.2.0", Status::Staging, 4),
            rec("a", "1.4.0", Status::Development, 5),
            rec("a", "0.9.0", Status::Deprecated, 6),
            rec("b", "2.0.0", Status::Staging, 1),
            rec("hidden", "1.0.0", Status::Production, 1),
            rec("hidden", "1.1.0", Status::Staging, 2),
        ];
        let kept = kept_versions(recs, |m| m.as_str() != "hidden");
        assert_eq!(names(&kept), ["a@1.0.0", "a@1.2.0", "b@2.0.0"]);
    }
}
