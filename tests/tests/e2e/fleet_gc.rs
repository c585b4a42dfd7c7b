//! Issue #14, fleet GC: packs in the object store are condemned through the log when no live
//! version uses them, deleted by a later run once the grace period has passed, repacked when
//! mostly dead; orphans (objects no entry names) go after the grace period; a push racing GC
//! loses no chunk. On a real SeaweedFS (`single`), with real arcad hosts and mounts; what is
//! in the store is read through the S3 API, behind arca's back.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::fleet::{fleet_hosts_with, list_sizes, request, within, Cluster, BUCKET};
use crate::harness::{pseudo_random, sha256_hex, TestEnv};

/// Grace period of these hosts: 10.8 s (fractions of an hour are allowed for tests). Run 1
/// must come within it of the orphan's planting, on a loaded 2-core machine.
const GRACE_HOURS: &str = "0.003";
const GRACE: Duration = Duration::from_millis(10_800);

/// The packs in the bucket: key → size.
fn packs(gw: &str) -> BTreeMap<String, u64> {
    list_sizes(gw, "arca/packs/")
}

fn total(p: &BTreeMap<String, u64>) -> u64 {
    p.values().sum()
}

fn new_keys(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeSet<String> {
    after
        .keys()
        .filter(|k| !before.contains_key(*k))
        .cloned()
        .collect()
}

/// A model directory of `files` (name, length, seed), pushable by root.
fn model(env: &TestEnv, tag: &str, files: &[(&str, usize, u64)]) -> PathBuf {
    let d = env.path().join(format!("gc-{tag}"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, len, seed) in files {
        std::fs::write(d.join(name), pseudo_random(*len, *seed)).unwrap();
        std::fs::set_permissions(d.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    d
}

fn push(env: &TestEnv, dir: &Path, name: &str, version: &str) {
    env.ok(&[
        "push",
        dir.to_str().unwrap(),
        "--name",
        name,
        "--version",
        version,
    ]);
}

fn gc(env: &TestEnv, dry: bool) -> serde_json::Value {
    let mut args = vec!["gc", "--json"];
    if dry {
        args.push("--dry-run");
    }
    let r = env.json(&args);
    println!("fleet gc: {}", r["fleet"]);
    assert!(
        r["fleet"].is_object(),
        "a fleet host's gc reports its packs: {r}"
    );
    r["fleet"].clone()
}

fn n(v: &serde_json::Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

fn applied(env: &TestEnv) -> u64 {
    env.json(&["status"])["fleet"]["applied_seq"]
        .as_u64()
        .expect("status.fleet.applied_seq")
}

/// Every file of `dir`, read through `env`'s mount and by `get`, is byte-identical.
fn reads_identical(env: &TestEnv, dir: &Path, name: &str, version: &str) {
    let out = env.path().join(format!("got-{name}-{version}"));
    env.ok(&["get", name, version, "--out", out.to_str().unwrap()]);
    for f in std::fs::read_dir(dir).unwrap() {
        let f = f.unwrap().file_name();
        let want = sha256_hex(&std::fs::read(dir.join(&f)).unwrap());
        let mounted = std::fs::read(env.mnt().join(name).join(version).join(&f))
            .unwrap_or_else(|e| panic!("{name} {version} {f:?} through the mount: {e}"));
        assert_eq!(sha256_hex(&mounted), want, "{name} {version} {f:?} (mount)");
        assert_eq!(
            sha256_hex(&std::fs::read(out.join(&f)).unwrap()),
            want,
            "{name} {version} {f:?} (get)"
        );
    }
}

#[test]
fn fleet_gc_condemns_repacks_and_deletes_packs_after_the_grace_period() {
    let c = Cluster::start_kind("single", 22_000);
    let g = c.endpoints[0].clone();
    let (st, _, _) = request(&g, "PUT", &format!("/{BUCKET}"), &[], b"");
    assert_eq!(st, 200, "creating the bucket");
    let extra = format!("gc_grace_hours = {GRACE_HOURS}\n");
    // A pushes and collects, B pushes while A collects, C reads only at the end (empty cache),
    // D stops following the log (below) and reads at the end from the packs it knew.
    let mut hosts = fleet_hosts_with(
        &["a", "b", "c", "d"],
        &[
            vec![g.as_str()],
            vec![g.as_str()],
            vec![g.as_str()],
            vec![g.as_str()],
        ],
        &extra,
    );
    let mib = 1 << 20;
    let (a, b) = (&hosts[0], &hosts[1]);
    a.root_key();
    b.root_key();

    // m 1.0.0 and m 2.0.0: one pack each. r 1.0.0 (12 MiB + 1 MiB) in one pack R; r 2.0.0
    // holds only the 1 MiB file, so it uploads nothing and lives in R.
    let p0 = packs(&g);
    let m1 = model(a, "m1", &[("a.bin", 6 * mib, 101)]);
    push(a, &m1, "m", "1.0.0");
    let p1 = packs(&g);
    let pack_m1 = new_keys(&p0, &p1);
    assert_eq!(pack_m1.len(), 1, "m 1.0.0 made one pack");
    let m2 = model(a, "m2", &[("a.bin", 6 * mib, 102)]);
    push(a, &m2, "m", "2.0.0");
    let m3 = model(a, "m3", &[("a.bin", 3 * mib, 106)]);
    push(a, &m3, "m", "3.0.0");
    let p2 = packs(&g);
    let pack_m2_m3 = new_keys(&p1, &p2);
    let r1 = model(
        a,
        "r1",
        &[("big.bin", 12 * mib, 103), ("small.bin", mib, 104)],
    );
    push(a, &r1, "r", "1.0.0");
    let p3 = packs(&g);
    let pack_r = new_keys(&p2, &p3);
    assert_eq!(pack_r.len(), 1, "r 1.0.0 made one pack");
    let r2 = model(a, "r2", &[("small.bin", mib, 104)]);
    push(a, &r2, "r", "2.0.0");
    assert_eq!(packs(&g), p3, "r 2.0.0 deduplicated against R: no new pack");

    // m 1.0.0 and r 1.0.0 go: m1's pack is dead, R is 12 of 13 MiB dead.
    a.ok(&["delete", "m", "1.0.0"]);
    a.ok(&["delete", "r", "1.0.0"]);
    // D polls the log once an hour from now on: it knows r 2.0.0 in R, and will not hear of
    // the repack and deletion below until it finds R gone.
    {
        let d = &mut hosts[3];
        d.stop();
        let cfg = d.path().join("arcad.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, text.replace("poll_ms = 200", "poll_ms = 3600000")).unwrap();
        d.start();
    }
    let (a, b, hc, hd) = (&hosts[0], &hosts[1], &hosts[2], &hosts[3]);
    within(20, "D caught up at its start", || applied(hd) >= applied(a));
    let d_knew = applied(hd);
    // An orphan: an object at a pack's key that no entry names (what a push that crashed
    // after its upload leaves), young for now: planted after D's restart, which can take
    // most of the grace period on a loaded machine (CI once saw it grow old before run 1).
    let orphan = format!("arca/packs/{}", hex::encode(pseudo_random(32, 77)));
    let (st, _, _) = request(
        &g,
        "PUT",
        &format!("/{BUCKET}/{orphan}"),
        &[],
        &pseudo_random(4096, 78),
    );
    assert_eq!(st, 200, "planting an orphan");
    let before = packs(&g);
    println!(
        "fleet gc: before: {} packs, {} bytes",
        before.len(),
        total(&before)
    );

    // A dry run says what it would do and changes nothing.
    let seq0 = applied(a);
    let dry = gc(a, true);
    assert!(n(&dry, "condemned") >= 2, "{dry}");
    assert_eq!(n(&dry, "repacked"), 1, "{dry}");
    assert_eq!(n(&dry, "young_orphans"), 1, "{dry}");
    assert_eq!(packs(&g), before, "a dry run changes nothing in the store");
    assert_eq!(applied(a), seq0, "a dry run writes no log entry");

    // Run 1, within the grace period of everything: condemns m1's pack, repacks R (its live
    // chunks into a new pack, R condemned), leaves the young orphan; deletes nothing.
    let run1 = gc(a, false);
    assert_eq!(n(&run1, "condemned"), 2, "m1's pack and R: {run1}");
    assert_eq!(n(&run1, "repacked"), 1, "{run1}");
    assert_eq!(n(&run1, "new_packs"), 1, "{run1}");
    assert!(n(&run1, "moved_chunks") >= 1, "{run1}");
    assert_eq!(n(&run1, "young_orphans"), 1, "{run1}");
    assert_eq!(
        n(&run1, "deleted_packs"),
        0,
        "nothing deleted within the grace period"
    );
    let seq1 = n(&run1, "seq");
    let after1 = packs(&g);
    for k in pack_m1.iter().chain(&pack_r).chain([&orphan]) {
        assert!(
            after1.contains_key(k),
            "{k} is still in the store during its grace"
        );
    }
    let repacked_into = new_keys(&before, &after1);
    assert_eq!(repacked_into.len(), 1, "one new pack from the repack");
    println!(
        "fleet gc: run 1 (log entry {seq1}): {} packs, {} bytes; R ({} bytes) repacked into {} bytes",
        after1.len(),
        total(&after1),
        before[pack_r.iter().next().unwrap()],
        after1[repacked_into.iter().next().unwrap()],
    );

    // B pushes m 4.0.0 with m 1.0.0's bytes, once it knows m1's pack is condemned: it must not
    // rely on the chunks there, so it uploads them again.
    within(10, "B applied run 1's entry", || applied(b) >= seq1);
    let m4 = model(b, "m4", &[("a.bin", 6 * mib, 101)]);
    push(b, &m4, "m", "4.0.0");
    let after_m4 = packs(&g);
    assert_eq!(
        new_keys(&after1, &after_m4).len(),
        1,
        "m 4.0.0's chunks, in a condemned pack, were uploaded again"
    );

    // A push racing GC: m 2.0.0 goes, then B pushes y 1.0.0 (m 2.0.0's file and new bytes)
    // while A collects. Whichever wins the log's next seq, no chunk is lost.
    a.ok(&["delete", "m", "2.0.0"]);
    within(10, "B applied the deletion", || applied(b) >= applied(a));
    // y 1.0.0's new bytes fill three packs: GC runs once B has uploaded the first, so its
    // condemnation of m 2.0.0's pack most likely lands after B relied on that pack and before
    // B commits.
    let y1 = model(
        b,
        "y1",
        &[("a.bin", 6 * mib, 102), ("new.bin", 80 * mib, 105)],
    );
    let uploaded = |h: &TestEnv| h.log().matches("fleet: pack uploaded").count();
    let b_packs = uploaded(b);
    let mut cmd = b.arca_cmd(&[
        "push",
        y1.to_str().unwrap(),
        "--name",
        "y",
        "--version",
        "1.0.0",
    ]);
    let racer = std::thread::spawn(move || cmd.output().expect("run arca push"));
    within(120, "B uploads y 1.0.0's first pack", || {
        uploaded(b) > b_packs
    });
    let t = Instant::now();
    let race = gc(a, false);
    let gc_took = t.elapsed();
    let pushed = racer.join().unwrap();
    assert!(
        pushed.status.success(),
        "the push racing GC: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let y_seq: u64 = b.json(&["audit", "ls", "--model", "y", "--type", "registration"])[0]
        ["details"]["fleet_seq"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("y 1.0.0's registration names its log entry");
    let again = b.log().contains("uploading them again");
    match race["seq"].as_u64() {
        // GC's entry came first: it condemned m 2.0.0's pack, which B's upload had relied on,
        // so B uploaded those chunks again before its entry named them.
        Some(s) if s < y_seq => {
            assert!(n(&race, "condemned") >= 1, "{race}");
            assert!(
                again,
                "B uploaded the condemned pack's chunks again at commit"
            );
            println!("fleet gc: race: GC (entry {s}, {gc_took:?}) condemned m 2.0.0's pack after B's upload relied on it; B's commit (entry {y_seq}) uploaded those chunks again");
        }
        // B's entry came first: m 2.0.0's pack is live again and GC left it.
        _ => {
            assert!(!again, "nothing was condemned under B's push");
            println!("fleet gc: race: B's push (entry {y_seq}) landed before GC ({gc_took:?}) decided: m 2.0.0's pack stayed live");
        }
    }

    // Past the grace period: run 2 deletes what run 1 condemned (unless the racing run came
    // late enough to), and condemns the orphan, old now (unless the racing run did).
    std::thread::sleep(GRACE + Duration::from_millis(500));
    let run2 = gc(a, false);
    assert!(
        n(&race, "deleted_packs") + n(&run2, "deleted_packs") >= 2,
        "{race} {run2}"
    );
    assert_eq!(
        n(&race, "orphans") + n(&run2, "orphans"),
        1,
        "the orphan, once old: {race} {run2}"
    );
    let after2 = packs(&g);
    for k in pack_m1.iter().chain(&pack_r) {
        assert!(!after2.contains_key(k), "{k} was deleted after its grace");
    }
    if n(&run2, "orphans") == 1 {
        assert!(after2.contains_key(&orphan), "an orphan is condemned first");
    }
    for k in &repacked_into {
        assert!(after2.contains_key(k), "the repacked pack stays");
    }
    // Run 3, past the orphan's grace: gone.
    std::thread::sleep(GRACE + Duration::from_millis(500));
    let run3 = gc(a, false);
    assert!(
        n(&race, "deleted_packs") + n(&run2, "deleted_packs") + n(&run3, "deleted_packs") >= 3,
        "m1's pack, R and the orphan: {race} {run2} {run3}"
    );
    let after3 = packs(&g);
    assert!(!after3.contains_key(&orphan), "the orphan was deleted");
    // Nothing left to do but live packs: a fourth run decides nothing.
    let run4 = gc(a, false);
    assert!(run4["seq"].is_null(), "nothing left to decide: {run4}");
    assert_eq!(n(&run4, "waiting"), 0, "{run4}");
    println!(
        "fleet gc: after: {} packs, {} bytes (before: {} packs, {} bytes)",
        after3.len(),
        total(&after3),
        before.len(),
        total(&before)
    );

    // Every version left reads byte-identical on C, whose cache is empty: r 2.0.0 from the
    // repacked pack, m 4.0.0 from its re-upload, y 1.0.0 whichever way the race went.
    within(10, "C applied every entry", || applied(hc) >= applied(a));
    assert_eq!(
        hc.json(&["status"])["fleet"]["chunks_fetched"].as_u64(),
        Some(0),
        "C's cache is empty"
    );
    let t = Instant::now();
    reads_identical(hc, &r2, "r", "2.0.0");
    reads_identical(hc, &m3, "m", "3.0.0");
    reads_identical(hc, &m4, "m", "4.0.0");
    reads_identical(hc, &y1, "y", "1.0.0");
    println!(
        "fleet gc: C read every version left, cold, in {:?}",
        t.elapsed()
    );
    // D still believes r 2.0.0's chunks are in R, which is gone: its read catches up with the
    // log, finds them moved, and reads them there.
    assert_eq!(applied(hd), d_knew, "D did not follow the log meanwhile");
    let small = std::fs::read(hd.mnt().join("r/2.0.0/small.bin")).expect("D reads r 2.0.0");
    assert_eq!(
        sha256_hex(&small),
        sha256_hex(&std::fs::read(r2.join("small.bin")).unwrap()),
        "D reads r 2.0.0 from its new pack"
    );
    assert!(
        hd.log().contains("moved the chunk to another pack"),
        "D found R gone and looked again"
    );
    assert!(applied(hd) > d_knew, "D caught up to find the chunk");
    // The deleted versions are gone everywhere, and the hosts agree on the log.
    assert!(!hc.arca(&["show", "m", "1.0.0"]).status.success());
    for h in [a, b, hc, hd] {
        assert!(h.json(&["status"])["fleet"]["halted"].is_null());
    }
    // m 2.0.0's pack went if the racing run condemned it (then y 1.0.0 holds its bytes in a
    // pack of its own), and stayed if y's entry came first.
    let m2_pack_left = pack_m2_m3
        .iter()
        .filter(|k| after3.contains_key(*k))
        .count();
    println!("fleet gc: race: {m2_pack_left} of m 2.0.0 and 3.0.0's two packs left");
}
