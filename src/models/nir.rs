//! Layer stacks to NIR graphs and back.
//!
//! A spiking layer with decay beta (`v' = beta v + x`) is NIR's forward-Euler LIF with
//! `tau = dt / (1 - beta)` and `r = tau / dt`, so that `dt/tau = 1 - beta` and the input enters
//! with weight `r dt / tau = 1` (snnTorch's own mapping). CubaLif's current `i = alpha i + x` is
//! CubaLIF's with `tau_syn = dt / (1 - alpha)` and `w_in = tau_syn / dt`. NIR stores no dt; the
//! caller chooses it (snnTorch's importer assumes 1e-4 s).
//!
//! What NIR cannot say is folded exactly where it can be and named otherwise:
//! - batch norm (evaluation statistics) is folded into the Dense or Conv2d before it;
//! - max pooling of spikes (0/1) is SumPool2d then Threshold(0.5), the same values;
//! - dropout is the identity at evaluation and is left out;
//! - reset by subtraction has no NIR form: exported as reset to 0, with a warning;
//! - the encoder and the readout's reduction over steps stay with the caller.

use nalgebra::DMatrix;

use super::net::{LayerNet, Op};
use crate::nir::graph::{Array, Graph, Neuron, NeuronKind, Node, Padding};
use crate::nn::spiking::{Kind, Spiking};
use crate::spec::{Shape, SpikeReset};

/// A graph made from a model, and what it could not carry exactly.
pub struct Exported {
    pub graph: Graph,
    pub warnings: Vec<String>,
}

pub fn dims(shape: Shape) -> Vec<usize> {
    match shape {
        Shape::Flat(n) => vec![n],
        Shape::Image { channels, height, width } => vec![channels, height, width],
    }
}

/// Row-major copy of a column-major matrix, with its shape.
fn row_major(m: &DMatrix<f32>, shape: Vec<usize>) -> Array {
    let mut data = Vec::with_capacity(m.len());
    for r in 0..m.nrows() {
        data.extend(m.row(r).iter().map(|&v| v as f64));
    }
    Array::new(shape, data)
}

/// One value per neuron of `shape` from one value per channel.
fn per_neuron(shape: Shape, per_channel: &[f64]) -> Array {
    let positions = shape.positions();
    Array::new(dims(shape), (0..shape.size()).map(|i| per_channel[i / positions]).collect())
}

fn neuron(layer: &Spiking<f32>, shape: Shape, dt: f64) -> Neuron {
    let channels = shape.channels();
    let decays = |d: &crate::nn::spiking::Decay<f32>| -> Vec<f64> {
        d.factors(channels).into_iter().map(|b| b as f64).collect()
    };
    let beta = decays(&layer.beta);
    let tau: Vec<f64> = beta.iter().map(|b| dt / (1.0 - b)).collect();
    let r: Vec<f64> = beta.iter().map(|b| 1.0 / (1.0 - b)).collect();
    let zeros = || Array::filled(&dims(shape), 0.0);
    let threshold = Array::filled(&dims(shape), layer.threshold as f64);
    let (kind, tau_syn, w_in) = match (layer.kind, &layer.alpha) {
        (Kind::Li, _) => (NeuronKind::Li, None, None),
        (Kind::Lif, _) => (NeuronKind::Lif, None, None),
        (Kind::CubaLif, alpha) => {
            let alpha = decays(alpha.as_ref().expect("CubaLif has a synaptic decay"));
            let tau_syn: Vec<f64> = alpha.iter().map(|a| dt / (1.0 - a)).collect();
            let w_in: Vec<f64> = alpha.iter().map(|a| 1.0 / (1.0 - a)).collect();
            (NeuronKind::CubaLif, Some(per_neuron(shape, &tau_syn)), Some(per_neuron(shape, &w_in)))
        }
    };
    let fires = kind.spikes();
    Neuron {
        kind,
        tau_mem: Some(per_neuron(shape, &tau)),
        tau_syn,
        r: per_neuron(shape, &r),
        v_leak: Some(zeros()),
        v_threshold: fires.then_some(threshold),
        v_reset: fires.then(zeros),
        w_in,
    }
}

/// The model as a NIR graph for time step `dt` seconds: nodes `input`, one per layer named by
/// the layer's index, `output`, in a chain.
pub fn export(net: &LayerNet<f32>, dt: f64) -> Result<Exported, String> {
    let mut nodes: Vec<(String, Node)> = vec![("input".into(), Node::Input { shape: dims(net.input) })];
    let mut warnings = Vec::new();
    // Whether the last node's output is spikes (0/1), for max pooling.
    let mut spikes = false;
    for (i, layer) in net.layers.iter().enumerate() {
        let name = i.to_string();
        let label = &layer.label;
        let full = |value: f64| Array::filled(&dims(layer.output), value);
        match &layer.op {
            Op::Dense(l) | Op::Conv(l, _) => {
                let weight = if l.binary {
                    warnings.push(format!("{label}: binarised weights are exported as their signs (+1/-1)"));
                    l.effective(None)
                } else {
                    l.weight.clone()
                };
                nodes.push((name, linear_node(&layer.op, &weight, l.bias.as_ref())));
            }
            Op::BatchNorm(bn) => {
                let (scale, shift) = bn.eval_affine();
                let last = nodes.last_mut().map(|(_, node)| node);
                if let Some(node @ Node::Linear { .. }) = last {
                    let Node::Linear { weight } = node.clone() else { unreachable!() };
                    *node = Node::Affine { bias: Array::filled(&[weight.shape[0]], 0.0), weight };
                }
                let folded = match nodes.last_mut() {
                    Some((_, Node::Affine { weight, bias } | Node::Conv { weight, bias, .. })) => {
                        fold(weight, bias, &scale, &shift)
                    }
                    _ => false,
                };
                if !folded {
                    return Err(format!(
                        "{label}: batch norm can be exported only right after a Dense or Conv2d layer, which \
                         it is folded into (NIR has no batch norm)"
                    ));
                }
            }
            Op::MaxPool(size) if spikes => {
                nodes.push((name.clone(), pool_node(false, *size)));
                nodes.push((format!("{name}.any"), Node::Threshold { threshold: full(0.5) }));
            }
            Op::MaxPool(_) => {
                return Err(format!(
                    "{label}: NIR has no max pooling; it is exported exactly only over spikes (as SumPool2d \
                     then Threshold 0.5), and this one's input is not spikes"
                ));
            }
            Op::AvgPool(size) => nodes.push((name, pool_node(true, *size))),
            Op::Step { step, .. } if step.low != 0.0 => return Err(format!("{label}: NIR has no sign unit (-1/+1)")),
            Op::Step { smooth, .. } => {
                if *smooth {
                    warnings.push(format!("{label}: a smooth Heaviside is exported as its evaluation form, the step"));
                }
                nodes.push((name, Node::Threshold { threshold: full(0.0) }));
            }
            Op::Relu => return Err(format!("{label}: NIR 1.0 has no ReLU node")),
            Op::Dropout(_) => {}
            Op::Flatten => {
                nodes.push((name, Node::Flatten { start_dim: 0, end_dim: -1, input_type: Some(dims(layer.input)) }))
            }
            Op::Spiking(s) => {
                if s.fires() && s.reset == SpikeReset::Subtract {
                    warnings.push(format!(
                        "{label}: reset by subtraction has no NIR form; exported as reset to 0, so after a \
                         spike the membrane restarts from 0 instead of v - threshold, and later spikes can differ"
                    ));
                }
                nodes.push((name, Node::Neuron(neuron(s, layer.output, dt))));
            }
        }
        // Whether this layer's output is spikes (0/1); dropout and flatten keep the values.
        spikes = match &layer.op {
            Op::Spiking(s) => s.fires(),
            Op::Step { .. } | Op::MaxPool(_) => true,
            Op::Dropout(_) | Op::Flatten => spikes,
            _ => false,
        };
    }
    let last = net.layers.last().map_or(net.input, |l| l.output);
    nodes.push(("output".into(), Node::Output { shape: dims(last) }));
    let edges = nodes.windows(2).map(|w| (w[0].0.clone(), w[1].0.clone())).collect();
    if net.is_spiking() {
        warnings.push(format!(
            "the encoder ({:?}) is not part of the graph: feed it the encoded input at each of the {} steps",
            net.encoder, net.steps
        ));
    }
    Ok(Exported { graph: Graph { nodes, edges }, warnings })
}

fn linear_node(op: &Op<f32>, weight: &DMatrix<f32>, bias: Option<&DMatrix<f32>>) -> Node {
    match op {
        Op::Conv(_, g) => {
            let Shape::Image { channels, height, width } = g.input else { unreachable!("conv input is an image") };
            let out = g.output.channels();
            let bias = bias.map_or_else(|| Array::filled(&[out], 0.0), |b| row_major(b, vec![out]));
            Node::Conv {
                spatial: 2,
                weight: row_major(weight, vec![out, channels, g.kernel, g.kernel]),
                bias,
                input_shape: Some(vec![height, width]),
                stride: vec![g.stride; 2],
                padding: Padding::Explicit(vec![g.padding; 2]),
                dilation: vec![1, 1],
                groups: 1,
            }
        }
        _ => {
            let w = row_major(weight, vec![weight.nrows(), weight.ncols()]);
            match bias {
                Some(b) => Node::Affine { weight: w, bias: row_major(b, vec![b.nrows()]) },
                None => Node::Linear { weight: w },
            }
        }
    }
}

fn pool_node(average: bool, size: usize) -> Node {
    Node::Pool { average, kernel: vec![size; 2], stride: vec![size; 2], padding: vec![0, 0] }
}

/// Folds `x * scale + shift` per output channel into the weights and bias before it.
fn fold(weight: &mut Array, bias: &mut Array, scale: &[f32], shift: &[f32]) -> bool {
    let outputs = weight.shape[0];
    if scale.len() != outputs || bias.len() != outputs {
        return false;
    }
    let per_output = weight.len() / outputs;
    for (o, row) in weight.data.chunks_mut(per_output).enumerate() {
        row.iter_mut().for_each(|w| *w *= scale[o] as f64);
    }
    for (o, b) in bias.data.iter_mut().enumerate() {
        *b = *b * scale[o] as f64 + shift[o] as f64;
    }
    true
}
