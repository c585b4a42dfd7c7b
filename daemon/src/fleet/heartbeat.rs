//! Each host's heartbeat: `hosts/<name>` in the store, rewritten every `HEARTBEAT_EVERY`,
//! saying which log entry the host applied, whether it is halted or cut off, and how many audit
//! segments it shipped (which `arca audit verify` on another host uses to notice that the
//! newest ones were deleted).
//!
//! A heartbeat is sealed with the fleet's keys (bound to the host's name) and signed with the
//! host's own daemon key, checked against the key the fleet pins for that name: every host
//! holds the fleet's keys, so a seal alone would let one host speak for another (claim fewer
//! audit segments for it, hiding a deletion). A writer of the store with no key can only put
//! back an older heartbeat of the same host; its `at_ms` shows its age, which `fleet status`
//! and the audit report print next to every claim taken from it.

use std::time::Duration;

use arca_core::sign::{PublicKey, SecretKey, Signature};
use bytes::Bytes;

use super::{now_ms, FleetError};
use crate::crypt::Keyring;
use crate::store::Store;

/// How often a host rewrites its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// How often a host reads other hosts' heartbeats to check its view of the log.
pub const VIEW_EVERY: Duration = Duration::from_secs(10);
/// Other hosts' heartbeats read per check (in turn, so a large fleet costs a few GETs).
const VIEW_SAMPLE: usize = 3;
/// How much later than another host's heartbeat this host must have found the log's end for
/// the two to contradict each other: more than the clocks of two hosts are apart.
const VIEW_MARGIN_MS: u64 = 15_000;

/// Largest heartbeat object read.
const MAX_HEARTBEAT: u64 = 64 << 10;

const MAGIC: &[u8; 4] = b"arcH";
const FORMAT: u8 = 1;
/// Magic, format, the signer's public key, the signature.
const HEADER: usize = 4 + 1 + 32 + 64;
const SIGN_TAG: &[u8] = b"arca fleet heartbeat v1\0";
const SEAL_CF: &str = "fleet-host";

/// What a host writes to `hosts/<name>`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    pub host: String,
    pub applied: u64,
    pub at_ms: u64,
    pub halted: Option<String>,
    pub store_error: Option<String>,
    /// How many audit segments the host has in the store (`None`: it does not know yet):
    /// a reader that finds fewer names the newest ones as deleted.
    #[serde(default)]
    pub audit_segments: Option<u64>,
}

impl Heartbeat {
    /// Seconds since it was written, by this host's clock.
    pub fn age_secs(&self) -> f64 {
        now_ms().saturating_sub(self.at_ms) as f64 / 1000.0
    }
}

/// Why a heartbeat is not taken.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error(
        "not a signed heartbeat (format 1; an arcad from before signed heartbeats writes none)"
    )]
    Format,
    #[error(
        "not signed by the key the fleet pins for host {0} (forged by another host, or edited)"
    )]
    BadSignature(String),
    #[error("no host {0} is pinned in [fleet.hosts]")]
    Unpinned(String),
    #[error("the sealed body does not open under the fleet's keys for host {host}: {why}")]
    Sealed { host: String, why: String },
    #[error("malformed: {0}")]
    Malformed(String),
}

fn signed_message(host: &str, sealed: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGN_TAG.len() + 4 + host.len() + 32);
    m.extend_from_slice(SIGN_TAG);
    m.extend_from_slice(&(host.len() as u32).to_be_bytes());
    m.extend_from_slice(host.as_bytes());
    m.extend_from_slice(blake3::hash(sealed).as_bytes());
    m
}

/// The stored bytes of `hb`: sealed under the fleet's current data key, bound to the host's
/// name, and signed by the host.
pub fn seal(
    keys: &Keyring,
    host_key: &SecretKey,
    hb: &Heartbeat,
) -> Result<Vec<u8>, HeartbeatError> {
    let json = serde_json::to_vec(hb).map_err(|e| HeartbeatError::Malformed(e.to_string()))?;
    let sealed = keys
        .seal_record(SEAL_CF, hb.host.as_bytes(), &json)
        .map_err(|e| HeartbeatError::Sealed {
            host: hb.host.clone(),
            why: e.to_string(),
        })?;
    let sig = host_key.sign_message(&signed_message(&hb.host, &sealed));
    let mut out = Vec::with_capacity(HEADER + sealed.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(host_key.public().as_bytes());
    out.extend_from_slice(&sig.to_bytes());
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens host `host`'s heartbeat (stored bytes `bytes`), signed by `key` (its pinned key).
pub fn open(
    keys: &Keyring,
    host: &str,
    key: &PublicKey,
    bytes: &[u8],
) -> Result<Heartbeat, HeartbeatError> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC || bytes[4] != FORMAT {
        return Err(HeartbeatError::Format);
    }
    if bytes[5..37] != *key.as_bytes() {
        return Err(HeartbeatError::BadSignature(host.to_owned()));
    }
    let sig: [u8; 64] = bytes[37..HEADER]
        .try_into()
        .map_err(|_| HeartbeatError::Format)?;
    let sealed = &bytes[HEADER..];
    key.verify_message(&signed_message(host, sealed), &Signature::from_bytes(&sig))
        .map_err(|_| HeartbeatError::BadSignature(host.to_owned()))?;
    let json = keys
        .open_record(SEAL_CF, host.as_bytes(), sealed)
        .map_err(|e| HeartbeatError::Sealed {
            host: host.to_owned(),
            why: e.to_string(),
        })?;
    let hb: Heartbeat =
        serde_json::from_slice(&json).map_err(|e| HeartbeatError::Malformed(e.to_string()))?;
    if hb.host != host {
        return Err(HeartbeatError::Malformed(format!(
            "stored as host {host}'s but names host {}",
            hb.host
        )));
    }
    Ok(hb)
}

/// Whether `hb` (another host's, opened under its pinned key) contradicts what the store
/// showed this host: it applied an entry after `end_seen.0`, as of `hb.at_ms`, and the store
/// said nothing followed `end_seen.0` when this host asked at `end_seen.1`, well after. Entries
/// are never deleted, so one of them was shown an old log; the signed heartbeat says which.
pub fn contradicts(end_seen: (u64, u64), hb: &Heartbeat) -> Option<(u64, String)> {
    let (seen, at) = end_seen;
    (hb.applied > seen && at > hb.at_ms.saturating_add(VIEW_MARGIN_MS)).then(|| {
        (
            hb.applied,
            format!(
                "host {} says (signed, {} s before this host last read the log) that it applied entry {}, but the store showed this host no entry after {seen}: the store shows this host an old view of the log",
                hb.host,
                (at - hb.at_ms) / 1000,
                hb.applied
            ),
        )
    })
}

fn key_of(host: &str) -> String {
    format!("hosts/{host}")
}

impl super::Fleet {
    /// Writes this host's heartbeat, at most every `HEARTBEAT_EVERY` (called by the poller).
    pub fn heartbeat(&self, store: &Store) -> Result<(), FleetError> {
        {
            let mut last = self
                .last_heartbeat
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < HEARTBEAT_EVERY) {
                return Ok(());
            }
            *last = Some(std::time::Instant::now());
        }
        self.write_heartbeat(store)
    }

    /// Writes this host's heartbeat now.
    pub fn write_heartbeat(&self, store: &Store) -> Result<(), FleetError> {
        let st = self.status();
        let hb = Heartbeat {
            host: self.cfg.host.clone(),
            applied: store.applied()?.0,
            at_ms: now_ms(),
            halted: st.halted,
            store_error: st.last_error,
            audit_segments: {
                let sh = self.shipper();
                sh.ready.then(|| sh.next.saturating_sub(1))
            },
        };
        let bytes = store
            .seal_heartbeat(&hb)
            .map_err(|e| FleetError::Config(e.to_string()))?;
        self.remote
            .overwrite(&key_of(&self.cfg.host), Bytes::from(bytes))?;
        self.heartbeat_written
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Whether a heartbeat of this host's has reached the store since it started.
    pub fn heartbeat_written(&self) -> bool {
        self.heartbeat_written
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Host `name`'s heartbeat in the store, opened and checked against its pinned key.
    /// `Ok(None)`: it has none; `Err` if the store failed, `Ok(Some(Err))` if it does not open
    /// (or no host of that name is pinned: not read at all).
    pub(super) fn heartbeat_of(
        &self,
        store: &Store,
        name: &str,
    ) -> Result<Option<Result<Heartbeat, HeartbeatError>>, FleetError> {
        let Some(key) = self.hosts.get(name) else {
            return Ok(Some(Err(HeartbeatError::Unpinned(name.to_owned()))));
        };
        let b = match self.remote.get_capped(&key_of(name), MAX_HEARTBEAT) {
            Ok(b) => b,
            Err(crate::remote::RemoteError::NotFound(_)) => return Ok(None),
            Err(crate::remote::RemoteError::TooLarge(m)) => {
                return Ok(Some(Err(HeartbeatError::Malformed(m))))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Some(open(store.keys(), name, key, &b)))
    }

    /// Every `VIEW_EVERY`: reads a few other hosts' heartbeats (in turn) and compares what
    /// they applied with the end of the log the store last showed this host
    /// (`FleetState::end_seen`). A contradiction is kept in `stale_view` (status, metrics, the
    /// log) until this host applies the entry it names, or that host's heartbeat, read again,
    /// no longer contradicts: the store can hide new entries from one host, and only another
    /// host's signed word shows it. A halted host is not checked (its halt says more).
    pub fn check_view(&self, store: &Store) -> Result<(), FleetError> {
        let end = {
            let mut last = self.last_view.lock().unwrap_or_else(|p| p.into_inner());
            if last.0.is_some_and(|t| t.elapsed() < VIEW_EVERY) {
                return Ok(());
            }
            last.0 = Some(std::time::Instant::now());
            let s = self.state();
            if s.halted.is_some() {
                return Ok(());
            }
            match s.end_seen {
                Some(e) => e,
                None => return Ok(()),
            }
        };
        let others: Vec<&String> = self.hosts.keys().filter(|h| **h != self.cfg.host).collect();
        if others.is_empty() {
            return Ok(());
        }
        let start = {
            let mut last = self.last_view.lock().unwrap_or_else(|p| p.into_inner());
            let s = last.1;
            last.1 = (s + VIEW_SAMPLE) % others.len();
            s % others.len()
        };
        let current = self.state().stale_view.clone();
        for i in 0..VIEW_SAMPLE.min(others.len()) {
            let host = others[(start + i) % others.len()];
            let Some(Ok(hb)) = self.heartbeat_of(store, host)? else {
                continue;
            };
            match contradicts(end, &hb) {
                Some((seq, why)) => {
                    let mut s = self.state();
                    // Not if this host moved on meanwhile, and once per contradiction.
                    if s.applied < seq
                        && s.stale_view
                            .as_ref()
                            .is_none_or(|v| v.host != *host || v.seq != seq)
                    {
                        tracing::error!("fleet: {why}");
                        s.stale_view = Some(super::StaleView {
                            seq,
                            host: host.clone(),
                            why,
                        });
                    }
                    return Ok(());
                }
                None if current.as_ref().is_some_and(|v| v.host == *host) => {
                    let mut s = self.state();
                    if s.stale_view.as_ref().is_some_and(|v| v.host == *host) {
                        tracing::info!(host = %host, "fleet: that host's heartbeat no longer contradicts this host's view of the log");
                        s.stale_view = None;
                    }
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Every host's last heartbeat in the store (at most 1,000 hosts).
    pub fn hosts_seen(
        &self,
        store: &Store,
    ) -> Result<Vec<arca_core::api::FleetHostSeen>, FleetError> {
        let mut out = Vec::new();
        for l in self.remote.list_after("hosts/", "")?.into_iter().take(1000) {
            let Some(name) = l.key.strip_prefix("hosts/") else {
                continue;
            };
            let mut seen = arca_core::api::FleetHostSeen {
                host: name.to_owned(),
                applied_seq: 0,
                heartbeat_age_secs: 0.0,
                halted: None,
                store_error: None,
                unreadable: None,
                audit_segments: None,
            };
            match self.heartbeat_of(store, name) {
                Ok(Some(Ok(hb))) => {
                    seen.applied_seq = hb.applied;
                    seen.heartbeat_age_secs = hb.age_secs();
                    seen.halted = hb.halted;
                    seen.store_error = hb.store_error;
                    seen.audit_segments = hb.audit_segments;
                }
                Ok(Some(Err(e))) => seen.unreadable = Some(e.to_string()),
                Ok(None) => seen.unreadable = Some("gone from the store".into()),
                Err(e) => seen.unreadable = Some(e.to_string()),
            }
            out.push(seen);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretBytes;

    fn keys() -> Keyring {
        Keyring::new(
            vec![(1, SecretBytes::from_array([7; 32]))],
            1,
            SecretBytes::from_array([2; 32]),
        )
    }

    fn hb(host: &str, segments: u64) -> Heartbeat {
        Heartbeat {
            host: host.into(),
            applied: 12,
            at_ms: 1_000,
            halted: None,
            store_error: None,
            audit_segments: Some(segments),
        }
    }

    #[test]
    fn another_hosts_heartbeat_contradicts_an_old_view_only_well_after_it() {
        let mut other = hb("b", 0);
        other.applied = 9;
        other.at_ms = 100_000;
        // This host found nothing after 7 long after b applied 9: an old view.
        let (seq, why) = contradicts((7, 100_000 + VIEW_MARGIN_MS + 1), &other).unwrap();
        assert_eq!(seq, 9);
        assert!(
            why.contains("host b") && why.contains("entry 9") && why.contains("after 7"),
            "{why}"
        );
        // Within the margin (clocks apart, or b just applied it): no evidence.
        assert!(contradicts((7, 100_000 + VIEW_MARGIN_MS), &other).is_none());
        // This host's end was found before b's heartbeat: b may simply be ahead.
        assert!(contradicts((7, 90_000), &other).is_none());
        // This host has seen as far, or further.
        assert!(contradicts((9, 200_000), &other).is_none());
        assert!(contradicts((12, 200_000), &other).is_none());
    }

    #[test]
    fn a_heartbeat_opens_only_as_its_own_hosts_under_its_pinned_key() {
        let k = keys();
        let (b_key, c_key) = (
            SecretKey::generate().unwrap(),
            SecretKey::generate().unwrap(),
        );
        let b = seal(&k, &b_key, &hb("b", 4)).unwrap();
        let got = open(&k, "b", &b_key.public(), &b).unwrap();
        assert_eq!((got.host.as_str(), got.audit_segments), ("b", Some(4)));

        // Host c, holding the fleet's keys, speaks for b: its own key is not b's.
        let forged = seal(&k, &c_key, &hb("b", 2)).unwrap();
        assert!(matches!(
            open(&k, "b", &b_key.public(), &forged),
            Err(HeartbeatError::BadSignature(_))
        ));
        // b's key claimed in the header, c's signature: refused too.
        let mut swapped = forged.clone();
        swapped[5..37].copy_from_slice(b_key.public().as_bytes());
        assert!(matches!(
            open(&k, "b", &b_key.public(), &swapped),
            Err(HeartbeatError::BadSignature(_))
        ));
        // A byte of the sealed body changed.
        let mut edited = b.clone();
        let last = edited.len() - 1;
        edited[last] ^= 1;
        assert!(matches!(
            open(&k, "b", &b_key.public(), &edited),
            Err(HeartbeatError::BadSignature(_))
        ));
        // b's heartbeat put under c's name.
        assert!(open(&k, "c", &b_key.public(), &b).is_err());
        // The unsigned heartbeat of an older arcad: only sealed.
        let unsigned = k.seal_record(SEAL_CF, b"b", b"{}").unwrap();
        assert!(matches!(
            open(&k, "b", &b_key.public(), &unsigned),
            Err(HeartbeatError::Format)
        ));
    }
}
