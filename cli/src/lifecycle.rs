//! `arca approve` and `arca promote`: signed approvals and status changes.

use std::path::PathBuf;

use anyhow::Result;
use arca_core::api::{Approve, History, Promote, Status, VersionInfo};
use arca_core::sign::ApprovalMessage;
use hyper::Method;

use crate::client::{enc, Client};
use crate::escape::Term;

/// Signs consent that `name` `version`, with the Merkle root the daemon reports, goes to
/// production under `ticket`, and sends it. The root comes from the daemon, but the signature
/// binds it: an approval cannot be reused for other content.
pub async fn approve(
    client: &Client,
    name: &str,
    version: &str,
    ticket: &str,
    comment: &str,
    key: Option<PathBuf>,
    json: bool,
) -> Result<i32> {
    let key_path = match key {
        Some(k) => k,
        None => crate::keys::default_key_path()?,
    };
    let key = crate::keys::load_secret(&key_path)?;
    let base = format!("/v1/models/{}/versions/{}", enc(name), enc(version));
    let info: VersionInfo = client.get(&base).await?;
    let v = info.metadata.version.to_string();
    let msg = ApprovalMessage {
        name: info.metadata.name.as_str(),
        version: &v,
        root: &info.merkle_root,
        ticket,
        target: "production",
    };
    let req = Approve {
        ticket: ticket.into(),
        comment: comment.into(),
        public_key: key.public(),
        signature: key.sign_approval(&msg),
    };
    let out: VersionInfo = client
        .json(Method::POST, &format!("{base}/approvals"), Some(&req))
        .await?;
    if json {
        println!("{}", crate::escape::json(&out, false)?);
    } else {
        println!(
            "approved {name} {version} (root {}) for production under ticket {}; {} approval(s) recorded",
            &out.merkle_root.to_string()[..16],
            Term(ticket),
            out.approvals.len()
        );
    }
    Ok(0)
}

pub async fn promote(
    client: &Client,
    name: &str,
    version: &str,
    to: Status,
    ticket: Option<String>,
    json: bool,
) -> Result<i32> {
    let path = format!("/v1/models/{}/versions/{}/promote", enc(name), enc(version));
    let out: VersionInfo = client
        .json(Method::POST, &path, Some(&Promote { to, ticket }))
        .await?;
    if json {
        println!("{}", crate::escape::json(&out, false)?);
    } else {
        println!("{name} {version} is now {}", out.status);
    }
    Ok(0)
}

pub async fn rollback(
    client: &Client,
    name: &str,
    to: &str,
    reason: &str,
    json: bool,
) -> Result<i32> {
    let to: arca_core::ModelVersion = to.parse()?;
    let path = format!("/v1/models/{}/rollback", enc(name));
    let req = arca_core::api::Rollback {
        to,
        reason: reason.into(),
    };
    let out: VersionInfo = client.json(Method::POST, &path, Some(&req)).await?;
    if json {
        println!("{}", crate::escape::json(&out, false)?);
    } else {
        println!("{name} {} is in production again", out.metadata.version);
    }
    Ok(0)
}

pub async fn history(client: &Client, name: &str, json: bool) -> Result<i32> {
    let h: History = client
        .get(&format!("/v1/models/{}/history", enc(name)))
        .await?;
    if json {
        println!("{}", crate::escape::json(&h, false)?);
        return Ok(0);
    }
    let mut t = crate::show::table(&["TIME", "VERSION", "FROM", "TO", "BY", "TICKET", "REASON"]);
    for e in &h.events {
        let tr = &e.transition;
        t.row([
            crate::show::time(tr.at),
            e.version.to_string(),
            tr.from.to_string(),
            tr.to.to_string(),
            tr.by.clone(),
            tr.ticket.clone().unwrap_or_default(),
            tr.reason.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
    for l in &h.lineage {
        let chain: Vec<String> = std::iter::once(l.version.to_string())
            .chain(l.ancestors.iter().map(|a| a.to_string()))
            .collect();
        println!("lineage: {}", chain.join(" <- "));
    }
    Ok(0)
}
