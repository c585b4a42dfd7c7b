//! `arcad`: opens the store, serves the control API on a Unix socket, and shuts down cleanly on
//! SIGTERM or SIGINT.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arca_fsmount::MountOptions;
use arcad::auth::Admins;
use arcad::config::Config;
use arcad::keys::{ensure_private_dir, Kek};
use arcad::mount::Mount;
use arcad::registry::{Registry, RegistryOptions};
use arcad::server::{router, Peer};
use arcad::store::Store;
use clap::Parser;
use tokio::net::UnixListener;

/// arcad: the arca model store daemon.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Directory holding the database (created if missing).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Unix socket for the control API.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Key-encryption key file (mode 0600, owned by the daemon's user).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Where to mount the read-only FUSE view of the store.
    #[arg(long, conflicts_with = "no_mount")]
    mount: Option<PathBuf>,
    /// Run without the FUSE mount.
    #[arg(long)]
    no_mount: bool,
    /// Size of the mount's cache of verified plaintext, in MiB.
    #[arg(long)]
    cache_mib: Option<u64>,
    /// Serve only models whose policy allows this environment (e.g. `prod`); others are
    /// hidden from the mount and refused to `get`.
    #[arg(long)]
    environment: Option<String>,
    /// A bootstrap admin besides root and the daemon's own user (repeatable).
    #[arg(long = "admin")]
    admins: Vec<String>,
    /// TOML configuration file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut cfg = Config::defaults();
    if let Some(p) = &args.config {
        cfg.apply_file(p)?;
    }
    if let Some(v) = args.state_dir {
        cfg.state_dir = v;
    }
    if let Some(v) = args.socket {
        cfg.socket = v;
    }
    if let Some(v) = args.key_file {
        cfg.key_file = v;
    }
    if let Some(v) = args.mount {
        cfg.mount = Some(v);
    }
    if args.no_mount {
        cfg.mount = None;
    }
    if let Some(v) = args.cache_mib {
        cfg.cache_mib = v;
    }
    if let Some(v) = args.environment {
        cfg.environment = Some(v);
    }
    if !args.admins.is_empty() {
        cfg.admins = args.admins;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| cfg.log.clone().into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let kek = load_or_create_kek(&cfg)?;
    let store = Store::open(&cfg.state_dir, &kek)
        .with_context(|| format!("opening the store in {}", cfg.state_dir.display()))?;
    drop(kek);
    let admins = Admins::new(&cfg.admins).map_err(anyhow::Error::msg)?;
    let opts = RegistryOptions {
        admins,
        environment: cfg.environment.clone(),
    };
    let registry = Arc::new(Registry::open(store, opts).context("loading the catalog")?);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(cfg, registry))
}

fn load_or_create_kek(cfg: &Config) -> Result<Kek> {
    if cfg.key_file.exists() || !cfg.key_file_is_default() {
        return Kek::load(&cfg.key_file).context("loading the key-encryption key");
    }
    if let Some(dir) = cfg.key_file.parent() {
        ensure_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let kek = Kek::generate_file(&cfg.key_file)?;
    tracing::warn!(
        "GENERATED A DEVELOPMENT KEY-ENCRYPTION KEY at {}. It protects every model in {}: anyone who reads it and the state directory can decrypt them. Fine for a trial; on a real host, create the key yourself and pass --key-file.",
        cfg.key_file.display(),
        cfg.state_dir.display()
    );
    Ok(kek)
}

/// Binds the socket, refusing to steal one that a live daemon is serving and removing a stale one.
fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another arcad is already serving {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    // Any local user may connect; every request is authorised by the caller's peer credentials.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

async fn serve(cfg: Config, registry: Arc<Registry>) -> Result<()> {
    let listener = bind_socket(&cfg.socket)?;
    let mount = match &cfg.mount {
        Some(dir) => {
            let opts = MountOptions {
                cache_bytes: cfg.cache_mib << 20,
                // 4 MiB at the 32 KiB average chunk: four of the kernel's 1 MiB requests ahead,
                // so a cold sequential reader keeps several chunk reads in flight.
                prefetch_chunks: 128,
                threads: 4,
                // Service users read the mount; `may_read` decides per version.
                allow_other: true,
            };
            let m = Mount::start(&registry, dir, opts)
                .with_context(|| format!("mounting at {}", dir.display()))?;
            Some(m)
        }
        None => None,
    };
    let mount_text = cfg
        .mount
        .as_ref()
        .map(|m| m.display().to_string())
        .unwrap_or_else(|| "none".into());
    tracing::info!(state_dir = %cfg.state_dir.display(), socket = %cfg.socket.display(), mount = %mount_text, "arcad ready");
    eprintln!(
        "arcad: state {}  socket {}  mount {}",
        cfg.state_dir.display(),
        cfg.socket.display(),
        mount_text
    );
    let app = router(registry.clone()).into_make_service_with_connect_info::<Peer>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    let _ = std::fs::remove_file(&cfg.socket);
    if let Some(m) = mount {
        if let Err(e) = tokio::task::spawn_blocking(move || m.stop()).await? {
            tracing::error!("unmounting: {e}");
        }
    }
    // A signed checkpoint of the audit head at every clean shutdown.
    if let Err(e) = registry.store().checkpoint_audit() {
        tracing::error!("writing the audit checkpoint at shutdown: {e}");
    }
    served?;
    tracing::info!("arcad stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop arcad with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
