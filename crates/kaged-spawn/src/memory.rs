//! Give the operating system back the memory a finished run freed.
//!
//! glibc keeps freed memory in per-thread arenas; every run has threads of its own, so after
//! runs end a long-lived daemon holds megabytes it no longer uses. `malloc_trim` returns it.
//! The one other place (beside `fds`) that calls into libc directly.
#![allow(unsafe_code)]

/// Return free heap memory to the OS (glibc; a no-op elsewhere).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds as free; it touches no
    // live allocation and may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
