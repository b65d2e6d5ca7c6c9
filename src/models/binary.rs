//! Bit-packed inference for binary layers: a block `Dense(binary) -> BatchNorm -> Sign` whose
//! input is itself a sign output multiplies +-1 vectors, which is `n - 2 popcount(x XOR w)` over
//! 64 inputs per machine word. The batch norm and sign then reduce to one integer threshold per
//! unit on the popcount, found by evaluating the float path's own arithmetic on every possible
//! count, so the packed path gives exactly the float path's outputs, not just nearly.
//!
//! Layers outside such blocks (the first layer, which sees real pixels, and the real-valued
//! output layer) run in float as usual.

use std::ops::Range;

use nalgebra::DMatrix;

use super::net::{LayerNet, Op};
use crate::error::{Error, Result};

/// Bits 1 for +1, 0 for -1, 64 inputs per word; padding bits are 0 in both operands, so their
/// XOR adds nothing to the count.
fn pack(values: &[f32], words: &mut [u64]) {
    words.iter_mut().for_each(|w| *w = 0);
    for (i, &v) in values.iter().enumerate() {
        if v > 0.0 {
            words[i / 64] |= 1 << (i % 64);
        }
    }
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
    pub fn units(&self) -> usize {
        self.ranges.len()
    }

    /// Packed outputs (`units` bits per sample) of packed inputs, `samples` samples.
    fn forward(&self, x: &[u64], samples: usize) -> Vec<u64> {
        let mut out = vec![0u64; self.units().div_ceil(64) * samples];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present.
            unsafe { avx2::forward(self, x, samples, &mut out) };
            return out;
        }
        let count = |w: &[u64], x: &[u64]| w.iter().zip(x).map(|(a, b)| (a ^ b).count_ones() as u64).sum::<u64>();
        self.forward_with(x, samples, &mut out, |w, x0, x1| (count(w, x0), count(w, x1)));
        out
    }

    /// The loops around a kernel giving popcount(w XOR x) for two samples at once: 64 units
    /// (one output word, 64 weight rows that stay in the L1 cache) at a time, against every
    /// pair of samples.
    #[inline(always)]
    fn forward_with(
        &self,
        x: &[u64],
        samples: usize,
        out: &mut [u64],
        count2: impl Fn(&[u64], &[u64], &[u64]) -> (u64, u64),
    ) {
        let n = self.words;
        let out_words = self.units().div_ceil(64);
        let rows = n * 64;
        let x = &x[..n * samples];
        for (tile, (weights, ranges)) in self.weights.chunks(rows).zip(self.ranges.chunks(64)).enumerate() {
            for (xs, ys) in x.chunks(2 * n).zip(out.chunks_mut(2 * out_words)) {
                // A lone last sample is paired with itself.
                let (x0, x1) = if xs.len() == 2 * n { xs.split_at(n) } else { (xs, xs) };
                let (mut word0, mut word1) = (0u64, 0u64);
                for (bit, (w, &(lo, hi))) in weights.chunks_exact(n).zip(ranges).enumerate() {
                    let (c0, c1) = count2(w, x0, x1);
                    word0 |= (((c0 >= lo) & (c0 <= hi)) as u64) << bit;
                    word1 |= (((c1 >= lo) & (c1 <= hi)) as u64) << bit;
                }
                ys[tile] = word0;
                if ys.len() > out_words {
                    ys[out_words + tile] = word1;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::PackedBlock;

    #[target_feature(enable = "avx2")]
    pub unsafe fn forward(block: &PackedBlock, x: &[u64], samples: usize, out: &mut [u64]) {
        block.forward_with(x, samples, out, |w, x0, x1| count2(w, x0, x1));
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

/// A layered model with its bit-packable blocks packed.
#[derive(Debug, Clone)]
pub struct PackedNet {
    /// Layers before the packed run, the packed run (a multiple of 3 layers), and after.
    pub packed_layers: Range<usize>,
    pub blocks: Vec<PackedBlock>,
}

/// Whether layer `i` is the start of a packable block whose input is a sign output.
fn packable(net: &LayerNet<f32>, i: usize) -> bool {
    let is_sign = |k: usize| matches!(&net.layers[k].op, Op::Step { step, .. } if step.low == -1.0);
    let fed_by_sign =
        net.layers[..i].iter().rposition(|l| !matches!(l.op, Op::Dropout(_) | Op::Flatten)).is_some_and(is_sign);
    i + 2 < net.layers.len()
        && matches!(&net.layers[i].op, Op::Dense(l) if l.binary)
        && matches!(net.layers[i + 1].op, Op::BatchNorm(_))
        && is_sign(i + 2)
        && fed_by_sign
}

impl PackedNet {
    /// Packs the first run of packable blocks of `net`, or says why there is none.
    pub fn new(net: &LayerNet<f32>) -> Result<Self> {
        if net.smooth {
            return Err(Error::Training("a model in smooth mode has no binary values to pack".into()));
        }
        let start = (0..net.layers.len()).find(|&i| packable(net, i)).ok_or_else(|| {
            Error::Training(
                "the model has no Dense(weights: Binary) -> BatchNorm -> Sign block fed by a Sign layer to pack".into(),
            )
        })?;
        let mut end = start;
        let mut blocks = Vec::new();
        while end < net.layers.len() && packable(net, end) {
            let (Op::Dense(dense), Op::BatchNorm(bn)) = (&net.layers[end].op, &net.layers[end + 1].op) else {
                unreachable!("checked by packable")
            };
            let (units, inputs) = dense.weight.shape();
            let words = inputs.div_ceil(64);
            let mut weights = vec![0u64; units * words];
            let effective = dense.effective(None);
            let mut row = vec![0f32; inputs];
            for (j, w) in weights.chunks_mut(words).enumerate() {
                row.iter_mut().enumerate().for_each(|(i, r)| *r = effective[(j, i)]);
                pack(&row, w);
            }
            let (scale, shift) = bn.eval_affine();
            let ranges = (0..units)
                .map(|j| {
                    // Exactly what the float path computes from the integer sum d = n - 2 count.
                    let on = |count: usize| {
                        let d = (inputs as i64 - 2 * count as i64) as f32;
                        let v = match &dense.bias {
                            Some(b) => d + b[j],
                            None => d,
                        };
                        v * scale[j] + shift[j] >= 0.0
                    };
                    let table: Vec<bool> = (0..=inputs).map(on).collect();
                    let (Some(lo), Some(hi)) = (table.iter().position(|&o| o), table.iter().rposition(|&o| o)) else {
                        return Ok((1, 0));
                    };
                    // Rounding is monotone, so the counts that turn a unit on are contiguous
                    // (fewer mismatches for a positive scale, more for a negative); check it.
                    if table[lo..=hi].iter().any(|&o| !o) {
                        return Err(Error::Training(format!(
                            "{}: unit {j}'s batch norm is not monotone in its input (NaN parameters?)",
                            net.layers[end + 1].label
                        )));
                    }
                    Ok((lo as u64, hi as u64))
                })
                .collect::<Result<Vec<_>>>()?;
            blocks.push(PackedBlock { inputs, words, weights, ranges });
            end += 3;
        }
        Ok(PackedNet { packed_layers: start..end, blocks })
    }

    /// Scores of a batch (`pixels x samples`): float layers, packed blocks, float layers.
    pub fn forward(&self, net: &mut LayerNet<f32>, x: DMatrix<f32>) -> DMatrix<f32> {
        let samples = x.ncols();
        let before = net.eval_layers(x, 0..self.packed_layers.start, false);
        let bits = self.forward_blocks(&self.pack_input(&before));
        net.eval_layers(self.unpack_output(&bits, samples), self.packed_layers.end..net.layers.len(), false)
    }

    /// One block over the samples, in parallel over fixed groups of samples.
    fn par_forward(block: &PackedBlock, bits: &[u64]) -> Vec<u64> {
        use rayon::prelude::*;
        const GROUP: usize = 16;
        let parts: Vec<Vec<u64>> =
            bits.par_chunks(block.words * GROUP).map(|x| block.forward(x, x.len() / block.words)).collect();
        parts.concat()
    }

    /// The packed blocks alone on packed inputs (what the benchmark times).
    pub fn forward_blocks(&self, bits: &[u64]) -> Vec<u64> {
        let mut bits = bits.to_vec();
        for block in &self.blocks {
            bits = Self::par_forward(block, &bits);
        }
        bits
    }

    /// The last block's packed outputs as a `units x samples` batch of +-1.
    pub fn unpack_output(&self, bits: &[u64], samples: usize) -> DMatrix<f32> {
        let units = self.blocks.last().expect("at least one block").units();
        let words = units.div_ceil(64);
        DMatrix::from_fn(units, samples, |i, s| if bits[s * words + i / 64] >> (i % 64) & 1 == 1 { 1.0 } else { -1.0 })
    }

    /// Packs a batch of +-1 activations for the first block.
    pub fn pack_input(&self, x: &DMatrix<f32>) -> Vec<u64> {
        let first = &self.blocks[0];
        let mut bits = vec![0u64; first.words * x.ncols()];
        for (column, words) in x.as_slice().chunks(first.inputs).zip(bits.chunks_mut(first.words)) {
            pack(column, words);
        }
        bits
    }
}

/// Packed against float inference on a set of images.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedReport {
    pub samples: usize,
    /// Samples whose packed scores equal the float scores bit for bit.
    pub identical: usize,
    /// Samples with the same predicted class.
    pub same_prediction: usize,
    /// Seconds spent in the packable layers: float (matrix product, batch norm, sign) and packed
    /// (XNOR-popcount and thresholds, packing included).
    pub float_s: f64,
    pub packed_s: f64,
}

/// Runs `split` through `net` both ways, in batches of `batch` images.
pub fn compare(
    net: &mut LayerNet<f32>,
    packed: &PackedNet,
    split: &crate::data::idx::Split,
    batch: usize,
) -> PackedReport {
    use std::time::Instant;
    let mut report = PackedReport { samples: 0, identical: 0, same_prediction: 0, float_s: 0.0, packed_s: 0.0 };
    let indices: Vec<usize> = (0..split.len()).collect();
    let range = packed.packed_layers.clone();
    for chunk in indices.chunks(batch.max(1)) {
        let before = net.eval_layers(super::trainer::batch(split, chunk), 0..range.start, false);
        let started = Instant::now();
        let hidden = net.eval_layers(before.clone(), range.clone(), false);
        report.float_s += started.elapsed().as_secs_f64();
        let float_scores = net.eval_layers(hidden, range.end..net.layers.len(), false);
        let started = Instant::now();
        let bits = packed.forward_blocks(&packed.pack_input(&before));
        report.packed_s += started.elapsed().as_secs_f64();
        let packed_scores =
            net.eval_layers(packed.unpack_output(&bits, chunk.len()), range.end..net.layers.len(), false);
        for (f, p) in float_scores.column_iter().zip(packed_scores.column_iter()) {
            report.samples += 1;
            report.identical += (f == p) as usize;
            report.same_prediction +=
                (crate::train::trainer::argmax(f.as_slice()) == crate::train::trainer::argmax(p.as_slice())) as usize;
        }
    }
    report
}
