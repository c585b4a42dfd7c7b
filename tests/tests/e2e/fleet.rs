//! Issue #10, first brick: the object store a fleet shares. The fleet's log stands on two
//! conditional writes of the S3 API, `If-None-Match: *` (create only) and `If-Match: <etag>`
//! (update only what was read), being atomic across every gateway of the store. These tests
//! start a real SeaweedFS cluster (`scripts/seaweedfs.sh`: one master, three volume servers
//! with replication 001, two filers each with an S3 gateway) and race those writes through
//! both gateways over plain HTTP, as arcad's store module will. No arcad is involved yet.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A running cluster, stopped on drop.
struct Cluster {
    dir: tempfile::TempDir,
    endpoints: Vec<String>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Cluster {
    fn start(port: u16) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("arca-seaweedfs-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let out = Command::new("bash")
            .arg(repo().join("scripts/seaweedfs.sh"))
            .arg("cluster")
            .arg(dir.path())
            .arg(port.to_string())
            .output()
            .expect("run scripts/seaweedfs.sh");
        let mut c = Cluster {
            dir,
            endpoints: Vec::new(),
        };
        assert!(
            out.status.success(),
            "SeaweedFS did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c.endpoints = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("http://"))
            .map(str::to_owned)
            .collect();
        assert_eq!(c.endpoints.len(), 2, "two S3 gateways");
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("scripts/seaweedfs.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// One HTTP/1.1 request; returns the status and the response headers (lower-cased names).
fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect to the S3 gateway");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let text = String::from_utf8_lossy(&resp[..split]).into_owned();
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, resp[split + 4..].to_vec())
}

fn etag(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .find(|(k, _)| k == "etag")
        .map(|(_, v)| v.clone())
        .expect("an ETag")
}

#[test]
fn conditional_writes_have_one_winner_across_gateways() {
    let c = Cluster::start(18_400);
    let (a, b) = (c.endpoints[0].as_str(), c.endpoints[1].as_str());
    let (st, _, _) = request(a, "PUT", "/arca-fleet", &[], b"");
    assert_eq!(st, 200, "creating the bucket");

    // 16 writers, half through each gateway, race to create the same key: exactly one wins each
    // round, and the object holds the winner's bytes. A round takes seconds (the losers wait on
    // the store's lock), so CI runs 6; ARCA_FLEET_ROUNDS sets more.
    let rounds: u32 = std::env::var("ARCA_FLEET_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    for round in 0..rounds {
        let key = format!("/arca-fleet/log/{round:08}");
        let results: Vec<(usize, u16)> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..16)
                .map(|i| {
                    let (gw, key) = (if i % 2 == 0 { a } else { b }, key.clone());
                    s.spawn(move || {
                        let body = format!("entry {round} by writer {i}");
                        let (st, _, _) =
                            request(gw, "PUT", &key, &[("if-none-match", "*")], body.as_bytes());
                        (i, st)
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let winners: Vec<usize> = results
            .iter()
            .filter(|(_, st)| *st == 200)
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert!(
            results.iter().all(|(_, st)| *st == 200 || *st == 412),
            "round {round}: a loser must get 412: {results:?}"
        );
        for gw in [a, b] {
            let (st, _, body) = request(gw, "GET", &key, &[], b"");
            assert_eq!(st, 200);
            assert_eq!(
                String::from_utf8_lossy(&body),
                format!("entry {round} by writer {}", winners[0]),
                "round {round}: the stored object is the winner's, through either gateway"
            );
        }
    }
    println!(
        "fleet: {rounds} rounds of 16 racing create-only PUTs over 2 gateways: one winner each"
    );

    // If-Match: an update with the ETag read wins once; the same stale ETag then loses.
    let key = "/arca-fleet/head";
    let (st, h, _) = request(a, "PUT", key, &[("if-none-match", "*")], b"v1");
    assert_eq!(st, 200);
    let v1 = etag(&h);
    let (st, h, _) = request(b, "PUT", key, &[("if-match", v1.as_str())], b"v2");
    assert_eq!(st, 200, "an update with the current ETag");
    let v2 = etag(&h);
    assert_ne!(v1, v2);
    let (st, _, _) = request(a, "PUT", key, &[("if-match", v1.as_str())], b"v3");
    assert_eq!(st, 412, "an update with a stale ETag must fail");
    let (st, _, body) = request(a, "GET", key, &[], b"");
    assert_eq!((st, body.as_slice()), (200, &b"v2"[..]));
}
