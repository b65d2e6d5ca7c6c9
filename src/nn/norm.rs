//! Batch normalisation per channel (per feature of a vector), as PyTorch's BatchNorm1d/2d:
//! batch statistics while training (biased variance to normalise, unbiased for the running
//! estimate), running statistics at evaluation.
//!
//! Where MPI ranks each hold a share of the batch, the statistics are the whole batch's, as
//! PyTorch's SyncBatchNorm computes them: the ranks' per-channel sums are exchanged and added in
//! rank order, twice forward (the mean, then the variance about it) and once backward.

use std::mem::MaybeUninit;

use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::nn::block_sums::{channel_sums, channel_sums_of};
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

/// Every rank's `local`, added element by element in rank order (in f64, then rounded once);
/// one process's values as they are.
fn sum_over_ranks<F: Real>(ranks: &dyn Exchange, local: Vec<F>) -> Vec<F> {
    if ranks.size() == 1 {
        return local;
    }
    let mut words = Words::default();
    local.iter().for_each(|x| words.push_f64(x.to_f64()));
    let all = ranks.all_gather(&words.0);
    let mut read = WordReader::new(&all);
    let mut total = vec![0.0f64; local.len()];
    for _ in 0..ranks.size() {
        total.iter_mut().for_each(|t| *t += read.f64());
    }
    total.into_iter().map(F::of).collect()
}

/// A value normalised with its channel's batch mean and 1 / standard deviation: the one
/// expression the forward and backward passes share, so that they get the same bits.
#[inline(always)]
fn normalise<F: Real>(x: F, mean: F, inv_std: F) -> F {
    (x - mean) * inv_std
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

    /// Per channel, the sum of `f(x, y, channel)` over positions and samples (see
    /// [`channel_sums`]).
    fn channel_sums(&self, x: &[F], y: &[F], f: impl Fn(F, F, usize) -> F + Sync) -> Vec<F> {
        channel_sums((x, y), self.channels(), self.positions, f)
    }

    /// Training: normalises with the statistics of the batch, whose other shares `ranks` hold;
    /// [`BatchNorm::update_running`] then takes them into the running ones (alike on every rank).
    pub fn forward_train(&self, x: &DMatrix<F>, cache: &mut NormCache<F>, ranks: &dyn Exchange) -> DMatrix<F> {
        let c = self.channels();
        let mine = F::of((x.ncols() * self.positions) as f64);
        let xs = x.as_slice();
        // The count travels with the first sums: one exchange for both.
        let mut sums = self.channel_sums(xs, xs, |v, _, _| v);
        sums.push(mine);
        let mut sums = sum_over_ranks(ranks, sums);
        let count = sums.pop().expect("the count was pushed");
        let mean: Vec<F> = sums.into_iter().map(|s| s / count).collect();
        let squares = self.channel_sums(xs, xs, |v, _, k| (v - mean[k]) * (v - mean[k]));
        let var: Vec<F> = sum_over_ranks(ranks, squares).into_iter().map(|s| s / count).collect();
        (cache.count, cache.share) = (count, mine / count);
        cache.inv_std = var.iter().map(|&v| F::one() / (v + self.eps).sqrt()).collect();
        let mut y = fresh::slots(x.len());
        let block = c * self.positions;
        let (gamma, beta, inv_std) = (self.gamma.as_slice(), self.beta.as_slice(), &cache.inv_std);
        y.par_chunks_mut(block).zip(x.as_slice().par_chunks(block)).for_each(|(y, x)| {
            for k in 0..c {
                let (m, s, g, b) = (mean[k], inv_std[k], gamma[k], beta[k]);
                for i in k * self.positions..(k + 1) * self.positions {
                    y[i] = MaybeUninit::new(g * normalise(x[i], m, s) + b);
                }
            }
        });
        (cache.mean, cache.var) = (mean, var);
        // SAFETY: the blocks of samples cover the buffer, and each wrote all c channels'
        // positions of its block.
        unsafe { fresh::written_matrix(x.nrows(), x.ncols(), y) }
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
        let [dbeta, dgamma] = channel_sums_of((dy.as_slice(), x.as_slice()), c, self.positions, |g, x, k| {
            [g, g * normalise(x, mean[k], inv_std[k])]
        });
        let whole_batch;
        let (batch_dbeta, batch_dgamma): (&[F], &[F]) = if ranks.size() == 1 {
            (&dbeta, &dgamma)
        } else {
            // A rank with no samples (share 0) sends zeros and computes no input gradient.
            let share = cache.share;
            let weighted = dbeta.iter().chain(&dgamma).map(|&s| s * share).collect();
            whole_batch = sum_over_ranks(ranks, weighted).into_iter().map(|s| s / share).collect::<Vec<F>>();
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
