//! Forward pass with a tape, and back-propagation through time, for a few samples in lockstep.
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
//! The samples of a batch chunk run in lockstep, one step at a time: the active inputs of all of
//! them are grouped by input index, so each column of W (and of its gradient) is loaded once per
//! step for the whole chunk rather than once per sample. The weight matrices are larger than
//! the caches; this is what keeps the event-driven passes from waiting on memory.

use nalgebra::DMatrix;

use super::net::{Real, TrainNet};
pub use crate::data::events::Events;
use crate::spec::{Readout, Reset};
use crate::surrogate::{SpikeMode, heaviside};

/// What the forward pass keeps of one sample for the backward pass, reused across samples.
#[derive(Debug, Clone)]
pub struct Tape<F> {
    /// Per layer, v'[n] for all steps (steps x outputs).
    v_pre: Vec<Vec<F>>,
    /// Per layer, the spikes emitted (for a mean-membrane readout: none).
    spikes: Vec<Events<F>>,
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
            scores: Vec::new(),
            g_spikes: Vec::new(),
            g_below: Vec::new(),
            grad_v_sq: Vec::new(),
        }
    }
}

impl<F: Real> Tape<F> {
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

/// Scratch space of a chunk: the inputs of one step grouped by input index, and per-sample
/// state and gradient rows.
#[derive(Debug, Clone)]
pub struct Scratch<F> {
    starts: Vec<usize>,
    entries: Vec<(u32, F)>,
    fill: Vec<usize>,
    /// Samples x units: membrane state (forward) or dL/da (backward).
    rows: Vec<F>,
    spikes_now: Vec<F>,
}

impl<F> Default for Scratch<F> {
    fn default() -> Self {
        Scratch { starts: Vec::new(), entries: Vec::new(), fill: Vec::new(), rows: Vec::new(), spikes_now: Vec::new() }
    }
}

impl<F: Real> Scratch<F> {
    /// Groups by input index the (index, value) events of `samples` samples: afterwards input
    /// `i` has the (sample, value) pairs `entries[starts[i]..starts[i + 1]]`, samples ascending.
    fn group<'e>(&mut self, n_in: usize, samples: usize, events: impl Fn(usize) -> (&'e [u32], &'e [F])) {
        self.starts.clear();
        self.starts.resize(n_in + 1, 0);
        for b in 0..samples {
            for &i in events(b).0 {
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
        for b in 0..samples {
            let (idx, val) = events(b);
            for (&i, &x) in idx.iter().zip(val) {
                let slot = &mut self.fill[i as usize];
                self.entries[*slot] = (b as u32, x);
                *slot += 1;
            }
        }
    }
}

/// Column `i` of a column-major matrix as a slice: the weights leaving input `i`. (nalgebra's
/// column views iterate with a stride the compiler does not vectorise.)
fn column<F: Real>(m: &DMatrix<F>, i: usize) -> &[F] {
    let rows = m.nrows();
    &m.as_slice()[i * rows..(i + 1) * rows]
}

fn column_mut<F: Real>(m: &mut DMatrix<F>, i: usize) -> &mut [F] {
    let rows = m.nrows();
    &mut m.as_mut_slice()[i * rows..(i + 1) * rows]
}

/// Values per block in the column kernels: two AVX registers of f32.
const BLOCK: usize = 16;

/// Forward kernel: `rows[b] += x * col` for every (sample b, value x) of `group`; the column
/// stays in L1 across the samples.
fn add_column<F: Real>(col: &[F], group: &[(u32, F)], rows: &mut [F], n_out: usize) {
    for &(b, x) in group {
        let row = &mut rows[b as usize * n_out..(b as usize + 1) * n_out];
        for (a, &w) in row.iter_mut().zip(col) {
            *a = x.fma(w, *a);
        }
    }
}

/// Backward kernel: `col += sum over group of x * rows[b]`, a block at a time, the block's sum
/// held in registers across the samples and stored once.
fn accumulate_column<F: Real>(col: &mut [F], group: &[(u32, F)], rows: &[F], n_out: usize) {
    let mut blocks = col.chunks_exact_mut(BLOCK);
    for (k, block) in (&mut blocks).enumerate() {
        let mut acc: [F; BLOCK] = (&*block).try_into().expect("exact chunk");
        let start = k * BLOCK;
        for &(b, x) in group {
            let g: &[F; BLOCK] =
                rows[b as usize * n_out + start..b as usize * n_out + start + BLOCK].try_into().expect("block");
            for (a, &g) in acc.iter_mut().zip(g) {
                *a = x.fma(g, *a);
            }
        }
        block.copy_from_slice(&acc);
    }
    let tail = blocks.into_remainder();
    let start = n_out - tail.len();
    for &(b, x) in group {
        for (c, &g) in tail.iter_mut().zip(&rows[b as usize * n_out + start..(b as usize + 1) * n_out]) {
            *c = x.fma(g, *c);
        }
    }
}

fn fires<F: Real>(net: &TrainNet<F>, l: usize) -> bool {
    l + 1 < net.layers.len() || net.readout == Readout::SpikeCount
}

/// The events reaching layer `l` at step `n` of one sample: the input at step n for layer 0,
/// the spikes layer l - 1 emitted at step n - 1 otherwise.
fn arriving<'a, F: Real>(input: &'a Events<F>, tape: &'a Tape<F>, l: usize, n: usize) -> (&'a [u32], &'a [F]) {
    if l == 0 {
        input.step(n)
    } else if n > 0 {
        tape.spikes[l - 1].step(n - 1)
    } else {
        (&[], &[])
    }
}

/// Runs one sample through the network, filling `tape` (and `tape.scores`).
pub fn forward<F: Real>(net: &TrainNet<F>, input: &Events<F>, tape: &mut Tape<F>) {
    forward_batch(net, &[input], std::slice::from_mut(tape), &mut Scratch::default());
}

/// Runs samples through the network in lockstep, filling one tape per sample.
pub fn forward_batch<F: Real>(
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
        tape.scores.clear();
        tape.scores.resize(net.classes(), F::zero());
        for (l, layer) in net.layers.iter().enumerate() {
            tape.v_pre[l].clear();
            tape.v_pre[l].resize(t_steps * layer.outputs(), F::zero());
            tape.spikes[l].clear();
        }
    }
    let inv_t = F::one() / F::of(t_steps as f64);
    for (l, layer) in net.layers.iter().enumerate() {
        let (n_in, n_out) = (layer.inputs(), layer.outputs());
        let fires = fires(net, l);
        scratch.rows.clear();
        scratch.rows.resize(samples * n_out, layer.v_rest);
        for n in 0..t_steps {
            scratch.group(n_in, samples, |b| arriving(inputs[b], &tapes[b], l, n));
            let Scratch { starts, entries, rows, .. } = &mut *scratch;
            for i in 0..n_in {
                let group = &entries[starts[i]..starts[i + 1]];
                if group.is_empty() {
                    continue;
                }
                add_column(column(&layer.weights, i), group, rows, n_out);
            }
            for (b, tape) in tapes.iter_mut().enumerate() {
                let state = &mut rows[b * n_out..(b + 1) * n_out];
                let v_pre = &mut tape.v_pre[l][n * n_out..(n + 1) * n_out];
                let emitted = &mut tape.spikes[l];
                for (j, (a, vp)) in state.iter_mut().zip(v_pre.iter_mut()).enumerate() {
                    let v = layer.v_rest + (*a - layer.v_rest) * layer.decay;
                    *vp = v;
                    if !fires {
                        *a = v;
                        tape.scores[j] += v * inv_t;
                        continue;
                    }
                    let x = (v - layer.v_threshold).to_f64();
                    let s = F::of(match net.mode {
                        SpikeMode::Surrogate => heaviside(x),
                        SpikeMode::Smooth => net.surrogate.primitive(x),
                    });
                    if s != F::zero() {
                        emitted.push(j as u32, s);
                    }
                    *a = match layer.reset {
                        Reset::Subtract => v - s * (layer.v_threshold - layer.v_reset),
                        Reset::Hard => v * (F::one() - s) + s * layer.v_reset,
                    };
                    if l + 1 == n_layers {
                        tape.scores[j] += s;
                    }
                }
                emitted.end_step();
            }
        }
    }
}

/// Softmax cross-entropy of `scores` for class `label`: the loss and its gradient w.r.t. the
/// scores, scaled by `weight` (1 / batch size, so that summed gradients are batch means).
pub fn cross_entropy<F: Real>(scores: &[F], label: usize, weight: F, grad: &mut Vec<F>) -> f64 {
    let max = scores.iter().copied().fold(F::min_value().unwrap_or(F::zero()), |m, s| if s > m { s } else { m });
    let exp: Vec<F> = scores.iter().map(|&s| (s - max).exp()).collect();
    let sum = exp.iter().copied().fold(F::zero(), |a, b| a + b);
    grad.clear();
    grad.extend(
        exp.iter().enumerate().map(|(k, &e)| (e / sum - if k == label { F::one() } else { F::zero() }) * weight),
    );
    (sum.ln() - (scores[label] - max)).to_f64()
}

/// Adds one sample's weight gradients into `grads` (one matrix per layer), given the gradient
/// of the loss w.r.t. its scores; `forward` must have filled `tape` for the same input.
pub fn backward<F: Real>(
    net: &TrainNet<F>,
    input: &Events<F>,
    tape: &mut Tape<F>,
    g_scores: &[F],
    grads: &mut [DMatrix<F>],
) {
    backward_batch(net, &[input], std::slice::from_mut(tape), &[g_scores], grads, &mut Scratch::default());
}

/// Adds the weight gradients of samples run through [`forward_batch`] into `grads`.
pub fn backward_batch<F: Real>(
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
    let inv_t = F::one() / F::of(t_steps as f64);
    for l in (0..n_layers).rev() {
        let layer = &net.layers[l];
        let (n_in, n_out) = (layer.inputs(), layer.outputs());
        let fires = fires(net, l);
        for (tape, g) in tapes.iter_mut().zip(g_scores) {
            if l + 1 == n_layers {
                tape.g_spikes.clear();
                tape.g_spikes.resize(t_steps * n_out, F::zero());
                if fires {
                    // Spike-count scores: every step's spike adds to its class score.
                    for n in 0..t_steps {
                        tape.g_spikes[n * n_out..(n + 1) * n_out].copy_from_slice(g);
                    }
                }
            }
            tape.g_below.clear();
            if l > 0 {
                tape.g_below.resize(t_steps * n_in, F::zero());
            }
        }
        // rows: samples x outputs, holding dL/da[n+1] = dL/dv[n] while walking back in time.
        scratch.rows.clear();
        scratch.rows.resize(samples * n_out, F::zero());
        let reset_gap = layer.v_threshold - layer.v_reset;
        for tape in tapes.iter_mut() {
            tape.grad_v_sq.resize(n_layers, Vec::new());
            tape.grad_v_sq[l].clear();
            tape.grad_v_sq[l].resize(t_steps, 0.0);
        }
        for n in (0..t_steps).rev() {
            for (b, tape) in tapes.iter_mut().enumerate() {
                let mut norm_sq = 0.0;
                let g_a = &mut scratch.rows[b * n_out..(b + 1) * n_out];
                let vp = &tape.v_pre[l][n * n_out..(n + 1) * n_out];
                if fires && layer.reset == Reset::Hard {
                    scratch.spikes_now.clear();
                    scratch.spikes_now.resize(n_out, F::zero());
                    let (idx, val) = tape.spikes[l].step(n);
                    for (&j, &s) in idx.iter().zip(val) {
                        scratch.spikes_now[j as usize] = s;
                    }
                }
                for j in 0..n_out {
                    let g_v = g_a[j];
                    let g_vp = if fires {
                        let d = F::of(net.derivative.derivative((vp[j] - layer.v_threshold).to_f64()));
                        let (direct, dv_ds) = match layer.reset {
                            Reset::Subtract => (F::one(), -reset_gap),
                            Reset::Hard => (F::one() - scratch.spikes_now[j], layer.v_reset - vp[j]),
                        };
                        let through_reset = if net.detach_reset { F::zero() } else { g_v * dv_ds };
                        g_v * direct + d * (tape.g_spikes[n * n_out + j] + through_reset)
                    } else {
                        g_v + g_scores[b][j] * inv_t
                    };
                    g_a[j] = g_vp * layer.decay;
                    norm_sq += g_vp.to_f64() * g_vp.to_f64();
                }
                tape.grad_v_sq[l][n] = norm_sq;
            }
            // Weight gradient: only the columns of inputs that reached the layer at step n.
            scratch.group(n_in, samples, |b| arriving(inputs[b], &tapes[b], l, n));
            let Scratch { starts, entries, rows, .. } = &*scratch;
            let grad = &mut grads[l];
            for i in 0..n_in {
                let group = &entries[starts[i]..starts[i + 1]];
                if group.is_empty() {
                    continue;
                }
                accumulate_column(column_mut(grad, i), group, rows, n_out);
            }
            if l > 0 && n > 0 {
                // dL/ds of every unit below (silent ones too: the surrogate needs them).
                for i in 0..n_in {
                    let col = column(&layer.weights, i);
                    for (b, tape) in tapes.iter_mut().enumerate() {
                        let g_a = &rows[b * n_out..(b + 1) * n_out];
                        let dot = col.iter().zip(g_a).fold(F::zero(), |acc, (&w, &ga)| w.fma(ga, acc));
                        tape.g_below[(n - 1) * n_in + i] += dot;
                    }
                }
            }
        }
        for tape in tapes.iter_mut() {
            std::mem::swap(&mut tape.g_spikes, &mut tape.g_below);
        }
    }
}
