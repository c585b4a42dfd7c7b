//! A small fixed pool of named std threads fed by a bounded channel. Prefetch uses it to drop
//! work when busy; the FUSE adapter uses it to keep chunk decryption off the threads that answer
//! lookups and listings.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

pub(crate) struct Pool {
    name: &'static str,
    tx: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    pub(crate) fn new(name: &'static str, threads: usize, queue: usize) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || work(name, &rx));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) => {
                    // Dropping `tx` ends the workers already started; join them before failing.
                    drop(tx);
                    for w in workers {
                        let _ = w.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(Self {
            name,
            tx: Some(tx),
            workers,
        })
    }

    /// Queue `job` unless the queue is full; the job comes back if it was not queued.
    pub(crate) fn try_run(&self, job: Job) -> Result<(), Job> {
        match &self.tx {
            Some(tx) => tx.try_send(job).map_err(|e| match e {
                TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
            }),
            None => Err(job),
        }
    }

    /// Queue `job`, waiting for room; the job comes back only if the pool has shut down.
    pub(crate) fn run(&self, job: Job) -> Result<(), Job> {
        match &self.tx {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }
}

fn work(name: &str, rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else {
            return;
        };
        // A panicking job must not shrink the pool; fuser answers its dropped reply with EIO.
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!(pool = name, "a job panicked");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the channel lets each worker finish its current job and the queue, then exit.
        self.tx = None;
        for w in self.workers.drain(..) {
            if w.join().is_err() {
                tracing::error!(pool = self.name, "a worker thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    #[test]
    fn runs_jobs_and_drains_on_drop() {
        let done = Arc::new(AtomicUsize::new(0));
        let pool = Pool::new("test", 2, 100).unwrap();
        for _ in 0..50 {
            let done = Arc::clone(&done);
            assert!(pool
                .run(Box::new(move || {
                    done.fetch_add(1, Ordering::SeqCst);
                }))
                .is_ok());
        }
        drop(pool);
        assert_eq!(done.load(Ordering::SeqCst), 50);
    }

    #[test]
    fn try_run_gives_the_job_back_when_full_and_survives_panics() {
        let pool = Pool::new("test", 1, 1).unwrap();
        let gate = Arc::new(Barrier::new(2));
        let g = Arc::clone(&gate);
        // Occupies the only worker until the barrier opens.
        assert!(pool
            .run(Box::new(move || {
                g.wait();
            }))
            .is_ok());
        // Wait until the worker took it off the queue, then fill the queue's single slot.
        let mut queued = false;
        for _ in 0..1000 {
            if pool.try_run(Box::new(|| panic!("boom"))).is_ok() {
                queued = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(queued);
        assert!(
            pool.try_run(Box::new(|| {})).is_err(),
            "queue should be full"
        );
        gate.wait();
        // The panicking job ran; the worker is still there for the next one.
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        assert!(pool
            .run(Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }))
            .is_ok());
        drop(pool);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
