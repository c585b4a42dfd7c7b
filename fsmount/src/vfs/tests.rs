//! Unit tests of the virtual filesystem against a fake chunk source: layout, attributes,
//! listings, reads at every boundary, failure handling, authorization and catalog updates.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;

use proptest::prelude::*;

use super::table::{ino_from, node_key, KIND_FILE, KIND_MODEL};
use super::*;
use crate::{ModelEntry, MountFile, VersionEntry};
use arca_core::{MerkleRoot, ModelName, ModelVersion, RelPath};

/// How the fake source misbehaves for one chunk.
#[derive(Clone, Copy, Debug)]
enum Bad {
    Integrity,
    Missing,
    Short,
}

/// (model, version, path, chunk, error) as given to `integrity_failure`.
type Report = (String, String, String, ChunkId, String);

/// Plaintext in a map, with switches to make chunks fail and users be refused.
#[derive(Default)]
struct Fake {
    chunks: Mutex<HashMap<ChunkId, Vec<u8>>>,
    bad: Mutex<HashMap<ChunkId, Bad>>,
    /// (uid, model, version) that `may_read` refuses.
    denied: Mutex<HashSet<(u32, String, String)>>,
    /// (uid, model) that `may_list` refuses.
    hidden: Mutex<HashSet<(u32, String)>>,
    /// (uid, model) as given to `list_refused`.
    list_refusals: Mutex<Vec<(u32, String)>>,
    /// Run once, inside the next `may_read`: what happens elsewhere while an open is decided.
    during_may_read: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    whole: AtomicUsize,
    ranges: AtomicUsize,
    reports: Mutex<Vec<Report>>,
}

impl Fake {
    fn add_chunk(&self, data: Vec<u8>) -> (ChunkId, u32) {
        let id = ChunkId(*blake3::hash(&data).as_bytes());
        let len = data.len() as u32;
        lock(&self.chunks).insert(id, data);
        (id, len)
    }

    fn fail(&self, id: ChunkId, how: Bad) {
        lock(&self.bad).insert(id, how);
    }

    fn deny(&self, uid: u32, model: &str, version: &str) {
        lock(&self.denied).insert((uid, model.into(), version.into()));
    }

    /// `uid` may not see `model` (nor read any version of it).
    fn hide(&self, uid: u32, model: &str) {
        lock(&self.hidden).insert((uid, model.into()));
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.whole.load(Ordering::SeqCst),
            self.ranges.load(Ordering::SeqCst),
        )
    }

    fn plain(&self, id: &ChunkId) -> Result<Vec<u8>, ChunkError> {
        let data = lock(&self.chunks)
            .get(id)
            .cloned()
            .ok_or(ChunkError::Missing)?;
        match lock(&self.bad).get(id) {
            None => Ok(data),
            Some(Bad::Integrity) => Err(ChunkError::Integrity(
                "segment 0 failed authentication".into(),
            )),
            Some(Bad::Missing) => Err(ChunkError::Missing),
            Some(Bad::Short) => Ok(data[..data.len() / 2].to_vec()),
        }
    }
}

impl ChunkSource for Fake {
    fn chunk(&self, id: &ChunkId, _len: u32) -> Result<Vec<u8>, ChunkError> {
        self.whole.fetch_add(1, Ordering::SeqCst);
        self.plain(id)
    }

    fn chunk_range(
        &self,
        id: &ChunkId,
        _len: u32,
        offset: u32,
        size: u32,
    ) -> Result<Vec<u8>, ChunkError> {
        self.ranges.fetch_add(1, Ordering::SeqCst);
        let plain = self.plain(id)?;
        let end = (offset as usize + size as usize).min(plain.len());
        Ok(plain.get(offset as usize..end).unwrap_or_default().to_vec())
    }

    fn may_read(&self, uid: u32, _gid: u32, model: &ModelName, version: &ModelVersion) -> bool {
        let meanwhile = lock(&self.during_may_read).take();
        if let Some(f) = meanwhile {
            f();
        }
        !lock(&self.denied).contains(&(uid, model.to_string(), version.to_string()))
            && !lock(&self.hidden).contains(&(uid, model.to_string()))
    }

    fn may_list(&self, uid: u32, _gid: u32, model: &ModelName) -> bool {
        !lock(&self.hidden).contains(&(uid, model.to_string()))
    }

    fn list_refused(&self, uid: u32, model: &ModelName) {
        lock(&self.list_refusals).push((uid, model.to_string()));
    }

    fn integrity_failure(
        &self,
        model: &ModelName,
        version: &ModelVersion,
        path: &RelPath,
        chunk: &ChunkId,
        error: &str,
    ) {
        lock(&self.reports).push((
            model.to_string(),
            version.to_string(),
            path.to_string(),
            *chunk,
            error.to_owned(),
        ));
    }
}

const ROOT_USER: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};
const ALICE: Caller = Caller {
    uid: 1000,
    gid: 1000,
    pid: 2,
};
const T1: u64 = 1_764_151_200;
const T2: u64 = 1_764_160_000;

fn bytes(seed: u64, n: usize) -> Vec<u8> {
    (0..n as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 7919) >> 7) as u8)
        .collect()
}

/// A file whose content is `bytes(seed, sum of sizes)`, cut into chunks of `sizes`.
fn file(fake: &Fake, path: &str, mode: u32, seed: u64, sizes: &[u32]) -> (MountFile, Vec<u8>) {
    let total: u32 = sizes.iter().sum();
    let content = bytes(seed, total as usize);
    let mut chunks = Vec::new();
    let mut at = 0usize;
    for &s in sizes {
        chunks.push(fake.add_chunk(content[at..at + s as usize].to_vec()));
        at += s as usize;
    }
    (
        MountFile {
            path: path.parse().unwrap(),
            size: u64::from(total),
            mode,
            chunks,
        },
        content,
    )
}

/// A version whose Merkle root stands for its content (a hash of its paths, sizes, modes and
/// chunks), as the daemon's signed root does: other content, other root.
fn version(created_at: u64, files: Vec<MountFile>) -> Arc<VersionEntry> {
    let mut h = blake3::Hasher::new();
    for f in &files {
        h.update(f.path.as_str().as_bytes());
        h.update(&f.size.to_le_bytes());
        h.update(&f.mode.to_le_bytes());
        for (id, len) in &f.chunks {
            h.update(id.as_bytes());
            h.update(&len.to_le_bytes());
        }
    }
    Arc::new(VersionEntry {
        created_at,
        merkle_root: MerkleRoot(*h.finalize().as_bytes()),
        files,
    })
}

fn model(
    versions: Vec<(&str, Arc<VersionEntry>)>,
    production: Option<&str>,
    staging: Option<&str>,
) -> ModelEntry {
    ModelEntry {
        versions: versions
            .into_iter()
            .map(|(v, e)| (v.parse().unwrap(), e))
            .collect(),
        production: production.map(|v| v.parse().unwrap()),
        staging: staging.map(|v| v.parse().unwrap()),
    }
}

fn snapshot(models: Vec<(&str, ModelEntry)>) -> Snapshot {
    Snapshot {
        models: models
            .into_iter()
            .map(|(m, e)| (m.parse().unwrap(), e))
            .collect(),
    }
}

fn opts(cache_bytes: u64, prefetch_chunks: usize) -> MountOptions {
    MountOptions {
        cache_bytes,
        prefetch_chunks,
        threads: 2,
        allow_other: false,
    }
}

/// Fixture: model `resnet` with 1.0.0 (config.json, weights/model.bin) and 1.1.0 (config.json),
/// production = 1.0.0; model `bert` with no versions.
struct World {
    fake: Arc<Fake>,
    vfs: Vfs,
    config: Vec<u8>,
    weights: Vec<u8>,
    v1: Arc<VersionEntry>,
    v2: Arc<VersionEntry>,
}

fn world() -> World {
    let fake = Arc::new(Fake::default());
    let (config, config_bytes) = file(&fake, "config.json", 0o644, 1, &[40]);
    let (weights, weights_bytes) = file(&fake, "weights/model.bin", 0o755, 2, &[100, 50, 1, 70]);
    let (config2, _) = file(&fake, "config.json", 0o600, 3, &[30]);
    let v1 = version(T1, vec![config, weights]);
    let v2 = version(T2, vec![config2]);
    let snap = snapshot(vec![
        (
            "resnet",
            model(
                vec![("1.0.0", v1.clone()), ("1.1.0", v2.clone())],
                Some("1.0.0"),
                None,
            ),
        ),
        ("bert", model(vec![], None, None)),
    ]);
    let vfs = Vfs::new(fake.clone(), snap, &opts(64 << 20, 0)).unwrap();
    World {
        fake,
        vfs,
        config: config_bytes,
        weights: weights_bytes,
        v1,
        v2,
    }
}

fn resolve(vfs: &Vfs, path: &str) -> Result<Entry, Fail> {
    let mut entry = vfs.getattr(ROOT, None)?;
    for name in path.split('/').filter(|c| !c.is_empty()) {
        entry = vfs.lookup(entry.attr.ino, name.as_bytes(), ROOT_USER)?;
    }
    Ok(entry)
}

fn ino(vfs: &Vfs, path: &str) -> Ino {
    resolve(vfs, path).unwrap().attr.ino
}

fn read_all(vfs: &Vfs, path: &str, offset: u64, size: u32) -> Result<Vec<u8>, Fail> {
    let fh = vfs.open(ino(vfs, path), ROOT_USER, false)?.fh;
    let out = vfs.read(fh, offset, size).map(|b| b.to_vec());
    vfs.release(fh);
    out
}

fn listing(vfs: &Vfs, path: &str, from: u64) -> Vec<(String, Kind, u64)> {
    let fh = vfs.opendir(ino(vfs, path), ROOT_USER).unwrap().fh;
    let mut out = Vec::new();
    vfs.readdir(fh, from, |_, next, kind, name| {
        out.push((name.to_owned(), kind, next));
        false
    })
    .unwrap();
    vfs.release(fh);
    out
}

#[test]
fn layout_and_attributes() {
    let w = world();
    let root = resolve(&w.vfs, "").unwrap();
    assert_eq!(
        (root.attr.kind, root.attr.perm, root.attr.nlink, root.ttl),
        (Kind::Dir, 0o555, 1, DYNAMIC_TTL)
    );

    let m = resolve(&w.vfs, "resnet").unwrap();
    assert_eq!(
        (m.attr.kind, m.attr.perm, m.attr.nlink, m.attr.time, m.ttl),
        (Kind::Dir, 0o555, 4, T2, DYNAMIC_TTL)
    );

    let v = resolve(&w.vfs, "resnet/1.0.0").unwrap();
    assert_eq!(
        (v.attr.kind, v.attr.perm, v.attr.nlink, v.attr.time, v.ttl),
        (Kind::Dir, 0o555, 3, T1, IMMUTABLE_TTL)
    );

    let p = resolve(&w.vfs, "resnet/production").unwrap();
    assert_eq!(
        (p.attr.kind, p.attr.size, p.ttl),
        (Kind::Symlink, 5, DYNAMIC_TTL)
    );
    assert_eq!(w.vfs.readlink(p.attr.ino, ROOT_USER).unwrap(), b"1.0.0");
    assert_eq!(resolve(&w.vfs, "resnet/staging"), Err(Fail::NotFound));

    let f = resolve(&w.vfs, "resnet/1.0.0/weights/model.bin").unwrap();
    assert_eq!(
        (
            f.attr.kind,
            f.attr.size,
            f.attr.perm,
            f.attr.nlink,
            f.attr.time
        ),
        (Kind::File, 221, 0o555, 1, T1)
    );
    assert_eq!(f.ttl, IMMUTABLE_TTL);
    assert_eq!(
        resolve(&w.vfs, "resnet/1.0.0/config.json")
            .unwrap()
            .attr
            .perm,
        0o444
    );
    assert_eq!(
        resolve(&w.vfs, "resnet/1.1.0/config.json")
            .unwrap()
            .attr
            .perm,
        0o444,
        "an owner-only pushed mode is shown readable: may_read decides who reads"
    );
    assert_eq!(
        resolve(&w.vfs, "resnet/1.0.0/weights").unwrap().attr.kind,
        Kind::Dir
    );

    assert_eq!(
        resolve(&w.vfs, "resnet/1.0.0/config.json/x"),
        Err(Fail::NotDir)
    );
    assert_eq!(resolve(&w.vfs, "resnet/2.0.0"), Err(Fail::NotFound));
    assert_eq!(resolve(&w.vfs, "nope"), Err(Fail::NotFound));
    assert_eq!(w.vfs.readlink(f.attr.ino, ROOT_USER), Err(Fail::Invalid));
    assert_eq!(w.vfs.getattr(12345, None), Err(Fail::NotFound));
    assert_eq!(resolve(&w.vfs, "bert").unwrap().attr.nlink, 2);
}

#[test]
fn inode_numbers_are_stable_hashes_with_the_top_bit_clear() {
    let a = world();
    let b = world();
    for path in [
        "resnet",
        "resnet/1.0.0",
        "resnet/production",
        "resnet/1.0.0/weights",
        "resnet/1.0.0/weights/model.bin",
    ] {
        let i = ino(&a.vfs, path);
        assert_eq!(i, ino(&b.vfs, path), "{path}");
        assert!(i > ROOT && i < 1 << 63, "{path}: {i:#x}");
    }
    let model = node_key(KIND_MODEL, &[b"resnet"]);
    assert_eq!(
        ino(&a.vfs, "resnet"),
        ino_from(model[..8].try_into().unwrap())
    );
    // The same path in two versions is two inodes.
    assert_ne!(
        ino(&a.vfs, "resnet/1.0.0/config.json"),
        ino(&a.vfs, "resnet/1.1.0/config.json")
    );
}

#[test]
fn readdir_lists_dots_then_sorted_children_and_resumes() {
    let w = world();
    let names =
        |l: Vec<(String, Kind, u64)>| l.into_iter().map(|(n, k, _)| (n, k)).collect::<Vec<_>>();
    let s = |n: &str, k| (n.to_owned(), k);
    assert_eq!(
        names(listing(&w.vfs, "", 0)),
        vec![
            s(".", Kind::Dir),
            s("..", Kind::Dir),
            s("bert", Kind::Dir),
            s("resnet", Kind::Dir)
        ]
    );
    assert_eq!(
        names(listing(&w.vfs, "resnet", 0)),
        vec![
            s(".", Kind::Dir),
            s("..", Kind::Dir),
            s("1.0.0", Kind::Dir),
            s("1.1.0", Kind::Dir),
            s("production", Kind::Symlink)
        ]
    );
    let v = listing(&w.vfs, "resnet/1.0.0", 0);
    assert_eq!(
        names(v.clone()),
        vec![
            s(".", Kind::Dir),
            s("..", Kind::Dir),
            s("config.json", Kind::File),
            s("weights", Kind::Dir)
        ]
    );
    // Offsets are "the entry after this one", so resuming from one skips exactly what was seen.
    assert_eq!(v.iter().map(|e| e.2).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(
        names(listing(&w.vfs, "resnet/1.0.0", 3)),
        vec![s("weights", Kind::Dir)]
    );
    assert!(listing(&w.vfs, "resnet/1.0.0", 4).is_empty());
    assert_eq!(
        names(listing(&w.vfs, "resnet/1.0.0/weights", 2)),
        vec![s("model.bin", Kind::File)]
    );
    // `..` of a version directory is its model directory.
    let fh = w
        .vfs
        .opendir(ino(&w.vfs, "resnet/1.0.0"), ROOT_USER)
        .unwrap()
        .fh;
    let mut dotdot = 0;
    w.vfs
        .readdir(fh, 1, |i, _, _, _| {
            dotdot = i;
            true
        })
        .unwrap();
    assert_eq!(dotdot, ino(&w.vfs, "resnet"));
    assert_eq!(
        w.vfs.readdir(999, 0, |_, _, _, _| false),
        Err(Fail::BadHandle)
    );
    assert_eq!(
        w.vfs
            .opendir(ino(&w.vfs, "resnet/1.0.0/config.json"), ROOT_USER),
        Err(Fail::NotDir)
    );
    // Only directories inside a version are immutable enough for the kernel to cache.
    assert!(
        w.vfs
            .opendir(ino(&w.vfs, "resnet/1.0.0"), ROOT_USER)
            .unwrap()
            .keep_cache
    );
    assert!(
        !w.vfs
            .opendir(ino(&w.vfs, "resnet"), ROOT_USER)
            .unwrap()
            .keep_cache
    );
}

#[test]
fn reads_at_every_boundary() {
    let w = world();
    let path = "resnet/1.0.0/weights/model.bin"; // chunks 100, 50, 1, 70 = 221 bytes
    let all = &w.weights;
    let cases: &[(u64, u32)] = &[
        (0, 0),
        (0, 1),
        (0, 100),
        (99, 1),
        (99, 2),
        (100, 50),
        (149, 2),
        (150, 1),
        (150, 2),
        (151, 70),
        (0, 221),
        (0, 1 << 20),
        (220, 1),
        (220, 100),
        (221, 1),
        (221, 0),
        (500, 10),
        (u64::MAX - 1, 4096),
    ];
    for &(offset, size) in cases {
        let start = (offset as usize).min(all.len());
        let end = (offset.saturating_add(u64::from(size)) as usize).min(all.len());
        assert_eq!(
            read_all(&w.vfs, path, offset, size).unwrap(),
            all[start..end],
            "read({offset}, {size})"
        );
    }
    assert_eq!(
        read_all(&w.vfs, "resnet/1.0.0/config.json", 0, 4096).unwrap(),
        w.config
    );
}

#[test]
fn a_small_read_of_an_uncached_chunk_decrypts_only_its_range() {
    let fake = Arc::new(Fake::default());
    let (f, content) = file(&fake, "big.bin", 0o644, 9, &[256 << 10, 256 << 10]);
    let snap = snapshot(vec![(
        "m",
        model(vec![("1.0.0", version(T1, vec![f]))], None, None),
    )]);
    let vfs = Vfs::new(fake.clone(), snap, &opts(64 << 20, 4)).unwrap();
    let fh = vfs
        .open(ino(&vfs, "m/1.0.0/big.bin"), ROOT_USER, false)
        .unwrap()
        .fh;

    let got = vfs.read(fh, 100_000, 4096).unwrap();
    assert_eq!(got.to_vec(), &content[100_000..104_096]);
    assert_eq!(
        fake.counts(),
        (0, 1),
        "a 4 KiB read must use chunk_range, not chunk"
    );
    // A read straddling two uncached chunks: two ranges, still no whole chunk.
    let got = vfs.read(fh, (256 << 10) - 10, 20).unwrap();
    assert_eq!(got.to_vec(), &content[(256 << 10) - 10..(256 << 10) + 10]);
    assert_eq!(fake.counts(), (0, 3));

    // A read covering a whole chunk verifies all of it and caches it...
    let fh2 = vfs
        .open(ino(&vfs, "m/1.0.0/big.bin"), ROOT_USER, false)
        .unwrap()
        .fh;
    assert_eq!(
        vfs.read(fh2, 0, 256 << 10).unwrap().to_vec(),
        &content[..256 << 10]
    );
    assert_eq!(fake.counts(), (1, 3));
    // ...after which small reads of it are cache hits.
    let hits = vfs.stats().cache_hits;
    assert_eq!(vfs.read(fh, 5, 4096).unwrap().to_vec(), &content[5..4101]);
    assert_eq!(fake.counts(), (1, 3));
    assert_eq!(vfs.stats().cache_hits, hits + 1);
}

#[test]
fn a_large_random_read_has_its_whole_chunks_read_in_parallel_each_once() {
    let fake = Arc::new(Fake::default());
    // Sizes differ so that no two chunks hold the same bytes (`bytes` repeats itself).
    let sizes: Vec<u32> = (0..12).map(|k| (32 << 10) + 7 * k).collect();
    let starts: Vec<u64> = sizes
        .iter()
        .scan(0u64, |at, &s| {
            let start = *at;
            *at += u64::from(s);
            Some(start)
        })
        .collect();
    let (f, content) = file(&fake, "big.bin", 0o644, 11, &sizes);
    let snap = snapshot(vec![(
        "m",
        model(vec![("1.0.0", version(T1, vec![f]))], None, None),
    )]);
    let vfs = Vfs::new(fake.clone(), snap, &opts(64 << 20, 4)).unwrap();
    let fh = vfs
        .open(ino(&vfs, "m/1.0.0/big.bin"), ROOT_USER, false)
        .unwrap()
        .fh;
    // Not sequential (a first read), from inside chunk 1 to inside chunk 10: chunks 2..=9 are
    // whole and go to the prefetch workers, the two ends are ranges.
    let (from, to) = (starts[1] + 100, starts[10] + 100);
    let got = vfs.read(fh, from, (to - from) as u32).unwrap();
    assert_eq!(got.to_vec(), &content[from as usize..to as usize]);
    assert_eq!(vfs.stats().prefetch_queued, 8, "the inner whole chunks");
    // Each whole chunk was read once, by a worker or by the reader, never by both.
    let t = std::time::Instant::now();
    while fake.counts().0 < 8 && t.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(fake.counts(), (8, 2));

    // A read spanning three chunks is done by the reader alone.
    let fh2 = vfs
        .open(ino(&vfs, "m/1.0.0/big.bin"), ROOT_USER, false)
        .unwrap()
        .fh;
    let (from, to) = (starts[10] - 10, starts[11] + 10);
    let got = vfs.read(fh2, from, (to - from) as u32).unwrap();
    assert_eq!(got.to_vec(), &content[from as usize..to as usize]);
    assert_eq!(vfs.stats().prefetch_queued, 8, "nothing more queued");
}

#[test]
fn without_a_cache_whole_chunks_are_still_verified_whole() {
    let fake = Arc::new(Fake::default());
    let (f, content) = file(&fake, "a.bin", 0o644, 4, &[1000, 1000]);
    let snap = snapshot(vec![(
        "m",
        model(vec![("1.0.0", version(T1, vec![f]))], None, None),
    )]);
    let vfs = Vfs::new(fake.clone(), snap, &opts(0, 4)).unwrap();
    assert_eq!(read_all(&vfs, "m/1.0.0/a.bin", 0, 2000).unwrap(), content);
    assert_eq!(read_all(&vfs, "m/1.0.0/a.bin", 0, 2000).unwrap(), content);
    assert_eq!(fake.counts(), (4, 0));
    assert_eq!(vfs.stats().cache_bytes, 0);
}

#[test]
fn a_failing_chunk_fails_the_read_and_is_reported_once() {
    let w = world();
    let path = "resnet/1.0.0/weights/model.bin";
    let bad = w.v1.files[1].chunks[1].0; // bytes 100..150
    w.fake.fail(bad, Bad::Integrity);

    // Whole-file read, a read inside the bad chunk (chunk_range), and one straddling into it.
    for (offset, size) in [(0u64, 4096u32), (120, 5), (90, 20)] {
        assert_eq!(
            read_all(&w.vfs, path, offset, size),
            Err(Fail::Io),
            "read({offset}, {size})"
        );
    }
    let reports = lock(&w.fake.reports).clone();
    assert_eq!(reports.len(), 3);
    for r in &reports {
        assert_eq!(
            (r.0.as_str(), r.1.as_str(), r.2.as_str(), r.3),
            ("resnet", "1.0.0", "weights/model.bin", bad)
        );
        assert!(r.4.contains("verification"), "{}", r.4);
    }
    let stats = w.vfs.stats();
    assert_eq!((stats.integrity_failures, stats.read_errors), (3, 3));

    // The rest of the file, and other files, still read.
    assert_eq!(read_all(&w.vfs, path, 0, 100).unwrap(), w.weights[..100]);
    assert_eq!(read_all(&w.vfs, path, 150, 71).unwrap(), w.weights[150..]);
    assert_eq!(
        read_all(&w.vfs, "resnet/1.0.0/config.json", 0, 100).unwrap(),
        w.config
    );
    assert_eq!(lock(&w.fake.reports).len(), 3);
}

#[test]
fn missing_and_short_chunks_are_failures_too() {
    let w = world();
    let path = "resnet/1.0.0/weights/model.bin";
    let chunks = &w.v1.files[1].chunks;
    w.fake.fail(chunks[0].0, Bad::Missing);
    w.fake.fail(chunks[3].0, Bad::Short);
    assert_eq!(read_all(&w.vfs, path, 0, 100), Err(Fail::Io));
    assert_eq!(read_all(&w.vfs, path, 151, 70), Err(Fail::Io));
    // The fake returns only the first half (35 bytes) of the short chunk.
    assert_eq!(
        read_all(&w.vfs, path, 151 + 30, 10),
        Err(Fail::Io),
        "a short range is a failure too"
    );
    let reports = lock(&w.fake.reports).clone();
    assert_eq!(
        reports.iter().map(|r| r.3).collect::<Vec<_>>(),
        vec![chunks[0].0, chunks[3].0, chunks[3].0]
    );
    assert!(reports[0].4.contains("missing"));
    assert!(
        reports[1].4.contains("bytes where 70 were expected"),
        "{}",
        reports[1].4
    );
    // Nothing unverified was cached on the way.
    assert_eq!(
        read_all(&w.vfs, path, 100, 51).unwrap(),
        w.weights[100..151]
    );
}

#[test]
fn a_file_whose_chunks_do_not_add_up_cannot_be_read() {
    let fake = Arc::new(Fake::default());
    let (mut f, _) = file(&fake, "a.bin", 0o644, 5, &[60, 30]);
    f.size = 100;
    let snap = snapshot(vec![(
        "m",
        model(vec![("1.0.0", version(T1, vec![f]))], None, None),
    )]);
    let vfs = Vfs::new(fake.clone(), snap, &opts(1 << 20, 0)).unwrap();
    assert_eq!(resolve(&vfs, "m/1.0.0/a.bin").unwrap().attr.size, 100);
    assert_eq!(read_all(&vfs, "m/1.0.0/a.bin", 0, 10), Err(Fail::Io));
    let reports = lock(&fake.reports).clone();
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0]
            .4
            .contains("add up to 90 bytes but the file has 100"),
        "{}",
        reports[0].4
    );
    assert_eq!(fake.counts(), (0, 0));
}

#[test]
fn authorization_at_lookup_opendir_and_open() {
    let w = world();
    w.fake.deny(ALICE.uid, "resnet", "1.1.0");
    let model = ino(&w.vfs, "resnet");
    let v2 = ino(&w.vfs, "resnet/1.1.0");
    let v2_config = ino(&w.vfs, "resnet/1.1.0/config.json");

    // Root, model directory and alias links are not per version.
    assert!(w.vfs.lookup(ROOT, b"resnet", ALICE).is_ok());
    assert!(w.vfs.opendir(model, ALICE).is_ok());
    assert!(w.vfs.lookup(model, b"production", ALICE).is_ok());
    assert!(w.vfs.lookup(model, b"1.0.0", ALICE).is_ok());
    // The refused version: its directory, anything under it (existing or not), listing, opening.
    assert_eq!(w.vfs.lookup(model, b"1.1.0", ALICE), Err(Fail::Access));
    assert_eq!(w.vfs.lookup(v2, b"config.json", ALICE), Err(Fail::Access));
    assert_eq!(w.vfs.lookup(v2, b"no-such-file", ALICE), Err(Fail::Access));
    assert_eq!(w.vfs.opendir(v2, ALICE), Err(Fail::Access));
    assert_eq!(w.vfs.open(v2_config, ALICE, false), Err(Fail::Access));
    // Another caller is unaffected.
    assert!(w.vfs.lookup(v2, b"config.json", ROOT_USER).is_ok());
    let fh = w.vfs.open(v2_config, ROOT_USER, false).unwrap().fh;
    // Reads carry no identity: a handle opened by an authorized caller reads.
    assert_eq!(w.vfs.read(fh, 0, 10).unwrap().len(), 10);
}

#[test]
fn opening_for_write_or_a_directory_is_refused() {
    let w = world();
    assert_eq!(
        w.vfs
            .open(ino(&w.vfs, "resnet/1.0.0/config.json"), ROOT_USER, true),
        Err(Fail::ReadOnly)
    );
    assert_eq!(
        w.vfs.open(ino(&w.vfs, "resnet/1.0.0"), ROOT_USER, false),
        Err(Fail::IsDir)
    );
    assert_eq!(
        w.vfs
            .open(ino(&w.vfs, "resnet/production"), ROOT_USER, false),
        Err(Fail::Invalid)
    );
    assert_eq!(w.vfs.read(424242, 0, 10).err(), Some(Fail::BadHandle));
    let dir = w.vfs.opendir(ROOT, ROOT_USER).unwrap().fh;
    assert_eq!(w.vfs.read(dir, 0, 10).err(), Some(Fail::IsDir));
}

#[test]
fn update_switches_aliases_and_says_what_to_invalidate() {
    let w = world();
    let model_ino = ino(&w.vfs, "resnet");
    let old_link = ino(&w.vfs, "resnet/production");
    let v1_file = ino(&w.vfs, "resnet/1.0.0/weights/model.bin");
    let v1_weights_dir = ino(&w.vfs, "resnet/1.0.0/weights");
    let v2_dir = ino(&w.vfs, "resnet/1.1.0");
    // A reader holding a file of 1.0.0 open across every update below.
    let fh = w.vfs.open(v1_file, ROOT_USER, false).unwrap().fh;

    let both = || vec![("1.0.0", w.v1.clone()), ("1.1.0", w.v2.clone())];
    // Republishing the same catalog changes nothing.
    let same = snapshot(vec![
        ("resnet", model(both(), Some("1.0.0"), None)),
        ("bert", model(vec![], None, None)),
    ]);
    assert_eq!(w.vfs.update(same), vec![]);

    // Promote 1.1.0 to production and 1.0.0 to staging.
    let promoted = snapshot(vec![
        ("resnet", model(both(), Some("1.1.0"), Some("1.0.0"))),
        ("bert", model(vec![], None, None)),
    ]);
    let inval = w.vfs.update(promoted);
    let entry = |parent, name: &str| Invalidation::Entry {
        parent,
        name: name.to_owned(),
    };
    assert_eq!(
        inval,
        vec![entry(model_ino, "production"), entry(model_ino, "staging")]
    );
    let link = resolve(&w.vfs, "resnet/production").unwrap().attr.ino;
    assert_eq!(w.vfs.readlink(link, ROOT_USER).unwrap(), b"1.1.0");
    assert_eq!(
        link, old_link,
        "a switched link keeps its inode, so a walk that resolved it before the switch reads the new target"
    );
    assert_eq!(w.vfs.readlink(old_link, ROOT_USER).unwrap(), b"1.1.0");
    assert_eq!(
        w.vfs
            .readlink(ino(&w.vfs, "resnet/staging"), ROOT_USER)
            .unwrap(),
        b"1.0.0"
    );
    assert_eq!(
        ino(&w.vfs, "resnet/1.1.0"),
        v2_dir,
        "unchanged versions keep their inodes"
    );
    assert_eq!(ino(&w.vfs, "resnet/1.0.0/weights/model.bin"), v1_file);

    // Delete 1.0.0 (and with it the staging link) and the model bert.
    let deleted = snapshot(vec![(
        "resnet",
        model(vec![("1.1.0", w.v2.clone())], Some("1.1.0"), None),
    )]);
    let inval = w.vfs.update(deleted);
    assert_eq!(
        inval,
        vec![
            entry(ROOT, "bert"),
            entry(model_ino, "staging"),
            entry(model_ino, "1.0.0")
        ]
    );
    assert_eq!(resolve(&w.vfs, "resnet/1.0.0"), Err(Fail::NotFound));
    assert_eq!(resolve(&w.vfs, "bert"), Err(Fail::NotFound));
    assert_eq!(w.vfs.getattr(v1_file, None), Err(Fail::NotFound));
    // The open handle still reads, and fstat through it still works.
    assert_eq!(w.vfs.read(fh, 0, 1000).unwrap().to_vec(), &w.weights[..]);
    assert_eq!(w.vfs.getattr(v1_file, Some(fh)).unwrap().attr.size, 221);

    // 1.0.0 pushed again with other content of the same size at the same second: the kernel
    // still holds the old file's inode (its page cache included) for the open handle above, so
    // the new file must get another inode, or its readers would be served the old pages.
    let (other, other_bytes) = file(&w.fake, "weights/model.bin", 0o755, 77, &[221]);
    let again = version(T1, vec![w.v1.files[0].clone(), other]);
    assert_ne!(again.merkle_root, w.v1.merkle_root);
    let repushed = snapshot(vec![(
        "resnet",
        model(
            vec![("1.0.0", again.clone()), ("1.1.0", w.v2.clone())],
            Some("1.1.0"),
            None,
        ),
    )]);
    assert!(
        w.vfs.update(repushed).is_empty(),
        "1.0.0 was absent, so no name of it can be cached"
    );
    let new_file = ino(&w.vfs, "resnet/1.0.0/weights/model.bin");
    assert_ne!(new_file, v1_file, "other content, other inode");
    assert_ne!(ino(&w.vfs, "resnet/1.0.0/weights"), v1_weights_dir);
    assert_eq!(
        read_all(&w.vfs, "resnet/1.0.0/weights/model.bin", 0, 1000).unwrap(),
        other_bytes
    );
    // The same content published as another entry (same root): same inodes, and should its
    // entry differ (it cannot, from the daemon) the kernel is told to drop what it cached.
    let same_root = Arc::new(VersionEntry {
        created_at: T1,
        merkle_root: again.merkle_root,
        files: vec![w.v1.files[0].clone()],
    });
    let inval = w.vfs.update(snapshot(vec![(
        "resnet",
        model(
            vec![("1.0.0", same_root), ("1.1.0", w.v2.clone())],
            Some("1.1.0"),
            None,
        ),
    )]));
    assert_eq!(inval[0], entry(model_ino, "1.0.0"));
    let inodes: HashSet<Ino> = inval[1..]
        .iter()
        .map(|i| match i {
            Invalidation::Inode(ino) => *ino,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let expected: HashSet<Ino> = [
        ino(&w.vfs, "resnet/1.0.0"),
        ino(&w.vfs, "resnet/1.0.0/config.json"),
    ]
    .into();
    assert_eq!(
        inodes, expected,
        "only inodes that still exist are invalidated"
    );
    // The handle opened before all this still serves the content it was opened on.
    assert_eq!(
        w.vfs.read(fh, 200, 100).unwrap().to_vec(),
        &w.weights[200..]
    );
    w.vfs.release(fh);
}

#[test]
fn a_version_created_at_another_time_gets_new_inodes() {
    let w = world();
    let before = ino(&w.vfs, "resnet/1.0.0/config.json");
    let later = version(T2 + 1, w.v1.files.clone());
    w.vfs.update(snapshot(vec![(
        "resnet",
        model(vec![("1.0.0", later)], None, None),
    )]));
    assert_ne!(ino(&w.vfs, "resnet/1.0.0/config.json"), before);
}

#[test]
fn a_version_pushed_again_with_other_content_in_the_same_second_gets_new_inodes() {
    let w = world();
    let paths = [
        "resnet/1.0.0",
        "resnet/1.0.0/weights",
        "resnet/1.0.0/weights/model.bin",
        "resnet/1.0.0/config.json",
    ];
    let before: Vec<Ino> = paths.iter().map(|p| ino(&w.vfs, p)).collect();
    // Same name, version, second, paths and sizes; other bytes in one file.
    let (other, _) = file(&w.fake, "weights/model.bin", 0o755, 99, &[100, 50, 1, 70]);
    let again = version(T1, vec![w.v1.files[0].clone(), other]);
    w.vfs.update(snapshot(vec![(
        "resnet",
        model(vec![("1.0.0", again)], None, None),
    )]));
    for (path, old) in paths.iter().zip(&before) {
        assert_ne!(ino(&w.vfs, path), *old, "{path} kept its inode");
    }
    // The same content again is the same inodes: nothing cached for it can be wrong.
    w.vfs.update(snapshot(vec![(
        "resnet",
        model(vec![("1.0.0", w.v1.clone())], None, None),
    )]));
    let back: Vec<Ino> = paths.iter().map(|p| ino(&w.vfs, p)).collect();
    assert_eq!(back, before);
}

#[test]
fn listings_and_lookups_show_only_the_models_the_caller_may_see() {
    let w = world();
    w.fake.hide(ALICE.uid, "resnet");
    let names = |caller: Caller, ino: Ino| -> Result<Vec<String>, Fail> {
        let fh = w.vfs.opendir(ino, caller)?.fh;
        let mut out = Vec::new();
        w.vfs
            .readdir(fh, 0, |_, _, _, name| {
                out.push(name.to_owned());
                false
            })
            .unwrap();
        w.vfs.release(fh);
        Ok(out)
    };
    // The root lists, per caller, what that caller may see; the count of models is not given
    // away by the link count either.
    assert_eq!(
        names(ROOT_USER, ROOT).unwrap(),
        [".", "..", "bert", "resnet"]
    );
    assert_eq!(names(ALICE, ROOT).unwrap(), [".", "..", "bert"]);
    assert_eq!(w.vfs.getattr(ROOT, None).unwrap().attr.nlink, 1);
    // Resuming a listing keeps to the caller's view.
    let fh = w.vfs.opendir(ROOT, ALICE).unwrap().fh;
    let mut rest = Vec::new();
    w.vfs
        .readdir(fh, 2, |_, next, _, name| {
            rest.push((name.to_owned(), next));
            false
        })
        .unwrap();
    assert_eq!(rest, [("bert".to_owned(), 3)]);
    w.vfs.release(fh);

    // Lookups: refused for a hidden model and for a name that does not exist alike (the
    // refusal depends on roles alone), found for the caller who may see it.
    assert_eq!(w.vfs.lookup(ROOT, b"resnet", ALICE), Err(Fail::Access));
    w.fake.hide(ALICE.uid, "nope");
    assert_eq!(w.vfs.lookup(ROOT, b"nope", ALICE), Err(Fail::Access));
    assert_eq!(w.vfs.lookup(ROOT, b"nope2", ALICE), Err(Fail::NotFound));
    assert!(w.vfs.lookup(ROOT, b"bert", ALICE).is_ok());
    assert!(w.vfs.lookup(ROOT, b"resnet", ROOT_USER).is_ok());
    // Inodes learnt by another caller do not open the model to Alice: its directory, its
    // entries, its links and its versions are all refused.
    let model = ino(&w.vfs, "resnet");
    let link = ino(&w.vfs, "resnet/production");
    let v1 = ino(&w.vfs, "resnet/1.0.0");
    assert_eq!(w.vfs.opendir(model, ALICE), Err(Fail::Access));
    assert_eq!(names(ALICE, model), Err(Fail::Access));
    assert_eq!(w.vfs.lookup(model, b"1.0.0", ALICE), Err(Fail::Access));
    assert_eq!(w.vfs.lookup(model, b"production", ALICE), Err(Fail::Access));
    assert_eq!(w.vfs.readlink(link, ALICE), Err(Fail::Access));
    assert_eq!(w.vfs.opendir(v1, ALICE), Err(Fail::Access));
    assert_eq!(
        w.vfs
            .open(ino(&w.vfs, "resnet/1.0.0/config.json"), ALICE, false),
        Err(Fail::Access)
    );
    // The root user is unaffected.
    assert_eq!(w.vfs.readlink(link, ROOT_USER).unwrap(), b"1.0.0");
    assert_eq!(
        names(ROOT_USER, model).unwrap(),
        [".", "..", "1.0.0", "1.1.0", "production"]
    );
    // Refusals of a model that exists are reported (for the audit trail); a name that does not
    // exist, and the models a listing leaves out, are not.
    let refusals = lock(&w.fake.list_refusals).clone();
    assert!(!refusals.is_empty());
    assert!(
        refusals
            .iter()
            .all(|r| r == &(ALICE.uid, "resnet".to_owned())),
        "{refusals:?}"
    );
}

#[test]
fn an_open_racing_a_deletion_fails_instead_of_holding_a_vanished_file() {
    let fake = Arc::new(Fake::default());
    let (config, _) = file(&fake, "config.json", 0o644, 1, &[40]);
    let (other, _) = file(&fake, "other.json", 0o644, 2, &[40]);
    let v1 = version(T1, vec![config]);
    let v2 = version(T2, vec![other]);
    let both = snapshot(vec![(
        "m",
        model(
            vec![("1.0.0", v1.clone()), ("2.0.0", v2.clone())],
            None,
            None,
        ),
    )]);
    let vfs = Arc::new(Vfs::new(fake.clone(), both.clone(), &opts(1 << 20, 0)).unwrap());
    let file_ino = ino(&vfs, "m/1.0.0/config.json");
    // 1.0.0 is deleted (and its deletion published) after open found the file in the table
    // and before it registered the handle: a collection may already have read the open
    // handles without this one, so the open must fail rather than hold a file whose chunks
    // may be gone (its reads would fail and be reported as damage).
    let weak = Arc::downgrade(&vfs);
    let without_v1 = snapshot(vec![("m", model(vec![("2.0.0", v2.clone())], None, None))]);
    *lock(&fake.during_may_read) = Some(Box::new(move || {
        if let Some(vfs) = weak.upgrade() {
            vfs.update(without_v1);
        }
    }));
    assert_eq!(vfs.open(file_ino, ROOT_USER, false), Err(Fail::NotFound));
    assert!(vfs.open_chunks().is_empty(), "no handle was left behind");
    // A change elsewhere in the catalog meanwhile does not fail an open.
    vfs.update(both);
    let other_ino = ino(&vfs, "m/2.0.0/other.json");
    let weak = Arc::downgrade(&vfs);
    let only_1 = snapshot(vec![("m", model(vec![("1.0.0", v1.clone())], None, None))]);
    *lock(&fake.during_may_read) = Some(Box::new(move || {
        if let Some(vfs) = weak.upgrade() {
            vfs.update(only_1);
        }
    }));
    let fh = vfs.open(file_ino, ROOT_USER, false).unwrap().fh;
    assert_eq!(vfs.open_chunks().len(), 1);
    vfs.release(fh);
    assert_eq!(vfs.open(other_ino, ROOT_USER, false), Err(Fail::NotFound));
}

#[test]
fn alias_to_an_absent_version_is_not_shown() {
    let w = world();
    w.vfs.update(snapshot(vec![(
        "resnet",
        model(vec![("1.0.0", w.v1.clone())], Some("9.9.9"), Some("1.0.0")),
    )]));
    assert_eq!(resolve(&w.vfs, "resnet/production"), Err(Fail::NotFound));
    assert!(resolve(&w.vfs, "resnet/staging").is_ok());
}

#[test]
fn conflicting_paths_keep_the_first() {
    let fake = Arc::new(Fake::default());
    let (a, a_bytes) = file(&fake, "a", 0o644, 1, &[10]);
    let (ab, _) = file(&fake, "a/b", 0o644, 2, &[10]);
    let (cd, _) = file(&fake, "c/d", 0o644, 3, &[10]);
    let (c, _) = file(&fake, "c", 0o644, 4, &[10]);
    let (dup, _) = file(&fake, "a", 0o644, 5, &[20]);
    let snap = snapshot(vec![(
        "m",
        model(
            vec![("1.0.0", version(T1, vec![a, ab, cd, c, dup]))],
            None,
            None,
        ),
    )]);
    let vfs = Vfs::new(fake, snap, &opts(1 << 20, 0)).unwrap();
    assert_eq!(read_all(&vfs, "m/1.0.0/a", 0, 100).unwrap(), a_bytes);
    assert_eq!(resolve(&vfs, "m/1.0.0/a/b"), Err(Fail::NotDir));
    assert_eq!(resolve(&vfs, "m/1.0.0/c").unwrap().attr.kind, Kind::Dir);
    assert!(resolve(&vfs, "m/1.0.0/c/d").is_ok());
    let names: Vec<_> = listing(&vfs, "m/1.0.0", 2)
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(names, vec!["a", "c"]);
}

#[test]
fn inode_collisions_never_share_a_number() {
    let keys: Vec<[u8; 32]> = (0..4u8).map(|i| node_key(KIND_FILE, &[&[i]])).collect();
    let mut r = Registry::default();
    let a = r.place(&keys[0], 42);
    let b = r.place(&keys[1], 42);
    let c = r.place(&keys[2], 42);
    assert_eq!(a, 42);
    assert!(b != a && c != a && c != b);
    assert!(b > ROOT && b < 1 << 63 && c > ROOT && c < 1 << 63);
    // Asking again gives the same answers, whatever the order.
    assert_eq!(
        (
            r.place(&keys[2], 42),
            r.place(&keys[1], 42),
            r.place(&keys[0], 42)
        ),
        (c, b, a)
    );
    // Numbers 0 and 1 (the root) are never handed out.
    let d = r.place(&keys[3], ROOT);
    assert!(d > ROOT && ![a, b, c].contains(&d));
    // The same history yields the same numbers on a fresh registry.
    let mut again = Registry::default();
    assert_eq!(
        [
            again.place(&keys[0], 42),
            again.place(&keys[1], 42),
            again.place(&keys[2], 42)
        ],
        [a, b, c]
    );
}

#[test]
fn a_sequential_reader_gets_whole_chunks_prefetched() {
    let fake = Arc::new(Fake::default());
    let sizes = [1000u32; 12];
    let (f, content) = file(&fake, "seq.bin", 0o644, 6, &sizes);
    let chunks = f.chunks.clone();
    let snap = snapshot(vec![(
        "m",
        model(vec![("1.0.0", version(T1, vec![f]))], None, None),
    )]);
    let vfs = Vfs::new(fake.clone(), snap, &opts(64 << 20, 3)).unwrap();
    let fh = vfs
        .open(ino(&vfs, "m/1.0.0/seq.bin"), ROOT_USER, false)
        .unwrap()
        .fh;
    // Two reads, the second continuing the first, ending inside chunk 2.
    assert_eq!(vfs.read(fh, 0, 1500).unwrap().to_vec(), &content[..1500]);
    assert_eq!(
        vfs.stats().prefetch_queued,
        0,
        "a first read never triggers prefetch"
    );
    assert_eq!(
        vfs.read(fh, 1500, 1000).unwrap().to_vec(),
        &content[1500..2500]
    );
    // Chunks 2, 3 and 4 are fetched in the background.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !chunks[2..5].iter().all(|(id, _)| vfs.cache.contains(id)) {
        assert!(
            std::time::Instant::now() < deadline,
            "prefetch did not complete: {:?}",
            vfs.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!vfs.cache.contains(&chunks[5].0));
    let ranges_before = fake.counts().1;
    let hits = vfs.stats().cache_hits;
    assert_eq!(
        vfs.read(fh, 2500, 2500).unwrap().to_vec(),
        &content[2500..5000]
    );
    assert_eq!(
        fake.counts().1,
        ranges_before,
        "prefetched chunks are served from the cache"
    );
    assert_eq!(vfs.stats().cache_hits, hits + 3);
    vfs.release(fh);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any sequence of reads on one handle returns exactly the corresponding bytes of the file,
    /// whichever mix of cache hits, whole-chunk fetches, range fetches and prefetch serves it.
    #[test]
    fn random_reads_match_the_plaintext(
        sizes in prop::collection::vec(1u32..3000, 1..12),
        reads in prop::collection::vec((0u64..40_000, 0u32..9000, any::<bool>()), 1..24),
        cache in prop_oneof![Just(0u64), Just(4096u64), Just(64u64 << 20)],
        prefetch in 0usize..3,
    ) {
        let fake = Arc::new(Fake::default());
        let (f, content) = file(&fake, "r.bin", 0o644, 11, &sizes);
        let snap = snapshot(vec![("m", model(vec![("1.0.0", version(T1, vec![f]))], None, None))]);
        let vfs = Vfs::new(fake, snap, &opts(cache, prefetch)).unwrap();
        let fh = vfs.open(ino(&vfs, "m/1.0.0/r.bin"), ROOT_USER, false).unwrap().fh;
        let mut next = 0u64;
        for (offset, size, continue_previous) in reads {
            // Half the reads continue the previous one, to exercise the sequential path.
            let offset = if continue_previous { next } else { offset % (content.len() as u64 + 100) };
            let got = vfs.read(fh, offset, size).unwrap();
            let start = (offset as usize).min(content.len());
            let end = (offset as usize + size as usize).min(content.len());
            prop_assert_eq!(got.to_vec(), &content[start..end]);
            next = offset + size as u64;
        }
    }
}
