//! Forward pass with a tape, and back-propagation through time, for one sample.
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

use nalgebra::DMatrix;

use super::net::{Real, TrainNet};
pub use crate::data::events::Events;
use crate::spec::{Readout, Reset};
use crate::surrogate::{SpikeMode, heaviside};

/// What the forward pass keeps for the backward pass, reused from sample to sample.
#[derive(Debug, Clone)]
pub struct Tape<F> {
    /// Per layer, v'[n] for all steps (steps x outputs).
    v_pre: Vec<Vec<F>>,
    /// Per layer, the spikes emitted (for the readout with a mean-membrane readout: none).
    spikes: Vec<Events<F>>,
    pub scores: Vec<F>,
    state: Vec<F>,
    /// Backward scratch: gradient w.r.t. the spikes of the layer being processed, and of the
    /// layer below it.
    g_spikes: Vec<F>,
    g_below: Vec<F>,
    g_a: Vec<F>,
}

impl<F> Default for Tape<F> {
    fn default() -> Self {
        Tape {
            v_pre: Vec::new(),
            spikes: Vec::new(),
            scores: Vec::new(),
            state: Vec::new(),
            g_spikes: Vec::new(),
            g_below: Vec::new(),
            g_a: Vec::new(),
        }
    }
}

impl<F: Real> Tape<F> {
    /// Spikes emitted by layer `l` in this sample.
    pub fn spike_count(&self, l: usize) -> usize {
        self.spikes.get(l).map_or(0, |e| e.total())
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

fn fires<F: Real>(net: &TrainNet<F>, l: usize) -> bool {
    l + 1 < net.layers.len() || net.readout == Readout::SpikeCount
}

/// Runs the sample through the network, filling `tape` (and `tape.scores`).
pub fn forward<F: Real>(net: &TrainNet<F>, input: &Events<F>, tape: &mut Tape<F>) {
    let t_steps = net.steps;
    let n_layers = net.layers.len();
    tape.v_pre.resize(n_layers, Vec::new());
    tape.spikes.resize(n_layers, Events::default());
    tape.scores.clear();
    tape.scores.resize(net.classes(), F::zero());
    for (l, layer) in net.layers.iter().enumerate() {
        tape.v_pre[l].clear();
        tape.v_pre[l].resize(t_steps * layer.outputs(), F::zero());
        tape.spikes[l].clear();
    }
    let inv_t = F::one() / F::of(t_steps as f64);
    for (l, layer) in net.layers.iter().enumerate() {
        let n_out = layer.outputs();
        let state = &mut tape.state;
        state.clear();
        state.resize(n_out, layer.v_rest);
        let (lower, upper) = tape.spikes.split_at_mut(l);
        let emitted = &mut upper[0];
        for n in 0..t_steps {
            let (idx, val): (&[u32], &[F]) = if l == 0 {
                input.step(n)
            } else if n > 0 {
                lower[l - 1].step(n - 1)
            } else {
                (&[], &[])
            };
            for (&i, &x) in idx.iter().zip(val) {
                for (a, &w) in state.iter_mut().zip(column(&layer.weights, i as usize)) {
                    *a += x * w;
                }
            }
            let v_pre = &mut tape.v_pre[l][n * n_out..(n + 1) * n_out];
            for (j, (a, vp)) in state.iter_mut().zip(v_pre.iter_mut()).enumerate() {
                let v = layer.v_rest + (*a - layer.v_rest) * layer.decay;
                *vp = v;
                if !fires(net, l) {
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

/// Softmax cross-entropy of `scores` for class `label`: the loss and its gradient w.r.t. the
/// scores, scaled by `weight` (1 / batch size, so that summed gradients are batch means).
pub fn cross_entropy<F: Real>(scores: &[F], label: usize, weight: F, grad: &mut Vec<F>) -> f64 {
    let max = scores
        .iter()
        .copied()
        .fold(F::min_value().unwrap_or(F::zero()), |m, s| {
            if s > m { s } else { m }
        });
    let exp: Vec<F> = scores.iter().map(|&s| (s - max).exp()).collect();
    let sum = exp.iter().copied().fold(F::zero(), |a, b| a + b);
    grad.clear();
    grad.extend(
        exp.iter()
            .enumerate()
            .map(|(k, &e)| (e / sum - if k == label { F::one() } else { F::zero() }) * weight),
    );
    (sum.ln() - (scores[label] - max)).to_f64()
}

/// Adds this sample's weight gradients into `grads` (one matrix per layer), given the gradient
/// of the loss w.r.t. the scores. `forward` must have filled `tape` for the same input.
pub fn backward<F: Real>(
    net: &TrainNet<F>,
    input: &Events<F>,
    tape: &mut Tape<F>,
    g_scores: &[F],
    grads: &mut [DMatrix<F>],
) {
    let t_steps = net.steps;
    let n_layers = net.layers.len();
    let inv_t = F::one() / F::of(t_steps as f64);
    // g_spikes holds dL/ds for the current layer (steps x outputs), filled by the layer above.
    let Tape {
        v_pre,
        spikes,
        g_spikes,
        g_below,
        g_a,
        ..
    } = tape;
    for l in (0..n_layers).rev() {
        let layer = &net.layers[l];
        let n_out = layer.outputs();
        let n_in = layer.inputs();
        let fires = fires(net, l);
        if l + 1 == n_layers {
            g_spikes.clear();
            g_spikes.resize(t_steps * n_out, F::zero());
            if fires {
                // Spike-count scores: every step's spike adds to its class score.
                for n in 0..t_steps {
                    g_spikes[n * n_out..(n + 1) * n_out].copy_from_slice(g_scores);
                }
            }
        }
        g_below.clear();
        if l > 0 {
            g_below.resize(t_steps * n_in, F::zero());
        }
        g_a.clear();
        g_a.resize(n_out, F::zero());
        let reset_gap = layer.v_threshold - layer.v_reset;
        // Spikes of this layer at each step, as a dense lookup for the hard reset.
        let mut s_dense = vec![F::zero(); n_out];
        for n in (0..t_steps).rev() {
            let vp = &v_pre[l][n * n_out..(n + 1) * n_out];
            if fires && layer.reset == Reset::Hard {
                s_dense.iter_mut().for_each(|s| *s = F::zero());
                let (idx, val) = spikes[l].step(n);
                for (&j, &s) in idx.iter().zip(val) {
                    s_dense[j as usize] = s;
                }
            }
            for j in 0..n_out {
                // g_a holds dL/da[n+1] = dL/dv[n].
                let g_v = g_a[j];
                let g_vp = if fires {
                    let d = F::of(
                        net.surrogate
                            .derivative((vp[j] - layer.v_threshold).to_f64()),
                    );
                    let (direct, dv_ds) = match layer.reset {
                        Reset::Subtract => (F::one(), -reset_gap),
                        Reset::Hard => (F::one() - s_dense[j], layer.v_reset - vp[j]),
                    };
                    let through_reset = if net.detach_reset {
                        F::zero()
                    } else {
                        g_v * dv_ds
                    };
                    g_v * direct + d * (g_spikes[n * n_out + j] + through_reset)
                } else {
                    g_v + g_scores[j] * inv_t
                };
                g_a[j] = g_vp * layer.decay;
            }
            // The inputs that reached this layer at step n.
            let (idx, val): (&[u32], &[F]) = if l == 0 {
                input.step(n)
            } else if n > 0 {
                spikes[l - 1].step(n - 1)
            } else {
                (&[], &[])
            };
            let grad = &mut grads[l];
            for (&i, &x) in idx.iter().zip(val) {
                for (g, &ga) in column_mut(grad, i as usize).iter_mut().zip(g_a.iter()) {
                    *g += x * ga;
                }
            }
            if l > 0 && n > 0 {
                // dL/ds of every unit below (not only those that fired: the surrogate needs
                // the gradient of units that stayed silent too).
                let below = &mut g_below[(n - 1) * n_in..n * n_in];
                for (i, gb) in below.iter_mut().enumerate() {
                    *gb += column(&layer.weights, i)
                        .iter()
                        .zip(g_a.iter())
                        .fold(F::zero(), |acc, (&w, &ga)| acc + w * ga);
                }
            }
        }
        std::mem::swap(g_spikes, g_below);
    }
}
