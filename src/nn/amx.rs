//! Intel AMX's integer tile multiply, the pieces every kernel built on it shares: whether it runs
//! here, 64-byte lines to hold its operands, the fixed-point integers it multiplies, and one
//! block of the product (two tiles of rows times two tiles of columns).
//!
//! One instruction multiplies a tile of 16 rows of 64 bytes by a tile of 16 lines of 64 bytes,
//! each line holding 4 consecutive bytes of the sum's index for 16 columns, into 16 x 16 sums of
//! 32-bit integers (16 384 multiply-adds). Kernels keep two such sums for two row tiles and two
//! column tiles at once (tile registers 0-3) and load their operands into registers 4-7.
//!
//! Real values enter as 24-bit fixed-point integers q = round(v / s), s = max |v| / (2^23 - 1)
//! over whatever shares a scale, cut into three bytes (the top one signed): each byte's sums
//! are exact, and joined in 64 bits they give the exact sum of the rounded values. Results then
//! depend on neither the order nor the threads.
//!
//! The tile registers and their permission are the operating system's: Linux on x86-64 grants
//! them on request ([`available`]); elsewhere, or with `SNN_NO_TILES` set, callers keep their
//! float kernels.

use std::sync::OnceLock;

/// Whether the tile multiply runs here: checked once per process.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| std::env::var_os("SNN_NO_TILES").is_none() && imp::enable())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(super) use imp::*;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use std::arch::asm;
    use std::arch::x86_64::__cpuid_count;

    /// 64 bytes on a 64-byte boundary: one tile row. A row that straddles two cache lines
    /// makes every tile load three times slower (measured: 23 against 7.7 ns per multiply).
    #[repr(C, align(64))]
    #[derive(Clone, Copy)]
    pub struct Line(pub [u8; 64]);

    pub const ZERO: Line = Line([0; 64]);

    /// Rows (and lines) of every tile.
    pub const TILE: usize = 16;
    /// Bytes of a fixed-point integer, most significant first.
    pub const LIMBS: usize = 3;
    /// Largest |q|: 24-bit signed integers, whose top byte is a signed byte.
    pub const Q_MAX: f64 = ((1 << 23) - 1) as f64;

    /// The CPU's tile multiply and byte masks, and Linux's permission to use the tile state.
    pub(in crate::nn) fn enable() -> bool {
        let leaf7 = __cpuid_count(7, 0);
        let (amx_tile, amx_int8) = (leaf7.edx >> 24 & 1 == 1, leaf7.edx >> 25 & 1 == 1);
        if !(amx_tile && amx_int8 && std::arch::is_x86_feature_detected!("avx512bw")) {
            return false;
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a request for a permission; it changes nothing else and fails cleanly.
        unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
    }

    /// The integer nearest `x` (ties to even) for |x| < 2^31, by the float addition that
    /// leaves it in the low bits of the mantissa: unlike `as i32`, which must saturate (and
    /// send NaN to 0) and so takes one element at a time, this vectorises.
    #[inline(always)]
    pub fn nearest(x: f64) -> i32 {
        const SHIFTER: f64 = 6_755_399_441_055_744.0; // 1.5 x 2^52
        (x + SHIFTER).to_bits() as i32
    }

    /// Byte `limb` (0 the top, signed one) of the fixed-point integer `q`.
    #[inline(always)]
    pub fn limb(q: i32, limb: usize) -> u8 {
        (q >> (8 * (LIMBS - 1 - limb))) as u8
    }

    /// The multiplier that takes values whose largest magnitude is `largest` to fixed point, and
    /// the scale that takes the integers back (both 0 for an all-zero set).
    pub fn scales(largest: f32) -> (f64, f64) {
        if largest > 0.0 { (Q_MAX / f64::from(largest), f64::from(largest) / Q_MAX) } else { (0.0, 0.0) }
    }

    /// The tile configuration `ldtilecfg` reads: palette 1, then per tile register its bytes
    /// per row and its rows (all eight 16 rows of 64 bytes).
    #[repr(C, align(64))]
    struct Config {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    /// The tile registers configured on this thread until dropped.
    pub struct Tiles(());

    impl Tiles {
        /// Configures all eight tile registers as 16 rows of 64 bytes.
        ///
        /// # Safety
        /// [`enable`] must have returned true.
        pub unsafe fn begin() -> Self {
            let mut config =
                Config { palette: 1, start_row: 0, reserved: [0; 14], bytes_per_row: [0; 16], rows: [0; 16] };
            config.bytes_per_row[..8].fill(64);
            config.rows[..8].fill(TILE as u8);
            // SAFETY: a valid palette-1 layout; the caller checked the CPU.
            unsafe { asm!("ldtilecfg [{}]", in(reg) &raw const config, options(nostack)) };
            Tiles(())
        }

        /// Sets the four sums to zero.
        pub fn zero(&mut self) {
            // SAFETY: the tiles are configured while `self` lives.
            unsafe { asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack)) };
        }

        /// Adds to the four sums, for each `(a offset, b offset)` in `steps` (bytes), the rows
        /// at `a[i] + a offset` (16 rows, `a_stride` bytes apart) times the lines at `b[j] + b
        /// offset` (16 lines of 64 bytes), signed bytes where `signed` says so ((rows, lines)).
        ///
        /// # Safety
        /// Every tile read must lie in memory the caller may read.
        #[inline(always)]
        pub unsafe fn multiply(
            &mut self,
            signed: (bool, bool),
            (a, a_stride): ([*const u8; 2], usize),
            b: [*const u8; 2],
            steps: impl Iterator<Item = (usize, usize)>,
        ) {
            macro_rules! run {
                ($op:literal) => {
                    for (at, bt) in steps {
                        // SAFETY: the caller's contract.
                        unsafe {
                            asm!(
                                "tileloadd tmm4, [{a0} + {sa}*1]",
                                "tileloadd tmm6, [{b0} + {sb}*1]",
                                concat!($op, " tmm0, tmm4, tmm6"),
                                "tileloadd tmm7, [{b1} + {sb}*1]",
                                concat!($op, " tmm1, tmm4, tmm7"),
                                "tileloadd tmm5, [{a1} + {sa}*1]",
                                concat!($op, " tmm2, tmm5, tmm6"),
                                concat!($op, " tmm3, tmm5, tmm7"),
                                a0 = in(reg) a[0].add(at), a1 = in(reg) a[1].add(at),
                                b0 = in(reg) b[0].add(bt), b1 = in(reg) b[1].add(bt),
                                sa = in(reg) a_stride, sb = in(reg) 64usize, options(nostack),
                            )
                        }
                    }
                };
            }
            match signed {
                (false, false) => run!("tdpbuud"),
                (false, true) => run!("tdpbusd"),
                (true, false) => run!("tdpbsud"),
                (true, true) => run!("tdpbssd"),
            }
        }

        /// Stores the four sums as 32 x 32 integers: row r of the two row tiles, column e of
        /// the two line tiles at `out[r * 32 + e]`.
        ///
        /// # Safety
        /// `out` must address 1024 writable i32.
        pub unsafe fn store(&mut self, out: *mut i32) {
            // SAFETY: the caller's contract; rows of 128 bytes.
            unsafe {
                asm!(
                    "tilestored [{p0} + {s}*1], tmm0",
                    "tilestored [{p1} + {s}*1], tmm1",
                    "tilestored [{p2} + {s}*1], tmm2",
                    "tilestored [{p3} + {s}*1], tmm3",
                    p0 = in(reg) out, p1 = in(reg) out.add(TILE), p2 = in(reg) out.add(TILE * 2 * TILE),
                    p3 = in(reg) out.add(TILE * 2 * TILE + TILE), s = in(reg) 128usize, options(nostack),
                )
            }
        }
    }

    impl Drop for Tiles {
        fn drop(&mut self) {
            // SAFETY: ends the tile use `begin` started.
            unsafe { asm!("tilerelease", options(nostack)) };
        }
    }

    /// `lines` as the i32 they hold.
    pub fn as_sums(lines: &[Line]) -> &[i32] {
        // SAFETY: 64-byte-aligned lines hold 16 i32 each; every bit pattern is an i32.
        unsafe { std::slice::from_raw_parts(lines.as_ptr().cast(), lines.len() * 16) }
    }

    /// `lines` as bytes.
    pub fn as_bytes_mut(lines: &mut [Line]) -> &mut [u8] {
        // SAFETY: lines are plain bytes.
        unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 64) }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    pub(in crate::nn) fn enable() -> bool {
        false
    }
}
