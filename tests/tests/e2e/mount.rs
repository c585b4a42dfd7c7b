//! Issue #3: the read-only FUSE mount, through the kernel, as inference servers use it.

use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use crate::harness::{as_user, is_mounted, pseudo_random, sha256_hex, sha256sum, user, TestEnv};

const MIB: usize = 1 << 20;

pub fn push_model(env: &TestEnv, name: &str, version: &str, seed: u64) -> std::path::PathBuf {
    let d = env.path().join(format!("{name}-{version}"));
    std::fs::create_dir_all(d.join("sub/dir")).unwrap();
    std::fs::write(
        d.join("model.safetensors"),
        pseudo_random(48 * MIB + 123, seed),
    )
    .unwrap();
    std::fs::write(d.join("sub/dir/small.bin"), pseudo_random(5000, seed + 1)).unwrap();
    std::fs::write(d.join("config.json"), format!("{{\"v\": \"{version}\"}}\n")).unwrap();
    env.ok(&[
        "push",
        d.to_str().unwrap(),
        "--name",
        name,
        "--version",
        version,
    ]);
    d
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

#[test]
fn files_read_back_identical_plainly_by_mmap_and_by_eight_threads() {
    let env = TestEnv::new();
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is required for the mount tests"
    );
    assert!(
        is_mounted(&env.mnt()),
        "arcad did not mount {}",
        env.mnt().display()
    );
    env.root_key();
    let src = push_model(&env, "bert", "1.0.0", 40);
    let v = env.mnt().join("bert/1.0.0");
    for rel in ["model.safetensors", "sub/dir/small.bin", "config.json"] {
        assert_eq!(
            sha256sum(&v.join(rel)),
            sha256sum(&src.join(rel)),
            "{rel} differs through the mount"
        );
        let (a, b) = (
            std::fs::metadata(v.join(rel)).unwrap(),
            std::fs::metadata(src.join(rel)).unwrap(),
        );
        assert_eq!(a.len(), b.len());
    }
    let mut names: Vec<String> = std::fs::read_dir(&v)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["config.json", "model.safetensors", "sub"]);

    // mmap, the way safetensors loads weights.
    let original = std::fs::read(src.join("model.safetensors")).unwrap();
    {
        let f = std::fs::File::open(v.join("model.safetensors")).unwrap();
        // SAFETY: the mapped file is on a read-only filesystem whose versions are immutable.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
        assert_eq!(sha256_hex(&map), sha256_hex(&original), "mmap view differs");
        assert_eq!(
            &map[12_345_678..12_345_778],
            &original[12_345_678..12_345_778]
        );
    }

    // 8 threads, random offsets and sizes, compared byte for byte.
    let path = v.join("model.safetensors");
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (path, original) = (&path, &original);
            s.spawn(move || {
                let f = std::fs::File::open(path).unwrap();
                let mut x = t * 7919 + 1;
                for _ in 0..150 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let off = (x >> 11) as usize % original.len();
                    let len = ((x >> 40) as usize % (3 * MIB)).min(original.len() - off);
                    let mut buf = vec![0u8; len];
                    f.read_exact_at(&mut buf, off as u64).unwrap();
                    assert!(
                        buf == original[off..off + len],
                        "thread {t}: bytes differ at {off}+{len}"
                    );
                }
            });
        }
    });
}

#[test]
fn the_mount_is_read_only_and_checks_permission() {
    let env = TestEnv::new();
    env.root_key();
    push_model(&env, "ro", "1.0.0", 50);
    let v = env.mnt().join("ro/1.0.0");
    let file = v.join("config.json");
    let w = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap_err();
    assert_eq!(errno(&w), libc::EROFS, "open for write: {w}");
    assert_eq!(
        errno(&std::fs::write(v.join("new.txt"), b"x").unwrap_err()),
        libc::EROFS
    );
    assert_eq!(
        errno(&std::fs::remove_file(&file).unwrap_err()),
        libc::EROFS
    );
    assert_eq!(
        errno(&std::fs::rename(&file, v.join("x")).unwrap_err()),
        libc::EROFS
    );
    assert_eq!(
        errno(&std::fs::create_dir(v.join("d")).unwrap_err()),
        libc::EROFS
    );
    let chmod = Command::new("chmod")
        .arg("777")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        !chmod.status.success()
            && String::from_utf8_lossy(&chmod.stderr).contains("Read-only file system")
    );

    // A local user with no permission on the model gets EACCES, through the kernel.
    let u = user("arca-e2e-reader");
    let cat = as_user(&u, "cat").arg(&file).output().unwrap();
    assert!(!cat.status.success());
    assert!(
        String::from_utf8_lossy(&cat.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    let ls = as_user(&u, "ls").arg(&v).output().unwrap();
    assert!(
        String::from_utf8_lossy(&ls.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    // Root still reads it.
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "{\"v\": \"1.0.0\"}\n"
    );
}

#[test]
fn a_tampered_chunk_gives_eio_and_a_tampered_manifest_hides_the_version() {
    let mut env = TestEnv::new();
    env.root_key();
    let src1 = push_model(&env, "tm", "1.0.0", 60);
    let src2 = push_model(&env, "tm", "2.0.0", 70);
    env.stop();
    // The 5000-byte file is one chunk, sealed to 5053 bytes: flip a bit of its ciphertext.
    assert_eq!(
        env.tamper("chunks", |v| v.len() == 5053, |_| 2000),
        2,
        "one small chunk per version"
    );
    env.start();
    let bad: Vec<_> = ["1.0.0", "2.0.0"]
        .iter()
        .filter(|ver| std::fs::read(env.mnt().join(format!("tm/{ver}/sub/dir/small.bin"))).is_err())
        .collect();
    assert_eq!(bad.len(), 1, "exactly one version's small.bin must fail");
    let e = std::fs::read(env.mnt().join(format!("tm/{}/sub/dir/small.bin", bad[0]))).unwrap_err();
    assert_eq!(errno(&e), libc::EIO, "{e}");
    // Other files, and the other version, read correctly.
    let good = if *bad[0] == "1.0.0" { "2.0.0" } else { "1.0.0" };
    std::fs::read(env.mnt().join(format!("tm/{good}/sub/dir/small.bin"))).unwrap();
    let bad_src = if *bad[0] == "1.0.0" { &src1 } else { &src2 };
    assert_eq!(
        sha256sum(&env.mnt().join(format!("tm/{}/model.safetensors", bad[0]))),
        sha256sum(&bad_src.join("model.safetensors")),
        "the damaged version's other files still read correctly"
    );
    assert!(
        env.log().contains("integrity failure in the mount"),
        "the failure is logged"
    );
    let counters = env.json(&["stats"])["mount"].clone();
    assert!(
        counters["integrity_failures"].as_u64().unwrap() >= 1,
        "and counted: {counters}"
    );
    assert!(counters["read_errors"].as_u64().unwrap() >= 1, "{counters}");
    assert!(
        counters["bytes_served"].as_u64().unwrap() > 48 * MIB as u64,
        "{counters}"
    );

    // Now damage one version record: that version disappears from the mount and from ls.
    env.stop();
    assert_eq!(env.tamper("versions", |_| true, |len| len / 2), 2);
    env.start();
    let shown: Vec<_> = std::fs::read_dir(env.mnt().join("tm"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        shown.len(),
        1,
        "the damaged version must not be exposed: {shown:?}"
    );
    let listed = env.json(&["ls", "tm"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let out = env.arca(&["verify", "tm"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not served"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigterm_unmounts_and_a_killed_daemon_does_not_block_a_restart() {
    let mut env = TestEnv::new();
    env.root_key();
    push_model(&env, "life", "1.0.0", 80);
    env.stop();
    assert!(!is_mounted(&env.mnt()), "SIGTERM must unmount");
    assert!(
        std::fs::read_dir(env.mnt()).unwrap().next().is_none(),
        "the mount point is empty again"
    );

    env.start();
    assert!(env.mnt().join("life/1.0.0/config.json").exists());
    env.kill();
    // A reader of the dead mount gets an error, never the directory underneath.
    let e = std::fs::metadata(env.mnt().join("life")).unwrap_err();
    assert!(
        errno(&e) == libc::ENOTCONN || e.kind() == ErrorKind::NotConnected,
        "{e}"
    );
    env.start();
    assert_eq!(
        std::fs::read_to_string(env.mnt().join("life/1.0.0/config.json")).unwrap(),
        "{\"v\": \"1.0.0\"}\n"
    );
    assert!(env.log().contains("cleared a stale FUSE mount"));
}
