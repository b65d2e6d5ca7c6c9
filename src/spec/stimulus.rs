//! The serde mirror of a stimulus file (`stimuli/*.ron`): spike sources that project into the
//! network, and currents injected into its neurons.

use serde::{Deserialize, Serialize};

use super::common::{Projection, Synapse};
use crate::data::encode::Encoder;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stimulus {
    #[serde(default)]
    pub sources: Vec<Source>,
    /// Projections from sources into the network's populations.
    #[serde(default)]
    pub projections: Vec<Projection>,
    #[serde(default)]
    pub currents: Vec<Current>,
    /// Independent Poisson input drawn per target neuron, without source neurons or synapses.
    #[serde(default)]
    pub poisson_inputs: Vec<PoissonInput>,
}

/// Independent Poisson input to every neuron of a population: `inputs` inputs per neuron, each
/// firing at `rate_hz`, each spike adding `weight` (mV) through `synapse`. Per neuron and step
/// the number that fire is one binomial draw, Binomial(inputs, rate_hz dt), as Brian2's
/// `PoissonInput`; NEST's `poisson_generator` at rate R is the limit of many inputs at R /
/// inputs. It costs one draw per neuron and step, however many inputs it stands for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoissonInput {
    pub population: String,
    pub inputs: u32,
    pub rate_hz: f64,
    pub weight: f64,
    pub synapse: Synapse,
}

/// A population of spike generators; its name must differ from every network population.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub name: String,
    pub size: u32,
    pub kind: SourceKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum SourceKind {
    /// Each generator fires independently with probability `rate_hz * dt` per step
    /// (Brian2's PoissonGroup).
    Poisson { rate_hz: f64 },
    /// Generator `indices[k]` fires at `times_ms[k]` (Brian2's SpikeGeneratorGroup); times are
    /// rounded to the nearest step.
    SpikeTimes { indices: Vec<u32>, times_ms: Vec<f64> },
    /// One image of an MNIST-format data set, one generator per pixel, encoded into spikes as the
    /// trainer encodes it (with the run's seed, the same input as the test pass of training).
    Image {
        /// Folder of the IDX files, relative to the stimulus file; default: Debian's
        /// Fashion-MNIST when installed, else the shipped subset.
        #[serde(default)]
        data: Option<String>,
        /// Which image of the test split.
        index: u32,
        #[serde(default)]
        encoder: Encoder,
    },
}

/// Current injected into neurons of a network population.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Current {
    /// `amplitude_na` for the whole run.
    Constant {
        population: String,
        amplitude_na: f64,
        #[serde(default)]
        neurons: Option<Vec<u32>>,
    },
    /// `amplitude_na` from `start_ms` until `stop_ms` (or the end of the run).
    Step {
        population: String,
        amplitude_na: f64,
        start_ms: f64,
        #[serde(default)]
        stop_ms: Option<f64>,
        #[serde(default)]
        neurons: Option<Vec<u32>>,
    },
}
