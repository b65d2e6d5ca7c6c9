//! Sums over blocks of consecutive values, such as a channel's positions in one sample (batch
//! norm's statistics, a convolution's bias gradient).
//!
//! Each block is summed from zero in position order, the result of `fold(0, |a, v| a + v)` bit
//! for bit. One such fold is a chain of additions, each waiting for the last (four cycles on
//! current x86 cores) while the adders could start one or two every cycle; summing eight blocks
//! side by side runs eight independent chains in the same time.

use rayon::prelude::*;

use crate::nn::Real;

/// Blocks summed side by side.
const CHAINS: usize = 8;

/// Per channel, the sum of `f(x, y, channel)` over positions and samples of two arrays laid out
/// alike (samples one after the other, each `channels x positions` values, channel-major): for
/// each sample in order, the sum over the channel's positions (from zero) is added to the
/// channel's total. Eight groups of channels run in parallel whatever the thread count; within
/// a group the order is fixed, so the result does not depend on the threads that computed it.
pub fn channel_sums<F: Real>(
    (x, y): (&[F], &[F]),
    channels: usize,
    positions: usize,
    f: impl Fn(F, F, usize) -> F + Sync,
) -> Vec<F> {
    let [sums] = channel_sums_of((x, y), channels, positions, |u, v, k| [f(u, v, k)]);
    sums
}

/// [`channel_sums`] of S functions at once (`f` returns the S terms of a value): each of the S
/// sums is taken in the same order as alone, bit for bit, while the arrays are read once.
pub fn channel_sums_of<const S: usize, F: Real>(
    (x, y): (&[F], &[F]),
    channels: usize,
    positions: usize,
    f: impl Fn(F, F, usize) -> [F; S] + Sync,
) -> [Vec<F>; S] {
    let (c, p) = (channels, positions);
    let block = c * p;
    let samples = x.len() / block.max(1);
    let group = c.div_ceil(8).max(1);
    // Channel k's S sums at k S.. (k + 1) S, so that a group of channels is one chunk.
    let mut sums = vec![F::zero(); c * S];
    sums.par_chunks_mut(group * S).enumerate().for_each(|(g, sums)| {
        let (first, count) = (g * group, sums.len() / S);
        if p == 1 {
            // Vectors: a sample's channels are contiguous, so this loop runs over lanes.
            // Adding `zero + f` keeps the general case's arithmetic (a sum from zero).
            for s in 0..samples {
                let (xs, ys) = (&x[s * block + first..][..count], &y[s * block + first..][..count]);
                for (j, ((sum, &u), &v)) in sums.chunks_exact_mut(S).zip(xs).zip(ys).enumerate() {
                    let terms = f(u, v, first + j);
                    sum.iter_mut().zip(terms).for_each(|(sum, t)| *sum += F::zero() + t);
                }
            }
            return;
        }
        let channels = first..first + count;
        let blocks = (0..samples).flat_map(|s| channels.clone().map(move |k| (s * c + k, k)));
        block_sums((x, y), p, blocks, &f, |k, s: [F; S]| {
            sums[(k - first) * S..][..S].iter_mut().zip(s).for_each(|(sum, s)| *sum += s)
        });
    });
    std::array::from_fn(|which| sums.iter().skip(which).step_by(S).copied().collect())
}

/// For each `(block, key)` of `blocks`, in their order, calls `add(key, s)` with s the sums over
/// the block's `positions` values (block b holds `x[b positions..(b + 1) positions]`, and the
/// same of `y`) of the S terms `f(x value, y value, key)`, each from zero in position order.
fn block_sums<const S: usize, F: Real>(
    (x, y): (&[F], &[F]),
    positions: usize,
    blocks: impl IntoIterator<Item = (usize, usize)>,
    f: impl Fn(F, F, usize) -> [F; S],
    mut add: impl FnMut(usize, [F; S]),
) {
    let mut batch = [(0, 0); CHAINS];
    let mut filled = 0;
    for block in blocks {
        batch[filled] = block;
        filled += 1;
        if filled == CHAINS {
            chains(&batch, (x, y), positions, &f, &mut add);
            filled = 0;
        }
    }
    for block in &batch[..filled] {
        chains(&[*block], (x, y), positions, &f, &mut add);
    }
}

/// The sums of N blocks, each of its S terms its own chain of additions.
#[inline(always)]
fn chains<const N: usize, const S: usize, F: Real>(
    batch: &[(usize, usize); N],
    (x, y): (&[F], &[F]),
    positions: usize,
    f: &impl Fn(F, F, usize) -> [F; S],
    add: &mut impl FnMut(usize, [F; S]),
) {
    let xs: [&[F]; N] = std::array::from_fn(|l| &x[batch[l].0 * positions..][..positions]);
    let ys: [&[F]; N] = std::array::from_fn(|l| &y[batch[l].0 * positions..][..positions]);
    let mut acc = [[F::zero(); S]; N];
    for i in 0..positions {
        for l in 0..N {
            let terms = f(xs[l][i], ys[l][i], batch[l].1);
            for s in 0..S {
                acc[l][s] += terms[s];
            }
        }
    }
    for l in 0..N {
        add(batch[l].1, acc[l]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_equal_one_fold_per_block_bit_for_bit() {
        // 21 blocks (two batches of eight and five alone) of 37 values spanning magnitudes, so
        // that another order of additions would round differently.
        let (blocks, positions) = (21, 37);
        let x: Vec<f32> =
            (0..blocks * positions).map(|i| ((i * 7919) % 1000) as f32 * 10f32.powi(i as i32 % 7 - 3)).collect();
        let y: Vec<f32> = (0..x.len()).map(|i| (i % 5) as f32 - 2.0).collect();
        let f = |u: f32, v: f32, k: usize| u * v + k as f32;
        let mut got = Vec::new();
        block_sums(
            (&x, &y),
            positions,
            (0..blocks).map(|b| (b, b % 4)),
            |u, v, k| [f(u, v, k)],
            |k, [s]| got.push((k, s)),
        );
        let expected: Vec<(usize, f32)> = (0..blocks)
            .map(|b| {
                let range = b * positions..(b + 1) * positions;
                (b % 4, x[range.clone()].iter().zip(&y[range]).fold(0.0, |a, (&u, &v)| a + f(u, v, b % 4)))
            })
            .collect();
        assert_eq!(got.len(), blocks);
        for ((k, s), (ek, es)) in got.iter().zip(&expected) {
            assert_eq!((k, s.to_bits()), (ek, es.to_bits()));
        }
    }

    #[test]
    fn sums_taken_together_equal_each_taken_alone_bit_for_bit() {
        // Images (channels of 29 positions) and vectors (one position), channels in groups of
        // unequal sizes.
        for (channels, positions) in [(11, 29), (13, 1)] {
            let n = 5 * channels * positions;
            let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 10f32.powi(i as i32 % 5 - 2)).collect();
            let y: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.3 - 1.0).collect();
            let [a, b] = channel_sums_of((&x, &y), channels, positions, |u, v, k| [u, u * v + k as f32]);
            let alone_a = channel_sums((&x, &y), channels, positions, |u, _, _| u);
            let alone_b = channel_sums((&x, &y), channels, positions, |u, v, k| u * v + k as f32);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!((bits(&a), bits(&b)), (bits(&alone_a), bits(&alone_b)), "{channels} x {positions}");
        }
    }
}
