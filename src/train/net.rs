//! The trainable form of a network: its chain of LIF layers as dense weight matrices, built
//! from the same spec and with the same initial weights as the engine would build.
//!
//! Weights of a layer are an `n_out x n_in` matrix, column-major, so the weights leaving input
//! `i` (column i) are contiguous: adding them for every input that fired is the event-driven
//! forward pass.

use std::path::Path;

use nalgebra::DMatrix;

use crate::engine::synapses::{ConnectionPlan, Drawn, Rule};
use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::nn::Real;
use crate::rng::{self, Purpose};
use crate::spec::{Network, Neuron, Readout, Reset, Training};
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

/// The layers, input to readout, and how spikes and scores are computed.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainNet<F: Real> {
    pub input_size: usize,
    pub layers: Vec<LifLayer<F>>,
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
        for pop in &net.populations {
            let (k, proj) = net
                .projections
                .iter()
                .enumerate()
                .find(|(_, p)| p.to == pop.name)
                .ok_or_else(|| Error::Training(format!("no projection into {:?}", pop.name)))?;
            let n_out = pop.size as usize;
            let plan = ConnectionPlan {
                connect: &proj.connect,
                n_source: n_in,
                n_target: n_out,
                exclude_self: false,
                weight: &proj.weight,
                delay_ms: &proj.delay_ms,
                dt_ms: net.dt_ms,
            };
            // Each target draws from the same stream as in the engine's projection k, so
            // simulation and training start from the same weights.
            let rule = Rule::new(&plan);
            let mut weights = DMatrix::<F>::zeros(n_out, n_in);
            let mut incoming = Drawn::default();
            for j in 0..n_out {
                rule.incoming(j, &mut rng::item_stream(seed, Purpose::Connectivity, k as u64, j as u64), &mut incoming);
                for x in &incoming.synapses {
                    weights[(j, x.source as usize)] = F::of(x.weight as f64);
                }
            }
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
            n_in = n_out;
        }
        Ok(TrainNet {
            input_size: input.size as usize,
            layers,
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

    /// Replaces the weights with a checkpoint's (source, target, weights) layers, which must
    /// have the layers' shapes.
    pub fn load_weights(&mut self, layers: &[(String, String, DMatrix<F>)]) -> Result<()> {
        if layers.len() != self.layers.len()
            || layers.iter().zip(&self.layers).any(|((_, _, w), l)| w.shape() != l.weights.shape())
        {
            return Err(Error::Training("the checkpoint's layers do not match the network's".into()));
        }
        for ((_, _, w), layer) in layers.iter().zip(&mut self.layers) {
            layer.weights = w.clone();
        }
        Ok(())
    }
}

/// The network, effective training settings and trained layers stored in a checkpoint.
pub fn from_checkpoint(saved: &Checkpoint, path: &Path) -> Result<(Network, Training, TrainNet<f32>)> {
    let (network, training) = saved.specs(path)?;
    let mut net = TrainNet::from_spec(&network, &training, saved.seed)?;
    net.load_weights(&saved.layers)?;
    Ok((network, training, net))
}
