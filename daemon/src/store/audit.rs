//! The audit trail's persistence: events are appended in the same RocksDB batch as the change they
//! record, each sealed under its id, chained by hash, indexed by model, user, type and time, and
//! covered by a head checkpoint signed with the daemon's own key in that same batch.
//!
//! Rows of the `audit` column family:
//! - `e` + id (u64 BE): the sealed event (JSON of `AuditEvent`), bound to its row;
//! - `c` + id (u64 BE): a signed checkpoint kept every `CHECKPOINT_EVERY` events or
//!   `CHECKPOINT_SECS`, and at shutdown (JSON of `Checkpoint`; it is its own authenticator);
//! - `h`: the signed checkpoint of the newest event, rewritten by every append.
//!
//! `audit_idx` holds keys only: `m`/`u`/`k` + keyed hash of the model/user/type, or `t` alone,
//! then the event's time (u64 BE ms) and id (u64 BE).

use std::sync::MutexGuard;
use std::time::{SystemTime, UNIX_EPOCH};

use arca_core::audit::{
    check_chain, AuditEvent, ChainFault, Checkpoint, Draft, EventHash, EventKind, GENESIS,
};
use arca_core::sign::{PublicKey, SecretKey};

use arca_core::audit::RecordWrite;
use arca_core::id::RowKey;
use arca_core::ModelName;

use super::binding::{Binding, Bindings};
use super::kv::{Batch, Cf};
use super::{RecordPut, Store, StoreError};

/// Where `meta` keeps the audit signing key's seed, wrapped by the KEK.
pub(super) const AUDIT_KEY_LABEL: &str = "audit-signing-key";
const EVENT: u8 = b'e';
const CHECKPOINT: u8 = b'c';
const HEAD: &[u8] = b"h";
const CHECKPOINT_EVERY: u64 = 1000;
const CHECKPOINT_SECS: u64 = 60;

/// Where the chain stands: the next id, the hash and time to link to.
#[derive(Debug, Clone)]
pub struct Chain {
    next: u64,
    prev: EventHash,
    last_at: u64,
    last_checkpoint: (u64, u64),
}

/// What `audit_query` filters on; every field optional.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub model: Option<String>,
    pub version: Option<String>,
    pub kind: Option<arca_core::audit::EventKind>,
    pub user: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub limit: usize,
}

/// The result of checking the whole trail.
#[derive(Debug, Clone)]
pub struct ChainReport {
    pub events: u64,
    pub checkpoints: u64,
    pub head: Option<Checkpoint>,
    pub fault: Option<ChainFault>,
    pub public_key: PublicKey,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn to_json(c: &Checkpoint) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(c).map_err(|e| StoreError::Corrupt(format!("encoding a checkpoint: {e}")))
}

fn event_row(seq: u64) -> [u8; 9] {
    let mut k = [EVENT; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn checkpoint_row(seq: u64) -> [u8; 9] {
    let mut k = [CHECKPOINT; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl Store {
    fn chain(&self) -> MutexGuard<'_, Chain> {
        self.chain.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events in the trail (the next id minus one).
    pub fn audit_head_count(&self) -> Result<u64, StoreError> {
        Ok(self.chain().next - 1)
    }

    /// Events appended since the store was opened, by type.
    pub fn event_counts(&self) -> Vec<(EventKind, u64)> {
        EventKind::ALL
            .iter()
            .zip(&self.event_counts)
            .map(|(k, n)| (*k, n.load(std::sync::atomic::Ordering::Relaxed)))
            .collect()
    }

    pub fn audit_public_key(&self) -> PublicKey {
        self.audit_key.public()
    }

    /// Reads where the chain stands at open. A head that covers more events than are stored
    /// (a truncated tail) is kept as the link point, so the gap stays visible to `audit verify`
    /// instead of being papered over by new events.
    pub(super) fn load_chain(
        kv: &super::kv::Kv,
        keys: &crate::crypt::Keyring,
    ) -> Result<Chain, StoreError> {
        let head: Option<Checkpoint> = match kv.get(Cf::Audit, HEAD)? {
            Some(v) => serde_json::from_slice(&v).ok(),
            None => None,
        };
        let last = kv
            .range(Cf::Audit, &event_row(0), &event_row(u64::MAX), true)
            .next()
            .transpose()?;
        let mut chain = Chain {
            next: 1,
            prev: GENESIS,
            last_at: 0,
            last_checkpoint: (0, now_ms()),
        };
        if let Some((k, v)) = last {
            let opened = keys
                .open_record(Cf::Audit.name(), &k, &v)
                .ok()
                .and_then(|p| serde_json::from_slice::<AuditEvent>(&p).ok());
            match opened {
                Some(e) => {
                    chain.next = e.seq + 1;
                    chain.prev = e.hash;
                    chain.last_at = e.at_ms;
                }
                None => {
                    tracing::error!(
                        "the newest audit event does not open; `arca audit verify` will name it"
                    );
                    let seq = k
                        .get(1..9)
                        .and_then(|s| s.try_into().ok())
                        .map_or(0, u64::from_be_bytes);
                    chain.next = seq.saturating_add(1).max(chain.next);
                }
            }
        }
        // Count kept checkpoints from the newest one, not from zero at every start.
        if let Some((k, _)) = kv
            .range(
                Cf::Audit,
                &checkpoint_row(0),
                &checkpoint_row(u64::MAX),
                true,
            )
            .next()
            .transpose()?
        {
            if let Some(n) = k.get(1..9).and_then(|s| s.try_into().ok()) {
                chain.last_checkpoint.0 = u64::from_be_bytes(n);
            }
        }
        if let Some(h) = head {
            if h.count >= chain.next {
                tracing::error!(
                    stored = chain.next - 1,
                    signed = h.count,
                    "the audit trail ends before its signed head: events were removed; new events continue after the gap"
                );
                chain.next = h.count + 1;
                chain.prev = h.head;
                chain.last_at = chain.last_at.max(h.at_ms);
            }
        }
        Ok(chain)
    }

    fn index_rows(&self, e: &AuditEvent) -> Vec<Vec<u8>> {
        let suffix = |mut k: Vec<u8>| {
            k.extend_from_slice(&e.at_ms.to_be_bytes());
            k.extend_from_slice(&e.seq.to_be_bytes());
            k
        };
        let mut rows = vec![suffix(vec![b't'])];
        if let Some(m) = &e.model {
            rows.push(suffix(self.index_prefix(b'm', m.as_str())));
        }
        rows.push(suffix(self.index_prefix(b'u', &e.user)));
        rows.push(suffix(self.index_prefix(b'k', e.kind.as_str())));
        rows
    }

    fn index_prefix(&self, tag: u8, value: &str) -> Vec<u8> {
        let mut k = vec![tag];
        k.extend_from_slice(
            &self
                .keys
                .row_key("audit-index", &[&[tag], value.as_bytes()]),
        );
        k
    }

    fn sign_head(&self, count: u64, head: EventHash, at_ms: u64, is_head: bool) -> Checkpoint {
        Checkpoint {
            count,
            head,
            at_ms,
            is_head,
            public_key: self.audit_key.public(),
            signature: self
                .audit_key
                .sign_message(&Checkpoint::message(count, &head, at_ms, is_head)),
        }
    }

    /// Commits `b` with `drafts` appended to the trail, in one atomic write: no change without
    /// its events, no events without their change. Returns the placed events.
    ///
    /// `records` are the mutable records the change writes: each is named by one event (its
    /// `by`, else the batch's last) and sealed bound to that event (`binding.rs`).
    pub(super) fn commit_audited(
        &self,
        b: Batch,
        drafts: Vec<Draft>,
        records: Vec<RecordPut>,
        sync: bool,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.commit_audited_opt(b, drafts, records, sync, true)
    }

    /// `commit_audited`; `publish`: on a fleet host, a change with records is first published
    /// as the fleet's next log entry (`fleet.rs`), and committed here only once it won its seq.
    /// Applying another host's entry does not publish it again.
    pub(super) fn commit_audited_opt(
        &self,
        mut b: Batch,
        mut drafts: Vec<Draft>,
        records: Vec<RecordPut>,
        sync: bool,
        publish: bool,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let owner = |r: &RecordPut| r.by.unwrap_or(drafts.len().wrapping_sub(1));
        if records.iter().any(|r| owner(r) >= drafts.len()) {
            return Err(StoreError::Corrupt(
                "a record write without the audit event that records it".into(),
            ));
        }
        let owners: Vec<usize> = records.iter().map(owner).collect();
        if publish && !records.is_empty() {
            if let Some(p) = self.publisher.get() {
                // Before the chain lock: the network round trip must not hold up the events
                // that reads append meanwhile.
                self.publish_entry(p, &mut b, &mut drafts, &records, &owners, None)?;
            }
        }
        for (r, i) in records.iter().zip(&owners) {
            drafts[*i].records.push(RecordWrite {
                cf: r.cf.name().into(),
                row: RowKey(r.row),
                deleted: r.json.is_none(),
            });
        }
        let mut chain = self.chain();
        let mut next = chain.clone();
        let mut events = Vec::with_capacity(drafts.len());
        for d in drafts {
            let at = now_ms().max(next.last_at);
            let e = AuditEvent::chain(d, next.next, at, next.prev);
            let row = event_row(e.seq);
            b.put(Cf::Audit, &row, self.seal_json(Cf::Audit, &row, &e)?);
            for k in self.index_rows(&e) {
                b.put(Cf::AuditIdx, &k, Vec::new());
            }
            next.next += 1;
            next.prev = e.hash;
            next.last_at = at;
            events.push(e);
        }
        for (r, i) in records.iter().zip(&owners) {
            let binding = Binding::of(&events[*i]);
            {
                match &r.json {
                    Some(json) => {
                        let sealed = self
                            .keys
                            .seal_record(r.cf.name(), &r.row, &binding.wrap(json))
                            .map_err(|source| StoreError::Crypt {
                                what: format!("sealing a {} record", r.cf.name()),
                                source,
                            })?;
                        b.put(r.cf, &r.row, sealed);
                    }
                    None => b.delete(r.cf, &r.row),
                }
            }
        }
        if !events.is_empty() {
            let count = next.next - 1;
            let (cp_count, cp_at) = next.last_checkpoint;
            if count >= cp_count + CHECKPOINT_EVERY || now_ms() >= cp_at + CHECKPOINT_SECS * 1000 {
                let cp = self.sign_head(count, next.prev, next.last_at, false);
                b.put(Cf::Audit, &checkpoint_row(count), to_json(&cp)?);
                next.last_checkpoint = (count, now_ms());
            }
            let head = self.sign_head(count, next.prev, next.last_at, true);
            b.put(Cf::Audit, HEAD, to_json(&head)?);
        }
        // The bindings are held across the write, so a reader never sees a record newer than
        // the map it is checked against (it would look replayed).
        {
            let mut bindings = self.bindings.write().unwrap_or_else(|p| p.into_inner());
            self.kv.commit_opt(b, sync)?;
            for e in events.iter().filter(|e| !e.records.is_empty()) {
                bindings.apply(e);
            }
        }
        *chain = next;
        for e in &events {
            if let Some(i) = EventKind::ALL.iter().position(|k| *k == e.kind) {
                self.event_counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(events)
    }

    /// Appends events that record no state change (reads, refusals, integrity failures). The
    /// write is not synced: a daemon crash loses none of it; a power loss may lose the newest
    /// such events, and with them the head that covered them, never a part of a chain.
    pub fn append_audit(&self, drafts: Vec<Draft>) -> Result<Vec<AuditEvent>, StoreError> {
        self.commit_audited(Batch::default(), drafts, Vec::new(), false)
    }

    /// Writes a signed checkpoint of the current head (at shutdown).
    pub fn checkpoint_audit(&self) -> Result<(), StoreError> {
        let mut chain = self.chain();
        let count = chain.next - 1;
        if count == 0 {
            return Ok(());
        }
        let cp = self.sign_head(count, chain.prev, chain.last_at, false);
        let head = self.sign_head(count, chain.prev, chain.last_at, true);
        let mut b = Batch::default();
        b.put(Cf::Audit, &checkpoint_row(count), to_json(&cp)?);
        b.put(Cf::Audit, HEAD, to_json(&head)?);
        self.kv.commit(b)?;
        chain.last_checkpoint = (count, now_ms());
        Ok(())
    }

    /// Stored events with ids in `from..=to`, in id order, at most `max`. Rows that are
    /// missing or do not open are left out: `audit verify` names them, and a fleet host's
    /// shipping of its trail (the caller) must not stop at them.
    pub fn audit_events_between(
        &self,
        from: u64,
        to: u64,
        max: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut out = Vec::new();
        let end = event_row(to.saturating_add(1));
        for item in self.kv.range(Cf::Audit, &event_row(from), &end, false) {
            let (k, v) = item?;
            if let Ok(e) = self.open_event(&k, &v) {
                out.push(e);
            }
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Every stored event in id order, opened, or its id and why it would not open: what
    /// `check_chain` walks.
    fn stored_events(&self) -> impl Iterator<Item = Result<AuditEvent, (u64, String)>> + '_ {
        self.kv
            .range(Cf::Audit, &event_row(0), &event_row(u64::MAX), false)
            .map(|item| match item {
                Ok((k, v)) => self.open_event(&k, &v),
                Err(e) => Err((0, e.to_string())),
            })
    }

    fn open_event(&self, k: &[u8], v: &[u8]) -> Result<AuditEvent, (u64, String)> {
        let seq = k
            .get(1..9)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u64::from_be_bytes);
        let e: AuditEvent = self
            .open_json(Cf::Audit, k, v)
            .map_err(|e| (seq, e.to_string()))?;
        if e.seq != seq {
            return Err((seq, format!("the row holds event {}", e.seq)));
        }
        Ok(e)
    }

    /// Events matching `f`, oldest first; at most `f.limit`, the newest ones. Uses the most
    /// selective index the filter allows, so it reads only matching index keys within the time
    /// range, never the whole trail.
    pub fn audit_query(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let prefix = if let Some(m) = &f.model {
            self.index_prefix(b'm', m)
        } else if let Some(u) = &f.user {
            self.index_prefix(b'u', u)
        } else if let Some(k) = f.kind {
            self.index_prefix(b'k', k.as_str())
        } else {
            vec![b't']
        };
        let bound = |ms: u64| {
            let mut k = prefix.clone();
            k.extend_from_slice(&ms.to_be_bytes());
            k
        };
        let from = bound(f.since_ms.unwrap_or(0));
        let to = match f.until_ms {
            Some(u) => bound(u.saturating_add(1)),
            None => {
                let mut k = prefix.clone();
                k.extend_from_slice(&[0xff; 17]);
                k
            }
        };
        let mut out = Vec::new();
        // Index keys are not authenticated: a key inserted with another time or a second key
        // for the same event must not move or repeat it, so both are checked on the event.
        let mut seen = std::collections::HashSet::new();
        for item in self.kv.range(Cf::AuditIdx, &from, &to, true) {
            let (k, _) = item?;
            let Some(seq) = k
                .get(k.len() - 8..)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            let row = event_row(seq);
            let Some(v) = self.kv.get(Cf::Audit, &row)? else {
                continue;
            };
            let e = self
                .open_event(&row, &v)
                .map_err(|(_, why)| StoreError::Corrupt(format!("audit event {seq}: {why}")))?;
            let keep = seen.insert(e.seq)
                && f.since_ms.is_none_or(|s| e.at_ms >= s)
                && f.until_ms.is_none_or(|u| e.at_ms <= u)
                && f.model
                    .as_deref()
                    .is_none_or(|m| e.model.as_ref().is_some_and(|x| x.as_str() == m))
                && f.version
                    .as_deref()
                    .is_none_or(|v| e.version.as_ref().is_some_and(|x| x.to_string() == v))
                && f.user.as_deref().is_none_or(|u| e.user == u)
                && f.kind.is_none_or(|k| e.kind == k);
            if keep {
                out.push(e);
                if out.len() >= f.limit {
                    break;
                }
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Walks the whole chain as `audit_verify` does and maps every record row to the newest
    /// event that wrote it, counting only events before the chain's first fault.
    /// `upgraded`: false only for a format-1 store not yet upgraded (its trail has no `store`
    /// event yet).
    pub(super) fn scan_bindings(&self, upgraded: bool) -> Result<Bindings, StoreError> {
        let (checkpoints, head) = match self.signed_checkpoints()? {
            Ok(c) => c,
            Err(fault) => return Ok(Bindings::from_chain([], Some(&fault))),
        };
        // Applied as the walk goes (events are not kept): with a fault the map is not used at
        // all (no record is trusted while the trail is broken), so what the walk applied up to
        // the fault does not matter.
        let mut bindings = Bindings::default();
        let events = self.stored_events().inspect(|e| {
            if let Ok(e) = e {
                bindings.apply(e);
            }
        });
        let fault = check_chain(
            events,
            &checkpoints,
            head.as_ref(),
            &self.audit_key.public(),
        )
        .err()
        .or_else(|| self.start_fault(bindings.saw_store_event() || !upgraded));
        if let Some(f) = fault {
            bindings.set_broken(f.seq);
        }
        Ok(bindings)
    }

    /// The kept checkpoints and the head, or the fault that makes them unreadable.
    #[allow(clippy::type_complexity)]
    fn signed_checkpoints(
        &self,
    ) -> Result<Result<(Vec<Checkpoint>, Option<Checkpoint>), ChainFault>, StoreError> {
        let head: Option<Checkpoint> = match self.kv.get(Cf::Audit, HEAD)? {
            Some(v) => match serde_json::from_slice(&v) {
                Ok(h) => Some(h),
                Err(e) => {
                    return Ok(Err(ChainFault {
                        seq: 0,
                        problem: format!("the signed head cannot be read: {e}"),
                    }))
                }
            },
            None => None,
        };
        let mut checkpoints = Vec::new();
        for item in self.kv.range(
            Cf::Audit,
            &checkpoint_row(0),
            &checkpoint_row(u64::MAX),
            false,
        ) {
            let (k, v) = item?;
            let seq = k
                .get(1..9)
                .and_then(|s| s.try_into().ok())
                .map_or(0, u64::from_be_bytes);
            match serde_json::from_slice::<Checkpoint>(&v) {
                Ok(c) => checkpoints.push(c),
                Err(e) => {
                    return Ok(Err(ChainFault {
                        seq,
                        problem: format!("the checkpoint at event {seq} cannot be read: {e}"),
                    }))
                }
            }
        }
        Ok(Ok((checkpoints, head)))
    }

    /// Faults in how the trail starts, which `check_chain` cannot see: every format-2 store's
    /// trail holds a `store` event (its creation as event 1, or its upgrade), so a store holding
    /// records whose trail has none had its events removed (a fresh, empty or restarted trail
    /// verifies by itself); and event 1, when it is the creation, names the audit public key,
    /// so a daemon signing with another key is running on a trail that is not its own.
    fn start_fault(&self, saw_store_event: bool) -> Option<ChainFault> {
        if !saw_store_event {
            let holds = [Cf::Versions, Cf::Acl, Cf::Keys]
                .into_iter()
                .any(|cf| matches!(self.kv.scan(cf).next(), Some(Ok(_))));
            return holds.then(|| ChainFault {
                seq: 1,
                problem: "the audit trail holds neither the store's creation nor its upgrade, yet the store holds records: its events were removed".into(),
            });
        }
        let v = self.kv.get(Cf::Audit, &event_row(1)).ok()??;
        let e = self.open_event(&event_row(1), &v).ok()?;
        let recorded = e.details.get("audit_public_key")?;
        let ours = self.audit_key.public().to_string();
        (e.kind == EventKind::Store && *recorded != ours).then(|| ChainFault {
            seq: 1,
            problem: format!(
                "event 1 records audit key {recorded}, but the trail is signed with {ours}: the audit key was replaced"
            ),
        })
    }

    /// The model and version named by event `seq`, if it opens.
    pub(super) fn event_subject(
        &self,
        seq: u64,
    ) -> Result<(Option<ModelName>, Option<arca_core::ModelVersion>), StoreError> {
        let row = event_row(seq);
        Ok(match self.kv.get(Cf::Audit, &row)? {
            Some(v) => match self.open_event(&row, &v) {
                Ok(e) => (e.model, e.version),
                Err(_) => (None, None),
            },
            None => (None, None),
        })
    }

    /// Checks every event, link and checkpoint (see `arca_core::audit::check_chain`).
    pub fn audit_verify(&self) -> Result<ChainReport, StoreError> {
        let key = self.audit_key.public();
        let unreadable = |seq: u64, problem: String| ChainReport {
            events: 0,
            checkpoints: 0,
            head: None,
            fault: Some(ChainFault { seq, problem }),
            public_key: key,
        };
        let (checkpoints, head) = match self.signed_checkpoints()? {
            Ok(c) => c,
            Err(f) => return Ok(unreadable(f.seq, f.problem)),
        };
        let mut saw_store_event = false;
        let events = self.stored_events().inspect(|e| {
            saw_store_event |= matches!(e, Ok(e) if e.kind == EventKind::Store);
        });
        let result = check_chain(events, &checkpoints, head.as_ref(), &key);
        let (events, fault) = match result {
            Ok((n, _)) => match self.start_fault(saw_store_event) {
                None => (n, None),
                Some(f) => (0, Some(f)),
            },
            Err(f) => (f.seq.saturating_sub(1), Some(f)),
        };
        Ok(ChainReport {
            events,
            checkpoints: checkpoints.len() as u64,
            head,
            fault,
            public_key: key,
        })
    }

    /// The audit signing key, kept wrapped by the KEK in `meta`. It is made when the store is
    /// created (`Store::initialise`). A store that holds versions, roles, keys or any audit row
    /// but no audit key had it removed, and making a new one would let whoever removed it start
    /// a fresh trail that verifies: refused. (Only a store that holds nothing yet, made before
    /// the key was part of creation, gets one here.)
    pub(super) fn audit_signing_key(
        kv: &super::kv::Kv,
        kek: &crate::keys::Kek,
    ) -> Result<SecretKey, StoreError> {
        const LABEL: &str = AUDIT_KEY_LABEL;
        let seed = match kv.get(Cf::Meta, LABEL.as_bytes())? {
            Some(w) => kek.unwrap_key(LABEL, &w)?,
            None => {
                for cf in [Cf::Versions, Cf::Acl, Cf::Keys, Cf::Audit] {
                    if kv.scan(cf).next().transpose()?.is_some() {
                        return Err(StoreError::Refused(format!(
                            "the store holds {} records but its audit signing key is gone: the audit trail was tampered with; arcad will not start a new trail over it (restore the state directory from a backup)",
                            cf.name()
                        )));
                    }
                }
                let s = crate::keys::SecretBytes::random()?;
                let mut b = Batch::default();
                b.put(Cf::Meta, LABEL.as_bytes(), kek.wrap(LABEL, &s)?);
                kv.commit(b)?;
                s
            }
        };
        Ok(SecretKey::from_seed(seed.expose()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use arca_core::audit::EventKind;

    use super::*;
    use crate::keys::Kek;

    fn open(dir: &std::path::Path) -> Store {
        let kek = match Kek::load(&dir.join("kek")) {
            Ok(k) => k,
            Err(_) => Kek::generate_file(&dir.join("kek")).unwrap(),
        };
        Store::open(&dir.join("state"), kek).unwrap()
    }

    fn draft(i: u64) -> Draft {
        Draft::new(EventKind::Access, format!("user{}", i % 50))
            .model(&format!("model-{}", i % 100).parse().unwrap())
            .version(&"1.0.0".parse().unwrap())
            .peer(1000 + (i % 50) as u32, Some(i as i32))
            .detail("file", "model.safetensors")
    }

    /// Issue #5: with 1,000,000 events, a query filtered by model and time range answers in
    /// under a second, because it reads the model index within the range, not the trail.
    #[test]
    fn a_million_events_and_a_model_time_query_under_a_second() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let store = open(dir.path());
        let total: u64 = std::env::var("ARCA_AUDIT_EVENTS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        let t = Instant::now();
        let mut marks = Vec::new();
        for start in (0..total).step_by(10_000) {
            let end = (start + 10_000).min(total);
            store
                .append_audit((start..end).map(draft).collect())
                .unwrap();
            marks.push(now_ms());
        }
        let append = t.elapsed();
        // The middle tenth of the trail by time, for one model of a hundred.
        let (since, until) = (marks[marks.len() * 45 / 100], marks[marks.len() * 55 / 100]);
        let t = Instant::now();
        let hits = store
            .audit_query(&AuditFilter {
                model: Some("model-42".into()),
                since_ms: Some(since),
                until_ms: Some(until),
                limit: usize::MAX,
                ..AuditFilter::default()
            })
            .unwrap();
        let query = t.elapsed();
        println!(
            "audit: {total} events appended in {append:.1?} ({:.0} events/s); model+time query returned {} events in {query:.1?}",
            total as f64 / append.as_secs_f64(),
            hits.len()
        );
        assert!(!hits.is_empty());
        assert!(hits
            .iter()
            .all(|e| e.model.as_ref().unwrap().as_str() == "model-42"
                && e.at_ms >= since
                && e.at_ms <= until));
        assert!(hits.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");
        assert!(
            query.as_millis() < 1000,
            "a model and time-range query over {total} events took {query:?}"
        );
        // The newest-N query stops after N.
        let t = Instant::now();
        let last = store
            .audit_query(&AuditFilter {
                model: Some("model-7".into()),
                limit: 20,
                ..AuditFilter::default()
            })
            .unwrap();
        assert_eq!(last.len(), 20);
        // Event 1 records the store's creation, so draft i is event i + 2, and the last i with
        // i % 100 == 7 is total - 93.
        assert_eq!(last.last().unwrap().seq, total - 91);
        println!("audit: newest 20 of one model in {:.1?}", t.elapsed());
        // Opening walks the whole chain (record bindings, docs/format.md "Audit binding"): its
        // cost grows with the trail, so measure it and keep it well inside systemd's start
        // timeout (TimeoutStartSec).
        drop(store);
        let t = Instant::now();
        let store = open(dir.path());
        let opened = t.elapsed();
        assert_eq!(store.trail_broken_at(), None);
        println!(
            "audit: reopened with {total} events in {opened:.1?} ({:.2} µs per event)",
            opened.as_secs_f64() * 1e6 / total as f64
        );
        assert!(opened.as_secs() < 60, "opening took {opened:?}");
    }

    #[test]
    fn the_chain_survives_a_reopen_and_a_truncated_tail_stays_visible() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        {
            let s = open(dir.path());
            s.append_audit((0..10).map(draft).collect()).unwrap();
            s.checkpoint_audit().unwrap();
        }
        let s = open(dir.path());
        s.append_audit((10..12).map(draft).collect()).unwrap();
        let r = s.audit_verify().unwrap();
        assert!(r.fault.is_none(), "{:?}", r.fault);
        // Twelve drafts after event 1, the store's creation.
        assert_eq!((r.events, r.head.unwrap().count), (13, 13));
        // Drop the last three events as someone with the database but not the key would.
        let mut b = Batch::default();
        for seq in 11..=13 {
            b.delete(Cf::Audit, &event_row(seq));
        }
        s.kv.commit(b).unwrap();
        let f = s.audit_verify().unwrap().fault.unwrap();
        assert_eq!(f.seq, 11);
        assert!(f.problem.contains("truncated"), "{f:?}");
        drop(s);
        // New events after a restart continue after the gap, so it stays detectable, and the
        // broken trail vouches for no record.
        let s = open(dir.path());
        assert_eq!(s.trail_broken_at(), Some(11));
        s.append_audit(vec![draft(99)]).unwrap();
        let f = s.audit_verify().unwrap().fault.unwrap();
        assert_eq!(f.seq, 11, "{f:?}");
    }
}
