//! Issue #8 attacks on and through the CLI (see `mod.rs`): modes that would plant a privilege
//! when root fetches a version, a rogue listener on the socket the CLI uses, a file swapped for a
//! symlink to a secret while it is pushed, and strings that try to drive a terminal or forge a
//! report.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arca_core::manifest::{merkle_root, FileEntry};
use arca_core::metadata::PublishedMetadata;
use arca_core::sign::SecretKey;

use super::{Outcome, Row, DEVELOPER, NO_ROLE, SOCKET_PEER};
use crate::harness::{as_user, bin, pseudo_random, sha256_hex, user, TestEnv, User};

const MIB: usize = 1 << 20;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes a file with mode 0644 whatever the test's umask, so a push has no mode to normalise
/// (and prints nothing about it).
fn write_644(p: &Path, data: &[u8]) {
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// `u` owns `paths` (so that `u`'s CLI can read and the test can still write them).
fn give(u: &User, paths: &[&Path]) {
    for p in paths {
        nix::unistd::chown(*p, Some(u.uid.into()), Some(u.gid.into())).unwrap();
    }
}

/// The CLI as `u` with extra environment.
fn arca_as_env(env: &TestEnv, u: &User, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut c = as_user(u, bin("arca"));
    c.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("ARCA_SOCKET", env.socket())
        .env("HOME", &u.home)
        .envs(extra.iter().copied());
    c.output().unwrap()
}

/// The CLI as root under `umask`.
fn arca_umask(env: &TestEnv, umask: &str, args: &[&str]) -> Output {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(bin("arca"))
        .args(args)
        .env("ARCA_SOCKET", env.socket())
        .env("HOME", env.path().join("home-root"));
    c.output().unwrap()
}

/// Models, versions and chunks in the store.
fn counts(env: &TestEnv) -> (u64, u64, u64) {
    let s = env.json(&["stats"]);
    let n = |k: &str| s[k].as_u64().unwrap();
    (n("models"), n("versions"), n("chunks"))
}

/// A developer pushes `bin/tool` setuid (04755) and a world-writable file; root fetches the
/// version. The modes are normalised before they are signed (and the push says so), and root's
/// `get` writes nothing beyond 0755, masked by its umask. A client that skips the CLI and sends
/// a 04755 or 0777 entry over the raw socket is refused, and the store does not change.
pub fn setuid_push_then_root_get() -> Vec<Row> {
    let env = TestEnv::new();
    env.root_key();
    let dev = user("arca-i-cli-dev");
    env.trusted_key_for(&dev);
    env.ok(&["role", "assign", &dev.name, "developer", "--model", "suid"]);

    let d = env.path().join("suid-src");
    std::fs::create_dir_all(d.join("bin")).unwrap();
    let files: [(&str, u32); 4] = [
        ("bin/tool", 0o4755),
        ("config.json", 0o644),
        ("data/open.bin", 0o777),
        ("notes.txt", 0o2640),
    ];
    for (rel, mode) in files {
        let p = d.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, pseudo_random(3000, u64::from(mode))).unwrap();
        give(&dev, &[&p, p.parent().unwrap()]);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    give(&dev, &[&d]);
    assert_eq!(
        std::fs::metadata(d.join("bin/tool")).unwrap().mode() & 0o7777,
        0o4755,
        "the source really is setuid"
    );
    let out = env.arca_as(
        &dev,
        &[
            "push",
            d.to_str().unwrap(),
            "--name",
            "suid",
            "--version",
            "1.0.0",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let notice: Vec<String> = text(&out.stderr)
        .lines()
        .filter(|l| l.contains("normalised"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        notice,
        ["normalised the mode of 3 files to 0644/0755: bin/tool (was 04755), data/open.bin (was 0777), notes.txt (was 02640)"],
        "one line naming each changed file: {}",
        text(&out.stderr)
    );
    let shown = env.json(&["show", "suid", "1.0.0"]);
    let modes: Vec<(String, u64)> = shown["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["mode"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        modes,
        [
            ("bin/tool".to_owned(), 0o755),
            ("config.json".to_owned(), 0o644),
            ("data/open.bin".to_owned(), 0o755),
            ("notes.txt".to_owned(), 0o644),
        ],
        "the signed entries carry the normalised modes"
    );

    // Root fetches it, under two umasks.
    for (umask, want) in [
        ("027", [0o750, 0o640, 0o750, 0o640]),
        ("022", [0o755, 0o644, 0o755, 0o644]),
    ] {
        let dest = env.path().join(format!("suid-get-{umask}"));
        let out = arca_umask(
            &env,
            umask,
            &["get", "suid", "1.0.0", "--out", dest.to_str().unwrap()],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        for ((rel, _), want) in files.iter().zip(want) {
            let got = std::fs::metadata(dest.join(rel)).unwrap().mode() & 0o7777;
            assert_eq!(got, want, "{rel} under umask {umask}: {got:o}");
        }
        // verify-dir agrees: a copy that lost bits to a umask matches...
        let manifest = env.path().join("suid.manifest.json");
        std::fs::write(&manifest, env.ok(&["manifest", "suid", "1.0.0"])).unwrap();
        env.ok(&[
            "verify-dir",
            dest.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
        ]);
        // ...and one that gained a setuid bit does not, by name.
        std::fs::set_permissions(
            dest.join("bin/tool"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        let out = env.arca(&[
            "verify-dir",
            dest.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
        ]);
        assert!(!out.status.success());
        assert!(
            text(&out.stderr)
                .contains("FAILED bin/tool: mode 04755 differs from the manifest's 0755"),
            "{}",
            text(&out.stderr)
        );
    }
    let mut rows = vec![Row::new(
        DEVELOPER,
        "push bin/tool 04755 and a 0777 file; root runs `arca get`",
        Outcome::Refused,
    )];

    // The same through the raw socket, as a client that skips the CLI would send it.
    let before = counts(&env);
    let md = PublishedMetadata::new("rawsuid".parse().unwrap(), "1.0.0".parse().unwrap());
    let (st, body) = env.raw(
        "POST",
        "/v1/uploads",
        serde_json::json!({ "metadata": md }).to_string().as_bytes(),
    );
    assert_eq!(st, 201, "{}", text(&body));
    let id = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["upload_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let data = pseudo_random(5000, 3);
    let mut entries = Vec::new();
    for (path, mode) in [("ok.bin", 0o644), ("tool", 0o4755), ("open", 0o777)] {
        let (st, body) = env.raw(
            "PUT",
            &format!("/v1/uploads/{id}/files?path={path}&mode={mode}"),
            &data,
        );
        if mode == 0o644 {
            assert_eq!(st, 200, "{}", text(&body));
        } else {
            assert_eq!(st, 400, "mode {mode:o} accepted: {}", text(&body));
            assert!(
                text(&body).contains(&format!(
                    "file {path}: mode 0{mode:o} refused: a version's files are 0644 or 0755"
                )),
                "{}",
                text(&body)
            );
        }
        let e: FileEntry = serde_json::from_value(serde_json::json!({
            "path": path, "size": data.len(), "mode": mode,
            "sha256": sha256_hex(&data),
            "blake3": blake3_hex(&data),
        }))
        .unwrap();
        entries.push(e);
    }
    // The hostile client signs the manifest it wanted, setuid entry included; the daemon holds
    // only the file it accepted, so the commit does not match and is refused.
    let key = SecretKey::from_file_text(&std::fs::read_to_string(env.root_key()).unwrap()).unwrap();
    let root = merkle_root(&mut entries).unwrap();
    let digest = md.digest().unwrap();
    let commit = serde_json::json!({"merkle_root": root, "metadata_digest": digest,
        "signature": key.sign_version(&root, &digest).to_string(), "public_key": key.public().to_string()});
    let (st, body) = env.raw(
        "POST",
        &format!("/v1/uploads/{id}/commit"),
        commit.to_string().as_bytes(),
    );
    assert_eq!(st, 400, "{}", text(&body));
    assert_eq!(counts(&env), before, "the refused upload left nothing");
    assert!(!env.ok(&["ls"]).contains("rawsuid"));
    rows.push(
        Row::new(
            DEVELOPER,
            "raw-socket upload of 04755 and 0777 file entries, then commit",
            Outcome::Refused,
        )
        .unchanged(),
    );
    rows
}

fn blake3_hex(data: &[u8]) -> String {
    let mut h = arca_core::digest::FileHasher::new();
    h.update(data);
    h.finish().blake3.to_hex()
}

/// A listener run as `u` on `path` that accepts every connection, reads until the client closes
/// or stays quiet for 2 s, and appends the number of bytes it received to `log`, one line per
/// connection. perl is part of every Debian system (perl-base is essential).
struct RogueListener {
    child: std::process::Child,
    log: PathBuf,
}

const LISTENER: &str = r#"
use strict; use IO::Socket::UNIX;
my ($path, $log) = @ARGV;
unlink $path;
my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $path, Listen => 16)
    or die "listen $path: $!";
chmod 0777, $path;
open(my $r, '>', "$log.ready") or die; close $r;
while (my $c = $s->accept) {
    my $n = 0; my $buf;
    eval {
        local $SIG{ALRM} = sub { die "quiet\n" };
        alarm 2;
        while (my $got = sysread($c, $buf, 65536)) { $n += $got; alarm 2; }
        alarm 0;
    };
    alarm 0;
    close $c;
    open(my $f, '>>', $log) or die; print $f "$n\n"; close $f;
}
"#;

impl RogueListener {
    fn start(u: &User, dir: &Path) -> (Self, PathBuf) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        give(u, &[dir]);
        let sock = dir.join("arcad.sock");
        let log = dir.join("received");
        let child = as_user(u, "perl")
            .args(["-e", LISTENER])
            .arg(&sock)
            .arg(&log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.join("received.ready").exists() {
            assert!(
                Instant::now() < deadline,
                "the rogue listener did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (Self { child, log }, sock)
    }

    /// Bytes received per connection, once `n` connections were logged.
    fn connections(&self, n: usize) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got: Vec<u64> = std::fs::read_to_string(&self.log)
                .unwrap_or_default()
                .lines()
                .map(|l| l.parse().unwrap())
                .collect();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RogueListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local user with no role listens on a socket path and gets root and a developer to use it
/// (a pre-created trial socket directory in /var/tmp, or a script's ARCA_SOCKET pointed at it).
/// The CLI checks the listener's uid before writing a byte: pushes and a get are refused, the
/// listener receives nothing, and `get` writes nothing. Naming the uid (ARCA_DAEMON_UID) is what
/// it would take, and then the listener does receive the request: the zeros are real.
pub fn rogue_listener_on_the_socket() -> Vec<Row> {
    let env = TestEnv::new();
    env.root_key();
    let rogue = user("arca-i-cli-rogue");
    let dev = user("arca-i-cli-dev");
    env.trusted_key_for(&dev);
    env.ok(&["role", "assign", &dev.name, "developer", "--model", "rg"]);
    let (listener, sock) = RogueListener::start(&rogue, &env.path().join("rogue"));
    let sock_s = sock.to_str().unwrap();

    let d = env.path().join("rg-src");
    std::fs::create_dir_all(&d).unwrap();
    write_644(&d.join("weights.bin"), &pseudo_random(2 * MIB, 5));
    give(&dev, &[&d, &d.join("weights.bin")]);
    let push = |v: &str| {
        vec![
            "push".to_owned(),
            d.to_str().unwrap().to_owned(),
            "--name".into(),
            "rg".into(),
            "--version".into(),
            v.into(),
        ]
    };
    let refused = |out: &Output, who: &str| {
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{who} talked to the rogue listener");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("refusing to talk to {sock_s}"))
                && err.contains(&format!("runs as uid {}", rogue.uid))
                && err.contains("arcad must run as root"),
            "{who}: {err}"
        );
    };

    // Root pushes and gets through the rogue socket.
    let args = push("1.0.0");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env
        .arca_cmd(&args)
        .env("ARCA_SOCKET", &sock)
        .output()
        .unwrap();
    refused(&out, "root's push");
    let dest = env.path().join("rg-get");
    let out = env
        .arca_cmd(&["get", "rg", "1.0.0", "--out", dest.to_str().unwrap()])
        .env("ARCA_SOCKET", &sock)
        .output()
        .unwrap();
    refused(&out, "root's get");
    assert!(!dest.exists(), "get wrote nothing");
    // A developer (another user again) pushes through it.
    let out = arca_as_env(&env, &dev, &args, &[("ARCA_SOCKET", sock_s)]);
    refused(&out, "the developer's push");
    let got = listener.connections(3);
    assert_eq!(got, [0, 0, 0], "the listener received bytes");

    // The same push to the real daemon works: the refusal was about the listener.
    let out = env.arca_as(&dev, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // With the rogue's uid named as arcad's, the CLI would talk, and the listener would hear it.
    let uid = rogue.uid.to_string();
    let args = push("2.0.0");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = arca_as_env(
        &env,
        &dev,
        &args,
        &[("ARCA_SOCKET", sock_s), ("ARCA_DAEMON_UID", &uid)],
    );
    assert!(!out.status.success(), "the listener answers nothing");
    let got = listener.connections(4);
    assert!(
        got.len() == 4 && got[3] > 0,
        "with ARCA_DAEMON_UID the request reaches the listener: {got:?}"
    );
    vec![Row::new(
        SOCKET_PEER,
        "rogue listener in arcad's place: root and a developer push, root gets",
        Outcome::Refused,
    )
    .unchanged()]
}

/// A local user who can write a model directory swaps one file for a symlink to a root-only
/// secret, back and forth as fast as it can, while root pushes the directory again and again.
/// Each push either refuses (the scan saw the link, or the file the scan saw is not the one the
/// open finds) or uploads the real file; no version ever holds the secret.
pub fn symlink_swap_during_push() -> Vec<Row> {
    const MIN_TRIES: usize = 12;
    const MAX_TRIES: usize = 80;
    let env = TestEnv::new();
    env.root_key();
    let secret = env.path().join("secret");
    let secret_bytes = pseudo_random(64 * 1024, 0x5ec);
    std::fs::write(&secret, &secret_bytes).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let secret_sha = sha256_hex(&secret_bytes);

    // Eight MiB of weights read before the target (files are pushed in path order), so the
    // target is opened well after the scan.
    let d = env.path().join("swap-src");
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..8 {
        write_644(&d.join(format!("a{i}.bin")), &pseudo_random(MIB, i));
    }
    let target = d.join("zz.bin");
    let real = pseudo_random(64 * 1024, 0x7ea1);
    let keep = env.path().join("zz.keep");
    write_644(&keep, &real);
    std::fs::hard_link(&keep, &target).unwrap();
    let scratch = env.path().join("swap-scratch");
    std::fs::create_dir_all(&scratch).unwrap();

    let stop = AtomicBool::new(false);
    let (mut refused_at_open, mut refused_at_scan, mut committed) = (0, 0, Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            // The real file and the link take turns at the target's name, each by an atomic
            // rename, so the name always exists; the real file keeps its inode. Each holds the
            // name for about as long as the other.
            let (link, file) = (scratch.join("link"), scratch.join("file"));
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&secret, &link).unwrap();
                std::fs::rename(&link, &target).unwrap();
                std::thread::sleep(Duration::from_micros(300));
                let _ = std::fs::remove_file(&file);
                std::fs::hard_link(&keep, &file).unwrap();
                std::fs::rename(&file, &target).unwrap();
                std::thread::sleep(Duration::from_micros(300));
            }
        });
        for i in 0..MAX_TRIES {
            if i >= MIN_TRIES && refused_at_open > 0 && !committed.is_empty() {
                break;
            }
            let v = format!("1.0.{i}");
            let out = env.arca(&[
                "push",
                d.to_str().unwrap(),
                "--name",
                "swap",
                "--version",
                &v,
            ]);
            let err = text(&out.stderr);
            if out.status.success() {
                committed.push(v);
            } else if err.contains("nothing was pushed")
                && err.contains("since the directory was scanned")
            {
                assert_eq!(err.lines().count(), 1, "{err}");
                refused_at_open += 1;
            } else if err.contains("is a symbolic link") {
                refused_at_scan += 1;
            } else {
                panic!("push {v} failed otherwise: {err}");
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    for v in &committed {
        let shown = env.json(&["show", "swap", v]);
        for f in shown["files"].as_array().unwrap() {
            assert_ne!(
                f["sha256"].as_str().unwrap(),
                secret_sha,
                "{v} holds the secret as {}",
                f["path"]
            );
        }
    }
    assert!(
        refused_at_open > 0,
        "no push met the swap between its scan and its read ({refused_at_scan} at the scan, {} committed)",
        committed.len()
    );
    if let Some(v) = committed.last() {
        let dest = env.path().join("swap-get");
        env.ok(&["get", "swap", v, "--out", dest.to_str().unwrap()]);
        assert_eq!(std::fs::read(dest.join("zz.bin")).unwrap(), real);
    }
    eprintln!(
        "symlink swap: {} pushes, {refused_at_open} refused at the open, {refused_at_scan} at the scan, {} committed (none with the secret)",
        refused_at_open + refused_at_scan + committed.len(),
        committed.len()
    );
    vec![Row::new(
        NO_ROLE,
        "swap a pushed file for a symlink to a root-only secret, raced",
        Outcome::Refused,
    )]
}

/// Whether `s` holds a character a terminal would act on or that hides or reorders text.
fn raw_control(s: &str) -> Option<char> {
    s.chars().find(|&c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    })
}

/// A developer names a file with terminal escapes and a forged table row and describes the model
/// with `<script>`; an ML admin on the model writes a ticket and a rollback reason the same way.
/// `show`, `history`, `audit ls` and the Markdown and HTML reports show all of it escaped: no
/// raw control character, no extra table row, no tag.
pub fn escaped_strings() -> Vec<Row> {
    let env = TestEnv::new();
    env.root_key();
    let dev = user("arca-i-cli-dev");
    let adm = user("arca-i-cli-adm");
    env.trusted_key_for(&dev);
    env.trusted_key_for(&adm);
    env.ok(&["role", "assign", &dev.name, "developer", "--model", "esc"]);
    env.ok(&["role", "assign", &adm.name, "ml_admin", "--model", "esc"]);

    let evil_file = "evil\x1b[2J\x1b]0;pwned\x07\u{202e}txt.bin|\n| 2099 | forged | row |";
    let ticket = "CHG-1 |\n| 2099-01-01 | 9.9.9 | staging | production | root | FORGED | x |";
    let reason = "<script>alert(1)</script>\x1b[31m|\n| forged |";
    let d = env.path().join("esc-src");
    std::fs::create_dir_all(&d).unwrap();
    write_644(&d.join(evil_file), b"x");
    write_644(&d.join("w.bin"), &pseudo_random(4096, 8));
    give(&dev, &[&d, &d.join(evil_file), &d.join("w.bin")]);
    for v in ["1.0.0", "1.1.0"] {
        let out = env.arca_as(
            &dev,
            &[
                "push",
                d.to_str().unwrap(),
                "--name",
                "esc",
                "--version",
                v,
                "--description",
                "<b>x</b>\x1b[8m\u{202e}",
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(raw_control(&text(&out.stderr)).is_none());
        for to in ["staging", "production"] {
            if to == "production" {
                let out = env.arca_as(&adm, &["approve", "esc", v, "--ticket", ticket]);
                assert!(out.status.success(), "{}", text(&out.stderr));
                assert!(raw_control(&text(&out.stdout)).is_none());
            }
            let out = env.arca_as(&adm, &["promote", "esc", v, "--to", to, "--ticket", ticket]);
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
    }
    let out = env.arca_as(
        &adm,
        &["rollback", "esc", "--to", "1.0.0", "--reason", reason],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let clean = |what: &str, out: &str| {
        assert!(
            raw_control(out).is_none(),
            "{what} shows a raw {:?}:\n{out}",
            raw_control(out)
        );
    };
    let show = env.ok(&["show", "esc", "1.0.0"]);
    clean("show", &show);
    clean("show --json", &env.ok(&["--json", "show", "esc", "1.0.0"]));
    assert!(
        show.contains("evil\\x1b[2J\\x1b]0;pwned\\x07\\u{202e}txt.bin|\\n| 2099"),
        "{show}"
    );
    assert!(!show.lines().any(|l| l.starts_with("| 2099")), "{show}");
    let history = env.ok(&["history", "esc"]);
    clean("history", &history);
    assert!(history.contains("CHG-1 |\\n| 2099-01-01"), "{history}");
    assert!(!history.contains("\n| 2099"), "{history}");
    let audit = env.ok(&["audit", "ls", "--model", "esc"]);
    clean("audit ls", &audit);
    // Errors quote names too, and are one escaped line: a symlink with the hostile name.
    let e = env.path().join("esc-err");
    std::fs::create_dir_all(&e).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", e.join(evil_file)).unwrap();
    let out = env.arca(&[
        "push",
        e.to_str().unwrap(),
        "--name",
        "esc",
        "--version",
        "2.0.0",
    ]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    clean("an error", &err);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("evil\\x1b[2J") && err.contains("is a symbolic link"),
        "{err}"
    );

    let report = |format: &str| {
        env.ok(&[
            "audit",
            "report",
            "esc",
            "--from",
            "2000-01-01",
            "--to",
            "2999-12-31",
            "--format",
            format,
        ])
    };
    let json: serde_json::Value = serde_json::from_str(&report("json")).unwrap();
    let history_rows = json["production_history"].as_array().unwrap().len();
    let approval_rows = json["approvals"].as_array().unwrap().len();
    assert!(history_rows >= 3 && approval_rows == 2, "{json}");
    let md = report("md");
    clean("the Markdown report", &md);
    let table_rows = |section: &str| {
        md.split(section)
            .nth(1)
            .unwrap()
            .lines()
            .skip(4) // the title line's end, a blank line, the header row, the separator
            .take_while(|l| l.starts_with('|'))
            .count()
    };
    assert_eq!(table_rows("## Production history"), history_rows, "{md}");
    assert_eq!(table_rows("## Approvals"), approval_rows, "{md}");
    assert!(
        !md.contains("<script>") && md.contains("&lt;script&gt;"),
        "{md}"
    );
    let html = report("html");
    clean("the HTML report", &html);
    assert!(
        !html.contains("<script>") && html.contains("&lt;script&gt;"),
        "{html}"
    );
    assert_eq!(
        html.matches("<tr>").count(),
        1 + json["events_by_type"].as_object().unwrap().len()
            + 1
            + history_rows
            + 1
            + approval_rows,
        "{html}"
    );
    vec![Row::new(
        DEVELOPER,
        "ANSI escapes, forged table rows, <script> in names, tickets, reasons",
        Outcome::Refused,
    )]
}
