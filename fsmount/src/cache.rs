//! The bounded cache of verified chunk plaintext that reads and prefetch share.
//!
//! Only whole chunks that passed full verification ([`ChunkSource::chunk`], or a source's fetch
//! through [`crate::MountHandle::plaintext_sink`]: every segment's AEAD and the keyed id) are
//! ever inserted; partial reads authenticated segment by segment are served
//! once and never cached, so a cache hit always carries the strongest check. Keys are chunk ids,
//! which are content addresses: a cached plaintext is valid for every file and version that
//! references the id.
//!
//! [`ChunkSource::chunk`]: crate::ChunkSource::chunk

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arca_core::ChunkId;
use quick_cache::sync::{Cache, GuardResult};
use quick_cache::{OptionsBuilder, Weighter};

/// Verified plaintext of one whole chunk. `Arc<Vec<u8>>` rather than `Arc<[u8]>` so the buffer
/// the source returned is kept as is, without a copy.
pub(crate) type Plain = Arc<Vec<u8>>;

/// Each shard of quick_cache is bounded separately, and a chunk heavier than a shard is never
/// cached; shards of at least this size keep many 128 KiB (maximum) chunks each.
const MIN_SHARD_BYTES: u64 = 32 << 20;
/// Average chunk size (docs/format.md, "Chunking"), to size the cache's index.
const AVERAGE_CHUNK: u64 = 32 << 10;

#[derive(Clone)]
struct ByLen;

impl Weighter<ChunkId, Plain> for ByLen {
    fn weight(&self, _: &ChunkId, plain: &Plain) -> u64 {
        // What the buffer really holds in memory (a source may over-allocate), so the budget
        // bounds the process's memory and not just the bytes served. Never 0: quick_cache
        // never evicts weightless items.
        plain.capacity() as u64 + 1
    }
}

pub(crate) struct ChunkCache {
    /// `None` when the cache is configured to 0 bytes.
    inner: Option<Cache<ChunkId, Plain, ByLen>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ChunkCache {
    pub(crate) fn new(capacity_bytes: u64) -> Self {
        let inner = (capacity_bytes > 0).then(|| {
            let shards = (capacity_bytes / MIN_SHARD_BYTES).clamp(1, 16) as usize;
            let options = OptionsBuilder::new()
                .estimated_items_capacity((capacity_bytes / AVERAGE_CHUNK).max(16) as usize)
                .weight_capacity(capacity_bytes)
                .shards(shards)
                // New entries start "cold" and prefetched chunks must survive there until their
                // reader arrives, so the cold part gets more than quick_cache's default 3 %.
                .hot_allocation(0.8)
                .build();
            match options {
                Ok(options) => {
                    Cache::with_options(options, ByLen, Default::default(), Default::default())
                }
                // Only reachable with out-of-range settings, which the constants above are not.
                Err(_) => Cache::with_weighter(16, capacity_bytes, ByLen),
            }
        });
        Self {
            inner,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The cached plaintext of `id`, counted as a hit or a miss.
    pub(crate) fn get(&self, id: &ChunkId) -> Option<Plain> {
        let found = self.inner.as_ref().and_then(|c| c.get(id));
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Whether `id` is cached, without touching the counters or the entry's recency.
    pub(crate) fn contains(&self, id: &ChunkId) -> bool {
        self.inner.as_ref().is_some_and(|c| c.contains_key(id))
    }

    /// The plaintext of `id`, loading it with `load` if absent. Concurrent calls for the same id
    /// wait for one load instead of each decrypting the chunk; if that load fails, a waiter
    /// loads for itself (and sees the error first-hand). With a `deadline`, the wait for
    /// another's load ends then, and this call loads for itself (`load` honours the deadline).
    pub(crate) fn get_or_load<E>(
        &self,
        id: &ChunkId,
        deadline: Option<std::time::Instant>,
        load: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Plain, E> {
        let Some(cache) = &self.inner else {
            return load().map(Arc::new);
        };
        let wait = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        match cache.get_value_or_guard(id, wait) {
            GuardResult::Value(plain) => Ok(plain),
            GuardResult::Guard(guard) => {
                let plain = Arc::new(load()?);
                // Err only if the placeholder was removed meanwhile; the value is still good.
                let _ = guard.insert(Arc::clone(&plain));
                Ok(plain)
            }
            // Another's load outlasted the deadline: load without the cache rather than wait.
            GuardResult::Timeout => load().map(Arc::new),
        }
    }

    /// Caches `plain` for `id` unless it is cached or being loaded already (then the loader's
    /// copy wins). For plaintext verified elsewhere that a reader is likely to ask for next.
    pub(crate) fn offer(&self, id: &ChunkId, plain: Plain) {
        let Some(cache) = &self.inner else {
            return;
        };
        if let GuardResult::Guard(guard) = cache.get_value_or_guard(id, Some(Duration::ZERO)) {
            let _ = guard.insert(plain);
        }
    }

    /// Load `id` into the cache unless it is cached or already being loaded by someone else.
    /// For prefetch, which must never wait. Returns whether `load` ran and succeeded.
    pub(crate) fn fill_if_idle<E>(
        &self,
        id: &ChunkId,
        load: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> bool {
        let Some(cache) = &self.inner else {
            return false;
        };
        match cache.get_value_or_guard(id, Some(Duration::ZERO)) {
            GuardResult::Guard(guard) => match load() {
                Ok(plain) => {
                    let _ = guard.insert(Arc::new(plain));
                    true
                }
                Err(_) => false,
            },
            GuardResult::Value(_) | GuardResult::Timeout => false,
        }
    }

    /// [`ChunkCache::fill_if_idle`] for chunks loaded together: those cached or being loaded
    /// already are left out; `load` gets the rest, in order, and hands each plaintext to the
    /// callback it is given (index among them, result) as soon as it has it. Readers that want
    /// one of them meanwhile wait for that chunk's load, as they would for a single chunk's.
    /// Returns how many were cached.
    pub(crate) fn fill_run_if_idle<E>(
        &self,
        chunks: &[(ChunkId, u32)],
        load: impl FnOnce(&[(ChunkId, u32)], &mut dyn FnMut(usize, Result<Vec<u8>, E>)),
    ) -> usize {
        let Some(cache) = &self.inner else {
            return 0;
        };
        let mut guards = Vec::with_capacity(chunks.len());
        let mut mine = Vec::with_capacity(chunks.len());
        for c in chunks {
            if let GuardResult::Guard(g) = cache.get_value_or_guard(&c.0, Some(Duration::ZERO)) {
                guards.push(Some(g));
                mine.push(*c);
            }
        }
        if mine.is_empty() {
            return 0;
        }
        let mut n = 0;
        load(&mine, &mut |k, got| {
            // A guard dropped without a value (a chunk that failed) lets its waiters load it
            // themselves, and see the error first-hand.
            let guard = guards.get_mut(k).and_then(Option::take);
            if let (Some(guard), Ok(plain)) = (guard, got) {
                let _ = guard.insert(Arc::new(plain));
                n += 1;
            }
        });
        n
    }

    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub(crate) fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Approximate plaintext bytes held.
    pub(crate) fn weight(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| c.weight())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    #[test]
    fn a_run_loads_what_is_idle_together_and_skips_what_is_cached() {
        let cache = ChunkCache::new(64 << 20);
        cache.offer(&id(2), Arc::new(vec![2; 10]));
        let mut asked = Vec::new();
        let n = cache.fill_run_if_idle(&[(id(1), 10), (id(2), 10), (id(3), 10)], |mine, done| {
            asked = mine.to_vec();
            done(1, Err::<Vec<u8>, ()>(()));
            done(0, Ok(vec![1; 10]));
        });
        assert_eq!(
            asked,
            vec![(id(1), 10), (id(3), 10)],
            "the cached one left out"
        );
        assert_eq!(n, 1);
        assert_eq!(*cache.get(&id(1)).unwrap(), vec![1; 10]);
        assert!(!cache.contains(&id(3)), "a failed one is not cached");
        // A later load of the failed one is not blocked by a placeholder left behind.
        let again = cache.get_or_load(&id(3), None, || Ok::<_, ()>(vec![3; 10]));
        assert_eq!(*again.unwrap(), vec![3; 10]);
    }

    #[test]
    fn counts_hits_and_misses_and_loads_once() {
        let cache = ChunkCache::new(64 << 20);
        assert!(cache.get(&id(1)).is_none());
        let loaded = cache
            .get_or_load(&id(1), None, || Ok::<_, ()>(vec![7; 1000]))
            .unwrap();
        assert_eq!(loaded.len(), 1000);
        let again = cache
            .get_or_load(&id(1), None, || -> Result<Vec<u8>, ()> {
                panic!("loaded twice")
            })
            .unwrap();
        assert!(Arc::ptr_eq(&loaded, &again));
        assert!(cache.get(&id(1)).is_some());
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
        assert!(cache.weight() >= 1000);
    }

    #[test]
    fn an_offer_fills_a_gap_and_never_replaces() {
        let cache = ChunkCache::new(64 << 20);
        let offered = Arc::new(vec![1u8; 100]);
        cache.offer(&id(3), offered.clone());
        assert!(Arc::ptr_eq(&cache.get(&id(3)).unwrap(), &offered));
        // Cached already: the offer is dropped.
        cache.offer(&id(3), Arc::new(vec![2u8; 100]));
        assert_eq!(cache.get(&id(3)).unwrap()[0], 1);
        // While another reader loads a chunk, an offer returns at once and the loader's value
        // wins.
        let (started, release) = (
            std::sync::Arc::new(std::sync::Barrier::new(2)),
            std::sync::Arc::new(std::sync::Barrier::new(2)),
        );
        let shared = std::sync::Arc::new(cache);
        let loader = {
            let (c, started, release) = (shared.clone(), started.clone(), release.clone());
            std::thread::spawn(move || {
                c.get_or_load(&id(5), None, || {
                    started.wait();
                    release.wait();
                    Ok::<_, ()>(vec![9u8; 100])
                })
                .unwrap()
            })
        };
        started.wait();
        let t = std::time::Instant::now();
        shared.offer(&id(5), Arc::new(vec![2u8; 100]));
        assert!(t.elapsed() < Duration::from_secs(1), "the offer waited");
        release.wait();
        let loaded = loader.join().unwrap();
        assert_eq!(loaded[0], 9);
        assert_eq!(
            shared.get(&id(5)).unwrap()[0],
            9,
            "the loader's value is cached"
        );
        // Without a cache, nothing happens.
        let none = ChunkCache::new(0);
        none.offer(&id(4), Arc::new(vec![1u8; 10]));
        assert!(none.get(&id(4)).is_none());
    }

    #[test]
    fn failed_load_caches_nothing() {
        let cache = ChunkCache::new(64 << 20);
        assert_eq!(
            cache.get_or_load(&id(2), None, || Err::<Vec<u8>, _>("bad")),
            Err("bad")
        );
        assert!(!cache.contains(&id(2)));
        assert!(!cache.fill_if_idle(&id(2), || Err::<Vec<u8>, _>("bad")));
        assert!(!cache.contains(&id(2)));
        assert!(cache.fill_if_idle(&id(2), || Ok::<_, ()>(vec![1; 10])));
        assert!(cache.contains(&id(2)));
        // Already cached: no second load.
        assert!(!cache.fill_if_idle(&id(2), || -> Result<Vec<u8>, ()> { panic!("loaded twice") }));
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let cache = ChunkCache::new(4 << 20);
        for n in 0..64u8 {
            cache
                .get_or_load(&id(n), None, || Ok::<_, ()>(vec![n; 256 << 10]))
                .unwrap();
        }
        assert!(cache.weight() <= 4 << 20, "weight {}", cache.weight());
        assert!(cache.weight() > 0);
    }

    #[test]
    fn disabled_cache_still_loads() {
        let cache = ChunkCache::new(0);
        assert!(!cache.enabled());
        let a = cache
            .get_or_load(&id(3), None, || Ok::<_, ()>(vec![3; 10]))
            .unwrap();
        assert_eq!(a.len(), 10);
        assert!(!cache.contains(&id(3)));
        assert!(!cache.fill_if_idle(&id(3), || Ok::<_, ()>(vec![3; 10])));
    }
}
