//! Poisson input drawn per target neuron ([`crate::spec::PoissonInput`]): per neuron and step the
//! number of its `inputs` inputs that fire, Binomial(inputs, rate dt), times the weight.
//!
//! A draw happens for every neuron at every step, so it must be cheap: counts are drawn by
//! inverting a table of the binomial distribution function (one uniform number and a binary
//! search over a few dozen entries), which is exact up to the rounding of the table. Drives
//! whose mean count per step is too large for the table fall back to rand_distr's sampler.

use rand::RngExt;
use rand_distr::{Binomial, Distribution};

use super::lif::{Input, PendingDecay};
use crate::error::{Error, Result};
use crate::rng::Stream;

/// Means above this use rand_distr's sampler: the table's first entry, (1 - p)^N ~ e^-mean,
/// would underflow, and the table would grow long.
const MAX_TABLE_MEAN: f64 = 200.0;

/// How many of N inputs fire in one step.
#[derive(Debug, Clone)]
enum Count {
    /// `cdf[k]` = P(count <= k), up to the first k past the mean whose probability is below
    /// 1e-17 (the rest of the mass, a fast-falling tail, lies below the resolution of a
    /// uniform f64).
    Table {
        cdf: Vec<f64>,
    },
    Sampler(Binomial),
}

impl Count {
    fn new(n: u64, p: f64) -> Result<Self> {
        let mean = n as f64 * p;
        if mean > MAX_TABLE_MEAN || p >= 1.0 {
            let binomial = Binomial::new(n, p).map_err(|e| Error::Simulation(format!("{e} (inputs {n}, p {p})")))?;
            return Ok(Count::Sampler(binomial));
        }
        let mut pmf = (n as f64 * (-p).ln_1p()).exp();
        let mut cdf = vec![pmf];
        let odds = p / (1.0 - p);
        let mut k = 0u64;
        while k < n && ((k as f64) <= mean || pmf >= 1e-17) {
            pmf *= (n - k) as f64 / (k + 1) as f64 * odds;
            k += 1;
            cdf.push(cdf[k as usize - 1] + pmf);
        }
        Ok(Count::Table { cdf })
    }

    #[inline]
    fn sample(&self, rng: &mut Stream) -> u64 {
        match self {
            Count::Table { cdf } => {
                let u: f64 = rng.random();
                cdf.partition_point(|&c| c <= u).min(cdf.len() - 1) as u64
            }
            Count::Sampler(b) => b.sample(rng),
        }
    }
}

/// One Poisson input of a population.
#[derive(Debug, Clone)]
pub struct PoissonDrive {
    count: Count,
    weight: f64,
    input: Input,
}

impl PoissonDrive {
    /// `inputs` inputs at `p` spikes per step each, `weight` per spike into `input`.
    pub fn new(inputs: u32, p: f64, weight: f64, input: Input) -> Result<Self> {
        Ok(PoissonDrive { count: Count::new(inputs as u64, p)?, weight, input })
    }

    /// Adds one step of input to every neuron of a block (its synaptic variables as stored, one
    /// after the other, with their `pending` decay). A neuron that is refractory drops instantaneous input, but its
    /// count is drawn all the same, so that the stream does not depend on the state.
    pub fn add(
        &self,
        rng: &mut Stream,
        v: &mut [f64],
        syn: &mut [f64],
        pending: &[PendingDecay],
        active_from: &[u64],
        step: u64,
    ) {
        match self.input {
            Input::Synaptic { index, .. } => {
                let weight = self.weight * pending[index].inverse;
                for s in super::lif::variable_mut(syn, index, v.len()) {
                    *s += self.count.sample(rng) as f64 * weight;
                }
            }
            Input::Membrane => {
                for (v, &active) in v.iter_mut().zip(active_from) {
                    let x = self.count.sample(rng) as f64 * self.weight;
                    if step >= active {
                        *v += x;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Purpose, stream};

    fn moments(count: &Count, draws: usize) -> (f64, f64) {
        let mut rng = stream(11, Purpose::PoissonInput, 0);
        let xs: Vec<f64> = (0..draws).map(|_| count.sample(&mut rng) as f64).collect();
        let mean = xs.iter().sum::<f64>() / draws as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (draws - 1) as f64;
        (mean, var)
    }

    #[test]
    fn table_and_sampler_give_binomial_moments() {
        for (n, p) in [(1000u64, 0.002), (10, 0.5), (1, 0.3), (4000, 0.1)] {
            let count = Count::new(n, p).unwrap();
            assert_eq!(matches!(count, Count::Table { .. }), n as f64 * p <= MAX_TABLE_MEAN);
            let (mean, var) = moments(&count, 200_000);
            let (m, v) = (n as f64 * p, n as f64 * p * (1.0 - p));
            assert!((mean - m).abs() < 5.0 * (v / 200_000.0).sqrt(), "n {n} p {p}: mean {mean} vs {m}");
            assert!((var - v).abs() < 0.02 * v, "n {n} p {p}: variance {var} vs {v}");
        }
    }

    #[test]
    fn table_holds_the_whole_distribution() {
        let Count::Table { cdf } = Count::new(1000, 0.002).unwrap() else { panic!("a table") };
        assert!(1.0 - cdf.last().unwrap() < 1e-15);
        assert!(cdf.windows(2).all(|w| w[0] <= w[1]));
        let Count::Table { cdf } = Count::new(3, 0.5).unwrap() else { panic!("a table") };
        assert_eq!(cdf.len(), 4, "no entries past N");
        assert!((cdf[3] - 1.0).abs() < 1e-15);
    }
}
