//! `arca manifest` and `arca verify-dir`: the design sketch's ModelIntegrityVerifier, made real.
//! The exported manifest carries everything needed to check a copy of a version on any host
//! without a daemon: per-file sizes and digests, the Merkle root, the metadata and its digest, and
//! the publisher's signature with the public key.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use arca_core::api::VersionInfo;
use arca_core::digest::FileHasher;
use arca_core::manifest::{merkle_root, FileEntry};
use arca_core::metadata::PublishedMetadata;
use arca_core::sign::{PublicKey, Signature};
use arca_core::{MerkleRoot, MetadataDigest, RelPath};

use crate::client::{enc, Client};
use crate::escape::Term;

const FORMAT: &str = "arca-manifest-v1";

/// The exported, signed integrity manifest of one version.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exported {
    pub format: String,
    pub files: Vec<FileEntry>,
    pub merkle_root: MerkleRoot,
    pub metadata: PublishedMetadata,
    pub metadata_digest: MetadataDigest,
    pub signer: String,
    pub public_key: PublicKey,
    pub signature: Signature,
}

pub async fn export(client: &Client, name: &str, version: &str) -> Result<i32> {
    let v: VersionInfo = client
        .get(&format!(
            "/v1/models/{}/versions/{}",
            enc(name),
            enc(version)
        ))
        .await?;
    let Some(signer) = v.signer else {
        anyhow::bail!(
            "{name} {version} was pushed unsigned: there is no signed manifest to export"
        );
    };
    let m = Exported {
        format: FORMAT.into(),
        files: v.files,
        merkle_root: v.merkle_root,
        metadata: v.metadata,
        metadata_digest: v.metadata_digest,
        signer: signer.user,
        public_key: signer.public_key,
        signature: signer.signature,
    };
    println!("{}", crate::escape::json(&m, true)?);
    Ok(0)
}

/// Checks a directory against an exported manifest; prints every problem, by name.
pub fn verify_dir(dir: &Path, manifest: &Path, trust: Option<&Path>, json: bool) -> Result<i32> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let m: Exported = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an arca manifest", manifest.display()))?;
    if m.format != FORMAT {
        bail!(
            "{}: unknown manifest format {:?}",
            manifest.display(),
            m.format
        );
    }
    let mut problems: Vec<String> = Vec::new();

    // The manifest's own statements: root over its entries, metadata digest, signature, signer.
    let mut entries = m.files.clone();
    match merkle_root(&mut entries) {
        Ok(r) if r == m.merkle_root => {}
        Ok(_) => problems.push("manifest: the file entries do not match the Merkle root".into()),
        Err(e) => problems.push(format!("manifest: {e}")),
    }
    match m.metadata.digest() {
        Ok(d) if d == m.metadata_digest => {}
        _ => problems.push("manifest: the metadata does not match its digest".into()),
    }
    if m.public_key
        .verify_version(&m.merkle_root, &m.metadata_digest, &m.signature)
        .is_err()
    {
        problems.push("manifest: the signature does not verify".into());
    }
    if let Some(t) = trust {
        let trusted: PublicKey = std::fs::read_to_string(t)
            .with_context(|| format!("reading {}", t.display()))?
            .parse()
            .with_context(|| format!("{}", t.display()))?;
        if trusted != m.public_key {
            problems.push(format!(
                "manifest: signed by key {}, not by the trusted key {}",
                m.public_key.fingerprint(),
                trusted.fingerprint()
            ));
        }
    }

    // The directory against the entries.
    let found: BTreeMap<RelPath, crate::push::Source> = crate::push::collect(dir)?
        .into_iter()
        .map(|s| (s.rel.clone(), s))
        .collect();
    let expected: BTreeMap<&RelPath, &FileEntry> = m.files.iter().map(|e| (&e.path, e)).collect();
    for (rel, e) in &expected {
        let Some(src) = found.get(*rel) else {
            problems.push(format!("{rel}: missing"));
            continue;
        };
        if !mode_matches(src.mode, e.mode) {
            problems.push(format!(
                "{rel}: mode 0{:o} differs from the manifest's 0{:o}",
                src.mode, e.mode
            ));
        }
        let d =
            hash_file(&src.open()?).with_context(|| format!("reading {}", src.disk.display()))?;
        if d.size != e.size {
            problems.push(format!("{rel}: size {} differs from {}", d.size, e.size));
        } else if d.sha256 != e.sha256 || d.blake3 != e.blake3 {
            problems.push(format!(
                "{rel}: content differs (SHA-256 {} expected {})",
                d.sha256, e.sha256
            ));
        }
    }
    for rel in found.keys().filter(|r| !expected.contains_key(r)) {
        problems.push(format!("{rel}: unexpected file"));
    }

    let ok = problems.is_empty();
    if json {
        println!(
            "{}",
            crate::escape::json(
                &serde_json::json!({"ok": ok, "files": m.files.len(), "problems": problems}),
                false
            )?
        );
    } else {
        for p in &problems {
            eprintln!("FAILED {}", Term(p));
        }
        let name = format!("{} {}", m.metadata.name, m.metadata.version);
        if ok {
            println!(
                "OK: {} matches {name}: {} files, root {}, signed by {} ({})",
                Term(dir.display()),
                m.files.len(),
                m.merkle_root,
                Term(&m.signer),
                m.public_key.fingerprint()
            );
        } else {
            println!(
                "FAILED: {} does not match {name}: {} problems",
                Term(dir.display()),
                problems.len()
            );
        }
    }
    Ok(if ok { 0 } else { 1 })
}

/// Whether a copy's mode is the manifest's, up to what a umask takes away: the copy may grant
/// nothing the manifest does not (no setuid, setgid or sticky bit, no extra write or execute) and
/// must keep the owner's execute bit exactly. A `get` under umask 077 matches; a copy made
/// world-writable or setuid does not.
fn mode_matches(disk: u32, manifest: u32) -> bool {
    disk & !manifest == 0 && disk & 0o100 == manifest & 0o100
}

fn hash_file(mut f: &std::fs::File) -> Result<arca_core::digest::FileDigests> {
    let mut h = FileHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::mode_matches;

    #[test]
    fn a_copy_may_lose_bits_to_a_umask_but_gain_none() {
        for (disk, manifest) in [
            (0o644, 0o644),
            (0o755, 0o755),
            (0o600, 0o644),
            (0o700, 0o755),
            (0o750, 0o755),
        ] {
            assert!(mode_matches(disk, manifest), "{disk:o} vs {manifest:o}");
        }
        for (disk, manifest) in [
            (0o4755, 0o755),
            (0o777, 0o755),
            (0o666, 0o644),
            (0o755, 0o644),
            (0o644, 0o755),
            (0o1644, 0o644),
        ] {
            assert!(!mode_matches(disk, manifest), "{disk:o} vs {manifest:o}");
        }
    }
}
