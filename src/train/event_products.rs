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
//! Each output element is summed by one loop in a fixed order (events in row order, rows in
//! ascending order), so results do not depend on how the caller splits work between threads.

use nalgebra::DMatrix;

use super::net::Real;

/// Outputs per register tile.
pub const TILE: usize = 64;

/// One row of events: the inputs that are active and their values.
pub type Row<'a, F> = (&'a [u32], &'a [F]);

/// The output tiles of `n_out` outputs: (start, width), full tiles of [`TILE`], then the rest
/// in halving widths down to 1, so every width is a compile-time constant of the kernels.
fn tiles(n_out: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut start = 0;
    let mut width = TILE;
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

/// `out` (rows x outputs, row-major) = the currents of every row through `weights` (outputs x
/// inputs, column-major).
pub fn currents<F: Real>(weights: &DMatrix<F>, rows: &[Row<F>], out: &mut [F]) {
    let n_out = weights.nrows();
    assert_eq!(out.len(), rows.len() * n_out, "currents buffer does not match rows x outputs");
    let mut packed = Vec::with_capacity(weights.ncols() * TILE);
    for (start, width) in tiles(n_out) {
        with_width!(width, currents_tile(weights, start, rows, out, &mut packed));
    }
}

/// Outputs `start..start + W` of every row. The tile's weights are first copied next to each
/// other (W per input), so the tile is one compact block of cache lines.
fn currents_tile<const W: usize, F: Real>(
    weights: &DMatrix<F>,
    start: usize,
    rows: &[Row<F>],
    out: &mut [F],
    packed: &mut Vec<F>,
) {
    let n_out = weights.nrows();
    packed.resize(weights.ncols() * W, F::zero());
    for (p, col) in packed.chunks_exact_mut(W).zip(weights.as_slice().chunks_exact(n_out)) {
        p.copy_from_slice(&col[start..start + W]);
    }
    for (&(idx, val), dst) in rows.iter().zip(out.chunks_exact_mut(n_out)) {
        let mut acc = [F::zero(); W];
        for (&i, &x) in idx.iter().zip(val) {
            let col: &[F; W] = packed[i as usize * W..][..W].try_into().expect("tile");
            for (a, &c) in acc.iter_mut().zip(col) {
                *a = x.fma(c, *a);
            }
        }
        dst[start..start + W].copy_from_slice(&acc);
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

/// `grad` (outputs x inputs, column-major) = the weight gradient of the grouped events given `g`
/// (rows x outputs, row-major), the gradient of the loss w.r.t. each row's currents. Writing
/// rather than adding spares the caller zeroing a matrix larger than the caches.
pub fn weight_gradient<F: Real>(grad: &mut DMatrix<F>, events: &ByInput<F>, g: &[F]) {
    let n_out = grad.nrows();
    let mut packed = Vec::with_capacity(g.len().min(g.len() / n_out.max(1) * TILE));
    for (start, width) in tiles(n_out) {
        with_width!(width, gradient_tile(grad, start, events, g, &mut packed));
    }
}

/// Outputs `start..start + W` of the weight gradient; the tile of `g` is first copied into a
/// compact block, as in [`currents_tile`].
fn gradient_tile<const W: usize, F: Real>(
    grad: &mut DMatrix<F>,
    start: usize,
    events: &ByInput<F>,
    g: &[F],
    packed: &mut Vec<F>,
) {
    let n_out = grad.nrows();
    let n_in = grad.ncols();
    packed.resize(g.len() / n_out * W, F::zero());
    for (p, row) in packed.chunks_exact_mut(W).zip(g.chunks_exact(n_out)) {
        p.copy_from_slice(&row[start..start + W]);
    }
    let dw = grad.as_mut_slice();
    for i in 0..n_in {
        let col: &mut [F; W] = (&mut dw[i * n_out + start..][..W]).try_into().expect("tile");
        let mut acc = [F::zero(); W];
        for &(r, x) in events.of(i) {
            let row: &[F; W] = packed[r as usize * W..][..W].try_into().expect("tile");
            for (a, &v) in acc.iter_mut().zip(row) {
                *a = x.fma(v, *a);
            }
        }
        *col = acc;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of events with every value kind: binary, fractional, repeated inputs.
    fn rows() -> Vec<(Vec<u32>, Vec<f64>)> {
        vec![
            (vec![0, 3, 4], vec![1.0, 1.0, 1.0]),
            (vec![], vec![]),
            (vec![2, 4], vec![0.5, -2.0]),
            (vec![1, 1, 3], vec![1.0, 0.25, 3.0]),
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
            let tiles: Vec<_> = tiles(n_out).collect();
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
            currents(&w, &borrowed(&rows), &mut out);
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
            weight_gradient(&mut grad, &grouped, &g);
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
}
