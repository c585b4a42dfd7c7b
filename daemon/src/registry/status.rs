//! `arca status`: the daemon's and the store's condition in one answer, for callers with a role.

use std::collections::BTreeMap;
use std::path::Path;

use arca_core::api::{MountStatus, StatusReport};

use super::{Registry, Result};
use crate::auth::Caller;

impl Registry {
    /// Counts, never names; still store-wide, so a caller needs some role (as for `stats`).
    pub fn status(&self, c: &Caller, mountpoint: Option<&Path>) -> Result<StatusReport> {
        self.require_some_role(c, "read the store's status")?;
        let s = self.store_stats(c)?;
        let all = self.allows(c, None, arca_core::api::Permission::Read);
        let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
        for r in self
            .catalog()
            .values()
            .flat_map(|v| v.values())
            .filter(|r| all || self.may_read(c, r))
        {
            *by_status.entry(r.status.to_string()).or_default() += 1;
        }
        let mount = match (mountpoint, self.mount_counters()) {
            (Some(m), Some(c)) => {
                let looked = c.cache_hits + c.cache_misses;
                Some(MountStatus {
                    mountpoint: m.display().to_string(),
                    // From the mount table, not a stat: `status` must answer even when the
                    // mount does not.
                    answering: mounted(m),
                    cache_hit_rate: (looked > 0).then(|| c.cache_hits as f64 / looked as f64),
                    counters: c,
                })
            }
            _ => None,
        };
        let audit = self.store.audit_head_count()?;
        Ok(StatusReport {
            daemon_version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            environment: self.environment.clone(),
            models: s.models,
            versions: s.versions,
            versions_by_status: by_status,
            chunks: s.chunks,
            stored_bytes: s.stored_bytes,
            logical_bytes: s.logical_bytes,
            dedup_ratio: if s.stored_bytes > 0 {
                s.logical_bytes as f64 / s.stored_bytes as f64
            } else {
                1.0
            },
            disk_bytes: all.then(|| self.store.chunk_disk_bytes()).transpose()?,
            gc_candidates: all
                .then(|| self.store.gc_candidates().map(|g| g.len() as u64))
                .transpose()?,
            mount,
            current_data_key: self.store.keys().current_key_id(),
            rotation: self.rotation_progress()?,
            audit_events: audit,
            // Fetched and uploaded figures show what this host caches: store-wide, so only
            // for readers of every model (as `disk_bytes`).
            fleet: self.fleet.as_ref().filter(|_| all).map(|f| {
                let st = f.status();
                // Each host's heartbeat, read from the store now (none while it is down).
                let hosts = f.hosts_seen(&self.store).unwrap_or_default();
                let head_seq = hosts
                    .iter()
                    .map(|h| h.applied_seq)
                    .max()
                    .unwrap_or(0)
                    .max(st.applied);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let applied_hash = self
                    .store
                    .applied()
                    .map(|(_, h)| h)
                    .unwrap_or(crate::fleet::log::GENESIS);
                arca_core::api::FleetStatus {
                    applied_hash,
                    host: f.cfg.host.clone(),
                    endpoint: f.remote.current_endpoint().to_owned(),
                    applied_seq: st.applied,
                    lag_secs: (st.last_ok_ms > 0)
                        .then(|| now.saturating_sub(st.last_ok_ms) as f64 / 1000.0),
                    store_error: st.last_error,
                    store_errors: f.remote.errors.load(std::sync::atomic::Ordering::Relaxed),
                    halted: st.halted,
                    stale_view: st.stale_view.map(|v| v.why),
                    chunks_fetched: st.chunks_fetched,
                    bytes_fetched: st.bytes_fetched,
                    pack_requests: st.pack_requests,
                    take_overs: st.take_overs,
                    bytes_uploaded: f
                        .remote
                        .bytes_out
                        .load(std::sync::atomic::Ordering::Relaxed),
                    integrity_failures: st.integrity_failures,
                    hosts,
                    head_seq,
                    cache: Some(self.cache_status(f)),
                    audit_shipping: Some(f.ship_status(&self.store)),
                    object_lock: Some(object_lock_status(&f.remote.lock_state())),
                }
            }),
        })
    }
}

/// The store's Object Lock, as `status` shows it.
pub fn object_lock_status(st: &crate::remote::lock::LockState) -> arca_core::api::ObjectLockStatus {
    use crate::remote::lock::LockState;
    match st {
        LockState::InForce(r) => arca_core::api::ObjectLockStatus {
            in_force: true,
            mode: Some(r.mode.as_str().into()),
            days: Some(r.days),
            reason: None,
        },
        LockState::Off(why) => arca_core::api::ObjectLockStatus {
            in_force: false,
            mode: None,
            days: None,
            reason: Some(why.clone()),
        },
        LockState::Unknown => arca_core::api::ObjectLockStatus {
            in_force: false,
            mode: None,
            days: None,
            reason: Some("not checked yet: the store could not be reached".into()),
        },
    }
}

/// Whether `path` is a mount point now (per /proc/self/mountinfo).
fn mounted(path: &Path) -> bool {
    let p = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}
