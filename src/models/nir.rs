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
use crate::spec::{Layer as LayerSpec, Learnable, Network, Recurrence, Shape, SpikeReset, Training};

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
pub fn row_major(m: &DMatrix<f32>, shape: Vec<usize>) -> Array {
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
        (Kind::Lif | Kind::Alif, _) => (NeuronKind::Lif, None, None),
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
    // (neuron node, its recurrent Linear node, the weights): off the chain, in a cycle.
    let mut recurrent: Vec<(String, String, Array)> = Vec::new();
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
                if s.kind == Kind::Alif {
                    return Err(format!(
                        "{label}: NIR 1.0 has no adaptive LIF (its threshold follows the spikes), so an Alif layer \
                         cannot be exported"
                    ));
                }
                if s.fires() && s.reset == SpikeReset::Subtract {
                    warnings.push(format!(
                        "{label}: reset by subtraction has no NIR form; exported as reset to 0, so after a \
                         spike the membrane restarts from 0 instead of v - threshold, and later spikes can differ"
                    ));
                }
                nodes.push((name.clone(), Node::Neuron(neuron(s, layer.output, dt))));
                if let Some(r) = &s.recurrent {
                    // The layer's own spikes, one step late: NIR's cycle through a Linear node.
                    let mut weight = r.weight.clone();
                    if !r.self_connections {
                        weight.fill_diagonal(0.0);
                    }
                    let n = weight.nrows();
                    recurrent.push((name.clone(), format!("{name}.rec"), row_major(&weight, vec![n, n])));
                }
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
    let mut edges: Vec<(String, String)> = nodes.windows(2).map(|w| (w[0].0.clone(), w[1].0.clone())).collect();
    for (neuron, linear, weight) in recurrent {
        edges.push((neuron.clone(), linear.clone()));
        edges.push((linear.clone(), neuron));
        nodes.push((linear, Node::Linear { weight }));
    }
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

/// A layer stack read from a NIR graph: the network description (layers, input, a training
/// section) and the values of its parameters, in the order of [`LayerNet::params_mut`].
pub struct Imported {
    pub network: Network,
    pub params: Vec<DMatrix<f32>>,
    /// What was folded or chosen on the way (for the summary).
    pub notes: Vec<String>,
}

/// Multiplies row r (an output neuron, or a filter) by its channel's factor `k[r mod len]`.
fn scale_rows(m: &mut DMatrix<f32>, k: &[f64]) {
    for r in 0..m.nrows() {
        let f = k[r % k.len()] as f32;
        m.row_mut(r).iter_mut().for_each(|v| *v *= f);
    }
}

/// The f32 logit whose sigmoid (as the layers compute it) is the f32 nearest `factor`, so a
/// decay exported by [`export`] comes back to the same bits.
fn logit_of(factor: f64) -> f32 {
    let target = factor as f32;
    let start = (factor / (1.0 - factor)).ln() as f32;
    let of = |w: f32| 1.0 / (1.0 + (-w).exp());
    let mut best = start;
    let mut candidate = start;
    for _ in 0..8 {
        if of(candidate) == target {
            return candidate;
        }
        if (of(candidate) - target).abs() < (of(best) - target).abs() {
            best = candidate;
        }
        candidate = neighbour(candidate, of(candidate) < target);
    }
    best
}

/// The next f32 above (`up`) or below `x` (finite x).
fn neighbour(x: f32, up: bool) -> f32 {
    if x == 0.0 {
        let tiny = f32::from_bits(1);
        return if up { tiny } else { -tiny };
    }
    let bits = x.to_bits();
    // Away from zero is one more in the bit pattern, whatever the sign.
    let away = (x > 0.0) == up;
    f32::from_bits(if away { bits + 1 } else { bits - 1 })
}

/// One value per channel of a per-neuron parameter, if it is uniform within each channel.
fn per_channel(a: &Array, shape: Shape) -> Option<Vec<f64>> {
    let (channels, positions) = (shape.channels(), shape.positions());
    if a.len() == 1 {
        return Some(vec![a.data[0]; channels]);
    }
    if a.len() != shape.size() {
        return None;
    }
    let values: Vec<f64> = (0..channels).map(|c| a.data[c * positions]).collect();
    a.data.iter().enumerate().all(|(i, &v)| v == values[i / positions]).then_some(values)
}

fn uniform(values: &[f64]) -> Option<f64> {
    values.iter().all(|&v| v == values[0]).then(|| values[0])
}

/// The nodes of a chain from the Input to the Output, or why the graph is not one.
fn chain(graph: &Graph) -> Result<Vec<(&str, &Node)>, String> {
    let mut next: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    let mut incoming: std::collections::HashMap<&str, usize> = Default::default();
    for (a, b) in &graph.edges {
        next.entry(a).or_default().push(b);
        *incoming.entry(b).or_default() += 1;
        if graph.node(a).is_none() || graph.node(b).is_none() {
            return Err(format!("edge {a} -> {b} names a node the graph lacks"));
        }
    }
    let inputs: Vec<&str> =
        graph.nodes.iter().filter(|(_, n)| matches!(n, Node::Input { .. })).map(|(n, _)| n.as_str()).collect();
    let [first] = inputs[..] else {
        return Err(format!("the graph has {} Input nodes; a layer stack has one", inputs.len()));
    };
    let mut out = Vec::new();
    let mut at = first;
    loop {
        let node = graph.node(at).expect("checked above");
        if let Node::Graph(_) = node {
            return Err(format!("node '{at}': nested graphs (recurrent layers) do not import into a layer stack yet"));
        }
        out.push((at, node));
        if out.len() > graph.nodes.len() {
            return Err(format!(
                "node '{at}': the graph has a cycle; recurrent graphs do not import into a layer stack yet"
            ));
        }
        if matches!(node, Node::Output { .. }) {
            break;
        }
        match next.get(at).map(Vec::as_slice) {
            Some([b]) if incoming.get(b) == Some(&1) => at = b,
            Some([b]) => {
                return Err(format!("node '{b}' has several inputs; only chains import into a layer stack"));
            }
            Some(many) if many.len() > 1 => {
                return Err(format!("node '{at}' feeds {} nodes; only chains import into a layer stack", many.len()));
            }
            _ => return Err(format!("node '{at}' leads nowhere: no path to an Output")),
        }
    }
    if out.len() != graph.nodes.len() {
        return Err(format!("{} nodes are off the chain from Input to Output", graph.nodes.len() - out.len()));
    }
    Ok(out)
}

/// Takes the recurrent loops out of `graph`: a Linear (or Affine with zero bias) node fed only by
/// a LIF or CubaLIF node and feeding only it back is that layer's recurrent weights. Returns the
/// graph without them and the weights by neuron node.
fn recurrent_loops(graph: &Graph) -> Result<(Graph, std::collections::HashMap<String, Array>), String> {
    let mut loops = std::collections::HashMap::new();
    let mut reduced = graph.clone();
    for (name, node) in &graph.nodes {
        let (weight, bias) = match node {
            Node::Linear { weight } => (weight, None),
            Node::Affine { weight, bias } => (weight, Some(bias)),
            _ => continue,
        };
        let from: Vec<&String> = graph.edges.iter().filter(|(_, b)| b == name).map(|(a, _)| a).collect();
        let to: Vec<&String> = graph.edges.iter().filter(|(a, _)| a == name).map(|(_, b)| b).collect();
        let ([a], [b]) = (&from[..], &to[..]) else { continue };
        if a != b
            || !matches!(graph.node(a), Some(Node::Neuron(n)) if matches!(n.kind, NeuronKind::Lif | NeuronKind::CubaLif))
        {
            continue;
        }
        if bias.is_some_and(|b| b.data.iter().any(|&v| v != 0.0)) {
            // Around a cycle NIR delivers nothing at the first step and W s + b after: a bias
            // the layer cannot hold exactly.
            return Err(format!("node '{name}': a recurrent loop's bias must be 0 to import"));
        }
        if weight.shape.len() != 2 || weight.shape[0] != weight.shape[1] {
            return Err(format!("node '{name}': a recurrent weight must be square, got {:?}", weight.shape));
        }
        loops.insert((*a).clone(), weight.clone());
        reduced.nodes.retain(|(n, _)| n != name);
        reduced.edges.retain(|(x, y)| x != name && y != name);
    }
    Ok((reduced, loops))
}

/// Reads a chain graph as a layer stack for time step `dt` seconds and `steps` steps per sample.
/// A LIF or CubaLIF node may close a loop through a Linear node: a recurrent layer.
pub fn import(graph: &Graph, name: &str, dt: f64, steps: u32) -> Result<Imported, String> {
    let (graph, loops) = recurrent_loops(graph)?;
    let graph = &graph;
    let nodes = chain(graph)?;
    let Node::Input { shape } = nodes[0].1 else { unreachable!("chains start at the Input") };
    let input = match shape[..] {
        [n] => Shape::Flat(n),
        [channels, height, width] => Shape::Image { channels, height, width },
        _ => return Err(format!("node '{}': input shape {shape:?} is neither a vector nor an image", nodes[0].0)),
    };
    let dt_ms = dt * 1e3;
    let mut layers: Vec<LayerSpec> = Vec::new();
    let mut params: Vec<DMatrix<f32>> = Vec::new();
    let mut notes = Vec::new();
    let mut shape = input;
    // Index into `params` of the last Dense/Conv2d's weight and bias, for folding input scales.
    let mut last_linear: Option<(usize, Option<usize>)> = None;
    for (i, &(node_name, node)) in nodes.iter().enumerate().skip(1) {
        let refuse = |why: &str| Err(format!("node '{node_name}' ({}): {why}", node.type_name()));
        let spec = match node {
            Node::Output { .. } => break,
            Node::Affine { weight, .. } | Node::Linear { weight } => {
                let bias = if let Node::Affine { bias, .. } = node { Some(bias) } else { None };
                if weight.shape.len() != 2 || weight.shape[1] != shape.size() {
                    return refuse(&format!(
                        "weight {:?} does not take the {} values before it",
                        weight.shape,
                        shape.size()
                    ));
                }
                let (rows, cols) = (weight.shape[0], weight.shape[1]);
                params.push(DMatrix::from_row_iterator(rows, cols, weight.data.iter().map(|&v| v as f32)));
                let w = params.len() - 1;
                let b = bias.map(|b| {
                    params.push(DMatrix::from_iterator(rows, 1, b.data.iter().map(|&v| v as f32)));
                    params.len() - 1
                });
                last_linear = Some((w, b));
                LayerSpec::Dense { units: rows as u32, weights: Default::default(), bias: bias.is_some() }
            }
            Node::Conv { spatial: 2, weight, bias, stride, padding, dilation, groups, .. } => {
                let [filters, channels, kh, kw] = weight.shape[..] else { unreachable!("checked on read") };
                if kh != kw || stride[0] != stride[1] || dilation != &[1, 1] || *groups != 1 {
                    return refuse("only square kernels, equal strides, dilation 1 and groups 1 import into Conv2d");
                }
                let pad = match padding {
                    Padding::Explicit(p) if p[0] == p[1] => p[0],
                    Padding::Same if kh % 2 == 1 && stride[0] == 1 => kh / 2,
                    Padding::Valid => 0,
                    _ => return refuse("only equal padding on both axes imports into Conv2d"),
                };
                if shape.channels() != channels || !matches!(shape, Shape::Image { .. }) {
                    return refuse(&format!("takes {channels} channels, the input before it is {shape:?}"));
                }
                params.push(DMatrix::from_row_iterator(
                    filters,
                    channels * kh * kw,
                    weight.data.iter().map(|&v| v as f32),
                ));
                let w = params.len() - 1;
                params.push(DMatrix::from_iterator(filters, 1, bias.data.iter().map(|&v| v as f32)));
                last_linear = Some((w, Some(params.len() - 1)));
                LayerSpec::Conv2d {
                    filters: filters as u32,
                    kernel: kh as u32,
                    stride: stride[0] as u32,
                    padding: pad as u32,
                    weights: Default::default(),
                    bias: true,
                }
            }
            Node::Conv { .. } => return refuse("Conv1d has no layer in the stack yet"),
            Node::Pool { average, kernel, stride, padding } => {
                if kernel[0] != kernel[1] || kernel != stride || padding.iter().any(|&p| p != 0) {
                    return refuse("only square windows with stride = window and no padding import");
                }
                let size = kernel[0] as u32;
                let then_any = matches!(nodes.get(i + 1), Some((_, Node::Threshold { threshold }))
                    if threshold.data.iter().all(|&t| t == 0.5));
                match (average, then_any) {
                    (true, _) => LayerSpec::AvgPool { size },
                    // SumPool then Threshold(0.5) over spikes is max pooling (export's form).
                    (false, true) => LayerSpec::MaxPool { size },
                    (false, false) => {
                        return refuse("a sum pool imports only as max pooling, followed by Threshold 0.5");
                    }
                }
            }
            Node::Threshold { threshold } => {
                let after_sum_pool = matches!(nodes[i - 1].1, Node::Pool { average: false, .. });
                if after_sum_pool {
                    continue;
                }
                if threshold.data.iter().any(|&t| t != 0.0) {
                    return refuse("only Threshold 0 (the Heaviside step) imports");
                }
                LayerSpec::Heaviside { mode: Default::default(), surrogate: None }
            }
            Node::Flatten { start_dim, end_dim, .. } => {
                if *start_dim != 0 || !(*end_dim == -1 || *end_dim as usize + 1 == dims(shape).len()) {
                    return refuse("only flattening the whole sample imports");
                }
                LayerSpec::Flatten
            }
            Node::Scale { .. } => return refuse("Scale has no layer in the stack yet"),
            Node::Delay { .. } => return refuse("delays have no layer in the stack yet"),
            Node::Neuron(n) => {
                let loop_weight = loops.get(node_name);
                if loop_weight.is_some_and(|w| w.shape[0] != shape.size() || !matches!(shape, Shape::Flat(_))) {
                    return refuse("its recurrent weight does not fit a vector layer of its size");
                }
                let (mut spec, scale) = spiking_spec(n, shape, dt, dt_ms, &mut params)
                    .map_err(|why| format!("node '{node_name}' ({}): {why}", node.type_name()))?;
                if let Some(w) = loop_weight {
                    // The loop's input enters like the layer's other input, so it takes the same
                    // input scale.
                    let n = w.shape[0];
                    let mut m = DMatrix::from_row_iterator(n, n, w.data.iter().map(|&v| v as f32));
                    if let Some(k) = &scale {
                        scale_rows(&mut m, k);
                    }
                    let kind = if (0..n).all(|i| m[(i, i)] == 0.0) { Recurrence::NoSelf } else { Recurrence::AllToAll };
                    match &mut spec {
                        LayerSpec::Lif { recurrent, .. } | LayerSpec::CubaLif { recurrent, .. } => *recurrent = kind,
                        _ => return refuse("only LIF and CubaLIF layers take recurrent weights"),
                    }
                    params.push(m);
                }
                if let Some(k) = scale {
                    let Some((w, b)) = last_linear else {
                        return refuse(
                            "its input scale (r dt / tau) is not 1 and no Dense or Conv2d precedes it to fold it into",
                        );
                    };
                    scale_rows(&mut params[w], &k);
                    if let Some(b) = b {
                        scale_rows(&mut params[b], &k);
                    }
                    notes.push(format!("node '{node_name}': input scale folded into the weights before it"));
                }
                spec
            }
            Node::Input { .. } | Node::Graph(_) => return refuse("not expected inside a chain"),
        };
        let spec_shape = spec.output_shape(shape).map_err(|why| format!("node '{node_name}': {why}"))?;
        // A scale folds only into the Dense or Conv2d right before the neuron.
        if !matches!(spec, LayerSpec::Dense { .. } | LayerSpec::Conv2d { .. }) {
            last_linear = None;
        }
        shape = spec_shape;
        layers.push(spec);
    }
    let inputs = vec![crate::spec::InputPopulation {
        name: "input".into(),
        size: input.size() as u32,
        shape: match input {
            Shape::Image { channels, height, width } => Some((channels as u32, height as u32, width as u32)),
            Shape::Flat(_) => None,
        },
    }];
    let training: Training = ron::from_str(&format!("(steps: {steps}, encoder: Current)")).expect("a valid section");
    let mut network: Network = ron::from_str(&format!("(name: {name:?})")).expect("a valid network");
    network.dt_ms = dt_ms;
    network.inputs = inputs;
    network.layers = layers;
    network.training = Some(training);
    Ok(Imported { network, params, notes })
}

/// A neuron node as a spiking layer: its spec (decays learnable only where they vary within the
/// layer, their logits pushed to `params`) and, when the input scale is not 1, the scale per
/// output to fold into the weights before it.
fn spiking_spec(
    n: &Neuron,
    shape: Shape,
    dt: f64,
    dt_ms: f64,
    params: &mut Vec<DMatrix<f32>>,
) -> Result<(LayerSpec, Option<Vec<f64>>), String> {
    let channel = |a: &Array, field: &str| {
        per_channel(a, shape).ok_or_else(|| format!("`{field}` varies within a channel, which a layer cannot hold"))
    };
    let zero = |a: &Option<Array>, field: &str| match a {
        Some(a) if a.data.iter().any(|&v| v != 0.0) => {
            Err(format!("`{field}` is not 0, which the layers cannot hold yet"))
        }
        _ => Ok(()),
    };
    zero(&n.v_leak, "v_leak")?;
    zero(&n.v_reset, "v_reset")?;
    if !n.kind.leaks() || (n.kind.has_synapse() && !n.kind.spikes()) {
        return Err("IF, I and CubaLI have no layer in the stack yet".into());
    }
    let tau = channel(n.tau_mem.as_ref().expect("leaky neurons have tau"), "tau")?;
    let beta: Vec<f64> = tau.iter().map(|t| 1.0 - dt / t).collect();
    if beta.iter().any(|&b| !(0.0 < b && b < 1.0)) {
        return Err(format!("dt / tau must lie in (0, 1) for forward Euler; tau {tau:?} with dt {dt}"));
    }
    let r = channel(&n.r, "r")?;
    let mut scale: Vec<f64> = tau.iter().zip(&r).map(|(t, r)| r * dt / t).collect();
    let alpha = match &n.tau_syn {
        Some(ts) => {
            let ts = channel(ts, "tau_syn")?;
            let w_in = n.w_in.as_ref().map_or(Ok(vec![1.0; ts.len()]), |w| channel(w, "w_in"))?;
            scale.iter_mut().zip(ts.iter().zip(&w_in)).for_each(|(k, (t, w))| *k *= w * dt / t);
            Some(ts.iter().map(|t| 1.0 - dt / t).collect::<Vec<f64>>())
        }
        None => None,
    };
    // Decays: a tau for the spec when uniform, learnable per channel otherwise.
    let varies = uniform(&beta).is_none() || alpha.as_ref().is_some_and(|a| uniform(a).is_none());
    let learn = if varies { Learnable::PerChannel } else { Learnable::Fixed };
    let tau_ms = |factor: f64| {
        let exact = 1.0 / (1.0 + (-(logit_of(factor) as f64)).exp());
        -dt_ms / exact.ln()
    };
    if varies {
        params.push(DMatrix::from_iterator(beta.len(), 1, beta.iter().map(|&b| logit_of(b))));
        if let Some(a) = &alpha {
            params.push(DMatrix::from_iterator(a.len(), 1, a.iter().map(|&b| logit_of(b))));
        }
    }
    let threshold = match &n.v_threshold {
        Some(t) => Some(uniform(&channel(t, "v_threshold")?).ok_or("v_threshold varies across the layer")?),
        None => None,
    };
    let reset = SpikeReset::Zero;
    let spec = match (n.kind, alpha) {
        (NeuronKind::Li, _) => LayerSpec::Li { tau_mem_ms: tau_ms(beta[0]), learn_tau: learn },
        (NeuronKind::Lif, _) => LayerSpec::Lif {
            tau_mem_ms: tau_ms(beta[0]),
            threshold: threshold.expect("LIF has a threshold"),
            reset,
            detach_reset: None,
            surrogate: None,
            learn_tau: learn,
            recurrent: Default::default(),
        },
        (NeuronKind::CubaLif, Some(alpha)) => LayerSpec::CubaLif {
            tau_syn_ms: tau_ms(alpha[0]),
            tau_mem_ms: tau_ms(beta[0]),
            threshold: threshold.expect("CubaLIF has a threshold"),
            reset,
            detach_reset: None,
            surrogate: None,
            learn_tau: learn,
            recurrent: Default::default(),
        },
        _ => unreachable!("other kinds refused above"),
    };
    // The exporter writes r dt / tau = 1 up to rounding; anything else is a real scale.
    let needs_scale = scale.iter().any(|k| (k - 1.0).abs() > 1e-9);
    Ok((spec, needs_scale.then_some(scale)))
}
