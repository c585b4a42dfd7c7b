//! Issue #4's offline integrity check: `arca manifest` exports the signed manifest, and
//! `arca verify-dir` checks a copy of the model on a host with no daemon at all.

use crate::harness::TestEnv;
use crate::mount::push_model;

#[test]
fn verify_dir_checks_a_copy_without_a_daemon_and_names_every_difference() {
    let mut env = TestEnv::new();
    env.root_key();
    push_model(&env, "off", "1.0.0", 110);
    let manifest = env.path().join("off.manifest.json");
    std::fs::write(&manifest, env.ok(&["manifest", "off", "1.0.0"])).unwrap();
    let copy = env.path().join("copy");
    env.ok(&["get", "off", "1.0.0", "--out", copy.to_str().unwrap()]);
    let pubkey = env.path().join("home-root/.config/arca/signing.pub");
    // No daemon from here on: the check needs only the manifest and the files.
    env.stop();

    let (m, c, t) = (
        manifest.to_str().unwrap(),
        copy.to_str().unwrap(),
        pubkey.to_str().unwrap(),
    );
    let ok = env.ok(&["verify-dir", c, "--manifest", m, "--trust", t]);
    assert!(ok.starts_with("OK:") && ok.contains("3 files"), "{ok}");

    let check_fails = |expect: &str| {
        let err = env.fails(&["verify-dir", c, "--manifest", m]);
        assert!(err.contains(expect), "expected {expect:?} in {err}");
    };
    // One flipped byte.
    let f = copy.join("sub/dir/small.bin");
    let orig = std::fs::read(&f).unwrap();
    let mut bad = orig.clone();
    bad[100] ^= 1;
    std::fs::write(&f, &bad).unwrap();
    check_fails("sub/dir/small.bin: content differs");
    std::fs::write(&f, &orig).unwrap();
    // One added file.
    std::fs::write(copy.join("extra.txt"), b"x").unwrap();
    check_fails("extra.txt: unexpected file");
    std::fs::remove_file(copy.join("extra.txt")).unwrap();
    // One removed file.
    std::fs::remove_file(copy.join("config.json")).unwrap();
    check_fails("config.json: missing");
    std::fs::write(copy.join("config.json"), "{\"v\": \"1.0.0\"}\n").unwrap();
    env.ok(&["verify-dir", c, "--manifest", m]);

    // A manifest edited to match a modified file no longer matches its signed root.
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    j["files"][0]["size"] = serde_json::json!(1);
    let edited = env.path().join("edited.json");
    std::fs::write(&edited, j.to_string()).unwrap();
    let err = env.fails(&["verify-dir", c, "--manifest", edited.to_str().unwrap()]);
    assert!(err.contains("do not match the Merkle root"), "{err}");
    // Signed by someone else than the key we trust.
    let other = env.path().join("other.pub");
    std::fs::write(
        &other,
        format!(
            "{}\n",
            arca_core::sign::SecretKey::generate().unwrap().public()
        ),
    )
    .unwrap();
    let err = env.fails(&[
        "verify-dir",
        c,
        "--manifest",
        m,
        "--trust",
        other.to_str().unwrap(),
    ]);
    assert!(err.contains("not by the trusted key"), "{err}");
}
