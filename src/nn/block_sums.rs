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
    let (c, p) = (channels, positions);
    let block = c * p;
    let samples = x.len() / block.max(1);
    let group = c.div_ceil(8).max(1);
    let mut sums = vec![F::zero(); c];
    sums.par_chunks_mut(group).enumerate().for_each(|(g, sums)| {
        let first = g * group;
        if p == 1 {
            // Vectors: a sample's channels are contiguous, so this loop runs over lanes.
            // Adding `zero + f` keeps the general case's arithmetic (a sum from zero).
            for s in 0..samples {
                let (xs, ys) = (&x[s * block + first..][..sums.len()], &y[s * block + first..][..sums.len()]);
                for (j, ((sum, &u), &v)) in sums.iter_mut().zip(xs).zip(ys).enumerate() {
                    *sum += F::zero() + f(u, v, first + j);
                }
            }
            return;
        }
        let channels = first..first + sums.len();
        let blocks = (0..samples).flat_map(|s| channels.clone().map(move |k| (s * c + k, k)));
        block_sums((x, y), p, blocks, &f, |k, s| sums[k - first] += s);
    });
    sums
}

/// For each `(block, key)` of `blocks`, in their order, calls `add(key, s)` with s the sum over
/// the block's `positions` values (block b holds `x[b positions..(b + 1) positions]`, and the
/// same of `y`) of `f(x value, y value, key)`, from zero in position order.
fn block_sums<F: Real>(
    (x, y): (&[F], &[F]),
    positions: usize,
    blocks: impl IntoIterator<Item = (usize, usize)>,
    f: impl Fn(F, F, usize) -> F,
    mut add: impl FnMut(usize, F),
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

/// The sums of N blocks, each its own chain of additions.
#[inline(always)]
fn chains<const N: usize, F: Real>(
    batch: &[(usize, usize); N],
    (x, y): (&[F], &[F]),
    positions: usize,
    f: &impl Fn(F, F, usize) -> F,
    add: &mut impl FnMut(usize, F),
) {
    let xs: [&[F]; N] = std::array::from_fn(|l| &x[batch[l].0 * positions..][..positions]);
    let ys: [&[F]; N] = std::array::from_fn(|l| &y[batch[l].0 * positions..][..positions]);
    let mut acc = [F::zero(); N];
    for i in 0..positions {
        for l in 0..N {
            acc[l] += f(xs[l][i], ys[l][i], batch[l].1);
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
        block_sums((&x, &y), positions, (0..blocks).map(|b| (b, b % 4)), f, |k, s| got.push((k, s)));
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
}
