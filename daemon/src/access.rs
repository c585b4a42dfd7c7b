//! Who may do what: role assignments and per-model policies, as plain data with the decisions
//! over them. No I/O here: the registry loads the table from the store, asks it, and writes
//! changes back through the store; the decisions are unit-tested below.
//!
//! Rules:
//! - A subject's permissions on a model are the union of the roles assigned to the user and to
//!   each of its groups, for that model and for `*`. There are no deny rules: an operation is
//!   refused unless some assignment grants its permission.
//! - Bootstrap admins (root, the daemon's own user, and any configured) hold every permission.
//! - A model without a policy of its own runs on `Policy::default()` (the design sketch's).

use std::collections::{BTreeMap, BTreeSet};

use arca_core::api::{
    EffectivePermissions, Permission, Policy, PolicyInfo, Principal, Role, RoleAssignment,
};
use arca_core::ModelName;

/// Whoever asks: a uid with its groups (from the socket's peer credentials, or for the mount,
/// from the account database).
#[derive(Debug, Clone)]
pub struct Subject {
    pub uid: u32,
    pub groups: Vec<u32>,
    pub bootstrap_admin: bool,
}

impl Subject {
    fn matches(&self, p: &Principal) -> bool {
        match p {
            Principal::User { uid, .. } => *uid == self.uid,
            Principal::Group { gid, .. } => self.groups.contains(gid),
        }
    }
}

/// A model's stored policy with who set it last.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredPolicy {
    pub policy: Policy,
    pub updated_by: String,
    pub updated_at: u64,
}

/// Every role assignment and every explicit policy.
#[derive(Debug, Clone, Default)]
pub struct AccessTable {
    pub assignments: Vec<RoleAssignment>,
    pub policies: BTreeMap<ModelName, StoredPolicy>,
    /// Models whose stored policy failed its audit check (a replayed or unbound record): until
    /// an admin sets the policy again, nobody but a bootstrap admin holds any permission on
    /// them, no environment serves them and retention removes nothing of them.
    pub locked: BTreeSet<ModelName>,
    /// What was wrong with the stored records this table was built from (for `verify`): the
    /// model a fault concerns, or `None` for the role assignments.
    pub faults: Vec<(Option<ModelName>, String)>,
}

fn scope_covers(scope: &Option<ModelName>, model: Option<&ModelName>) -> bool {
    match (scope, model) {
        (None, _) => true,
        (Some(s), Some(m)) => s == m,
        // A model-scoped role says nothing about "every model".
        (Some(_), None) => false,
    }
}

impl AccessTable {
    /// The assignments that apply to `s` on `model` (`None`: on every model).
    fn applicable<'a>(
        &'a self,
        s: &'a Subject,
        model: Option<&'a ModelName>,
    ) -> impl Iterator<Item = &'a RoleAssignment> + 'a {
        self.assignments
            .iter()
            .filter(move |a| s.matches(&a.principal) && scope_covers(&a.model, model))
    }

    /// Whether `s` holds `p` on `model`; `model: None` asks for `p` on every model (what
    /// store-wide operations such as trusting a key need).
    pub fn allows(&self, s: &Subject, model: Option<&ModelName>, p: Permission) -> bool {
        s.bootstrap_admin
            || (!model.is_some_and(|m| self.locked.contains(m))
                && self
                    .applicable(s, model)
                    .any(|a| a.role.permissions().contains(&p)))
    }

    /// Whether `s` holds any role at all, on some model or on `*`.
    pub fn has_any_role(&self, s: &Subject) -> bool {
        s.bootstrap_admin || self.assignments.iter().any(|a| s.matches(&a.principal))
    }

    /// The permissions of `s` on `model`, and the assignments they come from.
    pub fn effective(&self, s: &Subject, model: Option<&ModelName>) -> EffectivePermissions {
        if s.bootstrap_admin {
            return EffectivePermissions {
                model: model.cloned(),
                permissions: Permission::ALL.to_vec(),
                via: vec!["bootstrap admin".into()],
            };
        }
        let mut perms = BTreeSet::new();
        let mut via = Vec::new();
        if model.is_some_and(|m| self.locked.contains(m)) {
            return EffectivePermissions {
                model: model.cloned(),
                permissions: Vec::new(),
                via: vec!["none: the model's policy record failed its audit check".into()],
            };
        }
        for a in self.applicable(s, model) {
            perms.extend(a.role.permissions().iter().copied());
            via.push(format!(
                "{} as {} on {}",
                a.principal,
                a.role,
                a.model.as_ref().map_or("*", |m| m.as_str())
            ));
        }
        EffectivePermissions {
            model: model.cloned(),
            permissions: perms.into_iter().collect(),
            via,
        }
    }

    /// Adds an assignment; false when the same principal already has that role on that scope.
    pub fn assign(&mut self, a: RoleAssignment) -> bool {
        if self.find(&a.principal, a.role, &a.model).is_some() {
            return false;
        }
        self.assignments.push(a);
        true
    }

    /// Removes an assignment, returning it (None when there was no such assignment).
    pub fn revoke(
        &mut self,
        p: &Principal,
        role: Role,
        model: &Option<ModelName>,
    ) -> Option<RoleAssignment> {
        let i = self.find(p, role, model)?;
        Some(self.assignments.remove(i))
    }

    fn find(&self, p: &Principal, role: Role, model: &Option<ModelName>) -> Option<usize> {
        self.assignments
            .iter()
            .position(|a| a.principal.same(p) && a.role == role && &a.model == model)
    }

    pub fn policy(&self, model: &ModelName) -> Policy {
        if self.locked.contains(model) {
            return Policy {
                environments: Vec::new(),
                retention_days: u32::MAX,
                ..Policy::default()
            };
        }
        self.policies
            .get(model)
            .map(|p| p.policy.clone())
            .unwrap_or_default()
    }

    pub fn policy_info(&self, model: &ModelName) -> PolicyInfo {
        let stored = self.policies.get(model);
        PolicyInfo {
            model: model.clone(),
            policy: self.policy(model),
            explicit: stored.is_some(),
            updated_by: stored.map(|p| p.updated_by.clone()),
            updated_at: stored.map(|p| p.updated_at),
        }
    }

    /// Whether `model` may be served by a daemon running in `environment` (`None`: the daemon
    /// was not given one and serves every model).
    pub fn serves(&self, model: &ModelName, environment: Option<&str>) -> bool {
        match environment {
            None => !self.locked.contains(model),
            Some(env) => self.policy(model).environments.iter().any(|e| e == env),
        }
    }
}

/// Checks a policy for values that could never be met or make no sense.
pub fn validate_policy(p: &Policy) -> Result<(), String> {
    if p.require_approval && p.approvals == 0 {
        return Err("--approvals must be at least 1 while approval is required".into());
    }
    if p.approvals > 16 {
        return Err("--approvals may be at most 16".into());
    }
    if p.max_versions == 0 {
        return Err("--max-versions must be at least 1".into());
    }
    if p.environments.is_empty() {
        return Err("--environments must name at least one environment".into());
    }
    for e in &p.environments {
        let ok = !e.is_empty()
            && e.len() <= 64
            && e.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!(
                "environment {e:?} must be 1-64 characters of letters, digits, '-' and '_'"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32) -> Principal {
        Principal::User {
            uid,
            name: format!("u{uid}"),
        }
    }

    fn assignment(p: Principal, role: Role, model: Option<&str>) -> RoleAssignment {
        RoleAssignment {
            principal: p,
            role,
            model: model.map(|m| m.parse().unwrap()),
            granted_by: "root".into(),
            granted_at: 0,
        }
    }

    fn subject(uid: u32, groups: &[u32]) -> Subject {
        Subject {
            uid,
            groups: groups.to_vec(),
            bootstrap_admin: false,
        }
    }

    #[test]
    fn nothing_is_allowed_without_an_assignment() {
        let t = AccessTable::default();
        let m: ModelName = "m".parse().unwrap();
        for p in Permission::ALL {
            assert!(!t.allows(&subject(1000, &[1000]), Some(&m), p));
        }
        let admin = Subject {
            bootstrap_admin: true,
            ..subject(0, &[])
        };
        assert!(t.allows(&admin, Some(&m), Permission::Admin));
        assert!(t.allows(&admin, None, Permission::Admin));
        assert!(!t.has_any_role(&subject(1000, &[1000])));
        assert!(t.has_any_role(&admin));
    }

    #[test]
    fn any_role_counts_for_some_role() {
        let mut t = AccessTable::default();
        t.assign(assignment(
            Principal::Group {
                gid: 50,
                name: "ml".into(),
            },
            Role::Viewer,
            Some("a"),
        ));
        assert!(t.has_any_role(&subject(1000, &[1000, 50])));
        assert!(!t.has_any_role(&subject(1001, &[1001])));
    }

    #[test]
    fn model_group_and_wildcard_assignments_add_up() {
        let mut t = AccessTable::default();
        let (a, b): (ModelName, ModelName) = ("a".parse().unwrap(), "b".parse().unwrap());
        t.assign(assignment(user(1000), Role::Viewer, None));
        t.assign(assignment(
            Principal::Group {
                gid: 50,
                name: "ml".into(),
            },
            Role::MlEngineer,
            Some("a"),
        ));
        let member = subject(1000, &[1000, 50]);
        let outsider = subject(1000, &[1000]);
        assert!(t.allows(&member, Some(&a), Permission::Promote));
        assert!(!t.allows(&member, Some(&b), Permission::Promote));
        assert!(t.allows(&member, Some(&b), Permission::Read));
        assert!(!t.allows(&outsider, Some(&a), Permission::Write));
        // A model-scoped grant never grants "every model".
        assert!(!t.allows(&member, None, Permission::Write));
        let e = t.effective(&member, Some(&a));
        assert_eq!(
            e.permissions,
            vec![Permission::Read, Permission::Write, Permission::Promote]
        );
        assert_eq!(e.via.len(), 2);
    }

    #[test]
    fn assign_is_idempotent_and_revoke_names_what_it_removed() {
        let mut t = AccessTable::default();
        assert!(t.assign(assignment(user(7), Role::Developer, Some("m"))));
        assert!(!t.assign(assignment(user(7), Role::Developer, Some("m"))));
        let renamed = Principal::User {
            uid: 7,
            name: "renamed".into(),
        };
        assert!(t.revoke(&renamed, Role::Developer, &None).is_none());
        let m = Some("m".parse().unwrap());
        assert!(t.revoke(&renamed, Role::Developer, &m).is_some());
        assert!(t.assignments.is_empty());
    }

    #[test]
    fn default_policy_is_the_sketchs_and_environments_filter() {
        let mut t = AccessTable::default();
        let m: ModelName = "m".parse().unwrap();
        let p = t.policy(&m);
        assert!(p.require_approval && p.signing_required);
        assert_eq!(
            (p.approvals, p.retention_days, p.max_versions),
            (1, 365, 50)
        );
        assert!(t.serves(&m, Some("prod")) && t.serves(&m, None));
        t.policies.insert(
            m.clone(),
            StoredPolicy {
                policy: Policy {
                    environments: vec!["dev".into()],
                    ..Policy::default()
                },
                updated_by: "root".into(),
                updated_at: 0,
            },
        );
        assert!(!t.serves(&m, Some("prod")));
        assert!(t.serves(&m, Some("dev")));
    }

    #[test]
    fn impossible_policies_are_refused() {
        let bad = [
            Policy {
                approvals: 0,
                ..Policy::default()
            },
            Policy {
                max_versions: 0,
                ..Policy::default()
            },
            Policy {
                environments: vec![],
                ..Policy::default()
            },
            Policy {
                environments: vec!["a b".into()],
                ..Policy::default()
            },
        ];
        for p in bad {
            assert!(validate_policy(&p).is_err(), "{p:?}");
        }
        assert!(validate_policy(&Policy::default()).is_ok());
        assert!(validate_policy(&Policy {
            require_approval: false,
            approvals: 0,
            ..Policy::default()
        })
        .is_ok());
    }
}
