//! Batch normalisation per channel (per feature of a vector), as PyTorch's BatchNorm1d/2d:
//! batch statistics while training (biased variance to normalise, unbiased for the running
//! estimate), running statistics at evaluation.

use nalgebra::DMatrix;

use crate::train::net::Real;

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

/// What the backward pass needs from a training forward pass.
#[derive(Debug, Clone)]
pub struct NormCache<F> {
    pub normalised: Vec<F>,
    pub inv_std: Vec<F>,
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

    /// Calls `f(channel, block)` for every channel's block of positions of every sample.
    fn blocks<'a>(&self, x: &'a [F]) -> impl Iterator<Item = (usize, &'a [F])> {
        let c = self.channels();
        x.chunks(self.positions).enumerate().map(move |(i, b)| (i % c, b))
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

    /// Training: normalises with the batch statistics and updates the running ones.
    pub fn forward_train(&mut self, x: &DMatrix<F>, cache: &mut NormCache<F>) -> DMatrix<F> {
        let c = self.channels();
        let count = F::of((x.ncols() * self.positions) as f64);
        let mut mean = vec![F::zero(); c];
        for (k, block) in self.blocks(x.as_slice()) {
            mean[k] += block.iter().copied().fold(F::zero(), |a, b| a + b);
        }
        mean.iter_mut().for_each(|m| *m /= count);
        let mut var = vec![F::zero(); c];
        for (k, block) in self.blocks(x.as_slice()) {
            var[k] += block.iter().fold(F::zero(), |a, &v| a + (v - mean[k]) * (v - mean[k]));
        }
        var.iter_mut().for_each(|v| *v /= count);
        cache.inv_std = var.iter().map(|&v| F::one() / (v + self.eps).sqrt()).collect();
        let mut y = x.clone();
        cache.normalised.clear();
        cache.normalised.reserve(x.len());
        for (i, block) in y.as_mut_slice().chunks_mut(self.positions).enumerate() {
            let k = i % c;
            for v in block {
                let n = (*v - mean[k]) * cache.inv_std[k];
                cache.normalised.push(n);
                *v = self.gamma[k] * n + self.beta[k];
            }
        }
        let m = self.momentum;
        let unbias = if count > F::one() { count / (count - F::one()) } else { F::one() };
        for k in 0..c {
            self.running_mean[k] = (F::one() - m) * self.running_mean[k] + m * mean[k];
            self.running_var[k] = (F::one() - m) * self.running_var[k] + m * var[k] * unbias;
        }
        y
    }

    /// Gradients of gamma and beta, and of the input, from a training forward pass.
    pub fn backward(&self, cache: &NormCache<F>, dy: &DMatrix<F>) -> (DMatrix<F>, DMatrix<F>, DMatrix<F>) {
        let c = self.channels();
        let count = F::of((dy.ncols() * self.positions) as f64);
        let mut dgamma = DMatrix::zeros(c, 1);
        let mut dbeta = DMatrix::zeros(c, 1);
        for ((k, g), n) in self.blocks(dy.as_slice()).zip(cache.normalised.chunks(self.positions)) {
            for (&g, &n) in g.iter().zip(n) {
                dgamma[k] += g * n;
                dbeta[k] += g;
            }
        }
        let mut dx = dy.clone();
        for (i, (block, n)) in dx.as_mut_slice().chunks_mut(self.positions).zip(cache.normalised.chunks(self.positions)).enumerate() {
            let k = i % c;
            let scale = self.gamma[k] * cache.inv_std[k] / count;
            for (g, &n) in block.iter_mut().zip(n) {
                *g = scale * (count * *g - dbeta[k] - n * dgamma[k]);
            }
        }
        (dgamma, dbeta, dx)
    }
}
