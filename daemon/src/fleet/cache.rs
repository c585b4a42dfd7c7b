//! A fleet host's chunk cache: its size limit, the recency of versions (what eviction goes
//! by), the figures `status` and `/metrics` show, and `warm_before_switch` (fetching a version
//! before the entry that makes it production or staging is applied).
//!
//! Recency is kept per version, in memory, touched when a file of the version is opened
//! (mount, `get`, `verify`), pushed or warmed: the read path (one call per chunk, from the
//! mount's pool threads) does no bookkeeping at all, and the map holds one entry per version,
//! not per chunk (a 100 GiB cache is about 3.3 million chunks). The map is saved as a sealed
//! hint every `SAVE_EVERY`, so an order survives a restart. What to evict is decided by the
//! registry (`registry/cache.rs`), which knows the catalog, what this host keeps and what the
//! mount holds open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use arca_core::api::Status as VersionStatus;

use super::{Fleet, FleetError};
use crate::manifest::VersionRecord;
use crate::store::Store;

/// The cache limit when `cache_gib` is not set: this share of the size of the file system
/// holding the state directory. Why a share and not a figure: a fixed default is either too
/// small for a GPU host with terabytes of disk or fills a small one; a quarter leaves room for
/// what else shares the disk, for pushes made on this host (held until published), and for a
/// blob garbage collection, which copies the cache's live chunks before dropping old files.
pub const DEFAULT_SHARE: f64 = 0.25;
/// Eviction brings the cache down to this share of the limit, so one eviction (and the
/// compaction that gives the space back) serves many fetches, instead of one per extent.
pub const LOW_WATER: f64 = 0.9;
/// The least time from one pass of the cache thread to the next (`Cache::wait_paced`).
pub const MIN_PASS_GAP: Duration = Duration::from_secs(1);
/// How often the recency hints are saved, and the cache looked at without a fetch asking.
pub const SAVE_EVERY: Duration = Duration::from_secs(30);

/// `[fleet]` settings of the cache.
#[derive(Debug, Clone, Default)]
pub struct CacheConfig {
    /// `cache_gib`, in bytes; `None`: `DEFAULT_SHARE` of the state directory's file system.
    pub limit: Option<u64>,
    /// `warm_before_switch_secs`: fetch a version before making it production or staging, for
    /// at most this long. `None`: switch at once.
    pub warm_before_switch: Option<Duration>,
    /// `serve`: the models whose production and staging this host keeps and warms, among
    /// those its environment serves. `None`: all of those.
    pub serve: Option<std::collections::BTreeSet<arca_core::ModelName>>,
}

impl CacheConfig {
    /// Whether this host keeps (and warms) `model`'s production and staging, given that its
    /// environment serves it: a `serve` list narrows that, never widens it.
    pub fn keeps(&self, model: &arca_core::ModelName) -> bool {
        self.serve.as_ref().is_none_or(|s| s.contains(model))
    }
}

/// Figures for `status` and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct CacheStats {
    /// Bytes of chunks of versions this host keeps (production and staging of served
    /// models), and of pinned versions, at the last look.
    pub kept_bytes: u64,
    pub pinned_bytes: u64,
    /// Kept and pinned chunks alone are more than the limit: they are not evicted, the
    /// cache stays over it.
    pub over_limit: bool,
    pub evicted_chunks: u64,
    pub evicted_bytes: u64,
    /// Eviction passes that evicted something.
    pub evictions: u64,
    /// Blob bytes of the chunk column family on disk and the garbage among them, at the last
    /// look.
    pub disk_bytes: u64,
    pub garbage_bytes: u64,
    /// Warm-ups before a switch, those that ran out of time (or failed) and the last one's
    /// duration.
    pub warmups: u64,
    pub warmups_incomplete: u64,
    pub last_warm_ms: u64,
    /// Why the pins record is not used (tampered with), if it is not.
    pub pins_error: Option<String>,
}

pub struct Cache {
    pub cfg: CacheConfig,
    /// The limit in bytes, resolved at start.
    pub limit: u64,
    /// Version row key → seconds since the epoch of its last use.
    recency: Mutex<HashMap<[u8; 32], u64>>,
    dirty: AtomicBool,
    stats: Mutex<CacheStats>,
    /// Wakes the cache thread when a fetch took the cache over its limit.
    wake: (Mutex<bool>, Condvar),
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The limit for `cfg` on a host whose state directory is `state_dir`.
pub fn resolve_limit(cfg: &CacheConfig, state_dir: &std::path::Path) -> Result<u64, FleetError> {
    if let Some(l) = cfg.limit {
        return Ok(l);
    }
    let st = nix::sys::statvfs::statvfs(state_dir).map_err(|e| {
        FleetError::Config(format!(
            "cache_gib is not set and the size of the file system of {} cannot be read ({e}): set cache_gib",
            state_dir.display()
        ))
    })?;
    let size = st.blocks() as u64 * st.fragment_size() as u64;
    Ok((size as f64 * DEFAULT_SHARE) as u64)
}

impl Cache {
    pub fn new(cfg: CacheConfig, limit: u64, hints: Vec<([u8; 32], u64)>) -> Self {
        Self {
            cfg,
            limit,
            recency: Mutex::new(hints.into_iter().collect()),
            dirty: AtomicBool::new(false),
            stats: Mutex::new(CacheStats::default()),
            wake: (Mutex::new(false), Condvar::new()),
        }
    }

    /// A use of the version with this row key: now its most recent.
    pub fn touch(&self, row: [u8; 32]) {
        let now = now_secs();
        let mut r = self.recency.lock().unwrap_or_else(|p| p.into_inner());
        let e = r.entry(row).or_insert(0);
        if *e != now {
            *e = now;
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// When a version was last used (0: not since the hints began).
    pub fn last_use(&self, row: &[u8; 32]) -> u64 {
        self.recency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(row)
            .copied()
            .unwrap_or(0)
    }

    /// The hints to save, if they changed since the last save; only versions still in
    /// `live` are kept (the map does not grow with deleted versions).
    pub fn hints_to_save(
        &self,
        live: &std::collections::HashSet<[u8; 32]>,
    ) -> Option<Vec<([u8; 32], u64)>> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return None;
        }
        let mut r = self.recency.lock().unwrap_or_else(|p| p.into_inner());
        r.retain(|k, _| live.contains(k));
        Some(r.iter().map(|(k, v)| (*k, *v)).collect())
    }

    pub fn stats(&self) -> CacheStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut CacheStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Asks the cache thread to look now (a fetch took the cache over its limit).
    pub fn wake(&self) {
        let (m, cv) = &self.wake;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_one();
    }

    /// Asks the cache thread to look now if `cached` bytes are over the limit: after a use
    /// (a file opened or closed in the mount, a push) that may let chunks go or adds some.
    pub fn wake_if_over(&self, cached: u64) {
        if cached > self.limit {
            self.wake();
        }
    }

    /// Waits until woken or `timeout` passes, and in any case until `MIN_PASS_GAP` after
    /// `last_pass` began. A wake is never lost, only put off: any user who may open one file
    /// wakes the thread (each open and close does, when the cache is over its limit), and
    /// opening and closing it in a loop while the cache stays over its limit (kept chunks
    /// alone exceed it, say) must not keep the thread running pass after pass, each reading
    /// every kept chunk's row.
    pub fn wait_paced(&self, timeout: Duration, last_pass: std::time::Instant) {
        let (m, cv) = &self.wake;
        let g = m.lock().unwrap_or_else(|p| p.into_inner());
        let (mut g, _) = cv
            .wait_timeout_while(g, timeout, |woken| !*woken)
            .unwrap_or_else(|p| p.into_inner());
        *g = false;
        drop(g);
        let since = last_pass.elapsed();
        if since < MIN_PASS_GAP {
            std::thread::sleep(MIN_PASS_GAP - since);
        }
    }
}

/// The versions among an entry's records that it makes production or staging (as far as
/// `served` says this host serves them): the ones to warm before applying it.
pub fn switched_to_kept(
    store: &Store,
    e: &super::log::Entry,
    served: &dyn Fn(&VersionRecord) -> bool,
) -> Vec<VersionRecord> {
    e.records
        .iter()
        .filter(|r| r.cf == "versions")
        .filter_map(|r| r.json.as_deref())
        .filter_map(|j| serde_json::from_str::<VersionRecord>(j).ok())
        .filter(|rec| {
            matches!(
                rec.status,
                VersionStatus::Production | VersionStatus::Staging
            )
        })
        .filter(|rec| served(rec))
        .filter(|rec| {
            // Only a switch: an entry that rewrites a record already in that status (an
            // approval of a staging version) needs no warm-up of its own.
            store
                .version_status(&rec.metadata.name, &rec.metadata.version)
                .map(|s| s != Some(rec.status))
                .unwrap_or(true)
        })
        .collect()
}

impl Fleet {
    /// Fetches the chunks of `recs` this host lacks, for at most `budget`. Returns whether
    /// every chunk is here now, and how many fetches it made; an error if the store failed.
    pub fn fetch_all(
        &self,
        store: &Arc<Store>,
        recs: &[VersionRecord],
        budget: Duration,
    ) -> Result<(bool, u64), FleetError> {
        // Every wait of every fetch ends by then, not only the gaps between chunks: a chunk
        // deep in a pack on a trickling link cannot hold the warm-up (and the commit lock it
        // holds) past its deadline.
        let deadline = Instant::now() + budget;
        let mut complete = true;
        let mut fetched = 0u64;
        for rec in recs {
            for f in &rec.files {
                for c in &f.chunks {
                    if store.cached_len(&c.id)?.is_some() {
                        continue;
                    }
                    if Instant::now() >= deadline {
                        return Ok((false, fetched));
                    }
                    let got =
                        match self.fetch_for(store, &c.id, true, super::FetchFor::Bulk, deadline) {
                            Err(_) if Instant::now() >= deadline => return Ok((false, fetched)),
                            other => other?,
                        };
                    match got {
                        // Neither here nor in the fleet's store: nothing to fetch it from.
                        super::Fetched::Unknown => complete = false,
                        _ => fetched += 1,
                    }
                }
            }
        }
        Ok((complete, fetched))
    }

    /// `warm_before_switch`: fetches `recs` (the versions an entry makes production or
    /// staging) for at most `budget`, before the entry is applied. Logs and counts what it
    /// did; the switch happens whatever the outcome.
    pub(super) fn warm(
        &self,
        store: &Arc<Store>,
        recs: &[VersionRecord],
        budget: Duration,
    ) -> bool {
        let started = Instant::now();
        for rec in recs {
            self.cache
                .touch(store.version_row_key(&rec.metadata.name, &rec.metadata.version));
        }
        let (complete, fetched) = match self.fetch_all(store, recs, budget) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("fleet: warm-up before a switch stopped: {e}");
                (false, 0)
            }
        };
        let took = started.elapsed();
        for rec in recs {
            if complete {
                tracing::info!(model = %rec.metadata.name, version = %rec.metadata.version, status = ?rec.status, fetches = fetched,
                    "fleet: warmed the version in {took:?} before switching to it");
            } else {
                tracing::warn!(model = %rec.metadata.name, version = %rec.metadata.version, status = ?rec.status,
                    "fleet: warm-up before the switch incomplete after {took:?} (deadline {budget:?}): switching anyway; uncached chunks are fetched on first read");
            }
        }
        self.cache.update(|s| {
            s.warmups += 1;
            s.warmups_incomplete += (!complete) as u64;
            s.last_warm_ms = took.as_millis() as u64;
        });
        complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn woken(c: &Cache) -> bool {
        std::mem::take(&mut *c.wake.0.lock().unwrap())
    }

    #[test]
    fn a_use_wakes_the_cache_thread_only_over_the_limit_and_passes_are_a_second_apart() {
        let c = Cache::new(CacheConfig::default(), 1000, Vec::new());
        c.wake_if_over(1000);
        assert!(!woken(&c), "at the limit: nothing to do");
        c.wake_if_over(1001);
        assert!(woken(&c), "over it: a pass");
        // Woken at once, but the last pass began just now: the next waits out the gap.
        let last = std::time::Instant::now();
        c.wake();
        c.wait_paced(Duration::from_secs(30), last);
        assert!(last.elapsed() >= MIN_PASS_GAP, "{:?}", last.elapsed());
        // A pass long ago: a wake is answered at once.
        let long_ago = std::time::Instant::now() - Duration::from_secs(5);
        let t = std::time::Instant::now();
        c.wake();
        c.wait_paced(Duration::from_secs(30), long_ago);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        assert!(!woken(&c), "the wake was consumed");
    }
}
