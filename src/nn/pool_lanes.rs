//! 2 x 2 max pooling of f32 pairs of rows, and its backward, sixteen windows at a time in
//! 512-bit lanes: the spiking CNN's pooled LIF layers pool every step of every sample, and the
//! scalar loops over rows of 14 or 7 windows left the compiler nothing to vectorise. The same
//! selects in the same order as [`crate::nn::pool::max_pairs_into`] and
//! [`crate::nn::pool::route_pairs_into`], so the results are the same bits (tested).

use std::mem::MaybeUninit;

/// Whether this CPU runs the kernels (AVX-512 Foundation).
pub fn available() -> bool {
    imp::available()
}

/// The windows of one pair of rows: the largest of each window's four values into `ys` (the
/// first largest in reading order) and its input's index into `ws`, `corner` being the index
/// of the pair's first value. `upper` and `lower` hold at least 2 `ys.len()` values each.
///
/// # Panics
/// Where [`available`] is false.
pub fn max_of_windows(
    upper: &[f32],
    lower: &[f32],
    width: u32,
    corner: u32,
    ys: &mut [MaybeUninit<f32>],
    ws: &mut [MaybeUninit<u32>],
) {
    assert!(upper.len() >= 2 * ys.len() && lower.len() >= 2 * ys.len() && ws.len() == ys.len());
    assert!(available(), "pool_lanes needs AVX-512");
    // SAFETY: AVX-512 is there, and the lengths were checked.
    unsafe { imp::max_of_windows(upper, lower, width, corner, ys, ws) }
}

/// The backward of [`max_of_windows`]: each window's gradient to its winner, zero to the other
/// three, into the first 2 `dys.len()` values of `upper` and `lower`.
///
/// # Panics
/// Where [`available`] is false.
pub fn route_to_winners(
    dys: &[f32],
    ws: &[u32],
    width: u32,
    corner: u32,
    upper: &mut [MaybeUninit<f32>],
    lower: &mut [MaybeUninit<f32>],
) {
    assert!(upper.len() >= 2 * dys.len() && lower.len() >= 2 * dys.len() && ws.len() == dys.len());
    assert!(available(), "pool_lanes needs AVX-512");
    // SAFETY: AVX-512 is there, and the lengths were checked.
    unsafe { imp::route_to_winners(dys, ws, width, corner, upper, lower) }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Lanes 0, 2, ..., 30 and 1, 3, ..., 31 of two vectors: the first and second columns of
    /// sixteen windows.
    const EVEN: [i32; 16] = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30];
    const ODD: [i32; 16] = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31];
    /// Each of eight windows twice (its two columns), for the first and the last eight.
    const FIRST_TWICE: [i32; 16] = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7];
    const LAST_TWICE: [i32; 16] = [8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15];

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// The lowest `n` lanes (n <= 16).
    fn lowest(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// Each of sixteen windows' first input, windows `first`.. of a pair of rows whose first
    /// value is input `corner`: corner + 2 (first + lane).
    #[target_feature(enable = "avx512f")]
    fn window_corners(corner: u32, first: usize) -> __m512i {
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        _mm512_add_epi32(_mm512_set1_epi32((corner + 2 * first as u32) as i32), _mm512_slli_epi32::<1>(lanes))
    }

    #[target_feature(enable = "avx512f")]
    fn index(lanes: [i32; 16]) -> __m512i {
        // SAFETY: an array of sixteen i32 is 64 bytes.
        unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
    }

    /// # Safety
    /// AVX-512F; `upper` and `lower` hold at least 2 `ys.len()` values, `ws` as many as `ys`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn max_of_windows(
        upper: &[f32],
        lower: &[f32],
        width: u32,
        corner: u32,
        ys: &mut [MaybeUninit<f32>],
        ws: &mut [MaybeUninit<u32>],
    ) {
        let (even, odd) = (index(EVEN), index(ODD));
        let (one, below, diagonal) =
            (_mm512_set1_epi32(1), _mm512_set1_epi32(width as i32), _mm512_set1_epi32(width as i32 + 1));
        for first in (0..ys.len()).step_by(16) {
            let n = (ys.len() - first).min(16);
            // The window's values: 2 n of each row, in two vectors.
            let (near, far) = (lowest((2 * n).min(16)), lowest((2 * n).saturating_sub(16)));
            // SAFETY: the masks read only the 2 n values from 2 first on, which the rows hold.
            let [a, b, c, d] = unsafe {
                let (u, l) = (upper.as_ptr().add(2 * first), lower.as_ptr().add(2 * first));
                let (u0, u1) = (_mm512_maskz_loadu_ps(near, u), _mm512_maskz_loadu_ps(far, u.add(16)));
                let (l0, l1) = (_mm512_maskz_loadu_ps(near, l), _mm512_maskz_loadu_ps(far, l.add(16)));
                [
                    _mm512_permutex2var_ps(u0, even, u1),
                    _mm512_permutex2var_ps(u0, odd, u1),
                    _mm512_permutex2var_ps(l0, even, l1),
                    _mm512_permutex2var_ps(l0, odd, l1),
                ]
            };
            // A later value wins only when strictly larger than all before it (NaN never wins).
            let b_wins = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(b, a);
            let ab = _mm512_mask_blend_ps(b_wins, a, b);
            let c_wins = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(c, ab);
            let abc = _mm512_mask_blend_ps(c_wins, ab, c);
            let d_wins = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(d, abc);
            let top = _mm512_mask_blend_ps(d_wins, abc, d);
            let offset = _mm512_mask_mov_epi32(_mm512_maskz_mov_epi32(b_wins, one), c_wins, below);
            let offset = _mm512_mask_mov_epi32(offset, d_wins, diagonal);
            let at = window_corners(corner, first);
            // SAFETY: the mask writes the n windows from `first` on, which ys and ws hold.
            unsafe {
                _mm512_mask_storeu_ps(ys.as_mut_ptr().add(first).cast(), lowest(n), top);
                _mm512_mask_storeu_epi32(ws.as_mut_ptr().add(first).cast(), lowest(n), _mm512_add_epi32(at, offset));
            }
        }
    }

    /// # Safety
    /// AVX-512F; `upper` and `lower` hold at least 2 `dys.len()` values, `ws` as many as `dys`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn route_to_winners(
        dys: &[f32],
        ws: &[u32],
        width: u32,
        corner: u32,
        upper: &mut [MaybeUninit<f32>],
        lower: &mut [MaybeUninit<f32>],
    ) {
        let (first_twice, last_twice) = (index(FIRST_TWICE), index(LAST_TWICE));
        // Which offset in its window each value of a row has: 0, 1, 0, 1, ... above, w, w + 1,
        // ... below.
        let column = _mm512_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1);
        let column_below = _mm512_add_epi32(column, _mm512_set1_epi32(width as i32));
        for first in (0..dys.len()).step_by(16) {
            let n = (dys.len() - first).min(16);
            // SAFETY: the mask reads only the n windows from `first` on.
            let (g, won) = unsafe {
                (
                    _mm512_maskz_loadu_ps(lowest(n), dys.as_ptr().add(first)),
                    _mm512_maskz_loadu_epi32(lowest(n), ws.as_ptr().add(first).cast()),
                )
            };
            // 0 + g, as the scalar routing writes it (-0 becomes +0).
            let g = _mm512_add_ps(_mm512_setzero_ps(), g);
            let offset = _mm512_sub_epi32(won, window_corners(corner, first));
            for (half, twice) in [first_twice, last_twice].into_iter().enumerate() {
                let values = 2 * n.saturating_sub(8 * half).min(8);
                if values == 0 {
                    break;
                }
                let (g, offset) = (_mm512_permutexvar_ps(twice, g), _mm512_permutexvar_epi32(twice, offset));
                let above = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(offset, column), g);
                let below = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(offset, column_below), g);
                let from = 2 * first + 16 * half;
                // SAFETY: the mask writes the 2 n values from 2 first on, which the rows hold.
                unsafe {
                    _mm512_mask_storeu_ps(upper.as_mut_ptr().add(from).cast(), lowest(values), above);
                    _mm512_mask_storeu_ps(lower.as_mut_ptr().add(from).cast(), lowest(values), below);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use std::mem::MaybeUninit;

    pub fn available() -> bool {
        false
    }
    pub unsafe fn max_of_windows(
        _: &[f32],
        _: &[f32],
        _: u32,
        _: u32,
        _: &mut [MaybeUninit<f32>],
        _: &mut [MaybeUninit<u32>],
    ) {
        unreachable!("available() is false")
    }
    pub unsafe fn route_to_winners(
        _: &[f32],
        _: &[u32],
        _: u32,
        _: u32,
        _: &mut [MaybeUninit<f32>],
        _: &mut [MaybeUninit<f32>],
    ) {
        unreachable!("available() is false")
    }
}
