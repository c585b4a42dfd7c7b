//! Operations commands: `arca gc` and `arca status`.

use anyhow::Result;
use arca_core::api::{GcReport, StatusReport};
use hyper::Method;

use crate::client::Client;
use crate::escape::Term;

pub async fn gc(client: &Client, dry_run: bool, json: bool) -> Result<i32> {
    let path = if dry_run {
        "/v1/gc?dry_run=true"
    } else {
        "/v1/gc"
    };
    let r: GcReport = client.json(Method::POST, path, None::<&()>).await?;
    if json {
        println!("{}", crate::escape::json(&r, false)?);
        return Ok(0);
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for v in &r.expired_versions {
        println!(
            "{verb} {} {} (archived, past its retention)",
            v.name, v.version
        );
    }
    println!(
        "{verb} {} chunks ({} bytes) of {} candidates; {} still referenced, {} held by uploads, gets and verifies, {} held by open files in the mount",
        r.deleted_chunks, r.deleted_bytes, r.candidates, r.referenced, r.pinned, r.open_in_mount
    );
    if let Some(f) = &r.fleet {
        let (cond, del, rep) = if dry_run {
            ("would condemn", "would delete", "would repack")
        } else {
            ("condemned", "deleted", "repacked")
        };
        println!(
            "fleet: {} packs ({}) in the store, {} live; grace {}s",
            f.packs,
            bytes(f.pack_bytes),
            f.live_packs,
            f.grace_secs
        );
        println!(
            "fleet: {cond} {} packs ({} orphans); {} condemned earlier still in their grace period; {} unreferenced packs younger than it left alone; {} rescued",
            f.condemned, f.orphans, f.waiting, f.young_orphans, f.rescued
        );
        println!(
            "fleet: {rep} {} packs ({} chunks into {} new packs, {}); {del} {} packs ({})",
            f.repacked,
            f.moved_chunks,
            f.new_packs,
            bytes(f.new_pack_bytes),
            f.deleted_packs,
            bytes(f.deleted_bytes)
        );
        if let Some(seq) = f.seq {
            println!("fleet: decisions recorded in log entry {seq}");
        }
        if f.missing > 0 || f.unreadable > 0 {
            println!(
                "fleet: {} packs holding live chunks are missing from the store and {} could not be read for repacking: see arcad's log",
                f.missing, f.unreadable
            );
        }
    }
    Ok(0)
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub async fn status(client: &Client, json: bool) -> Result<i32> {
    let s: StatusReport = client.get("/v1/status").await?;
    if json {
        println!("{}", crate::escape::json(&s, false)?);
        return Ok(0);
    }
    println!(
        "arcad {}  up {}s  environment {}",
        Term(&s.daemon_version),
        s.uptime_secs,
        Term(s.environment.as_deref().unwrap_or("(all)"))
    );
    let by: Vec<String> = s
        .versions_by_status
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!(
        "catalog   {} models, {} versions ({})",
        s.models,
        s.versions,
        by.join(", ")
    );
    // Without read on every model the daemon counts only what we may read and withholds the
    // store-wide disk figures.
    let disk = match (s.disk_bytes, s.gc_candidates) {
        (Some(d), Some(g)) => format!("; {} on disk; {g} GC candidates", bytes(d)),
        _ => " (the versions you may read)".into(),
    };
    println!(
        "store     {} chunks, {} stored for {} of files: dedup ratio {:.2}{disk}",
        s.chunks,
        bytes(s.stored_bytes),
        bytes(s.logical_bytes),
        s.dedup_ratio,
    );
    match &s.mount {
        Some(m) => println!(
            "mount     {} {}; {} served in {} reads, {} errors, {} integrity failures; cache hit rate {}",
            Term(&m.mountpoint),
            if m.answering { "answering" } else { "NOT ANSWERING" },
            bytes(m.counters.bytes_served),
            m.counters.reads,
            m.counters.read_errors,
            m.counters.integrity_failures,
            m.cache_hit_rate.map_or("-".into(), |r| format!("{:.1}%", r * 100.0))
        ),
        None => println!("mount     none"),
    }
    match &s.rotation {
        Some(r) if r.finished_at.is_none() => println!(
            "keys      data key {}; rotation to key {}: {} of about {} chunks{}{}",
            s.current_data_key,
            r.target_key,
            r.chunks_done,
            r.chunks_estimate,
            if r.records_done { ", records done" } else { "" },
            match (&r.error, r.running) {
                (Some(e), _) => format!(", STOPPED: {}", Term(e)),
                (None, true) => ", running".into(),
                (None, false) => ", waiting to resume".into(),
            }
        ),
        _ => println!("keys      data key {}", s.current_data_key),
    }
    println!("audit     {} events", s.audit_events);
    if let Some(f) = &s.fleet {
        println!(
            "fleet     host {} via {}; log applied to entry {}, read {} ago{}; {} chunks ({}) fetched, {} integrity failures",
            Term(&f.host),
            Term(&f.endpoint),
            f.applied_seq,
            f.lag_secs.map_or("never".into(), |l| format!("{l:.1}s")),
            match (&f.halted, &f.stale_view, &f.store_error) {
                (Some(h), _, _) => format!("; HALTED: {}", Term(h)),
                (None, Some(v), _) => format!("; STALE VIEW: {}", Term(v)),
                (None, None, Some(e)) => format!("; STORE UNREACHABLE: {}", Term(e)),
                (None, None, None) => String::new(),
            },
            f.chunks_fetched,
            bytes(f.bytes_fetched),
            f.integrity_failures
        );
        if let Some(l) = &f.object_lock {
            println!(
                "          S3 Object Lock {}",
                match (l.in_force, &l.mode, l.days) {
                    (true, Some(m), Some(d)) => format!("in force ({}, {d} days)", Term(m)),
                    _ => format!(
                        "NOT in force: {}",
                        Term(l.reason.as_deref().unwrap_or("unknown"))
                    ),
                }
            );
        }
    }
    Ok(0)
}

#[derive(clap::Subcommand, Debug)]
pub enum FleetCmd {
    /// Every host of the fleet as this host sees it in the store: the log entry each applied,
    /// how far behind the newest it is, and how old its heartbeat is (needs read on every
    /// model, as the fleet figures of `status` do), and this host's chunk cache.
    Status,
    /// Keep a version in this host's chunk cache whatever its limit: its chunks are fetched
    /// now and never evicted (needs admin on every model: a pin spends this host's disk).
    Pin {
        name: arca_core::ModelName,
        version: arca_core::ModelVersion,
    },
    /// Stop keeping a pinned version: its chunks may be evicted again (unless it is production
    /// or staging).
    Unpin {
        name: arca_core::ModelName,
        version: arca_core::ModelVersion,
    },
}

/// `arca fleet pin` / `unpin`: this host's pins afterwards.
pub async fn fleet_pin(
    client: &Client,
    name: &arca_core::ModelName,
    version: &arca_core::ModelVersion,
    pin: bool,
    json: bool,
) -> Result<i32> {
    let path = format!("/v1/fleet/pins/{name}/{version}");
    let method = if pin { Method::PUT } else { Method::DELETE };
    let pins: Vec<arca_core::api::FleetPin> = client.json(method, &path, None::<&()>).await?;
    if json {
        println!("{}", crate::escape::json(&pins, false)?);
        return Ok(0);
    }
    println!(
        "{} {name} {version} on this host; {} pinned",
        if pin { "pinned" } else { "unpinned" },
        pins.len()
    );
    Ok(0)
}

pub async fn fleet_status(client: &Client, json: bool) -> Result<i32> {
    let s: StatusReport = client.get("/v1/status").await?;
    let Some(f) = s.fleet else {
        anyhow::bail!(
            "no fleet figures: this daemon is a single host, or you may not read every model"
        );
    };
    if json {
        println!("{}", crate::escape::json(&f, false)?);
        return Ok(0);
    }
    println!(
        "this host {} via {}: applied entry {} of {}{}",
        Term(&f.host),
        Term(&f.endpoint),
        f.applied_seq,
        f.head_seq,
        match (&f.halted, &f.stale_view, &f.store_error) {
            (Some(h), _, _) => format!("; HALTED: {}", Term(h)),
            (None, Some(v), _) => format!("; STALE VIEW: {}", Term(v)),
            (None, None, Some(e)) => format!("; STORE UNREACHABLE: {}", Term(e)),
            (None, None, None) => String::new(),
        }
    );
    if let Some(c) = &f.cache {
        println!(
            "cache     {} of {} in {} chunks ({}); kept {}, pinned {}{}; evicted {} chunks ({}) in {} passes; on disk {} ({} garbage)",
            bytes(c.cached_bytes),
            bytes(c.limit_bytes),
            c.cached_chunks,
            if c.cached_bytes > c.limit_bytes { "OVER THE LIMIT" } else { "within the limit" },
            bytes(c.kept_bytes),
            bytes(c.pinned_bytes),
            if c.over_limit { " (KEPT AND PINNED ALONE EXCEED THE LIMIT)" } else { "" },
            c.evicted_chunks,
            bytes(c.evicted_bytes),
            c.evictions,
            bytes(c.disk_bytes),
            bytes(c.garbage_bytes),
        );
        if let Some(s) = &c.serve {
            let names: Vec<&str> = s.iter().map(|m| m.as_str()).collect();
            println!(
                "serves    keeps production and staging of: {}",
                if names.is_empty() {
                    "no model".to_string()
                } else {
                    Term(&names.join(", ")).to_string()
                }
            );
        }
        if let Some(w) = c.warm_before_switch_secs {
            println!(
                "warm-up   before switching, up to {w}s: {} warm-ups, {} incomplete, the last took {} ms",
                c.warmups, c.warmups_incomplete, c.last_warm_ms
            );
        }
        if let Some(e) = &c.pins_error {
            println!("pins      NOT USED: {}", Term(e));
        }
        for p in &c.pins {
            println!(
                "pinned    {} {} (by {})",
                Term(p.model.as_str()),
                p.version,
                Term(&p.by)
            );
        }
    }
    if let Some(l) = &f.object_lock {
        match (l.in_force, &l.mode, l.days) {
            (true, Some(m), Some(d)) => println!(
                "lock      S3 Object Lock in force: log entries and audit segments retained {d} days ({})",
                Term(m)
            ),
            _ => println!(
                "lock      S3 Object Lock NOT in force: {}; whoever holds the store's credentials can delete or overwrite log entries and audit segments (detected, not prevented)",
                Term(l.reason.as_deref().unwrap_or("unknown"))
            ),
        }
    }
    if let Some(a) = &f.audit_shipping {
        println!(
            "audit     {} segments in the store, trail shipped through event {}, {} events after it{}",
            a.segments,
            a.shipped_through,
            a.pending,
            match (&a.halted, &a.error) {
                (Some(h), _) => format!("; SHIPPING HALTED: {}", Term(h)),
                (None, Some(e)) => format!("; NOT SHIPPED YET: {}", Term(e)),
                (None, None) => String::new(),
            }
        );
    }
    let mut t = crate::show::table(&[
        "HOST",
        "APPLIED",
        "BEHIND",
        "HEARTBEAT",
        "AUDIT SEGMENTS",
        "STATE",
    ]);
    for h in &f.hosts {
        t.row([
            Term(&h.host).to_string(),
            h.applied_seq.to_string(),
            f.head_seq.saturating_sub(h.applied_seq).to_string(),
            format!("{:.1}s ago", h.heartbeat_age_secs),
            h.audit_segments
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            match (&h.unreadable, &h.halted, &h.store_error) {
                (Some(u), _, _) => format!("unreadable: {}", Term(u)),
                (None, Some(x), _) => format!("halted: {}", Term(x)),
                (None, None, Some(e)) => format!("store unreachable: {}", Term(e)),
                _ => "ok".into(),
            },
        ]);
    }
    println!("{t}");
    Ok(0)
}
