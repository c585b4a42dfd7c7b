//! Issue #15: how arca fits a host's tools. Progress bars appear on a terminal and nowhere else
//! (a pseudo-terminal from util-linux's `script` stands in for a person's); the completions parse
//! and complete in bash, zsh and fish; the man pages install where `man` finds them and render
//! without a warning. A missing tool fails its test, naming the package (scripts/test.sh installs
//! them).

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

/// Fails loudly, naming the Debian package, when a tool a test needs is missing
/// (scripts/test.sh installs them all).
fn need(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} not found: install the Debian package {package} (scripts/test.sh does)"
    );
}

/// Runs `prog args`, feeding `stdin`; returns (success, stdout, stderr).
fn run(prog: &str, args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {prog}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `man --warnings` (groff -ww) says about a page, rendered 80 columns wide.
fn man_warnings(page: &std::path::Path) -> String {
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "0")
        .output()
        .expect("man");
    assert!(out.status.success(), "man -l {} failed", page.display());
    assert!(
        !out.stdout.is_empty(),
        "man -l {} rendered nothing",
        page.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn completions_parse_and_complete() {
    need("bash", "bash");
    need("zsh", "zsh");
    need("fish", "fish");
    let arca = bin("arca");
    let arcad = bin("arcad");
    for shell in ["bash", "zsh", "fish"] {
        for (b, args) in [
            (&arca, vec!["completions", shell]),
            (&arcad, vec!["--completions", shell]),
        ] {
            let o = Command::new(b).args(&args).output().unwrap();
            assert!(o.status.success(), "{} {args:?}", b.display());
            // `arca completions bash | bash -n`, and the same for the other shells.
            let check: &[&str] = match shell {
                "fish" => &["--no-execute"],
                _ => &["-n"],
            };
            let (ok, _, err) = run(shell, check, &o.stdout);
            assert!(
                ok && err.is_empty(),
                "{} {args:?} does not parse in {shell}: {err}",
                b.display()
            );
        }
    }
    // They complete, too: subcommands, and a nested subcommand's.
    let script = format!(
        "source <({} completions bash)\n\
         COMP_WORDS=(arca ver); COMP_CWORD=1; COMP_LINE='arca ver'; COMP_POINT=8\n\
         _arca arca ver arca; echo \"${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(arca key rot); COMP_CWORD=2; COMP_LINE='arca key rot'; COMP_POINT=12\n\
         _arca arca rot key; echo \"${{COMPREPLY[*]}}\"",
        arca.display()
    );
    let (ok, out, err) = run("bash", &[], script.as_bytes());
    assert!(ok, "{err}");
    assert_eq!(out, "verify verify-dir\nrotate-kek rotate-dek\n", "{err}");
    let script = format!(
        "{} completions fish | source; {} --completions fish | source; \
         complete -C 'arca ver'; complete -C 'arcad --state'",
        arca.display(),
        arcad.display()
    );
    let (ok, out, err) = run("fish", &["-c", &script], b"");
    assert!(ok, "{err}");
    let words: Vec<&str> = out.lines().filter_map(|l| l.split('\t').next()).collect();
    for w in ["verify", "verify-dir", "--state-dir"] {
        assert!(words.contains(&w), "fish does not complete {w}: {out}");
    }
}

#[test]
fn man_pages_render_without_warnings_and_install_in_place() {
    need("man", "man-db");
    need("groff", "groff-base");
    // The check itself must be able to fail: a page with an unknown macro draws a warning.
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.1");
    std::fs::write(&bad, ".TH BAD 1\n.SH NAME\nbad \\- a page\n.NOSUCHMACRO\n").unwrap();
    assert!(
        man_warnings(&bad).contains("NOSUCHMACRO"),
        "man --warnings reports nothing"
    );

    // Installed as scripts/install.sh installs them on a host, into a staging root.
    let root = d.path().join("root");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let o = Command::new("bash")
        .arg(repo.join("scripts/install.sh"))
        .args(["--no-build", "--root"])
        .arg(&root)
        .arg("--bin-dir")
        .arg(crate::harness::bin_dir())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "install.sh: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    for f in [
        "usr/share/bash-completion/completions/arca",
        "usr/share/bash-completion/completions/arcad",
        "usr/share/zsh/vendor-completions/_arca",
        "usr/share/zsh/vendor-completions/_arcad",
        "usr/share/fish/vendor_completions.d/arca.fish",
        "usr/share/fish/vendor_completions.d/arcad.fish",
        "usr/share/man/man1/arca.1.gz",
        "usr/share/man/man8/arcad.8.gz",
    ] {
        let m = std::fs::metadata(root.join(f)).unwrap_or_else(|_| panic!("{f} not installed"));
        assert!(m.len() > 0, "{f} is empty");
    }
    let man1 = root.join("usr/share/man/man1");
    let mut pages: Vec<_> = std::fs::read_dir(&man1)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.push(root.join("usr/share/man/man8/arcad.8.gz"));
    for p in &pages {
        assert!(
            p.to_string_lossy().ends_with(".gz"),
            "{} is not gzipped",
            p.display()
        );
        let w = man_warnings(p);
        assert!(w.is_empty(), "{}: {w}", p.display());
    }
    // Every page arca(1) refers to is there, and none is missing from what it lists.
    let text = Command::new("man")
        .arg("-l")
        .arg(man1.join("arca.1.gz"))
        .env("MANWIDTH", "200")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    let mut referenced = 0;
    for word in text.split_whitespace() {
        if let Some(name) = word
            .strip_prefix("arca-")
            .and_then(|w| w.strip_suffix("(1)"))
        {
            assert!(
                man1.join(format!("arca-{name}.1.gz")).exists(),
                "arca(1) refers to arca-{name}(1), which is not installed"
            );
            referenced += 1;
        }
    }
    assert!(
        referenced >= 20,
        "arca(1) lists {referenced} subcommand pages:\n{text}"
    );
    // Nested pages too (arca-key(1) lists arca-key-gen(1)); 38 pages in all as of issue #15.
    assert!(man1.join("arca-key-gen.1.gz").exists());
    assert!(pages.len() >= 38, "{} pages", pages.len());
}
