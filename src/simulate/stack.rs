//! A trained layer stack as a network of populations, for `snn simulate STACK.ron --checkpoint`:
//! every spiking layer (Lif, CubaLif, Li) becomes a population that runs the trainer's own
//! update ([`crate::engine::layer`]), every Dense layer before one an all-to-all projection
//! with the trained weights (its bias the population's constant drive, a batch norm after it
//! folded in), a recurrent layer a projection onto itself. Spikes travel event-driven as in any
//! network; the engine's one step per layer is the only difference in timing, and the readout
//! is read over the window where it holds the trainer's steps.

use std::path::Path;

use nalgebra::DMatrix;

use super::trained::{Readout, Trained};
use crate::engine::layer::LayerPopulation;
use crate::error::{Error, Result};
use crate::io::checkpoint;
use crate::models::net::{LayerNet, Op};
use crate::nn::spiking::Kind;
use crate::spec::{self, Connect, Distribution, Model, Network, Neuron, Population, Projection, Shape, Synapse};

/// A layer's engine population: what the recording calls it (as `snn explain` does).
fn population_name(index: usize, kind: Kind) -> String {
    let kind = match kind {
        Kind::Lif => "lif",
        Kind::CubaLif => "cubalif",
        Kind::Alif => "alif",
        Kind::Li => "li",
    };
    format!("layer{index}_{kind}")
}

/// The Dense layer waiting for the neurons it feeds: weights (out x in) and bias.
struct Pending {
    weight: DMatrix<f64>,
    bias: Vec<f64>,
    label: String,
}

/// Compiles the stack trained in `checkpoint_path` (whose layers must be those of
/// `network_path`'s) with the stimulus (`stimulus_override`, else the network's): the model to
/// build, and what to put in it once built.
pub fn compile(
    network_path: &Path,
    checkpoint_path: &Path,
    stimulus_override: Option<&Path>,
) -> Result<(Model, Trained)> {
    let (file_network, network_text) = spec::load_network(network_path)?;
    let saved = checkpoint::read(checkpoint_path)?;
    let (network, _) = saved.specs(checkpoint_path)?;
    let same_model = network.layers == file_network.layers
        && network.inputs == file_network.inputs
        && network.populations == file_network.populations
        && network.projections == file_network.projections;
    if !same_model {
        return Err(Error::Data {
            path: checkpoint_path.to_owned(),
            message: format!(
                "holds network {:?}, whose layers, populations or inputs differ from those of {}",
                network.name,
                network_path.display()
            ),
        });
    }
    let net: LayerNet<f64> = crate::models::trainer::from_checkpoint(&saved, checkpoint_path)?;
    let refuse = |label: &str, why: &str| Error::Data {
        path: checkpoint_path.to_owned(),
        message: format!("{label}: the engine cannot run this stack: {why}"),
    };
    let input = network.inputs.first().ok_or_else(|| refuse("inputs", "the network has no input"))?;
    if !matches!(net.input, Shape::Flat(_)) {
        return Err(refuse("inputs[0]", "the engine runs stacks on vector input (images enter flattened)"));
    }

    let mut populations = Vec::new();
    let mut projections = Vec::new();
    let mut layers = Vec::new();
    let mut weights = Vec::new();
    let mut source = input.name.clone();
    let mut pending: Option<Pending> = None;
    let mut last = None;
    for (l, layer) in net.layers.iter().enumerate() {
        let label = &layer.label;
        match &layer.op {
            Op::Dense(lin) => {
                if let Some(p) = &pending {
                    return Err(refuse(label, &format!("follows {} without neurons between them", p.label)));
                }
                let bias = lin.bias.as_ref().map_or_else(|| vec![0.0; lin.weight.nrows()], |b| b.as_slice().to_vec());
                pending = Some(Pending { weight: lin.effective(None), bias, label: label.clone() });
            }
            Op::BatchNorm(bn) => {
                let Some(p) = pending.as_mut() else {
                    return Err(refuse(label, "batch norm runs in the engine only right after a Dense layer"));
                };
                let (scale, shift) = bn.eval_affine();
                for (r, (&s, &t)) in scale.iter().zip(&shift).enumerate() {
                    p.weight.row_mut(r).scale_mut(s);
                    p.bias[r] = s * p.bias[r] + t;
                }
            }
            Op::Dropout(_) | Op::Flatten => {}
            Op::Spiking(s) => {
                let Some(p) = pending.take() else {
                    return Err(refuse(label, "the engine feeds neurons through a Dense layer, and none comes before"));
                };
                // A chain of populations keeps its names (its neuron layers are labelled by
                // them, see `models::chain`).
                let name = if network.is_layered() { population_name(l, s.kind) } else { label.clone() };
                let size = p.bias.len();
                populations.push(Population {
                    name: name.clone(),
                    size: size as u32,
                    neuron: placeholder(),
                    init_v: None,
                });
                projections.push(all_to_all(&source, &name, true));
                weights.push((source.clone(), name.clone(), p.weight.map(|w| w as f32)));
                if let Some(r) = &s.recurrent {
                    projections.push(all_to_all(&name, &name, r.self_connections));
                    weights.push((name.clone(), name.clone(), r.weight.map(|w| w as f32)));
                }
                // Recurrent input arrives through the projection above, so the stepped layer
                // holds only the neurons.
                let neurons = crate::nn::spiking::Spiking { recurrent: None, ..s.clone() };
                layers.push((name.clone(), LayerPopulation::new(neurons, p.bias, layers.len() as u64)));
                last = Some((name.clone(), s.fires()));
                source = name;
            }
            _ => {
                return Err(refuse(
                    label,
                    "the engine runs Dense, BatchNorm (folded into the Dense), Dropout and spiking layers (Lif, \
                     CubaLif, Li); evaluate other stacks with snn eval and record one image with snn explain",
                ));
            }
        }
    }
    if let Some(p) = pending {
        return Err(refuse(&p.label, "the stack must end with spiking or Li neurons for the engine to run it"));
    }
    let (readout, counts_spikes) = last.ok_or_else(|| refuse("layers", "the stack has no spiking layer"))?;

    let steps = net.steps;
    let mut record = network.record.clone();
    if !counts_spikes {
        record.traces.retain(|t| t.population != readout);
        let size = populations.last().map_or(0, |p| p.size);
        record.traces.push(spec::TraceRecord { population: readout.clone(), ids: (0..size).collect() });
    }
    let compiled = Network {
        name: network.name.clone(),
        dt_ms: network.dt_ms,
        duration_ms: steps as f64 * network.dt_ms,
        seed: network.seed,
        stimulus: file_network.stimulus.clone(),
        populations,
        layers: Vec::new(),
        inputs: network.inputs.clone(),
        projections,
        record,
        training: None,
    };
    let model = spec::model_for_trained_layers(compiled, network_text, network_path, stimulus_override)?;
    // Layer k of the stack (counting spiking layers) computes the trainer's step t in step t + k;
    // the scores read the steps from `scored_from` on (the recall window of the memory task).
    let latency = layers.len() - 1;
    let trained = Trained {
        weights,
        layers,
        readout: Some(Readout { population: readout, first_step: latency + net.scored_from, counts_spikes }),
        steps: steps - net.scored_from,
        extra_steps: latency as u64 + 1,
    };
    Ok((model, trained))
}

/// Every neuron of `from` to every neuron of `to`, weights set once built, no delay beyond the
/// engine's one step.
fn all_to_all(from: &str, to: &str, autapses: bool) -> Projection {
    Projection {
        from: from.to_owned(),
        to: to.to_owned(),
        connect: Connect::AllToAll,
        weight: Distribution::Constant(0.0),
        synapse: Synapse::Instantaneous,
        delay_ms: Distribution::Constant(0.0),
        allow_autapses: autapses,
    }
}

/// The neuron a population is checked and built with before its trained layer replaces it.
fn placeholder() -> Neuron {
    Neuron::Lif {
        tau_mem_ms: 1.0,
        v_rest: 0.0,
        v_threshold: 1.0,
        v_reset: 0.0,
        refractory_ms: 0.0,
        r_mem_mohm: 1.0,
        reset: spec::Reset::Hard,
    }
}
