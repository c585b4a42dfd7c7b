//! Chunks a push writes: sealed straight into a buffer and appended, in the order they come, to
//! the store's open local pack file (`store/packs.rs`), which the `cache` index then points
//! into (docs/format.md, "Local pack files").
//!
//! Why not RocksDB, as before format 3: a chunk written there was copied into a memtable,
//! faulted into fresh arena pages and written again at flush, and BlobDB laid each flush's
//! chunks out in key order, which is random: a file's consecutive chunks were scattered, so a
//! reader could not fetch a run of them with one read (bench/README.md, "Read, third session").
//! Here a push's chunks lie back to back in push order, written with one `pwrite` per MiB.
//!
//! **Durability and the index.** A chunk written here is *pending*: it has no `cache` row, so
//! nothing but this module knows of it. `checkpoint` (a push's `flush_chunks`, before its version
//! commits; a pack filling up; a rotation saving its progress) writes what is buffered, syncs
//! the file (and the directory, for a new file), and only then writes the rows, as GC candidates
//! too. So a row never names bytes a crash could lose, and `has_chunk` can trust a row: a later
//! push that skips a chunk because it is here never references bytes that are not. A crash loses
//! only pending chunks, which no version references; their bytes are punched out (or their file
//! removed) at the next open, since no row covers them.
//!
//! Pending chunks are also known by id, so two pushes of the same content at once write it once.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use arca_core::id::PackId;
use arca_core::ChunkId;

use super::cache::{cache_row_value, Here};
use super::kv::Cf;
use super::StoreError;
use crate::fleet::pack::ChunkLoc;

/// A pack file is closed (its chunks indexed, a new file started) past this many bytes: large
/// enough that a file's chunks are one run for its readers, small enough that the tidy at open
/// and a rotation's rewrite deal in bounded pieces.
pub(super) const PACK_TARGET: u64 = 64 << 20;
/// Bytes buffered before one `pwrite`.
const WRITE_AT: usize = 1 << 20;
/// Writes start at, and span, multiples of this (and come from a buffer aligned to it), so the
/// file can be written with `O_DIRECT` (`LocalPacks::append_at`): measured on pushes, copying
/// written bytes into the page cache was a quarter of arcad's CPU (bench/README.md, "Ingest").
pub(super) const ALIGN: usize = 4096;
/// The buffer: a full write's worth plus the largest envelope.
const BUF: usize = WRITE_AT + (256 << 10);

/// A chunk written but not yet indexed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    pub loc: ChunkLoc,
    /// A chunk re-sealed by a key rotation: its row is replaced (and the old bytes punched out)
    /// rather than left alone.
    pub replaces: Option<ChunkLoc>,
}

/// The open local pack file and what is pending in it.
#[derive(Default)]
pub(super) struct Appender {
    open: Option<Open>,
}

struct Open {
    pack: PackId,
    /// File offset of the buffer's first byte (a multiple of `ALIGN`).
    base: u64,
    /// `ALIGN` bytes more than `BUF`: the buffer is `buf[start..start + BUF]`, `start` chosen so
    /// that it is aligned.
    buf: Vec<u8>,
    start: usize,
    /// Bytes in the buffer.
    len: usize,
    /// Chunks written since the last checkpoint, in order.
    pending: Vec<(ChunkId, Pending)>,
    /// Index into `pending` by id.
    by_id: HashMap<ChunkId, usize>,
    /// Whether the file was created since the last checkpoint (its directory entry is synced).
    new_file: bool,
}

impl Open {
    /// Writes the buffer's whole blocks, keeping the bytes of its last, part-filled one, which
    /// the next write writes again with what follows them (nothing in them is indexed yet).
    /// `all` (a checkpoint): the part-filled block too, padded with zeros, and the next chunk
    /// starts on a fresh block: a block holding indexed chunks is never written again (a
    /// reader's page-cache copy could go stale under an `O_DIRECT` rewrite, and a torn rewrite
    /// could damage what a committed version references), for under 4 KiB per checkpoint.
    fn write<E>(
        &mut self,
        all: bool,
        write: &mut impl FnMut(&PackId, u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let whole = self.len & !(ALIGN - 1);
        let n = if all {
            self.len.next_multiple_of(ALIGN)
        } else {
            whole
        };
        if n == 0 {
            return Ok(());
        }
        if n > self.len {
            // The padding: never what a failed seal left there.
            self.buf[self.start + self.len..self.start + n].fill(0);
        }
        write(&self.pack, self.base, &self.buf[self.start..self.start + n])?;
        if all {
            self.base += n as u64;
            self.len = 0;
            return Ok(());
        }
        self.buf
            .copy_within(self.start + whole..self.start + self.len, self.start);
        self.base += whole as u64;
        self.len -= whole;
        Ok(())
    }
}

impl Appender {
    /// Whether `id` is pending (written by a push not yet checkpointed).
    pub fn is_pending(&self, id: &ChunkId) -> bool {
        self.open.as_ref().is_some_and(|o| o.by_id.contains_key(id))
    }

    /// Appends one chunk's envelope of `sealed_len` bytes, which `seal` writes into the slice
    /// it is given (on error that slice is never written out). `write(pack, offset, bytes)`
    /// writes aligned bytes to the file (see `ALIGN`). Returns the chunk's place; `None` if it
    /// was already pending.
    pub fn append<E>(
        &mut self,
        id: &ChunkId,
        replaces: Option<ChunkLoc>,
        sealed_len: usize,
        seal: impl FnOnce(&mut [u8]) -> Result<(), E>,
        mut write: impl FnMut(&PackId, u64, &[u8]) -> Result<(), E>,
        new_pack: impl FnOnce() -> Result<PackId, E>,
    ) -> Result<Option<ChunkLoc>, E> {
        if replaces.is_none() && self.is_pending(id) {
            return Ok(None);
        }
        assert!(
            sealed_len <= BUF - WRITE_AT,
            "an envelope larger than any chunk seals to"
        );
        let open = match &mut self.open {
            Some(o) => o,
            None => {
                let buf = vec![0u8; BUF + ALIGN];
                let start = buf.as_ptr().align_offset(ALIGN);
                self.open.insert(Open {
                    pack: new_pack()?,
                    base: 0,
                    buf,
                    start,
                    len: 0,
                    pending: Vec::new(),
                    by_id: HashMap::new(),
                    new_file: true,
                })
            }
        };
        if open.len >= WRITE_AT {
            // The last write failed (a full disk): retried before the buffer grows further.
            // Until it succeeds every append fails, and nothing pending is lost: a push that
            // still holds chunks here writes them out at its checkpoint once there is room.
            open.write(false, &mut write)?;
        }
        let at = open.start + open.len;
        seal(&mut open.buf[at..at + sealed_len])?;
        let loc = ChunkLoc {
            pack: open.pack,
            offset: open.base + open.len as u64,
            len: sealed_len as u32,
        };
        open.len += sealed_len;
        match open.by_id.get(id) {
            // A rotation re-sealing a chunk still pending (a push's duplicate of one here):
            // the newer copy wins, and stays a replacement if either was.
            Some(&i) => {
                let p = &mut open.pending[i].1;
                p.loc = loc;
                p.replaces = p.replaces.or(replaces);
            }
            None => {
                open.by_id.insert(*id, open.pending.len());
                open.pending.push((*id, Pending { loc, replaces }));
            }
        }
        if open.len >= WRITE_AT {
            open.write(false, &mut write)?;
        }
        Ok(Some(loc))
    }

    /// Whether the open file has reached its target size (the caller checkpoints and closes it).
    pub fn full(&self) -> bool {
        self.open
            .as_ref()
            .is_some_and(|o| o.base + o.len as u64 >= PACK_TARGET)
    }

    /// Writes what is buffered and makes the file durable (`sync(pack, new_file)`), then gives
    /// the pending chunks to `index`; only once that succeeds are they no longer pending.
    /// `close`: the next chunk starts a new file. On an error the pending chunks stay pending
    /// and a later checkpoint retries (`index` must take a chunk it indexed already in its
    /// stride).
    pub fn checkpoint<E>(
        &mut self,
        close: bool,
        mut write: impl FnMut(&PackId, u64, &[u8]) -> Result<(), E>,
        sync: impl FnOnce(&PackId, bool) -> Result<(), E>,
        index: impl FnOnce(&[(ChunkId, Pending)]) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(open) = &mut self.open else {
            return Ok(());
        };
        if open.len > 0 {
            open.write(true, &mut write)?;
        }
        if !open.pending.is_empty() || open.new_file {
            sync(&open.pack, open.new_file)?;
            open.new_file = false;
        }
        index(&open.pending)?;
        open.by_id.clear();
        open.pending.clear();
        if close {
            self.open = None;
        }
        Ok(())
    }

    /// Forgets pending chunks (a push that failed, whose chunks no one else pinned): they are
    /// not indexed, and their bytes are punched out at the next open.
    pub fn forget(&mut self, ids: &[ChunkId]) {
        let Some(open) = &mut self.open else { return };
        let before = open.pending.len();
        let gone: std::collections::HashSet<&ChunkId> =
            ids.iter().filter(|i| open.by_id.contains_key(i)).collect();
        if gone.is_empty() {
            return;
        }
        open.pending.retain(|(id, _)| !gone.contains(id));
        if open.pending.len() != before {
            open.by_id = open
                .pending
                .iter()
                .enumerate()
                .map(|(i, (id, _))| (*id, i))
                .collect();
        }
    }
}

impl super::Store {
    /// Appends `plaintext`'s envelope (sealed under the current data key) to the open pack
    /// file; past its target size, the file is checkpointed and closed. `replaces`: see
    /// `Pending`. Returns its place, `None` if it was already pending.
    pub(super) fn append(
        &self,
        app: &mut Appender,
        id: &ChunkId,
        plaintext: &[u8],
        replaces: Option<ChunkLoc>,
    ) -> Result<Option<ChunkLoc>, StoreError> {
        let loc = app.append(
            id,
            replaces,
            crate::crypt::sealed_chunk_len(plaintext.len()),
            |buf| {
                self.keys
                    .seal_chunk_into(id, plaintext, buf)
                    .map_err(|source| StoreError::Crypt {
                        what: format!("sealing chunk {id}"),
                        source,
                    })
            },
            |pack, at, bytes| {
                self.packs
                    .append_at(pack, at, bytes)
                    .map_err(|e| self.packs_error(e))
            },
            || {
                let mut id = [0u8; 32];
                getrandom::fill(&mut id).map_err(|_| StoreError::Crypt {
                    what: "naming a new pack file".into(),
                    source: crate::crypt::CryptError::Random,
                })?;
                Ok(PackId(id))
            },
        )?;
        if app.full() {
            self.checkpoint(app, true)?;
        }
        Ok(loc)
    }

    /// Makes the pending chunks durable, then indexes them (`close`: and starts a new file for
    /// the next).
    pub(super) fn checkpoint(&self, app: &mut Appender, close: bool) -> Result<(), StoreError> {
        app.checkpoint(
            close,
            |pack, at, bytes| {
                self.packs
                    .append_at(pack, at, bytes)
                    .map_err(|e| self.packs_error(e))
            },
            |pack, new_file| {
                self.packs
                    .sync(pack, new_file)
                    .map_err(|e| self.packs_error(e))
            },
            |pending| self.index_appended(pending),
        )
    }

    /// Indexes durable chunks: each new one as here (and a GC candidate, until a version that
    /// references it commits); each re-sealed one in place of its old copy, whose bytes are then
    /// punched out. A copy that is not needed (the chunk got here otherwise meanwhile, or a
    /// re-sealed chunk moved) is punched out instead. One indexed already (a checkpoint retried
    /// after a failure) is left as it is.
    fn index_appended(&self, pending: &[(ChunkId, Pending)]) -> Result<(), StoreError> {
        if pending.is_empty() {
            return Ok(());
        }
        let _g = self.cache_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (mut new, mut moved, mut punch) = (Vec::new(), Vec::new(), Vec::new());
        let (mut added, mut dropped, mut chunks) = (0u64, 0u64, 0u64);
        for (id, p) in pending {
            let row = cache_row_value(&p.loc);
            match (self.cache_row(id)?, p.replaces) {
                (Some(Here::Pack(now)), _) if now == p.loc => {}
                (Some(Here::Pack(now)), Some(old)) if now == old => {
                    moved.push((id.as_bytes().to_vec(), row));
                    punch.push(old);
                }
                // A row a crash left behind in a store from before format 3 (written before its
                // chunk, which never reached the disk): this copy takes its place.
                (Some(Here::Db(stale)), _) if !self.kv.contains(Cf::Chunks, id.as_bytes())? => {
                    added += p.loc.len as u64;
                    dropped += stale as u64;
                    new.push((id.as_bytes().to_vec(), row));
                }
                // Not here (a rotation's copy of a chunk whose row was dropped meanwhile is new
                // again: a push may have counted on it while it was pending).
                (None, _) => {
                    added += p.loc.len as u64;
                    chunks += 1;
                    new.push((id.as_bytes().to_vec(), row));
                }
                _ => punch.push(p.loc),
            }
        }
        self.kv.put_index_rows(&new, true, false)?;
        // Durably before the old copies are punched (`Kv::delete_chunks` says why).
        self.kv.put_index_rows(&moved, false, true)?;
        self.cache_count.chunks.fetch_add(chunks, Ordering::Relaxed);
        self.cache_count.bytes.fetch_add(added, Ordering::Relaxed);
        self.cache_count.take(0, dropped);
        // The rows first, then the bytes: a reader of an old place finds the row moved and
        // reads again (`open_sealed_chunk`). Only space is at stake in a punch that fails.
        for l in punch {
            if let Err(e) = self.packs.punch(&l.pack, l.offset, l.len) {
                tracing::warn!(pack = %l.pack, "giving back a chunk's old copy in its pack file: {e}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<(), String>;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    /// A file as the writes leave it.
    #[derive(Default)]
    struct File(Vec<u8>, usize);

    impl File {
        fn write(&mut self, at: u64, bytes: &[u8]) -> R {
            let at = at as usize;
            assert_eq!(at % ALIGN, 0, "aligned offset");
            assert_eq!(bytes.len() % ALIGN, 0, "whole blocks");
            assert_eq!(bytes.as_ptr() as usize % ALIGN, 0, "aligned buffer");
            if self.0.len() < at + bytes.len() {
                self.0.resize(at + bytes.len(), 0);
            }
            self.0[at..at + bytes.len()].copy_from_slice(bytes);
            self.1 += 1;
            Ok(())
        }
    }

    #[test]
    fn chunks_lie_back_to_back_and_are_handed_over_only_after_the_sync() {
        let mut a = Appender::default();
        let mut file = File::default();
        let mut synced = Vec::new();
        let pack = PackId([9; 32]);
        let mut locs = Vec::new();
        for n in 0..40u8 {
            let loc = a
                .append(
                    &id(n),
                    None,
                    40_001,
                    |b| -> R {
                        b.fill(n);
                        Ok(())
                    },
                    |_, at, bytes| file.write(at, bytes),
                    || -> Result<PackId, String> { Ok(pack) },
                )
                .unwrap()
                .unwrap();
            locs.push(loc);
        }
        // Back to back, in the order written.
        for (n, l) in locs.iter().enumerate() {
            assert_eq!((l.pack, l.offset, l.len), (pack, n as u64 * 40_001, 40_001));
        }
        assert_eq!(file.1, 1, "one write per MiB");
        assert!(a.is_pending(&id(3)));
        // Again: already pending, not written twice.
        let again = a
            .append(
                &id(3),
                None,
                40_001,
                |_| -> R { panic!("sealed again") },
                |_, _, _| -> R { Ok(()) },
                || -> Result<PackId, String> { Ok(pack) },
            )
            .unwrap();
        assert_eq!(again, None);
        // A failed sync hands nothing over; nor does a failed indexing (its chunks stay
        // pending); a later checkpoint writes the same bytes and hands them all over.
        let failed = a.checkpoint(
            false,
            |_, at, bytes| file.write(at, bytes),
            |_, _| -> R { Err("disk gone".into()) },
            |_| -> R { panic!("indexed before the sync") },
        );
        assert!(failed.is_err());
        assert!(a.is_pending(&id(39)));
        let failed = a.checkpoint(
            false,
            |_, at, bytes| file.write(at, bytes),
            |_, _| -> R { Ok(()) },
            |p| -> R {
                assert_eq!(p.len(), 40);
                Err("no space for the WAL".into())
            },
        );
        assert!(failed.is_err());
        assert!(
            a.is_pending(&id(39)),
            "still pending after a failed indexing"
        );
        let mut handed = 0;
        a.checkpoint(
            false,
            |_, at, bytes| file.write(at, bytes),
            |p, new| -> R {
                synced.push((*p, new));
                Ok(())
            },
            |p| -> R {
                handed = p.len();
                Ok(())
            },
        )
        .unwrap();
        // The new file's directory entry was synced by the attempt whose indexing failed.
        assert_eq!(synced, vec![(pack, false)]);
        assert_eq!(handed, 40);
        assert!(!a.is_pending(&id(3)));
        let after_checkpoint = file.0.len();
        assert_eq!(after_checkpoint, (40 * 40_001usize).next_multiple_of(ALIGN));
        // More after a checkpoint: it starts on a fresh block, so no indexed byte is written
        // again.
        let l = a
            .append(
                &id(200),
                None,
                5000,
                |b| -> R {
                    b.fill(200);
                    Ok(())
                },
                |_, at, bytes| {
                    assert!(
                        at as usize >= after_checkpoint,
                        "an indexed block written again"
                    );
                    file.write(at, bytes)
                },
                || -> Result<PackId, String> { panic!("a new file") },
            )
            .unwrap()
            .unwrap();
        assert_eq!(l.offset as usize, after_checkpoint);
        a.checkpoint(
            true,
            |_, at, bytes| {
                assert!(
                    at as usize >= after_checkpoint,
                    "an indexed block written again"
                );
                file.write(at, bytes)
            },
            |_, _| -> R { Ok(()) },
            |_| -> R { Ok(()) },
        )
        .unwrap();
        assert_eq!(file.0.len(), after_checkpoint + ALIGN * 2);
        for (n, l) in locs.iter().enumerate() {
            let got = &file.0[l.offset as usize..l.offset as usize + l.len as usize];
            assert!(got.iter().all(|&b| b == n as u8), "chunk {n} intact");
        }
        let tail = &file.0[after_checkpoint..after_checkpoint + 5000];
        assert!(tail.iter().all(|&b| b == 200));
        assert!(
            file.0[40 * 40_001..after_checkpoint]
                .iter()
                .all(|&b| b == 0)
                && file.0[after_checkpoint + 5000..].iter().all(|&b| b == 0),
            "zero padding"
        );
    }

    #[test]
    fn a_rotation_copy_of_a_pending_duplicate_stays_a_replacement() {
        let mut a = Appender::default();
        let pack = PackId([3; 32]);
        let ok = |b: &mut [u8]| -> R {
            b.fill(1);
            Ok(())
        };
        let w = |_: &PackId, _: u64, _: &[u8]| -> R { Ok(()) };
        let newp = || -> Result<PackId, String> { Ok(pack) };
        // A push's duplicate of a chunk that is here, then a rotation's copy of it.
        a.append(&id(1), None, 100, ok, w, newp).unwrap();
        let old = ChunkLoc {
            pack: PackId([4; 32]),
            offset: 0,
            len: 100,
        };
        let l = a
            .append(&id(1), Some(old), 100, ok, w, newp)
            .unwrap()
            .unwrap();
        let mut got = Vec::new();
        a.checkpoint(
            false,
            w,
            |_, _| -> R { Ok(()) },
            |p| -> R {
                got = p.to_vec();
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].1.loc, got[0].1.replaces), (l, Some(old)));
    }

    #[test]
    fn a_full_disk_fails_appends_without_losing_what_is_pending() {
        let mut a = Appender::default();
        let mut file = File::default();
        let pack = PackId([2; 32]);
        let full = |_: &PackId, _: u64, _: &[u8]| -> R { Err("no space".into()) };
        let fill = |b: &mut [u8]| -> R {
            b.fill(3);
            Ok(())
        };
        let newp = || -> Result<PackId, String> { Ok(pack) };
        let mut ok = 0;
        let mut failed = 0;
        for n in 0..100u8 {
            match a.append(&id(n), None, 100_000, fill, full, newp) {
                Ok(_) => ok += 1,
                Err(_) => failed += 1,
            }
        }
        // The 11th fills the MiB and its write fails (but it is pending); after that each
        // append fails before sealing, so the buffer never grows past its size.
        assert_eq!((ok, failed), (10, 90));
        assert!(a
            .checkpoint(false, full, |_, _| -> R { Ok(()) }, |_| -> R { Ok(()) })
            .is_err());
        // Room again: every pending chunk is written and handed over.
        let mut handed = 0;
        a.checkpoint(
            false,
            |_, at, b| file.write(at, b),
            |_, _| -> R { Ok(()) },
            |p| -> R {
                handed = p.len();
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(handed, 11);
        assert!(file.0[..1_100_000].iter().all(|&b| b == 3));
    }

    #[test]
    fn a_failed_seal_is_never_written_and_forgotten_chunks_are_not_handed_over() {
        let mut a = Appender::default();
        let mut file = File::default();
        let pack = PackId([1; 32]);
        let ok = |b: &mut [u8]| -> R {
            b.fill(1);
            Ok(())
        };
        let newp = || -> Result<PackId, String> { Ok(pack) };
        a.append(&id(1), None, 100, ok, |_, _, _| -> R { Ok(()) }, newp)
            .unwrap();
        let bad = a.append(
            &id(2),
            None,
            50,
            |b| -> R {
                b.fill(7); // plaintext, say
                Err("no key".into())
            },
            |_, _, _| -> R { Ok(()) },
            newp,
        );
        assert!(bad.is_err());
        let l = a
            .append(&id(3), None, 20, ok, |_, _, _| -> R { Ok(()) }, newp)
            .unwrap()
            .unwrap();
        assert_eq!(l.offset, 100, "the failed envelope takes no place");
        a.forget(&[id(1), id(9)]);
        let mut ids = Vec::new();
        a.checkpoint(
            false,
            |_, at, bytes| file.write(at, bytes),
            |_, _| -> R { Ok(()) },
            |p| -> R {
                ids = p.iter().map(|(i, _)| *i).collect();
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(ids, vec![id(3)]);
        assert!(
            !file.0.contains(&7),
            "the failed seal's bytes were never written"
        );
    }
}

#[cfg(test)]
mod store_tests {
    use super::super::kv::{Batch, Cf};
    use super::super::Store;
    use super::*;
    use crate::keys::Kek;
    use arca_core::audit::{Draft, EventKind};

    fn open(dir: &std::path::Path) -> Store {
        let kek = match Kek::load(&dir.join("kek")) {
            Ok(k) => k,
            Err(_) => Kek::generate_file(&dir.join("kek")).unwrap(),
        };
        Store::open(&dir.join("state"), kek).unwrap()
    }

    /// `n` chunks of about 40 KiB, different each `seed`.
    fn chunks(s: &Store, seed: u8, n: usize) -> Vec<(ChunkId, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let plain: Vec<u8> = (0..40_000 + i)
                    .map(|j| (j as u8) ^ seed ^ (i as u8).wrapping_mul(31))
                    .collect();
                (s.keys().chunk_id(&plain), plain)
            })
            .collect()
    }

    fn read(s: &Store, id: &ChunkId) -> Option<Result<Vec<u8>, crate::crypt::CryptError>> {
        s.open_sealed_chunk(id, |sealed| s.keys().open_chunk(id, sealed))
            .unwrap()
    }

    fn loc(s: &Store, id: &ChunkId) -> ChunkLoc {
        match s.cache_row(id).unwrap() {
            Some(Here::Pack(l)) => l,
            other => panic!("not in a pack file: {other:?}"),
        }
    }

    #[test]
    fn pushed_chunks_lie_in_push_order_in_a_pack_file_and_are_here_once_flushed() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let s = open(dir.path());
        let cs = chunks(&s, 1, 40);
        for (id, p) in &cs {
            assert!(s.put_chunk(id, p).unwrap() > p.len());
        }
        assert_eq!(s.put_chunk(&cs[0].0, &cs[0].1).unwrap(), 0, "pending: once");
        assert!(!s.has_chunk(&cs[0].0).unwrap(), "not here before the flush");
        s.flush_chunks().unwrap();
        let first = loc(&s, &cs[0].0);
        let mut at = first.offset;
        for (id, p) in &cs {
            let l = loc(&s, id);
            assert_eq!((l.pack, l.offset), (first.pack, at), "back to back");
            at += l.len as u64;
            assert!(s.has_chunk(id).unwrap());
            assert_eq!(read(&s, id).unwrap().unwrap(), *p);
        }
        assert!(s.kv.scan(Cf::Chunks).next().is_none(), "none in RocksDB");
        assert_eq!(s.cache_count().chunks, 40);
        // Still here, in the same place, after a restart.
        drop(s);
        let s = open(dir.path());
        assert_eq!(loc(&s, &cs[7].0), {
            let mut l = first;
            l.offset = cs[..7]
                .iter()
                .map(|(_, p)| crate::crypt::sealed_chunk_len(p.len()) as u64)
                .sum();
            l.len = crate::crypt::sealed_chunk_len(cs[7].1.len()) as u32;
            l
        });
        assert_eq!(read(&s, &cs[39].0).unwrap().unwrap(), cs[39].1);
    }

    #[test]
    fn a_crash_before_the_flush_loses_only_unflushed_chunks_and_their_bytes_go() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let s = open(dir.path());
        let kept = chunks(&s, 2, 3);
        for (id, p) in &kept {
            s.put_chunk(id, p).unwrap();
        }
        s.flush_chunks().unwrap();
        // Over 1 MiB more, so some of it reaches the file, then "crash" (no flush).
        let lost = chunks(&s, 3, 60);
        for (id, p) in &lost {
            s.put_chunk(id, p).unwrap();
        }
        let pack = loc(&s, &kept[0].0).pack;
        let on_disk = s.packs.disk_bytes().unwrap();
        assert!(on_disk > 1 << 20, "written: {on_disk}");
        drop(s);
        let s = open(dir.path());
        for (id, p) in &kept {
            assert_eq!(read(&s, id).unwrap().unwrap(), *p);
        }
        for (id, _) in &lost {
            assert!(!s.has_chunk(id).unwrap(), "never indexed, so not here");
        }
        assert!(
            s.packs.disk_bytes().unwrap() < 256 << 10,
            "the unindexed bytes were punched out: {} bytes left",
            s.packs.disk_bytes().unwrap()
        );
        assert_eq!(s.packs.list().unwrap(), vec![pack]);
        // A push after the restart writes them again.
        for (id, p) in &lost {
            s.put_chunk(id, p).unwrap();
        }
        s.flush_chunks().unwrap();
        assert_eq!(read(&s, &lost[5].0).unwrap().unwrap(), lost[5].1);
    }

    /// Damages one byte of a file: inverts it. (Writing a fixed byte, as these tests did,
    /// changed nothing when the byte there was that one already: 1 run in 256 failed.)
    fn flip_byte(path: &std::path::Path, at: u64) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[!b[0]], at).unwrap();
    }

    #[test]
    fn a_damaged_copy_is_refused_and_dropped_and_a_push_puts_it_back() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let s = open(dir.path());
        let cs = chunks(&s, 4, 2);
        for (id, p) in &cs {
            s.put_chunk(id, p).unwrap();
        }
        s.flush_chunks().unwrap();
        let l = loc(&s, &cs[1].0);
        let path = dir.path().join("state/packs").join(hex::encode(l.pack.0));
        flip_byte(&path, l.offset + 100);
        assert!(matches!(read(&s, &cs[1].0), Some(Err(_))), "refused");
        assert!(!s.has_chunk(&cs[1].0).unwrap(), "dropped");
        assert_eq!(
            read(&s, &cs[0].0).unwrap().unwrap(),
            cs[0].1,
            "its neighbour"
        );
        s.put_chunk(&cs[1].0, &cs[1].1).unwrap();
        s.flush_chunks().unwrap();
        assert_eq!(read(&s, &cs[1].0).unwrap().unwrap(), cs[1].1);
    }

    #[test]
    fn a_key_rotation_moves_pack_file_chunks_under_the_new_key_and_frees_the_old_bytes() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let s = open(dir.path());
        let cs = chunks(&s, 5, 30);
        for (id, p) in &cs {
            s.put_chunk(id, p).unwrap();
        }
        s.flush_chunks().unwrap();
        let before: Vec<ChunkLoc> = cs.iter().map(|(id, _)| loc(&s, id)).collect();
        let mut st = s
            .begin_dek_rotation(Draft::new(EventKind::KeyChange, "root"))
            .unwrap();
        let (mut done, mut bytes) = (0, 0);
        loop {
            let (last, n, b) = s.rotate_chunks(&st, 7).unwrap();
            done += n;
            bytes += b;
            match last {
                None => break,
                Some(l) => st.resume_after = Some(l),
            }
            s.save_rotation(&st).unwrap();
        }
        s.finish_dek_rotation(&mut st).unwrap();
        assert_eq!(done, 30);
        assert_eq!(
            bytes,
            cs.iter().map(|(_, p)| p.len() as u64).sum::<u64>(),
            "each re-sealed once"
        );
        for ((id, p), old) in cs.iter().zip(&before) {
            let l = loc(&s, id);
            assert_ne!(l, *old, "moved");
            let sealed = s.read_packed(&l).unwrap().unwrap();
            assert_eq!(crate::crypt::sealed_key_id(&sealed), Some(st.target));
            assert_eq!(read(&s, id).unwrap().unwrap(), *p);
            let gone = s.read_packed(old).unwrap().unwrap();
            assert!(gone.iter().all(|&b| b == 0), "the old copy is punched out");
        }
        assert_eq!(s.cache_count().chunks, 30);
        drop(s);
        let s = open(dir.path());
        assert_eq!(read(&s, &cs[29].0).unwrap().unwrap(), cs[29].1);
    }

    #[test]
    fn a_rotation_started_during_a_push_re_seals_its_pending_chunks_too() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let s = open(dir.path());
        let cs = chunks(&s, 8, 5);
        for (id, p) in &cs {
            s.put_chunk(id, p).unwrap();
        }
        // The key switches while they are pending (sealed under the old key, not indexed).
        let mut st = s
            .begin_dek_rotation(Draft::new(EventKind::KeyChange, "root"))
            .unwrap();
        s.flush_chunks().unwrap();
        let (last, n, _) = s.rotate_chunks(&st, 100).unwrap();
        assert_eq!(n, 5, "the scan saw them");
        st.resume_after = last;
        s.save_rotation(&st).unwrap();
        s.finish_dek_rotation(&mut st).unwrap();
        for (id, p) in &cs {
            let sealed = s.read_packed(&loc(&s, id)).unwrap().unwrap();
            assert_eq!(crate::crypt::sealed_key_id(&sealed), Some(st.target));
            assert_eq!(read(&s, id).unwrap().unwrap(), *p);
        }
    }

    #[test]
    fn a_stale_row_of_a_format_2_crash_is_replaced_by_a_new_copy() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let s = open(dir.path());
        let cs = chunks(&s, 9, 1);
        let (id, p) = &cs[0];
        // Format 2 wrote the row through the WAL and the chunk without it: a crash could keep
        // the row alone.
        let mut b = Batch::default();
        b.put(Cf::Cache, id.as_bytes(), 1234u32.to_le_bytes().to_vec());
        s.kv.commit(b).unwrap();
        assert!(!s.has_chunk(id).unwrap(), "no chunk behind the row");
        s.put_chunk(id, p).unwrap();
        s.flush_chunks().unwrap();
        loc(&s, id);
        assert_eq!(read(&s, id).unwrap().unwrap(), *p);
    }

    #[test]
    fn a_run_of_back_to_back_chunks_opens_in_order_and_a_bad_one_alone_fails() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let s = open(dir.path());
        let cs = chunks(&s, 10, 12);
        for (id, p) in &cs {
            s.put_chunk(id, p).unwrap();
        }
        s.flush_chunks().unwrap();
        // One of them damaged in its pack file, and one not here at all.
        let l = loc(&s, &cs[5].0);
        let path = dir.path().join("state/packs").join(hex::encode(l.pack.0));
        flip_byte(&path, l.offset + 200);
        let mut ids: Vec<ChunkId> = cs.iter().map(|(id, _)| *id).collect();
        ids.insert(8, ChunkId([0xee; 32]));
        let mut got: Vec<Option<_>> = ids.iter().map(|_| None).collect();
        let mut order = Vec::new();
        s.open_sealed_run(
            &ids,
            |k, sealed| s.keys().open_chunk(&ids[k], sealed),
            |k, r| {
                order.push(k);
                assert!(got[k].is_none(), "once each");
                got[k] = Some(r.unwrap());
            },
        );
        let got: Vec<_> = got.into_iter().map(Option::unwrap).collect();
        assert_eq!(got.len(), 13);
        assert_eq!(
            &order[..5],
            &[0, 1, 2, 3, 4],
            "each as soon as it is opened"
        );
        for (k, r) in got.iter().enumerate() {
            match k {
                5 => assert!(matches!(r, Some(Err(_))), "the damaged one fails"),
                8 => assert!(r.is_none(), "not here"),
                _ => {
                    let i = if k > 8 { k - 1 } else { k };
                    assert_eq!(r.as_ref().unwrap().as_ref().unwrap(), &cs[i].1);
                }
            }
        }
        assert!(
            !s.has_chunk(&cs[5].0).unwrap(),
            "the damaged copy's row dropped"
        );
    }

    #[test]
    fn a_format_2_store_with_chunks_in_rocksdb_is_upgraded_and_keeps_serving_them() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let s = open(dir.path());
        let old = chunks(&s, 6, 3);
        // As format 2 held chunks: sealed in `chunks`, no index marker.
        let mut b = Batch::default();
        for (id, p) in &old {
            let sealed = s.keys().seal_chunk(id, p).unwrap();
            b.put(Cf::Chunks, id.as_bytes(), sealed);
        }
        b.delete(Cf::Meta, b"cache-indexed");
        b.put(Cf::Meta, b"format", b"arca-store-v2".to_vec());
        s.kv.commit(b).unwrap();
        drop(s);
        let s = open(dir.path());
        assert_eq!(
            s.kv.get(Cf::Meta, b"format").unwrap().as_deref(),
            Some(&b"arca-store-v3"[..])
        );
        for (id, p) in &old {
            assert!(s.has_chunk(id).unwrap(), "indexed by the upgrade");
            assert!(matches!(s.cache_row(id).unwrap(), Some(Here::Db(_))));
            assert_eq!(read(&s, id).unwrap().unwrap(), *p);
        }
        assert_eq!(s.cache_count().chunks, 3);
        let new = chunks(&s, 7, 2);
        for (id, p) in &new {
            s.put_chunk(id, p).unwrap();
        }
        s.flush_chunks().unwrap();
        assert_eq!(read(&s, &new[1].0).unwrap().unwrap(), new[1].1);
        loc(&s, &new[1].0);
        // A rotation re-seals both kinds.
        let mut st = s
            .begin_dek_rotation(Draft::new(EventKind::KeyChange, "root"))
            .unwrap();
        let (last, n, _) = s.rotate_chunks(&st, 100).unwrap();
        assert_eq!(n, 5);
        st.resume_after = last;
        s.save_rotation(&st).unwrap();
        for (id, p) in old.iter().chain(&new) {
            let key = s
                .open_sealed_chunk(id, |sealed| Ok(crate::crypt::sealed_key_id(sealed)))
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(key, Some(st.target));
            assert_eq!(read(&s, id).unwrap().unwrap(), *p);
        }
    }
}
