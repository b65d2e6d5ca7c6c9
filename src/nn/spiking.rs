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

use crate::nn::Real;
use crate::spec::{Learnable, Shape, SpikeReset};
use crate::surrogate::{DerivativeTable, Surrogate};

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
    pub fn factors(&self, channels: usize) -> Vec<F> {
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

    /// Per element of a piece starting at element `first`: its channel, and the decay factors.
    fn per_element(&self, first: usize, len: usize, factors: &[F]) -> (Vec<u32>, Vec<F>) {
        let (features, positions) = (self.shape.size(), self.shape.positions());
        // Walk the (channel, position) of each element instead of dividing for each.
        let within = first % features;
        let (mut channel, mut position) = (within / positions, within % positions);
        let mut channels = Vec::with_capacity(len);
        let mut decays = Vec::with_capacity(len);
        for _ in 0..len {
            channels.push(channel as u32);
            decays.push(factors[channel]);
            position += 1;
            if position == positions {
                position = 0;
                channel += 1;
                if channel * positions == features {
                    channel = 0;
                }
            }
        }
        (channels, decays)
    }

    /// Spikes of a row of v' into `out`, in loops the compiler vectorises.
    fn spikes(&self, v_pre: &[F], smooth: bool, out: &mut [F]) {
        let theta = self.threshold;
        if smooth {
            for (o, &v) in out.iter_mut().zip(v_pre) {
                *o = F::of(self.surrogate.primitive((v - theta).to_f64()));
            }
        } else {
            for (o, &v) in out.iter_mut().zip(v_pre) {
                *o = if v >= theta { F::one() } else { F::zero() };
            }
        }
    }

    /// The membranes after the reset, from v' and the spikes (Li: v' itself).
    fn reset_row(&self, v_pre: &[F], spikes: &[F], v: &mut [F]) {
        let theta = self.threshold;
        match (self.kind, self.reset) {
            (Kind::Li, _) => v.copy_from_slice(v_pre),
            (_, SpikeReset::Subtract) => {
                for ((v, &p), &s) in v.iter_mut().zip(v_pre).zip(spikes) {
                    *v = p - theta * s;
                }
            }
            (_, SpikeReset::Zero) => {
                for ((v, &p), &s) in v.iter_mut().zip(v_pre).zip(spikes) {
                    *v = p * (F::one() - s);
                }
            }
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
            let (_, b) = self.per_element(first, len, &beta);
            let a = alpha.as_ref().map(|alpha| self.per_element(first, len, alpha).1);
            let mut v = vec![F::zero(); len];
            let mut i = vec![F::zero(); len];
            for t in 0..steps {
                let input = &x.as_slice()[t * block + first..t * block + first + len];
                let drive = match &a {
                    Some(a) => {
                        for ((i, &a), &x) in i.iter_mut().zip(a).zip(input) {
                            *i = a * *i + x;
                        }
                        is[t].copy_from_slice(&i);
                        &i[..]
                    }
                    None => input,
                };
                for (((vp, &v), &b), &d) in vs[t].iter_mut().zip(&v).zip(&b).zip(drive) {
                    *vp = b * v + d;
                }
                if self.fires() {
                    self.spikes(vs[t], smooth, ys[t]);
                } else {
                    ys[t].copy_from_slice(vs[t]);
                }
                self.reset_row(vs[t], ys[t], &mut v);
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
        let theta = self.threshold;
        let mut dx = DMatrix::zeros(dy.nrows(), dy.ncols());
        // Per piece: dL/dbeta and dL/dalpha per channel, summed in piece order below.
        let partial: Vec<(Vec<f64>, Vec<f64>)> = pieces(dx.as_mut_slice(), block)
            .into_par_iter()
            .enumerate()
            .map(|(p, mut gs)| {
                let first = p * ELEMENTS;
                let len = gs.first().map_or(0, |s| s.len());
                let row = |t: usize| t * block + first..t * block + first + len;
                let (channel, b) = self.per_element(first, len, &beta);
                let a = alpha.as_ref().map(|alpha| self.per_element(first, len, alpha).1);
                // Per element, summed over the steps: dL/dbeta and dL/dalpha.
                let mut g_b = vec![F::zero(); if learn { len } else { 0 }];
                let mut g_a = vec![F::zero(); if learn && a.is_some() { len } else { 0 }];
                let mut g_v = vec![F::zero(); len];
                let mut g_i = vec![F::zero(); len];
                let mut g_vp = vec![F::zero(); len];
                let mut slope = vec![F::zero(); len];
                let mut s = vec![F::zero(); len];
                let mut v_before = vec![F::zero(); len];
                // Whether `s` already holds this step's spikes (computed as the previous step's
                // by the decay gradient of the step after).
                let mut s_ready = false;
                for t in (0..steps).rev() {
                    let vp = &tape.v_pre[row(t)];
                    let g_out = &dy.as_slice()[row(t)];
                    if self.fires() {
                        for (x, &v) in slope.iter_mut().zip(vp) {
                            *x = v - theta;
                        }
                        if smooth {
                            slope.iter_mut().for_each(|x| *x = F::of(self.surrogate.derivative(x.to_f64())));
                        } else {
                            F::surrogate_derivatives(&self.derivative, &mut slope);
                        }
                        if !s_ready {
                            self.spikes(vp, smooth, &mut s);
                        }
                        let detach = if self.detach_reset { F::zero() } else { F::one() };
                        for k in 0..len {
                            let (dv_dvp, dv_ds) = match self.reset {
                                SpikeReset::Subtract => (F::one(), -theta),
                                SpikeReset::Zero => (F::one() - s[k], -vp[k]),
                            };
                            let g_s = g_out[k] + detach * g_v[k] * dv_ds;
                            g_vp[k] = g_v[k] * dv_dvp + g_s * slope[k];
                        }
                    } else {
                        for ((g, &o), &v) in g_vp.iter_mut().zip(g_out).zip(&g_v) {
                            *g = o + v;
                        }
                    }
                    let g_in = match &a {
                        Some(a) => {
                            for ((g, &a), &d) in g_i.iter_mut().zip(a).zip(&g_vp) {
                                *g = d + a * *g;
                            }
                            if learn && t > 0 {
                                let i_before = &tape.current[row(t - 1)];
                                for ((acc, &g), &i) in g_a.iter_mut().zip(&g_i).zip(i_before) {
                                    *acc += g * i;
                                }
                            }
                            &g_i
                        }
                        None => &g_vp,
                    };
                    gs[t].copy_from_slice(g_in);
                    if learn && t > 0 {
                        let previous = &tape.v_pre[row(t - 1)];
                        if self.fires() {
                            self.spikes(previous, smooth, &mut s);
                            s_ready = true;
                        }
                        self.reset_row(previous, &s, &mut v_before);
                        for ((acc, &g), &v) in g_b.iter_mut().zip(&g_vp).zip(&v_before) {
                            *acc += g * v;
                        }
                    }
                    for ((g, &b), &d) in g_v.iter_mut().zip(&b).zip(&g_vp) {
                        *g = b * d;
                    }
                }
                let per_channel = |acc: &[F]| {
                    let mut total = vec![0.0; if acc.is_empty() { 0 } else { channels }];
                    for (&c, &g) in channel.iter().zip(acc) {
                        total[c as usize] += g.to_f64();
                    }
                    total
                };
                (per_channel(&g_b), per_channel(&g_a))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_walked_per_element_match_their_definition() {
        let shape = Shape::Image { channels: 3, height: 2, width: 5 };
        let layer = Spiking::<f64> {
            kind: Kind::Lif,
            beta: Decay::new(5.0, 1.0, Learnable::PerChannel, 3),
            alpha: None,
            threshold: 1.0,
            reset: SpikeReset::Subtract,
            detach_reset: false,
            surrogate: Surrogate::default(),
            derivative: DerivativeTable::new(Surrogate::default()),
            shape,
        };
        let factors = [0.1, 0.2, 0.3];
        for first in [0, 7, 29, 30, 61] {
            let (channels, decays) = layer.per_element(first, 45, &factors);
            for (k, (&c, &d)) in channels.iter().zip(&decays).enumerate() {
                let expected = ((first + k) % 30) / 10;
                assert_eq!((c as usize, d), (expected, factors[expected]), "element {}", first + k);
            }
        }
    }
}
