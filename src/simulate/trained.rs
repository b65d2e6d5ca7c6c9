//! Simulating a trained network (`snn simulate --checkpoint`): the checkpoint's weights replace
//! the projections' own, trained layers replace the populations built for them
//! ([`super::stack`] compiles both), and the class is read off the readout as the trainer reads
//! it: the mean membrane of a silent readout, or a spiking readout's spike counts.

use nalgebra::DMatrix;

use crate::engine::Simulation;
use crate::engine::layer::LayerPopulation;
use crate::error::{Error, Result};
use crate::recording::Recording;

/// Where the class is read.
#[derive(Debug, Clone)]
pub struct Readout {
    pub population: String,
    /// The engine step that computes the trainer's first step (the layers before it delay
    /// their input by one step each).
    pub first_step: usize,
    /// Spike counts (a spiking readout) rather than the mean membrane.
    pub counts_spikes: bool,
}

pub struct Trained {
    /// (source, target, weights n_target x n_source) per trained projection.
    pub weights: Vec<(String, String, DMatrix<f32>)>,
    /// Populations that run a trained layer, by name.
    pub layers: Vec<(String, LayerPopulation)>,
    pub readout: Option<Readout>,
    /// Steps the readout is read over (T, or the scored window of T).
    pub steps: usize,
    /// Steps the run takes beyond T: the readout's delay, and one more so that its potential
    /// after the last step is sampled.
    pub extra_steps: u64,
}

impl Trained {
    /// Writes each trained layer's weights into the engine's projection between the same two
    /// populations (all-to-all, so every pair has its synapse), and installs the trained layers.
    pub fn load(&self, sim: &mut Simulation) -> Result<()> {
        let find = |sim: &Simulation, name: &str| sim.populations.iter().position(|p| p.name == name);
        for (from, to, w) in &self.weights {
            let (Some(source), Some(target)) = (find(sim, from), find(sim, to)) else {
                return Err(Error::Training(format!(
                    "the checkpoint's layer {from} -> {to} has no such populations here"
                )));
            };
            let proj =
                sim.projections.iter_mut().find(|p| p.source == source && p.target == target).ok_or_else(|| {
                    Error::Training(format!("no projection {from} -> {to} to load the checkpoint's weights into"))
                })?;
            // All to all (each rank holding the synapses onto its own neurons): the shapes say
            // whether the weights fit.
            let synapses = &mut proj.synapses;
            if (synapses.n_target, synapses.n_source) != w.shape() {
                return Err(Error::Training(format!(
                    "projection {from} -> {to} joins {} to {} neurons, the checkpoint's weights are {} x {}",
                    synapses.n_source,
                    synapses.n_target,
                    w.nrows(),
                    w.ncols()
                )));
            }
            synapses.set_weights(|source, target| w[(target, source)]);
        }
        for (name, layer) in &self.layers {
            let index = find(sim, name).expect("the compiled model holds every trained layer");
            sim.install_layer(index, layer.clone());
        }
        Ok(())
    }

    /// The class the readout votes for (over the T engine steps that hold the trainer's steps),
    /// with `label`, the presented image's class if there is one.
    pub fn predict(&self, rec: &Recording, label: Option<u8>) -> Option<(usize, Option<u8>)> {
        let readout = self.readout.as_ref()?;
        let first = readout.first_step;
        let votes = if readout.counts_spikes {
            let pop = rec.populations.iter().find(|p| p.name == readout.population)?;
            let mut counts = vec![0.0f64; pop.size as usize];
            let (times, ids) = pop.spikes.as_ref()?;
            // The trainer's step t ends at stamp first + t + 1.
            let window = (first + 1) as f64..(first + self.steps + 1) as f64;
            for (&time, &id) in times.iter().zip(ids) {
                let stamp = (time / rec.info.dt_ms).round();
                if stamp >= window.start && stamp < window.end {
                    counts[id as usize] += 1.0;
                }
            }
            counts
        } else {
            let trace = rec.traces.iter().find(|t| t.population == readout.population).expect("recorded in prepare");
            let n = trace.node_ids.len();
            let rows = trace.v.len() / n.max(1);
            let mut mean = vec![0.0f64; n];
            // Row r holds the potential after step r - 1.
            for row in first + 1..=(first + self.steps).min(rows.saturating_sub(1)) {
                for (m, &v) in mean.iter_mut().zip(&trace.v[row * n..(row + 1) * n]) {
                    *m += v as f64;
                }
            }
            mean
        };
        Some((crate::nn::loss::argmax(&votes), label))
    }
}
