//! Spike generators: populations whose spikes are drawn, not integrated. A generator emits its
//! spikes at the start of a step, timestamped with that step's time.

use crate::data::encode::Encoder;
use crate::rng::{Stream, geometric_skip};

#[derive(Debug, Clone)]
pub enum Generator {
    /// Independent Bernoulli(p) per generator and step, p = rate * dt. Successes are found by
    /// geometric skipping over the flattened (step, generator) trials, so the cost is one draw
    /// per spike rather than one per generator and step.
    Poisson {
        size: u32,
        p: f64,
        ln_q: f64,
        /// Trial index of the next spike, counted from the start of the current step.
        next: u64,
        rng: Stream,
    },
    /// Explicit (step, generator) events, sorted by step then generator.
    Times { events: Vec<(u64, u32)>, cursor: usize },
    /// An image encoded step by step, one generator per pixel.
    /// `label` is the image's class, kept so the run can be scored without reading the data again.
    Image { pixels: Vec<u8>, label: u8, encoder: Encoder, steps: usize, rng: Stream },
}

impl Generator {
    pub fn poisson(size: u32, rate_hz: f64, dt_ms: f64, mut rng: Stream) -> Self {
        let p = (rate_hz * dt_ms / 1000.0).clamp(0.0, 1.0);
        let ln_q = (-p).ln_1p();
        let next = if p > 0.0 && p < 1.0 { geometric_skip(&mut rng, ln_q) } else { 0 };
        Generator::Poisson { size, p, ln_q, next, rng }
    }

    pub fn times(indices: &[u32], times_ms: &[f64], dt_ms: f64) -> Self {
        let mut events: Vec<(u64, u32)> =
            indices.iter().zip(times_ms).map(|(&i, &t)| ((t / dt_ms).round() as u64, i)).collect();
        events.sort_unstable();
        Generator::Times { events, cursor: 0 }
    }

    /// Appends the ids of generators firing in step `step` (steps are visited in order); an
    /// image source also appends the value each carries to `values` (1 for a spike, the
    /// pixel's intensity from an analog encoder), which trained layers read.
    pub fn emit(&mut self, step: u64, out: &mut Vec<u32>, values: &mut Vec<f32>) {
        match self {
            Generator::Poisson { size, p, ln_q, next, rng } => {
                if *p <= 0.0 {
                    return;
                }
                if *p >= 1.0 {
                    out.extend(0..*size);
                    return;
                }
                let n = *size as u64;
                while *next < n {
                    out.push(*next as u32);
                    *next = next.saturating_add(1 + geometric_skip(rng, *ln_q));
                }
                *next -= n;
            }
            Generator::Image { pixels, encoder, steps, rng, .. } => {
                encoder.encode_step(pixels, step as usize, *steps, rng, |i, x| {
                    out.push(i);
                    values.push(x);
                });
            }
            Generator::Times { events, cursor } => {
                while *cursor < events.len() && events[*cursor].0 < step {
                    *cursor += 1; // events before the first visited step are skipped
                }
                while *cursor < events.len() && events[*cursor].0 == step {
                    out.push(events[*cursor].1);
                    *cursor += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Purpose, stream};

    #[test]
    fn poisson_rate_and_spread_over_generators() {
        let mut g = Generator::poisson(100, 50.0, 0.1, stream(2, Purpose::PoissonSource, 0));
        let mut counts = vec![0u32; 100];
        let mut out = Vec::new();
        let steps = 100_000; // 10 s
        for s in 0..steps {
            out.clear();
            g.emit(s, &mut out, &mut Vec::new());
            for &i in &out {
                counts[i as usize] += 1;
            }
        }
        let total: u32 = counts.iter().sum();
        let rate = total as f64 / 100.0 / 10.0;
        assert!((rate - 50.0).abs() < 1.0, "rate {rate}");
        assert!(counts.iter().all(|&c| c > 350 && c < 650));
    }

    #[test]
    fn spike_times_are_emitted_in_their_step() {
        let mut g = Generator::times(&[1, 0, 2], &[0.3, 0.0, 0.26], 0.1);
        let mut seen = Vec::new();
        for s in 0..5 {
            let mut out = Vec::new();
            g.emit(s, &mut out, &mut Vec::new());
            seen.push(out);
        }
        assert_eq!(seen, vec![vec![0], vec![], vec![], vec![1, 2], vec![]]);
    }
}
