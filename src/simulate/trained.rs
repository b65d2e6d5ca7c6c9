//! Simulating a trained network (`snn simulate --checkpoint`): the checkpoint's weights replace
//! the projections' own, a mean-membrane readout integrates without firing as in training, and
//! the class is read off the readout's membrane as the trainer reads it.

use std::path::Path;

use crate::engine::Simulation;
use crate::error::{Error, Result};
use crate::io::checkpoint::{self, Checkpoint};
use crate::recording::Recording;
use crate::spec::{Model, Neuron, Readout, TraceRecord, Training};

pub struct Trained {
    checkpoint: Checkpoint,
    readout: Option<String>,
    /// Steps of the training pass (T); the run takes one more so that the readout's potential
    /// after the last of them is sampled.
    steps: usize,
    pub extra_steps: u64,
}

/// Reads the checkpoint and adapts the model: a silent readout whose membrane is recorded.
pub fn prepare(model: &mut Model, path: &Path) -> Result<Trained> {
    let checkpoint = checkpoint::read(path)?;
    let training: Training = crate::spec::parse_ron(&checkpoint.training, path)?;
    let mut readout = None;
    let mut extra_steps = 0;
    if training.readout == Readout::MeanMembrane {
        let last = model
            .network
            .populations
            .last_mut()
            .ok_or_else(|| Error::Training("the network has no population".into()))?;
        let Neuron::Lif { v_threshold, .. } = &mut last.neuron;
        *v_threshold = f64::INFINITY;
        let ids = (0..last.size).collect();
        let name = last.name.clone();
        model.network.record.traces.retain(|t| t.population != name);
        model.network.record.traces.push(TraceRecord { population: name.clone(), ids });
        readout = Some(name);
        extra_steps = 1;
    }
    Ok(Trained { checkpoint, readout, steps: training.steps as usize, extra_steps })
}

impl Trained {
    /// Writes each trained layer's weights into the engine's projection between the same two
    /// populations (all-to-all, so every pair has its synapse).
    pub fn load_weights(&self, sim: &mut Simulation) -> Result<()> {
        for (from, to, w) in &self.checkpoint.layers {
            let find = |name: &str| sim.populations.iter().position(|p| p.name == name);
            let (Some(source), Some(target)) = (find(from), find(to)) else {
                return Err(Error::Training(format!(
                    "the checkpoint's layer {from} -> {to} has no such populations here"
                )));
            };
            let proj =
                sim.projections.iter_mut().find(|p| p.source == source && p.target == target).ok_or_else(|| {
                    Error::Training(format!("no projection {from} -> {to} to load the checkpoint's weights into"))
                })?;
            let synapses = &mut proj.synapses;
            if synapses.len() != w.len() || synapses.n_source != w.ncols() {
                return Err(Error::Training(format!(
                    "projection {from} -> {to} has {} synapses, the checkpoint {} x {} weights",
                    synapses.len(),
                    w.nrows(),
                    w.ncols()
                )));
            }
            synapses.set_weights(|source, target| w[(target, source)]);
        }
        Ok(())
    }

    /// The class the readout votes for (mean potential after each of the T training steps),
    /// with `label`, the presented image's class if there is one.
    pub fn predict(&self, rec: &Recording, label: Option<u8>) -> Option<(usize, Option<u8>)> {
        let readout = self.readout.as_ref()?;
        let trace = rec.traces.iter().find(|t| &t.population == readout).expect("recorded in prepare");
        let n = trace.node_ids.len();
        let rows = trace.v.len() / n.max(1);
        let mut mean = vec![0.0f64; n];
        for row in 1..=self.steps.min(rows.saturating_sub(1)) {
            for (m, &v) in mean.iter_mut().zip(&trace.v[row * n..(row + 1) * n]) {
                *m += v as f64;
            }
        }
        let predicted = mean.iter().enumerate().fold(0, |best, (k, &m)| if m > mean[best] { k } else { best });
        Some((predicted, label))
    }
}
