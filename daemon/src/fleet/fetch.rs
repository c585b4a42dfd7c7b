//! Fetching chunks a host lacks from their packs, with every wait bounded.
//!
//! A miss starts one ranged GET of the chunk and the chunks after it in its pack (up to
//! `EXTENT` bytes), streamed on a thread of its own: each chunk is authenticated, cached and
//! handed to the readers waiting for it as soon as it is whole. The reader that started the
//! fetch waits for its own chunk like any other, so no reader is held for the rest of the
//! extent, however slow the link.
//!
//! Every wait ends at the reader's deadline (`Fleet::read_bound` after the read began): waiting
//! for a chunk another fetch carries, for a place among the `MAX_FETCHES` fetches, for the
//! stream to get to it. A reader whose chunk lies far ahead of where a stream is
//! (`STEAL_AHEAD`), and which the stream at its pace so far would bring too late
//! (`Flight::too_slow_for`), does not wait for the bytes before it: it starts a fetch of its own
//! from its chunk and takes the rest of the extent over, and the older stream stops where the
//! new one begins. A stream nobody waits on any more stops too (`IDLE_STOP` after its readers' bound),
//! so a trickling link does not keep fetch places taken by bytes no one wants.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use arca_core::id::{ChunkId, PackId};

use super::cache::Cache;
use super::pack::ChunkLoc;
use super::{
    now_ms, pack_key, FetchFor, Fetched, Fleet, FleetError, FleetState, Plain, PlaintextSink,
    EXTENT, MAX_FETCHES, MIN_AHEAD, RANDOM_EXTENT,
};
use crate::remote::{Remote, RemoteError};
use crate::store::packs::FetchedExtent;
use crate::store::{Store, StoreError};

/// A reader whose chunk is more than this far ahead of where the stream carrying it is fetches
/// it itself: on a slow link the bytes before it could take longer than the reader may wait
/// (at 2 MB/s, 4 MiB is two seconds), while on a fast one they arrive at once.
const STEAL_AHEAD: u64 = 4 << 20;
/// A stream older than its readers' bound stops once no reader has waited on it for this long.
const IDLE_STOP: Duration = Duration::from_secs(2);
/// The shortest bound on a read that waits on the store; never less than one request's
/// timeout and three seconds more (`Fleet::read_bound`).
const MIN_READ_BOUND: Duration = Duration::from_secs(8);

/// Chunks being fetched now, and how many fetches run.
#[derive(Default)]
pub(super) struct Fetches {
    /// A miss on one of these waits for the fetch carrying it (single flight).
    inflight: Mutex<HashMap<ChunkId, Arc<Slot>>>,
    /// Fetches counted against `MAX_FETCHES` running now; `freed` is told when one ends.
    running: Mutex<usize>,
    freed: Condvar,
    /// Chunks a reader just gave up on at its deadline, until when a new reader of them fails
    /// at once: the kernel asks again at once for a page whose readahead failed, and that
    /// second wait of a whole bound would double the read's.
    late: Mutex<HashMap<ChunkId, Instant>>,
}

/// How long a chunk a reader gave up on fails new readers at once (`Fetches::late`).
const LATE_FOR: Duration = Duration::from_secs(1);

impl Fetches {
    fn note_late(&self, id: &ChunkId) {
        let now = Instant::now();
        let mut late = self.late.lock().unwrap_or_else(|p| p.into_inner());
        late.retain(|_, until| *until > now);
        late.insert(*id, now + LATE_FOR);
    }

    fn is_late(&self, id: &ChunkId) -> bool {
        self.late
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|until| *until > Instant::now())
    }
}

/// One stream's progress, shared by the slots of its chunks.
struct Flight {
    /// Offset in the pack of the stream's first byte.
    start: u64,
    /// Bytes received so far.
    received: AtomicU64,
    started: Instant,
    /// When a reader last waited on one of its chunks (ms since the epoch).
    wanted_ms: AtomicU64,
}

impl Flight {
    fn wanted(&self) {
        self.wanted_ms.store(now_ms(), Ordering::Release);
    }

    /// Where the stream is in the pack.
    fn position(&self) -> u64 {
        self.start + self.received.load(Ordering::Acquire)
    }

    /// Whether a reader of the chunk at `at` in the pack, who may wait until `deadline`,
    /// should fetch it itself rather than wait for this stream: it is more than `STEAL_AHEAD`
    /// ahead of the stream, and at the stream's pace so far the stream would bring it later
    /// than halfway to the deadline. Why the pace, not the distance alone: on two cores shared
    /// by three hosts and the store, a stream several MiB behind its reader's read-ahead still
    /// brings the chunk within a second, and taking over then cost an extra request per
    /// pack (65–69 requests per GiB against the 64; bench/README.md).
    fn too_slow_for(&self, at: u64, deadline: Instant) -> bool {
        let behind = at.saturating_sub(self.position());
        if behind <= STEAL_AHEAD {
            return false;
        }
        let received = self.received.load(Ordering::Acquire);
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_secs_f64();
        if received == 0 || elapsed <= 0.0 {
            // No pace yet: a stream that brought nothing for a second is slow.
            return elapsed > 1.0;
        }
        behind as f64 * elapsed / received as f64 > left / 2.0
    }
}

/// How a chunk's fetch ended for its waiters.
#[derive(Clone)]
enum Done {
    /// Cached; its plaintext, kept only while readers waited (empty: read it from the store).
    Cached(Plain),
    /// It failed authentication: never cached, never served.
    Failed,
    /// The stream stopped before it (another fetch took it over, or nobody wanted it): look
    /// again.
    Moved,
    /// The stream failed before it: the store's failure, for every reader of it.
    Error(Failure),
}

/// A stream's failure as each of its readers reports it.
#[derive(Clone)]
enum Failure {
    /// The pack is gone before a byte came (fleet GC may have moved the chunk: the caller
    /// catches up and looks again).
    PackGone(String),
    /// The store answered without the bytes the signed log places in the pack.
    PackBad(String),
    /// The store did not answer, or the local store refused the chunk.
    Unreachable(String),
}

/// One chunk of a fetch in progress.
struct Slot {
    done: Mutex<Option<Done>>,
    cv: Condvar,
    /// Readers waiting now: the plaintext is kept in the slot only for them, so a fetch holds
    /// at most one chunk of plaintext per waiting reader, not a whole extent's.
    waiters: AtomicUsize,
    flight: Arc<Flight>,
    /// The chunk's pack (for what a failure names), and its offset there.
    pack: PackId,
    at: u64,
}

impl Slot {
    /// Sets how the chunk's fetch ended, unless that is set already.
    fn complete(&self, d: Done) {
        let keep = self.waiters.load(Ordering::Acquire) > 0;
        let mut g = self.done.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_some() {
            return;
        }
        *g = Some(match d {
            Done::Cached(_) if !keep => Done::Cached(Arc::new(Vec::new())),
            other => other,
        });
        self.cv.notify_all();
    }

    fn is_done(&self) -> bool {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// How the fetch ended, or `None` at `deadline`.
    fn wait_until(&self, deadline: Instant) -> Option<Done> {
        self.waiters.fetch_add(1, Ordering::AcqRel);
        self.flight.wanted();
        let g = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let left = deadline.saturating_duration_since(Instant::now());
        let (g, _) = self
            .cv
            .wait_timeout_while(g, left, |d| d.is_none())
            .unwrap_or_else(|p| p.into_inner());
        let r = g.clone();
        drop(g);
        self.waiters.fetch_sub(1, Ordering::AcqRel);
        self.flight.wanted();
        r
    }
}

impl Fleet {
    /// How long a read may wait on the store: a request's timeout and three seconds more, and
    /// at least `MIN_READ_BOUND` (with the default 5 s timeout: 8 s, within the mount's 10 s).
    pub fn read_bound(&self) -> Duration {
        (self.cfg.remote.timeout + Duration::from_secs(3)).max(MIN_READ_BOUND)
    }

    /// Fetches a chunk this host does not hold from its pack, with the chunks after it in the
    /// pack (one ranged GET of up to `EXTENT` bytes, streamed), authenticating each before it
    /// is cached. Gives up at `deadline`: the chunk's stream goes on for other readers.
    /// `why`: how much of the pack, and whether the chunks go to the plaintext sink (the
    /// mount's cache) too: see `FetchFor`.
    pub fn fetch(
        &self,
        store: &Arc<Store>,
        id: &ChunkId,
        why: FetchFor,
        deadline: Instant,
    ) -> Result<Fetched, FleetError> {
        self.fetch_for(store, id, false, why, deadline)
    }

    /// `fetch`; `warm`: for a warm-up or a pin's fetch, which is not counted against the
    /// readers' `MAX_FETCHES`, so it never makes a mount read wait for a fetch place.
    pub(super) fn fetch_for(
        &self,
        store: &Arc<Store>,
        id: &ChunkId,
        warm: bool,
        why: FetchFor,
        deadline: Instant,
    ) -> Result<Fetched, FleetError> {
        let bound = self.read_bound();
        let late = || {
            self.fetches.note_late(id);
            FleetError::Remote(RemoteError::Unreachable(format!(
                "chunk {id} did not arrive from the store within the read's bound ({bound:?})"
            )))
        };
        loop {
            // A chunk a stream is bringing now (most of a sequential reader's are): wait for
            // it before any lookup. Profiled on a cold fleet read, the two below (RocksDB,
            // and the location row's AEAD open) were a fifth of the reads' RocksDB time.
            // A slot already done, or one waited on in vain, goes the long way: the chunk is
            // indexed by then, or the slot is gone.
            if let Some(slot) = self.waitable(id, warm, deadline) {
                if let Some(r) = await_slot(&slot, id, deadline) {
                    // A chunk that came here another way meanwhile (a push on this host) is
                    // read here, whatever became of the stream, as the long way would.
                    if r.is_err() && store.has_chunk(id)? {
                        return Ok(Fetched::Cached);
                    }
                    return r;
                }
                if Instant::now() >= deadline {
                    return Err(late());
                }
            }
            if store.has_chunk(id)? {
                return Ok(Fetched::Cached);
            }
            let Some(loc) = store.chunk_loc(id)? else {
                return Ok(Fetched::Unknown);
            };
            // A location comes from a signed entry, but a bound keeps a bad one (or a state
            // directory written behind arcad's back) from asking for gigabytes.
            if loc.len as usize > crate::crypt::sealed_chunk_len(crate::chunker::MAX_CHUNK) {
                self.state().integrity_failures += 1;
                return Err(FleetError::Integrity {
                    chunk: *id,
                    pack: loc.pack,
                    why: format!(
                        "its location claims {} sealed bytes, more than any chunk has",
                        loc.len
                    ),
                });
            }
            if Instant::now() >= deadline {
                return Err(late());
            }
            if !warm && self.fetches.is_late(id) {
                return Err(FleetError::Remote(RemoteError::Unreachable(format!(
                    "chunk {id} did not arrive within another read's bound a moment ago"
                ))));
            }
            let fetches = &self.fetches;
            let mut inflight = fetches.inflight.lock().unwrap_or_else(|p| p.into_inner());
            let mut take_over = None;
            if let Some(slot) = inflight.get(id).cloned() {
                if !slot.flight.too_slow_for(slot.at, deadline) || slot.is_done() {
                    drop(inflight);
                    match await_slot(&slot, id, deadline) {
                        Some(r) => return r,
                        None if Instant::now() >= deadline => return Err(late()),
                        None => continue,
                    }
                }
                take_over = Some(slot.flight.clone());
            } else if store.has_chunk(id)? {
                // Its fetch ended between the look above and this lock (a stream indexes a
                // chunk before it leaves `inflight`): measured, a fetch of that one chunk
                // again was a good part of the requests past one per pack.
                return Ok(Fetched::Cached);
            }
            // A fetch of its own, if one of the `MAX_FETCHES` places is free (or frees up
            // before the deadline).
            if !warm {
                let mut running = fetches.running.lock().unwrap_or_else(|p| p.into_inner());
                if *running >= MAX_FETCHES {
                    drop(inflight);
                    let left = deadline.saturating_duration_since(Instant::now());
                    let (g, _) = fetches
                        .freed
                        .wait_timeout_while(running, left, |r| *r >= MAX_FETCHES)
                        .unwrap_or_else(|p| p.into_inner());
                    if *g >= MAX_FETCHES {
                        drop(g);
                        self.fetches.note_late(id);
                        return Err(FleetError::Remote(RemoteError::Unreachable(format!(
                            "{MAX_FETCHES} fetches from the store are running on this host and none ended within the read's bound ({bound:?})"
                        ))));
                    }
                    continue;
                }
                *running += 1;
            }
            let (extent, mine) =
                match plan_extent(store, &loc, id, &inflight, take_over.as_ref(), why) {
                    Ok(e) => e,
                    Err(e) => {
                        drop(inflight);
                        self.release_place(!warm);
                        return Err(e);
                    }
                };
            let first = extent[0].1;
            let flight = Arc::new(Flight {
                start: first.offset,
                received: AtomicU64::new(0),
                started: Instant::now(),
                wanted_ms: AtomicU64::new(now_ms()),
            });
            let slots: Vec<Arc<Slot>> = extent
                .iter()
                .map(|(c, l)| {
                    let s = Arc::new(Slot {
                        done: Mutex::new(None),
                        cv: Condvar::new(),
                        waiters: AtomicUsize::new(0),
                        flight: flight.clone(),
                        pack: l.pack,
                        at: l.offset,
                    });
                    inflight.insert(*c, s.clone());
                    s
                })
                .collect();
            drop(inflight);
            tracing::debug!(
                pack = %first.pack,
                at = first.offset,
                chunks = slots.len(),
                take_over = take_over.is_some(),
                "fleet: fetching for {why:?}"
            );
            if take_over.is_some() {
                self.state().take_overs += 1;
            }
            let my_slot = slots[mine].clone();
            let stream = Stream {
                store: store.clone(),
                remote: self.remote.clone(),
                state: self.state.clone(),
                cache: self.cache.clone(),
                fetches: self.fetches.clone(),
                from: first,
                mine,
                extent,
                slots,
                flight,
                counted: !warm,
                bound,
                // The caller of a whole-chunk read caches its chunk itself; a part of one
                // (`chunk_range`) does not, so it goes to the sink too.
                sink: match why {
                    FetchFor::Bulk => None,
                    FetchFor::MountWhole { .. } => self.sink.get().cloned().map(|s| (s, false)),
                    FetchFor::MountPart => self.sink.get().cloned().map(|s| (s, true)),
                },
            };
            // Its own thread, so the reader waits only for its chunk, and only until its
            // deadline; if no thread can be made, the reader streams it itself.
            let run = std::sync::Arc::new(Mutex::new(Some(stream)));
            let for_thread = run.clone();
            let spawned = std::thread::Builder::new()
                .name("arca-fetch".into())
                .spawn(move || {
                    let s = for_thread.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some(s) = s {
                        s.run();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(
                    "fleet: cannot start a fetch thread ({e}); fetching on the reader's"
                );
                let s = run.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(s) = s {
                    s.run();
                }
            }
            match await_slot(&my_slot, id, deadline) {
                Some(r) => return r,
                None if Instant::now() >= deadline => return Err(late()),
                None => continue,
            }
        }
    }

    fn release_place(&self, counted: bool) {
        release_place(&self.fetches, counted);
    }

    /// The slot of `id` if a stream is bringing it and a reader with `deadline` should wait
    /// for it: not done yet, its stream not too slow to bring it in time, the deadline not
    /// passed, and (but for a warm-up) the chunk not late for another reader a moment ago.
    fn waitable(&self, id: &ChunkId, warm: bool, deadline: Instant) -> Option<Arc<Slot>> {
        if Instant::now() >= deadline || (!warm && self.fetches.is_late(id)) {
            return None;
        }
        let slot = self
            .fetches
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()?;
        (!slot.is_done() && !slot.flight.too_slow_for(slot.at, deadline)).then_some(slot)
    }
}

fn release_place(fetches: &Fetches, counted: bool) {
    if counted {
        let mut running = fetches.running.lock().unwrap_or_else(|p| p.into_inner());
        *running = running.saturating_sub(1);
        fetches.freed.notify_all();
    }
}

/// Waits for `slot` until `deadline`. `None`: look again (the chunk is cached, its stream
/// stopped before it, or the deadline passed: the caller tells which).
fn await_slot(slot: &Slot, id: &ChunkId, deadline: Instant) -> Option<Result<Fetched, FleetError>> {
    match slot.wait_until(deadline)? {
        Done::Cached(p) if !p.is_empty() => Some(Ok(Fetched::Plain(p))),
        Done::Cached(_) | Done::Moved => None,
        Done::Failed => Some(Err(FleetError::Integrity {
            chunk: *id,
            pack: slot.pack,
            why: "failed authentication".into(),
        })),
        Done::Error(Failure::PackGone(key)) => {
            Some(Err(FleetError::Remote(RemoteError::NotFound(key))))
        }
        Done::Error(Failure::PackBad(why)) => Some(Err(FleetError::Integrity {
            chunk: *id,
            pack: slot.pack,
            why,
        })),
        Done::Error(Failure::Unreachable(m)) => {
            Some(Err(FleetError::Remote(RemoteError::Unreachable(m))))
        }
    }
}

/// How far before its chunk a sequential reader's fetch may start (`plan_extent`), at most.
const BACKFILL: u64 = 2 << 20;

/// The chunks to fetch for a miss on `id` at `loc`: it and the chunks after it in its pack,
/// contiguous, up to `EXTENT` bytes (`RANDOM_EXTENT` for a random reader), stopping before one already cached or being fetched
/// (except by `take_over`, the stream whose rest this fetch takes over).
///
/// For a sequential reader, also the chunks just before it in the pack that are neither here
/// nor being fetched (up to `BACKFILL`, and a quarter of the bytes it read in a row): the
/// mount's read-ahead asks for several chunks at once on several threads, and at a pack's
/// start the one for a later chunk often came first. Its fetch began there, and the earlier
/// chunks' fetch ended where it began: two or three requests for one pack where one does
/// (measured: 56–72 requests per GiB against the 64; bench/README.md). Returns the
/// extent and the index in it of `id`.
fn plan_extent(
    store: &Store,
    loc: &ChunkLoc,
    id: &ChunkId,
    inflight: &HashMap<ChunkId, Arc<Slot>>,
    take_over: Option<&Arc<Flight>>,
    why: FetchFor,
) -> Result<(Vec<(ChunkId, ChunkLoc)>, usize), FleetError> {
    let max = crate::crypt::sealed_chunk_len(crate::chunker::MAX_CHUNK) as u32;
    let max_bytes = match why {
        FetchFor::MountPart => RANDOM_EXTENT,
        FetchFor::MountWhole { ahead } => ahead.clamp(MIN_AHEAD, EXTENT),
        FetchFor::Bulk => EXTENT,
    };
    let mut extent = store.pack_extent(loc, max_bytes)?;
    if extent.first().map(|(c, _)| c) != Some(id) {
        // The location rows disagree with each other: fetch the one chunk.
        extent = vec![(*id, *loc)];
    }
    let free = |c: &ChunkId| match inflight.get(c) {
        None => true,
        Some(s) => take_over.is_some_and(|f| Arc::ptr_eq(f, &s.flight)) && !s.is_done(),
    };
    let mut keep = 1;
    while keep < extent.len()
        && extent[keep].1.len <= max
        && free(&extent[keep].0)
        && !store.has_chunk(&extent[keep].0)?
    {
        keep += 1;
    }
    extent.truncate(keep);
    let back = match why {
        FetchFor::MountWhole { ahead } if take_over.is_none() => (ahead / 4).min(BACKFILL),
        _ => 0,
    };
    if back == 0 {
        return Ok((extent, 0));
    }
    let mut before = store.pack_chunks_before(loc, back)?;
    let mut from = before.len();
    while from > 0 {
        let (c, l) = &before[from - 1];
        if l.len > max || inflight.contains_key(c) || store.has_chunk(c)? {
            break;
        }
        from -= 1;
    }
    let mine = before.len() - from;
    before.drain(..from);
    before.extend(extent);
    Ok((before, mine))
}

/// Why a stream stops where another fetch took the rest of its extent over.
const TAKEN_OVER: &str = "taken over by another fetch";

/// One fetch's stream, run on its own thread.
struct Stream {
    store: Arc<Store>,
    remote: Arc<Remote>,
    state: Arc<Mutex<FleetState>>,
    cache: Arc<Cache>,
    fetches: Arc<Fetches>,
    /// Where the extent begins.
    from: ChunkLoc,
    /// The index in `extent` of the chunk whose reader started the fetch.
    mine: usize,
    extent: Vec<(ChunkId, ChunkLoc)>,
    slots: Vec<Arc<Slot>>,
    flight: Arc<Flight>,
    /// Whether it holds one of the `MAX_FETCHES` places.
    counted: bool,
    /// Its readers' bound: past it, the stream stops once nobody waits on it.
    bound: Duration,
    /// Where the chunks other than `mine` go as well (a mount read's: the mount's cache).
    /// With whether `mine` goes there too.
    sink: Option<(PlaintextSink, bool)>,
}

impl Stream {
    fn run(self) {
        let result = self.stream();
        release_place(&self.fetches, self.counted);
        if self.store.cache_count().bytes > self.cache.limit {
            self.cache.wake();
        }
        let rest = match result {
            Ok(()) => Done::Moved,
            Err(f) => Done::Error(f),
        };
        let mut inflight = self
            .fetches
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for ((c, _), slot) in self.extent.iter().zip(&self.slots) {
            if inflight.get(c).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                inflight.remove(c);
            }
            // A chunk the stream did not reach: its readers look again, or learn why.
            slot.complete(rest.clone());
        }
    }

    /// Whether the chunk at `i` is still this stream's to deliver (a reader far ahead may
    /// have taken it over).
    fn owns(&self, i: usize) -> bool {
        self.fetches
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&self.extent[i].0)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slots[i]))
    }

    /// Whether nobody wants what is left (`from` on) of a stream older than its readers'
    /// bound.
    fn unwanted(&self, from: usize) -> bool {
        self.flight.started.elapsed() > self.bound
            && now_ms().saturating_sub(self.flight.wanted_ms.load(Ordering::Acquire))
                > IDLE_STOP.as_millis() as u64
            && self.slots[from..]
                .iter()
                .all(|s| s.waiters.load(Ordering::Acquire) == 0)
    }

    /// Streams the extent (consecutive chunks of one pack) and caches each chunk that
    /// authenticates as soon as it is whole, completing its slot. `Ok` also when it stopped
    /// on purpose (taken over, or unwanted).
    fn stream(&self) -> Result<(), Failure> {
        let (extent, from) = (&self.extent, &self.from);
        let start = from.offset;
        let last = extent[extent.len() - 1].1;
        let Some(end) = last.offset.checked_add(last.len as u64) else {
            return Err(Failure::PackBad("its location overflows".into()));
        };
        // The stream's bytes are buffered in the extent (`FetchedExtent`): each chunk is
        // authenticated where it lies there once whole, and the bytes go to this host's copy
        // of the pack in large aligned writes, around the page cache.
        let mut ext = FetchedExtent::new(from.pack, start);
        let mut next = 0usize;
        let mut failed = 0u64;
        let mut cached = 0u64;
        let mut store_error = None;
        let mut stopped = false;
        // Chunks authenticated, in pack order, waiting for their bytes to be written before
        // they are indexed (and their slots completed); and those that failed, whose bytes are
        // punched out once written.
        let mut good: Vec<(usize, Plain)> = Vec::new();
        let mut bad: Vec<(ChunkId, ChunkLoc)> = Vec::new();
        // Authenticates chunk `next` from `env`, its whole sealed envelope: its plaintext if it
        // is good, else its slot fails.
        let take = |next: usize, env: &[u8], failed: &mut u64| -> Result<Option<Plain>, String> {
            if !self.owns(next) {
                return Err(TAKEN_OVER.into());
            }
            let cid = &extent[next].0;
            match self.store.keys().open_chunk(cid, env) {
                Ok(plain) => Ok(Some(Arc::new(plain))),
                Err(e) => {
                    tracing::error!(chunk = %cid, pack = %from.pack, "fleet: a fetched chunk failed authentication: {e}; not cached, not served");
                    *failed += 1;
                    self.slots[next].complete(Done::Failed);
                    Ok(None)
                }
            }
        };
        // Writes what is received of the chunks before `next` (`all`: to the last byte, else
        // whole blocks), indexes the authenticated chunks now wholly written and completes
        // their slots.
        let mut write = |ext: &mut FetchedExtent,
                         next: usize,
                         all: bool,
                         good: &mut Vec<(usize, Plain)>,
                         bad: &mut Vec<(ChunkId, ChunkLoc)>|
         -> Result<(), StoreError> {
            let upto = extent.get(next).map_or(end, |(_, l)| l.offset);
            let locs: Vec<(ChunkId, ChunkLoc)> = good.iter().map(|(i, _)| extent[*i]).collect();
            let n = self.store.put_fetched_extent(ext, upto, all, &locs)?;
            cached += n as u64;
            for (i, plain) in good.drain(..n) {
                self.slots[i].complete(Done::Cached(plain));
            }
            let written = ext.written();
            let gone = bad
                .iter()
                .take_while(|(_, l)| l.offset + l.len as u64 <= written)
                .count();
            self.store.forget_fetched(&bad[..gone])?;
            bad.drain(..gone);
            Ok(())
        };
        let got = self
            .remote
            .get_range_each(&pack_key(&from.pack), start..end, |piece| {
                self.flight
                    .received
                    .fetch_add(piece.len() as u64, Ordering::AcqRel);
                let mut data: &[u8] = &piece;
                let mut why_stop = None;
                while !data.is_empty() && why_stop.is_none() {
                    let n = ext.fill(data);
                    data = &data[n..];
                    // The chunks now whole in the buffer join `good` from here on.
                    let first_new = good.len();
                    while let Some(&(_, l)) = extent.get(next) {
                        let Some(env) = ext.bytes(l.offset, l.offset + l.len as u64) else {
                            break;
                        };
                        match take(next, env, &mut failed) {
                            Ok(Some(p)) => good.push((next, p)),
                            Ok(None) => bad.push(extent[next]),
                            Err(e) => {
                                stopped = e.as_str() == TAKEN_OVER;
                                why_stop = Some(e);
                                break;
                            }
                        }
                        next += 1;
                    }
                    // The plaintext goes to the mount's cache before the chunks are indexed: a
                    // read-ahead thread that finds a chunk indexed but not in that cache reads
                    // it back from the local copy and decrypts it again (profiled: a good part
                    // of the RocksDB reads and decryption on a cold read, before this order).
                    if let Some((sink, mine_too)) = &self.sink {
                        for (i, plain) in &good[first_new..] {
                            // `mine` is the reader's, who caches it.
                            if *i != self.mine || *mine_too {
                                sink(&extent[*i].0, plain.clone());
                            }
                        }
                    }
                    // A chunk someone waits for (the reader who started the fetch, or one
                    // who came for it since) is written and indexed at once, part-block and
                    // all, rather than with the next write's worth: on a slow link that could
                    // take longer than the reader may wait.
                    let waited = good[first_new..].iter().any(|(i, _)| {
                        *i == self.mine || self.slots[*i].waiters.load(Ordering::Acquire) > 0
                    });
                    if waited || ext.is_full() {
                        if let Err(e) = write(&mut ext, next, waited, &mut good, &mut bad) {
                            store_error = Some(e);
                            return Err("the local store refused a fetched chunk".into());
                        }
                        // The buffer keeps only the chunk not yet whole, and no chunk is
                        // larger than the room left (locations are bounded): never reached.
                        if ext.room() == 0 {
                            return Err("a fetched chunk does not fit the buffer".into());
                        }
                    }
                }
                if let Some(e) = why_stop {
                    return Err(e);
                }
                if next < extent.len() && self.unwanted(next) {
                    stopped = true;
                    return Err("no reader waits for the rest".into());
                }
                Ok(())
            });
        // What was received of the chunks taken, written to the last byte, and indexed.
        if store_error.is_none() {
            if let Err(e) = write(&mut ext, next, true, &mut good, &mut bad) {
                store_error = Some(e);
            }
        }
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.pack_requests += 1;
            s.chunks_fetched += cached;
            s.integrity_failures += failed;
            s.bytes_fetched += self.flight.received.load(Ordering::Acquire);
        }
        if let Some(e) = store_error {
            return Err(Failure::Unreachable(format!(
                "the local store refused a fetched chunk: {e}"
            )));
        }
        if stopped {
            return Ok(());
        }
        match got {
            Ok(_) => Ok(()),
            // The pack is gone before a byte came: fleet GC may have moved the chunk in an
            // entry this host has not applied yet. The caller catches up and looks again
            // (`Registry::fetch_missing`), and names an integrity failure only if the log then
            // places the chunk nowhere else: a host behind the log is not a tampered store.
            Err(RemoteError::NotFound(key)) if next == 0 => Err(Failure::PackGone(key)),
            // The store answered, but without the bytes the signed log places in this pack:
            // the pack is gone, truncated or replaced behind arca's back. Named as what it is
            // (an integrity failure of the pack), not as a store out of reach.
            Err(e @ (RemoteError::Other(_) | RemoteError::NotFound(_))) => {
                self.state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .integrity_failures += 1;
                let why = match e {
                    RemoteError::NotFound(_) => "the pack is missing from the store".to_owned(),
                    other => format!(
                        "the pack does not hold the bytes its signed location names ({other}): truncated or replaced behind arca's back"
                    ),
                };
                tracing::error!(chunk = %extent[next.min(extent.len() - 1)].0, pack = %from.pack, "fleet: {why}; not cached, not served");
                Err(Failure::PackBad(why))
            }
            Err(e) => Err(Failure::Unreachable(e.to_string())),
        }
    }
}
