//! The two products the event-driven passes are made of: sparse rows of events on one side, a
//! dense matrix on the other.
//!
//! A layer's arriving events form rows r = (sample, step), each a short list of (input, value):
//!
//! ```text
//! currents   C[r, o]  = sum over (i, x) in row r of x W[o, i]
//! gradient   dW[o, i]  = sum over the rows r holding (i, x) of x G[r, o]
//! ```
//!
//! Both walk the outputs in tiles of [`TILE`] (eight AVX registers of f32). A tile's sum stays
//! in registers across a whole list of events and is stored once, so every event costs one
//! load of TILE weights (or gradients) and no traffic for the sum; the tile of W (784 x 64 f32
//! is 200 KiB) or of G stays in the L2 cache across all rows. Adding whole columns into
//! per-sample state, the way the engine delivers spikes, also loads and stores that state for
//! every event, which made training bound by cache bandwidth.
//!
//! Rows can also hold a sequence's *deviations* from a base row per sample (see
//! [`super::spike_input`]): [`currents`] then adds each column's base currents to its own.
//!
//! The tiles run in parallel, each over all the rows with its own packed weights. Each output
//! element is summed in a fixed order (inputs ascending within a row; rows ascending, or from
//! the last back: [`Summing`]), so results do not depend on the threads.

use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::data::events::Events;
use crate::data::spike_trains::for_each_bit;
use crate::nn::Real;

/// Outputs per register tile.
pub const TILE: usize = 64;

/// One row of events: the inputs that are active and their values.
pub type Row<'a, F> = (&'a [u32], &'a [F]);

/// The output tiles of `n_out` outputs: (start, width), full tiles of `widest` (a power of two
/// up to 64), then the rest in halving widths down to 1, so every width is a compile-time
/// constant of the kernels ([`with_width`]).
pub(crate) fn tiles(n_out: usize, widest: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut start = 0;
    let mut width = widest;
    std::iter::from_fn(move || {
        while width > 0 && start + width > n_out {
            width /= 2;
        }
        (width > 0).then(|| {
            start += width;
            (start - width, width)
        })
    })
}

/// Calls `$kernel::<width>($args)` for a tile width known only at run time.
macro_rules! with_width {
    ($width:expr, $kernel:ident($($arg:expr),*)) => {
        match $width {
            64 => $kernel::<64, _>($($arg),*),
            32 => $kernel::<32, _>($($arg),*),
            16 => $kernel::<16, _>($($arg),*),
            8 => $kernel::<8, _>($($arg),*),
            4 => $kernel::<4, _>($($arg),*),
            2 => $kernel::<2, _>($($arg),*),
            _ => $kernel::<1, _>($($arg),*),
        }
    };
}
pub(crate) use with_width;

/// A row-major `rows x n_out` matrix whose tiles of outputs are written in parallel, each by
/// one task: the tasks own disjoint columns, so they share the buffer through a raw pointer
/// and never form a reference to the whole of it.
struct TileWriter<F> {
    data: *mut F,
    len: usize,
}

// SAFETY: every task writes (and reads back) only the elements of its own tile of outputs, so
// no element is touched by two threads; the buffer outlives the parallel section.
unsafe impl<F: Send> Send for TileWriter<F> {}
unsafe impl<F: Send> Sync for TileWriter<F> {}

impl<F: Copy> TileWriter<F> {
    fn new(buffer: &mut [F]) -> Self {
        TileWriter { data: buffer.as_mut_ptr(), len: buffer.len() }
    }

    /// Reads the W values at `at`.
    fn get<const W: usize>(&self, at: usize) -> [F; W] {
        assert!(at + W <= self.len, "inside the buffer");
        // SAFETY: in bounds (checked), and only this tile's task touches these elements.
        unsafe { self.data.add(at).cast::<[F; W]>().read_unaligned() }
    }

    /// Writes the W values `values` at `at`.
    fn set<const W: usize>(&self, at: usize, values: [F; W]) {
        assert!(at + W <= self.len, "inside the buffer");
        // SAFETY: as in `get`.
        unsafe { self.data.add(at).cast::<[F; W]>().write_unaligned(values) }
    }
}

/// Columns `start..start + width` of every row of `source` (`n_out` values per row; the rows of
/// its parts one after the other), next to each other: a tile as one compact block of cache
/// lines, read by every event that touches it.
fn pack_tile<F: Real>(source: &[&[F]], n_out: usize, (start, width): (usize, usize), packed: &mut Vec<F>) {
    packed.clear();
    // Room for the whole tile at once: rayon hands each piece of work a fresh buffer, which
    // growing row by row copied over and over.
    packed.reserve(source.iter().map(|part| part.len() / n_out.max(1)).sum::<usize>() * width);
    for row in source.iter().flat_map(|part| part.chunks_exact(n_out)) {
        packed.extend_from_slice(&row[start..start + width]);
    }
}

/// `out` (columns x outputs, row-major) = the currents of every row through `weights` (outputs
/// x inputs, column-major), plus `bias`. The first `based` rows are base rows (deviation form,
/// see the module documentation): they have no column of their own, and column c, row `based +
/// c`, adds the currents of base row `c mod based` to its own. The tiles of outputs run in
/// parallel, each over all the rows with its weights packed, so that they stay in the core's
/// cache.
pub fn currents<F: Real>(weights: &DMatrix<F>, rows: &[Row<F>], based: usize, bias: Option<&[F]>, out: &mut [F]) {
    assert_eq!(out.len(), (rows.len() - based.min(rows.len())) * weights.nrows(), "currents buffer does not match");
    // SAFETY: out is the columns x outputs buffer, a distinct &mut.
    unsafe { currents_into(weights, rows, based, bias, out.as_mut_ptr()) }
}

/// [`currents`] through a pointer to the buffer, every element of which it writes without
/// reading it (so it may be uninitialised).
///
/// # Safety
/// `out` must address `(rows.len() - based) x outputs` writable elements that nothing else
/// touches meanwhile.
pub unsafe fn currents_into<F: Real>(
    weights: &DMatrix<F>,
    rows: &[Row<F>],
    based: usize,
    bias: Option<&[F]>,
    out: *mut F,
) {
    let n_out = weights.nrows();
    assert!(based <= rows.len(), "more base rows than rows");
    let out = TileWriter { data: out, len: (rows.len() - based) * n_out };
    let tiles: Vec<(usize, usize)> = tiles(n_out, TILE).collect();
    tiles.par_iter().for_each_init(Vec::new, |packed, &(start, width)| {
        // W^T is inputs x outputs row-major: each input's weights as one row.
        pack_tile(&[weights.as_slice()], n_out, (start, width), packed);
        let bias = bias.map(|b| &b[start..start + width]);
        with_width!(width, currents_tile(packed, (start, n_out), (rows, based), bias, &out));
    });
}

/// Outputs `start..start + W` of every column, from the tile's packed weights (W per input).
fn currents_tile<const W: usize, F: Real>(
    tile: &[F],
    (start, n_out): (usize, usize),
    (rows, based): (&[Row<F>], usize),
    bias: Option<&[F]>,
    out: &TileWriter<F>,
) {
    let sum = |(idx, val): Row<F>| {
        let mut acc = [F::zero(); W];
        for (&i, &x) in idx.iter().zip(val) {
            let col: &[F; W] = tile[i as usize * W..][..W].try_into().expect("tile");
            for (a, &c) in acc.iter_mut().zip(col) {
                *a = x.fma(c, *a);
            }
        }
        acc
    };
    let bases: Vec<[F; W]> = rows[..based].iter().map(|&row| sum(row)).collect();
    let bias: Option<&[F; W]> = bias.map(|b| b.try_into().expect("bias tile"));
    for (c, &row) in rows[based..].iter().enumerate() {
        let mut acc = sum(row);
        if let Some(base) = bases.get(c % based.max(1)) {
            acc.iter_mut().zip(base).for_each(|(a, &b)| *a += b);
        }
        if let Some(bias) = bias {
            acc.iter_mut().zip(bias).for_each(|(a, &b)| *a += b);
        }
        out.set(c * n_out + start, acc);
    }
}

/// The events of rows regrouped by input: input `i` appears in rows `entries[starts[i]..starts[i
/// + 1]]` as (row, value), rows ascending. Buffers are kept across calls.
#[derive(Debug, Clone)]
pub struct ByInput<F> {
    starts: Vec<usize>,
    entries: Vec<(u32, F)>,
    fill: Vec<usize>,
}

impl<F> Default for ByInput<F> {
    fn default() -> Self {
        ByInput { starts: Vec::new(), entries: Vec::new(), fill: Vec::new() }
    }
}

impl<F: Real> ByInput<F> {
    /// Regroups `rows` (a counting sort by input index).
    pub fn group(&mut self, n_in: usize, rows: &[Row<F>]) {
        self.starts.clear();
        self.starts.resize(n_in + 1, 0);
        for &(idx, _) in rows {
            for &i in idx {
                self.starts[i as usize + 1] += 1;
            }
        }
        for i in 0..n_in {
            self.starts[i + 1] += self.starts[i];
        }
        self.fill.clear();
        self.fill.extend_from_slice(&self.starts[..n_in]);
        self.entries.clear();
        self.entries.resize(self.starts[n_in], (0, F::zero()));
        for (r, &(idx, val)) in rows.iter().enumerate() {
            for (&i, &x) in idx.iter().zip(val) {
                let slot = &mut self.fill[i as usize];
                self.entries[*slot] = (r as u32, x);
                *slot += 1;
            }
        }
    }

    fn of(&self, i: usize) -> &[(u32, F)] {
        &self.entries[self.starts[i]..self.starts[i + 1]]
    }
}

/// How [`weight_gradient`] sums the rows into the gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summing {
    /// The sum over all rows, in row order, replaces the gradient.
    Write,
    /// Each row's terms are added to the gradient, from the last row to the first. With rows in
    /// time order, a sequence taken in segments, each added this way from the last segment,
    /// then gets the same gradient bit for bit as taken whole: the same additions in the same
    /// order.
    AddFromLast,
}

/// `grad` (outputs x inputs, column-major) = (or +=, see [`Summing`]) the weight gradient of
/// the grouped events given `g` (rows x outputs, row-major, the rows of its parts one after the
/// other), the gradient of the loss w.r.t. each row's currents. Writing rather than adding spares the caller zeroing a matrix larger than the
/// caches. The tiles of outputs run in parallel, each with its share of `g` packed.
pub fn weight_gradient<F: Real>(grad: &mut DMatrix<F>, events: &ByInput<F>, g: &[&[F]], summing: Summing) {
    let (n_out, n_in) = grad.shape();
    let grad = TileWriter::new(grad.as_mut_slice());
    let tiles: Vec<(usize, usize)> = tiles(n_out, TILE).collect();
    tiles.par_iter().for_each_init(Vec::new, |packed, &(start, width)| {
        pack_tile(g, n_out, (start, width), packed);
        with_width!(width, gradient_tile(&grad, n_out, n_in, start, events, packed, summing));
    });
}

/// Outputs `start..start + W` of every column of the weight gradient, from the tile of `g`
/// packed W per row.
fn gradient_tile<const W: usize, F: Real>(
    grad: &TileWriter<F>,
    n_out: usize,
    n_in: usize,
    start: usize,
    events: &ByInput<F>,
    tile: &[F],
    summing: Summing,
) {
    let row = |r: u32| -> &[F; W] { tile[r as usize * W..][..W].try_into().expect("tile") };
    for i in 0..n_in {
        let at = i * n_out + start;
        let entries = events.of(i);
        let mut acc = match summing {
            Summing::Write => [F::zero(); W],
            Summing::AddFromLast => grad.get(at),
        };
        let mut add = |&(r, x): &(u32, F)| {
            for (a, &v) in acc.iter_mut().zip(row(r)) {
                *a = x.fma(v, *a);
            }
        };
        match summing {
            Summing::Write => entries.iter().for_each(&mut add),
            Summing::AddFromLast => entries.iter().rev().for_each(&mut add),
        }
        grad.set(at, acc);
    }
}

/// Replaces `events` by one row per column of `x` (`features` values each, column-major): the
/// features that are not zero, and their values. A block of 64 values becomes a word of bits
/// (compares without a branch), whose set bits alone are visited: spikes are mostly zeros.
/// Parts of the columns run in parallel, each into its own list, joined in column order.
pub fn column_events<F: Real>(x: &[F], features: usize, events: &mut Events<F>) {
    let features = features.max(1);
    let per_part = (x.len() / features).div_ceil(COLUMN_PARTS).max(1);
    let parts: Vec<Events<F>> = x
        .par_chunks(features * per_part)
        .map(|part| {
            let mut events = Events::default();
            for column in part.chunks_exact(features) {
                for (block, values) in column.chunks(64).enumerate() {
                    let nonzero =
                        values.iter().enumerate().fold(0u64, |bits, (j, &v)| bits | u64::from(v != F::zero()) << j);
                    for_each_bit(&[nonzero], |j| events.push((block * 64) as u32 + j, values[j as usize]));
                }
                events.end_step();
            }
            events
        })
        .collect();
    *events = Events::concat(&parts);
}

/// Parts of [`column_events`]'s columns, whatever the thread count: enough for the threads to
/// share, few enough that joining them costs little.
const COLUMN_PARTS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    /// Four rows over five inputs, with binary, fractional and negative values, and an empty
    /// row.
    fn rows() -> Vec<(Vec<u32>, Vec<f64>)> {
        vec![
            (vec![0, 3, 4], vec![1.0, 1.0, 1.0]),
            (vec![1, 3], vec![1.0, 0.5]),
            (vec![2, 4], vec![0.5, -2.0]),
            (vec![], vec![]),
        ]
    }

    fn borrowed(rows: &[(Vec<u32>, Vec<f64>)]) -> Vec<Row<'_, f64>> {
        rows.iter().map(|(i, v)| (&i[..], &v[..])).collect()
    }

    /// Output counts that take every tile width, alone and after full tiles.
    const OUTPUTS: [usize; 5] = [3, 10, TILE, TILE + 37, 2 * TILE + 32];

    #[test]
    fn tiles_cover_the_outputs_once_in_order() {
        for n_out in 0..300 {
            let tiles: Vec<_> = tiles(n_out, TILE).collect();
            let mut next = 0;
            for &(start, width) in &tiles {
                assert_eq!(start, next);
                assert!(width.is_power_of_two() && width <= TILE);
                next += width;
            }
            assert_eq!(next, n_out);
            assert!(tiles.len() <= n_out / TILE + TILE.trailing_zeros() as usize + 1);
        }
    }

    #[test]
    fn currents_equal_the_dense_product() {
        let rows = rows();
        for n_out in OUTPUTS {
            let w = DMatrix::from_fn(n_out, 5, |o, i| (o * 7 + i * 3) as f64 * 0.01 - 0.2);
            let mut out = vec![f64::NAN; rows.len() * n_out];
            currents(&w, &borrowed(&rows), 0, None, &mut out);
            for (r, (idx, val)) in rows.iter().enumerate() {
                for o in 0..n_out {
                    let expected: f64 = idx.iter().zip(val).map(|(&i, &x)| x * w[(o, i as usize)]).sum();
                    assert!((out[r * n_out + o] - expected).abs() < 1e-12, "row {r}, output {o}");
                }
            }
        }
    }

    #[test]
    fn weight_gradient_equals_the_dense_product() {
        let rows = rows();
        for n_out in OUTPUTS {
            let g: Vec<f64> = (0..rows.len() * n_out).map(|k| (k % 11) as f64 * 0.1 - 0.5).collect();
            let mut grad = DMatrix::from_element(n_out, 5, f64::NAN);
            let mut grouped = ByInput::default();
            grouped.group(5, &borrowed(&rows));
            weight_gradient(&mut grad, &grouped, &[&g], Summing::Write);
            for o in 0..n_out {
                for i in 0..5 {
                    let expected: f64 = rows
                        .iter()
                        .enumerate()
                        .flat_map(|(r, (idx, val))| {
                            idx.iter().zip(val).filter(|&(&j, _)| j as usize == i).map(move |(_, &x)| (r, x))
                        })
                        .map(|(r, x)| x * g[r * n_out + o])
                        .sum();
                    assert!((grad[(o, i)] - expected).abs() < 1e-12, "output {o}, input {i}");
                }
            }
        }
    }

    /// Sparse rows over `n_in` inputs, each input present with probability 1/4.
    fn sparse_rows(n_rows: usize, n_in: usize) -> Vec<(Vec<u32>, Vec<f64>)> {
        let mut state = 12345u64;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        (0..n_rows)
            .map(|_| {
                let idx: Vec<u32> = (0..n_in as u32).filter(|_| next() % 4 == 0).collect();
                let val = idx.iter().map(|_| f64::from(next() % 1000) / 250.0 - 2.0).collect();
                (idx, val)
            })
            .collect()
    }

    /// Each element is summed in one fixed order (inputs ascending; rows ascending, or from the
    /// last back), which the bit-identity across threads and segments rests on.
    #[test]
    fn sums_follow_one_plain_loop_bit_for_bit() {
        let (n_rows, n_in) = (150, 103);
        let rows = sparse_rows(n_rows, n_in);
        let rows = borrowed(&rows);
        for n_out in [TILE + 3, 5] {
            let w = DMatrix::from_fn(n_out, n_in, |o, i| ((o * 31 + i * 17) % 97) as f64 / 97.0 - 0.5);
            let mut out = vec![f64::NAN; n_rows * n_out];
            currents(&w, &rows, 0, None, &mut out);
            for (r, &(idx, val)) in rows.iter().enumerate() {
                for o in 0..n_out {
                    let plain = idx.iter().zip(val).fold(0.0, |a: f64, (&i, &x)| x.mul_add(w[(o, i as usize)], a));
                    assert_eq!(out[r * n_out + o].to_bits(), plain.to_bits(), "currents: row {r}, output {o}");
                }
            }
            let g: Vec<f64> = (0..n_rows * n_out).map(|k| ((k * 13) % 101) as f64 / 50.0 - 1.0).collect();
            let mut grouped = ByInput::default();
            grouped.group(n_in, &rows);
            let start = DMatrix::from_fn(n_out, n_in, |o, i| (o + i) as f64 * 0.125);
            for summing in [Summing::Write, Summing::AddFromLast] {
                let mut grad = start.clone();
                weight_gradient(&mut grad, &grouped, &[&g], summing);
                for i in 0..n_in {
                    let mut entries = grouped.of(i).to_vec();
                    let first = match summing {
                        Summing::Write => 0.0,
                        Summing::AddFromLast => {
                            entries.reverse();
                            1.0
                        }
                    };
                    for o in 0..n_out {
                        let plain = entries
                            .iter()
                            .fold(first * start[(o, i)], |a: f64, &(r, x)| x.mul_add(g[r as usize * n_out + o], a));
                        assert_eq!(grad[(o, i)].to_bits(), plain.to_bits(), "{summing:?}: output {o}, input {i}");
                    }
                }
            }
        }
    }
}
