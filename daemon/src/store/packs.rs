//! A fleet host's local copies of the object store's packs: the only module that touches the
//! files under `<state>/packs/`.
//!
//! Why files and not RocksDB: a chunk fetched from a pack arrives as the pack's own bytes at the
//! pack's offsets. Written into RocksDB, each ~32 KiB sealed envelope was copied into a
//! memtable, faulted into fresh arena pages and written again by the flush: profiled on a
//! 1 GiB cold fleet read, a quarter of arcad's CPU (bench/README.md, "Fleet, sixth session").
//! Here a fetched extent is written as received (`FetchedExtent`), at the pack's offsets, into
//! a sparse file named by the pack id; the `cache` column family says which chunks of it are
//! here (a row is written only once the chunk authenticated and its bytes are written,
//! `Store::put_fetched_extent`), and eviction punches the chunk's range out of the file, giving
//! its blocks back at once.
//!
//! Nothing read from these files is trusted: every chunk is authenticated (AEAD and keyed id)
//! after it is read, as chunks read from RocksDB are. A file edited, truncated or swapped
//! behind arcad's back gives a chunk that fails authentication, never a wrong byte.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arca_core::id::PackId;

/// Open files kept for reuse; past this many, all are closed and reopened as needed.
const MAX_OPEN: usize = 64;

/// `O_DIRECT` writes start at, and span, multiples of this, from a buffer aligned to it.
const ALIGN: usize = 4096;
/// Bytes of a fetched extent buffered before one write (`FetchedExtent`): few requests for the
/// device, and a chunk waits for its row no longer than this takes to arrive.
const EXTENT_WRITE: usize = 256 << 10;
/// A write's worth, the largest envelope split across it, and the block before the first byte.
const EXTENT_BUF: usize = EXTENT_WRITE + (256 << 10);

/// One fetched extent of a pack on its way into this host's copy, received in order from its
/// first byte. Its bytes are buffered, so each chunk can be authenticated where it lies (no
/// copy of a chunk split between two pieces of the stream), and written in whole 4 KiB blocks
/// with `O_DIRECT` (`LocalPacks::write_extent`); only the part-blocks at either end of what is
/// written go through the page cache.
///
/// Why not through the page cache: profiled on a 3-host cold fleet read, the kernel copying
/// fetched bytes into fresh page-cache pages was a fifth of the whole machine's CPU, more than
/// the three hosts' decryption (bench/README.md, "Fleet, seventh session").
pub struct FetchedExtent {
    pack: PackId,
    /// `buf[off..off + EXTENT_BUF]` is aligned to `ALIGN`.
    buf: Vec<u8>,
    off: usize,
    /// Pack offset of the buffer's first byte (a multiple of `ALIGN`); bytes before the
    /// extent's first are not the extent's and are never written.
    base: u64,
    /// Bytes in the buffer (from `base`).
    len: usize,
    /// The extent's first byte.
    start: u64,
    /// Bytes before this offset are written (from the extent's first byte on).
    written: u64,
    /// The file opened with `O_DIRECT`, once the first whole block is written; `None` before.
    direct: Option<Arc<File>>,
}

impl FetchedExtent {
    /// An extent of `pack` starting at `start`; nothing is opened or written yet.
    pub fn new(pack: PackId, start: u64) -> Self {
        let buf = vec![0u8; EXTENT_BUF + ALIGN];
        let off = buf.as_ptr().align_offset(ALIGN);
        let base = start & !(ALIGN as u64 - 1);
        Self {
            pack,
            buf,
            off,
            base,
            len: (start - base) as usize,
            start,
            written: start,
            direct: None,
        }
    }

    /// The pack offset just past the bytes received so far.
    pub fn end(&self) -> u64 {
        self.base + self.len as u64
    }

    /// Bytes before this pack offset are in the file.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends as many of `bytes` as there is room for; returns how many.
    pub fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(EXTENT_BUF - self.len);
        let at = self.off + self.len;
        self.buf[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    /// Bytes `fill` can take now.
    pub fn room(&self) -> usize {
        EXTENT_BUF - self.len
    }

    /// Whether a write's worth is buffered (the caller writes it: `Store::put_fetched_extent`).
    pub fn is_full(&self) -> bool {
        self.len >= EXTENT_WRITE
    }

    /// The received bytes at pack offsets `from..to`, while they are still buffered.
    pub fn bytes(&self, from: u64, to: u64) -> Option<&[u8]> {
        if from < self.base.max(self.start) || to > self.end() || from > to {
            return None;
        }
        Some(self.slice(from, to))
    }

    fn slice(&self, from: u64, to: u64) -> &[u8] {
        let a = self.off + (from - self.base) as usize;
        &self.buf[a..a + (to - from) as usize]
    }
}

/// The pack files of one store.
pub struct LocalPacks {
    dir: PathBuf,
    open: Mutex<HashMap<PackId, Arc<File>>>,
    /// The file pushes append to, opened with `O_DIRECT` (`append_at`).
    direct: Mutex<Option<(PackId, Arc<File>)>>,
    /// Cleared when the file system refuses `O_DIRECT` (tmpfs): appends are then buffered.
    direct_ok: std::sync::atomic::AtomicBool,
}

impl LocalPacks {
    /// The pack files in `dir`, which is made (mode 0700) when the first one is written: a
    /// single host never has one.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            open: Mutex::new(HashMap::new()),
            direct: Mutex::new(None),
            direct_ok: std::sync::atomic::AtomicBool::new(true),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, pack: &PackId) -> PathBuf {
        self.dir.join(hex::encode(pack.0))
    }

    /// Opens `pack`'s file with `flags` besides read-write, created if `create` (and the
    /// directory with it; else `NotFound` when it is not here).
    fn open_file(&self, pack: &PackId, create: bool, flags: i32) -> std::io::Result<File> {
        // Never through a symbolic link planted in the state directory: arcad would write pack
        // bytes, or punch holes, wherever it points.
        let opener = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | flags)
                .open(self.path(pack))
        };
        let f = match opener() {
            Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new().mode(0o700).create(&self.dir)?;
                // The directory's name in the state directory, durably, before any row names
                // a file in it.
                File::open(self.dir.parent().unwrap_or(&self.dir))?.sync_all()?;
                opener()?
            }
            other => other?,
        };
        // Nor through a hard link to a file elsewhere (where `protected_hardlinks` is off, or
        // for files arcad's user owns): arcad would punch holes in it.
        let m = f.metadata()?;
        if !m.file_type().is_file() || std::os::unix::fs::MetadataExt::nlink(&m) != 1 {
            return Err(std::io::Error::other(format!(
                "{} is not a plain file with one name: refusing to use it as a pack file",
                self.path(pack).display()
            )));
        }
        Ok(f)
    }

    /// The file of `pack`, created if `create` (else `NotFound` when it is not here).
    fn file(&self, pack: &PackId, create: bool) -> std::io::Result<Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = open.get(pack) {
            return Ok(f.clone());
        }
        let f = Arc::new(self.open_file(pack, create, 0)?);
        if open.len() >= MAX_OPEN {
            open.clear();
        }
        open.insert(*pack, f.clone());
        Ok(f)
    }

    /// Writes `bytes` at `offset` of `pack`'s file (not synced: a chunk lost in a crash is
    /// fetched again; one whose bytes are damaged fails authentication and is dropped).
    pub fn write_at(&self, pack: &PackId, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.file(pack, true)?.write_all_at(bytes, offset)
    }

    /// Writes `bytes` at `offset` of `pack`'s file, created if need be, bypassing the page
    /// cache (`O_DIRECT`) where the file system allows: `offset`, the length and the buffer's
    /// address must be multiples of 4096 (`append.rs` writes so). Not durable until `sync`.
    pub fn append_at(&self, pack: &PackId, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        let file = || {
            let mut d = self.direct.lock().unwrap_or_else(|p| p.into_inner());
            match &*d {
                Some((p, f)) if p == pack => Ok(f.clone()),
                _ => self.open_file(pack, true, libc::O_DIRECT).map(|f| {
                    let f = Arc::new(f);
                    *d = Some((*pack, f.clone()));
                    f
                }),
            }
        };
        if !self.write_direct(file, offset, bytes)? {
            *self.direct.lock().unwrap_or_else(|p| p.into_inner()) = None;
            self.write_at(pack, offset, bytes)?;
        }
        Ok(())
    }

    /// Writes aligned `bytes` at `offset` through `file`, a file opened with `O_DIRECT` (by
    /// `file` itself, on first use). False: not written, because `O_DIRECT` is off here. A file
    /// system without it refuses it at the open (tmpfs before Linux 6.6, 9p) or at the first
    /// write; either way it is then off for every pack file, which are written through the page
    /// cache from then on.
    fn write_direct(
        &self,
        file: impl FnOnce() -> std::io::Result<Arc<File>>,
        offset: u64,
        bytes: &[u8],
    ) -> std::io::Result<bool> {
        use std::sync::atomic::Ordering;
        if !self.direct_ok.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match file().and_then(|f| f.write_all_at(bytes, offset)) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::info!(dir = %self.dir.display(), "pack files: no O_DIRECT on this file system; writing through the page cache");
                self.direct_ok.store(false, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the bytes of `e` before `upto` that are not written yet: whole blocks only, unless
    /// `all` (the extent ends there). Whole blocks go with `O_DIRECT` where the file system
    /// allows; a part-block at either end through the page cache (the rest of that block may
    /// hold another extent's bytes, which a block write would overwrite). Then drops from the
    /// buffer what no longer needs to be there. The caller passes an `upto` at a chunk's
    /// boundary, so what is written is only ever the extent's own chunks.
    pub fn write_extent(&self, e: &mut FetchedExtent, upto: u64, all: bool) -> std::io::Result<()> {
        let upto = upto.min(e.end());
        let target = if all {
            upto
        } else {
            upto & !(ALIGN as u64 - 1)
        };
        let mut at = e.written;
        if target > at {
            let whole_from = at.next_multiple_of(ALIGN as u64).min(target);
            if whole_from > at {
                self.write_at(&e.pack, at, e.slice(at, whole_from))?;
                at = whole_from;
            }
            let whole_to = target & !(ALIGN as u64 - 1);
            if whole_to > at {
                let (pack, direct) = (e.pack, &mut e.direct);
                let file = || match direct {
                    Some(f) => Ok(f.clone()),
                    None => self
                        .open_file(&pack, true, libc::O_DIRECT)
                        .map(Arc::new)
                        .inspect(|f| *direct = Some(f.clone())),
                };
                let a = e.off + (at - e.base) as usize;
                let bytes = &e.buf[a..a + (whole_to - at) as usize];
                if !self.write_direct(file, at, bytes)? {
                    self.write_at(&pack, at, bytes)?;
                }
                at = whole_to;
            }
            if target > at {
                self.write_at(&e.pack, at, e.slice(at, target))?;
                at = target;
            }
            e.written = at;
        }
        // Keep the block the next write starts in, and what follows: the bytes of a chunk not
        // yet whole, which is authenticated from the buffer once it is.
        let keep = (e.written & !(ALIGN as u64 - 1)).max(e.base);
        if keep > e.base {
            let drop = (keep - e.base) as usize;
            e.buf.copy_within(e.off + drop..e.off + e.len, e.off);
            e.base = keep;
            e.len -= drop;
        }
        Ok(())
    }

    /// Makes `pack`'s file durable (and, for a file `new` since the last call, its name in the
    /// directory), so rows naming its bytes can be written.
    pub fn sync(&self, pack: &PackId, new: bool) -> std::io::Result<()> {
        self.file(pack, false)?.sync_data()?;
        if new {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` of `pack`'s file. `None`: the file, or those bytes, are not
    /// there (a file removed or truncated behind arcad's back).
    pub fn read(&self, pack: &PackId, offset: u64, len: u32) -> std::io::Result<Option<Vec<u8>>> {
        let f = match self.file(pack, false) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; len as usize];
        match f.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(Some(buf)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Refuses a directory of pack files that is not a directory (a symbolic link to one
    /// elsewhere, planted in the state directory). Missing is fine: made at the first write.
    pub fn check_dir(&self) -> std::io::Result<()> {
        match std::fs::symlink_metadata(&self.dir) {
            Ok(m) if !m.file_type().is_dir() => Err(std::io::Error::other(format!(
                "{} is not a directory (a symbolic link?): refusing to write pack files through it",
                self.dir.display()
            ))),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Gives back the blocks of `offset..offset+len` in `pack`'s file (the file keeps its size;
    /// the range reads as zeros, which no chunk authenticates as).
    pub fn punch(&self, pack: &PackId, offset: u64, len: u32) -> std::io::Result<()> {
        self.punch_range(pack, offset, len as u64)
    }

    fn punch_range(&self, pack: &PackId, offset: u64, len: u64) -> std::io::Result<()> {
        use nix::fcntl::{fallocate, FallocateFlags};
        let f = match self.file(pack, false) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Ok(());
        };
        fallocate(
            f.as_ref(),
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            off,
            n,
        )
        .map_err(std::io::Error::from)
    }

    /// The pack files here, by id (files with other names are left alone).
    pub fn list(&self) -> std::io::Result<Vec<PackId>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            other => other?,
        };
        for e in entries {
            let e = e?;
            let name = e.file_name();
            let Some(raw) = name.to_str().and_then(|n| hex::decode(n).ok()) else {
                continue;
            };
            if let Ok(id) = <[u8; 32]>::try_from(raw) {
                out.push(PackId(id));
            }
        }
        Ok(out)
    }

    /// Removes `pack`'s file. Only at open, before any chunk is read or written: a reader
    /// holding the file open would otherwise read a file no row points into any more.
    pub fn remove(&self, pack: &PackId) -> std::io::Result<()> {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pack);
        self.direct
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_if(|(p, _)| p == pack);
        match std::fs::remove_file(self.path(pack)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Punches out of `pack`'s file every byte outside `live` (offset, length ranges, sorted by
    /// offset): bytes written for chunks that never got their row (a crash between the two, or
    /// a chunk that failed authentication).
    pub fn keep_only(&self, pack: &PackId, live: &[(u64, u32)]) -> std::io::Result<()> {
        let size = match std::fs::metadata(self.path(pack)) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut at = 0u64;
        let ends = live
            .iter()
            .map(|&(o, l)| (o, o.saturating_add(l as u64)))
            .chain(std::iter::once((size, size)));
        for (start, end) in ends {
            if start > at {
                self.punch_range(pack, at, start - at)?;
            }
            at = at.max(end);
        }
        Ok(())
    }

    /// Bytes the pack files take on disk (allocated blocks, holes not counted).
    pub fn disk_bytes(&self) -> std::io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let mut n = 0;
        let entries = match std::fs::read_dir(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            other => other?,
        };
        for e in entries {
            n += e?.metadata()?.blocks() * 512;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reads_and_punches_ranges_of_a_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = LocalPacks::new(&dir.path().join("packs"));
        let id = PackId([7; 32]);
        assert_eq!(p.read(&id, 0, 4).unwrap(), None, "no file yet");
        assert_eq!((p.list().unwrap(), p.disk_bytes().unwrap()), (vec![], 0));
        p.write_at(&id, 1 << 20, &[1u8; 8192]).unwrap();
        p.write_at(&id, (1 << 20) + 8192, &[2u8; 8192]).unwrap();
        assert_eq!(p.read(&id, 1 << 20, 8192).unwrap(), Some(vec![1u8; 8192]));
        assert_eq!(
            p.read(&id, (1 << 20) + 8192, 8193).unwrap(),
            None,
            "past the end"
        );
        let before = p.disk_bytes().unwrap();
        assert!(
            (16384..(1 << 20)).contains(&before),
            "sparse: {before} bytes on disk for 16 KiB written at 1 MiB"
        );
        p.punch(&id, 1 << 20, 8192).unwrap();
        assert_eq!(p.read(&id, 1 << 20, 8192).unwrap(), Some(vec![0u8; 8192]));
        assert_eq!(
            p.read(&id, (1 << 20) + 8192, 8192).unwrap(),
            Some(vec![2u8; 8192])
        );
        assert!(
            p.disk_bytes().unwrap() < before,
            "the punched blocks are given back"
        );
        assert_eq!(p.list().unwrap(), vec![id]);
        p.remove(&id).unwrap();
        assert!(p.list().unwrap().is_empty());
        assert_eq!(p.read(&id, 0, 1).unwrap(), None);
    }

    /// Streams `bytes[from..stop]` of a pack into `p` as a fetch does, in pieces of `piece`
    /// bytes, as "chunks" of 33,333 bytes: each is read whole from the buffer once received
    /// (where a fetch authenticates it), and a write's worth is written up to the last whole
    /// chunk, as a fetch writes up to the first chunk it has not taken yet.
    fn stream_extent(p: &LocalPacks, id: PackId, bytes: &[u8], from: u64, stop: u64, piece: usize) {
        const CHUNK: u64 = 33_333;
        let mut e = FetchedExtent::new(id, from);
        assert!(
            from == 0 || e.bytes(from - 1, from).is_none(),
            "no byte before the extent's first is the extent's"
        );
        // The first chunk not yet read whole.
        let mut next = from;
        for part in bytes[from as usize..stop as usize].chunks(piece) {
            let mut data = part;
            while !data.is_empty() {
                let n = e.fill(data);
                data = &data[n..];
                while next < stop && next + CHUNK.min(stop - next) <= e.end() {
                    let end = next + CHUNK.min(stop - next);
                    assert_eq!(
                        e.bytes(next, end).expect("a whole chunk is still buffered"),
                        &bytes[next as usize..end as usize]
                    );
                    next = end;
                }
                if e.is_full() {
                    p.write_extent(&mut e, next, false).unwrap();
                    assert_eq!(
                        e.written() % ALIGN as u64,
                        0,
                        "whole blocks while streaming"
                    );
                    assert!(
                        e.written() <= next,
                        "nothing past the chunks taken is written"
                    );
                    assert!(e.room() > 0);
                }
            }
        }
        p.write_extent(&mut e, stop, true).unwrap();
        assert_eq!(e.written(), stop);
    }

    #[test]
    fn fetched_extents_land_at_their_offsets_and_leave_their_neighbours_alone() {
        // On ext4 (`/var/tmp`), so whole blocks go with O_DIRECT as they do in a real state
        // directory; /tmp may be a tmpfs, which refuses it.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let p = LocalPacks::new(&dir.path().join("packs"));
        let id = PackId([9; 32]);
        let pack: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i * 7 + i / 4099) as u8)
            .collect();
        // Three extents meeting inside blocks, arriving out of order and in odd-sized pieces;
        // the middle one stops short of its end (taken over), leaving a gap.
        let (a, b, c, stop_b, end) = (1_234u64, 700_001, 1_900_123, 1_500_007, 2_999_999);
        stream_extent(&p, id, &pack, b, stop_b, 65_537);
        stream_extent(&p, id, &pack, c, end, 16_384);
        stream_extent(&p, id, &pack, a, b, 1_000_003);
        let got = |from: u64, to: u64| p.read(&id, from, (to - from) as u32).unwrap().unwrap();
        assert_eq!(got(a, stop_b), &pack[a as usize..stop_b as usize]);
        assert_eq!(got(c, end), &pack[c as usize..end as usize]);
        assert!(
            got(stop_b, c).iter().all(|&x| x == 0),
            "nothing past where an extent stopped is written"
        );
        assert!(
            got(0, a).iter().all(|&x| x == 0),
            "nothing before the first extent"
        );
        // A chunk already here in the block an extent starts in keeps its bytes.
        let id2 = PackId([10; 32]);
        p.write_at(&id2, 4_000, &pack[4_000..4_100]).unwrap();
        stream_extent(&p, id2, &pack, 4_100, 300_000, 4_096);
        assert_eq!(
            p.read(&id2, 4_000, 296_000).unwrap().unwrap(),
            &pack[4_000..300_000]
        );
        assert!(
            p.direct_ok.load(std::sync::atomic::Ordering::Relaxed),
            "written with O_DIRECT"
        );
        // Where the file system refuses O_DIRECT, the same bytes go through the page cache.
        p.direct_ok
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let id3 = PackId([11; 32]);
        stream_extent(&p, id3, &pack, 5_555, 2_000_000, 100_000);
        assert_eq!(
            p.read(&id3, 5_555, 2_000_000 - 5_555).unwrap().unwrap(),
            &pack[5_555..2_000_000]
        );
    }

    #[test]
    fn a_pack_file_that_is_a_link_to_a_file_elsewhere_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = LocalPacks::new(&dir.path().join("packs"));
        let (hard, soft) = (PackId([1; 32]), PackId([2; 32]));
        p.write_at(&PackId([3; 32]), 0, &[1]).unwrap(); // makes the directory
        let victim = dir.path().join("victim");
        std::fs::write(&victim, [7u8; 8192]).unwrap();
        std::fs::hard_link(&victim, p.path(&hard)).unwrap();
        std::os::unix::fs::symlink(&victim, p.path(&soft)).unwrap();
        for id in [hard, soft] {
            assert!(p.punch(&id, 0, 4096).is_err(), "punched through a link");
            assert!(p.write_at(&id, 0, &[0]).is_err(), "written through a link");
            // A fetched extent's whole blocks (O_DIRECT, where the file system has it).
            let mut e = FetchedExtent::new(id, 0);
            e.fill(&[0u8; 8192]);
            assert!(
                p.write_extent(&mut e, 8192, false).is_err(),
                "an extent written through a link"
            );
        }
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            vec![7u8; 8192],
            "untouched"
        );
    }
}
