//! Tuning of glibc's allocator, which arcad uses (no custom global allocator).
//!
//! Why: arcad's memory budget is the mount's plaintext cache plus a small fixed overhead
//! (issue #3: peak RSS ≤ 64 MiB + the cache). glibc's defaults broke that, measured with a
//! 256 MiB cache (bench/README.md):
//! - glibc gives every thread that contends for the heap its own arena, up to 8 per core. The
//!   mount's request, decryption and prefetch threads allocate and free chunk-sized and
//!   read-sized buffers (up to 1 MiB) on about 20 threads, so freed space was stranded in many
//!   arenas: peak RSS 463 MiB after sequential and random reads, 325 MiB with one arena per core.
//! - glibc's sliding mmap threshold put large short-lived buffers on the heap (see `tune`).
//! - Free memory stays resident until trimmed: a push's buffers (80 MiB resident after a 1 GiB
//!   push, 29 MiB after `malloc_trim`) and the holes the cache's churn leaves (see
//!   `spawn_trimmer`, which trims every second and so covers both).
//!
//! The unsafe calls here (mallopt, malloc_trim) take integers only, no pointers.

/// Caps glibc's malloc arenas at one per core and fixes its mmap threshold at 512 KiB. Call
/// once, first thing in `main`, before any thread exists (arenas already created are not
/// merged). A no-op on other C libraries.
///
/// The fixed threshold: glibc raises its mmap threshold to the size of every mmapped block it
/// frees (up to 32 MiB), after which a push's 4 MiB read buffers and the mount's 1 MiB replies
/// came from the heap, between long-lived cached chunks, and their holes stayed resident.
/// Measured on a 2 GiB push and read with a 256 MiB cache: resident after the push 45 → 29 MiB,
/// peak while reading 336 → 323 MiB. Chunks (at most 128 KiB, 32 KiB on average) stay on the
/// heap.
///
/// Returns the settings glibc refused (it runs before logging is set up; the caller logs them).
#[allow(unsafe_code)]
pub fn tune() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut refused = Vec::new();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        for (param, value, name) in [
            (libc::M_ARENA_MAX, arenas, "M_ARENA_MAX"),
            (libc::M_MMAP_THRESHOLD, 512 << 10, "M_MMAP_THRESHOLD"),
        ] {
            // SAFETY: mallopt takes two integers and changes allocator settings; glibc
            // serializes it against allocation. It returns 0 when it refuses a setting, which
            // costs only memory.
            if unsafe { libc::mallopt(param, value) } == 0 {
                refused.push(name);
            }
        }
    }
    refused
}

/// Returns the allocator's free pages to the kernel. Costs a walk of the heap's free lists: up
/// to a few milliseconds, not for hot paths.
#[allow(unsafe_code)]
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes an integer (the padding to keep) and only returns whole free
        // pages of the heap to the kernel; it is thread-safe and invalidates no allocation.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Starts a thread that returns free heap pages to the kernel every `every`. Why: the mount's
/// cache replaces chunks of every size up to 128 KiB, and the holes they leave between
/// cached chunks stay resident; measured on a 2 GiB read with a 256 MiB cache, free-but-resident
/// heap was about 27 MB (10% of the cache) without it, and resident memory after the reads
/// 325 → 315 MiB with a trim every second. A trim with nothing to release costs microseconds.
pub fn spawn_trimmer(every: std::time::Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("arca-trim".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            release_free_memory();
        })
        .map(drop)
}
