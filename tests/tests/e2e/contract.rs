//! Issue #15: the control API keeps the contract its OpenAPI document states. The document
//! (`docs/openapi.json`, the same as `GET /v1/openapi.json`) is checked by a real validator
//! (openapi-spec-validator), then a property-based API fuzzer that reads it (Schemathesis) drives
//! the real daemon, through a TCP to Unix-socket bridge (socat), since it speaks only TCP:
//!
//! 1. as a local user with no role, the bridge running as that user (the daemon takes identity
//!    from the socket's peer credentials, so requests carry the bridge's uid): every response must
//!    match the document and none may be a 5xx, and nothing the store holds may change: catalog,
//!    versions and their histories, policies, roles, keys, the status counts, the audit trail's
//!    state-change events and the key file are compared before and after;
//! 2. as root, for coverage (root may do everything, so the fuzzer reaches past the permission
//!    checks): every response must match the document and none may be a 5xx, and the audit trail
//!    must still verify.
//!
//! Schemathesis' own checks decide "matches the document" (status codes, content types, headers
//! and bodies against their schemas, including the NDJSON lines of verify through
//! tests/contract/hooks.py; schema-violating requests must be refused); the daemon's own request
//! metrics count what it answered, and the 5xx among them. Each phase prints a `CONTRACT|` line.
//! `ARCA_CONTRACT_SECS` sets each phase's fuzzing time (default 60 s). The tools come from
//! `scripts/contract.sh` (a venv pinned with hashes) and Debian's socat and curl, which
//! scripts/test.sh installs; a missing one fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{as_user, need, user, TestEnv, User};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repo")
}

fn contract_sh(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(repo().join("scripts/contract.sh"))
        .args(args)
        .output()
        .expect("run scripts/contract.sh")
}

/// A TCP port on 127.0.0.1 that nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// socat forwarding 127.0.0.1:PORT to the daemon's socket, running as `who` (root if `None`);
/// killed on drop.
struct Bridge {
    child: Child,
    port: u16,
}

impl Bridge {
    fn start(env: &TestEnv, who: Option<&User>) -> Self {
        let port = free_port();
        let mut cmd = match who {
            Some(u) => as_user(u, "socat"),
            None => Command::new("socat"),
        };
        let child = cmd
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg(format!("UNIX-CONNECT:{}", env.socket().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn socat");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "socat did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Bridge { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a caller without a role must not change, as root sees it.
fn state(env: &TestEnv) -> serde_json::Value {
    let mut status = env.json(&["status"]);
    let s = status.as_object_mut().expect("status");
    // Time passes, and refusals are appended to the audit trail: both change by design.
    s.remove("uptime_secs");
    s.remove("audit_events");
    let models = env.json(&["ls"]);
    let mut catalog = BTreeMap::new();
    for m in models.as_array().expect("models") {
        let name = m["name"].as_str().expect("name");
        let versions = env.json(&["ls", name]);
        let mut shown = Vec::new();
        for v in versions.as_array().expect("versions") {
            let version = v["version"].as_str().expect("version");
            shown.push(env.json(&["show", name, version]));
        }
        catalog.insert(
            name.to_owned(),
            serde_json::json!({
                "versions": versions,
                "shown": shown,
                "history": env.json(&["history", name]),
                "policy": env.json(&["policy", "show", name]),
            }),
        );
    }
    // Every event that records a change of state; access and refusal events are appended by
    // reads and refusals by design.
    let changes: Vec<serde_json::Value> = env
        .json(&["audit", "ls", "--limit", "0"])
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| !matches!(e["kind"].as_str(), Some("access" | "refusal")))
        .cloned()
        .collect();
    serde_json::json!({
        "status": status,
        "models": models,
        "catalog": catalog,
        "roles": env.json(&["role", "ls"]),
        "keys": env.json(&["key", "ls"]),
        "audit_changes": changes,
        "key_file": crate::harness::sha256sum(&env.path().join("kek.key")),
    })
}

/// The daemon's own count of the requests it answered, by method, route pattern (`{name}`
/// style, as the document writes it) and status (from its Prometheus metrics, read as root on
/// the socket; the socket's own `/metrics` is not timed, so not counted).
#[derive(Debug, Default)]
struct Served {
    counts: BTreeMap<(String, String, String), u64>,
}

impl Served {
    fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// The operations the document lists, as (method, path).
fn documented() -> BTreeSet<(String, String)> {
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo().join("docs/openapi.json")).expect("read"))
            .expect("docs/openapi.json");
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

fn served(env: &TestEnv) -> Served {
    let (status, body) = env.raw("GET", "/metrics", b"");
    assert_eq!(status, 200, "GET /metrics as root");
    let text = String::from_utf8(body).expect("metrics text");
    let mut out = Served::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("arca_request_duration_seconds_count{") else {
            continue;
        };
        let (labels, count) = rest.split_once("} ").expect("labels and count");
        let count: u64 = count.trim().parse().expect("count");
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_default()
                .to_owned()
        };
        // `/v1/models/:name` back to `/v1/models/{name}`.
        let route = label("route")
            .split('/')
            .map(|seg| match seg.strip_prefix(':') {
                Some(p) => format!("{{{p}}}"),
                None => seg.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("/");
        *out.counts
            .entry((label("method"), route, label("status")))
            .or_default() += count;
    }
    out
}

/// Runs the fuzzer through `bridge` for `secs`, asserts it found nothing and the daemon answered
/// no 5xx, prints the phase's `CONTRACT|` line and returns Schemathesis' report.
fn fuzz(env: &TestEnv, phase: &str, bridge: &Bridge, secs: u64) -> serde_json::Value {
    let out = env
        .path()
        .join(format!("contract-{}", phase.replace(' ', "-")));
    let doc = repo().join("docs/openapi.json");
    let before = served(env);
    let run = contract_sh(&[
        "fuzz",
        doc.to_str().expect("utf-8"),
        &bridge.url(),
        &secs.to_string(),
        out.to_str().expect("utf-8"),
    ]);
    let after = served(env);
    let output = std::fs::read_to_string(out.join("output.txt")).unwrap_or_default();
    let report: serde_json::Value = std::fs::read(out.join("report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| {
            panic!(
                "{phase}: Schemathesis wrote no report ({}):\n{output}\n{}",
                run.status,
                String::from_utf8_lossy(&run.stderr)
            )
        });
    let ops = &report["operations"];
    let (total, tested) = (
        ops["total"].as_u64().unwrap_or(0),
        ops["tested"].as_u64().unwrap_or(0),
    );
    let cases = report["test_cases"]["generated"].as_u64().unwrap_or(0);
    let failures = report["failures"].as_array().map_or(0, Vec::len)
        + report["errors"].as_array().map_or(0, Vec::len);
    // What the daemon answered during this phase: requests, the 5xx among them, and the
    // documented operations it answered (a status other than 405: the fuzzer also tries methods
    // a path does not have).
    let new =
        |k: &(String, String, String)| after.counts[k] - before.counts.get(k).copied().unwrap_or(0);
    let requests = after.total() - before.total();
    let server_errors: u64 = after
        .counts
        .keys()
        .filter(|k| k.2.starts_with('5'))
        .map(new)
        .sum();
    let documented = documented();
    let answered: BTreeSet<(String, String)> = after
        .counts
        .keys()
        .filter(|k| k.2 != "405" && new(k) > 0)
        .map(|k| (k.0.clone(), k.1.clone()))
        .filter(|op| documented.contains(op))
        .collect();
    let untimed = ("GET".to_owned(), "/metrics".to_owned());
    println!(
        "CONTRACT|{phase}|operations {tested}/{total} tested|test cases {cases}|requests {requests}, \
         answering {} of the {} timed operations|5xx {server_errors}|failures: {failures}",
        answered.len(),
        documented.len() - 1
    );
    assert!(
        run.status.success() && failures == 0,
        "{phase}: Schemathesis found {failures} failures or errors (exit {}):\n{output}",
        run.status
    );
    assert_eq!(
        tested, total,
        "{phase}: operations left untested:\n{output}"
    );
    assert!(
        total >= 33,
        "{phase}: only {total} operations in the document"
    );
    assert!(cases > 0 && requests > 0, "{phase}: nothing was sent");
    assert_eq!(server_errors, 0, "{phase}: the daemon answered 5xx");
    // A handler that panics drops its connection, which the fuzzer sees as a network error and
    // retries (contract.sh): the daemon's log must show none.
    let log = env.log();
    assert!(
        !log.contains("panicked"),
        "{phase}: the daemon panicked:\n{log}"
    );
    let missed: Vec<_> = documented
        .iter()
        .filter(|op| **op != untimed && !answered.contains(*op))
        .collect();
    assert!(
        missed.is_empty(),
        "{phase}: the daemon answered none of these: {missed:?}"
    );
    report
}

#[test]
fn the_daemon_keeps_its_openapi_contract() {
    need("socat", "socat");
    need("curl", "curl");
    let install = contract_sh(&["install"]);
    assert!(
        install.status.success(),
        "scripts/contract.sh install failed: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let secs: u64 = std::env::var("ARCA_CONTRACT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);

    let mut env = TestEnv::unstarted();
    // No background GC: the no-role phase compares the store's state before and after.
    env.daemon_args = vec!["--gc-interval-secs".into(), "0".into()];
    env.start();
    let nobody = user("arca-ct-nobody");
    let viewer = user("arca-ct-viewer");

    // The committed document is valid OpenAPI 3.1, and it is what the daemon serves to anyone,
    // asked the way a new user would: curl on the socket, here as the user with no role.
    let doc = repo().join("docs/openapi.json");
    let valid = contract_sh(&["validate", doc.to_str().expect("utf-8")]);
    assert!(
        valid.status.success(),
        "openapi-spec-validator refused docs/openapi.json:\n{}{}",
        String::from_utf8_lossy(&valid.stdout),
        String::from_utf8_lossy(&valid.stderr)
    );
    println!(
        "CONTRACT|validator|{}",
        String::from_utf8_lossy(&valid.stdout).trim()
    );
    let served_doc = as_user(&nobody, "curl")
        .args(["-sS", "--fail", "--unix-socket"])
        .arg(env.socket())
        .arg("http://arca/v1/openapi.json")
        .output()
        .expect("curl");
    assert!(
        served_doc.status.success(),
        "curl --unix-socket SOCK http://arca/v1/openapi.json as a user with no role: {}",
        String::from_utf8_lossy(&served_doc.stderr)
    );
    assert!(
        served_doc.stdout == std::fs::read(&doc).expect("read docs/openapi.json"),
        "GET /v1/openapi.json differs from docs/openapi.json"
    );

    // Something to protect, named as the document's examples name things (model `resnet`,
    // version `1.2.0`), so the fuzzer's first requests reach it.
    env.root_key();
    env.push_small("resnet", "1.2.0", 15, &[]);
    env.ok(&["promote", "resnet", "1.2.0", "--to", "staging"]);
    env.ok(&["policy", "set", "resnet", "--max-versions", "20"]);
    env.ok(&[
        "role",
        "assign",
        &viewer.name,
        "viewer",
        "--model",
        "resnet",
    ]);

    // Phase 1: a caller with no role changes nothing.
    let before = state(&env);
    {
        let bridge = Bridge::start(&env, Some(&nobody));
        let who = Command::new("curl")
            .args(["-sS", &format!("{}/v1/whoami", bridge.url())])
            .output()
            .expect("curl");
        let who: serde_json::Value = serde_json::from_slice(&who.stdout).expect("whoami");
        assert_eq!(
            who["uid"], nobody.uid,
            "the bridge must carry the no-role user's uid"
        );
        fuzz(&env, "no role", &bridge, secs);
    }
    let after = state(&env);
    if before != after {
        let (b, a) = (before.as_object().unwrap(), after.as_object().unwrap());
        let changed: Vec<&String> = b.keys().filter(|k| b[*k] != a[*k]).collect();
        panic!(
            "a caller with no role changed the store ({changed:?}):\nbefore: {}\nafter: {}",
            serde_json::to_string_pretty(&before).unwrap(),
            serde_json::to_string_pretty(&after).unwrap()
        );
    }
    println!("CONTRACT|no role|state changed: no (catalog, policies, roles, keys, status counts, audit state-change events, key file)");

    // Phase 2: root, for coverage past the permission checks.
    {
        let bridge = Bridge::start(&env, None);
        fuzz(&env, "root", &bridge, secs);
    }
    let verified = env.json(&["audit", "verify"]);
    assert_eq!(
        verified["ok"], true,
        "the audit trail after fuzzing: {verified}"
    );
}
