//! Retention and garbage collection. Archived versions older than their model's retention are
//! removed (with a `gc_removal` event in the same write); then the chunks recorded as possibly
//! unreferenced (`Cf::Gc`) are examined under the pin lock and deleted unless a version in the
//! catalog uses them, an upload pins them, or a file open in the mount reads them.

use std::collections::HashSet;
use std::sync::Arc;

use arca_core::api::{GcReport, Permission, Status, VersionRef};
use arca_core::audit::{Draft, EventKind};
use arca_core::ChunkId;

use super::{lock, now, Registry, Result};
use crate::auth::Caller;
use crate::manifest::VersionRecord;

/// Reads the chunks that files open in the mount hold, once a mount is running.
pub type OpenChunks = Box<dyn Fn() -> HashSet<ChunkId> + Send + Sync>;

impl Registry {
    /// Lets GC see which chunks the mount's open files hold (set once, by the mount).
    pub fn set_open_chunks(&self, f: OpenChunks) {
        let _ = self.open_chunks.set(f);
    }

    fn expired(&self) -> Vec<Arc<VersionRecord>> {
        let t = now();
        let access = self.access();
        self.catalog()
            .iter()
            .flat_map(|(name, vs)| {
                let days = u64::from(access.policy(name).retention_days);
                vs.values()
                    .filter(move |r| {
                        r.status == Status::Archived && r.created_at + days * 86_400 <= t
                    })
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// One collection. `c` is the caller of `arca gc` (admin on every model), or `None` for the
    /// daemon's periodic run.
    pub fn gc(&self, c: Option<&Caller>, dry_run: bool) -> Result<GcReport> {
        if let Some(c) = c {
            self.require(c, None, Permission::Admin, "run garbage collection")?;
        }
        let _one = lock(&self.gc_lock);
        // The whole run holds the commit lock: the catalog, the candidate rows and the mount's
        // snapshot cannot change under it (a deletion commits its candidate rows, leaves the
        // catalog and republishes the mount's snapshot all under this lock), so a chunk is
        // judged against one consistent state.
        let _commit = lock(&self.commit_lock);
        let actor = c.map_or_else(|| "arcad".to_string(), |c| c.user.clone());
        let peer = |d: Draft| match c {
            Some(c) => d.peer(c.uid, c.pid),
            None => d,
        };
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };

        let expired = self.expired();
        let mut gone: HashSet<ChunkId> = HashSet::new();
        for rec in &expired {
            let (name, version) = (&rec.metadata.name, &rec.metadata.version);
            report.expired_versions.push(VersionRef {
                name: name.clone(),
                version: version.clone(),
            });
            if dry_run {
                gone.extend(rec.files.iter().flat_map(|f| f.chunks.iter().map(|c| c.id)));
                continue;
            }
            // Still there and still archived (the lock is held; this guards a stale list).
            let Some(cur) = self.version(name, version) else {
                continue;
            };
            if cur.status != Status::Archived {
                continue;
            }
            let event = peer(Draft::new(EventKind::GcRemoval, actor.clone()))
                .model(name)
                .version(version)
                .detail("reason", "retention")
                .detail(
                    "retention_days",
                    self.access().policy(name).retention_days.to_string(),
                );
            self.store.delete_version(&cur, vec![event])?;
            self.remove_from_catalog(name, version);
            tracing::info!(model = %name, version = %version, "retention: archived version removed");
        }
        if !report.expired_versions.is_empty() && !dry_run {
            // The mount stops exposing them before their chunks are judged below.
            self.changed();
        }

        let mut candidates = self.store.gc_candidates()?;
        if dry_run {
            // What removing the expired versions would add.
            candidates.extend(gone.iter().copied());
            candidates.sort_unstable();
            candidates.dedup();
        }
        report.candidates = candidates.len() as u64;
        let open = self.open_chunks.get().map(|f| f()).unwrap_or_default();
        let skip: HashSet<(String, String)> = if dry_run {
            report
                .expired_versions
                .iter()
                .map(|v| (v.name.to_string(), v.version.to_string()))
                .collect()
        } else {
            HashSet::new()
        };
        let result = self.pins.unpin_and_collect(&[], &candidates, |free| {
            report.pinned = (candidates.len() - free.len()) as u64;
            let wanted: HashSet<&ChunkId> = free.iter().collect();
            let referenced: HashSet<ChunkId> = {
                let cat = self.catalog();
                cat.values()
                    .flat_map(|vs| vs.values())
                    .filter(|r| {
                        !skip.contains(&(
                            r.metadata.name.to_string(),
                            r.metadata.version.to_string(),
                        ))
                    })
                    .flat_map(|r| r.files.iter())
                    .flat_map(|f| f.chunks.iter())
                    .filter(|c| wanted.contains(&c.id))
                    .map(|c| c.id)
                    .collect()
            };
            let mut doomed = Vec::new();
            let mut settled = Vec::new();
            for id in free {
                if referenced.contains(&id) {
                    settled.push(id);
                } else if open.contains(&id) {
                    report.open_in_mount += 1;
                } else {
                    doomed.push(id);
                }
            }
            report.referenced = settled.len() as u64;
            let mut present = Vec::with_capacity(doomed.len());
            for id in doomed {
                // A candidate whose chunk is already gone (deleted by a discarded upload, or
                // never written) only has its row removed.
                if let Some(n) = self.store.with_sealed_chunk(&id, |b| b.len() as u64)? {
                    report.deleted_chunks += 1;
                    report.deleted_bytes += n;
                }
                present.push(id);
            }
            if !dry_run {
                self.store.delete_chunks(&present)?;
                self.store.settle_candidates(&settled)?;
                if !present.is_empty() {
                    self.store.reclaim_chunk_space();
                }
            }
            Ok::<(), crate::store::StoreError>(())
        });
        result?;
        if !dry_run && report.deleted_chunks > 0 {
            self.record(vec![peer(Draft::new(EventKind::GcRemoval, actor))
                .detail("reason", "unreferenced chunks")
                .detail("chunks", report.deleted_chunks.to_string())
                .detail("bytes", report.deleted_bytes.to_string())]);
        }
        if !dry_run {
            tracing::info!(
                expired = report.expired_versions.len(),
                deleted_chunks = report.deleted_chunks,
                deleted_bytes = report.deleted_bytes,
                open_in_mount = report.open_in_mount,
                pinned = report.pinned,
                "garbage collection done"
            );
        }
        Ok(report)
    }
}
