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
//! `Alif` (adaptive LIF, Bellec et al. 2018 and 2020) is a Lif whose threshold carries the
//! layer's spikes: theta[t] = theta + b a[t], with a[t] = rho a[t-1] + s[t-1] (a[0] = 0,
//! rho = exp(-dt / tau_adapt)), so each spike raises it by b and the rise decays with
//! tau_adapt. Its spike and reset use theta[t] in place of theta (reset Subtract removes
//! theta[t]), and the backward pass carries g_a, the gradient reaching a[t + 1]:
//!
//! ```text
//! g_s      = dL/dy[t] + g_v dv/ds + g_a                 (a[t+1] = rho a[t] + s[t])
//! g_theta  = -g_s S'(v'[t] - theta[t]) + g_v dv/dtheta   (Subtract: dv/dtheta = -s[t])
//! g_a      = rho g_a + b g_theta                        (now the gradient reaching a[t])
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

use std::mem::MaybeUninit;

use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::nn::block_sums::lane_sum;
use crate::nn::gemm::{Gemm, View, par_matmul};
use crate::nn::norm::ChannelNorm;
use crate::nn::pool::{max_pairs_into, route_pairs_into};
use crate::nn::{Real, fresh};
use crate::spec::{Learnable, Shape, SpikeReset};
use crate::surrogate::{DerivativeTable, Surrogate};

/// Elements (of one step) per unit of parallel work, at most: fixed, so sums over elements come
/// out the same for any number of threads (see [`Spiking::piece_len`]).
const ELEMENTS: usize = 4096;

/// Elements of v' over all steps from which the usual layer may recompute them in its backward
/// pass rather than keep them (see [`SpikingTape`]): 8 MB of f32, far more than a core's cache,
/// so that writing them out and reading them back goes to memory. The unit tests' small layers
/// recompute from any size, so that they take this path.
const REPLAY_FROM: usize = if cfg!(test) { 1 } else { 1 << 21 };

/// How a spiking layer's input runs over the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepInput {
    /// `features x (steps B)`: each step's own input.
    EachStep,
    /// `features x B`, the same at every step (a direct current, computed once by the layers
    /// before): read at every step rather than copied `steps` times, and its gradient summed
    /// over the steps. Not for a recurrent layer, whose recurrence adds to each step's input.
    Same,
}

/// Which neuron a layer holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Lif,
    CubaLif,
    /// Lif with an adaptive threshold ([`Adaptation`]).
    Alif,
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
    /// Recurrent weights within the layer (vector layers only).
    pub recurrent: Option<Recurrent<F>>,
    /// Alif's threshold adaptation.
    pub adaptation: Option<Adaptation<F>>,
}

/// How an Alif layer's threshold follows its spikes: theta + b a[t], a[t] = rho a[t-1] + s[t-1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptation<F> {
    /// exp(-dt / tau_adapt).
    pub rho: F,
    /// The threshold's rise per spike.
    pub b: F,
}

/// A layer's recurrent weights, n x n (row: the neuron fed, column: the neuron that spiked): the
/// spikes of step t - 1 times these add to the input of step t. Without self-connections the
/// diagonal is not used (and gets no gradient), whatever it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Recurrent<F> {
    pub weight: DMatrix<F>,
    pub self_connections: bool,
}

impl<F: Real> Recurrent<F> {
    /// The weights the layer uses: without self-connections, a zero diagonal.
    fn effective(&self) -> std::borrow::Cow<'_, DMatrix<F>> {
        if self.self_connections {
            std::borrow::Cow::Borrowed(&self.weight)
        } else {
            let mut w = self.weight.clone();
            w.fill_diagonal(F::zero());
            std::borrow::Cow::Owned(w)
        }
    }
}

/// What the forward pass keeps for the backward pass: v'[t] for every step, and CubaLif's i[t]
/// or Alif's a[t].
///
/// The usual layer ([`Spiking::steps_plain`]) run over a whole sequence on an input that is the
/// same at every step ([`StepInput::Same`], the first spiking layer of a stack fed a direct
/// current) keeps no v' where it is large ([`REPLAY_FROM`]): its backward pass recomputes it,
/// piece by piece, from the layer's input, which the trace keeps anyway and which is one step's
/// worth of values where v' holds every step's. Writing v' out and reading it back from memory
/// cost more than reading the input and recomputing in the core's cache (the spiking CNN's
/// first layer: 51 MB of v' a batch, 1-2% faster and 75 MB less memory). Where each step has an
/// input of its own, it is as large as v' and the recomputation does not pay (fashion_snn's
/// hidden layer trained 5% slower).
#[derive(Debug, Clone)]
pub struct SpikingTape<F> {
    /// Empty where the backward pass recomputes it.
    pub v_pre: Vec<F>,
    pub current: Vec<F>,
    /// Elements per step (features x samples).
    pub block: usize,
}

impl<F> SpikingTape<F> {
    /// Whether the backward pass recomputes v' from the layer's input.
    fn replays(&self) -> bool {
        self.v_pre.is_empty() && self.block > 0
    }
}

impl<F: Gemm> Spiking<F> {
    pub fn fires(&self) -> bool {
        self.kind != Kind::Li
    }

    /// Elements per piece of parallel work: [`ELEMENTS`], or for an image of an even height
    /// the most whole pairs of rows that fit in it, so that a piece can max-pool its own output
    /// 2 x 2 ([`Spiking::forward_pooled`]).
    fn piece_len(&self) -> usize {
        match self.pooled_width() {
            Some(width) => (ELEMENTS / (2 * width)).max(1) * 2 * width,
            None => ELEMENTS,
        }
    }

    /// The width of an image whose pairs of rows can be pooled 2 x 2: an even height.
    fn pooled_width(&self) -> Option<usize> {
        match self.shape {
            Shape::Image { height, width, .. } if height % 2 == 0 && width >= 2 => Some(width),
            _ => None,
        }
    }

    /// Whether [`Spiking::forward_pooled`] can take this layer and 2 x 2 max pooling in one
    /// pass: hard spikes of the usual layer ([`Spiking::steps_plain`]) without recurrence, over
    /// an image of an even height.
    pub fn pools_in_place(&self, smooth: bool) -> bool {
        self.steps_plain(smooth) && self.recurrent.is_none() && self.pooled_width().is_some()
    }

    /// Outputs of 2 x 2 max pooling over `len` elements of whole pairs of rows.
    fn pooled_len(&self, len: usize) -> usize {
        let width = self.pooled_width().expect("an image of an even height");
        len / (2 * width) * (width / 2)
    }

    /// Whether the tape keeps a second state per step (CubaLif's current, Alif's adaptation).
    fn keeps_second_state(&self) -> bool {
        self.alpha.is_some() || self.adaptation.is_some()
    }

    /// The decay factor of every element of a piece starting at element `first`.
    fn decays(&self, first: usize, len: usize, factors: &[F]) -> Vec<F> {
        let mut decays = Vec::with_capacity(len);
        if self.shape.positions() <= 1 {
            // A vector's channels are its elements, runs of one: copy the factors a stretch at
            // a time, from the piece's first element on, instead of run by run.
            let mut at = first % factors.len().max(1);
            while decays.len() < len {
                let take = (factors.len() - at).min(len - decays.len());
                decays.extend_from_slice(&factors[at..at + take]);
                at = 0;
            }
            return decays;
        }
        for (channel, count) in self.channel_runs(first, len) {
            decays.resize(decays.len() + count, factors[channel]);
        }
        decays
    }

    /// The `len` elements from element `first` as runs of one channel: (channel, run length).
    /// Elements walk the positions of a channel, then the channels of a sample, then the
    /// samples, so runs are whole channels but for the first and the last.
    fn channel_runs(&self, first: usize, len: usize) -> impl Iterator<Item = (usize, usize)> {
        let (features, positions) = (self.shape.size(), self.shape.positions().max(1));
        let within = first % features.max(1);
        let (mut channel, mut position, mut left) = (within / positions, within % positions, len);
        let channels = features / positions;
        std::iter::from_fn(move || {
            (left > 0).then(|| {
                let count = (positions - position).min(left);
                let run = (channel, count);
                left -= count;
                position = 0;
                channel = (channel + 1) % channels.max(1);
                run
            })
        })
    }

    /// One spike from v' - theta.
    fn spike(&self, over: F, smooth: bool) -> F {
        if smooth {
            F::of(self.surrogate.primitive(over.to_f64()))
        } else if over >= F::zero() {
            F::one()
        } else {
            F::zero()
        }
    }

    /// One membrane after the reset, for threshold `theta`.
    fn reset_one(&self, v_pre: F, spike: F, theta: F) -> F {
        match self.reset {
            SpikeReset::Subtract => v_pre - theta * spike,
            SpikeReset::Zero => v_pre * (F::one() - spike),
        }
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

    /// Runs `x` (`features x (steps B)`, or `features x B` read at every step with
    /// [`StepInput::Same`]) through time; returns the output and the tape.
    pub fn forward(
        &self,
        x: &DMatrix<F>,
        steps: usize,
        smooth: bool,
        input: StepInput,
    ) -> (DMatrix<F>, SpikingTape<F>) {
        if self.recurrent.is_some() {
            assert_eq!(input, StepInput::EachStep, "a recurrent layer takes each step's own input");
            let (y, tape, _) = self.forward_from(x, steps, smooth, None);
            return (y, tape);
        }
        let (y, tape, _, _) = self.forward_pieces(x, steps, smooth, None, input, false, false, None);
        (y, tape)
    }

    /// [`Spiking::forward`] followed by 2 x 2 max pooling, in one pass: each piece of elements
    /// pools its spikes as it makes them, so the layer's output never goes through memory.
    /// Returns the pooled output, every output's winner (as [`crate::nn::pool::max_forward`]
    /// gives them) and the tape; [`Spiking::backward_into`] takes the pooled gradient back.
    /// The layer must [`Spiking::pools_in_place`].
    ///
    /// With `norms`, `x` is a batch norm's input, which each piece normalises channel by
    /// channel as it reads it ([`BatchNorm::channel_norms`](crate::nn::norm::BatchNorm::channel_norms)):
    /// the same values as batch norm's output, which then never goes through memory. Each
    /// step must read its own input (the backward pass does not recompute v' from `x`).
    pub fn forward_pooled(
        &self,
        x: &DMatrix<F>,
        steps: usize,
        input: StepInput,
        norms: Option<&[ChannelNorm<F>]>,
    ) -> (DMatrix<F>, Vec<u32>, SpikingTape<F>) {
        assert!(self.pools_in_place(false), "pooled in place: a plain spiking layer over an image of even height");
        assert!(norms.is_none() || input == StepInput::EachStep, "a normalised input is read at each step");
        let (y, tape, _, winners) = self.forward_pieces(x, steps, false, None, input, false, true, norms);
        (y, winners.expect("pooled"), tape)
    }

    /// [`Spiking::forward`] from the state `start` left by an earlier segment of the sequence (at
    /// rest without one); also returns the state after the last step, where the next segment
    /// starts.
    pub fn forward_from(
        &self,
        x: &DMatrix<F>,
        steps: usize,
        smooth: bool,
        start: Option<&SegmentState<F>>,
    ) -> (DMatrix<F>, SpikingTape<F>, SegmentState<F>) {
        if let Some(r) = &self.recurrent {
            return self.forward_recurrent(r, x, steps, smooth, start);
        }
        let (y, tape, end, _) = self.forward_pieces(x, steps, smooth, start, StepInput::EachStep, true, false, None);
        (y, tape, end.expect("the end state was asked for"))
    }

    /// [`Spiking::forward_from`] without recurrence, the input as `input` says; the state after
    /// the last step only if `keep_end` (a whole sequence in one segment has no use for it).
    /// With `pool`, the output is max-pooled 2 x 2 by each piece, and the winners returned;
    /// with `norms`, the input is normalised as it is read ([`Spiking::forward_pooled`]).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn forward_pieces(
        &self,
        x: &DMatrix<F>,
        steps: usize,
        smooth: bool,
        start: Option<&SegmentState<F>>,
        input: StepInput,
        keep_end: bool,
        pool: bool,
        norms: Option<&[ChannelNorm<F>]>,
    ) -> (DMatrix<F>, SpikingTape<F>, Option<SegmentState<F>>, Option<Vec<u32>>) {
        let (block, step_stride) = match input {
            StepInput::EachStep => (x.len() / steps, x.len() / steps),
            StepInput::Same => (x.len(), 0),
        };
        let channels = self.shape.channels();
        let beta = self.beta.factors(channels);
        let alpha = self.alpha.as_ref().map(|a| a.factors(channels));
        assert!(!pool || (self.pools_in_place(smooth) && !keep_end), "pooling in place needs a plain layer");
        let piece = self.piece_len();
        // Outputs per step block and per piece: pooled, a quarter of the elements or so.
        let (out_block, out_piece) =
            if pool { (self.pooled_len(block), self.pooled_len(piece)) } else { (block, piece) };
        let plain = self.steps_plain(smooth).then_some(self.reset);
        // See [`SpikingTape`].
        let replay = plain.is_some() && !keep_end && input == StepInput::Same && block * steps >= REPLAY_FROM;
        // Every step of every piece writes its outputs and membranes whole: no zeroing first.
        let (mut y_slots, mut v_slots) =
            (fresh::slots(out_block * steps), fresh::slots(if replay { 0 } else { block * steps }));
        let mut winners = fresh::slots(if pool { out_block * steps } else { 0 });
        let mut current = vec![F::zero(); if self.keeps_second_state() { block * steps } else { 0 }];
        let mut end = keep_end.then(|| SegmentState::at_rest(block));
        let y_pieces = pieces(&mut y_slots, out_block, out_piece);
        let count = y_pieces.len();
        let v_pieces = pieces(&mut v_slots, block, piece);
        let i_pieces = pieces(&mut current, block, piece);
        let w_pieces = pieces(&mut winners, out_block, out_piece);
        let (mut end_v, mut end_i): (Vec<&mut [F]>, Vec<&mut [F]>) = match &mut end {
            Some(SegmentState { v, i, .. }) => (v.chunks_mut(piece).collect(), i.chunks_mut(piece).collect()),
            None => (Vec::new(), Vec::new()),
        };
        let (width, features) = (self.pooled_width().unwrap_or(0), x.nrows());
        end_v.resize_with(count, || &mut []);
        end_i.resize_with(count, || &mut []);
        // Each piece of elements walks all steps; pieces are independent. The carried state of
        // a piece lives in a buffer per thread, copied out only where the end state is kept.
        y_pieces
            .into_par_iter()
            .zip(v_pieces)
            .zip(i_pieces.into_par_iter().zip(w_pieces))
            .zip(end_v.into_par_iter().zip(end_i))
            .enumerate()
            .for_each_init(
                || (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()),
                |(v, i, spikes, v_pre, normed), (p, (((mut ys, mut vs), (mut is, mut ws)), (end_v, end_i)))| {
                    let first = p * piece;
                    let len = piece.min(block - first);
                    spikes.resize(if pool { len } else { 0 }, MaybeUninit::uninit());
                    v_pre.resize(if replay { len } else { 0 }, MaybeUninit::uninit());
                    let b = self.decays(first, len, &beta);
                    let a = alpha.as_ref().map(|alpha| self.decays(first, len, alpha));
                    for state in [&mut *v, &mut *i] {
                        state.clear();
                        state.resize(len, F::zero());
                    }
                    if let Some(s) = start {
                        v.copy_from_slice(&s.v[first..first + len]);
                        i.copy_from_slice(&s.i[first..first + len]);
                    }
                    for t in 0..steps {
                        let input = &x.as_slice()[t * step_stride + first..][..len];
                        let input = match norms {
                            Some(norms) => self.normalise_piece(norms, first, input, normed),
                            None => input,
                        };
                        let vp = if replay { &mut v_pre[..] } else { &mut *vs[t] };
                        // Pooled: the spikes go to the piece's scratch, then pooled from it.
                        let y = if pool { &mut spikes[..] } else { &mut *ys[t] };
                        match plain {
                            Some(reset) => forward_plain_with(reset, self.threshold, input, &b, v, vp, y),
                            None => {
                                let current = is.get_mut(t).map(|c| &mut **c);
                                let (vp, y) = (fresh::zeroed(vp), fresh::zeroed(y));
                                self.forward_step(input, &b, a.as_deref(), v, i, vp, y, current, smooth);
                            }
                        }
                        if pool {
                            // SAFETY: forward_plain wrote the piece's spikes whole.
                            let spikes = unsafe { fresh::assume_written(spikes) };
                            max_pairs_into(width, features, first, spikes, ys[t], ws[t]);
                        }
                    }
                    if !end_v.is_empty() {
                        end_v.copy_from_slice(v);
                        end_i.copy_from_slice(i);
                    }
                },
            );
        let out_rows = if pool { self.pooled_len(x.nrows()) } else { x.nrows() };
        // SAFETY: the pieces cover the buffers, and each wrote its part of every step (pooled:
        // its pairs of rows cover its outputs and winners).
        let (y, v_pre, winners) = unsafe {
            (
                fresh::written_matrix(out_rows, block / x.nrows().max(1) * steps, y_slots),
                fresh::written_slots(v_slots),
                pool.then(|| fresh::written_slots(winners)),
            )
        };
        if let Some(end) = &mut end {
            end.y.copy_from_slice(&y.as_slice()[(steps - 1) * block..]);
        }
        (y, SpikingTape { v_pre, current, block }, end, winners)
    }

    /// `raw`, the piece of a step from element `first`, normalised channel by channel into
    /// `out`.
    fn normalise_piece<'a>(&self, norms: &[ChannelNorm<F>], first: usize, raw: &[F], out: &'a mut Vec<F>) -> &'a [F] {
        out.clear();
        let mut rest = raw;
        for (channel, count) in self.channel_runs(first, raw.len()) {
            let (run, after) = rest.split_at(count);
            let norm = norms[channel];
            out.extend(run.iter().map(|&x| norm.apply(x)));
            rest = after;
        }
        out
    }

    /// One step of a piece of elements: the carried membrane `v` (and CubaLif's current `i`)
    /// advance on `input`; v' goes to `vp`, the output to `y`, the current to `current`.
    #[allow(clippy::too_many_arguments)]
    fn forward_step(
        &self,
        input: &[F],
        b: &[F],
        a: Option<&[F]>,
        v: &mut [F],
        i: &mut [F],
        vp: &mut [F],
        y: &mut [F],
        current: Option<&mut [F]>,
        smooth: bool,
    ) {
        if let Some(adapt) = self.adaptation {
            // `i` carries a[t].
            if let Some(c) = current {
                c.copy_from_slice(i);
            }
            for k in 0..input.len() {
                vp[k] = b[k] * v[k] + input[k];
                let theta = self.threshold + adapt.b * i[k];
                y[k] = self.spike(vp[k] - theta, smooth);
                v[k] = self.reset_one(vp[k], y[k], theta);
                i[k] = adapt.rho * i[k] + y[k];
            }
            return;
        }
        let drive = match a {
            Some(a) => {
                for ((i, &a), &x) in i.iter_mut().zip(a).zip(input) {
                    *i = a * *i + x;
                }
                if let Some(c) = current {
                    c.copy_from_slice(i);
                }
                &i[..]
            }
            None => input,
        };
        for (((vp, &v), &b), &d) in vp.iter_mut().zip(v.iter()).zip(b).zip(drive) {
            *vp = b * v + d;
        }
        if self.fires() {
            self.spikes(vp, smooth, y);
        } else {
            y.copy_from_slice(vp);
        }
        self.reset_row(vp, y, v);
    }

    /// A fresh state for running `n` neurons of this layer one step at a time ([`Spiking::step`]),
    /// as the engine runs a trained layer. Vector layers only: neuron k is channel k.
    pub fn stepper(&self, n: usize) -> Stepper<F> {
        let channels = self.shape.channels();
        let zeros = || vec![F::zero(); n];
        Stepper {
            b: self.decays(0, n, &self.beta.factors(channels)),
            a: self.alpha.as_ref().map(|a| self.decays(0, n, &a.factors(channels))),
            v: zeros(),
            i: zeros(),
            v_pre: zeros(),
            output: zeros(),
        }
    }

    /// Advances a stepper by one step on `input` (the layer's input at this step, recurrent
    /// input included): the same update as [`Spiking::forward`] in evaluation (hard spikes), so
    /// a layer stepped here and run by the trainer agree to the rounding of their inputs. The
    /// step's output (spikes, or Li's membrane) is left in `stepper.output`.
    pub fn step(&self, st: &mut Stepper<F>, input: &[F]) {
        let Stepper { b, a, v, i, v_pre, output } = st;
        self.forward_step(input, b, a.as_deref(), v, i, v_pre, output, None, false);
    }

    /// What the backward pass carries from a segment of the sequence to the one before it, for
    /// `block` elements per step (features x samples).
    pub fn carry(&self, block: usize) -> SegmentCarry<F> {
        let learn = self.learns_decays();
        let piece = self.piece_len();
        let count = block.div_ceil(piece);
        // Zeroed in parallel, each piece by the thread that is likely to take it back.
        let pieces = (0..count)
            .into_par_iter()
            .map(|p| {
                let len = piece.min(block - p * piece);
                BackCarry::new(len, learn, self.alpha.is_some(), self.keeps_second_state())
            })
            .collect();
        let n = self.shape.size();
        SegmentCarry {
            pieces,
            next_input: Vec::new(),
            recurrent: self.recurrent.as_ref().map(|_| DMatrix::zeros(n, n)),
        }
    }

    /// Whether the layer is the usual one, hard spikes without a synaptic current or an
    /// adaptation, whose steps run in one loop per element ([`forward_plain`],
    /// [`Spiking::back_step_plain`]).
    fn steps_plain(&self, smooth: bool) -> bool {
        self.fires() && self.alpha.is_none() && self.adaptation.is_none() && !smooth
    }

    fn learns_decays(&self) -> bool {
        self.beta.learnable || self.alpha.as_ref().is_some_and(|a| a.learnable)
    }

    /// The backward pass through one segment (its forward on `x` started from `start`), from
    /// the `carry` that the segment after it left (fresh for the last); returns dL/dx and leaves
    /// in `carry` what the segment before needs, with the parameter gradients summed so far.
    /// With [`StepInput::Same`], dL/dx is the sum over the steps (`features x B`). With
    /// `pooled` winners (a whole sequence of [`Spiking::forward_pooled`]), `dy` is the gradient
    /// of the pooled output: each piece routes its share to the winners as it steps back, so
    /// the gradient of the layer's own output never goes through memory.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_into(
        &self,
        tape: &SpikingTape<F>,
        x: &DMatrix<F>,
        dy: &DMatrix<F>,
        steps: usize,
        smooth: bool,
        start: Option<&SegmentState<F>>,
        carry: &mut SegmentCarry<F>,
        input: StepInput,
        pooled: Option<&[u32]>,
    ) -> DMatrix<F> {
        if let Some(r) = &self.recurrent {
            assert!(input == StepInput::EachStep && pooled.is_none(), "a recurrent layer takes each step's own input");
            return self.backward_recurrent(r, tape, dy, steps, smooth, start, carry);
        }
        let whole = start.is_none() && !smooth;
        assert!(pooled.is_none() || (whole && self.pools_in_place(false)), "pooled in place: a plain layer, whole");
        self.backward_pieces(tape, x, dy, steps, smooth, start, carry, input, pooled, true)
    }

    /// [`Spiking::backward_into`] without recurrence; `allow_plain` lets the usual layer take
    /// its steps in [`Spiking::back_step_plain`] (the tests turn it off to compare). With
    /// `pooled` winners, `dy` is the gradient of the output max-pooled 2 x 2
    /// ([`Spiking::backward_into`]).
    #[allow(clippy::too_many_arguments)]
    fn backward_pieces(
        &self,
        tape: &SpikingTape<F>,
        x: &DMatrix<F>,
        dy: &DMatrix<F>,
        steps: usize,
        smooth: bool,
        start: Option<&SegmentState<F>>,
        carry: &mut SegmentCarry<F>,
        input: StepInput,
        pooled: Option<&[u32]>,
        allow_plain: bool,
    ) -> DMatrix<F> {
        let block = tape.block;
        let step_stride = if input == StepInput::Same { 0 } else { block };
        let features = if pooled.is_some() { self.shape.size() } else { dy.nrows() };
        let piece = self.piece_len();
        let out_block = if pooled.is_some() { self.pooled_len(block) } else { block };
        let width = self.pooled_width().unwrap_or(0);
        let channels = self.shape.channels();
        let beta = self.beta.factors(channels);
        let alpha = self.alpha.as_ref().map(|a| a.factors(channels));
        let learn = self.learns_decays();
        let dx_columns = if input == StepInput::Same { dy.ncols() / steps } else { dy.ncols() };
        // One loop per step back (`back_step_plain`) but for a segment's first step after another.
        let plain = allow_plain && self.steps_plain(smooth);
        // Each element's first step back writes its input gradient, later ones (an input the
        // same at every step) add to it: no zeroing first.
        let mut dx = fresh::slots(features * dx_columns);
        pieces(&mut dx, block, piece).into_par_iter().zip(carry.pieces.par_iter_mut()).enumerate().for_each_init(
            || (StepScratch::default(), Vec::new(), Replay::default()),
            |(w, routed, replay), (p, (mut gs, c))| {
                let first = p * piece;
                let len = c.g_v.len();
                w.fit(len);
                routed.resize(if pooled.is_some() { len } else { 0 }, MaybeUninit::uninit());
                let row = |t: usize| t * block + first..t * block + first + len;
                let b = self.decays(first, len, &beta);
                let a = alpha.as_ref().map(|alpha| self.decays(first, len, alpha));
                // The piece's v' of every step: the tape's, or recomputed into a tape of its own.
                let (tape, stride, offset) = if tape.replays() {
                    replay.run(self, &x.as_slice()[first..], step_stride, &b, steps);
                    (&replay.tape, len, 0)
                } else {
                    (tape, block, first)
                };
                let tape_row = |t: usize| t * stride + offset..t * stride + offset + len;
                let before = start.map(|s| s.piece(first, len));
                for t in (0..steps).rev() {
                    let g_out = match pooled {
                        None => &dy.as_slice()[row(t)],
                        Some(winners) => {
                            let from = t * out_block + self.pooled_len(first);
                            let at = from..from + self.pooled_len(len);
                            route_pairs_into(width, features, first, &dy.as_slice()[at.clone()], &winners[at], routed);
                            // SAFETY: the piece's pairs of rows cover its len elements.
                            &*unsafe { fresh::assume_written(routed) }
                        }
                    };
                    // Summed from the last step, the order the steps come back in.
                    let (g_x, add) = match input {
                        StepInput::EachStep => (&mut *gs[t], false),
                        StepInput::Same => (&mut *gs[0], t + 1 < steps),
                    };
                    let plain = plain && (t > 0 || !learn || before.is_none());
                    if plain {
                        let previous = (learn && t > 0).then(|| &tape.v_pre[tape_row(t - 1)]);
                        // SAFETY: `add` only after the first step back wrote these slots.
                        unsafe { self.back_step_plain(&tape.v_pre[tape_row(t)], previous, g_out, &b, c, w, g_x, add) };
                        continue;
                    }
                    self.back_step(tape, t, tape_row, g_out, &b, a.as_deref(), c, w, smooth, learn, before);
                    let g_in = if a.is_some() { &c.g_i } else { &w.g_vp };
                    for (g, &d) in g_x.iter_mut().zip(g_in) {
                        // SAFETY: `add` only after the first step back wrote these slots.
                        *g = MaybeUninit::new(if add { unsafe { g.assume_init() + d } } else { d });
                    }
                }
            },
        );
        // SAFETY: the pieces cover dx, and the first step back (t = steps - 1) wrote them all.
        unsafe { fresh::written_matrix(features, dx_columns, dx) }
    }

    /// The parameter gradients a finished backward pass left in `carry`: the decays' logits
    /// (beta first), then the recurrent weights.
    pub fn carried_gradients(&self, carry: &SegmentCarry<F>) -> Vec<DMatrix<F>> {
        let channels = self.shape.channels();
        let beta = self.beta.factors(channels);
        let alpha = self.alpha.as_ref().map(|a| a.factors(channels));
        // Per piece: dL/dbeta and dL/dalpha per channel, summed in piece order. The pieces run
        // in parallel (the sums of a piece are the same on any thread).
        let partial: Vec<(Vec<f64>, Vec<f64>)> = carry
            .pieces
            .par_iter()
            .enumerate()
            .map(|(p, c)| {
                let per_channel = |acc: &[F]| {
                    let mut total = vec![0.0; if acc.is_empty() { 0 } else { channels }];
                    let mut rest = acc;
                    for (channel, count) in self.channel_runs(p * self.piece_len(), acc.len()) {
                        let (run, after) = rest.split_at(count);
                        total[channel] += lane_sum(run, run, |g, _| g.to_f64());
                        rest = after;
                    }
                    total
                };
                (per_channel(&c.g_b), per_channel(&c.g_a))
            })
            .collect();
        let mut grads = self.decay_gradients(&partial, &beta, alpha.as_deref());
        if let (Some(r), Some(dw)) = (&self.recurrent, &carry.recurrent) {
            let mut dw = dw.clone();
            if !r.self_connections {
                dw.fill_diagonal(F::zero());
            }
            grads.push(dw);
        }
        grads
    }

    /// The learnable decays' logit gradients (beta first) from per-piece sums per channel,
    /// added up in piece order.
    fn decay_gradients(&self, partial: &[(Vec<f64>, Vec<f64>)], beta: &[F], alpha: Option<&[F]>) -> Vec<DMatrix<F>> {
        let channels = beta.len();
        let sum = |which: usize| {
            let mut total = vec![0.0; channels];
            for piece in partial {
                let part = if which == 0 { &piece.0 } else { &piece.1 };
                total.iter_mut().zip(part).for_each(|(t, g)| *t += g);
            }
            total
        };
        let mut grads = Vec::new();
        if self.beta.learnable {
            grads.push(self.beta.logit_gradient(&sum(0), beta));
        }
        if let (Some(a), Some(factors)) = (&self.alpha, alpha)
            && a.learnable
        {
            grads.push(a.logit_gradient(&sum(1), factors));
        }
        grads
    }

    /// Forward with recurrent weights: step by step, as each step's input needs the spikes of
    /// the step before; within a step the elements run in parallel pieces as without recurrence.
    fn forward_recurrent(
        &self,
        r: &Recurrent<F>,
        x: &DMatrix<F>,
        steps: usize,
        smooth: bool,
        start: Option<&SegmentState<F>>,
    ) -> (DMatrix<F>, SpikingTape<F>, SegmentState<F>) {
        let (n, block) = (x.nrows(), x.len() / steps);
        let batch = block / n.max(1);
        let beta = self.beta.factors(self.shape.channels());
        let alpha = self.alpha.as_ref().map(|a| a.factors(self.shape.channels()));
        let b = self.decays(0, block, &beta);
        let a = alpha.as_ref().map(|alpha| self.decays(0, block, alpha));
        let mut y = DMatrix::zeros(x.nrows(), x.ncols());
        let mut tape = SpikingTape {
            v_pre: vec![F::zero(); x.len()],
            current: vec![F::zero(); if self.keeps_second_state() { x.len() } else { 0 }],
            block,
        };
        let mut state = start.cloned().unwrap_or_else(|| SegmentState::at_rest(block));
        let mut input = vec![F::zero(); block];
        let piece = self.piece_len();
        let weight = r.effective();
        for t in 0..steps {
            let here = t * block..(t + 1) * block;
            input.copy_from_slice(&x.as_slice()[here.clone()]);
            let before = if t > 0 { Some(&y.as_slice()[(t - 1) * block..t * block]) } else { start.map(|s| &s.y[..]) };
            if let Some(before) = before {
                if smooth {
                    let w = View::new(weight.as_slice(), n, n);
                    par_matmul(&mut input, w, View::new(before, n, batch), F::one());
                } else {
                    add_fired_columns(&mut input, &weight, before, n);
                }
            }
            let (ys, vp) = (&mut y.as_mut_slice()[here.clone()], &mut tape.v_pre[here.clone()]);
            let keeps = self.keeps_second_state();
            let mut currents: Vec<&mut [F]> =
                if keeps { tape.current[here].chunks_mut(piece).collect() } else { Vec::new() };
            currents.resize_with(block.div_ceil(piece), || &mut []);
            ys.par_chunks_mut(piece)
                .zip(vp.par_chunks_mut(piece))
                .zip(state.v.par_chunks_mut(piece).zip(state.i.par_chunks_mut(piece)))
                .zip(input.par_chunks(piece).zip(b.par_chunks(piece)))
                .zip(currents)
                .enumerate()
                .for_each(|(p, ((((ys, vp), (v, i)), (input, b)), current))| {
                    let a = a.as_ref().map(|a| &a[p * piece..p * piece + ys.len()]);
                    let current = keeps.then_some(current);
                    self.forward_step(input, b, a, v, i, vp, ys, current, smooth);
                });
        }
        state.y.copy_from_slice(&y.as_slice()[(steps - 1) * block..]);
        (y, tape, state)
    }

    /// Backward with recurrent weights: step by step from the last, the gradient reaching a
    /// step's spikes including what the next step's input sends back through the weights (for
    /// the segment's last step, the next segment's first, kept in `carry`). Returns dL/dx; the
    /// decays' and the weights' gradients accumulate in `carry`.
    #[allow(clippy::too_many_arguments)]
    fn backward_recurrent(
        &self,
        r: &Recurrent<F>,
        tape: &SpikingTape<F>,
        dy: &DMatrix<F>,
        steps: usize,
        smooth: bool,
        start: Option<&SegmentState<F>>,
        carry: &mut SegmentCarry<F>,
    ) -> DMatrix<F> {
        let (n, block) = (dy.nrows(), dy.len() / steps);
        let batch = block / n.max(1);
        let channels = self.shape.channels();
        let beta = self.beta.factors(channels);
        let alpha = self.alpha.as_ref().map(|a| a.factors(channels));
        let learn = self.learns_decays();
        let b = self.decays(0, block, &beta);
        let a = alpha.as_ref().map(|alpha| self.decays(0, block, alpha));
        let mut dx = DMatrix::zeros(dy.nrows(), dy.ncols());
        let SegmentCarry { pieces: carries, next_input, recurrent } = carry;
        let dw = recurrent.as_mut().expect("a recurrent layer's carry holds its weight gradient");
        let mut g_out = vec![F::zero(); block];
        let mut spikes = vec![F::zero(); block];
        let piece = self.piece_len();
        let weight = r.effective();
        for t in (0..steps).rev() {
            g_out.copy_from_slice(&dy.as_slice()[t * block..(t + 1) * block]);
            let later = if t + 1 < steps {
                Some(&dx.as_slice()[(t + 1) * block..(t + 2) * block])
            } else {
                (!next_input.is_empty()).then_some(&next_input[..])
            };
            if let Some(later) = later {
                let wt = View::new(weight.as_slice(), n, n).t();
                par_matmul(&mut g_out, wt, View::new(later, n, batch), F::one());
            }
            let here = &mut dx.as_mut_slice()[t * block..(t + 1) * block];
            carries
                .par_iter_mut()
                .zip(g_out.par_chunks(piece))
                .zip(here.par_chunks_mut(piece))
                .enumerate()
                .for_each_init(StepScratch::default, |w, (p, ((carry, g), g_x))| {
                    let (first, len) = (p * piece, g.len());
                    w.fit(len);
                    let row = |t: usize| t * block + first..t * block + first + len;
                    let a = a.as_ref().map(|a| &a[first..first + len]);
                    let before = start.map(|s| s.piece(first, len));
                    self.back_step(tape, t, row, g, &b[first..first + len], a, carry, w, smooth, learn, before);
                    g_x.copy_from_slice(if a.is_some() { &carry.g_i } else { &w.g_vp });
                });
            let before = if t > 0 {
                self.output_of(tape, (t - 1) * block..t * block, smooth, &mut spikes);
                Some(&spikes[..])
            } else {
                start.map(|s| &s.y[..])
            };
            if let Some(before) = before {
                let g_in = &dx.as_slice()[t * block..(t + 1) * block];
                if smooth {
                    par_matmul(dw.as_mut_slice(), View::new(g_in, n, batch), View::new(before, n, batch).t(), F::one());
                } else {
                    add_gradient_of_fired(dw, g_in, before, n);
                }
            }
        }
        next_input.clear();
        next_input.extend_from_slice(&dx.as_slice()[..block]);
        dx
    }

    /// One step back through a piece of elements (rows `row(t)` of the tape): from dL/dy[t]
    /// and the gradients carried from step t + 1 to the gradient of the step's input (in
    /// `carry.g_in`), the decays' gradients accumulated, and the carries moved to step t - 1.
    #[allow(clippy::too_many_arguments)]
    fn back_step(
        &self,
        tape: &SpikingTape<F>,
        t: usize,
        row: impl Fn(usize) -> std::ops::Range<usize>,
        g_out: &[F],
        b: &[F],
        a: Option<&[F]>,
        c: &mut BackCarry<F>,
        w: &mut StepScratch<F>,
        smooth: bool,
        learn: bool,
        start: Option<(&[F], &[F])>,
    ) {
        if let Some(adapt) = self.adaptation {
            return self.back_step_adaptive(adapt, tape, t, row, g_out, b, c, w, smooth, learn, start);
        }
        let theta = self.threshold;
        let len = g_out.len();
        let vp = &tape.v_pre[row(t)];
        if self.fires() {
            self.surrogate_slopes(vp, smooth, &mut w.slope);
            if !w.s_ready {
                self.spikes(vp, smooth, &mut w.s);
            }
            let detach = if self.detach_reset { F::zero() } else { F::one() };
            for k in 0..len {
                let (dv_dvp, dv_ds) = match self.reset {
                    SpikeReset::Subtract => (F::one(), -theta),
                    SpikeReset::Zero => (F::one() - w.s[k], -vp[k]),
                };
                let g_s = g_out[k] + detach * c.g_v[k] * dv_ds;
                w.g_vp[k] = c.g_v[k] * dv_dvp + g_s * w.slope[k];
            }
        } else {
            for ((g, &o), &v) in w.g_vp.iter_mut().zip(g_out).zip(&c.g_v) {
                *g = o + v;
            }
        }
        if let Some(a) = a {
            for ((g, &a), &d) in c.g_i.iter_mut().zip(a).zip(&w.g_vp) {
                *g = d + a * *g;
            }
            let i_before = match (t, start) {
                (0, Some((_, i))) => Some(i),
                (0, None) => None,
                _ => Some(&tape.current[row(t - 1)]),
            };
            if let (true, Some(i_before)) = (learn, i_before) {
                for ((acc, &g), &i) in c.g_a.iter_mut().zip(&c.g_i).zip(i_before) {
                    *acc += g * i;
                }
            }
        }
        // Whether `s` holds the step's spikes: computed as the previous step's by the decay
        // gradient below, for the next call.
        w.s_ready = false;
        if learn && t > 0 {
            let previous = &tape.v_pre[row(t - 1)];
            if self.fires() {
                self.spikes(previous, smooth, &mut w.s);
                w.s_ready = true;
            }
            self.reset_row(previous, &w.s, &mut w.v_before);
            for ((acc, &g), &v) in c.g_b.iter_mut().zip(&w.g_vp).zip(&w.v_before) {
                *acc += g * v;
            }
        } else if let (true, 0, Some((v_start, _))) = (learn, t, start) {
            for ((acc, &g), &v) in c.g_b.iter_mut().zip(&w.g_vp).zip(v_start) {
                *acc += g * v;
            }
        }
        for ((g, &b), &d) in c.g_v.iter_mut().zip(b).zip(&w.g_vp) {
            *g = b * d;
        }
    }

    /// S'(v' - theta) of a row of v' into `slope`: the closed form for smooth spikes (f64 gradient
    /// checks), else the table.
    fn surrogate_slopes(&self, vp: &[F], smooth: bool, slope: &mut [F]) {
        for (x, &v) in slope.iter_mut().zip(vp) {
            *x = v - self.threshold;
        }
        if smooth {
            slope.iter_mut().for_each(|x| *x = F::of(self.surrogate.derivative(x.to_f64())));
        } else {
            F::surrogate_derivatives(&self.derivative, slope);
        }
    }

    /// [`Spiking::back_step`] for a layer of hard spikes without a synaptic current or an
    /// adaptation, writing (or, with `add`, adding) the input's gradient into `g_x`; `previous`
    /// is v'[t - 1] where the decays are learnt. The same arithmetic in the same order, in one
    /// loop over the elements instead of one per quantity: each element's values stay in
    /// registers rather than going through the scratch and back (tested equal bit for bit).
    ///
    /// # Safety
    /// With `add`, every slot of `g_x` must have been written.
    #[allow(clippy::too_many_arguments)]
    unsafe fn back_step_plain(
        &self,
        vp: &[F],
        previous: Option<&[F]>,
        g_out: &[F],
        b: &[F],
        c: &mut BackCarry<F>,
        w: &mut StepScratch<F>,
        g_x: &mut [MaybeUninit<F>],
        add: bool,
    ) {
        let theta = self.threshold;
        self.surrogate_slopes(vp, false, &mut w.slope);
        let detach = if self.detach_reset { F::zero() } else { F::one() };
        let step = Step { theta, detach, vp, previous: previous.unwrap_or(&[]), g_out, slope: &w.slope, b };
        let zero = self.reset == SpikeReset::Zero;
        let (g_v, g_b) = (&mut c.g_v[..], &mut c.g_b[..]);
        // SAFETY: with `add`, the caller guarantees the slots written.
        unsafe {
            match (zero, previous.is_some(), add) {
                (false, false, false) => step.back::<false, false, false>(g_v, g_b, g_x),
                (false, false, true) => step.back::<false, false, true>(g_v, g_b, g_x),
                (false, true, false) => step.back::<false, true, false>(g_v, g_b, g_x),
                (false, true, true) => step.back::<false, true, true>(g_v, g_b, g_x),
                (true, false, false) => step.back::<true, false, false>(g_v, g_b, g_x),
                (true, false, true) => step.back::<true, false, true>(g_v, g_b, g_x),
                (true, true, false) => step.back::<true, true, false>(g_v, g_b, g_x),
                (true, true, true) => step.back::<true, true, true>(g_v, g_b, g_x),
            }
        }
        w.s_ready = false;
    }

    /// [`Spiking::back_step`] for Alif: the threshold of each step is theta + b a[t], and `c.g_i`
    /// carries the gradient reaching a[t + 1] (see the module documentation).
    #[allow(clippy::too_many_arguments)]
    fn back_step_adaptive(
        &self,
        adapt: Adaptation<F>,
        tape: &SpikingTape<F>,
        t: usize,
        row: impl Fn(usize) -> std::ops::Range<usize>,
        g_out: &[F],
        b: &[F],
        c: &mut BackCarry<F>,
        w: &mut StepScratch<F>,
        smooth: bool,
        learn: bool,
        start: Option<(&[F], &[F])>,
    ) {
        let (vp, adapted) = (&tape.v_pre[row(t)], &tape.current[row(t)]);
        let theta = |a: F| self.threshold + adapt.b * a;
        for ((x, &v), &a) in w.slope.iter_mut().zip(vp).zip(adapted) {
            *x = v - theta(a);
        }
        if smooth {
            w.slope.iter_mut().for_each(|x| *x = F::of(self.surrogate.derivative(x.to_f64())));
        } else {
            F::surrogate_derivatives(&self.derivative, &mut w.slope);
        }
        let detach = if self.detach_reset { F::zero() } else { F::one() };
        for k in 0..g_out.len() {
            let th = theta(adapted[k]);
            let s = self.spike(vp[k] - th, smooth);
            let (dv_dvp, dv_ds, dv_dtheta) = match self.reset {
                SpikeReset::Subtract => (F::one(), -th, -s),
                SpikeReset::Zero => (F::one() - s, -vp[k], F::zero()),
            };
            let g_s = g_out[k] + detach * c.g_v[k] * dv_ds + c.g_i[k];
            w.g_vp[k] = c.g_v[k] * dv_dvp + g_s * w.slope[k];
            let g_theta = detach * c.g_v[k] * dv_dtheta - g_s * w.slope[k];
            c.g_i[k] = adapt.rho * c.g_i[k] + adapt.b * g_theta;
        }
        if learn && t > 0 {
            let (previous, adapted) = (&tape.v_pre[row(t - 1)], &tape.current[row(t - 1)]);
            for ((acc, &g), (&v, &a)) in c.g_b.iter_mut().zip(&w.g_vp).zip(previous.iter().zip(adapted)) {
                let th = theta(a);
                *acc += g * self.reset_one(v, self.spike(v - th, smooth), th);
            }
        } else if let (true, 0, Some((v_start, _))) = (learn, t, start) {
            for ((acc, &g), &v) in c.g_b.iter_mut().zip(&w.g_vp).zip(v_start) {
                *acc += g * v;
            }
        }
        for ((g, &b), &d) in c.g_v.iter_mut().zip(b).zip(&w.g_vp) {
            *g = b * d;
        }
    }

    /// The output of the step whose tape rows are `range`: spikes (Alif's against that step's
    /// threshold), or Li's membrane.
    fn output_of(&self, tape: &SpikingTape<F>, range: std::ops::Range<usize>, smooth: bool, out: &mut [F]) {
        let vp = &tape.v_pre[range.clone()];
        match self.adaptation {
            Some(adapt) => {
                for ((o, &v), &a) in out.iter_mut().zip(vp).zip(&tape.current[range]) {
                    *o = self.spike(v - (self.threshold + adapt.b * a), smooth);
                }
            }
            None if self.fires() => self.spikes(vp, smooth, out),
            None => out.copy_from_slice(vp),
        }
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
        if let Some(r) = &self.recurrent {
            out.push(("recurrent_weight", &r.weight));
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
        if let Some(r) = &mut self.recurrent {
            out.push(&mut r.weight);
        }
        out
    }
}

/// Event-driven recurrent input: for every sample (a column of `input`, n long) and every neuron
/// j that fired in `spikes` (0/1), adds column j of `w`. Spikes are sparse (a few percent of
/// neurons a step), so this costs a fraction of the dense product. Samples run in parallel; each
/// sample's sum runs over j in order, so the result does not depend on the thread count.
fn add_fired_columns<F: Real>(input: &mut [F], w: &DMatrix<F>, spikes: &[F], n: usize) {
    let w = w.as_slice();
    input.par_chunks_mut(n).zip(spikes.par_chunks(n)).for_each(|(column, fired)| {
        for (j, _) in fired.iter().enumerate().filter(|(_, s)| **s != F::zero()) {
            for (x, &wv) in column.iter_mut().zip(&w[j * n..(j + 1) * n]) {
                *x += wv;
            }
        }
    });
}

/// The recurrent weights' gradient of one step, event-driven: column j of `dw` gains the input
/// gradient of every sample in which neuron j fired the step before (0/1 spikes). Columns run
/// in parallel, each over the samples in order.
fn add_gradient_of_fired<F: Real>(dw: &mut DMatrix<F>, g_in: &[F], spikes: &[F], n: usize) {
    let batch = spikes.len() / n.max(1);
    dw.as_mut_slice().par_chunks_mut(n).enumerate().for_each(|(j, column)| {
        for b in (0..batch).filter(|&b| spikes[b * n + j] != F::zero()) {
            for (d, &g) in column.iter_mut().zip(&g_in[b * n..(b + 1) * n]) {
                *d += g;
            }
        }
    });
}

/// [`Spiking::forward_step`] of a layer of hard spikes without a synaptic current or an
/// adaptation (reset to zero or by subtraction), in one loop over the elements: the same
/// arithmetic in the same order, each element kept in registers between the membrane update,
/// the spike and the reset. Out of line, so that the compiler vectorises it on its own.
#[inline(never)]
fn forward_plain<const ZERO: bool, F: Real>(
    theta: F,
    input: &[F],
    b: &[F],
    v: &mut [F],
    vp: &mut [MaybeUninit<F>],
    y: &mut [MaybeUninit<F>],
) {
    let n = v.len();
    let (input, b, vp, y) = (&input[..n], &b[..n], &mut vp[..n], &mut y[..n]);
    let (one, zero) = (F::one(), F::zero());
    for k in 0..n {
        let p = b[k] * v[k] + input[k];
        let s = if p >= theta { one } else { zero };
        vp[k] = MaybeUninit::new(p);
        y[k] = MaybeUninit::new(s);
        v[k] = if ZERO { p * (one - s) } else { p - theta * s };
    }
}

/// [`forward_plain`] for the layer's `reset`.
fn forward_plain_with<F: Real>(
    reset: SpikeReset,
    theta: F,
    input: &[F],
    b: &[F],
    v: &mut [F],
    vp: &mut [MaybeUninit<F>],
    y: &mut [MaybeUninit<F>],
) {
    match reset {
        SpikeReset::Subtract => forward_plain::<false, F>(theta, input, b, v, vp, y),
        SpikeReset::Zero => forward_plain::<true, F>(theta, input, b, v, vp, y),
    }
}

/// What [`Spiking::back_step_plain`] reads for one step of a piece.
struct Step<'a, F> {
    theta: F,
    /// 0 with `detach_reset`, else 1.
    detach: F,
    vp: &'a [F],
    /// v'[t - 1], read where the decays are learnt.
    previous: &'a [F],
    g_out: &'a [F],
    slope: &'a [F],
    b: &'a [F],
}

impl<F: Real> Step<'_, F> {
    /// One loop per variant (reset to zero or by subtraction, decay gradient or not, input
    /// gradient written or added), so that no branch is left inside for the compiler to keep
    /// it from vectorising; out of line for the same reason.
    #[inline(never)]
    ///
    /// # Safety
    /// With ADD, every slot of `g_x` must have been written.
    unsafe fn back<const ZERO: bool, const DECAY: bool, const ADD: bool>(
        &self,
        g_v: &mut [F],
        g_b: &mut [F],
        g_x: &mut [MaybeUninit<F>],
    ) {
        let n = g_x.len();
        let (vp, g_out, slope, b, g_v) =
            (&self.vp[..n], &self.g_out[..n], &self.slope[..n], &self.b[..n], &mut g_v[..n]);
        let (previous, g_b) = if DECAY { (&self.previous[..n], &mut g_b[..n]) } else { (&[][..], &mut [][..]) };
        let (one, zero, theta) = (F::one(), F::zero(), self.theta);
        for k in 0..n {
            let (dv_dvp, dv_ds) = if ZERO {
                let s = if vp[k] >= theta { one } else { zero };
                (one - s, -vp[k])
            } else {
                (one, -theta)
            };
            let g_s = g_out[k] + self.detach * g_v[k] * dv_ds;
            let g_vp = g_v[k] * dv_dvp + g_s * slope[k];
            if DECAY {
                let p = previous[k];
                let s = if p >= theta { one } else { zero };
                let v = if ZERO { p * (one - s) } else { p - theta * s };
                g_b[k] += g_vp * v;
            }
            g_v[k] = b[k] * g_vp;
            // SAFETY (ADD): written slots, as the caller guarantees.
            g_x[k] = MaybeUninit::new(if ADD { unsafe { g_x[k].assume_init() + g_vp } } else { g_vp });
        }
    }
}

/// A layer's state where one segment of a sequence ends and the next starts, per element of a
/// step (features x samples): the membranes after the reset, CubaLif's current or Alif's
/// adaptation, and the last step's output (a recurrent layer's input at the next step).
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentState<F> {
    pub v: Vec<F>,
    pub i: Vec<F>,
    pub y: Vec<F>,
}

impl<F: Real> SegmentState<F> {
    fn at_rest(block: usize) -> Self {
        SegmentState { v: vec![F::zero(); block], i: vec![F::zero(); block], y: vec![F::zero(); block] }
    }

    fn piece(&self, first: usize, len: usize) -> (&[F], &[F]) {
        (&self.v[first..first + len], &self.i[first..first + len])
    }
}

/// What the backward pass carries from a segment of a sequence to the one before it: per piece
/// of elements the gradients reaching the state and the decays' sums, the gradient of the next
/// segment's first input (which reaches this one's last output through recurrent weights), and
/// the recurrent weights' gradient so far. Cleared of the first three between segments, it
/// truncates the backward pass there ([`SegmentCarry::truncate`]).
#[derive(Debug, Clone)]
pub struct SegmentCarry<F> {
    pieces: Vec<BackCarry<F>>,
    next_input: Vec<F>,
    recurrent: Option<DMatrix<F>>,
}

impl<F: Real> SegmentCarry<F> {
    /// Stops the gradient at the segment boundary: what reaches the state and the next input
    /// is dropped; the parameter gradients summed so far stay.
    pub fn truncate(&mut self) {
        for c in &mut self.pieces {
            c.g_v.iter_mut().chain(c.g_i.iter_mut()).for_each(|g| *g = F::zero());
        }
        self.next_input.clear();
    }
}

/// A layer's state between steps when it is run one step at a time ([`Spiking::step`]).
#[derive(Debug, Clone)]
pub struct Stepper<F> {
    /// Per neuron: the membrane and synaptic decays.
    b: Vec<F>,
    a: Option<Vec<F>>,
    /// The membrane after the reset, CubaLif's current, and the last step's v'.
    pub v: Vec<F>,
    i: Vec<F>,
    v_pre: Vec<F>,
    /// The last step's output: 0/1 spikes, or Li's membrane.
    pub output: Vec<F>,
}

impl<F> Stepper<F> {
    /// The last step's v' (before the reset).
    pub fn v_pre(&self) -> &[F] {
        &self.v_pre
    }

    /// The second state carried to the next step: CubaLif's current, Alif's adaptation a[t + 1].
    pub fn carried(&self) -> &[F] {
        &self.i
    }
}

/// What the backward pass carries from one step to the one before, for a piece of elements.
#[derive(Debug, Clone)]
struct BackCarry<F> {
    /// Per element, summed over the steps: dL/dbeta and dL/dalpha (empty when not learnt).
    g_b: Vec<F>,
    g_a: Vec<F>,
    /// The gradients reaching v[t] and i[t] from step t + 1 (i: CubaLif's current, Alif's
    /// adaptation; empty for a layer without either).
    g_v: Vec<F>,
    g_i: Vec<F>,
}

impl<F: Real> BackCarry<F> {
    fn new(len: usize, learn: bool, synaptic: bool, second_state: bool) -> Self {
        let zeros = |n: usize| vec![F::zero(); n];
        BackCarry {
            g_b: zeros(if learn { len } else { 0 }),
            g_a: zeros(if learn && synaptic { len } else { 0 }),
            g_v: zeros(len),
            g_i: zeros(if second_state { len } else { 0 }),
        }
    }
}

/// A thread's buffers for recomputing the v' of a piece of a layer that keeps no tape (see
/// [`SpikingTape`]), kept from piece to piece.
#[derive(Debug)]
struct Replay<F> {
    /// The piece's tape, every step's v' (block: the piece's length).
    tape: SpikingTape<F>,
    v: Vec<F>,
    spikes: Vec<MaybeUninit<F>>,
}

impl<F> Default for Replay<F> {
    fn default() -> Self {
        Replay {
            tape: SpikingTape { v_pre: Vec::new(), current: Vec::new(), block: 0 },
            v: Vec::new(),
            spikes: Vec::new(),
        }
    }
}

impl<F: Real> Replay<F> {
    /// The v' of every step of a piece of `b.len()` elements of the usual layer, from its input
    /// (`x` from the piece's first element, a step every `step_stride` values) and decays `b`,
    /// as the forward pass computed them (the same loop from rest), into [`Replay::tape`].
    fn run(&mut self, layer: &Spiking<F>, x: &[F], step_stride: usize, b: &[F], steps: usize) {
        let (len, tape) = (b.len(), &mut self.tape);
        tape.block = len;
        tape.v_pre.resize(steps * len, F::zero());
        self.v.clear();
        self.v.resize(len, F::zero());
        self.spikes.resize(len, MaybeUninit::uninit());
        for (t, vp) in tape.v_pre.chunks_exact_mut(len).enumerate() {
            let input = &x[t * step_stride..][..len];
            // SAFETY: forward_plain writes every one of the piece's slots.
            let vp = unsafe { fresh::as_slots(vp) };
            forward_plain_with(layer.reset, layer.threshold, input, b, &mut self.v, vp, &mut self.spikes);
        }
    }
}

/// What one step back through a piece works on and does not carry: dL/dv'[t], the surrogate
/// slopes, the spikes, and v[t - 1]. One per thread, reused piece after piece, so it stays in
/// the core's cache instead of a fresh, zeroed block per piece of every layer.
#[derive(Debug)]
struct StepScratch<F> {
    g_vp: Vec<F>,
    slope: Vec<F>,
    s: Vec<F>,
    v_before: Vec<F>,
    /// Whether `s` holds the spikes of the step about to be taken back (computed as the
    /// previous step's by the decay gradient of the step after it).
    s_ready: bool,
}

impl<F> Default for StepScratch<F> {
    fn default() -> Self {
        StepScratch { g_vp: Vec::new(), slope: Vec::new(), s: Vec::new(), v_before: Vec::new(), s_ready: false }
    }
}

impl<F: Real> StepScratch<F> {
    /// Ready for a piece of `len` elements, holding nothing of the piece before.
    fn fit(&mut self, len: usize) {
        for v in [&mut self.g_vp, &mut self.slope, &mut self.s, &mut self.v_before] {
            v.resize(len, F::zero());
        }
        self.s_ready = false;
    }
}

/// `data` (steps blocks of `block` elements) cut into pieces of `piece` elements: for each
/// piece, its slice of every step, so a piece can walk through time on its own. Always
/// `block / piece` pieces (rounded up), each with no slices where `data` is empty (a buffer a
/// layer does not keep).
fn pieces<F>(data: &mut [F], block: usize, piece: usize) -> Vec<Vec<&mut [F]>> {
    let count = block.div_ceil(piece);
    let mut out: Vec<Vec<&mut [F]>> = (0..count).map(|_| Vec::new()).collect();
    if block == 0 {
        return out;
    }
    for step in data.chunks_mut(block) {
        for (p, part) in step.chunks_mut(piece).enumerate() {
            out[p].push(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::pool;

    /// A Lif layer of the default surrogate, without recurrence or adaptation.
    fn lif<F: Gemm>(
        shape: Shape,
        beta: Decay<F>,
        threshold: F,
        (reset, detach_reset): (SpikeReset, bool),
    ) -> Spiking<F> {
        Spiking {
            kind: Kind::Lif,
            beta,
            alpha: None,
            threshold,
            reset,
            detach_reset,
            surrogate: Surrogate::default(),
            derivative: DerivativeTable::new(Surrogate::default()),
            shape,
            recurrent: None,
            adaptation: None,
        }
    }

    #[test]
    fn event_driven_recurrent_products_equal_the_dense_ones() {
        let (n, batch) = (7, 5);
        let w = DMatrix::<f64>::from_fn(n, n, |i, j| ((i * 13 + j * 7) % 11) as f64 * 0.1 - 0.5);
        // 0/1 spikes, some columns silent.
        let spikes = DMatrix::<f64>::from_fn(n, batch, |i, b| ((i * 3 + b * 5) % 4 == 0) as u8 as f64);
        let start = DMatrix::<f64>::from_fn(n, batch, |i, b| (i + b) as f64 * 0.25);
        let mut input = start.clone();
        add_fired_columns(input.as_mut_slice(), &w, spikes.as_slice(), n);
        // The same sums in another order: equal to rounding.
        assert!((input - (&start + &w * &spikes)).amax() < 1e-12);
        let g = DMatrix::<f64>::from_fn(n, batch, |i, b| (i as f64 - b as f64) * 0.3);
        let mut dw = w.clone();
        add_gradient_of_fired(&mut dw, g.as_slice(), spikes.as_slice(), n);
        let expected = &w + &g * spikes.transpose();
        assert!((dw - expected).amax() < 1e-12);
    }

    #[test]
    fn plain_steps_equal_the_general_ones_bit_for_bit() {
        // Elements over two pieces; spikes at many steps; a learnt decay per channel.
        let shape = Shape::Image { channels: 3, height: 40, width: 40 };
        let (steps, batch) = (5, 2);
        let n = shape.size();
        for (reset, detach_reset, learn, input) in [
            (SpikeReset::Subtract, false, Learnable::PerChannel, StepInput::EachStep),
            (SpikeReset::Zero, false, Learnable::PerChannel, StepInput::Same),
            (SpikeReset::Subtract, true, Learnable::Fixed, StepInput::Same),
            (SpikeReset::Zero, true, Learnable::PerLayer, StepInput::EachStep),
        ] {
            let layer = lif::<f32>(shape, Decay::new(3.0, 1.0, learn, 3), 0.8, (reset, detach_reset));
            let columns = if input == StepInput::Same { batch } else { steps * batch };
            let x = DMatrix::from_fn(n, columns, |i, j| ((i * 31 + j * 17) % 23) as f32 * 0.09 - 0.3);
            let dy = DMatrix::from_fn(n, steps * batch, |i, j| ((i * 7 + j * 5) % 13) as f32 * 0.1 - 0.6);
            let (y, replayed) = layer.forward(&x, steps, false, input);
            assert_eq!(
                replayed.replays(),
                input == StepInput::Same,
                "v' recomputed from an input the same at every step"
            );
            // The same pass keeping its v' (as a segment of a sequence does).
            let (kept_y, tape, _, _) = layer.forward_pieces(&x, steps, false, None, input, true, false, None);
            assert!(kept_y == y && !tape.replays());
            // Forward: the plain loop against the general step, which the stepper takes.
            let block = n * batch;
            let mut stepper = layer.stepper(block);
            for t in 0..steps {
                let at = if input == StepInput::Same { 0 } else { t * block };
                layer.step(&mut stepper, &x.as_slice()[at..at + block]);
                assert!(stepper.output == y.as_slice()[t * block..(t + 1) * block], "{reset:?}: spikes, step {t}");
                assert!(stepper.v_pre() == &tape.v_pre[t * block..(t + 1) * block], "{reset:?}: v', step {t}");
            }
            // Backward: plain and general steps, each from the kept v' and from v' recomputed.
            let mut grads = Vec::new();
            for (allow_plain, tape) in [(true, &tape), (false, &tape), (true, &replayed), (false, &replayed)] {
                let mut carry = layer.carry(n * batch);
                let dx = layer.backward_pieces(tape, &x, &dy, steps, false, None, &mut carry, input, None, allow_plain);
                grads.push((dx, layer.carried_gradients(&carry)));
            }
            let same = grads.iter().all(|g| *g == grads[0]);
            assert!(same, "{reset:?}, detach {detach_reset}, {learn:?}, {input:?}");
        }
    }

    #[test]
    fn pooling_in_place_equals_the_layer_then_max_pooling_bit_for_bit() {
        // Pieces of several pairs of rows, one over a sample's end (40 x 40 x 3 is 4800 values,
        // a piece 4080); an odd width, whose last column no window reads; graded and 0/1
        // gradients over the pooled outputs.
        for (shape, reset, learn, input) in [
            (
                Shape::Image { channels: 3, height: 40, width: 40 },
                SpikeReset::Subtract,
                Learnable::PerChannel,
                StepInput::Same,
            ),
            (
                Shape::Image { channels: 2, height: 6, width: 7 },
                SpikeReset::Zero,
                Learnable::PerLayer,
                StepInput::EachStep,
            ),
            (
                Shape::Image { channels: 4, height: 2, width: 2 },
                SpikeReset::Subtract,
                Learnable::Fixed,
                StepInput::EachStep,
            ),
        ] {
            let (steps, batch) = (4, 3);
            let n = shape.size();
            let layer = lif::<f32>(shape, Decay::new(2.0, 1.0, learn, shape.channels()), 0.5, (reset, false));
            assert!(layer.pools_in_place(false) && !layer.pools_in_place(true));
            let columns = if input == StepInput::Same { batch } else { steps * batch };
            let x = DMatrix::from_fn(n, columns, |i, j| ((i * 31 + j * 17) % 23) as f32 * 0.07 - 0.2);
            let (y, tape) = layer.forward(&x, steps, false, input);
            let (pooled, winners) = pool::max_forward(shape, 2, &y);
            let (in_place, won, in_place_tape) = layer.forward_pooled(&x, steps, input, None);
            assert_eq!((&in_place, &won), (&pooled, &winners), "{shape}: pooled output and winners");
            assert_eq!(in_place_tape.replays(), input == StepInput::Same, "{shape}: v' recomputed");
            let d_pooled =
                DMatrix::from_fn(pooled.nrows(), pooled.ncols(), |i, j| ((i * 7 + j * 5) % 13) as f32 * 0.1 - 0.6);
            let dy = pool::max_backward(shape, 2, &winners, &d_pooled);
            let mut carry = layer.carry(tape.block);
            let dx = layer.backward_into(&tape, &x, &dy, steps, false, None, &mut carry, input, None);
            let mut in_place_carry = layer.carry(tape.block);
            let in_place_dx = layer.backward_into(
                &in_place_tape,
                &x,
                &d_pooled,
                steps,
                false,
                None,
                &mut in_place_carry,
                input,
                Some(&winners),
            );
            assert_eq!(in_place_dx, dx, "{shape}: input gradient");
            assert_eq!(layer.carried_gradients(&in_place_carry), layer.carried_gradients(&carry), "{shape}: decays");
        }
    }

    #[test]
    fn a_layer_normalising_its_input_equals_batch_norm_then_the_layer_bit_for_bit() {
        // Channels over a piece's end (40 x 40 x 3 per sample, pieces of 4080), and a small
        // image; batch norm with gamma and beta away from 1 and 0.
        for shape in
            [Shape::Image { channels: 3, height: 40, width: 40 }, Shape::Image { channels: 2, height: 6, width: 7 }]
        {
            let (steps, batch, n) = (3, 2, shape.size());
            let layer = lif::<f32>(
                shape,
                Decay::new(2.0, 1.0, Learnable::PerChannel, shape.channels()),
                0.5,
                (SpikeReset::Zero, false),
            );
            let mut bn = crate::nn::norm::BatchNorm::<f32>::new(shape.channels(), shape.positions(), 0.1, 1e-5);
            bn.gamma.iter_mut().enumerate().for_each(|(k, g)| *g = 0.7 + 0.3 * k as f32);
            bn.beta.iter_mut().enumerate().for_each(|(k, b)| *b = 0.1 - 0.2 * k as f32);
            let x = DMatrix::from_fn(n, steps * batch, |i, j| ((i * 31 + j * 17) % 23) as f32 * 0.37 - 3.0);
            let mut cache = crate::nn::norm::NormCache::default();
            let normalised = bn.forward_train(&x, &mut cache, &crate::ranks::Alone);
            let apart = layer.forward_pooled(&normalised, steps, StepInput::EachStep, None);
            let together = layer.forward_pooled(&x, steps, StepInput::EachStep, Some(&bn.channel_norms(&cache)));
            assert_eq!((&together.0, &together.1), (&apart.0, &apart.1), "{shape}: pooled spikes and winners");
            assert_eq!(together.2.v_pre, apart.2.v_pre, "{shape}: membranes");
        }
    }

    #[test]
    fn channel_runs_and_decays_per_element_match_their_definition() {
        let shape = Shape::Image { channels: 3, height: 2, width: 5 };
        let layer =
            lif::<f64>(shape, Decay::new(5.0, 1.0, Learnable::PerChannel, 3), 1.0, (SpikeReset::Subtract, false));
        let factors = [0.1, 0.2, 0.3];
        for first in [0, 7, 29, 30, 61] {
            let channels: Vec<usize> = layer
                .channel_runs(first, 45)
                .flat_map(|(channel, count)| std::iter::repeat_n(channel, count))
                .collect();
            let decays = layer.decays(first, 45, &factors);
            assert_eq!(channels.len(), 45);
            for (k, (&c, &d)) in channels.iter().zip(&decays).enumerate() {
                let expected = ((first + k) % 30) / 10;
                assert_eq!((c, d), (expected, factors[expected]), "element {}", first + k);
            }
        }
    }
}
