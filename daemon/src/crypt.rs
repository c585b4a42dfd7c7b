//! Sealing and opening: the chunk envelope (XChaCha20-Poly1305 per 64 KiB segment, so a small
//! read authenticates only a small segment), the record envelope (manifests, key lists), and
//! the keyed hashes (chunk ids, row keys). Byte layouts are in docs/format.md.
//!
//! Authentication failures are one opaque error on purpose: nothing downstream may act on *why*
//! a ciphertext did not open.
//!
//! XChaCha20-Poly1305 is computed as its specification (draft-irtf-cfrg-xchacha) defines it:
//! HChaCha20 derives a subkey from the key and the nonce's first 16 bytes, then the IETF
//! ChaCha20-Poly1305 runs under that subkey with nonce `0^4 || nonce[16..24]`. The IETF AEAD
//! comes from ring, whose assembly is about three times faster here than portable code; the
//! stored format is plain XChaCha20-Poly1305 (a test opens ring's output with RustCrypto's
//! XChaCha20Poly1305). Segment nonces differ only in their last four bytes, so one HChaCha20
//! per chunk serves all its segments. ring's key objects are not zeroized when dropped; they
//! hold only per-chunk subkeys and live for one seal or open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use arca_core::ChunkId;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag as RingTag, UnboundKey, CHACHA20_POLY1305};
use zeroize::Zeroizing;

use crate::keys::SecretBytes;

/// Plaintext bytes per authenticated segment of a chunk.
pub const SEGMENT: usize = 64 * 1024;
const TAG: usize = 16;
const CHUNK_MAGIC: &[u8; 4] = b"arcC";
pub const RECORD_MAGIC: &[u8; 4] = b"arcR";
const FORMAT_V1: u8 = 1;
/// magic (4) + format (1) + key id (4) + plaintext length (4) + nonce (24)
pub const CHUNK_HEADER: usize = 37;
/// magic (4) + format (1) + key id (4) + nonce (24)
const RECORD_HEADER: usize = 33;
const CHUNK_AAD_TAG: &[u8] = b"arca.chunk.v1";
const RECORD_AAD_TAG: &[u8] = b"arca.record.v1";

/// Why something did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptError {
    #[error("sealed value is malformed ({0})")]
    Malformed(&'static str),
    #[error("sealed under key id {0}, which this store does not have")]
    UnknownKey(u32),
    #[error("authentication failed")]
    Authentication,
    #[error("chunk content does not match its id")]
    IdMismatch,
    #[error("the operating system's random source failed")]
    Random,
}

/// One XChaCha20-Poly1305 nonce's worth of keying: the subkey for its first 16 bytes.
struct SubKey {
    key: LessSafeKey,
    /// Bytes 16..24 of the XChaCha nonce; the IETF nonce is four zero bytes and these.
    tail: [u8; 8],
}

impl SubKey {
    fn new(dek: &SecretBytes, nonce: &[u8; 24]) -> Self {
        let mut sub = Zeroizing::new([0u8; 32]);
        let mut derived = chacha20::hchacha::<chacha20::cipher::consts::U10>(
            dek.expose().into(),
            (&nonce[..16]).into(),
        );
        sub.copy_from_slice(&derived);
        zeroize::Zeroize::zeroize(derived.as_mut_slice());
        let key = LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, sub.as_ref())
                .unwrap_or_else(|_| unreachable!("32-byte key")),
        );
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&nonce[16..]);
        Self { key, tail }
    }

    /// The IETF nonce of segment `i`: the segment index is XORed into the XChaCha nonce's last
    /// four bytes, which are the IETF nonce's last four.
    fn nonce(&self, i: u32) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.tail);
        for (b, x) in n[8..].iter_mut().zip(i.to_le_bytes()) {
            *b ^= x;
        }
        Nonce::assume_unique_for_key(n)
    }

    fn seal(&self, i: u32, aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG], CryptError> {
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(i), Aad::from(aad), buf)
            .map_err(|_| CryptError::Malformed("segment too large"))?;
        let mut t = [0u8; TAG];
        t.copy_from_slice(tag.as_ref());
        Ok(t)
    }

    fn open(&self, i: u32, aad: &[u8], buf: &mut [u8], tag: &[u8]) -> Result<(), CryptError> {
        let tag: [u8; TAG] = tag
            .try_into()
            .map_err(|_| CryptError::Malformed("short tag"))?;
        self.key
            .open_in_place_separate_tag(self.nonce(i), Aad::from(aad), RingTag::from(tag), buf, 0..)
            .map(|_| ())
            .map_err(|_| CryptError::Authentication)
    }
}

/// The data key id a sealed chunk or record was sealed under (both envelopes keep it at bytes
/// 5..9, little-endian, after the magic and the format byte).
pub fn sealed_key_id(sealed: &[u8]) -> Option<u32> {
    let b: [u8; 4] = sealed.get(5..9)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// The unwrapped keys of an open store.
pub struct Keyring {
    /// Every data key by id. Keys are added by a rotation and never removed while the daemon
    /// runs: a reader may hold bytes sealed under the previous key a moment longer.
    deks: RwLock<HashMap<u32, Arc<SecretBytes>>>,
    /// The key new objects are sealed under.
    current: AtomicU32,
    id_key: SecretBytes,
    row_key: SecretBytes,
}

impl Keyring {
    pub fn new(deks: Vec<(u32, SecretBytes)>, current: u32, id_key: SecretBytes) -> Self {
        let row_key =
            SecretBytes::from_array(blake3::derive_key("arca 2026 row key v1", id_key.expose()));
        let deks = deks.into_iter().map(|(i, k)| (i, Arc::new(k))).collect();
        Self {
            deks: RwLock::new(deks),
            current: AtomicU32::new(current),
            id_key,
            row_key,
        }
    }

    pub fn current_key_id(&self) -> u32 {
        self.current.load(Ordering::Acquire)
    }

    /// Adds a data key and makes it the one new objects are sealed under.
    pub fn add_current(&self, id: u32, key: SecretBytes) {
        self.deks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::new(key));
        self.current.store(id, Ordering::Release);
    }

    /// Ids of the data keys held.
    pub fn key_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .deks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Content address of a chunk: BLAKE3 keyed with the id key.
    pub fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(self.id_key.expose(), plaintext).as_bytes())
    }

    /// Storage key for a row whose natural key (a model name, a user) must not appear in the
    /// database: BLAKE3 keyed with a key derived from the id key, over a tagged input.
    pub fn row_key(&self, kind: &str, parts: &[&[u8]]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(self.row_key.expose());
        h.update(kind.as_bytes());
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        *h.finalize().as_bytes()
    }

    /// Name of a pack object: keyed so that only holders of the fleet's keys can make a name
    /// that a pack's bytes answer to.
    pub fn pack_id(&self, pack: &[u8]) -> arca_core::id::PackId {
        let k = blake3::derive_key("arca 2026 pack id v1", self.id_key.expose());
        arca_core::id::PackId(*blake3::keyed_hash(&k, pack).as_bytes())
    }

    /// Seed for FastCDC's gear table, secret so that chunk boundaries do not fingerprint content.
    pub fn chunker_seed(&self) -> u64 {
        let k = blake3::derive_key("arca 2026 chunker seed v1", self.id_key.expose());
        u64::from_le_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]])
    }

    fn dek(&self, id: u32) -> Result<Arc<SecretBytes>, CryptError> {
        self.deks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .ok_or(CryptError::UnknownKey(id))
    }

    /// Seals a chunk's plaintext (1 to u32::MAX bytes) under the current data key.
    pub fn seal_chunk(&self, id: &ChunkId, plaintext: &[u8]) -> Result<Vec<u8>, CryptError> {
        let mut out = vec![0u8; sealed_chunk_len(plaintext.len())];
        self.seal_chunk_into(id, plaintext, &mut out)?;
        Ok(out)
    }

    /// `seal_chunk` into `out`, which is `sealed_chunk_len(plaintext.len())` bytes (a push
    /// seals straight into the buffer it writes to its pack file: no allocation and no copy
    /// per chunk). On error `out` may hold plaintext: the caller must not write it anywhere.
    pub fn seal_chunk_into(
        &self,
        id: &ChunkId,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<(), CryptError> {
        let len =
            u32::try_from(plaintext.len()).map_err(|_| CryptError::Malformed("chunk too large"))?;
        if len == 0 {
            // It would have no segment, so no tag: nothing would authenticate its header.
            return Err(CryptError::Malformed("empty chunk"));
        }
        if out.len() != sealed_chunk_len(plaintext.len()) {
            return Err(CryptError::Malformed("envelope buffer of the wrong size"));
        }
        let key_id = self.current_key_id();
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|_| CryptError::Random)?;
        let sub = SubKey::new(&*self.dek(key_id)?, &nonce);
        out[..4].copy_from_slice(CHUNK_MAGIC);
        out[4] = FORMAT_V1;
        out[5..9].copy_from_slice(&key_id.to_le_bytes());
        out[9..13].copy_from_slice(&len.to_le_bytes());
        out[13..CHUNK_HEADER].copy_from_slice(&nonce);
        let mut at = CHUNK_HEADER;
        for (i, seg) in plaintext.chunks(SEGMENT).enumerate() {
            let end = at + seg.len();
            out[at..end].copy_from_slice(seg);
            let tag = sub.seal(
                i as u32,
                &chunk_aad(id, key_id, len, i as u32),
                &mut out[at..end],
            )?;
            out[end..end + TAG].copy_from_slice(&tag);
            at = end + TAG;
        }
        Ok(())
    }

    /// Opens a whole chunk and checks that its plaintext hashes to `id`.
    pub fn open_chunk(&self, id: &ChunkId, sealed: &[u8]) -> Result<Vec<u8>, CryptError> {
        let h = ChunkHeader::parse(sealed)?;
        let plain = self.open_segments(id, &h, sealed, 0, h.segments())?;
        if self.chunk_id(&plain) != *id {
            return Err(CryptError::IdMismatch);
        }
        Ok(plain)
    }

    /// Opens only the segments covering `offset..offset+len` of the chunk's plaintext and returns
    /// those bytes. Each segment is authenticated (bound to the chunk id, its index and the chunk's
    /// length); the whole-chunk id check needs every byte and is done by `open_chunk`.
    pub fn open_chunk_range(
        &self,
        id: &ChunkId,
        sealed: &[u8],
        offset: usize,
        len: usize,
    ) -> Result<Vec<u8>, CryptError> {
        let h = ChunkHeader::parse(sealed)?;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= h.len as usize)
            .ok_or(CryptError::Malformed("range beyond chunk"))?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let first = offset / SEGMENT;
        let last = (end - 1) / SEGMENT;
        let mut plain = self.open_segments(id, &h, sealed, first, last + 1)?;
        // Trimmed in place rather than copied into a new allocation.
        let skip = offset - first * SEGMENT;
        plain.truncate(skip + len);
        plain.drain(..skip);
        Ok(plain)
    }

    fn open_segments(
        &self,
        id: &ChunkId,
        h: &ChunkHeader,
        sealed: &[u8],
        first: usize,
        end: usize,
    ) -> Result<Vec<u8>, CryptError> {
        let sub = SubKey::new(&*self.dek(h.key_id)?, &h.nonce);
        let total = h.len as usize;
        // Exactly the plaintext bytes: whole chunks are kept in the mount's cache, which is
        // weighed by allocation, and an average chunk (32 KiB) is half a segment.
        let plain_end = (end * SEGMENT).min(total);
        let mut out = Vec::with_capacity(plain_end.saturating_sub(first * SEGMENT));
        for i in first..end {
            let plain_start = i * SEGMENT;
            let seg_len = SEGMENT.min(total - plain_start);
            let at = CHUNK_HEADER + i * (SEGMENT + TAG);
            let start = out.len();
            out.extend_from_slice(&sealed[at..at + seg_len]);
            let tag = &sealed[at + seg_len..at + seg_len + TAG];
            sub.open(
                i as u32,
                &chunk_aad(id, h.key_id, h.len, i as u32),
                &mut out[start..],
                tag,
            )?;
        }
        Ok(out)
    }

    /// Seals a record (manifest, key list) bound to its column family and row key.
    pub fn seal_record(
        &self,
        cf: &str,
        row: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptError> {
        let key_id = self.current_key_id();
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|_| CryptError::Random)?;
        let sub = SubKey::new(&*self.dek(key_id)?, &nonce);
        let mut out = Vec::with_capacity(RECORD_HEADER + plaintext.len() + TAG);
        out.extend_from_slice(RECORD_MAGIC);
        out.push(FORMAT_V1);
        out.extend_from_slice(&key_id.to_le_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = sub.seal(0, &record_aad(cf, row), &mut out[RECORD_HEADER..])?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    pub fn open_record(&self, cf: &str, row: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptError> {
        if sealed.len() < RECORD_HEADER + TAG {
            return Err(CryptError::Malformed("record too short"));
        }
        if &sealed[..4] != RECORD_MAGIC || sealed[4] != FORMAT_V1 {
            return Err(CryptError::Malformed("not a v1 record"));
        }
        let key_id = u32::from_le_bytes([sealed[5], sealed[6], sealed[7], sealed[8]]);
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&sealed[9..33]);
        let sub = SubKey::new(&*self.dek(key_id)?, &nonce);
        let body_end = sealed.len() - TAG;
        let mut plain = sealed[RECORD_HEADER..body_end].to_vec();
        sub.open(0, &record_aad(cf, row), &mut plain, &sealed[body_end..])?;
        Ok(plain)
    }
}

/// The parsed fixed header of a sealed chunk, checked against the value's exact length.
#[derive(Debug, Clone, Copy)]
pub struct ChunkHeader {
    pub key_id: u32,
    pub len: u32,
    nonce: [u8; 24],
}

impl ChunkHeader {
    pub fn parse(sealed: &[u8]) -> Result<Self, CryptError> {
        if sealed.len() < CHUNK_HEADER {
            return Err(CryptError::Malformed("chunk too short"));
        }
        if &sealed[..4] != CHUNK_MAGIC || sealed[4] != FORMAT_V1 {
            return Err(CryptError::Malformed("not a v1 chunk"));
        }
        let key_id = u32::from_le_bytes([sealed[5], sealed[6], sealed[7], sealed[8]]);
        let len = u32::from_le_bytes([sealed[9], sealed[10], sealed[11], sealed[12]]);
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&sealed[13..37]);
        let h = Self { key_id, len, nonce };
        // An empty chunk would carry no tag, leaving its header unauthenticated; none is ever
        // sealed (docs/format.md: L >= 1), so one found is a forgery. Found by fuzzing.
        if len == 0 {
            return Err(CryptError::Malformed("empty chunk"));
        }
        if sealed.len() != sealed_chunk_len(len as usize) {
            return Err(CryptError::Malformed(
                "chunk length does not match its header",
            ));
        }
        Ok(h)
    }

    fn segments(&self) -> usize {
        (self.len as usize).div_ceil(SEGMENT)
    }
}

/// Size of a sealed chunk of `len` plaintext bytes.
pub fn sealed_chunk_len(len: usize) -> usize {
    CHUNK_HEADER + len + len.div_ceil(SEGMENT) * TAG
}

fn chunk_aad(id: &ChunkId, key_id: u32, len: u32, seg: u32) -> [u8; 13 + 32 + 12] {
    let mut a = [0u8; 13 + 32 + 12];
    a[..13].copy_from_slice(CHUNK_AAD_TAG);
    a[13..45].copy_from_slice(id.as_bytes());
    a[45..49].copy_from_slice(&key_id.to_le_bytes());
    a[49..53].copy_from_slice(&len.to_le_bytes());
    a[53..57].copy_from_slice(&seg.to_le_bytes());
    a
}

fn record_aad(cf: &str, row: &[u8]) -> Vec<u8> {
    let mut a = RECORD_AAD_TAG.to_vec();
    a.push(cf.len() as u8);
    a.extend_from_slice(cf.as_bytes());
    a.extend_from_slice(row);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring() -> Keyring {
        Keyring::new(
            vec![(1, SecretBytes::random().unwrap())],
            1,
            SecretBytes::random().unwrap(),
        )
    }

    #[test]
    fn an_empty_chunk_is_neither_sealed_nor_opened() {
        let k = ring();
        let id = k.chunk_id(b"");
        assert!(k.seal_chunk(&id, b"").is_err());
        // A forged header-only envelope (no segment, so no tag) for the empty plaintext.
        let mut forged = CHUNK_MAGIC.to_vec();
        forged.push(FORMAT_V1);
        forged.extend_from_slice(&1u32.to_le_bytes());
        forged.extend_from_slice(&0u32.to_le_bytes());
        forged.extend_from_slice(&[9u8; 24]);
        assert_eq!(forged.len(), sealed_chunk_len(0));
        assert!(matches!(
            k.open_chunk(&id, &forged),
            Err(CryptError::Malformed("empty chunk"))
        ));
    }

    #[test]
    fn chunk_round_trip_and_every_byte_flip_is_caught() {
        let k = ring();
        let data: Vec<u8> = (0..(SEGMENT * 2 + 100)).map(|i| (i * 7) as u8).collect();
        let id = k.chunk_id(&data);
        let sealed = k.seal_chunk(&id, &data).unwrap();
        assert_eq!(sealed.len(), sealed_chunk_len(data.len()));
        assert_eq!(k.open_chunk(&id, &sealed).unwrap(), data);
        // Flip a byte in the header, in ciphertext, in a tag and in the nonce.
        for pos in [
            2,
            6,
            10,
            20,
            CHUNK_HEADER + 5,
            CHUNK_HEADER + SEGMENT + 3,
            sealed.len() - 1,
        ] {
            let mut bad = sealed.clone();
            bad[pos] ^= 0x40;
            assert!(k.open_chunk(&id, &bad).is_err(), "flip at {pos} not caught");
        }
        // Truncated and extended values.
        assert!(k.open_chunk(&id, &sealed[..sealed.len() - 1]).is_err());
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(k.open_chunk(&id, &longer).is_err());
        // Moved to another id.
        let other = ChunkId([9; 32]);
        assert_eq!(
            k.open_chunk(&other, &sealed),
            Err(CryptError::Authentication)
        );
    }

    /// The stored format is standard XChaCha20-Poly1305: RustCrypto's implementation opens what
    /// the ring-backed one sealed, segment by segment.
    #[test]
    fn format_is_standard_xchacha20_poly1305() {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
        let dek = SecretBytes::random().unwrap();
        let reference = XChaCha20Poly1305::new(dek.expose().into());
        let k = Keyring::new(vec![(7, dek)], 7, SecretBytes::random().unwrap());
        let data: Vec<u8> = (0..(SEGMENT + 1000)).map(|i| (i * 13) as u8).collect();
        let id = k.chunk_id(&data);
        let sealed = k.seal_chunk(&id, &data).unwrap();
        let mut plain = Vec::new();
        for i in 0..2u32 {
            let mut nonce = [0u8; 24];
            nonce.copy_from_slice(&sealed[13..37]);
            for (b, x) in nonce[20..].iter_mut().zip(i.to_le_bytes()) {
                *b ^= x;
            }
            let at = CHUNK_HEADER + i as usize * (SEGMENT + TAG);
            let n = SEGMENT.min(data.len() - i as usize * SEGMENT);
            let mut buf = sealed[at..at + n].to_vec();
            let tag = Tag::from_slice(&sealed[at + n..at + n + TAG]);
            reference
                .decrypt_in_place_detached(
                    XNonce::from_slice(&nonce),
                    &chunk_aad(&id, 7, data.len() as u32, i),
                    &mut buf,
                    tag,
                )
                .expect("RustCrypto opens the segment");
            plain.extend_from_slice(&buf);
        }
        assert_eq!(plain, data);
    }

    /// Project Wycheproof's XChaCha20-Poly1305 vectors through our own construction (HChaCha20
    /// subkey, then ring's ChaCha20-Poly1305 with the nonce's tail): every valid vector seals to
    /// the expected ciphertext and tag and opens; every invalid one is refused.
    #[test]
    fn wycheproof_xchacha20_poly1305() {
        use wycheproof::aead::{TestName, TestSet};
        use wycheproof::TestResult;
        let set = TestSet::load(TestName::XChaCha20Poly1305).unwrap();
        let (mut valid, mut invalid) = (0, 0);
        for g in &set.test_groups {
            if g.nonce_size != 192 || g.key_size != 256 || g.tag_size != 128 {
                // Our envelope only has 24-byte nonces, 32-byte keys and 16-byte tags.
                continue;
            }
            for t in &g.tests {
                let key: [u8; 32] = t.key[..].try_into().unwrap();
                let nonce: [u8; 24] = t.nonce[..].try_into().unwrap();
                let sub = SubKey::new(&SecretBytes::from_array(key), &nonce);
                let mut buf = t.ct.to_vec();
                let opened = sub.open(0, &t.aad, &mut buf, &t.tag);
                match t.result {
                    TestResult::Valid => {
                        opened.unwrap_or_else(|e| panic!("tc {}: {e}", t.tc_id));
                        assert_eq!(buf, *t.pt, "tc {}", t.tc_id);
                        let mut sealed = t.pt.to_vec();
                        let tag = sub.seal(0, &t.aad, &mut sealed).unwrap();
                        assert_eq!((sealed, tag.to_vec()), (t.ct.to_vec(), t.tag.to_vec()));
                        valid += 1;
                    }
                    _ => {
                        assert!(opened.is_err(), "tc {} ({}) opened", t.tc_id, t.comment);
                        invalid += 1;
                    }
                }
            }
        }
        assert!(
            valid > 0 && invalid > 0,
            "{valid} valid, {invalid} invalid vectors"
        );
    }

    /// A million chunks sealed: no nonce repeats (24 random bytes each).
    #[test]
    fn a_million_sealed_chunks_never_repeat_a_nonce() {
        let k = Keyring::new(
            vec![(1, SecretBytes::random().unwrap())],
            1,
            SecretBytes::random().unwrap(),
        );
        let data = [7u8; 32];
        let id = k.chunk_id(&data);
        let mut seen = std::collections::HashSet::with_capacity(1_000_000);
        for _ in 0..1_000_000 {
            let sealed = k.seal_chunk(&id, &data).unwrap();
            let nonce: [u8; 24] = sealed[13..37].try_into().unwrap();
            assert!(seen.insert(nonce), "a nonce repeated");
        }
    }

    #[test]
    fn same_plaintext_seals_differently() {
        let k = ring();
        let id = k.chunk_id(b"x");
        assert_ne!(
            k.seal_chunk(&id, b"x").unwrap(),
            k.seal_chunk(&id, b"x").unwrap()
        );
    }

    #[test]
    fn records_are_bound_to_their_row() {
        let k = ring();
        let s = k.seal_record("versions", b"row1", b"hello").unwrap();
        assert_eq!(k.open_record("versions", b"row1", &s).unwrap(), b"hello");
        assert!(k.open_record("versions", b"row2", &s).is_err());
        assert!(k.open_record("keys", b"row1", &s).is_err());
    }

    proptest! {
        #[test]
        fn range_reads_match(len in 1usize..(3 * SEGMENT), a in 0usize..(3 * SEGMENT), b in 0usize..(3 * SEGMENT)) {
            let k = ring();
            let data: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let id = k.chunk_id(&data);
            let sealed = k.seal_chunk(&id, &data).unwrap();
            let off = a % len;
            let n = b % (len - off + 1);
            prop_assert_eq!(k.open_chunk_range(&id, &sealed, off, n).unwrap(), data[off..off + n].to_vec());
        }
    }
}
