//! The store's side of a fleet host's chunk cache: which chunks are here and how many bytes
//! they take (the `cache` column family, kept by `kv::put_chunk` and `kv::delete_chunks`),
//! eviction of chunks the fleet's store holds, giving their disk space back, and this host's
//! pins (a sealed `meta` record bound to its audit event, as version records are).
//!
//! What to evict is decided by the registry (`registry/cache.rs`), which knows the catalog,
//! what this host keeps and what the mount has open.

use std::sync::atomic::Ordering;

use arca_core::audit::Draft;
use arca_core::{ChunkId, ModelName, ModelVersion};

use super::kv::{Batch, Cf};
use super::{RecordPut, Store, StoreError};

/// `meta` row: set once the `cache` index covers every chunk (a fleet host's store from
/// before the index is indexed once, at its first start with it).
const INDEXED: &[u8] = b"cache-indexed";
/// `meta` row of the recency hints: sealed, not audited (only the eviction order depends on
/// it; a stale or missing one makes this host evict in another order, never wrongly).
const RECENCY: &[u8] = b"fleet-cache-recency";

/// A version this host keeps cached whatever the limit (`arca fleet pin`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CachePin {
    pub model: ModelName,
    pub version: ModelVersion,
    pub by: String,
    pub by_uid: u32,
    /// Seconds since the epoch.
    pub at: u64,
}

/// The cache's size, as counted from the index.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheCount {
    pub chunks: u64,
    pub bytes: u64,
}

impl Store {
    /// Builds the index if this store has none yet, then counts it. Called once, at a fleet
    /// host's start, before anything reads or writes chunks.
    pub fn open_cache_index(&self) -> Result<CacheCount, StoreError> {
        if self.kv.get(Cf::Meta, INDEXED)?.is_none() {
            // A store from before the index: one pass over the chunks (reading every blob,
            // once). Rows are written in batches so memory stays small.
            let mut b = Batch::default();
            let mut n = 0usize;
            for item in self.kv.scan(Cf::Chunks) {
                let (k, v) = item?;
                b.put(Cf::Cache, &k, (v.len() as u32).to_le_bytes().to_vec());
                n += 1;
                if n.is_multiple_of(4096) {
                    self.kv.commit_opt(std::mem::take(&mut b), false)?;
                }
            }
            b.put(Cf::Meta, INDEXED, vec![1]);
            self.kv.commit(b)?;
            if n > 0 {
                tracing::info!(chunks = n, "fleet cache: indexed the chunks already here");
            }
        }
        let mut c = CacheCount::default();
        for item in self.kv.scan(Cf::Cache) {
            let (_, v) = item?;
            c.chunks += 1;
            c.bytes +=
                u32::from_le_bytes(v[..4.min(v.len())].try_into().unwrap_or_default()) as u64;
        }
        self.cache_count.chunks.store(c.chunks, Ordering::Relaxed);
        self.cache_count.bytes.store(c.bytes, Ordering::Relaxed);
        Ok(c)
    }

    /// Chunks and sealed bytes in this host's store now.
    pub fn cache_count(&self) -> CacheCount {
        CacheCount {
            chunks: self.cache_count.chunks.load(Ordering::Relaxed),
            bytes: self.cache_count.bytes.load(Ordering::Relaxed),
        }
    }

    /// The sealed length of a chunk if it is here (read from the index: no blob is read).
    pub fn cached_len(&self, id: &ChunkId) -> Result<Option<u32>, StoreError> {
        Ok(self.kv.get(Cf::Cache, id.as_bytes())?.and_then(|v| {
            v.get(..4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
        }))
    }

    /// Writes a chunk and counts it if it is new here (the count is kept under a lock, so
    /// two writers of one chunk count it once).
    pub(super) fn put_counted(&self, id: &ChunkId, sealed: &[u8]) -> Result<(), StoreError> {
        let _g = self.cache_lock.lock().unwrap_or_else(|p| p.into_inner());
        let new = self.kv.get(Cf::Cache, id.as_bytes())?.is_none();
        self.kv.put_chunk(id.as_bytes(), sealed)?;
        if new {
            self.cache_count.chunks.fetch_add(1, Ordering::Relaxed);
            self.cache_count
                .bytes
                .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Deletes chunks with their index and GC rows, and takes them off the count. Returns the
    /// sealed bytes freed.
    pub(super) fn delete_counted(&self, ids: &[ChunkId]) -> Result<u64, StoreError> {
        let _g = self.cache_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut freed = 0u64;
        let mut n = 0u64;
        for id in ids {
            if let Some(l) = self.cached_len(id)? {
                freed += l as u64;
                n += 1;
            }
        }
        let keys: Vec<&[u8]> = ids.iter().map(|i| i.as_bytes().as_slice()).collect();
        self.kv.delete_chunks(&keys)?;
        let sub = |a: &std::sync::atomic::AtomicU64, v: u64| {
            let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| {
                Some(x.saturating_sub(v))
            });
        };
        sub(&self.cache_count.chunks, n);
        sub(&self.cache_count.bytes, freed);
        Ok(freed)
    }

    /// Evicts cached chunks: only chunks the fleet's store holds (a location row, written only
    /// once their pack is uploaded and the entry naming them won its seq, and `in_store` says
    /// the pack is there), so an evicted chunk can always be fetched again. Returns the chunks
    /// and sealed bytes evicted.
    pub fn evict_chunks(
        &self,
        ids: &[ChunkId],
        in_store: &mut dyn FnMut(&crate::fleet::pack::ChunkLoc) -> bool,
    ) -> Result<(usize, u64), StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if self.chunk_loc(id)?.is_some_and(|l| in_store(&l)) {
                out.push(*id);
            }
        }
        let freed = self.delete_counted(&out)?;
        Ok((out.len(), freed))
    }

    /// Gives back the disk space of evicted chunks: a compaction drops blob files holding only
    /// evicted chunks; if the garbage left in mixed files is more than `max_garbage` bytes, a
    /// compaction with blob garbage collection copies their live chunks out. Returns the blob
    /// bytes on disk and the garbage among them, after.
    pub fn reclaim_evicted(&self, max_garbage: u64) -> Result<(u64, u64), StoreError> {
        self.kv.compact_chunks();
        let (total, garbage) = self.kv.chunk_blob_bytes()?;
        // Measured: without this, the files a compaction made obsolete were still on disk
        // when the pass ended (the state directory at twice the limit for a while).
        let purged = |r: (u64, u64)| -> Result<(u64, u64), StoreError> {
            self.kv.purge_obsolete_files()?;
            Ok(r)
        };
        if garbage > max_garbage {
            let t = std::time::Instant::now();
            self.kv.compact_chunks_collecting_blobs()?;
            let after = self.kv.chunk_blob_bytes()?;
            tracing::info!(
                before = total,
                garbage,
                after = after.0,
                "fleet cache: blob files with evicted chunks rewritten in {:?}",
                t.elapsed()
            );
            return purged(after);
        }
        purged((total, garbage))
    }

    /// Blob bytes of the chunk column family on disk, and the garbage among them.
    pub fn chunk_blob_bytes(&self) -> Result<(u64, u64), StoreError> {
        Ok(self.kv.chunk_blob_bytes()?)
    }

    fn pins_row(&self) -> [u8; 32] {
        self.keys.row_key("fleet-pins", &[])
    }

    /// This host's pins. A record that does not open or fails its audit binding (the state
    /// directory written behind arcad's back) is reported, and no pin is used: pins only
    /// decide what stays cached, never what is served.
    pub fn cache_pins(&self) -> Result<Vec<CachePin>, StoreError> {
        let row = self.pins_row();
        let Some(sealed) = self.kv.get(Cf::Meta, &row)? else {
            let live = self
                .bindings
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .live_rows(Cf::Meta);
            if live.iter().any(|(r, _)| r.0 == row) {
                return Err(StoreError::Corrupt(
                    "the fleet pins record was deleted behind arcad's back (the audit trail says it exists)".into(),
                ));
            }
            return Ok(Vec::new());
        };
        let plain = self
            .open_bound(Cf::Meta, &row, &sealed)
            .map_err(StoreError::Corrupt)?;
        serde_json::from_slice(&plain)
            .map_err(|e| StoreError::Corrupt(format!("the fleet pins record: {e}")))
    }

    /// Replaces this host's pins, with their audit event, in one synced write. Host-local:
    /// never published to the fleet's log.
    pub fn put_cache_pins(&self, pins: &[CachePin], events: Vec<Draft>) -> Result<(), StoreError> {
        let puts = vec![RecordPut::put(Cf::Meta, self.pins_row(), &pins)?];
        self.commit_audited_opt(Batch::default(), events, puts, true, false)
            .map(|_| ())
    }

    /// The recency hints saved last (version row key → seconds since the epoch).
    pub fn cache_recency(&self) -> Vec<([u8; 32], u64)> {
        let Ok(Some(sealed)) = self.kv.get(Cf::Meta, RECENCY) else {
            return Vec::new();
        };
        self.keys
            .open_record(Cf::Meta.name(), RECENCY, &sealed)
            .ok()
            .and_then(|p| serde_json::from_slice::<Vec<(String, u64)>>(&p).ok())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(h, t)| {
                let raw = hex::decode(h).ok()?;
                Some((raw.try_into().ok()?, t))
            })
            .collect()
    }

    /// Saves recency hints (unsynced: a lost write only loses some recency).
    pub fn save_cache_recency(&self, hints: &[([u8; 32], u64)]) -> Result<(), StoreError> {
        let json: Vec<(String, u64)> = hints.iter().map(|(r, t)| (hex::encode(r), *t)).collect();
        let json = serde_json::to_vec(&json)
            .map_err(|e| StoreError::Corrupt(format!("encoding recency hints: {e}")))?;
        let sealed = self
            .keys
            .seal_record(Cf::Meta.name(), RECENCY, &json)
            .map_err(|source| StoreError::Crypt {
                what: "sealing the cache's recency hints".into(),
                source,
            })?;
        let mut b = Batch::default();
        b.put(Cf::Meta, RECENCY, sealed);
        self.kv.commit_opt(b, false)?;
        Ok(())
    }

    /// The status of a version as this host's store holds it (`None`: not here, or its
    /// record does not open; then it is not served either).
    pub fn version_status(
        &self,
        name: &ModelName,
        version: &ModelVersion,
    ) -> Result<Option<arca_core::api::Status>, StoreError> {
        let row = self.version_row_key(name, version);
        Ok(match self.kv.get(Cf::Versions, &row)? {
            None => None,
            Some(s) => self.open_version(&row, &s).ok().map(|r| r.status),
        })
    }

    /// A version's row key (what recency hints are saved under: no name in the clear).
    pub fn version_row_key(&self, name: &ModelName, version: &ModelVersion) -> [u8; 32] {
        self.version_row(name.as_str(), &version.to_string())
    }
}
