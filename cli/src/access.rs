//! `arca role …`, `arca policy …` and `arca delete`: who may do what, and per-model rules.

use anyhow::{bail, Result};
use arca_core::api::{PolicyInfo, PolicyUpdate, Role, RoleAssignment, RoleChange, RoleListing};
use arca_core::ModelName;
use clap::Subcommand;
use hyper::Method;

use crate::client::{empty, enc, Client};
use crate::escape::Term;
use crate::show::{table, time};

#[derive(Subcommand, Debug)]
pub enum RoleCmd {
    /// Give a user or group (`group:NAME`) a role on one model (`--model`) or on every model.
    Assign {
        principal: String,
        role: Role,
        #[arg(long)]
        model: Option<ModelName>,
    },
    /// Take a role back (the same principal, role and scope it was assigned with).
    Revoke {
        principal: String,
        role: Role,
        #[arg(long)]
        model: Option<ModelName>,
    },
    /// List assignments; with --user, also that user's effective permissions.
    Ls {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        model: Option<ModelName>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Change a model's policy; options not given keep their value.
    Set {
        name: ModelName,
        #[arg(long, value_parser = yes_no)]
        require_approval: Option<bool>,
        #[arg(long)]
        approvals: Option<u32>,
        /// Comma-separated, e.g. dev,staging,prod.
        #[arg(long, value_delimiter = ',')]
        environments: Option<Vec<String>>,
        #[arg(long)]
        retention_days: Option<u32>,
        #[arg(long)]
        max_versions: Option<u32>,
        #[arg(long, value_parser = yes_no)]
        signing_required: Option<bool>,
    },
    /// Show a model's policy (the defaults when none was set).
    Show { name: ModelName },
}

fn yes_no(s: &str) -> Result<bool, String> {
    match s {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!("expected yes or no, not {s:?}")),
    }
}

fn scope(m: &Option<ModelName>) -> String {
    m.as_ref()
        .map_or_else(|| "*".to_string(), |m| m.to_string())
}

pub async fn role(client: &Client, cmd: RoleCmd, json: bool) -> Result<i32> {
    match cmd {
        RoleCmd::Assign {
            principal,
            role,
            model,
        } => {
            change(
                client,
                "/v1/roles",
                principal,
                role,
                model,
                "assigned",
                json,
            )
            .await
        }
        RoleCmd::Revoke {
            principal,
            role,
            model,
        } => {
            change(
                client,
                "/v1/roles/revoke",
                principal,
                role,
                model,
                "revoked",
                json,
            )
            .await
        }
        RoleCmd::Ls { user, model } => {
            let mut q = Vec::new();
            if let Some(u) = &user {
                q.push(format!("user={}", enc(u)));
            }
            if let Some(m) = &model {
                q.push(format!("model={}", enc(m.as_str())));
            }
            let path = if q.is_empty() {
                "/v1/roles".to_string()
            } else {
                format!("/v1/roles?{}", q.join("&"))
            };
            let l: RoleListing = client.get(&path).await?;
            if json {
                println!("{}", crate::escape::json(&l, false)?);
                return Ok(0);
            }
            let mut t = table(&["PRINCIPAL", "ROLE", "MODEL", "GRANTED BY", "AT"]);
            for a in &l.assignments {
                t.row([
                    a.principal.to_string(),
                    a.role.to_string(),
                    scope(&a.model),
                    a.granted_by.clone(),
                    time(a.granted_at),
                ]);
            }
            println!("{t}");
            if let Some(u) = &l.user {
                let mut t = table(&["MODEL", "EFFECTIVE PERMISSIONS", "VIA"]);
                for e in &l.effective {
                    let perms: Vec<&str> = e.permissions.iter().map(|p| p.as_str()).collect();
                    t.row([
                        scope(&e.model),
                        if perms.is_empty() {
                            "(none)".into()
                        } else {
                            perms.join(", ")
                        },
                        e.via.join("; "),
                    ]);
                }
                println!("effective permissions of {}:\n{t}", Term(u));
            }
            Ok(0)
        }
    }
}

async fn change(
    client: &Client,
    path: &str,
    principal: String,
    role: Role,
    model: Option<ModelName>,
    done: &str,
    json: bool,
) -> Result<i32> {
    let req = RoleChange {
        principal,
        role,
        model,
    };
    let a: RoleAssignment = client.json(Method::POST, path, Some(&req)).await?;
    if json {
        println!("{}", crate::escape::json(&a, false)?);
    } else {
        println!(
            "{done}: {} {} on {}",
            Term(&a.principal),
            a.role,
            scope(&a.model)
        );
    }
    Ok(0)
}

pub async fn policy(client: &Client, cmd: PolicyCmd, json: bool) -> Result<i32> {
    let info: PolicyInfo = match cmd {
        PolicyCmd::Show { name } => {
            client
                .get(&format!("/v1/models/{}/policy", enc(name.as_str())))
                .await?
        }
        PolicyCmd::Set {
            name,
            require_approval,
            approvals,
            environments,
            retention_days,
            max_versions,
            signing_required,
        } => {
            let u = PolicyUpdate {
                require_approval,
                approvals,
                environments,
                retention_days,
                max_versions,
                signing_required,
            };
            if u.require_approval.is_none()
                && u.approvals.is_none()
                && u.environments.is_none()
                && u.retention_days.is_none()
                && u.max_versions.is_none()
                && u.signing_required.is_none()
            {
                bail!("nothing to set: give at least one of --require-approval, --approvals, --environments, --retention-days, --max-versions, --signing-required");
            }
            client
                .json(
                    Method::PUT,
                    &format!("/v1/models/{}/policy", enc(name.as_str())),
                    Some(&u),
                )
                .await?
        }
    };
    if json {
        println!("{}", crate::escape::json(&info, false)?);
        return Ok(0);
    }
    let p = &info.policy;
    let yn = |b: bool| if b { "yes" } else { "no" };
    println!("model:             {}", info.model);
    println!("require approval:  {}", yn(p.require_approval));
    println!("approvals:         {}", p.approvals);
    println!("environments:      {}", Term(p.environments.join(",")));
    println!("retention days:    {}", p.retention_days);
    println!("max versions:      {}", p.max_versions);
    println!("signing required:  {}", yn(p.signing_required));
    println!("encryption:        always");
    match (&info.updated_by, info.updated_at) {
        (Some(by), Some(at)) if info.explicit => {
            println!("set by:            {} at {}", Term(by), time(at))
        }
        _ => println!("set by:            (defaults)"),
    }
    Ok(0)
}

pub async fn delete(client: &Client, name: &str, version: &str, json: bool) -> Result<i32> {
    client
        .send(
            Method::DELETE,
            &format!("/v1/models/{}/versions/{}", enc(name), enc(version)),
            empty(),
            "application/json",
        )
        .await?;
    if json {
        println!(
            "{}",
            crate::escape::json(
                &serde_json::json!({"deleted": {"name": name, "version": version}}),
                false
            )?
        );
    } else {
        println!(
            "deleted {name} {version} (chunks no other version uses stay in the store: there is no garbage collection yet)"
        );
    }
    Ok(0)
}
