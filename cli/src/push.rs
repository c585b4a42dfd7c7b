//! `arca push`: stream every file to the daemon while hashing it, compare the daemon's digests
//! with ours, then sign the Merkle root and metadata digest of what we read and commit.
//!
//! Modes are normalised to 0644 or 0755 before anything is signed (the daemon refuses others).
//! Each file is opened without following a symlink and must still be the file the scan saw
//! (device, inode, type, size): a file swapped for a link to a secret between the scan and the
//! read is refused, not uploaded.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arca_core::api::{CommitUpload, Committed, CreateUpload, FileStored, UploadCreated};
use arca_core::digest::FileHasher;
use arca_core::manifest::{merkle_root, normalise_mode, FileEntry};
use arca_core::metadata::PublishedMetadata;
use arca_core::RelPath;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Method;
use indicatif::ProgressBar;

use crate::client::{empty, enc, Client};
use crate::escape::Term;
use crate::progress::Show;

#[derive(Args, Debug)]
pub struct PushArgs {
    /// A directory (every regular file under it, relative paths kept) or one file.
    path: PathBuf,
    #[arg(long)]
    name: String,
    #[arg(long)]
    version: String,
    /// JSON file with metadata fields (model_type, framework, description, input_schema, ...).
    #[arg(long)]
    meta: Option<PathBuf>,
    /// Model type: classification, regression, nlp, computer_vision, generative, recommendation.
    #[arg(long = "type")]
    model_type: Option<String>,
    #[arg(long)]
    framework: Option<String>,
    #[arg(long)]
    description: Option<String>,
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// A dependency pin, PKG==VER (repeatable).
    #[arg(long = "dep")]
    deps: Vec<String>,
    /// A pip requirements file of exact pins (NAME==VERSION, optional --hash= entries).
    #[arg(long)]
    requirements: Option<PathBuf>,
    /// The version this one derives from.
    #[arg(long)]
    parent: Option<String>,
    /// Signing key [default: $ARCA_KEY, else ~/.config/arca/signing.key]
    #[arg(long, conflicts_with = "unsigned")]
    key: Option<PathBuf>,
    /// Push without a signature (refused unless the model's policy has signing-required no).
    #[arg(long)]
    unsigned: bool,
}

/// A file to push as the scan saw it: where it is on disk, its path inside the version, and
/// what the open before reading must find again.
pub struct Source {
    pub disk: PathBuf,
    pub rel: RelPath,
    /// The permission bits on disk (up to 0o7777), before normalisation.
    pub mode: u32,
    pub size: u64,
    dev: u64,
    ino: u64,
}

impl Source {
    fn scanned(disk: PathBuf, rel: RelPath, m: &std::fs::Metadata) -> Self {
        Self {
            disk,
            rel,
            mode: m.permissions().mode() & 0o7777,
            size: m.len(),
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    /// Opens the file the scan saw, for reading: never through a symlink (O_NOFOLLOW), never
    /// blocking on a FIFO put in its place (O_NONBLOCK), and only if the open file is still a
    /// regular file with the scanned device, inode and size. Anything else was swapped or changed
    /// after the scan, and is refused in one line.
    pub fn open(&self) -> Result<File> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&self.disk);
        let changed = |what: &str| {
            anyhow::anyhow!(
                "{}: {what} since the directory was scanned",
                self.disk.display()
            )
        };
        let file = match file {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err(changed("replaced by a symbolic link"))
            }
            Err(e) => return Err(e).with_context(|| format!("opening {}", self.disk.display())),
        };
        let m = file
            .metadata()
            .with_context(|| format!("{}", self.disk.display()))?;
        if !m.is_file() || m.dev() != self.dev || m.ino() != self.ino {
            return Err(changed("replaced by another file"));
        }
        if m.len() != self.size {
            return Err(changed("changed size"));
        }
        Ok(file)
    }
}

/// Collects regular files under `root`, refusing anything else (symlinks are not followed: a
/// link could point outside the tree).
pub fn collect(root: &Path) -> Result<Vec<Source>> {
    let meta = std::fs::symlink_metadata(root).with_context(|| format!("{}", root.display()))?;
    if meta.is_file() {
        let name = root
            .file_name()
            .and_then(|n| n.to_str())
            .context("the file name is not UTF-8")?;
        return Ok(vec![Source::scanned(root.to_owned(), name.parse()?, &meta)]);
    }
    if !meta.is_dir() {
        bail!(
            "{} is neither a regular file nor a directory",
            root.display()
        );
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for ent in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let ent = ent?;
            let p = ent.path();
            let m = std::fs::symlink_metadata(&p)?;
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                let rel: RelPath = p
                    .strip_prefix(root)?
                    .to_str()
                    .with_context(|| format!("{} is not a UTF-8 path", p.display()))?
                    .parse()?;
                out.push(Source::scanned(p, rel, &m));
            } else if m.file_type().is_symlink() {
                bail!("{} is a symbolic link; arca stores regular files only (copy the target in instead)", p.display());
            } else {
                bail!("{} is not a regular file", p.display());
            }
        }
    }
    if out.is_empty() {
        bail!("{} holds no files", root.display());
    }
    out.sort_by(|a, b| a.rel.as_str().cmp(b.rel.as_str()));
    Ok(out)
}

fn build_metadata(a: &PushArgs) -> Result<PublishedMetadata> {
    let mut v = match &a.meta {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", p.display()))?;
            if !v.is_object() {
                bail!("{} must hold a JSON object", p.display());
            }
            v
        }
        None => serde_json::json!({}),
    };
    let obj = v.as_object_mut().context("metadata is not an object")?;
    obj.insert("name".into(), a.name.clone().into());
    obj.insert("version".into(), a.version.clone().into());
    if let Some(t) = &a.model_type {
        obj.insert("model_type".into(), t.clone().into());
    }
    if let Some(f) = &a.framework {
        obj.insert("framework".into(), f.clone().into());
    }
    if let Some(d) = &a.description {
        obj.insert("description".into(), d.clone().into());
    }
    if !a.tags.is_empty() {
        obj.insert("tags".into(), a.tags.clone().into());
    }
    if let Some(p) = &a.parent {
        obj.insert("parent_version".into(), p.clone().into());
    }
    if !a.deps.is_empty() {
        let deps = obj
            .entry("dependencies")
            .or_insert_with(|| serde_json::json!({}));
        let deps = deps
            .as_object_mut()
            .context("dependencies must be a JSON object")?;
        for d in &a.deps {
            let (pkg, ver) = d
                .split_once("==")
                .with_context(|| format!("--dep {d}: expected PKG==VERSION"))?;
            deps.insert(pkg.trim().into(), ver.trim().into());
        }
    }
    let mut md: PublishedMetadata = serde_json::from_value(v).context("invalid metadata")?;
    if let Some(req) = &a.requirements {
        let r = crate::deps::parse_requirements(req)?;
        for (pkg, ver) in r.pins {
            if let Some(other) = md.dependencies.get(&pkg).filter(|v| **v != ver) {
                bail!(
                    "{pkg} is pinned to {ver} in {} but to {other} elsewhere",
                    req.display()
                );
            }
            md.dependencies.insert(pkg, ver);
        }
        md.dependency_hashes.extend(r.hashes);
    }
    md.digest()?;
    Ok(md)
}

pub async fn run(client: &Client, a: PushArgs, json: bool, show: Show) -> Result<i32> {
    let metadata = build_metadata(&a)?;
    let key = if a.unsigned {
        None
    } else {
        let key_path = match &a.key {
            Some(k) => k.clone(),
            None => crate::keys::default_key_path()?,
        };
        Some(crate::keys::load_secret(&key_path)?)
    };
    let files = collect(&a.path)?;
    if let Some(n) = mode_notice(&files) {
        eprintln!("{}", Term(n));
    }
    let total: u64 = files.iter().map(|f| f.size).sum();

    let created: UploadCreated = client
        .json(
            Method::POST,
            "/v1/uploads",
            Some(&CreateUpload {
                metadata: metadata.clone(),
            }),
        )
        .await?;
    let id = created.upload_id;
    let bar = crate::progress::bytes(total, show);
    let result = upload_and_commit(client, &id, &files, &bar, &metadata, key.as_ref()).await;
    // Also on failure, so the error is printed on a clean line.
    bar.finish_and_clear();
    if result.is_err() {
        // Best effort: the daemon also drops idle uploads on its own.
        let _ = client
            .send(
                Method::DELETE,
                &format!("/v1/uploads/{id}"),
                empty(),
                "application/json",
            )
            .await;
    }
    let c = result?;
    if json {
        println!("{}", crate::escape::json(&c, false)?);
    } else {
        let v = &c.version;
        let signed = match &v.signer {
            Some(s) => format!(
                "signed by {} ({})",
                Term(&s.user),
                s.public_key.fingerprint()
            ),
            None => "UNSIGNED".into(),
        };
        let added = match (c.new_stored_bytes, c.new_chunks) {
            (Some(b), Some(n)) => format!("; added {b} stored bytes in {n} new chunks"),
            // Withheld by the daemon: they would reveal content of models we cannot read.
            _ => String::new(),
        };
        println!(
            "pushed {} {}: {} files, {} bytes, root {}\n{signed}{added}",
            v.metadata.name,
            v.metadata.version,
            v.files.len(),
            v.total_size,
            v.merkle_root,
        );
    }
    Ok(0)
}

/// One line naming the files whose mode `normalise_mode` changes, or `None`.
fn mode_notice(files: &[Source]) -> Option<String> {
    const SHOWN: usize = 3;
    let changed: Vec<&Source> = files
        .iter()
        .filter(|f| normalise_mode(f.mode) != f.mode)
        .collect();
    if changed.is_empty() {
        return None;
    }
    let mut list: Vec<String> = changed
        .iter()
        .take(SHOWN)
        .map(|f| format!("{} (was 0{:o})", f.rel, f.mode))
        .collect();
    if changed.len() > SHOWN {
        list.push(format!("and {} more", changed.len() - SHOWN));
    }
    Some(format!(
        "normalised the mode of {} file{} to 0644/0755: {}",
        changed.len(),
        if changed.len() == 1 { "" } else { "s" },
        list.join(", ")
    ))
}

async fn upload_and_commit(
    client: &Client,
    id: &str,
    files: &[Source],
    bar: &ProgressBar,
    metadata: &PublishedMetadata,
    key: Option<&arca_core::sign::SecretKey>,
) -> Result<Committed> {
    let mut entries = Vec::with_capacity(files.len());
    for f in files {
        bar.set_message(Term(&f.rel).to_string());
        let local = send_file(client, id, f, bar.clone()).await?;
        entries.push(local);
    }
    bar.finish_and_clear();
    let root = merkle_root(&mut entries)?;
    let md = metadata.digest()?;
    let req = CommitUpload {
        merkle_root: root,
        metadata_digest: md,
        signature: key.map(|k| k.sign_version(&root, &md)),
        public_key: key.map(|k| k.public()),
    };
    client
        .json(
            Method::POST,
            &format!("/v1/uploads/{id}/commit"),
            Some(&req),
        )
        .await
}

/// Streams one file, hashing what it reads, and checks the daemon computed the same digests.
async fn send_file(client: &Client, id: &str, f: &Source, bar: ProgressBar) -> Result<FileEntry> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let reader = {
        let file = f
            .open()
            .context("nothing was pushed (push again once the directory is stable)")?;
        let disk = f.disk.clone();
        tokio::task::spawn_blocking(move || -> Result<arca_core::digest::FileDigests> {
            read_into(file, &disk, &tx, &bar)
        })
    };
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let body = StreamBody::new(stream).boxed();
    let mode = normalise_mode(f.mode);
    let path = format!(
        "/v1/uploads/{id}/files?path={}&mode={mode}",
        enc(f.rel.as_str()),
    );
    let sent = client
        .send(Method::PUT, &path, body, "application/octet-stream")
        .await;
    let local = reader.await.context("reader thread")??;
    let resp = sent?;
    if local.size != f.size {
        bail!(
            "{}: {} bytes were read where the scan saw {}: the file changed during the push",
            f.rel,
            local.size,
            f.size
        );
    }
    let bytes = resp.into_body().collect().await?.to_bytes();
    let stored: FileStored =
        serde_json::from_slice(&bytes).context("arcad's answer does not parse")?;
    let e = stored.entry;
    if e.size != local.size || e.sha256 != local.sha256 || e.blake3 != local.blake3 {
        bail!("{}: the daemon received different bytes than were read (file changed during the push?)", f.rel);
    }
    Ok(FileEntry {
        path: f.rel.clone(),
        size: local.size,
        mode,
        sha256: local.sha256,
        blake3: local.blake3,
    })
}

/// Reads an opened file to its end, hashing it and handing each buffer to the upload.
fn read_into(
    mut file: File,
    disk: &Path,
    tx: &tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
    bar: &ProgressBar,
) -> Result<arca_core::digest::FileDigests> {
    let mut h = FileHasher::new();
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", disk.display()))?;
        if n == 0 {
            return Ok(h.finish());
        }
        buf.truncate(n);
        h.update(&buf);
        bar.inc(n as u64);
        if tx.blocking_send(Ok(Frame::data(Bytes::from(buf)))).is_err() {
            bail!("arcad stopped reading {}", disk.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scan_one(dir: &Path) -> Source {
        let mut v = collect(dir).unwrap();
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    #[test]
    fn open_finds_the_scanned_file_or_refuses() {
        let d = tempfile::tempdir().unwrap();
        let secret = d.path().join("secret");
        std::fs::write(&secret, b"the secret").unwrap();
        let tree = d.path().join("model");
        std::fs::create_dir(&tree).unwrap();
        let f = tree.join("weights.bin");
        std::fs::write(&f, b"weights!!!").unwrap();

        let s = scan_one(&tree);
        let mut text = String::new();
        s.open().unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "weights!!!");

        // Swapped for a symlink to a secret (same size, so only the link and inode tell).
        std::fs::remove_file(&f).unwrap();
        symlink(&secret, &f).unwrap();
        let e = s.open().unwrap_err().to_string();
        assert!(e.contains("replaced by a symbolic link"), "{e}");
        assert!(!e.contains('\n'));

        // Swapped for another file, hard-linked or renamed in: another inode.
        std::fs::remove_file(&f).unwrap();
        std::fs::hard_link(&secret, &f).unwrap();
        let e = s.open().unwrap_err().to_string();
        assert!(e.contains("replaced by another file"), "{e}");

        // A parent directory swapped for a symlink to one holding a same-named file.
        let s = scan_one(&tree);
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::copy(&f, elsewhere.join("weights.bin")).unwrap();
        std::fs::rename(&tree, d.path().join("moved")).unwrap();
        symlink(&elsewhere, &tree).unwrap();
        let e = s.open().unwrap_err().to_string();
        assert!(e.contains("replaced by another file"), "{e}");
        std::fs::remove_file(&tree).unwrap();
        std::fs::rename(d.path().join("moved"), &tree).unwrap();

        // A FIFO in its place does not block the open.
        std::fs::remove_file(&f).unwrap();
        nix::unistd::mkfifo(&f, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = s.open().unwrap_err().to_string();
        assert!(e.contains("replaced by another file"), "{e}");

        // The same file, grown.
        std::fs::remove_file(&f).unwrap();
        std::fs::write(&f, b"weights").unwrap();
        let s = scan_one(&tree);
        std::fs::write(&f, b"weights and more").unwrap();
        let e = s.open().unwrap_err().to_string();
        assert!(e.contains("changed size"), "{e}");
    }

    #[test]
    fn modes_are_normalised_and_said_in_one_line() {
        let d = tempfile::tempdir().unwrap();
        let modes = [
            ("a", 0o644),
            ("bin/tool", 0o4755),
            ("c", 0o777),
            ("d", 0o600),
            ("e", 0o755),
            ("f", 0o2775),
        ];
        for (name, mode) in modes {
            let p = d.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, name).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let files = collect(d.path()).unwrap();
        let n = mode_notice(&files).unwrap();
        assert_eq!(
            n,
            "normalised the mode of 4 files to 0644/0755: bin/tool (was 04755), c (was 0777), d (was 0600), and 1 more"
        );
        assert!(mode_notice(&files[..1]).is_none());
    }
}
