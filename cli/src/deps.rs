//! Python dependencies: pins from `--requirements FILE` at push, and `arca deps verify`, which
//! compares a version's recorded pins with what an environment actually has installed (the
//! `*.dist-info/METADATA` files of a venv or a site-packages directory).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arca_core::api::VersionInfo;

use crate::client::{enc, Client};
use crate::escape::Term;

/// PEP 503 normalisation: case-insensitive, runs of `-`, `_` and `.` are equal.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Pins (`name==version`) and `--hash=` entries of a requirements file. Anything that is not an
/// exact pin is refused: a model's dependencies are recorded to be reproduced.
pub struct Requirements {
    pub pins: BTreeMap<String, String>,
    pub hashes: BTreeMap<String, Vec<String>>,
}

pub fn parse_requirements(path: &Path) -> Result<Requirements> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // Backslash-newline continues a line (pip's format, used for long --hash lists).
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    let mut r = Requirements {
        pins: BTreeMap::new(),
        hashes: BTreeMap::new(),
    };
    for (i, raw) in joined.lines().enumerate() {
        let line = raw.split(" #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let spec_token = parts.next().unwrap_or("");
        let spec = spec_token.split(';').next().unwrap_or(spec_token); // environment markers are not evaluated
        let Some((name, version)) = spec.split_once("==") else {
            bail!(
                "{}:{}: {spec:?} is not an exact pin (NAME==VERSION)",
                path.display(),
                i + 1
            );
        };
        let name = name.split('[').next().unwrap_or(name).trim();
        if name.is_empty() || version.trim().is_empty() {
            bail!("{}:{}: {spec:?} is not an exact pin", path.display(), i + 1);
        }
        r.pins.insert(name.to_owned(), version.trim().to_owned());
        // After a `;` come environment markers (not evaluated); `--hash=` may follow them.
        let mut in_marker = spec_token.contains(';');
        for p in parts {
            if let Some(h) = p.strip_prefix("--hash=") {
                r.hashes
                    .entry(name.to_owned())
                    .or_default()
                    .push(h.to_owned());
            } else if in_marker || p.starts_with(';') {
                in_marker = true;
            } else {
                bail!("{}:{}: unsupported option {p:?}", path.display(), i + 1);
            }
        }
    }
    Ok(r)
}

/// The installed distributions of a venv or site-packages directory: normalised name → version.
fn installed(python: &Path) -> Result<BTreeMap<String, (String, String)>> {
    let mut dirs: Vec<PathBuf> = vec![python.to_owned()];
    // A venv: PATH/lib/pythonX.Y/site-packages.
    if let Ok(rd) = std::fs::read_dir(python.join("lib")) {
        for e in rd.flatten() {
            dirs.push(e.path().join("site-packages"));
        }
    }
    let mut out = BTreeMap::new();
    let mut seen_any_dir = false;
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        seen_any_dir = true;
        for e in rd.flatten() {
            let p = e.path();
            if !p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".dist-info"))
            {
                continue;
            }
            let Ok(meta) = std::fs::read_to_string(p.join("METADATA")) else {
                continue;
            };
            let field = |k: &str| {
                meta.lines()
                    .take_while(|l| !l.is_empty())
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_owned())
            };
            if let (Some(name), Some(version)) = (field("Name:"), field("Version:")) {
                out.insert(normalize(&name), (name, version));
            }
        }
    }
    if !seen_any_dir {
        bail!(
            "{} is neither a venv nor a site-packages directory",
            python.display()
        );
    }
    Ok(out)
}

pub async fn verify(
    client: &Client,
    name: &str,
    version: &str,
    python: &Path,
    json: bool,
) -> Result<i32> {
    let v: VersionInfo = client
        .get(&format!(
            "/v1/models/{}/versions/{}",
            enc(name),
            enc(version)
        ))
        .await?;
    let have = installed(python)?;
    let mut problems = Vec::new();
    for (pkg, want) in &v.metadata.dependencies {
        match have.get(&normalize(pkg)) {
            None => problems.push(format!("{pkg}: missing (needs {want})")),
            Some((_, got)) if got != want => {
                problems.push(format!("{pkg}: {got} installed, {want} required"))
            }
            Some(_) => {}
        }
    }
    let ok = problems.is_empty();
    if json {
        println!(
            "{}",
            crate::escape::json(
                &serde_json::json!({"ok": ok, "checked": v.metadata.dependencies.len(), "problems": problems}),
                false
            )?
        );
    } else {
        for p in &problems {
            eprintln!("FAILED {}", Term(p));
        }
        let verdict = if ok { "OK" } else { "FAILED" };
        println!(
            "{verdict}: {} of {} dependencies of {name} {version} match {}",
            v.metadata.dependencies.len() - problems.len(),
            v.metadata.dependencies.len(),
            Term(python.display())
        );
    }
    Ok(if ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_like_pip() {
        assert_eq!(normalize("Foo_Bar.baz"), "foo-bar-baz");
        assert_eq!(normalize("torch"), "torch");
        assert_eq!(
            normalize("Typing-Extensions"),
            normalize("typing_extensions")
        );
    }

    #[test]
    fn requirements_pins_and_hashes() {
        let dir = std::env::temp_dir().join(format!("arca-req-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("requirements.txt");
        std::fs::write(&p, "# comment\ntorch==2.3.1 \\\n    --hash=sha256:aa --hash=sha256:bb\nnumpy[extra]==1.26.4 ; python_version >= \"3.9\"\n\n").unwrap();
        let r = parse_requirements(&p).unwrap();
        assert_eq!(r.pins.get("torch").map(String::as_str), Some("2.3.1"));
        assert_eq!(r.pins.get("numpy").map(String::as_str), Some("1.26.4"));
        assert_eq!(r.hashes["torch"], ["sha256:aa", "sha256:bb"]);
        std::fs::write(&p, "torch>=2\n").unwrap();
        assert!(parse_requirements(&p).is_err(), "only exact pins");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
