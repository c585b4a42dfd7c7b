//! Issue #5: the audit trail. A scripted scenario's compliance report has exactly the expected
//! counts; every kind of tampering with the trail through the RocksDB API is named by
//! `arca audit verify`; SIGKILL during pushes and promotions never separates a change from its
//! event.

use std::collections::{BTreeMap, BTreeSet};

use crate::harness::{pseudo_random, user, TestEnv};

const WIDE: [&str; 4] = ["--from", "2000-01-01", "--to", "2100-01-01"];

fn push(env: &TestEnv, name: &str, version: &str, seed: u64) {
    let d = env.path().join(format!("src-{name}-{version}"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("weights.bin"), pseudo_random(300_000, seed)).unwrap();
    std::fs::write(d.join("config.json"), format!("{{\"seed\": {seed}}}\n")).unwrap();
    env.ok(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        name,
        "--version",
        version,
    ]);
}

#[test]
fn a_scripted_scenario_yields_a_report_with_exact_counts() {
    let mut env = TestEnv::new();
    env.root_key();
    let appr = user("arca-a-appr");
    let none = user("arca-a-none");
    env.trusted_key_for(&appr);
    env.ok(&[
        "role",
        "assign",
        &appr.name,
        "ml_engineer",
        "--model",
        "fraud",
    ]);

    push(&env, "fraud", "1.0.0", 1);
    push(&env, "fraud", "2.0.0", 2);
    for (v, t) in [("1.0.0", "CHG-1"), ("2.0.0", "CHG-2")] {
        env.ok(&["promote", "fraud", v, "--to", "staging"]);
        let out = env.arca_as(&appr, &["approve", "fraud", v, "--ticket", t]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        env.ok(&["promote", "fraud", v, "--to", "production", "--ticket", t]);
    }
    // Denied access.
    let out = env.arca_as(&none, &["show", "fraud", "2.0.0"]);
    assert!(!out.status.success());
    // Two files read.
    let got = env.path().join("got");
    env.ok(&["get", "fraud", "2.0.0", "--out", got.to_str().unwrap()]);
    // A tampered chunk of 2.0.0 found by verify.
    env.stop();
    // Chunks of weights.bin are 8 KiB or more (FastCDC minimum); config.json is one tiny chunk.
    let picked = env.tamper("chunks", |v| v.len() > 8_000, |len| len / 2);
    assert!(picked > 0);
    env.start();
    let err = env.fails(&["verify", "fraud"]);
    assert!(err.contains("weights.bin"), "{err}");
    // Rollback.
    env.ok(&[
        "rollback",
        "fraud",
        "--to",
        "1.0.0",
        "--reason",
        "tampered chunk in 2.0.0",
    ]);

    let r: serde_json::Value = serde_json::from_str(&env.ok(&[
        "audit", "report", "fraud", WIDE[0], WIDE[1], WIDE[2], WIDE[3], "--format", "json",
    ]))
    .unwrap();
    let by_type: BTreeMap<String, u64> =
        serde_json::from_value(r["events_by_type"].clone()).unwrap();
    let expected: BTreeMap<String, u64> = [
        ("role_change", 1),
        ("registration", 2),
        // staging, production for each; 1.0.0's deprecation when 2.0.0 took production;
        // 2.0.0's deprecation by the rollback.
        ("promotion", 6),
        ("approval", 2),
        ("refusal", 1),
        ("access", 2),
        ("integrity_violation", 1),
        ("rollback", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(by_type, expected, "{r:#}");
    assert_eq!(r["total_events"], 16);
    assert_eq!(
        r["unique_users"],
        serde_json::json!(["arca-a-appr", "arca-a-none", "arcad", "root"])
    );
    assert_eq!(
        r["versions_affected"],
        serde_json::json!(["1.0.0", "2.0.0"])
    );
    assert_eq!(r["chain_intact"], true);
    let prod: Vec<(String, String, String)> = r["production_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["version"].as_str().unwrap().into(),
                p["from"].as_str().unwrap().into(),
                p["to"].as_str().unwrap().into(),
            )
        })
        .collect();
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        prod,
        [
            s("1.0.0", "staging", "production"),
            s("1.0.0", "production", "deprecated"),
            s("2.0.0", "staging", "production"),
            s("2.0.0", "production", "deprecated"),
            s("1.0.0", "deprecated", "production"),
        ]
    );
    let approvals: Vec<(&str, &str)> = r["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["approver"].as_str().unwrap(),
                a["ticket"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        approvals,
        [("arca-a-appr", "CHG-1"), ("arca-a-appr", "CHG-2")]
    );

    // The readable forms carry the same figures.
    let md = env.ok(&[
        "audit", "report", "fraud", WIDE[0], WIDE[1], WIDE[2], WIDE[3],
    ]);
    for line in [
        "Audit chain: intact",
        "- Events: 16",
        "| promotion | 6 |",
        "| refusal | 1 |",
        "| integrity_violation | 1 |",
        "rollback: tampered chunk in 2.0.0",
    ] {
        assert!(md.contains(line), "markdown report lacks {line:?}:\n{md}");
    }
    let html = env.ok(&[
        "audit", "report", "fraud", WIDE[0], WIDE[1], WIDE[2], WIDE[3], "--format", "html",
    ]);
    assert!(html.contains("<td>promotion</td><td>6</td>"), "{html}");

    // Filters, and who may read the trail.
    let approvals = env.json(&["audit", "ls", "--model", "fraud", "--type", "approval"]);
    assert_eq!(approvals.as_array().unwrap().len(), 2);
    let refusal = &env.json(&["audit", "ls", "--type", "refusal"])[0];
    assert_eq!(
        (refusal["user"].as_str(), refusal["uid"].as_u64()),
        (Some("arca-a-none"), Some(u64::from(none.uid)))
    );
    assert!(
        refusal["pid"].as_i64().unwrap() > 0,
        "the peer's pid is recorded"
    );
    let out = env.arca_as(&appr, &["audit", "ls", "--model", "fraud"]);
    assert!(out.status.success(), "read on the model reads its events");
    let out = env.arca_as(&appr, &["audit", "ls"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("lacks admin permission"));
    let out = env.arca_as(
        &none,
        &[
            "audit",
            "report",
            "fraud",
            "--from",
            "2000-01-01",
            "--to",
            "2100-01-01",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("lacks read permission"));
    env.ok(&["audit", "verify"]);
}

type KeyValue = (Box<[u8]>, Box<[u8]>);

/// The audit column family's rows: event `seq` is `e` + seq (u64 BE).
fn event_key(seq: u64) -> Vec<u8> {
    let mut k = vec![b'e'];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `arca audit verify --json` with the daemon running: (ok, first bad event).
fn verify(env: &TestEnv) -> (bool, Option<u64>, String) {
    let out = env.arca(&["--json", "audit", "verify"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "audit verify printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.success(), v["ok"] == true);
    (
        v["ok"] == true,
        v["fault"]["seq"].as_u64(),
        v["fault"]["problem"].as_str().unwrap_or("").to_owned(),
    )
}

#[test]
fn every_kind_of_tampering_with_the_trail_is_named() {
    let mut env = TestEnv::new();
    env.root_key();
    for i in 0..4 {
        push(&env, "chain", &format!("1.{i}.0"), 10 + i);
    }
    env.ok(&["promote", "chain", "1.0.0", "--to", "staging"]);
    let n = env.json(&["audit", "verify"])["events"].as_u64().unwrap();
    assert!(n >= 6, "{n} events");
    env.stop();
    let original: Vec<KeyValue> = {
        let db = env.open_db();
        let h = db.cf_handle("audit").unwrap();
        db.iterator_cf(h, rocksdb::IteratorMode::Start)
            .map(|r| r.unwrap())
            .collect()
    };
    let value = |seq: u64| -> Vec<u8> {
        original
            .iter()
            .find(|(k, _)| **k == *event_key(seq))
            .map(|(_, v)| v.to_vec())
            .unwrap()
    };

    type Tamper<'a> = Box<dyn Fn(&rocksdb::DB, &rocksdb::ColumnFamily) + 'a>;
    let cases: Vec<(&str, Tamper, u64, &str)> = vec![
        (
            "edit one byte of event 3",
            Box::new(|db, h| {
                let mut v = value(3);
                let i = v.len() / 2;
                v[i] ^= 1;
                db.put_cf(h, event_key(3), v).unwrap();
            }),
            3,
            "cannot be read",
        ),
        (
            "delete event 4",
            Box::new(|db, h| db.delete_cf(h, event_key(4)).unwrap()),
            4,
            "missing",
        ),
        (
            "swap events 2 and 3",
            Box::new(|db, h| {
                db.put_cf(h, event_key(2), value(3)).unwrap();
                db.put_cf(h, event_key(3), value(2)).unwrap();
            }),
            2,
            "cannot be read",
        ),
        (
            "insert a copy of event 2 after the end",
            Box::new(|db, h| db.put_cf(h, event_key(n + 1), value(2)).unwrap()),
            n + 1,
            "",
        ),
        (
            "truncate the last two events",
            Box::new(|db, h| {
                db.delete_cf(h, event_key(n)).unwrap();
                db.delete_cf(h, event_key(n - 1)).unwrap();
            }),
            n - 1,
            "truncated",
        ),
    ];
    for (what, tamper, seq, problem) in cases {
        {
            let db = env.open_db();
            let h = db.cf_handle("audit").unwrap();
            tamper(&db, h);
            db.flush_cf(h).unwrap();
        }
        env.start();
        let (ok, at, why) = verify(&env);
        assert!(!ok, "{what}: audit verify passed");
        assert_eq!(at, Some(seq), "{what}: named {at:?} ({why})");
        assert!(why.contains(problem), "{what}: {why}");
        env.stop();
        // Put the trail back exactly as it was.
        let db = env.open_db();
        let h = db.cf_handle("audit").unwrap();
        let keys: Vec<Box<[u8]>> = db
            .iterator_cf(h, rocksdb::IteratorMode::Start)
            .map(|r| r.unwrap().0)
            .collect();
        for k in keys {
            db.delete_cf(h, k).unwrap();
        }
        for (k, v) in &original {
            db.put_cf(h, k, v).unwrap();
        }
        db.flush_cf(h).unwrap();
    }
    env.start();
    let (ok, _, why) = verify(&env);
    assert!(ok, "the restored trail verifies: {why}");
}

#[test]
fn sigkill_during_pushes_and_promotions_never_separates_a_change_from_its_event() {
    let mut env = TestEnv::new();
    env.root_key();
    env.ok(&[
        "policy",
        "set",
        "km",
        "--require-approval",
        "no",
        "--max-versions",
        "100000",
    ]);
    let loops: u64 = std::env::var("ARCA_KILL_LOOPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    for iter in 0..loops {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let pid = nix::unistd::Pid::from_raw(env.daemon.as_ref().unwrap().id() as i32);
        std::thread::scope(|s| {
            let worker = s.spawn(|| {
                for j in 0..1000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let v = format!("{iter}.{j}.0");
                    let d = env.path().join(format!("kill-{v}"));
                    std::fs::create_dir_all(&d).unwrap();
                    std::fs::write(d.join("w.bin"), pseudo_random(200_000, iter * 1000 + j))
                        .unwrap();
                    let pushed = env
                        .arca(&["push", d.to_str().unwrap(), "--name", "km", "--version", &v])
                        .status
                        .success();
                    if !pushed
                        || !env
                            .arca(&["promote", "km", &v, "--to", "staging"])
                            .status
                            .success()
                        || !env
                            .arca(&["promote", "km", &v, "--to", "production"])
                            .status
                            .success()
                    {
                        return;
                    }
                }
            });
            // A different moment in each iteration: 150..750 ms into the work.
            std::thread::sleep(std::time::Duration::from_millis(150 + (iter * 211) % 600));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            worker.join().unwrap();
        });
        env.kill(); // reaps the killed process
        env.start();

        let versions = env.arca(&["--json", "ls", "km"]);
        let versions: Vec<serde_json::Value> = if versions.status.success() {
            serde_json::from_slice(&versions.stdout).unwrap()
        } else {
            Vec::new()
        };
        let events = env.json(&["audit", "ls", "--model", "km", "--limit", "100000"]);
        let events = events.as_array().unwrap();
        let registered: BTreeSet<String> = events
            .iter()
            .filter(|e| e["kind"] == "registration")
            .map(|e| e["version"].as_str().unwrap().to_owned())
            .collect();
        let present: BTreeSet<String> = versions
            .iter()
            .map(|v| v["version"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            registered, present,
            "iteration {iter}: versions and their registration events differ"
        );
        for v in &present {
            let history = env.json(&["show", "km", v])["history"]
                .as_array()
                .unwrap()
                .len();
            let changes = events
                .iter()
                .filter(|e| {
                    e["version"] == v.as_str()
                        && (e["kind"] == "promotion" || e["kind"] == "rollback")
                })
                .count();
            assert_eq!(
                history, changes,
                "iteration {iter}: {v} has {history} status changes but {changes} events"
            );
        }
        let productions = versions
            .iter()
            .filter(|v| v["status"] == "production")
            .count();
        assert!(
            productions <= 1,
            "iteration {iter}: {productions} production versions"
        );
        let (ok, _, why) = verify(&env);
        assert!(ok, "iteration {iter}: {why}");
        println!(
            "kill {iter}: {} versions, {} events for km, trail verified",
            present.len(),
            events.len()
        );
    }
}
