//! Issue #14, "Lazy, verified reads": a fleet host's local chunk cache on a real SeaweedFS
//! store. Its size limit with least-recently-used eviction (the status figure and the state
//! directory's real usage), what it never evicts (production, staging, pins, read with the
//! store stopped), evicted chunks fetched again and verified, who may pin, and
//! `warm_before_switch` (a host flips its link only once the version is cached here).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::fleet::{
    fleet_hosts_with, list_keys, model_dir, push_as, request, within, Cluster, BUCKET,
};
use crate::harness::{sha256_hex, user, TestEnv, User};

/// Disk usage (allocated blocks) of every file under `dir`, with the files by kind (the
/// extension, or the name without digits: `LOG`, `MANIFEST-`).
fn du(dir: &Path, kinds: &mut std::collections::BTreeMap<String, u64>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        if m.is_dir() {
            n += du(&e.path(), kinds);
        } else {
            let used = m.blocks() * 512;
            let name = e.file_name().to_string_lossy().into_owned();
            let kind = match name.rsplit_once('.') {
                Some((_, ext)) if !ext.chars().all(|c| c.is_ascii_digit()) => ext.to_owned(),
                _ => name
                    .trim_end_matches(|c: char| c.is_ascii_digit() || c == '.')
                    .to_owned(),
            };
            *kinds.entry(kind.clone()).or_default() += used;
            if kind == "blob" || used > 1 << 20 {
                println!("  {name}: {} bytes, {used} allocated", m.len());
            }
            n += used;
        }
    }
    n
}

fn cache(h: &TestEnv) -> serde_json::Value {
    h.json(&["fleet", "status"])["cache"].clone()
}

fn u64_of(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("no {k} in the cache status: {v}"))
}

/// `get` of a version on `h` into a new directory; the SHA-256 of its big file, or the error.
fn get_sha(h: &TestEnv, name: &str, version: &str, tag: &str) -> Result<String, String> {
    let out: PathBuf = h.path().join(format!("got-{tag}"));
    let o = h.arca(&["get", name, version, "--out", out.to_str().unwrap()]);
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let sha = sha256_hex(&std::fs::read(out.join("model.safetensors")).unwrap());
    std::fs::remove_dir_all(&out).unwrap();
    Ok(sha)
}

fn big_sha(d: &Path) -> String {
    sha256_hex(&std::fs::read(d.join("model.safetensors")).unwrap())
}

/// Pushes `n` versions of model `m` as `u` on `a`, each `size` bytes of its own data.
fn push_versions(a: &TestEnv, u: &User, m: &str, n: usize, size: usize) -> Vec<(String, PathBuf)> {
    (0..n)
        .map(|i| {
            let v = format!("1.{i}.0");
            let d = model_dir(a, u, &format!("{m}{i}"), size, 14_000 + i as u64);
            push_as(a, u, &d, m, &v);
            (v, d)
        })
        .collect()
}

/// A single-process store on `port` and hosts `a` and `b` with `extra` in their `[fleet]`; a
/// publisher with a key trusted on A and developer on `model`.
fn two_hosts(port: u16, extra: &str, model: &str) -> (Cluster, Vec<TestEnv>, User) {
    let c = Cluster::start_kind("single", port);
    let g = c.endpoints[0].clone();
    assert_eq!(request(&g, "PUT", &format!("/{BUCKET}"), &[], b"").0, 200);
    let hosts = fleet_hosts_with(&["a", "b"], &[vec![g.as_str()], vec![g.as_str()]], extra);
    let u = user("arca-e2e-cache-pub");
    hosts[0].trusted_key_for(&u);
    hosts[0].ok(&["role", "assign", &u.name, "developer", "--model", model]);
    (c, hosts, u)
}

#[test]
fn fleet_cache_stays_under_its_limit_and_keeps_what_it_must() {
    // 0.05 GiB: 51.2 MiB, for six versions of 12 MiB.
    let limit: u64 = (0.05 * (1u64 << 30) as f64) as u64;
    let (c, hosts, u) = two_hosts(20_000, "cache_gib = 0.05\n", "cm");
    let (a, b) = (&hosts[0], &hosts[1]);
    let vs = push_versions(a, &u, "cm", 6, 12 << 20);
    within(10, "B sees the six versions", || {
        b.arca(&["show", "cm", "1.5.0"]).status.success()
    });
    // 1.0.0 production, 1.1.0 staging (root on A approves u's version: four eyes).
    a.root_key();
    a.ok(&["promote", "cm", "1.0.0", "--to", "staging"]);
    a.ok(&["approve", "cm", "1.0.0", "--ticket", "T-1"]);
    a.ok(&[
        "promote",
        "cm",
        "1.0.0",
        "--to",
        "production",
        "--ticket",
        "T-1",
    ]);
    a.ok(&["promote", "cm", "1.1.0", "--to", "staging"]);
    within(10, "B applies the promotions", || {
        std::fs::read_link(b.mnt().join("cm/staging"))
            .map(|t| t == Path::new("1.1.0"))
            .unwrap_or(false)
    });
    // A pushed 72 MiB with a 51 MiB limit: its published chunks were evicted as well.
    within(15, "A's cache back under its limit", || {
        u64_of(&cache(a), "cached_bytes") <= limit
    });

    // B reads production and staging through the mount: cached, and kept from now on.
    for (v, d) in &vs[..2] {
        for f in ["model.safetensors", "config.json"] {
            let got = std::fs::read(b.mnt().join(format!("cm/{v}/{f}"))).unwrap();
            assert_eq!(
                got,
                std::fs::read(d.join(f)).unwrap(),
                "{v} {f} through B's mount"
            );
        }
    }

    // A user with no role on B, and a developer of the model, may not pin: refused, nothing
    // changes (no pin, no audit event but the refusal).
    let nobody = user("arca-e2e-cache-nobody");
    let dev = user("arca-e2e-cache-dev");
    b.ok(&["role", "assign", &dev.name, "developer", "--model", "cm"]);
    let events_before = b.json(&["audit", "ls", "--type", "cache_pin"]);
    for who in [&nobody, &dev] {
        let out = b.arca_as(who, &["fleet", "pin", "cm", "1.2.0"]);
        assert!(!out.status.success(), "{} pinned", who.name);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("permission") || err.contains("denied") || err.contains("role"),
            "{}: {err}",
            who.name
        );
    }
    assert_eq!(
        cache(b)["pins"],
        serde_json::json!([]),
        "no pin after refusals"
    );
    assert_eq!(
        b.json(&["audit", "ls", "--type", "cache_pin"]),
        events_before,
        "no pin event after refusals"
    );
    // Root pins 1.2.0: the cache thread fetches it without anyone reading it.
    b.ok(&["fleet", "pin", "cm", "1.2.0"]);
    let pins = cache(b)["pins"].clone();
    assert_eq!(pins.as_array().map(Vec::len), Some(1), "{pins}");
    assert_eq!(pins[0]["version"], "1.2.0");
    within(60, "B fetches the pinned version", || {
        u64_of(&cache(b), "pinned_bytes") >= 12 << 20
    });
    assert!(
        b.fails(&["fleet", "pin", "cm", "1.2.0"])
            .contains("already pinned"),
        "pinning twice"
    );

    // Three more versions read through the mount (36 MiB on top of 36 MiB kept): the least
    // recently used unkept one, 1.3.0, must go.
    let fetched_before = b.json(&["status"])["fleet"]["bytes_fetched"]
        .as_u64()
        .unwrap();
    for (v, d) in &vs[3..] {
        for f in ["model.safetensors", "config.json"] {
            let got = std::fs::read(b.mnt().join(format!("cm/{v}/{f}"))).unwrap();
            assert_eq!(
                got,
                std::fs::read(d.join(f)).unwrap(),
                "{v} {f} through B's mount"
            );
        }
    }
    let settled = within(
        30,
        "B's cache back under its limit, space given back",
        || {
            let cs = cache(b);
            u64_of(&cs, "cached_bytes") <= limit && u64_of(&cs, "evicted_chunks") > 0
        },
    );
    let cs = cache(b);
    println!("fleet cache: B settled {settled:?} after the reads: {cs}");
    assert!(!cs["over_limit"].as_bool().unwrap(), "{cs}");
    assert!(u64_of(&cs, "kept_bytes") >= 24 << 20, "{cs}");
    // The real disk usage of B's state directory: the limit plus what is not chunks (the
    // audit trail, location rows, WAL, RocksDB's own files) and evicted chunks whose space is
    // not back yet (at most a fifth of the limit before a collection), within 1.5x the limit.
    // RocksDB drops the files a compaction made obsolete in the background: the space comes
    // back within seconds, not necessarily by the time the pass reports.
    let mut kinds = std::collections::BTreeMap::new();
    let mut used = du(&b.state_dir(), &mut kinds);
    let t = Instant::now();
    while used > limit + limit / 2 && t.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        kinds.clear();
        used = du(&b.state_dir(), &mut kinds);
    }
    println!(
        "fleet cache: B's state directory by kind of file (bytes), {:?} after the pass: {kinds:?}",
        t.elapsed()
    );
    println!(
        "fleet cache: B's state directory uses {:.1} MiB for a {:.1} MiB limit ({:.2}x); cached {:.1} MiB, blob files {:.1} MiB, garbage {:.1} MiB",
        used as f64 / 1048576.0,
        limit as f64 / 1048576.0,
        used as f64 / limit as f64,
        u64_of(&cs, "cached_bytes") as f64 / 1048576.0,
        u64_of(&cs, "disk_bytes") as f64 / 1048576.0,
        u64_of(&cs, "garbage_bytes") as f64 / 1048576.0,
    );
    assert!(
        used <= limit + limit / 2,
        "B's state directory uses {used} bytes for a limit of {limit}"
    );

    // The store stopped: production, staging and the pinned version are still served from
    // B's own store (by `get`, through arcad, not the page cache), the evicted 1.3.0 is not.
    c.stop();
    for (v, d) in &vs[..3] {
        assert_eq!(
            get_sha(b, "cm", v, v).unwrap_or_else(|e| panic!("{v} with the store down: {e}")),
            big_sha(d),
            "{v} with the store down"
        );
    }
    let err = get_sha(b, "cm", "1.3.0", "evicted").expect_err("1.3.0 was evicted");
    println!(
        "fleet cache: the evicted 1.3.0 with the store down: {}",
        err.trim()
    );
    // Back: the evicted version is fetched again, verified, byte-identical.
    let mut c = c;
    c.restart();
    within(30, "B reads the evicted version again", || {
        get_sha(b, "cm", "1.3.0", "again").is_ok()
    });
    assert_eq!(
        get_sha(b, "cm", "1.3.0", "again2").unwrap(),
        big_sha(&vs[3].1)
    );
    let fetched_after = b.json(&["status"])["fleet"]["bytes_fetched"]
        .as_u64()
        .unwrap();
    assert!(
        fetched_after >= fetched_before + (48 << 20),
        "B fetched 1.3.0 twice: {fetched_before} -> {fetched_after}"
    );
    // Unpinned, 1.2.0 may go again; the pin list is empty.
    b.ok(&["fleet", "unpin", "cm", "1.2.0"]);
    assert_eq!(cache(b)["pins"], serde_json::json!([]));
    let ev = b.json(&["audit", "ls", "--type", "cache_pin"]);
    assert_eq!(
        ev.as_array().map(Vec::len),
        Some(2),
        "pin and unpin events: {ev}"
    );
    // Metrics.
    let (st, m) = b.raw("GET", "/metrics", b"");
    assert_eq!(st, 200);
    let m = String::from_utf8_lossy(&m).into_owned();
    for name in [
        "arca_fleet_cache_bytes",
        "arca_fleet_cache_limit_bytes",
        "arca_fleet_cache_kept_bytes",
        "arca_fleet_cache_pinned_bytes",
        "arca_fleet_cache_evicted_chunks",
    ] {
        assert!(m.contains(name), "{name} in /metrics");
    }
}

#[test]
fn fleet_warm_before_switch_flips_only_once_the_version_is_cached() {
    let (c, hosts, u) = two_hosts(
        20_100,
        "warm_before_switch_secs = 60\ncache_gib = 1\n",
        "wm",
    );
    let (a, b) = (&hosts[0], &hosts[1]);
    let d = model_dir(a, &u, "wm1", 96 << 20, 15_001);
    push_as(a, &u, &d, "wm", "1.0.0");
    within(10, "B sees the version", || {
        b.arca(&["show", "wm", "1.0.0"]).status.success()
    });
    assert_eq!(u64_of(&cache(b), "cached_bytes"), 0, "B has read nothing");
    a.root_key();
    // Staging: B has none of the version's chunks. Its link appears only once they are here:
    // the store stopped right after the flip, every file is still read.
    let mut c = c;
    let mut flips = Vec::new();
    for (to, ticket) in [("staging", None), ("production", Some("T-1"))] {
        // Right after the store came back, A's first change may still find it unreachable.
        if let Some(t) = ticket {
            within(30, "A approves", || {
                a.arca(&["approve", "wm", "1.0.0", "--ticket", t])
                    .status
                    .success()
            });
        }
        let mut args = vec!["promote", "wm", "1.0.0", "--to", to];
        if let Some(t) = ticket {
            args.extend(["--ticket", t]);
        }
        within(30, &format!("A promotes to {to}"), || {
            a.arca(&args).status.success()
        });
        let acked = Instant::now();
        let link = b.mnt().join(format!("wm/{to}"));
        within(60, &format!("B's {to} link"), || {
            std::fs::read_link(&link)
                .map(|t| t == Path::new("1.0.0"))
                .unwrap_or(false)
        });
        let took = acked.elapsed();
        c.stop();
        let cs = cache(b);
        println!(
            "fleet warm: B flipped {to} {took:?} after A's acknowledgement; cached {:.1} MiB, last warm-up {} ms",
            u64_of(&cs, "cached_bytes") as f64 / 1048576.0,
            u64_of(&cs, "last_warm_ms")
        );
        flips.push((to, took));
        for f in ["model.safetensors", "config.json"] {
            let got = std::fs::read(link.join(f))
                .unwrap_or_else(|e| panic!("{f} through B's {to} link with the store down: {e}"));
            assert_eq!(
                sha256_hex(&got),
                sha256_hex(&std::fs::read(d.join(f)).unwrap()),
                "{f}"
            );
        }
        assert_eq!(get_sha(b, "wm", "1.0.0", to).unwrap(), big_sha(&d));
        c.restart();
    }
    let cs = cache(b);
    assert!(u64_of(&cs, "warmups") >= 2, "{cs}");
    assert_eq!(u64_of(&cs, "warmups_incomplete"), 0, "{cs}");
    assert!(b.log().contains("warmed the version"), "B logs the warm-up");
    println!("fleet warm: flips after the writer's acknowledgement: {flips:?}");
}

/// A pushing host evicts its own chunks only while the store holds their pack: a pack deleted
/// behind arca's back (or lost by the store) leaves the chunks on the host that has the last
/// copy, named in its log, and the version stays readable there.
#[test]
fn fleet_cache_keeps_chunks_whose_pack_is_gone_from_the_store() {
    // 0.03 GiB: 30.7 MiB, for four versions of 12 MiB.
    let limit: u64 = (0.03 * (1u64 << 30) as f64) as u64;
    let (c, hosts, u) = two_hosts(20_200, "cache_gib = 0.03\n", "gp");
    let a = &hosts[0];
    let g = c.endpoints[0].clone();
    let first = model_dir(a, &u, "gp0", 12 << 20, 16_000);
    push_as(a, &u, &first, "gp", "1.0.0");
    let want = big_sha(&first);
    // Every pack in the store now is 1.0.0's: deleted behind arca's back.
    let packs = list_keys(&g, "arca/packs/");
    assert!(!packs.is_empty(), "1.0.0's packs in the store");
    for k in &packs {
        let (st, _, _) = request(&g, "DELETE", &format!("/{BUCKET}/{k}"), &[], b"");
        assert!(st == 204 || st == 200, "deleting {k}: {st}");
    }
    // Three more versions: 48 MiB for a 30.7 MiB limit, and 1.0.0 the least recently used.
    for i in 1..4 {
        let d = model_dir(a, &u, &format!("gp{i}"), 12 << 20, 16_000 + i);
        push_as(a, &u, &d, "gp", &format!("1.{i}.0"));
    }
    within(30, "A evicts the chunks whose pack is in the store", || {
        u64_of(&cache(a), "evicted_chunks") > 0
    });
    let cs = cache(a);
    println!("fleet cache: A with 1.0.0's packs gone from the store: {cs}");
    // 1.0.0's chunks stayed: `get` on A serves them (the store has none of them).
    assert_eq!(
        get_sha(a, "gp", "1.0.0", "gone").expect("1.0.0 on A, its packs gone"),
        want
    );
    assert!(
        u64_of(&cs, "cached_bytes") >= 12 << 20,
        "1.0.0 is still here: {cs}"
    );
    assert!(
        u64_of(&cs, "cached_bytes") <= limit + (13 << 20),
        "the other versions were evicted: {cs}"
    );
    let log = a.log();
    assert!(
        log.contains("missing from the store; they are not evicted"),
        "A's log names the missing pack:\n{log}"
    );
}

/// `serve = [...]`: a host keeps production and staging of the models it lists only. Another
/// model's production is still served (read through the mount, verified, byte-identical) but
/// cached like any version: evicted when the cache is full, while the listed one stays.
#[test]
fn fleet_serve_list_narrows_what_a_host_keeps() {
    // 10 MiB: less than the two 6 MiB models together.
    let (_c, hosts, u) = two_hosts(20_200, "cache_gib = 0.01\nserve = [\"sk\"]\n", "sk");
    let (a, b) = (&hosts[0], &hosts[1]);
    a.ok(&["role", "assign", &u.name, "developer", "--model", "so"]);
    let size = 6 << 20;
    let kept_dir = model_dir(a, &u, "sk0", size, 15_000);
    push_as(a, &u, &kept_dir, "sk", "1.0.0");
    let other_dir = model_dir(a, &u, "so0", size, 15_001);
    push_as(a, &u, &other_dir, "so", "1.0.0");
    a.root_key();
    for m in ["sk", "so"] {
        a.ok(&["promote", m, "1.0.0", "--to", "staging"]);
        a.ok(&["approve", m, "1.0.0", "--ticket", "T-1"]);
        a.ok(&[
            "promote",
            m,
            "1.0.0",
            "--to",
            "production",
            "--ticket",
            "T-1",
        ]);
    }
    within(10, "B applies both promotions", || {
        ["sk", "so"].iter().all(|m| {
            std::fs::read_link(b.mnt().join(format!("{m}/production")))
                .map(|t| t == Path::new("1.0.0"))
                .unwrap_or(false)
        })
    });
    assert_eq!(cache(b)["serve"], serde_json::json!(["sk"]));
    let status = String::from_utf8_lossy(&b.arca(&["fleet", "status"]).stdout).into_owned();
    assert!(
        status.contains("keeps production and staging of: sk"),
        "{status}"
    );
    // B serves both models' production: the listed one first, then the other, which takes
    // the cache over its limit.
    for (m, d) in [("sk", &kept_dir), ("so", &other_dir)] {
        assert_eq!(
            big_sha(&b.mnt().join(format!("{m}/production"))),
            big_sha(d),
            "{m} through B's mount"
        );
    }
    let limit: u64 = (0.01 * (1u64 << 30) as f64) as u64;
    // A pass runs after a fetch that took the cache over its limit, and when a file closes
    // with the cache over it: the pass after the fetch finds so's file still open (its chunks
    // are not evicted then), the one at its close evicts, at once rather than at the next
    // 30 s pass.
    let t = Instant::now();
    let cs = loop {
        let cs = cache(b);
        if u64_of(&cs, "cached_bytes") <= limit && u64_of(&cs, "evicted_bytes") > 0 {
            break cs;
        }
        assert!(
            t.elapsed().as_secs() < 20,
            "B's cache not back under its limit by eviction: {cs}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    println!(
        "fleet serve: B's cache after reading both, {:?} later: {cs}",
        t.elapsed()
    );
    // Kept: sk's production (6 MiB and the seals), not so's, which was evicted instead, though
    // it was read last.
    let kept = u64_of(&cs, "kept_bytes");
    assert!(
        kept >= size as u64 && kept < size as u64 + (2 << 20),
        "{cs}"
    );
    assert!(!cs["over_limit"].as_bool().unwrap(), "{cs}");
    assert_eq!(
        big_sha(&b.mnt().join("so/production")),
        big_sha(&other_dir),
        "so still reads byte-identical after its eviction"
    );
}
