//! Freshness of sealed records: every mutable record (version records, role assignments,
//! policies, trusted keys) carries, inside its seal, the seq and hash of the audit event whose
//! write put it there; that event names the record's row (`RecordWrite`). The record envelope
//! alone binds a value to its column family and row but not to time, so without this an older
//! value of the same row (a revoked role, a weaker policy, an earlier status) could be put back
//! with a valid tag. With it, a record is used only if it matches the newest event for its row
//! in the authenticated chain: an older one names an older event and is refused as replayed.
//!
//! The map from row to newest event is built at open by walking the chain (the same walk
//! `audit verify` checks) and kept current by every audited commit. A trail that does not verify
//! cannot say which event is newest for any row, so while it is broken no record is trusted.

use std::collections::HashMap;

use arca_core::audit::{AuditEvent, ChainFault, EventHash, EventKind, RecordWrite};
use arca_core::id::RowKey;

use super::kv::Cf;

/// The plaintext prefix of a bound record: seq (u64 BE) and event hash (32 bytes).
pub const PREFIX_LEN: usize = 8 + 32;

/// The event a record names as its writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub seq: u64,
    pub hash: EventHash,
}

impl Binding {
    pub fn of(e: &AuditEvent) -> Self {
        Self {
            seq: e.seq,
            hash: e.hash,
        }
    }

    /// `seq || hash || json`: what goes inside the record's seal.
    pub fn wrap(&self, json: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(PREFIX_LEN + json.len());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(self.hash.as_bytes());
        out.extend_from_slice(json);
        out
    }

    /// Splits an opened record into its binding and its JSON.
    pub fn split(plain: &[u8]) -> Option<(Self, &[u8])> {
        if plain.len() < PREFIX_LEN {
            return None;
        }
        let (head, json) = plain.split_at(PREFIX_LEN);
        let seq = u64::from_be_bytes(head[..8].try_into().ok()?);
        let hash = EventHash(head[8..].try_into().ok()?);
        Some((Self { seq, hash }, json))
    }
}

/// The newest event for a row, and whether it deleted the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Newest {
    binding: Binding,
    deleted: bool,
}

/// Why a record is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    #[error("its audit trail is broken at event {0}, so no record can be checked against it")]
    TrailBroken(u64),
    #[error("it lacks the audit binding of store format 2")]
    Unbound,
    #[error("no event in the audit trail wrote it (it names event {0})")]
    Unknown(u64),
    #[error("it names event {found}, but the newest event for its row is {newest}: an older record put back")]
    Replayed { found: u64, newest: u64 },
    #[error("event {0} deleted its row, yet a record stands there: a deleted record put back")]
    Deleted(u64),
    #[error("it names event {0}, but its hash differs from that event's")]
    Forged(u64),
}

/// Row → newest event, for the mutable column families.
#[derive(Debug, Default)]
pub struct Bindings {
    newest: HashMap<(&'static str, RowKey), Newest>,
    /// The first fault of the chain found at open (its seq), if any.
    broken_at: Option<u64>,
    /// The chain holds an event only format 2 writes (a `store` event, or one naming records).
    format2: bool,
    /// The chain holds a `store` event (the creation or the upgrade).
    store_event: bool,
}

/// The column families whose records are bound to their events; `meta` for a fleet host's
/// pins (`store/cache.rs`), its only bound row.
fn cf_name(name: &str) -> Option<&'static str> {
    [Cf::Versions, Cf::Acl, Cf::Keys, Cf::Meta]
        .into_iter()
        .map(Cf::name)
        .find(|n| *n == name)
}

impl Bindings {
    /// Records what `e` wrote (call in chain order, for every event).
    pub fn apply(&mut self, e: &AuditEvent) {
        self.store_event |= e.kind == EventKind::Store;
        self.format2 |= self.store_event || !e.records.is_empty();
        for RecordWrite { cf, row, deleted } in &e.records {
            if let Some(cf) = cf_name(cf) {
                self.newest.insert(
                    (cf, *row),
                    Newest {
                        binding: Binding::of(e),
                        deleted: *deleted,
                    },
                );
            }
        }
    }

    /// Builds the map from a chain walk: `events` are the events that passed the chain check,
    /// in order; `fault` is the check's first fault.
    pub fn from_chain<'a>(
        events: impl IntoIterator<Item = &'a AuditEvent>,
        fault: Option<&ChainFault>,
    ) -> Self {
        let mut b = Self {
            broken_at: fault.map(|f| f.seq),
            ..Self::default()
        };
        for e in events {
            b.apply(e);
        }
        b
    }

    pub fn broken_at(&self) -> Option<u64> {
        self.broken_at
    }

    /// Marks the chain broken at `seq` (after a walk that `apply`d its events).
    pub fn set_broken(&mut self, seq: u64) {
        self.broken_at = Some(seq);
    }

    pub fn format2(&self) -> bool {
        self.format2
    }

    pub fn saw_store_event(&self) -> bool {
        self.store_event
    }

    /// Checks a record's binding against the newest event for its row.
    pub fn check(&self, cf: Cf, row: &[u8], found: Option<Binding>) -> Result<(), Stale> {
        if let Some(at) = self.broken_at {
            return Err(Stale::TrailBroken(at));
        }
        let found = found.ok_or(Stale::Unbound)?;
        let Ok(row) = <[u8; 32]>::try_from(row) else {
            return Err(Stale::Unknown(found.seq));
        };
        match self.newest.get(&(cf.name(), RowKey(row))) {
            None => Err(Stale::Unknown(found.seq)),
            Some(n) if n.binding.seq != found.seq => Err(if n.deleted {
                Stale::Deleted(n.binding.seq)
            } else {
                Stale::Replayed {
                    found: found.seq,
                    newest: n.binding.seq,
                }
            }),
            Some(n) if n.binding.hash != found.hash => Err(Stale::Forged(found.seq)),
            Some(n) if n.deleted => Err(Stale::Deleted(n.binding.seq)),
            Some(_) => Ok(()),
        }
    }

    /// Rows of `cf` that the trail says hold a record (not deleted since).
    pub fn live_rows(&self, cf: Cf) -> Vec<(RowKey, u64)> {
        self.newest
            .iter()
            .filter(|((c, _), n)| *c == cf.name() && !n.deleted)
            .map(|((_, r), n)| (*r, n.binding.seq))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arca_core::audit::{Draft, EventKind, GENESIS};

    fn event(seq: u64, prev: EventHash, rows: &[(u8, bool)]) -> AuditEvent {
        let mut d = Draft::new(EventKind::RoleChange, "root");
        d.records = rows
            .iter()
            .map(|(r, deleted)| RecordWrite {
                cf: "acl".into(),
                row: RowKey([*r; 32]),
                deleted: *deleted,
            })
            .collect();
        AuditEvent::chain(d, seq, seq, prev)
    }

    #[test]
    fn only_the_newest_write_of_a_row_is_accepted() {
        let e1 = event(1, GENESIS, &[(1, false), (2, false)]);
        let e2 = event(2, e1.hash, &[(1, false)]);
        let e3 = event(3, e2.hash, &[(2, true)]);
        let b = Bindings::from_chain([&e1, &e2, &e3], None);
        let row = |r: u8| [r; 32];
        assert_eq!(b.check(Cf::Acl, &row(1), Some(Binding::of(&e2))), Ok(()));
        assert_eq!(
            b.check(Cf::Acl, &row(1), Some(Binding::of(&e1))),
            Err(Stale::Replayed {
                found: 1,
                newest: 2
            })
        );
        assert_eq!(
            b.check(Cf::Acl, &row(2), Some(Binding::of(&e1))),
            Err(Stale::Deleted(3))
        );
        assert_eq!(
            b.check(Cf::Acl, &row(9), Some(Binding::of(&e1))),
            Err(Stale::Unknown(1))
        );
        // The same row in another column family is another record.
        assert_eq!(
            b.check(Cf::Versions, &row(1), Some(Binding::of(&e2))),
            Err(Stale::Unknown(2))
        );
        let forged = Binding {
            seq: 2,
            hash: e1.hash,
        };
        assert_eq!(
            b.check(Cf::Acl, &row(1), Some(forged)),
            Err(Stale::Forged(2))
        );
        assert_eq!(b.check(Cf::Acl, &row(1), None), Err(Stale::Unbound));
        assert_eq!(b.live_rows(Cf::Acl), vec![(RowKey(row(1)), 2)]);
    }

    #[test]
    fn a_broken_trail_trusts_no_record() {
        let e1 = event(1, GENESIS, &[(1, false)]);
        let fault = ChainFault {
            seq: 2,
            problem: "truncated".into(),
        };
        let b = Bindings::from_chain([&e1], Some(&fault));
        assert_eq!(
            b.check(Cf::Acl, &[1; 32], Some(Binding::of(&e1))),
            Err(Stale::TrailBroken(2))
        );
    }

    #[test]
    fn wrap_and_split_round_trip() {
        let b = Binding {
            seq: 77,
            hash: EventHash([5; 32]),
        };
        let w = b.wrap(b"{}");
        assert_eq!(Binding::split(&w), Some((b, &b"{}"[..])));
        assert_eq!(Binding::split(&w[..10]), None);
    }
}
