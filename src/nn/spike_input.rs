//! Input spikes as the event-driven Dense product reads them: rows of events, one per column of
//! the input (step-major: column `n samples + b` is sample b at step n), in one of two forms.
//!
//! In *value* form a row holds the inputs that are not zero and their values. In *deviation*
//! form, for spikes, each sample first gets a base row, the inputs that fire at more than half
//! of the steps, then each column holds only the inputs that differ from their sample's base:
//! +1 where an input fires off its base, -1 where it is silent on it. With x[n] = b + e[n], the currents are W b + W e[n] and
//! the weight gradient adds b times the sum of the output gradients over the steps (both taken
//! in `nn::linear`). A rate-coded pixel of rate p deviates at min(p, 1 - p) of the steps,
//! against p for its values: on Fashion-MNIST at T = 25, 2419 events per image with the base
//! rows, against 5565 values.
//!
//! A first layer reads the encoder's spikes as bits ([`SpikeTrains`]), never spread into a dense
//! matrix: how often each input fires, its base, and where a step differs from the base are
//! whole words of logic. Later layers read their input layer's dense spikes
//! ([`SpikeRows::values`]).

use nalgebra::DMatrix;
use rayon::prelude::*;

use super::Real;
use super::event_products::{self, Row};
use crate::data::events::Events;
use crate::data::spike_trains::{SpikeTrains, for_each_bit};

/// The input spikes of an event-driven Dense layer as the forward pass took them and the
/// backward pass reuses them: a row of events per column of its input, after base rows in
/// deviation form.
#[derive(Debug, Clone, Default)]
pub struct SpikeRows<F> {
    pub form: SpikeForm,
    pub events: Events<F>,
}

/// How [`SpikeRows`] hold the input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SpikeForm {
    /// Each column's values.
    #[default]
    Values,
    /// `samples` base rows, then each column's deviations from its sample's base. `first`: the
    /// columns start their sequence (a sequence taken in segments adds the base's gradient with
    /// its first segment).
    Deviations { samples: usize, first: bool },
}

impl<F: Real> SpikeRows<F> {
    /// The values of the columns of `x`.
    pub fn values(x: &DMatrix<F>) -> Self {
        let mut events = Events::default();
        event_products::column_events(x.as_slice(), x.nrows(), &mut events);
        SpikeRows { form: SpikeForm::Values, events }
    }

    pub(super) fn rows(&self) -> Vec<Row<'_, F>> {
        (0..self.events.steps()).map(|c| self.events.step(c)).collect()
    }

    /// The base rows in deviation form (none in value form).
    pub(super) fn base_rows(&self) -> usize {
        match self.form {
            SpikeForm::Values => 0,
            SpikeForm::Deviations { samples, .. } => samples,
        }
    }
}

/// What deviation form takes from the whole sequence: per sample, the base as bits (the inputs
/// that fire at more than half of the steps).
#[derive(Debug, Clone)]
pub struct Base {
    words: Vec<u64>,
    per_sample: usize,
}

impl Base {
    fn of(&self, b: usize) -> &[u64] {
        &self.words[b * self.per_sample..][..self.per_sample]
    }
}

/// The spike trains of step-major columns `x` of `samples` samples, when every value is 0 or
/// 1 and every sample has the same steps.
pub fn spike_trains<F: Real>(x: &DMatrix<F>, samples: usize) -> Option<SpikeTrains> {
    let steps = x.ncols() / samples.max(1);
    if samples == 0 || steps * samples != x.ncols() {
        return None;
    }
    let mut trains = SpikeTrains::new(x.nrows(), steps);
    for b in 0..samples {
        let per_step = trains.words_per_step();
        let words = trains.push_sample();
        for (n, step) in words.chunks_exact_mut(per_step).enumerate() {
            if !spike_words(x.column(n * samples + b).as_slice(), step) {
                return None;
            }
        }
    }
    Some(trains)
}

/// `column`'s values as words of 64 inputs (bit i set where value i is 1) into `words`; false
/// where a value is neither 0 nor 1. Whole blocks of compares without a branch, as
/// `column_events` takes them.
fn spike_words<F: Real>(column: &[F], words: &mut [u64]) -> bool {
    let mut other = 0u64;
    for (word, values) in words.iter_mut().zip(column.chunks(64)) {
        let mut ones = 0u64;
        for (j, &v) in values.iter().enumerate() {
            ones |= u64::from(v == F::one()) << j;
            other |= u64::from(v != F::zero() && v != F::one()) << j;
        }
        *word = ones;
    }
    other == 0
}

/// Into `held`, the inputs that fire at more than half of the steps, each step given as its
/// words. Returns the spikes counted. Each word's 64 inputs count their spikes together,
/// bit-sliced: bit j of `planes[k]` is bit k of input j's count, and a step adds its word to the
/// planes with a ripple of carries, a few logic operations per word instead of a counter
/// update per spike.
fn majority<'a>(steps: impl ExactSizeIterator<Item = &'a [u64]>, held: &mut [u64]) -> usize {
    let count = steps.len();
    let bits = (usize::BITS - count.leading_zeros()) as usize;
    let mut planes = vec![0u64; held.len() * bits];
    let mut spikes = 0;
    for step in steps {
        for (word, counter) in step.iter().zip(planes.chunks_exact_mut(bits.max(1))) {
            spikes += word.count_ones() as usize;
            let mut carry = *word;
            for plane in counter.iter_mut() {
                let sum = *plane ^ carry;
                carry &= *plane;
                *plane = sum;
            }
        }
    }
    // Counts above half the steps: compared with count / 2 from the highest bit down, `above`
    // gathers the inputs found greater, `level` those equal so far.
    let half = count / 2;
    for (held, counter) in held.iter_mut().zip(planes.chunks_exact(bits.max(1))) {
        let (mut above, mut level) = (0u64, !0u64);
        for (k, &plane) in counter.iter().enumerate().rev() {
            if half >> k & 1 == 1 {
                level &= plane;
            } else {
                above |= level & plane;
                level &= !plane;
            }
        }
        *held = above;
    }
    spikes
}

/// The step-major dense matrix of `trains` (`inputs x steps samples`, ones where spikes are).
pub fn dense<F: Real>(trains: &SpikeTrains) -> DMatrix<F> {
    let samples = trains.samples();
    let mut x = DMatrix::zeros(trains.inputs(), trains.steps() * samples);
    for b in 0..samples {
        for n in 0..trains.steps() {
            let mut column = x.column_mut(n * samples + b);
            for_each_bit(trains.step(b, n), |i| column[i as usize] = F::one());
        }
    }
    x
}

/// The base to take `trains` as deviations from, or None where the value form holds fewer
/// events (base rows included). Decided on the whole sequence, so that its segments take the
/// form it takes whole. Needs two steps at least: a single step is its own base.
pub fn deviation_base(trains: &SpikeTrains) -> Option<Base> {
    let (steps, per_sample) = (trains.steps(), trains.words_per_step());
    if steps < 2 {
        return None;
    }
    let mut base = Base { words: vec![0; trains.samples() * per_sample], per_sample };
    let mut deviations = 0;
    for (b, held) in base.words.chunks_exact_mut(per_sample.max(1)).enumerate() {
        majority((0..steps).map(|n| trains.step(b, n)), held);
        for n in 0..steps {
            let step = trains.step(b, n);
            deviations += step.iter().zip(&*held).map(|(&f, &h)| (f ^ h).count_ones() as usize).sum::<usize>();
        }
    }
    let held: usize = base.words.iter().map(|w| w.count_ones() as usize).sum();
    (held + deviations < trains.total()).then_some(base)
}

/// Steps `first..end` of `trains` as rows: deviations from `base` (see [`deviation_base`])
/// after the base rows, or values.
pub fn rows<F: Real>(trains: &SpikeTrains, (first, end): (usize, usize), base: Option<&Base>) -> SpikeRows<F> {
    let samples = trains.samples();
    let mut events = Events::default();
    let Some(base) = base else {
        for n in first..end {
            for b in 0..samples {
                for_each_bit(trains.step(b, n), |i| events.push(i, F::one()));
                events.end_step();
            }
        }
        return SpikeRows { form: SpikeForm::Values, events };
    };
    for b in 0..samples {
        for_each_bit(base.of(b), |i| events.push(i, F::one()));
        events.end_step();
    }
    for n in first..end {
        for b in 0..samples {
            push_deviations(trains.step(b, n), base.of(b), &mut events);
        }
    }
    SpikeRows { form: SpikeForm::Deviations { samples, first: first == 0 }, events }
}

/// The step-major columns of `x` (`samples` per step) in deviation form, built from the dense
/// matrix in parallel over samples, for a layer inside the stack whose input is spikes (a
/// convolution after a spiking layer and max pooling): None where a value is neither 0 nor 1,
/// where there are fewer than two steps, or where the value form holds fewer events (base rows
/// included), as [`deviation_base`] decides for a first layer.
pub fn column_deviations<F: Real>(x: &DMatrix<F>, samples: usize) -> Option<SpikeRows<F>> {
    let (n, steps) = (x.nrows(), x.ncols() / samples.max(1));
    if steps < 2 || samples == 0 || steps * samples != x.ncols() {
        return None;
    }
    let words = n.div_ceil(64);
    // Per sample: its base row, then each step's deviations, and how many values it holds.
    let per_sample: Option<Vec<(Events<F>, usize)>> = (0..samples)
        .into_par_iter()
        .map(|b| {
            let mut bits = vec![0u64; steps * words];
            for (t, step) in bits.chunks_exact_mut(words).enumerate() {
                if !spike_words(&x.as_slice()[(t * samples + b) * n..][..n], step) {
                    return None;
                }
            }
            let mut base = vec![0u64; words];
            let values = majority(bits.chunks_exact(words), &mut base);
            let mut rows = Events::default();
            for_each_bit(&base, |i| rows.push(i, F::one()));
            rows.end_step();
            for step in bits.chunks_exact(words) {
                push_deviations(step, &base, &mut rows);
            }
            Some((rows, values))
        })
        .collect();
    let per_sample = per_sample?;
    let values: usize = per_sample.iter().map(|(_, v)| v).sum();
    let deviations: usize = per_sample.iter().map(|(rows, _)| rows.total()).sum();
    if deviations >= values {
        return None;
    }
    // Base rows in sample order, then step by step each sample's deviations.
    let parts: Vec<Events<F>> = per_sample.into_iter().map(|(rows, _)| rows).collect();
    let events = Events::gather(&parts, (0..=steps).flat_map(|r| (0..samples).map(move |b| (b, r))));
    Some(SpikeRows { form: SpikeForm::Deviations { samples, first: true }, events })
}

/// Where a step's spikes `fired` differ from `base` (bits of the same inputs), as one row of
/// `events`: +1 where an input fires off its base, -1 where it is silent on it.
fn push_deviations<F: Real>(fired: &[u64], base: &[u64], events: &mut Events<F>) {
    for (w, (&fired, &held)) in fired.iter().zip(base).enumerate() {
        let mut rest = fired ^ held;
        while rest != 0 {
            let j = rest.trailing_zeros();
            let value = if fired >> j & 1 == 1 { F::one() } else { -F::one() };
            events.push(w as u32 * 64 + j, value);
            rest &= rest - 1;
        }
    }
    events.end_step();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(events: &Events<f64>) -> Vec<(Vec<u32>, Vec<f64>)> {
        (0..events.steps()).map(|r| (events.step(r).0.to_vec(), events.step(r).1.to_vec())).collect()
    }

    #[test]
    fn deviations_hold_each_samples_majority_then_what_differs_from_it() {
        // Two inputs, two samples, three steps: columns (step 0: a, b), (step 1: a, b), ...
        // Sample a: input 0 fires at 1, 1, 0 (base 1), input 1 at 1, 0, 0 (base 0).
        // Sample b: input 0 at 1, 1, 1 (base 1), input 1 at 0, 1, 1 (base 1).
        let x = DMatrix::from_column_slice(2, 6, &[1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
        let trains = spike_trains(&x, 2).expect("spikes");
        assert_eq!(dense::<f64>(&trains), x);
        let base = deviation_base(&trains).expect("3 base events and 3 deviations against 8 values");
        let whole = rows::<f64>(&trains, (0, 3), Some(&base));
        assert_eq!(whole.form, SpikeForm::Deviations { samples: 2, first: true });
        let expected: [(&[u32], &[f64]); 8] = [
            (&[0], &[1.0]),
            (&[0, 1], &[1.0, 1.0]),
            (&[1], &[1.0]),
            (&[1], &[-1.0]),
            (&[], &[]),
            (&[], &[]),
            (&[0], &[-1.0]),
            (&[], &[]),
        ];
        for (r, (idx, val)) in expected.into_iter().enumerate() {
            assert_eq!(whole.events.step(r), (idx, val), "row {r}");
        }
        let dense = column_deviations(&x, 2).expect("fewer as deviations");
        assert_eq!((rows_of(&dense.events), dense.form), (rows_of(&whole.events), whole.form));
        // A segment keeps the base rows and the base of the whole.
        let later = rows::<f64>(&trains, (2, 3), Some(&base));
        assert_eq!(later.form, SpikeForm::Deviations { samples: 2, first: false });
        assert_eq!(rows_of(&later.events)[2..], rows_of(&whole.events)[6..]);
        // In value form the rows are the columns' values.
        assert_eq!(rows_of(&rows::<f64>(&trains, (0, 3), None).events), rows_of(&SpikeRows::values(&x).events));
        // One step is its own base; values other than 0 and 1 are not spikes.
        assert!(deviation_base(&spike_trains(&x.columns(0, 2).into_owned(), 2).expect("spikes")).is_none());
        assert!(spike_trains(&x.map(|v| v * 0.5), 2).is_none());
    }

    #[test]
    fn the_form_with_fewer_events_is_taken() {
        // One sample of 70 inputs (two words) over 4 steps: input i fires at the steps n < i mod 5.
        let x = DMatrix::from_fn(70, 4, |i, n| if n < i % 5 { 1.0 } else { 0.0 });
        let trains = spike_trains(&x, 1).expect("spikes");
        // Inputs i mod 5 = 3 and 4 hold a base (3 and 4 of 4 steps), deviating once and never.
        let values = trains.total();
        let base = deviation_base(&trains).expect("fewer as deviations");
        let taken = rows::<f64>(&trains, (0, 4), Some(&base));
        assert!(taken.events.total() < values, "{} events against {values} values", taken.events.total());
        for n in 0..4 {
            let (idx, val) = taken.events.step(1 + n);
            let expected: Vec<(u32, f64)> = (0..70u32)
                .filter_map(|i| {
                    let held = i % 5 >= 3;
                    let fires = (n as u32) < i % 5;
                    (fires != held).then_some((i, if fires { 1.0 } else { -1.0 }))
                })
                .collect();
            assert_eq!(idx.iter().copied().zip(val.iter().copied()).collect::<Vec<_>>(), expected, "step {n}");
        }
        // Built from the dense matrix, in parallel over samples: the same rows.
        let dense = column_deviations(&x, 1).expect("fewer as deviations");
        assert_eq!(rows_of(&dense.events), rows_of(&taken.events));
        assert_eq!(dense.form, taken.form);
        assert!(column_deviations(&x.map(|v| v * 0.5), 1).is_none(), "values other than 0 and 1");
        // Inputs that fire at one step of four: values are fewer.
        let sparse = DMatrix::from_fn(70, 4, |i, n| if n == i % 4 { 1.0 } else { 0.0 });
        assert!(deviation_base(&spike_trains(&sparse, 1).expect("spikes")).is_none());
        assert!(column_deviations(&sparse, 1).is_none());
    }

    /// The bit-sliced counts against a counter per input, for odd and even numbers of steps (an
    /// input firing at exactly half of them is not held) and counts past a power of two.
    #[test]
    fn majority_counts_every_input_as_a_counter_would() {
        let mut state = 99u64;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            state
        };
        for steps in [2, 3, 4, 7, 8, 25, 32, 33] {
            // Inputs of different rates: word k's bits fire with probability 1 - 2^-(k + 1).
            let words: Vec<Vec<u64>> =
                (0..steps).map(|_| (0..3).map(|k| (0..=k).fold(0, |acc, _| acc | next())).collect()).collect();
            let mut held = vec![0u64; 3];
            let spikes = majority(words.iter().map(Vec::as_slice), &mut held);
            let mut total = 0;
            for i in 0..3 * 64 {
                let fired = words.iter().filter(|w| w[i / 64] >> (i % 64) & 1 == 1).count();
                total += fired;
                assert_eq!(held[i / 64] >> (i % 64) & 1 == 1, 2 * fired > steps, "input {i}, {steps} steps");
            }
            assert_eq!(spikes, total);
        }
    }
}
