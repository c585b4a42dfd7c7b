//! Issue #8 attacks on the state directory (items 2, 3 and 7): wiping the audit trail and its
//! key, replaying older sealed records (roles, a policy, version records), and using dedup as
//! an oracle. The state-directory attacker edits RocksDB directly, as someone with write access
//! to the directory but without the KEK would.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Outcome, Row, DEVELOPER, STATE_WRITER};
use crate::harness::{bin, pseudo_random, user, TestEnv};

type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Makes `cf` hold exactly `old` again (events appended since included, gone).
fn restore(env: &TestEnv, cf: &str, old: &Rows) {
    let now = env.cf_rows(cf);
    let db = env.open_db();
    let h = db.cf_handle(cf).expect("column family");
    for (k, _) in &now {
        db.delete_cf(h, k).expect("delete");
    }
    drop(db);
    env.put_rows(cf, old);
}

/// Starts arcad on `env`'s directory and expects it to refuse: returns what it printed.
/// `extra`: more arcad flags.
fn start_refused(env: &TestEnv, extra: &[&str]) -> String {
    let mut child = Command::new(bin("arcad"))
        .arg("--state-dir")
        .arg(env.state_dir())
        .arg("--socket")
        .arg(env.socket())
        .arg("--key-file")
        .arg(env.path().join("kek.key"))
        .arg("--no-mount")
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn arcad");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!st.success(), "arcad started on a tampered store:\n{err}");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("arcad kept running on a store it should refuse");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What root sees of a model: its versions and statuses, its policy, every role.
fn snapshot(env: &TestEnv, model: &str) -> String {
    [
        env.arca(&["--json", "ls", model]).stdout,
        env.arca(&["--json", "policy", "show", model]).stdout,
        env.arca(&["--json", "role", "ls"]).stdout,
    ]
    .map(|o| String::from_utf8_lossy(&o).into_owned())
    .join("\n")
}

/// Item 2: the audit key and trail removed, then a restart.
pub fn audit_wipe() -> Vec<Row> {
    let mut env = TestEnv::new();
    env.root_key();
    env.push_small("wipe", "1.0.0", 1, &[]);
    env.stop();
    let audit = env.cf_rows("audit");
    let idx = env.cf_rows("audit_idx");
    let meta_key = {
        let db = env.open_db();
        let h = db.cf_handle("meta").unwrap();
        let k = db.get_cf(h, b"audit-signing-key").unwrap();
        assert!(k.is_some(), "a new store has its audit key");
        // Everything: events, checkpoints, head, index keys and the key itself.
        let a = db.cf_handle("audit").unwrap();
        for (k, _) in &audit {
            db.delete_cf(a, k).unwrap();
        }
        let i = db.cf_handle("audit_idx").unwrap();
        for (k, _) in &idx {
            db.delete_cf(i, k).unwrap();
        }
        db.delete_cf(h, b"audit-signing-key").unwrap();
        for cf in ["audit", "audit_idx", "meta"] {
            db.flush_cf(db.cf_handle(cf).unwrap()).unwrap();
        }
        k.unwrap()
    };
    let err = start_refused(&env, &[]);
    assert!(err.contains("audit signing key is gone"), "{err}");
    let mut out = vec![Row::new(
        STATE_WRITER,
        "delete the audit key and every audit row, restart",
        Outcome::Refused,
    )
    .unchanged()];

    // The key back, the trail still gone: arcad starts, but the trail is broken (a store with
    // records and no creation event), so no record is used; verify and audit verify name it.
    {
        let db = env.open_db();
        let h = db.cf_handle("meta").unwrap();
        db.put_cf(h, b"audit-signing-key", &meta_key).unwrap();
        db.flush_cf(h).unwrap();
    }
    env.start();
    let ls = env.arca(&["ls", "wipe"]);
    assert!(
        !ls.status.success(),
        "a version was served without its trail"
    );
    let err = env.fails(&["verify", "wipe"]);
    assert!(
        err.contains("not used") && err.contains("audit trail is broken at event 1"),
        "{err}"
    );
    let err = env.fails(&["audit", "verify"]);
    assert!(err.contains("events were removed"), "{err}");
    out.push(Row::new(
        STATE_WRITER,
        "delete every audit row (key kept), restart",
        Outcome::Detected,
    ));
    env.stop();

    // The format marker removed: arcad must not "create" a store over the old one (new keys
    // would overwrite the wrapped data keys).
    restore(&env, "audit", &audit);
    restore(&env, "audit_idx", &idx);
    {
        let db = env.open_db();
        let h = db.cf_handle("meta").unwrap();
        db.delete_cf(h, b"format").unwrap();
        db.flush_cf(h).unwrap();
    }
    let err = start_refused(&env, &[]);
    assert!(err.contains("no format marker"), "{err}");
    out.push(
        Row::new(
            STATE_WRITER,
            "delete the format marker, restart (re-create keys)",
            Outcome::Refused,
        )
        .unchanged(),
    );
    {
        let db = env.open_db();
        let h = db.cf_handle("meta").unwrap();
        db.put_cf(h, b"format", b"arca-store-v3").unwrap();
        db.flush_cf(h).unwrap();
    }
    env.start();
    assert!(env.ok(&["verify", "wipe"]).starts_with("OK"));
    let report = env.json(&["audit", "verify"]);
    assert_eq!(report["ok"], true, "{report}");
    let audit_key = report["public_key"].as_str().unwrap().to_owned();

    // The audit key pinned in the config: a store signing with any other key is refused (here
    // the root user's signing key stands in for a replaced audit key); the right one starts.
    env.stop();
    let other = std::fs::read_to_string(env.root_key().with_extension("pub")).unwrap();
    let config = env.path().join("pinned.toml");
    std::fs::write(
        &config,
        format!("audit_public_key = \"{}\"\n", other.trim()),
    )
    .unwrap();
    let err = start_refused(&env, &["--config", config.to_str().unwrap()]);
    assert!(err.contains("pins audit_public_key"), "{err}");
    out.push(
        Row::new(
            STATE_WRITER,
            "a replaced audit key, with the key pinned in the config",
            Outcome::Refused,
        )
        .unchanged(),
    );
    std::fs::write(&config, format!("audit_public_key = \"{audit_key}\"\n")).unwrap();
    env.daemon_args = vec!["--config".into(), config.to_str().unwrap().into()];
    env.start();
    assert!(env.ok(&["verify", "wipe"]).starts_with("OK"));
    out
}

/// Item 3: a revoked `ml_admin` put back by replaying the older `acl` value.
pub fn replay_acl() -> Vec<Row> {
    let mut env = TestEnv::new();
    env.root_key();
    env.push_small("racl", "1.0.0", 2, &[]);
    let mallory = user("arca-t-ins-racl");
    env.ok(&[
        "role",
        "assign",
        &mallory.name,
        "ml_admin",
        "--model",
        "racl",
    ]);
    env.stop();
    let old = env.cf_rows("acl");
    env.start();
    env.ok(&[
        "role",
        "revoke",
        &mallory.name,
        "ml_admin",
        "--model",
        "racl",
    ]);
    env.stop();
    env.put_rows("acl", &old);
    env.start();
    let before = snapshot(&env, "racl");
    let o = env.arca_as(
        &mallory,
        &["policy", "set", "racl", "--retention-days", "1"],
    );
    assert!(
        !o.status.success(),
        "the replayed role was honoured: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = env.arca_as(&mallory, &["delete", "racl", "1.0.0"]);
    assert!(!o.status.success(), "the replayed role was honoured");
    assert_eq!(
        snapshot(&env, "racl"),
        before,
        "a refused request changed state"
    );
    let err = env.fails(&["verify", "racl"]);
    assert!(
        err.contains("role assignments") && err.contains("an older record put back"),
        "{err}"
    );
    vec![Row::new(
        STATE_WRITER,
        "replay the acl value from before an ml_admin revocation",
        Outcome::Detected,
    )
    .unchanged()]
}

/// Item 3: `signing_required = false` put back over a later `true`.
pub fn replay_policy() -> Vec<Row> {
    let mut env = TestEnv::new();
    env.root_key();
    env.push_small("rpol", "1.0.0", 3, &[]);
    let dev = user("arca-t-ins-rpol");
    env.ok(&["role", "assign", &dev.name, "developer", "--model", "rpol"]);
    env.ok(&["policy", "set", "rpol", "--signing-required", "no"]);
    env.stop();
    let old = env.cf_rows("acl");
    env.start();
    env.ok(&["policy", "set", "rpol", "--signing-required", "yes"]);
    env.stop();
    env.put_rows("acl", &old);
    env.start();
    let before = snapshot(&env, "rpol");
    // The developer's own directory (the CLI reads it as that user).
    let d = dev.home.join("rpol-dev");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("w.bin"), pseudo_random(200_000, 33)).unwrap();
    for p in [&d, &d.join("w.bin")] {
        nix::unistd::chown(p.as_path(), Some(dev.uid.into()), Some(dev.gid.into())).unwrap();
    }
    let o = env.arca_as(
        &dev,
        &[
            "push",
            d.to_str().unwrap(),
            "--name",
            "rpol",
            "--version",
            "2.0.0",
            "--unsigned",
        ],
    );
    assert!(
        !o.status.success(),
        "an unsigned push went through on a replayed policy"
    );
    assert_eq!(
        snapshot(&env, "rpol"),
        before,
        "a refused push changed state"
    );
    let err = env.fails(&["verify", "rpol"]);
    assert!(
        err.contains("policy") && err.contains("an older record put back"),
        "{err}"
    );
    // The model stays locked until an admin sets its policy again.
    env.ok(&["policy", "set", "rpol", "--signing-required", "yes"]);
    env.ok(&["verify", "rpol"]);
    vec![Row::new(
        STATE_WRITER,
        "replay a policy with signing_required=false",
        Outcome::Detected,
    )
    .unchanged()]
}

/// Item 3: version records from before a promotion put back, to move `production` back.
pub fn replay_version() -> Vec<Row> {
    let mut env = TestEnv::new();
    env.root_key();
    env.ok(&["policy", "set", "rver", "--require-approval", "no"]);
    env.push_small("rver", "1.0.0", 4, &[]);
    env.push_small("rver", "2.0.0", 5, &[]);
    for to in ["staging", "production"] {
        env.ok(&["promote", "rver", "1.0.0", "--to", to]);
    }
    env.stop();
    let old = env.cf_rows("versions");
    env.start();
    for to in ["staging", "production"] {
        env.ok(&["promote", "rver", "2.0.0", "--to", to]);
    }
    let link = env.mnt().join("rver/production");
    assert_eq!(std::fs::read_link(&link).unwrap().to_str(), Some("2.0.0"));
    env.stop();
    // Only the rows that changed since: 1.0.0 in production, 2.0.0 in development.
    let now: BTreeMap<Vec<u8>, Vec<u8>> = env.cf_rows("versions").into_iter().collect();
    let replayed: Rows = old
        .into_iter()
        .filter(|(k, v)| now.get(k) != Some(v))
        .collect();
    assert_eq!(replayed.len(), 2, "both records changed with the promotion");
    env.put_rows("versions", &replayed);
    env.start();
    // Neither replayed record is served: production does not move back to 1.0.0.
    let ls = env.arca(&["--json", "ls", "rver"]);
    let listed = String::from_utf8_lossy(&ls.stdout);
    assert!(
        !listed.contains("1.0.0"),
        "a replayed version is served: {listed}"
    );
    assert!(
        std::fs::read_link(&link).map_or(true, |t| t.to_str() != Some("1.0.0")),
        "production moved back to 1.0.0"
    );
    let err = env.fails(&["verify", "rver"]);
    assert!(
        err.contains("1.0.0") && err.contains("an older record put back"),
        "{err}"
    );
    vec![Row::new(
        STATE_WRITER,
        "replay version records from before a promotion",
        Outcome::Detected,
    )]
}

/// Item 7: a developer on one model probes whether content exists in a model they cannot read.
/// The figures are never shown to them, whatever the content, so neither their value nor their
/// absence answers; a reader of every model sees them.
pub fn dedup_probe() -> Vec<Row> {
    let env = TestEnv::new();
    env.root_key();
    env.push_small("secret", "1.0.0", 77, &[]);
    let dev = user("arca-t-ins-dedup");
    let auditor = user("arca-t-ins-dedup-all");
    env.ok(&["role", "assign", &dev.name, "developer", "--model", "open"]);
    env.ok(&["role", "assign", &auditor.name, "viewer"]);
    env.ok(&[
        "role",
        "assign",
        &auditor.name,
        "developer",
        "--model",
        "open",
    ]);
    env.trusted_key_for(&dev);
    env.trusted_key_for(&auditor);
    let probe = |who: &crate::harness::User, version: &str, seed: u64| -> serde_json::Value {
        let d = who.home.join(format!("probe-{version}"));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("w.bin"), pseudo_random(200_000, seed)).unwrap();
        for p in [&d, &d.join("w.bin")] {
            nix::unistd::chown(p.as_path(), Some(who.uid.into()), Some(who.gid.into())).unwrap();
        }
        let o = env.arca_as(
            who,
            &[
                "--json",
                "push",
                d.to_str().unwrap(),
                "--name",
                "open",
                "--version",
                version,
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let hidden = |v: &serde_json::Value| {
        v.get("new_chunks").is_none() && v.get("new_stored_bytes").is_none()
    };
    let stats = |who: Option<&crate::harness::User>| -> serde_json::Value {
        let o = match who {
            Some(u) => env.arca_as(u, &["--json", "stats"]),
            None => env.arca(&["--json", "stats"]),
        };
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let bytes = |v: &serde_json::Value| v["stored_bytes"].as_u64().unwrap();
    let (dev0, all0) = (stats(Some(&dev)), stats(None));
    // The secret model's exact bytes, and content of its own: the same answer either way.
    let guess = probe(&dev, "1.0.0", 77);
    let own = probe(&dev, "2.0.0", 78);
    assert!(hidden(&guess) && hidden(&own), "{guess}\n{own}");
    // Nor do the store's figures give it away: the store wrote nothing for the guess (root's
    // store-wide count), yet dev's own view grew by the version, as for new content.
    let (dev1, all1) = (stats(Some(&dev)), stats(None));
    assert_eq!(dev1["models"], 1, "{dev1}");
    assert!(bytes(&dev1) > bytes(&dev0) + 300_000, "{dev0}\n{dev1}");
    let written = bytes(&all1) - bytes(&all0);
    assert!(written < 250_000, "the guess wrote new chunks: {written}");
    // A reader of every model may see them.
    let seen = probe(&auditor, "4.0.0", 79);
    assert!(seen["new_chunks"].as_u64().unwrap() > 0, "{seen}");
    vec![Row::new(
        DEVELOPER,
        "dedup probe: push another model's bytes, read new_chunks / stats",
        Outcome::NotExploitable,
    )]
}
