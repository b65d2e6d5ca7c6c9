//! Forward pass with a tape, and back-propagation through time, for a chunk of samples at once.
//!
//! The forward pass is the engine's step schedule for a chain of LIF layers with instantaneous
//! synapses and no delay, so a trained network simulates to the same spikes. For layer l at
//! step n (layer 0 reads the input of step n; layer l > 0 reads the spikes layer l - 1 emitted
//! in step n - 1, which arrive one step later, as in the engine):
//!
//! ```text
//! a[n]   = v[n-1] + W x[n]                      only inputs that fired add their column of W
//! v'[n]  = v_rest + (a[n] - v_rest) P          integrate (P = exp(-dt / tau_mem))
//! s[n]   = H(v'[n] - theta)                     (smooth mode: S(v'[n] - theta))
//! v[n]   = v'[n] - s[n] (theta - v_reset)       subtract reset
//!        = v'[n] (1 - s[n]) + s[n] v_reset      hard reset
//! ```
//!
//! A mean-membrane readout integrates without firing and scores are (1/T) sum_n v'[n]; a
//! spike-count readout fires and scores are sum_n s[n]. The loss is softmax cross-entropy.
//!
//! Backward, per layer from the readout down, per step from the last:
//!
//! ```text
//! g_v'[n] = g_v[n] dv/dv' + S'(v'[n] - theta) (g_s[n] + g_v[n] dv/ds)    (dv/ds term dropped
//! g_a[n]  = P g_v'[n],   g_v[n-1] = g_a[n]                                 with detach_reset)
//! g_W    += g_a[n] x[n]^T        only the columns of inputs that fired
//! g_x[n] += W^T g_a[n]           the spikes' gradient for the layer below, at its step n - 1
//! ```
//!
//! Layers run one after the other over all steps of a chunk of samples. Without recurrent
//! projections the events reaching a layer are all known before it runs, so its currents W x[n]
//! for every (sample, step) are one product of event rows with W, and its weight gradient one
//! product of dL/da with the same rows ([`event_products`]); only the neurons' update walks
//! through time.
//!
//! A recurrent projection ([`super::net::Loop`], from layer f onto layer t <= f, delay d) adds
//! `W_rec s_f[n - 1 - d]` to `a_t[n]`, and backward `W_rec^T g_a_t[n]` to dL/ds_f[n - 1 - d].
//! The layers from the first loop target to the last loop source then walk through time
//! together, a step of every layer at a time, adding the columns of the spikes that arrive at
//! that step; the run's first layer still takes its known input in one product, and every
//! weight gradient is still one product over all steps once the backward walk is done.

use std::ops::Range;

use nalgebra::DMatrix;

use super::net::TrainNet;
pub use crate::data::events::Events;
use crate::nn::Real;
use crate::nn::event_products::{self, ByInput, ChangeState, Form, Row, Summing};
use crate::nn::gemm::{self, Gemm, View};
use crate::nn::real::dot;
use crate::spec::{Readout, Reset};
use crate::surrogate::SpikeMode;

/// What the forward pass keeps of one sample for the backward pass, reused across samples.
#[derive(Debug, Clone)]
pub struct Tape<F> {
    /// Per layer, v'[n] for all steps (steps x outputs).
    v_pre: Vec<Vec<F>>,
    /// Per layer, the spikes emitted (for a mean-membrane readout: none).
    spikes: Vec<Events<F>>,
    /// Per layer, the form its arriving events took (the same for every sample of a chunk),
    /// and in change form the changes.
    forms: Vec<Form>,
    changes: Vec<Events<F>>,
    pub scores: Vec<F>,
    /// Backward: dL/ds of the layer being processed and of the layer below (steps x units).
    g_spikes: Vec<F>,
    g_below: Vec<F>,
    /// Backward: per layer and step, the squared norm of dL/dv' (the gradient w.r.t. the
    /// membrane potential), for the gradient-decay figure.
    pub grad_v_sq: Vec<Vec<f64>>,
}

impl<F> Default for Tape<F> {
    fn default() -> Self {
        Tape {
            v_pre: Vec::new(),
            spikes: Vec::new(),
            forms: Vec::new(),
            changes: Vec::new(),
            scores: Vec::new(),
            g_spikes: Vec::new(),
            g_below: Vec::new(),
            grad_v_sq: Vec::new(),
        }
    }
}

impl<F: Real> Tape<F> {
    /// The form in which layer `l`'s arriving events were taken.
    pub fn form(&self, l: usize) -> Form {
        self.forms[l]
    }

    /// Spikes emitted by layer `l` in this sample.
    pub fn spike_count(&self, l: usize) -> usize {
        self.spikes.get(l).map_or(0, |e| e.total())
    }
}

/// The (step, neuron) of every spike layer `l` emitted in the sample on `tape`.
pub fn layer_spikes<F: Real>(tape: &Tape<F>, l: usize) -> Vec<(usize, u32)> {
    let events = &tape.spikes[l];
    (0..events.steps()).flat_map(|n| events.step(n).0.iter().map(move |&j| (n, j))).collect()
}

/// Scratch space of a chunk, kept across calls.
#[derive(Debug, Clone)]
pub struct Scratch<F> {
    /// Samples x steps x units: the currents of every step of a run's first layer.
    rows: Vec<F>,
    /// Per layer of a run, samples x steps x units: dL/da (backward).
    g_rows: Vec<Vec<F>>,
    /// Per layer of a run, steps x units: dL/ds of one sample (backward).
    g_spikes: Vec<Vec<F>>,
    /// Per layer of a run: membrane state between steps.
    states: Vec<Vec<F>>,
    /// A layer's input current at one step, inside a recurrent run.
    current: Vec<F>,
    by_input: ByInput<F>,
    changes: ChangeState<F>,
    spikes_now: Vec<F>,
    /// A row of zeros: dL/dv after the last step.
    zeros: Vec<F>,
    /// A row of surrogate derivatives.
    derivatives: Vec<F>,
}

impl<F> Default for Scratch<F> {
    fn default() -> Self {
        Scratch {
            rows: Vec::new(),
            g_rows: Vec::new(),
            g_spikes: Vec::new(),
            states: Vec::new(),
            current: Vec::new(),
            by_input: ByInput::default(),
            changes: ChangeState::default(),
            spikes_now: Vec::new(),
            zeros: Vec::new(),
            derivatives: Vec::new(),
        }
    }
}

fn fires<F: Real>(net: &TrainNet<F>, l: usize) -> bool {
    l + 1 < net.layers.len() || net.readout == Readout::SpikeCount
}

/// The events reaching layer `l` at step `n` of one sample: the input at step n for layer 0,
/// the spikes layer l - 1 emitted (`spikes[l - 1]`) at step n - 1 otherwise.
fn arriving<'a, F: Real>(input: &'a Events<F>, spikes: &'a [Events<F>], l: usize, n: usize) -> Row<'a, F> {
    if l == 0 {
        input.step(n)
    } else if n > 0 {
        spikes[l - 1].step(n - 1)
    } else {
        (&[], &[])
    }
}

/// Chooses the form of the events reaching layer `l` for a chunk of samples, recording it and
/// the changes on the tapes: the change form where it holds fewer events in total.
fn choose_form<F: Real>(
    inputs: &[&Events<F>],
    tapes: &mut [Tape<F>],
    l: usize,
    (n_in, steps): (usize, usize),
    state: &mut ChangeState<F>,
) {
    let (mut events, mut changes) = (0, 0);
    for (input, tape) in inputs.iter().zip(tapes.iter_mut()) {
        let Tape { spikes, changes: changed, .. } = tape;
        let rows: Vec<Row<F>> = (0..steps).map(|n| arriving(input, spikes, l, n)).collect();
        event_products::changes(&rows, n_in, state, &mut changed[l]);
        events += rows.iter().map(|r| r.0.len()).sum::<usize>();
        changes += changed[l].total();
    }
    let form = if changes < events { Form::Changes { steps } } else { Form::Values };
    tapes.iter_mut().for_each(|tape| tape.forms[l] = form);
}

/// The events reaching layer `l` in the form recorded on the tapes, a row per (sample, step),
/// samples outer.
fn layer_rows<'a, F: Real>(
    inputs: &[&'a Events<F>],
    tapes: &'a [Tape<F>],
    l: usize,
    steps: usize,
) -> (Form, Vec<Row<'a, F>>) {
    let form = tapes.first().map_or(Form::Values, |tape| tape.forms[l]);
    let rows = inputs
        .iter()
        .zip(tapes)
        .flat_map(|(input, tape)| {
            (0..steps).map(move |n| match form {
                Form::Values => arriving(input, &tape.spikes, l, n),
                Form::Changes { .. } => tape.changes[l].step(n),
            })
        })
        .collect();
    (form, rows)
}

/// Runs one sample through the network, filling `tape` (and `tape.scores`).
pub fn forward<F: Gemm>(net: &TrainNet<F>, input: &Events<F>, tape: &mut Tape<F>) {
    forward_batch(net, &[input], std::slice::from_mut(tape), &mut Scratch::default());
}

/// The runs of layers, input to readout: the recurrent span walks through time as one run, every
/// other layer is a run of its own. Forward takes them in order, backward in reverse.
fn runs<F: Real>(net: &TrainNet<F>) -> Vec<Range<usize>> {
    let span = net.recurrent_span();
    let mut runs = Vec::new();
    let mut first = 0;
    while first < net.layers.len() {
        let run = match &span {
            Some(span) if span.start == first => span.clone(),
            _ => first..first + 1,
        };
        first = run.end;
        runs.push(run);
    }
    runs
}

/// Adds `value` times column `j` of `weights` to `out`, for every event (j, value) of `row`.
fn add_columns<F: Real>(weights: &DMatrix<F>, (idx, val): Row<F>, out: &mut [F]) {
    let n = weights.nrows();
    let w = weights.as_slice();
    for (&j, &s) in idx.iter().zip(val) {
        for (o, &x) in out.iter_mut().zip(&w[j as usize * n..(j as usize + 1) * n]) {
            *o = x.fma(s, *o);
        }
    }
}

/// Adds `weights^T g` to `out`: the gradient a projection sends back to its source's spikes.
fn add_transposed<F: Real>(weights: &DMatrix<F>, g: &[F], out: &mut [F]) {
    let n = weights.nrows();
    for (o, column) in out.iter_mut().zip(weights.as_slice().chunks_exact(n)) {
        *o += dot(column, g);
    }
}

/// Runs samples through the network in lockstep, filling one tape per sample.
pub fn forward_batch<F: Gemm>(
    net: &TrainNet<F>,
    inputs: &[&Events<F>],
    tapes: &mut [Tape<F>],
    scratch: &mut Scratch<F>,
) {
    let t_steps = net.steps;
    let n_layers = net.layers.len();
    let samples = inputs.len();
    for tape in tapes.iter_mut() {
        tape.v_pre.resize(n_layers, Vec::new());
        tape.spikes.resize(n_layers, Events::default());
        tape.changes.resize(n_layers, Events::default());
        tape.forms.resize(n_layers, Form::Values);
        tape.scores.clear();
        tape.scores.resize(net.classes(), F::zero());
        for (l, layer) in net.layers.iter().enumerate() {
            // Every value is written below: resizing keeps old contents rather than zeroing.
            tape.v_pre[l].resize(t_steps * layer.outputs(), F::zero());
            tape.spikes[l].clear();
        }
    }
    let span = net.recurrent_span();
    for run in runs(net) {
        let first = run.start;
        let stepwise = Some(&run) == span.as_ref();
        let layer = &net.layers[first];
        let (n_in, n_out) = (layer.inputs(), layer.outputs());
        // Every event reaching the run's first layer is known before it runs (the input, or
        // the spikes of the layer below), so its currents of all steps come first.
        choose_form(inputs, tapes, first, (n_in, t_steps), &mut scratch.changes);
        let (form, arriving) = layer_rows(inputs, tapes, first, t_steps);
        scratch.rows.resize(samples * t_steps * n_out, F::zero());
        event_products::currents(&layer.weights, form, &arriving, &mut scratch.rows);
        let Scratch { rows, states, current, .. } = scratch;
        states.resize_with(run.len(), Vec::new);
        for (b, tape) in tapes.iter_mut().enumerate() {
            for (state, l) in states.iter_mut().zip(run.clone()) {
                state.clear();
                state.resize(net.layers[l].outputs(), net.layers[l].v_rest);
            }
            let sample_rows = &rows[b * t_steps * n_out..(b + 1) * t_steps * n_out];
            if !stepwise {
                for n in 0..t_steps {
                    integrate(net, first, &sample_rows[n * n_out..(n + 1) * n_out], &mut states[0], tape, n);
                }
                continue;
            }
            // Recurrent input arrives step by step: the run's layers walk through time together.
            for l in run.clone().skip(1) {
                tape.forms[l] = Form::Values;
            }
            for n in 0..t_steps {
                for l in run.clone() {
                    current.clear();
                    if l == first {
                        current.extend_from_slice(&sample_rows[n * n_out..(n + 1) * n_out]);
                    } else {
                        current.resize(net.layers[l].outputs(), F::zero());
                        add_columns(&net.layers[l].weights, arriving_spikes(&tape.spikes, l - 1, n, 0), current);
                    }
                    for lp in net.loops.iter().filter(|lp| lp.target == l) {
                        add_columns(&lp.weights, arriving_spikes(&tape.spikes, lp.source, n, lp.delay), current);
                    }
                    integrate(net, l, current, &mut states[l - first], tape, n);
                }
            }
        }
    }
}

/// The spikes `source` emitted that arrive at step `n` after `delay` more steps than the one
/// every projection takes.
fn arriving_spikes<F: Real>(spikes: &[Events<F>], source: usize, n: usize, delay: usize) -> Row<'_, F> {
    match n.checked_sub(1 + delay) {
        Some(emitted) => spikes[source].step(emitted),
        None => (&[], &[]),
    }
}

/// Step `n` of layer `l` for one sample: integrates `currents` into `state`, records v' on the
/// tape, fires, resets and adds to the scores.
#[inline]
fn integrate<F: Real>(net: &TrainNet<F>, l: usize, currents: &[F], state: &mut [F], tape: &mut Tape<F>, n: usize) {
    let layer = &net.layers[l];
    let n_out = layer.outputs();
    let is_last = l + 1 == net.layers.len();
    let v_pre = &mut tape.v_pre[l][n * n_out..(n + 1) * n_out];
    // The whole row at once, in loops the compiler vectorises.
    for ((vp, &a), &c) in v_pre.iter_mut().zip(state.iter()).zip(currents) {
        *vp = layer.v_rest + (a + c - layer.v_rest) * layer.decay;
    }
    let v_pre = &*v_pre;
    let emitted = &mut tape.spikes[l];
    if !fires(net, l) {
        state.copy_from_slice(v_pre);
        let inv_t = F::one() / F::of(net.steps as f64);
        for (score, &v) in tape.scores.iter_mut().zip(v_pre) {
            *score += v * inv_t;
        }
    } else if net.mode == SpikeMode::Surrogate {
        let threshold = layer.v_threshold;
        match layer.reset {
            Reset::Subtract => {
                let gap = layer.v_threshold - layer.v_reset;
                for (a, &v) in state.iter_mut().zip(v_pre) {
                    *a = if v >= threshold { v - gap } else { v };
                }
            }
            Reset::Hard => {
                for (a, &v) in state.iter_mut().zip(v_pre) {
                    *a = if v >= threshold { layer.v_reset } else { v };
                }
            }
        }
        for (j, &v) in v_pre.iter().enumerate() {
            if v >= threshold {
                emitted.push(j as u32, F::one());
                if is_last {
                    tape.scores[j] += F::one();
                }
            }
        }
    } else {
        for (j, (a, &v)) in state.iter_mut().zip(v_pre).enumerate() {
            let s = F::of(net.surrogate.primitive((v - layer.v_threshold).to_f64()));
            if s != F::zero() {
                emitted.push(j as u32, s);
            }
            *a = match layer.reset {
                Reset::Subtract => v - s * (layer.v_threshold - layer.v_reset),
                Reset::Hard => v * (F::one() - s) + s * layer.v_reset,
            };
            if is_last {
                tape.scores[j] += s;
            }
        }
    }
    emitted.end_step();
}

/// Writes one sample's weight gradients into `grads` (one matrix per parameter, of their
/// shapes), given the gradient of the loss w.r.t. its scores; `forward` must have filled
/// `tape` for the same input.
pub fn backward<F: Gemm>(
    net: &TrainNet<F>,
    input: &Events<F>,
    tape: &mut Tape<F>,
    g_scores: &[F],
    grads: &mut [DMatrix<F>],
) {
    backward_batch(net, &[input], std::slice::from_mut(tape), &[g_scores], grads, &mut Scratch::default());
}

/// Writes the weight gradients of samples run through [`forward_batch`], summed, into `grads`
/// (the layers' feed-forward weights, then the loops').
pub fn backward_batch<F: Gemm>(
    net: &TrainNet<F>,
    inputs: &[&Events<F>],
    tapes: &mut [Tape<F>],
    g_scores: &[&[F]],
    grads: &mut [DMatrix<F>],
    scratch: &mut Scratch<F>,
) {
    let t_steps = net.steps;
    let n_layers = net.layers.len();
    let samples = inputs.len();
    for run in runs(net).into_iter().rev() {
        let (first, top) = (run.start, run.end - 1);
        let n_in = net.layers[first].inputs();
        for (tape, g) in tapes.iter_mut().zip(g_scores) {
            if top + 1 == n_layers {
                let n_out = net.layers[top].outputs();
                tape.g_spikes.clear();
                tape.g_spikes.resize(t_steps * n_out, F::zero());
                if fires(net, top) {
                    // Spike-count scores: every step's spike adds to its class score.
                    for n in 0..t_steps {
                        tape.g_spikes[n * n_out..(n + 1) * n_out].copy_from_slice(g);
                    }
                }
            }
            if first > 0 {
                // Steps 0..T-1 are written below; spikes of the last step reach nothing.
                tape.g_below.resize(t_steps * n_in, F::zero());
                tape.g_below[(t_steps - 1) * n_in..].fill(F::zero());
            } else {
                tape.g_below.clear();
            }
        }
        // g_rows[l - first]: samples x steps x outputs, dL/da[n]; walking back in time, dL/dv[n]
        // is the row of step n + 1.
        let Scratch { rows, g_rows, g_spikes, zeros, derivatives, spikes_now, .. } = scratch;
        g_rows.resize_with(run.len(), Vec::new);
        g_spikes.resize_with(run.len(), Vec::new);
        // The first layer's dL/da takes the forward currents' buffer, still in cache.
        std::mem::swap(rows, &mut g_rows[0]);
        let widest = run.clone().map(|l| net.layers[l].outputs()).max().unwrap_or(0);
        zeros.clear();
        zeros.resize(widest, F::zero());
        for l in run.clone() {
            g_rows[l - first].resize(samples * t_steps * net.layers[l].outputs(), F::zero());
        }
        for (b, tape) in tapes.iter_mut().enumerate() {
            tape.grad_v_sq.resize(n_layers, Vec::new());
            // dL/ds of the run's layers: the top's came from above, the others' from within.
            for l in run.clone() {
                tape.grad_v_sq[l].clear();
                tape.grad_v_sq[l].resize(t_steps, 0.0);
                g_spikes[l - first].clear();
                g_spikes[l - first].resize(t_steps * net.layers[l].outputs(), F::zero());
            }
            std::mem::swap(&mut g_spikes[top - first], &mut tape.g_spikes);
            for n in (0..t_steps).rev() {
                for l in run.clone() {
                    let layer = &net.layers[l];
                    let n_out = layer.outputs();
                    let rows = &mut g_rows[l - first][b * t_steps * n_out..(b + 1) * t_steps * n_out];
                    let (now, later) = rows[n * n_out..].split_at_mut(n_out);
                    // dL/dv[n] = dL/da[n + 1]; nothing after the last step.
                    let g_v_next: &[F] = if n + 1 < t_steps { &later[..n_out] } else { &zeros[..n_out] };
                    let step = Step {
                        v_pre: &tape.v_pre[l][n * n_out..(n + 1) * n_out],
                        g_s: &g_spikes[l - first][n * n_out..(n + 1) * n_out],
                        g_v_next,
                        g_score: g_scores[b],
                        spikes: tape.spikes[l].step(n),
                    };
                    back_step(net, l, &step, derivatives, spikes_now, now);
                    // `now` holds dL/dv'[n]: its norm is the figure's, then dL/da[n] = P dL/dv'[n].
                    tape.grad_v_sq[l][n] = dot(now, now).to_f64();
                    now.iter_mut().for_each(|g| *g *= layer.decay);
                }
                // Within the run, the gradient dL/da[n] sends back to the spikes it came from:
                // the layer below's at n - 1, a loop's source's at n - 1 - delay.
                for l in run.clone().skip(1) {
                    let (n_out, n_below) = (net.layers[l].outputs(), net.layers[l - 1].outputs());
                    if n > 0 {
                        let g_a = &g_rows[l - first][(b * t_steps + n) * n_out..(b * t_steps + n + 1) * n_out];
                        let below = &mut g_spikes[l - 1 - first][(n - 1) * n_below..n * n_below];
                        add_transposed(&net.layers[l].weights, g_a, below);
                    }
                }
                for lp in net.loops.iter().filter(|lp| run.contains(&lp.target)) {
                    if let Some(emitted) = n.checked_sub(1 + lp.delay) {
                        let (n_out, n_source) = (net.layers[lp.target].outputs(), net.layers[lp.source].outputs());
                        let g_a = &g_rows[lp.target - first][(b * t_steps + n) * n_out..(b * t_steps + n + 1) * n_out];
                        let source = &mut g_spikes[lp.source - first][emitted * n_source..(emitted + 1) * n_source];
                        add_transposed(&lp.weights, g_a, source);
                    }
                }
            }
            std::mem::swap(&mut g_spikes[top - first], &mut tape.g_spikes);
        }
        // Weight gradients: only the columns of inputs that reached the layer.
        for l in run.clone() {
            let (form, arriving) = layer_rows(inputs, tapes, l, t_steps);
            scratch.by_input.group(net.layers[l].inputs(), &arriving);
            event_products::weight_gradient(
                &mut grads[l],
                form,
                &scratch.by_input,
                &scratch.g_rows[l - first],
                Summing::Write,
            );
        }
        for (k, lp) in net.loops.iter().enumerate().filter(|(_, lp)| run.contains(&lp.target)) {
            let arriving: Vec<Row<F>> = tapes
                .iter()
                .flat_map(|tape| (0..t_steps).map(move |n| arriving_spikes(&tape.spikes, lp.source, n, lp.delay)))
                .collect();
            scratch.by_input.group(lp.weights.ncols(), &arriving);
            let grad = &mut grads[n_layers + k];
            event_products::weight_gradient(
                grad,
                Form::Values,
                &scratch.by_input,
                &scratch.g_rows[lp.target - first],
                Summing::Write,
            );
            lp.mask(grad);
        }
        if first > 0 {
            // dL/ds of every unit below (silent ones too: the surrogate needs them): spikes of
            // step n - 1 arrive at step n, so rows 1.. of dL/da give steps ..T - 1 below, and
            // spikes of the last step reach nothing. Column-major: g_below is n_in x steps.
            let layer = &net.layers[first];
            let n_out = layer.outputs();
            let weights_t = View::new(layer.weights.as_slice(), n_out, n_in).t();
            for (b, tape) in tapes.iter_mut().enumerate() {
                let g_a = View::new(
                    &scratch.g_rows[0][(b * t_steps + 1) * n_out..(b + 1) * t_steps * n_out],
                    n_out,
                    t_steps - 1,
                );
                gemm::matmul(&mut tape.g_below[..(t_steps - 1) * n_in], weights_t, g_a, F::zero());
            }
        }
        for tape in tapes.iter_mut() {
            std::mem::swap(&mut tape.g_spikes, &mut tape.g_below);
        }
        std::mem::swap(&mut scratch.rows, &mut scratch.g_rows[0]);
    }
}

/// What one backward step of one layer reads.
struct Step<'a, F> {
    v_pre: &'a [F],
    /// dL/ds[n], dL/dv[n] and the scores' gradient.
    g_s: &'a [F],
    g_v_next: &'a [F],
    g_score: &'a [F],
    /// The spikes layer emitted at step n.
    spikes: Row<'a, F>,
}

/// dL/dv'[n] of layer `l` into `now`, from dL/ds[n] and dL/dv[n].
#[inline]
fn back_step<F: Gemm>(
    net: &TrainNet<F>,
    l: usize,
    step: &Step<F>,
    derivatives: &mut Vec<F>,
    spikes_now: &mut Vec<F>,
    now: &mut [F],
) {
    let layer = &net.layers[l];
    let Step { v_pre: vp, g_s, g_v_next, g_score, .. } = *step;
    if !fires(net, l) {
        let inv_t = F::one() / F::of(net.steps as f64);
        for ((g, &g_v), &g_score) in now.iter_mut().zip(g_v_next).zip(g_score) {
            *g = g_v + g_score * inv_t;
        }
        return;
    }
    // Sized once: after the first step of a layer this only writes.
    derivatives.resize(vp.len(), F::zero());
    for (d, &v) in derivatives.iter_mut().zip(vp) {
        *d = v - layer.v_threshold;
    }
    F::surrogate_derivatives(&net.derivative, derivatives);
    let reset_gap = layer.v_threshold - layer.v_reset;
    match (layer.reset, net.detach_reset) {
        (Reset::Subtract, true) => {
            for (j, g) in now.iter_mut().enumerate() {
                *g = g_v_next[j] + derivatives[j] * g_s[j];
            }
        }
        (Reset::Subtract, false) => {
            for (j, g) in now.iter_mut().enumerate() {
                *g = g_v_next[j] + derivatives[j] * (g_s[j] - g_v_next[j] * reset_gap);
            }
        }
        (Reset::Hard, detach) => {
            spikes_now.clear();
            spikes_now.resize(now.len(), F::zero());
            let (idx, val) = step.spikes;
            for (&j, &s) in idx.iter().zip(val) {
                spikes_now[j as usize] = s;
            }
            for (j, g) in now.iter_mut().enumerate() {
                let g_v = g_v_next[j];
                let through_reset = if detach { F::zero() } else { g_v * (layer.v_reset - vp[j]) };
                *g = g_v * (F::one() - spikes_now[j]) + derivatives[j] * (g_s[j] + through_reset);
            }
        }
    }
}
