//! Trained models run in the engine (`snn simulate NETWORK.ron --checkpoint`): a recurrent
//! stack fed row by row (analog input; a recurrent Alif layer, then a recurrent CubaLif), a
//! rate-coded stack with a spiking readout, the recall task, and the population chains of
//! networks/fashion_snn.ron and networks/fashion_rows_populations.ron (compiled onto the stack
//! to train), each trained briefly on the shipped subset, give in the engine every spike the
//! trainer computes for the same image (f64), shifted by the engine's one step per layer, and
//! the same class.

mod common;
use common::{repo, serial, train_cli};

use std::collections::BTreeSet;
use std::path::Path;

use snn::data::encode::Encoder;
use snn::data::{idx, tasks};
use snn::io::checkpoint;
use snn::models::net::{LayerNet, Mode, Op};
use snn::models::trainer::{from_checkpoint, model_input};
use snn::nn::loss::argmax;
use snn::simulate::{SimulateOptions, simulate};

const RECURRENT_ROWS: &str = r#"Network(
    name: "rows_small", dt_ms: 1.0, seed: 3,
    inputs: [(name: "row", size: 28)],
    layers: [
        Dense(units: 40),
        Alif(tau_mem_ms: 5.0, tau_adapt_ms: 30.0, beta_adapt: 0.2, learn_tau: PerChannel, recurrent: NoSelf),
        Dropout(rate: 0.1),
        Dense(units: 24), CubaLif(tau_syn_ms: 2.0, tau_mem_ms: 4.0, reset: Zero, recurrent: AllToAll),
        Dense(units: 10), Li(tau_mem_ms: 10.0),
    ],
    training: (steps: 28, encoder: Sequence(per_step: 28), epochs: 1, batch_size: 64, optimizer: Adam(lr: 2e-3)),
)"#;

const RATE_CODED: &str = r#"Network(
    name: "rate_small", dt_ms: 1.0, seed: 4,
    inputs: [(name: "pixels", size: 784)],
    layers: [
        Dense(units: 48), Lif(tau_mem_ms: 3.0, learn_tau: PerLayer),
        Dense(units: 10), Lif(tau_mem_ms: 3.0),
    ],
    training: (steps: 10, encoder: Rate(), epochs: 1, batch_size: 64, optimizer: Adam(lr: 2e-3)),
)"#;

/// Trains `text` briefly into `dir` (with `extra` arguments); returns the network file and the
/// checkpoint.
fn trained(dir: &Path, text: &str, extra: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let network = dir.join("network.ron");
    std::fs::write(&network, text).unwrap();
    let out = dir.join("run");
    let cut = ["--train-samples", "256", "--test-samples", "64"];
    train_cli(network.to_str().unwrap(), &out, &[&cut[..], extra].concat(), None);
    (network, out.join("checkpoint.h5"))
}

/// (step, neuron) pairs.
type Spikes = BTreeSet<(u64, u64)>;

/// The (step, neuron) spikes of every firing layer, by the engine's population names, and the
/// class, as the f64 trainer computes them for test image `index`.
fn trainer_spikes(checkpoint_path: &Path, index: usize) -> (Vec<(String, Spikes)>, usize) {
    let saved = checkpoint::read(checkpoint_path).unwrap();
    let mut net: LayerNet<f64> = from_checkpoint(&saved, checkpoint_path).unwrap();
    let layered = saved.specs(checkpoint_path).unwrap().0.is_layered();
    let split = match net.encoder {
        Encoder::Recall { classes, .. } => tasks::recall(classes, 0, 64).test,
        _ => idx::load_dir(Path::new(&repo("tests/data/fashion-mnist"))).unwrap().test,
    };
    let x = model_input(&net, &split, &[index], saved.seed, None).into_dense().map(|v| v as f64);
    let trace = net.forward(x, Mode::Eval { soft: false });
    let mut layers = Vec::new();
    for (l, layer) in net.layers.iter().enumerate() {
        let Op::Spiking(s) = &layer.op else { continue };
        if !s.fires() {
            continue;
        }
        let out = &trace.values[l + 1];
        let spikes = (0..net.steps)
            .flat_map(|t| {
                out.column(t)
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v > 0.0)
                    .map(move |(i, _)| (t as u64, i as u64))
                    .collect::<Vec<_>>()
            })
            .collect();
        // The engine names a stack's populations by layer; a chain keeps its population names,
        // which label its neuron layers.
        let name = if layered {
            format!("layer{l}_{}", layer.label.rsplit(' ').next().unwrap().to_lowercase())
        } else {
            layer.label.clone()
        };
        layers.push((name, spikes));
    }
    let scores: Vec<f64> = trace.scores().iter().copied().collect();
    (layers, argmax(&scores))
}

/// Simulates the trained stack on test image `index`; checks every layer's spikes and the class.
fn engine_matches_trainer(
    dir: &Path,
    network: &Path,
    checkpoint_path: &Path,
    source: &str,
    encoder: &str,
    index: usize,
) {
    let stimulus = dir.join(format!("image{index}.ron"));
    let data = repo("tests/data/fashion-mnist");
    let size = match encoder.split('(').next().unwrap() {
        "Sequence" => 28,
        "Recall" => 50,
        _ => 784,
    };
    let text = format!(
        "Stimulus(sources: [(name: {source:?}, size: {size}, kind: Image(data: {data:?}, index: {index}, encoder: {encoder}))])"
    );
    std::fs::write(&stimulus, text).unwrap();
    let summary = simulate(&SimulateOptions {
        network: network.to_owned(),
        stimulus: Some(stimulus),
        duration_ms: None,
        seed: None,
        out: Some(dir.join(format!("sim{index}"))),
        figures: false,
        progress: false,
        checkpoint: Some(checkpoint_path.to_owned()),
    })
    .unwrap();
    let (expected, class) = trainer_spikes(checkpoint_path, index);
    let mut total = 0;
    for (k, (name, spikes)) in expected.iter().enumerate() {
        let pop = summary.recording.populations.iter().find(|p| &p.name == name).expect("a population per layer");
        let (times, ids) = pop.spikes.as_ref().unwrap();
        // Layer k computes the trainer's step t in the engine's step t + k; spikes are stamped
        // at the step's end.
        let steps = steps_of(checkpoint_path) as u64;
        let engine: Spikes = times
            .iter()
            .zip(ids)
            .map(|(&time, &id)| (time.round() as u64, id))
            .inspect(|&(stamp, _)| assert!(stamp > k as u64, "{name} fired before its first step"))
            .map(|(stamp, id)| (stamp - k as u64 - 1, id))
            .filter(|&(t, _)| t < steps)
            .collect();
        assert_eq!(&engine, spikes, "image {index}, {name}");
        total += spikes.len();
    }
    assert!(total > 20, "image {index}: only {total} spikes, too few to compare");
    assert_eq!(summary.prediction.map(|p| p.0), Some(class), "image {index}: the class differs");
}

fn steps_of(checkpoint_path: &Path) -> usize {
    let saved = checkpoint::read(checkpoint_path).unwrap();
    saved.specs(checkpoint_path).unwrap().1.steps as usize
}

#[test]
fn a_recurrent_adaptive_stack_fed_row_by_row_spikes_in_the_engine_as_in_the_trainer() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let (network, checkpoint_path) = trained(dir.path(), RECURRENT_ROWS, &[]);
    for index in [0, 1, 2] {
        engine_matches_trainer(dir.path(), &network, &checkpoint_path, "row", "Sequence(per_step: 28)", index);
    }
}

#[test]
fn a_rate_coded_stack_with_a_spiking_readout_spikes_in_the_engine_as_in_the_trainer() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let (network, checkpoint_path) = trained(dir.path(), RATE_CODED, &[]);
    for index in [0, 5] {
        engine_matches_trainer(dir.path(), &network, &checkpoint_path, "pixels", "Rate()", index);
    }
}

#[test]
fn a_trained_recall_net_spikes_in_the_engine_as_in_the_trainer() {
    // The memory task: recurrent Alif neurons with learnt decays, a generated trial presented
    // by an image source of the task, the class read in the recall window only.
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("networks/recall.ron")).unwrap();
    let (network, checkpoint_path) = trained(dir.path(), &text, &["--delay", "30", "--epochs", "1"]);
    let encoder = "Recall(classes: 4, group: 10, cue_steps: 20, delay: 30, recall_steps: 20)";
    for index in [0, 1, 2] {
        engine_matches_trainer(dir.path(), &network, &checkpoint_path, "cues", encoder, index);
    }
}

#[test]
fn a_trained_population_chain_spikes_in_the_engine_as_in_the_trainer() {
    // networks/fashion_snn.ron as `snn train` takes it: rate-coded pixels, a hidden LIF
    // population, a silent readout scored by its mean membrane.
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("networks/fashion_snn.ron")).unwrap();
    let (network, checkpoint_path) = trained(dir.path(), &text, &["--epochs", "1"]);
    for index in [3, 4] {
        engine_matches_trainer(dir.path(), &network, &checkpoint_path, "pixels", "Rate(gain: 1.0)", index);
    }
}

#[test]
fn a_trained_recurrent_population_chain_spikes_in_the_engine_as_in_the_trainer() {
    // networks/fashion_rows_populations.ron: a population with a projection onto itself, fed
    // row by row; its spikes of one step reach it at the next, in the trainer as in the engine.
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("networks/fashion_rows_populations.ron")).unwrap();
    let (network, checkpoint_path) = trained(dir.path(), &text, &["--epochs", "1"]);
    for index in [0, 1, 2] {
        engine_matches_trainer(dir.path(), &network, &checkpoint_path, "row", "Sequence(per_step: 28)", index);
    }
}
