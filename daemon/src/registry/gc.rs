//! Retention and garbage collection. Versions archived for longer than their model's retention
//! are removed (with a `gc_removal` event in the same write), unless a version that stays names
//! them as its parent; then the chunks recorded as possibly unreferenced (`Cf::Gc`) are examined
//! under the pin lock and deleted unless a version in the catalog uses them, an upload pins
//! them, or a file open in the mount reads them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arca_core::api::{GcReport, Permission, Status, VersionRef};
use arca_core::audit::{Draft, EventKind};
use arca_core::{ChunkId, ModelName, ModelVersion};

use super::{lock, now, Catalog, Registry, Result};
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
        let access = self.access();
        expired_in(&self.catalog(), |m| access.policy(m).retention_days, now())
    }

    /// One collection. `c` is the caller of `arca gc` (admin on every model), or `None` for the
    /// daemon's periodic run. On a fleet host, `arca gc` (and the periodic run where
    /// `[fleet] gc_packs` is set) then collects the fleet's packs (`fleet_gc.rs`).
    pub fn gc(&self, c: Option<&Caller>, dry_run: bool) -> Result<GcReport> {
        if let Some(c) = c {
            self.require(c, None, Permission::Admin, "run garbage collection")?;
        }
        let _one = lock(&self.gc_lock);
        let mut report = self.gc_here(c, dry_run)?;
        if let Some(f) = &self.fleet {
            if c.is_some() || f.cfg.gc_packs {
                report.fleet = Some(self.gc_fleet(f, c, dry_run)?);
            }
        }
        Ok(report)
    }

    /// Retention, then this host's unreferenced chunks.
    fn gc_here(&self, c: Option<&Caller>, dry_run: bool) -> Result<GcReport> {
        // The whole run holds the commit lock: the catalog, the candidate rows and the mount's
        // snapshot cannot change under it (a deletion commits its candidate rows, leaves the
        // catalog and republishes the mount's snapshot all under this lock), so a chunk is
        // judged against one consistent state.
        let _commit = self.commit_guard_caught_up()?;
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
                )
                .detail("archived_at", archived_at(&cur, now()).to_string());
            self.store.delete_version(&cur, vec![event])?;
            self.remove_from_catalog(name, version);
            tracing::info!(arca_event = EventKind::GcRemoval.as_str(), model = %name, version = %version, "retention: archived version removed");
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
                if let Some(n) = self.store.cached_len(&id)? {
                    report.deleted_chunks += 1;
                    report.deleted_bytes += n as u64;
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

/// Archived versions whose retention has run out at `t`, counted from when they were archived
/// (not created: `promote`, which a user may hold without `delete`, must not be able to make an
/// old version disappear at the next run), less every parent of a version that stays.
fn expired_in(
    cat: &Catalog,
    retention_days: impl Fn(&ModelName) -> u32,
    t: u64,
) -> Vec<Arc<VersionRecord>> {
    let mut doomed: BTreeMap<(ModelName, ModelVersion), Arc<VersionRecord>> = BTreeMap::new();
    for (name, vs) in cat {
        let days = u64::from(retention_days(name));
        for r in vs.values() {
            if r.status == Status::Archived && archived_at(r, t).saturating_add(days * 86_400) <= t
            {
                doomed.insert((name.clone(), r.metadata.version.clone()), r.clone());
            }
        }
    }
    // A parent stays while a version that stays names it; that may keep its own parent.
    loop {
        let kept_parents: Vec<(ModelName, ModelVersion)> = cat
            .iter()
            .flat_map(|(name, vs)| vs.values().map(move |r| (name, r)))
            .filter(|(name, r)| {
                !doomed.contains_key(&((*name).clone(), r.metadata.version.clone()))
            })
            .filter_map(|(name, r)| r.metadata.parent_version.clone().map(|p| (name.clone(), p)))
            .collect();
        let before = doomed.len();
        for k in kept_parents {
            doomed.remove(&k);
        }
        if doomed.len() == before {
            break;
        }
    }
    doomed.into_values().collect()
}

/// When `r` was archived: its newest transition to `archived`. A record without one (written
/// before histories were kept) counts as archived now, so retention never removes it early.
fn archived_at(r: &VersionRecord, now: u64) -> u64 {
    r.history
        .iter()
        .rev()
        .find(|h| h.to == Status::Archived)
        .map_or(now, |h| h.at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arca_core::api::Transition;
    use arca_core::metadata::PublishedMetadata;
    use arca_core::{MerkleRoot, MetadataDigest};

    const DAY: u64 = 86_400;

    fn rec(v: &str, created: u64, archived: Option<u64>, parent: Option<&str>) -> VersionRecord {
        let mut metadata = PublishedMetadata::new("m".parse().unwrap(), v.parse().unwrap());
        metadata.parent_version = parent.map(|p| p.parse().unwrap());
        let history = archived
            .map(|at| {
                vec![Transition {
                    from: Status::Deprecated,
                    to: Status::Archived,
                    by: "u".into(),
                    by_uid: 1,
                    at,
                    ticket: None,
                    reason: None,
                    seq: 1,
                }]
            })
            .unwrap_or_default();
        VersionRecord {
            format: crate::manifest::RECORD_FORMAT,
            metadata,
            created_by: "u".into(),
            created_by_uid: 1,
            created_at: created,
            status: if archived.is_some() {
                Status::Archived
            } else {
                Status::Development
            },
            merkle_root: MerkleRoot([0; 32]),
            metadata_digest: MetadataDigest([0; 32]),
            signer: None,
            files: Vec::new(),
            history,
            approvals: Vec::new(),
        }
    }

    fn catalog(recs: Vec<VersionRecord>) -> Catalog {
        let mut c = Catalog::new();
        for r in recs {
            c.entry(r.metadata.name.clone())
                .or_default()
                .insert(r.metadata.version.clone(), Arc::new(r));
        }
        c
    }

    fn names(v: Vec<Arc<VersionRecord>>) -> Vec<String> {
        v.iter().map(|r| r.metadata.version.to_string()).collect()
    }

    #[test]
    fn retention_counts_from_archiving_and_keeps_parents() {
        let now = 1000 * DAY;
        // Created 900 days ago, archived a day ago: kept under 30 days' retention.
        let c = catalog(vec![rec("1.0.0", now - 900 * DAY, Some(now - DAY), None)]);
        assert!(names(expired_in(&c, |_| 30, now)).is_empty());
        // Archived 31 days ago: removed.
        let c = catalog(vec![rec(
            "1.0.0",
            now - 900 * DAY,
            Some(now - 31 * DAY),
            None,
        )]);
        assert_eq!(names(expired_in(&c, |_| 30, now)), ["1.0.0"]);
        // Archived, but no transition recorded: counts from now (kept under any retention
        // but 0, which removes a version as soon as it is archived).
        let mut r = rec("1.0.0", 0, Some(0), None);
        r.history.clear();
        assert!(names(expired_in(&catalog(vec![r]), |_| 1, now)).is_empty());
        // 1 <- 2 <- 3: 3 stays (development), so 2 stays, so 1 stays; 4 (no child) goes.
        let old = Some(now - 400 * DAY);
        let c = catalog(vec![
            rec("1.0.0", 0, old, None),
            rec("2.0.0", 0, old, Some("1.0.0")),
            rec("3.0.0", 0, None, Some("2.0.0")),
            rec("4.0.0", 0, old, Some("1.0.0")),
        ]);
        assert_eq!(names(expired_in(&c, |_| 30, now)), ["4.0.0"]);
        // Without 3, the whole archived chain goes.
        let c = catalog(vec![
            rec("1.0.0", 0, old, None),
            rec("2.0.0", 0, old, Some("1.0.0")),
        ]);
        assert_eq!(names(expired_in(&c, |_| 30, now)), ["1.0.0", "2.0.0"]);
    }
}
