//! The fleet's limits an attacker's review found (issue #10/#14), each shown fixed against a real
//! SeaweedFS: a store outage is not an integrity failure, reads are bounded on a trickling link
//! while cached reads stay fast, GC entries are checked against the replica before they are
//! applied, and junk keys planted under `log/` blind neither the gap check nor the sweep.

use std::time::{Duration, Instant};

use super::fleet::{fleet_hosts, model_dir, request, within, Cluster, BUCKET};
use crate::harness::{sha256_hex, user, TestEnv};

/// `h`'s `integrity_violation` events.
fn integrity_events(h: &TestEnv) -> Vec<serde_json::Value> {
    h.json(&[
        "audit",
        "ls",
        "--type",
        "integrity_violation",
        "--limit",
        "1000",
    ])
    .as_array()
    .cloned()
    .unwrap_or_default()
}

/// Every integrity-failure count `h`'s status shows: the fleet's and the mount's.
fn integrity_counts(h: &TestEnv) -> (u64, u64) {
    let s = h.json(&["status"]);
    (
        s["fleet"]["integrity_failures"].as_u64().expect("fleet figures"),
        s["mount"]["counters"]["integrity_failures"]
            .as_u64()
            .expect("mount figures"),
    )
}

/// Review item: `arca get` of an uncached chunk during a store outage answered 422
/// integrity_violation and left an `integrity_violation` event. An outage is not damage: the
/// answer is 503 (`unavailable`), nothing is audited or counted as an integrity failure, and
/// the mount's EIO for the same reason is not either.
#[test]
fn fleet_store_outage_is_unavailable_not_an_integrity_failure() {
    let c = Cluster::start_kind("single", 24_000);
    let g = c.endpoints[0].clone();
    let (st, _, _) = request(&g, "PUT", &format!("/{BUCKET}"), &[], b"");
    assert_eq!(st, 200, "creating the bucket");
    let hosts = fleet_hosts(&["a", "c"], &[vec![g.as_str()], vec![g.as_str()]]);
    let (a, hc) = (&hosts[0], &hosts[1]);
    a.root_key();
    let u = user("arca-e2e-fleet-pub");
    let d1 = model_dir(a, &u, "outage1", 3 << 20, 24_001);
    a.ok(&[
        "push",
        d1.to_str().unwrap(),
        "--name",
        "om",
        "--version",
        "1.0.0",
    ]);
    within(10, "C sees the version", || {
        hc.arca(&["show", "om", "1.0.0"]).status.success()
    });
    let events_before = integrity_events(hc).len();
    assert_eq!(integrity_counts(hc), (0, 0));

    c.stop();
    // `get` through the CLI: refused, saying the store is unavailable, never "integrity".
    let out = hc.path().join("got");
    let err = hc.fails(&["get", "om", "1.0.0", "--out", out.to_str().unwrap()]);
    assert!(
        err.contains("object store is unavailable") && !err.contains("integrity"),
        "{err}"
    );
    // The same request on the socket: 503 with the `unavailable` code.
    let (status, body) = hc.raw(
        "GET",
        "/v1/models/om/versions/1.0.0/file?path=model.safetensors",
        b"",
    );
    let body: serde_json::Value = serde_json::from_slice(&body).expect("an error body");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "unavailable", "{body}");
    // The mount: EIO, also not counted as an integrity failure.
    let t = Instant::now();
    let e = std::fs::read(hc.mnt().join("om/1.0.0/model.safetensors"))
        .expect_err("an uncached read with the store down");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(
        integrity_events(hc).len(),
        events_before,
        "an outage left integrity_violation events: {:?}",
        integrity_events(hc)
    );
    assert_eq!(integrity_counts(hc), (0, 0), "an outage counted as damage");
    println!("OUTAGE|get: 503 unavailable ({err}); mount: EIO; no integrity event, no count");

    // Back: the same `get` serves the bytes.
    let mut c = c;
    c.restart();
    within(30, "C serves the version again", || {
        hc.arca(&["get", "om", "1.0.0", "--out", out.to_str().unwrap()])
            .status
            .success()
    });
    assert_eq!(
        sha256_hex(&std::fs::read(out.join("model.safetensors")).unwrap()),
        sha256_hex(&std::fs::read(d1.join("model.safetensors")).unwrap())
    );
}

/// Review item: a reader waiting for a chunk another reader's fetch streamed waited as long as
/// the stream progressed, and the reader that started a fetch streamed the whole extent on its
/// own thread, so on a trickling link the mount's read threads all waited on one extent and
/// reads of cached chunks queued behind them. Now every uncached read ends (data or EIO)
/// within its bound, and cached reads are served at once meanwhile, on threads of their own.
#[test]
fn fleet_reads_on_a_trickling_link_end_in_time_and_cached_reads_stay_fast() {
    use super::fleet::{fleet_hosts_wrapped, push_as};
    use super::fleet_netns::{slot, Netns};
    use std::os::unix::fs::FileExt;
    use std::sync::mpsc;

    let ns = Netns::new(slot(24_100));
    let c = Cluster::start_on(&ns.host_ip, "single", 24_100);
    let g = c.endpoints[0].clone();
    let (st, _, _) = request(&g, "PUT", &format!("/{BUCKET}"), &[], b"");
    assert_eq!(st, 200, "creating the bucket");
    let hosts = fleet_hosts_wrapped(
        &["a", "s"],
        &[vec![g.as_str()], vec![g.as_str()]],
        "",
        &[vec![], ns.wrapper()],
    );
    let (a, hs) = (&hosts[0], &hosts[1]);
    a.root_key();
    let u = user("arca-e2e-fleet-pub");
    a.trusted_key_for(&u);
    a.ok(&["role", "assign", &u.name, "developer", "--model", "tm"]);
    let (small, big) = (8usize << 20, 24usize << 20);
    let d1 = model_dir(a, &u, "trickle-cached", small, 24_101);
    let d2 = model_dir(a, &u, "trickle-cold", big, 24_102);
    push_as(a, &u, &d1, "tm", "1.0.0");
    push_as(a, &u, &d2, "tm", "2.0.0");
    within(10, "S sees both versions", || {
        hs.arca(&["show", "tm", "2.0.0"]).status.success()
    });
    // 1.0.0 in S's cache (through `get`, so the kernel's page cache holds none of it).
    let got = hs.path().join("got");
    hs.ok(&["get", "tm", "1.0.0", "--out", got.to_str().unwrap()]);
    let want1 = std::fs::read(d1.join("model.safetensors")).unwrap();
    let want2 = std::fs::read(d2.join("model.safetensors")).unwrap();

    // 256 kbit/s: the 24 MiB pack would take about 13 minutes to stream.
    ns.slow("256kbit", "2000ms");
    let cold = hs.mnt().join("tm/2.0.0/model.safetensors");
    let (tx, rx) = mpsc::channel();
    let readers = 12;
    for i in 0..readers {
        let (cold, tx) = (cold.clone(), tx.clone());
        let at = (i * (2 << 20)) as u64;
        std::thread::spawn(move || {
            let t = Instant::now();
            let mut buf = vec![0u8; 64 << 10];
            let r = std::fs::File::open(&cold).and_then(|f| f.read_exact_at(&mut buf, at));
            let _ = tx.send((i, at, r.map(|()| buf), t.elapsed()));
        });
        if i == 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    drop(tx);
    // Meanwhile reads of the cached version, each of bytes never read before through the
    // mount: each must be served at once, not queued behind the uncached ones.
    std::thread::sleep(Duration::from_millis(700));
    let hot = hs.mnt().join("tm/1.0.0/model.safetensors");
    let mut slowest = Duration::ZERO;
    for k in 0..24u64 {
        let at = k * (256 << 10);
        let (htx, hrx) = mpsc::channel();
        let hot = hot.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let mut buf = vec![0u8; 64 << 10];
            let r = std::fs::File::open(&hot).and_then(|f| f.read_exact_at(&mut buf, at));
            let _ = htx.send((r.map(|()| buf), t.elapsed()));
        });
        let (r, took) = hrx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| {
                panic!("a read of cached bytes at {at} waited more than 5 s behind uncached ones")
            });
        let bytes = r.unwrap_or_else(|e| panic!("a read of cached bytes at {at}: {e}"));
        assert_eq!(bytes[..], want1[at as usize..at as usize + (64 << 10)]);
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(
        slowest < Duration::from_secs(2),
        "a cached read took {slowest:?} while uncached ones trickled"
    );
    // Every uncached read ends, with its bytes or EIO, within 10 s of its start.
    let (mut served, mut eio, mut longest) = (0, 0, Duration::ZERO);
    for _ in 0..readers {
        let (i, at, r, took) = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("an uncached read still waits after 20 s\n{}", hs.log()));
        longest = longest.max(took);
        assert!(
            took < Duration::from_secs(10),
            "uncached reader {i} (at {at}) ended after {took:?}"
        );
        match r {
            Ok(bytes) => {
                assert_eq!(bytes[..], want2[at as usize..at as usize + (64 << 10)]);
                served += 1;
            }
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "reader {i}: {e}");
                eio += 1;
            }
        }
    }
    println!(
        "TRICKLE|256 kbit/s link: {readers} uncached readers of one pack: {served} served, {eio} EIO, the longest {longest:?}; 24 cached reads meanwhile, the slowest {slowest:?}"
    );

    // The link back: the version reads whole and byte-identical; nothing was counted as damage.
    // (Calls that failed on the slowed link mark the store down for a second, and streams
    // that stalled there fail their readers: the first reads after it may still fail.)
    ns.fast();
    let mut back = Vec::new();
    let mut last = None;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        match std::fs::read(&cold) {
            Ok(b) => {
                back = b;
                break;
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        sha256_hex(&back),
        sha256_hex(&want2),
        "the cold version once the link is back ({last:?} before)\n{}",
        hs.log()
    );
    println!(
        "TRICKLE|link back: the cold version read whole after {:?} ({last:?} before)",
        t.elapsed()
    );
    assert_eq!(integrity_counts(hs).0, 0, "a slow link counted as damage");
}
