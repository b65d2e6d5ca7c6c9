//! The serde mirror of a network file (`networks/*.ron`). Field names carry their units.

use serde::{Deserialize, Serialize};

use super::common::{Distribution, Projection};
use super::layers::Layer;
use super::training::{InputPopulation, Training};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub name: String,
    /// Time step; Brian2's default when absent (a layered model has no time).
    #[serde(default = "default_dt")]
    pub dt_ms: f64,
    /// Default run length; `--duration-ms` overrides it.
    #[serde(default = "default_duration")]
    pub duration_ms: f64,
    /// Default seed; `--seed` overrides it.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Stimulus file applied by default, relative to this file's folder; `--stimulus` overrides it.
    #[serde(default)]
    pub stimulus: Option<String>,
    #[serde(default)]
    pub populations: Vec<Population>,
    /// A layered model (DHN, BNN, ICBM, CNN): a stack of layers applied once per image, in place
    /// of populations and projections; see [`super::layers`].
    #[serde(default)]
    pub layers: Vec<Layer>,
    /// Populations fed from outside: by a stimulus source of the same name when simulating, by
    /// the data set when training.
    #[serde(default)]
    pub inputs: Vec<InputPopulation>,
    #[serde(default)]
    pub projections: Vec<Projection>,
    #[serde(default)]
    pub record: Record,
    /// How to train the network (`snn train`).
    #[serde(default)]
    pub training: Option<Training>,
}

impl Network {
    /// Whether this is a layered model rather than a network of spiking populations.
    pub fn is_layered(&self) -> bool {
        !self.layers.is_empty()
    }
}

fn default_dt() -> f64 {
    0.1
}

fn default_duration() -> f64 {
    1000.0
}

fn default_seed() -> u64 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Population {
    pub name: String,
    pub size: u32,
    pub neuron: Neuron,
    /// Initial membrane potential (mV); defaults to the resting potential.
    #[serde(default)]
    pub init_v: Option<Distribution>,
}

/// Neuron models. Only LIF for now; the enum leaves room for others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Neuron {
    /// Leaky integrate-and-fire:
    /// `tau_mem dv/dt = -(v - v_rest) + I_syn + r_mem * I_ext`, spike when `v >= v_threshold`.
    Lif {
        tau_mem_ms: f64,
        v_rest: f64,
        v_threshold: f64,
        v_reset: f64,
        #[serde(default)]
        refractory_ms: f64,
        /// Membrane resistance, converting injected current (nA) to mV: 1 nA x 1 MOhm = 1 mV.
        #[serde(default = "default_r_mem")]
        r_mem_mohm: f64,
        #[serde(default)]
        reset: Reset,
    },
}

fn default_r_mem() -> f64 {
    100.0
}

/// What happens to the membrane after a spike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reset {
    /// `v <- v_reset` (Brian2 `reset='v = Vr'`, snnTorch "zero" when v_reset = 0).
    #[default]
    Hard,
    /// `v <- v - (v_threshold - v_reset)`, keeping the overshoot (snnTorch "subtract").
    Subtract,
}

/// What the run records besides the spikes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Which populations' spikes are kept.
    #[serde(default)]
    pub spikes: SpikeRecord,
    /// Membrane traces of chosen neurons.
    #[serde(default)]
    pub traces: Vec<TraceRecord>,
    /// Bin width of the population-rate histograms (`/rates` in the recording).
    #[serde(default = "default_rate_bin")]
    pub rate_bin_ms: f64,
}

impl Default for Record {
    fn default() -> Self {
        Record { spikes: SpikeRecord::default(), traces: Vec::new(), rate_bin_ms: default_rate_bin() }
    }
}

fn default_rate_bin() -> f64 {
    1.0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum SpikeRecord {
    #[default]
    All,
    Nothing,
    Only(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRecord {
    pub population: String,
    pub ids: Vec<u32>,
}
