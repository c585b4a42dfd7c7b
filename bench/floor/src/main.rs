//! `arca-floor`: what the work arca cannot avoid costs on this machine, in CPU-seconds per GiB,
//! so the benchmarks can put arcad's own CPU cost next to it as a ratio measured in the same run
//! (issue #9). Absolute times on a shared 2-core VM drift from run to run; a ratio against the
//! floor measured minutes apart on the same bytes does not drift much.
//!
//! The floor uses arcad's own code for each step (its Keyring's seal, open and keyed id, its
//! chunker's FastCDC parameters and seed derivation, the shared `FileHasher`), so it is exactly
//! the work arcad does, without arcad's pipeline around it: no RocksDB, FUSE, socket, threads
//! or copies beyond what the step itself makes.
//!
//! - `read FILE`: every chunk's AEAD open (all segments) and its keyed-BLAKE3 id check — what
//!   must happen before a byte of a cold read is served.
//! - `ingest FILE`: FastCDC over the file, SHA-256 and BLAKE3 of the file on both sides (the CLI
//!   hashes what it sends, the daemon what it receives), each chunk's keyed id and its seal.
//!
//! Only the timed steps count: reading the file and (for `read`) sealing the chunks to open
//! happen outside the clock. Time is this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), which
//! other load on the machine barely moves, unlike wall time.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use arca_core::digest::FileHasher;
use arcad::chunker::{AVG_CHUNK, MAX_CHUNK, MIN_CHUNK};
use arcad::crypt::Keyring;
use arcad::keys::SecretBytes;
use clap::{Parser, Subcommand};
use fastcdc::v2020::{FastCDC, Normalization};

#[derive(Parser)]
#[command(about = "CPU-seconds per GiB of the work arca must do on FILE (bench/README.md)")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// AEAD open + keyed id check of every chunk of FILE (the cold-read floor).
    Read { file: PathBuf },
    /// FastCDC, SHA-256 + BLAKE3 twice, keyed id and seal of every chunk (the ingest floor).
    Ingest { file: PathBuf },
}

/// Sealed chunks are opened in batches this large, so that they come from memory rather than
/// from the CPU's caches just after sealing (as in a real cold read, where they come from the
/// page cache). Larger than any last-level cache of this class of machine.
const BATCH: usize = 64 << 20;

fn thread_cpu() -> Duration {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("CLOCK_THREAD_CPUTIME_ID is always available on Linux");
    Duration::from(ts)
}

fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let start = thread_cpu();
    let out = f();
    *total += thread_cpu() - start;
    out
}

fn keyring() -> Result<Keyring> {
    Ok(Keyring::new(
        vec![(1, SecretBytes::random()?)],
        1,
        SecretBytes::random()?,
    ))
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(!data.is_empty(), "{} is empty", path.display());
    Ok(data)
}

/// FastCDC with arcad's parameters; the whole file is one buffer, so the cut points are the ones
/// arcad's round-by-round chunker finds.
fn chunks<'a>(data: &'a [u8], seed: u64) -> impl Iterator<Item = &'a [u8]> + 'a {
    FastCDC::with_level_and_seed(
        data,
        MIN_CHUNK,
        AVG_CHUNK,
        MAX_CHUNK,
        Normalization::Level1,
        seed,
    )
    .map(move |c| &data[c.offset..c.offset + c.length])
}

fn read_floor(data: &[u8]) -> Result<Duration> {
    let keys = keyring()?;
    let mut cpu = Duration::ZERO;
    let mut batch: Vec<(arca_core::ChunkId, Vec<u8>)> = Vec::new();
    let mut batch_bytes = 0;
    let mut open_batch = |batch: &mut Vec<(arca_core::ChunkId, Vec<u8>)>| -> Result<()> {
        for (id, sealed) in batch.drain(..) {
            let plain = timed(&mut cpu, || keys.open_chunk(&id, &sealed))?;
            std::hint::black_box(plain);
        }
        Ok(())
    };
    for c in chunks(data, keys.chunker_seed()) {
        let id = keys.chunk_id(c);
        batch.push((id, keys.seal_chunk(&id, c)?));
        batch_bytes += c.len();
        if batch_bytes >= BATCH {
            open_batch(&mut batch)?;
            batch_bytes = 0;
        }
    }
    open_batch(&mut batch)?;
    Ok(cpu)
}

fn ingest_floor(data: &[u8]) -> Result<Duration> {
    let keys = keyring()?;
    let seed = keys.chunker_seed();
    let mut cpu = Duration::ZERO;
    // The CLI's side: it hashes the file as it sends it.
    let client = timed(&mut cpu, || {
        let mut h = FileHasher::new();
        h.update(data);
        h.finish()
    });
    // The daemon's side: hashes what it receives, cuts it, ids and seals every chunk.
    let server = timed(&mut cpu, || -> Result<_> {
        let mut h = FileHasher::new();
        h.update(data);
        for c in chunks(data, seed) {
            let id = keys.chunk_id(c);
            std::hint::black_box(keys.seal_chunk(&id, c)?);
        }
        Ok(h.finish())
    })?;
    anyhow::ensure!(client == server, "the two sides' digests differ");
    Ok(cpu)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (what, file) = match &args.mode {
        Mode::Read { file } => ("read", file),
        Mode::Ingest { file } => ("ingest", file),
    };
    let data = read_file(file)?;
    let cpu = match args.mode {
        Mode::Read { .. } => read_floor(&data)?,
        Mode::Ingest { .. } => ingest_floor(&data)?,
    };
    let gib = data.len() as f64 / f64::from(1u32 << 30);
    // One line, `key value` pairs, for the bench scripts to parse.
    println!(
        "floor {what} bytes {} cpu_s {:.3} cpu_s_per_gib {:.3}",
        data.len(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() / gib
    );
    Ok(())
}
