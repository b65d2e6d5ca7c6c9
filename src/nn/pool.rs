//! Max and average pooling over non-overlapping square windows (stride = window), per channel,
//! in parallel over samples.

use std::mem::MaybeUninit;

use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::nn::{Real, fresh, pool_lanes};
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
    let (mut y, mut winners) = (fresh::slots(n * x.ncols()), fresh::slots(n * x.ncols()));
    y.par_chunks_mut(n).zip(winners.par_chunks_mut(n)).zip(x.as_slice().par_chunks(input.size())).for_each(
        |((ys, ws), xs)| {
            if pairs_of_rows(input, size) {
                return max_of_pairs(input, xs, ys, ws);
            }
            windows(input, size, |o, corner| {
                // Selects, not branches: which of a window's spikes wins is a coin toss.
                let (mut best, mut top) = (corner, xs[corner]);
                for dy in 0..size {
                    for dx in 0..size {
                        let i = corner + dy * w + dx;
                        let higher = xs[i] > top;
                        best = if higher { i } else { best };
                        top = if higher { xs[i] } else { top };
                    }
                }
                ys[o] = MaybeUninit::new(top);
                ws[o] = MaybeUninit::new(best as u32);
            })
        },
    );
    // SAFETY: the windows of a sample cover its n outputs, and every sample had its chunk.
    unsafe { (fresh::written_matrix(n, x.ncols(), y), fresh::written_slots(winners)) }
}

/// Whether the windows are 2 x 2 over an even number of rows, which [`max_of_pairs`] and
/// [`max_backward`] take a pair of input rows at a time.
fn pairs_of_rows(input: Shape, size: usize) -> bool {
    size == 2 && dims(input, size).1.is_multiple_of(2)
}

/// [`max_forward`] of one sample for 2 x 2 windows (the usual size), a pair of input rows at a
/// time: the same winners, without the general loops' bounds and index arithmetic per element.
/// The height must be even, so that the pairs of rows never straddle two channels.
fn max_of_pairs<F: Real>(input: Shape, xs: &[F], ys: &mut [MaybeUninit<F>], ws: &mut [MaybeUninit<u32>]) {
    max_pairs_into(dims(input, 2).2, xs.len(), 0, xs, ys, ws);
}

/// 2 x 2 max pooling of whole pairs of rows of `width` values, `xs`, which start at element
/// `first` (a pair's first) of samples of `features` values each, one after the other: each
/// window's largest value into `ys` and the index of its input within its sample into `ws`,
/// as [`max_forward`] gives them. A spiking layer pools its own output this way, a piece of
/// elements at a time, so that its spikes never go through memory
/// ([`crate::nn::spiking::Spiking::forward_pooled`]).
pub(crate) fn max_pairs_into<F: Real>(
    width: usize,
    features: usize,
    first: usize,
    xs: &[F],
    ys: &mut [MaybeUninit<F>],
    ws: &mut [MaybeUninit<u32>],
) {
    let (w, ow) = (width, width / 2);
    let corner = |o: usize| ((first + 2 * o * w) % features) as u32;
    if let (Some(xs), Some(ys)) = (F::as_f32(xs), F::as_f32_slots(ys))
        && pool_lanes::available()
    {
        for ((pair, ys), (ws, o)) in
            xs.chunks_exact(2 * w).zip(ys.chunks_exact_mut(ow)).zip(ws.chunks_exact_mut(ow).zip(0..))
        {
            let (upper, lower) = pair.split_at(w);
            pool_lanes::max_of_windows(upper, lower, w as u32, corner(o), ys, ws);
        }
        return;
    }
    for ((pair, ys), (ws, o)) in
        xs.chunks_exact(2 * w).zip(ys.chunks_exact_mut(ow)).zip(ws.chunks_exact_mut(ow).zip(0..))
    {
        let (upper, lower) = pair.split_at(w);
        let (upper, lower) = (&upper[..2 * ow], &lower[..2 * ow]);
        let corner = corner(o);
        // Indexed loops of selects, each window's four values read from the two rows at a
        // stride of two: a shape the compiler turns into vector code.
        for ox in 0..ow {
            let (a, b, c, d) = (upper[2 * ox], upper[2 * ox + 1], lower[2 * ox], lower[2 * ox + 1]);
            // The first largest in reading order, as the general loop: a later value wins only
            // when strictly larger than all before it.
            let (b_wins, ab) = (b > a, if b > a { b } else { a });
            let (c_wins, abc) = (c > ab, if c > ab { c } else { ab });
            let (d_wins, top) = (d > abc, if d > abc { d } else { abc });
            let offset = if d_wins {
                w as u32 + 1
            } else if c_wins {
                w as u32
            } else {
                u32::from(b_wins)
            };
            ys[ox] = MaybeUninit::new(top);
            ws[ox] = MaybeUninit::new(corner + 2 * ox as u32 + offset);
        }
    }
}

/// The backward of [`max_pairs_into`] over the same elements: each window's gradient (`dys`)
/// to the input that won it (`ws`), zero to the other three, written whole into `dxs`.
pub(crate) fn route_pairs_into<F: Real>(
    width: usize,
    features: usize,
    first: usize,
    dys: &[F],
    ws: &[u32],
    dxs: &mut [MaybeUninit<F>],
) {
    let (w, ow) = (width, width / 2);
    let corner = |o: usize| ((first + 2 * o * w) % features) as u32;
    let lanes = pool_lanes::available();
    let rows = dxs.chunks_exact_mut(2 * w).zip(dys.chunks_exact(ow)).zip(ws.chunks_exact(ow));
    for (o, ((pair, dys), ws)) in rows.enumerate() {
        let (upper, lower) = pair.split_at_mut(w);
        match (F::as_f32(dys), F::as_f32_slots(upper), F::as_f32_slots(lower)) {
            (Some(dys), Some(upper), Some(lower)) if lanes => {
                pool_lanes::route_to_winners(dys, ws, w as u32, corner(o), upper, lower)
            }
            _ => {
                let corner = corner(o);
                let (upper, lower, dys, ws) = (&mut upper[..2 * ow], &mut lower[..2 * ow], &dys[..ow], &ws[..ow]);
                for ox in 0..ow {
                    // Where in its window the winner lies: 0, 1, w or w + 1.
                    let offset = ws[ox].wrapping_sub(corner + 2 * ox as u32);
                    // Each window's four inputs written at once, in place of zeroing the whole
                    // gradient and adding each output's into it; 0 + g, as that addition gave.
                    let g = F::zero() + dys[ox];
                    let pick = |at: u32| MaybeUninit::new(if offset == at { g } else { F::zero() });
                    (upper[2 * ox], upper[2 * ox + 1]) = (pick(0), pick(1));
                    (lower[2 * ox], lower[2 * ox + 1]) = (pick(w as u32), pick(w as u32 + 1));
                }
            }
        }
        // An odd width leaves the last column of both rows out of every window.
        if w % 2 == 1 {
            pair[w - 1] = MaybeUninit::new(F::zero());
            pair[2 * w - 1] = MaybeUninit::new(F::zero());
        }
    }
}

/// The input gradient of max pooling: each output's gradient goes to the input that won its
/// window, zero to the others.
pub fn max_backward<F: Real>(input: Shape, size: usize, winners: &[u32], dy: &DMatrix<F>) -> DMatrix<F> {
    let n = dy.nrows();
    if pairs_of_rows(input, size) {
        let w = dims(input, size).2;
        let mut dx = fresh::slots(input.size() * dy.ncols());
        dx.par_chunks_mut(input.size())
            .zip(dy.as_slice().par_chunks(n))
            .zip(winners.par_chunks(n))
            .for_each(|((dxs, dys), ws)| route_pairs_into(w, input.size(), 0, dys, ws, dxs));
        // SAFETY: the pairs of rows cover every sample's input, and each wrote all 2 w values.
        return unsafe { fresh::written_matrix(input.size(), dy.ncols(), dx) };
    }
    let mut dx = DMatrix::zeros(input.size(), dy.ncols());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pooling_takes_each_windows_first_largest_value() {
        // Two channels of 4 x 4, windows of 2: spikes with ties, and graded values.
        let shape = Shape::Image { channels: 2, height: 4, width: 4 };
        #[rustfmt::skip]
        let sample: [f64; 32] = [
            0.0, 1.0, 1.0, 1.0,
            1.0, 0.0, 1.0, 1.0,
            0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 1.0,

            0.5, 0.2, -1.0, -3.0,
            0.9, 0.9, -2.0, -1.0,
            0.1, 0.3, 7.0, 7.0,
            0.3, 0.2, 7.0, 6.0,
        ];
        let x = DMatrix::from_column_slice(32, 1, &sample);
        let (y, winners) = max_forward(shape, 2, &x);
        assert_eq!(y.as_slice(), &[1.0, 1.0, 0.0, 1.0, 0.9, -1.0, 0.3, 7.0]);
        assert_eq!(winners, [1, 2, 8, 15, 20, 18, 25, 26]);
        let dy = DMatrix::from_fn(8, 1, |o, _| o as f64 + 1.0);
        let dx = max_backward(shape, 2, &winners, &dy);
        for (i, &g) in dx.as_slice().iter().enumerate() {
            let expected = winners.iter().position(|&w| w as usize == i).map_or(0.0, |o| o as f64 + 1.0);
            assert_eq!(g, expected, "input {i}");
        }
    }

    #[test]
    fn pairs_of_rows_find_the_winners_of_the_general_windows_and_pass_their_gradients() {
        // Odd widths leave a column out; spikes make ties; graded values make strict maxima.
        for (height, width) in [(6, 7), (4, 4), (2, 9), (5, 6)] {
            let shape = Shape::Image { channels: 3, height, width };
            let n = shape.size();
            let x = DMatrix::from_fn(n, 2, |i, j| {
                let k = (i * 7 + j * 13) % 11;
                if j == 0 { (k % 2) as f64 } else { k as f64 * 0.3 - 1.0 }
            });
            let (y, winners) = max_forward(shape, 2, &x);
            let (oh, ow) = (height / 2, width / 2);
            for j in 0..2 {
                let xs = &x.as_slice()[j * n..(j + 1) * n];
                for o in 0..3 * oh * ow {
                    let (ch, oy, ox) = (o / (oh * ow), o / ow % oh, o % ow);
                    let window = [(0, 0), (0, 1), (1, 0), (1, 1)]
                        .map(|(dy, dx)| (ch * height + 2 * oy + dy) * width + 2 * ox + dx);
                    let best = window.into_iter().fold(window[0], |b, i| if xs[i] > xs[b] { i } else { b });
                    assert_eq!(winners[j * y.nrows() + o] as usize, best, "{height}x{width}, sample {j}, output {o}");
                    assert_eq!(y[(o, j)], xs[best]);
                }
            }
            // The backward by pairs of rows, against adding each output's gradient at its winner.
            let dy = DMatrix::from_fn(y.nrows(), 2, |o, j| o as f64 - 2.0 * j as f64 - 0.5);
            let mut expected = DMatrix::zeros(n, 2);
            for j in 0..2 {
                for o in 0..y.nrows() {
                    expected[(winners[j * y.nrows() + o] as usize, j)] += dy[(o, j)];
                }
            }
            assert_eq!(max_backward(shape, 2, &winners, &dy), expected, "{height}x{width}");
        }
    }

    #[test]
    fn f32_lanes_pool_and_route_as_the_f64_loops() {
        // Widths of one, two and a part of a 16-window round, odd ones; ties among spikes,
        // -0 and NaN among graded values. Every f32 is an f64, so the f64 loops give the bits.
        for (height, width) in [(4, 28), (2, 14), (2, 40), (4, 34), (2, 7), (2, 2), (6, 65)] {
            let shape = Shape::Image { channels: 2, height, width };
            let n = shape.size();
            let value = |i: usize, j: usize| {
                let k = (i * 7 + j * 13) % 11;
                match (j, k) {
                    (0, _) => (k % 2) as f32,
                    (_, 3) => -0.0,
                    (_, 5) if i.is_multiple_of(9) => f32::NAN,
                    _ => k as f32 * 0.3 - 1.0,
                }
            };
            let x32 = DMatrix::from_fn(n, 2, value);
            let (y32, winners32) = max_forward(shape, 2, &x32);
            let (y64, winners64) = max_forward(shape, 2, &x32.map(f64::from));
            assert_eq!(winners32, winners64, "{height}x{width}");
            assert!(y32.iter().zip(&y64).all(|(&a, &b)| f64::from(a).to_bits() == b.to_bits()), "{height}x{width}");
            let dy32 =
                DMatrix::from_fn(y32.nrows(), 2, |o, j| if o % 5 == 1 { -0.0 } else { o as f32 - 2.5 * j as f32 });
            let dx32 = max_backward(shape, 2, &winners32, &dy32);
            let dx64 = max_backward(shape, 2, &winners64, &dy32.map(f64::from));
            assert!(dx32.iter().zip(&dx64).all(|(&a, &b)| f64::from(a).to_bits() == b.to_bits()), "{height}x{width}");
        }
    }
}
