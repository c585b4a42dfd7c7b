//! The fleet's limits an attacker's review found (issue #10/#14), each shown fixed against a real
//! SeaweedFS: a store outage is not an integrity failure, reads are bounded on a trickling link
//! while cached reads stay fast, GC entries are checked against the replica before they are
//! applied, junk keys planted under `log/` blind neither the gap check nor the sweep, and
//! heartbeats are signed by their host and witness a store that shows a host an old log.

use std::time::{Duration, Instant};

use super::fleet::{fleet_hosts, model_dir, request, within, Cluster, BUCKET};
use super::fleet_audit::verify;
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
        s["fleet"]["integrity_failures"]
            .as_u64()
            .expect("fleet figures"),
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

/// A compromised fleet host: the fleet's keys (from the store, unwrapped with the KEK every
/// host holds) and a signing key pinned under `name`, writing validly signed, sealed and
/// chained entries of its own making at the log's next seq.
struct RogueHost {
    name: String,
    key: arca_core::sign::SecretKey,
    keys: arcad::crypt::Keyring,
    gateway: String,
}

impl RogueHost {
    fn new(name: &str, gateway: &str, kek: &std::path::Path) -> Self {
        let remote = arcad::remote::Remote::s3(&arcad::remote::RemoteConfig {
            endpoints: vec![format!("http://{gateway}")],
            bucket: BUCKET.into(),
            region: "us-east-1".into(),
            prefix: "arca".into(),
            credentials_file: None,
            ca_file: None,
            timeout: Duration::from_secs(5),
            // The rogue host writes an entry on a bucket without Object Lock.
            retention: None,
        })
        .expect("a client for the store");
        let kek = arcad::keys::Kek::load(kek).expect("the fleet's KEK");
        let seed = arcad::fleet::load_or_create_keys(&remote, &kek, false).expect("fleet keys");
        RogueHost {
            name: name.into(),
            key: arca_core::sign::SecretKey::generate().unwrap(),
            keys: arcad::crypt::Keyring::new(seed.deks, seed.current, seed.id_key),
            gateway: gateway.into(),
        }
    }

    fn public(&self) -> String {
        self.key.public().to_string()
    }

    /// Puts `hb` as host `host`'s heartbeat, sealed with the fleet's keys and signed with this
    /// host's own key.
    fn put_heartbeat(&self, host: &str, hb: &arcad::fleet::heartbeat::Heartbeat) {
        let bytes = arcad::fleet::heartbeat::seal(&self.keys, &self.key, hb).expect("sealing");
        let (st, _, _) = request(
            &self.gateway,
            "PUT",
            &format!("/{BUCKET}/arca/hosts/{host}"),
            &[],
            &bytes,
        );
        assert_eq!(st, 200, "writing host {host}'s heartbeat");
    }

    /// Writes `gc` as the log's next entry; returns its seq.
    fn publish_gc(&self, gc: arcad::fleet::log::GcWire) -> u64 {
        use arcad::fleet::log::{entry_hash, seal_entry, Entry, EventWire, GENESIS};
        let keys = super::fleet::list_keys(&self.gateway, "arca/log/");
        let last = keys
            .iter()
            .filter_map(|k| k.strip_prefix("arca/log/"))
            .max();
        let (seq, prev) = match last {
            None => (1, GENESIS),
            Some(k) => {
                let (st, _, body) = request(
                    &self.gateway,
                    "GET",
                    &format!("/{BUCKET}/arca/log/{k}"),
                    &[],
                    b"",
                );
                assert_eq!(st, 200);
                (k.parse::<u64>().unwrap() + 1, entry_hash(&body))
            }
        };
        let e = Entry {
            seq,
            prev,
            host: self.name.clone(),
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
            events: vec![EventWire::from_draft(
                &arca_core::audit::Draft::new(arca_core::audit::EventKind::GcRemoval, "arcad")
                    .detail("fleet_packs_deleted", gc.deleted.len().to_string()),
            )],
            records: Vec::new(),
            chunks: Vec::new(),
            gc: Some(gc),
        };
        let bytes = seal_entry(&self.keys, &self.key, &e).expect("sealing the entry");
        let (st, _, _) = request(
            &self.gateway,
            "PUT",
            &format!("/{BUCKET}/arca/log/{seq:020}"),
            &[("if-none-match", "*")],
            &bytes,
        );
        assert_eq!(st, 200, "writing entry {seq}");
        seq
    }
}

/// Appends `name = "key"` to every host's `[fleet.hosts]` (the config's last table) and
/// restarts it.
fn pin_host(hosts: &mut [TestEnv], name: &str, key: &str) {
    for h in hosts.iter_mut() {
        let cfg = h.path().join("arcad.toml");
        let mut t = std::fs::read_to_string(&cfg).unwrap();
        assert!(t.contains("[fleet.hosts]"));
        t.push_str(&format!("{name} = \"{key}\"\n"));
        std::fs::write(&cfg, t).unwrap();
        h.stop();
        h.start();
    }
}

/// A single-process store on `port` with hosts `a` and `b`, and a compromised host `z` pinned
/// on both: the cluster, its gateway, the hosts and `z`.
fn with_rogue_host(port: u16) -> (Cluster, String, Vec<TestEnv>, RogueHost) {
    let c = Cluster::start_kind("single", port);
    let g = c.endpoints[0].clone();
    let (st, _, _) = request(&g, "PUT", &format!("/{BUCKET}"), &[], b"");
    assert_eq!(st, 200, "creating the bucket");
    let mut hosts = fleet_hosts(&["a", "b"], &[vec![g.as_str()], vec![g.as_str()]]);
    let rogue = RogueHost::new("z", &g, &hosts[0].path().join("kek.key"));
    pin_host(&mut hosts, "z", &rogue.public());
    (c, g, hosts, rogue)
}

/// Waits until `h` is halted with a reason containing `needle`; returns the reason.
fn halted_with(h: &TestEnv, needle: &str) -> String {
    let t = Instant::now();
    loop {
        let s = h.json(&["status"]);
        if let Some(why) = s["fleet"]["halted"].as_str() {
            assert!(why.contains(needle), "halted for another reason: {why}");
            return why.to_owned();
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "not halted: {s}\n{}",
            h.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Review item: hosts applied another host's fleet GC entry unchecked, so a compromised host
/// holding the fleet's keys could record a pack that holds live chunks as deleted: every host
/// dropped its locations (the version became unreadable wherever it was not cached) and an
/// honest GC run then deleted the object as a leftover. Now each host checks a GC entry
/// against its own replica first, and halts on it, naming it, as on any entry that does not
/// apply: the pack keeps its locations and the version stays readable.
#[test]
fn fleet_gc_entry_from_a_compromised_host_is_checked_and_refused() {
    let (_c, g, hosts, rogue) = with_rogue_host(24_200);
    let (a, b) = (&hosts[0], &hosts[1]);
    a.root_key();
    let u = user("arca-e2e-fleet-pub");
    let d = model_dir(a, &u, "gcforge", 3 << 20, 24_201);
    a.ok(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        "pm",
        "--version",
        "1.0.0",
    ]);
    within(10, "B sees the version", || {
        b.arca(&["show", "pm", "1.0.0"]).status.success()
    });
    let packs = super::fleet::list_keys(&g, "arca/packs/");
    assert_eq!(packs.len(), 1, "{packs:?}");
    let pack: arca_core::id::PackId = packs[0]
        .strip_prefix("arca/packs/")
        .unwrap()
        .parse()
        .unwrap();
    let applied = a.json(&["status"])["fleet"]["applied_seq"]
        .as_u64()
        .unwrap();

    // Z records the live pack as deleted (no condemnation before, no grace).
    let seq = rogue.publish_gc(arcad::fleet::log::GcWire {
        deleted: vec![pack],
        ..Default::default()
    });
    for h in [a, b] {
        let why = halted_with(h, &format!("log entry {seq} (fleet GC by host z)"));
        assert!(
            why.contains(&format!("condemns or deletes pack {pack}")) && why.contains("pm 1.0.0"),
            "{why}"
        );
        assert_eq!(
            h.json(&["status"])["fleet"]["applied_seq"].as_u64(),
            Some(applied),
            "the entry was not applied"
        );
        let events = integrity_events(h);
        assert!(
            events.iter().any(|e| e
                .to_string()
                .contains(&format!("log entry {seq} (fleet GC by host z)"))),
            "no integrity_violation event names the entry: {events:?}"
        );
    }
    // B never read the version: it fetches it from the pack, which keeps its locations.
    let got = std::fs::read(b.mnt().join("pm/1.0.0/model.safetensors")).expect("still readable");
    assert_eq!(
        sha256_hex(&got),
        sha256_hex(&std::fs::read(d.join("model.safetensors")).unwrap())
    );
    assert_eq!(super::fleet::list_keys(&g, "arca/packs/"), packs);
    println!("GCFORGE|a deletion of a live pack signed by pinned host z at seq {seq}: A and B halted naming it, applied nothing; B still reads the version from the pack");
}

/// Puts `n` small objects named `arca/log/{name}-junk-{i}` (keys a bucket writer without keys
/// may plant), eight at a time.
fn plant_junk(gw: &str, name: &str, n: usize) {
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                for i in (t..n).step_by(8) {
                    let (st, _, _) = request(
                        gw,
                        "PUT",
                        &format!("/{BUCKET}/arca/log/{name}-junk-{i:05}"),
                        &[],
                        b"junk",
                    );
                    assert_eq!(st, 200, "planting junk");
                }
            });
        }
    });
}

/// The bytes of log entry `seq`.
fn entry_bytes(gw: &str, seq: u64) -> Vec<u8> {
    let (st, _, body) = request(
        gw,
        "GET",
        &format!("/{BUCKET}/arca/log/{seq:020}"),
        &[],
        b"",
    );
    assert_eq!(st, 200, "entry {seq}");
    body
}

/// Review item: keys under `log/` that are not entry names counted toward the listings that
/// the sweep of applied entries, the gap check and the check before a publish page through, so
/// a bucket writer who planted enough of them between entries blinded all three. Now they are
/// skipped (a run of them under one entry name in one listing) and never counted: a deleted
/// applied entry and a gap are named behind thousands of them, and no change is published
/// under the gap.
#[test]
fn fleet_junk_keys_in_the_log_blind_neither_the_sweep_nor_the_gap_check() {
    let u = user("arca-e2e-fleet-pub");
    let start = |port: u16| {
        let c = Cluster::start_kind("single", port);
        let g = c.endpoints[0].clone();
        let (st, _, _) = request(&g, "PUT", &format!("/{BUCKET}"), &[], b"");
        assert_eq!(st, 200, "creating the bucket");
        let hosts = fleet_hosts(&["a", "c"], &[vec![g.as_str()], vec![g.as_str()]]);
        hosts[0].root_key();
        (c, g, hosts)
    };
    let head = |h: &TestEnv| {
        h.json(&["status"])["fleet"]["applied_seq"]
            .as_u64()
            .unwrap()
    };

    // 1. The sweep: 1,500 junk keys after entry 1, then entry 2 deleted.
    let (_c1, g1, hosts) = start(24_300);
    let (a, hc) = (&hosts[0], &hosts[1]);
    for (i, v) in ["1.0.0", "1.1.0", "1.2.0"].iter().enumerate() {
        let d = model_dir(a, &u, &format!("junk{i}"), 64 << 10, 24_301 + i as u64);
        a.ok(&["push", d.to_str().unwrap(), "--name", "jm", "--version", v]);
    }
    within(10, "C applied every entry", || head(hc) == head(a));
    assert!(head(a) >= 4, "entries: {}", head(a));
    plant_junk(&g1, &format!("{:020}", 1), 1_500);
    let (st, _, _) = request(
        &g1,
        "DELETE",
        &format!("/{BUCKET}/arca/log/{:020}", 2),
        &[],
        b"",
    );
    assert!(st == 204 || st == 200, "deleting entry 2: {st}");
    let t = Instant::now();
    for h in [a, hc] {
        halted_with(h, "log entry 2, applied here, is gone from the store");
    }
    println!(
        "JUNK|1,500 junk keys after entry 1, entry 2 deleted: both hosts named it within {:?}",
        t.elapsed()
    );

    // 2. The gap check and the publisher: 5,100 junk keys under each of the head's name and
    // the next one's (more than one listing of 10,000 keys), then an entry planted at head + 2.
    let (_c2, g2, hosts) = start(24_400);
    let (a, hc) = (&hosts[0], &hosts[1]);
    let d = model_dir(a, &u, "gap", 64 << 10, 24_401);
    a.ok(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        "gm",
        "--version",
        "1.0.0",
    ]);
    within(10, "C applied every entry", || head(hc) == head(a));
    let s = head(a);
    plant_junk(&g2, &format!("{s:020}"), 5_100);
    plant_junk(&g2, &format!("{:020}", s + 1), 5_100);
    let copy = entry_bytes(&g2, 1);
    let (st, _, _) = request(
        &g2,
        "PUT",
        &format!("/{BUCKET}/arca/log/{:020}", s + 2),
        &[],
        &copy,
    );
    assert_eq!(st, 200);
    // A change on A at once: its look past the seq it would take sees the planted entry.
    let out = a.arca(&["promote", "gm", "1.0.0", "--to", "staging"]);
    assert!(
        !out.status.success(),
        "a change was published under a gap: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let gap = format!(
        "gap in the log: entry {} is missing but entry {} exists",
        s + 1,
        s + 2
    );
    for h in [a, hc] {
        halted_with(h, &gap);
        assert_eq!(head(h), s, "nothing applied past the gap");
    }
    assert_eq!(
        request(
            &g2,
            "GET",
            &format!("/{BUCKET}/arca/log/{:020}", s + 1),
            &[],
            b""
        )
        .0,
        404,
        "no entry written into the gap"
    );
    println!(
        "JUNK|10,200 junk keys around the head, an entry planted at head + 2: the change refused ({}), both hosts halted naming the gap",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Review item: heartbeats were only sealed, so any host holding the fleet's keys could write
/// another host's (claim fewer audit segments for it, hiding a deletion), and nothing exposed a
/// store showing one host an old log. Now a heartbeat is signed by its host and taken only
/// under the key pinned for that name; and hosts compare their view of the log with the other
/// hosts' signed heartbeats. A compromised host can raise that alarm falsely (its own
/// heartbeat names an entry nobody can read), but changes nothing else.
#[test]
fn fleet_heartbeats_are_signed_and_witness_an_old_view() {
    let (_c, _, mut hosts, rogue) = with_rogue_host(24_600);
    let seen = |h: &TestEnv, name: &str| -> serde_json::Value {
        h.json(&["fleet", "status"])["hosts"]
            .as_array()
            .and_then(|v| v.iter().find(|x| x["host"] == name).cloned())
            .unwrap_or(serde_json::Value::Null)
    };
    within(15, "A sees B's signed heartbeat", || {
        let b = seen(&hosts[0], "b");
        b.is_object() && b["unreadable"].is_null()
    });
    let (ok, _) = verify(&hosts[0]);
    assert!(ok, "verify before anything was forged");

    // B stopped (so it does not rewrite its heartbeat), and z writes one for it, sealed with
    // the fleet's keys and signed with z's own key, claiming no audit segments.
    hosts[1].stop();
    let head = hosts[0].json(&["status"])["fleet"]["applied_seq"]
        .as_u64()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let beat = |host: &str, applied: u64, at_ms: u64| arcad::fleet::heartbeat::Heartbeat {
        host: host.into(),
        applied,
        at_ms,
        halted: None,
        store_error: None,
        audit_segments: Some(0),
    };
    rogue.put_heartbeat("b", &beat("b", head, now));
    let b = seen(&hosts[0], "b");
    println!("HEARTBEAT|forged for b by z|{b}");
    assert!(
        b["unreadable"]
            .as_str()
            .is_some_and(|w| w.contains("not signed by the key the fleet pins for host b")),
        "{b}"
    );
    let (ok, v) = verify(&hosts[0]);
    let bv = v["fleet_hosts"]
        .as_array()
        .and_then(|h| h.iter().find(|x| x["host"] == "b").cloned())
        .unwrap();
    println!("HEARTBEAT|verify with b's heartbeat forged|{bv}");
    assert!(!ok, "verify passed with a forged heartbeat: {v}");
    assert!(
        bv["fault"]
            .as_str()
            .is_some_and(|f| f.contains("heartbeat")),
        "{bv}"
    );
    // B back: it rewrites its own, and verify passes again.
    hosts[1].start();
    within(20, "verify passes once B rewrote its heartbeat", || {
        verify(&hosts[0]).0
    });

    // z's own heartbeat, validly signed, says it applied five entries more than exist, 20 s
    // ago: A has read the log's end since, so A reports an old view, naming z and the entry.
    let claimed = head + 5;
    rogue.put_heartbeat("z", &beat("z", claimed, now - 20_000));
    let t = Instant::now();
    within(30, "A reports a stale view", || {
        hosts[0].json(&["status"])["fleet"]["stale_view"].is_string()
    });
    let s = hosts[0].json(&["status"]);
    let why = s["fleet"]["stale_view"].as_str().unwrap().to_owned();
    println!(
        "HEARTBEAT|stale view reported after {:?}|{why}",
        t.elapsed()
    );
    assert!(
        why.contains("host z") && why.contains(&format!("entry {claimed}")),
        "{why}"
    );
    assert!(
        s["fleet"]["halted"].is_null(),
        "a stale view is not a halt: {s}"
    );
    let (st, m) = hosts[0].raw("GET", "/metrics", b"");
    assert_eq!(st, 200);
    let m = String::from_utf8_lossy(&m);
    assert!(m.contains("arca_fleet_stale_view 1"), "{m}");
    let text = hosts[0].ok(&["status"]);
    assert!(text.contains("STALE VIEW"), "{text}");
    // z's heartbeat no longer claims it: the alarm clears once A reads it again.
    rogue.put_heartbeat("z", &beat("z", head, now));
    let t = Instant::now();
    within(30, "A clears the stale view", || {
        hosts[0].json(&["status"])["fleet"]["stale_view"].is_null()
    });
    println!("HEARTBEAT|stale view cleared after {:?}", t.elapsed());
}
