//! Tuning of glibc's allocator, which arcad uses (no custom global allocator).
//!
//! Why: arcad's memory budget is the mount's plaintext cache plus a small fixed overhead
//! (issue #3: peak RSS ≤ 64 MiB + the cache). Two glibc defaults broke that, measured on a 1 GiB
//! file with a 256 MiB cache (bench/README.md):
//! - glibc gives every thread that contends for the heap its own arena, up to 8 per core. The
//!   mount's request, decryption and prefetch threads allocate and free chunk-sized buffers
//!   (up to 1 MiB) on about 20 threads, so freed space was stranded in many arenas: peak RSS
//!   463 MiB after sequential and random reads, 325 MiB with one arena per core.
//! - A push frees tens of MiB of buffers at its end, which glibc keeps mapped (80 MiB resident
//!   after a 1 GiB push, 29 MiB after `malloc_trim`).
//!
//! Both calls below are the only unsafe code in this module; they take no pointers.

/// Caps glibc's malloc arenas at one per core. Call once, first thing in `main`, before any
/// thread exists (arenas already created are not merged). A no-op on other C libraries.
#[allow(unsafe_code)]
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt takes two integers and changes allocator settings; glibc serializes
        // it against allocation. Returns 0 when the setting is refused, which costs only memory.
        let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
        if ok == 0 {
            tracing::debug!(arenas, "glibc refused M_ARENA_MAX");
        }
    }
}

/// Returns the allocator's free pages to the kernel (after a push, which frees much at once).
/// Costs a walk of the heap's free lists: a few milliseconds, not for hot paths.
#[allow(unsafe_code)]
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes an integer (the padding to keep) and only returns whole free
        // pages of the heap to the kernel; it is thread-safe and invalidates no allocation.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
