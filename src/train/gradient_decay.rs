//! How far the loss gradient reaches, for each surrogate: back in time for a spiking network
//! (the norm of dL/dv' of the first hidden layer at each time step) or a spiking layer stack
//! (the norm of the gradient reaching the first spiking layer's input, its dL/dv', at each step),
//! down in
//! depth for a layered model without time (the norm of the gradient reaching the output of each
//! Dense or Conv2d layer). Averaged
//! over some test samples, on fresh weights (the spec's seed), a checkpoint's, or each
//! surrogate's own trained weights from a sweep.

use std::path::{Path, PathBuf};

use super::bptt::{self, Events, Scratch, Tape};
use super::net::TrainNet;
use super::trainer;
use crate::data::encode::encoding_stream;
use crate::error::Result;
use crate::io::checkpoint;
use crate::models::{self, LayerNet, Mode, net::Op};
use crate::nn::loss::cross_entropy;
use crate::ranks::Alone;
use crate::records::GradientDecay;
use crate::spec::{self, Network, Training};
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
    if network.is_layered() {
        depth_decay(&network, network_path, weights, data, samples)
    } else {
        time_decay(network_path, weights, data, samples)
    }
}

/// Per surrogate, the gradient reaching the output of each Dense and Conv2d layer (RMS over
/// samples of the per-sample norm), input side first.
fn depth_decay(
    network: &Network,
    network_path: &Path,
    weights: Weights,
    data: Option<&Path>,
    samples: usize,
) -> Result<GradientDecay> {
    let file_training = spec::training_section(network, network_path)?;
    // A trained stack keeps its own settings (the steps of a recall run's delay, say); the first
    // surrogate's checkpoint gives them for every curve.
    let first = checkpoint_for(weights, &Surrogate::all()[0], network.seed);
    let training = match &first {
        Some(path) => checkpoint::read(path)?.specs(path)?.1,
        None => file_training,
    };
    let dir = trainer::data_folder(data, &training, network_path);
    let dataset = trainer::load_data(&dir, network, &training, Some(1), Some(samples as u32))?;
    let split = &dataset.test;
    let indices: Vec<usize> = (0..split.len()).collect();
    let probe = LayerNet::<f32>::from_spec(network, &training, network.seed)?;
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
        let mut net = LayerNet::<f32>::from_spec(network, &t, network.seed)?;
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

/// Per surrogate, ||dL/dv'[n]|| of the first hidden layer for n = 0..T.
fn time_decay(network_path: &Path, weights: Weights, data: Option<&Path>, samples: usize) -> Result<GradientDecay> {
    let (network, _) = spec::load_network(network_path)?;
    let training = spec::training_section(&network, network_path)?;
    let seed = network.seed;
    let dir = trainer::data_folder(data, &training, network_path);
    let full = Training { test_samples: Some(samples as u32), ..training.clone() };
    let dataset = trainer::load_data(&dir, &network, &full, Some(1), None)?;
    let split = &dataset.test;
    let mut result = GradientDecay {
        surrogates: Surrogate::all(),
        norms: Vec::new(),
        source: describe(weights),
        axis: "time step (the loss is read at every step; backward runs from the last)",
        measured: "gradient reaching the hidden membrane",
    };
    for surrogate in Surrogate::all() {
        let saved =
            checkpoint_for(weights, &surrogate, seed).map(|p| checkpoint::read(&p).map(|c| (c, p))).transpose()?;
        // A trained network keeps its own settings, with this curve's surrogate.
        let t = match &saved {
            Some((c, path)) => Training { surrogate, ..c.specs(path)?.1 },
            None => Training { surrogate, ..training.clone() },
        };
        let mut net = TrainNet::<f32>::from_spec(&network, &t, seed)?;
        if let Some((c, _)) = &saved {
            net.load_weights(&c.layers)?;
        }
        let mut inputs = vec![Events::default(); split.len()];
        for (i, input) in inputs.iter_mut().enumerate() {
            let mut stream = encoding_stream(seed, None, i);
            t.encoder.encode(split.images.image(i), net.steps, &mut stream, input);
        }
        let refs: Vec<&Events<f32>> = inputs.iter().collect();
        let mut tapes = vec![Tape::default(); split.len()];
        let mut scratch = Scratch::default();
        bptt::forward_batch(&net, &refs, &mut tapes, &mut scratch);
        let mut g_scores = vec![Vec::new(); split.len()];
        for ((tape, g), &label) in tapes.iter().zip(&mut g_scores).zip(&split.labels) {
            cross_entropy(&tape.scores, label as usize, 1.0, g);
        }
        let g: Vec<&[f32]> = g_scores.iter().map(Vec::as_slice).collect();
        let mut grads = net.zero_gradients();
        bptt::backward_batch(&net, &refs, &mut tapes, &g, &mut grads, &mut scratch);
        let norms = (0..net.steps)
            .map(|n| (tapes.iter().map(|tape| tape.grad_v_sq[0][n]).sum::<f64>() / tapes.len() as f64).sqrt())
            .collect();
        result.norms.push(norms);
    }
    Ok(result)
}
