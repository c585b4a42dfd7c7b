//! `arca key`: the caller's signing key on disk, and the daemon's list of trusted keys.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arca_core::api::{TrustKey, TrustedKey, WhoAmI};
use arca_core::sign::{PublicKey, SecretKey};
use clap::Subcommand;
use hyper::Method;

use crate::client::Client;
use crate::escape::Term;

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create your signing key (trusted at once if you are an admin).
    Gen {
        /// Where to write the secret key [default: $ARCA_KEY, else ~/.config/arca/signing.key]
        #[arg(long)]
        key: Option<PathBuf>,
        /// Replace an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Trust a public key for a user (admin only).
    Trust { user: String, pubkey_file: PathBuf },
    /// Stop trusting a user's key (admin only): versions it signed then fail `verify`, and its
    /// approvals no longer count. KEY is a fingerprint (from `arca key ls`) or a public key file.
    Untrust { user: String, key: String },
    /// List trusted keys.
    Ls,
    /// Replace the daemon's key-encryption key and rewrap its keys (admin on every model).
    /// This does not re-encrypt data: after a KEK leak, rotate the data key too (--with-dek).
    RotateKek {
        /// Then also start a data-key rotation (as `arca key rotate-dek`), so that the old KEK
        /// and an old copy of the state directory or a backup no longer decrypt the data.
        #[arg(long)]
        with_dek: bool,
    },
    /// Start re-encrypting every chunk and record under a new data key, in the background
    /// (admin on every model); progress in `arca status`.
    RotateDek,
}

/// The secret key's default place: $ARCA_KEY, else $XDG_CONFIG_HOME/arca or ~/.config/arca.
pub fn default_key_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ARCA_KEY") {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x),
        _ => PathBuf::from(std::env::var_os("HOME").context("HOME is not set; pass --key")?)
            .join(".config"),
    };
    Ok(base.join("arca").join("signing.key"))
}

pub fn load_secret(path: &Path) -> Result<SecretKey> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).with_context(|| {
        format!(
            "no signing key at {} (create one with `arca key gen`)",
            path.display()
        )
    })?);
    SecretKey::from_file_text(&text).with_context(|| format!("{}", path.display()))
}

pub async fn run(client: &Client, cmd: KeyCmd, json: bool) -> Result<i32> {
    match cmd {
        KeyCmd::RotateKek { with_dek } => {
            let r: arca_core::api::KekRotated = client
                .json(hyper::Method::POST, "/v1/keys/rotate-kek", None::<&()>)
                .await?;
            let dek: Option<arca_core::api::RotationProgress> = if with_dek {
                Some(
                    client
                        .json(hyper::Method::POST, "/v1/keys/rotate-dek", None::<&()>)
                        .await
                        .context("the key-encryption key was rotated, but starting the data-key rotation failed (run `arca key rotate-dek`)")?,
                )
            } else {
                None
            };
            if json {
                match &dek {
                    Some(d) => println!(
                        "{}",
                        crate::escape::json(
                            &serde_json::json!({"kek_rotated": r, "dek_rotation": d}),
                            false
                        )?
                    ),
                    None => println!("{}", crate::escape::json(&r, false)?),
                }
            } else {
                println!(
                    "key-encryption key rotated: {} keys rewrapped; the new key is {}",
                    r.rewrapped_keys, r.key_file
                );
                if let Some(d) = &dek {
                    println!(
                        "data-key rotation to key {}: running in the background (see `arca status`)",
                        d.target_key
                    );
                }
            }
            if !r.old_wraps_purged {
                eprintln!("warning: the keys wrapped under the old KEK could not be compacted out of the state directory's files (see the daemon's log)");
            }
            if dek.is_none() {
                eprintln!("hint: a KEK rotation re-encrypts no data. If the old KEK may have leaked, anyone holding it and an old copy of the state directory or a backup can still unwrap the data keys: rotate them too with `arca key rotate-dek` (or next time `arca key rotate-kek --with-dek`).");
            }
            Ok(0)
        }
        KeyCmd::RotateDek => {
            let r: arca_core::api::RotationProgress = client
                .json(hyper::Method::POST, "/v1/keys/rotate-dek", None::<&()>)
                .await?;
            if json {
                println!("{}", crate::escape::json(&r, false)?);
            } else {
                println!(
                    "data-key rotation to key {}: {} of about {} chunks re-sealed so far, running in the background (see `arca status`)",
                    r.target_key, r.chunks_done, r.chunks_estimate
                );
            }
            Ok(0)
        }
        KeyCmd::Gen { key, force } => {
            let path = match key {
                Some(p) => p,
                None => default_key_path()?,
            };
            if path.exists() && !force {
                bail!(
                    "{} already exists (use --force to replace it)",
                    path.display()
                );
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let sk = SecretKey::generate().context("random source")?;
            let tmp = path.with_extension("tmp");
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            f.write_all(sk.to_file_text().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            let pub_path = path.with_extension("pub");
            std::fs::write(&pub_path, format!("{}\n", sk.public()))?;
            let me: WhoAmI = client.get("/v1/whoami").await?;
            let trusted = if me.admin {
                let t: TrustedKey = client
                    .json(
                        Method::POST,
                        "/v1/keys",
                        Some(&TrustKey {
                            user: me.user.clone(),
                            public_key: sk.public(),
                        }),
                    )
                    .await?;
                Some(t)
            } else {
                None
            };
            if json {
                println!(
                    "{}",
                    crate::escape::json(
                        &serde_json::json!({"key": path, "public_key_file": pub_path, "public_key": sk.public(), "trusted": trusted}),
                        false
                    )?
                );
            } else {
                println!("secret key: {}", Term(path.display()));
                println!(
                    "public key: {} ({})",
                    Term(pub_path.display()),
                    sk.public().fingerprint()
                );
                match trusted {
                    Some(_) => println!("trusted for {} (you are an admin)", Term(&me.user)),
                    None => println!(
                        "not trusted yet: ask an admin to run `arca key trust {} {}`",
                        Term(&me.user),
                        Term(pub_path.display())
                    ),
                }
            }
            Ok(0)
        }
        KeyCmd::Untrust { user, key } => {
            let fingerprint = match std::fs::read_to_string(&key) {
                Ok(text) => text
                    .parse::<PublicKey>()
                    .with_context(|| key.clone())?
                    .fingerprint(),
                Err(_) => key,
            };
            let t: TrustedKey = client
                .json(
                    Method::POST,
                    "/v1/keys/untrust",
                    Some(&arca_core::api::UntrustKey { user, fingerprint }),
                )
                .await?;
            if json {
                println!("{}", crate::escape::json(&t, false)?);
            } else {
                println!(
                    "no longer trusting key {} for {} (uid {})",
                    Term(&t.fingerprint),
                    Term(&t.user),
                    t.uid
                );
            }
            Ok(0)
        }
        KeyCmd::Trust { user, pubkey_file } => {
            let text = std::fs::read_to_string(&pubkey_file)
                .with_context(|| format!("reading {}", pubkey_file.display()))?;
            let public_key: PublicKey = text
                .parse()
                .with_context(|| format!("{}", pubkey_file.display()))?;
            let t: TrustedKey = client
                .json(
                    Method::POST,
                    "/v1/keys",
                    Some(&TrustKey { user, public_key }),
                )
                .await?;
            if json {
                println!("{}", crate::escape::json(&t, false)?);
            } else {
                println!(
                    "trusted key {} for {} (uid {})",
                    t.fingerprint,
                    Term(&t.user),
                    t.uid
                );
            }
            Ok(0)
        }
        KeyCmd::Ls => {
            let keys: Vec<TrustedKey> = client.get("/v1/keys").await?;
            if json {
                println!("{}", crate::escape::json(&keys, false)?);
            } else {
                let mut t =
                    crate::show::table(&["USER", "UID", "FINGERPRINT", "ADDED BY", "ADDED"]);
                for k in keys {
                    t.row([
                        k.user,
                        k.uid.to_string(),
                        k.fingerprint,
                        k.added_by,
                        crate::show::time(k.added_at),
                    ]);
                }
                println!("{t}");
            }
            Ok(0)
        }
    }
}
