//! Issue #6: running on hosts. Garbage collection and retention, with readers active; the mount
//! seen from another mount namespace.

use std::io::Read;
use std::process::Command;

use crate::harness::{pseudo_random, TestEnv};

const MIB: usize = 1 << 20;

/// Chunk keys in the store (the daemon must be stopped).
fn stored_chunks(env: &TestEnv) -> usize {
    let db = env.open_db();
    let h = db.cf_handle("chunks").unwrap();
    db.iterator_cf(h, rocksdb::IteratorMode::Start).count()
}

fn referenced_chunks(env: &TestEnv) -> usize {
    env.json(&["stats"])["chunks"].as_u64().unwrap() as usize
}

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
    let before = referenced_chunks(&env);
    env.stop();
    assert_eq!(stored_chunks(&env), before, "no orphans before the test");
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
    let after = referenced_chunks(&env);
    let deleted =
        first["deleted_chunks"].as_u64().unwrap() + second["deleted_chunks"].as_u64().unwrap();
    env.ok(&["verify", "gcm"]);
    env.stop();
    let stored = stored_chunks(&env);
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

#[test]
fn gc_collects_what_a_killed_push_left_and_expired_archived_versions() {
    let mut env = TestEnv::new();
    env.root_key();
    let small = write_version(&env, "small", &[("a.bin", pseudo_random(2 * MIB, 7))]);
    env.ok(&[
        "push",
        small.to_str().unwrap(),
        "--name",
        "ret",
        "--version",
        "1.0.0",
    ]);
    env.ok(&[
        "push",
        small.to_str().unwrap(),
        "--name",
        "ret",
        "--version",
        "1.1.0",
    ]);

    // A push killed halfway leaves chunks no version references.
    let big = write_version(&env, "big", &[("b.bin", pseudo_random(192 * MIB, 8))]);
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
    // Chunks are written without the WAL and made durable by memtable flushes (32 MiB each):
    // after 1.2 s at least one flush has happened, so the kill leaves durable orphans.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    env.kill();
    let _ = push.wait();
    let orphaned = stored_chunks(&env);
    env.start();
    let referenced = referenced_chunks(&env);
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
