//! Issue #6: running on hosts. Garbage collection and retention, with readers active; the mount
//! seen from another mount namespace.

use std::io::Read;
use std::process::Command;

use crate::harness::{pseudo_random, TestEnv};

const MIB: usize = 1 << 20;

fn write_version(env: &TestEnv, tag: &str, files: &[(&str, Vec<u8>)]) -> std::path::PathBuf {
    let d = env.path().join(tag);
    std::fs::create_dir_all(&d).unwrap();
    for (name, data) in files {
        std::fs::write(d.join(name), data).unwrap();
    }
    d
}

#[test]
fn gc_removes_exactly_the_unreferenced_chunks_and_never_breaks_a_reader() {
    let mut env = TestEnv::new();
    env.root_key();
    // 1.0.0 and 2.0.0 share the first 24 MiB of big.bin; only1.bin is 1.0.0's alone.
    let shared = pseudo_random(24 * MIB, 1);
    let big1 = [shared.clone(), pseudo_random(8 * MIB, 2)].concat();
    let big2 = [shared, pseudo_random(8 * MIB, 4)].concat();
    let only1 = pseudo_random(6 * MIB, 3);
    let keep = pseudo_random(32 * MIB, 5);
    let d1 = write_version(
        &env,
        "v1",
        &[("big.bin", big1), ("only1.bin", only1.clone())],
    );
    let d2 = write_version(&env, "v2", &[("big.bin", big2), ("keep.bin", keep.clone())]);
    for (d, v) in [(&d1, "1.0.0"), (&d2, "2.0.0")] {
        env.ok(&["push", d.to_str().unwrap(), "--name", "gcm", "--version", v]);
    }
    let before = env.referenced_chunks();
    env.stop();
    assert_eq!(env.stored_chunks(), before, "no orphans before the test");
    env.start();

    // A reader streams 2.0.0's keep.bin through the mount the whole time; another holds
    // 1.0.0's only1.bin open (not yet read) across the deletion of 1.0.0.
    let mnt = env.mnt();
    let held = std::fs::File::open(mnt.join("gcm/1.0.0/only1.bin")).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (streamed, first) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut f = std::fs::File::open(mnt.join("gcm/2.0.0/keep.bin")).unwrap();
            let mut out = Vec::new();
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
                if !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
            out
        });
        env.ok(&["delete", "gcm", "1.0.0"]);
        let dry = env.json(&["gc", "--dry-run"]);
        let first = env.json(&["gc"]);
        assert_eq!(
            (dry["deleted_chunks"].clone(), dry["open_in_mount"].clone()),
            (
                first["deleted_chunks"].clone(),
                first["open_in_mount"].clone()
            ),
            "a dry run reports what the real run does"
        );
        assert!(first["deleted_chunks"].as_u64().unwrap() > 0, "{first}");
        assert!(
            first["open_in_mount"].as_u64().unwrap() > 0,
            "only1.bin's chunks are held by the open file: {first}"
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (reader.join().unwrap(), first)
    });
    assert!(streamed == keep, "the reader of 2.0.0 got other bytes");
    // The open file of the deleted version reads whole and correct.
    let mut got = Vec::new();
    (&held).read_to_end(&mut got).unwrap();
    assert!(
        got == only1,
        "a file open across GC changed under its reader"
    );
    drop(held);
    // Once it is closed, its chunks go too.
    let second = env.json(&["gc"]);
    assert!(second["deleted_chunks"].as_u64().unwrap() > 0, "{second}");
    assert_eq!(second["open_in_mount"], 0);
    let after = env.referenced_chunks();
    let deleted =
        first["deleted_chunks"].as_u64().unwrap() + second["deleted_chunks"].as_u64().unwrap();
    env.ok(&["verify", "gcm"]);
    env.stop();
    let stored = env.stored_chunks();
    assert_eq!(stored, after, "exactly the referenced chunks remain");
    assert_eq!(
        before - after,
        deleted as usize,
        "every deleted chunk was unreferenced"
    );
    env.start();
    let events = env.json(&["audit", "ls", "--type", "gc_removal"]);
    assert_eq!(events.as_array().unwrap().len(), 2, "{events}");
}

/// Local pack files in the store. A push closes a file once it holds 64 MiB, after syncing it
/// and indexing its chunks, and only then starts the next: so a second file means the first
/// one's chunks are durable and indexed (docs/format.md, "Local pack files").
fn pack_files(env: &TestEnv) -> usize {
    std::fs::read_dir(env.state_dir().join("packs"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn gc_collects_what_a_killed_push_left_and_expired_archived_versions() {
    let mut env = TestEnv::new();
    env.root_key();
    let small = write_version(&env, "small", &[("a.bin", pseudo_random(2 * MIB, 7))]);
    for v in ["1.0.0", "1.1.0"] {
        env.ok(&[
            "push",
            small.to_str().unwrap(),
            "--name",
            "ret",
            "--version",
            v,
        ]);
    }

    // A push killed halfway leaves chunks no version references.
    let big = write_version(&env, "big", &[("b.bin", pseudo_random(192 * MIB, 8))]);
    let files = pack_files(&env);
    let mut push = env
        .arca_cmd(&[
            "push",
            big.to_str().unwrap(),
            "--name",
            "ret",
            "--version",
            "2.0.0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A push's chunks are indexed (and durable) once their pack file is synced: when it is
    // full (64 MiB), or before the version commits. Once the push has started a second new
    // file, the kill leaves durable orphans. (A fixed wait was not enough: on an idle machine
    // the whole push sometimes finished first.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while pack_files(&env) < files + 2 {
        assert!(
            push.try_wait().unwrap().is_none(),
            "the push ended before it filled a pack file"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no full pack file within 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    env.kill();
    let _ = push.wait();
    let orphaned = env.stored_chunks();
    env.start();
    let referenced = env.referenced_chunks();
    assert!(
        orphaned > referenced,
        "the killed push wrote chunks ({orphaned} vs {referenced})"
    );
    let r = env.json(&["gc"]);
    assert_eq!(
        r["deleted_chunks"].as_u64().unwrap() as usize,
        orphaned - referenced,
        "{r}"
    );

    // Retention: an archived version older than the policy's retention is removed by GC, and
    // the removal is audited; non-archived versions stay whatever their age.
    env.ok(&["policy", "set", "ret", "--require-approval", "no"]);
    for to in ["staging", "production", "deprecated", "archived"] {
        env.ok(&["promote", "ret", "1.0.0", "--to", to]);
    }
    let r = env.json(&["gc", "--dry-run"]);
    assert!(
        r["expired_versions"].as_array().unwrap().is_empty(),
        "365 days by default"
    );
    env.ok(&["policy", "set", "ret", "--retention-days", "0"]);
    let r = env.json(&["gc"]);
    assert_eq!(
        r["expired_versions"],
        serde_json::json!([{"name": "ret", "version": "1.0.0"}])
    );
    let versions: Vec<String> = env
        .json(&["ls", "ret"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(versions, ["1.1.0"]);
    let ev = env.json(&["audit", "ls", "--model", "ret", "--type", "gc_removal"]);
    assert_eq!(ev[0]["details"]["reason"], "retention");
    env.ok(&["verify", "ret"]);
    env.ok(&["audit", "verify"]);
}

#[test]
fn the_mount_is_visible_from_another_mount_namespace() {
    let env = TestEnv::new();
    env.root_key();
    let d = write_version(&env, "ns", &[("w.bin", pseudo_random(MIB, 9))]);
    env.ok(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        "nsm",
        "--version",
        "1.0.0",
    ]);
    let file = env.mnt().join("nsm/1.0.0/w.bin");
    // A new mount namespace, as a sandboxed service's (PrivateTmp=, ProtectSystem=, …) has:
    // it starts as a copy of the host's, and the daemon's mount must be in it.
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "slave", "sha256sum"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next(),
        Some(crate::harness::sha256sum(&d.join("w.bin")).as_str())
    );
    // And a namespace made before a version was pushed sees the new version too: the mount is
    // one FUSE filesystem, its content is not copied per namespace.
    let mut waiting = Command::new("unshare")
        .args(["--mount", "--propagation", "slave", "sh", "-c"])
        .arg(format!(
            "for i in $(seq 100); do [ -f {0} ] && exec sha256sum {0}; sleep 0.1; done; exit 3",
            env.mnt().join("nsm/2.0.0/w.bin").display()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    env.ok(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        "nsm",
        "--version",
        "2.0.0",
    ]);
    let st = waiting.wait().unwrap();
    assert!(st.success(), "the other namespace never saw 2.0.0");
    let mut s = String::new();
    waiting
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert!(s.starts_with(&crate::harness::sha256sum(&d.join("w.bin"))));
}

#[test]
fn systemd_hears_ready_after_the_mount_answers_then_watchdog_pings_then_stopping() {
    use std::os::unix::net::UnixDatagram;
    let mut env = TestEnv::new();
    env.stop();
    let sock = env.path().join("notify.sock");
    let listener = UnixDatagram::bind(&sock).unwrap();
    listener
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    env.daemon_env = vec![
        ("NOTIFY_SOCKET".into(), sock.display().to_string()),
        // A ping every 200 ms.
        ("WATCHDOG_USEC".into(), "400000".into()),
    ];
    let mnt = env.mnt();
    let recv = |l: &UnixDatagram| -> String {
        let mut buf = [0u8; 512];
        let n = l.recv(&mut buf).expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let msg = recv(&listener);
            // What holds at the moment READY=1 arrives.
            let answering = crate::harness::is_mounted(&mnt)
                && std::fs::metadata(&mnt).is_ok_and(|m| m.is_dir());
            (msg, answering)
        });
        env.start();
        waiter.join().unwrap()
    });
    assert_eq!(first.0.trim(), "READY=1");
    assert!(first.1, "READY=1 came before the mount answered");
    let t = std::time::Instant::now();
    let mut pings = 0;
    while pings < 3 {
        let m = recv(&listener);
        assert_eq!(m.trim(), "WATCHDOG=1", "{m}");
        pings += 1;
    }
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "pings come every 200 ms"
    );
    env.stop();
    // Pings already in flight may arrive first; STOPPING=1 must follow.
    let mut last = recv(&listener);
    while last.trim() == "WATCHDOG=1" {
        last = recv(&listener);
    }
    assert_eq!(last.trim(), "STOPPING=1");
}

/// GET /metrics over the socket (and over TCP when configured), parsed as Prometheus text.
fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text")
}

fn value(s: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    s.samples
        .iter()
        .find(|x| x.metric == name && label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"))
}

#[test]
fn metrics_are_scraped_and_parsed_over_the_socket_and_tcp() {
    let mut env = TestEnv::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.stop();
    env.daemon_args = vec!["--metrics-addr".into(), format!("127.0.0.1:{port}")];
    env.start();
    env.root_key();
    let d = write_version(&env, "m", &[("w.bin", pseudo_random(3 * MIB, 11))]);
    for v in ["1.0.0", "1.1.0"] {
        env.ok(&["push", d.to_str().unwrap(), "--name", "met", "--version", v]);
    }
    env.ok(&["show", "met", "1.0.0"]);
    env.ok(&["promote", "met", "1.0.0", "--to", "staging"]);
    let _ = std::fs::read(env.mnt().join("met/1.0.0/w.bin")).unwrap();
    env.fails(&["show", "met", "9.9.9"]);

    let (status, body) = env.raw("GET", "/metrics", b"");
    assert_eq!(status, 200);
    let s = scrape(&String::from_utf8(body).unwrap());
    assert_eq!(
        value(
            &s,
            "arca_audit_events_total",
            Some(("type", "registration"))
        ),
        2.0
    );
    assert_eq!(
        value(&s, "arca_audit_events_total", Some(("type", "promotion"))),
        1.0
    );
    assert!(value(&s, "arca_mount_bytes_served_total", None) >= (3 * MIB) as f64);
    assert_eq!(value(&s, "arca_store_versions", None), 2.0);
    let show_route = "/v1/models/:name/versions/:version";
    let count = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "arca_request_duration_seconds"
                && x.labels.get("route") == Some(show_route)
                && x.labels.get("status") == Some("200")
        })
        .and_then(|x| match &x.value {
            // The +Inf bucket holds every observation.
            prometheus_parse::Value::Histogram(h) => h.last().map(|b| b.count),
            _ => None,
        });
    assert!(
        count.unwrap_or(0.0) >= 1.0,
        "the show request is in the latency histogram"
    );
    assert!(
        s.samples
            .iter()
            .any(|x| x.metric == "arca_request_duration_seconds"
                && x.labels.get("route") == Some(show_route)
                && x.labels.get("status") == Some("404")),
        "the refused lookup has its own series"
    );

    // The same text over TCP.
    let (status, body) = tcp_get(port, "/metrics");
    assert_eq!(status, 200);
    let t = scrape(&body);
    assert_eq!(value(&t, "arca_store_versions", None), 2.0);
    // Only /metrics is served over TCP.
    assert_eq!(tcp_get(port, "/v1/models").0, 404);
}

/// A plain HTTP/1.1 GET over TCP on localhost: (status, body).
fn tcp_get(port: u16, path: &str) -> (u16, String) {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut tcp,
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut resp = Vec::new();
    tcp.read_to_end(&mut resp).unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("http response");
    let head = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut body = resp[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = crate::harness::dechunk(&body);
    }
    (status, String::from_utf8(body).unwrap())
}

#[test]
fn status_reports_the_store_the_mount_and_the_versions() {
    let env = TestEnv::new();
    env.root_key();
    let d = write_version(&env, "st", &[("w.bin", pseudo_random(2 * MIB, 12))]);
    for v in ["1.0.0", "1.1.0"] {
        env.ok(&["push", d.to_str().unwrap(), "--name", "stm", "--version", v]);
    }
    env.ok(&["promote", "stm", "1.1.0", "--to", "staging"]);
    let _ = std::fs::read(env.mnt().join("stm/1.0.0/w.bin")).unwrap();
    let s = env.json(&["status"]);
    assert_eq!(s["versions"], 2);
    assert_eq!(
        s["versions_by_status"],
        serde_json::json!({"development": 1, "staging": 1})
    );
    // Two versions of the same content: stored once.
    assert!(s["dedup_ratio"].as_f64().unwrap() > 1.9, "{s}");
    assert_eq!(s["mount"]["answering"], true);
    assert!(s["mount"]["cache_hit_rate"].is_number());
    assert_eq!(s["current_data_key"], 1);
    let text = env.ok(&["status"]);
    assert!(
        text.contains("dedup ratio 2.00") && text.contains("answering"),
        "{text}"
    );
}

#[test]
fn check_config_names_an_unknown_key_and_accepts_a_good_file() {
    let env = TestEnv::new();
    let bad = env.path().join("bad.toml");
    std::fs::write(&bad, "state_dir = \"/var/tmp/x\"\ngc_intervall_secs = 5\n").unwrap();
    let out = Command::new(crate::harness::bin("arcad"))
        .args(["--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gc_intervall_secs"), "{err}");
    // The host default config, with this test's paths for what it must reach.
    let good = env.path().join("good.toml");
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/arcad.toml"),
    )
    .unwrap();
    std::fs::write(&good, shipped).unwrap();
    let out = Command::new(crate::harness::bin("arcad"))
        .args(["--check-config", "--config"])
        .arg(&good)
        .arg("--state-dir")
        .arg(env.path().join("s2"))
        .arg("--key-file")
        .arg(env.path().join("kek.key"))
        .arg("--mount")
        .arg(env.path().join("m2"))
        .arg("--socket")
        .arg(env.path().join("s2.sock"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

/// Data keys used by the chunks in the store (the daemon must be stopped): the key id is at
/// bytes 5..9 of every sealed chunk.
fn chunk_key_ids(env: &TestEnv) -> std::collections::BTreeMap<u32, usize> {
    let mut ids = std::collections::BTreeMap::new();
    for (_, v, _) in env.chunk_values() {
        let id = u32::from_le_bytes(v[5..9].try_into().unwrap());
        *ids.entry(id).or_default() += 1;
    }
    ids
}

#[test]
fn both_key_rotations_with_readers_and_a_kill_in_the_middle() {
    let mut env = TestEnv::new();
    env.stop();
    // Slow enough that the kill lands in the middle, even on a loaded machine: 96 MiB at
    // 12 MiB/s.
    env.daemon_args = vec!["--rotation-mib-per-sec".into(), "12".into()];
    env.start();
    env.root_key();
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("part{i}.bin"), pseudo_random(32 * MIB, 40 + i)))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    let d = write_version(&env, "rot", &refs);
    env.ok(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        "rot",
        "--version",
        "1.0.0",
    ]);
    env.ok(&["role", "assign", "root", "viewer", "--model", "rot"]);

    let p = env.json(&["key", "rotate-dek"]);
    assert_eq!(p["target_key"], 2);
    // Readers during the re-encryption: through the mount and through `get`.
    let got = env.path().join("got");
    std::thread::scope(|s| {
        let mnt = env.mnt();
        let files = &files;
        let reader = s.spawn(move || {
            let mut n = 0;
            for (name, data) in files {
                let through = std::fs::read(mnt.join("rot/1.0.0").join(name)).unwrap();
                assert!(&through == data, "{name} changed during the rotation");
                n += 1;
            }
            n
        });
        env.ok(&["get", "rot", "1.0.0", "--out", got.to_str().unwrap()]);
        assert_eq!(reader.join().unwrap(), 3);
    });
    for (name, _) in &refs {
        assert_eq!(
            crate::harness::sha256sum(&got.join(name)),
            crate::harness::sha256sum(&d.join(name))
        );
    }
    let mid = env.json(&["status"]);
    assert_eq!(
        mid["current_data_key"], 2,
        "new data is sealed under the new key at once"
    );
    assert!(
        mid["rotation"]["finished_at"].is_null(),
        "still running: {mid}"
    );
    env.kill();
    let before = chunk_key_ids(&env);
    assert!(
        before.get(&1).copied().unwrap_or(0) > 0,
        "the kill came after the rotation finished: {before:?}"
    );

    // The restart resumes it; it finishes; every chunk is under key 2 and key 1 is gone.
    env.daemon_args.clear();
    env.start();
    let t = std::time::Instant::now();
    loop {
        let s = env.json(&["status"]);
        if !s["rotation"]["finished_at"].is_null() {
            assert!(s["rotation"]["records_done"].as_bool().unwrap());
            break;
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(120), "{s}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    env.ok(&["verify", "rot"]);
    env.ok(&["audit", "verify"]);
    env.stop();
    let after = chunk_key_ids(&env);
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), [2], "{after:?}");
    {
        let db = env.open_db();
        let meta = db.cf_handle("meta").unwrap();
        assert!(
            db.get_cf(meta, b"dek/1").unwrap().is_none(),
            "the old data key is deleted"
        );
        assert!(db.get_cf(meta, b"dek/2").unwrap().is_some());
    }

    // KEK rotation: the key file changes, the store opens with the new one only.
    env.start();
    let old = std::fs::read_to_string(env.path().join("kek.key")).unwrap();
    let r = env.json(&["key", "rotate-kek"]);
    assert!(r["rewrapped_keys"].as_u64().unwrap() >= 3, "{r}");
    let new = std::fs::read_to_string(env.path().join("kek.key")).unwrap();
    assert_ne!(old, new);
    env.stop();
    env.start();
    env.ok(&["verify", "rot"]);
    // A crash between the rewrap and the rename: the old key in place, the new one at .new.
    env.stop();
    std::fs::write(env.path().join("kek.key.new"), &new).unwrap();
    std::fs::set_permissions(
        env.path().join("kek.key.new"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(env.path().join("kek.key"), &old).unwrap();
    env.start();
    assert_eq!(
        std::fs::read_to_string(env.path().join("kek.key")).unwrap(),
        new
    );
    assert!(!env.path().join("kek.key.new").exists());
    env.ok(&["verify", "rot"]);
    let ev = env.json(&["audit", "ls", "--type", "key_change"]);
    let actions: Vec<&str> = ev
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["details"]["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"rotate-dek")
            && actions.contains(&"rotate-dek finished")
            && actions.contains(&"rotate-kek"),
        "{actions:?}"
    );
}
