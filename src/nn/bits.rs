//! Products of +-1 matrices as bits: 64 values per machine word, `n - 2 popcount(x XOR w)` per
//! dot product, with AVX-512 or AVX2 population counts where the CPU has them; and a packed
//! `Dense(binary) -> BatchNorm -> Sign` block, its batch norm and sign reduced to one range of
//! counts per unit ([`PackedBlock`]). The binary models build on these (src/models/binary.rs packs
//! a whole network; a binarised layer fed by signs trains through [`sign_product`]).

use nalgebra::DMatrix;
use rayon::prelude::*;

use super::Real;

/// The columns (`inputs` values each) of a column-major batch of +-1 as bits: 1 for +1, 0 for
/// -1, 64 inputs per word, `inputs.div_ceil(64)` words per column; padding bits are 0 in both
/// operands of a product, so their XOR adds nothing to the count.
pub fn pack_columns<F: Real>(x: &[F], inputs: usize) -> Vec<u64> {
    let words = inputs.div_ceil(64);
    let mut bits = vec![0u64; words * (x.len() / inputs.max(1))];
    for (column, packed) in x.chunks(inputs).zip(bits.chunks_mut(words)) {
        for (i, &v) in column.iter().enumerate() {
            packed[i / 64] |= ((v > F::zero()) as u64) << (i % 64);
        }
    }
    bits
}

/// One `Dense(binary) -> BatchNorm -> Sign` block, packed.
#[derive(Debug, Clone)]
pub struct PackedBlock {
    inputs: usize,
    words: usize,
    /// Row-major: the words of unit j's weights at j * words.
    weights: Vec<u64>,
    /// Per unit, the inclusive range of popcounts (of x XOR w) that turn it on; (1, 0) when
    /// none does.
    ranges: Vec<(u64, u64)>,
}

impl PackedBlock {
    /// A block of `weights` rows packed by [`pack_rows`] over `inputs` inputs, unit j on for
    /// popcounts in `ranges[j]` (inclusive; (1, 0) for never).
    pub fn new(inputs: usize, weights: Vec<u64>, ranges: Vec<(u64, u64)>) -> Self {
        PackedBlock { inputs, words: inputs.div_ceil(64), weights, ranges }
    }

    pub fn units(&self) -> usize {
        self.ranges.len()
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Words per packed input column.
    pub fn words(&self) -> usize {
        self.words
    }

    /// Packed outputs (`units` bits per sample) of packed inputs, `samples` samples.
    pub fn forward(&self, x: &[u64], samples: usize) -> Vec<u64> {
        let out_words = self.units().div_ceil(64);
        let mut out = vec![0u64; out_words * samples];
        for_each_count(&self.weights, self.words, x, samples, |tile, sample, counts| {
            let ranges = &self.ranges[64 * tile..];
            let (mut word0, mut word1) = (0u64, 0u64);
            for (bit, (&(c0, c1), &(lo, hi))) in counts.iter().zip(ranges).enumerate() {
                word0 |= (((c0 >= lo) & (c0 <= hi)) as u64) << bit;
                word1 |= (((c1 >= lo) & (c1 <= hi)) as u64) << bit;
            }
            out[sample * out_words + tile] = word0;
            if sample + 1 < samples {
                out[(sample + 1) * out_words + tile] = word1;
            }
        });
        out
    }
}

/// popcount(w XOR x) of every weight row (`words` words each) against every packed sample,
/// handed out 64 rows (a tile of rows that stays in the L1 cache) and two samples at a time:
/// `emit(tile, sample, counts)` gets, for each row r of the tile, the counts against samples
/// `sample` and `sample + 1` (a lone last sample is paired with itself).
fn for_each_count(
    weights: &[u64],
    words: usize,
    x: &[u64],
    samples: usize,
    emit: impl FnMut(usize, usize, &[(u64, u64)]),
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512vpopcntdq") {
            // SAFETY: AVX-512 VPOPCNTDQ (and so AVX-512F) is present.
            unsafe { avx512::for_each_count(weights, words, x, samples, emit) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present.
            unsafe { avx2::for_each_count(weights, words, x, samples, emit) };
            return;
        }
    }
    tiles(weights, words, x, samples, |w, x0, x1| (count(w, x0), count(w, x1)), emit);
}

/// popcount(w XOR x), word by word.
#[inline(always)]
fn count(w: &[u64], x: &[u64]) -> u64 {
    w.iter().zip(x).map(|(a, b)| (a ^ b).count_ones() as u64).sum()
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    /// The plain word loop, compiled where the CPU counts the bits of eight words in one
    /// instruction (VPOPCNTQ), which the compiler then uses.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    pub unsafe fn for_each_count(
        weights: &[u64],
        words: usize,
        x: &[u64],
        samples: usize,
        emit: impl FnMut(usize, usize, &[(u64, u64)]),
    ) {
        super::tiles(weights, words, x, samples, |w, x0, x1| (super::count(w, x0), super::count(w, x1)), emit);
    }
}

/// The loops of [`for_each_count`] around a kernel counting one row against two samples.
#[inline(always)]
fn tiles(
    weights: &[u64],
    words: usize,
    x: &[u64],
    samples: usize,
    count2: impl Fn(&[u64], &[u64], &[u64]) -> (u64, u64),
    mut emit: impl FnMut(usize, usize, &[(u64, u64)]),
) {
    let x = &x[..words * samples];
    let mut counts = [(0u64, 0u64); 64];
    for (tile, rows) in weights.chunks(64 * words).enumerate() {
        let units = rows.len() / words;
        for (pair, xs) in x.chunks(2 * words).enumerate() {
            let (x0, x1) = if xs.len() == 2 * words { xs.split_at(words) } else { (xs, xs) };
            for (c, w) in counts.iter_mut().zip(rows.chunks_exact(words)) {
                *c = count2(w, x0, x1);
            }
            emit(tile, 2 * pair, &counts[..units]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub unsafe fn for_each_count(
        weights: &[u64],
        words: usize,
        x: &[u64],
        samples: usize,
        emit: impl FnMut(usize, usize, &[(u64, u64)]),
    ) {
        super::tiles(weights, words, x, samples, |w, x0, x1| count2(w, x0, x1), emit);
    }

    fn sum_lanes(v: __m256i) -> u64 {
        // SAFETY: only called from AVX2 code below; these are plain register operations.
        unsafe {
            let half = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            (_mm_cvtsi128_si64(half) + _mm_extract_epi64(half, 1)) as u64
        }
    }

    /// popcount(w XOR x0) and popcount(w XOR x1), 256 bits at a time: the count of each nibble
    /// comes from a 16-entry table (pshufb); byte counts add up over up to 31 vectors (at most
    /// 8 x 31 = 248 per byte), then fold into 64-bit lanes (sad against zero).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn count2(w: &[u64], x0: &[u64], x1: &[u64]) -> (u64, u64) {
        let n = w.len().min(x0.len()).min(x1.len());
        let vectors = n / 4;
        let table = _mm256_setr_epi8(
            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
        );
        let low = _mm256_set1_epi8(0x0f);
        let zero = _mm256_setzero_si256();
        let popcount = |d: __m256i| {
            let lo = _mm256_shuffle_epi8(table, _mm256_and_si256(d, low));
            let hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(d, 4), low));
            _mm256_add_epi8(lo, hi)
        };
        let (mut total0, mut total1) = (zero, zero);
        let mut v = 0;
        while v < vectors {
            let end = (v + 31).min(vectors);
            let (mut bytes0, mut bytes1) = (zero, zero);
            while v < end {
                // SAFETY: v < n / 4, so words 4v..4v+4 lie inside all three slices.
                let (a, b0, b1) = unsafe {
                    (
                        _mm256_loadu_si256(w.as_ptr().add(4 * v) as *const __m256i),
                        _mm256_loadu_si256(x0.as_ptr().add(4 * v) as *const __m256i),
                        _mm256_loadu_si256(x1.as_ptr().add(4 * v) as *const __m256i),
                    )
                };
                bytes0 = _mm256_add_epi8(bytes0, popcount(_mm256_xor_si256(a, b0)));
                bytes1 = _mm256_add_epi8(bytes1, popcount(_mm256_xor_si256(a, b1)));
                v += 1;
            }
            total0 = _mm256_add_epi64(total0, _mm256_sad_epu8(bytes0, zero));
            total1 = _mm256_add_epi64(total1, _mm256_sad_epu8(bytes1, zero));
        }
        let tail = |x: &[u64]| (4 * vectors..n).map(|k| (w[k] ^ x[k]).count_ones() as u64).sum::<u64>();
        (sum_lanes(total0) + tail(x0), sum_lanes(total1) + tail(x1))
    }
}

/// Whether every entry of `x` is -1 or +1 (a sign layer's output), so that a product with
/// binarised weights can run as [`sign_product`].
pub fn is_signs<F: Real>(x: &DMatrix<F>) -> bool {
    x.as_slice().par_chunks(1 << 14).all(|xs| xs.iter().fold(true, |ok, &v| ok & (v.abs() == F::one())))
}

/// `w x` for a matrix `w` and a batch `x` whose entries are all -1 or +1, by XNOR and
/// popcount: each entry is `inputs - 2 popcount(w_row XOR x_column)`, the very value the float
/// product gives (its terms are +-1, so every partial sum is an integer far below 2^24 and
/// exact in f32). Samples run in parallel in fixed groups.
pub fn sign_product<F: Real>(w: &DMatrix<F>, x: &DMatrix<F>) -> DMatrix<F> {
    const GROUP: usize = 16;
    let (units, inputs) = w.shape();
    assert_eq!(inputs, x.nrows(), "inner dimensions differ");
    let words = inputs.div_ceil(64);
    let rows = pack_rows(w);
    let mut y = DMatrix::zeros(units, x.ncols());
    y.as_mut_slice().par_chunks_mut(units * GROUP).zip(x.as_slice().par_chunks(inputs * GROUP)).for_each(|(y, x)| {
        let samples = x.len() / inputs.max(1);
        let bits = pack_columns(x, inputs);
        for_each_count(&rows, words, &bits, samples, |tile, sample, counts| {
            for (r, &(c0, c1)) in counts.iter().enumerate() {
                let unit = 64 * tile + r;
                y[sample * units + unit] = F::of((inputs as i64 - 2 * c0 as i64) as f64);
                if sample + 1 < samples {
                    y[(sample + 1) * units + unit] = F::of((inputs as i64 - 2 * c1 as i64) as f64);
                }
            }
        });
    });
    y
}

/// The rows of a column-major matrix of +-1 as bits (1 for +1), `inputs.div_ceil(64)` words
/// per row. The columns are read in memory order, 64 at a time (in parallel over such groups):
/// each column gives one word per 64 rows, and a bit transpose of each 64 x 64 block turns
/// those into the rows' words. (Reading a row tile's stretch of every column instead strides
/// through the matrix a page at a time and was most of the product's time.)
pub fn pack_rows<F: Real>(w: &DMatrix<F>) -> Vec<u64> {
    let (units, inputs) = w.shape();
    let words = inputs.div_ceil(64);
    let tiles = units.div_ceil(64);
    let data = w.as_slice();
    // Per group of 64 columns, per row tile, the 64 x 64 block as one word per row.
    let groups: Vec<Vec<[u64; 64]>> = (0..words)
        .into_par_iter()
        .map(|g| {
            let mut blocks = vec![[0u64; 64]; tiles];
            for i in 64 * g..(64 * g + 64).min(inputs) {
                let column = &data[i * units..(i + 1) * units];
                for (block, rows) in blocks.iter_mut().zip(column.chunks(64)) {
                    block[i % 64] = rows.iter().enumerate().fold(0, |m, (r, &v)| m | ((v > F::zero()) as u64) << r);
                }
            }
            blocks.iter_mut().for_each(transpose_bits);
            blocks
        })
        .collect();
    let mut bits = vec![0u64; units * words];
    for (g, blocks) in groups.iter().enumerate() {
        for (unit, row) in bits.chunks_mut(words).enumerate() {
            row[g] = blocks[unit / 64][unit % 64];
        }
    }
    bits
}

/// Transposes a 64 x 64 bit matrix held as one word per row (bit c of word r is entry (r, c)):
/// swap the off-diagonal blocks of 32, then within every quadrant those of 16, and so on.
fn transpose_bits(a: &mut [u64; 64]) {
    let mut j = 32;
    let mut mask: u64 = 0x0000_0000_ffff_ffff;
    while j != 0 {
        for k in (0..64).filter(|k| k & j == 0) {
            let t = ((a[k] >> j) ^ a[k | j]) & mask;
            a[k] ^= t << j;
            a[k | j] ^= t;
        }
        j >>= 1;
        mask ^= mask << j;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_transpose_matches_its_definition() {
        let mut a = [0u64; 64];
        for (r, w) in a.iter_mut().enumerate() {
            *w = (r as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
        let original = a;
        transpose_bits(&mut a);
        for (r, row) in original.iter().enumerate() {
            for (c, column) in a.iter().enumerate() {
                assert_eq!(column >> r & 1, row >> c & 1, "entry ({r}, {c})");
            }
        }
    }

    #[test]
    fn sign_products_equal_float_products_exactly() {
        // Widths off the 64-bit words and 64-row tiles, an odd number of samples.
        for (units, inputs, samples) in [(70, 130, 5), (128, 64, 16), (3, 2100, 33)] {
            let sign = |k: usize| if (k * 2654435761) % 97 < 45 { 1.0f32 } else { -1.0 };
            let w = DMatrix::from_fn(units, inputs, |i, j| sign(i * 7919 + j));
            let x = DMatrix::from_fn(inputs, samples, |i, j| sign(i * 104729 + j * 31 + 1));
            assert!(is_signs(&x));
            let float = crate::nn::linear::dense_forward(&w, None, &x);
            assert_eq!(sign_product(&w, &x), float, "{units} x {inputs}, {samples} samples");
        }
        assert!(!is_signs(&DMatrix::from_element(3, 3, 0.5f32)));
    }
}
