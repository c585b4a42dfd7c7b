//! Key rotation, driven from the registry (which owns the locks that serialise writers):
//! `rotate_kek` rewraps the keys at once; `rotate_dek` starts the background re-encryption,
//! which `resume_rotation` continues after a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arca_core::api::{KekRotated, Permission, RotationProgress};
use arca_core::audit::{Draft, EventKind};

use super::audit::ev;
use super::{lock, Registry, RegistryError, Result};
use crate::auth::Caller;
use crate::keys::Kek;
use crate::store::kv::Cf;
use crate::store::rotate::RotationState;
use crate::store::StoreError;

/// Chunks re-sealed per hold of the pin lock.
const BATCH: usize = 256;
/// Re-sealed bytes between durable progress records.
const SAVE_EVERY: u64 = 64 << 20;

/// What `status` shows of the rotation job.
#[derive(Default)]
pub(super) struct RotationJob {
    running: bool,
    state: Option<RotationState>,
    error: Option<String>,
}

impl Registry {
    pub fn rotation_progress(&self) -> Result<Option<RotationProgress>> {
        let job = lock(&self.rotation);
        let st = match &job.state {
            Some(s) => Some(s.clone()),
            None => self.store.rotation()?,
        };
        Ok(st.map(|s| RotationProgress {
            target_key: s.target,
            started_at: s.started_at,
            chunks_done: s.chunks_done,
            chunks_estimate: s.chunks_total,
            records_done: s.records_done,
            finished_at: s.finished_at,
            running: job.running,
            error: job.error.clone(),
        }))
    }

    /// `arca key rotate-dek`: a new data key, then every chunk and record re-sealed under it in
    /// the background. Asked while a rotation is unfinished, it resumes that one.
    /// Key rotation changes keys every host of a fleet must share; it is not built for fleets
    /// yet, and half of it on one host would cut that host off from the others' entries.
    fn refuse_in_fleet(&self, what: &str) -> Result<()> {
        if self.fleet.is_some() {
            return Err(RegistryError::BadRequest(format!(
                "`arca key {what}` is not available on a fleet host yet: the fleet's keys live in its object store and every host holds them (docs/operations.md, \"Fleet\")"
            )));
        }
        Ok(())
    }

    pub fn rotate_dek(self: &Arc<Self>, c: &Caller) -> Result<RotationProgress> {
        self.require(c, None, Permission::Admin, "rotate the data key")?;
        self.refuse_in_fleet("rotate-dek")?;
        let unfinished = self.store.rotation()?.filter(|s| s.finished_at.is_none());
        if unfinished.is_none() {
            let event = ev(c, EventKind::KeyChange).detail("action", "rotate-dek");
            let st = {
                // No record is sealed while the current key changes.
                let _g = lock(&self.commit_lock);
                self.store.begin_dek_rotation(event)?
            };
            tracing::info!(
                arca_event = EventKind::KeyChange.as_str(),
                key = st.target,
                "data-key rotation started"
            );
        }
        self.resume_rotation();
        self.rotation_progress()?
            .ok_or_else(|| RegistryError::Store(StoreError::Corrupt("rotation vanished".into())))
    }

    /// Continues an unfinished rotation in the background (at start, or when asked again).
    pub fn resume_rotation(self: &Arc<Self>) {
        let st = match self.store.rotation() {
            Ok(Some(st)) if st.finished_at.is_none() => st,
            Ok(_) => return,
            Err(e) => {
                tracing::error!("reading the rotation record: {e}");
                return;
            }
        };
        {
            let mut job = lock(&self.rotation);
            if job.running {
                return;
            }
            job.running = true;
            job.error = None;
            job.state = Some(st.clone());
        }
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("arca-rotate".into())
            .spawn(move || {
                let result = me.run_rotation(st);
                let mut job = lock(&me.rotation);
                job.running = false;
                if let Err(e) = result {
                    tracing::error!("data-key rotation stopped: {e}; `arca key rotate-dek` or a restart resumes it");
                    job.error = Some(e.to_string());
                }
            });
        if let Err(e) = spawned {
            let mut job = lock(&self.rotation);
            job.running = false;
            job.error = Some(format!("starting the rotation thread: {e}"));
        }
    }

    fn run_rotation(&self, mut st: RotationState) -> Result<(), StoreError> {
        let rate = self.rotation_rate;
        let mut unsaved = 0u64;
        loop {
            let started = std::time::Instant::now();
            let (last, n, bytes) = self.pins.locked(|| self.store.rotate_chunks(&st, BATCH))?;
            let Some(last) = last else { break };
            st.resume_after = Some(last);
            st.chunks_done += n;
            unsaved += bytes;
            if unsaved >= SAVE_EVERY {
                self.store.save_rotation(&st)?;
                unsaved = 0;
            }
            lock(&self.rotation).state = Some(st.clone());
            if rate > 0 {
                // Background work: at most `rate` bytes per second, so readers keep the disk.
                let due = Duration::from_secs_f64(bytes as f64 / rate as f64);
                if let Some(rest) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
        }
        self.store.save_rotation(&st)?;
        if !st.records_done {
            {
                let _g = lock(&self.commit_lock);
                for cf in [Cf::Versions, Cf::Acl, Cf::Keys] {
                    self.store.reseal_records(cf)?;
                }
            }
            // Audit events are never rewritten by anyone else; new ones are sealed under the
            // new key already.
            self.store.reseal_records(Cf::Audit)?;
            st.records_done = true;
            self.store.save_rotation(&st)?;
        }
        {
            // Not while a KEK rotation rewraps the data keys' rows.
            let _g = lock(&self.commit_lock);
            self.store.finish_dek_rotation(&mut st)?;
        }
        // The old data keys' wrapped rows are deleted: out of the files too. And the chunks'
        // key tables compacted, so blob files left holding only the old sealing can be dropped.
        if let Err(e) = self.store.purge_old_wraps() {
            tracing::error!("compacting the old data keys' rows out of the state directory: {e}");
        }
        self.store.reclaim_chunk_space();
        self.record(vec![Draft::new(EventKind::KeyChange, "arcad")
            .detail("action", "rotate-dek finished")
            .detail("key", st.target.to_string())
            .detail("chunks", st.chunks_done.to_string())]);
        tracing::info!(
            arca_event = EventKind::KeyChange.as_str(),
            key = st.target,
            chunks = st.chunks_done,
            "data-key rotation finished"
        );
        lock(&self.rotation).state = Some(st);
        Ok(())
    }

    /// `arca key rotate-kek`: a new key-encryption key at `path` (the configured rotation
    /// path), every wrapped key rewrapped under it in one write.
    pub fn rotate_kek(&self, c: &Caller, path: &Path) -> Result<KekRotated> {
        self.require(c, None, Permission::Admin, "rotate the key-encryption key")?;
        self.refuse_in_fleet("rotate-kek")?;
        let _g = lock(&self.commit_lock);
        let new_file = std::path::PathBuf::from(format!("{}.new", path.display()));
        // A `.new` left by an interrupted rotation that never reached the store is stale: the
        // store still opens with the current key, which is the one in memory.
        let _ = std::fs::remove_file(&new_file);
        let kek = Kek::generate_file(&new_file).map_err(StoreError::from)?;
        let event = ev(c, EventKind::KeyChange)
            .detail("action", "rotate-kek")
            .detail("key_file", path.display().to_string());
        let n = match self.store.rotate_kek(kek, event) {
            Ok(n) => n,
            Err(e) => {
                // Nothing was written: the new key is not needed.
                let _ = std::fs::remove_file(&new_file);
                return Err(e.into());
            }
        };
        // From here the store needs the new key: `.new` is never removed, only renamed. If the
        // rename fails, arcad's next start finds it there and completes it.
        let placed = std::fs::rename(&new_file, path).and_then(|()| match path.parent() {
            Some(dir) => std::fs::File::open(dir).and_then(|d| d.sync_all()),
            None => Ok(()),
        });
        if let Err(e) = placed {
            tracing::error!(new = %new_file.display(), "the keys are rewrapped, but the new key file could not be put in place: {e}");
            return Err(RegistryError::Store(StoreError::Io {
                path: new_file.clone(),
                source: e,
            }));
        }
        // The old wraps would still open with the old KEK: leave them in no file of ours. The
        // rotation itself is complete either way.
        let purged = match self.store.purge_old_wraps() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("the key-encryption key is rotated, but compacting the old wrapped keys out of the state directory failed: {e}");
                false
            }
        };
        tracing::info!(arca_event = EventKind::KeyChange.as_str(), key_file = %path.display(), rewrapped = n, purged, "key-encryption key rotated");
        Ok(KekRotated {
            key_file: path.display().to_string(),
            rewrapped_keys: n,
            old_wraps_purged: purged,
        })
    }
}
