//! Per-host audit segments: each fleet host's own audit events that are not in the fleet's log
//! (reads, refusals, integrity failures, its cache pins), shipped to the store so that
//! `arca audit report` and `arca audit verify` on any host cover the whole fleet.
//!
//! A host ships its trail in order, as segments `audit/<host>/<index>` (index 1, 2, 3, …,
//! zero-padded) with create-only puts. Segment N covers the host's own trail from the event
//! after segment N-1's end (`from`) to `to`, and holds, as the host's chain placed them, the
//! events of that range that did not come from the log (those every host already has). It is
//! sealed under the fleet's data key bound to host and index, signed by the host's daemon key
//! (the one `[fleet.hosts]` pins, which also signs its log entries) over host, index and the
//! sealed bytes, and names the hash of segment N-1's stored bytes. So a reader holding the
//! fleet's keys and the pinned host keys detects, and names: a segment missing (a gap in the
//! indexes, or fewer than the host's heartbeat says it shipped), edited (signature), written
//! by another host or key (signature), moved or replayed to another index (header, seal,
//! chain), or one whose events do not chain as the host's trail did (hashes).
//! Layout: docs/format.md, "Fleet audit segments".

use std::collections::BTreeMap;

use arca_core::audit::{AuditEvent, EventHash};
use arca_core::id::SegmentHash;
use arca_core::sign::{PublicKey, SecretKey, Signature};

use std::time::Instant;

use bytes::Bytes;

use super::{FleetError, MAX_AUDIT_OBJECTS, SHIP_SEGMENTS_PER_CALL};
use crate::crypt::{CryptError, Keyring};
use crate::remote::RemoteError;
use crate::store::Store;

pub const SEG_MAGIC: &[u8; 4] = b"arcA";
pub const SEG_FORMAT: u8 = 1;
/// magic, format, index (u64 BE), signer public key, signature.
const HEADER: usize = 4 + 1 + 8 + 32 + 64;
const SIGN_TAG: &[u8] = b"arca fleet audit segment v1\0";
/// The seal's context ("column family"): a segment's body never opens as anything else.
const SEAL_CF: &str = "fleet-audit";
/// The `prev` of segment 1.
pub const GENESIS: SegmentHash = SegmentHash([0u8; 32]);
/// Most events in one segment, and most bytes of their JSON: a segment stays small enough to
/// read whole (readers cap a segment at `MAX_SEGMENT_BYTES`).
pub const MAX_SEGMENT_EVENTS: usize = 1000;
pub const MAX_SEGMENT_JSON: usize = 2 << 20;
pub const MAX_SEGMENT_BYTES: u64 = 4 << 20;
/// The detail that marks an event taken from the fleet's log (`store/fleet.rs`).
const FROM_LOG: &str = "fleet_seq";

/// The prefix of host `host`'s segments.
pub fn host_prefix(host: &str) -> String {
    format!("audit/{host}/")
}

/// The object key of host `host`'s segment `index`: zero-padded so key order is index order.
pub fn segment_key(host: &str, index: u64) -> String {
    format!("audit/{host}/{index:020}")
}

/// Host and index an object key names, if it is a segment's key.
pub fn parse_key(key: &str) -> Option<(&str, u64)> {
    let rest = key.strip_prefix("audit/")?;
    let (host, idx) = rest.split_once('/')?;
    (idx.len() == 20 && idx.bytes().all(|b| b.is_ascii_digit()) && !host.is_empty())
        .then(|| idx.parse().ok().map(|i| (host, i)))
        .flatten()
}

/// Whether an event of a host's trail came from the fleet's log (and so is not shipped).
pub fn from_log(e: &AuditEvent) -> bool {
    e.details.contains_key(FROM_LOG)
}

/// The plaintext of a segment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    pub host: String,
    pub index: u64,
    /// The hash of segment `index - 1`'s stored bytes (`GENESIS` for segment 1).
    pub prev: SegmentHash,
    /// The range of the host's own trail (event ids) this segment covers: `from` is one past
    /// the previous segment's `to` (1 for segment 1).
    pub from: u64,
    pub to: u64,
    /// The hash of the host's event `to` (its trail's head when the segment was made).
    pub head: EventHash,
    pub at_ms: u64,
    /// The events of `from..=to` that are not from the log, in id order.
    pub events: Vec<AuditEvent>,
}

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("audit segment {index} of host {host}: {why}")]
    Malformed {
        host: String,
        index: u64,
        why: String,
    },
    #[error("audit segment {index} of host {host}: the signature does not verify against the host's pinned key (edited, or written by someone else)")]
    BadSignature { host: String, index: u64 },
    #[error("audit segment {index} of host {host}: the sealed body does not open under the fleet's keys for this host and index (moved or replayed from elsewhere): {source}")]
    Sealed {
        host: String,
        index: u64,
        source: CryptError,
    },
}

/// The hash that segment `index + 1` must name as its `prev`.
pub fn segment_hash(bytes: &[u8]) -> SegmentHash {
    let mut h = blake3::Hasher::new_derive_key("arca 2026 fleet audit segment hash v1");
    h.update(bytes);
    SegmentHash(*h.finalize().as_bytes())
}

/// What the seal is bound to: the host's name, a zero byte, the index (u64 BE).
fn seal_context(host: &str, index: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(host.len() + 9);
    r.extend_from_slice(host.as_bytes());
    r.push(0);
    r.extend_from_slice(&index.to_be_bytes());
    r
}

fn signed_message(host: &str, index: u64, sealed: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGN_TAG.len() + 4 + host.len() + 8 + 32);
    m.extend_from_slice(SIGN_TAG);
    m.extend_from_slice(&(host.len() as u32).to_be_bytes());
    m.extend_from_slice(host.as_bytes());
    m.extend_from_slice(&index.to_be_bytes());
    m.extend_from_slice(blake3::hash(sealed).as_bytes());
    m
}

/// The stored bytes of a segment: sealed under the fleet's current data key bound to its host
/// and index, and signed by this host.
pub fn seal_segment(
    keys: &Keyring,
    host_key: &SecretKey,
    s: &Segment,
) -> Result<Vec<u8>, SegmentError> {
    let json = serde_json::to_vec(s).map_err(|err| SegmentError::Malformed {
        host: s.host.clone(),
        index: s.index,
        why: err.to_string(),
    })?;
    let sealed = keys
        .seal_record(SEAL_CF, &seal_context(&s.host, s.index), &json)
        .map_err(|source| SegmentError::Sealed {
            host: s.host.clone(),
            index: s.index,
            source,
        })?;
    let sig = host_key.sign_message(&signed_message(&s.host, s.index, &sealed));
    let mut out = Vec::with_capacity(HEADER + sealed.len());
    out.extend_from_slice(SEG_MAGIC);
    out.push(SEG_FORMAT);
    out.extend_from_slice(&s.index.to_be_bytes());
    out.extend_from_slice(host_key.public().as_bytes());
    out.extend_from_slice(&sig.to_bytes());
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens host `host`'s segment `index` (stored bytes `bytes`), signed by `key` (the host's
/// pinned key), and checks everything but its place in the host's chain of segments (`prev`
/// and `from`, which `check_host` compares with the segment before it): its events must be
/// the host's own (none from the log), in id order within `from..=to`, each hashing to what it
/// says and linking to the one before it where the ids are adjacent, the last one `head` if
/// it is event `to`.
pub fn open_segment(
    keys: &Keyring,
    host: &str,
    key: &PublicKey,
    index: u64,
    bytes: &[u8],
) -> Result<Segment, SegmentError> {
    let bad = |why: String| SegmentError::Malformed {
        host: host.to_owned(),
        index,
        why,
    };
    if bytes.len() < HEADER || &bytes[..4] != SEG_MAGIC || bytes[4] != SEG_FORMAT {
        return Err(bad("not a format-1 audit segment".into()));
    }
    let stored = u64::from_be_bytes(bytes[5..13].try_into().map_err(|_| bad("index".into()))?);
    if stored != index {
        return Err(bad(format!(
            "stored as segment {index} but says it is segment {stored} (moved or replayed)"
        )));
    }
    if bytes[13..45] != *key.as_bytes() {
        return Err(SegmentError::BadSignature {
            host: host.to_owned(),
            index,
        });
    }
    let sig: [u8; 64] = bytes[45..109]
        .try_into()
        .map_err(|_| bad("signature".into()))?;
    let sealed = &bytes[HEADER..];
    key.verify_message(
        &signed_message(host, index, sealed),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| SegmentError::BadSignature {
        host: host.to_owned(),
        index,
    })?;
    let json = keys
        .open_record(SEAL_CF, &seal_context(host, index), sealed)
        .map_err(|source| SegmentError::Sealed {
            host: host.to_owned(),
            index,
            source,
        })?;
    let s: Segment = serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))?;
    if s.host != host || s.index != index {
        return Err(bad("its body names another host or index".into()));
    }
    if s.from == 0 || s.from > s.to {
        return Err(bad(format!("it covers events {}..={}", s.from, s.to)));
    }
    if s.events.is_empty() || s.events.len() > MAX_SEGMENT_EVENTS {
        return Err(bad(format!("it holds {} events", s.events.len())));
    }
    let mut before: Option<&AuditEvent> = None;
    for e in &s.events {
        if e.seq < s.from || e.seq > s.to {
            return Err(bad(format!(
                "event {} is outside the range {}..={} it covers",
                e.seq, s.from, s.to
            )));
        }
        if from_log(e) {
            return Err(bad(format!("event {} is from the fleet's log", e.seq)));
        }
        if e.compute_hash() != e.hash {
            return Err(bad(format!(
                "event {} does not hash to what it says",
                e.seq
            )));
        }
        if let Some(b) = before {
            if e.seq <= b.seq {
                return Err(bad(format!("event {} comes after event {}", e.seq, b.seq)));
            }
            if e.seq == b.seq + 1 && e.prev != b.hash {
                return Err(bad(format!(
                    "event {} does not link to event {}",
                    e.seq, b.seq
                )));
            }
        }
        before = Some(e);
    }
    if let Some(last) = before {
        if last.seq == s.to && last.hash != s.head {
            return Err(bad(format!(
                "its last event {} is not the head it names",
                last.seq
            )));
        }
    }
    Ok(s)
}

/// What checking one host's segments found.
#[derive(Debug, Clone, Default)]
pub struct HostTrail {
    pub host: String,
    /// Segments that checked, from segment 1 on.
    pub segments: u64,
    /// The last checked segment's `to`, and its stored bytes' hash.
    pub through: u64,
    pub last_hash: Option<SegmentHash>,
    /// Events the checked segments hold.
    pub count: u64,
    /// Those of them the caller kept.
    pub events: Vec<AuditEvent>,
    /// The first thing wrong, in words that name the host and the segment.
    pub fault: Option<String>,
    /// The age of the host's heartbeat whose count of shipped segments was checked (`None`:
    /// no heartbeat was used): a deletion of segments newer than that claim is not seen.
    pub heartbeat_age_secs: Option<u64>,
}

/// One stored object under a host's prefix, as read: its key, and its bytes or why they could
/// not be read.
pub struct Stored {
    pub key: String,
    pub bytes: Result<Vec<u8>, String>,
}

/// Checks host `host`'s stored segments, in key order, against its pinned key, from segment 1:
/// stops at the first fault (and reads no further object). `claimed`: how many segments the host's heartbeat says it shipped
/// (fewer in the store: the newest were deleted).
pub fn check_host(
    keys: &Keyring,
    host: &str,
    key: &PublicKey,
    objects: impl IntoIterator<Item = Stored>,
    claimed: Option<u64>,
    keep: &dyn Fn(&AuditEvent) -> bool,
) -> HostTrail {
    let mut t = HostTrail {
        host: host.to_owned(),
        ..HostTrail::default()
    };
    let mut prev = GENESIS;
    let mut to = 0u64;
    for o in objects {
        if t.fault.is_some() {
            break;
        }
        let expected = t.segments + 1;
        let Some((h, index)) = parse_key(&o.key) else {
            t.fault = Some(format!(
                "host {host}: {} is not an audit segment arca wrote",
                o.key
            ));
            break;
        };
        if h != host {
            t.fault = Some(format!("host {host}: {} is listed under it", o.key));
            break;
        }
        if index != expected {
            t.fault = Some(format!(
                "host {host}: audit segment {expected} is missing from the store (the next one there is {index})"
            ));
            break;
        }
        let bytes = match o.bytes {
            Ok(b) => b,
            Err(why) => {
                t.fault = Some(format!(
                    "host {host}: audit segment {index} could not be read: {why}"
                ));
                break;
            }
        };
        let s = match open_segment(keys, host, key, index, &bytes) {
            Ok(s) => s,
            Err(e) => {
                t.fault = Some(e.to_string());
                break;
            }
        };
        if s.prev != prev {
            t.fault = Some(format!(
                "host {host}: audit segment {index} does not chain to segment {} (replayed, or one before it replaced)",
                index - 1
            ));
            break;
        }
        if s.from != to + 1 {
            t.fault = Some(format!(
                "host {host}: audit segment {index} covers its trail from event {}, but segment {} ended at event {to}",
                s.from,
                index - 1
            ));
            break;
        }
        prev = segment_hash(&bytes);
        to = s.to;
        t.segments = index;
        t.through = to;
        t.last_hash = Some(prev);
        t.count += s.events.len() as u64;
        t.events.extend(s.events.into_iter().filter(|e| keep(e)));
    }
    if t.fault.is_none() {
        if let Some(n) = claimed.filter(|n| *n > t.segments) {
            t.fault = Some(format!(
                "host {host}: audit segment {} is missing from the store (the host's heartbeat says it shipped {n})",
                t.segments + 1
            ));
        }
    }
    t
}

/// Groups listed keys under `audit/` by the host directory they sit in.
pub fn by_host(keys: impl IntoIterator<Item = String>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for k in keys {
        let host = k
            .strip_prefix("audit/")
            .and_then(|r| r.split_once('/'))
            .map(|(h, _)| h.to_owned())
            .unwrap_or_default();
        out.entry(host).or_default().push(k);
    }
    out
}

/// Keeps the events a caller wants from a host's checked segments, and counts all of them.
pub type Keep<'a> = &'a dyn Fn(&str, &AuditEvent) -> bool;

impl super::Fleet {
    pub(super) fn shipper(&self) -> std::sync::MutexGuard<'_, super::Shipper> {
        self.ship.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where shipping stands, for `status`.
    pub fn ship_status(&self, store: &Store) -> arca_core::api::AuditShipping {
        let sh = self.shipper();
        let mut st = sh.status.clone();
        st.pending = store
            .audit_head_count()
            .unwrap_or(0)
            .saturating_sub(sh.covered_to);
        st
    }

    /// Ships this host's audit events that are not in the log and not yet in the store, as
    /// segments (at most every `audit_ship`, unless `now`: clean shutdown). A store out of
    /// reach costs nothing but time: the next call starts where the last acknowledged
    /// segment ended, so no event is skipped.
    pub fn ship_audit(&self, store: &Store, now: bool) -> Result<(), FleetError> {
        let mut sh = self.shipper();
        if !now && sh.last.is_some_and(|t| t.elapsed() < self.cfg.audit_ship) {
            return Ok(());
        }
        sh.last = Some(Instant::now());
        let r = self.ship_locked(store, &mut sh, None);
        sh.status.error = r.as_ref().err().map(|e| e.to_string());
        r
    }

    /// `ship_audit` at a clean stop: the last events have no later round to go in, so a
    /// failure (a store just restarted answers 503 for a moment) is tried again, and segments
    /// are started, until one store timeout (at most 10 s) has passed, before they are left
    /// for the next start; then a last heartbeat names the segments shipped, so a deletion of
    /// them is seen as one of the newest (systemd allows 60 s for the whole stop).
    pub fn ship_audit_at_shutdown(&self, store: &Store) -> Result<(), FleetError> {
        if !self.heartbeat_written() {
            // As in the shipping thread: no segment before a heartbeat. The next start ships.
            return Ok(());
        }
        let until = Instant::now()
            + self
                .remote
                .timeout()
                .min(std::time::Duration::from_secs(10));
        loop {
            let shipped = {
                let mut sh = self.shipper();
                sh.last = Some(Instant::now());
                let r = self.ship_locked(store, &mut sh, Some(until));
                sh.status.error = r.as_ref().err().map(|e| e.to_string());
                r
            };
            match shipped {
                Ok(()) => return self.write_heartbeat(store),
                Err(e @ FleetError::AuditShipping(_)) => return Err(e),
                Err(e) if Instant::now() >= until => return Err(e),
                Err(e) => {
                    tracing::info!(
                        "fleet: shipping the audit trail at shutdown: {e}; trying again"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            }
        }
    }

    /// Ships up to `SHIP_SEGMENTS_PER_CALL` segments, starting none after `until`.
    fn ship_locked(
        &self,
        store: &Store,
        sh: &mut super::Shipper,
        until: Option<Instant>,
    ) -> Result<(), FleetError> {
        if let Some(h) = &sh.status.halted {
            return Err(FleetError::AuditShipping(h.clone()));
        }
        if !sh.ready {
            self.ship_resume(store, sh)?;
        }
        let host = self.cfg.host.clone();
        for _ in 0..SHIP_SEGMENTS_PER_CALL {
            if until.is_some_and(|u| Instant::now() >= u) {
                return Ok(());
            }
            let head = store.audit_head_count()?;
            if sh.scanned_to >= head {
                return Ok(());
            }
            // Gather the next segment's events: the host's own, in order, up to the bounds.
            let mut events = Vec::new();
            let mut json = 0usize;
            let mut scanned = sh.scanned_to;
            let mut head_hash = None;
            'scan: while scanned < head {
                let batch = store.audit_events_between(scanned + 1, head, 4096)?;
                let Some(last) = batch.last().map(|e| e.seq) else {
                    break;
                };
                for e in batch {
                    if !from_log(&e) {
                        let n = serde_json::to_vec(&e).map(|v| v.len()).unwrap_or(0);
                        if !events.is_empty()
                            && (events.len() >= MAX_SEGMENT_EVENTS || json + n > MAX_SEGMENT_JSON)
                        {
                            break 'scan;
                        }
                        json += n;
                        events.push(e.clone());
                    }
                    scanned = e.seq;
                    head_hash = Some(e.hash);
                }
                if last >= head {
                    break;
                }
            }
            let Some(head_hash) = head_hash else {
                return Ok(());
            };
            if events.is_empty() {
                // Only events from the log since the last segment: nothing to ship yet; the
                // next segment will cover this range too.
                sh.scanned_to = scanned;
                return Ok(());
            }
            let seg = Segment {
                host: host.clone(),
                index: sh.next,
                prev: sh.prev,
                from: sh.covered_to + 1,
                to: scanned,
                head: head_hash,
                at_ms: super::now_ms(),
                events,
            };
            let bytes = store
                .seal_audit_segment(&seg)
                .map_err(|e| FleetError::Config(e.to_string()))?;
            let hash = segment_hash(&bytes);
            match self
                .remote
                .create_retained(&segment_key(&host, seg.index), Bytes::from(bytes))
            {
                Ok(_) => {
                    tracing::debug!(
                        index = seg.index,
                        from = seg.from,
                        to = seg.to,
                        events = seg.events.len(),
                        "fleet: shipped an audit segment"
                    );
                    sh.next += 1;
                    sh.prev = hash;
                    sh.covered_to = seg.to;
                    sh.scanned_to = seg.to;
                    sh.status.segments = seg.index;
                    sh.status.shipped_through = seg.to;
                    sh.status.last_shipped_ms = super::now_ms();
                }
                Err(RemoteError::Exists(_)) => {
                    // Taken: a create of ours that timed out but landed, or someone else's
                    // object. Read where the segments end again (which halts shipping if the
                    // newest is not this host's) and go on from there.
                    tracing::warn!(
                        index = seg.index,
                        "fleet: this host's next audit segment already exists in the store; reading where its segments end again"
                    );
                    sh.ready = false;
                    self.ship_resume(store, sh)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reads where this host's segments end in the store: its newest segment, which must open
    /// under its own key; else it halts shipping (naming the segment) rather than write after
    /// something it did not write.
    fn ship_resume(&self, store: &Store, sh: &mut super::Shipper) -> Result<(), FleetError> {
        let host = &self.cfg.host;
        let own = store.host_public_key();
        let listed = self
            .remote
            .list_all(&host_prefix(host), MAX_AUDIT_OBJECTS)?;
        let newest = listed
            .iter()
            .filter_map(|l| parse_key(&l.key).filter(|(h, _)| h == host).map(|(_, i)| i))
            .max();
        let Some(index) = newest else {
            sh.next = 1;
            sh.prev = GENESIS;
            sh.covered_to = 0;
            sh.scanned_to = 0;
            sh.ready = true;
            return Ok(());
        };
        let bytes = self
            .remote
            .get_capped(&segment_key(host, index), MAX_SEGMENT_BYTES);
        let opened = match bytes {
            Ok(b) => open_segment(store.keys(), host, &own, index, &b)
                .map(|s| (s, segment_hash(&b)))
                .map_err(|e| e.to_string()),
            Err(RemoteError::TooLarge(m)) => Err(m),
            Err(RemoteError::NotFound(k)) => Err(format!("{k} was listed but is gone")),
            Err(e) => return Err(e.into()),
        };
        match opened {
            Ok((s, hash)) => {
                sh.next = index + 1;
                sh.prev = hash;
                sh.covered_to = s.to;
                sh.scanned_to = s.to;
                sh.ready = true;
                sh.status.segments = index;
                sh.status.shipped_through = s.to;
                Ok(())
            }
            Err(why) => {
                let msg = format!(
                    "this host's newest audit segment in the store ({index}) does not verify: {why}; its events stay in its own trail"
                );
                tracing::error!("fleet: {msg}");
                sh.status.halted = Some(msg.clone());
                Err(FleetError::AuditShipping(msg))
            }
        }
    }

    /// Checks every pinned host's segments in the store (and names segments of hosts no one
    /// pins), keeping the events `keep` wants. A store out of reach is an error, not a fault.
    pub fn fleet_trails(
        &self,
        store: &Store,
        keep: Keep<'_>,
    ) -> Result<Vec<HostTrail>, FleetError> {
        // Heartbeats first, then the listing: a host that ships a segment and rewrites its
        // heartbeat between the two then shows more segments than its heartbeat names, never
        // fewer (which would read as its newest segments deleted).
        let mut heartbeats = BTreeMap::new();
        for host in self.hosts.keys() {
            heartbeats.insert(host.clone(), self.heartbeat_of(store, host)?);
        }
        let listed = self.remote.list_all("audit/", MAX_AUDIT_OBJECTS)?;
        let groups = by_host(listed.into_iter().map(|l| l.key));
        let mut out = Vec::new();
        for (host, key) in &self.hosts {
            let keys = groups.get(host).cloned().unwrap_or_default();
            let unreachable = std::cell::RefCell::new(None);
            let objects = keys.into_iter().map(|k| {
                let bytes = match self.remote.get_capped(&k, MAX_SEGMENT_BYTES) {
                    Ok(b) => Ok(b.to_vec()),
                    Err(e @ RemoteError::Unreachable(_)) => {
                        let text = e.to_string();
                        *unreachable.borrow_mut() = Some(e);
                        Err(text)
                    }
                    Err(e) => Err(e.to_string()),
                };
                Stored { key: k, bytes }
            });
            // The host's own signed claim of how many segments it shipped; one that does not
            // open (another host speaking for it, an edit, an old unsigned one put back) is a
            // fault, and so is none at all from a host that shipped segments (deleted, which
            // would hide the deletion of its newest segments).
            let heartbeat = heartbeats.remove(host).flatten();
            let (claimed, age) = match &heartbeat {
                Some(Ok(hb)) => (hb.audit_segments, Some(hb.age_secs() as u64)),
                _ => (None, None),
            };
            let mut t = check_host(store.keys(), host, key, objects, claimed, &|e| {
                keep(host, e)
            });
            if let Some(e) = unreachable.into_inner() {
                return Err(e.into());
            }
            t.heartbeat_age_secs = age;
            if t.fault.is_none() {
                t.fault = match heartbeat {
                    Some(Err(e)) => Some(format!(
                        "host {host}: its heartbeat in the store is not taken: {e}"
                    )),
                    None if t.segments > 0 => Some(format!(
                        "host {host}: it shipped audit segments but has no heartbeat in the store (deleted?), so a deletion of its newest segments cannot be seen"
                    )),
                    _ => None,
                };
            }
            out.push(t);
        }
        for host in groups.keys().filter(|h| !self.hosts.contains_key(*h)) {
            out.push(HostTrail {
                host: host.clone(),
                fault: Some(format!(
                    "audit/{host}/ holds objects, but no `[fleet.hosts]` entry pins a host of that name"
                )),
                ..HostTrail::default()
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretBytes;
    use arca_core::audit::{Draft, EventKind};
    use bytes::Bytes;

    fn keys(dek: u8) -> Keyring {
        Keyring::new(
            vec![(1, SecretBytes::from_array([dek; 32]))],
            1,
            SecretBytes::from_array([2; 32]),
        )
    }

    /// A host trail of `n` events, every third from the log; its head hash after each.
    fn trail(n: u64) -> Vec<AuditEvent> {
        let mut out: Vec<AuditEvent> = Vec::new();
        let mut prev = arca_core::audit::GENESIS;
        for seq in 1..=n {
            let mut d = Draft::new(EventKind::Access, "bob").detail("file", format!("f{seq}"));
            if seq % 3 == 0 {
                d = d.detail("fleet_seq", seq.to_string());
            }
            let e = AuditEvent::chain(d, seq, seq * 10, prev);
            prev = e.hash;
            out.push(e);
        }
        out
    }

    /// Ships `trail` in segments covering `cuts` (each segment's `to`); returns the objects.
    fn ship(
        k: &Keyring,
        sk: &SecretKey,
        host: &str,
        t: &[AuditEvent],
        cuts: &[u64],
    ) -> Vec<Stored> {
        let mut out = Vec::new();
        let mut prev = GENESIS;
        let mut from = 1;
        for (i, to) in cuts.iter().enumerate() {
            let s = Segment {
                host: host.into(),
                index: i as u64 + 1,
                prev,
                from,
                to: *to,
                head: t[*to as usize - 1].hash,
                at_ms: 1,
                events: t[from as usize - 1..*to as usize]
                    .iter()
                    .filter(|e| !from_log(e))
                    .cloned()
                    .collect(),
            };
            let b = seal_segment(k, sk, &s).unwrap();
            prev = segment_hash(&b);
            from = to + 1;
            out.push(Stored {
                key: segment_key(host, s.index),
                bytes: Ok(b),
            });
        }
        out
    }

    fn clone(v: &[Stored]) -> Vec<Stored> {
        v.iter()
            .map(|s| Stored {
                key: s.key.clone(),
                bytes: s.bytes.clone(),
            })
            .collect()
    }

    #[test]
    fn segments_check_and_every_tampering_is_named() {
        let k = keys(1);
        let b = SecretKey::from_seed(&[11; 32]);
        let c = SecretKey::from_seed(&[12; 32]);
        let t = trail(20);
        let good = ship(&k, &b, "b", &t, &[5, 11, 20]);
        let r = check_host(&k, "b", &b.public(), clone(&good), Some(3), &|_| true);
        assert_eq!(r.fault, None);
        assert_eq!((r.segments, r.through), (3, 20));
        assert_eq!(r.events.len(), 20 - 6);
        assert!(r.events.iter().all(|e| !from_log(e)));

        let fault = |objs: Vec<Stored>, claimed: Option<u64>| {
            check_host(&k, "b", &b.public(), objs, claimed, &|_| true)
                .fault
                .expect("a fault")
        };
        // Deleted in the middle: a gap.
        let mut gap = clone(&good);
        gap.remove(1);
        let f = fault(gap, None);
        assert!(f.contains("segment 2 is missing"), "{f}");
        // The newest deleted: the heartbeat's count names it.
        let mut tail = clone(&good);
        tail.pop();
        let f = fault(tail, Some(3));
        assert!(
            f.contains("segment 3 is missing") && f.contains("heartbeat"),
            "{f}"
        );
        // Edited: one byte of the sealed body.
        let mut edited = clone(&good);
        if let Ok(bytes) = &mut edited[1].bytes {
            let n = bytes.len();
            bytes[n - 30] ^= 1;
        }
        let f = fault(edited, None);
        assert!(f.contains("segment 2") && f.contains("signature"), "{f}");
        // Replayed: segment 1's bytes stored as segment 2.
        let mut replayed = clone(&good);
        replayed[1].bytes = replayed[0].bytes.clone();
        let f = fault(replayed, None);
        assert!(f.contains("segment 2") && f.contains("replayed"), "{f}");
        // Replayed with the header's index rewritten: the signature covers it.
        let mut moved = clone(&good);
        if let Ok(bytes) = &mut moved[1].bytes {
            *bytes = good[0].bytes.as_ref().unwrap().clone();
            bytes[5..13].copy_from_slice(&2u64.to_be_bytes());
        }
        assert!(fault(moved, None).contains("signature"));
        // Written by another host's key (host c posing as b), even sealed right.
        let forged = ship(&k, &c, "b", &t, &[5, 11, 20]);
        assert!(fault(forged, None).contains("signature"));
        // Segments b itself made on another run (another cut of the same trail): they do not
        // chain to the segments before them.
        let other = ship(&k, &b, "b", &t, &[5, 12, 20]);
        let mut spliced = clone(&good);
        spliced[1] = clone(&other).swap_remove(1);
        let f = fault(spliced, None);
        assert!(f.contains("segment 2 does not chain"), "{f}");
        // Sealed under another fleet's keys.
        let f = check_host(&keys(9), "b", &b.public(), clone(&good), None, &|_| true)
            .fault
            .unwrap();
        assert!(f.contains("does not open"), "{f}");
        // Filed under another host's prefix.
        let mut misfiled = clone(&good);
        misfiled[0].key = segment_key("c", 1);
        assert!(fault(misfiled, None).contains("listed under it"));
        // A junk object among them.
        let mut junk = clone(&good);
        junk.insert(
            0,
            Stored {
                key: "audit/b/x".into(),
                bytes: Ok(vec![1]),
            },
        );
        assert!(fault(junk, None).contains("not an audit segment"));
    }

    #[test]
    fn events_inside_a_segment_must_be_the_hosts_own_chain() {
        let k = keys(1);
        let b = SecretKey::from_seed(&[11; 32]);
        let t = trail(6);
        let mk = |events: Vec<AuditEvent>, to: u64| Segment {
            host: "b".into(),
            index: 1,
            prev: GENESIS,
            from: 1,
            to,
            head: t[to as usize - 1].hash,
            at_ms: 1,
            events,
        };
        let open =
            |s: &Segment| open_segment(&k, "b", &b.public(), 1, &seal_segment(&k, &b, s).unwrap());
        let own: Vec<AuditEvent> = t.iter().filter(|e| !from_log(e)).cloned().collect();
        // Event 6 is from the log: the segment covers it without holding it.
        assert!(open(&mk(own.clone(), 6)).is_ok());
        let s = mk(own[..2].to_vec(), 2);
        assert!(open(&s).is_ok());
        // An event edited (its hash no longer matches).
        let mut e = own[..2].to_vec();
        e[1].user = "mallory".into();
        assert!(open(&mk(e, 2))
            .unwrap_err()
            .to_string()
            .contains("does not hash"));
        // Re-hashed after the edit: the link to the event before holds, the head does not.
        let mut e = own[..2].to_vec();
        e[1].user = "mallory".into();
        e[1].hash = e[1].compute_hash();
        assert!(open(&mk(e, 2)).unwrap_err().to_string().contains("head"));
        // A log event slipped in.
        let f = open(&mk(t[..3].to_vec(), 3)).unwrap_err().to_string();
        assert!(f.contains("from the fleet's log"), "{f}");
        // Out of order.
        let mut e = own[..2].to_vec();
        e.swap(0, 1);
        assert!(open(&mk(e, 2)).is_err());
    }

    fn fleet_and_store(dir: &std::path::Path) -> (Store, super::super::Fleet) {
        use std::time::Duration;
        super::super::test_fleet(dir, Duration::from_secs(1), Duration::from_secs(3600))
    }

    fn reads(n: usize, tag: &str) -> Vec<Draft> {
        (0..n)
            .map(|i| Draft::new(EventKind::Access, "bob").detail("file", format!("{tag}{i}")))
            .collect()
    }

    #[test]
    fn a_host_ships_its_own_events_in_order_and_resumes_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (store, fleet) = fleet_and_store(dir.path());
        store.append_audit(reads(3, "x")).unwrap();
        // An event from the log is not shipped, but the segment covers it.
        store
            .append_audit(vec![
                Draft::new(EventKind::Promotion, "al").detail("fleet_seq", "1")
            ])
            .unwrap();
        store.append_audit(reads(2, "y")).unwrap();
        fleet.ship_audit(&store, true).unwrap();
        let head = store.audit_head_count().unwrap();
        let st = fleet.ship_status(&store);
        assert_eq!((st.segments, st.shipped_through, st.pending), (1, head, 0));
        // Within the interval, nothing is shipped unless asked.
        store
            .append_audit(reads(MAX_SEGMENT_EVENTS + 5, "z"))
            .unwrap();
        fleet.ship_audit(&store, false).unwrap();
        assert_eq!(fleet.ship_status(&store).segments, 1);
        fleet.ship_audit(&store, true).unwrap();
        let st = fleet.ship_status(&store);
        assert_eq!(st.segments, 3, "over the bound: two segments");
        assert_eq!(st.shipped_through, store.audit_head_count().unwrap());

        // Segments but no heartbeat (deleted: it would hide a deletion of the newest
        // segments): a fault. With the host's signed heartbeat, none.
        let all = fleet.fleet_trails(&store, &|_, _| true).unwrap();
        let a = all.iter().find(|t| t.host == "a").unwrap();
        assert!(
            a.fault
                .as_deref()
                .is_some_and(|f| f.contains("no heartbeat")),
            "{:?}",
            a.fault
        );
        fleet.heartbeat(&store).unwrap();
        let all = fleet.fleet_trails(&store, &|_, _| true).unwrap();
        let a = all.iter().find(|t| t.host == "a").unwrap();
        assert_eq!(a.fault, None);
        assert!(a.heartbeat_age_secs.is_some_and(|s| s < 600), "{a:?}");
        assert_eq!(a.segments, 3);
        let own = store.audit_events_between(1, u64::MAX, usize::MAX).unwrap();
        let want: Vec<_> = own.into_iter().filter(|e| !from_log(e)).collect();
        assert_eq!(
            a.events, want,
            "every own event once, in order, none from the log"
        );

        // A new Fleet on the same store and bucket (a restart) goes on after segment 3.
        store.append_audit(reads(1, "w")).unwrap();
        fleet.shipper().ready = false;
        fleet.ship_audit(&store, true).unwrap();
        assert_eq!(fleet.ship_status(&store).segments, 4);
        let a = fleet.fleet_trails(&store, &|_, _| false).unwrap();
        assert_eq!(a[0].fault, None);
        assert_eq!(a[0].count as usize, want.len() + 1);

        // A segment planted at this host's next index: shipping halts, naming it.
        fleet
            .remote
            .create(&segment_key("a", 5), Bytes::from_static(b"junk"))
            .unwrap();
        store.append_audit(reads(1, "v")).unwrap();
        let e = fleet.ship_audit(&store, true).unwrap_err().to_string();
        assert!(e.contains("(5) does not verify"), "{e}");
        assert!(fleet.ship_status(&store).halted.is_some());
        let f = fleet.fleet_trails(&store, &|_, _| false).unwrap()[0]
            .fault
            .clone()
            .unwrap();
        assert!(f.contains("segment 5"), "{f}");
    }

    #[test]
    fn keys_parse_and_sort_in_index_order() {
        assert!(segment_key("b", 9) < segment_key("b", 10));
        assert_eq!(parse_key(&segment_key("b-1", 42)), Some(("b-1", 42)));
        assert_eq!(parse_key("audit/b/12"), None);
        assert_eq!(parse_key("log/00000000000000000001"), None);
        let g = by_host([
            "audit/a/1".to_string(),
            "audit/b/2".into(),
            "audit/a/3".into(),
        ]);
        assert_eq!(g["a"].len(), 2);
    }
}
