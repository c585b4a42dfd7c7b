//! Issue #14, "Lazy, verified reads": how much of a pack a fleet host fetches for what its mount
//! is asked. A random reader (part of one chunk: a safetensors header, a tensor's slice) gets
//! its chunk and about 1 MiB after it, not the rest of a 32 MiB pack; a sequential reader's
//! read-ahead grows with what it has read (4 MiB first, then whole packs), and every chunk the
//! fetch authenticated reaches the mount's cache, so the file's bytes are fetched once.

use std::io::{Read, Seek, SeekFrom};

use super::fleet::{fleet_hosts, model_dir, push_as, request, within, Cluster, BUCKET};
use crate::harness::{sha256_hex, user, TestEnv};

fn fetched(h: &TestEnv) -> (u64, u64) {
    let f = h.json(&["status"])["fleet"].clone();
    (
        f["bytes_fetched"].as_u64().unwrap(),
        f["pack_requests"].as_u64().unwrap(),
    )
}

/// `fetched` once the host's fetches have ended: a stream runs on a thread of its own and
/// counts its bytes when it ends, which may be after the read that started it returned. Waits
/// for a change from `before`, then for two readings 300 ms apart that agree.
fn fetched_settled(h: &TestEnv, before: (u64, u64)) -> (u64, u64) {
    let t = std::time::Instant::now();
    let mut last = fetched(h);
    while t.elapsed() < std::time::Duration::from_secs(15) {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = fetched(h);
        if now == last && now != before {
            return now;
        }
        last = now;
    }
    last
}

#[test]
fn fleet_random_reads_fetch_a_short_extent_and_sequential_ones_whole_packs() {
    let c = Cluster::start_kind("single", 18_800);
    let g = c.endpoints[0].clone();
    assert_eq!(request(&g, "PUT", &format!("/{BUCKET}"), &[], b"").0, 200);
    let hosts = fleet_hosts(&["a", "b"], &[vec![g.as_str()], vec![g.as_str()]]);
    let (a, b) = (&hosts[0], &hosts[1]);
    let u = user("arca-e2e-reads-pub");
    a.trusted_key_for(&u);
    a.ok(&["role", "assign", &u.name, "developer", "--model", "rr"]);
    // 24 MiB: one pack.
    let size = 24 << 20;
    let d = model_dir(a, &u, "rr", size, 18_801);
    push_as(a, &u, &d, "rr", "1.0.0");
    within(10, "B sees the version", || {
        b.arca(&["show", "rr", "1.0.0"]).status.success()
    });
    let want = std::fs::read(d.join("model.safetensors")).unwrap();
    let path = b.mnt().join("rr/1.0.0/model.safetensors");

    // A 4 KiB read in the middle of the file, on a fresh open (not sequential).
    let (bytes0, req0) = fetched(b);
    let at = 12 << 20;
    let mut f = std::fs::File::open(&path).unwrap();
    f.seek(SeekFrom::Start(at as u64)).unwrap();
    let mut got = vec![0u8; 4096];
    f.read_exact(&mut got).unwrap();
    drop(f);
    assert_eq!(got, want[at..at + 4096], "the 4 KiB read");
    let (bytes1, req1) = fetched_settled(b, (bytes0, req0));
    let random = bytes1 - bytes0;
    println!(
        "fleet reads: a 4 KiB random read fetched {random} bytes in {} request(s)",
        req1 - req0
    );
    assert!(random > 0, "the read was served without a fetch");
    // The chunk it falls in, then up to 1 MiB of chunks after it (the last one may pass the
    // mark by one chunk, at most 128 KiB sealed).
    assert!(
        random <= (1 << 20) + (256 << 10),
        "a 4 KiB random read fetched {random} bytes of a {size}-byte pack"
    );

    // The whole file, sequentially: byte-identical, and fetched about once.
    let hm = |h: &TestEnv| {
        let m = h.json(&["stats"])["mount"].clone();
        (
            m["cache_hits"].as_u64().unwrap(),
            m["cache_misses"].as_u64().unwrap(),
        )
    };
    let (hits0, misses0) = hm(b);
    let t = std::time::Instant::now();
    let all = std::fs::read(&path).unwrap();
    assert_eq!(sha256_hex(&all), sha256_hex(&want), "the sequential read");
    let (bytes2, req2) = fetched_settled(b, (bytes1, req1));
    let seq = bytes2 - bytes1;
    println!(
        "fleet reads: then a sequential read of {size} bytes fetched {seq} bytes in {} request(s), {:?}",
        req2 - req1,
        t.elapsed()
    );
    assert!(
        (seq as f64) <= size as f64 * 1.05,
        "a sequential read of {size} bytes fetched {seq}"
    );
    let (hits1, misses1) = hm(b);
    println!(
        "fleet reads: the sequential read's mount cache: {} hits, {} misses",
        hits1 - hits0,
        misses1 - misses0
    );
    // One pack: a handful of requests, not one per chunk (about 700 here). The stretch fetched
    // for the random read splits the pack in two; the read-ahead grows from 4 MiB, doubling
    // (about four requests before it reaches the pack's end); a reader far ahead of a stream
    // fetches from its own chunk on (fetch.rs), and a busy machine makes that likelier.
    assert!(req2 - req1 <= 16, "{} requests for one pack", req2 - req1);

    // Four random 1 MiB reads at once in another version's pack: each fetches a short extent,
    // none fails for want of a fetch slot.
    let d2 = model_dir(a, &u, "rr2", size, 18_802);
    push_as(a, &u, &d2, "rr", "2.0.0");
    within(10, "B sees 2.0.0", || {
        b.arca(&["show", "rr", "2.0.0"]).status.success()
    });
    let want2 = std::fs::read(d2.join("model.safetensors")).unwrap();
    let path2 = b.mnt().join("rr/2.0.0/model.safetensors");
    let before = fetched(b);
    let bytes3 = before.0;
    std::thread::scope(|s| {
        for at in [2usize << 20, 8 << 20, 14 << 20, 20 << 20] {
            let (path2, want2) = (&path2, &want2);
            s.spawn(move || {
                use std::os::unix::fs::FileExt;
                let f = std::fs::File::open(path2).unwrap();
                let mut got = vec![0u8; 1 << 20];
                f.read_exact_at(&mut got, at as u64)
                    .unwrap_or_else(|e| panic!("1 MiB at {at}: {e}"));
                assert!(got == want2[at..at + (1 << 20)], "1 MiB at {at}");
            });
        }
    });
    let (bytes4, _) = fetched_settled(b, before);
    println!(
        "fleet reads: four random 1 MiB reads at once fetched {} bytes",
        bytes4 - bytes3
    );
    // Each read's chunks and about 1 MiB after them (the kernel's own readahead may add a
    // little), not the rest of the pack four times over (about 40 MiB).
    assert!(
        bytes4 - bytes3 <= 12 << 20,
        "four random 1 MiB reads fetched {} bytes",
        bytes4 - bytes3
    );

    // A sequential reader that stops after 3 MiB (a header and the first tensors), on a 64 MiB
    // version none of whose chunks are here (two 32 MiB packs): its read-ahead grows with what
    // it has read, from 4 MiB, doubling, so it costs a few times what it read, not the rest of
    // the first pack (before, a sequential reader's first fetch took the whole pack).
    let d3 = model_dir(a, &u, "rr3", 64 << 20, 18_803);
    push_as(a, &u, &d3, "rr", "3.0.0");
    within(10, "B sees 3.0.0", || {
        b.arca(&["show", "rr", "3.0.0"]).status.success()
    });
    let want3 = std::fs::read(d3.join("model.safetensors")).unwrap();
    let before = fetched(b);
    let mut f = std::fs::File::open(b.mnt().join("rr/3.0.0/model.safetensors")).unwrap();
    let mut head = vec![0u8; 3 << 20];
    for piece in head.chunks_mut(128 << 10) {
        f.read_exact(piece).unwrap();
    }
    drop(f);
    assert!(head == want3[..3 << 20], "the first 3 MiB");
    let (bytes5, req5) = fetched_settled(b, before);
    println!(
        "fleet reads: a sequential reader that stopped after 3 MiB fetched {} bytes in {} request(s)",
        bytes5 - before.0,
        req5 - before.1
    );
    // The 3 MiB, the kernel's readahead and the mount's prefetch past it (the reader's
    // position as the fetches see it: about 5 to 6 MiB), and a last window as long as that:
    // measured about 14 MiB, against 32 MiB for the whole pack.
    assert!(
        bytes5 - before.0 <= 20 << 20,
        "a reader that stopped after 3 MiB fetched {} bytes",
        bytes5 - before.0
    );
    drop(c);
}
