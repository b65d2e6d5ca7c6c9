//! Stateful spiking layers of a layer stack: `Lif`, `CubaLif` and `Li`, run over the training
//! section's T steps ("multi-step" layers, as SpikingJelly calls them: the whole sequence of a
//! layer at once, layer after layer, which a feed-forward stack allows).
//!
//! A batch over time is a `features x (T B)` matrix whose column `t B + b` is sample b at step
//! t, so each step is one contiguous block and stateless layers (Dense, Conv2d, pooling, batch
//! norm) apply to every step by treating the columns as a batch of T B samples.
//!
//! Per element and step, in this order (snnTorch's `Leaky` / `Synaptic`, Norse's LIF):
//!
//! ```text
//! CubaLif only:  i[t]  = alpha i[t-1] + x[t]                synaptic current, input of the membrane
//!                v'[t] = beta v[t-1] + x[t]   (CubaLif: + i[t] instead of x[t])
//! Lif, CubaLif:  s[t]  = H(v'[t] - theta)                  output (smooth mode: S(v'[t] - theta))
//!                v[t]  = v'[t] - theta s[t]                reset Subtract
//!                      = v'[t] (1 - s[t])                  reset Zero
//! Li:            v[t]  = v'[t], output v'[t]               leaky integrator, no spikes
//! ```
//!
//! with v[-1] = i[-1] = 0, beta = exp(-dt / tau_mem), alpha = exp(-dt / tau_syn). With
//! `detach_reset` the reset passes no gradient (dv/ds = 0), as snnTorch's and SpikingJelly's
//! option of that name.
//!
//! Learnable time constants (SpikingJelly's PLIF, Fang et al. 2021) keep each decay as the
//! logit of a sigmoid, beta = sigmoid(w), so every update leaves it in (0, 1); one w per layer
//! or one per channel (per feature of a vector). Fixed decays are stored the same way and
//! simply not trained.
//!
//! Backward, from the last step down, with g_v the gradient reaching v[t] from step t + 1:
//!
//! ```text
//! g_s    = dL/dy[t] + g_v dv/ds                        (Li: no spike; detach_reset: no g_v term)
//! g_v'   = g_v dv/dv' + g_s S'(v'[t] - theta)          (Li: dL/dy[t] + g_v)
//! g_i    = g_v' + alpha g_i(t+1)                       (CubaLif)
//! g_x[t] = g_i (CubaLif), g_v' (otherwise)
//! g_beta += g_v' v[t-1],  g_alpha += g_i i[t-1],  g_v = beta g_v'
//! ```

use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::spec::{Learnable, Shape, SpikeReset};
use crate::surrogate::{DerivativeTable, Surrogate};
use crate::train::net::Real;

/// Elements (of one step) per unit of parallel work: fixed, so sums over elements come out the
/// same for any number of threads.
const ELEMENTS: usize = 4096;

/// Which neuron a layer holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Lif,
    CubaLif,
    /// Leaky integrator: the membrane is the output.
    Li,
}

/// A decay factor (beta or alpha) as sigmoid(logit), one per layer or one per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Decay<F> {
    /// 1 x 1 or channels x 1.
    pub logit: DMatrix<F>,
    pub learnable: bool,
}

impl<F: Real> Decay<F> {
    /// exp(-dt / tau), for `channels` channels when learnt per channel.
    pub fn new(tau_ms: f64, dt_ms: f64, learn: Learnable, channels: usize) -> Self {
        let beta = (-dt_ms / tau_ms).exp();
        let logit = F::of((beta / (1.0 - beta)).ln());
        let rows = if learn == Learnable::PerChannel { channels } else { 1 };
        Decay { logit: DMatrix::from_element(rows, 1, logit), learnable: learn != Learnable::Fixed }
    }

    /// The factor of every channel.
    fn factors(&self, channels: usize) -> Vec<F> {
        let of = |w: F| F::one() / (F::one() + (-w).exp());
        if self.logit.nrows() == 1 {
            vec![of(self.logit[0]); channels]
        } else {
            self.logit.iter().map(|&w| of(w)).collect()
        }
    }

    /// dL/dlogit from dL/dfactor per channel: sums channels sharing one logit, times the
    /// sigmoid's derivative.
    fn logit_gradient(&self, per_channel: &[f64], factors: &[F]) -> DMatrix<F> {
        let d = |g: f64, b: F| F::of(g * b.to_f64() * (1.0 - b.to_f64()));
        if self.logit.nrows() == 1 {
            DMatrix::from_element(1, 1, d(per_channel.iter().sum(), factors[0]))
        } else {
            DMatrix::from_iterator(factors.len(), 1, per_channel.iter().zip(factors).map(|(&g, &b)| d(g, b)))
        }
    }
}

/// A spiking layer: its neuron, decays and spike settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Spiking<F> {
    pub kind: Kind,
    pub beta: Decay<F>,
    /// CubaLif's synaptic decay.
    pub alpha: Option<Decay<F>>,
    pub threshold: F,
    pub reset: SpikeReset,
    pub detach_reset: bool,
    pub surrogate: Surrogate,
    pub derivative: DerivativeTable,
    /// The layer's input (and output) shape: channels and positions per channel.
    pub shape: Shape,
}

/// What the forward pass keeps for the backward pass: v'[t] for every step, and CubaLif's i[t].
#[derive(Debug, Clone)]
pub struct SpikingTape<F> {
    pub v_pre: Vec<F>,
    pub current: Vec<F>,
}

impl<F: Real> Spiking<F> {
    pub fn fires(&self) -> bool {
        self.kind != Kind::Li
    }

    fn channel_of(&self, element: usize) -> usize {
        let features = self.shape.size();
        (element % features) / self.shape.positions()
    }

    /// The output for v' (`smooth`: S(v' - theta) instead of H).
    fn spike(&self, v: F, smooth: bool) -> F {
        let x = v - self.threshold;
        if smooth {
            F::of(self.surrogate.primitive(x.to_f64()))
        } else if x >= F::zero() {
            F::one()
        } else {
            F::zero()
        }
    }

    /// The membrane after the reset, given v' and the spike.
    fn after_reset(&self, v: F, s: F) -> F {
        match self.kind {
            Kind::Li => v,
            _ => match self.reset {
                SpikeReset::Subtract => v - self.threshold * s,
                SpikeReset::Zero => v * (F::one() - s),
            },
        }
    }

    /// Runs `x` (`features x (steps B)`) through time; returns the output and the tape.
    pub fn forward(&self, x: &DMatrix<F>, steps: usize, smooth: bool) -> (DMatrix<F>, SpikingTape<F>) {
        let block = x.len() / steps;
        let channels = self.shape.channels();
        let beta = self.beta.factors(channels);
        let alpha = self.alpha.as_ref().map(|a| a.factors(channels));
        let mut y = DMatrix::zeros(x.nrows(), x.ncols());
        let mut tape = SpikingTape {
            v_pre: vec![F::zero(); x.len()],
            current: vec![F::zero(); if alpha.is_some() { x.len() } else { 0 }],
        };
        let y_pieces = pieces(y.as_mut_slice(), block);
        let v_pieces = pieces(&mut tape.v_pre, block);
        let mut i_pieces = pieces(&mut tape.current, block);
        i_pieces.resize_with(y_pieces.len(), Vec::new);
        // Each piece of elements walks all steps; pieces are independent.
        y_pieces.into_par_iter().zip(v_pieces).zip(i_pieces).enumerate().for_each(|(p, ((mut ys, mut vs), mut is))| {
            let first = p * ELEMENTS;
            let len = ys.first().map_or(0, |s| s.len());
            let mut v = vec![F::zero(); len];
            let mut i = vec![F::zero(); len];
            for t in 0..steps {
                let input = &x.as_slice()[t * block + first..t * block + first + len];
                for k in 0..len {
                    let c = self.channel_of(first + k);
                    let drive = match &alpha {
                        Some(a) => {
                            i[k] = a[c] * i[k] + input[k];
                            is[t][k] = i[k];
                            i[k]
                        }
                        None => input[k],
                    };
                    let vp = beta[c] * v[k] + drive;
                    let out = if self.fires() { self.spike(vp, smooth) } else { vp };
                    v[k] = self.after_reset(vp, out);
                    vs[t][k] = vp;
                    ys[t][k] = out;
                }
            }
        });
        (y, tape)
    }

    /// Gradients: dL/dx, and dL/dlogit of each learnable decay (beta first, then alpha), given
    /// dL/dy and the tape of a forward pass with the same `smooth`.
    pub fn backward(
        &self,
        tape: &SpikingTape<F>,
        dy: &DMatrix<F>,
        steps: usize,
        smooth: bool,
    ) -> (DMatrix<F>, Vec<DMatrix<F>>) {
        let block = dy.len() / steps;
        let channels = self.shape.channels();
        let beta = self.beta.factors(channels);
        let alpha = self.alpha.as_ref().map(|a| a.factors(channels));
        let learn = self.beta.learnable || self.alpha.as_ref().is_some_and(|a| a.learnable);
        let mut dx = DMatrix::zeros(dy.nrows(), dy.ncols());
        // Per piece: dL/dbeta and dL/dalpha per channel, summed in piece order below.
        let partial: Vec<(Vec<f64>, Vec<f64>)> = pieces(dx.as_mut_slice(), block)
            .into_par_iter()
            .enumerate()
            .map(|(p, mut gs)| {
                let first = p * ELEMENTS;
                let len = gs.first().map_or(0, |s| s.len());
                let at = |t: usize, k: usize| t * block + first + k;
                let mut g_beta = vec![0.0; if learn { channels } else { 0 }];
                let mut g_alpha = vec![0.0; if learn && alpha.is_some() { channels } else { 0 }];
                let mut g_v = vec![F::zero(); len];
                let mut g_i = vec![F::zero(); len];
                for t in (0..steps).rev() {
                    for k in 0..len {
                        let c = self.channel_of(first + k);
                        let vp = tape.v_pre[at(t, k)];
                        let g_out = dy.as_slice()[at(t, k)];
                        let g_vp = if self.fires() {
                            let s = self.spike(vp, smooth);
                            let (dv_dvp, dv_ds) = match self.reset {
                                SpikeReset::Subtract => (F::one(), -self.threshold),
                                SpikeReset::Zero => (F::one() - s, -vp),
                            };
                            let g_s = if self.detach_reset { g_out } else { g_out + g_v[k] * dv_ds };
                            let x = (vp - self.threshold).to_f64();
                            let slope =
                                if smooth { self.surrogate.derivative(x) } else { self.derivative.derivative(x) };
                            g_v[k] * dv_dvp + g_s * F::of(slope)
                        } else {
                            g_out + g_v[k]
                        };
                        let g_in = match &alpha {
                            Some(a) => {
                                g_i[k] = g_vp + a[c] * g_i[k];
                                if learn && t > 0 {
                                    g_alpha[c] += (g_i[k] * tape.current[at(t - 1, k)]).to_f64();
                                }
                                g_i[k]
                            }
                            None => g_vp,
                        };
                        if learn && t > 0 {
                            let previous = tape.v_pre[at(t - 1, k)];
                            let out = if self.fires() { self.spike(previous, smooth) } else { previous };
                            g_beta[c] += (g_vp * self.after_reset(previous, out)).to_f64();
                        }
                        g_v[k] = beta[c] * g_vp;
                        gs[t][k] = g_in;
                    }
                }
                (g_beta, g_alpha)
            })
            .collect();
        // Sums per channel over the pieces, in piece order.
        let sum = |which: usize| {
            let mut total = vec![0.0; channels];
            for piece in &partial {
                let part = if which == 0 { &piece.0 } else { &piece.1 };
                total.iter_mut().zip(part).for_each(|(t, g)| *t += g);
            }
            total
        };
        let mut grads = Vec::new();
        if self.beta.learnable {
            grads.push(self.beta.logit_gradient(&sum(0), &beta));
        }
        if let (Some(a), Some(factors)) = (&self.alpha, &alpha) {
            if a.learnable {
                grads.push(a.logit_gradient(&sum(1), factors));
            }
        }
        (dx, grads)
    }

    /// The learnable decays' logits, beta first.
    pub fn params(&self) -> Vec<(&'static str, &DMatrix<F>)> {
        let mut out = Vec::new();
        if self.beta.learnable {
            out.push(("beta_logit", &self.beta.logit));
        }
        if let Some(a) = self.alpha.as_ref().filter(|a| a.learnable) {
            out.push(("alpha_logit", &a.logit));
        }
        out
    }

    pub fn params_mut(&mut self) -> Vec<&mut DMatrix<F>> {
        let mut out = Vec::new();
        if self.beta.learnable {
            out.push(&mut self.beta.logit);
        }
        if let Some(a) = self.alpha.as_mut().filter(|a| a.learnable) {
            out.push(&mut a.logit);
        }
        out
    }
}

/// `data` (steps blocks of `block` elements) cut into pieces of [`ELEMENTS`] elements: for each
/// piece, its slice of every step, so a piece can walk through time on its own.
fn pieces<F>(data: &mut [F], block: usize) -> Vec<Vec<&mut [F]>> {
    let count = block.div_ceil(ELEMENTS);
    let mut out: Vec<Vec<&mut [F]>> = (0..count).map(|_| Vec::new()).collect();
    if block == 0 {
        return out;
    }
    for step in data.chunks_mut(block) {
        for (p, piece) in step.chunks_mut(ELEMENTS).enumerate() {
            out[p].push(piece);
        }
    }
    out
}
