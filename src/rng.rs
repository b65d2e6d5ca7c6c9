//! Random streams. Every random decision draws from a stream derived from (run seed, purpose,
//! index), never from a shared generator, so results do not depend on thread count or on the
//! order in which parts of the network are built.

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

pub type Stream = Xoshiro256PlusPlus;

/// What a stream is used for; part of its derivation so two purposes never share numbers.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    InitialState = 1,
    Connectivity = 2,
    PoissonSource = 3,
    /// Input encoding of one training sample (index: epoch and sample).
    Encoding = 4,
    /// Order of the training samples (index: epoch).
    Shuffle = 5,
    /// Dropout masks of a layered model (index: epoch, sample and layer).
    Dropout = 6,
    /// Poisson input drawn per target neuron (index: the input; item: the block of targets).
    PoissonInput = 7,
    /// The samples of a generated task (index: the split).
    Task = 8,
}

/// SplitMix64 finaliser: a bijective mixer, so distinct inputs give unrelated seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of [`stream`]'s generator.
fn stream_key(seed: u64, purpose: Purpose, index: u64) -> u64 {
    mix(mix(seed) ^ mix((purpose as u64) << 56 ^ index))
}

/// The stream for `purpose` number `index` (a population or projection index) of a run.
pub fn stream(seed: u64, purpose: Purpose, index: u64) -> Stream {
    Stream::seed_from_u64(stream_key(seed, purpose, index))
}

/// Streams stepped side by side in [`Lanes`].
pub const LANES: usize = 8;

/// [`LANES`] streams side by side, lane l drawing the numbers of `stream(seed, purpose,
/// indices[l])`: one step of all of them is a few vector instructions, where one stream's
/// steps wait on each other (rate coding's draws took a twentieth of a spiking net's training).
/// The generator is written out here (xoshiro256++, seeded with four SplitMix64 outputs, as
/// rand_xoshiro seeds it) because rand_xoshiro keeps its state to itself; a test holds the two
/// to the same numbers.
#[derive(Debug, Clone)]
pub struct Lanes {
    /// Word k of every lane's state.
    s: [[u64; LANES]; 4],
}

impl Lanes {
    pub fn new(seed: u64, purpose: Purpose, indices: [u64; LANES]) -> Self {
        let mut s = [[0; LANES]; 4];
        for (l, &index) in indices.iter().enumerate() {
            // SplitMix64 from the key: its k-th output is `mix` of the key plus k golden steps.
            let key = stream_key(seed, purpose, index);
            for (k, word) in s.iter_mut().enumerate() {
                word[l] = mix(key.wrapping_add((k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            }
        }
        Lanes { s }
    }

    /// The next number of every lane.
    #[inline]
    pub fn next_u64s(&mut self) -> [u64; LANES] {
        let [s0, s1, s2, s3] = &mut self.s;
        let mut out = [0; LANES];
        for l in 0..LANES {
            out[l] = s0[l].wrapping_add(s3[l]).rotate_left(23).wrapping_add(s0[l]);
            let t = s1[l] << 17;
            s2[l] ^= s0[l];
            s3[l] ^= s1[l];
            s1[l] ^= s2[l];
            s0[l] ^= s3[l];
            s2[l] ^= t;
            s3[l] = s3[l].rotate_left(45);
        }
        out
    }
}

/// The stream of item `item` (a target neuron, a block of neurons) within `purpose` number
/// `index` of a run: lets one projection or input be generated in independent pieces, in
/// parallel, with the same numbers whatever the order or the thread that draws them.
pub fn item_stream(seed: u64, purpose: Purpose, index: u64, item: u64) -> Stream {
    let key = mix(mix(mix(seed) ^ mix((purpose as u64) << 56 ^ index)) ^ item);
    Stream::seed_from_u64(key)
}

/// Number of failures before the first success in Bernoulli(p) trials, by inversion; lets sparse
/// random structures be generated in time proportional to their successes, not their trials.
/// `ln_q` is `ln(1 - p)`, precomputed by the caller; p must lie in (0, 1).
pub fn geometric_skip(rng: &mut Stream, ln_q: f64) -> u64 {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    let u = 1.0 - rng.random::<f64>();
    let k = (u.ln() / ln_q).floor();
    if k >= u64::MAX as f64 { u64::MAX } else { k as u64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_purpose_and_index() {
        let a = stream(1, Purpose::Connectivity, 0).random::<u64>();
        let b = stream(1, Purpose::Connectivity, 1).random::<u64>();
        let c = stream(1, Purpose::PoissonSource, 0).random::<u64>();
        let d = stream(1, Purpose::Connectivity, 0).random::<u64>();
        assert!(a != b && a != c && b != c);
        assert_eq!(a, d);
        let e = item_stream(1, Purpose::Connectivity, 0, 0).random::<u64>();
        let f = item_stream(1, Purpose::Connectivity, 0, 1).random::<u64>();
        let g = item_stream(1, Purpose::Connectivity, 1, 0).random::<u64>();
        assert!(e != f && e != g && f != g && e != a);
    }

    #[test]
    fn lanes_draw_the_numbers_of_their_streams() {
        let indices = [0, 1, 2, 3, 1 << 40, u64::MAX, 77, 5];
        let mut lanes = Lanes::new(9, Purpose::Encoding, indices);
        let mut streams = indices.map(|i| stream(9, Purpose::Encoding, i));
        for _ in 0..1000 {
            let expected: Vec<u64> = streams.iter_mut().map(|s| s.random::<u64>()).collect();
            assert_eq!(lanes.next_u64s().to_vec(), expected);
        }
    }

    #[test]
    fn geometric_skip_has_the_right_mean() {
        let p: f64 = 0.05;
        let ln_q = (-p).ln_1p();
        let mut rng = stream(7, Purpose::PoissonSource, 0);
        let n = 200_000;
        let mean = (0..n).map(|_| geometric_skip(&mut rng, ln_q) as f64).sum::<f64>() / n as f64;
        let expected = (1.0 - p) / p;
        assert!((mean - expected).abs() / expected < 0.02, "mean {mean} vs {expected}");
    }
}
