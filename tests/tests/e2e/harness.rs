//! The test environment: a real `arcad` on a temporary state directory, the real `arca` CLI,
//! local users created for the test, and a raw HTTP client for requests the CLI would never send.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Directory holding the built binaries (the test executable lives in its `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --release --workspace --bins` first",
        p.display()
    );
    p
}

/// A local account created for tests (idempotent), with its own home directory.
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// useradd, groupadd and usermod lock /etc/passwd and /etc/group and fail rather than wait
/// when another holds the lock: tests running in parallel take turns.
static ACCOUNTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn user(name: &str) -> User {
    let _g = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let exists = Command::new("id")
        .arg("-u")
        .arg(name)
        .output()
        .expect("id")
        .status
        .success();
    if !exists {
        let st = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", name])
            .status()
            .expect("useradd");
        assert!(
            st.success(),
            "useradd {name} failed (tests must run as root)"
        );
    }
    let u = nix::unistd::User::from_name(name)
        .expect("getpwnam")
        .expect("user exists");
    User {
        name: name.into(),
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir,
    }
}

/// A local group (created if missing) with `members` in it, as the account database says:
/// setpriv's --init-groups and getgrouplist(3) both see it.
pub fn group(name: &str, members: &[&User]) -> u32 {
    let _g = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let exists = Command::new("getent")
        .args(["group", name])
        .output()
        .expect("getent")
        .status
        .success();
    if !exists {
        let st = Command::new("groupadd")
            .arg(name)
            .status()
            .expect("groupadd");
        assert!(
            st.success(),
            "groupadd {name} failed (tests must run as root)"
        );
    }
    for m in members {
        let st = Command::new("usermod")
            .args(["-a", "-G", name, &m.name])
            .status()
            .expect("usermod");
        assert!(st.success(), "usermod -aG {name} {} failed", m.name);
    }
    nix::unistd::Group::from_name(name)
        .expect("getgrnam")
        .expect("group exists")
        .gid
        .as_raw()
}

/// Deterministic pseudo-random bytes (xorshift64*): fast, and the same on every run, so that
/// measured figures such as the dedup ratio do not vary between runs.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A chunk as the store holds it: id, sealed bytes, and its local pack file and offset
/// (`None`: in the `chunks` column family). See `TestEnv::chunk_values`.
pub type StoredChunk = (Vec<u8>, Vec<u8>, Option<(PathBuf, u64)>);

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// `sha256sum FILE`, the way a user would check a file.
pub fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_owned()
}

/// A running daemon on a private state directory; stopped (and the directory removed) on drop.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub daemon: Option<Child>,
    /// Extra arcad flags for the next `start`.
    pub daemon_args: Vec<String>,
    /// Extra environment for the next `start`.
    pub daemon_env: Vec<(String, String)>,
    /// A command that runs arcad, whose path and arguments follow it, for the next `start`
    /// (empty: arcad itself). It must exec arcad in the same process, which is the one stopped.
    pub daemon_wrapper: Vec<String>,
}

impl TestEnv {
    pub fn new() -> Self {
        let mut env = Self::unstarted();
        env.start();
        env
    }

    /// A test directory with its own KEK, the daemon not started (set `daemon_args` first).
    pub fn unstarted() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("arca-e2e-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        // Test users must reach the socket and their own files below this directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let kek = dir.path().join("kek.key");
        let mut key = [0u8; 32];
        getrandom(&mut key);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&kek)
            .expect("kek");
        writeln!(f, "arca-kek-v1:{}", hex::encode(key)).expect("write kek");
        std::fs::create_dir_all(dir.path().join("home-root")).expect("home");
        Self {
            dir,
            daemon: None,
            daemon_args: Vec::new(),
            daemon_env: Vec::new(),
            daemon_wrapper: Vec::new(),
        }
    }

    /// Runs arcad once with this environment's directories and `daemon_args`, plus `extra`
    /// (e.g. `--host-key`), and returns what it printed.
    pub fn arcad_once(&self, extra: &[&str]) -> Output {
        let mut cmd = Command::new(bin("arcad"));
        self.dir_args(&mut cmd)
            .arg("--no-mount")
            .args(&self.daemon_args)
            .args(extra)
            .envs(self.daemon_env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run arcad")
    }

    /// arcad's flags for this environment's state directory, socket and key file.
    fn dir_args<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.arg("--state-dir")
            .arg(self.state_dir())
            .arg("--socket")
            .arg(self.socket())
            .arg("--key-file")
            .arg(self.path().join("kek.key"))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("arcad.sock")
    }

    pub fn mnt(&self) -> PathBuf {
        self.path().join("mnt")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("arcad.log")).unwrap_or_default()
    }

    pub fn start(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("arcad.log"))
            .expect("log");
        let mut cmd = match self.daemon_wrapper.split_first() {
            Some((w, args)) => {
                let mut c = Command::new(w);
                c.args(args).arg(bin("arcad"));
                c
            }
            None => Command::new(bin("arcad")),
        };
        let child = self
            .dir_args(&mut cmd)
            .arg("--mount")
            .arg(self.mnt())
            .args(&self.daemon_args)
            .envs(self.daemon_env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn arcad");
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        // The socket is bound before the mount is up; a served request means both are ready.
        while !self.answers() {
            if let Some(st) = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("arcad exited with {st} at start:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "arcad did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn answers(&self) -> bool {
        let Ok(mut s) = UnixStream::connect(self.socket()) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if s.write_all(b"GET /v1/whoami HTTP/1.1\r\nhost: arcad\r\nconnection: close\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        resp.starts_with(b"HTTP/1.1 200")
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(st)) = c.try_wait() {
                    assert!(
                        st.success(),
                        "arcad exited with {st} on SIGTERM:\n{}",
                        self.log()
                    );
                    return;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("arcad did not stop within 30 s of SIGTERM:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The CLI as root, with HOME inside the test directory (so keys land there).
    pub fn arca(&self, args: &[&str]) -> Output {
        self.arca_cmd(args).output().expect("run arca")
    }

    pub fn arca_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("arca"));
        c.args(args)
            .env("ARCA_SOCKET", self.socket())
            .env("HOME", self.path().join("home-root"))
            .env_remove("ARCA_KEY")
            .env_remove("XDG_CONFIG_HOME");
        c
    }

    /// The CLI as another local user.
    pub fn arca_as(&self, u: &User, args: &[&str]) -> Output {
        let mut c = as_user(u, bin("arca"));
        c.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("ARCA_SOCKET", self.socket())
            .env("HOME", &u.home);
        c.output().expect("run arca as user")
    }

    /// Runs the CLI and asserts success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.arca(args);
        assert!(
            out.status.success(),
            "arca {args:?} failed: {}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.arca(args);
        assert!(
            !out.status.success(),
            "arca {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).expect("json output")
    }

    /// The root user's signing key, created and trusted on first use.
    pub fn root_key(&self) -> PathBuf {
        let p = self.path().join("home-root/.config/arca/signing.key");
        if !p.exists() {
            self.ok(&["key", "gen"]);
        }
        p
    }

    /// A signing key for `u` (made by `u`), trusted by root on this daemon. Trust alone grants
    /// nothing.
    ///
    /// The key file lives in `u`'s home, which every test using `u` shares, and tests run in
    /// parallel: making a fresh key per call replaced the file under another test that had
    /// trusted the old key on its own daemon and still had pushes to sign (its next push was
    /// refused as signed by an untrusted key). So the key is made once per test run, on first
    /// use, and every later call trusts that same key.
    pub fn trusted_key_for(&self, u: &User) -> PathBuf {
        static MADE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let key = u.home.join(".config/arca/signing.key");
        {
            let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
            if !made.contains(&u.name) {
                let _ = std::fs::remove_file(&key);
                let _ = std::fs::remove_file(key.with_extension("pub"));
                let out = self.arca_as(u, &["key", "gen"]);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                made.push(u.name.clone());
            }
        }
        self.ok(&[
            "key",
            "trust",
            &u.name,
            key.with_extension("pub").to_str().unwrap(),
        ]);
        key
    }

    /// Opens the daemon's database directly (the daemon must be stopped), for tamper tests.
    pub fn open_db(&self) -> rocksdb::DB {
        assert!(
            self.daemon.is_none(),
            "stop the daemon before opening its database"
        );
        let opts = rocksdb::Options::default();
        let path = self.state_dir().join("db");
        let cfs = rocksdb::DB::list_cf(&opts, &path).expect("list column families");
        rocksdb::DB::open_cf(&opts, &path, cfs).expect("open db")
    }

    /// Flips one bit of the first value in column family `cf` that `pick` selects, at the offset
    /// `at(len)`, through the RocksDB API (the daemon must be stopped). Returns how many values
    /// `pick` selected. `cf` "chunks" means the sealed chunks wherever they are (local pack
    /// files since store format 3; edited in place there, as an attacker with the state
    /// directory would).
    pub fn tamper(
        &self,
        cf: &str,
        pick: impl Fn(&[u8]) -> bool,
        at: impl Fn(usize) -> usize,
    ) -> usize {
        if cf == "chunks" {
            let picked: Vec<_> = self
                .chunk_values()
                .into_iter()
                .filter(|(_, v, _)| pick(v))
                .collect();
            if let Some((k, v, place)) = picked.first() {
                let i = at(v.len());
                match place {
                    Some((file, offset)) => {
                        use std::os::unix::fs::FileExt;
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .open(file)
                            .expect("open pack file");
                        f.write_all_at(&[v[i] ^ 0x01], offset + i as u64)
                            .expect("write pack file");
                    }
                    None => {
                        let db = self.open_db();
                        let h = db.cf_handle("chunks").expect("column family");
                        let mut v = v.clone();
                        v[i] ^= 0x01;
                        db.put_cf(h, k, &v).expect("put");
                        db.flush_cf(h).expect("flush");
                    }
                }
            }
            return picked.len();
        }
        let db = self.open_db();
        let h = db.cf_handle(cf).expect("column family");
        let picked: Vec<_> = db
            .iterator_cf(h, rocksdb::IteratorMode::Start)
            .map(|r| r.expect("iterate"))
            .filter(|(_, v)| pick(v))
            .collect();
        if let Some((k, v)) = picked.first() {
            let mut v = v.to_vec();
            let i = at(v.len());
            v[i] ^= 0x01;
            db.put_cf(h, k, &v).expect("put");
            db.flush_cf(h).expect("flush");
        }
        picked.len()
    }

    /// Every row of column family `cf`, in key order, through the RocksDB API (the daemon must
    /// be stopped): what a state-directory attacker reads before a replay.
    pub fn cf_rows(&self, cf: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let db = self.open_db();
        let h = db.cf_handle(cf).expect("column family");
        db.iterator_cf(h, rocksdb::IteratorMode::Start)
            .map(|r| r.expect("iterate"))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    /// Writes `rows` into `cf` over whatever is there, flushed (the daemon must be stopped).
    pub fn put_rows(&self, cf: &str, rows: &[(Vec<u8>, Vec<u8>)]) {
        let db = self.open_db();
        let h = db.cf_handle(cf).expect("column family");
        for (k, v) in rows {
            db.put_cf(h, k, v).expect("put");
        }
        db.flush_cf(h).expect("flush");
    }

    /// Chunks in the store: rows of its chunk index (`cache`), through RocksDB (the daemon
    /// must be stopped).
    pub fn stored_chunks(&self) -> usize {
        let db = self.open_db();
        let h = db.cf_handle("cache").expect("column family");
        db.iterator_cf(h, rocksdb::IteratorMode::Start).count()
    }

    /// Every chunk in the store, from its index (docs/format.md, "cache"): id, sealed bytes,
    /// and for a chunk in a local pack file the file and offset (`None`: in the `chunks` column
    /// family, a store from before format 3). The daemon must be stopped.
    pub fn chunk_values(&self) -> Vec<StoredChunk> {
        use std::os::unix::fs::FileExt;
        let db = self.open_db();
        let index = db.cf_handle("cache").expect("column family");
        let chunks = db.cf_handle("chunks").expect("column family");
        let mut out = Vec::new();
        for r in db.iterator_cf(index, rocksdb::IteratorMode::Start) {
            let (k, row) = r.expect("iterate");
            if row.len() == 48 {
                let file = self
                    .state_dir()
                    .join("packs")
                    .join(hex::encode(&row[4..36]));
                let offset = u64::from_le_bytes(row[36..44].try_into().unwrap());
                let len = u32::from_le_bytes(row[44..48].try_into().unwrap());
                let mut v = vec![0u8; len as usize];
                std::fs::File::open(&file)
                    .expect("open pack file")
                    .read_exact_at(&mut v, offset)
                    .expect("read pack file");
                out.push((k.to_vec(), v, Some((file, offset))));
            } else if let Some(v) = db.get_cf(chunks, &k).expect("get") {
                out.push((k.to_vec(), v, None));
            }
        }
        out
    }

    /// Chunks the catalog references, as the daemon counts them.
    pub fn referenced_chunks(&self) -> usize {
        self.json(&["stats"])["chunks"]
            .as_u64()
            .expect("stats.chunks") as usize
    }

    /// Pushes, as root, a one-file model (`w.bin`, 200 kB of `seed`'s bytes, mode 0644) with
    /// `extra` arguments; returns its directory.
    pub fn push_small(&self, name: &str, version: &str, seed: u64, extra: &[&str]) -> PathBuf {
        let d = self.path().join(format!("small-{name}-{version}"));
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(d.join("w.bin"), pseudo_random(200_000, seed)).expect("write");
        std::fs::set_permissions(d.join("w.bin"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let dir = d.to_str().expect("utf-8 path");
        let mut args = vec!["push", dir, "--name", name, "--version", version];
        args.extend_from_slice(extra);
        self.ok(&args);
        d
    }

    /// A raw HTTP/1.1 request on the daemon's socket, as a hostile or broken client would send.
    pub fn raw(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = UnixStream::connect(self.socket()).expect("connect");
        write!(s, "{method} {path} HTTP/1.1\r\nhost: arcad\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len()).expect("write");
        // A server that refuses early (413) may close before the whole body is written: the
        // answer is what matters.
        let _ = s.write_all(body);
        let mut resp = Vec::new();
        if let Err(e) = s.read_to_end(&mut resp) {
            // Reset by a server that closed on a request it refused mid-body: whatever arrived
            // before the reset, or nothing (status 0).
            if resp.is_empty() {
                return (0, e.to_string().into_bytes());
            }
        }
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("http response");
        let head = String::from_utf8_lossy(&resp[..split]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let mut body = resp[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        (status, body)
    }
}

/// The body of a chunked HTTP/1.1 response, without its framing.
pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

fn getrandom(buf: &mut [u8]) {
    let mut f = std::fs::File::open("/dev/urandom").expect("urandom");
    f.read_exact(buf).expect("urandom");
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && c.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // A killed daemon leaves a dead mount; detach it so the directory can be removed.
        if is_mounted(&self.mnt()) {
            let _ = nix::mount::umount2(&self.mnt(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Whether `path` is a mount point (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let p = path.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

/// `prog` run as a local user, with that user's uid, gid and supplementary groups (setpriv is
/// util-linux's, on every Debian system).
pub fn as_user(u: &User, prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={}", u.uid))
        .arg(format!("--regid={}", u.gid))
        .arg("--init-groups")
        .arg("--")
        .arg(prog);
    c
}

/// Every file below `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Fails loudly, naming the Debian package, when a tool a test needs is missing
/// (scripts/test.sh installs them all).
pub fn need(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} not found: install the Debian package {package} (scripts/test.sh does)"
    );
}
