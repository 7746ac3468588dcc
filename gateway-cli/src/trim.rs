//! Giving memory freed after start-up back to the operating system.
//!
//! Compiling a big configuration allocates far more than the plan keeps (the text, one YAML tree per
//! element, diagnostics bookkeeping). glibc's allocator keeps freed memory in its arenas, so without
//! this the process would keep the compile's high-water mark as resident memory for its whole life.

/// Returns free heap pages to the OS. With jemalloc (the default build) all arenas are purged at once
/// (`arena.<all>.purge`; its background thread would return them only after the decay time, ~10 s:
/// 100,000 routes served at ~300 MB 3 s after listening, ~180 MB once settled). With the system
/// allocator (`--no-default-features`) this is glibc's `malloc_trim(0)`; a no-op with other C
/// libraries.
pub fn release_free_memory() {
    #[cfg(feature = "jemalloc")]
    {
        // MALLCTL_ARENAS_ALL (4096): every arena.
        let name = c"arena.4096.purge";
        // SAFETY: a `void` mallctl: no old or new value pointers, a NUL-terminated name; jemalloc
        // purges its own unused dirty pages and may be called from any thread.
        let _rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        // a failed purge (never seen) only leaves the pages to the background thread's decay
    }
    #[cfg(all(not(feature = "jemalloc"), target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            /// glibc: release free memory from the top of the heap and free pages inside it.
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only walks glibc's own free lists; it takes no pointers from us and
        // is safe to call at any time from any thread.
        unsafe {
            malloc_trim(0);
        }
    }
}
