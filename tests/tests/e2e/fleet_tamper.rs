//! Issue #14, must-show items 6 (tampering at the store), 3 (races) and 1 (a 1 GiB model), on a
//! real SeaweedFS cluster with separate arcad hosts. Tampering goes through the S3 API behind
//! arca's back, as someone who can write the bucket but holds no key would: packs truncated,
//! swapped, their index edited; log entries deleted (applied everywhere, and not yet applied by a
//! lagging host), replayed at the next seq, forged over an existing seq, planted far ahead; the
//! keys object replaced; heartbeats forged. Each case checks that no corrupt byte is served, no
//! forged or stale state is applied (versions and `production` on every host), and that the
//! hosts name what is wrong (`status`, `arca fleet status`, the daemon log, the audit trail).
//! Each prints a `TAMPER|case|what the hosts showed` line.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use super::fleet::{
    fleet_hosts, fleet_toml, list_keys, model_dir, push_as, request, within, Cluster, BUCKET,
};
use crate::harness::{pseudo_random, sha256_hex, user, TestEnv};

fn obj(key: &str) -> String {
    format!("/{BUCKET}/{key}")
}

fn get_obj(gw: &str, key: &str) -> Vec<u8> {
    let (st, _, body) = request(gw, "GET", &obj(key), &[], b"");
    assert_eq!(st, 200, "GET {key}");
    body
}

/// Puts `bytes` at `key` behind arca's back, and waits until every gateway serves them (the
/// filers share metadata asynchronously).
fn put_obj(gws: &[&str], key: &str, bytes: &[u8]) {
    let (st, _, _) = request(gws[0], "PUT", &obj(key), &[], bytes);
    assert_eq!(st, 200, "PUT {key}");
    for gw in gws {
        within(10, &format!("{key} through {gw}"), || {
            let (st, _, b) = request(gw, "GET", &obj(key), &[], b"");
            st == 200 && b == bytes
        });
    }
}

fn delete_obj(gws: &[&str], key: &str) {
    let (st, _, _) = request(gws[0], "DELETE", &obj(key), &[], b"");
    assert!(st == 204 || st == 200, "DELETE {key}: {st}");
    for gw in gws {
        within(10, &format!("{key} gone through {gw}"), || {
            request(gw, "GET", &obj(key), &[], b"").0 == 404
        });
    }
}

fn entry_key(seq: u64) -> String {
    format!("arca/log/{seq:020}")
}

/// Reads `path` until the end or the first error: the bytes served, and the error.
fn read_until_error(path: &Path) -> (Vec<u8>, Option<std::io::Error>) {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// A read that fails with EIO, having served only bytes of the original (a prefix of it).
fn assert_eio_prefix(path: &Path, original: &[u8], what: &str) {
    let (served, err) = read_until_error(path);
    let err = err.unwrap_or_else(|| panic!("{what}: the whole file was served"));
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{what}: {err}");
    assert!(
        original.starts_with(&served),
        "{what}: the {} bytes served before the EIO are not the original's",
        served.len()
    );
}

/// `arca get tp VERSION` on `h`, into a directory of its own.
fn get_tp(h: &TestEnv, version: &str) -> std::process::Output {
    let out = h.path().join(format!("get-{version}"));
    h.arca(&["get", "tp", version, "--out", out.to_str().unwrap()])
}

/// `h`'s `integrity_violation` events, as JSON text.
fn integrity_events(h: &TestEnv) -> String {
    h.json(&[
        "audit",
        "ls",
        "--type",
        "integrity_violation",
        "--limit",
        "1000",
    ])
    .to_string()
}

fn fleet_status(h: &TestEnv) -> serde_json::Value {
    h.json(&["status"])["fleet"].clone()
}

/// Waits until `h` reports itself halted with a reason containing `needle`, then checks that
/// its log, `arca fleet status` and its audit trail (an `integrity_violation` event) name it
/// too. Returns the reason.
fn halted_with(h: &TestEnv, name: &str, needle: &str) -> String {
    let mut why = String::new();
    within(
        20,
        &format!("{name} halts naming {needle:?}"),
        || match fleet_status(h)["halted"].as_str() {
            Some(w) => {
                why = w.to_owned();
                true
            }
            None => false,
        },
    );
    assert!(
        why.contains(needle),
        "{name} halted, but for another reason: {why}"
    );
    assert!(
        h.log().contains(needle),
        "{name}'s log names it: {needle}\n{}",
        h.log()
    );
    let table = h.ok(&["fleet", "status"]);
    assert!(
        table.contains("HALTED") && table.contains(needle),
        "{name}'s fleet status: {table}"
    );
    within(
        10,
        &format!("{name}'s audit trail records the halt"),
        || integrity_events(h).contains(&needle.replace('"', "\\\"")),
    );
    why
}

/// A halted host refuses changes, with one line that says why, and changes nothing.
fn refuses_changes(h: &TestEnv, name: &str, model: &str, version: &str) {
    let before = h.json(&["ls", model]);
    let err = h.fails(&["promote", model, version, "--to", "staging"]);
    assert!(
        err.contains("halted") && err.trim().lines().count() == 1,
        "{name} refuses a change in one line: {err}"
    );
    assert_eq!(
        h.json(&["ls", model]),
        before,
        "{name}: a refusal changes nothing"
    );
}

/// What a host shows of a model: its `production` link, and every version with its status.
type HostState = (Option<String>, Vec<(String, String)>);

fn production(h: &TestEnv, model: &str) -> Option<String> {
    std::fs::read_link(h.mnt().join(model).join("production"))
        .ok()
        .map(|p| p.display().to_string())
}

fn statuses(h: &TestEnv, model: &str) -> Vec<(String, String)> {
    let v = h.json(&["ls", model]);
    let mut out: Vec<(String, String)> = v
        .as_array()
        .unwrap_or_else(|| panic!("ls {model}: {v}"))
        .iter()
        .map(|r| {
            (
                r["version"].as_str().unwrap_or_default().to_owned(),
                r["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Restarts every host (a halt lasts until restart, when the log is checked anew).
fn restart(hosts: &mut [TestEnv]) {
    for h in hosts.iter_mut() {
        h.stop();
        h.start();
    }
}

/// Waits until every host applied the same newest entry, with the same hash.
fn converged(hosts: &[TestEnv]) -> (u64, String) {
    let mut last = Vec::new();
    within(20, "every host applied the same log", || {
        last = hosts
            .iter()
            .map(|h| {
                let f = fleet_status(h);
                (
                    f["applied_seq"].as_u64().unwrap_or(0),
                    f["applied_hash"].as_str().unwrap_or_default().to_owned(),
                    f["halted"].is_null(),
                )
            })
            .collect();
        last.iter().all(|x| x == &last[0] && x.2)
    });
    (last[0].0, last[0].1.clone())
}

#[test]
fn fleet_tampered_packs_never_serve_a_corrupt_byte() {
    let c = Cluster::start(21_000);
    let (g0, g1) = (c.endpoints[0].as_str(), c.endpoints[1].as_str());
    let gws = [g0, g1];
    assert_eq!(request(g0, "PUT", &format!("/{BUCKET}"), &[], b"").0, 200);
    let hosts = fleet_hosts(&["a", "c"], &[vec![g0], vec![g1, g0]]);
    let (a, hc) = (&hosts[0], &hosts[1]);
    a.root_key();
    let u = user("arca-e2e-fleet-pub");
    // Four versions, each in packs of its own (different bytes, pushed one after another).
    let mut packs: Vec<Vec<String>> = Vec::new();
    let mut originals = Vec::new();
    for i in 1..=4u64 {
        let before: std::collections::HashSet<String> =
            list_keys(g0, "arca/packs/").into_iter().collect();
        let d = model_dir(a, &u, &format!("tp{i}"), 3 << 20, 21_000 + i);
        a.ok(&[
            "push",
            d.to_str().unwrap(),
            "--name",
            "tp",
            "--version",
            &format!("{i}.0.0"),
        ]);
        let new: Vec<String> = list_keys(g0, "arca/packs/")
            .into_iter()
            .filter(|k| !before.contains(k))
            .collect();
        assert_eq!(new.len(), 1, "one pack for tp {i}.0.0: {new:?}");
        packs.push(new);
        originals.push(std::fs::read(d.join("model.safetensors")).unwrap());
    }
    within(10, "C sees the four versions", || {
        hc.arca(&["show", "tp", "4.0.0"]).status.success()
    });
    let file = |v: u64| hc.mnt().join(format!("tp/{v}.0.0/model.safetensors"));
    let pack_bytes: Vec<Vec<u8>> = packs.iter().map(|p| get_obj(g0, &p[0])).collect();

    // A truncated pack: the chunks past the cut are never served; those before it are the
    // original bytes.
    let p1 = &packs[0][0];
    put_obj(&gws, p1, &pack_bytes[0][..pack_bytes[0].len() / 2]);
    assert_eio_prefix(&file(1), &originals[0], "truncated pack, mount");
    let out = get_tp(hc, "1.0.0");
    assert!(!out.status.success(), "get of a truncated pack fails");
    let pack_id = p1.trim_start_matches("arca/packs/");
    let line = hc
        .log()
        .lines()
        .find(|l| {
            l.contains(pack_id) && l.contains("does not hold the bytes its signed location names")
        })
        .unwrap_or_else(|| panic!("C's log names the truncated pack {pack_id}:\n{}", hc.log()))
        .to_owned();
    let st = fleet_status(hc);
    assert!(st["integrity_failures"].as_u64().unwrap() > 0, "{st}");
    assert!(
        st["store_error"].is_null(),
        "a damaged pack is not a store out of reach: {st}"
    );
    println!("TAMPER|pack truncated|C: mount read EIO after the intact prefix; get failed: {}; log: {line}",
        String::from_utf8_lossy(&out.stderr).trim());

    // Two packs swapped: every chunk fails authentication against the id its location names.
    let (p2, p3) = (&packs[1][0], &packs[2][0]);
    let fails0 = fleet_status(hc)["integrity_failures"].as_u64().unwrap();
    put_obj(&gws, p2, &pack_bytes[2]);
    put_obj(&gws, p3, &pack_bytes[1]);
    assert_eio_prefix(&file(2), &originals[1], "swapped pack (2.0.0), mount");
    assert_eio_prefix(&file(3), &originals[2], "swapped pack (3.0.0), mount");
    let out = get_tp(hc, "2.0.0");
    assert!(!out.status.success(), "get of a swapped pack fails");
    let fails = fleet_status(hc)["integrity_failures"].as_u64().unwrap();
    assert!(
        fails > fails0,
        "status counts the failures: {fails0} -> {fails}"
    );
    for p in [p2, p3] {
        let id = p.trim_start_matches("arca/packs/");
        assert!(
            hc.log()
                .lines()
                .any(|l| l.contains("failed authentication") && l.contains(id)),
            "C's log names pack {id}:\n{}",
            hc.log()
        );
    }
    let ev = integrity_events(hc);
    assert!(
        ev.contains("2.0.0") && ev.contains("3.0.0"),
        "the audit trail records the failed reads: {ev}"
    );
    println!("TAMPER|packs swapped|C: mount EIO on both versions, get failed, integrity_failures {fails0}->{fails}, log names both packs (failed authentication), integrity_violation events for 2.0.0 and 3.0.0");

    // A pack's index edited, its chunk bytes intact: readers go by the locations in the signed
    // log, never by the index, so the bytes served are the original ones.
    let p4 = &packs[3][0];
    let mut edited = pack_bytes[3].clone();
    let n = edited.len();
    let index_len = u32::from_le_bytes(edited[n - 8..n - 4].try_into().unwrap()) as usize;
    let index_mid = n - 8 - index_len / 2;
    edited[index_mid] ^= 0xff;
    put_obj(&gws, p4, &edited);
    let (served, err) = read_until_error(&file(4));
    assert!(
        err.is_none(),
        "an edited index does not stop reads: {err:?}"
    );
    assert_eq!(sha256_hex(&served), sha256_hex(&originals[3]));
    println!("TAMPER|pack index edited, chunks intact|C: served byte-identical (the index is never read; locations come from the signed log)");

    // Restored: nothing bad was cached, so every version reads back whole.
    for (i, p) in packs.iter().enumerate() {
        put_obj(&gws, &p[0], &pack_bytes[i]);
    }
    for v in 1..=4u64 {
        let got = std::fs::read(file(v)).expect("read after the packs were restored");
        assert_eq!(sha256_hex(&got), sha256_hex(&originals[v as usize - 1]));
    }
    let got = hc.path().join("g-all");
    hc.ok(&["get", "tp", "1.0.0", "--out", got.to_str().unwrap()]);
    println!("TAMPER|packs restored|C: all four versions served byte-identical, get verifies");
}

#[test]
fn fleet_tampered_log_is_never_applied_and_always_named() {
    let c = Cluster::start(21_100);
    let (g0, g1) = (c.endpoints[0].as_str(), c.endpoints[1].as_str());
    let gws = [g0, g1];
    assert_eq!(request(g0, "PUT", &format!("/{BUCKET}"), &[], b"").0, 200);
    let mut hosts = fleet_hosts(&["a", "b", "c"], &[vec![g0], vec![g1], vec![g1, g0]]);
    hosts[0].root_key();
    hosts[0].ok(&["policy", "set", "tl", "--require-approval", "no"]);
    for (i, v) in ["1.0.0", "2.0.0", "3.0.0", "4.0.0"].iter().enumerate() {
        hosts[0].push_small("tl", v, 21_100 + i as u64, &[]);
    }
    hosts[0].ok(&["promote", "tl", "1.0.0", "--to", "staging"]);
    hosts[0].ok(&["promote", "tl", "1.0.0", "--to", "production"]);
    let (head, _) = converged(&hosts);
    let names = ["A", "B", "C"];
    // What every host must keep showing while the log is tampered with.
    let state = |hs: &[TestEnv]| -> Vec<HostState> {
        hs.iter()
            .map(|h| (production(h, "tl"), statuses(h, "tl")))
            .collect()
    };
    let good = state(&hosts);
    assert!(good
        .iter()
        .all(|s| s == &good[0] && s.0.as_deref() == Some("1.0.0")));

    // 1. An entry every host applied (not the newest) deleted: each names it within seconds.
    let victim = 2;
    let saved = get_obj(g0, &entry_key(victim));
    delete_obj(&gws, &entry_key(victim));
    for (h, n) in hosts.iter().zip(names) {
        let why = halted_with(h, n, &format!("log entry {victim}, applied here, is gone"));
        if n == "A" {
            println!("TAMPER|applied entry {victim} deleted|every host halts: {why}");
        }
    }
    refuses_changes(&hosts[1], "B", "tl", "2.0.0");
    assert_eq!(state(&hosts), good, "nothing changed while halted");
    put_obj(&gws, &entry_key(victim), &saved);
    restart(&mut hosts);
    converged(&hosts);

    // 2. An entry a lagging host has not applied yet deleted, with a later entry after it:
    // the lagging host stops before the gap (it never applies the later entry), and the hosts
    // that applied the deleted one name it.
    hosts[2].stop();
    hosts[0].ok(&["promote", "tl", "2.0.0", "--to", "staging"]);
    hosts[0].ok(&["promote", "tl", "2.0.0", "--to", "production"]);
    let gap = head + 1;
    for h in &hosts[..2] {
        within(10, "A and B apply both entries", || {
            fleet_status(h)["applied_seq"].as_u64() == Some(gap + 1)
        });
    }
    let saved = get_obj(g0, &entry_key(gap));
    delete_obj(&gws, &entry_key(gap));
    hosts[2].start();
    let why = halted_with(
        &hosts[2],
        "C",
        &format!("entry {gap} is missing but entry {} exists", gap + 1),
    );
    println!("TAMPER|entry {gap} deleted before a lagging host applied it|C halts: {why}");
    assert_eq!(
        state(&hosts[2..]),
        good[2..].to_vec(),
        "C keeps the state it had: entry {} after the gap is not applied",
        gap + 1
    );
    assert_eq!(fleet_status(&hosts[2])["applied_seq"].as_u64(), Some(head));
    refuses_changes(&hosts[2], "C", "tl", "3.0.0");
    for (h, n) in hosts[..2].iter().zip(names) {
        halted_with(h, n, &format!("log entry {gap}, applied here, is gone"));
    }
    put_obj(&gws, &entry_key(gap), &saved);
    restart(&mut hosts);
    let (head, _) = converged(&hosts);
    let good = state(&hosts);
    assert!(good
        .iter()
        .all(|s| s == &good[0] && s.0.as_deref() == Some("2.0.0")));

    // 3. An old entry replayed at the next free seq: its header and seal name its own seq.
    let replay = head + 1;
    put_obj(&gws, &entry_key(replay), &get_obj(g0, &entry_key(3)));
    for (h, n) in hosts.iter().zip(names) {
        let why = halted_with(h, n, &format!("stored at seq {replay} but says 3"));
        if n == "A" {
            println!("TAMPER|entry 3 replayed at seq {replay}|every host halts: {why}");
        }
    }
    assert_eq!(state(&hosts), good);
    delete_obj(&gws, &entry_key(replay));
    restart(&mut hosts);
    converged(&hosts);

    // 4. Forged entries claiming the newest seq, which every host applied: another valid
    // entry's bytes, then random bytes. Each host sees the store's entry is not the one it
    // applied: a fork, naming the seq and both hashes.
    let saved = get_obj(g0, &entry_key(head));
    for (what, forged) in [
        ("another entry's bytes", get_obj(g0, &entry_key(head - 1))),
        ("random bytes", pseudo_random(saved.len(), 21_104)),
    ] {
        put_obj(&gws, &entry_key(head), &forged);
        for (h, n) in hosts.iter().zip(names) {
            let why = halted_with(h, n, &format!("fork at log entry {head}"));
            if n == "A" {
                println!("TAMPER|entry {head} replaced by {what}|every host halts: {why}");
            }
        }
        assert_eq!(state(&hosts), good);
        put_obj(&gws, &entry_key(head), &saved);
        restart(&mut hosts);
        converged(&hosts);
    }

    // 5. A forged entry at a seq a lagging host has yet to apply (another valid entry's bytes):
    // the lagging host refuses it by name and keeps its state.
    hosts[2].stop();
    hosts[0].ok(&["promote", "tl", "3.0.0", "--to", "staging"]);
    let next = head + 1;
    for h in &hosts[..2] {
        within(10, "A and B apply the entry", || {
            fleet_status(h)["applied_seq"].as_u64() == Some(next)
        });
    }
    let saved = get_obj(g0, &entry_key(next));
    put_obj(&gws, &entry_key(next), &get_obj(g0, &entry_key(2)));
    hosts[2].start();
    let why = halted_with(&hosts[2], "C", &format!("stored at seq {next} but says 2"));
    println!("TAMPER|entry {next} forged before a lagging host applied it|C halts: {why}");
    assert_eq!(
        state(&hosts[2..]),
        good[2..].to_vec(),
        "C applied nothing forged"
    );
    put_obj(&gws, &entry_key(next), &saved);
    restart(&mut hosts);
    let (head, _) = converged(&hosts);
    let good = state(&hosts);

    // 6. An entry planted far ahead (a gap of 49): every host names the gap and applies
    // nothing, and no host writes its next change under it.
    let far = head + 50;
    put_obj(&gws, &entry_key(far), &get_obj(g0, &entry_key(head)));
    for (h, n) in hosts.iter().zip(names) {
        let why = halted_with(
            h,
            n,
            &format!("entry {} is missing but entry {far} exists", head + 1),
        );
        if n == "A" {
            println!("TAMPER|an entry planted at seq {far}|every host halts: {why}");
        }
    }
    refuses_changes(&hosts[0], "A", "tl", "4.0.0");
    assert_eq!(state(&hosts), good);
    assert!(
        request(g0, "GET", &obj(&entry_key(head + 1)), &[], b"").0 == 404,
        "no host wrote under the gap"
    );
    delete_obj(&gws, &entry_key(far));
    restart(&mut hosts);
    converged(&hosts);

    // 7. The keys object replaced (its id key no longer unwraps with the fleet's KEK): hosts
    // that joined use the keys in their own stores, so running and restarting hosts go on; a
    // new host refuses to join, naming the object.
    let keys = get_obj(g0, "arca/fleet/keys");
    let mut rogue: serde_json::Value = serde_json::from_slice(&keys).unwrap();
    rogue["id_key"] = serde_json::Value::String(hex::encode(pseudo_random(60, 21_107)));
    put_obj(
        &gws,
        "arca/fleet/keys",
        &serde_json::to_vec(&rogue).unwrap(),
    );
    let mut newcomer = TestEnv::unstarted();
    std::fs::copy(
        hosts[0].path().join("kek.key"),
        newcomer.path().join("kek.key"),
    )
    .unwrap();
    let cfg = newcomer.path().join("arcad.toml");
    std::fs::write(&cfg, fleet_toml("z", &[g0], &[])).unwrap();
    newcomer.daemon_args = vec!["--config".into(), cfg.to_str().unwrap().into()];
    let out = newcomer.arcad_once(&["--host-key"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a new host must not join on replaced keys"
    );
    assert!(
        err.contains("fleet/keys") && err.contains("does not unwrap"),
        "the new host names the keys object: {err}"
    );
    hosts[2].stop();
    hosts[2].start();
    hosts[1].ok(&["promote", "tl", "3.0.0", "--to", "production"]);
    within(10, "every host applies the promotion", || {
        hosts
            .iter()
            .all(|h| production(h, "tl").as_deref() == Some("3.0.0"))
    });
    println!(
        "TAMPER|fleet/keys replaced|running and restarted hosts go on with their own keys; a new host refuses to join: {}",
        err.lines()
            .find(|l| l.contains("does not unwrap"))
            .unwrap_or_default()
            .trim()
    );
    put_obj(&gws, "arca/fleet/keys", &keys);
    converged(&hosts);

    // 8. Heartbeats forged: random bytes as a new host, and B's heartbeat copied over A's.
    // `arca fleet status` shows both unreadable and takes no seq from them.
    put_obj(&gws, "arca/hosts/zz", &pseudo_random(300, 21_108));
    let hb_b = get_obj(g0, "arca/hosts/b");
    let (st, _, _) = request(g0, "PUT", &obj("arca/hosts/a"), &[], &hb_b);
    assert_eq!(st, 200);
    let head_now = fleet_status(&hosts[2])["applied_seq"].as_u64().unwrap();
    let mut seen = serde_json::Value::Null;
    within(10, "C's fleet status shows the forged heartbeats", || {
        seen = fleet_status(&hosts[2]);
        let rows = seen["hosts"].as_array().cloned().unwrap_or_default();
        let row = |n: &str| rows.iter().find(|r| r["host"] == n).cloned();
        row("zz").is_some_and(|r| r["unreadable"].is_string())
            && row("a").is_some_and(|r| r["unreadable"].is_string())
    });
    assert_eq!(seen["head_seq"].as_u64(), Some(head_now), "{seen}");
    println!(
        "TAMPER|heartbeats forged (random; B's copied over A's)|C's fleet status: zz {}, a {}",
        seen["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["host"] == "zz")
            .unwrap()["unreadable"],
        seen["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["host"] == "a")
            .unwrap()["unreadable"]
    );
}

/// Issue #14, must-show 3: 16 promotions of different versions at once, four from each of four
/// hosts, while every host is sampled without pause; then the logs compared.
#[test]
fn fleet_concurrent_promotions_keep_one_production_and_one_log() {
    let c = Cluster::start(21_200);
    let (g0, g1) = (c.endpoints[0].as_str(), c.endpoints[1].as_str());
    assert_eq!(request(g0, "PUT", &format!("/{BUCKET}"), &[], b"").0, 200);
    let hosts = fleet_hosts(
        &["h1", "h2", "h3", "h4"],
        &[vec![g0], vec![g1], vec![g0, g1], vec![g1, g0]],
    );
    let w = &hosts[0];
    w.root_key();
    w.ok(&["policy", "set", "rc", "--require-approval", "no"]);
    let versions: Vec<String> = (1..=16).map(|i| format!("{i}.0.0")).collect();
    for (i, v) in versions.iter().enumerate() {
        w.push_small("rc", v, 21_200 + i as u64, &[]);
        w.ok(&["promote", "rc", v, "--to", "staging"]);
    }
    converged(&hosts);

    let stop = std::sync::atomic::AtomicBool::new(false);
    let (results, samples) = std::thread::scope(|s| {
        // Samplers: the mount's `production` link and `arca ls` on every host, without pause.
        let samplers: Vec<_> = hosts
            .iter()
            .map(|h| {
                let (stop, versions) = (&stop, &versions);
                s.spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let out = h.arca(&["--json", "ls", "rc"]);
                        assert!(out.status.success());
                        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                        let prod: Vec<&str> = v
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter(|r| r["status"] == "production")
                            .filter_map(|r| r["version"].as_str())
                            .collect();
                        assert!(prod.len() <= 1, "two production versions at once: {prod:?}");
                        let link = production(h, "rc");
                        if let Some(l) = &link {
                            assert!(versions.contains(l), "production -> {l}");
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let start = Instant::now() + Duration::from_millis(300);
        let promoters: Vec<_> = versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let h = &hosts[i % 4];
                s.spawn(move || {
                    while Instant::now() < start {
                        std::thread::yield_now();
                    }
                    let out = h.arca(&["promote", "rc", v, "--to", "production"]);
                    (v.clone(), i % 4, out)
                })
            })
            .collect();
        let results: Vec<_> = promoters.into_iter().map(|p| p.join().unwrap()).collect();
        // Keep sampling while the last changes reach every host.
        converged(&hosts);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let samples: Vec<u64> = samplers.into_iter().map(|t| t.join().unwrap()).collect();
        (results, samples)
    });
    let acked: Vec<&String> = results
        .iter()
        .filter(|(_, _, o)| o.status.success())
        .map(|(v, _, _)| v)
        .collect();
    for (v, h, o) in &results {
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.trim().lines().count() == 1 && err.contains("nothing was changed"),
                "a refused promotion of {v} on host {} says so in one line: {err}",
                h + 1
            );
            println!("RACE|refused|{v} on h{}: {}", h + 1, err.trim());
        }
    }
    assert!(!acked.is_empty(), "some promotion went through");

    // Identical logs: the same newest entry and hash everywhere, the same promotion events
    // with the same fleet seqs in every host's trail.
    let (head, hash) = converged(&hosts);
    let log_of = |h: &TestEnv| -> Vec<(u64, String, String)> {
        let ev = h.json(&[
            "audit",
            "ls",
            "--model",
            "rc",
            "--type",
            "promotion",
            "--limit",
            "1000",
        ]);
        let mut out: Vec<(u64, String, String)> = ev
            .as_array()
            .unwrap_or_else(|| panic!("audit ls: {ev}"))
            .iter()
            .map(|e| {
                let d = &e["details"];
                (
                    d["fleet_seq"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("an event without its fleet seq: {e}")),
                    e["version"].as_str().unwrap_or_default().to_owned(),
                    d["to"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let logs: Vec<_> = hosts.iter().map(log_of).collect();
    for (i, l) in logs.iter().enumerate() {
        assert_eq!(l, &logs[0], "host h{}'s promotions differ from h1's", i + 1);
    }
    // No lost update: each acknowledged promotion is in the log exactly once, no refused one
    // is, and the last one in log order holds production everywhere.
    let to_prod: Vec<&(u64, String, String)> = logs[0]
        .iter()
        .filter(|(_, _, to)| to == "production")
        .collect();
    for v in &versions {
        let n = to_prod.iter().filter(|(_, ver, _)| ver == v).count();
        let want = usize::from(acked.contains(&v));
        assert_eq!(n, want, "promotions of {v} to production in the log");
    }
    let last = &to_prod.last().unwrap().1;
    for (i, h) in hosts.iter().enumerate() {
        assert_eq!(
            production(h, "rc").as_ref(),
            Some(last),
            "h{}'s production link",
            i + 1
        );
        let prod: Vec<(String, String)> = statuses(h, "rc")
            .into_iter()
            .filter(|(_, s)| s == "production")
            .collect();
        assert_eq!(prod, vec![(last.clone(), "production".to_string())]);
    }
    println!(
        "RACE|16 promotions from 4 hosts|acknowledged={}|refused={}|samples={:?}|head_seq={head}|head_hash={hash}|final production={last} on every host",
        acked.len(),
        16 - acked.len(),
        samples
    );
}

/// Issue #14, must-show 1, at full size: a 1 GiB model and small files pushed on A by a
/// publisher, approved by another user on B and promoted there; C, which holds none of it,
/// serves byte-identical files through its mount (read and mmap) and `get` verifies.
#[test]
fn fleet_one_gib_model_pushed_on_a_approved_on_b_served_by_c() {
    use sha2::Digest;
    let t0 = Instant::now();
    let c = Cluster::start(21_300);
    let (g0, g1) = (c.endpoints[0].as_str(), c.endpoints[1].as_str());
    assert_eq!(request(g0, "PUT", &format!("/{BUCKET}"), &[], b"").0, 200);
    let hosts = fleet_hosts(&["a", "b", "c"], &[vec![g0], vec![g1], vec![g1, g0]]);
    let (a, b, hc) = (&hosts[0], &hosts[1], &hosts[2]);
    let u = user("arca-e2e-fleet-pub");
    a.trusted_key_for(&u);
    a.ok(&["role", "assign", &u.name, "developer", "--model", "big"]);
    // The model: small files from `model_dir`, and a 1 GiB file written in 16 MiB blocks of
    // pseudo-random bytes (a seed per block: cheap, and never the whole file in memory), its
    // SHA-256 taken as it is written.
    let d = model_dir(a, &u, "big", 1, 21_300);
    let big = d.join("model.safetensors");
    let mut want = sha2::Sha256::new();
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        for block in 0..64u64 {
            let b = pseudo_random(16 << 20, 21_300_000 + block);
            want.update(&b);
            f.write_all(&b).unwrap();
        }
        f.flush().unwrap();
    }
    let want = hex::encode(want.finalize());
    std::fs::write(d.join("tokenizer.json"), b"{\"vocab\": [\"a\", \"b\"]}").unwrap();
    nix::unistd::chown(
        &d.join("tokenizer.json"),
        Some(u.uid.into()),
        Some(u.gid.into()),
    )
    .unwrap();
    nix::unistd::chown(&big, Some(u.uid.into()), Some(u.gid.into())).unwrap();
    let small: Vec<(String, String)> = ["config.json", "tokenizer.json"]
        .iter()
        .map(|f| {
            (
                f.to_string(),
                sha256_hex(&std::fs::read(d.join(f)).unwrap()),
            )
        })
        .collect();
    let t = Instant::now();
    push_as(a, &u, &d, "big", "1.0.0");
    let push = t.elapsed();
    // The source is no longer needed: keep the test's disk use down.
    std::fs::remove_file(&big).unwrap();

    within(10, "B sees the version pushed on A", || {
        b.arca(&["show", "big", "1.0.0"]).status.success()
    });
    b.root_key();
    b.ok(&["promote", "big", "1.0.0", "--to", "staging"]);
    b.ok(&["approve", "big", "1.0.0", "--ticket", "T-14"]);
    b.ok(&[
        "promote",
        "big",
        "1.0.0",
        "--to",
        "production",
        "--ticket",
        "T-14",
    ]);
    within(3, "C's production link flips within 3 s", || {
        production(hc, "big").as_deref() == Some("1.0.0")
    });

    // C: by mmap first (none of the chunks are there yet), then by read, then `get`.
    let served = hc.mnt().join("big/production/model.safetensors");
    let t = Instant::now();
    let f = std::fs::File::open(&served).unwrap();
    // SAFETY: the mount is read-only and the file is not changed while mapped.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    assert_eq!(map.len(), 1 << 30);
    let mut h = sha2::Sha256::new();
    for piece in map.chunks(16 << 20) {
        h.update(piece);
    }
    assert_eq!(
        hex::encode(h.finalize()),
        want,
        "C's mount serves the bytes by mmap"
    );
    drop(map);
    let cold_mmap = t.elapsed();
    let t = Instant::now();
    let (bytes, err) = {
        let mut f = std::fs::File::open(&served).unwrap();
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0usize;
        loop {
            let k = f.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k;
        }
        (n, hex::encode(h.finalize()))
    };
    assert_eq!(
        (bytes, err.as_str()),
        (1 << 30, want.as_str()),
        "C's mount by read"
    );
    let read = t.elapsed();
    for (f, sum) in &small {
        let got = std::fs::read(hc.mnt().join("big/production").join(f)).unwrap();
        assert_eq!(&sha256_hex(&got), sum, "{f} through C's mount");
    }
    let out = hc.path().join("got");
    let t = Instant::now();
    hc.ok(&["get", "big", "1.0.0", "--out", out.to_str().unwrap()]);
    let get = t.elapsed();
    assert_eq!(
        crate::harness::sha256sum(&out.join("model.safetensors")),
        want
    );
    for (f, sum) in &small {
        assert_eq!(&sha256_hex(&std::fs::read(out.join(f)).unwrap()), sum);
    }
    std::fs::remove_dir_all(&out).unwrap();
    let st = fleet_status(hc);
    println!(
        "FLEET1GIB|push_s={:.1}|cold_mmap_sha256_s={:.1}|warm_read_sha256_s={:.1}|get_s={:.1}|fetched_bytes={}|pack_requests={}|total_s={:.1}",
        push.as_secs_f64(),
        cold_mmap.as_secs_f64(),
        read.as_secs_f64(),
        get.as_secs_f64(),
        st["bytes_fetched"],
        st["pack_requests"],
        t0.elapsed().as_secs_f64()
    );
}
