//! The store: typed, sealed access to RocksDB. It owns the key hierarchy's persisted half
//! (wrapped keys in `meta`), hashes natural keys (model names, users) into row keys so that none
//! appears in the database, and seals every value it writes.

pub mod audit;
pub mod kv;
pub mod rotate;

use std::path::{Path, PathBuf};

use arca_core::api::{RoleAssignment, TrustedKey};
use arca_core::audit::Draft;
use arca_core::{ChunkId, ModelName};

use crate::access::{AccessTable, StoredPolicy};

use crate::crypt::{CryptError, Keyring};
use crate::keys::{Kek, KeyError, SecretBytes};
use crate::manifest::VersionRecord;
use kv::{Batch, Cf, Kv, KvError};

const FORMAT_KEY: &[u8] = b"format";
const FORMAT_VALUE: &[u8] = b"arca-store-v1";
const DEK_CURRENT: &[u8] = b"dek-current";
const ID_KEY: &str = "idk";

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Crypt { what: String, source: CryptError },
    #[error("{0}")]
    Corrupt(String),
    /// An operation that cannot run now (another is in progress).
    #[error("{0}")]
    Busy(String),
}

impl StoreError {
    /// The store's file system is full.
    pub fn no_space(&self) -> bool {
        matches!(self, StoreError::Kv(k) if k.no_space())
    }
}

/// An open store.
pub struct Store {
    kv: Kv,
    keys: Keyring,
    /// The daemon's own Ed25519 key, signing the audit trail's checkpoints.
    audit_key: arca_core::sign::SecretKey,
    /// Where the audit chain stands; held across each audited commit.
    chain: std::sync::Mutex<audit::Chain>,
    /// Held (read) while a chunk is sealed and written; taken (write) to switch data keys.
    seal_gate: std::sync::RwLock<()>,
    /// The key-encryption key, for wrapping a new data key and for KEK rotation.
    kek: std::sync::RwLock<Kek>,
    /// Events appended since open, by `EventKind::ALL` index (for metrics).
    event_counts: [std::sync::atomic::AtomicU64; arca_core::audit::EventKind::ALL.len()],
}

/// A policy as stored: the model's name is inside the sealed value (the row key is its hash).
#[derive(serde::Serialize, serde::Deserialize)]
struct PolicyRecord {
    model: ModelName,
    stored: StoredPolicy,
}

fn dek_label(id: u32) -> String {
    format!("dek/{id}")
}

impl Store {
    /// Opens (creating on first use) the store in `state_dir`.
    pub fn open(state_dir: &Path, kek: Kek) -> Result<Self, StoreError> {
        let kek_ref = &kek;
        let io = |source| StoreError::Io {
            path: state_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io)?;
        }
        let kv = Kv::open(&state_dir.join("db"))?;
        let keys = match kv.get(Cf::Meta, FORMAT_KEY)? {
            None => Self::initialise(&kv, kek_ref)?,
            Some(f) if f == FORMAT_VALUE => Self::load_keys(&kv, kek_ref)?,
            Some(_) => {
                return Err(StoreError::Corrupt(
                    "state directory holds an unknown store format".into(),
                ))
            }
        };
        let audit_key = Self::audit_signing_key(&kv, kek_ref)?;
        let chain = std::sync::Mutex::new(Self::load_chain(&kv, &keys)?);
        Ok(Self {
            kv,
            keys,
            audit_key,
            chain,
            event_counts: Default::default(),
            kek: std::sync::RwLock::new(kek),
            seal_gate: std::sync::RwLock::new(()),
        })
    }

    /// First open: new data key 1 and id key, wrapped, written with the format marker in one batch.
    fn initialise(kv: &Kv, kek: &Kek) -> Result<Keyring, StoreError> {
        let dek = SecretBytes::random()?;
        let idk = SecretBytes::random()?;
        let mut b = Batch::default();
        b.put(
            Cf::Meta,
            dek_label(1).as_bytes(),
            kek.wrap(&dek_label(1), &dek)?,
        );
        b.put(Cf::Meta, ID_KEY.as_bytes(), kek.wrap(ID_KEY, &idk)?);
        b.put(Cf::Meta, DEK_CURRENT, 1u32.to_le_bytes().to_vec());
        b.put(Cf::Meta, FORMAT_KEY, FORMAT_VALUE.to_vec());
        kv.commit(b)?;
        Ok(Keyring::new(vec![(1, dek)], 1, idk))
    }

    fn load_keys(kv: &Kv, kek: &Kek) -> Result<Keyring, StoreError> {
        let missing = |what: &str| StoreError::Corrupt(format!("store metadata lacks {what}"));
        let cur = kv
            .get(Cf::Meta, DEK_CURRENT)?
            .ok_or_else(|| missing("the current key id"))?;
        let current = u32::from_le_bytes(
            cur.try_into()
                .map_err(|_| missing("a valid current key id"))?,
        );
        let idk = kek.unwrap_key(
            ID_KEY,
            &kv.get(Cf::Meta, ID_KEY.as_bytes())?
                .ok_or_else(|| missing("the id key"))?,
        )?;
        let mut deks = Vec::new();
        for item in kv.scan(Cf::Meta) {
            let (k, v) = item?;
            if let Some(id) = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| s.strip_prefix("dek/"))
                .and_then(|s| s.parse().ok())
            {
                deks.push((id, kek.unwrap_key(&dek_label(id), &v)?));
            }
        }
        if !deks.iter().any(|(id, _)| *id == current) {
            return Err(missing("the current data key"));
        }
        Ok(Keyring::new(deks, current, idk))
    }

    /// Reads the format marker: the store answers.
    pub fn health(&self) -> Result<(), StoreError> {
        match self.kv.get(Cf::Meta, FORMAT_KEY)? {
            Some(_) => Ok(()),
            None => Err(StoreError::Corrupt("the format marker is gone".into())),
        }
    }

    fn kek(&self) -> std::sync::RwLockReadGuard<'_, Kek> {
        self.kek.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Ok(self.kv.contains(Cf::Chunks, id.as_bytes())?)
    }

    /// Seals and writes a chunk (not yet durable: see `flush_chunks`).
    pub fn put_chunk(&self, id: &ChunkId, plaintext: &[u8]) -> Result<usize, StoreError> {
        // Sealing and writing happen under the gate, so once a data-key rotation has switched
        // keys (under the gate's write side) no chunk sealed under the old key is still being
        // written: the rotation's scan, which starts after the switch, sees every such chunk.
        let _gate = self.seal_gate.read().unwrap_or_else(|p| p.into_inner());
        let sealed = self
            .keys
            .seal_chunk(id, plaintext)
            .map_err(|source| StoreError::Crypt {
                what: format!("sealing chunk {id}"),
                source,
            })?;
        self.kv.put_chunk(id.as_bytes(), &sealed)?;
        Ok(sealed.len())
    }

    /// Runs `f` on the sealed bytes of a chunk, if present, without copying them out first.
    pub fn with_sealed_chunk<R>(
        &self,
        id: &ChunkId,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, StoreError> {
        Ok(self.kv.with_chunk(id.as_bytes(), f)?)
    }

    pub fn delete_chunks(&self, ids: &[ChunkId]) -> Result<(), StoreError> {
        let keys: Vec<&[u8]> = ids.iter().map(|i| i.as_bytes().as_slice()).collect();
        Ok(self.kv.delete_chunks(&keys)?)
    }

    /// After deleting chunks: give back the space of blob files that are now entirely garbage.
    pub fn reclaim_chunk_space(&self) {
        self.kv.compact_chunks();
    }

    pub fn flush_chunks(&self) -> Result<(), StoreError> {
        Ok(self.kv.flush_chunks()?)
    }

    /// After a push: moves what it left in the small records' memtables (over 1 MiB per column
    /// family) to table files, so that memory is free again (see `Kv::flush_small_memtables`).
    pub fn settle_after_push(&self) -> Result<(), StoreError> {
        Ok(self.kv.flush_small_memtables(1 << 20)?)
    }

    fn version_row(&self, name: &str, version: &str) -> [u8; 32] {
        self.keys
            .row_key("version", &[name.as_bytes(), version.as_bytes()])
    }

    /// Writes version records in one synced batch: all of them or none. The caller has flushed
    /// the chunks they reference.
    pub fn put_versions(
        &self,
        recs: &[&VersionRecord],
        events: Vec<Draft>,
    ) -> Result<(), StoreError> {
        self.put_versions_settling(recs, events, &[])
    }

    /// As `put_versions`, also taking `settled` (chunks these versions now reference) off the
    /// GC candidate list in the same write.
    pub fn put_versions_settling(
        &self,
        recs: &[&VersionRecord],
        events: Vec<Draft>,
        settled: &[ChunkId],
    ) -> Result<(), StoreError> {
        let mut b = Batch::default();
        for id in settled {
            b.delete(Cf::Gc, id.as_bytes());
        }
        for rec in recs {
            let row = self.version_row(
                rec.metadata.name.as_str(),
                &rec.metadata.version.to_string(),
            );
            let json = serde_json::to_vec(rec)
                .map_err(|e| StoreError::Corrupt(format!("encoding version record: {e}")))?;
            let sealed = self
                .keys
                .seal_record(Cf::Versions.name(), &row, &json)
                .map_err(|source| StoreError::Crypt {
                    what: "sealing version record".into(),
                    source,
                })?;
            b.put(Cf::Versions, &row, sealed);
        }
        self.commit_audited(b, events, true).map(|_| ())
    }

    /// Every version record. A record that does not open or decode is returned as an error item
    /// (with its row key in hex) so callers can refuse to expose it without hiding the others.
    pub fn versions(&self) -> Result<Vec<Result<VersionRecord, String>>, StoreError> {
        let mut out = Vec::new();
        for item in self.kv.scan(Cf::Versions) {
            let (k, v) = item?;
            out.push(self.open_version(&k, &v));
        }
        Ok(out)
    }

    fn open_version(&self, row: &[u8], sealed: &[u8]) -> Result<VersionRecord, String> {
        let plain = self
            .keys
            .open_record(Cf::Versions.name(), row, sealed)
            .map_err(|e| format!("version record {}: {e}", hex::encode(row)))?;
        let rec: VersionRecord = serde_json::from_slice(&plain)
            .map_err(|e| format!("version record {}: {e}", hex::encode(row)))?;
        // The row key is derived from name and version; a record moved to another row opens
        // (the AEAD binds the row) only if it is the same version, but check anyway.
        if self
            .version_row(
                rec.metadata.name.as_str(),
                &rec.metadata.version.to_string(),
            )
            .as_slice()
            != row
        {
            return Err(format!(
                "version record {} is stored under the wrong key",
                hex::encode(row)
            ));
        }
        Ok(rec)
    }

    /// Removes a version record; its chunks become GC candidates in the same write.
    pub fn delete_version(
        &self,
        rec: &VersionRecord,
        events: Vec<Draft>,
    ) -> Result<(), StoreError> {
        let row = self.version_row(
            rec.metadata.name.as_str(),
            &rec.metadata.version.to_string(),
        );
        let mut b = Batch::default();
        b.delete(Cf::Versions, &row);
        for f in &rec.files {
            for c in &f.chunks {
                b.put(Cf::Gc, c.id.as_bytes(), Vec::new());
            }
        }
        self.commit_audited(b, events, true).map(|_| ())
    }

    fn key_row(&self, uid: u32, key: &arca_core::sign::PublicKey) -> [u8; 32] {
        self.keys
            .row_key("trusted-key", &[&uid.to_le_bytes(), key.as_bytes()])
    }

    pub fn put_trusted_key(&self, k: &TrustedKey, events: Vec<Draft>) -> Result<(), StoreError> {
        let row = self.key_row(k.uid, &k.public_key);
        let json = serde_json::to_vec(k)
            .map_err(|e| StoreError::Corrupt(format!("encoding key record: {e}")))?;
        let sealed = self
            .keys
            .seal_record(Cf::Keys.name(), &row, &json)
            .map_err(|source| StoreError::Crypt {
                what: "sealing key record".into(),
                source,
            })?;
        let mut b = Batch::default();
        b.put(Cf::Keys, &row, sealed);
        self.commit_audited(b, events, true).map(|_| ())
    }

    /// Every trusted key. A record that fails to open is an error: trust decisions must not be
    /// made on a partial list.
    pub fn trusted_keys(&self) -> Result<Vec<TrustedKey>, StoreError> {
        let mut out = Vec::new();
        for item in self.kv.scan(Cf::Keys) {
            let (k, v) = item?;
            let plain = self
                .keys
                .open_record(Cf::Keys.name(), &k, &v)
                .map_err(|source| StoreError::Crypt {
                    what: format!("key record {}", hex::encode(&k)),
                    source,
                })?;
            let rec: TrustedKey = serde_json::from_slice(&plain)
                .map_err(|e| StoreError::Corrupt(format!("key record {}: {e}", hex::encode(&k))))?;
            if self.key_row(rec.uid, &rec.public_key).as_slice() != &*k {
                return Err(StoreError::Corrupt(format!(
                    "key record {} is stored under the wrong key",
                    hex::encode(&k)
                )));
            }
            out.push(rec);
        }
        Ok(out)
    }

    fn seal_json<T: serde::Serialize>(
        &self,
        cf: Cf,
        row: &[u8],
        value: &T,
    ) -> Result<Vec<u8>, StoreError> {
        let json = serde_json::to_vec(value)
            .map_err(|e| StoreError::Corrupt(format!("encoding a {} record: {e}", cf.name())))?;
        self.keys
            .seal_record(cf.name(), row, &json)
            .map_err(|source| StoreError::Crypt {
                what: format!("sealing a {} record", cf.name()),
                source,
            })
    }

    fn open_json<T: serde::de::DeserializeOwned>(
        &self,
        cf: Cf,
        row: &[u8],
        sealed: &[u8],
    ) -> Result<T, StoreError> {
        let plain = self
            .keys
            .open_record(cf.name(), row, sealed)
            .map_err(|source| StoreError::Crypt {
                what: format!("{} record {}", cf.name(), hex::encode(row)),
                source,
            })?;
        serde_json::from_slice(&plain).map_err(|e| {
            StoreError::Corrupt(format!("{} record {}: {e}", cf.name(), hex::encode(row)))
        })
    }

    fn roles_row(&self) -> [u8; 32] {
        self.keys.row_key("roles", &[])
    }

    fn policy_row(&self, model: &ModelName) -> [u8; 32] {
        self.keys.row_key("policy", &[model.as_str().as_bytes()])
    }

    /// Replaces the role assignments (one record: a change is one atomic write).
    pub fn put_roles(
        &self,
        roles: &[RoleAssignment],
        events: Vec<Draft>,
    ) -> Result<(), StoreError> {
        let row = self.roles_row();
        let mut b = Batch::default();
        b.put(Cf::Acl, &row, self.seal_json(Cf::Acl, &row, &roles)?);
        self.commit_audited(b, events, true).map(|_| ())
    }

    pub fn put_policy(
        &self,
        model: &ModelName,
        p: &StoredPolicy,
        events: Vec<Draft>,
    ) -> Result<(), StoreError> {
        let row = self.policy_row(model);
        let mut b = Batch::default();
        b.put(
            Cf::Acl,
            &row,
            self.seal_json(
                Cf::Acl,
                &row,
                &PolicyRecord {
                    model: model.clone(),
                    stored: p.clone(),
                },
            )?,
        );
        self.commit_audited(b, events, true).map(|_| ())
    }

    /// The role assignments and policies. Any record that fails to open is an error: access
    /// decisions must not be made on a partial table.
    pub fn access_table(&self) -> Result<AccessTable, StoreError> {
        let mut t = AccessTable::default();
        let roles_row = self.roles_row();
        for item in self.kv.scan(Cf::Acl) {
            let (k, v) = item?;
            if *k == roles_row {
                t.assignments = self.open_json(Cf::Acl, &k, &v)?;
                continue;
            }
            let rec: PolicyRecord = self.open_json(Cf::Acl, &k, &v)?;
            if self.policy_row(&rec.model).as_slice() != &*k {
                return Err(StoreError::Corrupt(format!(
                    "policy record {} is stored under the wrong key",
                    hex::encode(&k)
                )));
            }
            t.policies.insert(rec.model, rec.stored);
        }
        Ok(t)
    }

    /// Chunk ids that may be unreferenced (see `Cf::Gc`).
    pub fn gc_candidates(&self) -> Result<Vec<ChunkId>, StoreError> {
        let mut out = Vec::new();
        for item in self.kv.scan(Cf::Gc) {
            let (k, _) = item?;
            let id: [u8; 32] = (*k).try_into().map_err(|_| {
                StoreError::Corrupt(format!("gc row {} is not a chunk id", hex::encode(&k)))
            })?;
            out.push(ChunkId(id));
        }
        Ok(out)
    }

    /// Takes chunks off the candidate list (they are referenced after all).
    pub fn settle_candidates(&self, ids: &[ChunkId]) -> Result<(), StoreError> {
        let mut b = Batch::default();
        for id in ids {
            b.delete(Cf::Gc, id.as_bytes());
        }
        Ok(self.kv.commit_opt(b, false)?)
    }

    /// Bytes on disk of the chunk column family (blob and table files).
    pub fn chunk_disk_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.kv.disk_bytes(Cf::Chunks)?)
    }
}
