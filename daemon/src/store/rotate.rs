//! Key rotation in the store.
//!
//! - KEK rotation rewraps every wrapped key in `meta` (data keys, the id key, the audit signing
//!   key) under a new key-encryption key in one synced write. Nothing else changes: the data
//!   is sealed under data keys, not under the KEK. Then `purge_old_wraps` compacts `meta` so the
//!   old wraps are in no table or log file of the state directory (docs/operations.md says what
//!   that does and does not protect).
//! - DEK rotation adds a new data key and makes it current (one synced write with its audit
//!   event and a `rotation` row in `meta`), then re-seals every chunk and every sealed record
//!   under it in the background. Progress is saved only after the re-sealed chunks are flushed,
//!   so a crash resumes from a point whose work is durable. At the end the old data keys' rows
//!   are deleted from `meta` (they stay in memory until the daemon stops: a reader may hold
//!   bytes sealed under them a moment longer).

use arca_core::audit::Draft;
use arca_core::ChunkId;

use super::cache::Here;
use super::kv::{Batch, Cf};
use super::{dek_label, Store, StoreError, DEK_CURRENT, ID_KEY};
use crate::crypt::sealed_key_id;
use crate::keys::{Kek, SecretBytes};

const ROTATION: &[u8] = b"rotation";
/// Labels under which `meta` holds keys wrapped by the KEK, besides `dek/N`.
const WRAPPED: [&str; 2] = [ID_KEY, super::audit::AUDIT_KEY_LABEL];

/// A data-key rotation, as kept in `meta` (plain JSON: it holds no secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RotationState {
    /// The new data key's id.
    pub target: u32,
    pub started_at: u64,
    /// Chunks up to and including this id are re-sealed and durable.
    pub resume_after: Option<ChunkId>,
    pub chunks_done: u64,
    /// Chunks in the store when the rotation started (an estimate for progress only).
    pub chunks_total: u64,
    pub records_done: bool,
    pub finished_at: Option<u64>,
}

impl Store {
    pub fn rotation(&self) -> Result<Option<RotationState>, StoreError> {
        match self.kv.get(Cf::Meta, ROTATION)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("rotation record: {e}"))),
        }
    }

    fn rotation_put(&self, b: &mut Batch, st: &RotationState) -> Result<(), StoreError> {
        let json = serde_json::to_vec(st)
            .map_err(|e| StoreError::Corrupt(format!("encoding the rotation record: {e}")))?;
        b.put(Cf::Meta, ROTATION, json);
        Ok(())
    }

    /// Starts a DEK rotation: a new data key, current from this write on. Refused while one is
    /// running.
    pub fn begin_dek_rotation(&self, event: Draft) -> Result<RotationState, StoreError> {
        if let Some(st) = self.rotation()? {
            if st.finished_at.is_none() {
                return Err(StoreError::Busy(format!(
                    "a data-key rotation to key {} is already running",
                    st.target
                )));
            }
        }
        let target = self.keys.key_ids().last().copied().unwrap_or(0) + 1;
        let dek = SecretBytes::random()?;
        let wrapped = self.kek().wrap(&dek_label(target), &dek)?;
        let st = RotationState {
            target,
            started_at: super::audit::now_ms() / 1000,
            resume_after: None,
            chunks_done: 0,
            chunks_total: self.kv.estimate_keys(Cf::Cache)?,
            records_done: false,
            finished_at: None,
        };
        let mut b = Batch::default();
        b.put(Cf::Meta, dek_label(target).as_bytes(), wrapped);
        b.put(Cf::Meta, DEK_CURRENT, target.to_le_bytes().to_vec());
        self.rotation_put(&mut b, &st)?;
        // Chunk writers pass the gate: none is mid-way with the old key once this holds it.
        let _gate = self.seal_gate.write().unwrap_or_else(|p| p.into_inner());
        // Chunks sealed under the old key and still pending have no row yet, so the scan over
        // the index would pass them by: indexed now, before the switch, so it finds them.
        {
            let mut app = self.appender.lock().unwrap_or_else(|p| p.into_inner());
            self.checkpoint(&mut app, true)?;
        }
        self.commit_audited(b, vec![event], Vec::new(), true)?;
        self.keys.add_current(target, dek);
        Ok(st)
    }

    /// Re-seals up to `max` chunks after `st.resume_after` that are not yet under the target
    /// key. Returns the last chunk id examined (None: no chunk left) and the plaintext bytes
    /// re-sealed. The caller holds the pin lock (so GC cannot delete a chunk between the read
    /// and the write here) and calls `save_rotation` from time to time.
    pub fn rotate_chunks(
        &self,
        st: &RotationState,
        max: usize,
    ) -> Result<(Option<ChunkId>, u64, u64), StoreError> {
        let from = match &st.resume_after {
            // The successor of the last id done: the id with one more byte.
            Some(id) => {
                let mut k = id.as_bytes().to_vec();
                k.push(0);
                k
            }
            None => Vec::new(),
        };
        let mut last = None;
        let (mut n, mut bytes) = (0u64, 0u64);
        let crypt = |id: &ChunkId| {
            let what = format!("re-sealing chunk {id}");
            move |source| StoreError::Crypt { what, source }
        };
        // Every chunk here has a `cache` row (format 3), in id order like `chunks`.
        for item in self
            .kv
            .range(Cf::Cache, &from, &[0xff; 33], false)
            .take(max)
        {
            let (k, _) = item?;
            let id = ChunkId(
                (*k).try_into()
                    .map_err(|_| StoreError::Corrupt("a chunk key is not 32 bytes".into()))?,
            );
            last = Some(id);
            n += 1;
            // The row now, not the iterator's snapshot of it: GC may have deleted the chunk since.
            match self.cache_row(&id)? {
                // In a local pack file: re-sealed into the pack file pushes append to; its row
                // moves there, and the old bytes are punched out, once that is durable.
                Some(Here::Pack(loc)) => {
                    let Some(sealed) = self.read_packed(&loc)? else {
                        continue;
                    };
                    if sealed_key_id(&sealed) == Some(st.target) {
                        continue;
                    }
                    let plain = self.keys.open_chunk(&id, &sealed).map_err(crypt(&id))?;
                    bytes += plain.len() as u64;
                    let mut app = self.appender.lock().unwrap_or_else(|p| p.into_inner());
                    self.append(&mut app, &id, &plain, Some(loc))?;
                }
                // In RocksDB (a store from before format 3): re-sealed in place.
                Some(Here::Db(_)) => {
                    let Some(v) = self.kv.get(Cf::Chunks, &k)? else {
                        continue;
                    };
                    if sealed_key_id(&v) == Some(st.target) {
                        continue;
                    }
                    let plain = self.keys.open_chunk(&id, &v).map_err(crypt(&id))?;
                    bytes += plain.len() as u64;
                    let sealed = self.keys.seal_chunk(&id, &plain).map_err(crypt(&id))?;
                    self.kv.replace_chunk(&k, &sealed)?;
                }
                None => {}
            }
        }
        Ok((last, n, bytes))
    }

    /// Makes the re-sealed chunks durable (and moves their rows), then records the progress.
    pub fn save_rotation(&self, st: &RotationState) -> Result<(), StoreError> {
        self.flush_chunks()?;
        let mut b = Batch::default();
        self.rotation_put(&mut b, st)?;
        Ok(self.kv.commit(b)?)
    }

    /// Re-seals every sealed record of `cf` not yet under the current key (rows whose value
    /// is not a sealed record, such as audit checkpoints, are left alone). The caller holds
    /// whatever lock serialises writers of `cf`.
    pub fn reseal_records(&self, cf: Cf) -> Result<u64, StoreError> {
        let target = self.keys.current_key_id();
        let mut n = 0u64;
        let mut b = Batch::default();
        for item in self.kv.scan(cf) {
            let (k, v) = item?;
            if !v.starts_with(crate::crypt::RECORD_MAGIC) || sealed_key_id(&v) == Some(target) {
                continue;
            }
            let plain =
                self.keys
                    .open_record(cf.name(), &k, &v)
                    .map_err(|source| StoreError::Crypt {
                        what: format!("re-sealing {} record {}", cf.name(), hex::encode(&k)),
                        source,
                    })?;
            let sealed = self
                .keys
                .seal_record(cf.name(), &k, &plain)
                .map_err(|source| StoreError::Crypt {
                    what: format!("re-sealing {} record", cf.name()),
                    source,
                })?;
            b.put(cf, &k, sealed);
            n += 1;
            if n.is_multiple_of(10_000) {
                self.kv.commit(std::mem::take(&mut b))?;
            }
        }
        self.kv.commit(b)?;
        Ok(n)
    }

    /// Ends a DEK rotation: everything is under the target key and durable; the old data keys'
    /// rows go from `meta` (and, by `purge_old_wraps` afterwards, from its files).
    ///
    /// The `rotation` row is plain JSON that anyone who can write the state directory can edit:
    /// a forged `target` must not make arcad delete the data key everything is sealed under. So
    /// the rotation finishes only towards the current data key, which is never deleted.
    pub fn finish_dek_rotation(&self, st: &mut RotationState) -> Result<(), StoreError> {
        let current = self.keys.current_key_id();
        if st.target != current {
            return Err(StoreError::Refused(format!(
                "the data-key rotation names key {} as its target, but the current data key is {current}: the rotation record was altered; not deleting any data key",
                st.target
            )));
        }
        self.flush_chunks()?;
        st.finished_at = Some(super::audit::now_ms() / 1000);
        let mut b = Batch::default();
        for id in self.keys.key_ids() {
            if id != st.target {
                b.delete(Cf::Meta, dek_label(id).as_bytes());
            }
        }
        self.rotation_put(&mut b, st)?;
        Ok(self.kv.commit(b)?)
    }

    /// Rewraps every wrapped key under `new` (whose file the caller has already written) in one
    /// synced write, and from then on uses `new`. An error means nothing was written.
    pub fn rotate_kek(&self, new: Kek, event: Draft) -> Result<u64, StoreError> {
        let old = self.kek();
        let mut n = 0u64;
        let mut b = Batch::default();
        let mut labels: Vec<String> = self.keys.key_ids().into_iter().map(dek_label).collect();
        labels.extend(WRAPPED.iter().map(|s| s.to_string()));
        for label in labels {
            let Some(w) = self.kv.get(Cf::Meta, label.as_bytes())? else {
                continue;
            };
            let key = old.unwrap_key(&label, &w)?;
            b.put(Cf::Meta, label.as_bytes(), new.wrap(&label, &key)?);
            n += 1;
        }
        drop(old);
        self.commit_audited(b, vec![event], Vec::new(), true)?;
        *self.kek.write().unwrap_or_else(|p| p.into_inner()) = new;
        Ok(n)
    }

    /// Removes overwritten and deleted wrapped keys from the files of the state directory: after
    /// a KEK rotation, the keys wrapped under the old KEK; after a DEK rotation, the old data
    /// keys' rows. Only `meta` holds wrapped keys.
    pub fn purge_old_wraps(&self) -> Result<(), StoreError> {
        Ok(self.kv.purge_overwritten(Cf::Meta)?)
    }
}
