//! The mount's virtual filesystem: every path, inode, attribute, listing, authorization and read
//! decision, with no FUSE in sight, so all of it is unit-tested against a fake [`ChunkSource`].
//!
//! **TTLs:** everything inside a version is immutable and cached by the kernel for an hour; the
//! root, model directories and the `production`/`staging` links change and are never cached
//! (TTL 0), and [`Vfs::update`] lists what the kernel must forget.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use arca_core::{ChunkId, ModelName};

use crate::cache::{ChunkCache, Plain};
use crate::prefetch::{Prefetcher, Stream};
use crate::{ChunkError, ChunkSource, MountOptions, MountStats, Snapshot};

pub(crate) type Ino = u64;
pub(crate) const ROOT: Ino = 1;

/// Attribute and entry lifetime for what never changes (versions are immutable).
pub(crate) const IMMUTABLE_TTL: Duration = Duration::from_secs(3600);
/// For the root, model directories and alias links, which change with the catalog.
pub(crate) const DYNAMIC_TTL: Duration = Duration::ZERO;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
}

/// What `stat` shows. Times are Unix seconds; owner is the mounting process (set by the adapter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Attr {
    pub(crate) ino: Ino,
    pub(crate) kind: Kind,
    pub(crate) size: u64,
    pub(crate) perm: u16,
    pub(crate) nlink: u32,
    pub(crate) time: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) attr: Attr,
    pub(crate) ttl: Duration,
}

/// Who is asking, from the FUSE request header of a lookup, opendir or open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// The requesting process (for the audit trail only: never for decisions).
    pub(crate) pid: u32,
}

/// Why an operation was refused; the adapter turns it into an errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fail {
    NotFound,
    NotDir,
    IsDir,
    Access,
    ReadOnly,
    BadHandle,
    Invalid,
    Io,
}

impl Fail {
    pub(crate) fn errno(self) -> i32 {
        match self {
            Fail::NotFound => libc::ENOENT,
            Fail::NotDir => libc::ENOTDIR,
            Fail::IsDir => libc::EISDIR,
            Fail::Access => libc::EACCES,
            Fail::ReadOnly => libc::EROFS,
            Fail::BadHandle => libc::EBADF,
            Fail::Invalid => libc::EINVAL,
            Fail::Io => libc::EIO,
        }
    }
}

/// An answer to open or opendir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Opened {
    pub(crate) fh: u64,
    /// The content behind this handle is immutable: the kernel may keep its cached pages (or
    /// directory listing) across opens.
    pub(crate) keep_cache: bool,
}

/// What the kernel must forget after [`Vfs::update`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Invalidation {
    /// The name `name` in directory `parent` (a removed model or version, a changed alias).
    Entry { parent: Ino, name: String },
    /// Attributes and cached pages of an inode whose content may have changed.
    Inode(Ino),
}

/// The bytes of one read: a slice of a cached chunk when the read falls inside one, owned
/// bytes from a partial chunk read, or, for a read across chunks, its pieces in order. Pieces
/// are joined only where they are sent, into a buffer the sending thread keeps (`with_bytes`):
/// a fresh 1 MiB buffer per read was an allocation, page faults and a free for every request.
pub(crate) enum ReadBuf {
    Shared(Plain, Range<usize>),
    Owned(Vec<u8>),
    Pieces(Vec<ReadBuf>),
}

impl ReadBuf {
    pub(crate) fn len(&self) -> usize {
        match self {
            ReadBuf::Shared(_, range) => range.len(),
            ReadBuf::Owned(v) => v.len(),
            ReadBuf::Pieces(pieces) => pieces.iter().map(ReadBuf::len).sum(),
        }
    }

    /// Calls `f` with the read's bytes in one slice: the buffer itself, or the pieces copied into
    /// `scratch` (cleared first; its capacity is kept for the next read).
    pub(crate) fn with_bytes<R>(&self, scratch: &mut Vec<u8>, f: impl FnOnce(&[u8]) -> R) -> R {
        match self {
            ReadBuf::Shared(plain, range) => f(plain.get(range.clone()).unwrap_or_default()),
            ReadBuf::Owned(v) => f(v),
            ReadBuf::Pieces(_) => {
                scratch.clear();
                scratch.reserve(self.len());
                self.append_to(scratch);
                f(scratch)
            }
        }
    }

    fn append_to(&self, out: &mut Vec<u8>) {
        match self {
            ReadBuf::Shared(plain, range) => {
                out.extend_from_slice(plain.get(range.clone()).unwrap_or_default())
            }
            ReadBuf::Owned(v) => out.extend_from_slice(v),
            ReadBuf::Pieces(pieces) => pieces.iter().for_each(|p| p.append_to(out)),
        }
    }

    /// The bytes as a new vector (tests).
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        self.with_bytes(&mut Vec::new(), <[u8]>::to_vec)
    }
}

mod table;

use table::{FileNode, NodeKind, Registry, Scope, Table, ALIASES};

/// One open file or directory.
enum Handle {
    File(Arc<OpenFile>),
    /// A directory listing reads from the table current at opendir, so it stays consistent
    /// while the catalog changes.
    Dir(Arc<Table>, Ino, Listing),
}

/// What a directory handle lists besides `.` and `..`.
enum Listing {
    /// Every child of the node (a model directory or a directory in a version: who may list it
    /// was decided at opendir).
    All,
    /// The root, as its caller may see it: only the models `may_list` allowed at opendir.
    Only(Arc<[(String, Ino)]>),
}

struct OpenFile {
    file: Arc<FileNode>,
    stream: Stream,
}

/// A read that is not sequential and spans at least this many chunks has its whole chunks read
/// by the prefetch workers in parallel (see `Prefetcher::at_large_read`); a 64 KiB read spanning
/// three chunks is not worth the hand-offs.
const PARALLEL_PIECES: usize = 4;

/// One piece of a read: `len` bytes at `start` inside chunk `index` of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    index: usize,
    start: u32,
    len: u32,
}

/// Map `[offset, end)` of a file onto its chunks; `starts` is the file's layout (chunk start
/// offsets followed by the total), `offset < end <= total`.
fn plan(starts: &[u64], offset: u64, end: u64) -> Vec<Piece> {
    let mut pieces = Vec::new();
    // The chunk containing `offset`: the last one starting at or before it.
    let mut index = starts.partition_point(|&s| s <= offset).saturating_sub(1);
    while index + 1 < starts.len() && starts[index] < end {
        let (chunk_start, chunk_end) = (starts[index], starts[index + 1]);
        let from = offset.max(chunk_start);
        let to = end.min(chunk_end);
        // Both differences are bounded by a chunk length, which is a u32.
        pieces.push(Piece {
            index,
            start: (from - chunk_start) as u32,
            len: (to - from) as u32,
        });
        index += 1;
    }
    pieces
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    read_errors: AtomicU64,
    bytes_served: AtomicU64,
    integrity_failures: AtomicU64,
}

pub(crate) struct Vfs {
    source: Arc<dyn ChunkSource>,
    cache: Arc<ChunkCache>,
    prefetch: Prefetcher,
    table: RwLock<Arc<Table>>,
    /// Also serializes updates, so invalidations are computed against the table they replace.
    registry: Mutex<Registry>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    mounted_at: u64,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these maps half-updated in a way that matters more than
    // refusing every later request would.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Vfs {
    pub(crate) fn new(
        source: Arc<dyn ChunkSource>,
        initial: Snapshot,
        opts: &MountOptions,
    ) -> std::io::Result<Self> {
        let mounted_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut registry = Registry::default();
        let table = Table::build(&initial, &mut registry, mounted_at);
        let cache = Arc::new(ChunkCache::new(opts.cache_bytes));
        let prefetch = Prefetcher::new(
            Arc::clone(&source),
            Arc::clone(&cache),
            opts.prefetch_chunks,
        )?;
        Ok(Self {
            source,
            cache,
            prefetch,
            table: RwLock::new(Arc::new(table)),
            registry: Mutex::new(registry),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            mounted_at,
            counters: Counters::default(),
        })
    }

    fn table(&self) -> Arc<Table> {
        Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn authorize(&self, caller: Caller, scope: &Scope) -> Result<(), Fail> {
        if self
            .source
            .may_read(caller.uid, caller.gid, &scope.model, &scope.version)
        {
            Ok(())
        } else {
            Err(Fail::Access)
        }
    }

    /// May `caller` see `model` (root listing, lookup, model directory, alias link)? A refusal
    /// of a model that exists in `t` is reported once to the source, for the audit trail.
    fn authorize_model(&self, caller: Caller, t: &Table, model: &ModelName) -> Result<(), Fail> {
        if self.source.may_list(caller.uid, caller.gid, model) {
            return Ok(());
        }
        if t.models.contains_key(model) {
            self.source.list_refused(caller.uid, model);
        }
        Err(Fail::Access)
    }

    fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, handle);
        fh
    }

    /// Publish `snap` and say what the kernel must forget.
    pub(crate) fn update(&self, snap: Snapshot) -> Vec<Invalidation> {
        let mut registry = lock(&self.registry);
        let new = Arc::new(Table::build(&snap, &mut registry, self.mounted_at));
        let old = std::mem::replace(
            &mut *self.table.write().unwrap_or_else(PoisonError::into_inner),
            Arc::clone(&new),
        );
        drop(registry);
        let mut out = Vec::new();
        for (model, o) in &old.models {
            let Some(n) = new.models.get(model) else {
                out.push(Invalidation::Entry {
                    parent: ROOT,
                    name: model.as_str().to_owned(),
                });
                continue;
            };
            for (alias, (was, is)) in ALIASES.iter().zip(o.aliases.iter().zip(&n.aliases)) {
                if was != is {
                    out.push(Invalidation::Entry {
                        parent: o.ino,
                        name: (*alias).to_owned(),
                    });
                }
            }
        }
        for ((model, version), o) in &old.versions {
            let unchanged = new
                .versions
                .get(&(model.clone(), version.clone()))
                .is_some_and(|n| Arc::ptr_eq(&n.entry, &o.entry) || n.entry == o.entry);
            if unchanged {
                continue;
            }
            if let Some(m) = old.models.get(model) {
                out.push(Invalidation::Entry {
                    parent: m.ino,
                    name: version.to_string(),
                });
            }
            // Only an inode that lives on can be found again with stale pages or attributes.
            out.extend(
                o.inos
                    .iter()
                    .filter(|ino| new.nodes.contains_key(ino))
                    .map(|&ino| Invalidation::Inode(ino)),
            );
        }
        out
    }

    pub(crate) fn lookup(&self, parent: Ino, name: &[u8], caller: Caller) -> Result<Entry, Fail> {
        let t = self.table();
        let p = t.node(parent)?;
        if p.children().is_none() {
            return Err(Fail::NotDir);
        }
        // Anything under a version needs the right to read that version, whether it exists or not.
        // Anything else in a model directory needs the right to see that model (which reading
        // one of its versions implies, so a version's lookups ask only once).
        if let Some(scope) = p.scope() {
            self.authorize(caller, scope)?;
        } else if let Some(model) = p.model() {
            self.authorize_model(caller, &t, model)?;
        }
        let name = std::str::from_utf8(name).map_err(|_| Fail::NotFound)?;
        // A model, looked up in the root: refused by the caller's roles alone, whether it exists
        // or not, so a refusal tells nothing about which models exist.
        if parent == ROOT && name != "." && name != ".." {
            let model: ModelName = name.parse().map_err(|_| Fail::NotFound)?;
            self.authorize_model(caller, &t, &model)?;
        }
        let ino = match name {
            "." => parent,
            ".." => p.parent,
            _ => p.child(name).ok_or(Fail::NotFound)?,
        };
        // A version directory itself, looked up from its model directory.
        if let (NodeKind::Model { .. }, Some(scope)) = (&p.kind, t.node(ino)?.scope()) {
            self.authorize(caller, scope)?;
        }
        t.entry(ino)
    }

    /// Attributes of `ino`; through an open handle when given one, so `fstat` keeps working on a
    /// file whose version was removed after it was opened.
    pub(crate) fn getattr(&self, ino: Ino, fh: Option<u64>) -> Result<Entry, Fail> {
        if let Some(fh) = fh {
            if let Some(Handle::File(of)) = lock(&self.handles).get(&fh) {
                if of.file.ino == ino {
                    return Ok(Entry {
                        attr: of.file.attr(),
                        ttl: IMMUTABLE_TTL,
                    });
                }
            }
        }
        self.table().entry(ino)
    }

    pub(crate) fn readlink(&self, ino: Ino, caller: Caller) -> Result<Vec<u8>, Fail> {
        let t = self.table();
        match &t.node(ino)?.kind {
            NodeKind::Alias { model, target } => {
                self.authorize_model(caller, &t, model)?;
                Ok(target.as_bytes().to_vec())
            }
            _ => Err(Fail::Invalid),
        }
    }

    pub(crate) fn opendir(&self, ino: Ino, caller: Caller) -> Result<Opened, Fail> {
        let t = self.table();
        let node = t.node(ino)?;
        let children = node.children().ok_or(Fail::NotDir)?;
        let scope = node.scope();
        if let Some(scope) = scope {
            self.authorize(caller, scope)?;
        }
        if let Some(model) = node.model() {
            self.authorize_model(caller, &t, model)?;
        }
        // The root lists, for this handle, the models its caller may see. Its listing is never
        // cached by the kernel (no KEEP_CACHE below), so each opendir asks again, as its caller.
        let listing = if ino == ROOT {
            Listing::Only(
                children
                    .iter()
                    .filter(|(name, _)| {
                        name.parse::<ModelName>()
                            .is_ok_and(|m| self.source.may_list(caller.uid, caller.gid, &m))
                    })
                    .cloned()
                    .collect(),
            )
        } else {
            Listing::All
        };
        let keep_cache = scope.is_some();
        Ok(Opened {
            fh: self.add_handle(Handle::Dir(t, ino, listing)),
            keep_cache,
        })
    }

    /// List directory `fh` from entry number `offset` (`.` is 0, `..` is 1), calling `add` with
    /// each entry's inode, the offset of the entry after it, kind and name until it returns true
    /// (the reply buffer is full).
    pub(crate) fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(Ino, u64, Kind, &str) -> bool,
    ) -> Result<(), Fail> {
        let (t, ino, only) = match lock(&self.handles).get(&fh) {
            Some(Handle::Dir(t, ino, Listing::All)) => (Arc::clone(t), *ino, None),
            Some(Handle::Dir(t, ino, Listing::Only(v))) => {
                (Arc::clone(t), *ino, Some(Arc::clone(v)))
            }
            _ => return Err(Fail::BadHandle),
        };
        let node = t.node(ino)?;
        let children = match &only {
            None => node.children().ok_or(Fail::NotDir)?,
            Some(visible) => visible,
        };
        let dots = [(ino, "."), (node.parent, "..")];
        let all = dots
            .into_iter()
            .chain(children.iter().map(|(name, ino)| (*ino, name.as_str())));
        for (i, (child, name)) in all
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        {
            let kind = t
                .nodes
                .get(&child)
                .map_or(Kind::Dir, |n| n.attr(child).kind);
            if add(child, i as u64 + 1, kind, name) {
                break;
            }
        }
        Ok(())
    }

    pub(crate) fn open(&self, ino: Ino, caller: Caller, write: bool) -> Result<Opened, Fail> {
        let t = self.table();
        let file = match &t.node(ino)?.kind {
            NodeKind::File(f) => Arc::clone(f),
            NodeKind::Alias { .. } => return Err(Fail::Invalid),
            _ => return Err(Fail::IsDir),
        };
        if write {
            return Err(Fail::ReadOnly);
        }
        self.authorize(caller, &file.scope)?;
        let handle = Handle::File(Arc::new(OpenFile {
            file: Arc::clone(&file),
            stream: Stream::default(),
        }));
        let fh = self.add_handle(handle);
        // GC keeps the chunks of open handles (`open_chunks`), but `t` may predate a deletion
        // whose collection read the handles before this one was added. So: the handle first,
        // then the table again. If the version is still published, any later collection sees
        // the handle, and any earlier one ran while the version was in the catalog (deletion
        // publishes before GC may run). If it is gone, the open fails as if it came a moment
        // later, and no read can find its chunks missing and report damage that is not there.
        if !Arc::ptr_eq(&self.table(), &t) && !self.still_published(&file) {
            self.release(fh);
            return Err(Fail::NotFound);
        }
        self.source.opened(
            caller.uid,
            caller.pid,
            &file.scope.model,
            &file.scope.version,
            &file.file().path,
        );
        Ok(Opened {
            fh,
            keep_cache: true,
        })
    }

    /// Whether the current table still holds `file`'s version with the same content.
    fn still_published(&self, file: &FileNode) -> bool {
        let t = self.table();
        let key = (file.scope.model.clone(), file.scope.version.clone());
        t.versions.get(&key).is_some_and(|v| {
            Arc::ptr_eq(&v.entry, file.entry()) || v.entry.as_ref() == file.entry().as_ref()
        })
    }

    /// Forget an open file or directory.
    pub(crate) fn release(&self, fh: u64) {
        let gone = lock(&self.handles).remove(&fh);
        if matches!(gone, Some(Handle::File(_))) {
            self.source.closed();
        }
    }

    /// Up to `size` bytes at `offset` of open file `fh`: exactly `min(size, file size - offset)`
    /// bytes, or `Fail::Io` if any chunk needed cannot be fetched and verified.
    #[cfg(test)]
    pub(crate) fn read(&self, fh: u64, offset: u64, size: u32) -> Result<ReadBuf, Fail> {
        self.read_by(fh, offset, size, None)
    }

    /// `read`, waiting for chunks that are not local no later than `deadline`.
    pub(crate) fn read_by(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        deadline: Option<Instant>,
    ) -> Result<ReadBuf, Fail> {
        let of = match lock(&self.handles).get(&fh) {
            Some(Handle::File(of)) => Arc::clone(of),
            Some(Handle::Dir(..)) => return Err(Fail::IsDir),
            None => return Err(Fail::BadHandle),
        };
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let result = self.read_file(&of, offset, size, deadline);
        match &result {
            Ok(buf) => self
                .counters
                .bytes_served
                .fetch_add(buf.len() as u64, Ordering::Relaxed),
            Err(_) => self.counters.read_errors.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    /// The source's bound on a read that waits for chunks that are not local.
    pub(crate) fn read_bound(&self) -> Option<Duration> {
        self.source.read_bound()
    }

    /// Whether every chunk a read of `size` bytes at `offset` of `fh` touches is in the
    /// plaintext cache or local to the [`ChunkSource`] (so the read waits on nothing remote).
    /// Unknown handles and bad layouts answer true: the read fails at once anyway.
    pub(crate) fn read_is_local(&self, fh: u64, offset: u64, size: u32) -> bool {
        let of = match lock(&self.handles).get(&fh) {
            Some(Handle::File(of)) => Arc::clone(of),
            _ => return true,
        };
        let mf = of.file.file();
        let end = offset.saturating_add(u64::from(size)).min(mf.size);
        if offset >= end {
            return true;
        }
        let Ok(starts) = of.file.layout() else {
            return true;
        };
        plan(starts, offset, end).iter().all(|piece| {
            let id = &mf.chunks[piece.index].0;
            self.cache.contains(id) || self.source.is_local(id)
        })
    }

    fn read_file(
        &self,
        of: &OpenFile,
        offset: u64,
        size: u32,
        deadline: Option<Instant>,
    ) -> Result<ReadBuf, Fail> {
        let file = &of.file;
        let mf = file.file();
        let end = offset.saturating_add(u64::from(size)).min(mf.size);
        if offset >= end {
            return Ok(ReadBuf::Owned(Vec::new()));
        }
        let starts = match file.layout() {
            Ok(starts) => starts,
            Err(why) => {
                let chunk = mf.chunks.last().map_or(ChunkId([0; 32]), |c| c.0);
                self.report(file, &chunk, &ChunkError::Integrity(why.clone()));
                return Err(Fail::Io);
            }
        };
        let sequential = of.stream.observe(offset, end);
        let pieces = plan(starts, offset, end);
        if sequential {
            // Queued before this read's own fetches, from its first chunk on: the prefetch
            // workers then fetch this read's chunks in parallel with it (a 1 MiB request spans
            // about 32 chunks, which one thread would otherwise fetch one after another) and
            // `depth` chunks ahead of it. Queued only after the read, they started too late to
            // be found by the kernel's next request. `next` holds the byte after this read.
            let next = starts.partition_point(|&s| s <= end).saturating_sub(1);
            if let Some(first) = pieces.first() {
                self.prefetch
                    .at_sequential_read(&of.stream, &mf.chunks, first.index, next);
            }
        } else if pieces.len() >= PARALLEL_PIECES {
            // The whole chunks between the first and last piece (those two may be partial, and
            // a partial piece of a random read decrypts only its segments, on this thread).
            let inner = &pieces[1..pieces.len() - 1];
            if let (Some(a), Some(b)) = (inner.first(), inner.last()) {
                self.prefetch.at_large_read(&mf.chunks[a.index..=b.index]);
            }
        }
        let streak = sequential.then(|| of.stream.streak());
        let mut bufs = Vec::with_capacity(pieces.len());
        for piece in &pieces {
            let (id, len) = mf.chunks[piece.index];
            match self.fetch(id, len, piece, streak, deadline) {
                Ok(buf) => bufs.push(buf),
                Err(e) => {
                    self.report(file, &id, &e);
                    return Err(Fail::Io);
                }
            }
        }
        if bufs.len() == 1 {
            if let Some(buf) = bufs.pop() {
                return Ok(buf);
            }
        }
        Ok(ReadBuf::Pieces(bufs))
    }

    /// One piece of one chunk. A piece that covers the whole chunk, or belongs to a sequential
    /// reader (who will want the rest next), fetches and fully verifies the whole chunk and
    /// caches it. Any other piece of an uncached chunk is read with `chunk_range`, which
    /// decrypts only the 64 KiB segments it touches: a random 4 KiB read must not cost a whole
    /// chunk.
    fn fetch(
        &self,
        id: ChunkId,
        len: u32,
        piece: &Piece,
        streak: Option<u64>,
        deadline: Option<Instant>,
    ) -> Result<ReadBuf, ChunkError> {
        let range = piece.start as usize..(piece.start + piece.len) as usize;
        if let Some(plain) = self.cache.get(&id) {
            return check_len(plain.len(), len).map(|()| ReadBuf::Shared(plain, range));
        }
        if piece.len == len || streak.is_some() {
            let plain = self.cache.get_or_load(&id, deadline, || {
                let plain = match streak {
                    Some(s) => self.source.chunk_ahead_by(&id, len, deadline, s)?,
                    None => self.source.chunk_near_by(&id, len, deadline)?,
                };
                check_len(plain.len(), len).map(|()| plain)
            })?;
            return Ok(ReadBuf::Shared(plain, range));
        }
        let bytes = self
            .source
            .chunk_range_by(&id, len, piece.start, piece.len, deadline)?;
        check_len(bytes.len(), piece.len).map(|()| ReadBuf::Owned(bytes))
    }

    fn report(&self, file: &FileNode, chunk: &ChunkId, error: &ChunkError) {
        let (scope, path) = (&file.scope, &file.file().path);
        if let ChunkError::Unavailable(why) = error {
            // An outage of the store the chunk comes from: the read fails, but nothing is
            // damaged, so it is neither counted nor reported as an integrity failure.
            tracing::warn!(model = %scope.model, version = %scope.version, %path, %chunk, "read failed: EIO: chunk unavailable: {why}");
            return;
        }
        self.counters
            .integrity_failures
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(model = %scope.model, version = %scope.version, %path, %chunk, %error, "read failed: EIO");
        self.source.integrity_failure(
            &scope.model,
            &scope.version,
            path,
            chunk,
            &error.to_string(),
        );
    }

    /// The plaintext cache, for `MountHandle::plaintext_sink`.
    pub(crate) fn cache(&self) -> &Arc<ChunkCache> {
        &self.cache
    }

    /// Every chunk of every file that is open now (for GC: never delete what a reader holds).
    pub(crate) fn open_chunks(&self) -> std::collections::HashSet<ChunkId> {
        lock(&self.handles)
            .values()
            .filter_map(|h| match h {
                Handle::File(of) => Some(Arc::clone(of)),
                Handle::Dir(..) => None,
            })
            .flat_map(|of| {
                of.file
                    .file()
                    .chunks
                    .iter()
                    .map(|(id, _)| *id)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub(crate) fn stats(&self) -> MountStats {
        let c = &self.counters;
        MountStats {
            bytes_served: c.bytes_served.load(Ordering::Relaxed),
            reads: c.reads.load(Ordering::Relaxed),
            read_errors: c.read_errors.load(Ordering::Relaxed),
            cache_hits: self.cache.hits(),
            cache_misses: self.cache.misses(),
            cache_bytes: self.cache.weight(),
            integrity_failures: c.integrity_failures.load(Ordering::Relaxed),
            prefetch_queued: self.prefetch.queued(),
            prefetch_dropped: self.prefetch.dropped(),
        }
    }
}

/// A source that returns the wrong number of bytes is as untrustworthy as one that fails.
fn check_len(got: usize, want: u32) -> Result<(), ChunkError> {
    if got == want as usize {
        Ok(())
    } else {
        Err(ChunkError::Integrity(format!(
            "source returned {got} bytes where {want} were expected"
        )))
    }
}

#[cfg(test)]
mod tests;
