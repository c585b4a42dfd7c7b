//! `arca-fsmount`: the read-only FUSE view of an arca store.
//!
//! The mount shows `MOUNT/<model>/<version>/<file paths as pushed>` and, per model, the symlinks
//! `production` and `staging` pointing (relatively) at the version directory that holds that
//! status. Nothing in it can be written: every modifying operation answers `EROFS`.
//!
//! The daemon supplies two things: a [`ChunkSource`] (verified chunk reads and the authorization
//! decision) and a [`Snapshot`] of the catalog, which it replaces with [`MountHandle::update`]
//! whenever a version is pushed, promoted or deleted.
//!
//! Layout of the crate (as rustic's `fusefs.rs` over `vfs.rs`):
//! - `vfs`: every path, inode, attribute, listing, authorization and read decision, pure and
//!   unit-tested without FUSE; `vfs/table.rs` builds the inode table (stable inode numbers) from
//!   a [`Snapshot`].
//! - `cache`: the bounded cache of verified chunk plaintext.
//! - `prefetch`: whole-chunk read-ahead for sequential readers.
//! - `pool`: the small thread pools behind prefetch and reads.
//! - `fuse`: the thin fuser 0.18 adapter.
//!
//! **Invariant:** no byte leaves this crate before the chunk it comes from was authenticated by
//! the [`ChunkSource`] (whole-chunk reads: every segment's AEAD and the keyed id; partial reads:
//! the AEAD of every 64 KiB segment touched). A failed chunk fails the whole read with `EIO`,
//! never a short read, and is reported once through [`ChunkSource::integrity_failure`].
//!
//! **Authorization** is asked of the [`ChunkSource`] with the requester's uid at lookup, opendir,
//! readlink and open, never on read: the root lists, and lets anyone look up, only the models
//! [`ChunkSource::may_list`] allows them (a root listing is filtered at opendir, for that handle
//! alone); everything in a version needs [`ChunkSource::may_read`]. The kernel never keeps what
//! the root or a model directory answered (entry and attribute TTL 0, listings not cached), so
//! an answer given to one user is never reused for another; what it does keep (a version's
//! directories and files, for an hour) is reached only through a model directory, which every
//! path walk looks up again as its own caller, and every open is authorised again.
//!
//! Additions to the API in the brief: `Default` for [`MountOptions`], [`Snapshot`] and
//! [`ModelEntry`]; [`VersionEntry::merkle_root`] (inode numbers, issue #8);
//! [`ChunkSource::may_list`] and [`ChunkSource::list_refused`] (listings authorised per caller,
//! issue #8); `Debug`/`Clone`/
//! `PartialEq` derives on the snapshot types (the mount compares version entries to decide what
//! to invalidate in the kernel); [`MountStats`] has more counters than asked for and is
//! `#[non_exhaustive]`, as is [`MountError`]; [`MountHandle::mountpoint`].
//!
//! Kernel-facing choices: the mount is `ro,nosuid,nodev`, type `fuse.arca`, source `arca`, with
//! `default_permissions` (mode bits are enforced by the kernel on top of
//! [`ChunkSource::may_read`]) and `allow_other` on request. Files are owned by the mounting
//! process's effective uid/gid. Readahead is raised to 1 MiB through sysfs (best effort), so a
//! sequential reader's requests are 1 MiB.

mod cache;
mod fuse;
mod pool;
mod prefetch;
mod vfs;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use arca_core::{ChunkId, MerkleRoot, ModelName, ModelVersion, RelPath};

/// What the daemon provides: verified chunk reads and authorization.
pub trait ChunkSource: Send + Sync + 'static {
    /// The whole chunk's plaintext, fully verified (AEAD of every segment + keyed-id check).
    /// For a sequential reader: a source that fetches from afar may fetch much beyond it.
    fn chunk(&self, id: &ChunkId, len: u32) -> Result<Vec<u8>, ChunkError>;
    /// `size` bytes at `offset` inside the chunk, authenticating only the 64 KiB segments touched.
    fn chunk_range(
        &self,
        id: &ChunkId,
        len: u32,
        offset: u32,
        size: u32,
    ) -> Result<Vec<u8>, ChunkError>;
    /// Whether reading this chunk needs nothing but local storage (no fetch from elsewhere,
    /// such as a fleet's object store). Asked on the thread that received the kernel's read,
    /// so it must be cheap. Reads of chunks that are not local run on threads of their own,
    /// so reads of local ones never queue behind reads waiting on something remote.
    fn is_local(&self, _id: &ChunkId) -> bool {
        true
    }
    /// Whole chunks, each as [`ChunkSource::chunk`], all of them local ([`ChunkSource::is_local`]):
    /// each result goes to `done(index in chunks, result)` as soon as it is known (once each).
    /// A source whose consecutive chunks lie back to back on disk reads them with fewer, larger
    /// reads. Read-ahead hands a sequential reader's local chunks over in runs.
    fn chunk_run(
        &self,
        chunks: &[(ChunkId, u32)],
        done: &mut dyn FnMut(usize, Result<Vec<u8>, ChunkError>),
    ) {
        for (k, (id, len)) in chunks.iter().enumerate() {
            done(k, self.chunk(id, *len));
        }
    }
    /// How long a read may wait for chunks that are not local, counted from when the kernel's
    /// request arrived (its threads' queue included); `None`: no bound of the mount's own.
    fn read_bound(&self) -> Option<std::time::Duration> {
        None
    }
    /// [`ChunkSource::chunk`], failing (not waiting) once `deadline` has passed for what is
    /// not local.
    fn chunk_by(
        &self,
        id: &ChunkId,
        len: u32,
        _deadline: Option<std::time::Instant>,
    ) -> Result<Vec<u8>, ChunkError> {
        self.chunk(id, len)
    }
    /// [`ChunkSource::chunk_by`] for a sequential reader that has read `streak` bytes in a
    /// row: a source that fetches from afar fetches about that far ahead (at least a few MiB),
    /// so a reader that stops early (a header, a few tensors) costs little and one that reads
    /// the whole file costs few requests.
    fn chunk_ahead_by(
        &self,
        id: &ChunkId,
        len: u32,
        deadline: Option<std::time::Instant>,
        _streak: u64,
    ) -> Result<Vec<u8>, ChunkError> {
        self.chunk_by(id, len, deadline)
    }
    /// [`ChunkSource::chunk_by`] for a reader that is not sequential (a whole chunk inside a
    /// large random read): a source that fetches from afar should fetch little beyond it.
    fn chunk_near_by(
        &self,
        id: &ChunkId,
        len: u32,
        deadline: Option<std::time::Instant>,
    ) -> Result<Vec<u8>, ChunkError> {
        self.chunk_by(id, len, deadline)
    }
    /// [`ChunkSource::chunk_range`] with a deadline, as [`ChunkSource::chunk_by`].
    fn chunk_range_by(
        &self,
        id: &ChunkId,
        len: u32,
        offset: u32,
        size: u32,
        _deadline: Option<std::time::Instant>,
    ) -> Result<Vec<u8>, ChunkError> {
        self.chunk_range(id, len, offset, size)
    }
    /// May this caller read this version? Checked at lookup, opendir and open (never rely on the
    /// uid of a read: the kernel issues readahead and page faults on behalf of nobody in particular).
    /// Must imply `may_list` for the same model: a version's lookups ask only this.
    fn may_read(&self, uid: u32, gid: u32, model: &ModelName, version: &ModelVersion) -> bool;
    /// May this caller see the model at all: find it in the root's listing, look it up, list its
    /// directory and read its `production`/`staging` links? Asked with the requester's uid at
    /// lookup, opendir, readlink and for each model of a root listing, for names that exist or
    /// not (the answer must not depend on whether the model exists). Records nothing: a listing
    /// asks it about every model. Reading a version still needs [`ChunkSource::may_read`].
    fn may_list(&self, uid: u32, gid: u32, model: &ModelName) -> bool;
    /// Told when `may_list` refused a lookup, opendir or readlink of a model that exists (for the
    /// audit trail); never about the models a listing left out.
    fn list_refused(&self, _uid: u32, _model: &ModelName) {}
    /// Told about every failed chunk fetch once it has been turned into EIO (for logs, audit,
    /// counters). `error` is the [`ChunkError`]'s text, so "missing", "integrity" and "I/O" stay
    /// distinguishable. Failures during background prefetch are not reported: the read that needs
    /// the chunk fetches it again and reports then.
    fn integrity_failure(
        &self,
        model: &ModelName,
        version: &ModelVersion,
        path: &RelPath,
        chunk: &ChunkId,
        error: &str,
    );
    /// Told about every successful open, after `may_read` allowed it (for the access audit).
    /// Called on the request thread: keep it cheap.
    fn opened(
        &self,
        _uid: u32,
        _pid: u32,
        _model: &ModelName,
        _version: &ModelVersion,
        _path: &RelPath,
    ) {
    }
    /// Told when a file handle is released (once per open that `opened` was told of): the
    /// chunks it held may go now. Called on the request thread: keep it cheap.
    fn closed(&self) {}
}

/// Why a chunk could not be served. Every variant becomes `EIO` for the reader.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk is missing from the store")]
    Missing,
    #[error("chunk failed verification: {0}")]
    Integrity(String),
    #[error("I/O error reading chunk: {0}")]
    Io(String),
    /// The chunk is not held here and where it is kept (a fleet's object store) did not deliver
    /// it in time: an outage, not damage. The read fails with `EIO` all the same, but it is not
    /// reported through [`ChunkSource::integrity_failure`] nor counted as an integrity failure.
    #[error("chunk unavailable: {0}")]
    Unavailable(String),
}

/// The catalog as the mount shows it. Published atomically by [`MountHandle::update`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub models: BTreeMap<ModelName, ModelEntry>,
}

/// One model: its versions and which of them hold the `production` and `staging` statuses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelEntry {
    pub versions: BTreeMap<ModelVersion, Arc<VersionEntry>>,
    /// Shown as the symlink `production`; omitted when `None` or naming an absent version.
    pub production: Option<ModelVersion>,
    /// Shown as the symlink `staging`; omitted when `None` or naming an absent version.
    pub staging: Option<ModelVersion>,
}

/// One committed (immutable) version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionEntry {
    /// Unix seconds; shown as mtime/ctime/atime of everything in the version.
    pub created_at: u64,
    /// The version's signed Merkle root: part of the inode numbers of everything in it, so a
    /// version pushed again with other content never gets the inodes (and the kernel's cached
    /// pages) of the old one.
    pub merkle_root: MerkleRoot,
    pub files: Vec<MountFile>,
}

/// One file of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountFile {
    pub path: RelPath,
    pub size: u64,
    /// Permission bits as pushed; the mount clears every write bit.
    pub mode: u32,
    /// (id, plaintext length), in file order. The lengths must add up to `size`; a file whose
    /// lengths do not is listed but every read of it fails with `EIO` (and is reported).
    pub chunks: Vec<(ChunkId, u32)>,
}

/// How to run the mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Size of the cache of verified chunk plaintext, in bytes; 0 disables it (and prefetch).
    pub cache_bytes: u64,
    /// How many whole chunks to read ahead of a sequential reader; 0 disables prefetch.
    pub prefetch_chunks: usize,
    /// Threads answering kernel requests (at least 2); twice as many decrypt reads, so that a
    /// slow chunk read never holds up lookups, listings or other readers.
    pub threads: usize,
    /// Let users other than the mounting one in (`allow_other`); authorization is still
    /// [`ChunkSource::may_read`] per version.
    pub allow_other: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 256 << 20,
            prefetch_chunks: 8,
            threads: 4,
            allow_other: false,
        }
    }
}

/// Counters since the mount started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MountStats {
    /// Bytes returned to readers.
    pub bytes_served: u64,
    /// Read requests answered (successfully or not).
    pub reads: u64,
    /// Read requests that failed with `EIO`.
    pub read_errors: u64,
    /// Pieces of reads served from the plaintext cache.
    pub cache_hits: u64,
    /// Pieces of reads that had to go to the [`ChunkSource`].
    pub cache_misses: u64,
    /// Bytes of plaintext currently cached.
    pub cache_bytes: u64,
    /// Chunk fetches that failed and were reported through [`ChunkSource::integrity_failure`].
    pub integrity_failures: u64,
    /// Whole chunks queued for read-ahead.
    pub prefetch_queued: u64,
    /// Read-ahead requests dropped because the prefetch queue was full.
    pub prefetch_dropped: u64,
}

/// Why mounting, unmounting or clearing a mount failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    #[error("cannot mount arca at {}: {source}", mountpoint.display())]
    Mount {
        mountpoint: PathBuf,
        source: io::Error,
    },
    #[error("cannot start the mount's threads: {0}")]
    Spawn(io::Error),
    #[error("cannot unmount {}: {source}", mountpoint.display())]
    Unmount {
        mountpoint: PathBuf,
        source: io::Error,
    },
    #[error("the FUSE session at {} ended with an error: {source}", mountpoint.display())]
    Session {
        mountpoint: PathBuf,
        source: io::Error,
    },
    #[error("the FUSE session thread for {} panicked", mountpoint.display())]
    Panicked { mountpoint: PathBuf },
    #[error("cannot clear the stale mount at {}: {source}", mountpoint.display())]
    Stale {
        mountpoint: PathBuf,
        source: io::Error,
    },
}

/// See [`MountHandle::plaintext_sink`].
pub type PlaintextSink = Arc<dyn Fn(&ChunkId, Arc<Vec<u8>>) + Send + Sync>;

/// A live mount. Dropping it unmounts (errors are logged); [`MountHandle::unmount`] reports them.
pub struct MountHandle {
    mountpoint: PathBuf,
    vfs: Arc<vfs::Vfs>,
    notifier: fuser::Notifier,
    unmounter: Option<fuser::SessionUnmounter>,
    session: Option<JoinHandle<io::Result<()>>>,
}

/// Mount `initial` read-only at `mountpoint` (an existing directory) and serve it on background
/// threads until the handle is dropped or [`MountHandle::unmount`] is called. A dead mount left
/// there by a crashed daemon makes this fail; clear it first with [`clear_stale_mount`].
pub fn mount(
    mountpoint: &Path,
    source: Arc<dyn ChunkSource>,
    initial: Snapshot,
    opts: MountOptions,
) -> Result<MountHandle, MountError> {
    let mount_err = |source| MountError::Mount {
        mountpoint: mountpoint.to_owned(),
        source,
    };
    // Canonical now, so the forced unmount on shutdown names the same place fuser mounted.
    let canonical = mountpoint.canonicalize().map_err(mount_err)?;
    let vfs = Arc::new(vfs::Vfs::new(source, initial, &opts).map_err(MountError::Spawn)?);
    let threads = opts.threads.max(2);
    let fs = fuse::ArcaFs::new(Arc::clone(&vfs), 2 * threads).map_err(MountError::Spawn)?;
    let mut session =
        fuser::Session::new(fs, &canonical, &fuse::config(&opts)).map_err(mount_err)?;
    let notifier = session.notifier();
    let unmounter = session.unmount_callable();
    let thread = std::thread::Builder::new()
        .name("arca-fuse".into())
        .spawn(move || session.run());
    let session = match thread {
        Ok(thread) => thread,
        // The session was moved into the closure and dropped with it, which unmounted it.
        Err(e) => return Err(MountError::Spawn(e)),
    };
    raise_readahead(&canonical);
    tracing::info!(mountpoint = %canonical.display(), threads, "arca mount is up");
    Ok(MountHandle {
        mountpoint: canonical,
        vfs,
        notifier,
        unmounter: Some(unmounter),
        session: Some(session),
    })
}

impl MountHandle {
    /// Atomically publish a new catalog, then tell the kernel to forget what changed: removed
    /// models and versions, changed `production`/`staging` links, and the cached pages of any
    /// inode whose content may differ. New lookups see `snap` as soon as this returns.
    pub fn update(&self, snap: Snapshot) {
        for inval in self.vfs.update(snap) {
            // ENOENT (the kernel never cached it) is already swallowed by fuser; anything else
            // means the session is going away, and then there is no cache left to be stale.
            let res = match &inval {
                vfs::Invalidation::Entry { parent, name } => self
                    .notifier
                    .inval_entry(fuser::INodeNo(*parent), std::ffi::OsStr::new(name)),
                // Offset 0, length 0: the attributes and every cached page.
                vfs::Invalidation::Inode(ino) => {
                    self.notifier.inval_inode(fuser::INodeNo(*ino), 0, 0)
                }
            };
            if let Err(e) = res {
                tracing::debug!(?inval, error = %e, "kernel cache invalidation failed");
            }
        }
    }

    /// The chunks of every file a reader holds open right now. A file opened after this returns
    /// belongs to a version in the snapshot published at that time.
    pub fn open_chunks(&self) -> std::collections::HashSet<ChunkId> {
        self.vfs.open_chunks()
    }

    /// A function that puts a chunk's verified plaintext into the mount's cache (unless it is
    /// there or being loaded), for a source that verifies more chunks than it was asked for: a
    /// fleet host fetches a run of consecutive chunks in one request, and without this each
    /// one was read back from the store and decrypted again when the reader got to it. The
    /// caller must give only plaintext it authenticated, under its chunk's id. Holds the cache
    /// weakly (not the mount, whose last drop on a fetch thread would join the prefetch workers
    /// waiting on that very fetch): after an unmount it does nothing.
    pub fn plaintext_sink(&self) -> PlaintextSink {
        let cache = Arc::downgrade(self.vfs.cache());
        Arc::new(move |id: &ChunkId, plain: Arc<Vec<u8>>| {
            if let Some(cache) = cache.upgrade() {
                cache.offer(id, plain);
            }
        })
    }

    /// Counters since the mount started.
    pub fn stats(&self) -> MountStats {
        self.vfs.stats()
    }

    /// Where the filesystem is mounted (canonicalized).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmount and wait for the session threads. If the mount is busy (a process has a file or
    /// its working directory in it), the FUSE connection is aborted and the mount detached, so
    /// shutdown is never blocked by a process holding a file; such processes then get
    /// `ENOTCONN`. Chunk reads already running in the [`ChunkSource`] are waited for.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), MountError> {
        let Some(mut unmounter) = self.unmounter.take() else {
            return Ok(());
        };
        let unmount_err = |source| MountError::Unmount {
            mountpoint: self.mountpoint.clone(),
            source,
        };
        match unmounter.unmount() {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                tracing::warn!(mountpoint = %self.mountpoint.display(), "mount is busy; aborting the connection and detaching it");
                force_detach(&self.mountpoint).map_err(unmount_err)?;
            }
            Err(e) => return Err(unmount_err(e)),
        }
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        match session.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(MountError::Session {
                mountpoint: self.mountpoint.clone(),
                source,
            }),
            Err(_) => Err(MountError::Panicked {
                mountpoint: self.mountpoint.clone(),
            }),
        }
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "unmounting arca failed");
        }
    }
}

impl std::fmt::Debug for MountHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountHandle")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

/// Readahead (and so the size of the kernel's read requests for a sequential reader) we ask for:
/// as large as the biggest request the kernel sends by default (256 pages).
const READAHEAD_KIB: u32 = 1024;

/// A FUSE mount starts with the kernel's default readahead (128 KiB), which the filesystem can
/// only lower during INIT (`KernelConfig::set_max_readahead`); raising it is a sysfs knob of the
/// mount's backing device. Best effort: it needs root, and the mount works without it.
fn raise_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let dev = match std::fs::metadata(mountpoint) {
        Ok(meta) => meta.dev(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot stat the new mount to raise its readahead");
            return;
        }
    };
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    if let Err(e) = std::fs::write(&knob, READAHEAD_KIB.to_string()) {
        tracing::debug!(%knob, error = %e, "cannot raise the mount's readahead");
    }
}

/// `umount -f` on FUSE aborts the connection (every pending and future request fails), which
/// ends our session threads; the lazy detach then removes the mount from the namespace even
/// though processes still hold files in it.
fn force_detach(mountpoint: &Path) -> io::Result<()> {
    use nix::mount::{umount2, MntFlags};
    match umount2(mountpoint, MntFlags::MNT_FORCE) {
        // Still busy (expected: the abort does not close anyone's files) or already gone.
        Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
        Err(e) => return Err(e.into()),
    }
    match umount2(mountpoint, MntFlags::MNT_DETACH) {
        // EINVAL: the forced unmount above already removed it.
        Ok(()) | Err(nix::errno::Errno::EINVAL) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// If `mountpoint` is a dead FUSE mount ("transport endpoint is not connected", left behind by a
/// daemon that was killed), lazily unmount it so a restart is not blocked. Returns whether it did.
pub fn clear_stale_mount(mountpoint: &Path) -> Result<bool, MountError> {
    let stale_err = |source| MountError::Stale {
        mountpoint: mountpoint.to_owned(),
        source,
    };
    match std::fs::metadata(mountpoint) {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            match nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) => {}
                // Not root: the setuid helper may unmount FUSE mounts its caller owns.
                Err(nix::errno::Errno::EPERM) => {
                    fusermount_lazy_unmount(mountpoint).map_err(stale_err)?
                }
                Err(e) => return Err(stale_err(e.into())),
            }
            tracing::warn!(mountpoint = %mountpoint.display(), "cleared a stale FUSE mount");
            Ok(true)
        }
        Err(e) => Err(stale_err(e)),
    }
}

fn fusermount_lazy_unmount(mountpoint: &Path) -> io::Result<()> {
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        "neither fusermount3 nor fusermount was found",
    );
    for helper in ["fusermount3", "fusermount"] {
        match std::process::Command::new(helper)
            .arg("-u")
            .arg("-z")
            .arg(mountpoint)
            .output()
        {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                last = io::Error::other(format!(
                    "{helper} -uz failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_can_be_shared_with_the_daemons_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<MountHandle>();
        shared::<Snapshot>();
        shared::<MountError>();
    }

    #[test]
    fn clearing_a_healthy_or_absent_path_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!clear_stale_mount(dir.path()).unwrap());
        assert!(!clear_stale_mount(&dir.path().join("absent")).unwrap());
    }
}
