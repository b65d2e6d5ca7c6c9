//! A network of populations and projections, as `snn train` takes it (networks/fashion_snn.ron),
//! compiled onto the layer stack, so that one trainer runs every model.
//!
//! Each population becomes a Dense layer without bias (the projection into it from the
//! population before) followed by its neurons: `Lif`, or `Li` for a readout scored by its mean
//! membrane. A projection from a population onto itself becomes that Lif layer's recurrent
//! weights (its spikes of one step feed it at the next, as the engine delivers them). Layers
//! are labelled by the populations, `pixels -> hidden` for a projection's weights and `hidden`
//! for neurons, so checkpoints and messages speak the file's names.
//!
//! The initial weights are the engine's: each projection's synapses are drawn from the streams
//! the engine draws them from (seed, projection, target neuron). The engine's LIF integrates
//! `v' = beta (v + W x)` and the stack's `v' = beta v + W x`, so the stack starts from
//! `beta W`: at initialisation both compute the same membranes. Two timings differ from the
//! engine's and from the population trainer that came before this module: the stack passes a
//! layer's spikes on within the step (the engine takes one step per projection, which
//! `snn simulate --checkpoint` accounts for by reading the readout that many steps later), and
//! the resting and reset potentials must be 0 (the stack's neurons rest at 0 and reset to 0 or
//! by the threshold), which `spec::validate` checks before anything is built.

use nalgebra::DMatrix;

use super::net::{LayerNet, Op};
use crate::engine::synapses::{ConnectionPlan, Drawn, Rule};
use crate::error::{Error, Result};
use crate::nn::gemm::Gemm;
use crate::nn::real::Real;
use crate::rng::{self, Purpose};
use crate::spec::layers::{Layer, Learnable, Recurrence, SpikeReset};
use crate::spec::{Network, Neuron, Readout, Reset, Training};

/// Where a projection of the file went in the compiled stack.
struct Placement {
    /// Index of the projection in the file.
    projection: usize,
    /// The stack layer holding its weights (a Dense layer, or the Lif layer of a recurrent one).
    layer: usize,
}

/// The layers of the stack for the chain `network`, and where each projection's weights sit.
/// The network must have passed `spec::validate`'s chain checks.
fn layers(network: &Network, training: &Training) -> Result<(Vec<Layer>, Vec<Placement>)> {
    let input = network.inputs.first().ok_or_else(|| Error::Training("the network has no input population".into()))?;
    let mut layers = Vec::new();
    let mut placements = Vec::new();
    let mut previous = input.name.as_str();
    for (i, pop) in network.populations.iter().enumerate() {
        let feed = network
            .projections
            .iter()
            .position(|p| p.to == pop.name && p.from == previous)
            .ok_or_else(|| Error::Training(format!("no projection {previous:?} -> {:?}", pop.name)))?;
        let looped = network.projections.iter().position(|p| p.to == pop.name && p.from == pop.name);
        placements.push(Placement { projection: feed, layer: layers.len() });
        layers.push(Layer::Dense { units: pop.size, weights: Default::default(), bias: false });
        let Neuron::Lif { tau_mem_ms, v_threshold, reset, .. } = pop.neuron;
        let readout = i + 1 == network.populations.len();
        if readout && training.readout == Readout::MeanMembrane {
            layers.push(Layer::Li { tau_mem_ms, learn_tau: Learnable::Fixed });
        } else {
            if let Some(k) = looped {
                placements.push(Placement { projection: k, layer: layers.len() });
            }
            layers.push(Layer::Lif {
                tau_mem_ms,
                threshold: v_threshold,
                reset: match reset {
                    Reset::Subtract => SpikeReset::Subtract,
                    Reset::Hard => SpikeReset::Zero,
                },
                detach_reset: None,
                surrogate: None,
                learn_tau: Learnable::Fixed,
                recurrent: match looped {
                    None => Recurrence::None,
                    Some(k) if network.projections[k].allow_autapses => Recurrence::AllToAll,
                    Some(_) => Recurrence::NoSelf,
                },
            });
        }
        previous = pop.name.as_str();
    }
    Ok((layers, placements))
}

/// The trainable stack of the chain `network`: its layers labelled by population, its weights
/// the engine's initial synapses (see the module's documentation).
pub fn build<F: Gemm>(network: &Network, training: &Training, seed: u64) -> Result<LayerNet<F>> {
    let (layers, placements) = layers(network, training)?;
    let stack = Network { layers, ..network.clone() };
    let mut net = LayerNet::<F>::from_spec(&stack, training, seed)?;
    let mut source = network.inputs[0].name.as_str();
    let mut populations = network.populations.iter();
    for layer in &mut net.layers {
        if let Op::Dense(_) = layer.op {
            let target = populations.next().expect("a Dense layer per population");
            layer.label = format!("{source} -> {}", target.name);
            source = target.name.as_str();
        } else {
            layer.label = source.to_owned();
        }
    }
    // The layers built above have each projection's shape (targets x sources).
    for place in &placements {
        let proj = &network.projections[place.projection];
        let target = network.populations.iter().find(|p| p.name == proj.to).expect("validated target");
        let Neuron::Lif { tau_mem_ms, .. } = target.neuron;
        let beta = F::of((-network.dt_ms / tau_mem_ms).exp());
        let slot = match &mut net.layers[place.layer].op {
            Op::Dense(linear) => &mut linear.weight,
            Op::Spiking(s) => &mut s.recurrent.as_mut().expect("a Lif layer with recurrent weights").weight,
            _ => unreachable!("projections land in Dense and Lif layers"),
        };
        *slot = initial_weights::<F>(network, place.projection, slot.nrows(), slot.ncols(), seed) * beta;
    }
    Ok(net)
}

/// The initial weights of projection `k` (n_target x n_source), drawn exactly as the engine
/// draws its synapses: each target from the same stream as in the engine's projection k.
fn initial_weights<F: Real>(net: &Network, k: usize, n_target: usize, n_source: usize, seed: u64) -> DMatrix<F> {
    let proj = &net.projections[k];
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
