//! Allocator settings for the long training loops (the binary and the benchmarks call them).

/// Training allocates the same large batch matrices at every step. glibc hands big blocks back
/// to the kernel when they are freed and page-faults them in again at the next step (a fifth of
/// a convolutional model's training time in a profile); keeping freed memory in the process
/// avoids that. Measured on the spiking CNN (`snn train networks/fashion_scnn.ron --epochs 1
/// --data tests/data/fashion-mnist`, alternating runs): 220 and 189 samples/s with large blocks
/// mapped, 244 and 241 from the heap, peak memory 699 -> 734 MB; fashion_snn and fashion_bnn
/// unchanged within noise.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator thresholds; call it before any other thread starts.
    unsafe {
        // 32 MiB is glibc's largest allowed mmap threshold on 64-bit systems.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        // A spiking CNN's batch matrices over its steps exceed even that threshold (100 MB
        // and more), so large blocks come from the heap too, where freed ones are reused.
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}
