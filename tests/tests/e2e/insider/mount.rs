//! Issue #8 attacks on streams, GC and the mount (see `mod.rs`): GC racing a `get` and a
//! `verify`, two uploads racing on one path, a version pushed again under cached pages, and a
//! mount listing for users who may not read what it lists.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use arca_core::manifest::{merkle_root, FileEntry};
use arca_core::metadata::PublishedMetadata;
use arca_core::sign::SecretKey;

use super::{Outcome, Row, DEVELOPER, NO_ROLE};
use crate::harness::{as_user, bin, pseudo_random, sha256_hex, sha256sum, user, TestEnv, User};

const MIB: usize = 1 << 20;

/// `arca ARGS` as `u`, not yet started (so it can be stopped and continued).
fn arca_as_cmd(env: &TestEnv, u: &User, args: &[&str]) -> Command {
    let mut c = as_user(u, bin("arca"));
    c.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("ARCA_SOCKET", env.socket())
        .env("HOME", &u.home);
    c
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn integrity_events(env: &TestEnv) -> Vec<serde_json::Value> {
    env.json(&["audit", "ls", "--type", "integrity_violation"])
        .as_array()
        .unwrap()
        .clone()
}

fn write_dir(env: &TestEnv, tag: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let d = env.path().join(tag);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    for (name, data) in files {
        std::fs::write(d.join(name), data).unwrap();
    }
    d
}

fn wait_with_deadline(child: &mut Child, secs: u64, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not end within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    if let Some(mut s) = child.stdout.take() {
        s.read_to_end(&mut out.stdout).unwrap();
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_end(&mut out.stderr).unwrap();
    }
    out
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// GC racing a `get` and a `verify`: an admin deletes the version a developer is streaming and
/// collects at once. Neither stream may be cut or report damage (an `integrity_violation` that
/// is not damage would bury a real one); the chunks go at the first collection after the
/// stream ends.
pub fn gc_racing_a_get() -> Vec<Row> {
    let env = TestEnv::new();
    env.root_key();
    let dev = user("arca-ins-mnt-dev");
    env.ok(&["role", "assign", &dev.name, "developer", "--model", "race"]);
    let big = pseudo_random(96 * MIB + 77, 801);
    let d = write_dir(&env, "race-get", &[("big.bin", &big)]);
    env.ok(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        "race",
        "--version",
        "1.0.0",
    ]);

    // The developer's get is stopped mid-file (SIGSTOP once part of it has arrived), the
    // version deleted and collected, and the get continued.
    let out = dev.home.join("race-get");
    let _ = std::fs::remove_dir_all(&out);
    let mut get = arca_as_cmd(
        &env,
        &dev,
        &["get", "race", "1.0.0", "--out", out.to_str().unwrap()],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let partial = std::fs::read_dir(&out)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".big.bin.arca-partial")
                    && e.metadata().is_ok_and(|m| m.len() >= 8 * MIB as u64)
            });
        if partial.is_some() {
            break;
        }
        assert!(
            get.try_wait().unwrap().is_none(),
            "the get ended before it could be stopped"
        );
        assert!(Instant::now() < deadline, "the get did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&get, nix::sys::signal::Signal::SIGSTOP);
    env.ok(&["delete", "race", "1.0.0"]);
    let first = env.json(&["gc"]);
    signal(&get, nix::sys::signal::Signal::SIGCONT);
    let got = wait_with_deadline(&mut get, 120, "the get");
    assert!(
        got.status.success(),
        "the get was cut by the deletion and GC: {}\nGC: {first}\n{}",
        stderr(&got),
        env.log()
    );
    assert_eq!(
        sha256sum(&out.join("big.bin")),
        sha256_hex(&big),
        "the get wrote other bytes"
    );
    assert_eq!(
        first["deleted_chunks"], 0,
        "GC deleted chunks a get streamed: {first}"
    );
    assert!(first["pinned"].as_u64().unwrap() > 0, "{first}");
    // A get that starts after the deletion fails cleanly, naming the missing version.
    let late = env.arca_as(
        &dev,
        &["get", "race", "1.0.0", "--out", out.to_str().unwrap()],
    );
    assert!(
        !late.status.success() && stderr(&late).contains("no version 1.0.0"),
        "{}",
        stderr(&late)
    );
    // Once the get is over, the chunks go.
    let second = env.json(&["gc"]);
    assert!(second["deleted_chunks"].as_u64().unwrap() > 0, "{second}");
    assert_eq!(second["pinned"], 0, "{second}");
    let get_row = Row::new(
        DEVELOPER,
        "GC racing a get: version deleted + GC mid-transfer",
        Outcome::NotExploitable,
    );

    // verify: 2.0.0 (checked first) and 3.0.0. 4.0.0, a copy of 3.0.0 pushed and deleted,
    // puts 3.0.0's chunks on the candidate list, so a dry-run GC shows when the verify has
    // pinned them; then 3.0.0 is deleted and collected while the verify runs.
    let v2 = write_dir(
        &env,
        "race-v2",
        &[("a.bin", &pseudo_random(160 * MIB, 802))],
    );
    let v3 = write_dir(&env, "race-v3", &[("b.bin", &pseudo_random(32 * MIB, 803))]);
    for (dir, v) in [(&v2, "2.0.0"), (&v3, "3.0.0"), (&v3, "4.0.0")] {
        env.ok(&[
            "push",
            dir.to_str().unwrap(),
            "--name",
            "race",
            "--version",
            v,
        ]);
    }
    env.ok(&["delete", "race", "4.0.0"]);
    let idle = env.json(&["gc", "--dry-run"]);
    assert!(idle["referenced"].as_u64().unwrap() > 0, "{idle}");
    assert_eq!(idle["pinned"], 0, "{idle}");
    let mut verify = arca_as_cmd(&env, &dev, &["--json", "verify", "race"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = env.json(&["gc", "--dry-run"]);
        if r["pinned"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(
            verify.try_wait().unwrap().is_none(),
            "the verify ended before a GC could meet it"
        );
        assert!(
            Instant::now() < deadline,
            "the verify never pinned its chunks"
        );
    }
    env.ok(&["delete", "race", "3.0.0"]);
    let during = env.json(&["gc"]);
    let verified = wait_with_deadline(&mut verify, 120, "the verify");
    assert!(
        verified.status.success(),
        "verify reported damage that a deletion and GC caused: {}{}\nGC: {during}",
        stdout(&verified),
        stderr(&verified)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&verified)).unwrap();
    assert_eq!(
        (report["ok"].clone(), report["versions"].clone()),
        (serde_json::json!(true), serde_json::json!(2)),
        "{report}"
    );
    assert_eq!(
        during["deleted_chunks"], 0,
        "GC deleted chunks a verify read: {during}"
    );
    assert!(during["pinned"].as_u64().unwrap() > 0, "{during}");
    let after = env.json(&["gc"]);
    assert!(after["deleted_chunks"].as_u64().unwrap() > 0, "{after}");

    // Never a false alarm, and nothing left behind: the store holds what the catalog uses.
    let alarms = integrity_events(&env);
    assert!(alarms.is_empty(), "false integrity violations: {alarms:?}");
    env.ok(&["verify", "race"]);
    let referenced = env.referenced_chunks();
    let mut env = env;
    env.stop();
    assert_eq!(env.stored_chunks(), referenced, "chunks left behind");
    vec![
        get_row,
        Row::new(
            DEVELOPER,
            "GC racing a verify: version deleted + GC mid-check",
            Outcome::NotExploitable,
        ),
    ]
}

/// A `curl` request on the daemon's socket as `u`: the raw API, as a hostile client sends it.
/// `body` is a file to upload (PUT) or a JSON text (POST).
fn curl_as(env: &TestEnv, u: &User, method: &str, path: &str, body: CurlBody<'_>) -> Command {
    let mut c = as_user(u, "curl");
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .args(["-sS", "--unix-socket"])
        .arg(env.socket())
        .args(["-X", method, "-w", "\n%{http_code}"]);
    match body {
        CurlBody::File(f, rate) => {
            c.arg("-T").arg(f).args(["--limit-rate", rate]);
        }
        CurlBody::Json(j) => {
            c.args(["-H", "content-type: application/json", "--data-binary", j]);
        }
    }
    c.arg(format!("http://arcad{path}"));
    c
}

enum CurlBody<'a> {
    File(&'a Path, &'a str),
    Json(&'a str),
}

/// (status, JSON body) of a finished curl.
fn curl_answer(out: &Output) -> (u16, serde_json::Value) {
    let text = stdout(out);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.trim().parse().unwrap_or(0);
    (
        code,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn create_upload(env: &TestEnv, u: &User, md: &PublishedMetadata) -> String {
    let body = serde_json::json!({ "metadata": md }).to_string();
    let out = curl_as(env, u, "POST", "/v1/uploads", CurlBody::Json(&body))
        .output()
        .unwrap();
    let (code, v) = curl_answer(&out);
    assert_eq!(code, 201, "{out:?}");
    v["upload_id"].as_str().unwrap().to_owned()
}

fn commit(
    env: &TestEnv,
    u: &User,
    key: &SecretKey,
    id: &str,
    md: &PublishedMetadata,
    mut entries: Vec<FileEntry>,
) -> (u16, serde_json::Value) {
    let root = merkle_root(&mut entries).unwrap();
    let digest = md.digest().unwrap();
    let body = serde_json::json!({
        "merkle_root": root,
        "metadata_digest": digest,
        "signature": key.sign_version(&root, &digest).to_string(),
        "public_key": key.public().to_string(),
    })
    .to_string();
    let out = curl_as(
        env,
        u,
        "POST",
        &format!("/v1/uploads/{id}/commit"),
        CurlBody::Json(&body),
    )
    .output()
    .unwrap();
    curl_answer(&out)
}

/// Two uploads racing on one path. Within one upload, two PUTs of the same path both pass the
/// "already uploaded?" check before either has finished: the loser is refused, but its chunks
/// used to stay in the upload's list of written chunks, which the commit takes off the GC list:
/// garbage no version references and GC never looks at, as much as a developer cares to send.
/// Across two uploads of one version and path (same chunks), the refused commit must leave
/// nothing either.
pub fn uploads_racing_on_one_path() -> Vec<Row> {
    let env = TestEnv::new();
    env.root_key();
    let dev = user("arca-ins-mnt-dev");
    env.ok(&["role", "assign", &dev.name, "developer", "--model", "twice"]);
    let key =
        SecretKey::from_file_text(&std::fs::read_to_string(env.trusted_key_for(&dev)).unwrap())
            .unwrap();
    let files = env.path().join("race-bodies");
    std::fs::create_dir_all(&files).unwrap();
    let (a, b) = (pseudo_random(12 * MIB, 811), pseudo_random(12 * MIB, 812));
    let (fa, fb) = (files.join("a.bin"), files.join("b.bin"));
    std::fs::write(&fa, &a).unwrap();
    std::fs::write(&fb, &b).unwrap();

    // One upload, the same path PUT twice at once (each sent at 4 MB/s, so each takes about
    // 3 s and both are past the first check long before either is stored).
    let md = PublishedMetadata::new("twice".parse().unwrap(), "1.0.0".parse().unwrap());
    let id = create_upload(&env, &dev, &md);
    let put = format!("/v1/uploads/{id}/files?path=w.bin&mode=420");
    let racers: Vec<Child> = [&fa, &fb]
        .iter()
        .map(|f| {
            curl_as(&env, &dev, "PUT", &put, CurlBody::File(f, "4M"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let answers: Vec<(u16, serde_json::Value)> = racers
        .into_iter()
        .map(|mut c| curl_answer(&wait_with_deadline(&mut c, 120, "a racing PUT")))
        .collect();
    let codes: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert!(
        codes.contains(&200) && codes.contains(&400),
        "one PUT must win and one be refused: {answers:?}"
    );
    let (_, won) = answers.iter().find(|a| a.0 == 200).unwrap();
    let entry: FileEntry = serde_json::from_value(won["entry"].clone()).unwrap();
    let winner = if entry.sha256.to_hex() == sha256_hex(&a) {
        &a
    } else {
        &b
    };
    let (code, body) = commit(&env, &dev, &key, &id, &md, vec![entry]);
    assert_eq!(code, 200, "{body}");

    // Two uploads of one version and path with the same bytes: one commits, the other is
    // refused (the version exists) and discarded.
    let md2 = PublishedMetadata::new("twice".parse().unwrap(), "2.0.0".parse().unwrap());
    let small = files.join("c.bin");
    std::fs::write(&small, pseudo_random(3 * MIB, 813)).unwrap();
    let ids = [
        create_upload(&env, &dev, &md2),
        create_upload(&env, &dev, &md2),
    ];
    let mut entries = Vec::new();
    for id in &ids {
        let p = format!("/v1/uploads/{id}/files?path=w.bin&mode=420");
        let out = curl_as(&env, &dev, "PUT", &p, CurlBody::File(&small, "1G"))
            .output()
            .unwrap();
        let (code, v) = curl_answer(&out);
        assert_eq!(code, 200, "{out:?}");
        entries.push(serde_json::from_value::<FileEntry>(v["entry"].clone()).unwrap());
    }
    let (first, _) = commit(&env, &dev, &key, &ids[0], &md2, vec![entries[0].clone()]);
    let (second, _) = commit(&env, &dev, &key, &ids[1], &md2, vec![entries[1].clone()]);
    assert_eq!(
        (first, second),
        (200, 409),
        "the second commit of 2.0.0 is refused"
    );

    // What GC can see: after a collection, the store holds exactly the chunks the two versions
    // reference, and every file reads back as committed.
    env.json(&["gc"]);
    let got = env.path().join("got");
    env.ok(&["get", "twice", "1.0.0", "--out", got.to_str().unwrap()]);
    assert_eq!(sha256sum(&got.join("w.bin")), sha256_hex(winner));
    let referenced = env.referenced_chunks();
    let mut env = env;
    env.stop();
    let stored = env.stored_chunks();
    assert_eq!(
        stored, referenced,
        "the refused racer's chunks are garbage GC never finds ({} stored, {} referenced)",
        stored, referenced
    );
    vec![Row::new(
        DEVELOPER,
        "two uploads racing on one path strand chunks GC never finds",
        Outcome::Refused,
    )
    .unchanged()]
}

/// A version deleted and pushed again under the same name, with other bytes of the same size,
/// within the same second: while a reader holds the old file open, the kernel keeps its inode
/// and cached pages (KEEP_CACHE), so a reused inode number would serve the old bytes for the
/// new version. Tried until the second push lands in the same second as the first.
pub fn repushed_version_under_cached_pages() -> Vec<Row> {
    let env = TestEnv::new();
    env.root_key();
    let dev = user("arca-ins-mnt-dev");
    env.ok(&["role", "assign", &dev.name, "developer", "--model", "again"]);
    env.trusted_key_for(&dev);
    let file = env.mnt().join("again/1.0.0/w.bin");
    let mut same_second = 0;
    for attempt in 0..20u64 {
        let (old, new) = (
            pseudo_random(256 << 10, 900 + 2 * attempt),
            pseudo_random(256 << 10, 901 + 2 * attempt),
        );
        let d_old = write_dir(&env, "again-old", &[("w.bin", &old)]);
        let d_new = write_dir(&env, "again-new", &[("w.bin", &new)]);
        let push = |d: &Path| {
            let o = env.arca_as(
                &dev,
                &[
                    "push",
                    d.to_str().unwrap(),
                    "--name",
                    "again",
                    "--version",
                    "1.0.0",
                ],
            );
            assert!(o.status.success(), "{}", stderr(&o));
        };
        push(&d_old);
        // A reader reads the whole file and keeps it open: its pages stay cached.
        let mut held = std::fs::File::open(&file).unwrap();
        let mut seen = Vec::new();
        held.read_to_end(&mut seen).unwrap();
        assert!(seen == old);
        env.ok(&["delete", "again", "1.0.0"]);
        push(&d_new);
        let fresh = std::fs::read(&file).unwrap();
        let old_time = held.metadata().unwrap().modified().unwrap();
        let new_time = std::fs::metadata(&file).unwrap().modified().unwrap();
        assert!(
            fresh == new,
            "attempt {attempt}: the mount served the old version's cached bytes for the new one (same second: {})",
            old_time == new_time
        );
        // The open file still reads the version it opened.
        let mut again = Vec::new();
        std::io::Seek::rewind(&mut held).unwrap();
        held.read_to_end(&mut again).unwrap();
        assert!(again == old, "the held file changed under its reader");
        drop(held);
        env.ok(&["delete", "again", "1.0.0"]);
        if old_time == new_time {
            same_second += 1;
            if same_second >= 3 {
                break;
            }
        }
    }
    assert!(
        same_second > 0,
        "no attempt pushed twice within one second: the case was not tried"
    );
    eprintln!("insider: repush within the same second {same_second} time(s), never stale");
    vec![Row::new(
        DEVELOPER,
        "re-pushed version (same second) served from stale cached pages",
        Outcome::NotExploitable,
    )]
}

/// What `ls -a` lists, or its error line.
fn ls_as(u: &User, dir: &Path) -> Result<Vec<String>, String> {
    let out = as_user(u, "ls").arg("-a").arg(dir).output().unwrap();
    if out.status.success() {
        Ok(stdout(&out).lines().map(str::to_owned).collect())
    } else {
        Err(stderr(&out))
    }
}

fn refused_as(u: &User, cmd: &[&str], path: &Path) -> bool {
    let out = as_user(u, cmd[0])
        .args(&cmd[1..])
        .arg(path)
        .output()
        .unwrap();
    !out.status.success() && out.stdout.is_empty() && stderr(&out).contains("Permission denied")
}

/// The mount's root and model directories, as a user with no role and as a developer on one
/// model: they list only what the caller may read, and a lookup, listing or link read of any
/// other model is refused, even after root has walked it (the kernel's caches are not shared).
pub fn mount_listing_as_outsiders() -> Vec<Row> {
    let env = TestEnv::new();
    env.root_key();
    for (name, seed) in [("alpha", 821u64), ("beta", 822)] {
        let d = write_dir(&env, name, &[("w.bin", &pseudo_random(MIB, seed))]);
        env.ok(&[
            "push",
            d.to_str().unwrap(),
            "--name",
            name,
            "--version",
            "1.0.0",
        ]);
        env.ok(&["policy", "set", name, "--require-approval", "no"]);
        for to in ["staging", "production"] {
            env.ok(&["promote", name, "1.0.0", "--to", to]);
        }
    }
    let outsider = user("arca-ins-mnt-norole");
    let dev = user("arca-ins-mnt-dev");
    env.ok(&["role", "assign", &dev.name, "developer", "--model", "alpha"]);
    let mnt = env.mnt();
    // Root walks everything first: the kernel now caches the version directories and files.
    for m in ["alpha", "beta"] {
        std::fs::read(mnt.join(m).join("production/w.bin")).unwrap();
        std::fs::read(mnt.join(m).join("1.0.0/w.bin")).unwrap();
    }
    let state = |env: &TestEnv| {
        [
            env.ok(&["--json", "ls", "alpha"]),
            env.ok(&["--json", "ls", "beta"]),
            env.ok(&["--json", "role", "ls"]),
        ]
        .join("\n")
    };
    let before = state(&env);

    // No role: an empty root, and nothing of any model by name.
    assert_eq!(ls_as(&outsider, &mnt), Ok(vec![".".into(), "..".into()]));
    for m in ["alpha", "beta"] {
        let dir = mnt.join(m);
        assert!(refused_as(&outsider, &["ls"], &dir), "ls {m}");
        assert!(refused_as(&outsider, &["stat"], &dir), "stat {m}");
        assert!(
            refused_as(&outsider, &["readlink", "-v"], &dir.join("production")),
            "readlink {m}"
        );
        assert!(
            refused_as(&outsider, &["stat"], &dir.join("1.0.0/w.bin")),
            "stat {m} file"
        );
        assert!(
            refused_as(&outsider, &["cat"], &dir.join("production/w.bin")),
            "cat {m}"
        );
    }
    // A name that does not exist is refused the same way: no oracle of model names.
    assert!(refused_as(&outsider, &["stat"], &mnt.join("gamma")));

    // A developer on alpha sees alpha alone.
    assert_eq!(
        ls_as(&dev, &mnt),
        Ok(vec![".".into(), "..".into(), "alpha".into()])
    );
    let link = as_user(&dev, "readlink")
        .arg(mnt.join("alpha/production"))
        .output()
        .unwrap();
    assert_eq!(stdout(&link).trim(), "1.0.0", "{link:?}");
    assert!(refused_as(&dev, &["ls"], &mnt.join("beta")));
    assert!(refused_as(
        &dev,
        &["readlink", "-v"],
        &mnt.join("beta/production")
    ));
    assert!(refused_as(&dev, &["cat"], &mnt.join("beta/1.0.0/w.bin")));

    // The refusals are in the audit trail (once per user and model), and nothing else changed.
    let refusals = env.json(&["audit", "ls", "--type", "refusal"]);
    let by = |u: &User, m: &str| {
        refusals.as_array().unwrap().iter().any(|e| {
            e["user"] == u.name.as_str() && e["model"] == m && e["details"]["via"] == "mount"
        })
    };
    assert!(
        by(&outsider, "alpha") && by(&outsider, "beta") && by(&dev, "beta"),
        "{refusals}"
    );
    assert!(!by(&dev, "alpha"), "{refusals}");
    let unchanged = state(&env) == before;
    assert!(unchanged);
    // Root still sees both.
    let mut names: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);
    vec![
        Row::new(
            NO_ROLE,
            "mount: list the root, look up and readlink models",
            Outcome::Refused,
        )
        .unchanged(),
        Row::new(
            DEVELOPER,
            "mount: list and readlink models without read on them",
            Outcome::Refused,
        )
        .unchanged(),
    ]
}
