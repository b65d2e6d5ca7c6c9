//! Weights (real or binarised) times the input, plus a bias: the parameters of Dense and Conv2d
//! layers, and the Dense products (the convolutions' are in [`super::conv`]).
//!
//! A batch is a `features x samples` column-major matrix, so one sample is one contiguous
//! column.

use nalgebra::DMatrix;
use rayon::prelude::*;

use super::block_sums::channel_sums;
use super::event_products::{self, ByInput, Summing};
use super::fresh::written;
use super::gemm::{Gemm, View, matmul, product};
use super::spike_input::{SpikeForm, SpikeRows};
use crate::surrogate::Surrogate;

/// Weights and bias of a Dense or Conv2d layer. Dense: `units x inputs`; Conv2d:
/// `filters x (channels k k)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear<F> {
    pub weight: DMatrix<F>,
    pub bias: Option<DMatrix<F>>,
    pub binary: bool,
}

/// Weights per parallel piece of the element-wise passes over a weight matrix (element-wise
/// work gives the same result whatever the split).
const WEIGHT_SLICE: usize = 1 << 15;

impl<F: Gemm> Linear<F> {
    /// The weights the forward pass uses: the latent weights, or their sign (+1 at 0) for a
    /// binarised layer, or with `smooth` the smooth sign 2 S(w) - 1 of `surrogate`.
    pub fn effective(&self, smooth: Option<&Surrogate>) -> DMatrix<F> {
        if !self.binary {
            return self.weight.clone();
        }
        let latent = self.weight.as_slice().par_iter().with_min_len(WEIGHT_SLICE);
        let values: Vec<F> = match smooth {
            None => latent.map(|&w| if w >= F::zero() { F::one() } else { -F::one() }).collect(),
            Some(s) => latent.map(|&w| F::of(2.0 * s.primitive(w.to_f64()) - 1.0)).collect(),
        };
        DMatrix::from_vec(self.weight.nrows(), self.weight.ncols(), values)
    }

    /// Turns the gradient with respect to the effective weights into the one with respect to
    /// the latent weights: straight through where |w| <= 1 (zero beyond, where clipping holds
    /// the weight), or the exact derivative 2 S'(w) of the smooth sign.
    pub fn latent_gradient(&self, grad: &mut DMatrix<F>, smooth: Option<&Surrogate>) {
        if !self.binary {
            return;
        }
        let pieces =
            grad.as_mut_slice().par_chunks_mut(WEIGHT_SLICE).zip(self.weight.as_slice().par_chunks(WEIGHT_SLICE));
        pieces.for_each(|(gs, ws)| {
            let pairs = gs.iter_mut().zip(ws);
            match smooth {
                // A multiplication by 1 or 0 (not a select), so a negative gradient beyond the
                // clip becomes -0 exactly as before.
                None => pairs.for_each(|(g, &w)| *g *= if w.abs() <= F::one() { F::one() } else { F::zero() }),
                Some(s) => pairs.for_each(|(g, &w)| *g *= F::of(2.0 * s.derivative(w.to_f64()))),
            }
        });
    }

    /// Keeps latent binary weights in [-1, 1] after an update.
    pub fn clip(&mut self) {
        if self.binary {
            self.weight
                .as_mut_slice()
                .par_chunks_mut(WEIGHT_SLICE)
                .for_each(|ws| ws.iter_mut().for_each(|w| *w = w.clamp(-F::one(), F::one())));
        }
    }
}

/// Adds each channel's bias to its `positions` outputs in every sample of `y` (samples one
/// after the other, each `bias.len() x positions` values, channel-major).
pub fn add_bias<F: Gemm>(y: &mut [F], bias: &DMatrix<F>, positions: usize) {
    let b = bias.as_slice();
    for column in y.chunks_mut(b.len() * positions) {
        for (block, &b) in column.chunks_mut(positions).zip(b) {
            block.iter_mut().for_each(|v| *v += b);
        }
    }
}

/// Each channel's bias gradient: dy (samples of `channels x positions` values, one after the
/// other) summed over its `positions` outputs in every sample.
pub(super) fn bias_gradient<F: Gemm>(dy: &[F], channels: usize, positions: usize) -> DMatrix<F> {
    let sums = channel_sums((dy, dy), channels, positions, |_| |v: F, _| v.to_f64());
    DMatrix::from_iterator(channels, 1, sums.into_iter().map(F::of))
}

/// Dense forward: `y = w x + b` for the effective weights `w`.
pub fn dense_forward<F: Gemm>(w: &DMatrix<F>, bias: Option<&DMatrix<F>>, x: &DMatrix<F>) -> DMatrix<F> {
    let mut y = product(View::new(w.as_slice(), w.nrows(), w.ncols()), View::new(x.as_slice(), x.nrows(), x.ncols()));
    if let Some(b) = bias {
        add_bias(y.as_mut_slice(), b, 1);
    }
    y
}

/// Dense backward: gradients of the effective weights and of the bias, and of the input (an
/// empty matrix unless `input_grad`: the first layer needs none).
pub fn dense_backward<F: Gemm>(
    w: &DMatrix<F>,
    has_bias: bool,
    x: &DMatrix<F>,
    dy: &DMatrix<F>,
    input_grad: bool,
) -> (DMatrix<F>, Option<DMatrix<F>>, DMatrix<F>) {
    let dyv = View::new(dy.as_slice(), dy.nrows(), dy.ncols());
    let dw = product(dyv, View::new(x.as_slice(), x.nrows(), x.ncols()).t());
    let db = has_bias.then(|| bias_gradient(dy.as_slice(), dy.nrows(), 1));
    if !input_grad {
        return (dw, db, DMatrix::zeros(0, 0));
    }
    let dx = product(View::new(w.as_slice(), w.nrows(), w.ncols()).t(), dyv);
    (dw, db, dx)
}

/// Columns of dW per parallel piece of the step-by-step weight gradient, at least; a layer of few
/// outputs takes more, so that each step's product stays large enough to be worth its call.
const STEP_BAND: usize = 32;

/// Elements of dW per parallel piece of the step-by-step weight gradient, at least.
const STEP_BAND_ELEMENTS: usize = 8192;

/// Dense backward for an input of `steps` steps (step-major columns): dL/dW and dL/db added
/// into `dw` and `db` step by step from the last, then dL/dx. Summed step by step, a sequence
/// taken in segments (recomputation, truncation) gets the same sums, bit for bit.
pub fn dense_backward_by_step<F: Gemm>(
    w: &DMatrix<F>,
    x: &DMatrix<F>,
    dy: &DMatrix<F>,
    steps: usize,
    dw: &mut DMatrix<F>,
    db: Option<&mut DMatrix<F>>,
    input_grad: bool,
) -> DMatrix<F> {
    let samples = dy.ncols() / steps;
    let (rows, inputs) = (dy.nrows(), x.nrows());
    fn step<F: Gemm>(m: &DMatrix<F>, t: usize, samples: usize) -> &[F] {
        &m.as_slice()[t * samples * m.nrows()..(t + 1) * samples * m.nrows()]
    }
    // Bands of dW's columns (fixed, whatever the threads) in parallel, each summing its steps
    // from the last in order.
    let band_cols = STEP_BAND.max(STEP_BAND_ELEMENTS / rows.max(1));
    dw.as_mut_slice().par_chunks_mut(rows * band_cols).enumerate().for_each(|(k, band)| {
        let first = k * band_cols;
        let cols = band.len() / rows.max(1);
        for t in (0..steps).rev() {
            let x_t = View::new(step(x, t, samples), inputs, samples).rows_of(first, first + cols);
            matmul(band, View::new(step(dy, t, samples), rows, samples), x_t.t(), F::one());
        }
    });
    bias_and_input_gradients(w, dy, steps, db, input_grad)
}

/// The rest of a step-by-step dense backward once dL/dW is summed: dL/db added step by step
/// from the last, then dL/dx (empty unless `input_grad`).
fn bias_and_input_gradients<F: Gemm>(
    w: &DMatrix<F>,
    dy: &DMatrix<F>,
    steps: usize,
    db: Option<&mut DMatrix<F>>,
    input_grad: bool,
) -> DMatrix<F> {
    let rows = dy.nrows();
    let samples = dy.ncols() / steps.max(1);
    if let Some(db) = db {
        for t in (0..steps).rev() {
            let step = &dy.as_slice()[t * samples * rows..(t + 1) * samples * rows];
            *db += bias_gradient(step, rows, 1);
        }
    }
    if !input_grad {
        return DMatrix::zeros(0, 0);
    }
    product(View::new(w.as_slice(), w.nrows(), w.ncols()).t(), View::new(dy.as_slice(), rows, dy.ncols()))
}

/// Outputs a Dense layer needs for its products on an input of spikes to be event-driven. With
/// fewer, the dense products are cheaper: listing a column's events and then, per event, one
/// lookup for each short tile of outputs costs more than multiplying the zeros. On
/// networks/fashion_snn.ron's readout (800 spiking inputs, 10 outputs) the forward pass took
/// half the time as a product (0.155-0.165 against 0.313-0.349 s over 15 000 images).
pub const MIN_EVENT_OUTPUTS: usize = 16;

/// Dense forward on an input of spikes (or other mostly-zero values): each column's events add
/// their columns of `w`, the event-driven product ([`event_products::currents`]), which in
/// deviation form also adds the currents of the column's sample's base, and the bias.
pub fn dense_forward_events<F: Gemm>(w: &DMatrix<F>, bias: Option<&DMatrix<F>>, input: &SpikeRows<F>) -> DMatrix<F> {
    let rows = input.rows();
    let n_out = w.nrows();
    let columns = rows.len() - input.base_rows();
    let bias = bias.map(DMatrix::as_slice);
    // SAFETY: the currents write every element of the columns x outputs they are given.
    unsafe { written(n_out, columns, |y| event_products::currents_into(w, &rows, input.base_rows(), bias, y)) }
}

/// [`dense_backward_by_step`] for an input of spikes taken as `input` over `steps` steps:
/// dL/dW adds, event by event from the last step, only the columns of inputs that were not zero
/// ([`event_products::weight_gradient`]); dL/db and dL/dx as there. In deviation form a sample's
/// base meets the sum of its dL/dy over the steps, summed from the last step on from `carried`
/// (the sum over the later segments of the sequence, when these columns are not its last) and
/// returned to carry back; the base's terms are added with the sequence's first columns, after
/// every deviation's.
#[allow(clippy::too_many_arguments)]
pub fn dense_backward_events<F: Gemm>(
    w: &DMatrix<F>,
    input: &SpikeRows<F>,
    dy: &DMatrix<F>,
    steps: usize,
    carried: Option<&[F]>,
    dw: &mut DMatrix<F>,
    db: Option<&mut DMatrix<F>>,
    input_grad: bool,
) -> (DMatrix<F>, Vec<F>) {
    let rows = input.rows();
    let summing = Summing::AddFromLast;
    let mut by_input = ByInput::default();
    let carry = match input.form {
        SpikeForm::Values => {
            by_input.group(w.ncols(), &rows);
            event_products::weight_gradient(dw, &by_input, &[dy.as_slice()], summing);
            Vec::new()
        }
        SpikeForm::Deviations { samples, first } => {
            let n_out = dy.nrows();
            let block = samples * n_out;
            let mut sums = carried.map_or_else(|| vec![F::zero(); block], <[F]>::to_vec);
            for step in dy.as_slice().chunks_exact(block.max(1)).rev() {
                sums.iter_mut().zip(step).for_each(|(s, &g)| *s += g);
            }
            if first {
                // Base rows first, so that adding from the last row adds them last.
                by_input.group(w.ncols(), &rows);
                event_products::weight_gradient(dw, &by_input, &[&sums, dy.as_slice()], summing);
            } else {
                by_input.group(w.ncols(), &rows[samples..]);
                event_products::weight_gradient(dw, &by_input, &[dy.as_slice()], summing);
            }
            sums
        }
    };
    (bias_and_input_gradients(w, dy, steps, db, input_grad), carry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::spike_input::{deviation_base, rows, spike_trains};

    /// Sparse spikes over `steps` steps of `samples` samples, where every fourth input fires at
    /// most steps and the next at every step (bases to deviate from).
    fn sparse_input(inputs: usize, steps: usize, samples: usize) -> DMatrix<f64> {
        DMatrix::from_fn(inputs, steps * samples, |i, c| match (i % 4, (i * 7 + c * 13) % 9) {
            (0, k) => f64::from(k != 3),
            (1, _) | (_, 0 | 4) => 1.0,
            _ => 0.0,
        })
    }

    /// `x` in each form the layer takes it: values, and deviations from its majority values.
    fn each_form(x: &DMatrix<f64>, samples: usize) -> [(SpikeRows<f64>, &'static str); 2] {
        let trains = spike_trains(x, samples).expect("spikes");
        let base = deviation_base(&trains).expect("the input has a base");
        let steps = x.ncols() / samples;
        [(SpikeRows::values(x), "values"), (rows(&trains, (0, steps), Some(&base)), "deviations")]
    }

    #[test]
    fn event_driven_dense_equals_the_matrix_products_in_either_form() {
        let (inputs, steps, samples) = (70, 5, 3);
        let x = sparse_input(inputs, steps, samples);
        // Output counts that take several tile widths.
        for units in [1, 10, 64, 150] {
            let w = DMatrix::from_fn(units, inputs, |o, i| ((o * 31 + i * 17) % 23) as f64 * 0.01 - 0.1);
            let b = DMatrix::from_fn(units, 1, |o, _| o as f64 * 0.001);
            let dy = DMatrix::from_fn(units, steps * samples, |o, c| ((o * 5 + c * 3) % 11) as f64 * 0.1 - 0.5);
            let (mut dw_ref, mut db_ref) =
                (DMatrix::from_element(units, inputs, 0.25), DMatrix::from_element(units, 1, 0.5));
            let dx_ref = dense_backward_by_step(&w, &x, &dy, steps, &mut dw_ref, Some(&mut db_ref), true);
            for (input, form) in each_form(&x, samples) {
                let y = dense_forward_events(&w, Some(&b), &input);
                assert!((&y - dense_forward(&w, Some(&b), &x)).amax() < 1e-12, "forward, {units} units, {form}");
                let (mut dw, mut db) =
                    (DMatrix::from_element(units, inputs, 0.25), DMatrix::from_element(units, 1, 0.5));
                let (dx, _) = dense_backward_events(&w, &input, &dy, steps, None, &mut dw, Some(&mut db), true);
                assert!((&dw - &dw_ref).amax() < 1e-12, "weight gradient added, {units} units, {form}");
                assert_eq!((&db, &dx), (&db_ref, &dx_ref), "bias and input gradients, {units} units, {form}");
            }
        }
    }

    #[test]
    fn event_driven_dense_in_segments_equals_it_whole_bit_for_bit() {
        let (inputs, units, steps, samples) = (40, 70, 6, 3);
        let x = sparse_input(inputs, steps, samples);
        let w = DMatrix::from_fn(units, inputs, |o, i| (o + i) as f64 * 0.01);
        let dy = DMatrix::from_fn(units, steps * samples, |o, c| ((o * 5 + c * 3) % 11) as f64 * 0.1 - 0.5);
        let part = |m: &DMatrix<f64>, first: usize, len: usize| m.columns(first * samples, len * samples).into_owned();
        let segments = [(0, 4), (4, 2)];
        let trains = spike_trains(&x, samples).expect("spikes");
        let base = deviation_base(&trains).expect("the input has a base");
        for deviations in [false, true] {
            // Every segment deviates from the base of the whole sequence.
            let taken = |(first, len): (usize, usize)| rows(&trains, (first, first + len), deviations.then_some(&base));
            let whole_rows = taken((0, steps));
            let y_whole = dense_forward_events(&w, None, &whole_rows);
            let mut dw_whole = DMatrix::zeros(units, inputs);
            dense_backward_events(&w, &whole_rows, &dy, steps, None, &mut dw_whole, None, false);
            let pieces: Vec<SpikeRows<f64>> = segments.iter().map(|&segment| taken(segment)).collect();
            for (&(first, len), input) in segments.iter().zip(&pieces) {
                let y = dense_forward_events(&w, None, input);
                assert_eq!(y, part(&y_whole, first, len), "forward, steps from {first}, deviations {deviations}");
            }
            // Backward from the last segment, carrying the sums over the later steps.
            let (mut dw, mut carried) = (DMatrix::zeros(units, inputs), None::<Vec<f64>>);
            for ((first, len), input) in segments.into_iter().zip(&pieces).rev() {
                let dy = part(&dy, first, len);
                let (_, sums) = dense_backward_events(&w, input, &dy, len, carried.as_deref(), &mut dw, None, false);
                carried = deviations.then_some(sums);
            }
            assert_eq!(dw, dw_whole, "weight gradient, deviations {deviations}");
        }
    }
}
