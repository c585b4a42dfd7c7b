//! Read-only commands and their text output: ls, show, verify, whoami, stats.

use anyhow::Result;
use arca_core::api::{ModelSummary, StoreStats, VerifyReport, VersionInfo, VersionSummary, WhoAmI};
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use hyper::Method;

use crate::client::{enc, Client};

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    t
}

/// Seconds since the epoch as RFC 3339 (UTC).
pub fn time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

pub async fn ls(client: &Client, name: Option<&str>, json: bool) -> Result<i32> {
    match name {
        None => {
            let models: Vec<ModelSummary> = client.get("/v1/models").await?;
            if json {
                println!("{}", serde_json::to_string(&models)?);
                return Ok(0);
            }
            let mut t = table(&["MODEL", "VERSIONS", "LATEST", "PRODUCTION"]);
            for m in models {
                t.add_row(vec![
                    m.name.to_string(),
                    m.versions.to_string(),
                    m.latest.to_string(),
                    m.production.map(|v| v.to_string()).unwrap_or_default(),
                ]);
            }
            println!("{t}");
        }
        Some(n) => {
            let versions: Vec<VersionSummary> =
                client.get(&format!("/v1/models/{}", enc(n))).await?;
            if json {
                println!("{}", serde_json::to_string(&versions)?);
                return Ok(0);
            }
            let mut t = table(&[
                "VERSION",
                "STATUS",
                "FILES",
                "BYTES",
                "CREATED BY",
                "CREATED",
                "ROOT",
            ]);
            for v in versions {
                t.add_row(vec![
                    v.version.to_string(),
                    v.status.to_string(),
                    v.files.to_string(),
                    v.total_size.to_string(),
                    v.created_by,
                    time(v.created_at),
                    v.merkle_root.to_string()[..16].to_string(),
                ]);
            }
            println!("{t}");
        }
    }
    Ok(0)
}

pub async fn show(client: &Client, name: &str, version: &str, json: bool) -> Result<i32> {
    let v: VersionInfo = client
        .get(&format!(
            "/v1/models/{}/versions/{}",
            enc(name),
            enc(version)
        ))
        .await?;
    if json {
        println!("{}", serde_json::to_string(&v)?);
        return Ok(0);
    }
    let m = &v.metadata;
    println!("model:        {} {}", m.name, m.version);
    println!("status:       {}", v.status);
    println!(
        "type:         {}",
        serde_json::to_value(m.model_type)?.as_str().unwrap_or("?")
    );
    if !m.framework.is_empty() {
        println!("framework:    {}", m.framework);
    }
    if !m.description.is_empty() {
        println!("description:  {}", m.description);
    }
    if let Some(p) = &m.parent_version {
        println!("parent:       {p}");
    }
    if !m.tags.is_empty() {
        println!("tags:         {}", m.tags.join(", "));
    }
    for (k, val) in &m.dependencies {
        println!("dependency:   {k}=={val}");
    }
    for (k, val) in &m.metrics {
        println!("metric:       {k} = {val}");
    }
    println!("created by:   {} (uid {})", v.created_by, v.created_by_uid);
    println!("created at:   {}", time(v.created_at));
    println!("merkle root:  {}", v.merkle_root);
    println!("metadata:     {}", v.metadata_digest);
    match &v.signer {
        Some(s) => println!(
            "signer:       {} key {}",
            s.user,
            s.public_key.fingerprint()
        ),
        None => println!("signer:       none (pushed unsigned)"),
    }
    println!(
        "size:         {} bytes in {} files, {} chunks",
        v.total_size,
        v.files.len(),
        v.chunks
    );
    for h in &v.history {
        let ticket = h
            .ticket
            .as_deref()
            .map(|t| format!(" ticket {t}"))
            .unwrap_or_default();
        let reason = h
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        println!(
            "history:      {} {} -> {} by {}{ticket}{reason}",
            time(h.at),
            h.from,
            h.to,
            h.by
        );
    }
    for a in &v.approvals {
        println!(
            "approval:     {} by {} ticket {} key {}{}",
            time(a.at),
            a.approver,
            a.ticket,
            a.public_key.fingerprint(),
            if a.comment.is_empty() {
                String::new()
            } else {
                format!(": {}", a.comment)
            }
        );
    }
    let mut t = table(&["FILE", "SIZE", "MODE", "SHA-256"]);
    for f in &v.files {
        t.add_row(vec![
            f.path.to_string(),
            f.size.to_string(),
            format!("{:o}", f.mode),
            f.sha256.to_string(),
        ]);
    }
    println!("{t}");
    Ok(0)
}

pub async fn verify(client: &Client, name: &str, version: Option<&str>, json: bool) -> Result<i32> {
    let mut path = format!("/v1/models/{}/verify", enc(name));
    if let Some(v) = version {
        path.push_str(&format!("?version={}", enc(v)));
    }
    let r: VerifyReport = client.json(Method::POST, &path, None::<&()>).await?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        for f in &r.failures {
            let mut what = format!("FAILED {name} {}", f.version);
            if let Some(p) = &f.file {
                what.push_str(&format!(" file {p}"));
            }
            if let Some(c) = &f.chunk {
                what.push_str(&format!(" chunk {}", &c.to_string()[..16]));
            }
            eprintln!("{what}: {}", f.problem);
        }
        let verdict = if r.ok { "OK" } else { "FAILED" };
        println!(
            "{verdict}: {} versions, {} files, {} chunks, {} bytes checked, {} problems",
            r.versions,
            r.files,
            r.chunks,
            r.bytes,
            r.failures.len()
        );
    }
    Ok(if r.ok { 0 } else { 1 })
}

pub async fn whoami(client: &Client, json: bool) -> Result<i32> {
    let w: WhoAmI = client.get("/v1/whoami").await?;
    if json {
        println!("{}", serde_json::to_string(&w)?);
    } else {
        println!(
            "{} (uid {}, gid {}){}",
            w.user,
            w.uid,
            w.gid,
            if w.admin { ", admin" } else { "" }
        );
    }
    Ok(0)
}

pub async fn stats(client: &Client, json: bool) -> Result<i32> {
    let s: StoreStats = client.get("/v1/store/stats").await?;
    if json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!(
            "models {}  versions {}  chunks {}  stored bytes {}  logical bytes {}",
            s.models, s.versions, s.chunks, s.stored_bytes, s.logical_bytes
        );
        if let Some(m) = s.mount {
            println!(
                "mount: {} bytes served in {} reads ({} failed), cache {} hits / {} misses ({} bytes), {} integrity failures",
                m.bytes_served, m.reads, m.read_errors, m.cache_hits, m.cache_misses, m.cache_bytes, m.integrity_failures
            );
        }
    }
    Ok(0)
}
