//! The lifecycle part of the registry: status transitions, signed production approvals (four
//! eyes, one user counts once), at most one production version, rollback and history. Every
//! change rewrites the affected version records in one synced batch, with its history entry.

use std::collections::HashSet;
use std::sync::Arc;

use arca_core::api::{
    Approval, Approve, History, HistoryEvent, Lineage, Permission, Promote, Rollback, Status,
    Transition, TrustedKey, VersionInfo,
};
use arca_core::sign::ApprovalMessage;
use arca_core::{ModelName, ModelVersion};

use super::audit::ev;
use super::{now, Registry, RegistryError, Result};
use crate::auth::Caller;
use crate::manifest::VersionRecord;
use arca_core::audit::EventKind;

/// One requested status change: where to, under which ticket, why, why the previous
/// production version is deprecated (if it is), and how the audit trail names it.
struct StatusChange {
    to: Status,
    ticket: Option<String>,
    reason: Option<String>,
    prev_reason: String,
    kind: EventKind,
}

impl Registry {
    /// Checks an approval against the version it names, its approver and their trusted keys.
    fn check_approval(
        &self,
        rec: &VersionRecord,
        a: &Approval,
        trusted: &[TrustedKey],
    ) -> Result<(), String> {
        if a.approver_uid == rec.created_by_uid {
            return Err(format!(
                "{} published this version and cannot approve it (four eyes)",
                a.approver
            ));
        }
        // An approval counts only while its approver may promote the model: revoking the role
        // withdraws the approval.
        if !self.uid_may(a.approver_uid, &rec.metadata.name, Permission::Promote) {
            return Err(format!(
                "{} lacks promote permission on model {}",
                a.approver, rec.metadata.name
            ));
        }
        if !trusted
            .iter()
            .any(|k| k.uid == a.approver_uid && k.public_key == a.public_key)
        {
            return Err(format!(
                "key {} is not trusted for {}",
                a.public_key.fingerprint(),
                a.approver
            ));
        }
        let version = rec.metadata.version.to_string();
        let msg = ApprovalMessage {
            name: rec.metadata.name.as_str(),
            version: &version,
            root: &rec.merkle_root,
            ticket: &a.ticket,
            target: "production",
        };
        a.public_key
            .verify_approval(&msg, &a.signature)
            .map_err(|_| {
                "the approval's signature does not match this version, root and ticket".to_string()
            })
    }

    /// Records a signed approval for production. The same approver approving the same ticket
    /// again changes nothing: one user counts once.
    pub fn approve(
        &self,
        c: &Caller,
        name: &ModelName,
        version: &ModelVersion,
        req: Approve,
    ) -> Result<VersionInfo> {
        self.retrying(|| self.approve_once(c, name, version, req.clone()))
    }

    fn approve_once(
        &self,
        c: &Caller,
        name: &ModelName,
        version: &ModelVersion,
        req: Approve,
    ) -> Result<VersionInfo> {
        self.require(c, Some(name), Permission::Promote, "approve versions")?;
        if req.ticket.trim().is_empty() {
            return Err(RegistryError::BadRequest(
                "an approval needs a ticket".into(),
            ));
        }
        let _g = self.commit_guard()?;
        let rec = self.version(name, version).ok_or_else(|| {
            RegistryError::NotFound(format!("no version {version} of model {name}"))
        })?;
        let a = Approval {
            approver: c.user.clone(),
            approver_uid: c.uid,
            ticket: req.ticket,
            comment: req.comment,
            at: now(),
            public_key: req.public_key,
            signature: req.signature,
        };
        let trusted = self.store.trusted_keys()?;
        self.check_approval(&rec, &a, &trusted).map_err(|why| {
            if why.contains("four eyes") {
                self.refuse(
                    c,
                    Some(name),
                    Some(version),
                    "four_eyes",
                    format!("approval refused: {why}"),
                )
            } else {
                let message = format!("approval refused: {why}");
                self.refusal_event(c, Some(name), Some(version), "signature", &message);
                RegistryError::SignatureMismatch(message)
            }
        })?;
        if rec
            .approvals
            .iter()
            .any(|x| x.approver_uid == a.approver_uid && x.ticket == a.ticket)
        {
            return Ok(rec.info());
        }
        let event = ev(c, EventKind::Approval)
            .model(name)
            .version(version)
            .detail("ticket", a.ticket.clone())
            .detail("comment", a.comment.clone())
            .detail("key", a.public_key.fingerprint())
            .detail("root", rec.merkle_root.to_string());
        let mut new = (*rec).clone();
        new.approvals.push(a);
        self.store.put_versions(&[&new], vec![event])?;
        let info = new.info();
        self.replace(vec![new]);
        tracing::info!(arca_event = EventKind::Approval.as_str(), model = %name, version = %version, user = %c.user, "approval recorded");
        Ok(info)
    }

    /// Moves a version to another status along the lifecycle. Production needs enough valid
    /// approvals for this version's root under the given ticket, and moves the current
    /// production version to deprecated in the same atomic write.
    pub fn promote(
        &self,
        c: &Caller,
        name: &ModelName,
        version: &ModelVersion,
        req: Promote,
    ) -> Result<VersionInfo> {
        self.retrying(|| self.promote_once(c, name, version, req.clone()))
    }

    fn promote_once(
        &self,
        c: &Caller,
        name: &ModelName,
        version: &ModelVersion,
        req: Promote,
    ) -> Result<VersionInfo> {
        self.require(
            c,
            Some(name),
            Permission::Promote,
            "change a version's status",
        )?;
        let _g = self.commit_guard()?;
        let rec = self.version(name, version).ok_or_else(|| {
            RegistryError::NotFound(format!("no version {version} of model {name}"))
        })?;
        let allowed = rec.status.allowed_targets();
        if !allowed.contains(&req.to) {
            let list: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
            return Err(RegistryError::BadRequest(format!(
                "{name} {version} is {}; it can move to {}, not {}",
                rec.status,
                if list.is_empty() {
                    "nothing".to_string()
                } else {
                    list.join(" or ")
                },
                req.to
            )));
        }
        let policy = self.access().policy(name);
        if req.to == Status::Production && policy.require_approval {
            let ticket = req
                .ticket
                .as_deref()
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| {
                    RegistryError::BadRequest(
                        "promotion to production needs --ticket (the ticket the approvals name)"
                            .into(),
                    )
                })?;
            let trusted = self.store.trusted_keys()?;
            // One user counts once and one key counts once (a key trusted for two users does
            // not make two approvals).
            let (mut users, mut keys) = (HashSet::new(), HashSet::new());
            let valid = rec
                .approvals
                .iter()
                .filter(|a| a.ticket == ticket && self.check_approval(&rec, a, &trusted).is_ok())
                .filter(|a| {
                    let fresh =
                        !users.contains(&a.approver_uid) && !keys.contains(a.public_key.as_bytes());
                    users.insert(a.approver_uid);
                    keys.insert(*a.public_key.as_bytes());
                    fresh
                })
                .count();
            if valid < policy.approvals as usize {
                let message = format!(
                    "{name} {version} has {valid} valid approval(s) for ticket {ticket}; its policy requires {} from distinct users",
                    policy.approvals
                );
                return Err(self.refuse(c, Some(name), Some(version), "approvals", message));
            }
        }
        let prev_reason = format!("{version} took production");
        let change = StatusChange {
            to: req.to,
            ticket: req.ticket.clone(),
            reason: None,
            prev_reason,
            kind: EventKind::Promotion,
        };
        let info = self.apply_status(c, &rec, change)?;
        drop(_g);
        tracing::info!(arca_event = EventKind::Promotion.as_str(), model = %name, version = %version, to = %req.to, user = %c.user, "status changed");
        self.changed();
        Ok(info)
    }

    /// Puts back in production a version that was in production before: the current production
    /// version becomes deprecated, the target production, in one atomic write. No new approval
    /// is needed (the target was approved when it first went to production); the reason is
    /// recorded in both histories.
    pub fn rollback(&self, c: &Caller, name: &ModelName, req: Rollback) -> Result<VersionInfo> {
        self.retrying(|| self.rollback_once(c, name, req.clone()))
    }

    fn rollback_once(&self, c: &Caller, name: &ModelName, req: Rollback) -> Result<VersionInfo> {
        self.require(c, Some(name), Permission::Rollback, "roll back")?;
        if req.reason.trim().is_empty() {
            return Err(RegistryError::BadRequest(
                "a rollback needs --reason".into(),
            ));
        }
        let _g = self.commit_guard()?;
        let target = self.version(name, &req.to).ok_or_else(|| {
            RegistryError::NotFound(format!("no version {} of model {name}", req.to))
        })?;
        if target.status == Status::Production {
            return Err(RegistryError::BadRequest(format!(
                "{name} {} is already in production",
                req.to
            )));
        }
        if !target.history.iter().any(|t| t.to == Status::Production) {
            return Err(RegistryError::BadRequest(format!(
                "{name} {} was never in production; rollback only returns to an earlier production version",
                req.to
            )));
        }
        let prev_reason = format!("rollback to {}: {}", req.to, req.reason);
        let reason = Some(format!("rollback: {}", req.reason));
        let change = StatusChange {
            to: Status::Production,
            ticket: None,
            reason,
            prev_reason,
            kind: EventKind::Rollback,
        };
        let info = self.apply_status(c, &target, change)?;
        drop(_g);
        tracing::info!(arca_event = EventKind::Rollback.as_str(), model = %name, version = %req.to, user = %c.user, reason = %req.reason, "rolled back");
        self.changed();
        Ok(info)
    }

    /// Moves `rec` to `to` (the caller checked that it may, and holds the commit lock). Going
    /// to production deprecates the current production version, with `prev_reason`, in the same
    /// synced batch: never two production versions, never a change without its history.
    fn apply_status(
        &self,
        c: &Caller,
        rec: &VersionRecord,
        change: StatusChange,
    ) -> Result<VersionInfo> {
        let StatusChange {
            to,
            ticket,
            reason,
            prev_reason,
            kind,
        } = change;
        let name = &rec.metadata.name;
        let (at, mut seq) = (now(), self.next_seq(name));
        let mut transition = |from: Status, to: Status, reason: Option<String>| {
            let t = Transition {
                from,
                to,
                by: c.user.clone(),
                by_uid: c.uid,
                at,
                ticket: ticket.clone(),
                reason,
                seq,
            };
            seq += 1;
            t
        };
        let mut changed = Vec::new();
        let current = self.catalog().get(name).and_then(|vs| {
            vs.values()
                .find(|r| r.status == Status::Production)
                .cloned()
        });
        if let Some(prev) = current.filter(|_| to == Status::Production) {
            let mut p = (*prev).clone();
            p.history.push(transition(
                Status::Production,
                Status::Deprecated,
                Some(prev_reason),
            ));
            p.status = Status::Deprecated;
            changed.push(p);
        }
        let mut new = rec.clone();
        new.history.push(transition(rec.status, to, reason));
        new.status = to;
        let info = new.info();
        changed.push(new);
        // One event per status change, in the same write; the deprecation a promotion causes
        // is a promotion event of the version it deprecates.
        let events = changed
            .iter()
            .map(|r| {
                let t = r.history.last().cloned();
                let kind = if r.metadata.version == rec.metadata.version {
                    kind
                } else {
                    EventKind::Promotion
                };
                let mut d = ev(c, kind)
                    .model(&r.metadata.name)
                    .version(&r.metadata.version);
                if let Some(t) = t {
                    d = d
                        .detail("from", t.from.to_string())
                        .detail("to", t.to.to_string())
                        .detail("seq", t.seq.to_string());
                    if let Some(x) = t.ticket {
                        d = d.detail("ticket", x);
                    }
                    if let Some(x) = t.reason {
                        d = d.detail("reason", x);
                    }
                }
                d
            })
            .collect();
        self.store
            .put_versions(&changed.iter().collect::<Vec<_>>(), events)?;
        self.replace(changed);
        Ok(info)
    }

    /// A model's status changes, oldest first, and each version's lineage (parent chain).
    pub fn history(&self, c: &Caller, name: &ModelName) -> Result<History> {
        self.require(c, Some(name), Permission::Read, "read its history")?;
        let cat = self.catalog();
        let versions = cat
            .get(name)
            .ok_or_else(|| RegistryError::NotFound(format!("no model named {name}")))?;
        let visible: Vec<&Arc<VersionRecord>> =
            versions.values().filter(|r| self.may_read(c, r)).collect();
        if visible.is_empty() {
            return Err(RegistryError::NotFound(format!("no model named {name}")));
        }
        let mut events: Vec<HistoryEvent> = visible
            .iter()
            .flat_map(|r| {
                r.history.iter().map(|t| HistoryEvent {
                    version: r.metadata.version.clone(),
                    transition: t.clone(),
                })
            })
            .collect();
        events.sort_by_key(|e| e.transition.seq);
        let lineage = visible
            .iter()
            .map(|r| {
                let mut ancestors = Vec::new();
                let mut next = r.metadata.parent_version.clone();
                // Parents are checked to exist at push, so the chain is finite; the bound guards
                // against a damaged store all the same.
                while let Some(p) = next.take() {
                    if ancestors.contains(&p) || ancestors.len() > versions.len() {
                        break;
                    }
                    next = versions
                        .get(&p)
                        .and_then(|pr| pr.metadata.parent_version.clone());
                    ancestors.push(p);
                }
                Lineage {
                    version: r.metadata.version.clone(),
                    ancestors,
                }
            })
            .collect();
        Ok(History { events, lineage })
    }

    /// The next sequence number for a change of `name`'s statuses (call under the commit lock).
    fn next_seq(&self, name: &ModelName) -> u64 {
        self.catalog()
            .get(name)
            .map(|vs| {
                vs.values()
                    .flat_map(|r| r.history.iter().map(|t| t.seq))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
            + 1
    }

    /// Swaps updated records into the catalog.
    fn replace(&self, recs: Vec<VersionRecord>) {
        let mut cat = self.catalog.write().unwrap_or_else(|p| p.into_inner());
        for r in recs {
            cat.entry(r.metadata.name.clone())
                .or_default()
                .insert(r.metadata.version.clone(), Arc::new(r));
        }
    }
}
