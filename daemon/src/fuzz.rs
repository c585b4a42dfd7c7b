//! Entry points for fuzzing every decoder of untrusted bytes: what comes off the disk (chunk and
//! record envelopes, version records, audit events and checkpoints), what clients send (API
//! bodies, file names, metadata) and the configuration file. Each must return an error, never
//! panic, whatever the input. `fuzz/` drives them with libFuzzer; `tests/tests/e2e/fuzz.rs`
//! replays the saved corpus on every CI run.

use std::str::FromStr;

use arca_core::ChunkId;

use crate::crypt::Keyring;
use crate::keys::SecretBytes;

/// A keyring with fixed keys, so that a corpus entry means the same thing on every run.
fn keyring() -> Keyring {
    Keyring::new(
        vec![(1, SecretBytes::from_array([1u8; 32]))],
        1,
        SecretBytes::from_array([2u8; 32]),
    )
}

/// The chunk envelope: whole opens and ranged opens at offsets taken from the input.
pub fn chunk_envelope(data: &[u8]) {
    let k = keyring();
    let id = ChunkId([3u8; 32]);
    let _ = k.open_chunk(&id, data);
    if data.len() >= 8 {
        let off = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize % (1 << 20);
        let size = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize % (1 << 20);
        let _ = k.open_chunk_range(&id, data, off, size);
    }
    // Whatever we seal must open again (an empty chunk is refused: it would carry no tag).
    match k.seal_chunk(&k.chunk_id(data), data) {
        Ok(sealed) => assert_eq!(
            k.open_chunk(&k.chunk_id(data), &sealed)
                .expect("round trip"),
            data
        ),
        Err(_) => assert!(data.is_empty(), "sealing failed"),
    }
    // And once edited anywhere (the edit chosen by the input), it must not: random bytes rarely
    // get past the AEAD, so this is what takes the fuzzer inside the header and segment logic.
    if let Some((edit, plain)) = data.split_first_chunk::<5>().filter(|(_, p)| !p.is_empty()) {
        let id = k.chunk_id(plain);
        let mut sealed = k.seal_chunk(&id, plain).expect("sealing");
        if tamper(&mut sealed, edit) {
            assert!(
                k.open_chunk(&id, &sealed).is_err(),
                "an edited chunk opened: {} plaintext bytes, edit {edit:?}",
                plain.len()
            );
        }
    }
}

/// The record envelope: arbitrary bytes, and a sealed record edited as the input says.
pub fn record_envelope(data: &[u8]) {
    let k = keyring();
    let _ = k.open_record("versions", b"row", data);
    if let Some((edit, plain)) = data.split_first_chunk::<5>() {
        let mut sealed = k.seal_record("versions", b"row", plain).expect("sealing");
        if tamper(&mut sealed, edit) {
            assert!(
                k.open_record("versions", b"row", &sealed).is_err(),
                "an edited record opened"
            );
        }
        // Bound to its place: the same bytes under another row must not open either.
        let sealed = k.seal_record("versions", b"row", plain).expect("sealing");
        assert!(k.open_record("versions", b"row2", &sealed).is_err());
    }
}

/// Edits `sealed` as `edit` says (a bit flip, a truncation, an inserted byte or a swap, at an
/// offset from its first four bytes); false if the bytes came out unchanged.
fn tamper(sealed: &mut Vec<u8>, edit: &[u8; 5]) -> bool {
    let before = sealed.clone();
    let at = u32::from_le_bytes([edit[0], edit[1], edit[2], edit[3]]) as usize % sealed.len();
    let other = (at + usize::from(edit[4]) + 1) % sealed.len();
    match edit[4] % 4 {
        0 => sealed[at] ^= 1 << (edit[4] / 4 % 8),
        1 => sealed.truncate(at),
        2 => sealed.insert(at, edit[4]),
        _ => sealed.swap(at, other),
    }
    *sealed != before
}

/// A version record's JSON and its self-checks (root, metadata digest, signature).
pub fn version_record(data: &[u8]) {
    if let Ok(rec) = serde_json::from_slice::<crate::manifest::VersionRecord>(data) {
        let _ = crate::registry::check_signed(&rec);
        let _ = rec.info();
    }
}

/// Published metadata and its canonical digest.
pub fn metadata(data: &[u8]) {
    if let Ok(m) = serde_json::from_slice::<arca_core::metadata::PublishedMetadata>(data) {
        let _ = m.digest();
    }
}

/// Every request body of the control API, and the names and queries clients send.
pub fn api_bodies(data: &[u8]) {
    use arca_core::api::*;
    let _ = serde_json::from_slice::<CreateUpload>(data);
    let _ = serde_json::from_slice::<CommitUpload>(data);
    let _ = serde_json::from_slice::<Approve>(data);
    let _ = serde_json::from_slice::<Promote>(data);
    let _ = serde_json::from_slice::<Rollback>(data);
    let _ = serde_json::from_slice::<TrustKey>(data);
    let _ = serde_json::from_slice::<RoleChange>(data);
    let _ = serde_json::from_slice::<PolicyUpdate>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = arca_core::RelPath::from_str(s);
        let _ = arca_core::ModelName::from_str(s);
        let _ = arca_core::ModelVersion::from_str(s);
        let _ = arca_core::audit::EventKind::from_str(s);
        let _ = arca_core::api::Role::from_str(s);
    }
}

/// Audit events and checkpoints as stored, through the chain check.
pub fn audit_event(data: &[u8]) {
    let key = arca_core::sign::SecretKey::from_seed(&[4u8; 32]).public();
    if let Ok(e) = serde_json::from_slice::<arca_core::audit::AuditEvent>(data) {
        let _ = e.canonical();
        let _ = arca_core::audit::check_chain([Ok(e)], &[], None, &key);
    }
    if let Ok(c) = serde_json::from_slice::<arca_core::audit::Checkpoint>(data) {
        let _ = c.verify(&key);
    }
}

/// The configuration file.
pub fn config(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::config::Config::defaults().apply_str(s, std::path::Path::new("fuzz.toml"));
    }
}

/// A fuzz target: its name and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// Every target by name, for the fuzz binaries and the corpus replay.
pub const TARGETS: [Target; 7] = [
    ("chunk_envelope", chunk_envelope),
    ("record_envelope", record_envelope),
    ("version_record", version_record),
    ("metadata", metadata),
    ("api_bodies", api_bodies),
    ("audit_event", audit_event),
    ("config", config),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid inputs for each target, so mutations start from deep inside the decoders.
    fn seeds(name: &str) -> Vec<Vec<u8>> {
        let k = keyring();
        match name {
            "chunk_envelope" => {
                let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
                vec![k.seal_chunk(&ChunkId([3u8; 32]), &data).unwrap()]
            }
            "record_envelope" => vec![k.seal_record("versions", b"row", b"{\"a\":1}").unwrap()],
            _ => Vec::new(),
        }
    }

    /// Every file of the saved corpus (fuzz/corpus/<target>/), plus 20,000 deterministic
    /// mutations of the corpus and seeds per target: none may panic. This is the CI replay;
    /// libFuzzer runs (fuzz/) search much further.
    #[test]
    fn the_corpus_and_its_mutations_never_panic() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (name, f) in TARGETS {
            let mut inputs = seeds(name);
            if let Ok(dir) = std::fs::read_dir(root.join(name)) {
                for e in dir.flatten() {
                    inputs.push(std::fs::read(e.path()).unwrap());
                }
            }
            assert!(!inputs.is_empty(), "no corpus for {name}");
            for input in &inputs {
                f(input);
            }
            for _ in 0..20_000 {
                let mut m = inputs[rand() as usize % inputs.len()].clone();
                match rand() % 4 {
                    0 if !m.is_empty() => {
                        let i = rand() as usize % m.len();
                        m[i] ^= 1 << (rand() % 8);
                    }
                    1 if !m.is_empty() => m.truncate(rand() as usize % m.len()),
                    2 => {
                        let i = rand() as usize % (m.len() + 1);
                        m.insert(i, rand() as u8);
                    }
                    _ if m.len() > 1 => {
                        let i = rand() as usize % m.len();
                        let j = rand() as usize % m.len();
                        m.swap(i, j);
                    }
                    _ => {}
                }
                f(&m);
            }
        }
    }
}
