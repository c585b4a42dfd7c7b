//! The audit part of the registry: building events for what happens, recording refusals,
//! reads and integrity failures, and answering `arca audit ls|verify|report`. State changes
//! carry their events into the store's batch (see `store::audit`); this file only builds them.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use arca_core::api::{
    ApprovalRecord, AuditVerify, ComplianceReport, HostAudit, Permission, ProductionChange,
};
use arca_core::audit::{AuditEvent, Draft, EventKind};
use arca_core::{ChunkId, ModelName, ModelVersion, RelPath};

use super::{lock, Registry, RegistryError, Result};
use crate::auth::{user_name, Caller};
use crate::store::audit::{now_ms, AuditFilter};

/// Most events one `audit ls` returns.
pub const MAX_LIMIT: usize = 100_000;

/// An event by `c`, with its peer credentials.
pub(super) fn ev(c: &Caller, kind: EventKind) -> Draft {
    Draft::new(kind, c.user.clone()).peer(c.uid, c.pid)
}

impl Registry {
    /// Appends events that go with no state change. A failure to record is logged, not
    /// returned: the request it describes has already been decided.
    pub(super) fn record(&self, events: Vec<Draft>) {
        if let Err(e) = self.store.append_audit(events) {
            tracing::error!("appending to the audit trail failed: {e}");
        }
    }

    /// A refusal: recorded in the trail, logged, and returned as the error the caller sees.
    pub(super) fn refuse(
        &self,
        c: &Caller,
        model: Option<&ModelName>,
        version: Option<&ModelVersion>,
        why: &str,
        message: String,
    ) -> RegistryError {
        self.refusal_event(c, model, version, why, &message);
        RegistryError::PermissionDenied(message)
    }

    /// Records a refusal whose error is not a permission error (a bad signature, an
    /// untrusted key, content that does not match what was signed).
    pub(super) fn refusal_event(
        &self,
        c: &Caller,
        model: Option<&ModelName>,
        version: Option<&ModelVersion>,
        why: &str,
        message: &str,
    ) {
        let mut d = ev(c, EventKind::Refusal)
            .detail("reason", why)
            .detail("message", message);
        d.model = model.cloned();
        d.version = version.cloned();
        tracing::warn!(
            arca_event = EventKind::Refusal.as_str(),
            model = model.map(tracing::field::display),
            version = version.map(tracing::field::display),
            user = %c.user,
            uid = c.uid,
            "refused: {message}"
        );
        self.record(vec![d]);
    }

    /// The mount refused a reader a version, or (`None`) a model's directory or links:
    /// recorded once per uid and version (or model) per daemon run (a refused `ls -R` would
    /// otherwise write one event per lookup).
    pub fn mount_refused(&self, uid: u32, model: &ModelName, version: Option<&ModelVersion>) {
        let key = (uid, model.clone(), version.cloned(), None);
        if first_sighting(&mut lock(&self.mount_seen), key) {
            let mut d = Draft::new(EventKind::Refusal, user_name(uid))
                .model(model)
                .peer(uid, None)
                .detail("reason", "permission")
                .detail("message", "read refused through the mount")
                .detail("via", "mount");
            d.version = version.cloned();
            self.record(vec![d]);
        }
    }

    /// A file opened through the mount: the first open per uid, file and daemon run.
    pub fn mount_opened(
        &self,
        uid: u32,
        pid: u32,
        model: &ModelName,
        version: &ModelVersion,
        path: &RelPath,
    ) {
        self.cache_touch(model, version);
        let key = (
            uid,
            model.clone(),
            Some(version.clone()),
            Some(path.clone()),
        );
        if first_sighting(&mut lock(&self.mount_seen), key) {
            self.record(vec![Draft::new(EventKind::Access, user_name(uid))
                .model(model)
                .version(version)
                .peer(uid, i32::try_from(pid).ok())
                .detail("file", path.as_str())
                .detail("via", "mount")]);
        }
    }

    /// A chunk that failed verification, wherever it was read.
    pub fn integrity_event(
        &self,
        via: &str,
        model: &ModelName,
        version: &ModelVersion,
        path: Option<&RelPath>,
        chunk: Option<&ChunkId>,
        problem: &str,
    ) {
        let mut d = Draft::new(EventKind::IntegrityViolation, "arcad")
            .model(model)
            .version(version)
            .detail("via", via)
            .detail("problem", problem);
        if let Some(p) = path {
            d = d.detail("file", p.as_str());
        }
        if let Some(c) = chunk {
            d = d.detail("chunk", c.to_string());
        }
        self.record(vec![d]);
    }

    // ---- queries ----

    /// Events matching the filter. With a model: READ on it; without: admin on every model.
    pub fn audit_ls(&self, c: &Caller, mut f: AuditFilter) -> Result<Vec<AuditEvent>> {
        match f.model.as_deref() {
            Some(m) => {
                let m: ModelName = m
                    .parse()
                    .map_err(|e| RegistryError::BadRequest(format!("{e}")))?;
                self.require(c, Some(&m), Permission::Read, "read its audit events")?;
            }
            None => self.require(c, None, Permission::Admin, "read the whole audit trail")?,
        }
        if f.limit == 0 || f.limit > MAX_LIMIT {
            f.limit = MAX_LIMIT;
        }
        Ok(self.store.audit_query(&f)?)
    }

    /// On a fleet host, every host's shipped audit segments, checked, and the events `keep`
    /// wants from the other hosts' (this host's own are in its trail already). A store out of
    /// reach is a fault of every host: the answer does not cover them.
    fn fleet_audit(
        &self,
        keep: &dyn Fn(&AuditEvent) -> bool,
    ) -> Option<(Vec<HostAudit>, Vec<AuditEvent>)> {
        let f = self.fleet.as_ref()?;
        let own = f.cfg.host.as_str();
        let wanted = |host: &str, e: &AuditEvent| host != own && keep(e);
        let mut hosts = Vec::new();
        let mut events = Vec::new();
        match f.fleet_trails(&self.store, &wanted) {
            Ok(trails) => {
                for t in trails {
                    if let Some(fault) = &t.fault {
                        tracing::error!(host = %t.host, "fleet audit segments: {fault}");
                    }
                    hosts.push(HostAudit {
                        host: t.host,
                        segments: t.segments,
                        shipped_through: t.through,
                        events: t.count,
                        events_in_report: t.events.len() as u64,
                        fault: t.fault,
                        heartbeat_age_secs: t.heartbeat_age_secs,
                    });
                    events.extend(t.events);
                }
            }
            Err(e) => {
                for host in f.host_names() {
                    hosts.push(HostAudit {
                        host,
                        segments: 0,
                        shipped_through: 0,
                        events: 0,
                        events_in_report: 0,
                        fault: Some(format!("not checked: {e}")),
                        heartbeat_age_secs: None,
                    });
                }
            }
        }
        Some((hosts, events))
    }

    pub fn audit_verify(&self, c: &Caller) -> Result<AuditVerify> {
        self.require(c, None, Permission::Admin, "verify the audit trail")?;
        let fleet_hosts = self.fleet_audit(&|_| false).map(|(h, _)| h);
        let r = self.store.audit_verify()?;
        if let Some(f) = &r.fault {
            tracing::error!(
                seq = f.seq,
                "audit trail verification failed: {}",
                f.problem
            );
        }
        let hosts_ok = fleet_hosts.iter().flatten().all(|h| h.fault.is_none());
        Ok(AuditVerify {
            ok: r.fault.is_none() && hosts_ok,
            fleet_hosts,
            events: r.events,
            checkpoints: r.checkpoints,
            head_count: r.head.as_ref().map(|h| h.count),
            head_hash: r.head.as_ref().map(|h| h.head),
            fault: r.fault,
            public_key: r.public_key,
        })
    }

    /// The compliance report of `name` for `[from_ms, to_ms]`.
    pub fn audit_report(
        &self,
        c: &Caller,
        name: &ModelName,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<ComplianceReport> {
        self.require(
            c,
            Some(name),
            Permission::Read,
            "read its compliance report",
        )?;
        let mut events = self.store.audit_query(&AuditFilter {
            model: Some(name.as_str().to_owned()),
            since_ms: Some(from_ms),
            until_ms: Some(to_ms),
            limit: usize::MAX,
            ..AuditFilter::default()
        })?;
        let chain = self.store.audit_verify()?;
        // On a fleet host, the other hosts' reads, refusals and integrity failures of this
        // model (their state changes are in this host's trail, from the log).
        let fleet = self.fleet_audit(&|e| {
            e.model.as_ref() == Some(name) && (from_ms..=to_ms).contains(&e.at_ms)
        });
        let host_fault = fleet
            .as_ref()
            .and_then(|(hosts, _)| hosts.iter().find_map(|h| h.fault.clone()));
        let fleet_hosts = fleet.map(|(hosts, theirs)| {
            events.extend(theirs);
            hosts
        });
        let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
        let mut users = BTreeSet::new();
        let mut versions = BTreeSet::new();
        let mut production = Vec::new();
        let mut approvals = Vec::new();
        for e in &events {
            *by_type.entry(e.kind.to_string()).or_default() += 1;
            users.insert(e.user.clone());
            if let Some(v) = &e.version {
                versions.insert(v.to_string());
            }
            let detail = |k: &str| e.details.get(k).cloned();
            match e.kind {
                EventKind::Promotion | EventKind::Rollback => {
                    let (from, to) = (
                        detail("from").unwrap_or_default(),
                        detail("to").unwrap_or_default(),
                    );
                    if from == "production" || to == "production" {
                        production.push(ProductionChange {
                            at_ms: e.at_ms,
                            version: e.version.clone(),
                            from,
                            to,
                            by: e.user.clone(),
                            ticket: detail("ticket"),
                            reason: detail("reason"),
                        });
                    }
                }
                EventKind::Approval => approvals.push(ApprovalRecord {
                    at_ms: e.at_ms,
                    version: e.version.clone(),
                    approver: e.user.clone(),
                    ticket: detail("ticket"),
                }),
                _ => {}
            }
        }
        Ok(ComplianceReport {
            model: name.clone(),
            from_ms,
            to_ms,
            generated_at_ms: now_ms(),
            total_events: events.len() as u64,
            events_by_type: by_type,
            unique_users: users.into_iter().collect(),
            versions_affected: versions.into_iter().collect(),
            chain_intact: chain.fault.is_none() && host_fault.is_none(),
            chain_fault: chain.fault.map(|f| f.problem).or(host_fault),
            production_history: production,
            approvals,
            fleet_hosts,
        })
    }
}

/// What the mount has already recorded this run: (uid, model, version or None for a model's
/// directory, file or None for a refusal).
pub(super) type MountSeen = HashSet<(u32, ModelName, Option<ModelVersion>, Option<RelPath>)>;

/// Most keys `MountSeen` holds (a few MiB). When full it is emptied: later opens are then
/// recorded again, so the bound costs duplicate events, never a missing one.
const MOUNT_SEEN_MAX: usize = 65_536;

/// Whether `key` is new to `seen` (and so should be recorded), keeping `seen` bounded.
fn first_sighting(
    seen: &mut MountSeen,
    key: (u32, ModelName, Option<ModelVersion>, Option<RelPath>),
) -> bool {
    if seen.contains(&key) {
        return false;
    }
    if seen.len() >= MOUNT_SEEN_MAX {
        seen.clear();
    }
    seen.insert(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_seen_records_each_key_once_and_stays_bounded() {
        let name: ModelName = "m".parse().unwrap();
        let version: ModelVersion = "1.0.0".parse().unwrap();
        let file: RelPath = "w.bin".parse().unwrap();
        let key = |uid| (uid, name.clone(), Some(version.clone()), Some(file.clone()));
        let mut seen = MountSeen::new();
        assert!(first_sighting(&mut seen, key(1)));
        assert!(!first_sighting(&mut seen, key(1)));
        for uid in 2..=(MOUNT_SEEN_MAX as u32 + 10) {
            assert!(first_sighting(&mut seen, key(uid)));
            assert!(seen.len() <= MOUNT_SEEN_MAX);
        }
        // Emptied when it filled up: uid 1 is recorded again rather than never.
        assert!(first_sighting(&mut seen, key(1)));
    }
}
