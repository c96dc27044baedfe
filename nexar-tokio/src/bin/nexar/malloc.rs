//! The CLI's allocator policy: keep freed memory for reuse instead of handing it back to
//! the kernel after every collective.
//!
//! glibc returns the top of its heap to the kernel once more than 128 KiB is free there,
//! and serves blocks above a (self-adjusting) threshold from fresh `mmap`s. A collective
//! allocates and frees megabytes per operation (64 KiB datagrams, 256 KiB chunk payloads
//! and frames, working buffers), so with the defaults every operation faults its memory
//! in again: on the 4-rank loopback allreduce of 1 MiB, 15% of the CPU went to page
//! faults and unmapping. With the thresholds below, 300 such allreduces took 0.25 s of
//! system time instead of 0.53-0.79 s (user time unchanged, same peak RSS); at 16 MiB the
//! saving is about 10% of system time (see BENCHMARKS.md). Blocks of 32 MiB and more
//! still come from `mmap` and go back on free, so a finished large collective does not
//! pin its memory.
//!
//! Only the binary decides this: the library leaves the allocator to the application.

/// Blocks at least this large are mapped and unmapped on their own.
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of the heap kept before trimming.
const TRIM_THRESHOLD: i32 = 256 << 20;
/// Extra heap requested per growth, so that growing in small steps costs fewer calls.
const TOP_PAD: i32 = 16 << 20;

/// Apply the policy above (glibc on Linux; elsewhere the allocator is left alone).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (param, value) in [
        (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (libc::M_TOP_PAD, TOP_PAD),
    ] {
        // SAFETY: `mallopt` takes two integers and only changes glibc's allocator
        // parameters; it is called before any thread exists (first thing in `main`), with
        // parameter names from libc's glibc bindings and values in range (M_MMAP_THRESHOLD
        // at most HEAP_MAX/2 = 32 MiB on 64-bit). A refusal (return 0) keeps the default.
        let _ = unsafe { libc::mallopt(param, value) };
    }
}
