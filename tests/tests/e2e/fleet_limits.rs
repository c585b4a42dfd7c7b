//! The fleet's limits an attacker's review found (issue #10/#14), each shown fixed against a real
//! SeaweedFS: a store outage is not an integrity failure, reads are bounded on a trickling link
//! while cached reads stay fast, GC entries are checked against the replica before they are
//! applied, and junk keys planted under `log/` blind neither the gap check nor the sweep.

use std::time::{Duration, Instant};

use super::fleet::{fleet_hosts, model_dir, request, within, Cluster, BUCKET};
use crate::harness::{sha256_hex, user, TestEnv};

/// `h`'s `integrity_violation` events.
fn integrity_events(h: &TestEnv) -> Vec<serde_json::Value> {
    h.json(&[
        "audit",
        "ls",
        "--type",
        "integrity_violation",
        "--limit",
        "1000",
    ])
    .as_array()
    .cloned()
    .unwrap_or_default()
}

/// Every integrity-failure count `h`'s status shows: the fleet's and the mount's.
fn integrity_counts(h: &TestEnv) -> (u64, u64) {
    let s = h.json(&["status"]);
    (
        s["fleet"]["integrity_failures"].as_u64().expect("fleet figures"),
        s["mount"]["counters"]["integrity_failures"]
            .as_u64()
            .expect("mount figures"),
    )
}

/// Review item: `arca get` of an uncached chunk during a store outage answered 422
/// integrity_violation and left an `integrity_violation` event. An outage is not damage: the
/// answer is 503 (`unavailable`), nothing is audited or counted as an integrity failure, and
/// the mount's EIO for the same reason is not either.
#[test]
fn fleet_store_outage_is_unavailable_not_an_integrity_failure() {
    let c = Cluster::start_kind("single", 24_000);
    let g = c.endpoints[0].clone();
    let (st, _, _) = request(&g, "PUT", &format!("/{BUCKET}"), &[], b"");
    assert_eq!(st, 200, "creating the bucket");
    let hosts = fleet_hosts(&["a", "c"], &[vec![g.as_str()], vec![g.as_str()]]);
    let (a, hc) = (&hosts[0], &hosts[1]);
    a.root_key();
    let u = user("arca-e2e-fleet-pub");
    let d1 = model_dir(a, &u, "outage1", 3 << 20, 24_001);
    a.ok(&[
        "push",
        d1.to_str().unwrap(),
        "--name",
        "om",
        "--version",
        "1.0.0",
    ]);
    within(10, "C sees the version", || {
        hc.arca(&["show", "om", "1.0.0"]).status.success()
    });
    let events_before = integrity_events(hc).len();
    assert_eq!(integrity_counts(hc), (0, 0));

    c.stop();
    // `get` through the CLI: refused, saying the store is unavailable, never "integrity".
    let out = hc.path().join("got");
    let err = hc.fails(&["get", "om", "1.0.0", "--out", out.to_str().unwrap()]);
    assert!(
        err.contains("object store is unavailable") && !err.contains("integrity"),
        "{err}"
    );
    // The same request on the socket: 503 with the `unavailable` code.
    let (status, body) = hc.raw(
        "GET",
        "/v1/models/om/versions/1.0.0/file?path=model.safetensors",
        b"",
    );
    let body: serde_json::Value = serde_json::from_slice(&body).expect("an error body");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "unavailable", "{body}");
    // The mount: EIO, also not counted as an integrity failure.
    let t = Instant::now();
    let e = std::fs::read(hc.mnt().join("om/1.0.0/model.safetensors"))
        .expect_err("an uncached read with the store down");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(
        integrity_events(hc).len(),
        events_before,
        "an outage left integrity_violation events: {:?}",
        integrity_events(hc)
    );
    assert_eq!(integrity_counts(hc), (0, 0), "an outage counted as damage");
    println!("OUTAGE|get: 503 unavailable ({err}); mount: EIO; no integrity event, no count");

    // Back: the same `get` serves the bytes.
    let mut c = c;
    c.restart();
    within(30, "C serves the version again", || {
        hc.arca(&["get", "om", "1.0.0", "--out", out.to_str().unwrap()])
            .status
            .success()
    });
    assert_eq!(
        sha256_hex(&std::fs::read(out.join("model.safetensors")).unwrap()),
        sha256_hex(&std::fs::read(d1.join("model.safetensors")).unwrap())
    );
}
