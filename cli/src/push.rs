//! `arca push`: stream every file to the daemon while hashing it, compare the daemon's digests
//! with ours, then sign the Merkle root and metadata digest of what we read and commit.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arca_core::api::{CommitUpload, Committed, CreateUpload, FileStored, UploadCreated};
use arca_core::digest::FileHasher;
use arca_core::manifest::{merkle_root, FileEntry};
use arca_core::metadata::PublishedMetadata;
use arca_core::RelPath;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Method;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::{empty, enc, Client};

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

/// A file to push: where it is on disk and its path inside the version.
pub struct Source {
    pub disk: PathBuf,
    pub rel: RelPath,
    pub mode: u32,
    pub size: u64,
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
        return Ok(vec![Source {
            disk: root.to_owned(),
            rel: name.parse()?,
            mode: meta.permissions().mode() & 0o7777,
            size: meta.len(),
        }]);
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
                let rel = p
                    .strip_prefix(root)?
                    .to_str()
                    .with_context(|| format!("{} is not a UTF-8 path", p.display()))?;
                out.push(Source {
                    rel: rel.parse()?,
                    disk: p,
                    mode: m.permissions().mode() & 0o7777,
                    size: m.len(),
                });
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

pub async fn run(client: &Client, a: PushArgs, json: bool) -> Result<i32> {
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
    let result = upload_and_commit(client, &id, &files, total, &metadata, key.as_ref()).await;
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
        println!("{}", serde_json::to_string(&c)?);
    } else {
        let v = &c.version;
        let signed = match &v.signer {
            Some(s) => format!("signed by {} ({})", s.user, s.public_key.fingerprint()),
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

async fn upload_and_commit(
    client: &Client,
    id: &str,
    files: &[Source],
    total: u64,
    metadata: &PublishedMetadata,
    key: Option<&arca_core::sign::SecretKey>,
) -> Result<Committed> {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )?
        .progress_chars("=> "),
    );
    let mut entries = Vec::with_capacity(files.len());
    for f in files {
        bar.set_message(f.rel.to_string());
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
    let disk = f.disk.clone();
    let reader = tokio::task::spawn_blocking(move || -> Result<arca_core::digest::FileDigests> {
        let mut file =
            std::fs::File::open(&disk).with_context(|| format!("opening {}", disk.display()))?;
        let mut h = FileHasher::new();
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let n = file
                .read(&mut buf)
                .with_context(|| format!("reading {}", disk.display()))?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            h.update(&buf);
            bar.inc(n as u64);
            if tx.blocking_send(Ok(Frame::data(Bytes::from(buf)))).is_err() {
                bail!("arcad stopped reading {}", disk.display());
            }
        }
        Ok(h.finish())
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let body = StreamBody::new(stream).boxed();
    let path = format!(
        "/v1/uploads/{id}/files?path={}&mode={}",
        enc(f.rel.as_str()),
        f.mode
    );
    let sent = client
        .send(Method::PUT, &path, body, "application/octet-stream")
        .await;
    let local = reader.await.context("reader thread")??;
    let resp = sent?;
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
        mode: f.mode,
        sha256: local.sha256,
        blake3: local.blake3,
    })
}
