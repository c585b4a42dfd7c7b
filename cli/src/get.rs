//! `arca get`: fetch every file of a version into a directory. Each file is written to a hidden
//! temporary name beside its destination, checked against the manifest's size, SHA-256 and
//! BLAKE3, synced, and only then renamed into place: a failed or corrupt transfer leaves no
//! file under the destination name.
//!
//! A file is created with the manifest's mode masked to 0o755 and then by the process umask, as
//! `open(2)` does: never setuid, setgid, sticky or group/world-writable, whatever an older
//! record says, so a `get` by root cannot plant a privilege.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use arca_core::api::VersionInfo;
use arca_core::digest::FileHasher;
use arca_core::manifest::FileEntry;
use http_body_util::BodyExt;
use hyper::Method;
use indicatif::ProgressBar;

use crate::client::{empty, enc, Client};
use crate::escape::Term;
use crate::progress::Show;

pub async fn run(
    client: &Client,
    name: &str,
    version: &str,
    out: &Path,
    json: bool,
    show: Show,
) -> Result<i32> {
    let info: VersionInfo = client
        .get(&format!(
            "/v1/models/{}/versions/{}",
            enc(name),
            enc(version)
        ))
        .await?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let bar = crate::progress::bytes(info.total_size, show);
    let mut fetched = Ok(());
    for f in &info.files {
        bar.set_message(Term(&f.path).to_string());
        fetched = fetch(client, name, version, f, out, &bar).await;
        if fetched.is_err() {
            break;
        }
    }
    // Cleared before any message, so an error is printed on a clean line.
    bar.finish_and_clear();
    fetched?;
    if json {
        println!(
            "{}",
            crate::escape::json(
                &serde_json::json!({"name": name, "version": version, "out": out, "files": info.files.len(), "bytes": info.total_size}),
                false
            )?
        );
    } else {
        println!(
            "wrote {} files ({} bytes) of {name} {version} to {}, all verified",
            info.files.len(),
            info.total_size,
            Term(out.display())
        );
    }
    Ok(0)
}

async fn fetch(
    client: &Client,
    name: &str,
    version: &str,
    f: &FileEntry,
    out: &Path,
    bar: &ProgressBar,
) -> Result<()> {
    // RelPath has no '..', no absolute form and no empty component, so this stays under `out`.
    let dest = out.join(f.path.as_str());
    let dir = dest.parent().context("destination has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file_name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .context("bad file name")?;
    let tmp = dir.join(format!(".{file_name}.arca-partial-{}", std::process::id()));
    let result = fetch_into(client, name, version, f, &tmp, bar).await;
    match result {
        Ok(()) => {
            std::fs::rename(&tmp, &dest)
                .with_context(|| format!("renaming into {}", dest.display()))?;
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

async fn fetch_into(
    client: &Client,
    name: &str,
    version: &str,
    f: &FileEntry,
    tmp: &Path,
    bar: &ProgressBar,
) -> Result<()> {
    let url = format!(
        "/v1/models/{}/versions/{}/file?path={}",
        enc(name),
        enc(version),
        enc(f.path.as_str())
    );
    let resp = client
        .send(Method::GET, &url, empty(), "application/json")
        .await?;
    let mut body = resp.into_body();
    // A stale temporary name (or a link put there) is removed; create_new then refuses whatever
    // appears in its place instead of writing through it.
    let _ = std::fs::remove_file(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(f.mode & 0o755)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut h = FileHasher::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.with_context(|| {
            format!(
                "{}: transfer failed (the daemon stops a file whose data fails verification)",
                f.path
            )
        })?;
        if let Ok(data) = frame.into_data() {
            h.update(&data);
            file.write_all(&data)
                .with_context(|| format!("writing {}", tmp.display()))?;
            bar.inc(data.len() as u64);
        }
    }
    let d = h.finish();
    if d.size != f.size || d.sha256 != f.sha256 || d.blake3 != f.blake3 {
        bail!("{}: received {} of {} bytes, or the content does not match the signed digests; nothing written", f.path, d.size, f.size);
    }
    file.sync_all()?;
    Ok(())
}
