//! Chunk pins: which chunks in-flight uploads rely on. A chunk may be deleted only while nobody
//! pins it and no committed version references it, and that decision is taken under the pin
//! lock. Ingest pins a chunk *before* it checks whether the chunk exists, so a concurrent
//! deletion either sees the pin or happens before the existence check (and the chunk is then
//! written again).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

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
}
