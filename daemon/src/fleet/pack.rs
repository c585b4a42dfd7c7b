//! Pack objects: how chunks travel to and from a fleet's object store.
//!
//! A pack holds sealed chunk envelopes exactly as RocksDB holds them (no re-encryption: the
//! envelope's AEAD binds each one to its chunk id, key id and length), back to back in the
//! order they were added (a file's chunks in file order, so a sequential reader's chunks are
//! one contiguous extent), then a sealed index, then a trailer. Its name is a keyed hash of its
//! bytes (`Keyring::pack_id`); it is written once with a create-only put and never changed.
//! Layout: docs/format.md, "Pack objects".
//!
//! Which pack holds a chunk is not read from packs: the log entry that made a chunk part of the
//! fleet names its pack, offset and length, signed and sealed with the rest of the entry. The
//! index inside a pack is for tools that look at packs alone (fleet GC, repacking, checks).

use arca_core::id::{ChunkId, PackId};

use crate::crypt::{CryptError, Keyring};

pub const PACK_MAGIC: &[u8; 4] = b"arcP";
pub const PACK_FORMAT: u8 = 1;
/// Header: magic and format byte.
pub const PACK_HEADER: usize = 5;
/// Trailer: the sealed index's length (u32 LE), then the magic again.
const TRAILER: usize = 8;
/// A pack is closed once it holds this many bytes (the issue asks for 16–64 MiB: few objects,
/// few requests per GiB, and a size that one ranged GET per read-ahead window handles well).
pub const PACK_TARGET: usize = 32 << 20;
/// Bytes per index entry: chunk id, offset (u64 LE), sealed length (u32 LE).
const INDEX_ENTRY: usize = 32 + 8 + 4;
/// The sealed index's record binding (column family and row of the record envelope).
const INDEX_CF: &str = "pack";
const INDEX_ROW: &[u8] = b"index";

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("pack: {0}")]
    Malformed(&'static str),
    #[error("pack index: {0}")]
    Crypt(#[from] CryptError),
}

/// Where a sealed chunk sits in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkLoc {
    pub pack: PackId,
    /// Offset of the sealed envelope in the pack.
    pub offset: u64,
    /// The sealed envelope's length.
    pub len: u32,
}

impl ChunkLoc {
    /// The fixed-size local encoding (pack id, offset u64 LE, length u32 LE).
    pub fn to_bytes(&self) -> [u8; 44] {
        let mut b = [0u8; 44];
        b[..32].copy_from_slice(&self.pack.0);
        b[32..40].copy_from_slice(&self.offset.to_le_bytes());
        b[40..].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 44 {
            return None;
        }
        Some(Self {
            pack: PackId(b[..32].try_into().ok()?),
            offset: u64::from_le_bytes(b[32..40].try_into().ok()?),
            len: u32::from_le_bytes(b[40..44].try_into().ok()?),
        })
    }
}

/// A pack being filled.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<(ChunkId, u64, u32)>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(PACK_TARGET + (1 << 20));
        buf.extend_from_slice(PACK_MAGIC);
        buf.push(PACK_FORMAT);
        Self {
            buf,
            entries: Vec::new(),
        }
    }

    /// Appends one sealed chunk envelope.
    pub fn add(&mut self, id: ChunkId, sealed: &[u8]) -> Result<(), PackError> {
        let len =
            u32::try_from(sealed.len()).map_err(|_| PackError::Malformed("chunk too large"))?;
        self.entries.push((id, self.buf.len() as u64, len));
        self.buf.extend_from_slice(sealed);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes so far (the index and trailer come on top).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn full(&self) -> bool {
        self.buf.len() >= PACK_TARGET
    }

    /// Seals the index, appends it and the trailer, and names the pack.
    pub fn finish(mut self, keys: &Keyring) -> Result<FinishedPack, PackError> {
        let mut index = Vec::with_capacity(4 + self.entries.len() * INDEX_ENTRY);
        index.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (id, off, len) in &self.entries {
            index.extend_from_slice(&id.0);
            index.extend_from_slice(&off.to_le_bytes());
            index.extend_from_slice(&len.to_le_bytes());
        }
        let sealed = keys.seal_record(INDEX_CF, INDEX_ROW, &index)?;
        let sealed_len =
            u32::try_from(sealed.len()).map_err(|_| PackError::Malformed("index too large"))?;
        self.buf.extend_from_slice(&sealed);
        self.buf.extend_from_slice(&sealed_len.to_le_bytes());
        self.buf.extend_from_slice(PACK_MAGIC);
        let name = keys.pack_id(&self.buf);
        let locs = self
            .entries
            .into_iter()
            .map(|(id, offset, len)| {
                (
                    id,
                    ChunkLoc {
                        pack: name,
                        offset,
                        len,
                    },
                )
            })
            .collect();
        Ok(FinishedPack {
            name,
            bytes: self.buf,
            locs,
        })
    }
}

/// A closed pack: its name, its bytes, and where each chunk sits in it.
pub struct FinishedPack {
    pub name: PackId,
    pub bytes: Vec<u8>,
    pub locs: Vec<(ChunkId, ChunkLoc)>,
}

/// The length of a pack's sealed index, from its last 8 bytes.
pub fn index_len_from_trailer(trailer: &[u8]) -> Result<usize, PackError> {
    if trailer.len() != TRAILER || &trailer[4..] != PACK_MAGIC {
        return Err(PackError::Malformed("bad trailer"));
    }
    Ok(u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) as usize)
}

/// Reads a whole pack's index (what fleet GC and checks use), checking its structure: every
/// entry inside the pack's body, in order, none overlapping.
pub fn read_index(keys: &Keyring, pack: &[u8]) -> Result<Vec<(ChunkId, u64, u32)>, PackError> {
    if pack.len() < PACK_HEADER + TRAILER || &pack[..4] != PACK_MAGIC || pack[4] != PACK_FORMAT {
        return Err(PackError::Malformed("not a format-1 pack"));
    }
    let n = index_len_from_trailer(&pack[pack.len() - TRAILER..])?;
    let body_end = pack
        .len()
        .checked_sub(TRAILER + n)
        .filter(|&e| e >= PACK_HEADER)
        .ok_or(PackError::Malformed("index larger than the pack"))?;
    let index = keys.open_record(INDEX_CF, INDEX_ROW, &pack[body_end..pack.len() - TRAILER])?;
    if index.len() < 4 {
        return Err(PackError::Malformed("short index"));
    }
    let count = u32::from_le_bytes([index[0], index[1], index[2], index[3]]) as usize;
    if index.len() != 4 + count * INDEX_ENTRY {
        return Err(PackError::Malformed("index length"));
    }
    let mut out = Vec::with_capacity(count);
    let mut at = PACK_HEADER as u64;
    for e in index[4..].chunks_exact(INDEX_ENTRY) {
        let id = ChunkId(e[..32].try_into().map_err(|_| PackError::Malformed("id"))?);
        let off = u64::from_le_bytes(
            e[32..40]
                .try_into()
                .map_err(|_| PackError::Malformed("offset"))?,
        );
        let len = u32::from_le_bytes(
            e[40..44]
                .try_into()
                .map_err(|_| PackError::Malformed("length"))?,
        );
        if off != at || off + len as u64 > body_end as u64 {
            return Err(PackError::Malformed("index entries out of place"));
        }
        at = off + len as u64;
        out.push((id, off, len));
    }
    if at != body_end as u64 {
        return Err(PackError::Malformed(
            "bytes in the pack that no index entry covers",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretBytes;

    fn keys() -> Keyring {
        Keyring::new(
            vec![(1, SecretBytes::from_array([1; 32]))],
            1,
            SecretBytes::from_array([2; 32]),
        )
    }

    #[test]
    fn a_pack_round_trips_and_its_chunks_open_where_the_locations_say() {
        let k = keys();
        let mut b = PackBuilder::new();
        let mut plain = Vec::new();
        for i in 0..5u8 {
            let p = vec![i; 1000 + i as usize * 70_000];
            let id = k.chunk_id(&p);
            b.add(id, &k.seal_chunk(&id, &p).unwrap()).unwrap();
            plain.push((id, p));
        }
        let FinishedPack { name, bytes, locs } = b.finish(&k).unwrap();
        assert_eq!(name, k.pack_id(&bytes));
        let index = read_index(&k, &bytes).unwrap();
        assert_eq!(index.len(), 5);
        for ((id, p), (lid, loc)) in plain.iter().zip(&locs) {
            assert_eq!(id, lid);
            let env = &bytes[loc.offset as usize..loc.offset as usize + loc.len as usize];
            assert_eq!(&k.open_chunk(id, env).unwrap(), p);
            assert_eq!(ChunkLoc::from_bytes(&loc.to_bytes()), Some(*loc));
        }
        // A chunk read at another chunk's place does not open: a swapped or shifted pack is
        // caught by the envelope, whatever the index says.
        let (id0, _) = &plain[0];
        let l1 = locs[1].1;
        let env1 = &bytes[l1.offset as usize..l1.offset as usize + l1.len as usize];
        assert!(k.open_chunk(id0, env1).is_err());
    }

    #[test]
    fn a_damaged_index_is_refused() {
        let k = keys();
        let mut b = PackBuilder::new();
        let p = vec![9u8; 4096];
        let id = k.chunk_id(&p);
        b.add(id, &k.seal_chunk(&id, &p).unwrap()).unwrap();
        let bytes = b.finish(&k).unwrap().bytes;
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 20] ^= 1;
        assert!(read_index(&k, &flipped).is_err());
        assert!(read_index(&k, &bytes[..n - 1]).is_err());
        let other = Keyring::new(
            vec![(1, SecretBytes::from_array([3; 32]))],
            1,
            SecretBytes::from_array([2; 32]),
        );
        assert!(read_index(&other, &bytes).is_err());
    }
}
