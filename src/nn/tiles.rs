//! A first Dense layer's currents from its input spikes by a tile multiply (Intel AMX), where
//! the CPU has one: the spikes as bytes of 0 and 1, the weights as integers, every sum exact.
//!
//! The event-driven product ([`super::event_products`]) adds one column of weights per spike,
//! reading the weights at random. A tile multiply takes a 16 x 64 block of bytes times a 64 x 16
//! block of bytes into 16 x 16 sums of 32-bit integers in one instruction (16 384
//! multiply-adds) and reads its operands in order, so on this shape the dense product of all
//! the zeros costs no more than walking the ones, and far less when both cores are busy: on
//! networks/fashion_snn.ron's first layer (784 inputs, 800 outputs, 25 steps of 32 samples),
//! 1.5 ms against about 1.6 ms for the events on one core alone, and the events 1.66x slower
//! with the other core busy too, the tiles not (benches/REPORT.md).
//!
//! Exact integers, not floats: each output's row of weights becomes a 24-bit fixed-point
//! integer q = round(w / s) with s = max |w| / (2^23 - 1) (the row's own scale), cut into three
//! bytes (the top one signed). Against inputs of 0 and 1 each byte's sums are exact 32-bit
//! integers, joined as q-sums in 64 bits, so an output is s times the exact sum of its rounded
//! weights: one rounding of each weight (at most s/2, 2^-24 of the row's largest) and one of
//! the result, where a float sum rounds at every addition. The result does not depend on the
//! order, the columns taken together or the threads: a sequence taken in segments gets the same
//! currents bit for bit.
//!
//! The tile registers and their permission are the operating system's: Linux on x86-64 grants
//! them on request ([`available`]); elsewhere, or with `SNN_NO_TILES` set, the layer stays
//! event-driven.

use std::sync::{Arc, Mutex};

use nalgebra::DMatrix;

pub use super::amx::available;
use super::fresh::written;
use crate::data::spike_trains::SpikeTrains;

/// A layer's weights as the tile multiply reads them, packed again only when they change: the
/// chunks of a batch and every chunk of a test pass share one packing. Held by the model, so
/// not part of its value: a clone starts empty, and two models compare equal whatever their
/// caches hold.
#[derive(Default)]
pub struct TileCache(Mutex<Option<Arc<Packed>>>);

/// Packed weights and the weights they were packed from, to tell when they went stale.
struct Packed {
    source: Vec<f32>,
    weights: imp::Weights,
}

impl TileCache {
    /// Packs `w` now, where the tile multiply runs: for a trainer, once its update has changed
    /// the weights and before the chunks of the next batch need them, so that the packing runs
    /// on every thread (a chunk that finds the weights changed packs them on its own).
    pub fn refresh(&self, w: &DMatrix<f32>) {
        if available() {
            self.store(w);
        }
    }

    /// `w` packed: the cached packing if it was made from the same weights, bit for bit.
    fn packed(&self, w: &DMatrix<f32>) -> Arc<Packed> {
        let cached = self.slot().clone();
        // Blocks of differences ORed together, so that the comparison vectorises.
        let same = |p: &Packed| {
            let blocks = p.source.chunks(256).zip(w.as_slice().chunks(256));
            p.source.len() == w.len()
                && blocks
                    .into_iter()
                    .all(|(a, b)| a.iter().zip(b).fold(0, |d, (a, b)| d | (a.to_bits() ^ b.to_bits())) == 0)
        };
        match cached {
            Some(p) if same(&p) => p,
            _ => self.store(w),
        }
    }

    /// Packs `w` and keeps it. The lock is not held while packing: the packing runs parallel
    /// jobs, and a thread waiting for them may take up another chunk that asks for the lock.
    fn store(&self, w: &DMatrix<f32>) -> Arc<Packed> {
        // SAFETY: only called where `available` checked the CPU.
        let packed = Arc::new(Packed { source: w.as_slice().to_vec(), weights: unsafe { imp::Weights::pack(w) } });
        *self.slot() = Some(Arc::clone(&packed));
        packed
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<Packed>>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clone for TileCache {
    fn clone(&self) -> Self {
        TileCache::default()
    }
}

impl PartialEq for TileCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for TileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TileCache")
    }
}

/// The currents `w x + bias` of steps `first..end` of `trains` (step-major columns: column
/// `n samples + b` is sample b at step `first + n`), where [`available`]; None elsewhere.
pub fn spike_currents(
    w: &DMatrix<f32>,
    bias: Option<&[f32]>,
    trains: &SpikeTrains,
    (first, end): (usize, usize),
    cache: &TileCache,
) -> Option<DMatrix<f32>> {
    if !available() || w.ncols() != trains.inputs() {
        return None;
    }
    let columns = (end - first) * trains.samples();
    if columns == 0 || w.nrows() == 0 {
        return Some(DMatrix::zeros(w.nrows(), columns));
    }
    let packed = cache.packed(w);
    // SAFETY: `available` checked the CPU's features and the operating system's permission;
    // the currents write every output of every column.
    Some(unsafe { written(w.nrows(), columns, |y| imp::currents(&packed.weights, bias, trains, (first, end), y)) })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use std::arch::x86_64::{
        _mm256_loadu_ps, _mm256_loadu_si256, _mm256_storeu_ps, _mm512_add_epi64, _mm512_add_pd, _mm512_cvtepi32_epi64,
        _mm512_cvtepi64_pd, _mm512_cvtpd_ps, _mm512_cvtps_pd, _mm512_loadu_pd, _mm512_maskz_mov_epi8, _mm512_mul_pd,
        _mm512_set1_epi8, _mm512_setzero_pd, _mm512_slli_epi64, _mm512_storeu_si512,
    };

    use nalgebra::DMatrix;
    use rayon::prelude::*;

    use crate::data::spike_trains::SpikeTrains;
    use crate::nn::amx::{LIMBS, Line, TILE, Tiles, ZERO, as_sums, limb, nearest, scales};

    /// The weights as tiles of bytes: per tile of 16 outputs, per byte of the fixed-point
    /// integers (top first), per 64 inputs, 16 lines of 4 consecutive inputs for each of the 16
    /// outputs (the layout the multiply reads its second operand in); and each output's scale.
    pub(super) struct Weights {
        lines: Vec<Line>,
        scales: Vec<f64>,
        /// Tiles of 16 outputs, an even number (outputs padded with zeros).
        output_tiles: usize,
        /// Lines per tile of outputs and byte of the weights: 16 per 64 inputs.
        lines_per_limb: usize,
    }

    impl Weights {
        /// Packs `w` (outputs x inputs, column-major), the tiles of outputs in parallel.
        ///
        /// # Safety
        /// [`enable`] must have returned true.
        pub(super) unsafe fn pack(w: &DMatrix<f32>) -> Self {
            let (outputs, inputs) = w.shape();
            let output_tiles = outputs.div_ceil(2 * TILE) * 2;
            let lines_per_limb = inputs.div_ceil(64) * TILE;
            let mut largest = vec![0.0f32; output_tiles * TILE];
            for column in w.as_slice().chunks_exact(outputs.max(1)) {
                for (m, &v) in largest.iter_mut().zip(column) {
                    *m = if v.abs() > *m { v.abs() } else { *m };
                }
            }
            let scales = largest[..outputs].iter().map(|&m| scales(m).1).collect();
            let mut lines = vec![ZERO; output_tiles * LIMBS * lines_per_limb];
            let tiles = lines.par_chunks_mut(LIMBS * lines_per_limb).zip(largest.par_chunks(TILE)).enumerate();
            // SAFETY: the caller checked the CPU.
            tiles.for_each(|(tile, (lines, largest))| unsafe { pack_tile(w, tile, largest, lines) });
            Weights { lines, scales, output_tiles, lines_per_limb }
        }
    }

    /// The lines of outputs `16 tile..16 tile + 16` of `w`, whose largest |w| are `largest`:
    /// per byte of their integers, per 4 inputs a line of 16 little-endian words, byte j of
    /// word e from input j of output e. Written in arrays of 16 lanes, so that it compiles to
    /// whole-register operations.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq")]
    fn pack_tile(w: &DMatrix<f32>, tile: usize, largest: &[f32], lines: &mut [Line]) {
        let (outputs, inputs) = w.shape();
        let lines_per_limb = lines.len() / LIMBS;
        let outs = (tile * TILE).min(outputs)..((tile + 1) * TILE).min(outputs);
        let inverse: [f64; TILE] = std::array::from_fn(|e| scales(largest[e]).0);
        for quad in 0..inputs.div_ceil(4) {
            // q[j][e]: input 4 quad + j, output 16 tile + e.
            let mut q = [[0i32; TILE]; 4];
            for (j, q) in q.iter_mut().enumerate().take(inputs - quad * 4) {
                let column = &w.as_slice()[(quad * 4 + j) * outputs..][outs.clone()];
                for ((q, &v), &inv) in q.iter_mut().zip(column).zip(&inverse) {
                    *q = nearest(f64::from(v) * inv);
                }
            }
            for l in 0..LIMBS {
                let mut words = [0u32; TILE];
                for (j, q) in q.iter().enumerate() {
                    for e in 0..TILE {
                        words[e] |= u32::from(limb(q[e], l)) << (8 * j);
                    }
                }
                for (bytes, word) in lines[l * lines_per_limb + quad].0.chunks_exact_mut(4).zip(words) {
                    bytes.copy_from_slice(&word.to_le_bytes());
                }
            }
        }
    }

    /// Steps `first..end` of `trains` as the multiply's first operand: per tile of 16 columns
    /// (padded with silent columns to an even number of tiles), per 64 inputs, one line of
    /// bytes 0 or 1 per column.
    #[target_feature(enable = "avx512f,avx512bw")]
    fn spike_lines(trains: &SpikeTrains, (first, end): (usize, usize), column_tiles: usize) -> Vec<Line> {
        let (samples, words) = (trains.samples(), trains.words_per_step());
        let mut lines = vec![ZERO; column_tiles * words * TILE];
        let one = _mm512_set1_epi8(1);
        for c in 0..(end - first) * samples {
            let step = trains.step(c % samples, first + c / samples);
            for (k, &word) in step.iter().enumerate() {
                let line = &mut lines[((c / TILE) * words + k) * TILE + c % TILE];
                // SAFETY: a line is 64 writable bytes.
                unsafe { _mm512_storeu_si512(line.0.as_mut_ptr().cast(), _mm512_maskz_mov_epi8(word, one)) };
            }
        }
        lines
    }

    /// Writes the currents (outputs x columns, column-major) through `y`.
    ///
    /// # Safety
    /// [`enable`] must have returned true; `y` must address outputs x columns writable floats.
    pub(super) unsafe fn currents(
        weights: &Weights,
        bias: Option<&[f32]>,
        trains: &SpikeTrains,
        steps: (usize, usize),
        y: *mut f32,
    ) {
        let words = trains.words_per_step();
        let columns = (steps.1 - steps.0) * trains.samples();
        let column_tiles = columns.div_ceil(2 * TILE) * 2;
        // SAFETY: the caller checked the CPU.
        let spikes = unsafe { spike_lines(trains, steps, column_tiles) };
        // Per byte of the weights, the sums of 32 outputs for every (padded) column.
        let mut sums = vec![ZERO; LIMBS * column_tiles * TILE * 2];
        // SAFETY: the caller checked the CPU.
        let mut tiles = unsafe { Tiles::begin() };
        for pair in 0..weights.output_tiles / 2 {
            for limb in 0..LIMBS {
                let b = &weights.lines[(2 * pair * LIMBS + limb) * weights.lines_per_limb..];
                for column_pair in 0..column_tiles / 2 {
                    let a = &spikes[2 * column_pair * words * TILE..];
                    let out = &mut sums[(limb * column_tiles + 2 * column_pair) * TILE * 2..][..TILE * 4];
                    // SAFETY: `a` holds two column tiles and `b` two output tiles of `words`
                    // 16-line blocks each; `out` 32 lines of 128 bytes.
                    unsafe { multiply_block(&mut tiles, a, b, words, LIMBS * weights.lines_per_limb, out, limb == 0) };
                }
            }
            // SAFETY: the caller checked the CPU.
            unsafe { join_limbs(as_sums(&sums), column_tiles * TILE, pair, &weights.scales, bias, columns, y) };
        }
    }

    /// Sums over all inputs of two column tiles times two output tiles of one byte of the
    /// weights (signed for the top byte), into `out` (32 columns of 32 sums).
    ///
    /// # Safety
    /// `a` and `b` hold the blocks named.
    unsafe fn multiply_block(
        tiles: &mut Tiles,
        a: &[Line],
        b: &[Line],
        words: usize,
        b_tile_stride: usize,
        out: &mut [Line],
        signed: bool,
    ) {
        let a = [a.as_ptr().cast::<u8>(), a[words * TILE..].as_ptr().cast()];
        let b = [b.as_ptr().cast::<u8>(), b[b_tile_stride..].as_ptr().cast()];
        tiles.zero();
        let steps = (0..words).map(|k| (k * TILE * 64, k * TILE * 64));
        // SAFETY: the caller's contract; the sums, 32 lines of 128 bytes.
        unsafe {
            tiles.multiply((false, signed), (a, 64), b, steps);
            tiles.store(out.as_mut_ptr().cast());
        }
    }

    /// The currents of outputs `32 pair..32 pair + 32` in every column: each output's three
    /// byte sums joined into the exact sum of its integers, times its scale, plus its bias.
    ///
    /// # Safety
    /// `y` must address `scales.len()` x `columns` writable floats.
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn join_limbs(
        sums: &[i32],
        padded_columns: usize,
        pair: usize,
        scales: &[f64],
        bias: Option<&[f32]>,
        columns: usize,
        y: *mut f32,
    ) {
        let outputs = scales.len();
        let first = 2 * TILE * pair;
        let width = (2 * TILE).min(outputs - first);
        let limb = |l: usize, c: usize| &sums[(l * padded_columns + c) * 2 * TILE..][..width];
        let (scales, bias) = (&scales[first..first + width], bias.map(|b| &b[first..first + width]));
        for c in 0..columns {
            let (high, middle, low) = (limb(0, c), limb(1, c), limb(2, c));
            // SAFETY: within the outputs x columns the caller's `y` addresses.
            let out = unsafe { y.add(c * outputs + first) };
            let join = |e: usize| {
                let q = (i64::from(high[e]) << 16) + (i64::from(middle[e]) << 8) + i64::from(low[e]);
                (q as f64 * scales[e] + bias.map_or(0.0, |b| f64::from(b[e]))) as f32
            };
            let whole = width / 8 * 8;
            // Eight at a time in 512-bit registers of 64-bit lanes (left to itself, the compiler
            // takes four at a time), then the rest one by one.
            for e in (0..whole).step_by(8) {
                // SAFETY (the loads): eight values of slices that hold them.
                let wide =
                    |v: &[i32]| _mm512_cvtepi32_epi64(unsafe { _mm256_loadu_si256(v[e..e + 8].as_ptr().cast()) });
                let q = _mm512_add_epi64(
                    _mm512_add_epi64(_mm512_slli_epi64::<16>(wide(high)), _mm512_slli_epi64::<8>(wide(middle))),
                    wide(low),
                );
                let b = bias
                    .map_or(_mm512_setzero_pd(), |b| _mm512_cvtps_pd(unsafe { _mm256_loadu_ps(b[e..e + 8].as_ptr()) }));
                let scale = unsafe { _mm512_loadu_pd(scales[e..e + 8].as_ptr()) };
                // Multiply, then add: the same two roundings as the rest one by one.
                let v = _mm512_add_pd(_mm512_mul_pd(_mm512_cvtepi64_pd(q), scale), b);
                // SAFETY: outputs first + e.. first + e + 8 of column c.
                unsafe { _mm256_storeu_ps(out.add(e), _mm512_cvtpd_ps(v)) };
            }
            for e in whole..width {
                // SAFETY: as above.
                unsafe { out.add(e).write(join(e)) };
            }
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    use nalgebra::DMatrix;

    use crate::data::spike_trains::SpikeTrains;

    pub(super) struct Weights;

    impl Weights {
        pub(super) unsafe fn pack(_: &DMatrix<f32>) -> Self {
            unreachable!("no tile multiply on this platform")
        }
    }

    pub(super) unsafe fn currents(_: &Weights, _: Option<&[f32]>, _: &SpikeTrains, _: (usize, usize), _: *mut f32) {
        unreachable!("no tile multiply on this platform")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::spike_trains::{for_each_bit, set_bit};

    /// Trains of `samples` x `steps` over `inputs`, about a third of the bits set.
    fn trains(inputs: usize, steps: usize, samples: usize) -> SpikeTrains {
        let mut t = SpikeTrains::new(inputs, steps);
        let per_step = t.words_per_step();
        for (s, step) in t.push_samples(samples).chunks_exact_mut(per_step).enumerate() {
            for i in (0..inputs).filter(|i| (i * 7 + s * 13 + i * s) % 3 == 0) {
                set_bit(step, i as u32);
            }
        }
        t
    }

    #[test]
    fn tile_currents_are_the_sums_of_the_weights_within_their_rounding() {
        for (inputs, outputs, steps, samples) in [(70, 16, 3, 5), (784, 48, 2, 32), (130, 40, 4, 7)] {
            let t = trains(inputs, steps, samples);
            // Rows of very different sizes (each has its own scale), a zero row, both signs.
            let w = DMatrix::from_fn(outputs, inputs, |o, i| {
                let size = 10f32.powi(-((o % 4) as i32));
                if o == 3 { 0.0 } else { size * (((o * 31 + i * 17) % 23) as f32 / 11.0 - 1.0) }
            });
            let bias: Vec<f32> = (0..outputs).map(|o| o as f32 * 0.01).collect();
            let range = (1, steps);
            let Some(y) = spike_currents(&w, Some(&bias), &t, range, &TileCache::default()) else {
                assert!(!available(), "the tile multiply is there but was not taken");
                return;
            };
            assert_eq!(y.shape(), (outputs, (steps - 1) * samples));
            for c in 0..y.ncols() {
                let step = t.step(c % samples, 1 + c / samples);
                for o in 0..outputs {
                    let mut exact = f64::from(bias[o]);
                    for_each_bit(step, |i| exact += f64::from(w[(o, i as usize)]));
                    let row_max = (0..inputs).map(|i| f64::from(w[(o, i)].abs())).fold(0.0, f64::max);
                    // Each weight rounded by at most half its row's step, the result once.
                    let step_size = row_max / ((1 << 23) - 1) as f64;
                    let bound = inputs as f64 * step_size / 2.0 + exact.abs() * 2f64.powi(-23);
                    let got = f64::from(y[(o, c)]);
                    assert!(
                        (got - exact).abs() <= bound,
                        "{inputs}x{outputs}, column {c}, output {o}: {got} vs {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn tile_currents_take_segments_alike_and_follow_changed_weights() {
        let (inputs, outputs, steps, samples) = (100, 32, 5, 3);
        let t = trains(inputs, steps, samples);
        let mut w = DMatrix::from_fn(outputs, inputs, |o, i| ((o * 13 + i * 7) % 19) as f32 * 0.01 - 0.09);
        let cache = TileCache::default();
        let Some(whole) = spike_currents(&w, None, &t, (0, steps), &cache) else {
            assert!(!available(), "the tile multiply is there but was not taken");
            return;
        };
        // Columns taken in other groups: the same currents, bit for bit.
        for (first, end) in [(0, 2), (2, 5), (4, 5)] {
            let part = spike_currents(&w, None, &t, (first, end), &cache).expect("tiles");
            assert_eq!(part, whole.columns(first * samples, (end - first) * samples).into_owned());
        }
        // One weight changed: the cache packs again, as a fresh one would.
        w[(5, 3)] += 0.5;
        let changed = spike_currents(&w, None, &t, (0, steps), &cache).expect("tiles");
        assert_eq!(changed, spike_currents(&w, None, &t, (0, steps), &TileCache::default()).expect("tiles"));
        assert_ne!(changed, whole, "input 3 fires in some column");
    }
}
