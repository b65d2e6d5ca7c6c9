//! Sums per channel over positions and samples, such as batch norm's statistics and a
//! convolution's bias gradient, in f64.
//!
//! Each block (a channel's positions in one sample) is summed over [`LANES`] interleaved
//! partial sums, which the compiler keeps in vector registers: one running sum would wait on
//! each addition's latency (four cycles on current x86 cores) while the adders could take a
//! vector every cycle. Each block's sum is added to its channel's total in sample order. The
//! order depends only on the shapes, never on the threads that computed the sums.

use rayon::prelude::*;

use crate::nn::Real;

/// Partial sums per block.
const LANES: usize = 16;

/// Per channel k, the sum of `term_of(k)(x, y)` over positions and samples of two arrays laid
/// out alike (samples one after the other, each `channels x positions` values, channel-major).
/// A channel's term is made once per block, so that what it reads of the channel (batch norm's
/// mean, say) is looked up outside the loop over positions.
/// Eight groups of channels run in parallel whatever the thread count (see the module
/// documentation for the order of the additions).
pub fn channel_sums<F: Real, T: Fn(F, F) -> f64>(
    (x, y): (&[F], &[F]),
    channels: usize,
    positions: usize,
    term_of: impl Fn(usize) -> T + Sync,
) -> Vec<f64> {
    let [sums] = channel_sums_of((x, y), channels, positions, |k| {
        let term = term_of(k);
        move |u, v| [term(u, v)]
    });
    sums
}

/// [`channel_sums`] of S terms at once, S one or two (a channel's term returns the S terms of a value): each
/// of the S sums is taken in the same order as alone, bit for bit, while the arrays are read
/// from memory once.
pub fn channel_sums_of<const S: usize, F: Real, T: Fn(F, F) -> [f64; S]>(
    (x, y): (&[F], &[F]),
    channels: usize,
    positions: usize,
    term_of: impl Fn(usize) -> T + Sync,
) -> [Vec<f64>; S] {
    let (c, p) = (channels, positions);
    let block = c * p;
    let samples = x.len() / block.max(1);
    let group = c.div_ceil(8).max(1);
    // Channel k's S sums at k S.. (k + 1) S, so that a group of channels is one chunk.
    let mut sums = vec![0.0; c * S];
    sums.par_chunks_mut(group * S).enumerate().for_each(|(g, sums)| {
        let (first, count) = (g * group, sums.len() / S);
        for s in 0..samples {
            let at = (s * c + first) * p;
            let (xs, ys) = (&x[at..][..count * p], &y[at..][..count * p]);
            if p == 1 {
                // Vectors: a sample's channels are contiguous, so this loop runs over lanes.
                // Adding `0 + t` keeps the general case's arithmetic (a block's sum from zero).
                for (j, ((sum, &u), &v)) in sums.chunks_exact_mut(S).zip(xs).zip(ys).enumerate() {
                    let terms = term_of(first + j)(u, v);
                    sum.iter_mut().zip(terms).for_each(|(sum, t)| *sum += 0.0 + t);
                }
                continue;
            }
            for (j, (sum, (xs, ys))) in
                sums.chunks_exact_mut(S).zip(xs.chunks_exact(p).zip(ys.chunks_exact(p))).enumerate()
            {
                let terms = block_sum(xs, ys, term_of(first + j));
                sum.iter_mut().zip(terms).for_each(|(sum, t)| *sum += t);
            }
        }
    });
    std::array::from_fn(|which| sums.iter().skip(which).step_by(S).copied().collect())
}

/// The S sums of `f` over one block (S at most 2), each in its own pass over the block: the
/// block stays in L1 between the passes, and a pass of one term, picked by a constant index,
/// is a loop the compiler vectorises (an index it has to look up at run time is not).
#[inline(always)]
fn block_sum<const S: usize, F: Real>(x: &[F], y: &[F], f: impl Fn(F, F) -> [f64; S]) -> [f64; S] {
    const { assert!(S == 1 || S == 2, "one or two sums at once") };
    let mut sums = [0.0; S];
    sums[0] = lane_sum(x, y, |u, v| f(u, v)[0]);
    if S == 2 {
        sums[S - 1] = lane_sum(x, y, |u, v| f(u, v)[S - 1]);
    }
    sums
}

/// The sum of `term` over a block: position i goes to partial sum i mod [`LANES`]; the partial
/// sums are then added in lane order, after the values past the last whole group of lanes.
#[inline(always)]
pub fn lane_sum<F: Real>(x: &[F], y: &[F], term: impl Fn(F, F) -> f64) -> f64 {
    let mut lanes = [0.0; LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let tail = xc.remainder().iter().zip(yc.remainder()).fold(0.0, |acc, (&u, &v)| acc + term(u, v));
    for (xs, ys) in xc.zip(yc) {
        for j in 0..LANES {
            lanes[j] += term(xs[j], ys[j]);
        }
    }
    lanes.iter().fold(tail, |acc, &l| acc + l)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values whose sums f64 holds exactly (at most 17 significant bits each, a few thousand
    /// of them), so that any order of additions gives the same, true, sum.
    fn exact_values(n: usize) -> (Vec<f32>, Vec<f32>) {
        let x = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 2f32.powi(-(i as i32 % 7)) - 300.0).collect();
        let y = (0..n).map(|i| (i % 5) as f32 - 2.0).collect();
        (x, y)
    }

    #[test]
    fn sums_per_channel_hold_every_value_of_the_channel_once() {
        // Blocks shorter than the lanes, of whole lanes, and with a remainder; vectors.
        for (channels, positions) in [(11, 37), (3, 16), (9, 5), (13, 1)] {
            let samples = 7;
            let (x, y) = exact_values(samples * channels * positions);
            let f = |u: f32, v: f32, k: usize| f64::from(u) * f64::from(v) + k as f64;
            let got = channel_sums((&x, &y), channels, positions, |k| move |u, v| f(u, v, k));
            let expected: Vec<f64> = (0..channels)
                .map(|k| {
                    let at = (0..samples).flat_map(|s| (0..positions).map(move |i| (s * channels + k) * positions + i));
                    at.fold(0.0, |a, i| a + f(x[i], y[i], k))
                })
                .collect();
            assert_eq!(got, expected, "{channels} x {positions}");
        }
    }

    #[test]
    fn sums_do_not_depend_on_the_thread_count() {
        // Values of every magnitude, so that another order of additions would round differently.
        let (channels, positions) = (19, 45);
        let x: Vec<f32> =
            (0..6 * channels * positions).map(|i| (i as f32 * 0.37).sin() * 10f32.powi(i as i32 % 9 - 4)).collect();
        let sums = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
            pool.install(|| channel_sums((&x, &x), channels, positions, |_| |u, _| f64::from(u)))
        };
        let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(sums(1)), bits(sums(2)));
    }

    #[test]
    fn sums_taken_together_equal_each_taken_alone_bit_for_bit() {
        // Images (channels of 29 positions) and vectors (one position), channels in groups of
        // unequal sizes.
        for (channels, positions) in [(11, 29), (13, 1)] {
            let n = 5 * channels * positions;
            let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 10f32.powi(i as i32 % 5 - 2)).collect();
            let y: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.3 - 1.0).collect();
            let term = |u: f32, v: f32, k: usize| f64::from(u * v) + k as f64;
            let [a, b] = channel_sums_of((&x, &y), channels, positions, |k| move |u, v| [f64::from(u), term(u, v, k)]);
            let alone_a = channel_sums((&x, &y), channels, positions, |_| |u, _| f64::from(u));
            let alone_b = channel_sums((&x, &y), channels, positions, |k| move |u, v| term(u, v, k));
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!((bits(&a), bits(&b)), (bits(&alone_a), bits(&alone_b)), "{channels} x {positions}");
        }
    }
}
