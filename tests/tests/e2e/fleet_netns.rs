//! Issue #14's network faults: a fleet host in a network namespace the test makes (iproute2's
//! `ip netns`, a veth pair to the root namespace), whose link to the store the test cuts (an
//! nftables drop: packets vanish, so connections hang instead of being refused) or slows (tc's
//! token bucket on both ends of the pair), and puts back. The store is a real SeaweedFS cluster
//! bound to the root end of the pair; the other hosts run in the root namespace. Refused
//! connections (a killed gateway, a stopped store: fleet.rs) fail fast; these faults exercise the
//! time bounds a refused connection never reaches.
//!
//! The namespaced arcad is started with `nsenter --net=…`, not `ip netns exec`: the latter also
//! makes a private mount namespace, and the test could not see the FUSE mount from outside it.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::fleet::{fleet_hosts_wrapped, model_dir, push_as, request, within, Cluster, BUCKET};
use crate::harness::{need, pseudo_random, sha256_hex, user, TestEnv};

/// Runs a command that must succeed (the test's own network plumbing).
fn run(prog: &str, args: &[&str]) {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command whose failure does not matter (removing what may not exist).
fn run_quiet(prog: &str, args: &[&str]) {
    let _ = Command::new(prog).args(args).output();
}

/// A network namespace joined to the root namespace by a veth pair: `host_ip` is the root end
/// (the store binds there), the namespace's end is the next address of a /30. Removed on drop,
/// also when the test panics; one left by a killed run of the same test is removed first.
pub(super) struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    pub(super) host_ip: String,
}

impl Netns {
    /// `slot` (1–250) picks the names and the subnet 10.231.`slot`.0/30, so tests that run at
    /// once do not share either.
    pub(super) fn new(slot: u8) -> Self {
        for (tool, pkg) in [
            ("ip", "iproute2"),
            ("tc", "iproute2"),
            ("nft", "nftables"),
            ("nsenter", "util-linux"),
        ] {
            need(tool, pkg);
        }
        let n = Netns {
            name: format!("arca-nt-{slot}"),
            host_if: format!("arnth{slot}"),
            ns_if: format!("arntn{slot}"),
            host_ip: format!("10.231.{slot}.1"),
        };
        n.remove();
        let ns_ip = format!("10.231.{slot}.2/30");
        run("ip", &["netns", "add", &n.name]);
        run(
            "ip",
            &[
                "link", "add", &n.host_if, "type", "veth", "peer", "name", &n.ns_if, "netns",
                &n.name,
            ],
        );
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", n.host_ip),
                "dev",
                &n.host_if,
            ],
        );
        run("ip", &["link", "set", &n.host_if, "up"]);
        run(
            "ip",
            &["-n", &n.name, "addr", "add", &ns_ip, "dev", &n.ns_if],
        );
        run("ip", &["-n", &n.name, "link", "set", &n.ns_if, "up"]);
        run("ip", &["-n", &n.name, "link", "set", "lo", "up"]);
        n
    }

    /// What runs arcad inside the namespace (`TestEnv::daemon_wrapper`): nsenter joins only
    /// the network namespace and execs arcad, so the mount is visible to the test.
    pub(super) fn wrapper(&self) -> Vec<String> {
        vec!["nsenter".into(), format!("--net=/run/netns/{}", self.name)]
    }

    /// `nft` inside the namespace.
    fn nft(&self, script: &str) {
        let mut c = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.name))
            .args(["nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("nsenter nft");
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Cuts the namespace off from the store: every packet to or from the root end is dropped
    /// (not rejected), so a connection attempt or a request in flight hangs.
    fn cut(&self) {
        let ip = &self.host_ip;
        self.nft(&format!(
            "table inet arca_cut {{\n\
             chain out {{ type filter hook output priority 0; policy accept; ip daddr {ip} drop; }}\n\
             chain in {{ type filter hook input priority 0; policy accept; ip saddr {ip} drop; }}\n\
             }}\n"
        ));
    }

    /// Puts the link back.
    fn heal(&self) {
        self.nft("delete table inet arca_cut\n");
    }

    /// Limits the link to `rate` (tc syntax, e.g. `16mbit`) in both directions with a token
    /// bucket whose queue holds `latency` of traffic: a bulk transfer fills it, so a small
    /// request behind it waits that long, as on a congested link. (This kernel has no
    /// sch_netem, so a fixed delay cannot be added; the queue's delay is what a slow link's
    /// small requests see under load.)
    pub(super) fn slow(&self, rate: &str, latency: &str) {
        let tbf = [
            "root", "tbf", "rate", rate, "burst", "32kb", "latency", latency,
        ];
        let mut a = vec!["qdisc", "add", "dev", self.host_if.as_str()];
        a.extend(tbf);
        run("tc", &a);
        let mut b = vec!["-n", self.name.as_str(), "qdisc", "add", "dev", &self.ns_if];
        b.extend(tbf);
        run("tc", &b);
    }

    /// Takes `slow`'s limits off the link.
    pub(super) fn fast(&self) {
        run("tc", &["qdisc", "del", "dev", &self.host_if, "root"]);
        run(
            "tc",
            &["-n", &self.name, "qdisc", "del", "dev", &self.ns_if, "root"],
        );
    }

    fn remove(&self) {
        run_quiet("ip", &["netns", "del", &self.name]);
        run_quiet("ip", &["link", "del", &self.host_if]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The namespace slot for a test's base port (shifted like the ports, so two checkouts running
/// one test at once do not share a namespace).
pub(super) fn slot(port: u16) -> u8 {
    let off: u16 = std::env::var("ARCA_TEST_PORT_OFFSET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ((port.wrapping_add(off) / 10) % 250 + 1) as u8
}

/// The stderr of a command that must fail.
fn failure(out: std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// `host`'s heartbeat age in `arca fleet status` on `on`.
fn heartbeat_age(on: &TestEnv, host: &str) -> f64 {
    let v = on.json(&["fleet", "status"]);
    v["hosts"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["host"] == host))
        .and_then(|h| h["heartbeat_age_secs"].as_f64())
        .unwrap_or_else(|| panic!("no heartbeat of {host} in {v}"))
}

#[test]
fn fleet_host_cut_off_from_the_store_serves_its_cache_and_catches_up() {
    let ns = Netns::new(slot(19_200));
    let c = Cluster::start_on(&ns.host_ip, "cluster", 19_200);
    let (g0, g1) = (c.endpoints[0].as_str(), c.endpoints[1].as_str());
    let (st, _, _) = request(g0, "PUT", &format!("/{BUCKET}"), &[], b"");
    assert_eq!(st, 200, "creating the bucket");
    // A in the root namespace; C in the namespace, knowing both gateways (a cut costs it every
    // endpoint's time bound, not one).
    let hosts = fleet_hosts_wrapped(
        &["a", "c"],
        &[vec![g0, g1], vec![g0, g1]],
        "",
        &[vec![], ns.wrapper()],
    );
    let (a, hc) = (&hosts[0], &hosts[1]);
    a.root_key();
    hc.root_key();
    let u = user("arca-e2e-fleet-pub");
    let d1 = model_dir(a, &u, "cut1", 6 << 20, 9101);
    let d2 = model_dir(a, &u, "cut2", 6 << 20, 9102);
    a.trusted_key_for(&u);
    a.ok(&["role", "assign", &u.name, "developer", "--model", "nm"]);
    push_as(a, &u, &d1, "nm", "1.0.0");
    push_as(a, &u, &d2, "nm", "2.0.0");
    within(10, "C sees both versions", || {
        hc.arca(&["show", "nm", "2.0.0"]).status.success()
    });
    // C reads 1.0.0 once (every file, by `get`): its chunks are in C's store now.
    let want1 = std::fs::read(d1.join("model.safetensors")).unwrap();
    let want2 = std::fs::read(d2.join("model.safetensors")).unwrap();
    let f1 = hc.mnt().join("nm/1.0.0/model.safetensors");
    let first = hc.path().join("first-get");
    hc.ok(&["get", "nm", "1.0.0", "--out", first.to_str().unwrap()]);
    within(15, "A sees C's heartbeat", || heartbeat_age(a, "c") < 6.0);

    ns.cut();
    let cut_at = Instant::now();

    // An uncached read hangs on the store; a cached read at the same time is served at once:
    // a pread through the mount (which has not served this file before, so the page cache
    // does not hold it), then `get`, which reads every chunk through arcad.
    let (stuck, cached_took, get_took) = std::thread::scope(|s| {
        let stuck = s.spawn(|| {
            let t = Instant::now();
            let r = std::fs::read(hc.mnt().join("nm/2.0.0/model.safetensors"));
            (r, t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        let f = std::fs::File::open(&f1).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        f.read_exact_at(&mut buf, 3 << 20).unwrap();
        assert_eq!(
            buf[..],
            want1[3 << 20..4 << 20],
            "cached bytes during the cut"
        );
        let cached_took = t.elapsed();
        let t = Instant::now();
        let out = hc.path().join("cut-get");
        hc.ok(&["get", "nm", "1.0.0", "--out", out.to_str().unwrap()]);
        assert_eq!(
            sha256_hex(&std::fs::read(out.join("model.safetensors")).unwrap()),
            sha256_hex(&want1)
        );
        let get_took = t.elapsed();
        (stuck.join().unwrap(), cached_took, get_took)
    });
    let (r, eio) = stuck;
    let err = r.expect_err("an uncached read with the link cut fails");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    println!(
        "netns: link cut: uncached read EIO after {eio:?}; a cached pread of 1 MiB meanwhile took {cached_took:?}, `get` of the cached 6 MiB version {get_took:?}"
    );
    assert!(eio < Duration::from_secs(10), "EIO after {eio:?}");
    assert!(
        cached_took < Duration::from_secs(1),
        "a cached read waited {cached_took:?} behind a stuck one"
    );

    // A change on C is refused with one clear line within a bound, and changes nothing.
    let t = Instant::now();
    let err = failure(hc.arca(&["promote", "nm", "1.0.0", "--to", "staging"]));
    let refused = t.elapsed();
    println!("netns: link cut: a change on C was refused after {refused:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("unreachable") && err.contains("nothing was changed"),
        "{err}"
    );
    assert!(
        refused < Duration::from_secs(15),
        "refused after {refused:?}"
    );
    assert_eq!(hc.json(&["show", "nm", "1.0.0"])["status"], "development");

    // C's status names the store error, and its lag grows.
    let status = hc.json(&["status"]);
    let f = &status["fleet"];
    assert!(
        f["store_error"].is_string(),
        "status shows the store error: {status}"
    );
    let lag = f["lag_secs"].as_f64().expect("a lag");
    assert!(
        lag >= 2.0,
        "C's lag after {:?} of cut: {lag}",
        cut_at.elapsed()
    );
    let table = hc.ok(&["status"]);
    println!("netns: link cut: `arca status` on C:\n{table}");

    // A sees C's heartbeat age grow past the heartbeat period.
    let aged = within(30, "C's heartbeat ages on A", || {
        heartbeat_age(a, "c") > 8.0
    });
    let age = heartbeat_age(a, "c");
    println!(
        "netns: link cut: A reads C's heartbeat as {age:.1} s old ({:?} into the cut, {aged:?} of waiting)",
        cut_at.elapsed()
    );

    // A goes on changing state meanwhile.
    a.ok(&["promote", "nm", "2.0.0", "--to", "staging"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        std::fs::read_link(hc.mnt().join("nm/staging")).is_err(),
        "C cannot have A's change during the cut"
    );

    ns.heal();
    let healed = Instant::now();
    let took = within(
        3,
        "C applies A's change within 3 s of the link's return",
        || {
            std::fs::read_link(hc.mnt().join("nm/staging"))
                .map(|t| t == Path::new("2.0.0"))
                .unwrap_or(false)
        },
    );
    println!(
        "netns: link back: C applied A's change {took:?} after the link returned (cut lasted {:?})",
        healed - cut_at
    );
    let served = std::fs::read(hc.mnt().join("nm/2.0.0/model.safetensors"))
        .expect("the uncached version is served once the link is back");
    assert_eq!(sha256_hex(&served), sha256_hex(&want2));
    within(10, "C's status clears the store error", || {
        hc.json(&["status"])["fleet"]["store_error"].is_null()
    });
    within(15, "A sees C's heartbeat fresh again", || {
        heartbeat_age(a, "c") < 6.0
    });
    // The refused change never landed anywhere, not even late.
    for h in [a, hc] {
        assert_eq!(h.json(&["show", "nm", "1.0.0"])["status"], "development");
    }
    // And C can change state again.
    hc.ok(&["promote", "nm", "1.0.0", "--to", "staging"]);
}

#[test]
fn fleet_host_on_a_slow_link_reads_whole_packs_and_follows_promotions() {
    let ns = Netns::new(slot(19_300));
    let c = Cluster::start_on(&ns.host_ip, "cluster", 19_300);
    let (g0, g1) = (c.endpoints[0].as_str(), c.endpoints[1].as_str());
    let (st, _, _) = request(g0, "PUT", &format!("/{BUCKET}"), &[], b"");
    assert_eq!(st, 200, "creating the bucket");
    let hosts = fleet_hosts_wrapped(
        &["a", "s"],
        &[vec![g0, g1], vec![g0, g1]],
        "",
        &[vec![], ns.wrapper()],
    );
    let (a, hs) = (&hosts[0], &hosts[1]);
    a.root_key();
    hs.root_key();
    let u = user("arca-e2e-fleet-pub");
    a.trusted_key_for(&u);
    a.ok(&["role", "assign", &u.name, "developer", "--model", "sm"]);
    // 24 MiB: one pack, whose streamed read takes several times the fleet's 3 s timeout at
    // the link's rate.
    let big = 24 << 20;
    let d1 = model_dir(a, &u, "slow1", big, 9201);
    let d2 = model_dir(a, &u, "slow2", big, 9202);
    push_as(a, &u, &d1, "sm", "1.0.0");
    push_as(a, &u, &d2, "sm", "2.0.0");
    within(10, "S sees both versions", || {
        hs.arca(&["show", "sm", "2.0.0"]).status.success()
    });

    // 16 Mbit/s both ways, a queue of 200 ms.
    let rate_mbit = 16.0;
    ns.slow("16mbit", "200ms");

    // A cold sequential read through the mount, and meanwhile a reader of the file's last MiB:
    // its chunks are in the extent the first read is streaming, so it waits for the stream to
    // get there, which on this link takes longer than any single request may.
    let want1 = std::fs::read(d1.join("model.safetensors")).unwrap();
    let f1 = hs.mnt().join("sm/1.0.0/model.safetensors");
    let (whole, tail) = std::thread::scope(|s| {
        let whole = s.spawn(|| {
            let t = Instant::now();
            let r = std::fs::read(&f1);
            (r, t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        let mut buf = vec![0u8; 1 << 20];
        let r = std::fs::File::open(&f1)
            .and_then(|f| f.read_exact_at(&mut buf, (big - (1 << 20)) as u64))
            .map(|()| buf);
        (whole.join().unwrap(), (r, t.elapsed()))
    });
    let (r, took) = whole;
    let got = r.expect("a cold read over the slow link");
    assert_eq!(sha256_hex(&got), sha256_hex(&want1), "byte-identical");
    let mb_s = big as f64 / took.as_secs_f64() / 1e6;
    let (r, tail_took) = tail;
    let tail_bytes = r.unwrap_or_else(|e| {
        panic!(
            "the tail of the file, read while the stream carries it: {e} after {tail_took:?}\n{}",
            hs.log()
        )
    });
    assert_eq!(tail_bytes[..], want1[big - (1 << 20)..]);
    println!(
        "netns: slow link ({rate_mbit} Mbit/s = {:.2} MB/s): cold read of {} MiB through the mount in {took:?} = {mb_s:.2} MB/s; a concurrent read of its last MiB waited {tail_took:?}",
        rate_mbit / 8.0,
        big >> 20
    );

    // `get` of the other version, cold: byte-identical too.
    let t = Instant::now();
    let out = hs.path().join("slow-get");
    hs.ok(&["get", "sm", "2.0.0", "--out", out.to_str().unwrap()]);
    let get_took = t.elapsed();
    assert_eq!(
        sha256_hex(&std::fs::read(out.join("model.safetensors")).unwrap()),
        sha256_hex(&std::fs::read(d2.join("model.safetensors")).unwrap())
    );
    println!(
        "netns: slow link: cold `get` of {} MiB in {get_took:?} = {:.2} MB/s",
        big >> 20,
        big as f64 / get_took.as_secs_f64() / 1e6
    );

    // Promotions reach S within 3 s over the slow link, also while a bulk read fills it.
    let d3 = model_dir(a, &u, "slow3", big, 9203);
    push_as(a, &u, &d3, "sm", "3.0.0");
    within(10, "S sees 3.0.0", || {
        hs.arca(&["show", "sm", "3.0.0"]).status.success()
    });
    let mut flips = Vec::new();
    std::thread::scope(|s| {
        let f3 = hs.mnt().join("sm/3.0.0/model.safetensors");
        let busy = s.spawn(move || std::fs::read(f3).map(|b| b.len()));
        std::thread::sleep(Duration::from_millis(500));
        for v in ["1.0.0", "2.0.0", "3.0.0"] {
            a.ok(&["promote", "sm", v, "--to", "staging"]);
            let link = hs.mnt().join("sm/staging");
            flips.push(within(3, &format!("S's staging link flips to {v}"), || {
                std::fs::read_link(&link)
                    .map(|t| t == Path::new(v))
                    .unwrap_or(false)
            }));
        }
        assert_eq!(busy.join().unwrap().expect("the bulk read"), big);
    });
    println!("netns: slow link: promotion to S's link flip, during a bulk read: {flips:?}");

    // A push from the slow host: its 8 MiB pack upload outlasts the 3 s request bound.
    let small = hs.path().join("from-s");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::write(small.join("w.bin"), pseudo_random(8 << 20, 9204)).unwrap();
    let t = Instant::now();
    hs.ok(&[
        "push",
        small.to_str().unwrap(),
        "--name",
        "sp",
        "--version",
        "1.0.0",
    ]);
    println!(
        "netns: slow link: a push of 8 MiB from S took {:?}",
        t.elapsed()
    );
    within(10, "A sees S's push", || {
        a.arca(&["show", "sp", "1.0.0"]).status.success()
    });
    let back = std::fs::read(a.mnt().join("sp/1.0.0/w.bin")).unwrap();
    assert_eq!(sha256_hex(&back), sha256_hex(&pseudo_random(8 << 20, 9204)));
    let status = hs.json(&["status"]);
    assert!(
        status["fleet"]["store_error"].is_null(),
        "no store error on a slow but working link: {status}"
    );
}
