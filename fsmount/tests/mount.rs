//! The mount through the real kernel: a fake chunk source mounted under a temporary directory and
//! used with `std::fs`, as a model server would. Needs root and /dev/fuse; without them these
//! tests fail (they never skip).

// clippy's allow-unwrap-in-tests covers `#[test]` functions only; the helpers here panic on
// purpose too.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use arca_core::{ChunkId, MerkleRoot, ModelName, ModelVersion, RelPath};
use arca_fsmount::{
    clear_stale_mount, mount, ChunkError, ChunkSource, ModelEntry, MountFile, MountHandle,
    MountOptions, Snapshot, VersionEntry,
};

const T1: u64 = 1_764_151_200;
const T2: u64 = 1_764_160_000;

/// Plaintext in a map; chunks can be made to fail or to block until released.
#[derive(Default)]
struct Fake {
    chunks: Mutex<HashMap<ChunkId, Vec<u8>>>,
    failing: Mutex<HashSet<ChunkId>>,
    gated: Mutex<HashSet<ChunkId>>,
    gate_open: Mutex<bool>,
    gate: Condvar,
    waiting_at_gate: AtomicUsize,
    denied: Mutex<HashSet<(u32, String)>>,
    /// (uid, model) that `may_list` refuses.
    hidden: Mutex<HashSet<(u32, String)>>,
    reports: Mutex<Vec<(String, String, String, ChunkId)>>,
}

impl Fake {
    fn plain(&self, id: &ChunkId) -> Result<Vec<u8>, ChunkError> {
        if self.gated.lock().unwrap().contains(id) {
            self.waiting_at_gate.fetch_add(1, Ordering::SeqCst);
            let mut open = self.gate_open.lock().unwrap();
            while !*open {
                open = self.gate.wait(open).unwrap();
            }
        }
        if self.failing.lock().unwrap().contains(id) {
            return Err(ChunkError::Integrity(
                "segment 1 failed authentication".into(),
            ));
        }
        self.chunks
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or(ChunkError::Missing)
    }

    fn open_gate(&self) {
        *self.gate_open.lock().unwrap() = true;
        self.gate.notify_all();
    }
}

impl ChunkSource for Fake {
    fn chunk(&self, id: &ChunkId, _len: u32) -> Result<Vec<u8>, ChunkError> {
        self.plain(id)
    }

    fn chunk_range(
        &self,
        id: &ChunkId,
        _len: u32,
        offset: u32,
        size: u32,
    ) -> Result<Vec<u8>, ChunkError> {
        let plain = self.plain(id)?;
        Ok(plain[offset as usize..(offset + size) as usize].to_vec())
    }

    fn may_read(&self, uid: u32, gid: u32, model: &ModelName, version: &ModelVersion) -> bool {
        !self
            .denied
            .lock()
            .unwrap()
            .contains(&(uid, version.to_string()))
            && self.may_list(uid, gid, model)
    }

    fn may_list(&self, uid: u32, _gid: u32, model: &ModelName) -> bool {
        !self
            .hidden
            .lock()
            .unwrap()
            .contains(&(uid, model.to_string()))
    }

    fn integrity_failure(
        &self,
        model: &ModelName,
        version: &ModelVersion,
        path: &RelPath,
        chunk: &ChunkId,
        _error: &str,
    ) {
        self.reports.lock().unwrap().push((
            model.to_string(),
            version.to_string(),
            path.to_string(),
            *chunk,
        ));
    }
}

fn content(seed: u64, n: usize) -> Vec<u8> {
    (0..n as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 7919) >> 9) as u8)
        .collect()
}

/// A file of `content(seed, sum of sizes)` cut into chunks of `sizes`, registered with `fake`.
fn file(fake: &Fake, path: &str, mode: u32, seed: u64, sizes: &[u32]) -> (MountFile, Vec<u8>) {
    let bytes = content(seed, sizes.iter().map(|&s| s as usize).sum());
    let mut chunks = Vec::new();
    let mut at = 0;
    for &s in sizes {
        let piece = bytes[at..at + s as usize].to_vec();
        let id = ChunkId(*blake3::hash(&piece).as_bytes());
        fake.chunks.lock().unwrap().insert(id, piece);
        chunks.push((id, s));
        at += s as usize;
    }
    (
        MountFile {
            path: path.parse().unwrap(),
            size: at as u64,
            mode,
            chunks,
        },
        bytes,
    )
}

fn snapshot(versions: &[(&str, &Arc<VersionEntry>)], production: Option<&str>) -> Snapshot {
    let entry = ModelEntry {
        versions: versions
            .iter()
            .map(|(v, e)| (v.parse().unwrap(), Arc::clone(e)))
            .collect(),
        production: production.map(|v| v.parse().unwrap()),
        staging: None,
    };
    Snapshot {
        models: [("resnet".parse().unwrap(), entry)].into(),
    }
}

/// resnet 1.0.0 (config.json, weights/model.bin of ~3 MiB in uneven chunks) and 1.1.0
/// (config.json), production = 1.0.0.
struct Catalog {
    fake: Arc<Fake>,
    v1: Arc<VersionEntry>,
    v2: Arc<VersionEntry>,
    config1: Vec<u8>,
    config2: Vec<u8>,
    weights: Vec<u8>,
}

fn catalog() -> Catalog {
    let fake = Arc::new(Fake::default());
    let (c1, config1) = file(&fake, "config.json", 0o644, 1, &[300]);
    let sizes = [
        131_072, 40_000, 524_288, 1, 65_536, 300_000, 524_288, 524_288, 99_999, 524_288, 400_000,
    ];
    let (w, weights) = file(&fake, "weights/model.bin", 0o755, 2, &sizes);
    let (c2, config2) = file(&fake, "config.json", 0o644, 3, &[500]);
    let v1 = Arc::new(VersionEntry {
        created_at: T1,
        merkle_root: MerkleRoot([1; 32]),
        files: vec![c1, w],
    });
    let v2 = Arc::new(VersionEntry {
        created_at: T2,
        merkle_root: MerkleRoot([2; 32]),
        files: vec![c2],
    });
    Catalog {
        fake,
        v1,
        v2,
        config1,
        config2,
        weights,
    }
}

/// A mount that is always taken down: the handle unmounts on drop, and if that failed the
/// mountpoint is detached anyway before the temporary directory goes.
struct Mounted {
    handle: Option<MountHandle>,
    dir: tempfile::TempDir,
}

impl Mounted {
    fn new(source: Arc<Fake>, snap: Snapshot, allow_other: bool) -> Mounted {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: the FUSE tests need it (modprobe fuse, or run with --device /dev/fuse)"
        );
        let dir = tempfile::tempdir().unwrap();
        // Let other users reach the mountpoint (for the per-user test).
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(dir.path().join("mnt")).unwrap();
        let opts = MountOptions {
            cache_bytes: 32 << 20,
            prefetch_chunks: 4,
            threads: 2,
            allow_other,
        };
        let handle = mount(&dir.path().join("mnt"), source, snap, opts).expect("mount");
        Mounted {
            handle: Some(handle),
            dir,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    fn handle(&self) -> &MountHandle {
        self.handle.as_ref().unwrap()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        drop(self.handle.take());
        if is_mounted(&self.root()) {
            let _ = nix::mount::umount2(&self.root(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The /proc/self/mountinfo line of the mount at `path`, if any.
fn mountinfo(path: &Path) -> Option<String> {
    let path = path.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(path.as_str()))
        .map(str::to_owned)
}

fn is_mounted(path: &Path) -> bool {
    mountinfo(path).is_some()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Run `f` on another thread and fail (rather than hang the suite) if it takes too long.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what} took more than {secs} s"))
}

#[test]
fn files_listings_links_and_attributes_through_the_kernel() {
    let c = catalog();
    let m = Mounted::new(
        Arc::clone(&c.fake),
        snapshot(&[("1.0.0", &c.v1), ("1.1.0", &c.v2)], Some("1.0.0")),
        false,
    );
    // "<id> <parent> <dev> <root> <mountpoint> <mount options> ... - <fstype> <source> <super options>"
    let info = mountinfo(&m.root()).expect("mounted");
    let (mount_part, super_part) = info.split_once(" - ").unwrap();
    let mount_opts: Vec<&str> = mount_part.split(' ').nth(5).unwrap().split(',').collect();
    for opt in ["ro", "nosuid", "nodev"] {
        assert!(mount_opts.contains(&opt), "{opt} missing: {info}");
    }
    let mut fields = super_part.split(' ');
    assert_eq!(fields.next(), Some("fuse.arca"), "type: {info}");
    assert_eq!(fields.next(), Some("arca"), "fsname: {info}");
    assert!(
        fields.next().unwrap().contains("default_permissions"),
        "{info}"
    );
    assert_eq!(names(&m.root()), ["resnet"]);
    assert_eq!(names(&m.path("resnet")), ["1.0.0", "1.1.0", "production"]);
    assert_eq!(names(&m.path("resnet/1.0.0")), ["config.json", "weights"]);
    assert_eq!(
        fs::read_link(m.path("resnet/production")).unwrap(),
        Path::new("1.0.0")
    );
    assert!(fs::symlink_metadata(m.path("resnet/staging")).is_err());

    let dir = fs::metadata(m.path("resnet/1.0.0")).unwrap();
    assert!(dir.is_dir());
    assert_eq!(
        (dir.mode() & 0o7777, dir.mtime(), dir.ctime()),
        (0o555, T1 as i64, T1 as i64)
    );
    let weights = fs::metadata(m.path("resnet/1.0.0/weights/model.bin")).unwrap();
    assert_eq!(
        (weights.len(), weights.mode() & 0o7777, weights.mtime()),
        (c.weights.len() as u64, 0o555, T1 as i64)
    );
    assert_eq!(
        fs::metadata(m.path("resnet/1.0.0/config.json"))
            .unwrap()
            .mode()
            & 0o7777,
        0o444
    );
    assert_eq!(
        weights.ino(),
        fs::metadata(m.path("resnet/production/weights/model.bin"))
            .unwrap()
            .ino()
    );

    // Whole files, through the version and through the link.
    assert_eq!(
        fs::read(m.path("resnet/1.0.0/weights/model.bin")).unwrap(),
        c.weights
    );
    assert_eq!(
        fs::read(m.path("resnet/production/config.json")).unwrap(),
        c.config1
    );
    assert_eq!(
        fs::read(m.path("resnet/1.1.0/config.json")).unwrap(),
        c.config2
    );
    // Positional reads across chunk boundaries and at the end, on a fresh open.
    let f = fs::File::open(m.path("resnet/1.0.0/weights/model.bin")).unwrap();
    for (offset, len) in [
        (131_000usize, 4096usize),
        (695_000, 70_000),
        (c.weights.len() - 10, 100),
        (0, 1),
    ] {
        let mut buf = vec![0; len];
        let n = f.read_at(&mut buf, offset as u64).unwrap();
        let end = (offset + len).min(c.weights.len());
        assert_eq!(
            &buf[..n],
            &c.weights[offset..end],
            "read_at({offset}, {len})"
        );
    }
    let stats = m.handle().stats();
    assert!(
        stats.bytes_served >= c.weights.len() as u64 && stats.reads > 0,
        "{stats:?}"
    );
    assert_eq!(stats.integrity_failures, 0);
}

#[test]
fn every_modification_is_refused_with_erofs() {
    let c = catalog();
    let m = Mounted::new(
        Arc::clone(&c.fake),
        snapshot(&[("1.0.0", &c.v1)], Some("1.0.0")),
        false,
    );
    let existing = m.path("resnet/1.0.0/config.json");
    let erofs = |what: &str, r: std::io::Result<()>| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    };
    erofs(
        "create",
        fs::File::create(m.path("resnet/1.0.0/new")).map(drop),
    );
    erofs("create at root", fs::File::create(m.path("new")).map(drop));
    erofs(
        "open for write",
        fs::OpenOptions::new().write(true).open(&existing).map(drop),
    );
    erofs(
        "open for append",
        fs::OpenOptions::new()
            .append(true)
            .open(&existing)
            .map(drop),
    );
    erofs(
        "truncate",
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&existing)
            .map(drop),
    );
    erofs("unlink", fs::remove_file(&existing));
    erofs("unlink link", fs::remove_file(m.path("resnet/production")));
    erofs("mkdir", fs::create_dir(m.path("resnet/2.0.0")));
    erofs("rmdir", fs::remove_dir(m.path("resnet/1.0.0/weights")));
    erofs(
        "rename",
        fs::rename(&existing, m.path("resnet/1.0.0/moved")),
    );
    erofs(
        "symlink",
        std::os::unix::fs::symlink("1.0.0", m.path("resnet/staging")),
    );
    erofs(
        "link",
        fs::hard_link(&existing, m.path("resnet/1.0.0/again")),
    );
    erofs(
        "chmod",
        fs::set_permissions(&existing, fs::Permissions::from_mode(0o777)),
    );
    // Nothing changed.
    assert_eq!(fs::read(&existing).unwrap(), c.config1);
    assert_eq!(names(&m.path("resnet/1.0.0")), ["config.json", "weights"]);
}

#[test]
fn update_is_visible_at_once() {
    let c = catalog();
    let m = Mounted::new(
        Arc::clone(&c.fake),
        snapshot(&[("1.0.0", &c.v1), ("1.1.0", &c.v2)], Some("1.0.0")),
        false,
    );
    // Populate the kernel's caches through the link and the version directories.
    assert_eq!(
        fs::read(m.path("resnet/production/config.json")).unwrap(),
        c.config1
    );
    assert!(fs::metadata(m.path("resnet/1.0.0/weights/model.bin")).is_ok());

    m.handle().update(snapshot(
        &[("1.0.0", &c.v1), ("1.1.0", &c.v2)],
        Some("1.1.0"),
    ));
    assert_eq!(
        fs::read_link(m.path("resnet/production")).unwrap(),
        Path::new("1.1.0")
    );
    assert_eq!(
        fs::read(m.path("resnet/production/config.json")).unwrap(),
        c.config2
    );

    // Deleting 1.0.0 (cached for an hour otherwise) and the link.
    m.handle().update(snapshot(&[("1.1.0", &c.v2)], None));
    assert_eq!(
        fs::metadata(m.path("resnet/1.0.0")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        fs::metadata(m.path("resnet/1.0.0/weights/model.bin"))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        fs::symlink_metadata(m.path("resnet/production"))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(names(&m.path("resnet")), ["1.1.0"]);

    // A new version appears.
    m.handle().update(snapshot(
        &[("1.1.0", &c.v2), ("2.0.0", &c.v1)],
        Some("2.0.0"),
    ));
    assert_eq!(
        fs::read(m.path("resnet/production/weights/model.bin")).unwrap(),
        c.weights
    );
}

#[test]
fn a_failing_chunk_is_eio_for_that_file_only() {
    let c = catalog();
    let bad = c.v1.files[1].chunks[2].0;
    c.fake.failing.lock().unwrap().insert(bad);
    let m = Mounted::new(
        Arc::clone(&c.fake),
        snapshot(&[("1.0.0", &c.v1)], None),
        false,
    );
    let err = fs::read(m.path("resnet/1.0.0/weights/model.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // Bytes before the bad chunk still read; other files are fine.
    let f = fs::File::open(m.path("resnet/1.0.0/weights/model.bin")).unwrap();
    let mut head = vec![0; 4096];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, c.weights[..4096]);
    assert_eq!(
        fs::read(m.path("resnet/1.0.0/config.json")).unwrap(),
        c.config1
    );
    let reports = c.fake.reports.lock().unwrap().clone();
    assert!(!reports.is_empty());
    for r in reports {
        assert_eq!(
            r,
            (
                "resnet".into(),
                "1.0.0".into(),
                "weights/model.bin".into(),
                bad
            )
        );
    }
    assert!(m.handle().stats().integrity_failures > 0);
}

#[test]
fn a_slow_reader_does_not_stall_listings_or_other_readers() {
    let c = catalog();
    let (slow, _) = file(&c.fake, "slow.bin", 0o644, 9, &[1000]);
    let slow_id = slow.chunks[0].0;
    c.fake.gated.lock().unwrap().insert(slow_id);
    let v3 = Arc::new(VersionEntry {
        created_at: T2,
        merkle_root: MerkleRoot([3; 32]),
        files: vec![slow],
    });
    let m = Mounted::new(
        Arc::clone(&c.fake),
        snapshot(&[("1.0.0", &c.v1), ("3.0.0", &v3)], None),
        false,
    );
    // Declared after the mount, so dropped before it: a failing assertion must not leave the
    // read stuck in the source while the mount waits for it to unmount.
    struct OpenGateOnDrop(Arc<Fake>);
    impl Drop for OpenGateOnDrop {
        fn drop(&mut self) {
            self.0.open_gate();
        }
    }
    let _gate = OpenGateOnDrop(Arc::clone(&c.fake));

    let slow_path = m.path("resnet/3.0.0/slow.bin");
    let reader = std::thread::spawn(move || fs::read(slow_path));
    while c.fake.waiting_at_gate.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // While that read is stuck in the source: listings, stats and other files still answer.
    let root = m.root();
    let expected = c.config1.clone();
    within(10, "listing and reading beside a stuck reader", move || {
        assert_eq!(names(&root.join("resnet")), ["1.0.0", "3.0.0"]);
        assert!(fs::metadata(root.join("resnet/1.0.0/weights/model.bin")).is_ok());
        assert_eq!(
            fs::read(root.join("resnet/1.0.0/config.json")).unwrap(),
            expected
        );
    });
    c.fake.open_gate();
    assert_eq!(reader.join().unwrap().unwrap().len(), 1000);
}

#[test]
fn access_is_decided_per_caller() {
    let c = catalog();
    let nobody = 65_534;
    c.fake
        .denied
        .lock()
        .unwrap()
        .insert((nobody, "1.1.0".into()));
    let m = Mounted::new(
        Arc::clone(&c.fake),
        snapshot(&[("1.0.0", &c.v1), ("1.1.0", &c.v2)], Some("1.1.0")),
        true,
    );
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(args)
            .output()
            .expect("setpriv (util-linux) is needed for this test")
    };
    let ok = as_nobody(&["cat", m.path("resnet/1.0.0/config.json").to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(ok.stdout, c.config1);
    for refused in ["resnet/1.1.0/config.json", "resnet/production/config.json"] {
        let out = as_nobody(&["cat", m.path(refused).to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{refused}: {out:?}"
        );
    }
    let out = as_nobody(&["ls", m.path("resnet/1.1.0").to_str().unwrap()]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    // Root is not refused, and nobody's refusal left nothing behind for root to trip on.
    assert_eq!(
        fs::read(m.path("resnet/1.1.0/config.json")).unwrap(),
        c.config2
    );
}

#[test]
fn listings_and_links_are_decided_per_caller_whatever_the_kernel_cached() {
    let c = catalog();
    let nobody = 65_534;
    c.fake
        .hidden
        .lock()
        .unwrap()
        .insert((nobody, "secret".into()));
    let mut snap = snapshot(&[("1.0.0", &c.v1)], Some("1.0.0"));
    let secret = ModelEntry {
        versions: [("2.0.0".parse().unwrap(), Arc::clone(&c.v2))].into(),
        production: Some("2.0.0".parse().unwrap()),
        staging: None,
    };
    snap.models.insert("secret".parse().unwrap(), secret);
    let m = Mounted::new(Arc::clone(&c.fake), snap, true);
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(args)
            .output()
            .expect("setpriv (util-linux) is needed for this test")
    };
    // Root walks everything first, so the kernel holds the dentries and attributes of the
    // version directory and file (cached for an hour) and the root listing.
    assert_eq!(names(&m.root()), ["resnet", "secret"]);
    assert_eq!(
        fs::read(m.path("secret/2.0.0/config.json")).unwrap(),
        c.config2
    );
    assert_eq!(
        fs::read_link(m.path("secret/production")).unwrap(),
        Path::new("2.0.0")
    );
    // nobody lists only what it may see, and gets nothing of the other model through the
    // kernel's caches: not its directory, its link, its version or its file's attributes.
    let ls = as_nobody(&["ls", "-a", m.root().to_str().unwrap()]);
    assert!(ls.status.success(), "{ls:?}");
    assert_eq!(String::from_utf8_lossy(&ls.stdout), ".\n..\nresnet\n");
    for (cmd, path) in [
        ("ls", "secret"),
        ("stat", "secret/2.0.0"),
        ("stat", "secret/2.0.0/config.json"),
        ("cat", "secret/2.0.0/config.json"),
        ("readlink -v", "secret/production"),
        ("cat", "secret/production/config.json"),
    ] {
        let mut args: Vec<&str> = cmd.split(' ').collect();
        let full = m.path(path);
        args.push(full.to_str().unwrap());
        let out = as_nobody(&args);
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "{cmd} {path}: {out:?}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{cmd} {path}: {out:?}"
        );
    }
    // The model nobody may read is still served to it, and root still sees both.
    let ok = as_nobody(&["cat", m.path("resnet/1.0.0/config.json").to_str().unwrap()]);
    assert_eq!(ok.stdout, c.config1, "{ok:?}");
    assert_eq!(names(&m.root()), ["resnet", "secret"]);
    assert_eq!(
        fs::read(m.path("secret/production/config.json")).unwrap(),
        c.config2
    );
}

#[test]
fn unmount_does_not_wait_for_processes_holding_files() {
    let c = catalog();
    let mut m = Mounted::new(
        Arc::clone(&c.fake),
        snapshot(&[("1.0.0", &c.v1)], None),
        false,
    );
    let mut held = fs::File::open(m.path("resnet/1.0.0/config.json")).unwrap();
    let handle = m.handle.take().unwrap();
    within(20, "unmount with a file held open", move || {
        handle.unmount()
    })
    .expect("unmount");
    assert!(!is_mounted(&m.root()));
    assert!(names(&m.root()).is_empty(), "the bare mountpoint is back");
    // The holder gets an error now, not a hang.
    let mut buf = Vec::new();
    let _ = within(10, "reading a file of an unmounted mount", move || {
        held.read_to_end(&mut buf).map(|_| buf)
    });
}

#[test]
fn clear_stale_mount_detaches_a_dead_mount() {
    let c = catalog();
    let m = Mounted::new(
        Arc::clone(&c.fake),
        snapshot(&[("1.0.0", &c.v1)], None),
        false,
    );
    let root = m.root();
    assert!(
        !clear_stale_mount(&root).unwrap(),
        "a live mount is left alone"
    );
    assert!(
        !clear_stale_mount(m.dir.path()).unwrap(),
        "a plain directory is left alone"
    );
    // Kill the connection as a crashed daemon would, keeping the mount busy so it stays attached.
    let busy = fs::File::open(&root).unwrap();
    let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_FORCE);
    let err = fs::metadata(&root).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    assert!(clear_stale_mount(&root).unwrap());
    assert!(!is_mounted(&root));
    assert!(fs::metadata(&root).unwrap().is_dir());
    drop(busy);
    // The handle's own unmount now finds nothing to do and returns.
    within(20, "unmounting an already cleared mount", move || drop(m));
}
