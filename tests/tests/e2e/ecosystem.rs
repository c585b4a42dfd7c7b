//! Issue #15: how arca fits a host's tools. Progress bars appear on a terminal and nowhere else
//! (a pseudo-terminal from util-linux's `script` stands in for a person's).

use std::process::Command;

use crate::harness::{bin, pseudo_random, TestEnv};

/// `arca ARGS` run inside a pseudo-terminal (`script -qec`), as someone at a prompt would run
/// it: returns everything the terminal received (stdout and stderr together, escape sequences
/// included) and whether the command succeeded.
fn on_a_terminal(env: &TestEnv, args: &[&str]) -> (bool, String) {
    let mut line = shell_quote(&bin("arca").display().to_string());
    for a in args {
        line.push(' ');
        line.push_str(&shell_quote(a));
    }
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("ARCA_SOCKET", env.socket())
        .env("HOME", env.path().join("home-root"))
        .env("TERM", "xterm")
        .env_remove("ARCA_KEY")
        .output()
        .unwrap_or_else(|e| {
            panic!("running `script` (util-linux, on every Debian system) failed: {e}")
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What `{bytes}/{total_bytes}` shows for the pushed file, and a rate's unit.
const TOTAL: &str = "/7.63 MiB";
const RATE: &str = "B/s";

#[test]
fn progress_bars_on_a_terminal_only() {
    let env = TestEnv::new();
    env.root_key();
    let d = env.path().join("progress-src");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("w.bin"), pseudo_random(8_000_000, 15)).unwrap();
    let src = d.to_str().unwrap();
    let out = env.path().join("progress-out");
    let out = out.to_str().unwrap();

    // Not a terminal (the test's pipes): no progress on stderr, the results on stdout.
    let push = env.arca(&["push", src, "--name", "p", "--version", "1.0.0"]);
    assert!(push.status.success());
    assert_eq!(String::from_utf8_lossy(&push.stderr), "", "push");
    for args in [
        vec!["get", "p", "1.0.0", "--out", out],
        vec!["verify", "p"],
        vec!["verify", "p", "1.0.0"],
    ] {
        let o = env.arca(&args);
        assert!(o.status.success(), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&o.stderr), "", "{args:?}");
        assert!(!o.stdout.is_empty(), "{args:?} printed its result");
    }

    // A terminal: the bar, with bytes of the total and a rate, for push, get and verify.
    for args in [
        vec!["push", src, "--name", "p", "--version", "2.0.0"],
        vec!["get", "p", "2.0.0", "--out", out],
        vec!["verify", "p", "2.0.0"],
    ] {
        let (ok, seen) = on_a_terminal(&env, &args);
        assert!(ok, "{args:?}: {seen}");
        assert!(
            seen.contains(TOTAL) && seen.contains(RATE),
            "{args:?} showed no progress bar on a terminal: {seen:?}"
        );
    }
    // `verify p` covered both versions: twice the bytes.
    let (_, seen) = on_a_terminal(&env, &["verify", "p"]);
    assert!(seen.contains("/15.26 MiB"), "{seen:?}");

    // A refusal before the check starts is still a plain error, bar or not.
    let (ok, seen) = on_a_terminal(&env, &["verify", "nosuch"]);
    assert!(!ok && seen.contains("no model named nosuch"), "{seen:?}");

    // A terminal, but --quiet or --json: no bar.
    for args in [
        vec!["--quiet", "get", "p", "2.0.0", "--out", out],
        vec!["-q", "verify", "p"],
        vec!["--json", "get", "p", "2.0.0", "--out", out],
        vec!["--json", "verify", "p"],
        vec!["--quiet", "push", src, "--name", "p", "--version", "3.0.0"],
    ] {
        let (ok, seen) = on_a_terminal(&env, &args);
        assert!(ok, "{args:?}: {seen}");
        assert!(
            !seen.contains("MiB") && !seen.contains(RATE),
            "{args:?} showed progress: {seen:?}"
        );
    }
}
