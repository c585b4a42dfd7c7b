//! Which socket the CLI talks to, and whether the process listening on it may be trusted with
//! what the CLI sends (model bytes, signatures) and believed about what it answers.
//!
//! The path: `--socket`/`ARCA_SOCKET` if given; else, on a host set up by `scripts/install.sh`
//! (`/etc/arca/arcad.toml` exists), the socket that file names, which is where arcad listens; else
//! `/run/arca/arcad.sock` if it exists; else the trial default `/var/tmp/arca-dev/arcad.sock`.
//! The choice is made once, from what exists: a chosen socket that is missing is an error, never a
//! reason to try another one.
//!
//! The listener: whatever the path, the socket's peer (SO_PEERCRED, taken when the listener
//! called `listen`) must run as root, as the caller itself, or as the uid `--daemon-uid`
//! (`ARCA_DAEMON_UID`) names. Anyone can create a socket in `/var/tmp` or point a script's
//! `ARCA_SOCKET` at one; nobody can make a listener run as root or as you. The check is made on
//! every connection, before a byte is written.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

const SYSTEM_CONFIG: &str = "/etc/arca/arcad.toml";
const SYSTEM_SOCKET: &str = "/run/arca/arcad.sock";
/// arcad's embedded default (daemon/src/config.rs), also where it listens when its config file
/// names no socket.
const TRIAL_SOCKET: &str = "/var/tmp/arca-dev/arcad.sock";

/// The socket to connect to and why it was chosen (said when it cannot be reached).
#[derive(Debug, PartialEq, Eq)]
pub struct Socket {
    pub path: PathBuf,
    pub why: &'static str,
}

/// The socket for this invocation: `named` (the flag or ARCA_SOCKET), else the host's.
pub fn choose(named: Option<&Path>) -> Result<Socket> {
    choose_in(named, Path::new(SYSTEM_CONFIG), Path::new(SYSTEM_SOCKET))
}

fn choose_in(named: Option<&Path>, config: &Path, system: &Path) -> Result<Socket> {
    if let Some(p) = named {
        return Ok(Socket {
            path: p.to_owned(),
            why: "named by --socket or ARCA_SOCKET",
        });
    }
    match std::fs::read_to_string(config) {
        Ok(text) => {
            let table: toml::Table = text.parse().with_context(|| {
                format!(
                    "{} does not parse, so the socket is unknown (name it with --socket or ARCA_SOCKET)",
                    config.display()
                )
            })?;
            let path = match table.get("socket") {
                Some(toml::Value::String(s)) => PathBuf::from(s),
                Some(_) => bail!("{}: socket is not a string", config.display()),
                None => PathBuf::from(TRIAL_SOCKET),
            };
            return Ok(Socket {
                path,
                why: "the socket arcad takes from /etc/arca/arcad.toml",
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "reading {} for arcad's socket (or name it with --socket or ARCA_SOCKET)",
                    config.display()
                )
            })
        }
    }
    if std::fs::symlink_metadata(system).is_ok() {
        return Ok(Socket {
            path: system.to_owned(),
            why: "the system socket",
        });
    }
    Ok(Socket {
        path: PathBuf::from(TRIAL_SOCKET),
        why: "the trial default: this host has no /etc/arca/arcad.toml and no /run/arca/arcad.sock",
    })
}

/// The uids a listener may run as.
#[derive(Debug, Clone)]
pub struct TrustedPeers {
    me: u32,
    daemon: Option<u32>,
}

impl TrustedPeers {
    /// Root, the caller's effective uid, and `daemon_uid` (a uid or a user name) if given.
    pub fn new(daemon_uid: Option<&str>) -> Result<Self> {
        let daemon = match daemon_uid.map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(match s.parse::<u32>() {
                Ok(uid) => uid,
                Err(_) => nix::unistd::User::from_name(s)
                    .with_context(|| format!("looking up ARCA_DAEMON_UID {s:?}"))?
                    .with_context(|| {
                        format!("ARCA_DAEMON_UID {s:?} is neither a uid nor a user name")
                    })?
                    .uid
                    .as_raw(),
            }),
        };
        Ok(Self {
            me: nix::unistd::geteuid().as_raw(),
            daemon,
        })
    }

    fn allows(&self, uid: u32) -> bool {
        uid == 0 || uid == self.me || Some(uid) == self.daemon
    }

    /// Refuses a socket whose listener runs as anyone else, in one line.
    pub fn check(&self, socket: &Path, peer_uid: u32) -> Result<()> {
        if self.allows(peer_uid) {
            return Ok(());
        }
        let mut expected = format!("root or you (uid {})", self.me);
        if let Some(d) = self.daemon {
            expected = format!("root, you (uid {}) or ARCA_DAEMON_UID (uid {d})", self.me);
        }
        bail!(
            "refusing to talk to {}: the process listening on it runs as uid {peer_uid}, but arcad must run as {expected}; if arcad really runs as uid {peer_uid}, set ARCA_DAEMON_UID={peer_uid}",
            socket.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_allowed_are_root_self_and_the_named_daemon_user() {
        let p = TrustedPeers {
            me: 1000,
            daemon: None,
        };
        assert!(p.allows(0) && p.allows(1000) && !p.allows(1001));
        let e = p.check(Path::new("/tmp/s"), 1001).unwrap_err().to_string();
        assert!(
            e.contains("/tmp/s") && e.contains("uid 1001") && e.contains("root or you (uid 1000)"),
            "{e}"
        );
        let p = TrustedPeers {
            me: 0,
            daemon: Some(998),
        };
        assert!(p.allows(998) && !p.allows(1000));
        assert!(TrustedPeers::new(Some("0")).unwrap().daemon == Some(0));
        assert!(TrustedPeers::new(Some("root")).unwrap().daemon == Some(0));
        assert!(TrustedPeers::new(Some("no-such-user-arca")).is_err());
    }

    #[test]
    fn the_socket_is_chosen_once_from_what_exists() {
        let d = tempfile::tempdir().unwrap();
        let config = d.path().join("arcad.toml");
        let system = d.path().join("arcad.sock");
        let named = Path::new("/x/named.sock");

        // Nothing installed: the trial socket, even if it does not exist.
        let s = choose_in(None, &config, &system).unwrap();
        assert_eq!(s.path, Path::new(TRIAL_SOCKET));
        // A named socket always wins.
        assert_eq!(
            choose_in(Some(named), &config, &system).unwrap().path,
            named
        );
        // The system socket exists: it, never the trial one.
        std::fs::write(&system, "").unwrap();
        assert_eq!(choose_in(None, &config, &system).unwrap().path, system);
        // A host's config names the socket: that one, whether or not it exists now.
        std::fs::remove_file(&system).unwrap();
        std::fs::write(&config, "state_dir = \"/s\"\nsocket = \"/run/x/a.sock\"\n").unwrap();
        assert_eq!(
            choose_in(None, &config, &system).unwrap().path,
            Path::new("/run/x/a.sock")
        );
        // A config without a socket key: arcad listens on its embedded default.
        std::fs::write(&config, "state_dir = \"/s\"\n").unwrap();
        assert_eq!(
            choose_in(None, &config, &system).unwrap().path,
            Path::new(TRIAL_SOCKET)
        );
        // A config that does not parse is an error, not a guess.
        std::fs::write(&config, "socket = [").unwrap();
        assert!(choose_in(None, &config, &system).is_err());
    }
}
