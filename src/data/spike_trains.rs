//! Spikes over time as bits: per sample and step, one bit per input (input i at bit i mod 64
//! of word i / 64), as the spiking encoders write them for a batch. A bit costs an encoder
//! one OR where an event costs it a pushed index and value, and what a layer asks of the
//! spikes (how often an input fires, where a step differs from a pattern) is whole words of
//! logic.

/// A batch's spikes over `steps` steps of `inputs` inputs, sample after sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SpikeTrains {
    inputs: usize,
    steps: usize,
    words: Vec<u64>,
}

impl SpikeTrains {
    /// No samples yet.
    pub fn new(inputs: usize, steps: usize) -> Self {
        SpikeTrains { inputs, steps, words: Vec::new() }
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Words per step of one sample.
    pub fn words_per_step(&self) -> usize {
        self.inputs.div_ceil(64)
    }

    pub fn samples(&self) -> usize {
        self.words.len() / self.words_per_sample().max(1)
    }

    /// Appends a sample without spikes and returns its words, step after step, to be set.
    pub fn push_sample(&mut self) -> &mut [u64] {
        self.push_samples(1)
    }

    /// Words per sample: its steps one after the other.
    pub fn words_per_sample(&self) -> usize {
        self.steps * self.words_per_step()
    }

    /// Appends `n` samples without spikes and returns their words, sample after sample (each
    /// [`SpikeTrains::words_per_sample`] long), to be set: in parallel, for instance.
    pub fn push_samples(&mut self, n: usize) -> &mut [u64] {
        let at = self.words.len();
        self.words.resize(at + n * self.words_per_sample(), 0);
        &mut self.words[at..]
    }

    /// Step `n` of sample `b`.
    pub fn step(&self, b: usize, n: usize) -> &[u64] {
        let per_step = self.words_per_step();
        &self.words[(b * self.steps + n) * per_step..][..per_step]
    }

    /// How many spikes the batch holds.
    pub fn total(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// Calls `f` with the index of every set bit of `words`, ascending.
pub fn for_each_bit(words: &[u64], mut f: impl FnMut(u32)) {
    for (w, &word) in words.iter().enumerate() {
        let mut rest = word;
        while rest != 0 {
            f(w as u32 * 64 + rest.trailing_zeros());
            rest &= rest - 1;
        }
    }
}

/// Sets bit `i` of `words`.
pub fn set_bit(words: &mut [u64], i: u32) {
    words[i as usize / 64] |= 1 << (i % 64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_set_are_found_in_order_per_sample_and_step() {
        let mut trains = SpikeTrains::new(130, 2);
        assert_eq!(trains.words_per_step(), 3);
        let first = trains.push_sample();
        for i in [0, 63, 64, 129] {
            set_bit(&mut first[..3], i);
        }
        set_bit(&mut first[3..], 5);
        trains.push_sample();
        assert_eq!(trains.samples(), 2);
        let ones = |b: usize, n: usize| {
            let mut found = Vec::new();
            for_each_bit(trains.step(b, n), |i| found.push(i));
            found
        };
        assert_eq!((ones(0, 0), ones(0, 1), ones(1, 0)), (vec![0, 63, 64, 129], vec![5], vec![]));
        assert_eq!(trains.total(), 5);
    }
}
