//! The audit trail's vocabulary: events, their canonical encoding and hash chain, and the signed
//! checkpoints over the chain head. The daemon appends and stores events; anyone holding the
//! decrypted events and the daemon's public key can check them with `check_chain`.
//! Byte formats: docs/format.md, "Audit trail".

use std::collections::BTreeMap;

pub use crate::id::EventHash;
use crate::name::{ModelName, ModelVersion};
use crate::sign::{PublicKey, Signature};

/// The hash that the first event links to.
pub const GENESIS: EventHash = EventHash([0u8; 32]);

/// What happened.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A version was pushed and committed.
    Registration,
    /// A file was read: every `get`, and the first mount open per uid, file and daemon run.
    Access,
    Approval,
    /// A status change along the lifecycle (including the deprecation it causes).
    Promotion,
    Rollback,
    Deletion,
    RoleChange,
    PolicyChange,
    KeyChange,
    /// An operation refused for permission, policy or four eyes.
    Refusal,
    /// A chunk or record failed verification (verify, get or the mount).
    IntegrityViolation,
    GcRemoval,
    /// The store itself: its creation (event 1, naming the audit public key) and format
    /// upgrades.
    Store,
    /// A fleet host's pin of a version in its chunk cache set or removed (host-local: never in
    /// the fleet's log).
    CachePin,
}

impl EventKind {
    pub const ALL: [EventKind; 14] = [
        EventKind::Registration,
        EventKind::Access,
        EventKind::Approval,
        EventKind::Promotion,
        EventKind::Rollback,
        EventKind::Deletion,
        EventKind::RoleChange,
        EventKind::PolicyChange,
        EventKind::KeyChange,
        EventKind::Refusal,
        EventKind::IntegrityViolation,
        EventKind::GcRemoval,
        EventKind::Store,
        EventKind::CachePin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registration => "registration",
            EventKind::Access => "access",
            EventKind::Approval => "approval",
            EventKind::Promotion => "promotion",
            EventKind::Rollback => "rollback",
            EventKind::Deletion => "deletion",
            EventKind::RoleChange => "role_change",
            EventKind::PolicyChange => "policy_change",
            EventKind::KeyChange => "key_change",
            EventKind::Refusal => "refusal",
            EventKind::IntegrityViolation => "integrity_violation",
            EventKind::GcRemoval => "gc_removal",
            EventKind::Store => "store",
            EventKind::CachePin => "cache_pin",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown event type {s:?}: expected one of {}",
                    all.join(", ")
                )
            })
    }
}

/// An event before the chain places it: what the registry knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub kind: EventKind,
    pub model: Option<ModelName>,
    pub version: Option<ModelVersion>,
    pub user: String,
    pub uid: Option<u32>,
    pub pid: Option<i32>,
    pub details: BTreeMap<String, String>,
    /// The sealed records this event's write put or deleted (filled in by the store).
    pub records: Vec<RecordWrite>,
}

/// One sealed record written (or deleted) by the change an event records: the record's column
/// family and row key (a keyed hash, so it names nothing in the clear). Each such record carries
/// the seq and hash of the newest event that wrote its row, inside its seal; a record that does
/// not match the newest event for its row in the chain is stale (replayed) and is not used.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RecordWrite {
    pub cf: String,
    pub row: crate::id::RowKey,
    /// The row was deleted (no record may stand there after this event).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl Draft {
    pub fn new(kind: EventKind, user: impl Into<String>) -> Self {
        Self {
            kind,
            model: None,
            version: None,
            user: user.into(),
            uid: None,
            pid: None,
            details: BTreeMap::new(),
            records: Vec::new(),
        }
    }

    pub fn model(mut self, m: &ModelName) -> Self {
        self.model = Some(m.clone());
        self
    }

    pub fn version(mut self, v: &ModelVersion) -> Self {
        self.version = Some(v.clone());
        self
    }

    pub fn peer(mut self, uid: u32, pid: Option<i32>) -> Self {
        self.uid = Some(uid);
        self.pid = pid;
        self
    }

    pub fn detail(mut self, k: &str, v: impl Into<String>) -> Self {
        self.details.insert(k.into(), v.into());
        self
    }
}

/// One event of the trail, placed in the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// The event id: 1, 2, 3, … without gaps.
    pub seq: u64,
    /// Milliseconds since the Unix epoch, never decreasing along the chain.
    pub at_ms: u64,
    pub kind: EventKind,
    pub model: Option<ModelName>,
    pub version: Option<ModelVersion>,
    /// The account name of the actor (`arcad` for the daemon itself).
    pub user: String,
    pub uid: Option<u32>,
    pub pid: Option<i32>,
    pub details: BTreeMap<String, String>,
    /// The sealed records the change wrote (store format 2; empty for events that change no
    /// record, and for every event written before format 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<RecordWrite>,
    pub prev: EventHash,
    pub hash: EventHash,
}

const EVENT_TAG: &[u8] = b"arca.audit.event.v1\0";
const CHECKPOINT_TAG: &[u8] = b"arca.audit.checkpoint.v1\0";
const HEAD_TAG: &[u8] = b"arca.audit.head.v1\0";

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn put_opt_u32(out: &mut Vec<u8>, v: Option<u32>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

impl AuditEvent {
    /// Places a draft after `prev` (the previous event's seq, time and hash).
    pub fn chain(d: Draft, seq: u64, at_ms: u64, prev: EventHash) -> Self {
        let mut e = AuditEvent {
            seq,
            at_ms,
            kind: d.kind,
            model: d.model,
            version: d.version,
            user: d.user,
            uid: d.uid,
            pid: d.pid,
            details: d.details,
            records: d.records,
            prev,
            hash: GENESIS,
        };
        e.hash = e.compute_hash();
        e
    }

    /// The canonical encoding the hash covers: every field but `hash`, in a fixed order, with
    /// fixed-width big-endian integers and length-prefixed strings (docs/format.md).
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = EVENT_TAG.to_vec();
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.at_ms.to_be_bytes());
        put_str(&mut out, self.kind.as_str());
        put_opt_str(&mut out, self.model.as_ref().map(|m| m.as_str()));
        let v = self.version.as_ref().map(|v| v.to_string());
        put_opt_str(&mut out, v.as_deref());
        put_str(&mut out, &self.user);
        put_opt_u32(&mut out, self.uid);
        put_opt_u32(&mut out, self.pid.map(|p| p as u32));
        out.extend_from_slice(&(self.details.len() as u32).to_be_bytes());
        for (k, v) in &self.details {
            put_str(&mut out, k);
            put_str(&mut out, v);
        }
        out.extend_from_slice(self.prev.as_bytes());
        // Appended only when present, so events written before records were named keep their
        // hashes; everything before is length-prefixed, so the encoding stays unambiguous.
        if !self.records.is_empty() {
            out.extend_from_slice(&(self.records.len() as u32).to_be_bytes());
            for r in &self.records {
                put_str(&mut out, &r.cf);
                out.extend_from_slice(r.row.as_bytes());
                out.push(u8::from(r.deleted));
            }
        }
        out
    }

    pub fn compute_hash(&self) -> EventHash {
        EventHash(*blake3::hash(&self.canonical()).as_bytes())
    }
}

/// A signed statement by the daemon: the chain had `count` events, the last with hash `head`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub count: u64,
    pub head: EventHash,
    pub at_ms: u64,
    /// Signed as the chain's head (the `h` row) rather than as a kept checkpoint (`c` rows):
    /// the two are signed under different tags, so a kept checkpoint cannot be passed off as
    /// the head after the events that follow it are removed.
    #[serde(default)]
    pub is_head: bool,
    pub public_key: PublicKey,
    pub signature: Signature,
}

impl Checkpoint {
    /// The signed message: tag (head or checkpoint), count (u64 BE), head (32 bytes), at_ms
    /// (u64 BE).
    pub fn message(count: u64, head: &EventHash, at_ms: u64, is_head: bool) -> Vec<u8> {
        let mut m = if is_head { HEAD_TAG } else { CHECKPOINT_TAG }.to_vec();
        m.extend_from_slice(&count.to_be_bytes());
        m.extend_from_slice(head.as_bytes());
        m.extend_from_slice(&at_ms.to_be_bytes());
        m
    }

    pub fn verify(&self, key: &PublicKey) -> bool {
        self.public_key == *key
            && key
                .verify_message(
                    &Self::message(self.count, &self.head, self.at_ms, self.is_head),
                    &self.signature,
                )
                .is_ok()
    }
}

/// The first thing wrong with a chain, naming the event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ChainFault {
    /// The event id where the chain first breaks (for a truncation: the first missing one).
    pub seq: u64,
    pub problem: String,
}

/// Walks events in stored order and checks ids, hashes and links; then the checkpoints: each must
/// be signed by `key` and match the event it names, and the newest must cover every event.
/// `events` yields each stored event or, for one that would not open or decode, its id and why.
pub fn check_chain(
    events: impl IntoIterator<Item = Result<AuditEvent, (u64, String)>>,
    checkpoints: &[Checkpoint],
    head: Option<&Checkpoint>,
    key: &PublicKey,
) -> Result<(u64, EventHash), ChainFault> {
    let mut hashes: BTreeMap<u64, EventHash> = BTreeMap::new();
    let (mut count, mut prev, mut last_at) = (0u64, GENESIS, 0u64);
    for item in events {
        let e = item.map_err(|(seq, why)| ChainFault {
            seq,
            problem: format!("event {seq} cannot be read: {why}"),
        })?;
        let expected = count + 1;
        if e.seq != expected {
            return Err(ChainFault {
                seq: expected,
                problem: if e.seq > expected {
                    format!("events {expected}..{} are missing", e.seq - 1)
                } else {
                    format!("event {} appears out of order after {count}", e.seq)
                },
            });
        }
        if e.compute_hash() != e.hash {
            return Err(ChainFault {
                seq: e.seq,
                problem: format!(
                    "event {} was altered: its hash does not match its content",
                    e.seq
                ),
            });
        }
        if e.prev != prev {
            return Err(ChainFault {
                seq: e.seq,
                problem: format!(
                    "event {} does not link to event {count}: events were removed, reordered or inserted",
                    e.seq
                ),
            });
        }
        if e.at_ms < last_at {
            return Err(ChainFault {
                seq: e.seq,
                problem: format!("event {} is dated before the event it follows", e.seq),
            });
        }
        hashes.insert(e.seq, e.hash);
        count = e.seq;
        prev = e.hash;
        last_at = e.at_ms;
    }
    let mut all: Vec<(&Checkpoint, bool)> = checkpoints.iter().map(|c| (c, false)).collect();
    all.extend(head.map(|h| (h, true)));
    for (c, as_head) in &all {
        if !c.verify(key) || c.is_head != *as_head {
            return Err(ChainFault {
                seq: c.count,
                problem: format!(
                    "the checkpoint at event {} is not signed by the daemon's key",
                    c.count
                ),
            });
        }
        if c.count > count {
            return Err(ChainFault {
                seq: count + 1,
                problem: format!(
                    "the log ends at event {count}, but a signed checkpoint covers {} events: the tail was truncated",
                    c.count
                ),
            });
        }
        if c.count > 0 && hashes.get(&c.count) != Some(&c.head) {
            return Err(ChainFault {
                seq: c.count,
                problem: format!(
                    "event {} differs from what the signed checkpoint recorded",
                    c.count
                ),
            });
        }
    }
    match head {
        Some(h) if h.count == count => {}
        Some(h) => {
            return Err(ChainFault {
                seq: h.count + 1,
                problem: format!(
                    "events after {} are not covered by the signed head: they were added outside the daemon",
                    h.count
                ),
            })
        }
        None if count > 0 => {
            return Err(ChainFault {
                seq: count,
                problem: "the signed chain head is missing".into(),
            })
        }
        None => {}
    }
    Ok((count, prev))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::SecretKey;

    fn chain(n: u64) -> Vec<AuditEvent> {
        let mut out: Vec<AuditEvent> = Vec::new();
        for i in 1..=n {
            let prev = out.last().map_or(GENESIS, |e| e.hash);
            let d = Draft::new(EventKind::Access, "alice")
                .model(&"m".parse().unwrap())
                .peer(1000, Some(42))
                .detail("file", format!("f{i}"));
            out.push(AuditEvent::chain(d, i, 1000 + i, prev));
        }
        out
    }

    fn sign_as(k: &SecretKey, e: &AuditEvent, is_head: bool) -> Checkpoint {
        Checkpoint {
            count: e.seq,
            head: e.hash,
            at_ms: e.at_ms,
            is_head,
            public_key: k.public(),
            signature: k.sign_message(&Checkpoint::message(e.seq, &e.hash, e.at_ms, is_head)),
        }
    }

    fn sign(k: &SecretKey, e: &AuditEvent) -> Checkpoint {
        sign_as(k, e, false)
    }

    fn check(
        ev: &[AuditEvent],
        cps: &[Checkpoint],
        head: Option<&Checkpoint>,
        k: &SecretKey,
    ) -> Result<(u64, EventHash), ChainFault> {
        check_chain(ev.iter().cloned().map(Ok), cps, head, &k.public())
    }

    #[test]
    fn every_edit_deletion_reorder_insertion_and_truncation_is_named() {
        let k = SecretKey::generate().unwrap();
        let ev = chain(10);
        let cps = vec![sign(&k, &ev[4])];
        let head = sign_as(&k, &ev[9], true);
        assert_eq!(check(&ev, &cps, Some(&head), &k).unwrap().0, 10);

        let mut edited = ev.clone();
        edited[3].user = "mallory".into();
        assert_eq!(check(&edited, &cps, Some(&head), &k).unwrap_err().seq, 4);

        // Re-hashing the edited event does not help: the next one no longer links to it.
        edited[3].hash = edited[3].compute_hash();
        assert_eq!(check(&edited, &cps, Some(&head), &k).unwrap_err().seq, 5);

        let mut deleted = ev.clone();
        deleted.remove(6);
        let f = check(&deleted, &cps, Some(&head), &k).unwrap_err();
        assert_eq!(f.seq, 7, "{f:?}");

        let mut reordered = ev.clone();
        reordered.swap(2, 3);
        assert_eq!(check(&reordered, &cps, Some(&head), &k).unwrap_err().seq, 3);

        // An inserted event renumbered into place breaks the link of the one after it.
        let mut inserted = ev.clone();
        let extra = AuditEvent::chain(Draft::new(EventKind::Access, "x"), 6, 1006, ev[4].hash);
        inserted.insert(5, extra);
        for (i, e) in inserted.iter_mut().enumerate().skip(6) {
            e.seq = i as u64 + 1;
        }
        assert_eq!(check(&inserted, &cps, Some(&head), &k).unwrap_err().seq, 7);

        // Truncation: the chain that is left is consistent, but the signed head covers more.
        let f = check(&ev[..8], &cps, Some(&head), &k).unwrap_err();
        assert_eq!(f.seq, 9);
        assert!(f.problem.contains("truncated"), "{f:?}");
        // Dropping the head too leaves an unsigned tail.
        assert!(check(&ev[..8], &cps, None, &k).is_err());
        // A head forged without the daemon's key is refused.
        let forged = sign_as(&SecretKey::generate().unwrap(), &ev[7], true);
        assert!(check(&ev[..8], &cps, Some(&forged), &k).is_err());
        // So is a kept checkpoint moved into the head's place after truncating to it.
        assert!(check(&ev[..5], &cps, Some(&cps[0]), &k).is_err());
        assert!(check(&ev[..5], &cps, Some(&sign_as(&k, &ev[4], true)), &k).is_ok());
    }

    #[test]
    fn the_encoding_separates_fields() {
        let a = AuditEvent::chain(
            Draft::new(EventKind::Access, "ab").detail("c", "d"),
            1,
            1,
            GENESIS,
        );
        let b = AuditEvent::chain(
            Draft::new(EventKind::Access, "a").detail("bc", "d"),
            1,
            1,
            GENESIS,
        );
        assert_ne!(a.hash, b.hash);
        let c = AuditEvent::chain(
            Draft::new(EventKind::Access, "ab").peer(5, None),
            1,
            1,
            GENESIS,
        );
        let d = AuditEvent::chain(
            Draft::new(EventKind::Access, "ab").peer(5, Some(0)),
            1,
            1,
            GENESIS,
        );
        assert_ne!(c.hash, d.hash);
    }
}
