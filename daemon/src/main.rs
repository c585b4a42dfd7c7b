//! `arcad`: opens the store, serves the control API on a Unix socket, and shuts down cleanly on
//! SIGTERM or SIGINT.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arca_fsmount::MountOptions;
use arcad::auth::Admins;
use arcad::config::{Config, DEV_BASE};
use arcad::keys::Kek;
use arcad::keys::KeyError;
use arcad::metrics::Metrics;
use arcad::mount::Mount;
use arcad::paths;
use arcad::registry::{Registry, RegistryOptions};
use arcad::server::{metrics_router, router, serve_unix, Limits};
use arcad::service;
use arcad::store::{Store, StoreError};
use clap::{CommandFactory, Parser};
use tokio::net::UnixListener;

/// The daemon of arca, a secure model store.
///
/// arcad keeps models as encrypted, deduplicated chunks in its state directory, serves the
/// control API (used by arca(1)) on a Unix socket and mounts a read-only view of every version.
/// Flags override the configuration file (--config). Under systemd it runs as arcad.service and
/// logs through journald's native protocol, with MODEL, VERSION, FILE, CHUNK and ARCA_EVENT fields
/// (journalctl -u arcad MODEL=resnet); elsewhere as text on stderr.
#[derive(Parser, Debug)]
#[command(name = "arcad", version)]
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
    /// Also serve Prometheus metrics over TCP at this address (e.g. 127.0.0.1:9464).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Seconds between background garbage collections (0: off).
    #[arg(long)]
    gc_interval_secs: Option<u64>,
    /// Where `arca key rotate-kek` writes the new key-encryption key [default: the key file].
    #[arg(long)]
    kek_rotation_path: Option<PathBuf>,
    /// How fast a data-key rotation may re-seal chunks, in MiB/s (0: no limit).
    #[arg(long)]
    rotation_mib_per_sec: Option<u64>,
    /// Most control-socket connections open at once.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Most control-socket connections one uid may hold open.
    #[arg(long)]
    max_connections_per_user: Option<usize>,
    /// Seconds a connection may take to send a request's headers (and may stay idle).
    #[arg(long)]
    request_header_timeout_secs: Option<u64>,
    /// Check the configuration, the key file and the state directory, print the result, exit.
    #[arg(long)]
    check_config: bool,
    /// TOML configuration file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print this host's fleet entry-signing key (what other hosts pin in `[fleet.hosts]`),
    /// creating the store if it is new, and exit.
    #[arg(long)]
    host_key: bool,
    /// Print the shell completion script for arcad and exit (scripts/install.sh installs it).
    #[arg(long, value_name = "SHELL", exclusive = true, hide = true)]
    completions: Option<clap_complete::Shell>,
    /// Print the arcad(8) man page (roff) and exit (scripts/install.sh installs it).
    #[arg(long, exclusive = true, hide = true)]
    man: bool,
    /// Print the control API's OpenAPI 3.1 document (JSON) and exit: docs/openapi.json, and
    /// what `GET /v1/openapi.json` serves.
    #[arg(long, exclusive = true)]
    openapi: bool,
}

fn main() -> Result<()> {
    // Before any thread exists (see alloc.rs).
    let refused_malloc_settings = arcad::alloc::tune();
    // Before any key is read: no core dump, and no ptrace or /proc/PID/mem by other processes
    // of arcad's user, may ever hold the keys or cached plaintext (docs/operations.md).
    nix::sys::prctl::set_dumpable(false)
        .context("making arcad not dumpable (prctl PR_SET_DUMPABLE 0)")?;
    let args = Args::parse();
    // Generated from these definitions, so they always match this binary; nothing is opened.
    if let Some(shell) = args.completions {
        clap_complete::generate(shell, &mut Args::command(), "arcad", &mut std::io::stdout());
        return Ok(());
    }
    if args.man {
        clap_mangen::Man::new(Args::command())
            .section("8")
            .manual("arca")
            .render(&mut std::io::stdout())
            .context("writing the man page")?;
        return Ok(());
    }
    if args.openapi {
        print!("{}", arcad::openapi::json());
        return Ok(());
    }
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
    if let Some(v) = args.metrics_addr {
        cfg.metrics_addr = Some(v);
    }
    if let Some(v) = args.gc_interval_secs {
        cfg.gc_interval_secs = v;
    }
    if let Some(v) = args.kek_rotation_path {
        cfg.kek_rotation_path = Some(v);
    }
    if let Some(v) = args.rotation_mib_per_sec {
        cfg.rotation_mib_per_sec = v;
    }
    if let Some(v) = args.max_connections {
        cfg.max_connections = v;
    }
    if let Some(v) = args.max_connections_per_user {
        cfg.max_connections_per_user = v;
    }
    if let Some(v) = args.request_header_timeout_secs {
        cfg.request_header_timeout_secs = v;
    }
    // journald's native protocol under systemd, text on stderr otherwise (journal.rs).
    let to_journal = arcad::journal::init(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| cfg.log.clone().into()),
    );
    for name in refused_malloc_settings {
        tracing::warn!(
            setting = name,
            "glibc refused a malloc setting; memory use may be higher"
        );
    }
    if args.check_config {
        return check_config(&cfg);
    }

    prepare_dirs(&cfg)?;
    let kek = load_or_create_kek(&cfg)?;
    let (store, fleet) = match &cfg.fleet {
        Some(fc) => {
            let (store, fleet) = open_fleet_host(&cfg, fc, kek)?;
            (store, Some(fleet))
        }
        None => {
            let store = open_store(&cfg, kek)?;
            if store.was_fleet_host()? {
                bail!(
                    "the store in {} belongs to a fleet host: start it with its [fleet] configuration (on its own it would make changes no other host sees)",
                    cfg.state_dir.display()
                );
            }
            (store, None)
        }
    };
    if args.host_key {
        println!("{}", store.host_public_key());
        return Ok(());
    }
    let admins = Admins::new(&cfg.admins).map_err(anyhow::Error::msg)?;
    let opts = RegistryOptions {
        admins,
        environment: cfg.environment.clone(),
        rotation_rate: cfg.rotation_mib_per_sec << 20,
        mountpoint: cfg.mount.clone(),
        kek_rotation_path: Some(rotation_path(&cfg)),
        fleet: fleet.clone(),
    };
    let registry = Arc::new(Registry::open(store, opts).context("loading the catalog")?);
    if let Some(f) = &fleet {
        // Caught up before the socket answers: the first request sees the fleet's state (or,
        // with the store down, the last state this host applied).
        match registry.poll_fleet() {
            Ok(n) => {
                tracing::info!(applied = n, host = %f.cfg.host, "fleet: caught up with the log")
            }
            Err(e) => tracing::warn!("fleet: serving the last state applied here: {e}"),
        }
        arcad::registry::fleet::spawn_poller(registry.clone());
        arcad::registry::cache::spawn_cache_thread(registry.clone());
    }
    // An interrupted data-key rotation continues in the background.
    registry.resume_rotation();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(cfg, registry, to_journal))
}

/// `--check-config`: everything that can be checked without opening the store (a running
/// daemon holds its lock): the configuration itself, the admins, the key file, the paths.
fn check_config(cfg: &Config) -> Result<()> {
    Admins::new(&cfg.admins).map_err(anyhow::Error::msg)?;
    if let Some(env) = &cfg.environment {
        let p = arca_core::api::Policy {
            environments: vec![env.clone()],
            ..Default::default()
        };
        arcad::access::validate_policy(&p).map_err(|e| anyhow::anyhow!("environment: {e}"))?;
    }
    let key = if cfg.key_file.exists() || !cfg.key_file_is_default() {
        Kek::load(&cfg.key_file).context("loading the key-encryption key")?;
        format!("{} (readable, private)", cfg.key_file.display())
    } else {
        format!(
            "{} (absent: a development key will be generated)",
            cfg.key_file.display()
        )
    };
    let writable_dir = |p: &Path| -> Result<()> {
        let mut d = p;
        while !d.exists() {
            d = d.parent().unwrap_or(Path::new("/"));
        }
        nix::unistd::access(d, nix::unistd::AccessFlags::W_OK)
            .with_context(|| format!("{} is not writable (for {})", d.display(), p.display()))
    };
    check_dirs(cfg)?;
    writable_dir(&cfg.state_dir)?;
    if let Some(dir) = cfg.socket.parent() {
        writable_dir(dir)?;
    }
    if let Some(m) = &cfg.mount {
        if let Some(parent) = m.parent() {
            writable_dir(parent)?;
        }
        if !Path::new("/dev/fuse").exists() {
            bail!(
                "/dev/fuse is missing: the mount at {} cannot work",
                m.display()
            );
        }
    }
    println!("configuration OK");
    println!("  state_dir          {}", cfg.state_dir.display());
    println!("  socket             {}", cfg.socket.display());
    println!("  key_file           {key}");
    println!(
        "  mount              {}",
        cfg.mount
            .as_ref()
            .map_or("none".into(), |m| m.display().to_string())
    );
    println!("  cache_mib          {}", cfg.cache_mib);
    println!(
        "  environment        {}",
        cfg.environment.as_deref().unwrap_or("(all)")
    );
    println!(
        "  admins             root, the daemon's user{}",
        cfg.admins
            .iter()
            .map(|a| format!(", {a}"))
            .collect::<String>()
    );
    println!(
        "  metrics_addr       {}",
        cfg.metrics_addr
            .map_or("(socket only)".into(), |a| a.to_string())
    );
    println!("  gc_interval_secs   {}", cfg.gc_interval_secs);
    println!("  rotation_mib_per_sec {}", cfg.rotation_mib_per_sec);
    println!(
        "  connections        {} at most, {} per uid, {} s for headers",
        cfg.max_connections, cfg.max_connections_per_user, cfg.request_header_timeout_secs
    );
    println!(
        "  kek_rotation_path  {}",
        cfg.kek_rotation_path
            .as_ref()
            .unwrap_or(&cfg.key_file)
            .display()
    );
    Ok(())
}

/// Whether any configured path lies in the development base (`/var/tmp/arca-dev`).
fn uses_dev_base(cfg: &Config) -> bool {
    let base = Path::new(DEV_BASE);
    [&cfg.state_dir, &cfg.socket, &cfg.key_file]
        .into_iter()
        .chain(cfg.mount.as_ref())
        .any(|p| p.starts_with(base))
}

/// The directory of the socket (`.` for a bare file name).
fn socket_dir(cfg: &Config) -> &Path {
    match cfg.socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Creates or checks every directory arcad keeps files in before any is used (rules in
/// paths.rs): one line naming the first directory refused, and nothing created inside it.
fn prepare_dirs(cfg: &Config) -> Result<()> {
    if uses_dev_base(cfg) {
        paths::own_dir(Path::new(DEV_BASE), 0o755)?;
    }
    // Any local user may reach the socket, so its directory is traversable.
    paths::own_dir(socket_dir(cfg), 0o755)?;
    paths::own_dir(&cfg.state_dir, 0o700)?;
    if cfg.key_file_is_default() {
        if let Some(dir) = cfg.key_file.parent() {
            paths::own_dir(dir, 0o700)?;
        }
    } else {
        paths::check_above(&cfg.key_file)?;
    }
    paths::check_above(&rotation_path(cfg))?;
    Ok(())
}

/// `prepare_dirs` for `--check-config`: the same rules, creating nothing.
fn check_dirs(cfg: &Config) -> Result<()> {
    if uses_dev_base(cfg) {
        paths::check_own_dir(Path::new(DEV_BASE))?;
    }
    paths::check_own_dir(socket_dir(cfg))?;
    paths::check_own_dir(&cfg.state_dir)?;
    if cfg.key_file_is_default() {
        if let Some(dir) = cfg.key_file.parent() {
            paths::check_own_dir(dir)?;
        }
    } else {
        paths::check_above(&cfg.key_file)?;
    }
    paths::check_above(&rotation_path(cfg))?;
    Ok(())
}

/// The rotation path of the KEK (where `rotate-kek` writes): the key file unless configured.
fn rotation_path(cfg: &Config) -> PathBuf {
    cfg.kek_rotation_path
        .clone()
        .unwrap_or_else(|| cfg.key_file.clone())
}

/// Opens the store. If the key file does not open it and a `.new` key file from an
/// interrupted KEK rotation exists, that one is tried and, when it opens the store, put in
/// place (the rotation's durable write had happened; only the rename had not).
fn open_store(cfg: &Config, kek: Kek) -> Result<Store> {
    let store = open_store_with_kek(cfg, kek)?;
    check_audit_pin(cfg, &store)?;
    Ok(store)
}

/// `audit_public_key`, when the config pins it, must be the store's.
fn check_audit_pin(cfg: &Config, store: &Store) -> Result<()> {
    if let Some(pinned) = &cfg.audit_public_key {
        let ours = store.audit_public_key();
        if ours != *pinned {
            bail!(
                "the store in {} signs its audit trail with {ours}, but the config pins audit_public_key {pinned}: its audit key was replaced; restore the state directory from a backup",
                cfg.state_dir.display()
            );
        }
    }
    Ok(())
}

/// A fleet host: the object store must honour conditional writes (checked with a race on a
/// scratch key); the fleet's keys come from it (created by the first host); the local store
/// holds those keys and publishes every change to the fleet's log.
fn open_fleet_host(
    cfg: &Config,
    fc: &arcad::fleet::FleetConfig,
    kek: Kek,
) -> Result<(Store, Arc<arcad::fleet::Fleet>)> {
    use arcad::remote::Remote;
    let remote = Remote::s3(&fc.remote).context("fleet: connecting to the object store")?;
    remote.check_conditional_writes(8).with_context(|| {
        format!(
            "fleet: the object store at {} failed the conditional-write check, so fleet mode is refused (a fleet's order rests on If-None-Match and If-Match)",
            remote.current_endpoint()
        )
    })?;
    // Object Lock: log entries and audit segments are retained where the bucket allows it.
    match remote.check_object_lock() {
        arcad::remote::lock::LockState::InForce(r) => tracing::info!(
            mode = r.mode.as_str(),
            days = r.days,
            "fleet: Object Lock in force: log entries and audit segments are written with retention"
        ),
        arcad::remote::lock::LockState::Off(why) => tracing::warn!(
            "fleet: Object Lock NOT in force ({why}): log entries and audit segments can be deleted or overwritten by whoever holds the store's credentials (arca detects it, but cannot prevent it)"
        ),
        arcad::remote::lock::LockState::Unknown => tracing::warn!(
            "fleet: the bucket's Object Lock configuration could not be read yet; the first log entry or audit segment checks it again"
        ),
    }
    // A new host takes the fleet's keys from the store (the first host creates them); a host
    // that already has its store uses the keys in it, so a keys object deleted from the store
    // stops no host that has joined.
    let fresh = !cfg.state_dir.join("db").exists();
    let seed = if fresh {
        Some(
            arcad::fleet::load_or_create_keys(&remote, &kek, true)
                .context("fleet: the fleet's keys")?,
        )
    } else {
        None
    };
    let store = Store::open_with(&cfg.state_dir, kek, seed.as_ref())
        .with_context(|| format!("opening the store in {}", cfg.state_dir.display()))?;
    if fresh {
        store.mark_fleet_host().context("opening the store")?;
    } else if !store.was_fleet_host()? {
        bail!(
            "the store in {} was made by a single host, with keys of its own: a host joins a fleet with an empty state directory",
            cfg.state_dir.display()
        );
    }
    check_audit_pin(cfg, &store)?;
    let count = store.cache_count();
    let limit = arcad::fleet::cache::resolve_limit(&fc.cache, &cfg.state_dir)?;
    tracing::info!(
        limit_bytes = limit,
        cached_bytes = count.bytes,
        chunks = count.chunks,
        warm_before_switch = ?fc.cache.warm_before_switch,
        "fleet: chunk cache"
    );
    let cache = arcad::fleet::cache::Cache::new(fc.cache.clone(), limit, store.cache_recency());
    let fleet = Arc::new(
        arcad::fleet::Fleet::new(fc.clone(), remote, store.host_public_key(), cache)
            .context("fleet configuration")?,
    );
    store.set_publisher(fleet.clone());
    tracing::info!(host = %fc.host, endpoints = ?fc.remote.endpoints, "fleet: this host is part of a fleet");
    Ok((store, fleet))
}

fn open_store_with_kek(cfg: &Config, kek: Kek) -> Result<Store> {
    let ctx = || format!("opening the store in {}", cfg.state_dir.display());
    match Store::open(&cfg.state_dir, kek) {
        Ok(s) => Ok(s),
        Err(StoreError::Key(KeyError::WrongKek)) => {
            let path = rotation_path(cfg);
            let pending = PathBuf::from(format!("{}.new", path.display()));
            if !pending.exists() {
                return Err(anyhow::Error::new(StoreError::Key(KeyError::WrongKek)))
                    .with_context(ctx);
            }
            tracing::warn!(key = %pending.display(), "the key file does not open the store; trying the key of an interrupted rotation");
            let store = Store::open(&cfg.state_dir, Kek::load(&pending)?).with_context(ctx)?;
            std::fs::rename(&pending, &path)
                .with_context(|| format!("putting {} in place", pending.display()))?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir).and_then(|d| d.sync_all())?;
            }
            tracing::warn!(key = %path.display(), "completed an interrupted key-encryption-key rotation");
            Ok(store)
        }
        Err(e) => Err(anyhow::Error::new(e)).with_context(ctx),
    }
}

fn load_or_create_kek(cfg: &Config) -> Result<Kek> {
    if cfg.key_file.exists() || !cfg.key_file_is_default() {
        return Kek::load(&cfg.key_file).context("loading the key-encryption key");
    }
    // Its directory was made (or found) private and arcad's own by `prepare_dirs`.
    let kek = Kek::generate_file(&cfg.key_file)?;
    tracing::warn!(
        "GENERATED A DEVELOPMENT KEY-ENCRYPTION KEY at {}. It protects every model in {}: anyone who reads it and the state directory can decrypt them. Fine for a trial; on a real host, create the key yourself and pass --key-file.",
        cfg.key_file.display(),
        cfg.state_dir.display()
    );
    Ok(kek)
}

/// Binds the socket, refusing to steal one that a live daemon is serving and removing a stale
/// one. Its directory was checked by `prepare_dirs`: arcad's own, writable by nobody else.
fn bind_socket(path: &Path) -> Result<UnixListener> {
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
    // Set on the bound socket itself, never through a link planted at its path.
    paths::set_socket_mode(path, 0o666)?;
    Ok(l)
}

/// `to_journal`: the log goes to journald (journal.rs), where the banner for a terminal is not
/// printed.
async fn serve(cfg: Config, registry: Arc<Registry>, to_journal: bool) -> Result<()> {
    // Handlers first: a SIGTERM that arrives as soon as the socket answers (systemd stopping a
    // unit that just started) must shut down cleanly, not kill the process mid-start.
    let signals = Signals::install();
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
    // For a person at a terminal; in the journal, "arcad ready" above says the same.
    if !to_journal {
        eprintln!(
            "arcad: state {}  socket {}  mount {}",
            cfg.state_dir.display(),
            cfg.socket.display(),
            mount_text
        );
    }
    service::announce_ready(registry.clone(), cfg.mount.clone())
        .await
        .map_err(|e| anyhow::anyhow!("not ready: {e}"))?;
    service::spawn_watchdog(registry.clone(), cfg.mount.clone());
    service::spawn_gc(
        registry.clone(),
        std::time::Duration::from_secs(cfg.gc_interval_secs),
    );
    arcad::alloc::spawn_trimmer(std::time::Duration::from_secs(1))
        .context("starting the memory trimmer thread")?;
    let metrics = Metrics::new(registry.clone());
    if let Some(addr) = cfg.metrics_addr {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
        let app = metrics_router(metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(tcp, app).await {
                tracing::error!("metrics listener: {e}");
            }
        });
        tracing::info!(%addr, "metrics served over TCP");
    }
    let limits = Limits {
        max_connections: cfg.max_connections,
        per_user: cfg.max_connections_per_user,
        header_timeout: std::time::Duration::from_secs(cfg.request_header_timeout_secs),
        max_header_bytes: 64 << 10,
    };
    serve_unix(
        listener,
        router(registry.clone(), metrics),
        limits,
        signals.shutdown(),
    )
    .await;
    let _ = std::fs::remove_file(&cfg.socket);
    if let Some(m) = mount {
        if let Err(e) = tokio::task::spawn_blocking(move || m.stop()).await? {
            tracing::error!("unmounting: {e}");
        }
    }
    // A fleet host ships what its trail gained since the last shipment (tried for up to the
    // store's timeout: a store out of reach leaves the events for the next start).
    if registry.fleet().is_some() {
        let r = registry.clone();
        let shipped = tokio::task::spawn_blocking(move || {
            r.fleet()
                .map(|f| f.ship_audit_at_shutdown(r.store()))
                .unwrap_or(Ok(()))
        })
        .await?;
        if let Err(e) = shipped {
            tracing::warn!(
                "fleet: shipping the audit trail at shutdown: {e}; the next start ships it"
            );
        }
    }
    // A signed checkpoint of the audit head at every clean shutdown.
    if let Err(e) = registry.store().checkpoint_audit() {
        tracing::error!("writing the audit checkpoint at shutdown: {e}");
    }
    tracing::info!("arcad stopped");
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment `install` returns.
struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Self(Some((term, int))),
            _ => {
                tracing::error!("cannot install signal handlers; stop arcad with SIGKILL");
                Self(None)
            }
        }
    }

    async fn shutdown(self) {
        let Some((mut term, mut int)) = self.0 else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        service::notify_stopping();
    }
}
