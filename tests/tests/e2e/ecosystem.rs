//! Issue #15: how arca fits a host's tools. Progress bars appear on a terminal and nowhere else
//! (a pseudo-terminal from util-linux's `script` stands in for a person's); the completions parse
//! and complete in bash, zsh and fish; the man pages install where `man` finds them and render
//! without a warning; under systemd, arcad's log reaches journald with queryable fields. A missing tool fails its test, naming the package (scripts/test.sh installs
//! them).

use std::process::Command;

use crate::harness::{bin, need, pseudo_random, TestEnv};

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

/// The fields of one journald native-protocol datagram (systemd's JOURNAL_NATIVE_PROTOCOL):
/// `KEY=value\n`, or, for a value that may hold a newline, `KEY\n`, its length as a 64-bit
/// little-endian integer, the value and `\n`. A key may repeat.
fn journal_fields(mut d: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while !d.is_empty() {
        let end = d
            .iter()
            .position(|&b| b == b'=' || b == b'\n')
            .expect("a field name ends with '=' or a newline");
        let key = String::from_utf8(d[..end].to_vec()).expect("an ASCII field name");
        if d[end] == b'=' {
            let rest = &d[end + 1..];
            let nl = rest
                .iter()
                .position(|&b| b == b'\n')
                .expect("a newline after the value");
            out.push((key, rest[..nl].to_vec()));
            d = &rest[nl + 1..];
        } else {
            let rest = &d[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            out.push((key, rest[8..8 + len].to_vec()));
            assert_eq!(rest[8 + len], b'\n', "a binary value ends with a newline");
            d = &rest[8 + len + 1..];
        }
    }
    out
}

fn field<'a>(rec: &'a [(String, Vec<u8>)], key: &str) -> Option<&'a str> {
    rec.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| std::str::from_utf8(v).expect("a UTF-8 value"))
}

/// Every record sent to `sock` until it has been quiet for `quiet`.
fn journal_records(
    sock: &std::os::unix::net::UnixDatagram,
    quiet: std::time::Duration,
) -> Vec<Vec<(String, Vec<u8>)>> {
    sock.set_read_timeout(Some(quiet)).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(n) = sock.recv(&mut buf) {
        // tracing-journald probes the socket with an empty datagram at start.
        if n > 0 {
            out.push(journal_fields(&buf[..n]));
        }
    }
    out
}

/// arcad run inside a mount namespace of its own where `dir` is mounted on
/// /run/systemd/journal, so that tracing-journald, which sends to journald's fixed socket path,
/// reaches the test's socket instead. A tmpfs goes on /run first: the host may have no
/// /run/systemd/journal to mount on (no systemd here), and arcad needs nothing else from /run.
fn journal_wrapper(dir: &std::path::Path) -> Vec<String> {
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && \
         mount --bind \"$0\" /run/systemd/journal && exec \"$@\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([dir.display().to_string()])
    .collect()
}

#[test]
fn journal_fields_of_a_real_integrity_failure() {
    use std::os::unix::fs::MetadataExt;
    need("unshare", "util-linux");
    // The parser reads both forms of a field.
    assert_eq!(
        journal_fields(b"A=1\nB\n\x03\0\0\0\0\0\0\0x\ny\nA=2\n"),
        vec![
            ("A".to_string(), b"1".to_vec()),
            ("B".to_string(), b"x\ny".to_vec()),
            ("A".to_string(), b"2".to_vec()),
        ]
    );

    let mut env = TestEnv::new();
    env.root_key();
    env.push_small("resnet", "1.0.0", 151, &[]);
    env.stop();
    // A bit flipped in a chunk of w.bin (200 kB: chunks of 8 KiB and more).
    assert!(env.tamper("chunks", |v| v.len() > 8_000, |len| len / 2) > 0);

    let dir = env.path().join("journal");
    std::fs::create_dir(&dir).unwrap();
    let sock = std::os::unix::net::UnixDatagram::bind(dir.join("socket")).unwrap();
    env.daemon_wrapper = journal_wrapper(&dir);
    let quiet = std::time::Duration::from_millis(500);

    // JOURNAL_STREAM set, but naming another file than arcad's stderr (the harness's log file):
    // plain text on stderr, nothing on the journal's socket.
    env.daemon_env = vec![("JOURNAL_STREAM".into(), "1:2".into())];
    env.start();
    env.fails(&["verify", "resnet"]);
    env.stop();
    assert!(
        journal_records(&sock, quiet).is_empty(),
        "sent to the journal although stderr is not it"
    );
    let text = env.log();
    assert!(
        text.contains("integrity failure") && text.contains("resnet"),
        "{text}"
    );

    // JOURNAL_STREAM naming arcad's stderr, as systemd sets it: the native protocol.
    let log = std::fs::metadata(env.path().join("arcad.log")).unwrap();
    env.daemon_env = vec![(
        "JOURNAL_STREAM".into(),
        format!("{}:{}", log.dev(), log.ino()),
    )];
    let before = log.len();
    env.start();
    let err = env.fails(&["verify", "resnet"]);
    assert!(err.contains("w.bin"), "{err}");
    let out = env.path().join("journal-get");
    env.fails(&["get", "resnet", "1.0.0", "--out", out.to_str().unwrap()]);
    let records = journal_records(&sock, quiet);
    env.stop();

    let integrity: Vec<_> = records
        .iter()
        .filter(|r| field(r, "ARCA_EVENT") == Some("integrity_violation"))
        .collect();
    // One from verify (a warning), one from get (an error, the stream cut).
    assert_eq!(integrity.len(), 2, "{records:?}");
    // What `journalctl MODEL=resnet ARCA_EVENT=integrity_violation -o verbose` would show.
    for r in &integrity {
        let fields: Vec<String> = r
            .iter()
            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
            .collect();
        println!("JOURNAL|{}", fields.join("|"));
    }
    for r in &integrity {
        assert_eq!(field(r, "MODEL"), Some("resnet"), "{r:?}");
        assert_eq!(field(r, "VERSION"), Some("1.0.0"), "{r:?}");
        assert_eq!(field(r, "FILE"), Some("w.bin"), "{r:?}");
        let chunk = field(r, "CHUNK").expect("a CHUNK field");
        assert!(
            chunk.len() == 64 && chunk.bytes().all(|b| b.is_ascii_hexdigit()),
            "{chunk}"
        );
        assert_eq!(field(r, "SYSLOG_IDENTIFIER"), Some("arcad"));
        assert!(
            field(r, "MESSAGE").unwrap().contains("integrity failure"),
            "{r:?}"
        );
        // No field under the crate's default F_ prefix.
        assert!(r.iter().all(|(k, _)| !k.starts_with("F_")), "{r:?}");
    }
    let mut priorities: Vec<_> = integrity
        .iter()
        .map(|r| field(r, "PRIORITY").expect("a PRIORITY"))
        .collect();
    priorities.sort();
    // Levels map to syslog priorities: ERROR 3 (get), WARN 4 (verify).
    assert_eq!(priorities, ["3", "4"]);
    // Every other record carries a priority too, and the start was logged.
    assert!(records.iter().all(|r| field(r, "PRIORITY").is_some()));
    assert!(
        records
            .iter()
            .any(|r| field(r, "MESSAGE") == Some("arcad ready")),
        "{records:?}"
    );
    // Nothing went to stderr as text while the journal was in use.
    let after = std::fs::metadata(env.path().join("arcad.log"))
        .unwrap()
        .len();
    assert_eq!(
        after,
        before,
        "text on stderr under the journal:\n{}",
        env.log()
    );
}
