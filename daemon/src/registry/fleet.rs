//! The registry on a fleet host: every state change first catches up with the fleet's log and
//! re-runs its checks against that state; a change that loses the race for the log's next seq
//! (another host's change came first) catches up again and re-runs them, so permissions, four
//! eyes, at most one production version, max versions and "the same version pushed twice" are
//! decided against every host's changes, not only this host's. A background poller applies
//! other hosts' entries and reloads the catalog, so the mount flips `production` on its own.
//! Chunks this host lacks are fetched from packs on first read (`Fleet::fetch`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arca_core::audit::{Draft, EventKind};
use arca_core::ChunkId;

use super::{lock, ChunkReadError, Registry, RegistryError, Result};
use crate::fleet::{Fleet, FleetError};
use crate::remote::RemoteError;
use crate::store::StoreError;

/// Attempts of one change against a log that other hosts keep extending.
pub(super) const MAX_ATTEMPTS: u32 = 32;

/// A short, growing, jittered pause before trying a lost change again, so hosts that collided
/// do not collide again in lockstep.
pub(super) fn backoff(attempt: u32) {
    let mut r = [0u8; 2];
    let _ = getrandom::fill(&mut r);
    let base = 5u64 << attempt.min(5);
    let jitter = u16::from_le_bytes(r) as u64 % (base + 1);
    std::thread::sleep(Duration::from_millis(base + jitter));
}

/// A fleet failure as the registry reports it: the store unreachable or the replica halted
/// refuses the change with one clear line; nothing was changed.
pub(super) fn unavailable(e: FleetError) -> RegistryError {
    match e {
        FleetError::Store(s) => RegistryError::Store(s),
        h @ FleetError::Halted(_) => RegistryError::Store(StoreError::FleetHalted(h.to_string())),
        other => RegistryError::Store(StoreError::FleetUnavailable(other.to_string())),
    }
}

impl Registry {
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// The commit lock; on a fleet host, held only after this host applied every entry in the
    /// log. If that applied any, the operation's checks made before the lock (its permission
    /// check above all) saw an older state: `FleetConflict` makes `retrying` run it again.
    pub(super) fn commit_guard(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        let g = lock(&self.commit_lock);
        if let Some(f) = &self.fleet {
            if self.catch_up_locked(f).map_err(unavailable)? > 0 {
                return Err(RegistryError::Store(StoreError::FleetConflict));
            }
        }
        Ok(g)
    }

    /// The commit lock after catching up, for work that checks everything under the lock
    /// (garbage collection).
    pub(super) fn commit_guard_caught_up(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        let g = lock(&self.commit_lock);
        if let Some(f) = &self.fleet {
            self.catch_up_locked(f).map_err(unavailable)?;
        }
        Ok(g)
    }

    /// Runs a state-changing operation; on a fleet host, again (from its permission check on)
    /// when another host's change took the log's next seq first.
    pub(super) fn retrying<R>(&self, mut op: impl FnMut() -> Result<R>) -> Result<R> {
        let mut attempt = 0;
        loop {
            match op() {
                Err(RegistryError::Store(StoreError::FleetConflict)) if attempt < MAX_ATTEMPTS => {
                    backoff(attempt);
                    attempt += 1;
                }
                Err(RegistryError::Store(StoreError::FleetConflict)) => {
                    return Err(RegistryError::Store(StoreError::FleetUnavailable(format!(
                        "{MAX_ATTEMPTS} attempts lost the race for the log's next entry to other hosts' changes"
                    ))))
                }
                other => return other,
            }
        }
    }

    /// Applies new entries (the commit lock held) and, if there were any, reloads the catalog
    /// and the access table from the store and republishes the mount.
    ///
    /// With `warm_before_switch`, `Fleet::catch_up` returns before an entry that needs a
    /// warm-up, so what came before it is published first; this goes on until nothing is left.
    fn catch_up_locked(&self, f: &Fleet) -> std::result::Result<usize, FleetError> {
        let mut total = 0;
        loop {
            let caught = f.catch_up(&self.store, &|rec| self.keeps_model(&rec.metadata.name));
            // A halt (a fork, a gap, an entry that does not check) is an integrity failure of
            // the fleet's log: once in this host's trail, naming the entry and what is wrong.
            if let Some(why) = f.take_unaudited_halt() {
                self.record(vec![Draft::new(EventKind::IntegrityViolation, "arcad")
                    .detail("via", "fleet log")
                    .detail("problem", why)]);
            }
            let n = caught?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
            self.reload().map_err(|e| match e {
                RegistryError::Store(s) => FleetError::Store(s),
                other => FleetError::Config(other.to_string()),
            })?;
        }
    }

    /// When a read that starts now must have its chunk (or fail): the fleet's read bound on.
    pub fn read_deadline(&self) -> Instant {
        Instant::now()
            + self
                .fleet
                .as_ref()
                .map_or(Duration::from_secs(8), |f| f.read_bound())
    }

    /// Whether reading `id` needs nothing but this host's store: always on a single host; on a
    /// fleet host, whether the chunk is cached (its cache index row; a chunk evicted after this
    /// answer is fetched, within the read's bound). The mount sends other reads to threads of
    /// their own, so reads of cached chunks never queue behind reads waiting on the store.
    pub fn chunk_is_local(&self, id: &ChunkId) -> bool {
        self.fleet.is_none() || matches!(self.store.cached_len(id), Ok(Some(_)))
    }

    /// Applies new entries for a reader that found a pack gone, waiting for the commit lock
    /// (a push or GC may hold it) no later than the read's deadline; the poller catches up
    /// later if this cannot.
    fn catch_up_for_read(&self, deadline: Instant) {
        while Instant::now() < deadline {
            let held = match self.commit_lock.try_lock() {
                Ok(g) => Some(g),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(_g) = held {
                if let Some(f) = &self.fleet {
                    if let Err(e) = self.catch_up_locked(f) {
                        tracing::warn!("fleet: catching up after a missing pack: {e}");
                    }
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One poll: apply what other hosts wrote. Called by the fleet poller thread.
    pub fn poll_fleet(&self) -> std::result::Result<usize, FleetError> {
        let Some(f) = &self.fleet else { return Ok(0) };
        let _g = lock(&self.commit_lock);
        self.catch_up_locked(f)
    }

    /// Rebuilds the catalog and the access table from the store (after applying entries).
    fn reload(&self) -> Result<()> {
        let (catalog, broken) = Self::load_catalog(&self.store)?;
        for b in &broken {
            tracing::error!("not serving a version: {}", b.why);
        }
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = catalog;
        let access = self.store.access_table()?;
        *self.access.write().unwrap_or_else(|p| p.into_inner()) = access;
        self.access_changed();
        self.changed();
        Ok(())
    }

    /// A chunk missing here: fetched from its pack if the fleet has it (authenticated, then
    /// cached). `Unknown`: no fleet, or the fleet does not know it.
    pub(super) fn fetch_missing(
        &self,
        id: &ChunkId,
        why: crate::fleet::FetchFor,
        deadline: Instant,
    ) -> std::result::Result<crate::fleet::Fetched, ChunkReadError> {
        let Some(f) = &self.fleet else {
            return Ok(crate::fleet::Fetched::Unknown);
        };
        let mut fetched = f.fetch(&self.store, id, why, deadline);
        if let Err(FleetError::Remote(RemoteError::NotFound(key))) = &fetched {
            // The pack is gone: fleet GC deleted it after moving the chunk, in an entry this
            // host has not applied yet (or someone deleted it behind arca's back). Catch up and
            // look again; the bytes read are authenticated as ever, so a stale location can
            // only cost an error, never a wrong byte.
            let before = self.store.chunk_loc(id).map_err(ChunkReadError::Store)?;
            self.catch_up_for_read(deadline);
            let after = self.store.chunk_loc(id).map_err(ChunkReadError::Store)?;
            fetched = match (before, after) {
                (before, Some(after)) if Some(&after) != before.as_ref() => {
                    tracing::info!(chunk = %id, "fleet: {key} was gone from the object store; the log, caught up, moved the chunk to another pack: fetching it from there");
                    f.fetch(&self.store, id, why, deadline)
                }
                // The signed log still places the chunk in a pack the store no longer has:
                // deleted behind arca's back (or a catch-up that could not reach the store).
                (Some(loc), _) => {
                    f.note_integrity_failure();
                    Err(FleetError::Integrity {
                        chunk: *id,
                        pack: loc.pack,
                        why: format!(
                            "{key} is gone from the object store, and the fleet's log places the chunk nowhere else"
                        ),
                    })
                }
                (None, _) => Err(FleetError::Remote(RemoteError::NotFound(format!(
                    "{key} (holding chunk {id}) is gone from the object store, and the fleet's log places the chunk nowhere else"
                )))),
            };
        }
        match fetched {
            Ok(found) => Ok(found),
            Err(FleetError::Integrity { chunk, pack, why }) => {
                tracing::error!(chunk = %chunk, pack = %pack, "fleet: a fetched chunk failed authentication: {why}; not cached, not served");
                Err(ChunkReadError::Crypt(
                    crate::crypt::CryptError::Authentication,
                ))
            }
            Err(FleetError::Store(s)) => Err(ChunkReadError::Store(s)),
            Err(e) => Err(ChunkReadError::Unavailable(e.to_string())),
        }
    }
}

/// Ships this host's audit trail every `audit_ship_secs` until the process ends, on a thread
/// of its own: a slow store costs the shipping time, never the poller's.
fn spawn_shipper(registry: Arc<Registry>) {
    let spawned = std::thread::Builder::new()
        .name("arca-fleet-audit".into())
        .spawn(move || {
            let mut last_error = String::new();
            loop {
                // Not before this host's heartbeat is in the store (see `heartbeat_written`).
                let shipped = registry
                    .fleet()
                    .filter(|f| f.heartbeat_written())
                    .map(|f| f.ship_audit(registry.store(), false))
                    .unwrap_or(Ok(()));
                match shipped {
                    Ok(()) => last_error.clear(),
                    Err(e) => {
                        // Once per distinct failure, not once per round.
                        let text = e.to_string();
                        if text != last_error {
                            tracing::warn!("fleet: shipping the audit trail: {text}");
                            last_error = text;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
    if let Err(e) = spawned {
        tracing::error!("fleet: cannot start the audit shipping thread: {e}");
    }
}

/// Applies other hosts' entries every `poll` until the process ends (and starts the thread
/// that ships this host's audit trail).
pub fn spawn_poller(registry: Arc<Registry>) {
    let Some(poll) = registry.fleet().map(|f| f.cfg.poll) else {
        return;
    };
    spawn_shipper(registry.clone());
    let spawned = std::thread::Builder::new()
        .name("arca-fleet-poll".into())
        .spawn(move || {
            let mut last_error = String::new();
            loop {
                let beat = registry
                    .fleet()
                    .map(|f| {
                        f.heartbeat(registry.store())
                            .and_then(|()| f.check_view(registry.store()))
                    })
                    .unwrap_or(Ok(()));
                match registry.poll_fleet().and(beat) {
                    Ok(_) => last_error.clear(),
                    Err(e) => {
                        // Once per distinct failure, not once per poll.
                        let text = e.to_string();
                        if text != last_error {
                            tracing::warn!("fleet: {text}");
                            last_error = text;
                        }
                    }
                }
                std::thread::sleep(poll);
            }
        });
    if let Err(e) = spawned {
        tracing::error!("fleet: cannot start the poller: {e}");
    }
}
