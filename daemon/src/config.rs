//! arcad's configuration: embedded defaults for a local trial, overridden by a TOML file
//! (`--config`), overridden by flags. An unknown key in the file is an error that names it.

use std::path::{Path, PathBuf};

/// Where the embedded defaults keep everything: one directory, so a trial is easy to find and
/// to remove.
pub const DEV_BASE: &str = "/var/tmp/arca-dev";

/// The file's shape. Every field is optional; absent ones take the defaults.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub mount: Option<PathBuf>,
    pub cache_mib: Option<u64>,
    pub log: Option<String>,
    pub environment: Option<String>,
    pub admins: Option<Vec<String>>,
    pub metrics_addr: Option<String>,
    pub gc_interval_secs: Option<u64>,
    pub kek_rotation_path: Option<PathBuf>,
    pub rotation_mib_per_sec: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_connections_per_user: Option<usize>,
    pub request_header_timeout_secs: Option<u64>,
    pub audit_public_key: Option<String>,
    pub fleet: Option<FleetFile>,
}

/// `[fleet]`: this host is one of a fleet sharing a registry through an S3 object store
/// (docs/operations.md, "Fleet").
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    /// This host's name (letters, digits, `-`; at most 63).
    pub host: String,
    /// S3 endpoints of the one store, tried in order.
    pub endpoints: Vec<String>,
    pub bucket: String,
    pub region: Option<String>,
    /// Key prefix in the bucket (default `arca`).
    pub prefix: Option<String>,
    /// Two lines: access key id, secret key. Absent: unsigned requests.
    pub credentials_file: Option<PathBuf>,
    /// PEM CA certificate for `https://` endpoints, added to the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Bound on one request to the store, with its retries (default 5).
    pub timeout_secs: Option<u64>,
    /// How often to look for other hosts' changes (default 500).
    pub poll_ms: Option<u64>,
    /// The local chunk cache's limit, GiB (a fraction is fine). Default: a quarter of the
    /// size of the file system holding the state directory.
    pub cache_gib: Option<f64>,
    /// Fetch a version before applying the entry that makes it production or staging, for at
    /// most this many seconds. Default: not set (switch at once).
    pub warm_before_switch_secs: Option<u64>,
    /// Fleet GC: hours between a pack's condemnation and its deletion, and the age an
    /// unreferenced pack must reach before it counts as an orphan (default 24; fractions
    /// allowed).
    pub gc_grace_hours: Option<f64>,
    /// Fleet GC: a pack at least this many percent dead is repacked (default 50).
    pub gc_repack_dead_percent: Option<u8>,
    /// Fleet GC: this host's periodic GC also collects the fleet's packs (default false:
    /// `arca gc` does; set it on one host, or a few).
    pub gc_packs: Option<bool>,
    /// S3 Object Lock retention for log entries and audit segments where the bucket has Object
    /// Lock enabled: `compliance` (default), `governance`, or `off`.
    pub object_lock: Option<String>,
    /// Days of that retention (default 365; 1 to 36500).
    pub object_lock_days: Option<u32>,
    /// Seconds between shipments of this host's new audit events (reads, refusals, integrity
    /// failures) to the store (default 30; 1 to 3600). It also ships at clean shutdown.
    pub audit_ship_secs: Option<u64>,
    /// The models whose production and newest staging version this host keeps cached whatever
    /// the limit (and warms, with `warm_before_switch_secs`), among those its `environment`
    /// serves. Default: not set (every model the environment serves). Other models are still
    /// read, fetched on demand and cached like any other version.
    pub serve: Option<Vec<String>>,
    /// Every host's name and entry-signing key (`arcad --host-key` prints a host's).
    #[serde(default)]
    pub hosts: std::collections::BTreeMap<String, String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub key_file: PathBuf,
    /// Where the read-only FUSE mount goes; `None` runs without one.
    pub mount: Option<PathBuf>,
    /// Size of the mount's verified-plaintext cache.
    pub cache_mib: u64,
    pub log: String,
    /// The environment this daemon serves (`dev`, `staging`, `prod`, …): models whose policy
    /// does not list it are hidden from the mount and refused to `get`. `None` serves all.
    pub environment: Option<String>,
    /// Bootstrap admins besides root and the daemon's own user (names or uids).
    pub admins: Vec<String>,
    /// Also serve Prometheus metrics over TCP here (they are always at /metrics on the socket).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Seconds between background garbage collections; 0 turns them off.
    pub gc_interval_secs: u64,
    /// Where `arca key rotate-kek` writes the new key-encryption key; `None`: the key file.
    pub kek_rotation_path: Option<PathBuf>,
    /// How fast a data-key rotation may re-seal chunks, in MiB/s; 0: as fast as it can.
    pub rotation_mib_per_sec: u64,
    /// Control-socket connections open at once, in all and per uid.
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    /// Seconds a connection may take to send a request's headers.
    pub request_header_timeout_secs: u64,
    /// The audit public key the store must sign its trail with (`arca audit verify` prints
    /// it): pinned, arcad refuses a store whose audit key was replaced.
    pub audit_public_key: Option<arca_core::sign::PublicKey>,
    /// Set when this host is one of a fleet.
    pub fleet: Option<crate::fleet::FleetConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0}: {1}")]
    Parse(PathBuf, String),
}

impl Config {
    pub fn defaults() -> Self {
        let base = Path::new(DEV_BASE);
        Self {
            state_dir: base.join("state"),
            socket: base.join("arcad.sock"),
            key_file: base.join("keys/kek.key"),
            mount: Some(base.join("mnt")),
            cache_mib: 256,
            log: "info".into(),
            environment: None,
            admins: Vec::new(),
            metrics_addr: None,
            gc_interval_secs: 3600,
            kek_rotation_path: None,
            rotation_mib_per_sec: 0,
            max_connections: 1024,
            max_connections_per_user: 64,
            request_header_timeout_secs: 10,
            audit_public_key: None,
            fleet: None,
        }
    }

    /// Whether the key file is the embedded default: only then may arcad generate one.
    pub fn key_file_is_default(&self) -> bool {
        self.key_file == Self::defaults().key_file
    }

    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        self.apply_str(&text, path)
    }

    /// Applies a configuration file's text (`path` only names it in errors).
    pub fn apply_str(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let f: FileConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(path.to_owned(), e.to_string()))?;
        if let Some(v) = f.state_dir {
            self.state_dir = v;
        }
        if let Some(v) = f.socket {
            self.socket = v;
        }
        if let Some(v) = f.key_file {
            self.key_file = v;
        }
        if let Some(v) = f.mount {
            // An empty path in the file means "no mount".
            self.mount = (!v.as_os_str().is_empty()).then_some(v);
        }
        if let Some(v) = f.cache_mib {
            self.cache_mib = v;
        }
        if let Some(v) = f.log {
            self.log = v;
        }
        if let Some(v) = f.environment {
            self.environment = Some(v);
        }
        if let Some(v) = f.admins {
            self.admins = v;
        }
        if let Some(v) = f.metrics_addr {
            self.metrics_addr = Some(v.parse().map_err(|e| {
                ConfigError::Parse(path.to_owned(), format!("metrics_addr {v:?}: {e}"))
            })?);
        }
        if let Some(v) = f.gc_interval_secs {
            self.gc_interval_secs = v;
        }
        if let Some(v) = f.kek_rotation_path {
            self.kek_rotation_path = Some(v);
        }
        if let Some(v) = f.audit_public_key {
            self.audit_public_key = Some(v.parse().map_err(|e| {
                ConfigError::Parse(path.to_owned(), format!("audit_public_key {v:?}: {e}"))
            })?);
        }
        if let Some(v) = f.rotation_mib_per_sec {
            self.rotation_mib_per_sec = v;
        }
        if let Some(v) = f.max_connections {
            self.max_connections = v;
        }
        if let Some(v) = f.max_connections_per_user {
            self.max_connections_per_user = v;
        }
        if let Some(v) = f.request_header_timeout_secs {
            self.request_header_timeout_secs = v;
        }
        if let Some(fl) = f.fleet {
            self.fleet = Some(
                fleet_config(fl)
                    .map_err(|e| ConfigError::Parse(path.to_owned(), format!("[fleet]: {e}")))?,
            );
        }
        Ok(())
    }
}

fn valid_host(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn fleet_config(f: FleetFile) -> Result<crate::fleet::FleetConfig, String> {
    if !valid_host(&f.host) {
        return Err(format!(
            "host {:?}: letters, digits and `-` only, 1 to 63 of them",
            f.host
        ));
    }
    if f.endpoints.is_empty() {
        return Err("endpoints: name at least one S3 endpoint".into());
    }
    let mut hosts = std::collections::BTreeMap::new();
    for (name, key) in f.hosts {
        if !valid_host(&name) {
            return Err(format!("hosts: {name:?} is not a valid host name"));
        }
        let k: arca_core::sign::PublicKey = key
            .parse()
            .map_err(|e| format!("hosts.{name}: {key:?}: {e}"))?;
        if hosts.values().any(|v| *v == k) {
            return Err(format!(
                "hosts.{name}: the same key is pinned for two hosts"
            ));
        }
        hosts.insert(name, k);
    }
    let limit = match f.cache_gib {
        None => None,
        Some(g) if g.is_finite() && g > 0.0 && g < (1u64 << 33) as f64 => {
            Some((g * (1u64 << 30) as f64) as u64)
        }
        Some(g) => {
            return Err(format!(
                "cache_gib = {g}: a positive number of GiB (a fraction such as 0.5 is fine)"
            ))
        }
    };
    let warm = match f.warm_before_switch_secs {
        None | Some(0) => None,
        Some(s) if s <= 3600 => Some(std::time::Duration::from_secs(s)),
        Some(s) => {
            return Err(format!(
                "warm_before_switch_secs = {s}: at most 3600 (the host applies no other entry meanwhile)"
            ))
        }
    };
    let serve = match f.serve {
        None => None,
        Some(names) => {
            let mut set = std::collections::BTreeSet::new();
            for n in names {
                let m: arca_core::ModelName = n
                    .parse()
                    .map_err(|e| format!("serve: {n:?} is not a model name: {e}"))?;
                set.insert(m);
            }
            Some(set)
        }
    };
    let grace_hours = f.gc_grace_hours.unwrap_or(24.0);
    if !grace_hours.is_finite() || !(0.0..=24.0 * 365.0).contains(&grace_hours) {
        return Err(format!(
            "gc_grace_hours = {grace_hours}: a number of hours from 0 to 8760"
        ));
    }
    let repack = f.gc_repack_dead_percent.unwrap_or(50);
    if !(1..=100).contains(&repack) {
        return Err(format!(
            "gc_repack_dead_percent = {repack}: a percentage from 1 to 100"
        ));
    }
    let audit_ship = f.audit_ship_secs.unwrap_or(30);
    if !(1..=3600).contains(&audit_ship) {
        return Err(format!(
            "audit_ship_secs = {audit_ship}: a number of seconds from 1 to 3600"
        ));
    }
    let days = f.object_lock_days.unwrap_or(365);
    if !(1..=36_500).contains(&days) {
        return Err(format!(
            "object_lock_days = {days}: a number of days from 1 to 36500"
        ));
    }
    use crate::remote::lock::{LockMode, Retention};
    let retention = match f.object_lock.as_deref().unwrap_or("compliance") {
        "compliance" => Some(Retention {
            mode: LockMode::Compliance,
            days,
        }),
        "governance" => Some(Retention {
            mode: LockMode::Governance,
            days,
        }),
        "off" => None,
        other => {
            return Err(format!(
                "object_lock = {other:?}: \"compliance\", \"governance\" or \"off\""
            ))
        }
    };
    Ok(crate::fleet::FleetConfig {
        host: f.host,
        remote: crate::remote::RemoteConfig {
            endpoints: f.endpoints,
            bucket: f.bucket,
            region: f.region.unwrap_or_else(|| "us-east-1".into()),
            prefix: f.prefix.unwrap_or_else(|| "arca".into()),
            credentials_file: f.credentials_file,
            ca_file: f.ca_file,
            timeout: std::time::Duration::from_secs(f.timeout_secs.unwrap_or(5).max(1)),
            retention,
        },
        hosts,
        poll: std::time::Duration::from_millis(f.poll_ms.unwrap_or(500).max(50)),
        cache: crate::fleet::cache::CacheConfig {
            limit,
            warm_before_switch: warm,
            serve,
        },
        gc_grace: std::time::Duration::from_secs_f64(grace_hours * 3600.0),
        repack_dead_percent: repack,
        gc_packs: f.gc_packs.unwrap_or(false),
        audit_ship: std::time::Duration::from_secs(audit_ship),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "state_dir = \"/x\"\nsokcet = \"/y\"\n").unwrap();
        let e = Config::defaults().apply_file(&p).unwrap_err().to_string();
        assert!(e.contains("sokcet"), "{e}");
        std::fs::write(&p, "state_dir = \"/x\"\n").unwrap();
        let mut c = Config::defaults();
        c.apply_file(&p).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/x"));
    }

    fn fleet(extra: &str) -> Result<crate::fleet::FleetConfig, ConfigError> {
        let text = format!(
            "[fleet]\nhost = \"a\"\nendpoints = [\"http://127.0.0.1:1\"]\nbucket = \"b\"\n{extra}"
        );
        let mut c = Config::defaults();
        c.apply_str(&text, Path::new("t.toml"))?;
        Ok(c.fleet.unwrap())
    }

    #[test]
    fn cache_settings_are_checked() {
        let f = fleet("cache_gib = 0.05\nwarm_before_switch_secs = 30\n").unwrap();
        assert_eq!(f.cache.limit, Some((0.05 * (1u64 << 30) as f64) as u64));
        assert_eq!(
            f.cache.warm_before_switch,
            Some(std::time::Duration::from_secs(30))
        );
        let f = fleet("").unwrap();
        assert_eq!(f.cache.limit, None, "the default is resolved at start");
        assert_eq!(f.cache.warm_before_switch, None);
        let m = |s: &str| s.parse::<arca_core::ModelName>().unwrap();
        assert!(f.cache.serve.is_none() && f.cache.keeps(&m("any")));
        let s = fleet("serve = [\"resnet\", \"bert\"]\n").unwrap();
        assert!(s.cache.keeps(&m("resnet")) && s.cache.keeps(&m("bert")));
        assert!(
            !s.cache.keeps(&m("gpt")),
            "a serve list narrows what is kept"
        );
        let none = fleet("serve = []\n").unwrap();
        assert!(
            !none.cache.keeps(&m("resnet")),
            "an empty list keeps no model"
        );
        assert_eq!(f.audit_ship, std::time::Duration::from_secs(30));
        use crate::remote::lock::{LockMode, Retention};
        assert_eq!(
            f.remote.retention,
            Some(Retention {
                mode: LockMode::Compliance,
                days: 365
            })
        );
        let g = fleet("object_lock = \"governance\"\nobject_lock_days = 7\n").unwrap();
        assert_eq!(
            g.remote.retention.map(|r| (r.mode, r.days)),
            Some((LockMode::Governance, 7))
        );
        assert_eq!(
            fleet("object_lock = \"off\"\n").unwrap().remote.retention,
            None
        );
        assert_eq!(
            fleet("audit_ship_secs = 2\n").unwrap().audit_ship,
            std::time::Duration::from_secs(2)
        );
        for bad in [
            "cache_gib = 0",
            "cache_gib = -1",
            "cache_gib = nan",
            "cache_gib = inf",
            "warm_before_switch_secs = 86400",
            "audit_ship_secs = 0",
            "object_lock_days = 0",
            "object_lock = \"forever\"",
            "audit_ship_secs = 3601",
            "serve = [\"../x\"]",
        ] {
            let e = fleet(bad).unwrap_err().to_string();
            assert!(e.contains(bad.split(' ').next().unwrap()), "{bad}: {e}");
        }
    }
}
