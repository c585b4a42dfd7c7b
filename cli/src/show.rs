//! Read-only commands and their text output: ls, show, verify, whoami, stats; and `TextTable`,
//! the table every command prints through.

use anyhow::{bail, Context, Result};
use arca_core::api::{
    ModelSummary, StoreStats, VerifyLine, VerifyReport, VersionInfo, VersionSummary, WhoAmI,
};
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use http_body_util::BodyExt;
use hyper::Method;
use indicatif::ProgressBar;

use crate::client::{empty, enc, Client};
use crate::escape::Term;
use crate::progress::Show;

/// A text table whose cells are escaped for the terminal: its rows hold other people's strings.
pub struct TextTable(Table);

impl TextTable {
    pub fn row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let cells: Vec<String> = cells
            .into_iter()
            .map(|c| Term(c.as_ref()).to_string())
            .collect();
        self.0.add_row(cells);
    }
}

impl std::fmt::Display for TextTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

pub fn table(header: &[&str]) -> TextTable {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    TextTable(t)
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
                println!("{}", crate::escape::json(&models, false)?);
                return Ok(0);
            }
            let mut t = table(&["MODEL", "VERSIONS", "LATEST", "PRODUCTION"]);
            for m in models {
                t.row([
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
                println!("{}", crate::escape::json(&versions, false)?);
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
                t.row([
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
        println!("{}", crate::escape::json(&v, false)?);
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
        println!("framework:    {}", Term(&m.framework));
    }
    if !m.description.is_empty() {
        println!("description:  {}", Term(&m.description));
    }
    if let Some(p) = &m.parent_version {
        println!("parent:       {p}");
    }
    if !m.tags.is_empty() {
        println!("tags:         {}", Term(m.tags.join(", ")));
    }
    for (k, val) in &m.dependencies {
        println!("dependency:   {}=={}", Term(k), Term(val));
    }
    for (k, val) in &m.metrics {
        println!("metric:       {} = {val}", Term(k));
    }
    println!(
        "created by:   {} (uid {})",
        Term(&v.created_by),
        v.created_by_uid
    );
    println!("created at:   {}", time(v.created_at));
    println!("merkle root:  {}", v.merkle_root);
    println!("metadata:     {}", v.metadata_digest);
    match &v.signer {
        Some(s) => println!(
            "signer:       {} key {}",
            Term(&s.user),
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
            "history:      {} {} -> {} by {}{}{}",
            time(h.at),
            h.from,
            h.to,
            Term(&h.by),
            Term(ticket),
            Term(reason)
        );
    }
    for a in &v.approvals {
        println!(
            "approval:     {} by {} ticket {} key {}{}",
            time(a.at),
            Term(&a.approver),
            Term(&a.ticket),
            a.public_key.fingerprint(),
            if a.comment.is_empty() {
                String::new()
            } else {
                format!(": {}", Term(&a.comment))
            }
        );
    }
    let mut t = table(&["FILE", "SIZE", "MODE", "SHA-256"]);
    for f in &v.files {
        t.row([
            f.path.to_string(),
            f.size.to_string(),
            format!("{:o}", f.mode),
            f.sha256.to_string(),
        ]);
    }
    println!("{t}");
    Ok(0)
}

pub async fn verify(
    client: &Client,
    name: &str,
    version: Option<&str>,
    json: bool,
    show: Show,
) -> Result<i32> {
    let mut path = format!("/v1/models/{}/verify", enc(name));
    if let Some(v) = version {
        path.push_str(&format!("?version={}", enc(v)));
    }
    let bar = crate::progress::bytes(0, show);
    let r: VerifyReport = if bar.is_hidden() {
        client.json(Method::POST, &path, None::<&()>).await?
    } else {
        // The daemon reads every chunk: only it can say how far it is.
        let sep = if version.is_some() { '&' } else { '?' };
        let r = verify_with_progress(client, &format!("{path}{sep}progress=true"), &bar).await;
        bar.finish_and_clear();
        r?
    };
    if json {
        println!("{}", crate::escape::json(&r, false)?);
    } else {
        for f in &r.failures {
            let mut what = format!("FAILED {name} {}", f.version);
            if let Some(p) = &f.file {
                what.push_str(&format!(" file {p}"));
            }
            if let Some(c) = &f.chunk {
                what.push_str(&format!(" chunk {}", &c.to_string()[..16]));
            }
            eprintln!("{}: {}", Term(what), Term(&f.problem));
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

/// Reads `verify`'s NDJSON answer (`VerifyLine`s), moving `bar` with each progress line.
async fn verify_with_progress(
    client: &Client,
    path: &str,
    bar: &ProgressBar,
) -> Result<VerifyReport> {
    let resp = client
        .send(Method::POST, path, empty(), "application/json")
        .await?;
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.context("reading arcad's answer")?.into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            match serde_json::from_slice(&line).context("arcad's verify answer does not parse")? {
                VerifyLine::Progress { checked, total } => {
                    bar.set_length(total);
                    bar.set_position(checked);
                }
                VerifyLine::Report(r) => return Ok(r),
                VerifyLine::Error(e) => bail!(e.message),
            }
        }
    }
    bail!("arcad's verify answer ended before its report")
}

pub async fn whoami(client: &Client, json: bool) -> Result<i32> {
    let w: WhoAmI = client.get("/v1/whoami").await?;
    if json {
        println!("{}", crate::escape::json(&w, false)?);
    } else {
        println!(
            "{} (uid {}, gid {}){}",
            Term(&w.user),
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
        println!("{}", crate::escape::json(&s, false)?);
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
