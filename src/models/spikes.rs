//! One test image through a spiking layer stack, kept as the engine keeps a simulated run: each
//! firing layer's spikes as a population of the recording (time = step x dt), and the readout's
//! membrane as a trace. The same HDF5 writer (SONATA spikes) and raster and trace figures then
//! serve trained spiking CNNs, which the engine itself cannot run.

use super::net::{LayerNet, Mode, Op};
use super::trainer::model_input;
use crate::data::idx::Split;
use crate::error::{Error, Result};
use crate::nn::loss::argmax;
use crate::recording::{PopulationRecord, Recording, RunInfo, TraceRecord};

/// What a spiking stack did with one test image.
#[derive(Debug, Clone)]
pub struct ImageRun {
    pub index: usize,
    pub label: usize,
    pub predicted: usize,
    pub scores: Vec<f32>,
    pub recording: Recording,
}

/// Runs test image `index` of `split` through `net` (evaluation mode; a rate-coded input encoded
/// with the run's `seed`) and records it under the network's (name, spec text).
pub fn record_image(
    net: &mut LayerNet<f32>,
    split: &Split,
    index: usize,
    seed: u64,
    (name, spec): (&str, &str),
    dt_ms: f64,
) -> Result<ImageRun> {
    if index >= split.len() {
        return Err(Error::Training(format!(
            "--index {index}: the test set has {} images (0 to {})",
            split.len(),
            split.len().saturating_sub(1)
        )));
    }
    let steps = net.steps;
    let trace = net.forward(model_input(net, split, &[index], seed, None), Mode::Eval { soft: false });
    let scores: Vec<f32> = trace.scores().iter().copied().collect();
    let mut populations = Vec::new();
    for (l, layer) in net.layers.iter().enumerate() {
        let Op::Spiking(s) = &layer.op else { continue };
        if !s.fires() {
            continue;
        }
        // One column per step (a batch of one sample).
        let out = &trace.values[l + 1];
        let (mut times, mut ids) = (Vec::new(), Vec::new());
        let mut per_step = vec![0u64; steps];
        for (t, count) in per_step.iter_mut().enumerate() {
            for (id, &v) in out.column(t).iter().enumerate() {
                if v > 0.0 {
                    times.push(t as f64 * dt_ms);
                    ids.push(id as u64);
                    *count += 1;
                }
            }
        }
        let size = out.nrows() as u64;
        populations.push(PopulationRecord {
            name: format!("layer{l}_{}", layer.label.rsplit(' ').next().unwrap_or("spiking").to_lowercase()),
            size,
            is_neuron: true,
            total_spikes: times.len() as u64,
            spikes: Some((times, ids)),
            rate_bin_ms: dt_ms,
            rate_hz: per_step.iter().map(|&c| c as f64 / size as f64 / (dt_ms / 1000.0)).collect(),
        });
    }
    let last = trace.values.last().expect("a trace holds the output");
    let readout = TraceRecord {
        population: "readout".into(),
        node_ids: (0..last.nrows() as u64).collect(),
        // Steps x neurons, step-major: column t of the output is step t.
        v: last.as_slice().to_vec(),
    };
    let recording = Recording {
        info: RunInfo {
            network_name: name.to_owned(),
            network_spec: spec.to_owned(),
            stimulus_spec: String::new(),
            seed,
            dt_ms,
            duration_ms: steps as f64 * dt_ms,
        },
        populations,
        traces: vec![readout],
    };
    Ok(ImageRun { index, label: split.labels[index] as usize, predicted: argmax(&scores), scores, recording })
}
