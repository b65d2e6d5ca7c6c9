//! How far the loss gradient reaches, for each surrogate: back in time for a spiking model
//! (the norm of the gradient reaching the first spiking layer's input, its dL/dv', at each
//! step; a population chain is compiled onto the stack first), down in depth for a model
//! without time (the norm of the gradient reaching the output of each Dense or Conv2d layer,
//! RMS over samples of the per-sample norm, input side first). Averaged over some test samples, on fresh weights (the spec's seed), a checkpoint's, or each
//! surrogate's own trained weights from a sweep.

use std::path::{Path, PathBuf};

use super::setup;
use crate::error::Result;
use crate::io::checkpoint;
use crate::models::{self, LayerNet, Mode, net::Op};
use crate::ranks::Alone;
use crate::records::GradientDecay;
use crate::spec::{self, Training};
use crate::surrogate::Surrogate;

/// Where the weights of each surrogate's curve come from.
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    /// Fresh from the spec's seed.
    Initial,
    /// One checkpoint for every surrogate.
    Checkpoint(&'a Path),
    /// Each surrogate's run of `snn sweep` (its first seed) in this folder.
    Sweep(&'a Path),
}

/// The checkpoint to use for `surrogate`, if any.
fn checkpoint_for(weights: Weights, surrogate: &Surrogate, seed: u64) -> Option<PathBuf> {
    match weights {
        Weights::Initial => None,
        Weights::Checkpoint(p) => Some(p.to_owned()),
        Weights::Sweep(dir) => Some(dir.join(surrogate.name()).join(format!("seed{seed}")).join("checkpoint.h5")),
    }
}

fn describe(weights: Weights) -> String {
    match weights {
        Weights::Initial => "at initialisation".into(),
        Weights::Checkpoint(p) => {
            // The last few components name the run; a whole path overflows the title.
            let parts: Vec<_> = p.components().rev().take(3).collect();
            let short: PathBuf = parts.into_iter().rev().collect();
            format!("weights of .../{}", short.display())
        }
        Weights::Sweep(_) => "after training with each surrogate".into(),
    }
}

/// Computes the decay for `network` on the first `samples` test images of `data`.
pub fn gradient_decay(
    network_path: &Path,
    weights: Weights,
    data: Option<&Path>,
    samples: usize,
) -> Result<GradientDecay> {
    let (network, _) = spec::load_network(network_path)?;
    let file_training = spec::training_section(&network, network_path)?;
    // A trained stack keeps its own settings (the steps of a recall run's delay, say); the first
    // surrogate's checkpoint gives them for every curve.
    let first = checkpoint_for(weights, &Surrogate::all()[0], network.seed);
    let training = match &first {
        Some(path) => checkpoint::read(path)?.specs(path)?.1,
        None => file_training,
    };
    let dir = setup::data_folder(data, &training, network_path);
    let dataset = setup::load_data(&dir, &network, &training, Some(1), Some(samples as u32))?;
    let split = &dataset.test;
    let indices: Vec<usize> = (0..split.len()).collect();
    let probe = LayerNet::<f32>::from_spec(&network, &training, network.seed)?;
    // Through time: the input of the first spiking layer (the output of the layer before it),
    // step by step.
    let spiking = probe.layers.iter().position(|l| matches!(&l.op, Op::Spiking(s) if s.fires()));
    let through_time = spiking.filter(|&i| probe.steps > 1 && i > 0).map(|i| i - 1);
    let mut result = GradientDecay {
        surrogates: Surrogate::all(),
        norms: Vec::new(),
        source: describe(weights),
        axis: if through_time.is_some() {
            "time step (the loss reads the readout over its steps; backward runs from the last)"
        } else {
            "layer with weights (input side first)"
        },
        measured: if through_time.is_some() {
            "gradient reaching the first spiking layer's input (dL/dv')"
        } else {
            "gradient reaching each layer's output"
        },
    };
    for surrogate in Surrogate::all() {
        let t = Training { surrogate, ..training.clone() };
        let mut net = LayerNet::<f32>::from_spec(&network, &t, network.seed)?;
        if let Some(path) = checkpoint_for(weights, &surrogate, network.seed) {
            models::trainer::load_state(&mut net, &checkpoint::read(&path)?)?;
        }
        let trace = net.forward(
            models::trainer::model_input(&net, split, &indices, network.seed, Some(0)),
            Mode::Train { seed: network.seed, epoch: 0, samples: &indices, ranks: &Alone },
        );
        let (_, d_scores, _) = LayerNet::loss(trace.scores(), &split.labels);
        let weighted: Vec<usize> =
            (0..net.layers.len()).filter(|&i| matches!(net.layers[i].op, Op::Dense(_) | Op::Conv(..))).collect();
        let mut norms = vec![0.0; if through_time.is_some() { net.steps } else { weighted.len() }];
        // d_scores is the gradient of the mean loss; per sample it is n times larger.
        let n = split.len() as f64;
        net.backward_observed(&trace, d_scores, &Alone, |i, dy| {
            if Some(i) == through_time {
                for (t, norm) in norms.iter_mut().enumerate() {
                    *norm = dy.columns(t * split.len(), split.len()).norm() as f64 * n / n.sqrt();
                }
            } else if let (None, Some(k)) = (through_time, weighted.iter().position(|&w| w == i)) {
                norms[k] = dy.norm() as f64 * n / n.sqrt();
            }
        });
        result.norms.push(norms);
    }
    Ok(result)
}
