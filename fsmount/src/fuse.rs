//! The fuser 0.18 adapter: turns kernel requests into [`Vfs`] calls and [`Fail`]s into errnos.
//! No path, permission or read logic lives here. Reads run on a separate pool so that chunk
//! decryption never occupies the session threads that answer lookups and listings.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, SessionACL, TimeOrNow, WriteFlags,
};

use crate::pool::Pool;
use crate::vfs::{Attr, Caller, Fail, Kind, Opened, Vfs};
use crate::MountOptions;

/// Reads waiting for a read worker; the kernel bounds outstanding requests well below this.
const READ_QUEUE: usize = 1024;
/// Largest join buffer a read worker keeps between reads. Reads are at most the kernel's
/// max_pages (1 MiB by default); a bigger one is served and its buffer dropped.
const MAX_SCRATCH: usize = 4 << 20;

thread_local! {
    /// Where a read worker joins a read's pieces, reused from read to read.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `st_blksize`: the average chunk, so `cp` and stdio read in chunk-sized steps.
const BLKSIZE: u32 = 128 << 10;

/// Session settings: read-only, named `arca`, permission bits enforced by the kernel
/// (`default_permissions`) on top of our per-version `may_read`, no set-id or devices.
pub(crate) fn config(opts: &MountOptions) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("arca".into()),
        // Not `MountOption::Subtype`: fuser's direct mount(2) path drops it, while as a kernel
        // option it gives the type `fuse.arca` there and reaches fusermount unchanged otherwise.
        MountOption::CUSTOM("subtype=arca".into()),
        MountOption::DefaultPermissions,
        MountOption::NoSuid,
        MountOption::NoDev,
    ];
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(2));
    // Worker threads share the one /dev/fuse descriptor (the kernel hands each request to one
    // reader). FUSE_DEV_IOC_CLONE would be slightly faster, but if it failed, `run` would stop
    // after the mount was already visible, leaving a hung mount behind.
    config.clone_fd = false;
    config
}

pub(crate) struct ArcaFs {
    vfs: Arc<Vfs>,
    reads: Pool,
    /// Reads that touch a chunk that is not local (`ChunkSource::is_local`): they may wait on
    /// a remote store up to their bound, on threads of their own, so that reads of local
    /// chunks always find a free thread in `reads`.
    remote_reads: Pool,
    /// `ChunkSource::read_bound`: a read's deadline is this after its request arrived.
    read_bound: Option<std::time::Duration>,
    read_threads: usize,
    uid: u32,
    gid: u32,
}

impl ArcaFs {
    pub(crate) fn new(vfs: Arc<Vfs>, read_threads: usize) -> std::io::Result<Self> {
        let reads = Pool::new("arca-read", read_threads, READ_QUEUE)?;
        let remote_reads = Pool::new("arca-read-remote", read_threads, READ_QUEUE)?;
        let read_bound = vfs.read_bound();
        let (uid, gid) = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        Ok(Self {
            vfs,
            reads,
            remote_reads,
            read_bound,
            read_threads,
            uid,
            gid,
        })
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        let time = UNIX_EPOCH + Duration::from_secs(a.time);
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind: match a.kind {
                Kind::Dir => FileType::Directory,
                Kind::File => FileType::RegularFile,
                Kind::Symlink => FileType::Symlink,
            },
            perm: a.perm,
            nlink: a.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }
}

fn errno(f: Fail) -> Errno {
    Errno::from_i32(f.errno())
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn opened(reply: ReplyOpen, result: Result<Opened, Fail>, keep: FopenFlags) {
    match result {
        Ok(o) => reply.opened(
            FileHandle(o.fh),
            if o.keep_cache {
                keep
            } else {
                FopenFlags::empty()
            },
        ),
        Err(f) => reply.error(errno(f)),
    }
}

impl Filesystem for ArcaFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Large reads: fuser requests FUSE_MAX_PAGES with max_pages derived from
        // max(max_write, max_readahead), and its default max_write (16 MiB) is left alone for
        // that reason; the kernel caps it at its own limit (256 pages, 1 MiB, by default).
        // Readahead: as much as the kernel offers (the setter reports the maximum on refusal).
        if let Err(max) = config.set_max_readahead(u32::MAX) {
            let _ = config.set_max_readahead(max);
        }
        // Kernel readahead arrives as background requests, and past this many in flight the
        // kernel queues the rest (its own FIFO, whatever file they are for). Readahead stuck
        // on a slow remote chunk waits on the remote workers, never on the local ones, so the
        // limit only has to be high enough that such stuck requests cannot fill it and hold
        // a read of local chunks in the kernel's queue: both pools' workers, twice over.
        // (Lower is worse: at 7, a cached read waited seconds behind readahead of uncached
        // chunks on a trickling link; at 1, every reader's readahead queued behind one.)
        let background = u16::try_from(4 * self.read_threads).unwrap_or(u16::MAX);
        let _ = config.set_max_background(background);
        // Lookups and listings in one directory need not wait for each other.
        if config
            .add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS)
            .is_err()
        {
            tracing::debug!("kernel lacks FUSE_PARALLEL_DIROPS");
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.vfs.lookup(parent.0, name.as_bytes(), caller(req)) {
            Ok(e) => reply.entry(&e.ttl, &self.attr(&e.attr), fuser::Generation(0)),
            Err(f) => reply.error(errno(f)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.vfs.getattr(ino.0, fh.map(|fh| fh.0)) {
            Ok(e) => reply.attr(&e.ttl, &self.attr(&e.attr)),
            Err(f) => reply.error(errno(f)),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.vfs.readlink(ino.0, caller(req)) {
            Ok(target) => reply.data(&target),
            Err(f) => reply.error(errno(f)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        // Versions are immutable: cached pages stay valid across opens.
        opened(
            reply,
            self.vfs.open(ino.0, caller(req), write),
            FopenFlags::FOPEN_KEEP_CACHE,
        );
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // No authorization here: the uid of a read may be nobody's (readahead, page faults);
        // the handle was authorized at open.
        let deadline = self.read_bound.map(|b| std::time::Instant::now() + b);
        let local = self.vfs.read_is_local(fh.0, offset, size);
        let vfs = Arc::clone(&self.vfs);
        let job = Box::new(move || match vfs.read_by(fh.0, offset, size, deadline) {
            Ok(buf) => SCRATCH.with_borrow_mut(|scratch| {
                buf.with_bytes(scratch, |bytes| reply.data(bytes));
                if scratch.capacity() > MAX_SCRATCH {
                    *scratch = Vec::new();
                }
            }),
            Err(f) => reply.error(errno(f)),
        });
        // A read queued behind others waiting on the store still ends at its deadline: its
        // wait for what is not local fails at once once that has passed.
        let pool = if local {
            &self.reads
        } else {
            &self.remote_reads
        };
        if let Err(job) = pool.run(job) {
            // The pool is shutting down with the session; answer inline.
            job();
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.vfs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Inside a version the listing never changes, so the kernel may cache it.
        let keep = FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR;
        opened(reply, self.vfs.opendir(ino.0, caller(req)), keep);
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.vfs.readdir(fh.0, offset, |ino, next, kind, name| {
            let kind = match kind {
                Kind::Dir => FileType::Directory,
                Kind::File => FileType::RegularFile,
                Kind::Symlink => FileType::Symlink,
            };
            reply.add(INodeNo(ino), next, kind, name)
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(f) => reply.error(errno(f)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.vfs.release(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // No totals: statfs has no per-model answer, and the catalog's size and node count
        // would tell any local user, with or without a role, how much is stored and when
        // pushes land. `df` shows the mount as empty; `arca status` has the figures.
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        // Only called without default_permissions; kept so the answer is right regardless.
        if mask.contains(AccessFlags::W_OK) {
            reply.error(Errno::EROFS);
        } else {
            reply.ok();
        }
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    // Everything below would modify the filesystem. The `ro` mount flag makes the kernel refuse
    // most of it before it gets here; these answers hold even if it did not.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, _: u32, _: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, _: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(&self, _: &Request, _: INodeNo, _: &OsStr, _: &Path, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _: &Request,
        _: INodeNo,
        _: &OsStr,
        _: INodeNo,
        _: &OsStr,
        _: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(&self, _: &Request, _: INodeNo, _: INodeNo, _: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: u64,
        _: &[u8],
        _: WriteFlags,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _: &Request,
        _: INodeNo,
        _: &OsStr,
        _: u32,
        _: u32,
        _: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _: &Request,
        _: INodeNo,
        _: &OsStr,
        _: &[u8],
        _: i32,
        _: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: u64,
        _: u64,
        _: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn copy_file_range(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: u64,
        _: INodeNo,
        _: FileHandle,
        _: u64,
        _: u64,
        _: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }
}
