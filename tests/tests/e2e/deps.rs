//! Issue #4's dependency checks: pins recorded at push (`--dep`, `--requirements` with hashes)
//! and `arca deps verify` against real directory layouts of a venv and a site-packages.

use std::path::Path;

use crate::harness::TestEnv;

/// A distribution as pip installs it: NAME-VERSION.dist-info/METADATA.
fn dist(site: &Path, name: &str, version: &str) {
    let d = site.join(format!("{}-{version}.dist-info", name.replace('-', "_")));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("METADATA"), format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test\n\nlong description\nVersion: 0.0.0\n")).unwrap();
}

#[test]
fn deps_verify_passes_on_a_matching_venv_and_names_what_differs() {
    let env = TestEnv::new();
    env.root_key();
    let d = env.path().join("m");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("w.bin"), b"weights").unwrap();
    let req = env.path().join("requirements.txt");
    std::fs::write(&req, "# pinned\ntorch==2.3.1 \\\n    --hash=sha256:0123 \\\n    --hash=sha256:4567\nnumpy==1.26.4\n").unwrap();
    env.ok(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        "dm",
        "--version",
        "1.0.0",
        "--requirements",
        req.to_str().unwrap(),
        "--dep",
        "Pillow==10.0.0",
    ]);
    let show = env.json(&["show", "dm", "1.0.0"]);
    assert_eq!(
        show["metadata"]["dependencies"],
        serde_json::json!({"Pillow": "10.0.0", "numpy": "1.26.4", "torch": "2.3.1"})
    );
    assert_eq!(
        show["metadata"]["dependency_hashes"]["torch"],
        serde_json::json!(["sha256:0123", "sha256:4567"])
    );

    // A venv with exactly those versions (names as pip normalises them).
    let good = env.path().join("venv-good");
    let site = good.join("lib/python3.11/site-packages");
    dist(&site, "torch", "2.3.1");
    dist(&site, "numpy", "1.26.4");
    dist(&site, "pillow", "10.0.0");
    dist(&site, "unrelated", "1.0");
    let out = env.ok(&[
        "deps",
        "verify",
        "dm",
        "1.0.0",
        "--python",
        good.to_str().unwrap(),
    ]);
    assert!(out.starts_with("OK: 3 of 3"), "{out}");
    // A bare site-packages directory works too.
    env.ok(&[
        "deps",
        "verify",
        "dm",
        "1.0.0",
        "--python",
        site.to_str().unwrap(),
    ]);

    // One wrong version, one missing package: both named, non-zero exit.
    let bad = env.path().join("venv-bad/lib/python3.11/site-packages");
    dist(&bad, "numpy", "1.26.0");
    dist(&bad, "Pillow", "10.0.0");
    let err = env.fails(&[
        "deps",
        "verify",
        "dm",
        "1.0.0",
        "--python",
        env.path().join("venv-bad").to_str().unwrap(),
    ]);
    assert!(
        err.contains("numpy: 1.26.0 installed, 1.26.4 required"),
        "{err}"
    );
    assert!(err.contains("torch: missing"), "{err}");
    assert!(!err.contains("Pillow"), "{err}");

    // A requirements file that is not exact pins is refused before anything is pushed.
    std::fs::write(&req, "torch>=2\n").unwrap();
    let err = env.fails(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        "dm",
        "--version",
        "1.0.1",
        "--requirements",
        req.to_str().unwrap(),
    ]);
    assert!(err.contains("not an exact pin"), "{err}");
}
