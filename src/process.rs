//! Settings of the process that the binary and the benchmarks run in: the allocator's, the
//! floating-point mode of every computing thread, and rayon's pool of threads.

/// All of the below, once at the start of the process, before any other thread starts. The
/// main thread joins rayon's pool as one of its workers, so each parallel section of a training
/// or simulation step starts where it is called, instead of waking a worker and sleeping until
/// it is done: two context switches per section, a quarter of a one-thread epoch of
/// networks/fashion_rows.ron (benches/REPORT.md). Later calls change nothing.
pub fn set_up() {
    keep_freed_memory();
    flush_to_zero();
    // A second call finds the pool built: that is fine.
    let _ = rayon::ThreadPoolBuilder::new().use_current_thread().start_handler(|_| flush_to_zero()).build_global();
}

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

/// Makes this thread's SSE/AVX arithmetic treat subnormal numbers (below 1.2e-38 in f32,
/// 2.2e-308 in f64) as zero, in its inputs (DAZ) and its results (FTZ), as GPUs do for f32 and
/// PyTorch does after `torch.set_flush_denormal(True)`.
///
/// Why: an x86 core takes a micro-code assist, around a hundred cycles, for each operation that
/// meets a subnormal. Training makes more of them as it goes (gradients and the optimizer's
/// moments shrink through time and through the surrogate's tails), so `snn train
/// networks/fashion_snn.ron` slowed from 3101 to 2130 samples/s between a 3000-image and a
/// 24000-image epoch; flushing them gives 3790 and 3540, with the losses and accuracies
/// unchanged to the four printed digits. Every thread must call it, so that a seed gives the
/// same run on any number of threads and ranks.
#[cfg(target_arch = "x86_64")]
pub fn flush_to_zero() {
    /// MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6) flags.
    const FTZ_DAZ: u32 = 0x8040;
    let mut csr: u32 = 0;
    // SAFETY: stmxcsr and ldmxcsr only store and load this thread's MXCSR register, which every
    // x86_64 CPU has, through a pointer to a local; the flags change how subnormals round.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
        csr |= FTZ_DAZ;
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly));
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn flush_to_zero() {}
