//! The fleet's log: one ordered, signed, sealed and hash-chained entry per state change.
//!
//! An entry is what one host's RocksDB batch would have been on its own: the audit events of
//! the change, the sealed records it puts or deletes (as plaintext JSON inside the entry's own
//! seal), and where the chunks it made part of the fleet sit in packs. It is stored at
//! `log/<seq>` with a create-only put: the host that creates `log/N` first defines the N-th
//! change; the others re-read, re-check and retry.
//!
//! What a host checks before it applies entry N (`open_entry`): the object's shape; the signer
//! is a pinned host key (config `[fleet.hosts]`) and signed this seq and these sealed bytes; the
//! body opens under the fleet's data key bound to seq N (so a body cannot be moved to another
//! seq); its seq is N and its host is the name pinned with the key; and (the caller) its `prev`
//! is the hash of the entry N-1 it applied. Layout: docs/format.md, "Fleet log entries".

use std::collections::BTreeMap;

use arca_core::audit::{Draft, EventKind};
use arca_core::id::{ChunkId, EntryHash, PackId, RowKey};
use arca_core::name::{ModelName, ModelVersion};
use arca_core::sign::{PublicKey, SecretKey, Signature};

use super::pack::ChunkLoc;
use crate::crypt::{CryptError, Keyring};

pub const LOG_MAGIC: &[u8; 4] = b"arcL";
pub const LOG_FORMAT: u8 = 1;
/// The format of an entry that carries fleet GC decisions (`Entry::gc`): a host that does not
/// know them refuses the entry (and halts) rather than apply it without them, which would leave
/// it reading from packs the fleet is about to delete.
pub const LOG_FORMAT_GC: u8 = 2;
/// magic, format, seq (u64 BE), signer public key, signature.
const HEADER: usize = 4 + 1 + 8 + 32 + 64;
const SIGN_TAG: &[u8] = b"arca fleet log entry v1\0";
/// The `prev` of entry 1.
pub const GENESIS: EntryHash = EntryHash([0u8; 32]);

/// The object key of entry `seq`: zero-padded so that key order is seq order.
pub fn entry_key(seq: u64) -> String {
    format!("log/{seq:020}")
}

/// The seq an object key names, if it is a log entry's key.
pub fn seq_of_key(key: &str) -> Option<u64> {
    let s = key.strip_prefix("log/")?;
    (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Where a listing of `log/` goes on after `last` (a key below `log/`, the last of a full
/// page): past every key that extends the same 20-digit entry name when `last` is junk of
/// that shape (`00000000000000000005-x`, planted between entries 5 and 6) and sorts below the
/// step (the entry name and 64 `z`s: the highest character a listing's start key can hold
/// unescaped), so one listing steps over a run of them; else just past `last`. (The key
/// returned sorts before entry 6's.)
pub fn skip_junk_after(last: &str) -> String {
    let digits = last.bytes().take(20).take_while(u8::is_ascii_digit).count();
    if digits == 20 && last.len() > 20 {
        let skip = format!("{}{}", &last[..20], "z".repeat(64));
        if skip.as_str() > last {
            return skip;
        }
    }
    last.to_owned()
}

/// An audit event as an entry carries it (a `Draft`: the applying host's chain places it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventWire {
    pub kind: EventKind,
    pub model: Option<ModelName>,
    pub version: Option<ModelVersion>,
    pub user: String,
    pub uid: Option<u32>,
    pub pid: Option<i32>,
    pub details: BTreeMap<String, String>,
}

impl EventWire {
    pub fn from_draft(d: &Draft) -> Self {
        Self {
            kind: d.kind,
            model: d.model.clone(),
            version: d.version.clone(),
            user: d.user.clone(),
            uid: d.uid,
            pid: d.pid,
            details: d.details.clone(),
        }
    }

    pub fn to_draft(&self) -> Draft {
        let mut d = Draft::new(self.kind, self.user.clone());
        d.model = self.model.clone();
        d.version = self.version.clone();
        d.uid = self.uid;
        d.pid = self.pid;
        d.details = self.details.clone();
        d
    }
}

/// A record the change puts (`json`) or deletes (`None`), named by event `by`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordWire {
    pub cf: String,
    pub row: RowKey,
    pub json: Option<String>,
    pub by: usize,
}

/// A chunk this change made part of the fleet, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Located {
    pub id: ChunkId,
    #[serde(flatten)]
    pub loc: ChunkLoc,
}

/// What one fleet GC run decided (docs/format.md, "Log entry"). Every host applies it to its
/// chunk locations in the same way, so that all agree which packs are live, condemned or gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GcWire {
    /// Packs condemned at this seq: no live version has a chunk located in them (dead packs,
    /// packs whose live chunks `moved` relocates, orphans). Deleted by a later run, once the
    /// grace period has passed since this entry's `at_ms`.
    #[serde(default)]
    pub condemn: Vec<PackId>,
    /// Condemned packs that a live version uses again: no longer condemned.
    #[serde(default)]
    pub rescue: Vec<PackId>,
    /// Packs condemned long enough ago: their locations are dropped now, and the object is
    /// deleted from the store after this entry is in the log.
    #[serde(default)]
    pub deleted: Vec<PackId>,
    /// Chunks copied (sealed envelopes as they were) into new packs: their new locations.
    #[serde(default)]
    pub moved: Vec<Located>,
}

impl GcWire {
    pub fn is_empty(&self) -> bool {
        self.condemn.is_empty()
            && self.rescue.is_empty()
            && self.deleted.is_empty()
            && self.moved.is_empty()
    }
}

/// The plaintext of an entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub prev: EntryHash,
    /// The writing host's name, as pinned with its key.
    pub host: String,
    pub at_ms: u64,
    pub events: Vec<EventWire>,
    pub records: Vec<RecordWire>,
    pub chunks: Vec<Located>,
    /// Fleet GC's decisions (format 2 entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc: Option<GcWire>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log entry {seq}: {why}")]
    Malformed { seq: u64, why: String },
    #[error("log entry {seq} is signed by a key no `[fleet.hosts]` entry pins ({key})")]
    UnknownSigner { seq: u64, key: String },
    #[error("log entry {seq}: the signature does not verify")]
    BadSignature { seq: u64 },
    #[error("log entry {seq}: the sealed body does not open under the fleet's keys for this seq: {source}")]
    Sealed { seq: u64, source: CryptError },
    #[error("log entry {seq}: signed by host {signer}'s key but names host {named}")]
    WrongHost {
        seq: u64,
        signer: String,
        named: String,
    },
}

/// The hash that entry `seq + 1` must name as its `prev`.
pub fn entry_hash(bytes: &[u8]) -> EntryHash {
    let mut h = blake3::Hasher::new_derive_key("arca 2026 fleet log entry hash v1");
    h.update(bytes);
    EntryHash(*h.finalize().as_bytes())
}

fn signed_message(seq: u64, sealed: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGN_TAG.len() + 8 + 32);
    m.extend_from_slice(SIGN_TAG);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(blake3::hash(sealed).as_bytes());
    m
}

/// The stored bytes of an entry: sealed under the fleet's current data key, bound to its seq,
/// and signed by this host.
pub fn seal_entry(keys: &Keyring, host_key: &SecretKey, e: &Entry) -> Result<Vec<u8>, LogError> {
    let json = serde_json::to_vec(e).map_err(|err| LogError::Malformed {
        seq: e.seq,
        why: err.to_string(),
    })?;
    let sealed = keys
        .seal_record("log", &e.seq.to_be_bytes(), &json)
        .map_err(|source| LogError::Sealed { seq: e.seq, source })?;
    let sig = host_key.sign_message(&signed_message(e.seq, &sealed));
    let mut out = Vec::with_capacity(HEADER + sealed.len());
    out.extend_from_slice(LOG_MAGIC);
    out.push(if e.gc.is_some() {
        LOG_FORMAT_GC
    } else {
        LOG_FORMAT
    });
    out.extend_from_slice(&e.seq.to_be_bytes());
    out.extend_from_slice(host_key.public().as_bytes());
    out.extend_from_slice(&sig.to_bytes());
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens the stored bytes of entry `seq` and checks everything but its place in the chain
/// (its `prev`, which the caller compares with the hash of the entry it applied before).
pub fn open_entry(
    keys: &Keyring,
    hosts: &BTreeMap<String, PublicKey>,
    seq: u64,
    bytes: &[u8],
) -> Result<Entry, LogError> {
    let bad = |why: &str| LogError::Malformed {
        seq,
        why: why.to_owned(),
    };
    if bytes.len() < HEADER
        || &bytes[..4] != LOG_MAGIC
        || !(bytes[4] == LOG_FORMAT || bytes[4] == LOG_FORMAT_GC)
    {
        return Err(bad("not a format-1 or format-2 log entry"));
    }
    let stored_seq = u64::from_be_bytes(bytes[5..13].try_into().map_err(|_| bad("seq"))?);
    if stored_seq != seq {
        return Err(bad(&format!("stored at seq {seq} but says {stored_seq}")));
    }
    let key_bytes: [u8; 32] = bytes[13..45].try_into().map_err(|_| bad("key"))?;
    let sig_bytes: [u8; 64] = bytes[45..109].try_into().map_err(|_| bad("signature"))?;
    let sealed = &bytes[HEADER..];
    let signer_key = PublicKey::from_bytes(&key_bytes).map_err(|_| bad("signer key"))?;
    let signer = hosts
        .iter()
        .find(|(_, k)| **k == signer_key)
        .map(|(name, _)| name.clone())
        .ok_or_else(|| LogError::UnknownSigner {
            seq,
            key: signer_key.to_string(),
        })?;
    signer_key
        .verify_message(
            &signed_message(seq, sealed),
            &Signature::from_bytes(&sig_bytes),
        )
        .map_err(|_| LogError::BadSignature { seq })?;
    let json = keys
        .open_record("log", &seq.to_be_bytes(), sealed)
        .map_err(|source| LogError::Sealed { seq, source })?;
    let e: Entry = serde_json::from_slice(&json).map_err(|err| bad(&err.to_string()))?;
    if e.seq != seq {
        return Err(bad("the body names another seq"));
    }
    if e.host != signer {
        return Err(LogError::WrongHost {
            seq,
            signer,
            named: e.host,
        });
    }
    if e.records.iter().any(|r| r.by >= e.events.len()) {
        return Err(bad("a record no event of the entry names"));
    }
    // The format byte says whether GC decisions are inside (the seal covers the body, the
    // chain hash the byte); an entry whose two disagree is not one arca wrote.
    if (bytes[4] == LOG_FORMAT_GC) != e.gc.is_some() {
        return Err(bad(
            "its format does not match whether it carries GC decisions",
        ));
    }
    if e.gc.is_some() && !(e.records.is_empty() && e.chunks.is_empty()) {
        return Err(bad("GC decisions travel in an entry of their own"));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretBytes;

    #[test]
    fn a_listing_steps_over_junk_under_one_entry_name_but_never_past_the_next_entry() {
        let five = "00000000000000000005";
        let six = "00000000000000000006";
        let step = skip_junk_after(&format!("{five}-junk-00999"));
        assert!(step.as_str() > "00000000000000000005-junk-zzzzz" && step.as_str() < six);
        // An entry name, or junk of another shape: just past it.
        assert_eq!(skip_junk_after(five), five);
        assert_eq!(skip_junk_after("junk"), "junk");
        // Junk above the step (past `z`): just past it, so a listing still makes progress.
        let high = format!("{five}~");
        assert_eq!(skip_junk_after(&high), high);
        assert_eq!(seq_of_key(&format!("log/{five}-junk")), None);
    }

    fn keys(dek: u8) -> Keyring {
        Keyring::new(
            vec![(1, SecretBytes::from_array([dek; 32]))],
            1,
            SecretBytes::from_array([2; 32]),
        )
    }

    fn entry(seq: u64, prev: EntryHash, host: &str) -> Entry {
        let d = Draft::new(EventKind::Promotion, "alice")
            .model(&"resnet".parse().unwrap())
            .version(&"1.0.0".parse().unwrap())
            .detail("to", "production");
        Entry {
            seq,
            prev,
            host: host.into(),
            at_ms: 1,
            events: vec![EventWire::from_draft(&d)],
            records: vec![RecordWire {
                cf: "versions".into(),
                row: RowKey([5; 32]),
                json: Some("{\"x\":1}".into()),
                by: 0,
            }],
            chunks: Vec::new(),
            gc: None,
        }
    }

    #[test]
    fn gc_entries_are_format_2_and_the_format_must_match_the_body() {
        let k = keys(1);
        let a = SecretKey::from_seed(&[10; 32]);
        let hosts: BTreeMap<String, PublicKey> = [("a".to_string(), a.public())].into();
        let mut e = entry(1, GENESIS, "a");
        e.records.clear();
        e.gc = Some(GcWire {
            condemn: vec![PackId([7; 32])],
            ..GcWire::default()
        });
        let s = seal_entry(&k, &a, &e).unwrap();
        assert_eq!(s[4], LOG_FORMAT_GC);
        assert_eq!(open_entry(&k, &hosts, 1, &s).unwrap(), e);
        // The format byte turned back to 1 (to slip the decisions past a host that would
        // ignore them): refused.
        let mut one = s.clone();
        one[4] = LOG_FORMAT;
        assert!(open_entry(&k, &hosts, 1, &one).is_err());
        // And a plain entry claiming format 2.
        let plain = seal_entry(&k, &a, &entry(1, GENESIS, "a")).unwrap();
        let mut two = plain.clone();
        two[4] = LOG_FORMAT_GC;
        assert!(open_entry(&k, &hosts, 1, &two).is_err());
        // GC decisions next to records: refused.
        let mut mixed = entry(1, GENESIS, "a");
        mixed.gc = Some(GcWire::default());
        let m = seal_entry(&k, &a, &mixed).unwrap();
        assert!(open_entry(&k, &hosts, 1, &m).is_err());
    }

    #[test]
    fn entries_round_trip_and_every_tampering_is_named() {
        let k = keys(1);
        let a = SecretKey::from_seed(&[10; 32]);
        let b = SecretKey::from_seed(&[11; 32]);
        let rogue = SecretKey::from_seed(&[12; 32]);
        let hosts: BTreeMap<String, PublicKey> =
            [("a".to_string(), a.public()), ("b".to_string(), b.public())].into();
        let e1 = entry(1, GENESIS, "a");
        let s1 = seal_entry(&k, &a, &e1).unwrap();
        let back = open_entry(&k, &hosts, 1, &s1).unwrap();
        assert_eq!(back, e1);
        assert_eq!(back.events[0].to_draft().details["to"], "production");

        // Moved to another seq: the header says so; with the header rewritten, the seal does.
        assert!(matches!(
            open_entry(&k, &hosts, 2, &s1),
            Err(LogError::Malformed { .. })
        ));
        let mut moved = s1.clone();
        moved[5..13].copy_from_slice(&2u64.to_be_bytes());
        assert!(matches!(
            open_entry(&k, &hosts, 2, &moved),
            Err(LogError::BadSignature { .. })
        ));
        // A flipped byte anywhere in the sealed body.
        let mut flipped = s1.clone();
        let n = flipped.len();
        flipped[n - 40] ^= 1;
        assert!(matches!(
            open_entry(&k, &hosts, 1, &flipped),
            Err(LogError::BadSignature { .. })
        ));
        // A key no host pins, even with a valid seal (someone holding the fleet KEK).
        let forged = seal_entry(&k, &rogue, &entry(1, GENESIS, "a")).unwrap();
        assert!(matches!(
            open_entry(&k, &hosts, 1, &forged),
            Err(LogError::UnknownSigner { .. })
        ));
        // Host b claiming to be a.
        let claimed = seal_entry(&k, &b, &entry(1, GENESIS, "a")).unwrap();
        assert!(matches!(
            open_entry(&k, &hosts, 1, &claimed),
            Err(LogError::WrongHost { .. })
        ));
        // Signed by a pinned host but sealed under another fleet's keys.
        let other = seal_entry(&keys(9), &a, &e1).unwrap();
        assert!(matches!(
            open_entry(&k, &hosts, 1, &other),
            Err(LogError::Sealed { .. })
        ));
        // A body re-signed for another seq does not open there (the seal binds the seq).
        let mut resigned = s1[HEADER..].to_vec();
        let sig = a.sign_message(&signed_message(2, &resigned));
        let mut obj = Vec::new();
        obj.extend_from_slice(LOG_MAGIC);
        obj.push(LOG_FORMAT);
        obj.extend_from_slice(&2u64.to_be_bytes());
        obj.extend_from_slice(a.public().as_bytes());
        obj.extend_from_slice(&sig.to_bytes());
        obj.append(&mut resigned);
        assert!(matches!(
            open_entry(&k, &hosts, 2, &obj),
            Err(LogError::Sealed { .. })
        ));
        // Truncated.
        assert!(open_entry(&k, &hosts, 1, &s1[..HEADER - 1]).is_err());
        assert!(open_entry(&k, &hosts, 1, &s1[..s1.len() - 1]).is_err());
        // The chain: the hash changes with any byte.
        assert_ne!(entry_hash(&s1), entry_hash(&flipped));
    }

    #[test]
    fn keys_sort_in_seq_order() {
        assert!(entry_key(9) < entry_key(10));
        assert_eq!(seq_of_key(&entry_key(12345)), Some(12345));
        assert_eq!(seq_of_key("log/12"), None);
        assert_eq!(seq_of_key("packs/x"), None);
    }
}
