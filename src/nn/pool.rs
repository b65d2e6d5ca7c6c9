//! Max and average pooling over non-overlapping square windows (stride = window), per channel,
//! in parallel over samples.

use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::nn::Real;
use crate::spec::Shape;

/// (channels, height, width) of the input and (height, width) of the output.
fn dims(shape: Shape, size: usize) -> (usize, usize, usize, usize, usize) {
    match shape {
        Shape::Image { channels, height, width } => (channels, height, width, height / size, width / size),
        Shape::Flat(_) => unreachable!("checked: pooling input is an image"),
    }
}

/// Calls `f(output index, input index of the window's top-left corner)` for one sample.
#[inline(always)]
fn windows(input: Shape, size: usize, mut f: impl FnMut(usize, usize)) {
    let (c, h, w, oh, ow) = dims(input, size);
    for ch in 0..c {
        for oy in 0..oh {
            for ox in 0..ow {
                f((ch * oh + oy) * ow + ox, (ch * h + oy * size) * w + ox * size);
            }
        }
    }
}

fn out_size(input: Shape, size: usize) -> usize {
    let (c, _, _, oh, ow) = dims(input, size);
    c * oh * ow
}

/// Max pooling; also returns, per output value, the input index that won (for the backward).
pub fn max_forward<F: Real>(input: Shape, size: usize, x: &DMatrix<F>) -> (DMatrix<F>, Vec<u32>) {
    let (n, w) = (out_size(input, size), dims(input, size).2);
    let mut y = DMatrix::zeros(n, x.ncols());
    let mut winners = vec![0u32; n * x.ncols()];
    y.as_mut_slice()
        .par_chunks_mut(n)
        .zip(winners.par_chunks_mut(n))
        .zip(x.as_slice().par_chunks(input.size()))
        .for_each(|((ys, ws), xs)| {
            windows(input, size, |o, corner| {
                let mut best = corner;
                for dy in 0..size {
                    for dx in 0..size {
                        let i = corner + dy * w + dx;
                        if xs[i] > xs[best] {
                            best = i;
                        }
                    }
                }
                ys[o] = xs[best];
                ws[o] = best as u32;
            })
        });
    (y, winners)
}

pub fn max_backward<F: Real>(input: Shape, winners: &[u32], dy: &DMatrix<F>) -> DMatrix<F> {
    let mut dx = DMatrix::zeros(input.size(), dy.ncols());
    let n = dy.nrows();
    dx.as_mut_slice()
        .par_chunks_mut(input.size())
        .zip(dy.as_slice().par_chunks(n))
        .zip(winners.par_chunks(n))
        .for_each(|((dxs, dys), ws)| {
            for (&g, &i) in dys.iter().zip(ws) {
                dxs[i as usize] += g;
            }
        });
    dx
}

pub fn avg_forward<F: Real>(input: Shape, size: usize, x: &DMatrix<F>) -> DMatrix<F> {
    let (n, w) = (out_size(input, size), dims(input, size).2);
    let scale = F::of(1.0 / (size * size) as f64);
    let mut y = DMatrix::zeros(n, x.ncols());
    y.as_mut_slice().par_chunks_mut(n).zip(x.as_slice().par_chunks(input.size())).for_each(|(ys, xs)| {
        windows(input, size, |o, corner| {
            let mut sum = F::zero();
            for dy in 0..size {
                for dx in 0..size {
                    sum += xs[corner + dy * w + dx];
                }
            }
            ys[o] = sum * scale;
        })
    });
    y
}

pub fn avg_backward<F: Real>(input: Shape, size: usize, dy: &DMatrix<F>) -> DMatrix<F> {
    let w = dims(input, size).2;
    let scale = F::of(1.0 / (size * size) as f64);
    let mut dx = DMatrix::zeros(input.size(), dy.ncols());
    let n = dy.nrows();
    dx.as_mut_slice().par_chunks_mut(input.size()).zip(dy.as_slice().par_chunks(n)).for_each(|(dxs, dys)| {
        windows(input, size, |o, corner| {
            for dy in 0..size {
                for dx in 0..size {
                    dxs[corner + dy * w + dx] += dys[o] * scale;
                }
            }
        })
    });
    dx
}
