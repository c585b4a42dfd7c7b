//! `arca`: the control CLI. It talks to arcad over its Unix socket; the daemon learns who is
//! calling from the socket itself. Errors are one line on stderr and a non-zero exit.

mod access;
mod audit;
mod client;
mod deps;
mod escape;
mod get;
mod keys;
mod lifecycle;
mod manual;
mod offline;
mod ops;
mod progress;
mod push;
mod show;
mod socket;

use std::path::PathBuf;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

/// The control CLI of arca, a secure model store.
///
/// arca talks to arcad over its Unix socket; arcad learns who is calling from the socket itself
/// and allows what the caller's roles grant. Each command has its own page: arca-push(1),
/// arca-get(1), arca-verify(1) and so on; the daemon's is arcad(8).
#[derive(Parser, Debug)]
#[command(name = "arca", version)]
pub struct Cli {
    /// arcad's socket [default: the one /etc/arca/arcad.toml names if that file exists, else
    /// /run/arca/arcad.sock if it exists, else /var/tmp/arca-dev/arcad.sock]
    #[arg(long, global = true, env = "ARCA_SOCKET")]
    socket: Option<PathBuf>,
    /// The uid (or user name) arcad runs as when it is not root. A socket served by anyone but
    /// root, you or this user is refused.
    #[arg(long, global = true, env = "ARCA_DAEMON_UID")]
    daemon_uid: Option<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bar on push, get and verify (results and errors are still printed). There is
    /// none anyway when stderr is not a terminal or with --json.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Push a directory (every regular file under it) or one file as a new, signed version.
    Push(push::PushArgs),
    /// List models, or the versions of one model.
    Ls { name: Option<String> },
    /// Show one version: metadata, status, root, signer, sizes, files.
    Show { name: String, version: String },
    /// Write a version's files into a directory, each verified before it is renamed into place.
    Get {
        name: String,
        version: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Re-read every chunk of a model (or one version) and check AEAD, ids, digests, root and signature.
    Verify {
        name: String,
        version: Option<String>,
    },
    /// Sign an approval for putting a version in production under a ticket.
    Approve {
        name: String,
        version: String,
        #[arg(long)]
        ticket: String,
        #[arg(long, default_value = "")]
        comment: String,
        /// Signing key [default: $ARCA_KEY, else ~/.config/arca/signing.key]
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Move a version along the lifecycle: development, staging, production, deprecated, archived.
    Promote {
        name: String,
        version: String,
        #[arg(long)]
        to: arca_core::api::Status,
        /// The change ticket (required for production: the approvals must name it).
        #[arg(long)]
        ticket: Option<String>,
    },
    /// Put back in production a version that was in production before.
    Rollback {
        name: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        reason: String,
    },
    /// A model's status changes (production history) and each version's lineage.
    History { name: String },
    /// Export a version's signed integrity manifest as JSON (for `verify-dir` on any host).
    Manifest { name: String, version: String },
    /// Check a copy of a model directory against an exported manifest, without a daemon.
    VerifyDir {
        dir: PathBuf,
        #[arg(long)]
        manifest: PathBuf,
        /// Require the manifest to be signed by this public key.
        #[arg(long)]
        trust: Option<PathBuf>,
    },
    /// Python dependencies of a version.
    #[command(subcommand)]
    Deps(DepsCmd),
    /// Signing keys.
    #[command(subcommand)]
    Key(keys::KeyCmd),
    /// Delete a version that is not in production (needs delete permission).
    Delete { name: String, version: String },
    /// Role assignments: who may do what, per model or for every model.
    #[command(subcommand)]
    Role(access::RoleCmd),
    /// Per-model policies: approvals, environments, retention, version limit, signing.
    #[command(subcommand)]
    Policy(access::PolicyCmd),
    /// The tamper-evident audit trail: list, verify, compliance reports.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Remove archived versions past their retention and chunks nothing uses any more.
    Gc {
        /// Report what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The daemon's condition: catalog, store and dedup, mount and cache, key rotation, audit.
    Status,
    /// A fleet host's view of the fleet.
    #[command(subcommand)]
    Fleet(ops::FleetCmd),
    /// Who the daemon says you are.
    Whoami,
    /// Store totals: models, versions, chunks, stored and logical bytes.
    Stats,
    /// Print the shell completion script for arca (e.g. `arca completions bash >
    /// /usr/share/bash-completion/completions/arca`).
    Completions { shell: clap_complete::Shell },
    /// Write arca's man pages (arca.1 and one per subcommand) into a directory.
    #[command(hide = true)]
    Man { dir: PathBuf },
}

#[derive(Subcommand, Debug)]
enum DepsCmd {
    /// Compare a version's pinned dependencies with a venv or site-packages directory.
    Verify {
        name: String,
        version: String,
        #[arg(long)]
        python: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("arca: cannot start: {e}");
            std::process::exit(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // Errors quote paths, names and the daemon's messages: escaped like any output.
            eprintln!("arca: {}", escape::Term(format_args!("{e:#}")));
            std::process::exit(1);
        }
    }
}

/// Runs one command; the returned code is the process's exit status.
async fn run(cli: Cli) -> Result<i32> {
    let json = cli.json;
    let bars = progress::Show::new(cli.json, cli.quiet);
    // These need no daemon, so no socket either.
    match &cli.cmd {
        Cmd::Completions { shell } => {
            manual::completions(Cli::command(), *shell);
            return Ok(0);
        }
        Cmd::Man { dir } => {
            for p in manual::man_pages(Cli::command(), dir)? {
                println!("{}", p.display());
            }
            return Ok(0);
        }
        _ => {}
    }
    if let Cmd::VerifyDir {
        dir,
        manifest,
        trust,
    } = &cli.cmd
    {
        // Needs no daemon, so no socket either.
        return offline::verify_dir(dir, manifest, trust.as_deref(), json);
    }
    let client = client::Client::new(
        socket::choose(cli.socket.as_deref())?,
        socket::TrustedPeers::new(cli.daemon_uid.as_deref())?,
    );
    match cli.cmd {
        Cmd::Push(a) => push::run(&client, a, json, bars).await,
        Cmd::Ls { name } => show::ls(&client, name.as_deref(), json).await,
        Cmd::Show { name, version } => show::show(&client, &name, &version, json).await,
        Cmd::Get { name, version, out } => {
            get::run(&client, &name, &version, &out, json, bars).await
        }
        Cmd::Verify { name, version } => {
            show::verify(&client, &name, version.as_deref(), json, bars).await
        }
        Cmd::Key(k) => keys::run(&client, k, json).await,
        Cmd::Approve {
            name,
            version,
            ticket,
            comment,
            key,
        } => lifecycle::approve(&client, &name, &version, &ticket, &comment, key, json).await,
        Cmd::Deps(DepsCmd::Verify {
            name,
            version,
            python,
        }) => deps::verify(&client, &name, &version, &python, json).await,
        Cmd::Manifest { name, version } => offline::export(&client, &name, &version).await,
        Cmd::VerifyDir { .. } | Cmd::Completions { .. } | Cmd::Man { .. } => {
            unreachable!("answered above")
        }
        Cmd::Rollback { name, to, reason } => {
            lifecycle::rollback(&client, &name, &to, &reason, json).await
        }
        Cmd::History { name } => lifecycle::history(&client, &name, json).await,
        Cmd::Promote {
            name,
            version,
            to,
            ticket,
        } => lifecycle::promote(&client, &name, &version, to, ticket, json).await,
        Cmd::Delete { name, version } => access::delete(&client, &name, &version, json).await,
        Cmd::Role(r) => access::role(&client, r, json).await,
        Cmd::Policy(p) => access::policy(&client, p, json).await,
        Cmd::Audit(a) => audit::run(&client, a, json).await,
        Cmd::Gc { dry_run } => ops::gc(&client, dry_run, json).await,
        Cmd::Status => ops::status(&client, json).await,
        Cmd::Fleet(ops::FleetCmd::Status) => ops::fleet_status(&client, json).await,
        Cmd::Fleet(ops::FleetCmd::Pin { name, version }) => {
            ops::fleet_pin(&client, &name, &version, true, json).await
        }
        Cmd::Fleet(ops::FleetCmd::Unpin { name, version }) => {
            ops::fleet_pin(&client, &name, &version, false, json).await
        }
        Cmd::Whoami => show::whoami(&client, json).await,
        Cmd::Stats => show::stats(&client, json).await,
    }
}
