//! Convolutions (Conv2d): the geometry, and two ways through it.
//!
//! An image sample is stored channel-major (channel, row, column), as PyTorch stores it, so one
//! sample is one contiguous column of a batch and Flatten is free.
//!
//! Real-valued input goes through the patch matrix: each sample is unrolled into `positions x
//! (channels k k)` patches (im2col) and multiplied by the transposed filter matrix, which yields
//! the output directly in channel-major order ([`forward`], [`backward`]).
//!
//! Spike input (a spiking layer's output, through pooling or dropout) is mostly zeros: a
//! spiking CNN's second convolution sees about 30% of its inputs fire. There each input that
//! fired adds, for every tap of the kernel, that tap's filter column into the output position
//! it reaches ([`forward_events`]), and the filter gradient adds the output gradient at those
//! positions ([`backward`] of [`Kept::Spikes`]): a third of the multiply-adds of the products,
//! and no patch matrix (for that convolution 56 448 values per sample and step, zeroed,
//! written, and read by the forward product and by the filter gradient). Both work
//! position-major (a position's filters side by side, so each addition is one contiguous run of
//! filters) and transpose to and from the channel-major layout per sample. The input gradient
//! stays a product: the output gradient is dense. Where the CPU has a tile multiply and the
//! convolution has stride 1, all three passes on spikes are exact integer tile products instead
//! ([`super::conv_tiles`]).
//!
//! Work is split into fixed blocks of samples and partial filter gradients are added in block
//! order, so results do not depend on the number of threads.

use std::mem::MaybeUninit;

use nalgebra::DMatrix;
use rayon::prelude::*;

use super::conv_tiles::SpikeBytes;
use super::event_products::{self, with_width};
use super::fresh;
use super::gemm::{Gemm, View, matmul, product_into};
use super::linear::{add_bias, bias_gradient};
use super::spike_input::{self, SpikeRows};
use crate::spec::Shape;

/// Samples per parallel block of a convolution.
const SAMPLE_BLOCK: usize = 8;

/// Filters per tile of the event-driven passes. Tiles of 32 would keep a 14 x 14 sample's
/// outputs in the L1 cache, but every input then walks its taps twice: on the spiking CNN's
/// second convolution, 64 took 41 ms a batch and 32 took 50-70 ms.
const FILTER_TILE: usize = 64;

/// Geometry of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub input: Shape,
    pub output: Shape,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeometry {
    /// Channels, height and width of the input, height and width of the output, kernel size.
    pub(super) fn dims(&self) -> (usize, usize, usize, usize, usize, usize) {
        let Shape::Image { channels, height, width } = self.input else {
            unreachable!("checked: conv input is an image")
        };
        let Shape::Image { height: oh, width: ow, .. } = self.output else { unreachable!("conv output is an image") };
        (channels, height, width, oh, ow, self.kernel)
    }

    /// Rows of the patch matrix (output positions) and its columns (channels x k x k).
    pub fn patch_shape(&self) -> (usize, usize) {
        let (c, _, _, oh, ow, k) = self.dims();
        (oh * ow, c * k * k)
    }

    /// For each patch column (channel, ky, kx) and output row, calls `f(column, first output
    /// position of the row, input index of the row's first valid tap or None when the whole row
    /// lies in the padding, range of output columns inside the input)`. Positions outside the
    /// range read the padding.
    #[inline(always)]
    fn for_each_row(&self, mut f: impl FnMut(usize, usize, Option<usize>, std::ops::Range<usize>)) {
        let (c, h, w, oh, ow, k) = self.dims();
        let (s, p) = (self.stride as isize, self.padding as isize);
        for ci in 0..c {
            for ky in 0..k {
                for kx in 0..k {
                    let col = (ci * k + ky) * k + kx;
                    // Output columns ox with 0 <= ox s + kx - p < w.
                    let first = ((p - kx as isize).max(0) + s - 1) / s;
                    let last = ((w as isize - 1 + p - kx as isize).div_euclid(s) + 1).clamp(0, ow as isize);
                    let cols = first.min(last) as usize..last.max(0) as usize;
                    for oy in 0..oh {
                        let y = oy as isize * s + ky as isize - p;
                        let start = (0..h as isize)
                            .contains(&y)
                            .then(|| (ci * h + y as usize) * w + (cols.start as isize * s + kx as isize - p) as usize);
                        f(col, oy * ow, start, if start.is_some() { cols.clone() } else { 0..0 });
                    }
                }
            }
        }
    }

    /// im2col of one sample into `patches` (positions x (channels k k), column-major).
    pub fn unfold<F: Gemm>(&self, sample: &[F], patches: &mut [F]) {
        let (positions, _) = self.patch_shape();
        let s = self.stride;
        patches.iter_mut().for_each(|v| *v = F::zero());
        self.for_each_row(|col, row, start, cols| {
            if let Some(start) = start {
                let out = &mut patches[col * positions + row..];
                for (j, ox) in cols.enumerate() {
                    out[ox] = sample[start + j * s];
                }
            }
        });
    }

    /// col2im: adds the patch gradients back onto the sample's input positions.
    pub fn fold<F: Gemm>(&self, patches: &[F], sample: &mut [F]) {
        let (positions, _) = self.patch_shape();
        let s = self.stride;
        self.for_each_row(|col, row, start, cols| {
            if let Some(start) = start {
                let from = &patches[col * positions + row..][cols.clone()];
                if s == 1 {
                    // Contiguous on both sides: a loop the compiler vectorises.
                    let to = &mut sample[start..start + from.len()];
                    to.iter_mut().zip(from).for_each(|(x, &p)| *x += p);
                } else {
                    for (j, &p) in from.iter().enumerate() {
                        sample[start + j * s] += p;
                    }
                }
            }
        });
    }

    /// Where each input row and column is read, per kernel row and column: see [`TapMap`].
    fn tap_map(&self) -> TapMap {
        let (_, h, w, oh, ow, k) = self.dims();
        let (s, p) = (self.stride, self.padding);
        // Output coordinate o reads input coordinate o s + tap - p.
        let reached = |at: usize, tap: usize, out: usize| {
            let from = at + p;
            let o = from.checked_sub(tap).filter(|d| d % s == 0).map(|d| d / s);
            o.filter(|&o| o < out).map_or(TapMap::NONE, |o| o as u16)
        };
        let table =
            |size: usize, out: usize| (0..k).flat_map(|tap| (0..size).map(move |at| reached(at, tap, out))).collect();
        TapMap { rows: table(h, oh), columns: table(w, ow), height: h, width: w, out_width: ow, kernel: k }
    }
}

/// For kernel row `ky` and input row `r`, the output row whose window reads input row `r`
/// through that kernel row (`rows[ky * height + r]`), or [`TapMap::NONE`]; the same for
/// columns. An input (r, c) is read through tap (ky, kx) by output position (rows[..], columns[..])
/// when neither is NONE. Two small tables instead of a division per input and tap.
struct TapMap {
    rows: Vec<u16>,
    columns: Vec<u16>,
    height: usize,
    width: usize,
    out_width: usize,
    kernel: usize,
}

impl TapMap {
    const NONE: u16 = u16::MAX;

    /// For the events of a sample (`index`, `value`, channel-major indices, ascending), calls
    /// `f(channel, each event's (row, column) in the channel's plane, the events' values)` for
    /// every channel with events, in channel order.
    fn for_each_channel<F>(
        &self,
        (index, value): (&[u32], &[F]),
        at: &mut Vec<(u16, u16)>,
        mut f: impl FnMut(usize, &[(u16, u16)], &[F]),
    ) {
        let plane = self.height * self.width;
        let mut first = 0;
        while first < index.len() {
            let channel = index[first] as usize / plane;
            let end = first + index[first..].partition_point(|&i| (i as usize) < (channel + 1) * plane);
            at.clear();
            at.extend(index[first..end].iter().map(|&i| {
                let q = i as usize - channel * plane;
                ((q / self.width) as u16, (q % self.width) as u16)
            }));
            f(channel, at, &value[first..end]);
            first = end;
        }
    }

    /// For the events of a sample, channel by channel and then tap by tap: calls `f(the tap's
    /// patch column, channel k k + ky k + kx; the output rows reached through ky and the output
    /// columns through kx; the channel's events' (row, column); their values)`.
    fn for_each_tap<F>(
        &self,
        events: (&[u32], &[F]),
        at: &mut Vec<(u16, u16)>,
        mut f: impl FnMut(usize, (&[u16], &[u16]), &[(u16, u16)], &[F]),
    ) {
        let k = self.kernel;
        self.for_each_channel(events, at, |channel, at, values| {
            for ky in 0..k {
                let rows = &self.rows[ky * self.height..][..self.height];
                for kx in 0..k {
                    let columns = &self.columns[kx * self.width..][..self.width];
                    f((channel * k + ky) * k + kx, (rows, columns), at, values);
                }
            }
        });
    }
}

/// What a convolution's forward pass keeps for its backward pass.
#[derive(Debug, Clone)]
pub enum Kept<F> {
    /// Real-valued input: every sample's patch matrix.
    Patches(Vec<F>),
    /// Spike input: every column's nonzero inputs, one row of events each, or each sample's
    /// base and every column's deviations from it.
    Spikes(SpikeRows<F>),
    /// Spike input taken by the tile multiply: the spikes as bytes.
    Tiles(SpikeBytes),
}

/// Convolution forward for the effective filters `w` (filters x (channels k k)); returns the
/// output and every sample's patch matrix.
pub fn forward<F: Gemm>(
    g: &ConvGeometry,
    w: &DMatrix<F>,
    bias: Option<&DMatrix<F>>,
    x: &DMatrix<F>,
) -> (DMatrix<F>, Kept<F>) {
    let (positions, taps) = g.patch_shape();
    let out_size = g.output.size();
    let (mut y, mut patches) = (fresh::slots(out_size * x.ncols()), fresh::slots(positions * taps * x.ncols()));
    let wt = View::new(w.as_slice(), w.nrows(), w.ncols()).t();
    y.par_chunks_mut(out_size)
        .zip(patches.par_chunks_mut(positions * taps))
        .zip(x.as_slice().par_chunks(g.input.size()))
        .for_each(|((y, p), x)| {
            // Zeroed here, in parallel: padding leaves some patch values unwritten.
            let p = fresh::zeroed(p);
            g.unfold(x, p);
            // SAFETY: y is this sample's out_size = positions x filters output, which the
            // product with beta 0 writes whole without reading.
            unsafe {
                product_into(y.as_mut_ptr().cast::<F>(), positions, View::new(p, positions, taps), wt, F::zero())
            };
            if let Some(b) = bias {
                // SAFETY: written just above.
                add_bias(unsafe { fresh::assume_written(y) }, b, positions);
            }
        });
    // SAFETY: every sample's output and patches were written above.
    unsafe { (fresh::written_matrix(out_size, x.ncols(), y), Kept::Patches(fresh::written_slots(patches))) }
}

/// Convolution backward from what the forward pass `kept`: gradients of the effective filters,
/// of the bias, and of the input (left zero unless `input_grad`). Filter gradients are summed
/// per fixed block of samples, then over blocks in order.
pub fn backward<F: Gemm>(
    g: &ConvGeometry,
    w: &DMatrix<F>,
    has_bias: bool,
    kept: &Kept<F>,
    dy: &DMatrix<F>,
    input_grad: bool,
) -> (DMatrix<F>, Option<DMatrix<F>>, DMatrix<F>) {
    match kept {
        Kept::Patches(patches) => backward_patches(g, w, has_bias, patches, dy, input_grad),
        Kept::Spikes(rows) => backward_events(g, w, has_bias, rows, dy, input_grad),
        Kept::Tiles(spikes) => F::spike_convolution_backward(g, w, has_bias, spikes, dy, input_grad),
    }
}

/// [`backward`] for real-valued input: the filter gradient is dy^T times each sample's patches.
fn backward_patches<F: Gemm>(
    g: &ConvGeometry,
    w: &DMatrix<F>,
    has_bias: bool,
    patches: &[F],
    dy: &DMatrix<F>,
    input_grad: bool,
) -> (DMatrix<F>, Option<DMatrix<F>>, DMatrix<F>) {
    let (positions, taps) = g.patch_shape();
    let patch_blocks = patches.chunks(positions * taps * SAMPLE_BLOCK).collect::<Vec<_>>();
    by_sample_blocks(g, w, has_bias, dy, input_grad, |b, dy, dw| {
        for (dy, p) in dy.chunks(g.output.size()).zip(patch_blocks[b].chunks(positions * taps)) {
            // dW (filters x taps) += dy^T (filters x positions) . patches (positions x taps)
            let dyv = View::new(dy, positions, w.nrows());
            matmul(dw.as_mut_slice(), dyv.t(), View::new(p, positions, taps), F::one());
        }
    })
}

/// Convolution forward on an input of spikes over `steps` steps (step-major columns): each
/// nonzero input adds, per tap, its value times that tap's filters into the output position
/// the tap reaches. Where the input holds fewer events as deviations from each sample's
/// majority over the steps ([`spike_input::column_deviations`]: a spiking CNN's second
/// convolution sees about half as many), each sample's base is spread once and every column
/// starts from it. Returns the output and the input's events. The same values as [`forward`]
/// up to the order of the additions.
pub fn forward_events<F: Gemm>(
    g: &ConvGeometry,
    w: &DMatrix<F>,
    bias: Option<&DMatrix<F>>,
    x: &DMatrix<F>,
    steps: usize,
) -> (DMatrix<F>, Kept<F>) {
    if let Some((y, spikes)) = F::spike_convolution(g, w, bias, x) {
        return (y, Kept::Tiles(spikes));
    }
    let samples = x.ncols() / steps.max(1);
    let rows = spike_input::column_deviations(x, samples).unwrap_or_else(|| SpikeRows::values(x));
    let (based, events) = (rows.base_rows(), &rows.events);
    let (positions, filters) = (g.output.positions(), w.nrows());
    let map = g.tap_map();
    let tiles: Vec<(usize, usize)> = event_products::tiles(filters, FILTER_TILE).collect();
    // Each sample's base spread, tile after tile (tile (start, width) at start x positions),
    // each tile position-major as `spread_tile` leaves it.
    let mut bases = vec![F::zero(); based * positions * filters];
    bases.par_chunks_mut(positions * filters).enumerate().for_each_init(Vec::new, |at, (b, base)| {
        for &(start, width) in &tiles {
            let out = &mut base[start * positions..][..positions * width];
            with_width!(width, spread_tile(g, &map, events.step(b), at, w.as_slice(), start, out));
        }
    });
    let mut y = fresh::slots(g.output.size() * x.ncols());
    y.par_chunks_mut(g.output.size()).enumerate().for_each_init(
        || (vec![F::zero(); positions * FILTER_TILE], Vec::new()),
        |(by_position, at), (c, y)| {
            let (index, value) = events.step(based + c);
            for &(start, width) in &tiles {
                let out = &mut by_position[..positions * width];
                match based {
                    0 => out.iter_mut().for_each(|v| *v = F::zero()),
                    _ => {
                        out.copy_from_slice(&bases[(c % samples * filters + start) * positions..][..positions * width])
                    }
                }
                with_width!(width, spread_tile(g, &map, (index, value), at, w.as_slice(), start, out));
                // Filters start.. of every position, into their channel-major rows, each with
                // its bias added on the way (as the sum plus the bias, add_bias's order).
                for (j, row) in y[start * positions..][..width * positions].chunks_exact_mut(positions).enumerate() {
                    let spread = out.iter().skip(j).step_by(width);
                    match bias {
                        Some(b) => {
                            row.iter_mut().zip(spread).for_each(|(y, &v)| *y = MaybeUninit::new(v + b[start + j]))
                        }
                        None => row.iter_mut().zip(spread).for_each(|(y, &v)| *y = MaybeUninit::new(v)),
                    }
                }
            }
        },
    );
    // SAFETY: the tiles cover every filter and the rows every position of every column.
    let y = unsafe { fresh::written_matrix(g.output.size(), x.ncols(), y) };
    (y, Kept::Spikes(rows))
}

/// One tile of filters, `start..start + W`, of a sample's output (`out`, positions x W) from the
/// sample's input events: channel by channel, tap by tap, each tap's filters added for every
/// event of the channel into the output position the tap reaches. Each output receives its
/// terms in the order of the inputs (channel, then row, then column), as a walk over the events
/// that adds all taps of one event before the next would give.
fn spread_tile<const W: usize, F: Gemm>(
    g: &ConvGeometry,
    map: &TapMap,
    events: (&[u32], &[F]),
    at: &mut Vec<(u16, u16)>,
    w: &[F],
    start: usize,
    out: &mut [F],
) {
    let filters = w.len() / g.patch_shape().1;
    map.for_each_tap(events, at, |tap, reach, at, values| {
        let filter: &[F; W] = w[tap * filters + start..][..W].try_into().expect("a tile of filters");
        spread_tap(reach, map.out_width, at, values, filter, out);
    });
}

/// One tap's share of [`spread_tile`]: its filters (kept in registers) times each event's value
/// into the output position the tap reaches from the event. Out of line, so that the compiler
/// keeps the filters in registers and vectorises the multiply-adds.
#[inline(never)]
fn spread_tap<const W: usize, F: Gemm>(
    (rows, columns): (&[u16], &[u16]),
    out_width: usize,
    at: &[(u16, u16)],
    values: &[F],
    filter: &[F; W],
    out: &mut [F],
) {
    let filter = *filter;
    for (&(r, c), &x) in at.iter().zip(values) {
        let (oy, ox) = (rows[r as usize], columns[c as usize]);
        if oy == TapMap::NONE || ox == TapMap::NONE {
            continue;
        }
        let to: &mut [F; W] =
            (&mut out[(oy as usize * out_width + ox as usize) * W..][..W]).try_into().expect("a tile of outputs");
        to.iter_mut().zip(&filter).for_each(|(t, &f)| *t = x.fma(f, *t));
    }
}

/// [`backward`] for spike input: the filter gradient adds, for every nonzero input and tap, its
/// value times the output gradient where the tap reached; in deviation form, each sample's
/// base adds it times the sum of the sample's output gradients over the steps.
fn backward_events<F: Gemm>(
    g: &ConvGeometry,
    w: &DMatrix<F>,
    has_bias: bool,
    rows: &SpikeRows<F>,
    dy: &DMatrix<F>,
    input_grad: bool,
) -> (DMatrix<F>, Option<DMatrix<F>>, DMatrix<F>) {
    let (based, events) = (rows.base_rows(), &rows.events);
    let (positions, filters) = (g.output.positions(), w.nrows());
    let map = g.tap_map();
    // Rows `first..` of the events (columns, or the bases) times their output gradients `dys`
    // (channel-major) where each tap reached, tile by tile of filters, into `dw`.
    let filter_gradient = |first: usize, dys: &[&[F]], dw: &mut DMatrix<F>| {
        let mut by_position = vec![F::zero(); positions * FILTER_TILE];
        let mut at = Vec::new();
        for (j, dy) in dys.iter().enumerate() {
            for (start, width) in event_products::tiles(filters, FILTER_TILE) {
                let there = &mut by_position[..positions * width];
                // dy of filters start.. at every position, a position's side by side.
                for (f, row) in dy[start * positions..][..width * positions].chunks_exact(positions).enumerate() {
                    there.iter_mut().skip(f).step_by(width).zip(row).for_each(|(t, &v)| *t = v);
                }
                let sample = events.step(first + j);
                with_width!(width, gather_tile(g, &map, sample, &mut at, there, start, dw.as_mut_slice()));
            }
        }
    };
    let (mut dw, db, dx) = by_sample_blocks(g, w, has_bias, dy, input_grad, |b, dy, dw| {
        let dys: Vec<&[F]> = dy.chunks(g.output.size()).collect();
        filter_gradient(based + b * SAMPLE_BLOCK, &dys, dw)
    });
    if let Some(steps) = dy.ncols().checked_div(based) {
        // The bases' share, per fixed block of samples, added after the columns' in block order.
        let out_size = g.output.size();
        let partial: Vec<DMatrix<F>> = (0..based.div_ceil(SAMPLE_BLOCK))
            .into_par_iter()
            .map(|block| {
                let samples = block * SAMPLE_BLOCK..(block * SAMPLE_BLOCK + SAMPLE_BLOCK).min(based);
                // Each sample's output gradient summed over the steps, from the first.
                let sums: Vec<Vec<F>> = samples
                    .clone()
                    .map(|b| {
                        let mut sum = dy.as_slice()[b * out_size..][..out_size].to_vec();
                        for t in 1..steps {
                            let later = &dy.as_slice()[(t * based + b) * out_size..][..out_size];
                            sum.iter_mut().zip(later).for_each(|(s, &v)| *s += v);
                        }
                        sum
                    })
                    .collect();
                let mut dw = DMatrix::zeros(w.nrows(), w.ncols());
                filter_gradient(samples.start, &sums.iter().map(Vec::as_slice).collect::<Vec<_>>(), &mut dw);
                dw
            })
            .collect();
        partial.iter().for_each(|part| dw += part);
    }
    (dw, db, dx)
}

/// One tile of filters, `start..start + W`, of the filter gradient `dw` from a sample's input
/// events and its output gradient `there` (positions x W): channel by channel, tap by tap, the
/// output gradient where the tap reached from each event of the channel, times the event's
/// value. Each filter gradient receives its terms in the order of the events.
fn gather_tile<const W: usize, F: Gemm>(
    g: &ConvGeometry,
    map: &TapMap,
    events: (&[u32], &[F]),
    at: &mut Vec<(u16, u16)>,
    there: &[F],
    start: usize,
    dw: &mut [F],
) {
    let filters = dw.len() / g.patch_shape().1;
    map.for_each_tap(events, at, |tap, reach, at, values| {
        let sum: &mut [F; W] = (&mut dw[tap * filters + start..][..W]).try_into().expect("a tile of filters");
        gather_tap(reach, map.out_width, at, values, there, sum);
    });
}

/// One tap's share of [`gather_tile`]: the tap's filter gradients (kept in registers) plus the
/// output gradient where the tap reached from each event, times its value (out of line, as
/// [`spread_tap`]).
#[inline(never)]
fn gather_tap<const W: usize, F: Gemm>(
    (rows, columns): (&[u16], &[u16]),
    out_width: usize,
    at: &[(u16, u16)],
    values: &[F],
    there: &[F],
    sum: &mut [F; W],
) {
    let mut acc = *sum;
    for (&(r, c), &x) in at.iter().zip(values) {
        let (oy, ox) = (rows[r as usize], columns[c as usize]);
        if oy == TapMap::NONE || ox == TapMap::NONE {
            continue;
        }
        let from: &[F; W] =
            there[(oy as usize * out_width + ox as usize) * W..][..W].try_into().expect("a tile of outputs");
        acc.iter_mut().zip(from).for_each(|(t, &f)| *t = x.fma(f, *t));
    }
    *sum = acc;
}

/// The backward pass both input forms share: per fixed block of samples, in parallel, the
/// block's filter gradient from `filter_gradient(block, dy of the block, dw)` and, with
/// `input_grad`, each sample's input gradient through the patch matrix (dy W, folded back); the
/// blocks' filter gradients are then added in block order, and the bias gradient taken.
fn by_sample_blocks<F: Gemm>(
    g: &ConvGeometry,
    w: &DMatrix<F>,
    has_bias: bool,
    dy: &DMatrix<F>,
    input_grad: bool,
    filter_gradient: impl Fn(usize, &[F], &mut DMatrix<F>) + Sync,
) -> (DMatrix<F>, Option<DMatrix<F>>, DMatrix<F>) {
    let (positions, taps) = g.patch_shape();
    let (filters, in_size, out_size) = (w.nrows(), g.input.size(), g.output.size());
    let mut dx = fresh::slots(in_size * dy.ncols());
    let wv = View::new(w.as_slice(), filters, taps);
    let partial: Vec<DMatrix<F>> = dx
        .par_chunks_mut(in_size * SAMPLE_BLOCK)
        .zip(dy.as_slice().par_chunks(out_size * SAMPLE_BLOCK))
        .enumerate()
        .map(|(b, (dx, dy))| {
            // The fold adds into zeros: zeroed here, by the block's own thread.
            let dx = fresh::zeroed(dx);
            let mut dw = DMatrix::zeros(filters, taps);
            filter_gradient(b, dy, &mut dw);
            if input_grad {
                let mut dp = vec![F::zero(); positions * taps];
                for (dx, dy) in dx.chunks_mut(in_size).zip(dy.chunks(out_size)) {
                    // d patches (positions x taps) = dy (positions x filters) . W (filters x taps)
                    matmul(&mut dp, View::new(dy, positions, filters), wv, F::zero());
                    g.fold(&dp, dx);
                }
            }
            dw
        })
        .collect();
    let mut dw = DMatrix::zeros(filters, taps);
    for part in &partial {
        dw += part;
    }
    let db = has_bias.then(|| bias_gradient(dy.as_slice(), filters, g.output.positions()));
    // SAFETY: the blocks cover dx, and each zeroed its part.
    (dw, db, unsafe { fresh::written_matrix(in_size, dy.ncols(), dx) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// im2col by its definition, for comparison.
    fn naive_unfold(g: &ConvGeometry, x: &[f64]) -> Vec<f64> {
        let (c, h, w, oh, ow, k) = g.dims();
        let (positions, taps) = g.patch_shape();
        let mut out = vec![0.0; positions * taps];
        for ci in 0..c {
            for ky in 0..k {
                for kx in 0..k {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let y = (oy * g.stride + ky) as isize - g.padding as isize;
                            let xx = (ox * g.stride + kx) as isize - g.padding as isize;
                            if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                                out[((ci * k + ky) * k + kx) * positions + oy * ow + ox] =
                                    x[(ci * h + y as usize) * w + xx as usize];
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn unfold_and_fold_match_their_definitions_with_stride_and_padding() {
        for (kernel, stride, padding) in [(3, 1, 1), (3, 2, 1), (2, 2, 0), (3, 3, 2), (1, 1, 0)] {
            let input = Shape::Image { channels: 2, height: 5, width: 6 };
            let spec = crate::spec::Layer::Conv2d {
                filters: 1,
                kernel: kernel as u32,
                stride: stride as u32,
                padding: padding as u32,
                weights: crate::spec::Weights::Real,
                bias: false,
            };
            let output = spec.output_shape(input).unwrap();
            let g = ConvGeometry { input, output, kernel, stride, padding };
            let x: Vec<f64> = (0..input.size()).map(|i| i as f64 + 1.0).collect();
            let (positions, taps) = g.patch_shape();
            let mut patches = vec![f64::NAN; positions * taps];
            g.unfold(&x, &mut patches);
            assert_eq!(patches, naive_unfold(&g, &x), "kernel {kernel} stride {stride} padding {padding}");
            // fold is unfold's transpose: <unfold(x), p> = <x, fold(p)>.
            let p: Vec<f64> = (0..positions * taps).map(|i| (i % 7) as f64 - 3.0).collect();
            let mut folded = vec![0.0; input.size()];
            g.fold(&p, &mut folded);
            let lhs: f64 = patches.iter().zip(&p).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&folded).map(|(a, b)| a * b).sum();
            assert_eq!(lhs, rhs);
        }
    }

    /// The geometry of a convolution of `channels x height x width` images.
    fn geometry(
        channels: usize,
        height: usize,
        width: usize,
        filters: u32,
        (kernel, stride, padding): (u32, u32, u32),
    ) -> ConvGeometry {
        let input = Shape::Image { channels, height, width };
        let spec = crate::spec::Layer::Conv2d {
            filters,
            kernel,
            stride,
            padding,
            weights: crate::spec::Weights::Real,
            bias: true,
        };
        let output = spec.output_shape(input).unwrap();
        ConvGeometry { input, output, kernel: kernel as usize, stride: stride as usize, padding: padding as usize }
    }

    #[test]
    fn event_driven_convolution_equals_the_patch_products() {
        // Samples beyond one block, filter counts around the vector width, strides and padding.
        for (filters, kernel) in [(5, (3, 1, 1)), (16, (3, 2, 1)), (9, (2, 2, 0)), (3, (3, 3, 2)), (1, (1, 1, 0))] {
            let g = geometry(3, 7, 6, filters, kernel);
            let (samples, taps) = (SAMPLE_BLOCK + 3, g.patch_shape().1);
            let f = filters as usize;
            // Spikes, a few fractional values (smooth spikes) and zeros.
            let x = DMatrix::from_fn(g.input.size(), samples, |i, c| match (i * 7 + c * 5) % 10 {
                0 | 3 | 8 => 1.0,
                5 => 0.25,
                _ => 0.0,
            });
            let w = DMatrix::from_fn(f, taps, |o, t| ((o * 13 + t * 7) % 17) as f64 * 0.05 - 0.4);
            let b = DMatrix::from_fn(f, 1, |o, _| o as f64 * 0.1);
            let dy = DMatrix::from_fn(g.output.size(), samples, |o, c| ((o * 3 + c * 11) % 13) as f64 * 0.1 - 0.6);
            let (y, patches) = forward(&g, &w, Some(&b), &x);
            let (y_events, events) = forward_events(&g, &w, Some(&b), &x, 1);
            assert!((&y_events - &y).amax() < 1e-12, "forward, {filters} filters, {kernel:?}");
            assert!(matches!((&patches, &events), (Kept::Patches(_), Kept::Spikes(_))), "each form kept");
            let (dw, db, dx) = backward(&g, &w, true, &patches, &dy, true);
            let (dw_events, db_events, dx_events) = backward(&g, &w, true, &events, &dy, true);
            assert!((&dw_events - &dw).amax() < 1e-12, "filter gradient, {filters} filters, {kernel:?}");
            assert_eq!((db_events, dx_events), (db, dx), "bias and input gradients");
        }
    }

    #[test]
    fn spikes_over_steps_as_deviations_give_the_patch_products() {
        // 0/1 spikes over three steps of eleven samples, mostly kept from step to step: each
        // sample's base plus its deviations, against the values multiplied as patches.
        let g = geometry(3, 7, 6, 16, (3, 1, 1));
        let (steps, samples, taps) = (3, SAMPLE_BLOCK + 3, g.patch_shape().1);
        let x = DMatrix::from_fn(g.input.size(), steps * samples, |i, c| {
            let (t, b) = (c / samples, c % samples);
            let held = (i * 7 + b * 5) % 3 == 0;
            let flipped = (i * 13 + b * 3 + t * 11) % 9 == 0;
            f64::from(u8::from(held != flipped))
        });
        let w = DMatrix::from_fn(16, taps, |o, t| ((o * 13 + t * 7) % 17) as f64 * 0.05 - 0.4);
        let b = DMatrix::from_fn(16, 1, |o, _| o as f64 * 0.1);
        let dy = DMatrix::from_fn(g.output.size(), steps * samples, |o, c| ((o * 3 + c * 11) % 13) as f64 * 0.1 - 0.6);
        let (y, patches) = forward(&g, &w, Some(&b), &x);
        let (y_events, kept) = forward_events(&g, &w, Some(&b), &x, steps);
        assert!(matches!(&kept, Kept::Spikes(rows) if rows.base_rows() == samples), "deviation form taken");
        assert!((&y_events - &y).amax() < 1e-12, "forward");
        let (dw, db, dx) = backward(&g, &w, true, &patches, &dy, true);
        let (dw_events, db_events, dx_events) = backward(&g, &w, true, &kept, &dy, true);
        assert!((&dw_events - &dw).amax() < 1e-12, "filter gradient");
        assert_eq!((db_events, dx_events), (db, dx), "bias and input gradients");
        // Samples that change at every step hold more events as deviations: values are kept.
        let flickering =
            DMatrix::from_fn(g.input.size(), steps * samples, |i, c| f64::from(u8::from((i + c) % 2 == 0)));
        let (_, kept) = forward_events(&g, &w, Some(&b), &flickering, steps);
        assert!(matches!(&kept, Kept::Spikes(rows) if rows.base_rows() == 0), "value form taken");
    }
}
