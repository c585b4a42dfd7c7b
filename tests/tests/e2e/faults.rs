//! Issue #7: the fault suite. Each case damages the store or the daemon in one way, then checks
//! that every reader (`arca verify`, `arca get`, the mount) detects it and that no wrong byte is
//! ever served; crash cases check that nothing acknowledged is lost. Every case prints one
//! `FAULT|case|tries|detected|bytes lost|corrupt bytes served` line; `scripts/faults.sh`
//! collects them into the table. `ARCA_FAULT_TRIES` sets the tries per case (CI: 1 or 2).

use std::collections::BTreeMap;

use crate::harness::{pseudo_random, StoredChunk, TestEnv};

const MIB: usize = 1 << 20;

fn tries(default: u64) -> u64 {
    std::env::var("ARCA_FAULT_TRIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn row(case: &str, tries: u64, detected: u64, lost: u64, corrupt: u64) {
    println!("FAULT|{case}|{tries}|{detected}|{lost}|{corrupt}");
}

/// The pushed files, by version then path.
type Originals = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// Two versions of model `t` (distinct content) and 1.0.0 moved to staging.
fn setup(env: &TestEnv, seed: u64) -> Originals {
    env.root_key();
    let mut out = Originals::new();
    for (i, v) in ["1.0.0", "2.0.0"].iter().enumerate() {
        let d = env.path().join(format!("src-{v}"));
        std::fs::create_dir_all(&d).unwrap();
        let files: BTreeMap<String, Vec<u8>> = [
            (
                "a.bin".to_string(),
                pseudo_random(MIB + 333, seed * 10 + i as u64),
            ),
            (
                "b.json".to_string(),
                format!("{{\"v\": \"{v}\"}}\n").into_bytes(),
            ),
        ]
        .into_iter()
        .collect();
        for (name, data) in &files {
            std::fs::write(d.join(name), data).unwrap();
        }
        env.ok(&["push", d.to_str().unwrap(), "--name", "t", "--version", v]);
        out.insert(v.to_string(), files);
    }
    env.ok(&["promote", "t", "1.0.0", "--to", "staging"]);
    out
}

/// What the three readers saw after a fault.
#[derive(Default, Debug)]
struct Seen {
    verify_failed: bool,
    get_failed: bool,
    mount_failed: bool,
    /// Bytes returned that differ from what was pushed (must stay 0).
    corrupt: u64,
    /// Files that failed although nothing of theirs was damaged (by the verify report).
    collateral: u64,
}

fn read_all(env: &TestEnv, orig: &Originals, damaged: &[(String, String)]) -> Seen {
    let mut seen = Seen {
        verify_failed: verify_fails(env),
        ..Seen::default()
    };
    read_by_get(env, orig, &mut seen);
    read_by_mount(env, orig, damaged, &mut seen);
    seen
}

fn verify_fails(env: &TestEnv) -> bool {
    !env.arca(&["--json", "verify", "t"]).status.success()
}

fn read_by_get(env: &TestEnv, orig: &Originals, seen: &mut Seen) {
    for (version, files) in orig {
        let out = env.path().join(format!("get-{version}-{}", rand_tag()));
        let g = env.arca(&["get", "t", version, "--out", out.to_str().unwrap()]);
        if !g.status.success() {
            seen.get_failed = true;
        }
        for (name, data) in files {
            // A file `get` wrote must be exact (it renames only verified files into place).
            if let Ok(bytes) = std::fs::read(out.join(name)) {
                seen.corrupt += differing(&bytes, data);
            }
        }
    }
}

fn read_by_mount(env: &TestEnv, orig: &Originals, damaged: &[(String, String)], seen: &mut Seen) {
    for (version, files) in orig {
        for (name, data) in files {
            match std::fs::read(env.mnt().join("t").join(version).join(name)) {
                Ok(bytes) => seen.corrupt += differing(&bytes, data),
                Err(_) => {
                    seen.mount_failed = true;
                    if !damaged.is_empty()
                        && !damaged
                            .iter()
                            .any(|(dv, df)| dv == version && (df == name || df == "*"))
                    {
                        seen.collateral += data.len() as u64;
                    }
                }
            }
        }
    }
}

fn rand_tag() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Bytes that differ, counting a length difference as that many bytes.
fn differing(a: &[u8], b: &[u8]) -> u64 {
    let common = a.iter().zip(b).filter(|(x, y)| x != y).count();
    (common + a.len().abs_diff(b.len())) as u64
}

/// (version, file) pairs a `verify` report names, with `*` for a whole version.
fn damaged_files(env: &TestEnv) -> Vec<(String, String)> {
    let v = env.arca(&["--json", "verify", "t"]);
    let rep: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap_or_default();
    rep["failures"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    (
                        f["version"].as_str().unwrap_or("").to_owned(),
                        f["file"].as_str().unwrap_or("*").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `nth` chunk over 4 KiB, as the store's index has it (id, sealed bytes, pack file and
/// offset). The daemon must be stopped.
fn big_chunk(env: &TestEnv, nth: usize) -> StoredChunk {
    let big: Vec<StoredChunk> = env
        .chunk_values()
        .into_iter()
        .filter(|(_, v, _)| v.len() > 4096)
        .collect();
    big[nth % big.len()].clone()
}

/// Flips a bit of the `nth` big chunk's sealed bytes, at `at(len)`, in its pack file.
fn flip_chunk(env: &TestEnv, nth: usize, at: impl Fn(usize) -> usize) {
    use std::os::unix::fs::FileExt;
    let (_, v, place) = big_chunk(env, nth);
    let (file, offset) = place.expect("a pushed chunk is in a local pack file");
    let i = at(v.len());
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(&[v[i] ^ 0x40], offset + i as u64).unwrap();
}

/// The `nth` big chunk's index row (docs/format.md, "cache": sealed length, then pack id,
/// offset and the length again), with its length changed by `delta`.
fn resized_row(env: &TestEnv, nth: usize, delta: i64) -> (Vec<u8>, Vec<u8>) {
    let (k, _, _) = big_chunk(env, nth);
    let row = env
        .cf_rows("cache")
        .into_iter()
        .find(|(key, _)| *key == k)
        .unwrap()
        .1;
    let len = (u32::from_le_bytes(row[..4].try_into().unwrap()) as i64 + delta) as u32;
    let mut edited = row.clone();
    edited[..4].copy_from_slice(&len.to_le_bytes());
    edited[44..48].copy_from_slice(&len.to_le_bytes());
    (k, edited)
}

/// Puts the state directory back to `copy` (the daemon restarted around it).
fn restore_state(env: &mut TestEnv, copy: &std::path::Path) {
    env.stop();
    std::fs::remove_dir_all(env.state_dir()).unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(copy)
        .arg(env.state_dir())
        .status()
        .unwrap();
    assert!(st.success(), "cp -a of the damaged state directory");
    env.start();
}

fn chunk_case(name: &str, n: u64, damage: impl Fn(&TestEnv, usize)) {
    let (mut detected, mut lost, mut corrupt) = (0, 0, 0);
    for t in 0..n {
        let mut env = TestEnv::new();
        let orig = setup(&env, 100 + t);
        env.stop();
        damage(&env, t as usize);
        // The first reader to meet a damaged copy drops its row (so a good copy can take its
        // place: docs/format.md, "cache"), and the next would find it missing, never the
        // damaged bytes: each kind of reader meets the damage afresh, from a copy.
        let copy = env.path().join("damaged-state");
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(env.state_dir())
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success(), "cp -a of the state directory");
        env.start();
        let damaged = damaged_files(&env);
        let mut seen = Seen {
            verify_failed: !damaged.is_empty(),
            ..Seen::default()
        };
        restore_state(&mut env, &copy);
        read_by_get(&env, &orig, &mut seen);
        restore_state(&mut env, &copy);
        read_by_mount(&env, &orig, &damaged, &mut seen);
        if seen.verify_failed && seen.get_failed && seen.mount_failed {
            detected += 1;
        }
        lost += seen.collateral;
        corrupt += seen.corrupt;
    }
    row(name, n, detected, lost, corrupt);
    assert_eq!((detected, corrupt), (n, 0), "{name}");
    assert_eq!(lost, 0, "{name}: undamaged files became unreadable");
}

/// Chunk damage by someone who can write the state directory (but holds no key): the sealed
/// bytes in their local pack file, and the index rows (`cache`, not sealed) that say where they
/// are.
#[test]
fn tamper_matrix_every_reader_detects_and_serves_nothing_false() {
    let n = tries(1);
    // The chunk envelope: 4 magic, 1 format, 4 key id, 4 length, 24 nonce, then 64 KiB segments
    // each followed by its 16-byte tag (docs/format.md).
    chunk_case("chunk ciphertext bit flip", n, |env, t| {
        flip_chunk(env, t, |len| len / 2)
    });
    chunk_case("chunk nonce bit flip", n, |env, t| {
        flip_chunk(env, t, |_| 20)
    });
    chunk_case("chunk tag bit flip", n, |env, t| {
        flip_chunk(env, t, |len| len - 1)
    });
    chunk_case("chunk length field edit", n, |env, t| {
        flip_chunk(env, t, |_| 10)
    });
    chunk_case("chunk key id edit", n, |env, t| flip_chunk(env, t, |_| 5));
    chunk_case("chunk truncated (its index row shortened)", n, |env, t| {
        env.put_rows("cache", &[resized_row(env, t, -100)]);
    });
    chunk_case("chunk extended (its index row lengthened)", n, |env, t| {
        env.put_rows("cache", &[resized_row(env, t, 16)]);
    });
    chunk_case("chunk bytes punched out of the pack file", n, |env, t| {
        use std::os::unix::fs::FileExt;
        let (_, v, place) = big_chunk(env, t);
        let (file, offset) = place.unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        f.write_all_at(&vec![0u8; v.len()], offset).unwrap();
    });
    chunk_case("chunk index row pointed at another chunk", n, |env, t| {
        let (k, _, _) = big_chunk(env, t);
        let (other, _, _) = big_chunk(env, t + 1);
        let rows = env.cf_rows("cache");
        let theirs = rows
            .iter()
            .find(|(key, _)| *key == other)
            .unwrap()
            .1
            .clone();
        env.put_rows("cache", &[(k, theirs)]);
    });
    chunk_case("chunk index row deleted", n, |env, t| {
        let (k, _, _) = big_chunk(env, t);
        let db = env.open_db();
        let h = db.cf_handle("cache").unwrap();
        db.delete_cf(h, k).unwrap();
        db.flush_cf(h).unwrap();
    });
}

/// Version-record damage: the version must not be served at all where `must_hide` (an edited
/// record may still be served when its damage is caught only by its signature), verify must name
/// it, and no byte of it may be wrong. A replayed record opens, but names an older audit event
/// than the newest one for its row (docs/format.md, "Audit binding"): not served.
fn record_case(name: &str, n: u64, damage: impl Fn(&mut TestEnv, &Originals), must_hide: bool) {
    let (mut detected, mut corrupt) = (0, 0);
    for t in 0..n {
        let mut env = TestEnv::new();
        let orig = setup(&env, 200 + t);
        damage(&mut env, &orig);
        let seen = read_all(&env, &orig, &[]);
        let hidden = seen.get_failed && seen.mount_failed;
        if seen.verify_failed && (hidden || !must_hide) {
            detected += 1;
        }
        corrupt += seen.corrupt;
    }
    row(name, n, detected, 0, corrupt);
    assert_eq!((detected, corrupt), (n, 0), "{name}");
}

#[test]
fn tamper_matrix_version_records() {
    let n = tries(1);
    record_case(
        "manifests swapped between versions",
        n,
        |env, _| {
            env.stop();
            let rows = env.cf_rows("versions");
            env.put_rows(
                "versions",
                &[
                    (rows[0].0.clone(), rows[1].1.clone()),
                    (rows[1].0.clone(), rows[0].1.clone()),
                ],
            );
            env.start();
        },
        true,
    );
    record_case(
        "manifest or metadata bytes edited",
        n,
        |env, _| {
            env.stop();
            let rows = env.cf_rows("versions");
            let mut v = rows[0].1.clone();
            let i = v.len() / 3;
            v[i] ^= 1;
            env.put_rows("versions", &[(rows[0].0.clone(), v)]);
            env.start();
        },
        false,
    );
    record_case(
        "old signed manifest replayed",
        n,
        |env, _| {
            // The record of 2.0.0 as it was before an approval and a promotion, put back.
            env.stop();
            let before = env.cf_rows("versions");
            env.start();
            env.ok(&["promote", "t", "2.0.0", "--to", "staging"]);
            env.stop();
            let after = env.cf_rows("versions");
            let (k, old) = before
                .iter()
                .find(|(k, v)| after.iter().any(|(k2, v2)| k2 == k && v2 != v))
                .cloned()
                .expect("a record that changed");
            env.put_rows("versions", &[(k, old)]);
            env.start();
        },
        true,
    );
}

/// Issue #8: the replay and wipe cases beyond version records, each as the state-directory
/// attacker of `insider::store` makes them (a revoked role and a weakened policy put back; the
/// audit key and trail deleted). Detected means refused at start or named by `verify`, with the
/// stale record not used.
#[test]
fn tamper_matrix_acl_records_and_audit_trail() {
    let n = tries(1);
    let cases: [(&str, crate::insider::Attack); 3] = [
        (
            "acl record replayed (revoked ml_admin)",
            crate::insider::store::replay_acl,
        ),
        (
            "policy record replayed (signing off)",
            crate::insider::store::replay_policy,
        ),
        (
            "audit key and trail deleted",
            crate::insider::store::audit_wipe,
        ),
    ];
    for (name, case) in cases {
        let mut detected = 0;
        for _ in 0..n {
            // Each case asserts its outcome itself; a row comes back only when it held.
            let rows = case();
            if !rows.is_empty() {
                detected += 1;
            }
        }
        row(name, n, detected, 0, 0);
        assert_eq!(detected, n, "{name}");
    }
}

/// Crash consistency: SIGKILL at a different moment in each try while pushes, promotions,
/// rollbacks, GC and a data-key rotation run; after the restart every acknowledged push is
/// there and byte-identical, verify and audit verify pass.
#[test]
fn crash_loop_loses_nothing_acknowledged() {
    let n: u64 = std::env::var("ARCA_CRASH_TRIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let mut env = TestEnv::new();
    env.root_key();
    // One model per restart, so each check reads what that round wrote (not everything so far,
    // which made long runs quadratic); the last check reads everything once more.
    let mut acked: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    let (mut detected, mut lost, mut corrupt) = (0u64, 0u64, 0u64);
    let read_back = |env: &TestEnv, m: &str, v: &str, data: &[u8]| -> Result<u64, ()> {
        std::fs::read(env.mnt().join(m).join(v).join("w.bin"))
            .map(|b| differing(&b, data))
            .map_err(|_| ())
    };
    for t in 0..n {
        let m = format!("c{t}");
        env.ok(&["policy", "set", &m, "--require-approval", "no"]);
        let pid = nix::unistd::Pid::from_raw(env.daemon.as_ref().unwrap().id() as i32);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let new_acks = std::thread::scope(|s| {
            let worker = s.spawn(|| {
                let mut acks = Vec::new();
                for j in 0..10_000u64 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let v = format!("{t}.{j}.0");
                    let d = env.path().join(format!("c-{v}"));
                    std::fs::create_dir_all(&d).unwrap();
                    let data = pseudo_random(300_000 + (j as usize % 7) * 40_000, t * 10_000 + j);
                    std::fs::write(d.join("w.bin"), &data).unwrap();
                    if !env
                        .arca(&["push", d.to_str().unwrap(), "--name", &m, "--version", &v])
                        .status
                        .success()
                    {
                        break;
                    }
                    acks.push(((m.clone(), v.clone()), data));
                    let ops: [&[&str]; 3] = [
                        &["promote", &m, &v, "--to", "staging"],
                        &["promote", &m, &v, "--to", "production"],
                        &["gc"],
                    ];
                    for op in ops {
                        if !env.arca(op).status.success() {
                            return acks;
                        }
                    }
                    // A data-key rotation now and then (each re-seals the whole store).
                    if j == 2 && t % 10 == 0 {
                        let _ = env.arca(&["key", "rotate-dek"]);
                    }
                    if j > 0 && j % 3 == 0 {
                        let prev = format!("{t}.{}.0", j - 1);
                        let _ = env.arca(&["rollback", &m, "--to", &prev, "--reason", "drill"]);
                    }
                }
                acks
            });
            std::thread::sleep(std::time::Duration::from_millis(300 + (t * 373) % 1200));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            worker.join().unwrap()
        });
        env.kill();
        env.start();
        let mut ok = env.arca(&["audit", "verify"]).status.success()
            && (new_acks.is_empty() || env.arca(&["verify", &m]).status.success());
        for ((m, v), data) in &new_acks {
            match read_back(&env, m, v, data) {
                Ok(c) => corrupt += c,
                Err(()) => {
                    lost += data.len() as u64;
                    ok = false;
                }
            }
        }
        let prod = env
            .arca(&["--json", "ls", &m])
            .stdout
            .pipe_json()
            .as_array()
            .map(|a| a.iter().filter(|v| v["status"] == "production").count())
            .unwrap_or(0);
        if ok && prod <= 1 {
            detected += 1;
        }
        acked.extend(new_acks);
    }
    // Everything acknowledged in every round, read once more at the end.
    for ((m, v), data) in &acked {
        match read_back(&env, m, v, data) {
            Ok(c) => corrupt += c,
            Err(()) => lost += data.len() as u64,
        }
    }
    // "detected" for a crash case: restarts after which everything checked out.
    row(
        "SIGKILL during push/promote/rollback/gc/rotate-dek",
        n,
        detected,
        lost,
        corrupt,
    );
    assert_eq!((detected, lost, corrupt), (n, 0, 0));
    assert!(
        !acked.is_empty(),
        "no push was acknowledged before the kills"
    );
}

/// JSON from a command's stdout (null when it printed none).
trait PipeJson {
    fn pipe_json(&self) -> serde_json::Value;
}

impl PipeJson for Vec<u8> {
    fn pipe_json(&self) -> serde_json::Value {
        serde_json::from_slice(self).unwrap_or_default()
    }
}

/// Reads whatever the server sends until it closes the connection or `limit` passes.
fn read_until_closed(
    s: &mut std::os::unix::net::UnixStream,
    limit: std::time::Duration,
) -> (bool, Vec<u8>) {
    use std::io::Read;
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (true, out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (true, out),
            Err(_) => return (false, out),
        }
    }
}

#[test]
fn hostile_clients_are_contained() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let mut env = TestEnv::new();
    env.stop();
    env.daemon_args = vec![
        "--request-header-timeout-secs".into(),
        "1".into(),
        "--max-connections-per-user".into(),
        "16".into(),
    ];
    env.start();
    env.root_key();
    let other = crate::harness::user("arca-f-other");

    // A flood of idle connections from one uid: capped, another user is still served, and
    // the idle ones are closed after the header timeout.
    let flood: Vec<UnixStream> = (0..200)
        .filter_map(|_| UnixStream::connect(env.socket()).ok())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let served = env.arca_as(&other, &["whoami"]).status.success();
    let t = std::time::Instant::now();
    let mut closed = 0;
    for mut s in flood {
        if read_until_closed(&mut s, std::time::Duration::from_secs(5)).0 {
            closed += 1;
        }
    }
    let all_closed = closed == 200 && t.elapsed() < std::time::Duration::from_secs(8);
    let root_again = env.arca(&["whoami"]).status.success();
    row(
        "connection flood (200 idle sockets, one uid)",
        1,
        u64::from(served && all_closed && root_again),
        0,
        0,
    );
    assert!(
        served && all_closed && root_again,
        "served {served}, closed {closed}, root {root_again}"
    );

    // A slow client that never finishes its headers is cut off.
    let mut slow = UnixStream::connect(env.socket()).unwrap();
    slow.write_all(b"GET /v1/whoami HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    let t = std::time::Instant::now();
    let (cut, _) = read_until_closed(&mut slow, std::time::Duration::from_secs(5));
    let cut = cut && t.elapsed() < std::time::Duration::from_secs(4);
    row("slow client holding a connection", 1, u64::from(cut), 0, 0);
    assert!(cut);

    // Oversized headers and an oversized JSON body.
    let mut big = UnixStream::connect(env.socket()).unwrap();
    let _ = big.write_all(
        format!(
            "GET /v1/whoami HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n",
            "a".repeat(200_000)
        )
        .as_bytes(),
    );
    let (_, resp) = read_until_closed(&mut big, std::time::Duration::from_secs(5));
    let refused = resp.is_empty() || resp.starts_with(b"HTTP/1.1 431");
    row(
        "oversized request headers (200 KB)",
        1,
        u64::from(refused),
        0,
        0,
    );
    assert!(
        refused,
        "{}",
        String::from_utf8_lossy(&resp[..resp.len().min(200)])
    );
    let body = format!(
        "{{\"metadata\": {{\"name\": \"h\", \"version\": \"1.0.0\", \"description\": \"{}\"}}}}",
        "d".repeat(5 << 20)
    );
    let (status, _) = env.raw("POST", "/v1/uploads", body.as_bytes());
    // 413, or the connection cut before the client finished sending: either way refused
    // without reading 5 MB, and the daemon still answers.
    let refused = status == 413 || status == 0;
    let intact = env.arca(&["whoami"]).status.success();
    row(
        "oversized JSON body (5 MB)",
        1,
        u64::from(refused && intact),
        0,
        0,
    );
    assert!(refused && intact, "status {status}");

    // Hostile file names in a push, through the API as a forging client would send them.
    let (status, resp) = env.raw(
        "POST",
        "/v1/uploads",
        br#"{"metadata": {"name": "h", "version": "1.0.0"}}"#,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&resp));
    let id = serde_json::from_slice::<serde_json::Value>(&resp).unwrap()["upload_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let put = |path: &str| {
        env.raw(
            "PUT",
            &format!("/v1/uploads/{id}/files?path={path}&mode=420"),
            b"x",
        )
        .0
    };
    let long = "a".repeat(300);
    let bad = [
        "..%2Fetc%2Fpasswd",
        "%2Fabs",
        "a%00b",
        "a%2F..%2F..%2Fb",
        long.as_str(),
        "a%2F%2Fb",
        ".",
    ];
    let refused = bad.iter().filter(|p| put(p) == 400).count();
    let dup = (put("ok.bin"), put("ok.bin"));
    let names_ok = refused == bad.len() && dup == (200, 400);
    row(
        "pushed names: .., absolute, NUL, long, empty, duplicate",
        bad.len() as u64 + 1,
        refused as u64 + u64::from(dup == (200, 400)),
        0,
        0,
    );
    assert!(
        names_ok,
        "refused {refused} of {}, duplicate {dup:?}",
        bad.len()
    );

    // A symlink in a pushed directory that points out of the tree is refused, never followed.
    let d = env.path().join("with-link");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("w.bin"), b"weights").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", d.join("evil")).unwrap();
    let out = env.arca(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        "h",
        "--version",
        "2.0.0",
    ]);
    let stored = env.arca(&["--json", "show", "h", "2.0.0"]);
    let leaked =
        stored.status.success() && String::from_utf8_lossy(&stored.stdout).contains("evil");
    row(
        "symlink out of the pushed tree",
        1,
        u64::from(!out.status.success() || !leaked),
        0,
        0,
    );
    assert!(!leaked, "the symlink's target was pushed");

    // Two pushes of the same version at once: exactly one wins.
    let d = env.path().join("race");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("w.bin"), pseudo_random(4 * MIB, 77)).unwrap();
    let (a, b) = std::thread::scope(|s| {
        let p = || {
            env.arca(&[
                "push",
                d.to_str().unwrap(),
                "--name",
                "race",
                "--version",
                "1.0.0",
            ])
            .status
            .success()
        };
        let x = s.spawn(p);
        let y = s.spawn(p);
        (x.join().unwrap(), y.join().unwrap())
    });
    let one = a ^ b && env.json(&["ls", "race"]).as_array().unwrap().len() == 1;
    env.ok(&["verify", "race"]);
    row(
        "two concurrent pushes of one version",
        1,
        u64::from(one),
        0,
        0,
    );
    assert!(one, "{a} {b}");
}

/// 64 readers through the mount for ARCA_LOAD_SECS (CI: 8) while promotions, rollbacks and GC
/// run: no read error, no wrong byte, arcad's memory bounded.
#[test]
fn mount_under_load_with_promotions_rollbacks_and_gc() {
    let secs: u64 = std::env::var("ARCA_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let env = TestEnv::new();
    env.root_key();
    env.ok(&["policy", "set", "load", "--require-approval", "no"]);
    let mut data = Vec::new();
    for i in 0..3u64 {
        let d = env.path().join(format!("load-{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let bytes = pseudo_random(16 * MIB + 1234, 900 + i);
        std::fs::write(d.join("w.bin"), &bytes).unwrap();
        env.ok(&[
            "push",
            d.to_str().unwrap(),
            "--name",
            "load",
            "--version",
            &format!("1.{i}.0"),
        ]);
        data.push(bytes);
    }
    for v in ["1.0.0", "1.1.0"] {
        env.ok(&["promote", "load", v, "--to", "staging"]);
        env.ok(&["promote", "load", v, "--to", "production"]);
    }
    let pid = env.daemon.as_ref().unwrap().id();
    let rss = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmRSS:").map(|v| {
                    v.trim()
                        .trim_end_matches(" kB")
                        .trim()
                        .parse::<u64>()
                        .unwrap_or(0)
                })
            })
            .unwrap_or(0)
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let errors = std::sync::atomic::AtomicU64::new(0);
    let corrupt = std::sync::atomic::AtomicU64::new(0);
    let reads = std::sync::atomic::AtomicU64::new(0);
    let mut peak = 0u64;
    std::thread::scope(|s| {
        for r in 0..64u64 {
            let (stop, errors, corrupt, reads, data, mnt) =
                (&stop, &errors, &corrupt, &reads, &data, env.mnt());
            s.spawn(move || {
                use std::os::unix::fs::FileExt;
                let mut x = r.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let i = (x % 3) as usize;
                    let path = mnt.join(format!("load/1.{i}.0/w.bin"));
                    let len = 4096 + (x >> 20) as usize % (256 << 10);
                    let off = (x >> 8) as usize % (data[i].len() - len);
                    let mut buf = vec![0u8; len];
                    match std::fs::File::open(&path)
                        .and_then(|f| f.read_exact_at(&mut buf, off as u64))
                    {
                        Ok(()) => {
                            if buf != data[i][off..off + len] {
                                corrupt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        let t = std::time::Instant::now();
        let mut k = 0;
        while t.elapsed() < std::time::Duration::from_secs(secs) {
            let to = if k % 2 == 0 { "1.0.0" } else { "1.1.0" };
            env.ok(&["rollback", "load", "--to", to, "--reason", "load test"]);
            env.ok(&["gc"]);
            peak = peak.max(rss());
            k += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let (e, c, n) = (
        errors.into_inner(),
        corrupt.into_inner(),
        reads.into_inner(),
    );
    println!(
        "load: {n} reads by 64 readers in {secs} s, {e} errors, {c} corrupt, arcad peak RSS {} MiB",
        peak >> 10
    );
    let bounded = peak < (1 << 20); // KiB: under 1 GiB with the default 256 MiB cache
    row(
        &format!("64 readers for {secs} s under rollbacks and GC"),
        n,
        n - e,
        0,
        c,
    );
    assert!(
        e == 0 && c == 0 && bounded && n > 0,
        "{e} errors, {c} corrupt, peak {peak} KiB"
    );
}

/// A small tmpfs as the state directory, mounted (and unmounted on drop) for one test.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn mount(at: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "arca-test",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mount tmpfs at {} (tests run as root)",
            at.display()
        );
        Self(at.to_owned())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn disk_full_during_a_push_and_a_read_only_state_dir() {
    let mut env = TestEnv::new();
    env.stop();
    let _ = std::fs::remove_dir_all(env.state_dir());
    let fs = SmallFs::mount(&env.state_dir(), "96m");
    env.start();
    env.root_key();
    let d = env.path().join("small");
    std::fs::create_dir_all(&d).unwrap();
    let small = pseudo_random(4 * MIB, 31);
    std::fs::write(d.join("w.bin"), &small).unwrap();
    env.ok(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        "full",
        "--version",
        "1.0.0",
    ]);
    // Ballast leaves about 16 MiB free; a 64 MiB push cannot fit.
    let ballast = env.state_dir().join("ballast");
    let free = nix::sys::statvfs::statvfs(&env.state_dir()).unwrap();
    let avail = free.blocks_available() as u64 * free.fragment_size() as u64;
    let fill = avail.saturating_sub(16 << 20);
    std::fs::write(&ballast, vec![0u8; fill as usize]).unwrap();
    let big = env.path().join("big");
    std::fs::create_dir_all(&big).unwrap();
    std::fs::write(big.join("w.bin"), pseudo_random(64 * MIB, 32)).unwrap();
    let out = env.arca(&[
        "push",
        big.to_str().unwrap(),
        "--name",
        "full",
        "--version",
        "2.0.0",
    ]);
    let clean_error =
        !out.status.success() && String::from_utf8_lossy(&out.stderr).lines().count() <= 2;
    let no_partial = env.json(&["ls", "full"]).as_array().unwrap().len() == 1;
    // Space freed: after a restart (RocksDB stops writing after an I/O error until reopened)
    // and a GC of what the failed push left, the store works again.
    std::fs::remove_file(&ballast).unwrap();
    env.stop();
    env.start();
    let gc = env.json(&["gc"]);
    // A push that fits in the space freed (how much of the failed push's blob files RocksDB
    // has dropped by now is its business; the ballast's 64+ MiB are free again).
    let medium = env.path().join("medium");
    std::fs::create_dir_all(&medium).unwrap();
    std::fs::write(medium.join("w.bin"), pseudo_random(16 * MIB, 33)).unwrap();
    let recovered = env
        .arca(&[
            "push",
            medium.to_str().unwrap(),
            "--name",
            "full",
            "--version",
            "2.0.0",
        ])
        .status
        .success();
    println!("disk full: gc after the failed push: {gc}");
    let intact = env.arca(&["verify", "full"]).status.success()
        && std::fs::read(env.mnt().join("full/1.0.0/w.bin")).is_ok_and(|b| b == small);
    println!(
        "disk full: push error: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let ok = clean_error && no_partial && recovered && intact;
    row(
        "disk full during a push",
        1,
        u64::from(ok),
        if intact { 0 } else { small.len() as u64 },
        0,
    );
    assert!(
        ok,
        "clean {clean_error} no_partial {no_partial} recovered {recovered} intact {intact}"
    );

    // A read-only state directory at start: a clear error, not a hang or a panic.
    env.stop();
    let st = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(env.state_dir())
        .status()
        .unwrap();
    assert!(st.success());
    let out = std::process::Command::new(crate::harness::bin("arcad"))
        .arg("--state-dir")
        .arg(env.state_dir())
        .arg("--socket")
        .arg(env.path().join("ro.sock"))
        .arg("--key-file")
        .arg(env.path().join("kek.key"))
        .arg("--no-mount")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let clear = !out.status.success()
        && err.contains(&env.state_dir().display().to_string())
        && (err.contains("Read-only") || err.contains("read-only"));
    println!("read-only state dir: {}", err.lines().last().unwrap_or(""));
    row(
        "read-only state directory at start",
        1,
        u64::from(clear),
        0,
        0,
    );
    assert!(clear, "{err}");
    drop(fs);
}
