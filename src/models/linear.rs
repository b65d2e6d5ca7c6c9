//! Dense and convolutional layers: weights (real or binarised) times the input, plus a bias.
//!
//! A batch is a `features x samples` column-major matrix, so one sample is one contiguous
//! column; an image sample is stored channel-major (channel, row, column), as PyTorch stores it,
//! so Flatten is free. A convolution unrolls each sample into a `positions x (channels k k)`
//! patch matrix (im2col) and multiplies it by the transposed filter matrix, which yields the
//! output directly in channel-major order.

use nalgebra::DMatrix;
use rayon::prelude::*;

use super::gemm::{Gemm, View, matmul, par_matmul};
use crate::spec::Shape;
use crate::surrogate::Surrogate;

/// Output columns per parallel block of a matrix product (fixed: results must not depend on
/// the number of threads).
pub const COLUMN_BLOCK: usize = 16;
/// Samples per parallel block of a convolution.
const SAMPLE_BLOCK: usize = 8;

/// Weights and bias of a Dense or Conv2d layer. Dense: `units x inputs`; Conv2d:
/// `filters x (channels k k)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear<F> {
    pub weight: DMatrix<F>,
    pub bias: Option<DMatrix<F>>,
    pub binary: bool,
}

impl<F: Gemm> Linear<F> {
    /// The weights the forward pass uses: the latent weights, or their sign (+1 at 0) for a
    /// binarised layer, or with `smooth` the smooth sign 2 S(w) - 1 of `surrogate`.
    pub fn effective(&self, smooth: Option<&Surrogate>) -> DMatrix<F> {
        if !self.binary {
            return self.weight.clone();
        }
        match smooth {
            None => self.weight.map(|w| if w >= F::zero() { F::one() } else { -F::one() }),
            Some(s) => self.weight.map(|w| F::of(2.0 * s.primitive(w.to_f64()) - 1.0)),
        }
    }

    /// Turns the gradient with respect to the effective weights into the one with respect to
    /// the latent weights: straight through where |w| <= 1 (zero beyond, where clipping holds
    /// the weight), or the exact derivative 2 S'(w) of the smooth sign.
    pub fn latent_gradient(&self, grad: &mut DMatrix<F>, smooth: Option<&Surrogate>) {
        if !self.binary {
            return;
        }
        for (g, &w) in grad.iter_mut().zip(self.weight.iter()) {
            *g *= match smooth {
                None if w.abs() <= F::one() => F::one(),
                None => F::zero(),
                Some(s) => F::of(2.0 * s.derivative(w.to_f64())),
            };
        }
    }

    /// Keeps latent binary weights in [-1, 1] after an update.
    pub fn clip(&mut self) {
        if self.binary {
            self.weight.iter_mut().for_each(|w| *w = w.clamp(-F::one(), F::one()));
        }
    }
}

fn add_bias<F: Gemm>(y: &mut DMatrix<F>, bias: &DMatrix<F>, positions: usize) {
    let b = bias.as_slice();
    for column in y.as_mut_slice().chunks_mut(b.len() * positions) {
        for (block, &b) in column.chunks_mut(positions).zip(b) {
            block.iter_mut().for_each(|v| *v += b);
        }
    }
}

fn bias_gradient<F: Gemm>(dy: &DMatrix<F>, channels: usize, positions: usize) -> DMatrix<F> {
    let mut g = DMatrix::zeros(channels, 1);
    for column in dy.as_slice().chunks(channels * positions) {
        for (c, block) in column.chunks(positions).enumerate() {
            g[c] += block.iter().copied().fold(F::zero(), |a, b| a + b);
        }
    }
    g
}

/// Dense forward: `y = w x + b` for the effective weights `w`.
pub fn dense_forward<F: Gemm>(w: &DMatrix<F>, bias: Option<&DMatrix<F>>, x: &DMatrix<F>) -> DMatrix<F> {
    let mut y = DMatrix::zeros(w.nrows(), x.ncols());
    par_matmul(
        y.as_mut_slice(),
        View::new(w.as_slice(), w.nrows(), w.ncols()),
        View::new(x.as_slice(), x.nrows(), x.ncols()),
        F::zero(),
        COLUMN_BLOCK,
    );
    if let Some(b) = bias {
        add_bias(&mut y, b, 1);
    }
    y
}

/// Dense backward: gradients of the effective weights and of the bias, and of the input (an
/// empty matrix unless `input_grad`: the first layer needs none).
pub fn dense_backward<F: Gemm>(
    w: &DMatrix<F>,
    has_bias: bool,
    x: &DMatrix<F>,
    dy: &DMatrix<F>,
    input_grad: bool,
) -> (DMatrix<F>, Option<DMatrix<F>>, DMatrix<F>) {
    let dyv = View::new(dy.as_slice(), dy.nrows(), dy.ncols());
    let mut dw = DMatrix::zeros(w.nrows(), w.ncols());
    par_matmul(dw.as_mut_slice(), dyv, View::new(x.as_slice(), x.nrows(), x.ncols()).t(), F::zero(), 4 * COLUMN_BLOCK);
    let db = has_bias.then(|| bias_gradient(dy, dy.nrows(), 1));
    if !input_grad {
        return (dw, db, DMatrix::zeros(0, 0));
    }
    let mut dx = DMatrix::zeros(w.ncols(), dy.ncols());
    par_matmul(dx.as_mut_slice(), View::new(w.as_slice(), w.nrows(), w.ncols()).t(), dyv, F::zero(), COLUMN_BLOCK);
    (dw, db, dx)
}

/// Geometry of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub input: Shape,
    pub output: Shape,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeometry {
    fn dims(&self) -> (usize, usize, usize, usize, usize, usize) {
        let Shape::Image { channels, height, width } = self.input else { unreachable!("checked: conv input is an image") };
        let Shape::Image { height: oh, width: ow, .. } = self.output else { unreachable!("conv output is an image") };
        (channels, height, width, oh, ow, self.kernel)
    }

    /// Rows of the patch matrix (output positions) and its columns (channels x k x k).
    pub fn patch_shape(&self) -> (usize, usize) {
        let (c, _, _, oh, ow, k) = self.dims();
        (oh * ow, c * k * k)
    }

    /// For each patch column (channel, ky, kx) and output position, the input index it reads
    /// (or None in the padding), visiting positions in order.
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, Option<usize>)) {
        let (c, h, w, oh, ow, k) = self.dims();
        let (s, p) = (self.stride as isize, self.padding as isize);
        for ci in 0..c {
            for ky in 0..k {
                for kx in 0..k {
                    let col = (ci * k + ky) * k + kx;
                    for oy in 0..oh {
                        let y = oy as isize * s + ky as isize - p;
                        for ox in 0..ow {
                            let x = ox as isize * s + kx as isize - p;
                            let inside = (0..h as isize).contains(&y) && (0..w as isize).contains(&x);
                            let at = inside.then(|| (ci * h + y as usize) * w + x as usize);
                            f(col, oy * ow + ox, at);
                        }
                    }
                }
            }
        }
    }

    /// im2col of one sample into `patches` (positions x (channels k k), column-major).
    pub fn unfold<F: Gemm>(&self, sample: &[F], patches: &mut [F]) {
        let (positions, _) = self.patch_shape();
        self.for_each_tap(|col, pos, at| patches[col * positions + pos] = at.map_or(F::zero(), |i| sample[i]));
    }

    /// col2im: adds the patch gradients back onto the sample's input positions.
    pub fn fold<F: Gemm>(&self, patches: &[F], sample: &mut [F]) {
        let (positions, _) = self.patch_shape();
        self.for_each_tap(|col, pos, at| {
            if let Some(i) = at {
                sample[i] += patches[col * positions + pos];
            }
        });
    }
}

/// Convolution forward for the effective filters `w` (filters x (channels k k)); returns the
/// output and every sample's patch matrix (kept for the backward pass).
pub fn conv_forward<F: Gemm>(
    g: &ConvGeometry,
    w: &DMatrix<F>,
    bias: Option<&DMatrix<F>>,
    x: &DMatrix<F>,
) -> (DMatrix<F>, Vec<F>) {
    let (positions, taps) = g.patch_shape();
    let out_size = g.output.size();
    let mut y = DMatrix::zeros(out_size, x.ncols());
    let mut patches = vec![F::zero(); positions * taps * x.ncols()];
    let wt = View::new(w.as_slice(), w.nrows(), w.ncols()).t();
    y.as_mut_slice()
        .par_chunks_mut(out_size)
        .zip(patches.par_chunks_mut(positions * taps))
        .zip(x.as_slice().par_chunks(g.input.size()))
        .for_each(|((y, p), x)| {
            g.unfold(x, p);
            matmul(y, View::new(p, positions, taps), wt, F::zero());
        });
    if let Some(b) = bias {
        add_bias(&mut y, b, g.output.positions());
    }
    (y, patches)
}

/// Convolution backward: gradients of the effective filters, of the bias, and of the input
/// (left zero unless `input_grad`). Filter gradients are summed per fixed block of samples, then
/// over blocks in order.
pub fn conv_backward<F: Gemm>(
    g: &ConvGeometry,
    w: &DMatrix<F>,
    has_bias: bool,
    patches: &[F],
    dy: &DMatrix<F>,
    input_grad: bool,
) -> (DMatrix<F>, Option<DMatrix<F>>, DMatrix<F>) {
    let (positions, taps) = g.patch_shape();
    let (filters, in_size, out_size) = (w.nrows(), g.input.size(), g.output.size());
    let samples = dy.ncols();
    let mut dx = DMatrix::zeros(in_size, samples);
    let wv = View::new(w.as_slice(), filters, taps);
    let partial: Vec<DMatrix<F>> = dx
        .as_mut_slice()
        .par_chunks_mut(in_size * SAMPLE_BLOCK)
        .zip(dy.as_slice().par_chunks(out_size * SAMPLE_BLOCK))
        .zip(patches.par_chunks(positions * taps * SAMPLE_BLOCK))
        .map(|((dx, dy), p)| {
            let mut dw = DMatrix::zeros(filters, taps);
            let mut dp = vec![F::zero(); positions * taps];
            for ((dx, dy), p) in dx.chunks_mut(in_size).zip(dy.chunks(out_size)).zip(p.chunks(positions * taps)) {
                let dyv = View::new(dy, positions, filters);
                // dW (filters x taps) += dy^T (filters x positions) . patches (positions x taps)
                matmul(dw.as_mut_slice(), dyv.t(), View::new(p, positions, taps), F::one());
                if input_grad {
                    // d patches (positions x taps) = dy (positions x filters) . W (filters x taps)
                    matmul(&mut dp, dyv, wv, F::zero());
                    g.fold(&dp, dx);
                }
            }
            dw
        })
        .collect();
    let mut dw = DMatrix::zeros(filters, taps);
    for part in &partial {
        dw += part;
    }
    let db = has_bias.then(|| bias_gradient(dy, filters, g.output.positions()));
    (dw, db, dx)
}
