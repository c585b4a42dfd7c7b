//! The chunk index (the `cache` column family: which chunks are here, how big, and where in a
//! local pack file), kept exact under one lock by every chunk write and delete; and a fleet
//! host's chunk cache on top of it: chunks fetched into local pack files, eviction of chunks
//! the fleet's store holds, giving their disk space back, and this host's pins (a sealed `meta`
//! record bound to its audit event, as version records are).
//!
//! What to evict is decided by the registry (`registry/cache.rs`), which knows the catalog,
//! what this host keeps and what the mount has open.

use std::sync::atomic::Ordering;

use arca_core::audit::Draft;
use arca_core::{ChunkId, ModelName, ModelVersion};

use super::kv::{Batch, Cf};
use super::packs::FetchedExtent;
use super::{RecordPut, Store, StoreError};
use crate::fleet::pack::ChunkLoc;
use arca_core::id::PackId;

/// `meta` row: set once the `cache` index covers every chunk (a store from before the index
/// is indexed once, at its first open with it: the upgrade to format 3).
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

/// Where a chunk here is, as its `cache` row says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Here {
    /// In RocksDB's `chunks` column family; its sealed length.
    Db(u32),
    /// In this host's copy of a fleet pack (`store/packs.rs`).
    Pack(ChunkLoc),
}

/// A `cache` row: the sealed length (u32 LE), then for a chunk in a local pack file its place
/// there (`ChunkLoc::to_bytes`: pack id, offset, length). docs/format.md, "cache".
fn parse_row(v: &[u8]) -> Option<Here> {
    let len = u32::from_le_bytes(v.get(..4)?.try_into().ok()?);
    match v.get(4..) {
        Some(rest) if rest.len() == 44 => {
            let loc = ChunkLoc::from_bytes(rest)?;
            // The row is not sealed (anyone who can write the state directory can write it):
            // a length that disagrees, or more than any chunk seals to, is not followed.
            (loc.len == len
                && len as usize <= crate::crypt::sealed_chunk_len(crate::chunker::MAX_CHUNK)
                // Within what a file offset can be (`pread` takes an i64), with room to add.
                && loc.offset <= i64::MAX as u64 >> 1)
                .then_some(Here::Pack(loc))
        }
        _ => Some(Here::Db(len)),
    }
}

pub(super) fn cache_row_value(loc: &ChunkLoc) -> Vec<u8> {
    let mut v = Vec::with_capacity(48);
    v.extend_from_slice(&loc.len.to_le_bytes());
    v.extend_from_slice(&loc.to_bytes());
    v
}

/// The cache's size, as counted from the index.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheCount {
    pub chunks: u64,
    pub bytes: u64,
}

impl Store {
    /// Builds the index if this store has none yet, counts it and tidies the local pack files.
    /// Called by `Store::open_with`, before anything reads or writes chunks.
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
                tracing::info!(
                    chunks = n,
                    "indexed the chunks already here (upgrade to store format 3)"
                );
            }
        }
        let mut c = CacheCount::default();
        let mut live: std::collections::HashMap<PackId, Vec<(u64, u32)>> = Default::default();
        for item in self.kv.scan(Cf::Cache) {
            let (_, v) = item?;
            c.chunks += 1;
            c.bytes +=
                u32::from_le_bytes(v[..4.min(v.len())].try_into().unwrap_or_default()) as u64;
            if let Some(Here::Pack(l)) = parse_row(&v) {
                live.entry(l.pack).or_default().push((l.offset, l.len));
            }
        }
        // Local pack files: bytes no row points at (written before a crash took their rows,
        // or of a chunk that failed authentication) are punched out, and files with no row
        // are removed. Now, before any read or fetch, so no reader has a file open.
        self.packs.check_dir().map_err(|e| self.packs_error(e))?;
        for pack in self.packs.list().map_err(|e| self.packs_error(e))? {
            let tidied = match live.get_mut(&pack) {
                None => self.packs.remove(&pack),
                Some(ranges) => {
                    ranges.sort_unstable();
                    self.packs.keep_only(&pack, ranges)
                }
            };
            // Only space is at stake: the host starts, and says so.
            if let Err(e) = tidied {
                tracing::warn!(%pack, "tidying a local pack file: {e}");
            }
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
        Ok(self.cache_row(id)?.map(|h| match h {
            Here::Db(len) => len,
            Here::Pack(l) => l.len,
        }))
    }

    pub(super) fn cache_row(&self, id: &ChunkId) -> Result<Option<Here>, StoreError> {
        Ok(self
            .kv
            .get(Cf::Cache, id.as_bytes())?
            .and_then(|v| parse_row(&v)))
    }

    pub(super) fn packs_error(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.packs.dir().to_owned(),
            source,
        }
    }

    /// Where a chunk in a local pack file is (`None`: not here, or in RocksDB).
    pub(super) fn packed_loc(&self, id: &ChunkId) -> Result<Option<ChunkLoc>, StoreError> {
        Ok(match self.cache_row(id)? {
            Some(Here::Pack(l)) => Some(l),
            _ => None,
        })
    }

    /// A chunk's sealed bytes from its local pack file. `None`: the file or the bytes are gone
    /// (removed or truncated behind arcad's back, or the row moved: see `open_sealed_chunk`).
    pub(super) fn read_packed(&self, loc: &ChunkLoc) -> Result<Option<Vec<u8>>, StoreError> {
        self.packs
            .read(&loc.pack, loc.offset, loc.len)
            .map_err(|e| self.packs_error(e))
    }

    /// Gives back the space of fetched bytes that failed authentication (written to the pack
    /// file as they came, never indexed), unless a row points there after all.
    pub fn forget_fetched(&self, chunks: &[(ChunkId, ChunkLoc)]) -> Result<(), StoreError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let _g = self.cache_lock.lock().unwrap_or_else(|p| p.into_inner());
        for (id, loc) in chunks {
            if self.cache_row(id)? == Some(Here::Pack(*loc)) {
                continue;
            }
            if let Err(e) = self.packs.punch(&loc.pack, loc.offset, loc.len) {
                tracing::warn!(pack = %loc.pack, "fleet cache: giving back a failed chunk's space in its pack file: {e}");
            }
        }
        Ok(())
    }

    /// Drops the row of a chunk in a local pack file whose copy is gone, or damaged (`read`:
    /// the bytes that failed), if the row still says `loc` and the bytes there are still those.
    /// Returns whether it did. False: eviction took the chunk meanwhile, or took it and a fetch
    /// put it back (the same row, new bytes) between the caller's read and now; the caller
    /// looks again, and a read racing eviction is never taken for damage.
    pub(super) fn drop_damaged_copy(
        &self,
        id: &ChunkId,
        loc: &ChunkLoc,
        read: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let _g = self.cache_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.cache_row(id)? != Some(Here::Pack(*loc)) {
            return Ok(false);
        }
        if let Some(read) = read {
            let now = self
                .packs
                .read(&loc.pack, loc.offset, loc.len)
                .map_err(|e| self.packs_error(e))?;
            if now.as_deref() != Some(read) {
                return Ok(false);
            }
        }
        self.kv.delete_chunks(&[id.as_bytes().as_slice()], false)?;
        self.cache_count.take(1, loc.len as u64);
        Ok(true)
    }

    /// `put_fetched_extent` for tests, in one call: `bytes` as they lie at `at` in `pack` go to
    /// this host's copy of it, and `chunks` (in pack order, lying wholly within bytes written
    /// by this or earlier calls) are indexed.
    #[cfg(test)]
    pub fn put_fetched(
        &self,
        pack: &PackId,
        at: u64,
        bytes: &[u8],
        chunks: &[(ChunkId, ChunkLoc)],
    ) -> Result<(), StoreError> {
        let mut e = FetchedExtent::new(*pack, at);
        let mut data = bytes;
        loop {
            let n = e.fill(data);
            data = &data[n..];
            if data.is_empty() {
                break;
            }
            let end = e.end();
            self.put_fetched_extent(&mut e, end, false, &[])?;
        }
        let end = e.end();
        self.put_fetched_extent(&mut e, end, true, chunks)?;
        Ok(())
    }

    /// Writes the bytes of a fetched extent before `upto` to this host's copy of its pack
    /// (`LocalPacks::write_extent`; `all`: the part-block at the end too), then indexes the
    /// leading `chunks` (authenticated by the caller, in pack order) whose bytes are all
    /// written now. Returns how many of `chunks` that is; the caller gives the rest again
    /// after a later write. Bytes and rows under one lock, so eviction never punches a chunk
    /// between its write and its row.
    pub fn put_fetched_extent(
        &self,
        e: &mut FetchedExtent,
        upto: u64,
        all: bool,
        chunks: &[(ChunkId, ChunkLoc)],
    ) -> Result<usize, StoreError> {
        let _g = self.cache_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.packs
            .write_extent(e, upto, all)
            .map_err(|err| self.packs_error(err))?;
        let written = e.written();
        let n = chunks
            .iter()
            .take_while(|(_, l)| l.offset + l.len as u64 <= written)
            .count();
        if n == 0 {
            return Ok(0);
        }
        let mut rows = Vec::with_capacity(n);
        let mut added = 0u64;
        for (id, loc) in &chunks[..n] {
            match self.cache_row(id)? {
                // A row a crash left behind in a store from before format 3 (no chunk behind
                // it): this copy takes its place.
                Some(Here::Db(_)) if !self.kv.contains(Cf::Chunks, id.as_bytes())? => {}
                Some(_) => continue,
                None => {}
            }
            rows.push((id.as_bytes().to_vec(), cache_row_value(loc)));
            added += loc.len as u64;
        }
        self.kv.put_index_rows(&rows, true, false)?;
        self.cache_count
            .chunks
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.cache_count.bytes.fetch_add(added, Ordering::Relaxed);
        Ok(n)
    }

    /// Deletes chunks with their index and GC rows, and takes them off the count. Returns the
    /// sealed bytes freed.
    pub(super) fn delete_counted(&self, ids: &[ChunkId]) -> Result<u64, StoreError> {
        let _g = self.cache_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut freed = 0u64;
        let mut n = 0u64;
        let mut punch = Vec::new();
        for id in ids {
            match self.cache_row(id)? {
                Some(Here::Db(l)) => freed += l as u64,
                Some(Here::Pack(l)) => {
                    freed += l.len as u64;
                    punch.push(l);
                }
                None => continue,
            }
            n += 1;
        }
        let keys: Vec<&[u8]> = ids.iter().map(|i| i.as_bytes().as_slice()).collect();
        self.kv.delete_chunks(&keys, !punch.is_empty())?;
        // The rows first, then the bytes: a reader that read a row just before may find its
        // bytes punched out, fails authentication, and then finds the row gone
        // (`open_sealed_chunk`): a miss, not damage. A punch that fails leaves bytes no row
        // points at (punched out at the next start); the chunks are gone all the same.
        let mut unpunched = 0usize;
        for l in &punch {
            if let Err(e) = self.packs.punch(&l.pack, l.offset, l.len) {
                unpunched += 1;
                if unpunched == 1 {
                    tracing::warn!(pack = %l.pack, "fleet cache: giving back an evicted chunk's space in its pack file: {e}");
                }
            }
        }
        self.cache_count.take(n, freed);
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
            self.with_pack_bytes(r)
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

    /// Bytes of cached chunks on disk (the chunk column family's blob files and the local pack
    /// files), and the garbage among them (in blob files: evicted chunks not yet compacted away;
    /// pack files give an evicted chunk's blocks back at once).
    pub fn chunk_blob_bytes(&self) -> Result<(u64, u64), StoreError> {
        self.with_pack_bytes(self.kv.chunk_blob_bytes()?)
    }

    fn with_pack_bytes(&self, (total, garbage): (u64, u64)) -> Result<(u64, u64), StoreError> {
        let packs = self.packs.disk_bytes().map_err(|e| self.packs_error(e))?;
        Ok((total + packs, garbage))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Kek;

    /// A store as a fleet host has it (indexed), and three chunks sealed back to back as a
    /// pack holds them: (id, place in the pack, plaintext), and the pack's bytes.
    /// A chunk: its id, its place in the pack, its plaintext.
    type Chunk = (ChunkId, ChunkLoc, Vec<u8>);

    fn fleet_store(dir: &std::path::Path) -> (Store, Vec<Chunk>, Vec<u8>) {
        let s = Store::open(
            &dir.join("state"),
            Kek::generate_file(&dir.join("kek")).unwrap(),
        )
        .unwrap();
        s.open_cache_index().unwrap();
        let pack = PackId([9; 32]);
        let (mut chunks, mut bytes) = (Vec::new(), vec![0u8; 100]);
        for i in 0..3u8 {
            let plain = vec![i + 1; 20_000 + i as usize];
            let id = s.keys().chunk_id(&plain);
            let sealed = s.keys().seal_chunk(&id, &plain).unwrap();
            let loc = ChunkLoc {
                pack,
                offset: bytes.len() as u64,
                len: sealed.len() as u32,
            };
            bytes.extend_from_slice(&sealed);
            chunks.push((id, loc, plain));
        }
        (s, chunks, bytes)
    }

    fn open(s: &Store, id: &ChunkId) -> Option<Result<Vec<u8>, crate::crypt::CryptError>> {
        s.open_sealed_chunk(id, |sealed| s.keys().open_chunk(id, sealed))
            .unwrap()
    }

    #[test]
    fn fetched_chunks_live_in_a_local_pack_file_and_are_here_only_once_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let (s, chunks, bytes) = fleet_store(dir.path());
        let [(a, la, pa), (b, lb, pb), (c, lc, _)] = &chunks[..] else {
            unreachable!()
        };
        // Pieces that do not line up with chunks: the bytes land, a chunk is here only once
        // indexed.
        let cut = la.offset as usize + 1000;
        s.put_fetched(&la.pack, 0, &bytes[..cut], &[]).unwrap();
        assert!(!s.has_chunk(a).unwrap());
        s.put_fetched(&la.pack, cut as u64, &bytes[cut..], &[(*a, *la), (*b, *lb)])
            .unwrap();
        assert!(s.has_chunk(a).unwrap() && s.has_chunk(b).unwrap());
        assert!(!s.has_chunk(c).unwrap(), "written but never indexed");
        // As a chunk that failed authentication: its bytes are given back, the rest stay.
        let disk = s.chunk_blob_bytes().unwrap().0;
        s.forget_fetched(&[(*c, *lc), (*b, *lb)]).unwrap();
        assert!(s.chunk_blob_bytes().unwrap().0 < disk);
        assert_eq!(
            open(&s, b).unwrap().unwrap(),
            *pb,
            "an indexed chunk is not forgotten"
        );
        assert_eq!(open(&s, a).unwrap().unwrap(), *pa);
        assert_eq!(s.cached_len(b).unwrap(), Some(lb.len));
        let count = s.cache_count();
        assert_eq!((count.chunks, count.bytes), (2, (la.len + lb.len) as u64));

        // Evicted: the row goes and the bytes are punched out.
        let disk = s.chunk_blob_bytes().unwrap().0;
        assert_eq!(s.delete_counted(&[*a]).unwrap(), la.len as u64);
        assert!(
            s.chunk_blob_bytes().unwrap().0 < disk,
            "its blocks are given back"
        );
        assert!(!s.has_chunk(a).unwrap());
        assert!(open(&s, a).is_none());
        assert_eq!(open(&s, b).unwrap().unwrap(), *pb, "its neighbour stays");

        // Damaged behind arcad's back: refused, and its row dropped so it is fetched again.
        let path = dir.path().join("state/packs").join(hex::encode(lb.pack.0));
        let mut raw = std::fs::read(&path).unwrap();
        raw[lb.offset as usize + 100] ^= 1;
        std::fs::write(&path, &raw).unwrap();
        assert!(open(&s, b).unwrap().is_err(), "never served");
        assert!(!s.has_chunk(b).unwrap(), "dropped, to be fetched again");
        assert_eq!(s.cache_count().chunks, 0);
    }

    #[test]
    fn a_pack_file_gone_is_a_miss_and_a_restart_removes_what_no_row_points_at() {
        let dir = tempfile::tempdir().unwrap();
        let (s, chunks, bytes) = fleet_store(dir.path());
        let (a, la, pa) = &chunks[0];
        s.put_fetched(&la.pack, 0, &bytes, &[(*a, *la)]).unwrap();
        let packs = dir.path().join("state/packs");
        let other = PackId([5; 32]);
        s.put_fetched(&other, 0, &[1u8; 50_000], &[]).unwrap();
        drop(s);
        // Reopened: the file no row points into is removed; in the other, the chunks never
        // indexed are punched out.
        let s = Store::open(
            &dir.path().join("state"),
            Kek::load(&dir.path().join("kek")).unwrap(),
        )
        .unwrap();
        s.open_cache_index().unwrap();
        assert!(!packs.join(hex::encode(other.0)).exists());
        let f = packs.join(hex::encode(la.pack.0));
        let raw = std::fs::read(&f).unwrap();
        let end = (la.offset + la.len as u64) as usize;
        assert!(
            raw[end..].iter().all(|b| *b == 0),
            "unindexed chunks punched out"
        );
        assert_eq!(open(&s, a).unwrap().unwrap(), *pa);
        // Truncated behind arcad's back (an open file keeps a removed one readable).
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(la.offset)
            .unwrap();
        assert!(open(&s, a).is_none(), "gone: a miss");
        assert!(!s.has_chunk(a).unwrap(), "and fetched again");
    }

    #[test]
    fn a_read_whose_bytes_change_under_it_is_read_again_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (s, chunks, bytes) = fleet_store(dir.path());
        let (a, la, _) = &chunks[0];
        s.put_fetched(&la.pack, 0, &bytes, &[(*a, *la)]).unwrap();
        let path = dir.path().join("state/packs").join(hex::encode(la.pack.0));
        // As if eviction punched the bytes out under the read and a fetch then put others
        // back: the reader's bytes fail, but they are not what is there now, so it reads again.
        let mut calls = 0;
        let got = s
            .open_sealed_chunk(a, |sealed| {
                calls += 1;
                if calls == 1 {
                    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 64], la.offset).unwrap();
                    return Err(crate::crypt::CryptError::Authentication);
                }
                assert_eq!(&sealed[..64], &[0u8; 64], "the bytes there now");
                Ok(())
            })
            .unwrap();
        assert!(matches!(got, Some(Ok(()))), "read again: {got:?}");
        assert_eq!(calls, 2);
        assert!(s.has_chunk(a).unwrap(), "the row stands");
        // The same failure on bytes that did not change is damage: refused and dropped.
        let got = s
            .open_sealed_chunk(a, |sealed| s.keys().open_chunk(a, sealed))
            .unwrap();
        assert!(matches!(got, Some(Err(_))));
        assert!(!s.has_chunk(a).unwrap());
    }
}
