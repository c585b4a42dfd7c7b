//! Chunk pins: which chunks in-flight uploads and streams rely on. A chunk may be deleted only
//! while nobody pins it and no committed version references it, and that decision is taken under
//! the pin lock. Ingest pins a chunk *before* it checks whether the chunk exists, so a concurrent
//! deletion either sees the pin or happens before the existence check (and the chunk is then
//! written again). A stream (`get` of a file, `verify`) looks its version up and pins its chunks
//! in one hold of the lock (`pin_found`), so a deletion and a collection either happened before
//! (the look-up fails) or see the pin (the chunks stay until the stream's [`PinGuard`] drops).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arca_core::ChunkId;

#[derive(Default)]
pub struct Pins {
    counts: Mutex<HashMap<ChunkId, u32>>,
}

impl Pins {
    fn lock(&self) -> MutexGuard<'_, HashMap<ChunkId, u32>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pin(&self, id: ChunkId) {
        *self.lock().entry(id).or_insert(0) += 1;
    }

    pub fn unpin_all(&self, ids: &[ChunkId]) {
        let mut m = self.lock();
        Self::unpin_locked(&mut m, ids);
    }

    fn unpin_locked(m: &mut HashMap<ChunkId, u32>, ids: &[ChunkId]) {
        for id in ids {
            if let Some(c) = m.get_mut(id) {
                *c -= 1;
                if *c == 0 {
                    m.remove(id);
                }
            }
        }
    }

    /// Unpins `ids`, then, still under the lock, calls `delete` with those of `candidates` that
    /// nobody pins any more. `delete` must itself check that no committed version references them.
    pub fn unpin_and_collect<E>(
        &self,
        ids: &[ChunkId],
        candidates: &[ChunkId],
        delete: impl FnOnce(Vec<ChunkId>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut m = self.lock();
        Self::unpin_locked(&mut m, ids);
        let free: Vec<ChunkId> = candidates
            .iter()
            .filter(|id| !m.contains_key(*id))
            .copied()
            .collect();
        delete(free)
    }

    /// Runs `f` with the pin lock held: no chunk can be pinned, and no collection can delete
    /// one, meanwhile (key rotation rewrites chunks under it).
    pub fn locked<R>(&self, f: impl FnOnce() -> R) -> R {
        let _m = self.lock();
        f()
    }

    pub fn pinned(&self) -> usize {
        self.lock().len()
    }

    /// Calls `find` under the pin lock and pins the chunks it names before the lock goes, so
    /// nothing can delete them between the look-up and the pin. `find` may read the catalog
    /// (lock order: pins, then catalog) but must not take the pin lock or write anything.
    pub fn pin_found<T, E>(
        self: &Arc<Self>,
        find: impl FnOnce() -> Result<(T, Vec<ChunkId>), E>,
    ) -> Result<(T, PinGuard), E> {
        let mut m = self.lock();
        let (found, mut ids) = find()?;
        ids.sort_unstable();
        ids.dedup();
        for id in &ids {
            *m.entry(*id).or_insert(0) += 1;
        }
        drop(m);
        Ok((
            found,
            PinGuard {
                pins: Arc::clone(self),
                ids,
            },
        ))
    }
}

/// Chunks pinned for as long as a stream runs; unpinned when dropped (the stream ended, failed or
/// its client went away). A collection that meets them leaves them on the candidate list for the
/// next run.
#[must_use = "the chunks are unpinned as soon as the guard is dropped"]
pub struct PinGuard {
    pins: Arc<Pins>,
    ids: Vec<ChunkId>,
}

impl PinGuard {
    /// How many distinct chunks this guard holds.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        self.pins.unpin_all(&self.ids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_collects() {
        let p = Pins::default();
        let (a, b) = (ChunkId([1; 32]), ChunkId([2; 32]));
        p.pin(a);
        p.pin(a);
        p.pin(b);
        let mut got = Vec::new();
        p.unpin_and_collect::<()>(&[a, b], &[a, b], |f| {
            got = f;
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![b], "a is still pinned once");
        assert_eq!(p.pinned(), 1);
    }

    #[test]
    fn a_guard_pins_what_was_found_until_it_drops() {
        let p = Arc::new(Pins::default());
        let (a, b, c) = (ChunkId([1; 32]), ChunkId([2; 32]), ChunkId([3; 32]));
        p.pin(a);
        let (found, guard) = p.pin_found::<_, ()>(|| Ok(("v", vec![a, b, b]))).unwrap();
        assert_eq!(
            (found, guard.len()),
            ("v", 2),
            "repeated chunks are pinned once"
        );
        let collect = |p: &Pins| {
            let mut free = Vec::new();
            p.unpin_and_collect::<()>(&[], &[a, b, c], |f| {
                free = f;
                Ok(())
            })
            .unwrap();
            free
        };
        assert_eq!(collect(&p), vec![c], "a and b are held");
        drop(guard);
        assert_eq!(collect(&p), vec![b, c], "a is still pinned by its upload");
        p.unpin_all(&[a]);
        assert_eq!(p.pinned(), 0);
        // A failed look-up pins nothing.
        assert!(p.pin_found::<(), _>(|| Err("gone")).is_err());
        assert_eq!(p.pinned(), 0);
    }
}
