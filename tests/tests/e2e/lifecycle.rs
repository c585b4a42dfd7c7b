//! The lifecycle as the mount shows it (issues #3 and #4): promotions with signed approvals,
//! four eyes, at most one production version, rollback, history, and the `production` link.

use std::os::unix::fs::FileExt;

use crate::harness::{pseudo_random, user, TestEnv};
use crate::mount::push_model;

const MIB: usize = 1 << 20;

/// A model directory owned by a local user, pushed by that user.
fn push_as(
    env: &TestEnv,
    u: &crate::harness::User,
    name: &str,
    version: &str,
    seed: u64,
) -> std::path::PathBuf {
    let d = env.path().join(format!("{name}-{version}"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("model.safetensors"),
        pseudo_random(8 * MIB + 5, seed),
    )
    .unwrap();
    std::fs::write(d.join("config.json"), format!("{{\"v\": \"{version}\"}}\n")).unwrap();
    for p in [
        d.clone(),
        d.join("model.safetensors"),
        d.join("config.json"),
    ] {
        nix::unistd::chown(&p, Some(u.uid.into()), Some(u.gid.into())).unwrap();
    }
    let out = env.arca_as(
        u,
        &[
            "push",
            d.to_str().unwrap(),
            "--name",
            name,
            "--version",
            version,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

#[test]
fn production_link_switches_atomically_and_open_files_keep_their_bytes() {
    let env = TestEnv::new();
    env.root_key();
    let u = user("arca-e2e-pub2");
    env.trusted_key_for(&u);
    env.ok(&["role", "assign", &u.name, "developer", "--model", "llama"]);
    let v1 = push_as(&env, &u, "llama", "1.0.0", 90);
    push_as(&env, &u, "llama", "2.0.0", 91);
    let link = env.mnt().join("llama/production");
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "no production link before any production version"
    );

    // The lifecycle's rules, each refusal one line that changes nothing.
    let err = env.fails(&[
        "promote",
        "llama",
        "1.0.0",
        "--to",
        "production",
        "--ticket",
        "T-1",
    ]);
    assert!(err.contains("can move to staging, not production"), "{err}");
    env.ok(&["promote", "llama", "1.0.0", "--to", "staging"]);
    assert_eq!(
        std::fs::read_link(env.mnt().join("llama/staging"))
            .unwrap()
            .to_str(),
        Some("1.0.0")
    );
    let err = env.fails(&[
        "promote",
        "llama",
        "1.0.0",
        "--to",
        "production",
        "--ticket",
        "T-1",
    ]);
    assert!(err.contains("0 valid approval(s) for ticket T-1"), "{err}");
    let out = env.arca_as(
        &u,
        &[
            "promote",
            "llama",
            "1.0.0",
            "--to",
            "production",
            "--ticket",
            "T-1",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lacks promote permission on model llama"),
        "a developer may not promote: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ok(&[
        "approve",
        "llama",
        "1.0.0",
        "--ticket",
        "T-1",
        "--comment",
        "eval passed",
    ]);
    let again = env.json(&["approve", "llama", "1.0.0", "--ticket", "T-1"]);
    assert_eq!(
        again["approvals"].as_array().unwrap().len(),
        1,
        "the same approver counts once"
    );
    let err = env.fails(&[
        "promote",
        "llama",
        "1.0.0",
        "--to",
        "production",
        "--ticket",
        "T-OTHER",
    ]);
    assert!(
        err.contains("0 valid approval(s) for ticket T-OTHER"),
        "an approval is for its ticket only: {err}"
    );
    env.ok(&[
        "promote",
        "llama",
        "1.0.0",
        "--to",
        "production",
        "--ticket",
        "T-1",
    ]);
    assert_eq!(std::fs::read_link(&link).unwrap().to_str(), Some("1.0.0"));

    // A reader opens the production file, as an inference server would.
    let original = std::fs::read(v1.join("model.safetensors")).unwrap();
    let held = std::fs::File::open(link.join("model.safetensors")).unwrap();
    let mut first = vec![0u8; MIB];
    held.read_exact_at(&mut first, 0).unwrap();
    assert!(first == original[..MIB]);

    // 2.0.0 takes production: one atomic switch, 1.0.0 deprecated in the same write. A watcher
    // resolving the link all the while must only ever see 1.0.0, then 2.0.0: never a gap.
    env.ok(&["promote", "llama", "2.0.0", "--to", "staging"]);
    env.ok(&["approve", "llama", "2.0.0", "--ticket", "T-2"]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (looked, first_look) = std::sync::mpsc::channel();
    let seen = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen: Vec<String> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now = match std::fs::read_link(&link) {
                    Ok(t) => t.to_string_lossy().into_owned(),
                    Err(e) => format!("error: {e}"),
                };
                if seen.last() != Some(&now) {
                    seen.push(now);
                    let _ = looked.send(());
                }
            }
            seen
        });
        // The switch only once the watcher has looked (on a loaded machine it may start late).
        first_look.recv().unwrap();
        env.ok(&[
            "promote",
            "llama",
            "2.0.0",
            "--to",
            "production",
            "--ticket",
            "T-2",
        ]);
        std::thread::sleep(std::time::Duration::from_millis(100));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().unwrap()
    });
    assert_eq!(
        seen,
        ["1.0.0", "2.0.0"],
        "the production link must switch in one step"
    );
    assert_eq!(std::fs::read_link(&link).unwrap().to_str(), Some("2.0.0"));
    assert_eq!(
        std::fs::read_to_string(link.join("config.json")).unwrap(),
        "{\"v\": \"2.0.0\"}\n"
    );
    let versions = env.json(&["ls", "llama"]);
    let statuses: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["deprecated", "production"],
        "never two production versions"
    );
    let show = env.json(&["show", "llama", "1.0.0"]);
    let last = show["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (
            last["from"].as_str(),
            last["to"].as_str(),
            last["by"].as_str()
        ),
        (Some("production"), Some("deprecated"), Some("root"))
    );

    // The reader that held 1.0.0's file open keeps reading 1.0.0's bytes, to the end.
    let mut rest = vec![0u8; original.len() - MIB];
    held.read_exact_at(&mut rest, MIB as u64).unwrap();
    assert!(
        rest == original[MIB..],
        "an open file of the old version changed under its reader"
    );
}

#[test]
fn the_publisher_cannot_approve_their_own_version() {
    let env = TestEnv::new();
    env.root_key();
    push_model(&env, "own", "1.0.0", 95);
    env.ok(&["promote", "own", "1.0.0", "--to", "staging"]);
    let err = env.fails(&["approve", "own", "1.0.0", "--ticket", "T-9"]);
    assert!(err.contains("cannot approve it (four eyes)"), "{err}");
    let show = env.json(&["show", "own", "1.0.0"]);
    assert!(show["approvals"].as_array().unwrap().is_empty());
    assert_eq!(show["status"], "staging");
}

#[test]
fn rollback_returns_to_an_earlier_production_version_and_the_link_follows() {
    let env = TestEnv::new();
    env.root_key();
    let u = user("arca-e2e-pub3");
    env.trusted_key_for(&u);
    env.ok(&["role", "assign", &u.name, "ml_engineer", "--model", "rb"]);
    push_as(&env, &u, "rb", "1.0.0", 100);
    let v2 = push_as(&env, &u, "rb", "2.0.0", 101);
    // 3.0.0 derives from 2.0.0, which derives from nothing: lineage 3.0.0 <- 2.0.0.
    let d3 = env.path().join("rb-3.0.0");
    std::fs::create_dir_all(&d3).unwrap();
    std::fs::write(d3.join("config.json"), "{\"v\": \"3.0.0\"}\n").unwrap();
    nix::unistd::chown(&d3, Some(u.uid.into()), Some(u.gid.into())).unwrap();
    nix::unistd::chown(
        &d3.join("config.json"),
        Some(u.uid.into()),
        Some(u.gid.into()),
    )
    .unwrap();
    let out = env.arca_as(
        &u,
        &[
            "push",
            d3.to_str().unwrap(),
            "--name",
            "rb",
            "--version",
            "3.0.0",
            "--parent",
            "2.0.0",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (v, t) in [("1.0.0", "T-1"), ("2.0.0", "T-2")] {
        env.ok(&["promote", "rb", v, "--to", "staging"]);
        env.ok(&["approve", "rb", v, "--ticket", t]);
        env.ok(&["promote", "rb", v, "--to", "production", "--ticket", t]);
    }
    let link = env.mnt().join("rb/production");
    assert_eq!(std::fs::read_link(&link).unwrap().to_str(), Some("2.0.0"));
    let held = std::fs::File::open(link.join("model.safetensors")).unwrap();

    // 3.0.0 was never in production: refused, nothing changes.
    let err = env.fails(&["rollback", "rb", "--to", "3.0.0", "--reason", "x"]);
    assert!(err.contains("was never in production"), "{err}");
    let out = env.arca_as(&u, &["rollback", "rb", "--to", "1.0.0", "--reason", "x"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lacks rollback permission on model rb"),
        "an ml_engineer may not roll back"
    );
    assert_eq!(std::fs::read_link(&link).unwrap().to_str(), Some("2.0.0"));

    env.ok(&[
        "rollback",
        "rb",
        "--to",
        "1.0.0",
        "--reason",
        "latency regression",
    ]);
    assert_eq!(std::fs::read_link(&link).unwrap().to_str(), Some("1.0.0"));
    assert_eq!(
        std::fs::read_to_string(link.join("config.json")).unwrap(),
        "{\"v\": \"1.0.0\"}\n"
    );
    let statuses: Vec<String> = env
        .json(&["ls", "rb"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["production", "deprecated", "development"]);
    // The reader of 2.0.0 is unaffected.
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut &held, &mut all).unwrap();
    assert!(all == std::fs::read(v2.join("model.safetensors")).unwrap());

    let h = env.json(&["history", "rb"]);
    let events: Vec<(String, String, String)> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["version"].as_str().unwrap().into(),
                e["transition"]["from"].as_str().unwrap().into(),
                e["transition"]["to"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        events.ends_with(&[
            ("2.0.0".into(), "production".into(), "deprecated".into()),
            ("1.0.0".into(), "deprecated".into(), "production".into()),
        ]),
        "{events:?}"
    );
    let lineage = h["lineage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["version"] == "3.0.0")
        .unwrap()
        .clone();
    assert_eq!(lineage["ancestors"], serde_json::json!(["2.0.0"]));
    let text = env.ok(&["history", "rb"]);
    assert!(
        text.contains("rollback: latency regression") && text.contains("lineage: 3.0.0 <- 2.0.0"),
        "{text}"
    );
}

/// An approval's signature binds name, version, root and ticket: one made for anything else is
/// refused, sent straight to the API as a forging client would.
#[test]
fn an_approval_signed_for_another_version_root_or_ticket_is_refused() {
    use arca_core::sign::{ApprovalMessage, SecretKey};
    let env = TestEnv::new();
    let root_key = env.root_key();
    let u = user("arca-e2e-pub4");
    env.trusted_key_for(&u);
    env.ok(&["role", "assign", &u.name, "developer", "--model", "forge"]);
    push_as(&env, &u, "forge", "1.0.0", 120);
    push_as(&env, &u, "forge", "2.0.0", 121);
    let root_of = |v: &str| -> arca_core::MerkleRoot {
        env.json(&["show", "forge", v])["merkle_root"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (r1, r2) = (root_of("1.0.0"), root_of("2.0.0"));
    let sk = SecretKey::from_file_text(&std::fs::read_to_string(&root_key).unwrap()).unwrap();
    let body = |version: &str, root: &arca_core::MerkleRoot, signed_ticket: &str| {
        let sig = sk.sign_approval(&ApprovalMessage {
            name: "forge",
            version,
            root,
            ticket: signed_ticket,
            target: "production",
        });
        serde_json::json!({
            "ticket": "T-1",
            "comment": "",
            "public_key": sk.public().to_string(),
            "signature": sig.to_string(),
        })
        .to_string()
    };
    let url = "/v1/models/forge/versions/2.0.0/approvals";
    for (what, b) in [
        ("another version", body("1.0.0", &r1, "T-1")),
        ("another root", body("2.0.0", &r1, "T-1")),
        ("another ticket", body("2.0.0", &r2, "T-9")),
    ] {
        let (status, resp) = env.raw("POST", url, b.as_bytes());
        let resp = String::from_utf8_lossy(&resp);
        assert_eq!(status, 403, "{what}: {resp}");
        assert!(
            resp.contains("does not match this version, root and ticket"),
            "{what}: {resp}"
        );
    }
    assert!(env.json(&["show", "forge", "2.0.0"])["approvals"]
        .as_array()
        .unwrap()
        .is_empty());
    // The honest one is accepted.
    let (status, resp) = env.raw("POST", url, body("2.0.0", &r2, "T-1").as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
}

/// Issue #8: a signing key can be untrusted, by an admin of every model only, with an audit
/// event; versions it signed then fail `verify`, and its approvals no longer count.
#[test]
fn an_untrusted_key_stops_counting_and_its_versions_fail_verify() {
    let env = TestEnv::new();
    env.root_key();
    let pub_user = user("arca-t-untrust-pub");
    let approver = user("arca-t-untrust-apr");
    env.ok(&[
        "role",
        "assign",
        &pub_user.name,
        "developer",
        "--model",
        "unt",
    ]);
    env.ok(&[
        "role",
        "assign",
        &approver.name,
        "ml_engineer",
        "--model",
        "unt",
    ]);
    env.trusted_key_for(&pub_user);
    let apr_key = env.trusted_key_for(&approver);
    push_as(&env, &pub_user, "unt", "1.0.0", 61);
    env.ok(&["verify", "unt"]);
    let keys = env.json(&["key", "ls"]);
    let fp = |name: &str| -> String {
        keys.as_array()
            .unwrap()
            .iter()
            .find(|k| k["user"] == name)
            .map(|k| k["fingerprint"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let pub_fp = fp(&pub_user.name);
    assert_ne!(fp(&approver.name), pub_fp);

    // Not for someone without admin on every model; nothing changes.
    let o = env.arca_as(&approver, &["key", "untrust", &pub_user.name, &pub_fp]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("permission denied"));
    assert_eq!(env.json(&["key", "ls"]), keys);

    // By fingerprint: the publisher's versions fail verify, naming the key.
    env.ok(&["key", "untrust", &pub_user.name, &pub_fp]);
    let err = env.fails(&["verify", "unt"]);
    assert!(err.contains("no longer trusted"), "{err}");
    let ev = env.json(&["audit", "ls", "--type", "key_change"]);
    let last = ev.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["details"]["action"], "untrust", "{last}");
    assert_eq!(last["details"]["fingerprint"], pub_fp.as_str(), "{last}");

    // By public key file: an approval made with the key no longer counts at promotion.
    env.ok(&["policy", "set", "unt", "--signing-required", "no"]);
    env.ok(&["promote", "unt", "1.0.0", "--to", "staging"]);
    let o = env.arca_as(&approver, &["approve", "unt", "1.0.0", "--ticket", "T-61"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    env.ok(&[
        "key",
        "untrust",
        &approver.name,
        apr_key.with_extension("pub").to_str().unwrap(),
    ]);
    let o = env.arca_as(
        &approver,
        &[
            "promote",
            "unt",
            "1.0.0",
            "--to",
            "production",
            "--ticket",
            "T-61",
        ],
    );
    assert!(
        !o.status.success(),
        "promoted on an untrusted key's approval"
    );
    assert_eq!(env.json(&["show", "unt", "1.0.0"])["status"], "staging");
}
