//! Batch normalisation per channel (per feature of a vector), as PyTorch's BatchNorm1d/2d:
//! batch statistics while training (biased variance to normalise, unbiased for the running
//! estimate), running statistics at evaluation.
//!
//! Where MPI ranks each hold a share of the batch, the statistics are the whole batch's, as
//! PyTorch's SyncBatchNorm computes them: the ranks' per-channel sums are exchanged and added in
//! rank order, once forward (the values and their squares, see [`Moments`]) and once backward.

use std::mem::MaybeUninit;

use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::nn::block_sums::channel_sums_of;
use crate::nn::{Real, fresh};
use crate::ranks::{Exchange, WordReader, Words};

#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm<F> {
    pub gamma: DMatrix<F>,
    pub beta: DMatrix<F>,
    pub running_mean: DMatrix<F>,
    pub running_var: DMatrix<F>,
    pub momentum: F,
    pub eps: F,
    /// Positions per channel (height x width; 1 for a vector).
    pub positions: usize,
}

/// What the backward pass needs from a training forward pass, besides its input: the backward
/// pass normalises the input again rather than keep a copy of its normalised values, by the
/// same arithmetic (the same bits): a third of the writing of the forward pass, and a batch of
/// the spiking CNN's two layers (38 MB), saved for two operations per value.
#[derive(Debug, Clone)]
pub struct NormCache<F> {
    pub inv_std: Vec<F>,
    /// Values per channel in the whole batch (all ranks' shares).
    pub count: F,
    /// This rank's part of the batch (its values over `count`; 1 in one process).
    pub share: F,
    /// The batch's mean and (biased) variance per channel, for [`BatchNorm::update_running`].
    pub mean: Vec<F>,
    pub var: Vec<F>,
}

impl<F: Real> Default for NormCache<F> {
    fn default() -> Self {
        NormCache { inv_std: Vec::new(), count: F::zero(), share: F::one(), mean: Vec::new(), var: Vec::new() }
    }
}

/// Every rank's `local`, added element by element in rank order; one process's values as they
/// are.
fn sum_over_ranks(ranks: &dyn Exchange, local: Vec<f64>) -> Vec<f64> {
    if ranks.size() == 1 {
        return local;
    }
    let mut words = Words::default();
    local.iter().for_each(|&x| words.push_f64(x));
    let all = ranks.all_gather(&words.0);
    let mut read = WordReader::new(&all);
    let mut total = vec![0.0f64; local.len()];
    for _ in 0..ranks.size() {
        total.iter_mut().for_each(|t| *t += read.f64());
    }
    total
}

/// One rank's share of a batch in the sums its statistics come from, per channel: the sums of
/// the values less a shift, and of their squares, in f64, in one pass. The shift is a value of
/// the channel (the first of the share), near the mean, so that the variance as mean square
/// less squared mean cancels about as little as two passes (the mean, then the squares about
/// it) would; it also moves with the values, so that the statistics of x + b are those of x,
/// shifted, to rounding (a bias before batch norm has no gradient, and a finite difference
/// sees none).
struct Moments {
    /// Values per channel.
    count: f64,
    shift: Vec<f64>,
    sum: Vec<f64>,
    squares: Vec<f64>,
}

impl Moments {
    fn of<F: Real>(x: &[F], channels: usize, positions: usize) -> Self {
        let shift: Vec<f64> = (0..channels).map(|k| x.get(k * positions).map_or(0.0, |v| v.to_f64())).collect();
        let [sum, squares] = channel_sums_of((x, x), channels, positions, |k| {
            let shift = shift[k];
            move |v: F, _| {
                let d = v.to_f64() - shift;
                [d, d * d]
            }
        });
        Moments { count: (x.len() / channels.max(1)) as f64, shift, sum, squares }
    }

    /// The whole batch's sums from every rank's share (in one exchange), about the shift of the
    /// first rank with values: each share's sums moved to that shift by the usual identities
    /// (Chan, Golub and LeVeque's pairwise update), then added in rank order; alike on every
    /// rank. One process's as they are.
    fn over_ranks(self, ranks: &dyn Exchange) -> Self {
        if ranks.size() == 1 {
            return self;
        }
        let mut words = Words::default();
        words.push_f64(self.count);
        [&self.shift, &self.sum, &self.squares].into_iter().flatten().for_each(|&v| words.push_f64(v));
        let all = ranks.all_gather(&words.0);
        let mut read = WordReader::new(&all);
        let c = self.shift.len();
        let shares: Vec<Moments> = (0..ranks.size())
            .map(|_| {
                let count = read.f64();
                let mut next = || (0..c).map(|_| read.f64()).collect::<Vec<f64>>();
                let (shift, sum, squares) = (next(), next(), next());
                Moments { count, shift, sum, squares }
            })
            .collect();
        let shift = shares.iter().find(|m| m.count > 0.0).map_or(vec![0.0; c], |m| m.shift.clone());
        let mut whole = Moments { count: 0.0, shift, sum: vec![0.0; c], squares: vec![0.0; c] };
        for m in &shares {
            whole.count += m.count;
            for k in 0..c {
                let delta = m.shift[k] - whole.shift[k];
                whole.sum[k] += m.sum[k] + m.count * delta;
                whole.squares[k] += m.squares[k] + 2.0 * delta * m.sum[k] + m.count * delta * delta;
            }
        }
        whole
    }

    /// Channel k's mean and biased variance.
    fn mean_and_variance(&self, k: usize) -> (f64, f64) {
        let offset = self.sum[k] / self.count;
        (self.shift[k] + offset, (self.squares[k] / self.count - offset * offset).max(0.0))
    }
}

/// A value normalised with its channel's batch mean and 1 / standard deviation: the one
/// expression the forward and backward passes share, so that they get the same bits.
#[inline(always)]
fn normalise<F: Real>(x: F, mean: F, inv_std: F) -> F {
    (x - mean) * inv_std
}

/// One channel's normalisation in a training pass: gamma (x - mean) / std + beta, in the one
/// order of operations every training pass uses, whether batch norm writes its output or the
/// layer after it normalises its input as it reads it.
#[derive(Debug, Clone, Copy)]
pub struct ChannelNorm<F> {
    mean: F,
    inv_std: F,
    gamma: F,
    beta: F,
}

impl<F: Real> ChannelNorm<F> {
    #[inline(always)]
    pub fn apply(&self, x: F) -> F {
        self.gamma * normalise(x, self.mean, self.inv_std) + self.beta
    }
}

impl<F: Real> BatchNorm<F> {
    pub fn new(channels: usize, positions: usize, momentum: f64, eps: f64) -> Self {
        BatchNorm {
            gamma: DMatrix::from_element(channels, 1, F::one()),
            beta: DMatrix::zeros(channels, 1),
            running_mean: DMatrix::zeros(channels, 1),
            running_var: DMatrix::from_element(channels, 1, F::one()),
            momentum: F::of(momentum),
            eps: F::of(eps),
            positions,
        }
    }

    fn channels(&self) -> usize {
        self.gamma.nrows()
    }

    /// Evaluation as an affine map per channel, `x * scale + shift` (two roundings, as
    /// [`BatchNorm::forward_eval`] and the bit-packed thresholds compute it).
    pub fn eval_affine(&self) -> (Vec<F>, Vec<F>) {
        let c = self.channels();
        let scale: Vec<F> = (0..c).map(|k| self.gamma[k] / (self.running_var[k] + self.eps).sqrt()).collect();
        let shift: Vec<F> = (0..c).map(|k| self.beta[k] - self.running_mean[k] * scale[k]).collect();
        (scale, shift)
    }

    /// Evaluation: the running statistics.
    pub fn forward_eval(&self, x: &DMatrix<F>) -> DMatrix<F> {
        let c = self.channels();
        let (scale, shift) = self.eval_affine();
        let mut y = x.clone();
        for (i, block) in y.as_mut_slice().chunks_mut(self.positions).enumerate() {
            let k = i % c;
            block.iter_mut().for_each(|v| *v = *v * scale[k] + shift[k]);
        }
        y
    }

    /// Training: normalises with the statistics of the batch, whose other shares `ranks` hold;
    /// [`BatchNorm::update_running`] then takes them into the running ones (alike on every rank).
    pub fn forward_train(&self, x: &DMatrix<F>, cache: &mut NormCache<F>, ranks: &dyn Exchange) -> DMatrix<F> {
        self.statistics(x, cache, ranks);
        let c = self.channels();
        let norms = self.channel_norms(cache);
        let mut y = fresh::slots(x.len());
        let block = c * self.positions;
        y.par_chunks_mut(block).zip(x.as_slice().par_chunks(block)).for_each(|(y, x)| {
            let channels = y.chunks_mut(self.positions).zip(x.chunks(self.positions));
            for ((y, x), norm) in channels.zip(&norms) {
                y.iter_mut().zip(x).for_each(|(y, &x)| *y = MaybeUninit::new(norm.apply(x)));
            }
        });
        // SAFETY: the blocks of samples cover the buffer, and each wrote all c channels'
        // positions of its block.
        unsafe { fresh::written_matrix(x.nrows(), x.ncols(), y) }
    }

    /// The batch's statistics of a training pass into `cache`, without normalising: for a layer
    /// that normalises its input as it reads it ([`BatchNorm::channel_norms`]).
    pub fn statistics(&self, x: &DMatrix<F>, cache: &mut NormCache<F>, ranks: &dyn Exchange) {
        let c = self.channels();
        let mine = Moments::of(x.as_slice(), c, self.positions);
        let share = mine.count;
        let whole = mine.over_ranks(ranks);
        let (mean, var): (Vec<F>, Vec<F>) = (0..c)
            .map(|k| {
                let (mean, var) = whole.mean_and_variance(k);
                (F::of(mean), F::of(var))
            })
            .unzip();
        (cache.count, cache.share) = (F::of(whole.count), F::of(share / whole.count));
        cache.inv_std = var.iter().map(|&v| F::one() / (v + self.eps).sqrt()).collect();
        (cache.mean, cache.var) = (mean, var);
    }

    /// Per channel, the training pass's normalisation with the statistics in `cache`.
    pub fn channel_norms(&self, cache: &NormCache<F>) -> Vec<ChannelNorm<F>> {
        (0..self.channels())
            .map(|k| ChannelNorm {
                mean: cache.mean[k],
                inv_std: cache.inv_std[k],
                gamma: self.gamma[k],
                beta: self.beta[k],
            })
            .collect()
    }

    /// Moves the running statistics towards those of the batch a training pass normalised with.
    pub fn update_running(&mut self, cache: &NormCache<F>) {
        let (m, count) = (self.momentum, cache.count);
        let unbias = if count > F::one() { count / (count - F::one()) } else { F::one() };
        for k in 0..self.channels() {
            self.running_mean[k] = (F::one() - m) * self.running_mean[k] + m * cache.mean[k];
            self.running_var[k] = (F::one() - m) * self.running_var[k] + m * cache.var[k] * unbias;
        }
    }

    /// Gradients of gamma and beta over this rank's share, and of the input, from a training
    /// forward pass of `x`. `dy` is the gradient of this rank's loss, the mean over its share;
    /// the input's gradient takes the whole batch's sums, each rank's weighted by its share of
    /// the batch, in the same scale.
    pub fn backward(
        &self,
        cache: &NormCache<F>,
        x: &DMatrix<F>,
        dy: &DMatrix<F>,
        ranks: &dyn Exchange,
    ) -> (DMatrix<F>, DMatrix<F>, DMatrix<F>) {
        assert_eq!(x.shape(), dy.shape(), "batch norm's backward pass takes the input of its forward pass");
        let c = self.channels();
        let count = cache.count;
        let block = c * self.positions;
        let (mean, inv_std) = (&cache.mean, &cache.inv_std);
        // Both sums in one pass over the gradient and the input.
        let [dbeta, dgamma] = channel_sums_of((dy.as_slice(), x.as_slice()), c, self.positions, |k| {
            let (m, s) = (mean[k], inv_std[k]);
            move |g: F, x| [g.to_f64(), (g * normalise(x, m, s)).to_f64()]
        });
        let (dbeta, dgamma): (Vec<F>, Vec<F>) =
            (dbeta.into_iter().map(F::of).collect(), dgamma.into_iter().map(F::of).collect());
        let whole_batch;
        let (batch_dbeta, batch_dgamma): (&[F], &[F]) = if ranks.size() == 1 {
            (&dbeta, &dgamma)
        } else {
            // A rank with no samples (share 0) sends zeros and computes no input gradient.
            let share = cache.share;
            let weighted = dbeta.iter().chain(&dgamma).map(|&s| (s * share).to_f64()).collect();
            whole_batch = sum_over_ranks(ranks, weighted).into_iter().map(|s| F::of(s) / share).collect::<Vec<F>>();
            whole_batch.split_at(c)
        };
        let mut dx = fresh::slots(dy.len());
        let gamma = self.gamma.as_slice();
        dx.par_chunks_mut(block).zip(dy.as_slice().par_chunks(block)).zip(x.as_slice().par_chunks(block)).for_each(
            |((dx, g), x)| {
                for k in 0..c {
                    let (m, s) = (mean[k], inv_std[k]);
                    let scale = gamma[k] * s / count;
                    for i in k * self.positions..(k + 1) * self.positions {
                        let n = normalise(x[i], m, s);
                        dx[i] = MaybeUninit::new(scale * (count * g[i] - batch_dbeta[k] - n * batch_dgamma[k]));
                    }
                }
            },
        );
        // SAFETY: as in the forward pass, every block wrote all its values.
        let dx = unsafe { fresh::written_matrix(dy.nrows(), dy.ncols(), dx) };
        (DMatrix::from_vec(c, 1, dgamma), DMatrix::from_vec(c, 1, dbeta), dx)
    }
}
