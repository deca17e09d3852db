//! The binary's only `unsafe`: handing freed heap memory back to the kernel.

/// Returns the free memory of every malloc arena to the kernel. glibc keeps what a burst
/// of work freed (the peer set of a large apply, a large `/metrics` text) mapped in the
/// arena of the thread that freed it; with thousands of peers that is tens of MiB that
/// no one uses. Other C libraries (musl, which the image uses) return large frees by
/// themselves: nothing to do there.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and may be called from any thread at any
    // time; glibc serialises it with each arena's own lock.
    unsafe {
        libc::malloc_trim(0);
    }
}
