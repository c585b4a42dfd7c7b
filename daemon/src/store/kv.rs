//! The only module that touches RocksDB. Everything above it sees column families as an enum and
//! values as bytes; sealing, row-key hashing and record encodings live in `store`.
//!
//! Chunks live in local pack files (`store/packs.rs`) since format 3; here are their index
//! rows (`cache`, `gc`), and the `chunks` column family that stores from before format 3 hold
//! theirs in. Durability rule for those: chunk values are rewritten (by a key rotation) without
//! the WAL and become durable by `flush_chunks` before the rotation records its progress.

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, BottommostLevelCompaction, Cache, ColumnFamilyDescriptor, CompactOptions,
    DBCompressionType, FlushOptions, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions,
    DB,
};

/// Column families, one per record kind (see docs/format.md for their keys and values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    /// Store-level records: format marker, wrapped keys.
    Meta,
    /// Sealed chunks by chunk id, of stores from before format 3 (new chunks go to local pack
    /// files); stored in BlobDB blob files.
    Chunks,
    /// Sealed version records by row key.
    Versions,
    /// Sealed trusted-key lists by row key.
    Keys,
    /// Sealed role assignments and model policies by row key.
    Acl,
    /// The audit trail: sealed events by id, signed checkpoints, the signed head.
    Audit,
    /// Secondary indexes of the audit trail (keys only).
    AuditIdx,
    /// Chunk ids that may have become unreferenced (keys only): every chunk's id is put here
    /// with its `cache` row, and again when a version using it is removed. GC examines only
    /// these; a commit takes its new chunks out in the batch that references them.
    Gc,
    /// Fleet hosts only: where each fleet chunk sits in the object store's packs.
    Locs,
    /// The chunk index: chunk id → sealed length (u32 LE) and, for a chunk in a local pack
    /// file, its place there; one row per chunk here. Why not `chunks` itself for the old
    /// chunks: knowing which are here, and their size, from it would read every blob (RocksDB
    /// loads a blob value with its key).
    Cache,
}

impl Cf {
    pub const ALL: [Cf; 10] = [
        Cf::Meta,
        Cf::Chunks,
        Cf::Versions,
        Cf::Keys,
        Cf::Acl,
        Cf::Audit,
        Cf::AuditIdx,
        Cf::Gc,
        Cf::Locs,
        Cf::Cache,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::Chunks => "chunks",
            Cf::Versions => "versions",
            Cf::Keys => "keys",
            Cf::Acl => "acl",
            Cf::Audit => "audit",
            Cf::AuditIdx => "audit_idx",
            Cf::Gc => "gc",
            Cf::Locs => "locs",
            Cf::Cache => "cache",
        }
    }
}

/// A RocksDB failure, with the operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("rocksdb {op}: {source}")]
pub struct KvError {
    op: &'static str,
    #[source]
    source: rocksdb::Error,
}

impl KvError {
    /// The file system under the database is full.
    pub fn no_space(&self) -> bool {
        self.source.to_string().contains("No space left on device")
    }
}

fn err(op: &'static str) -> impl FnOnce(rocksdb::Error) -> KvError {
    move |source| KvError { op, source }
}

/// A key and its value, as RocksDB's iterators return them.
pub type KeyValue = (Box<[u8]>, Box<[u8]>);

/// An open database.
pub struct Kv {
    db: DB,
}

/// A set of writes applied atomically by `Kv::commit`.
#[derive(Default)]
pub struct Batch {
    ops: Vec<(Cf, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn put(&mut self, cf: Cf, key: &[u8], value: Vec<u8>) {
        self.ops.push((cf, key.to_vec(), Some(value)));
    }

    pub fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.ops.push((cf, key.to_vec(), None));
    }
}

impl Kv {
    pub fn open(path: &Path) -> Result<Self, KvError> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        // The WAL holds only small records (chunks are written without it), so a few MiB of
        // live WAL is plenty. The cap matters for disk use too: RocksDB preallocates each new
        // WAL file (fallocate, kept until the file is closed) by 1.1x the write buffer of the
        // column family whose flush switched it, capped by this value. Measured with 64 MiB: a
        // fleet host's cache limited to 51 MiB had a 36 MiB WAL of which about 1 MiB was
        // written, after a flush of the chunks' 32 MiB memtable switched it.
        db_opts.set_max_total_wal_size(8 << 20);
        // Chunks are ciphertext and do not compress; records are small.
        db_opts.set_compression_type(DBCompressionType::None);
        // RocksDB's default fadvise(RANDOM) on every file it opens turns off the kernel's
        // readahead, and blob files are read in the order they were written (a mount reader
        // streams a file's chunks front to back): measured, a cold sequential read through the
        // mount then waited on one 32 KiB disk read per chunk. Random readers still get small
        // reads, as the kernel only grows readahead for sequential access.
        db_opts.set_advise_random_on_open(false);
        // Flushes write blob files with O_DIRECT: a chunk's sealed bytes then go from RocksDB's
        // aligned buffer to the device, instead of being copied into the page cache by the
        // kernel (measured: that copy, with the page allocations behind it, was a quarter of
        // arcad's CPU during a push, about 3 CPU-s per GiB). Nothing is lost for readers: the
        // chunks just pushed are rarely read at once, and reads stay buffered (the kernel's
        // readahead serves the mount's sequential readers). Filesystems without O_DIRECT (some
        // tmpfs and overlay mounts) keep buffered writes, found by a probe rather than by a
        // flush failing later.
        let direct = direct_io_supported(path);
        db_opts.set_use_direct_io_for_flush_and_compaction(direct);
        if !direct {
            tracing::info!(
                state_dir = %path.display(),
                "the state directory's filesystem has no O_DIRECT: RocksDB flushes through the page cache"
            );
        }

        // One small block cache for every column family: the LSM holds only keys, blob
        // references and small records (chunk data lives in blob files and the mount keeps its
        // own plaintext cache), so RocksDB's default of a 32 MiB cache per column family was
        // mostly resident memory counted against the mount's budget.
        let block_cache = Cache::new_lru_cache(8 << 20);
        let cfs = Cf::ALL.iter().map(|&cf| {
            let mut o = Options::default();
            o.set_compression_type(DBCompressionType::None);
            let mut table = BlockBasedOptions::default();
            table.set_bloom_filter(10.0, false);
            table.set_block_cache(&block_cache);
            o.set_block_based_table_factory(&table);
            if cf == Cf::Chunks {
                // Integrated BlobDB: values live in blob files, the LSM holds only keys and blob
                // references, so compactions do not rewrite gigabytes of chunk data.
                o.set_enable_blob_files(true);
                o.set_min_blob_size(1024);
                o.set_blob_file_size(256 << 20);
                o.set_blob_compression_type(DBCompressionType::None);
                // No blob garbage collection during compactions: measured, it rewrote blob files
                // written seconds earlier during a bulk push and cost a fifth of arcad's CPU.
                // Blob files whose chunks are all deleted are still dropped by RocksDB.
                o.set_enable_blob_gc(false);
                o.set_write_buffer_size(32 << 20);
                o.set_max_write_buffer_number(2);
            }
            ColumnFamilyDescriptor::new(cf.name(), o)
        });
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(err("open"))?;
        Ok(Self { db })
    }

    fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        // Every Cf is created at open (create_missing_column_families), so the handle exists.
        self.db
            .cf_handle(cf.name())
            .unwrap_or_else(|| unreachable!("column family {} missing", cf.name()))
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(cf), key)
            .map_err(err("get"))?
            .map(|v| v.to_vec()))
    }

    /// Runs `f` on a chunk's sealed value in place (pinned in RocksDB's buffer), saving the copy
    /// into a `Vec` that `get` makes: chunk reads copy the ciphertext once, into the buffer they
    /// decrypt in. RocksDB's CRC of the blob is skipped: every sealed chunk is authenticated
    /// segment by segment (AEAD) before any of it is used, which catches what the CRC would,
    /// and the CRC cost a few percent of a cold sequential read.
    pub fn with_chunk<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, KvError> {
        let mut ro = ReadOptions::default();
        ro.set_verify_checksums(false);
        Ok(self
            .db
            .get_pinned_cf_opt(self.cf(Cf::Chunks), key, &ro)
            .map_err(err("get chunk"))?
            .map(|v| f(&v)))
    }

    /// Whether a key exists. A bloom-filter miss answers without I/O.
    pub fn contains(&self, cf: Cf, key: &[u8]) -> Result<bool, KvError> {
        if !self.db.key_may_exist_cf(self.cf(cf), key) {
            return Ok(false);
        }
        Ok(self
            .db
            .get_pinned_cf(self.cf(cf), key)
            .map_err(err("get"))?
            .is_some())
    }

    /// Index rows of chunks whose bytes live outside RocksDB (local pack files,
    /// `store/packs.rs`): each a `cache` row and, if `gc`, a GC candidate, in one WAL write (not
    /// synced: a row lost in a crash only loses a chunk no version references yet, since a
    /// version's commit is a synced write after it, and the WAL is written in order).
    /// `sync`: durably (rows that move a chunk, before its old bytes are punched out: see
    /// `delete_chunks`).
    pub fn put_index_rows(
        &self,
        rows: &[(Vec<u8>, Vec<u8>)],
        gc: bool,
        sync: bool,
    ) -> Result<(), KvError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut wb = WriteBatch::default();
        for (k, v) in rows {
            if gc {
                wb.put_cf(self.cf(Cf::Gc), k, []);
            }
            wb.put_cf(self.cf(Cf::Cache), k, v);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(wb, &wo).map_err(err("index chunks"))
    }

    /// Rewrites an existing chunk (re-sealed under another key) without the WAL, like
    /// `put_chunk`; it is already known to GC.
    pub fn replace_chunk(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db
            .put_cf_opt(self.cf(Cf::Chunks), key, value, &wo)
            .map_err(err("replace chunk"))
    }

    /// Compacts the chunk column family's key tables, so that blob files all of whose chunks
    /// were deleted are dropped (their space comes back); the tables hold only keys and blob
    /// references, so this is cheap.
    pub fn compact_chunks(&self) {
        self.db
            .compact_range_cf(self.cf(Cf::Chunks), None::<&[u8]>, None::<&[u8]>);
    }

    /// Leaves no file under the database holding a value of `cf` that was overwritten or
    /// deleted before this call (a wrapped key after a key rotation). How: every column
    /// family's memtable is flushed, so every earlier write-ahead log file becomes obsolete;
    /// `cf` is compacted down to and including its last level, which drops older versions of a
    /// key (no snapshot is ever held); then RocksDB deletes the obsolete table and log files at
    /// once (re-enabling file deletions purges them before returning, rather than whenever the
    /// next background job runs). Blocks, but `cf` should be small.
    pub fn purge_overwritten(&self, cf: Cf) -> Result<(), KvError> {
        self.db
            .disable_file_deletions()
            .map_err(err("disable file deletions"))?;
        let done = (|| {
            let mut fo = FlushOptions::default();
            fo.set_wait(true);
            for c in Cf::ALL {
                self.db
                    .flush_cf_opt(self.cf(c), &fo)
                    .map_err(err("flush"))?;
            }
            let mut co = CompactOptions::default();
            co.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
            self.db
                .compact_range_cf_opt(self.cf(cf), None::<&[u8]>, None::<&[u8]>, &co);
            Ok(())
        })();
        // Always re-enabled, or arcad would never delete an obsolete file again.
        let enabled = self
            .db
            .enable_file_deletions()
            .map_err(err("enable file deletions"));
        done.and(enabled)
    }

    /// Deletes obsolete files now (blob and table files a compaction left behind), rather
    /// than whenever RocksDB's background purge gets to them: re-enabling file deletions
    /// purges before it returns (as in `purge_overwritten`).
    pub fn purge_obsolete_files(&self) -> Result<(), KvError> {
        self.db
            .disable_file_deletions()
            .map_err(err("disable file deletions"))?;
        self.db
            .enable_file_deletions()
            .map_err(err("enable file deletions"))
    }

    /// RocksDB's estimate of the keys in a column family (for progress reports only).
    pub fn estimate_keys(&self, cf: Cf) -> Result<u64, KvError> {
        Ok(self
            .db
            .property_int_value_cf(self.cf(cf), "rocksdb.estimate-num-keys")
            .map_err(err("property"))?
            .unwrap_or(0))
    }

    /// Deletes chunks (through the WAL, not synced: a delete lost in a crash leaves garbage
    /// that a later collection removes, never a dangling reference).
    /// Deletes chunks with their `gc` and `cache` rows; `sync`: durably, before the caller
    /// punches their bytes out of a pack file (a punch can reach the disk before an unsynced
    /// WAL write does, and a row that came back after a crash would name zeros that a later
    /// push trusts as a chunk here).
    pub fn delete_chunks(&self, keys: &[&[u8]], sync: bool) -> Result<(), KvError> {
        let mut wb = WriteBatch::default();
        for k in keys {
            wb.delete_cf(self.cf(Cf::Chunks), k);
            wb.delete_cf(self.cf(Cf::Gc), k);
            wb.delete_cf(self.cf(Cf::Cache), k);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(wb, &wo).map_err(err("delete chunks"))
    }

    /// Blob bytes on disk in the chunk column family, and how many of them are garbage
    /// (deleted chunks whose blob files still hold live ones), as RocksDB counts them after
    /// compactions.
    pub fn chunk_blob_bytes(&self) -> Result<(u64, u64), KvError> {
        let h = self.cf(Cf::Chunks);
        let prop = |name: &str| {
            self.db
                .property_int_value_cf(h, name)
                .map(|v| v.unwrap_or(0))
                .map_err(err("property"))
        };
        Ok((
            prop("rocksdb.total-blob-file-size")?,
            prop("rocksdb.live-blob-file-garbage-size")?,
        ))
    }

    /// Compacts the chunk column family with blob garbage collection for this one run: every
    /// live chunk is copied out of blob files that hold garbage, and those files are dropped.
    /// Why not always on: measured, blob GC during a bulk push rewrote files written seconds
    /// earlier (see `open`); a cache host calls this only when evictions left enough garbage
    /// that plain compaction cannot drop (blob files mixing evicted and kept chunks).
    pub fn compact_chunks_collecting_blobs(&self) -> Result<(), KvError> {
        let h = self.cf(Cf::Chunks);
        self.db
            .set_options_cf(
                h,
                &[
                    ("enable_blob_garbage_collection", "true"),
                    ("blob_garbage_collection_age_cutoff", "1.0"),
                ],
            )
            .map_err(err("enable blob gc"))?;
        let mut co = CompactOptions::default();
        co.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        self.db
            .compact_range_cf_opt(h, None::<&[u8]>, None::<&[u8]>, &co);
        // Always turned off again, or every later compaction would rewrite blobs.
        self.db
            .set_options_cf(h, &[("enable_blob_garbage_collection", "false")])
            .map_err(err("disable blob gc"))
    }

    /// Makes every chunk written so far durable (memtable to synced blob and table files).
    pub fn flush_chunks(&self) -> Result<(), KvError> {
        let mut fo = FlushOptions::default();
        fo.set_wait(true);
        self.db
            .flush_cf_opt(self.cf(Cf::Chunks), &fo)
            .map_err(err("flush chunks"))
    }

    /// Flushes the memtable of every column family other than `chunks` that holds more than
    /// `over` bytes, waiting for the flushes. Why: those hold small records, and RocksDB's 64 MiB
    /// write buffers let a big push leave its version record and per-chunk GC rows resident
    /// (measured after a 2 GiB push: `versions` 4.6 MB, `gc` 7.3 MB, `audit` 1 MB) for as long as
    /// no more writes came; memory the mount's cache budget had to share.
    pub fn flush_small_memtables(&self, over: u64) -> Result<(), KvError> {
        let mut fo = FlushOptions::default();
        fo.set_wait(true);
        // One column family failing does not keep the others from being flushed.
        let mut first_error = Ok(());
        for cf in Cf::ALL.into_iter().filter(|&cf| cf != Cf::Chunks) {
            let h = self.cf(cf);
            let flushed = self
                .db
                .property_int_value_cf(h, "rocksdb.cur-size-all-mem-tables")
                .map_err(err("property"))
                .and_then(|size| match size {
                    Some(size) if size > over => self.db.flush_cf_opt(h, &fo).map_err(err("flush")),
                    _ => Ok(()),
                });
            if first_error.is_ok() {
                first_error = flushed;
            }
        }
        first_error
    }

    /// Applies a batch atomically and syncs the WAL before returning.
    pub fn commit(&self, batch: Batch) -> Result<(), KvError> {
        self.commit_opt(batch, true)
    }

    /// Applies a batch atomically; with `sync: false` the WAL is written but not synced: a
    /// process crash loses nothing, a power loss may lose this batch and later unsynced ones
    /// (the WAL is a prefix, so never an earlier batch without a later one).
    pub fn commit_opt(&self, batch: Batch, sync: bool) -> Result<(), KvError> {
        let mut wb = WriteBatch::default();
        for (cf, k, v) in batch.ops {
            match v {
                Some(v) => wb.put_cf(self.cf(cf), k, v),
                None => wb.delete_cf(self.cf(cf), k),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(wb, &wo).map_err(err("commit"))
    }

    /// Keys and values with `from <= key < to`, ascending, or descending with `reverse`.
    pub fn range(
        &self,
        cf: Cf,
        from: &[u8],
        to: &[u8],
        reverse: bool,
    ) -> impl Iterator<Item = Result<KeyValue, KvError>> + '_ {
        let mode = if reverse {
            IteratorMode::From(to, rocksdb::Direction::Reverse)
        } else {
            IteratorMode::From(from, rocksdb::Direction::Forward)
        };
        let (from, to) = (from.to_vec(), to.to_vec());
        let upper = to.clone();
        self.db
            .iterator_cf(self.cf(cf), mode)
            .map(|r| r.map_err(err("range")))
            .filter(move |r| !matches!(r, Ok((k, _)) if reverse && **k >= *upper))
            .take_while(move |r| match r {
                Ok((k, _)) => {
                    if reverse {
                        **k >= *from
                    } else {
                        **k < *to
                    }
                }
                Err(_) => true,
            })
    }

    /// Every key and value of a column family, in key order.
    pub fn scan(&self, cf: Cf) -> impl Iterator<Item = Result<KeyValue, KvError>> + '_ {
        self.db
            .iterator_cf(self.cf(cf), IteratorMode::Start)
            .map(|r| r.map_err(err("scan")))
    }

    /// Bytes on disk in table and blob files of a column family.
    pub fn disk_bytes(&self, cf: Cf) -> Result<u64, KvError> {
        let h = self.cf(cf);
        let sst = self
            .db
            .property_int_value_cf(h, "rocksdb.live-sst-files-size")
            .map_err(err("property"))?;
        let blob = self
            .db
            .property_int_value_cf(h, "rocksdb.total-blob-file-size")
            .map_err(err("property"))?;
        Ok(sst.unwrap_or(0) + blob.unwrap_or(0))
    }
}

/// Whether files in `dir` can be opened with O_DIRECT, as RocksDB's flushes will open them when
/// told to. Before RocksDB creates `dir`, its parent (the state directory) is probed.
fn direct_io_supported(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(at) = [dir, dir.parent().unwrap_or(dir)]
        .into_iter()
        .find(|d| d.is_dir())
    else {
        return false;
    };
    let probe = at.join(".direct-io-probe");
    let ok = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}
