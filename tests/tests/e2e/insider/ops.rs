//! Issue #8 attacks on how arcad runs (see `mod.rs`): a dev directory or socket path prepared by
//! another local user, retention used as a delete by someone who may only promote, store-wide
//! reads without a role, a process of arcad's own user reading its memory, and an old KEK used
//! on the state directory after a rotation.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Outcome, Row, NO_ROLE, STATE_WRITER};
use crate::harness::{as_user, bin, user, walk, TestEnv, User};

const DAY: u64 = 86_400;

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// The names in a directory, sorted (what a refused start must leave as it found it).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs a command that must exit by itself within a minute (a refused start), returning its
/// output; a daemon that starts instead is killed and fails the test.
fn must_exit(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "arcad did not refuse to start:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// arcad on a base directory laid out like the development defaults (`state`, `arcad.sock`).
fn arcad_on(base: &Path, kek: &Path) -> Command {
    let mut c = Command::new(bin("arcad"));
    c.arg("--state-dir")
        .arg(base.join("state"))
        .arg("--socket")
        .arg(base.join("arcad.sock"))
        .arg("--key-file")
        .arg(kek)
        .arg("--no-mount")
        .env("RUST_LOG", "info")
        // As on a host: the error alone, without a backtrace after it.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    c
}

/// The refusal: one `Error:` line, which must name `what`.
fn refusal_line(out: &Output, what: &Path) -> String {
    assert!(!out.status.success(), "arcad started");
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("Error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    let line = errors[0].to_owned();
    assert!(
        line.contains("refusing") && line.contains(&what.display().to_string()),
        "the refusal does not name {}: {err}",
        what.display()
    );
    line
}

/// A local user with no role pre-creates the development base directory (in a sticky,
/// world-writable directory, as /var/tmp is) owned by them, makes one world-writable, or puts
/// a link in its place. arcad refuses each, naming it, and creates nothing in it.
pub fn dev_base_prepared_by_another_user() -> Vec<Row> {
    let env = TestEnv::new();
    let mallory = user("arca-t-ops-nr");
    let kek = env.path().join("kek.key");
    // A private stand-in for /var/tmp (root's, 1777), so parallel tests never share a base.
    let vartmp = env.path().join("vartmp");
    std::fs::create_dir(&vartmp).unwrap();
    std::fs::set_permissions(&vartmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut rows = Vec::new();

    // Owned by the attacker.
    let base = vartmp.join("arca-dev");
    let st = as_user(&mallory, "mkdir").arg(&base).status().unwrap();
    assert!(st.success());
    let before = listing(&base);
    let line = refusal_line(&must_exit(arcad_on(&base, &kek)), &base);
    assert!(
        line.contains(&format!("owned by uid {}", mallory.uid)),
        "{line}"
    );
    assert_eq!(listing(&base), before, "nothing created in their directory");
    let mut check = arcad_on(&base, &kek);
    check.arg("--check-config");
    refusal_line(&must_exit(check), &base);
    rows.push(
        Row::new(
            NO_ROLE,
            "pre-creates the dev base dir (theirs): arcad refuses, names it",
            Outcome::Refused,
        )
        .unchanged(),
    );

    // World-writable (root's, mode 0777: the attacker can plant files in it).
    let base = vartmp.join("arca-dev-ww");
    std::fs::create_dir(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
    let line = refusal_line(&must_exit(arcad_on(&base, &kek)), &base);
    assert!(line.contains("0777"), "{line}");
    assert!(listing(&base).is_empty(), "nothing created in it");
    rows.push(
        Row::new(
            NO_ROLE,
            "dev base dir others can write (0777): arcad refuses, names it",
            Outcome::Refused,
        )
        .unchanged(),
    );

    // A link in its place, to a directory of root's the attacker wants arcad to write into.
    let target = env.path().join("roots-dir");
    std::fs::create_dir(&target).unwrap();
    let base = vartmp.join("arca-dev-link");
    let st = as_user(&mallory, "ln")
        .arg("-s")
        .arg(&target)
        .arg(&base)
        .status()
        .unwrap();
    assert!(st.success());
    refusal_line(&must_exit(arcad_on(&base, &kek)), &base);
    assert!(
        listing(&target).is_empty(),
        "nothing created through the link"
    );
    rows.push(
        Row::new(
            NO_ROLE,
            "symlink in place of the dev base dir: arcad refuses",
            Outcome::Refused,
        )
        .unchanged(),
    );
    rows
}

/// A symlink planted where arcad binds its socket, pointing at a root-owned file the attacker
/// wants made 0666: in a shared sticky directory (arcad refuses the directory) and in arcad's
/// own directory (a link there is not a socket). The target's mode never changes.
pub fn socket_path_symlink() -> Vec<Row> {
    let env = TestEnv::new();
    let mallory = user("arca-t-ops-nr");
    let kek = env.path().join("kek.key");
    let secret = env.path().join("root-only");
    std::fs::write(&secret, b"root's secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The socket configured in a shared sticky directory (as /tmp/arcad.sock would be).
    let shared = env.path().join("tmp");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let sock = shared.join("arcad.sock");
    let st = as_user(&mallory, "ln")
        .arg("-s")
        .arg(&secret)
        .arg(&sock)
        .status()
        .unwrap();
    assert!(st.success());
    let mut c = Command::new(bin("arcad"));
    c.arg("--state-dir")
        .arg(env.path().join("state2"))
        .arg("--socket")
        .arg(&sock)
        .arg("--key-file")
        .arg(&kek)
        .arg("--no-mount")
        .env_remove("RUST_BACKTRACE");
    let line = refusal_line(&must_exit(c), &shared);
    assert!(line.contains("1777"), "{line}");
    assert_eq!(mode_of(&secret), 0o600, "the link's target was chmodded");

    // A link left at the socket path in arcad's own directory.
    let own = env.path().join("run");
    std::fs::create_dir(&own).unwrap();
    let sock = own.join("arcad.sock");
    std::os::unix::fs::symlink(&secret, &sock).unwrap();
    let mut c = Command::new(bin("arcad"));
    c.arg("--state-dir")
        .arg(env.path().join("state3"))
        .arg("--socket")
        .arg(&sock)
        .arg("--key-file")
        .arg(&kek)
        .arg("--no-mount");
    let out = must_exit(c);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(mode_of(&secret), 0o600, "the link's target was chmodded");
    assert_eq!(std::fs::read(&secret).unwrap(), b"root's secret\n");
    vec![Row::new(
        NO_ROLE,
        "symlink at the socket path to a root file: mode kept 0600",
        Outcome::Refused,
    )
    .unchanged()]
}

/// A shared library that moves the wall clock (`CLOCK_REALTIME`) back by
/// `ARCA_TEST_CLOCK_BACK_SECS` for the process it is preloaded into: arcad then records versions
/// and transitions "long ago", as the retention rules need, with nothing in arcad itself able to
/// change its clock.
fn clock_shim(dir: &Path) -> PathBuf {
    let src = dir.join("clock-back.c");
    std::fs::write(
        &src,
        r#"#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
static long back;
static int (*real)(clockid_t, struct timespec *);
__attribute__((constructor)) static void init(void) {
    const char *s = getenv("ARCA_TEST_CLOCK_BACK_SECS");
    back = s ? atol(s) : 0;
    real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
}
int clock_gettime(clockid_t id, struct timespec *ts) {
    int r = real(id, ts);
    if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) ts->tv_sec -= back;
    return r;
}
"#,
    )
    .unwrap();
    let so = dir.join("clock-back.so");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&so)
        .arg(&src)
        .arg("-ldl")
        .output()
        .expect("cc (the C compiler RocksDB's build needs)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    so
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// (version, status, merkle root) of every version of `model`.
fn versions(env: &TestEnv, model: &str) -> Vec<(String, String, String)> {
    env.json(&["ls", model])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_owned(),
                v["status"].as_str().unwrap().to_owned(),
                v["merkle_root"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// An `ml_engineer` (promote, no delete) walks versions created 400 days ago, the current
/// production one included, to `archived` and waits for GC under the default 365-day
/// retention: they stay, because retention counts from archiving. An old archived version that
/// a kept version names as its parent stays too; an old archived one without children goes
/// (so GC did run retention, and the clock really was 400 days back).
pub fn promote_to_archived_then_gc() -> Vec<Row> {
    let mut env = TestEnv::new();
    let eng = user("arca-t-ops-eng");
    let m = "ops-ret";
    env.root_key();
    // 400 days ago, by the daemon's clock.
    let shim = clock_shim(env.path());
    env.stop();
    env.daemon_env = vec![
        ("LD_PRELOAD".into(), shim.display().to_string()),
        ("ARCA_TEST_CLOCK_BACK_SECS".into(), (400 * DAY).to_string()),
    ];
    env.start();
    env.ok(&["policy", "set", m, "--require-approval", "no"]);
    let walk_to = |v: &str, to: &[&str]| {
        for s in to {
            env.ok(&["promote", m, v, "--to", s]);
        }
    };
    env.push_small(m, "0.9.0", 1, &[]);
    walk_to(
        "0.9.0",
        &["staging", "production", "deprecated", "archived"],
    );
    env.push_small(m, "1.0.0", 2, &[]);
    walk_to(
        "1.0.0",
        &["staging", "production", "deprecated", "archived"],
    );
    env.push_small(m, "2.0.0", 3, &["--parent", "1.0.0"]);
    env.push_small(m, "3.0.0", 4, &[]);
    walk_to("3.0.0", &["staging", "production"]);
    env.stop();
    env.daemon_env.clear();
    env.start();

    let show = env.json(&["show", m, "3.0.0"]);
    let created = show["created_at"].as_u64().unwrap();
    assert!(
        now_secs() - created > 365 * DAY,
        "the premise: 3.0.0 is older than the retention ({created})"
    );
    assert_eq!(show["status"], "production");
    env.ok(&["role", "assign", &eng.name, "ml_engineer", "--model", m]);

    // The attack: production -> deprecated -> archived, then GC (theirs is refused; the
    // daemon's periodic run is the one that would remove it: root's `arca gc` stands in).
    for to in ["deprecated", "archived"] {
        let out = env.arca_as(&eng, &["promote", m, "3.0.0", "--to", to]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let before = versions(&env, m);
    let out = env.arca_as(&eng, &["gc"]);
    assert!(!out.status.success(), "an ml_engineer ran gc");
    let out = env.arca_as(&eng, &["delete", m, "3.0.0"]);
    assert!(!out.status.success(), "an ml_engineer deleted a version");
    let r = env.json(&["gc"]);
    assert_eq!(
        r["expired_versions"],
        serde_json::json!([{"name": m, "version": "0.9.0"}]),
        "{r}"
    );
    let after = versions(&env, m);
    let expected: Vec<_> = before.iter().filter(|v| v.0 != "0.9.0").cloned().collect();
    assert_eq!(after, expected, "only the childless old archive went");
    assert!(after.iter().any(|v| v.0 == "3.0.0" && v.1 == "archived"));
    assert!(after.iter().any(|v| v.0 == "1.0.0" && v.1 == "archived"));
    env.ok(&["verify", m]);
    let ev = env.json(&["audit", "ls", "--model", m, "--type", "gc_removal"]);
    assert_eq!(ev.as_array().unwrap().len(), 1, "{ev}");
    assert_eq!(ev[0]["version"], "0.9.0");
    vec![
        Row::new(
            "ml_engineer on one model (no delete)",
            "archive a 400-day-old production version, await GC: kept",
            Outcome::NotExploitable,
        )
        .unchanged(),
        Row::new(
            "ml_engineer on one model (no delete)",
            "retention on the old parent of a kept version: kept",
            Outcome::NotExploitable,
        )
        .unchanged(),
    ]
}

/// A raw request on the socket as `u` (perl is in every Debian system: perl-base is essential).
fn raw_as(env: &TestEnv, u: &User, path: &str) -> (u16, String) {
    let script = r#"use IO::Socket::UNIX;
my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect: $!";
print $s "GET $ARGV[1] HTTP/1.1\r\nhost: arcad\r\nconnection: close\r\n\r\n";
local $/; my $r = <$s>; print $r;"#;
    let out = as_user(u, "perl")
        .args(["-e", script])
        .arg(env.socket())
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Refusals recorded for `u`.
fn refusals(env: &TestEnv, u: &User) -> usize {
    env.json(&["audit", "ls", "--user", &u.name, "--type", "refusal"])
        .as_array()
        .unwrap()
        .len()
}

/// A local user with no role lists the trusted keys, reads the store's figures (stats,
/// status, metrics on the socket) and verifies a model: each refused (403, a refusal event,
/// nothing of the store in the answer). A developer on one model verifies it while the store
/// holds a broken record of unknown model: they see only their model; root sees the record.
pub fn store_wide_reads_without_a_role() -> Vec<Row> {
    let mut env = TestEnv::new();
    let nr = user("arca-t-ops-nr");
    let dev = user("arca-t-ops-dev");
    env.root_key();
    env.push_small("ops-mine", "1.0.0", 11, &[]);
    env.push_small("ops-secret", "1.0.0", 12, &[]);
    env.ok(&[
        "role",
        "assign",
        &dev.name,
        "developer",
        "--model",
        "ops-mine",
    ]);
    let fingerprint = env.json(&["key", "ls"])[0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let models_before = env.ok(&["--json", "ls"]);

    let r0 = refusals(&env, &nr);
    let mut tries = 0;
    for args in [
        &["key", "ls"][..],
        &["stats"],
        &["status"],
        &["verify", "ops-secret"],
    ] {
        let out = env.arca_as(&nr, args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(!out.status.success(), "{args:?} answered: {stdout}");
        assert!(stdout.trim().is_empty(), "{args:?}: {stdout}");
        assert!(stderr.contains("permission denied"), "{args:?}: {stderr}");
        assert!(
            !stderr.contains(&fingerprint) && !stderr.contains("ops-mine"),
            "{args:?}: {stderr}"
        );
        tries += 1;
    }
    let (status, text) = raw_as(&env, &nr, "/metrics");
    assert_eq!(status, 403, "{text}");
    assert!(!text.contains("arca_store_"), "{text}");
    tries += 1;
    assert_eq!(refusals(&env, &nr), r0 + tries, "one refusal event each");
    assert_eq!(env.ok(&["--json", "ls"]), models_before);

    // A developer still reads what their role covers, but not the store-wide metrics (their
    // chunk and byte gauges would be a dedup oracle), and `status` counts only their model.
    let out = env.arca_as(&dev, &["key", "ls"]);
    assert!(out.status.success());
    let (status, text) = raw_as(&env, &dev, "/metrics");
    assert_eq!(status, 403, "{text}");
    let st = env.arca_as(&dev, &["--json", "status"]);
    assert!(st.status.success());
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["models"], 1, "{st}");
    assert!(st.get("disk_bytes").is_none(), "{st}");

    // A record that does not open (a copy under another row: its AEAD binds the row), of a
    // model nobody can name without the keys.
    env.stop();
    {
        let db = env.open_db();
        let h = db.cf_handle("versions").unwrap();
        let (_, v) = db
            .iterator_cf(h, rocksdb::IteratorMode::Start)
            .next()
            .unwrap()
            .unwrap();
        db.put_cf(h, [0x42u8; 32], &v).unwrap();
        db.flush_cf(h).unwrap();
    }
    env.start();
    let out = env.arca_as(&dev, &["--json", "verify", "ops-mine"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let rep: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(rep["failures"], serde_json::json!([]), "{rep}");
    assert_eq!(rep["versions"], 1);
    let root = env.arca(&["--json", "verify", "ops-mine"]);
    let rep: serde_json::Value = serde_json::from_slice(&root.stdout).unwrap();
    assert!(
        rep["failures"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("not served"),
        "root, who reads every model, is told: {rep}"
    );
    vec![
        Row::new(
            NO_ROLE,
            "list trusted keys / stats / status / metrics / verify: 403",
            Outcome::Refused,
        )
        .unchanged(),
        Row::new(
            super::DEVELOPER,
            "verify own model: nothing of other models' records",
            Outcome::NotExploitable,
        ),
    ]
}

/// arcad run as an ordinary user (no mount): another process of that same user can neither
/// read its environment nor its memory through /proc, because arcad is not dumpable. (When a
/// process is not dumpable the kernel makes its /proc/PID files root's and refuses ptrace-like
/// access to its own uid; the same process left dumpable would be readable, as `sleep` shows.)
pub fn arcad_memory_from_its_own_user() -> Vec<Row> {
    let env = TestEnv::new();
    let svc = user("arca-t-ops-svc");
    let base = env.path().join("svc");
    std::fs::create_dir(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&base, Some(svc.uid), Some(svc.gid)).unwrap();
    let kek = base.join("kek.key");
    std::fs::copy(env.path().join("kek.key"), &kek).unwrap();
    std::os::unix::fs::chown(&kek, Some(svc.uid), Some(svc.gid)).unwrap();
    let mut c = as_user(&svc, bin("arcad"));
    c.arg("--state-dir")
        .arg(base.join("state"))
        .arg("--socket")
        .arg(base.join("arcad.sock"))
        .arg("--key-file")
        .arg(&kek)
        .arg("--no-mount")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // setpriv execs arcad: the child's pid is arcad's.
    let mut daemon = c.spawn().unwrap();
    let pid = daemon.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(base.join("arcad.sock")).is_err() {
        if let Some(st) = daemon.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut daemon.stderr.take().unwrap(), &mut err).unwrap();
            panic!("arcad as {} exited with {st}: {err}", svc.name);
        }
        assert!(Instant::now() < deadline, "arcad did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:")
                && l.split_whitespace().nth(1) == Some(&svc.uid.to_string())),
        "arcad runs as {}: {status}",
        svc.name
    );
    let owner = |p: u32| {
        std::fs::metadata(format!("/proc/{p}/environ"))
            .unwrap()
            .uid()
    };
    let reads = |p: u32, what: &str| {
        as_user(&svc, "head")
            .args(["-c", "1"])
            .arg(format!("/proc/{p}/{what}"))
            .output()
            .unwrap()
            .status
            .success()
    };
    // The control: a dumpable process of the same user is the user's to read.
    let mut sleeper = as_user(&svc, "sleep").arg("30").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let control = (
        owner(sleeper.id()),
        reads(sleeper.id(), "environ"),
        reads(sleeper.id(), "maps"),
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(
        control,
        (svc.uid, true, true),
        "a dumpable process is readable"
    );
    // (`mem` is left out: reading it at offset 0 fails for any process, so it proves nothing.)
    let seen = (owner(pid), reads(pid, "environ"), reads(pid, "maps"));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = daemon.wait();
    assert_eq!(
        seen,
        (0, false, false),
        "arcad's /proc files: owner; environ and maps readable by its own user"
    );
    vec![Row::new(
        "process of arcad's own user",
        "read arcad's memory or environment via /proc: denied",
        Outcome::Refused,
    )]
}

/// Every wrapped key in `meta` (the daemon must be stopped).
fn wrapped_keys(env: &TestEnv) -> Vec<(String, Vec<u8>)> {
    let db = env.open_db();
    let h = db.cf_handle("meta").unwrap();
    db.iterator_cf(h, rocksdb::IteratorMode::Start)
        .map(|r| r.unwrap())
        .filter(|(k, _)| {
            let k = String::from_utf8_lossy(k);
            k.starts_with("dek/") || k == "idk" || k == "audit-signing-key"
        })
        .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
        .collect()
}

/// The files under the state directory that hold any of `needles`.
fn files_holding(env: &TestEnv, needles: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut hits = Vec::new();
    for f in walk(&env.state_dir()) {
        let Ok(bytes) = std::fs::read(&f) else {
            continue; // deleted while we walked
        };
        for (label, n) in needles {
            if bytes.windows(n.len()).any(|w| w == n.as_slice()) {
                hits.push(format!("{label} in {}", f.display()));
            }
        }
    }
    hits
}

/// Someone who once copied the KEK (or will obtain it) reads the state directory after
/// `rotate-kek`: the keys wrapped under that KEK are in no file any more (SST, WAL, blob),
/// though they were before the rotation; with `--with-dek` the old data key's row goes too.
pub fn old_kek_after_rotation() -> Vec<Row> {
    let mut env = TestEnv::new();
    env.root_key();
    env.push_small("ops-kek", "1.0.0", 21, &[]);
    env.stop();
    // Read through RocksDB (opening it also flushes its log into table files).
    let old = wrapped_keys(&env);
    assert_eq!(old.len(), 3, "dek/1, idk, audit-signing-key: {old:?}");
    assert!(
        !files_holding(&env, &old).is_empty(),
        "the premise: the old wraps are in the state directory's files"
    );
    env.start();
    let out = env.arca(&["--json", "key", "rotate-kek"]);
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["old_wraps_purged"], true, "{r}");
    let hint = String::from_utf8_lossy(&out.stderr);
    assert!(hint.contains("arca key rotate-dek"), "{hint}");
    // While arcad runs, and after it stopped.
    assert_eq!(files_holding(&env, &old), Vec::<String>::new());
    env.stop();
    assert_eq!(files_holding(&env, &old), Vec::<String>::new());
    let second = wrapped_keys(&env);
    env.start();

    // Again, with the data key: at the end, the old data key's row is gone from the files too.
    let out = env.arca(&["key", "rotate-kek", "--with-dek"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("data-key rotation"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = env.json(&["status"]);
        if s["rotation"]["finished_at"].is_u64() {
            break;
        }
        assert!(Instant::now() < deadline, "rotation did not finish: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let all: Vec<_> = old.iter().chain(second.iter()).cloned().collect();
    assert_eq!(files_holding(&env, &all), Vec::<String>::new());
    env.stop();
    let now = wrapped_keys(&env);
    assert!(
        now.iter().all(|(k, _)| k != "dek/1"),
        "old data key row: {now:?}"
    );
    assert_eq!(files_holding(&env, &all), Vec::<String>::new());
    env.start();
    env.ok(&["verify", "ops-kek"]);
    vec![Row::new(
        STATE_WRITER,
        "old KEK + state dir after rotate-kek: old wraps in no file",
        Outcome::NotExploitable,
    )]
}
