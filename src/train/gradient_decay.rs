//! How far back in time the loss gradient reaches: the norm of dL/dv' of the first hidden layer
//! at each time step, averaged over some test samples, for each surrogate, on the same weights
//! (fresh from the spec's seed, or a checkpoint's).

use std::path::Path;

use super::bptt::{self, Events, Scratch, Tape};
use super::net::{TrainNet, from_checkpoint};
use super::trainer;
use crate::data::encode::encoding_stream;
use crate::error::Result;
use crate::io::checkpoint;
use crate::spec::{self, Training};
use crate::surrogate::Surrogate;

/// Per surrogate, the root-mean-square over samples of ||dL/dv'[n]|| for n = 0..T.
pub struct GradientDecay {
    pub surrogates: Vec<Surrogate>,
    pub norms: Vec<Vec<f64>>,
    pub source: String,
}

/// Computes the decay for `network` (with the weights of `checkpoint` when given) on the first
/// `samples` test images of `data`.
pub fn gradient_decay(
    network_path: &Path,
    checkpoint_path: Option<&Path>,
    data: Option<&Path>,
    samples: usize,
) -> Result<GradientDecay> {
    let (network, training, weights, seed, source) = match checkpoint_path {
        Some(c) => {
            let saved = checkpoint::read(c)?;
            let (network, training, _) = from_checkpoint(&saved, c)?;
            let source = format!("after {} epochs of training", saved.epochs_done);
            (network, training, Some(saved.layers), saved.seed, source)
        }
        None => {
            let (network, _) = spec::load_network(network_path)?;
            let training = spec::training_section(&network, network_path)?;
            let seed = network.seed;
            (network, training, None, seed, "at initialisation".to_string())
        }
    };
    let dir = trainer::data_folder(data, &training, network_path);
    let full = Training { test_samples: Some(samples as u32), ..training.clone() };
    let dataset = trainer::load_data(&dir, &network, &full, Some(1), None)?;
    let split = &dataset.test;
    let mut result = GradientDecay { surrogates: Surrogate::all(), norms: Vec::new(), source };
    for surrogate in Surrogate::all() {
        let t = Training { surrogate, ..training.clone() };
        let mut net = TrainNet::<f32>::from_spec(&network, &t, seed)?;
        if let Some(layers) = &weights {
            net.load_weights(layers)?;
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
            bptt::cross_entropy(&tape.scores, label as usize, 1.0, g);
        }
        let g: Vec<&[f32]> = g_scores.iter().map(Vec::as_slice).collect();
        let mut grads: Vec<_> = net.layers.iter().map(|l| nalgebra::DMatrix::zeros(l.outputs(), l.inputs())).collect();
        bptt::backward_batch(&net, &refs, &mut tapes, &g, &mut grads, &mut scratch);
        let norms = (0..net.steps)
            .map(|n| (tapes.iter().map(|tape| tape.grad_v_sq[0][n]).sum::<f64>() / tapes.len() as f64).sqrt())
            .collect();
        result.norms.push(norms);
    }
    Ok(result)
}
