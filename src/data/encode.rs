//! Turning an image into input over T time steps, as a sparse list per step of (input index,
//! value) pairs: only inputs that fire (or carry current) appear, so the forward pass adds only
//! their weights.
//!
//! - `Rate`: each pixel fires in each step with probability `gain * intensity` (Bernoulli; snnTorch's
//!   `spikegen.rate`), intensity = pixel / 255.
//! - `Current`: every non-zero pixel injects its intensity in every step (the "direct" input of
//!   snnTorch and SpikingJelly).
//! - `Latency`: each pixel above `threshold` fires once, at step round((1 - intensity) (T - 1)):
//!   brighter pixels fire earlier (snnTorch's `spikegen.latency` with `linear=True`).
//! - `Sequence`: the image read in order, `per_step` pixels per step as currents (their
//!   intensities): `per_step` 28 feeds a Fashion-MNIST image row by row over 28 steps, 1 pixel by
//!   pixel over 784 (sequential MNIST). The input then has `per_step` neurons.
//! - `Recall`: the store-and-recall memory task (Bellec et al. 2018), on generated samples whose
//!   one "pixel" is the cue class c ([`super::tasks`]): input group c fires during the first
//!   `cue_steps`, then only background noise for `delay` steps, then the recall group (the last)
//!   fires for `recall_steps`; the label is c, scored in the recall window only. Every input
//!   fires at `noise_probability` per step throughout, a group at `cue_probability` while shown.

use rand::{Rng, RngExt};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::events::Events;
use super::spike_trains::{for_each_bit, set_bit};
use crate::rng::{self, LANES, Lanes, Purpose, Stream};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Encoder {
    Rate {
        #[serde(default = "one")]
        gain: f64,
    },
    Current,
    Latency {
        #[serde(default = "latency_threshold")]
        threshold: f64,
    },
    Sequence {
        per_step: u32,
    },
    Recall {
        classes: u32,
        /// Input neurons per cue class and for the recall signal.
        group: u32,
        cue_steps: u32,
        delay: u32,
        recall_steps: u32,
        #[serde(default = "half")]
        cue_probability: f64,
        #[serde(default = "percent")]
        noise_probability: f64,
    },
}

fn half() -> f64 {
    0.5
}

fn percent() -> f64 {
    0.01
}

fn one() -> f64 {
    1.0
}

fn latency_threshold() -> f64 {
    0.01
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::Rate { gain: 1.0 }
    }
}

const TWO_POW_32: f64 = (1u64 << 32) as f64;

/// A pixel's intensity in [0, 1] (pixel / 255): what every encoder and the layered models read.
pub fn intensity(p: u8) -> f32 {
    p as f32 / 255.0
}

impl Encoder {
    pub fn problems(&self, path: &str) -> Vec<String> {
        match *self {
            Encoder::Rate { gain } if !(gain.is_finite() && gain > 0.0 && gain <= 1.0) => {
                vec![format!("{path}.Rate.gain: must lie in (0, 1], got {gain}")]
            }
            Encoder::Latency { threshold } if !(0.0..1.0).contains(&threshold) => {
                vec![format!("{path}.Latency.threshold: must lie in [0, 1), got {threshold}")]
            }
            Encoder::Sequence { per_step: 0 } => vec![format!("{path}.Sequence.per_step: must be at least 1")],
            Encoder::Recall { classes, group, cue_steps, recall_steps, cue_probability, noise_probability, .. } => {
                let mut problems = Vec::new();
                if !(2..=255).contains(&classes) {
                    problems.push(format!("{path}.Recall.classes: must lie in 2 ..= 255, got {classes}"));
                }
                for (name, value) in [("group", group), ("cue_steps", cue_steps), ("recall_steps", recall_steps)] {
                    if value == 0 {
                        problems.push(format!("{path}.Recall.{name}: must be at least 1"));
                    }
                }
                for (name, p) in [("cue_probability", cue_probability), ("noise_probability", noise_probability)] {
                    if !(0.0..=1.0).contains(&p) {
                        problems.push(format!("{path}.Recall.{name}: must lie in [0, 1], got {p}"));
                    }
                }
                problems
            }
            _ => vec![],
        }
    }

    /// Whether the encoded input is spikes, 0 or 1 (not currents), so mostly zeros.
    pub fn emits_spikes(&self) -> bool {
        matches!(self, Encoder::Rate { .. } | Encoder::Latency { .. } | Encoder::Recall { .. })
    }

    /// The step from which the model's output counts in the scores: the recall window of the
    /// memory task, else the first.
    pub fn scored_from(&self) -> usize {
        match *self {
            Encoder::Recall { cue_steps, delay, .. } => (cue_steps + delay) as usize,
            _ => 0,
        }
    }

    /// How many input neurons the encoded image feeds: its pixels, or `per_step` of a sequence.
    pub fn inputs(&self, pixels: usize) -> usize {
        match *self {
            Encoder::Sequence { per_step } => per_step as usize,
            Encoder::Recall { classes, group, .. } => ((classes + 1) * group) as usize,
            _ => pixels,
        }
    }

    /// The steps a sequence of `pixels` pixels takes, or a recall trial (None for the other
    /// encoders, which run any number of steps).
    pub fn sequence_steps(&self, pixels: usize) -> Option<usize> {
        match *self {
            Encoder::Sequence { per_step } => Some(pixels.div_ceil(per_step.max(1) as usize)),
            Encoder::Recall { cue_steps, delay, recall_steps, .. } => {
                Some(cue_steps as usize + delay as usize + recall_steps as usize)
            }
            _ => None,
        }
    }

    /// What [`Encoder::inputs`] counts, for messages.
    pub fn describe_input(&self, pixels: usize) -> String {
        match *self {
            Encoder::Sequence { per_step } => format!("a sequence of {per_step} pixels per step"),
            Encoder::Recall { classes, group, .. } => {
                format!("a recall trial to {classes} cue groups and a recall group of {group} inputs each")
            }
            _ => format!("images of {pixels} pixels"),
        }
    }

    /// What [`Encoder::sequence_steps`] counts, for messages.
    pub fn describe_sequence(&self, pixels: usize) -> String {
        match *self {
            Encoder::Recall { cue_steps, delay, recall_steps, .. } => {
                format!("a recall trial of {cue_steps} cue, {delay} delay and {recall_steps} recall steps")
            }
            Encoder::Sequence { per_step } => format!("a sequence of {pixels} pixels at {per_step} per step"),
            _ => format!("an image of {pixels} pixels"),
        }
    }

    /// Encodes `pixels` over `steps` steps into `out`.
    pub fn encode(&self, pixels: &[u8], steps: usize, rng: &mut Stream, out: &mut Events<f32>) {
        out.clear();
        if let Encoder::Rate { gain } = *self {
            let thresholds = rate_thresholds(pixels, gain);
            let mut spikes = vec![0; thresholds.len().div_ceil(64)];
            for _ in 0..steps {
                rate_step_alone(&thresholds, rng, &mut spikes);
                for_each_bit(&spikes, |i| out.push(i, 1.0));
                out.end_step();
            }
            return;
        }
        for step in 0..steps {
            self.encode_step(pixels, step, steps, rng, |i, x| out.push(i, x));
            out.end_step();
        }
    }

    /// Encodes `pixels` over `steps` steps as bits into `spikes` (zeros to start with; step n's
    /// at `n * w..(n + 1) * w` for `w` words per step, see [`super::spike_trains`]), with the same
    /// draws as [`Encoder::encode`]. For the encoders that emit spikes ([`Self::emits_spikes`]).
    pub fn encode_spikes(&self, pixels: &[u8], steps: usize, rng: &mut Stream, spikes: &mut [u64]) {
        let per_step = spikes.len() / steps.max(1);
        if let Encoder::Rate { gain } = *self {
            let thresholds = rate_thresholds(pixels, gain);
            spikes.chunks_exact_mut(per_step).for_each(|step| rate_step_alone(&thresholds, rng, step));
            return;
        }
        for (n, step) in spikes.chunks_exact_mut(per_step).enumerate() {
            self.encode_step(pixels, n, steps, rng, |i, _| set_bit(step, i));
        }
    }

    /// The active inputs of one step, in index order, given to `emit`; steps must be encoded in
    /// order, since rate coding draws from `rng` as it goes.
    pub fn encode_step(
        &self,
        pixels: &[u8],
        step: usize,
        steps: usize,
        rng: &mut Stream,
        mut emit: impl FnMut(u32, f32),
    ) {
        match *self {
            Encoder::Rate { gain } => {
                let mut spikes = vec![0; pixels.len().div_ceil(64)];
                rate_step_alone(&rate_thresholds(pixels, gain), rng, &mut spikes);
                for_each_bit(&spikes, |i| emit(i, 1.0));
            }
            Encoder::Current => {
                for (i, &p) in pixels.iter().enumerate().filter(|(_, p)| **p > 0) {
                    emit(i as u32, intensity(p));
                }
            }
            Encoder::Sequence { per_step } => {
                let per_step = per_step as usize;
                let first = (step * per_step).min(pixels.len());
                let row = &pixels[first..(first + per_step).min(pixels.len())];
                for (i, &p) in row.iter().enumerate().filter(|(_, p)| **p > 0) {
                    emit(i as u32, intensity(p));
                }
            }
            Encoder::Recall { classes, group, cue_steps, delay, recall_steps, cue_probability, noise_probability } => {
                let (group, step) = (group as usize, step as u32);
                let shown = if step < cue_steps {
                    Some(pixels[0] as usize)
                } else if step >= cue_steps + delay && step < cue_steps + delay + recall_steps {
                    Some(classes as usize)
                } else {
                    None
                };
                for i in 0..(classes as usize + 1) * group {
                    let p = if shown == Some(i / group) { cue_probability } else { noise_probability };
                    // One draw per input and step, whatever the probabilities.
                    if rng.random::<f64>() < p {
                        emit(i as u32, 1.0);
                    }
                }
            }
            Encoder::Latency { threshold } => {
                for (i, &p) in pixels.iter().enumerate() {
                    let x = intensity(p);
                    if x as f64 > threshold && ((1.0 - x) * (steps - 1) as f32).round() as usize == step {
                        emit(i as u32, 1.0);
                    }
                }
            }
        }
    }
}

/// Rate coding fires a pixel when u < gain * intensity for a uniform u = k 2^-32, k the low or
/// high 32 bits of a draw (one 64-bit draw serves two pixels); that is k < ceil(gain *
/// intensity * 2^32), an integer test against a threshold computed once per image.
fn rate_thresholds(pixels: &[u8], gain: f64) -> Vec<u64> {
    pixels.iter().map(|&p| (gain * intensity(p) as f64 * TWO_POW_32).ceil() as u64).collect()
}

/// One step of rate coding of one image from its stream `rng`: [`rate_step`] of a single lane.
fn rate_step_alone(thresholds: &[u64], rng: &mut Stream, spikes: &mut [u64]) {
    // Chunks of one leave no remainder.
    rate_step(thresholds.as_chunks::<1>().0, || [rng.next_u64()], spikes.as_chunks_mut::<1>().0);
}

/// One step of rate coding of N images side by side, each drawing from its own stream (`draw`
/// gives the next number of every one): image l's spikes as bits into `spikes[w][l]` (pixel i
/// at bit i mod 64 of word w = i / 64), from its thresholds `thresholds[i][l]`. Half a draw per
/// pixel, zero pixels included, so a stream's position does not depend on the image; each coin
/// is an OR, without a branch (which would mispredict for every grey pixel).
fn rate_step<const N: usize>(thresholds: &[[u64; N]], mut draw: impl FnMut() -> [u64; N], spikes: &mut [[u64; N]]) {
    let low = |draw: u64| draw & 0xFFFF_FFFF;
    for (word, block) in spikes.iter_mut().zip(thresholds.chunks(64)) {
        let mut bits = [0u64; N];
        let pairs = block.chunks_exact(2);
        let odd = pairs.remainder();
        for (j, pair) in pairs.enumerate() {
            let draws = draw();
            for l in 0..N {
                bits[l] |= u64::from(low(draws[l]) < pair[0][l]) << (2 * j);
                bits[l] |= u64::from(draws[l] >> 32 < pair[1][l]) << (2 * j + 1);
            }
        }
        if let [threshold] = odd {
            let draws = draw();
            for l in 0..N {
                bits[l] |= u64::from(low(draws[l]) < threshold[l]) << (block.len() - 1);
            }
        }
        *word = bits;
    }
}

/// The stream that encodes test image `index`: the same for the test pass of training, `eval`,
/// the gradient-decay figure and an image stimulus, so all of them see the same input. Training
/// images get a fresh stream per epoch.
pub fn encoding_stream(seed: u64, epoch: Option<u32>, index: usize) -> Stream {
    rng::stream(seed, Purpose::Encoding, encoding_key(epoch, index))
}

/// The index of [`encoding_stream`]'s stream among the encoding streams.
fn encoding_key(epoch: Option<u32>, index: usize) -> u64 {
    match epoch {
        Some(e) => ((e as u64) << 32) | index as u64,
        None => (u64::MAX << 40) | index as u64,
    }
}

/// [`Encoder::encode_spikes`] of the images `indices` (`image` gives their pixels), each from
/// its [`encoding_stream`], into `spikes` (zeros; one sample's words after another's):
/// in parallel, and rate coding [`rng::LANES`] images side by side (the same draws as one at a
/// time, so the same spikes).
pub fn encode_spikes_of<'a>(
    encoder: &Encoder,
    image: impl Fn(usize) -> &'a [u8] + Sync,
    indices: &[usize],
    (seed, epoch): (u64, Option<u32>),
    steps: usize,
    spikes: &mut [u64],
) {
    let per_sample = (spikes.len() / indices.len().max(1)).max(1);
    let Encoder::Rate { gain } = *encoder else {
        spikes.par_chunks_mut(per_sample).zip(indices).for_each(|(words, &i)| {
            encoder.encode_spikes(image(i), steps, &mut encoding_stream(seed, epoch, i), words)
        });
        return;
    };
    spikes.par_chunks_mut(per_sample * LANES).zip(indices.par_chunks(LANES)).for_each(|(words, group)| {
        // A short last group fills its other lanes with its last image, whose spikes go nowhere.
        let keys = std::array::from_fn(|l| encoding_key(epoch, group[l.min(group.len() - 1)]));
        let mut lanes = Lanes::new(seed, Purpose::Encoding, keys);
        let thresholds: Vec<[u64; LANES]> = {
            let each: Vec<Vec<u64>> = group.iter().map(|&i| rate_thresholds(image(i), gain)).collect();
            (0..each[0].len()).map(|p| std::array::from_fn(|l| each[l.min(group.len() - 1)][p])).collect()
        };
        let per_step = per_sample / steps.max(1);
        let mut step_words = vec![[0u64; LANES]; per_step];
        for t in 0..steps {
            rate_step(&thresholds, || lanes.next_u64s(), &mut step_words);
            for (sample, words) in words.chunks_exact_mut(per_sample).enumerate() {
                let step = &mut words[t * per_step..][..per_step];
                step.iter_mut().zip(&step_words).for_each(|(w, lanes)| *w = lanes[sample]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Purpose, stream};

    #[test]
    fn a_sequence_feeds_the_image_in_order_per_step_pixels_at_a_time() {
        let pixels: Vec<u8> = (0..12).map(|p| p * 20).collect();
        let mut out = Events::default();
        let encoder = Encoder::Sequence { per_step: 4 };
        assert_eq!((encoder.inputs(12), encoder.sequence_steps(12)), (4, Some(3)));
        encoder.encode(&pixels, 3, &mut stream(1, Purpose::Encoding, 0), &mut out);
        for t in 0..3 {
            let (ids, values) = out.step(t);
            // Step t holds pixels 4t .. 4t + 3 on inputs 0 .. 3; pixel 0 is dark and absent.
            let expected: Vec<(u32, f32)> =
                (0..4).map(|i| (i, intensity(pixels[4 * t + i as usize]))).filter(|&(_, v)| v > 0.0).collect();
            let got: Vec<(u32, f32)> = ids.iter().copied().zip(values.iter().copied()).collect();
            assert_eq!(got, expected, "step {t}");
        }
    }

    #[test]
    fn rate_coding_compares_half_draws_with_the_firing_probability() {
        use rand::Rng;
        // An odd count, so the last pixel takes the low half of a draw of its own.
        let pixels: Vec<u8> = (0..=255).chain(0..=254).rev().collect();
        for gain in [1.0, 0.37, 1e-3] {
            let mut out = Events::default();
            Encoder::Rate { gain }.encode(&pixels, 50, &mut stream(3, Purpose::Encoding, 9), &mut out);
            let mut reference = stream(3, Purpose::Encoding, 9);
            for n in 0..50 {
                let mut expected = Vec::new();
                for (pair, chunk) in pixels.chunks(2).enumerate() {
                    let draw = reference.next_u64();
                    for (half, &p) in chunk.iter().enumerate() {
                        let u = ((draw >> (32 * half)) & 0xFFFF_FFFF) as f64 / TWO_POW_32;
                        if u < gain * intensity(p) as f64 {
                            expected.push((2 * pair + half) as u32);
                        }
                    }
                }
                assert_eq!(out.step(n).0, &expected[..], "gain {gain}, step {n}");
            }
        }
    }

    #[test]
    fn images_encoded_together_get_the_spikes_of_each_encoded_alone() {
        // 11 images (a group of eight lanes and a short one) of 131 pixels (an odd count, past
        // two words), and an encoder without lanes.
        let images: Vec<Vec<u8>> =
            (0..11).map(|i| (0..131).map(|p| ((p * 37 + i * 11) % 256) as u8).collect()).collect();
        let indices: Vec<usize> = (0..11).rev().collect();
        for encoder in [Encoder::Rate { gain: 0.8 }, Encoder::Latency { threshold: 0.2 }] {
            for epoch in [Some(3), None] {
                let (steps, words) = (6, 131usize.div_ceil(64));
                let mut together = vec![0; indices.len() * steps * words];
                encode_spikes_of(&encoder, |i| &images[i], &indices, (5, epoch), steps, &mut together);
                let mut alone = vec![0; steps * words];
                for (b, &i) in indices.iter().enumerate() {
                    alone.fill(0);
                    encoder.encode_spikes(&images[i], steps, &mut encoding_stream(5, epoch, i), &mut alone);
                    assert_eq!(&together[b * steps * words..][..steps * words], &alone[..], "{encoder:?} {i}");
                }
            }
        }
    }

    #[test]
    fn rate_coding_fires_in_proportion_to_intensity() {
        let pixels = [0u8, 51, 255, 128];
        let mut out = Events::default();
        Encoder::Rate { gain: 1.0 }.encode(&pixels, 20_000, &mut stream(1, Purpose::Encoding, 0), &mut out);
        let mut counts = [0usize; 4];
        (0..out.steps()).for_each(|n| out.step(n).0.iter().for_each(|&i| counts[i as usize] += 1));
        assert_eq!(counts[0], 0);
        assert_eq!(counts[2], 20_000);
        assert!((counts[1] as f64 / 20_000.0 - 0.2).abs() < 0.01, "{counts:?}");
        assert!((counts[3] as f64 / 20_000.0 - 128.0 / 255.0).abs() < 0.01, "{counts:?}");
    }

    #[test]
    fn latency_fires_bright_pixels_first_and_once() {
        let pixels = [255u8, 0, 128, 1];
        let mut out = Events::default();
        Encoder::Latency { threshold: 0.01 }.encode(&pixels, 11, &mut stream(1, Purpose::Encoding, 0), &mut out);
        let fired: Vec<(usize, u32)> = (0..11).flat_map(|s| out.step(s).0.iter().map(move |&i| (s, i))).collect();
        assert_eq!(fired, vec![(0, 0), (5, 2)]);
    }

    #[test]
    fn current_coding_repeats_nonzero_intensities() {
        let pixels = [0u8, 255, 51];
        let mut out = Events::default();
        Encoder::Current.encode(&pixels, 3, &mut stream(1, Purpose::Encoding, 0), &mut out);
        assert_eq!(out.steps(), 3);
        for s in 0..3 {
            assert_eq!(out.step(s), (&[1u32, 2][..], &[1.0f32, 0.2][..]));
        }
    }
}
