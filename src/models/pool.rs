//! Max and average pooling over non-overlapping square windows (stride = window), per channel.

use nalgebra::DMatrix;

use crate::spec::Shape;
use crate::train::net::Real;

fn dims(shape: Shape) -> (usize, usize, usize) {
    match shape {
        Shape::Image { channels, height, width } => (channels, height, width),
        Shape::Flat(_) => unreachable!("checked: pooling input is an image"),
    }
}

/// For every output value of one sample, calls `f(output index, input indices of its window)`.
fn windows(input: Shape, size: usize, mut f: impl FnMut(usize, &mut dyn Iterator<Item = usize>)) {
    let (c, h, w) = dims(input);
    let (oh, ow) = (h / size, w / size);
    for ch in 0..c {
        for oy in 0..oh {
            for ox in 0..ow {
                let out = (ch * oh + oy) * ow + ox;
                let mut taps = (0..size * size).map(|t| (ch * h + oy * size + t / size) * w + ox * size + t % size);
                f(out, &mut taps);
            }
        }
    }
}

/// Max pooling; also returns, per output value, the input index that won (for the backward).
pub fn max_forward<F: Real>(input: Shape, size: usize, x: &DMatrix<F>) -> (DMatrix<F>, Vec<u32>) {
    let (c, h, w) = dims(input);
    let out_size = c * (h / size) * (w / size);
    let mut y = DMatrix::zeros(out_size, x.ncols());
    let mut winners = vec![0u32; out_size * x.ncols()];
    for ((xs, ys), ws) in x.as_slice().chunks(input.size()).zip(y.as_mut_slice().chunks_mut(out_size)).zip(winners.chunks_mut(out_size)) {
        windows(input, size, |o, taps| {
            let first = taps.next().expect("windows are not empty");
            let best = taps.fold(first, |b, i| if xs[i] > xs[b] { i } else { b });
            ys[o] = xs[best];
            ws[o] = best as u32;
        });
    }
    (y, winners)
}

pub fn max_backward<F: Real>(input: Shape, winners: &[u32], dy: &DMatrix<F>) -> DMatrix<F> {
    let mut dx = DMatrix::zeros(input.size(), dy.ncols());
    let out_size = dy.nrows();
    for ((dxs, dys), ws) in dx.as_mut_slice().chunks_mut(input.size()).zip(dy.as_slice().chunks(out_size)).zip(winners.chunks(out_size)) {
        for (&g, &i) in dys.iter().zip(ws) {
            dxs[i as usize] += g;
        }
    }
    dx
}

pub fn avg_forward<F: Real>(input: Shape, size: usize, x: &DMatrix<F>) -> DMatrix<F> {
    let (c, h, w) = dims(input);
    let out_size = c * (h / size) * (w / size);
    let scale = F::of(1.0 / (size * size) as f64);
    let mut y = DMatrix::zeros(out_size, x.ncols());
    for (xs, ys) in x.as_slice().chunks(input.size()).zip(y.as_mut_slice().chunks_mut(out_size)) {
        windows(input, size, |o, taps| ys[o] = taps.fold(F::zero(), |a, i| a + xs[i]) * scale);
    }
    y
}

pub fn avg_backward<F: Real>(input: Shape, size: usize, dy: &DMatrix<F>) -> DMatrix<F> {
    let scale = F::of(1.0 / (size * size) as f64);
    let mut dx = DMatrix::zeros(input.size(), dy.ncols());
    let out_size = dy.nrows();
    for (dxs, dys) in dx.as_mut_slice().chunks_mut(input.size()).zip(dy.as_slice().chunks(out_size)) {
        windows(input, size, |o, taps| taps.for_each(|i| dxs[i] += dys[o] * scale));
    }
    dx
}
