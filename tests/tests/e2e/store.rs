//! Issue #2: push, get, dedup, encryption at rest, tamper detection, signatures, identities.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use arca_core::manifest::{merkle_root, FileEntry};
use arca_core::metadata::PublishedMetadata;
use arca_core::sign::SecretKey;

use crate::harness::{pseudo_random, sha256_hex, sha256sum, user, walk, TestEnv};

const MIB: usize = 1 << 20;

/// A model directory: a 64 MiB weights file, a nested 3 MiB file and a small config.
fn model_dir(env: &TestEnv, name: &str, seed: u64) -> PathBuf {
    let d = env.path().join(name);
    std::fs::create_dir_all(d.join("tokenizer")).unwrap();
    std::fs::write(d.join("model.safetensors"), pseudo_random(64 * MIB, seed)).unwrap();
    std::fs::write(
        d.join("tokenizer/vocab.bin"),
        pseudo_random(3 * MIB + 17, seed + 1),
    )
    .unwrap();
    std::fs::write(
        d.join("config.json"),
        format!("{{\"hidden\": 768, \"seed\": {seed}}}\n"),
    )
    .unwrap();
    d
}

fn stats(env: &TestEnv) -> serde_json::Value {
    env.json(&["stats"])
}

#[test]
fn push_and_get_back_byte_identical() {
    let env = TestEnv::new();
    env.root_key();
    let dir = model_dir(&env, "m", 1);
    let meta = env.path().join("meta.json");
    std::fs::write(&meta, r#"{"input_schema": {"type": "tensor", "shape": [1, 3]}, "metrics": {"accuracy": 0.91}, "training_dataset": "imagenet-1k"}"#).unwrap();
    let out = env.ok(&[
        "push",
        dir.to_str().unwrap(),
        "--name",
        "resnet",
        "--version",
        "1.0.0",
        "--meta",
        meta.to_str().unwrap(),
        "--type",
        "computer_vision",
        "--framework",
        "pytorch",
        "--description",
        "test model",
        "--tag",
        "vision",
        "--dep",
        "torch==2.3.1",
    ]);
    assert!(out.contains("pushed resnet 1.0.0: 3 files"), "{out}");

    let show = env.json(&["show", "resnet", "1.0.0"]);
    assert_eq!(show["created_by"], "root");
    assert_eq!(show["created_by_uid"], 0);
    assert_eq!(show["status"], "development");
    assert_eq!(show["metadata"]["model_type"], "computer_vision");
    assert_eq!(show["metadata"]["dependencies"]["torch"], "2.3.1");
    assert_eq!(show["metadata"]["metrics"]["accuracy"], 0.91);
    let on_disk: u64 = crate::harness::walk(&dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(show["total_size"], on_disk);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(show["created_at"].as_u64().unwrap().abs_diff(now) < 600);

    let out_dir = env.path().join("fetched");
    env.ok(&["get", "resnet", "1.0.0", "--out", out_dir.to_str().unwrap()]);
    for rel in ["model.safetensors", "tokenizer/vocab.bin", "config.json"] {
        let (a, b) = (dir.join(rel), out_dir.join(rel));
        assert_eq!(sha256sum(&a), sha256sum(&b), "{rel} differs after get");
        let listed = show["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == rel)
            .unwrap();
        assert_eq!(listed["sha256"], sha256sum(&a), "manifest digest of {rel}");
    }
    assert_eq!(walk(&out_dir).len(), 3, "only the three files are written");
    let v = env.ok(&["verify", "resnet"]);
    assert!(v.starts_with("OK: 1 versions, 3 files"), "{v}");

    // The store survives a clean restart with everything readable.
    let mut env = env;
    env.stop();
    env.start();
    let again = env.path().join("fetched2");
    env.ok(&["get", "resnet", "1.0.0", "--out", again.to_str().unwrap()]);
    assert_eq!(
        sha256sum(&dir.join("model.safetensors")),
        sha256sum(&again.join("model.safetensors"))
    );
}

#[test]
fn dedup_same_content_and_one_percent_change() {
    let env = TestEnv::new();
    env.root_key();
    let dir = model_dir(&env, "m", 2);
    env.ok(&[
        "push",
        dir.to_str().unwrap(),
        "--name",
        "llm",
        "--version",
        "1.0.0",
    ]);
    let s1 = stats(&env);

    // Same content, new version: no new chunk at all.
    let again = env.json(&[
        "push",
        dir.to_str().unwrap(),
        "--name",
        "llm",
        "--version",
        "1.0.1",
    ]);
    let s2 = stats(&env);
    assert_eq!(again["new_chunks"], 0, "{again}");
    assert_eq!(s2["stored_bytes"], s1["stored_bytes"]);
    println!(
        "same content as a new version: {} new stored bytes",
        again["new_stored_bytes"]
    );

    // Change 1% of the 64 MiB file, contiguously, somewhere in the middle.
    let f = dir.join("model.safetensors");
    let mut data = std::fs::read(&f).unwrap();
    let changed = data.len() / 100;
    let at = 20 * MIB + 12_345;
    data[at..at + changed].copy_from_slice(&pseudo_random(changed, 99));
    std::fs::write(&f, &data).unwrap();
    let third = env.json(&[
        "push",
        dir.to_str().unwrap(),
        "--name",
        "llm",
        "--version",
        "1.0.2",
    ]);
    let s3 = stats(&env);
    let added = s3["stored_bytes"].as_u64().unwrap() - s2["stored_bytes"].as_u64().unwrap();
    assert_eq!(added, third["new_stored_bytes"].as_u64().unwrap());
    let ratio = added as f64 / changed as f64;
    // The store's chunker seed is random, so the figure varies from store to store: about 1.1x
    // typically, above 1.3x in about one store in 80, never above 1.46x in 400 seeds measured.
    // The distribution is checked over fixed seeds by the chunker's unit test; here, one store
    // must stay within the worst case seen, with a margin.
    println!("1% change: {changed} bytes changed, {added} stored bytes added, ratio {ratio:.3} (typically 1.1; 395 of 400 stores <= 1.3)");
    assert!(
        ratio <= 1.6,
        "a 1% change added {ratio:.3}x the changed bytes"
    );
    let v = env.ok(&["verify", "llm"]);
    assert!(v.starts_with("OK: 3 versions"), "{v}");

    // Disk use besides the chunks stays small. The write-ahead log holds only records (chunks
    // bypass it), but RocksDB preallocates each new WAL file by the write buffer of the column
    // family whose flush switched it: with the chunks' 32 MiB buffer, a 35 MiB file of which
    // a few KiB were written (a fleet host's cache limit was overrun by it in CI). The
    // promotion writes to the WAL the last push's flush started.
    env.ok(&["promote", "llm", "1.0.0", "--to", "staging"]);
    let mut wal = 0;
    for e in std::fs::read_dir(env.state_dir().join("db"))
        .unwrap()
        .flatten()
    {
        use std::os::unix::fs::MetadataExt;
        if e.file_name().to_string_lossy().ends_with(".log") {
            let m = e.metadata().unwrap();
            println!(
                "WAL {:?}: {} bytes, {} allocated",
                e.file_name(),
                m.len(),
                m.blocks() * 512
            );
            wal += m.blocks() * 512;
        }
    }
    assert!(
        wal <= 12 << 20,
        "the write-ahead log takes {wal} bytes of disk after three pushes"
    );
}

#[test]
fn no_plaintext_under_the_state_dir() {
    let mut env = TestEnv::new();
    env.root_key();
    let d = env.path().join("secret");
    std::fs::create_dir_all(&d).unwrap();
    let content_marker = "CONTENT-MARKER-7f3a9c";
    let mut body = pseudo_random(2 * MIB, 5);
    for i in 0..200 {
        let at = i * 9_973;
        body[at..at + content_marker.len()].copy_from_slice(content_marker.as_bytes());
    }
    std::fs::write(d.join("FILENAME-MARKER-51d2.bin"), &body).unwrap();
    std::fs::write(
        d.join("notes.txt"),
        format!("{content_marker} in a small file\n"),
    )
    .unwrap();
    env.ok(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        "MODELNAME-MARKER-a81",
        "--version",
        "1.0.0",
        "--description",
        "META-MARKER-e44c",
        "--tag",
        "TAG-MARKER-0b9",
        "--framework",
        "FRAMEWORK-MARKER-2e1",
    ]);
    // Stop cleanly so memtables are flushed, then look at every byte of every file.
    env.stop();
    let markers = [
        "CONTENT-MARKER-7f3a9c",
        "FILENAME-MARKER-51d2",
        "MODELNAME-MARKER-a81",
        "META-MARKER-e44c",
        "TAG-MARKER-0b9",
        "FRAMEWORK-MARKER-2e1",
    ];
    let files = walk(&env.state_dir());
    assert!(files.len() > 3, "state dir unexpectedly empty");
    let mut scanned = 0usize;
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        scanned += bytes.len();
        for m in markers {
            assert!(
                !bytes.windows(m.len()).any(|w| w == m.as_bytes()),
                "{m} found in plaintext in {}",
                f.display()
            );
        }
    }
    assert!(
        scanned > 2 * MIB,
        "the chunks must be somewhere under the state dir ({scanned} bytes scanned)"
    );
}

#[test]
fn a_flipped_byte_fails_verify_and_get_leaves_no_corrupt_file() {
    let mut env = TestEnv::new();
    env.root_key();
    let d = env.path().join("t");
    std::fs::create_dir_all(&d).unwrap();
    // A 5000-byte file is one chunk (below the 8 KiB minimum), sealed to 37 + 5000 + 16 bytes.
    std::fs::write(d.join("small.bin"), pseudo_random(5000, 7)).unwrap();
    std::fs::write(d.join("big.bin"), pseudo_random(4 * MIB, 8)).unwrap();
    std::fs::write(d.join("other.bin"), pseudo_random(2 * MIB, 9)).unwrap();
    env.ok(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        "tamper",
        "--version",
        "1.0.0",
    ]);
    env.ok(&["verify", "tamper", "1.0.0"]);
    env.stop();
    // Flip a bit a third of the way in: past the 37-byte header, inside the ciphertext.
    assert_eq!(env.tamper("chunks", |v| v.len() == 5053, |len| len / 3), 1);
    env.start();

    let out = env.arca(&["verify", "tamper", "1.0.0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "verify passed on a tampered store");
    assert!(
        err.contains("file small.bin"),
        "verify must name the file: {err}"
    );
    assert!(
        !err.contains("big.bin") && !err.contains("other.bin"),
        "only small.bin is damaged: {err}"
    );

    let dest = env.path().join("out");
    let err = env.fails(&["get", "tamper", "1.0.0", "--out", dest.to_str().unwrap()]);
    assert!(err.contains("small.bin"), "get must name the file: {err}");
    assert!(
        !dest.join("small.bin").exists(),
        "a corrupt file was left behind"
    );
    assert!(
        walk(&dest)
            .iter()
            .all(|p| !p.to_string_lossy().contains("arca-partial")),
        "temporary files left behind"
    );
    assert!(
        env.log().contains("integrity failure"),
        "the daemon logs the failure"
    );
    // Files are fetched in path order: the undamaged ones before small.bin arrived intact.
    for ok in ["big.bin", "other.bin"] {
        assert_eq!(
            sha256sum(&dest.join(ok)),
            sha256sum(&d.join(ok)),
            "{ok} must read correctly"
        );
    }
}

/// Starts an upload of `files` through the raw API and returns (upload id, entries, metadata).
fn raw_upload(
    env: &TestEnv,
    name: &str,
    version: &str,
    files: &[(&str, Vec<u8>)],
) -> (String, Vec<FileEntry>, PublishedMetadata) {
    let md = PublishedMetadata::new(name.parse().unwrap(), version.parse().unwrap());
    let (st, body) = env.raw(
        "POST",
        "/v1/uploads",
        serde_json::json!({ "metadata": md }).to_string().as_bytes(),
    );
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
    let id = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["upload_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut entries = Vec::new();
    for (path, data) in files {
        let (st, body) = env.raw(
            "PUT",
            &format!("/v1/uploads/{id}/files?path={path}&mode=420"),
            data,
        );
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
        let stored: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let entry: FileEntry = serde_json::from_value(stored["entry"].clone()).unwrap();
        assert_eq!(entry.sha256.to_hex(), sha256_hex(data));
        entries.push(entry);
    }
    (id, entries, md)
}

fn chunk_and_version_rows(env: &TestEnv) -> (usize, usize) {
    let db = env.open_db();
    let count = |cf: &str| {
        db.iterator_cf(db.cf_handle(cf).unwrap(), rocksdb::IteratorMode::Start)
            .count()
    };
    (count("cache"), count("versions"))
}

#[test]
fn bad_signature_or_untrusted_signer_is_refused_and_stores_nothing() {
    let mut env = TestEnv::new();
    let key = SecretKey::from_file_text(&std::fs::read_to_string(env.root_key()).unwrap()).unwrap();
    let data = vec![("w.bin", pseudo_random(3 * MIB, 11))];

    // 1. Correct root, but the signature is over something else.
    let (id, mut entries, md) = raw_upload(&env, "sig", "1.0.0", &data);
    let root = merkle_root(&mut entries).unwrap();
    let digest = md.digest().unwrap();
    let wrong = arca_core::MerkleRoot([0x55; 32]);
    let commit = serde_json::json!({"merkle_root": root, "metadata_digest": digest, "signature": key.sign_version(&wrong, &digest).to_string(), "public_key": key.public().to_string()});
    let (st, body) = env.raw(
        "POST",
        &format!("/v1/uploads/{id}/commit"),
        commit.to_string().as_bytes(),
    );
    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("signature mismatch"));

    // 2. A valid signature over a root that is not what was uploaded.
    let (id, _, md) = raw_upload(&env, "sig", "1.0.0", &data);
    let commit = serde_json::json!({"merkle_root": wrong, "metadata_digest": digest, "signature": key.sign_version(&wrong, &md.digest().unwrap()).to_string(), "public_key": key.public().to_string()});
    let (st, body) = env.raw(
        "POST",
        &format!("/v1/uploads/{id}/commit"),
        commit.to_string().as_bytes(),
    );
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("Merkle root"));

    // 3. Correctly signed, but by a key nobody trusted.
    let stranger = SecretKey::generate().unwrap();
    let (id, mut entries, md) = raw_upload(&env, "sig", "1.0.0", &data);
    let root = merkle_root(&mut entries).unwrap();
    let digest = md.digest().unwrap();
    let commit = serde_json::json!({"merkle_root": root, "metadata_digest": digest, "signature": stranger.sign_version(&root, &digest).to_string(), "public_key": stranger.public().to_string()});
    let (st, body) = env.raw(
        "POST",
        &format!("/v1/uploads/{id}/commit"),
        commit.to_string().as_bytes(),
    );
    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("untrusted signer"));

    // The CLI with an untrusted key file says so in one line.
    let kf = env.path().join("stranger.key");
    std::fs::write(&kf, stranger.to_file_text().as_bytes()).unwrap();
    let d = env.path().join("cli");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("w.bin"), &data[0].1).unwrap();
    let err = env.fails(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        "sig",
        "--version",
        "1.0.0",
        "--key",
        kf.to_str().unwrap(),
    ]);
    assert!(
        err.contains("untrusted signer") && err.lines().count() == 1,
        "{err}"
    );

    // Nothing was stored: no version, and not one chunk left behind.
    assert!(env
        .fails(&["show", "sig", "1.0.0"])
        .contains("no version 1.0.0 of model sig"));
    env.stop();
    assert_eq!(chunk_and_version_rows(&env), (0, 0));
    env.start();
    // And the same push, properly signed, goes through.
    env.ok(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        "sig",
        "--version",
        "1.0.0",
    ]);
}

fn wait_for_upload_progress(env: &TestEnv) {
    // Wait until the daemon has received some chunks, so the kill lands mid-push.
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(25));
        if std::fs::read_dir(env.state_dir().join("db"))
            .map(|d| d.count())
            .unwrap_or(0)
            > 0
        {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn a_killed_push_leaves_no_version() {
    let mut env = TestEnv::new();
    env.root_key();
    let d = env.path().join("big");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("weights.bin"), pseudo_random(768 * MIB, 21)).unwrap();
    let push = |env: &TestEnv| {
        env.arca_cmd(&[
            "push",
            d.to_str().unwrap(),
            "--name",
            "killed",
            "--version",
            "1.0.0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };

    // The client dies mid-push.
    let mut child = push(&env);
    wait_for_upload_progress(&env);
    assert!(
        child.try_wait().unwrap().is_none(),
        "push finished before it could be killed; use a bigger file"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(env
        .fails(&["show", "killed", "1.0.0"])
        .contains("no version"));

    // The daemon dies mid-push.
    let mut child = push(&env);
    wait_for_upload_progress(&env);
    assert!(
        child.try_wait().unwrap().is_none(),
        "push finished before the daemon could be killed"
    );
    env.kill();
    let st = child.wait().unwrap();
    assert!(!st.success(), "the push must fail when the daemon dies");
    env.start();
    assert!(env
        .fails(&["show", "killed", "1.0.0"])
        .contains("no version"));
    assert!(env
        .fails(&["ls", "killed"])
        .contains("no model named killed"));

    // The store is usable: the same version can be pushed and verifies.
    let mut small = d.clone();
    small.set_file_name("small");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::write(small.join("w.bin"), pseudo_random(MIB, 22)).unwrap();
    env.ok(&[
        "push",
        small.to_str().unwrap(),
        "--name",
        "killed",
        "--version",
        "1.0.0",
    ]);
    env.ok(&["verify", "killed"]);
}

#[test]
fn a_non_root_push_records_that_user() {
    let env = TestEnv::new();
    env.root_key();
    // A user of its own: this test replaces the user's key file (`trusted_key_for` reuses one).
    let u = user("arca-e2e-pub-fresh");
    // The user's files, readable by them.
    let d = env.path().join("userdir");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("m.bin"), pseudo_random(MIB, 31)).unwrap();
    nix::unistd::chown(&d, Some(u.uid.into()), Some(u.gid.into())).unwrap();
    nix::unistd::chown(&d.join("m.bin"), Some(u.uid.into()), Some(u.gid.into())).unwrap();
    let keyfile = u.home.join(".config/arca/signing.key");
    let _ = std::fs::remove_file(&keyfile);
    let _ = std::fs::remove_file(keyfile.with_extension("pub"));

    let out = env.arca_as(&u, &["key", "gen"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("not trusted yet"));
    // Before an admin trusts the key, a push is refused in one clear line.
    let push = [
        "push",
        d.to_str().unwrap(),
        "--name",
        "userm",
        "--version",
        "0.1.0",
    ];
    let out = env.arca_as(&u, &push);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lacks write permission on model userm"),
        "no role, no push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ok(&["role", "assign", &u.name, "developer", "--model", "userm"]);
    let out = env.arca_as(&u, &push);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no trusted signing key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A non-admin cannot trust keys, not even their own.
    let out = env.arca_as(
        &u,
        &[
            "key",
            "trust",
            &u.name,
            keyfile.with_extension("pub").to_str().unwrap(),
        ],
    );
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr)
                .contains("lacks admin permission on every model")
    );

    env.ok(&[
        "key",
        "trust",
        &u.name,
        keyfile.with_extension("pub").to_str().unwrap(),
    ]);
    let out = env.arca_as(&u, &push);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let show = env.json(&["show", "userm", "0.1.0"]);
    assert_eq!(show["created_by"], u.name.as_str());
    assert_eq!(show["created_by_uid"], u.uid);
    assert_eq!(show["signer"]["user"], u.name.as_str());
    let keys = env.json(&["key", "ls"]);
    assert!(keys
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["user"] == u.name.as_str() && k["added_by"] == "root"));
}

#[test]
fn cli_errors_are_one_line_and_change_nothing() {
    let mut env = TestEnv::new();
    env.root_key();
    let d = env.path().join("e");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("a.bin"), b"hello").unwrap();
    env.ok(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        "errs",
        "--version",
        "1.0.0",
    ]);
    let before = stats(&env);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "push",
                d.to_str().unwrap(),
                "--name",
                "errs",
                "--version",
                "1.0.0",
            ],
            "already has version 1.0.0",
        ),
        (
            vec![
                "push",
                d.to_str().unwrap(),
                "--name",
                "errs",
                "--version",
                "1.0",
            ],
            "invalid version",
        ),
        (
            vec![
                "push",
                d.to_str().unwrap(),
                "--name",
                "../etc",
                "--version",
                "1.0.1",
            ],
            "invalid model name",
        ),
        (
            vec!["show", "nosuch", "1.0.0"],
            "no version 1.0.0 of model nosuch",
        ),
        (vec!["ls", "nosuch"], "no model named nosuch"),
        (vec!["verify", "nosuch"], "no model named nosuch"),
        (
            vec!["get", "nosuch", "1.0.0", "--out", "/tmp/x"],
            "no version",
        ),
        (
            vec![
                "push",
                d.to_str().unwrap(),
                "--name",
                "errs",
                "--version",
                "2.0.0",
                "--parent",
                "9.9.9",
            ],
            "parent version 9.9.9",
        ),
    ];
    for (args, expect) in cases {
        let err = env.fails(&args);
        assert!(
            err.contains(expect),
            "arca {args:?}: expected {expect:?} in {err:?}"
        );
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "arca {args:?}: not one line: {err:?}"
        );
    }
    assert_eq!(stats(&env), before, "a refused request changed the store");
    env.stop();
    let err = env.fails(&["ls"]);
    assert!(err.contains("cannot reach arcad"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1);
}
