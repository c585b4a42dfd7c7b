//! Life under a service manager: systemd's readiness, watchdog and stopping notifications, and
//! the periodic background jobs (garbage collection). Without NOTIFY_SOCKET every notification
//! is a no-op, so the same binary runs by hand, under systemd, or in the tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::registry::Registry;

/// How long one health probe may take before it counts as a hang.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

fn notify(state: NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::warn!("notifying the service manager: {e}");
    }
}

/// The serving path, end to end: a read of the store through the registry and, with a mount,
/// a stat of the mount's root answered by our own FUSE threads. Runs on a blocking thread.
fn probe(registry: &Registry, mount: Option<&Path>) -> Result<(), String> {
    registry.health().map_err(|e| format!("store: {e}"))?;
    if let Some(m) = mount {
        let meta = std::fs::metadata(m).map_err(|e| format!("mount {}: {e}", m.display()))?;
        if !meta.is_dir() {
            return Err(format!("mount {} is not a directory", m.display()));
        }
    }
    Ok(())
}

async fn probe_async(registry: Arc<Registry>, mount: Option<PathBuf>) -> Result<(), String> {
    let job = tokio::task::spawn_blocking(move || probe(&registry, mount.as_deref()));
    match tokio::time::timeout(PROBE_TIMEOUT, job).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("probe failed: {e}")),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// Sends READY=1 once the store answers and the mount answers a stat of its root; an error
/// if they do not (the daemon then exits, and the manager sees a failed start).
pub async fn announce_ready(registry: Arc<Registry>, mount: Option<PathBuf>) -> Result<(), String> {
    probe_async(registry, mount).await?;
    notify(NotifyState::Ready);
    Ok(())
}

/// With WatchdogSec= set: pings at half the interval, each time only after a probe through
/// the serving path succeeded, so a daemon whose store or mount hangs stops pinging and is
/// restarted.
pub fn spawn_watchdog(registry: Arc<Registry>, mount: Option<PathBuf>) {
    // As sd_watchdog_enabled(3): WATCHDOG_USEC enables it; WATCHDOG_PID, when set, must be us.
    // (sd-notify's helper also insists on WATCHDOG_PID being set.)
    let usec: u64 = match std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(u) if u > 0 => u,
        _ => return,
    };
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return;
        }
    }
    let every = Duration::from_micros(usec / 2);
    tracing::info!(interval = ?every, "systemd watchdog enabled");
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            match probe_async(registry.clone(), mount.clone()).await {
                Ok(()) => notify(NotifyState::Watchdog),
                Err(e) => tracing::error!("health probe failed, not pinging the watchdog: {e}"),
            }
        }
    });
}

pub fn notify_stopping() {
    notify(NotifyState::Stopping);
}

/// Background garbage collection every `every` (none when zero), on its own thread.
pub fn spawn_gc(registry: Arc<Registry>, every: Duration) {
    if every.is_zero() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("arca-gc".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            if let Err(e) = registry.gc(None, false) {
                tracing::error!("background garbage collection: {e}");
            }
        });
    if let Err(e) = spawned {
        tracing::error!("starting background garbage collection: {e}");
    }
}
