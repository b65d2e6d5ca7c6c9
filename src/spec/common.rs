//! Building blocks shared by network and stimulus files: value distributions, connection rules,
//! synapse kinds and projections.

use rand::RngExt;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::rng::Stream;

/// A value drawn once per neuron or per synapse at build time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Distribution {
    Constant(f64),
    Uniform { low: f64, high: f64 },
    Normal { mean: f64, std: f64 },
}

impl Distribution {
    /// One draw from `rng`.
    pub fn sample(&self, rng: &mut Stream) -> f64 {
        match *self {
            Distribution::Constant(c) => c,
            Distribution::Uniform { low, high } => low + (high - low) * rng.random::<f64>(),
            Distribution::Normal { mean, std } => {
                let z: f64 = rng.sample(StandardNormal);
                mean + std * z
            }
        }
    }

    /// Problems with the distribution's own parameters, each prefixed with `path`.
    pub fn problems(&self, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        match *self {
            Distribution::Constant(c) if !c.is_finite() => {
                out.push(format!("{path}: Constant({c}) is not a finite number"))
            }
            Distribution::Uniform { low, high } if !(low.is_finite() && high.is_finite()) => {
                out.push(format!("{path}: Uniform bounds must be finite, got low = {low}, high = {high}"))
            }
            Distribution::Uniform { low, high } if low > high => {
                out.push(format!("{path}: Uniform needs low <= high, got low = {low}, high = {high}"))
            }
            Distribution::Normal { mean, std } if !(mean.is_finite() && std.is_finite() && std >= 0.0) => {
                out.push(format!("{path}: Normal needs a finite mean and std >= 0, got mean = {mean}, std = {std}"))
            }
            _ => {}
        }
        out
    }

    /// Smallest value the distribution can produce (-inf for a normal with spread).
    pub fn lower_bound(&self) -> f64 {
        match *self {
            Distribution::Constant(c) => c,
            Distribution::Uniform { low, .. } => low,
            Distribution::Normal { mean, std } => {
                if std == 0.0 {
                    mean
                } else {
                    f64::NEG_INFINITY
                }
            }
        }
    }
}

/// Which pre/post pairs a projection connects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Connect {
    /// Every source to every target.
    AllToAll,
    /// Source i to target i; both populations must have the same size.
    OneToOne,
    /// Each pair independently with probability p (Bernoulli), as Brian2's `connect(p=...)`.
    FixedProbability(f64),
    /// Every target receives exactly k distinct sources, drawn uniformly.
    FixedInDegree(u32),
    /// An explicit list of (source, target) index pairs.
    Explicit(Vec<(u32, u32)>),
}

/// How a spike arriving at a target changes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Synapse {
    /// The weight (mV) jumps the membrane potential directly.
    Instantaneous,
    /// The weight (mV) jumps a synaptic current variable (in units of R*I, mV) that decays with
    /// `tau_ms` and drives the membrane; as Brian2's `ge += we` with `dge/dt = -ge/taue`.
    Exponential { tau_ms: f64 },
}

fn default_true() -> bool {
    true
}

/// Synapses from one population to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Projection {
    pub from: String,
    pub to: String,
    pub connect: Connect,
    /// Synaptic weight in mV; negative weights are inhibitory.
    pub weight: Distribution,
    pub synapse: Synapse,
    /// Transmission delay, rounded to whole time steps at build time; negative draws are clipped to 0.
    #[serde(default = "zero_delay")]
    pub delay_ms: Distribution,
    /// Whether a neuron may connect to itself when `from == to` (Brian2 and NEST allow it).
    #[serde(default = "default_true")]
    pub allow_autapses: bool,
}

fn zero_delay() -> Distribution {
    Distribution::Constant(0.0)
}
