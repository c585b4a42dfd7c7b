//! Issue #10, "immutable audit storage", its first two parts: each fleet host ships the audit
//! events that are not in the fleet's log (reads, refusals) to the store as signed, sealed,
//! hash-chained segments, and `arca audit report` / `arca audit verify` on any host cover the
//! whole fleet. Real hosts on a real (single-process) SeaweedFS; the store is tampered with
//! through its S3 API, behind arca's back, as someone holding the store's credentials would.

use crate::fleet::{fleet_hosts_with, list_keys, request, within, Cluster, BUCKET};
use crate::harness::{user, TestEnv, User};

const WIDE: [&str; 4] = ["--from", "2000-01-01", "--to", "2100-01-01"];

/// The report of model `m` on `env` as JSON (whatever its exit status).
fn report(env: &TestEnv, m: &str) -> serde_json::Value {
    let mut args = vec!["audit", "report", m];
    args.extend_from_slice(&WIDE);
    args.extend_from_slice(&["--format", "json"]);
    let out = env.arca(&args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "audit report: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Host `h`'s line in a report's or a verify's `fleet_hosts`.
fn host<'a>(r: &'a serde_json::Value, h: &str) -> &'a serde_json::Value {
    r["fleet_hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("no fleet_hosts: {r}"))
        .iter()
        .find(|x| x["host"] == h)
        .unwrap_or_else(|| panic!("no host {h}: {r}"))
}

/// `audit verify --json` on `env` and its exit status.
pub(super) fn verify(env: &TestEnv) -> (bool, serde_json::Value) {
    let out = env.arca(&["--json", "audit", "verify"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("verify json");
    (out.status.success(), v)
}

/// Events of model `m` in `env`'s own trail that are not from the fleet's log (what it ships).
fn own_events(env: &TestEnv, m: &str) -> usize {
    env.json(&["audit", "ls", "--model", m])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["details"].get("fleet_seq").is_none())
        .count()
}

fn segments(env: &TestEnv) -> u64 {
    env.json(&["status"])["fleet"]["audit_shipping"]["segments"]
        .as_u64()
        .unwrap_or(0)
}

/// `u` reads `m` 1.0.0 on `env` (or is refused, if it holds no role).
fn get(env: &TestEnv, u: &User, m: &str, tag: &str) -> bool {
    let out = u.home.join(format!("get-{tag}"));
    let _ = std::fs::remove_dir_all(&out);
    env.arca_as(u, &["get", m, "1.0.0", "--out", out.to_str().unwrap()])
        .status
        .success()
}

#[test]
fn fleet_audit_covers_every_host_and_names_tampered_segments() {
    let mut c = Cluster::start_kind("single", 23_000);
    let g = c.endpoints[0].clone();
    let (st, _, _) = request(&g, "PUT", &format!("/{BUCKET}"), &[], b"");
    assert_eq!(st, 200, "creating the bucket");
    let mut hosts = fleet_hosts_with(
        &["a", "b"],
        &[vec![g.as_str()], vec![g.as_str()]],
        "audit_ship_secs = 1\n",
    );
    let reader = user("arca-e2e-fa-read");
    let nobody = user("arca-e2e-fa-none");
    {
        let (a, b) = (&hosts[0], &hosts[1]);
        a.root_key();
        a.push_small("fam", "1.0.0", 4242, &[]);
        a.ok(&["role", "assign", &reader.name, "viewer", "--model", "fam"]);
        within(10, "B has the version and the role", || {
            b.arca(&["show", "fam", "1.0.0"]).status.success() && get(b, &reader, "fam", "warm")
        });

        // Reads and a refusal on B, three times, each shipped before the next, so B has at
        // least three segments.
        for i in 0..3 {
            let before = segments(b);
            assert!(get(b, &reader, "fam", &format!("r{i}")));
            assert!(
                !get(b, &nobody, "fam", &format!("n{i}")),
                "no role: refused"
            );
            within(15, "B ships a segment", || segments(b) > before);
        }
        let want = own_events(b, "fam");
        assert!(want >= 7, "B's own events of fam: {want}");
        within(15, "A's report counts every one of B's events", || {
            let r = report(a, "fam");
            host(&r, "b")["events_in_report"].as_u64() == Some(want as u64)
        });
        // This bucket was made without Object Lock: every host says so.
        for h in [a, b] {
            let l = &h.json(&["status"])["fleet"]["object_lock"];
            assert_eq!(l["in_force"], false, "{l}");
            assert!(
                l["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("no Object Lock configuration"),
                "{l}"
            );
        }
        assert!(
            a.ok(&["fleet", "status"])
                .contains("S3 Object Lock NOT in force"),
            "fleet status names it"
        );
        let r = report(a, "fam");
        println!("fleet audit: A's report: {r}");
        assert_eq!(r["chain_intact"], true, "{r}");
        assert!(host(&r, "b")["fault"].is_null());
        let users: Vec<&str> = r["unique_users"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| u.as_str())
            .collect();
        assert!(
            users.contains(&reader.name.as_str()) && users.contains(&nobody.name.as_str()),
            "B's reader and the refused user are in A's report: {users:?}"
        );
        assert!(r["events_by_type"]["refusal"].as_u64().unwrap() >= 3, "{r}");
        assert!(r["events_by_type"]["access"].as_u64().unwrap() >= 4, "{r}");
        let (ok, v) = verify(a);
        assert!(ok, "{v}");
        assert!(host(&v, "b")["segments"].as_u64().unwrap() >= 3, "{v}");
        // A's Markdown report names the hosts too.
        let mut args = vec!["audit", "report", "fam"];
        args.extend_from_slice(&WIDE);
        let md = a.ok(&args);
        assert!(
            md.contains("## Fleet hosts") && md.contains("| b |"),
            "{md}"
        );
    }

    // Tampering with B's segments in the store, each named on A, then undone.
    let keys: Vec<String> = list_keys(&g, "arca/audit/b/");
    assert!(keys.len() >= 3, "{keys:?}");
    // B's heartbeat (every 5 s) names how many segments it shipped: A reads that claim.
    within(15, "B's heartbeat names its segments", || {
        hosts[0].json(&["fleet", "status"])["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|h| h["host"] == "b" && h["audit_segments"].as_u64() == Some(keys.len() as u64))
    });
    let obj = |k: &str| format!("/{BUCKET}/{k}");
    let fetch = |k: &str| {
        let (st, _, body) = request(&g, "GET", &obj(k), &[], b"");
        assert_eq!(st, 200, "GET {k}");
        body
    };
    let put = |k: &str, body: &[u8]| {
        let (st, _, _) = request(&g, "PUT", &obj(k), &[], body);
        assert_eq!(st, 200, "PUT {k}");
    };
    let originals: Vec<Vec<u8>> = keys.iter().map(|k| fetch(k)).collect();
    let a = &hosts[0];
    let broken = |what: &str, want: &[&str]| {
        let (ok, v) = verify(a);
        let fault = host(&v, "b")["fault"].as_str().unwrap_or("").to_owned();
        println!("TAMPER|audit segment {what}|verify ok: {ok}|{fault}");
        assert!(!ok, "{what}: verify passed: {v}");
        for w in want {
            assert!(fault.contains(w), "{what}: {fault:?} lacks {w:?}");
        }
        let r = report(a, "fam");
        assert_eq!(r["chain_intact"], false, "{what}: {r}");
        assert!(
            r["chain_fault"].as_str().unwrap_or("").contains("host b"),
            "{what}: {r}"
        );
    };
    // Edited: one byte of segment 2's sealed body.
    let mut edited = originals[1].clone();
    let n = edited.len();
    edited[n - 20] ^= 1;
    put(&keys[1], &edited);
    broken("edited", &["segment 2", "signature"]);
    put(&keys[1], &originals[1]);
    assert!(verify(a).0, "restored");
    // Replayed: segment 1's bytes as segment 2.
    put(&keys[1], &originals[0]);
    broken("replayed", &["segment 2"]);
    put(&keys[1], &originals[1]);
    // Deleted in the middle: a gap.
    let (st, _, _) = request(&g, "DELETE", &obj(&keys[1]), &[], b"");
    assert!(st == 204 || st == 200);
    broken("deleted", &["segment 2 is missing"]);
    put(&keys[1], &originals[1]);
    // The newest deleted: B's heartbeat says how many it shipped.
    let last = keys.len() - 1;
    let (st, _, _) = request(&g, "DELETE", &obj(&keys[last]), &[], b"");
    assert!(st == 204 || st == 200);
    broken(
        "newest deleted",
        &[&format!("segment {} is missing", last + 1), "heartbeat"],
    );
    put(&keys[last], &originals[last]);
    // Planted under a host no one pins.
    put("arca/audit/mallory/00000000000000000001", &originals[0]);
    let (ok, v) = verify(a);
    assert!(!ok && host(&v, "mallory")["fault"].is_string(), "{v}");
    let (st, _, _) = request(
        &g,
        "DELETE",
        &obj("arca/audit/mallory/00000000000000000001"),
        &[],
        b"",
    );
    assert!(st == 204 || st == 200);
    assert!(verify(a).0, "all restored: {}", verify(a).1);

    // The store down while B serves reads and refuses: nothing is lost, the events arrive
    // once it is back.
    c.stop();
    {
        let b = &hosts[1];
        for i in 0..2 {
            // Cached on B already: served with the store down.
            assert!(get(b, &reader, "fam", &format!("down{i}")));
            assert!(!get(b, &nobody, "fam", &format!("downn{i}")));
        }
        within(20, "B reports it cannot ship", || {
            let s = b.json(&["status"]);
            let sh = &s["fleet"]["audit_shipping"];
            sh["error"].is_string() && sh["pending"].as_u64().unwrap_or(0) > 0
        });
    }
    c.restart();
    let want = own_events(&hosts[1], "fam");
    let took = within(30, "A's report has every one of B's events again", || {
        let r = report(&hosts[0], "fam");
        r["chain_intact"] == true && host(&r, "b")["events_in_report"].as_u64() == Some(want as u64)
    });
    println!("fleet audit: B's events from the outage reached A's report {took:?} after the store came back");
    assert!(hosts[1].json(&["status"])["fleet"]["audit_shipping"]["error"].is_null());

    // An event recorded just before a clean shutdown reaches the store (shipped at shutdown
    // if the poller has not yet: with a 1 s interval this does not tell the two apart).
    {
        let b = &mut hosts[1];
        assert!(!get(b, &nobody, "fam", "last"));
        b.stop();
    }
    let want = want + 1;
    within(
        10,
        "the event B recorded just before stopping is in A's report",
        || host(&report(&hosts[0], "fam"), "b")["events_in_report"].as_u64() == Some(want as u64),
    );
}

/// A response header's value.
fn header(h: &[(String, String)], name: &str) -> String {
    h.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {name} header in {h:?}"))
}

/// On a bucket with Object Lock, log entries and audit segments are written with COMPLIANCE
/// retention (packs without): someone holding the store's S3 credentials cannot delete or
/// replace those versions. (SeaweedFS 4.48 enforces it; this test measures what it refuses.)
#[test]
fn fleet_object_lock_keeps_log_entries_and_audit_segments() {
    let c = Cluster::start_kind("single", 23_100);
    let g = c.endpoints[0].clone();
    let (st, _, _) = request(
        &g,
        "PUT",
        &format!("/{BUCKET}"),
        &[("x-amz-bucket-object-lock-enabled", "true")],
        b"",
    );
    assert_eq!(st, 200, "creating the bucket with Object Lock");
    let hosts = fleet_hosts_with(
        &["a", "b"],
        &[vec![g.as_str()], vec![g.as_str()]],
        "audit_ship_secs = 1\nobject_lock_days = 1\n",
    );
    let (a, b) = (&hosts[0], &hosts[1]);
    for h in [a, b] {
        let l = &h.json(&["status"])["fleet"]["object_lock"];
        assert_eq!(l["in_force"], true, "{l}");
        assert_eq!(l["mode"], "COMPLIANCE");
        assert_eq!(l["days"], 1);
    }
    assert!(a
        .ok(&["fleet", "status"])
        .contains("S3 Object Lock in force"));
    let reader = user("arca-e2e-fa-read");
    a.root_key();
    a.push_small("lk", "1.0.0", 77, &[]);
    a.ok(&["role", "assign", &reader.name, "viewer", "--model", "lk"]);
    within(10, "B serves lk to the reader", || {
        get(b, &reader, "lk", "x")
    });
    within(15, "B ships a segment", || segments(b) >= 1);
    // B's heartbeat (every 5 s) names it, so a reader can tell it was deleted.
    within(15, "B's heartbeat names its segment", || {
        a.json(&["fleet", "status"])["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|h| h["host"] == "b" && h["audit_segments"].as_u64() >= Some(1))
    });

    let obj = |k: &str| format!("/{BUCKET}/{k}");
    let retention = |k: &str| {
        let (st, _, body) = request(&g, "GET", &format!("{}?retention", obj(k)), &[], b"");
        (st, String::from_utf8_lossy(&body).into_owned())
    };
    let entry = "arca/log/00000000000000000001".to_string();
    let segment = list_keys(&g, "arca/audit/b/")[0].clone();
    let pack = list_keys(&g, "arca/packs/")[0].clone();
    for k in [&entry, &segment] {
        let (st, body) = retention(k);
        assert_eq!(st, 200, "{k}: {body}");
        assert!(body.contains("<Mode>COMPLIANCE</Mode>"), "{k}: {body}");
    }
    let (st, body) = retention(&pack);
    assert!(
        !body.contains("<Mode>"),
        "packs carry no retention (fleet GC deletes them): {st} {body}"
    );

    // The attacker holds the store's credentials (this cluster takes anonymous requests with
    // every right).
    for (what, k) in [("log entry", &entry), ("audit segment", &segment)] {
        let (st, h, original) = request(&g, "GET", &obj(k), &[], b"");
        assert_eq!(st, 200);
        let v = header(&h, "x-amz-version-id");
        let at = format!("{}?versionId={v}", obj(k));
        let (st, _, body) = request(&g, "DELETE", &at, &[], b"");
        println!("LOCK|{what}|DELETE of its version: {st}");
        assert_eq!(
            st,
            403,
            "{what}: deleting the version: {}",
            String::from_utf8_lossy(&body)
        );
        let (st, _, _) = request(
            &g,
            "DELETE",
            &at,
            &[("x-amz-bypass-governance-retention", "true")],
            b"",
        );
        println!("LOCK|{what}|DELETE with the governance bypass: {st}");
        assert_eq!(st, 403, "{what}: with the bypass");
        // One hour instead of a day (a date in the past is refused as invalid before any
        // retention rule is looked at).
        let soon = std::process::Command::new("date")
            .args(["-u", "-d", "+1 hour", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .expect("date");
        let soon = String::from_utf8_lossy(&soon.stdout).trim().to_owned();
        let shorter = format!("<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>COMPLIANCE</Mode><RetainUntilDate>{soon}</RetainUntilDate></Retention>");
        let (st, _, _) = request(
            &g,
            "PUT",
            &format!("{}?retention&versionId={v}", obj(k)),
            &[],
            shorter.as_bytes(),
        );
        println!("LOCK|{what}|shortening the retention: {st}");
        assert_eq!(st, 403, "{what}: shortening the retention");
        // While lengthening it is taken (so the refusal above is the lock's, not a request
        // the store does not understand).
        let later = std::process::Command::new("date")
            .args(["-u", "-d", "+2 days", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .expect("date");
        let later = String::from_utf8_lossy(&later.stdout).trim().to_owned();
        let longer = shorter.replace(&soon, &later);
        let (st, _, _) = request(
            &g,
            "PUT",
            &format!("{}?retention&versionId={v}", obj(k)),
            &[],
            longer.as_bytes(),
        );
        assert_eq!(st, 200, "{what}: lengthening the retention");
        // A plain overwrite or delete only stacks a new version or a delete marker on top: the
        // retained version stays, byte for byte.
        let (st, _, _) = request(&g, "PUT", &obj(k), &[], b"forged");
        assert_eq!(st, 200);
        let (st, _, _) = request(&g, "DELETE", &obj(k), &[], b"");
        assert!(st == 204 || st == 200);
        let (st, _, kept) = request(&g, "GET", &at, &[], b"");
        assert_eq!(
            (st, &kept),
            (200, &original),
            "{what}: the retained version"
        );
        println!("LOCK|{what}|overwritten and deleted by key: the retained version is intact");
    }
    // The deleted segment is named on A (its version is still in the store for an operator to
    // restore: the report says which).
    let (ok, v) = verify(a);
    assert!(!ok, "{v}");
    assert!(
        host(&v, "b")["fault"]
            .as_str()
            .unwrap_or("")
            .contains("segment 1"),
        "{v}"
    );
}
