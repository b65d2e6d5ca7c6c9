//! The trainable form of a network: its chain of LIF layers as dense weight matrices, built
//! from the same spec and with the same initial weights as the engine would build.
//!
//! Weights of a layer are an `n_out x n_in` matrix, column-major, so the weights leaving input
//! `i` (column i) are contiguous: adding them for every input that fired is the event-driven
//! forward pass.
//!
//! Besides the chain's feed-forward projections, a population may receive [`Loop`]s: all-to-all
//! projections from itself or a later population, whose spikes arrive `1 + delay` steps after
//! they were emitted (the engine's one step of transmission plus the projection's delay).

use std::ops::Range;
use std::path::Path;

use nalgebra::DMatrix;

use crate::engine::synapses::{ConnectionPlan, Drawn, Rule, delay_steps};
use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::nn::Real;
use crate::rng::{self, Purpose};
use crate::spec::{Distribution, Network, Neuron, Projection, Readout, Reset, Training};
use crate::surrogate::{DerivativeTable, SpikeMode, Surrogate};

/// A layer of LIF neurons fed by an all-to-all projection with instantaneous synapses.
#[derive(Debug, Clone, PartialEq)]
pub struct LifLayer<F: Real> {
    pub name: String,
    pub weights: DMatrix<F>,
    /// P = exp(-dt / tau_mem).
    pub decay: F,
    pub v_rest: F,
    pub v_threshold: F,
    pub v_reset: F,
    pub reset: Reset,
}

impl<F: Real> LifLayer<F> {
    pub fn inputs(&self) -> usize {
        self.weights.ncols()
    }

    pub fn outputs(&self) -> usize {
        self.weights.nrows()
    }
}

/// A recurrent projection: from layer `source` onto layer `target <= source`.
#[derive(Debug, Clone, PartialEq)]
pub struct Loop<F: Real> {
    pub source: usize,
    pub target: usize,
    /// Steps beyond the one every projection takes: a spike emitted at step n arrives at step
    /// n + 1 + delay.
    pub delay: usize,
    /// n_target x n_source.
    pub weights: DMatrix<F>,
    /// False when a neuron must not feed itself (`allow_autapses: false` onto its own
    /// population): the diagonal stays zero through training.
    pub autapses: bool,
}

impl<F: Real> Loop<F> {
    /// Zeroes what must stay zero (the diagonal without autapses) in weights or a gradient.
    pub fn mask(&self, m: &mut DMatrix<F>) {
        if !self.autapses {
            m.fill_diagonal(F::zero());
        }
    }
}

/// The layers, input to readout, and how spikes and scores are computed.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainNet<F: Real> {
    pub input_size: usize,
    pub layers: Vec<LifLayer<F>>,
    /// Recurrent projections, in the file's order.
    pub loops: Vec<Loop<F>>,
    pub readout: Readout,
    pub surrogate: Surrogate,
    /// The surrogate's derivative, tabulated for speed.
    pub derivative: DerivativeTable,
    pub mode: SpikeMode,
    pub detach_reset: bool,
    pub steps: usize,
}

impl<F: Real> TrainNet<F> {
    /// Builds the layers of a checked training network (see `spec::validate::check_training`),
    /// drawing initial weights exactly as the engine draws the projections' synapses.
    pub fn from_spec(net: &Network, training: &Training, seed: u64) -> Result<Self> {
        let input = net.inputs.first().ok_or_else(|| Error::Training("the network has no input population".into()))?;
        let mut layers = Vec::new();
        let mut n_in = input.size as usize;
        let mut previous = input.name.as_str();
        for pop in &net.populations {
            let (k, proj) = net
                .projections
                .iter()
                .enumerate()
                .find(|(_, p)| p.to == pop.name && p.from == previous)
                .ok_or_else(|| Error::Training(format!("no projection {previous:?} -> {:?}", pop.name)))?;
            let weights = initial_weights(net, k, proj, n_in, pop.size as usize, seed);
            let Neuron::Lif { tau_mem_ms, v_rest, v_threshold, v_reset, reset, .. } = pop.neuron;
            layers.push(LifLayer {
                name: pop.name.clone(),
                weights,
                decay: F::of((-net.dt_ms / tau_mem_ms).exp()),
                v_rest: F::of(v_rest),
                v_threshold: F::of(v_threshold),
                v_reset: F::of(v_reset),
                reset,
            });
            n_in = pop.size as usize;
            previous = pop.name.as_str();
        }
        let index = |name: &str| net.populations.iter().position(|p| p.name == name);
        let mut loops = Vec::new();
        for (k, proj) in net.projections.iter().enumerate() {
            let (Some(source), Some(target)) = (index(&proj.from), index(&proj.to)) else { continue };
            if source < target {
                continue;
            }
            let Distribution::Constant(delay_ms) = proj.delay_ms else {
                return Err(Error::Training(format!("projections[{k}]: a recurrent projection needs one delay")));
            };
            let (n_source, n_target) = (net.populations[source].size as usize, net.populations[target].size as usize);
            let autapses = source != target || proj.allow_autapses;
            loops.push(Loop {
                source,
                target,
                delay: delay_steps(delay_ms, net.dt_ms) as usize,
                weights: initial_weights(net, k, proj, n_source, n_target, seed),
                autapses,
            });
        }
        Ok(TrainNet {
            input_size: input.size as usize,
            layers,
            loops,
            readout: training.readout,
            surrogate: training.surrogate,
            derivative: DerivativeTable::new(training.surrogate),
            mode: training.spike_mode,
            detach_reset: training.detach_reset,
            steps: training.steps as usize,
        })
    }

    pub fn classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs())
    }

    /// The trained matrices: each layer's feed-forward weights, then the loops'.
    pub fn parameters(&self) -> impl Iterator<Item = &DMatrix<F>> {
        self.layers.iter().map(|l| &l.weights).chain(self.loops.iter().map(|l| &l.weights))
    }

    pub fn parameters_mut(&mut self) -> Vec<&mut DMatrix<F>> {
        self.layers.iter_mut().map(|l| &mut l.weights).chain(self.loops.iter_mut().map(|l| &mut l.weights)).collect()
    }

    /// Zero matrices of the parameters' shapes, for gradients.
    pub fn zero_gradients(&self) -> Vec<DMatrix<F>> {
        self.parameters().map(|w| DMatrix::zeros(w.nrows(), w.ncols())).collect()
    }

    /// (source, target) population names of each parameter matrix, `input` naming the input.
    pub fn parameter_names(&self, input: &str) -> Vec<(String, String)> {
        let mut from = input.to_owned();
        let mut names = Vec::new();
        for l in &self.layers {
            names.push((std::mem::replace(&mut from, l.name.clone()), l.name.clone()));
        }
        for lp in &self.loops {
            names.push((self.layers[lp.source].name.clone(), self.layers[lp.target].name.clone()));
        }
        names
    }

    /// The layers that must walk through time together: from the first target of a loop to its
    /// last source (one span, even if the loops leave layers between them out: those then run
    /// step by step too, with the same result).
    pub fn recurrent_span(&self) -> Option<Range<usize>> {
        let start = self.loops.iter().map(|l| l.target).min()?;
        let end = self.loops.iter().map(|l| l.source).max()? + 1;
        Some(start..end)
    }

    /// Replaces the weights with a checkpoint's (source, target, weights) layers, which must
    /// have the parameters' shapes.
    pub fn load_weights(&mut self, layers: &[(String, String, DMatrix<F>)]) -> Result<()> {
        let mut mine = self.parameters_mut();
        if layers.len() != mine.len() || layers.iter().zip(&mine).any(|((_, _, w), m)| w.shape() != m.shape()) {
            return Err(Error::Training("the checkpoint's layers do not match the network's".into()));
        }
        for ((_, _, w), m) in layers.iter().zip(&mut mine) {
            **m = w.clone();
        }
        Ok(())
    }
}

/// The initial weights of projection `k` (n_target x n_source), drawn exactly as the engine
/// draws its synapses: each target from the same stream as in the engine's projection k, so
/// simulation and training start from the same weights.
fn initial_weights<F: Real>(
    net: &Network,
    k: usize,
    proj: &Projection,
    n_source: usize,
    n_target: usize,
    seed: u64,
) -> DMatrix<F> {
    let plan = ConnectionPlan {
        connect: &proj.connect,
        n_source,
        n_target,
        exclude_self: proj.from == proj.to && !proj.allow_autapses,
        weight: &proj.weight,
        delay_ms: &proj.delay_ms,
        dt_ms: net.dt_ms,
    };
    let rule = Rule::new(&plan);
    let mut weights = DMatrix::<F>::zeros(n_target, n_source);
    let mut incoming = Drawn::default();
    for j in 0..n_target {
        rule.incoming(j, &mut rng::item_stream(seed, Purpose::Connectivity, k as u64, j as u64), &mut incoming);
        for x in &incoming.synapses {
            weights[(j, x.source as usize)] = F::of(x.weight as f64);
        }
    }
    weights
}

/// The network, effective training settings and trained layers stored in a checkpoint.
pub fn from_checkpoint(saved: &Checkpoint, path: &Path) -> Result<(Network, Training, TrainNet<f32>)> {
    let (network, training) = saved.specs(path)?;
    let mut net = TrainNet::from_spec(&network, &training, saved.seed)?;
    net.load_weights(&saved.layers)?;
    Ok((network, training, net))
}
