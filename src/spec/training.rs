//! The `training` section of a network file, and the populations fed from outside (`inputs`).

use serde::{Deserialize, Serialize};

use crate::data::encode::Encoder;
use crate::surrogate::{SpikeMode, Surrogate};

/// A population whose spikes come from outside the network: a stimulus source of the same name
/// and size when simulating, the encoded data set when training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputPopulation {
    pub name: String,
    pub size: u32,
    /// (channels, height, width) of an image input, for layered models with convolutions.
    #[serde(default)]
    pub shape: Option<(u32, u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// Time steps per sample (T), each of the network's dt; layered models see an image once (1).
    #[serde(default = "one")]
    pub steps: u32,
    #[serde(default)]
    pub encoder: Encoder,
    #[serde(default)]
    pub surrogate: Surrogate,
    #[serde(default)]
    pub spike_mode: SpikeMode,
    /// Stop the gradient through the reset (snnTorch's `reset_mechanism` detach); default: it flows.
    #[serde(default)]
    pub detach_reset: bool,
    #[serde(default)]
    pub readout: Readout,
    /// Only the last N steps' outputs count in the scores (layer stacks; default: every step,
    /// or the recall window of the memory task). A classifier of long sequences reads its
    /// answer at the end, as sequential-MNIST set-ups do, rather than averaged over the whole.
    #[serde(default)]
    pub scored_steps: Option<u32>,
    /// How back-propagation through time keeps what it needs (layer stacks).
    #[serde(default)]
    pub bptt: Bptt,
    #[serde(default = "default_epochs")]
    pub epochs: u32,
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    #[serde(default)]
    pub optimizer: Optimizer,
    /// Decoupled weight decay (AdamW-style for Adam, L2 added to the gradient for SGD).
    #[serde(default)]
    pub weight_decay: f64,
    /// Gradients scaled down together when their global norm exceeds this (PyTorch's
    /// `clip_grad_norm_`); none by default.
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    #[serde(default)]
    pub schedule: Schedule,
    /// Folder with the four MNIST-format IDX files, relative to the network file; `--data`
    /// overrides. Default: Debian's Fashion-MNIST if installed, else the shipped subset.
    #[serde(default)]
    pub data: Option<String>,
    /// Use only the first N training / test samples (quick runs).
    #[serde(default)]
    pub train_samples: Option<u32>,
    #[serde(default)]
    pub test_samples: Option<u32>,
}

fn one() -> u32 {
    1
}

fn default_epochs() -> u32 {
    10
}

fn default_batch() -> u32 {
    128
}

/// How back-propagation through time holds the forward pass (see `models::segments`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Bptt {
    /// The whole sequence's tape: memory grows with the steps.
    #[default]
    Full,
    /// Exact, keeping the state every `every` steps and recomputing each segment's forward on
    /// the way back: one segment's tape at a time, the same gradients bit for bit.
    Recompute { every: u32 },
    /// The gradient stops `window` steps back at most (at each segment's start).
    Truncated { window: u32 },
    /// Online e-prop (Bellec et al. 2020, `models::eprop`): eligibility traces forward in time,
    /// memory independent of the steps; one recurrent Lif or Alif layer with an Li readout.
    Eprop,
}

impl Bptt {
    /// The steps held at a time, if the sequence is cut.
    pub fn segment(&self) -> Option<usize> {
        match *self {
            Bptt::Full | Bptt::Eprop => None,
            Bptt::Recompute { every: k } | Bptt::Truncated { window: k } => Some(k as usize),
        }
    }
}

impl std::str::FromStr for Bptt {
    type Err = String;

    /// `full`, `recompute:K` or `truncated:W`, as `--bptt` takes it.
    fn from_str(text: &str) -> Result<Self, String> {
        let (kind, steps) = text.split_once(':').unwrap_or((text, ""));
        let steps = || {
            steps
                .parse::<u32>()
                .ok()
                .filter(|&k| k > 0)
                .ok_or_else(|| format!("{text:?}: give the steps, e.g. {kind}:28"))
        };
        match kind {
            "full" => Ok(Bptt::Full),
            "eprop" => Ok(Bptt::Eprop),
            "recompute" => Ok(Bptt::Recompute { every: steps()? }),
            "truncated" => Ok(Bptt::Truncated { window: steps()? }),
            _ => Err(format!("{text:?}: expected full, recompute:K, truncated:W or eprop")),
        }
    }
}

/// How the last population's activity becomes class scores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Readout {
    /// The readout integrates without firing; scores are its membrane potential averaged over
    /// the steps (a leaky non-spiking readout).
    #[default]
    MeanMembrane,
    /// The readout fires; scores are its spike counts.
    SpikeCount,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Optimizer {
    Adam {
        #[serde(default = "adam_lr")]
        lr: f64,
        #[serde(default = "beta1")]
        beta1: f64,
        #[serde(default = "beta2")]
        beta2: f64,
        #[serde(default = "eps")]
        eps: f64,
    },
    Sgd {
        lr: f64,
        #[serde(default)]
        momentum: f64,
    },
}

fn adam_lr() -> f64 {
    5e-4
}
fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-8
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer::Adam { lr: adam_lr(), beta1: beta1(), beta2: beta2(), eps: eps() }
    }
}

impl Optimizer {
    pub fn lr(&self) -> f64 {
        match *self {
            Optimizer::Adam { lr, .. } | Optimizer::Sgd { lr, .. } => lr,
        }
    }
}

/// Learning rate over epochs, as a factor of the optimizer's rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Schedule {
    #[default]
    Constant,
    /// Cosine from 1 at the first epoch to 0 after the last.
    Cosine,
    /// Multiplied by `factor` every `every_epochs` epochs.
    Step { every_epochs: u32, factor: f64 },
}

impl Schedule {
    /// The factor for 0-based `epoch` of `epochs`.
    pub fn factor(&self, epoch: u32, epochs: u32) -> f64 {
        match *self {
            Schedule::Constant => 1.0,
            Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / epochs.max(1) as f64).cos()),
            Schedule::Step { every_epochs, factor } => factor.powi((epoch / every_epochs.max(1)) as i32),
        }
    }
}
