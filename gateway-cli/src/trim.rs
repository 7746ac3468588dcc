//! Giving memory freed after start-up back to the operating system.
//!
//! Compiling a big configuration allocates far more than the plan keeps (the text, one YAML tree per
//! element, diagnostics bookkeeping). glibc's allocator keeps freed memory in its arenas, so without
//! this the process would keep the compile's high-water mark as resident memory for its whole life.

/// Returns free heap pages to the OS. With jemalloc (the default build) there is nothing to do: its
/// background thread returns freed pages after the decay time (~10 s). With the system allocator
/// (`--no-default-features`) this is glibc's `malloc_trim(0)`; a no-op with other C libraries.
pub fn release_free_memory() {
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
