//! Read-ahead for sequential readers: once an open file is being read front to back (a read
//! starting exactly where the previous one ended), the next few whole chunks are fetched and
//! verified on a background pool, so the reader finds them in the cache. Requests are dropped
//! when the queue is full and a read never waits for prefetch to make room.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arca_core::ChunkId;

use crate::cache::ChunkCache;
use crate::pool::Pool;
use crate::ChunkSource;

/// Decryption is CPU-bound and the mount shares the machine with the daemon, but a cold chunk
/// also waits for the disk: four workers keep a sequential reader's chunk reads overlapping
/// (measured on 2 cores, two left the CPU idle a third of the time during a cold read).
const WORKERS: usize = 4;
/// Queue length per unit of depth, and its cap (std's bounded channel allocates its whole
/// capacity up front); beyond it requests are dropped, not queued.
const QUEUE_PER_DEPTH: usize = 4;
const MAX_QUEUE: usize = 1024;
/// Local chunks per read-ahead job for a sequential reader (about 256 KiB): few enough that the
/// four workers share a read's chunks, enough that a job's chunks are one disk read
/// (`ChunkSource::chunk_run`) and one hand-off instead of eight.
const RUN: usize = 8;

/// How far from where the previous read ended a read may start and still keep the reader's
/// streak (reads arriving out of order), though only an exact continuation counts as
/// sequential.
const REORDER: u64 = 4 << 20;

/// Where one open file's reads have got to.
#[derive(Default)]
pub(crate) struct Stream {
    /// End offset of the previous read; 0 before the first, so a first read is never sequential
    /// (a lone 4 KiB read at offset 0 must not cause whole-chunk reads).
    last_end: AtomicU64,
    /// Chunks below this index were already handed to prefetch for this stream.
    requested_upto: AtomicUsize,
    /// Bytes read in a row, up to the previous read's end: how far ahead a source that
    /// fetches from afar fetches for this reader (`ChunkSource::chunk_ahead_by`).
    streak: AtomicU64,
}

impl Stream {
    /// Record a read of `[offset, end)`; true when it continues the previous read exactly.
    pub(crate) fn observe(&self, offset: u64, end: u64) -> bool {
        let previous = self.last_end.swap(end, Ordering::Relaxed);
        let sequential = previous != 0 && previous == offset;
        let len = end.saturating_sub(offset);
        if sequential {
            self.streak.fetch_add(len, Ordering::Relaxed);
        } else if previous != 0 && previous.abs_diff(offset) <= REORDER {
            // Near where the last read ended: the kernel's readahead requests of one reader
            // arrive on several threads, not always in order. The streak stands.
        } else {
            self.streak.store(len, Ordering::Relaxed);
        }
        sequential
    }

    /// Bytes this reader has read in a row.
    pub(crate) fn streak(&self) -> u64 {
        self.streak.load(Ordering::Relaxed)
    }
}

pub(crate) struct Prefetcher {
    /// `None` when prefetch is disabled (depth 0 or no cache to put chunks in).
    pool: Option<Pool>,
    depth: usize,
    source: Arc<dyn ChunkSource>,
    cache: Arc<ChunkCache>,
    queued: AtomicU64,
    dropped: AtomicU64,
}

impl Prefetcher {
    pub(crate) fn new(
        source: Arc<dyn ChunkSource>,
        cache: Arc<ChunkCache>,
        depth: usize,
    ) -> std::io::Result<Self> {
        let pool = if depth > 0 && cache.enabled() {
            Some(Pool::new(
                "arca-prefetch",
                WORKERS,
                depth.saturating_mul(QUEUE_PER_DEPTH).min(MAX_QUEUE),
            ))
        } else {
            None
        };
        Ok(Self {
            pool: pool.transpose()?,
            depth,
            source,
            cache,
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// At a sequential read of chunks `first ..= next` (`next` holds the byte after the read),
    /// queue chunks `first .. next + depth` of `chunks` that this stream has not asked for and
    /// that are not cached: the read's own chunks, fetched in parallel with it, and `depth`
    /// more ahead of it.
    pub(crate) fn at_sequential_read(
        &self,
        stream: &Stream,
        chunks: &[(ChunkId, u32)],
        first: usize,
        next: usize,
    ) {
        if self.pool.is_none() {
            return;
        }
        let stop = next.saturating_add(self.depth).min(chunks.len());
        let start = stream
            .requested_upto
            .fetch_max(stop, Ordering::Relaxed)
            .max(first);
        self.queue(
            chunks.get(start..stop).unwrap_or_default(),
            Some(stream.streak()),
        );
    }

    /// At a read that is not sequential but spans whole chunks `chunks` (a random 1 MiB read
    /// covers about 30): queue them, so the workers read and decrypt them in parallel with the
    /// reader, who joins each one as it gets to it. Read one after another by the reader alone,
    /// each waited for its own small disk read (measured: 1 MiB random reads at 0.6x bindfs's
    /// IOPS). Nothing beyond the read is queued: a random reader does not want the next chunk.
    pub(crate) fn at_large_read(&self, chunks: &[(ChunkId, u32)]) {
        if self.pool.is_some() {
            self.queue(chunks, None);
        }
    }

    /// `streak`: for a sequential reader that read that many bytes in a row
    /// (`ChunkSource::chunk_ahead_by`), else (`None`) for a random one
    /// (`ChunkSource::chunk_near_by`).
    fn queue(&self, chunks: &[(ChunkId, u32)], streak: Option<u64>) {
        let Some(pool) = &self.pool else {
            return;
        };
        // A sequential reader's local chunks go to the workers in runs: one job (and, where
        // they lie back to back on disk, one read) for several chunks instead of one each.
        let mut run: Vec<(ChunkId, u32)> = Vec::with_capacity(RUN);
        // And its chunks that are not local, in runs too: a source that fetches from afar
        // brings a sequential reader's next chunks with the first one's fetch (and hands them
        // to the cache as they come), so one job per run starts that fetch and finds the rest
        // cached, where one job per chunk cost a hand-off and a wait each (profiled: the
        // read-ahead threads were a tenth of a fleet host's cold read).
        let mut remote: Vec<(ChunkId, u32)> = Vec::with_capacity(RUN);
        for &(id, len) in chunks {
            if self.cache.contains(&id) {
                continue;
            }
            if let Some(s) = streak {
                if self.source.is_local(&id) {
                    run.push((id, len));
                    if run.len() == RUN {
                        self.queue_run(pool, std::mem::take(&mut run));
                    }
                } else {
                    remote.push((id, len));
                    if remote.len() == RUN {
                        self.queue_remote_run(pool, std::mem::take(&mut remote), s);
                    }
                }
                continue;
            }
            let source = Arc::clone(&self.source);
            let cache = Arc::clone(&self.cache);
            let job = Box::new(move || {
                // Errors are not reported here: the reader that needs this chunk will fetch it
                // itself, fail, and report the failure exactly once.
                let got = || match streak {
                    Some(s) => source.chunk_ahead_by(&id, len, None, s),
                    None => source.chunk_near_by(&id, len, None),
                };
                cache.fill_if_idle(&id, || checked(&id, len, got()));
            });
            self.submit(pool, job, 1);
        }
        if !run.is_empty() {
            self.queue_run(pool, run);
        }
        if let (false, Some(s)) = (remote.is_empty(), streak) {
            self.queue_remote_run(pool, remote, s);
        }
    }

    /// One job for a sequential reader's chunks that are not local, in order: each not cached
    /// by the time the job gets to it is read (`ChunkSource::chunk_ahead_by`). The first that
    /// fails ends the job (a store out of reach must not hold a worker for a bound per chunk):
    /// the reader reads the rest itself and reports what failed.
    fn queue_remote_run(&self, pool: &Pool, run: Vec<(ChunkId, u32)>, streak: u64) {
        let n = run.len() as u64;
        let source = Arc::clone(&self.source);
        let cache = Arc::clone(&self.cache);
        let job = Box::new(move || {
            for &(id, len) in &run {
                if cache.contains(&id) {
                    continue;
                }
                let mut failed = false;
                cache.fill_if_idle(&id, || {
                    let got = checked(&id, len, source.chunk_ahead_by(&id, len, None, streak));
                    failed = got.is_err();
                    got
                });
                if failed {
                    return;
                }
            }
        });
        self.submit(pool, job, n);
    }

    fn queue_run(&self, pool: &Pool, run: Vec<(ChunkId, u32)>) {
        let n = run.len() as u64;
        let source = Arc::clone(&self.source);
        let cache = Arc::clone(&self.cache);
        let job = Box::new(move || {
            // Errors are not reported here, as for single chunks: each reader that needs a
            // chunk that failed reads it itself.
            cache.fill_run_if_idle(&run, |mine, cached| {
                source.chunk_run(mine, &mut |k, got| {
                    let (id, len) = mine[k];
                    cached(k, checked(&id, len, got))
                })
            });
        });
        self.submit(pool, job, n);
    }

    /// Queues a job reading `chunks` chunks, or counts them dropped when the queue is full.
    fn submit(&self, pool: &Pool, job: crate::pool::Job, chunks: u64) {
        match pool.try_run(job) {
            Ok(()) => self.queued.fetch_add(chunks, Ordering::Relaxed),
            Err(_) => self.dropped.fetch_add(chunks, Ordering::Relaxed),
        };
    }

    pub(crate) fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A read-ahead result fit for the cache: the whole chunk, of the manifest's length.
fn checked(id: &ChunkId, len: u32, got: Result<Vec<u8>, crate::ChunkError>) -> Result<Vec<u8>, ()> {
    match got {
        Ok(plain) if plain.len() == len as usize => Ok(plain),
        Ok(_) => Err(()),
        Err(e) => {
            tracing::debug!(chunk = %id, error = %e, "prefetch failed");
            Err(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source whose chunks are all remote: a read of chunk k brings the next `brings` with
    /// it into the cache (as a fleet fetch's stream does); reads of `failing` fail.
    struct Remote {
        cache: Arc<ChunkCache>,
        ids: Vec<(ChunkId, u32)>,
        brings: usize,
        failing: Option<usize>,
        asked: std::sync::Mutex<Vec<usize>>,
    }

    impl ChunkSource for Remote {
        fn chunk(&self, _: &ChunkId, _: u32) -> Result<Vec<u8>, crate::ChunkError> {
            unreachable!("read-ahead asks as a sequential reader")
        }
        fn chunk_range(
            &self,
            _: &ChunkId,
            _: u32,
            _: u32,
            _: u32,
        ) -> Result<Vec<u8>, crate::ChunkError> {
            unreachable!()
        }
        fn is_local(&self, _: &ChunkId) -> bool {
            false
        }
        fn chunk_ahead_by(
            &self,
            id: &ChunkId,
            len: u32,
            _: Option<std::time::Instant>,
            _: u64,
        ) -> Result<Vec<u8>, crate::ChunkError> {
            let k = self.ids.iter().position(|c| c.0 == *id).unwrap();
            self.asked.lock().unwrap().push(k);
            if self.failing == Some(k) {
                return Err(crate::ChunkError::Unavailable("store out of reach".into()));
            }
            for (c, l) in self.ids.iter().skip(k + 1).take(self.brings) {
                self.cache.offer(c, Arc::new(vec![0; *l as usize]));
            }
            Ok(vec![0; len as usize])
        }
        fn may_read(
            &self,
            _: u32,
            _: u32,
            _: &arca_core::ModelName,
            _: &arca_core::ModelVersion,
        ) -> bool {
            true
        }
        fn may_list(&self, _: u32, _: u32, _: &arca_core::ModelName) -> bool {
            true
        }
        fn integrity_failure(
            &self,
            _: &arca_core::ModelName,
            _: &arca_core::ModelVersion,
            _: &arca_core::RelPath,
            _: &ChunkId,
            _: &str,
        ) {
            unreachable!("read-ahead reports nothing")
        }
    }

    /// Runs read-ahead for a sequential read of all 16 chunks of `source` and returns which
    /// chunks it asked the source for, once `expect` were asked for and no more came.
    fn read_ahead(
        brings: usize,
        failing: Option<usize>,
        expect: usize,
    ) -> (Vec<usize>, Arc<ChunkCache>) {
        let cache = Arc::new(ChunkCache::new(64 << 20));
        let ids: Vec<(ChunkId, u32)> = (0..16u8).map(|i| (ChunkId([i; 32]), 1000)).collect();
        let source = Arc::new(Remote {
            cache: cache.clone(),
            ids: ids.clone(),
            brings,
            failing,
            asked: Default::default(),
        });
        let p = Prefetcher::new(source.clone(), cache.clone(), 16).unwrap();
        let stream = Stream::default();
        stream.observe(0, 4096);
        stream.observe(4096, 8192);
        p.at_sequential_read(&stream, &ids, 0, 0);
        // Until as many reads as expected were asked for (the workers may be slow to start on
        // a loaded machine), then a moment more for any that should not come.
        let asked = |s: &Remote| s.asked.lock().unwrap().clone();
        let t = std::time::Instant::now();
        while asked(&source).len() < expect && t.elapsed() < std::time::Duration::from_secs(30) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut got = asked(&source);
        got.sort_unstable();
        (got, cache)
    }

    #[test]
    fn a_sequential_readers_remote_chunks_are_read_in_runs_that_skip_what_a_fetch_brought() {
        // Two runs of eight; each read brings the next three: chunks 0, 4, 8 and 12 are read,
        // the rest found cached.
        let (asked, cache) = read_ahead(3, None, 4);
        assert_eq!(asked, vec![0, 4, 8, 12]);
        assert!((0..16u8).all(|i| cache.contains(&ChunkId([i; 32]))));
        // A read that fails ends its run: nothing more of it is asked for (the reader reads
        // those chunks itself); the other run goes on.
        let (asked, _) = read_ahead(0, Some(1), 10);
        assert_eq!(asked, vec![0, 1, 8, 9, 10, 11, 12, 13, 14, 15]);
    }

    #[test]
    fn only_a_read_continuing_the_previous_one_is_sequential() {
        let s = Stream::default();
        assert!(!s.observe(0, 4096), "a first read is never sequential");
        assert!(s.observe(4096, 8192));
        assert!(!s.observe(100_000, 104_096));
        assert!(s.observe(104_096, 110_000));
        assert!(!s.observe(0, 10));
    }

    #[test]
    fn the_streak_counts_bytes_read_in_a_row_and_restarts_at_a_jump() {
        let s = Stream::default();
        s.observe(0, 4096);
        assert_eq!(s.streak(), 4096, "a first read starts a streak");
        s.observe(4096, 1 << 20);
        assert_eq!(s.streak(), 1 << 20);
        s.observe(1 << 20, 3 << 20);
        assert_eq!(s.streak(), 3 << 20);
        // Out of order, near the end of the last read: the streak stands.
        s.observe((3 << 20) + (128 << 10), (3 << 20) + (256 << 10));
        assert_eq!(s.streak(), 3 << 20);
        s.observe(20 << 20, (20 << 20) + 4096);
        assert_eq!(s.streak(), 4096, "a jump starts again");
    }
}
