//! `arca audit ls|verify|report`: the tamper-evident trail and compliance reports.

use anyhow::{anyhow, bail, Result};
use arca_core::api::{AuditVerify, ComplianceReport};
use arca_core::audit::{AuditEvent, EventKind};
use clap::{Subcommand, ValueEnum};
use hyper::Method;

use crate::client::{enc, Client};
use crate::escape::{html as esc, md, Term};
use crate::show::table;

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Events, oldest first (the newest `--limit` of those matching).
    Ls {
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        version: Option<String>,
        #[arg(long = "type")]
        kind: Option<EventKind>,
        #[arg(long)]
        user: Option<String>,
        /// RFC 3339 time or YYYY-MM-DD (inclusive).
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 time or YYYY-MM-DD (inclusive: the whole day).
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Recompute every event's hash and link and check every signed checkpoint.
    Verify,
    /// A model's compliance report for a period.
    Report {
        name: String,
        /// RFC 3339 time or YYYY-MM-DD (inclusive).
        #[arg(long)]
        from: String,
        /// RFC 3339 time or YYYY-MM-DD (inclusive: the whole day).
        #[arg(long)]
        to: String,
        #[arg(long, value_enum, default_value_t = Format::Md)]
        format: Format,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Json,
    Md,
    Html,
}

/// Milliseconds since the epoch for a time given as RFC 3339 or a date; a date means its first
/// millisecond, or with `end_of_day` its last.
fn parse_time(s: &str, end_of_day: bool) -> Result<u64> {
    let t = if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') {
        let suffix = if end_of_day {
            "T23:59:59.999Z"
        } else {
            "T00:00:00Z"
        };
        humantime::parse_rfc3339(&format!("{s}{suffix}"))
    } else {
        humantime::parse_rfc3339_weak(s)
    }
    .map_err(|e| anyhow!("time {s:?}: {e} (expected YYYY-MM-DD or RFC 3339)"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64)
}

fn time_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

pub async fn run(client: &Client, cmd: AuditCmd, json: bool) -> Result<i32> {
    match cmd {
        AuditCmd::Ls {
            model,
            version,
            kind,
            user,
            since,
            until,
            limit,
        } => {
            let mut q = vec![format!("limit={limit}")];
            if let Some(v) = &model {
                q.push(format!("model={}", enc(v)));
            }
            if let Some(v) = &version {
                q.push(format!("version={}", enc(v)));
            }
            if let Some(k) = kind {
                q.push(format!("type={k}"));
            }
            if let Some(v) = &user {
                q.push(format!("user={}", enc(v)));
            }
            if let Some(v) = &since {
                q.push(format!("since={}", parse_time(v, false)?));
            }
            if let Some(v) = &until {
                q.push(format!("until={}", parse_time(v, true)?));
            }
            let events: Vec<AuditEvent> = client.get(&format!("/v1/audit?{}", q.join("&"))).await?;
            if json {
                println!("{}", crate::escape::json(&events, false)?);
                return Ok(0);
            }
            let mut t = table(&["ID", "TIME", "TYPE", "MODEL", "VERSION", "USER", "DETAILS"]);
            for e in &events {
                let details: Vec<String> =
                    e.details.iter().map(|(k, v)| format!("{k}={v}")).collect();
                t.row([
                    e.seq.to_string(),
                    time_ms(e.at_ms),
                    e.kind.to_string(),
                    e.model.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                    e.version
                        .as_ref()
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                    match e.uid {
                        Some(uid) => format!("{} ({uid})", e.user),
                        None => e.user.clone(),
                    },
                    details.join(" "),
                ]);
            }
            println!("{t}");
            Ok(0)
        }
        AuditCmd::Verify => {
            let r: AuditVerify = client
                .json(Method::POST, "/v1/audit/verify", None::<&()>)
                .await?;
            if json {
                println!("{}", crate::escape::json(&r, false)?);
                return Ok(if r.ok { 0 } else { 1 });
            }
            for h in r.fleet_hosts.iter().flatten() {
                match &h.fault {
                    None => println!(
                        "fleet host {}: {} audit segments intact, {} events, its trail shipped through event {}",
                        Term(&h.host),
                        h.segments,
                        h.events,
                        h.shipped_through
                    ),
                    Some(f) => eprintln!(
                        "fleet host {}: audit segments BROKEN after segment {}: {}",
                        Term(&h.host),
                        h.segments,
                        Term(f)
                    ),
                }
            }
            if let Some(f) = &r.fault {
                eprintln!(
                    "audit trail BROKEN at event {}: {}",
                    f.seq,
                    Term(&f.problem)
                );
            } else {
                println!(
                    "audit trail intact: {} events, {} checkpoints; signed head covers {} events (hash {}); daemon key {}",
                    r.events,
                    r.checkpoints,
                    r.head_count.unwrap_or(0),
                    r.head_hash.map(|h| h.to_string()).unwrap_or_else(|| "-".into()),
                    r.public_key
                );
            }
            Ok(if r.ok { 0 } else { 1 })
        }
        AuditCmd::Report {
            name,
            from,
            to,
            format,
        } => {
            let (from, to) = (parse_time(&from, false)?, parse_time(&to, true)?);
            if to < from {
                bail!("--to is before --from");
            }
            let r: ComplianceReport = client
                .get(&format!(
                    "/v1/audit/report/{}?from={from}&to={to}",
                    enc(&name)
                ))
                .await?;
            match (json, format) {
                (true, _) | (_, Format::Json) => {
                    println!("{}", crate::escape::json(&r, true)?)
                }
                (_, Format::Md) => print!("{}", markdown(&r)),
                (_, Format::Html) => print!("{}", html(&r)),
            }
            Ok(if r.chain_intact { 0 } else { 1 })
        }
    }
}

/// The report as Markdown. Every string from the trail is escaped (`escape::md`): a ticket or
/// reason cannot add a table row, a link or HTML.
fn markdown(r: &ComplianceReport) -> String {
    let opt = |v: Option<&str>| md(v.unwrap_or(""));
    let mut s = format!(
        "# Compliance report: {}\n\nPeriod: {} to {}  \nGenerated: {}  \nAudit chain: {}\n\n",
        md(r.model.as_str()),
        time_ms(r.from_ms),
        time_ms(r.to_ms),
        time_ms(r.generated_at_ms),
        if r.chain_intact {
            "intact".to_string()
        } else {
            format!(
                "BROKEN ({})",
                md(r.chain_fault.as_deref().unwrap_or("unknown fault"))
            )
        }
    );
    s.push_str(&format!(
        "## Summary\n\n- Events: {}\n- Unique users: {} ({})\n- Versions affected: {} ({})\n\n",
        r.total_events,
        r.unique_users.len(),
        md(&r.unique_users.join(", ")),
        r.versions_affected.len(),
        md(&r.versions_affected.join(", "))
    ));
    s.push_str("## Events by type\n\n| type | count |\n|---|---|\n");
    for (k, v) in &r.events_by_type {
        s.push_str(&format!("| {} | {v} |\n", md(k)));
    }
    s.push_str("\n## Production history\n\n| time | version | from | to | by | ticket | reason |\n|---|---|---|---|---|---|---|\n");
    for p in &r.production_history {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            time_ms(p.at_ms),
            opt(p.version.as_ref().map(|v| v.to_string()).as_deref()),
            md(&p.from),
            md(&p.to),
            md(&p.by),
            opt(p.ticket.as_deref()),
            opt(p.reason.as_deref())
        ));
    }
    s.push_str("\n## Approvals\n\n| time | version | approver | ticket |\n|---|---|---|---|\n");
    for a in &r.approvals {
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            time_ms(a.at_ms),
            opt(a.version.as_ref().map(|v| v.to_string()).as_deref()),
            md(&a.approver),
            opt(a.ticket.as_deref())
        ));
    }
    if let Some(hosts) = &r.fleet_hosts {
        s.push_str("\n## Fleet hosts\n\n| host | segments | shipped through | events | in this report | fault |\n|---|---|---|---|---|---|\n");
        for h in hosts {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                md(&h.host),
                h.segments,
                h.shipped_through,
                h.events,
                h.events_in_report,
                opt(h.fault.as_deref())
            ));
        }
    }
    s
}

/// The report as HTML; every string from the trail goes through `escape::html`.
fn html(r: &ComplianceReport) -> String {
    let row = |cells: Vec<String>| {
        format!(
            "<tr>{}</tr>\n",
            cells
                .iter()
                .map(|c| format!("<td>{}</td>", esc(c)))
                .collect::<String>()
        )
    };
    let mut s = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Compliance report: {m}</title></head><body>\n<h1>Compliance report: {m}</h1>\n<p>Period: {} to {}<br>Generated: {}<br>Audit chain: {}</p>\n",
        esc(&time_ms(r.from_ms)),
        esc(&time_ms(r.to_ms)),
        esc(&time_ms(r.generated_at_ms)),
        if r.chain_intact {
            "intact".to_string()
        } else {
            esc(&format!("BROKEN ({})", r.chain_fault.as_deref().unwrap_or("")))
        },
        m = esc(r.model.as_str())
    );
    s.push_str(&format!(
        "<h2>Summary</h2>\n<ul><li>Events: {}</li><li>Unique users: {}</li><li>Versions affected: {}</li></ul>\n",
        r.total_events,
        esc(&r.unique_users.join(", ")),
        esc(&r.versions_affected.join(", "))
    ));
    s.push_str("<h2>Events by type</h2>\n<table>\n<tr><th>type</th><th>count</th></tr>\n");
    for (k, v) in &r.events_by_type {
        s.push_str(&row(vec![k.clone(), v.to_string()]));
    }
    s.push_str("</table>\n<h2>Production history</h2>\n<table>\n<tr><th>time</th><th>version</th><th>from</th><th>to</th><th>by</th><th>ticket</th><th>reason</th></tr>\n");
    for p in &r.production_history {
        s.push_str(&row(vec![
            time_ms(p.at_ms),
            p.version
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default(),
            p.from.clone(),
            p.to.clone(),
            p.by.clone(),
            p.ticket.clone().unwrap_or_default(),
            p.reason.clone().unwrap_or_default(),
        ]));
    }
    s.push_str("</table>\n<h2>Approvals</h2>\n<table>\n<tr><th>time</th><th>version</th><th>approver</th><th>ticket</th></tr>\n");
    for a in &r.approvals {
        s.push_str(&row(vec![
            time_ms(a.at_ms),
            a.version
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default(),
            a.approver.clone(),
            a.ticket.clone().unwrap_or_default(),
        ]));
    }
    s.push_str("</table>\n");
    if let Some(hosts) = &r.fleet_hosts {
        s.push_str("<h2>Fleet hosts</h2>\n<table>\n<tr><th>host</th><th>segments</th><th>shipped through</th><th>events</th><th>in this report</th><th>fault</th></tr>\n");
        for h in hosts {
            s.push_str(&row(vec![
                h.host.clone(),
                h.segments.to_string(),
                h.shipped_through.to_string(),
                h.events.to_string(),
                h.events_in_report.to_string(),
                h.fault.clone().unwrap_or_default(),
            ]));
        }
        s.push_str("</table>\n");
    }
    s.push_str("</body></html>\n");
    s
}
