//! Element-wise layers: Heaviside and sign units with surrogate derivatives, ReLU, dropout.

use std::mem::MaybeUninit;

use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::nn::{Real, fresh};
use crate::rng::Stream;
use crate::surrogate::{DerivativeTable, Surrogate};

/// Elements per parallel block (element-wise work is exact whatever the split).
const BLOCK: usize = 1 << 14;

/// A step unit: Heaviside (0/1) or sign (-1/+1 = 2 H - 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub surrogate: Surrogate,
    pub derivative: DerivativeTable,
    /// 0 for Heaviside, -1 for sign: the value below the step.
    pub low: f64,
}

/// How a step unit computes its forward value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepForward {
    /// H(x) (or sign).
    Hard,
    /// The smooth primitive S(x) (or 2 S(x) - 1).
    Smooth,
}

impl Step {
    pub fn new(surrogate: Surrogate, sign: bool) -> Self {
        Step { surrogate, derivative: DerivativeTable::new(surrogate), low: if sign { -1.0 } else { 0.0 } }
    }

    fn height(&self) -> f64 {
        1.0 - self.low
    }

    pub fn forward<F: Real>(&self, x: &DMatrix<F>, how: StepForward) -> DMatrix<F> {
        let (low, high) = (F::of(self.low), F::one());
        let mut y = x.clone();
        y.as_mut_slice().par_chunks_mut(BLOCK).for_each(|block| match how {
            StepForward::Hard => block.iter_mut().for_each(|v| *v = if *v >= F::zero() { high } else { low }),
            StepForward::Smooth => block
                .iter_mut()
                .for_each(|v| *v = F::of(self.low + self.height() * self.surrogate.primitive(v.to_f64()))),
        });
        y
    }

    /// dx = dy S'(x) (times 2 for sign). Smooth forward passes take the exact derivative of
    /// their primitive; hard ones the tabulated surrogate.
    pub fn backward<F: Real>(&self, x: &DMatrix<F>, dy: &DMatrix<F>, how: StepForward) -> DMatrix<F> {
        let derivative = |x: f64| match how {
            StepForward::Hard => self.derivative.derivative(x),
            StepForward::Smooth => self.surrogate.derivative(x),
        };
        let height = self.height();
        let mut dx = dy.clone();
        dx.as_mut_slice().par_chunks_mut(BLOCK).zip(x.as_slice().par_chunks(BLOCK)).for_each(|(g, x)| {
            for (g, &x) in g.iter_mut().zip(x) {
                *g *= F::of(height * derivative(x.to_f64()));
            }
        });
        dx
    }
}

pub fn relu_forward<F: Real>(x: &DMatrix<F>) -> DMatrix<F> {
    x.map(|v| if v > F::zero() { v } else { F::zero() })
}

pub fn relu_backward<F: Real>(x: &DMatrix<F>, dy: &DMatrix<F>) -> DMatrix<F> {
    dy.zip_map(x, |g, v| if v > F::zero() { g } else { F::zero() })
}

/// `x` times a dropout mask that covers one step of its columns (a multiple of the mask's
/// length), repeated for every step: the samples keep their masks at every step.
pub fn masked<F: Real>(x: &DMatrix<F>, mask: &[F]) -> DMatrix<F> {
    let mut y = fresh::slots(x.len());
    y.par_chunks_mut(mask.len().max(1)).zip(x.as_slice().par_chunks(mask.len().max(1))).for_each(|(y, x)| {
        for ((y, &x), &m) in y.iter_mut().zip(x).zip(mask) {
            *y = MaybeUninit::new(x * m);
        }
    });
    // SAFETY: the chunks cover y, and each wrote all its values.
    unsafe { fresh::written_matrix(x.nrows(), x.ncols(), y) }
}

/// [`masked`] in place (the backward pass owns the gradient it scales).
pub fn mask_in_place<F: Real>(x: &mut DMatrix<F>, mask: &[F]) {
    x.as_mut_slice().par_chunks_mut(mask.len().max(1)).for_each(|x| x.iter_mut().zip(mask).for_each(|(v, &m)| *v *= m));
}

/// One sample's inverted-dropout mask: 0 with probability `rate`, else 1 / (1 - rate).
pub fn dropout_mask<F: Real>(rate: f64, len: usize, stream: &mut Stream, mask: &mut [F]) {
    use rand::RngExt;
    let keep = F::of(1.0 / (1.0 - rate));
    for m in mask.iter_mut().take(len) {
        *m = if stream.random::<f64>() < rate { F::zero() } else { keep };
    }
}
