//! Issue #4: who may do what. Every role × every operation, through the real CLI and the real
//! mount, as real local users the test creates; with group and wildcard assignments. A refusal
//! must be one line naming the missing permission, a non-zero exit, and change nothing.

use std::path::{Path, PathBuf};

use crate::harness::{as_user, group, pseudo_random, user, TestEnv, User};

const MODEL: &str = "acl";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Ls,
    Show,
    Get,
    Verify,
    History,
    PolicyShow,
    MountRead,
    Push,
    Approve,
    Promote,
    Rollback,
    Delete,
    PolicySet,
    RoleLs,
}

impl Op {
    const ALL: [Op; 14] = [
        Op::Ls,
        Op::Show,
        Op::Get,
        Op::Verify,
        Op::History,
        Op::PolicyShow,
        Op::MountRead,
        Op::Push,
        Op::Approve,
        Op::Promote,
        Op::Rollback,
        Op::Delete,
        Op::PolicySet,
        Op::RoleLs,
    ];

    /// The permission the operation needs on the model.
    fn needs(self) -> &'static str {
        match self {
            Op::Ls
            | Op::Show
            | Op::Get
            | Op::Verify
            | Op::History
            | Op::PolicyShow
            | Op::MountRead => "read",
            Op::Push => "write",
            Op::Approve | Op::Promote => "promote",
            Op::Rollback => "rollback",
            Op::Delete => "delete",
            Op::PolicySet | Op::RoleLs => "admin",
        }
    }
}

/// One row of the table: who, how they got their role, and what that role grants.
struct Case {
    label: &'static str,
    who: User,
    grants: &'static [&'static str],
}

const VIEWER: &[&str] = &["read"];
const DEVELOPER: &[&str] = &["read", "write"];
const ENGINEER: &[&str] = &["read", "write", "promote"];
const ADMIN: &[&str] = &["read", "write", "promote", "rollback", "delete", "admin"];

fn small_dir(env: &TestEnv, tag: &str, owner: Option<&User>, seed: u64) -> PathBuf {
    let d = env.path().join(format!("src-{tag}"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("w.bin"),
        pseudo_random(100_000 + seed as usize, seed),
    )
    .unwrap();
    if let Some(u) = owner {
        for p in [d.clone(), d.join("w.bin")] {
            nix::unistd::chown(&p, Some(u.uid.into()), Some(u.gid.into())).unwrap();
        }
    }
    d
}

fn push_root(env: &TestEnv, version: &str, seed: u64) {
    let d = small_dir(env, version, None, seed);
    env.ok(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        MODEL,
        "--version",
        version,
    ]);
}

/// Everything an operation could change, as root sees it.
fn snapshot(env: &TestEnv) -> String {
    [
        env.ok(&["--json", "ls", MODEL]),
        env.ok(&["--json", "show", MODEL, "9.0.0"]),
        env.ok(&["--json", "policy", "show", MODEL]),
        env.ok(&["--json", "role", "ls"]),
    ]
    .join("\n")
}

fn current_production(env: &TestEnv) -> String {
    env.json(&["ls", MODEL])
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["status"] == "production")
        .map(|v| v["version"].as_str().unwrap().to_owned())
        .expect("a production version")
}

/// Runs `op` as case `i`'s user; returns (succeeded, stderr).
fn run(env: &TestEnv, i: usize, u: &User, op: Op) -> (bool, String) {
    let out = match op {
        Op::MountRead => as_user(u, "cat")
            .arg(env.mnt().join(MODEL).join("9.0.0/w.bin"))
            .output()
            .unwrap(),
        _ => {
            let push_dir;
            let get_dir = u.home.join("arca-get");
            let (v3, v6, v7) = (format!("3.{i}.0"), format!("6.{i}.0"), format!("7.{i}.0"));
            let ticket = format!("T-{i}");
            let other;
            let args: Vec<&str> = match op {
                Op::Ls => vec!["ls", MODEL],
                Op::Show => vec!["show", MODEL, "9.0.0"],
                Op::Get => {
                    let _ = std::fs::remove_dir_all(&get_dir);
                    vec!["get", MODEL, "9.0.0", "--out", get_dir.to_str().unwrap()]
                }
                Op::Verify => vec!["verify", MODEL, "9.0.0"],
                Op::History => vec!["history", MODEL],
                Op::PolicyShow => vec!["policy", "show", MODEL],
                Op::Push => {
                    push_dir = small_dir(env, &format!("user-{i}"), Some(u), 500 + i as u64);
                    vec![
                        "push",
                        push_dir.to_str().unwrap(),
                        "--name",
                        MODEL,
                        "--version",
                        &v7,
                    ]
                }
                Op::Approve => vec!["approve", MODEL, "9.0.0", "--ticket", &ticket],
                Op::Promote => vec!["promote", MODEL, &v3, "--to", "staging"],
                Op::Rollback => {
                    other = if current_production(env) == "5.0.0" {
                        "4.0.0"
                    } else {
                        "5.0.0"
                    };
                    vec!["rollback", MODEL, "--to", other, "--reason", "table test"]
                }
                Op::Delete => vec!["delete", MODEL, &v6],
                Op::PolicySet => vec!["policy", "set", MODEL, "--retention-days", "300"],
                Op::RoleLs => vec!["role", "ls", "--model", MODEL],
                Op::MountRead => unreachable!(),
            };
            env.arca_as(u, &args)
        }
    };
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_role_times_every_operation() {
    let env = TestEnv::new();
    env.root_key();
    push_root(&env, "9.0.0", 1);
    push_root(&env, "4.0.0", 2);
    push_root(&env, "5.0.0", 3);
    // 4.0.0 then 5.0.0 in production, so a rollback has somewhere to go (approvals are tested
    // elsewhere; the policy waives them for this setup only).
    env.ok(&["policy", "set", MODEL, "--require-approval", "no"]);
    for v in ["4.0.0", "5.0.0"] {
        env.ok(&["promote", MODEL, v, "--to", "staging"]);
        env.ok(&["promote", MODEL, v, "--to", "production"]);
    }
    env.ok(&["policy", "set", MODEL, "--require-approval", "yes"]);
    env.ok(&["promote", MODEL, "9.0.0", "--to", "staging"]);

    let member = user("arca-t-grp-m");
    group("arca-t-grp", &[&member]);
    let cases = [
        Case {
            label: "no role",
            who: user("arca-t-none"),
            grants: &[],
        },
        Case {
            label: "viewer on acl",
            who: user("arca-t-viewer"),
            grants: VIEWER,
        },
        Case {
            label: "developer on acl",
            who: user("arca-t-dev"),
            grants: DEVELOPER,
        },
        Case {
            label: "ml_engineer on acl",
            who: user("arca-t-eng"),
            grants: ENGINEER,
        },
        Case {
            label: "ml_admin on acl",
            who: user("arca-t-admin"),
            grants: ADMIN,
        },
        Case {
            label: "ml_engineer via group:arca-t-grp",
            who: member,
            grants: ENGINEER,
        },
        Case {
            label: "viewer on * (wildcard)",
            who: user("arca-t-wild"),
            grants: VIEWER,
        },
        Case {
            label: "ml_admin on another model",
            who: user("arca-t-other"),
            grants: &[],
        },
    ];
    let assign: [&[&str]; 7] = [
        &["arca-t-viewer", "viewer", "--model", MODEL],
        &["arca-t-dev", "developer", "--model", MODEL],
        &["arca-t-eng", "ml_engineer", "--model", MODEL],
        &["arca-t-admin", "ml_admin", "--model", MODEL],
        &["group:arca-t-grp", "ml_engineer", "--model", MODEL],
        &["arca-t-wild", "viewer"],
        &["arca-t-other", "ml_admin", "--model", "other"],
    ];
    for a in assign {
        let mut args = vec!["role", "assign"];
        args.extend_from_slice(a);
        env.ok(&args);
    }
    for (i, c) in cases.iter().enumerate() {
        env.trusted_key_for(&c.who);
        push_root(&env, &format!("3.{i}.0"), 10 + i as u64);
        push_root(&env, &format!("6.{i}.0"), 30 + i as u64);
    }

    let mut table = String::from("case | ");
    table.push_str(
        &Op::ALL
            .iter()
            .map(|o| format!("{o:?}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    table.push('\n');
    for (i, c) in cases.iter().enumerate() {
        let mut row = format!("{} |", c.label);
        for op in Op::ALL {
            let expect = c.grants.contains(&op.needs());
            let before = snapshot(&env);
            let (ok, err) = run(&env, i, &c.who, op);
            assert_eq!(
                ok,
                expect,
                "{} ({}): {op:?} should be {}; stderr: {err}",
                c.label,
                c.who.name,
                if expect { "allowed" } else { "refused" }
            );
            if !expect {
                let named = if op == Op::MountRead {
                    err.contains("Permission denied")
                } else {
                    // The refusal names a permission the role lacks: usually the one the
                    // operation needs, or read for CLI commands that look the version up first.
                    let lacked = err
                        .split("lacks ")
                        .nth(1)
                        .and_then(|r| r.split(' ').next())
                        .unwrap_or("");
                    err.contains("permission denied: ")
                        && !lacked.is_empty()
                        && !c.grants.contains(&lacked)
                        && err.trim().lines().count() == 1
                };
                assert!(
                    named,
                    "{}: {op:?} refused without one clear line: {err}",
                    c.label
                );
                assert_eq!(
                    before,
                    snapshot(&env),
                    "{}: a refused {op:?} changed state",
                    c.label
                );
            }
            row.push_str(if ok { " allow" } else { " deny" });
        }
        table.push_str(&row);
        table.push('\n');
    }
    println!("{table}");

    // Effective permissions come through the group.
    let l = env.json(&["role", "ls", "--user", "arca-t-grp-m", "--model", MODEL]);
    assert_eq!(
        l["effective"][0]["permissions"],
        serde_json::json!(["read", "write", "promote"])
    );
    assert!(l["effective"][0]["via"][0]
        .as_str()
        .unwrap()
        .contains("group:arca-t-grp as ml_engineer on acl"));
    let text = env.ok(&["role", "ls", "--user", "arca-t-wild"]);
    assert!(
        text.contains("effective permissions of arca-t-wild"),
        "{text}"
    );

    // A model-scoped admin is not a store admin: trusting keys needs admin on every model.
    let other = &cases[4].who;
    let pubkey = other.home.join(".config/arca/signing.pub");
    let out = env.arca_as(
        other,
        &["key", "trust", &other.name, pubkey.to_str().unwrap()],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("lacks admin permission on every model"));

    // Revoking the group's role takes effect at once, on the socket and on the mount.
    env.ok(&[
        "role",
        "revoke",
        "group:arca-t-grp",
        "ml_engineer",
        "--model",
        MODEL,
    ]);
    let (ok, err) = run(&env, 5, &cases[5].who, Op::Show);
    assert!(!ok && err.contains("lacks read permission"), "{err}");
    let (ok, err) = run(&env, 5, &cases[5].who, Op::MountRead);
    assert!(!ok && err.contains("Permission denied"), "{err}");
    let err = env.fails(&[
        "role",
        "revoke",
        "group:arca-t-grp",
        "ml_engineer",
        "--model",
        MODEL,
    ]);
    assert!(err.contains("has no role ml_engineer on acl"), "{err}");
}

fn push_as(env: &TestEnv, u: &User, name: &str, version: &str, extra: &[&str]) -> (bool, String) {
    let d = small_dir(env, &format!("{name}-{version}"), Some(u), 7);
    let mut args = vec![
        "push",
        d.to_str().unwrap(),
        "--name",
        name,
        "--version",
        version,
    ];
    args.extend_from_slice(extra);
    let out = env.arca_as(u, &args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn versions(env: &TestEnv, name: &str) -> usize {
    env.json(&["ls", name]).as_array().unwrap().len()
}

#[test]
fn policies_signing_max_versions_and_approval_count_are_enforced() {
    let env = TestEnv::new();
    env.root_key();
    let dev = user("arca-p-dev");
    env.trusted_key_for(&dev);
    env.ok(&["role", "assign", &dev.name, "developer", "--model", "pol"]);
    let text = env.ok(&["policy", "show", "pol"]);
    for line in [
        "require approval:  yes",
        "approvals:         1",
        "environments:      dev,staging,prod",
        "retention days:    365",
        "max versions:      50",
        "signing required:  yes",
        "(defaults)",
    ] {
        assert!(
            text.contains(line),
            "default policy lacks {line:?}:\n{text}"
        );
    }

    // Signing required (the default): an unsigned push is refused and stores nothing.
    let (ok, err) = push_as(&env, &dev, "pol", "1.0.0", &["--unsigned"]);
    assert!(!ok && err.contains("requires signed pushes"), "{err}");
    assert!(env.fails(&["ls", "pol"]).contains("no model named pol"));
    let err = env
        .arca_as(&dev, &["policy", "set", "pol", "--signing-required", "no"])
        .stderr;
    assert!(String::from_utf8_lossy(&err).contains("lacks admin permission"));
    env.ok(&["policy", "set", "pol", "--signing-required", "no"]);
    let (ok, err) = push_as(&env, &dev, "pol", "1.0.0", &["--unsigned"]);
    assert!(ok, "{err}");
    assert!(env
        .ok(&["show", "pol", "1.0.0"])
        .contains("none (pushed unsigned)"));
    env.ok(&["verify", "pol"]);
    // Turning signing back on flags the unsigned version in verify.
    env.ok(&["policy", "set", "pol", "--signing-required", "yes"]);
    let err = env.fails(&["verify", "pol"]);
    assert!(err.contains("unsigned"), "{err}");
    env.ok(&["policy", "set", "pol", "--signing-required", "no"]);

    // Max versions: the push beyond it is refused with a clear error, and nothing is stored.
    env.ok(&["policy", "set", "pol", "--max-versions", "2"]);
    let (ok, err) = push_as(&env, &dev, "pol", "2.0.0", &[]);
    assert!(ok, "{err}");
    let (ok, err) = push_as(&env, &dev, "pol", "3.0.0", &[]);
    assert!(
        !ok && err.contains("already has 2 versions, the most its policy allows"),
        "{err}"
    );
    assert_eq!(versions(&env, "pol"), 2);
    let err = env.fails(&["policy", "set", "pol", "--max-versions", "0"]);
    assert!(err.contains("at least 1"), "{err}");
    let err = env.fails(&["policy", "set", "pol"]);
    assert!(err.contains("nothing to set"), "{err}");

    // Two approvals: one is not enough, the same approver twice is still one, two distinct
    // approvers with promote permission are.
    env.ok(&["policy", "set", "pol", "--approvals", "2"]);
    let (a1, a2) = (user("arca-p-appr1"), user("arca-p-appr2"));
    for a in [&a1, &a2] {
        env.trusted_key_for(a);
        env.ok(&["role", "assign", &a.name, "ml_engineer", "--model", "pol"]);
    }
    env.ok(&["promote", "pol", "2.0.0", "--to", "staging"]);
    let approve = |u: &User| {
        let out = env.arca_as(u, &["approve", "pol", "2.0.0", "--ticket", "CHG-7"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    approve(&a1);
    approve(&a1);
    let promote = [
        "promote",
        "pol",
        "2.0.0",
        "--to",
        "production",
        "--ticket",
        "CHG-7",
    ];
    let err = env.fails(&promote);
    assert!(
        err.contains("has 1 valid approval(s) for ticket CHG-7; its policy requires 2"),
        "{err}"
    );
    // An approver whose role is revoked no longer counts.
    approve(&a2);
    env.ok(&["role", "revoke", &a2.name, "ml_engineer", "--model", "pol"]);
    let err = env.fails(&promote);
    assert!(err.contains("has 1 valid approval(s)"), "{err}");
    env.ok(&["role", "assign", &a2.name, "ml_engineer", "--model", "pol"]);
    env.ok(&promote);
    assert_eq!(
        std::fs::read_link(env.mnt().join("pol/production"))
            .unwrap()
            .to_str(),
        Some("2.0.0")
    );
    // A developer may not approve (approving needs promote permission).
    let out = env.arca_as(&dev, &["approve", "pol", "1.0.0", "--ticket", "X"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("lacks promote permission"));
    // A production version cannot be deleted.
    let err = env.fails(&["delete", "pol", "2.0.0"]);
    assert!(err.contains("is in production"), "{err}");
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

#[test]
fn a_daemon_for_prod_hides_and_refuses_a_dev_only_model() {
    let mut env = TestEnv::new();
    env.root_key();
    push_root_named(&env, "devonly", 1);
    push_root_named(&env, "everywhere", 2);
    env.ok(&["policy", "set", "devonly", "--environments", "dev"]);
    assert!(exists(&env.mnt().join("devonly/1.0.0/w.bin")));

    env.stop();
    env.daemon_args = vec!["--environment".into(), "prod".into()];
    env.start();
    let names: Vec<String> = std::fs::read_dir(env.mnt())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["everywhere"],
        "the prod mount shows only prod models"
    );
    assert!(!exists(&env.mnt().join("devonly")));
    let out = env.path().join("got");
    let err = env.fails(&["get", "devonly", "1.0.0", "--out", out.to_str().unwrap()]);
    assert!(
        err.contains("not served in environment prod") && err.contains("allows only dev"),
        "{err}"
    );
    assert!(!out.join("w.bin").exists());
    env.ok(&["get", "everywhere", "1.0.0", "--out", out.to_str().unwrap()]);

    // Allowing prod shows it at once, without a restart.
    env.ok(&["policy", "set", "devonly", "--environments", "dev,prod"]);
    assert!(exists(&env.mnt().join("devonly/1.0.0/w.bin")));
}

fn push_root_named(env: &TestEnv, name: &str, seed: u64) {
    let d = small_dir(env, name, None, seed);
    env.ok(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        name,
        "--version",
        "1.0.0",
    ]);
}
