//! The access part of the registry: permission checks for every operation, role assignments,
//! model policies, the environment filter, and version deletion. The decisions themselves live
//! in `crate::access`; this file applies them to callers and persists changes.

use std::sync::Arc;

use arca_core::api::{
    EffectivePermissions, Permission, PolicyInfo, PolicyUpdate, Principal, RoleAssignment,
    RoleChange, RoleListing, Status,
};
use arca_core::{ModelName, ModelVersion};

use super::audit::ev;
use super::{now, Registry, RegistryError, Result};
use crate::access::{validate_policy, AccessTable, StoredPolicy, Subject};
use crate::auth::{resolve_group, resolve_user, Caller};
use crate::manifest::VersionRecord;
use arca_core::audit::{Draft, EventKind};

/// How an operation names what it needs, for one clear refusal line.
fn scope_text(model: Option<&ModelName>) -> String {
    match model {
        Some(m) => format!("model {m}"),
        None => "every model (*)".into(),
    }
}

impl Registry {
    pub(super) fn access(&self) -> std::sync::RwLockReadGuard<'_, AccessTable> {
        self.access.read().unwrap_or_else(|p| p.into_inner())
    }

    fn subject(&self, c: &Caller) -> Subject {
        Subject {
            uid: c.uid,
            groups: c.groups.clone(),
            bootstrap_admin: c.admin,
        }
    }

    /// A uid without a socket (the mount's reader, an approver checked later): its groups come
    /// from the account database.
    fn subject_of_uid(&self, uid: u32, gid: u32) -> Subject {
        Subject {
            uid,
            groups: self.groups.groups_of(uid, gid),
            bootstrap_admin: self.admins.contains(uid),
        }
    }

    pub(super) fn allows(&self, c: &Caller, model: Option<&ModelName>, p: Permission) -> bool {
        self.access().allows(&self.subject(c), model, p)
    }

    /// Refuses unless `c` holds `p` on `model` (`None`: on every model). Checked before any
    /// state changes, so a refusal changes nothing.
    pub(super) fn require(
        &self,
        c: &Caller,
        model: Option<&ModelName>,
        p: Permission,
        what: &str,
    ) -> Result<()> {
        if self.allows(c, model, p) {
            return Ok(());
        }
        Err(self.refuse(
            c,
            model,
            None,
            "permission",
            format!(
                "permission denied: {} lacks {p} permission on {} (needed to {what})",
                c.user,
                scope_text(model)
            ),
        ))
    }

    /// Refuses a caller who holds no role at all, on any model or on `*` (bootstrap admins
    /// pass). What reading store-wide information needs: the trusted keys, `stats`, `status`
    /// and the metrics on the socket.
    pub fn require_some_role(&self, c: &Caller, what: &str) -> Result<()> {
        if self.access().has_any_role(&self.subject(c)) {
            return Ok(());
        }
        Err(self.refuse(
            c,
            None,
            None,
            "permission",
            format!(
                "permission denied: {} holds no role on any model (needed to {what})",
                c.user
            ),
        ))
    }

    /// Read on every model: for store-wide figures that would otherwise tell a pusher whether
    /// content was already stored (the metrics).
    pub fn require_read_all(&self, c: &Caller, what: &str) -> Result<()> {
        self.require(c, None, Permission::Read, what)
    }

    pub(super) fn may_read(&self, c: &Caller, rec: &VersionRecord) -> bool {
        self.allows(c, Some(&rec.metadata.name), Permission::Read)
    }

    /// Whether `uid` (with its primary `gid`) holds `p` on `model`.
    pub(super) fn uid_allows(&self, uid: u32, gid: u32, model: &ModelName, p: Permission) -> bool {
        self.access()
            .allows(&self.subject_of_uid(uid, gid), Some(model), p)
    }

    /// As `uid_allows`, for a uid known without its gid (an approver): its account's primary
    /// group.
    pub(super) fn uid_may(&self, uid: u32, model: &ModelName, p: Permission) -> bool {
        let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or(u32::MAX, |u| u.gid.as_raw());
        self.uid_allows(uid, gid, model, p)
    }

    /// The mount's READ decision for the uid of a lookup, opendir or open.
    pub fn may_read_uid(&self, uid: u32, gid: u32, name: &ModelName, v: &ModelVersion) -> bool {
        let ok = self.serves(name) && self.uid_allows(uid, gid, name, Permission::Read);
        if !ok {
            self.mount_refused(uid, name, Some(v));
        }
        ok
    }

    /// Whether the mount shows model `name` to `uid` at all (root listing, lookup, model
    /// directory, alias links): READ on it, from the roles alone, so the answer is the same
    /// whether the model exists or not. Records nothing (a listing asks about every model).
    pub fn may_list_uid(&self, uid: u32, gid: u32, name: &ModelName) -> bool {
        self.uid_allows(uid, gid, name, Permission::Read)
    }

    /// Whether this daemon's environment (`--environment`) may serve `model`.
    pub(super) fn serves(&self, model: &ModelName) -> bool {
        self.access().serves(model, self.environment.as_deref())
    }

    pub(super) fn require_served(&self, c: &Caller, name: &ModelName) -> Result<()> {
        if self.serves(name) {
            return Ok(());
        }
        let message = format!(
            "model {name} is not served in environment {}: its policy allows only {}",
            self.environment.as_deref().unwrap_or("-"),
            self.access().policy(name).environments.join(", ")
        );
        Err(self.refuse(c, Some(name), None, "policy", message))
    }

    // ---- roles ----

    fn principal(s: &str) -> Result<Principal> {
        if let Some(g) = s.strip_prefix("group:") {
            let (gid, name) = resolve_group(g)
                .ok_or_else(|| RegistryError::NotFound(format!("no group named {g}")))?;
            return Ok(Principal::Group { gid, name });
        }
        let (uid, name) =
            resolve_user(s).ok_or_else(|| RegistryError::NotFound(format!("no user named {s}")))?;
        Ok(Principal::User { uid, name })
    }

    pub fn assign_role(&self, c: &Caller, req: RoleChange) -> Result<RoleAssignment> {
        self.retrying(|| self.assign_role_once(c, req.clone()))
    }

    fn assign_role_once(&self, c: &Caller, req: RoleChange) -> Result<RoleAssignment> {
        self.require(c, req.model.as_ref(), Permission::Admin, "assign roles")?;
        let principal = Self::principal(&req.principal)?;
        let a = RoleAssignment {
            principal,
            role: req.role,
            model: req.model,
            granted_by: c.user.clone(),
            granted_at: now(),
        };
        let _g = self.commit_guard()?;
        let mut next = self.access().clone();
        if !next.assign(a.clone()) {
            return Err(RegistryError::AlreadyExists(format!(
                "{} already has role {} on {}",
                a.principal,
                a.role,
                a.model.as_ref().map_or("*", |m| m.as_str())
            )));
        }
        self.store
            .put_roles(&next.assignments, vec![role_event(c, "assign", &a)])?;
        // A fresh, bound record: whatever was wrong with the stored one no longer applies.
        next.faults.retain(|(m, _)| m.is_some());
        *self.access.write().unwrap_or_else(|p| p.into_inner()) = next;
        tracing::info!(arca_event = EventKind::RoleChange.as_str(), principal = %a.principal, role = %a.role, model = a.model.as_ref().map(tracing::field::display), by = %c.user, "role assigned");
        self.access_changed();
        Ok(a)
    }

    pub fn revoke_role(&self, c: &Caller, req: RoleChange) -> Result<RoleAssignment> {
        self.retrying(|| self.revoke_role_once(c, req.clone()))
    }

    fn revoke_role_once(&self, c: &Caller, req: RoleChange) -> Result<RoleAssignment> {
        self.require(c, req.model.as_ref(), Permission::Admin, "revoke roles")?;
        let principal = Self::principal(&req.principal)?;
        let _g = self.commit_guard()?;
        let mut next = self.access().clone();
        let removed = next
            .revoke(&principal, req.role, &req.model)
            .ok_or_else(|| {
                RegistryError::NotFound(format!(
                    "{principal} has no role {} on {}",
                    req.role,
                    req.model.as_ref().map_or("*", |m| m.as_str())
                ))
            })?;
        self.store
            .put_roles(&next.assignments, vec![role_event(c, "revoke", &removed)])?;
        next.faults.retain(|(m, _)| m.is_some());
        *self.access.write().unwrap_or_else(|p| p.into_inner()) = next;
        tracing::info!(arca_event = EventKind::RoleChange.as_str(), principal = %removed.principal, role = %removed.role, model = removed.model.as_ref().map(tracing::field::display), by = %c.user, "role revoked");
        self.access_changed();
        Ok(removed)
    }

    /// Assignments, filtered by user (including the user's groups) and model; with a user, also
    /// their effective permissions on `*`, on the named model, or on every model they touch.
    pub fn list_roles(
        &self,
        c: &Caller,
        user: Option<&str>,
        model: Option<&ModelName>,
    ) -> Result<RoleListing> {
        self.require(c, model, Permission::Admin, "list roles")?;
        let t = self.access();
        let subject = match user {
            Some(u) => {
                let (uid, name) = resolve_user(u)
                    .ok_or_else(|| RegistryError::NotFound(format!("no user named {u}")))?;
                let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map_or(uid, |u| u.gid.as_raw());
                Some((self.subject_of_uid(uid, gid), name))
            }
            None => None,
        };
        let assignments: Vec<RoleAssignment> = t
            .assignments
            .iter()
            .filter(|a| match &subject {
                Some((s, _)) => match &a.principal {
                    Principal::User { uid, .. } => uid == &s.uid,
                    Principal::Group { gid, .. } => s.groups.contains(gid),
                },
                None => true,
            })
            .filter(|a| model.is_none() || a.model.is_none() || a.model.as_ref() == model)
            .cloned()
            .collect();
        let mut effective: Vec<EffectivePermissions> = Vec::new();
        if let Some((s, _)) = &subject {
            match model {
                Some(m) => effective.push(t.effective(s, Some(m))),
                None => {
                    effective.push(t.effective(s, None));
                    let mut models: Vec<ModelName> =
                        assignments.iter().filter_map(|a| a.model.clone()).collect();
                    models.extend(self.catalog().keys().cloned());
                    models.sort();
                    models.dedup();
                    for m in models {
                        let e = t.effective(s, Some(&m));
                        if !e.permissions.is_empty() {
                            effective.push(e);
                        }
                    }
                }
            }
        }
        Ok(RoleListing {
            assignments,
            user: subject.map(|(_, n)| n),
            effective,
        })
    }

    // ---- policies ----

    pub fn policy(&self, c: &Caller, name: &ModelName) -> Result<PolicyInfo> {
        self.require(c, Some(name), Permission::Read, "read its policy")?;
        Ok(self.access().policy_info(name))
    }

    pub fn set_policy(&self, c: &Caller, name: &ModelName, u: PolicyUpdate) -> Result<PolicyInfo> {
        self.retrying(|| self.set_policy_once(c, name, u.clone()))
    }

    fn set_policy_once(&self, c: &Caller, name: &ModelName, u: PolicyUpdate) -> Result<PolicyInfo> {
        self.require(c, Some(name), Permission::Admin, "set its policy")?;
        let _g = self.commit_guard()?;
        // A locked model (its stored policy failed its audit check) starts again from the
        // defaults, not from the lock's deny-everything stand-in.
        let mut p = {
            let t = self.access();
            match t.locked.contains(name) {
                true => arca_core::api::Policy::default(),
                false => t.policy(name),
            }
        };
        if let Some(v) = u.require_approval {
            p.require_approval = v;
        }
        if let Some(v) = u.approvals {
            p.approvals = v;
        }
        if let Some(v) = u.environments {
            p.environments = v;
        }
        if let Some(v) = u.retention_days {
            p.retention_days = v;
        }
        if let Some(v) = u.max_versions {
            p.max_versions = v;
        }
        if let Some(v) = u.signing_required {
            p.signing_required = v;
        }
        validate_policy(&p).map_err(RegistryError::BadRequest)?;
        let stored = StoredPolicy {
            policy: p,
            updated_by: c.user.clone(),
            updated_at: now(),
        };
        let event = ev(c, EventKind::PolicyChange).model(name).detail(
            "policy",
            serde_json::to_string(&stored.policy).unwrap_or_default(),
        );
        self.store.put_policy(name, &stored, vec![event])?;
        let info = {
            let mut t = self.access.write().unwrap_or_else(|p| p.into_inner());
            t.policies.insert(name.clone(), stored);
            // Setting the policy again is how an admin unlocks a model whose record was stale.
            t.locked.remove(name);
            t.faults.retain(|(m, _)| m.as_ref() != Some(name));
            t.policy_info(name)
        };
        tracing::info!(arca_event = EventKind::PolicyChange.as_str(), model = %name, by = %c.user, "policy set");
        drop(_g);
        // The environment filter may now hide or show the model in the mount.
        self.changed();
        Ok(info)
    }

    // ---- delete ----

    /// Removes a version record. Its chunks stay until GC finds them unreferenced; a reader
    /// holding one of its files open keeps reading. A production version cannot be deleted
    /// (roll back or promote another first), nor the parent of a remaining version.
    pub fn delete_version(
        &self,
        c: &Caller,
        name: &ModelName,
        version: &ModelVersion,
    ) -> Result<()> {
        self.retrying(|| self.delete_version_once(c, name, version))
    }

    fn delete_version_once(
        &self,
        c: &Caller,
        name: &ModelName,
        version: &ModelVersion,
    ) -> Result<()> {
        self.require(c, Some(name), Permission::Delete, "delete versions")?;
        let _g = self.commit_guard()?;
        let rec = self.version(name, version).ok_or_else(|| {
            RegistryError::NotFound(format!("no version {version} of model {name}"))
        })?;
        if rec.status == Status::Production {
            return Err(RegistryError::BadRequest(format!(
                "{name} {version} is in production; roll back or promote another version before deleting it"
            )));
        }
        let children: Vec<String> = self
            .catalog()
            .get(name)
            .into_iter()
            .flat_map(|vs| vs.values())
            .filter(|r| r.metadata.parent_version.as_ref() == Some(version))
            .map(|r| r.metadata.version.to_string())
            .collect();
        if !children.is_empty() {
            return Err(RegistryError::BadRequest(format!(
                "{name} {version} is the parent of {}; delete those first",
                children.join(", ")
            )));
        }
        let event = ev(c, EventKind::Deletion)
            .model(name)
            .version(version)
            .detail("status", rec.status.to_string());
        self.store.delete_version(&rec, vec![event])?;
        self.remove_from_catalog(name, version);
        tracing::info!(arca_event = EventKind::Deletion.as_str(), model = %name, version = %version, by = %c.user, "version deleted");
        // Republished before the lock goes: GC (which takes it) must never find the version
        // still exposed by the mount while its chunks are candidates.
        self.changed();
        drop(_g);
        Ok(())
    }

    pub(super) fn remove_from_catalog(&self, name: &ModelName, version: &ModelVersion) {
        let mut cat = self.catalog.write().unwrap_or_else(|p| p.into_inner());
        if let Some(vs) = cat.get_mut(name) {
            vs.remove(version);
            if vs.is_empty() {
                cat.remove(name);
            }
        }
    }

    /// After a role change: cached group lookups may be stale and the mount re-checks access.
    pub(super) fn access_changed(&self) {
        self.groups.forget();
        self.changed();
    }

    /// Versions of `name` the policy's max-versions still admits a new one to.
    pub(super) fn check_max_versions(&self, c: &Caller, name: &ModelName) -> Result<()> {
        let max = self.access().policy(name).max_versions as usize;
        let have = self.catalog().get(name).map_or(0, |v| v.len());
        if have >= max {
            let message = format!(
                "model {name} already has {have} versions, the most its policy allows (max-versions {max}); delete old versions or raise the limit with `arca policy set {name} --max-versions N`"
            );
            return Err(self.refuse(c, Some(name), None, "policy", message));
        }
        Ok(())
    }
}

fn role_event(c: &Caller, action: &str, a: &RoleAssignment) -> Draft {
    let mut d = ev(c, EventKind::RoleChange)
        .detail("action", action)
        .detail("principal", a.principal.to_string())
        .detail("role", a.role.to_string());
    d.model = a.model.clone();
    d
}

/// Records a mount reader may see: those of models this environment serves.
pub(super) fn served(reg: &Registry, recs: Vec<Arc<VersionRecord>>) -> Vec<Arc<VersionRecord>> {
    recs.into_iter()
        .filter(|r| reg.serves(&r.metadata.name))
        .collect()
}
