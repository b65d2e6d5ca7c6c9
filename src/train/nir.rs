//! A trained population chain (`networks/fashion_snn.ron`) as a NIR graph.
//!
//! The chain's neuron adds its input before the decay, `v' = v_rest + P (v + W x - v_rest)`, and
//! starts at v_rest. NIR's neurons start at 0, so the graph holds `u = v - v_rest`:
//! `u' = P (u + W x)`, NIR's forward-Euler LIF with `tau = dt / (1 - P)`, `r = P / (1 - P)`,
//! `v_leak = 0`, threshold and reset less v_rest. Spikes are the same; membranes (and a
//! mean-membrane readout's scores) are v_rest lower.
//! Spikes reach the next layer one step later, as in the engine: a Delay node of one dt between
//! layers. A mean-membrane readout is an LI node, a spike-count readout a LIF node.

use crate::data::encode::Encoder;
use crate::models::nir::{Exported, row_major};
use crate::nir::graph::{Array, Graph, Neuron, NeuronKind, Node};
use crate::spec::{Readout, Reset};

use super::net::TrainNet;

/// The chain as a NIR graph for time step `dt` seconds; `encoder` is named in a warning.
/// Recurrent projections are refused: the delays of NIR loops are read differently by the
/// frameworks (a loop's Delay node on top of each one's own step or not).
pub fn export(net: &TrainNet<f32>, encoder: &Encoder, dt: f64) -> Result<Exported, String> {
    if let Some(lp) = net.loops.first() {
        return Err(format!(
            "the recurrent projection {} -> {} of a population chain has no NIR export; a layer stack's \
             recurrent layer (recurrent: AllToAll) exports as a loop through a Linear node",
            net.layers[lp.source].name, net.layers[lp.target].name
        ));
    }
    let mut nodes: Vec<(String, Node)> = vec![("input".into(), Node::Input { shape: vec![net.input_size] })];
    let mut warnings = Vec::new();
    for (l, layer) in net.layers.iter().enumerate() {
        let n = layer.outputs();
        if l > 0 {
            nodes.push((format!("{}.delay", layer.name), Node::Delay { delay: Array::filled(&[layer.inputs()], dt) }));
        }
        let weight = row_major(&layer.weights, vec![n, layer.inputs()]);
        nodes.push((format!("{}.weights", layer.name), Node::Linear { weight }));
        let p = layer.decay as f64;
        let fires = l + 1 < net.layers.len() || net.readout == Readout::SpikeCount;
        if fires && layer.reset == Reset::Subtract {
            warnings.push(format!(
                "{}: reset by subtraction has no NIR form; exported as reset to v_reset, so after a spike the \
                 membrane restarts from v_reset instead of v - (v_threshold - v_reset), and later spikes can differ",
                layer.name
            ));
        }
        let all = |v: f64| Array::filled(&[n], v);
        nodes.push((
            layer.name.clone(),
            Node::Neuron(Neuron {
                kind: if fires { NeuronKind::Lif } else { NeuronKind::Li },
                tau_mem: Some(all(dt / (1.0 - p))),
                tau_syn: None,
                r: all(p / (1.0 - p)),
                v_leak: Some(all(0.0)),
                v_threshold: fires.then(|| all(layer.v_threshold as f64 - layer.v_rest as f64)),
                v_reset: fires.then(|| all(layer.v_reset as f64 - layer.v_rest as f64)),
                w_in: None,
            }),
        ));
    }
    nodes.push(("output".into(), Node::Output { shape: vec![net.classes()] }));
    warnings.push(format!(
        "the encoder ({encoder:?}) is not part of the graph: feed its spikes at each of the {} steps",
        net.steps
    ));
    let edges = nodes.windows(2).map(|w| (w[0].0.clone(), w[1].0.clone())).collect();
    Ok(Exported { graph: Graph { nodes, edges }, warnings })
}
