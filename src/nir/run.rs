//! Runs a NIR graph step by step, the way the frameworks that export NIR run it:
//! - nested graphs are flattened (inner nodes become `<graph>.<node>`);
//! - within a step, nodes run in topological order and a node's input is the sum over its
//!   incoming edges;
//! - an edge that closes a cycle delivers its source's output of the previous step (nothing at
//!   the first step), and every cycle must pass through a stateful node (a neuron or a delay);
//! - neurons are integrated by forward Euler with the given dt, CubaLIF's current first:
//!   `I += dt/tau_syn (-I + w_in x)`, `v += dt/tau (v_leak - v + r I)`, a spike when
//!   `v > v_threshold`, then `v <- v_reset`.
//!
//! Everything is computed in f64. This is a reference interpreter for graphs of any shape; the
//! layer stack (`nn`) trains the graphs `nir::convert` can express.

use std::collections::HashMap;

use super::graph::{Array, Graph, Neuron, Node, Padding};

/// A compiled graph: nodes in execution order with their shapes and which edges are delayed.
pub struct Program {
    dt: f64,
    names: Vec<String>,
    ops: Vec<Op>,
    shapes: Vec<Vec<usize>>,
    /// Per node (in execution order), its incoming edges: (source, delivered from the previous
    /// step).
    inputs: Vec<Vec<(usize, bool)>>,
    source: usize,
    outputs: Vec<usize>,
}

enum Op {
    Source,
    /// Output, a subgraph's Input or Output, Flatten: the values pass unchanged.
    Identity,
    Affine {
        weight: Array,
        bias: Option<Array>,
    },
    Scale(Array),
    Threshold(Array),
    Conv(Conv),
    Pool(Pool),
    Delay(Vec<usize>),
    Neuron(Neuron),
}

/// Convolution geometry, Conv1d as a 2-d one of height 1.
struct Conv {
    weight: Array,
    bias: Array,
    groups: usize,
    input: [usize; 3],
    output: [usize; 3],
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    dilation: [usize; 2],
}

struct Pool {
    average: bool,
    input: [usize; 3],
    output: [usize; 3],
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
}

/// What a run gives: per stateful node its membranes (after the step's reset) and, for spiking
/// ones, its spikes; per output node its values. Each T x B x the node's shape, step-major.
pub struct RunRecord {
    pub steps: usize,
    pub batch: usize,
    /// (dataset name, node shape, values).
    pub arrays: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// Flattened graph before ordering.
#[derive(Default)]
struct Flat {
    names: Vec<String>,
    nodes: Vec<Node>,
    /// Whether the node is a top-level Input (a source of the run's input) or Output.
    top_input: Vec<bool>,
    top_output: Vec<bool>,
    edges: Vec<(usize, usize)>,
}

/// Adds `graph`'s nodes to `flat` (names prefixed) and returns its own Input and Output nodes.
fn flatten(graph: &Graph, prefix: &str, top: bool, flat: &mut Flat) -> Result<(Vec<usize>, Vec<usize>), String> {
    // Where an edge to or from a name lands: a subgraph stands for its one Input (as a target)
    // and its one Output (as a source).
    let mut entry: HashMap<&str, usize> = HashMap::new();
    let mut exit: HashMap<&str, usize> = HashMap::new();
    let (mut inputs, mut outputs) = (Vec::new(), Vec::new());
    for (name, node) in &graph.nodes {
        let full = format!("{prefix}{name}");
        if let Node::Graph(inner) = node {
            let (ins, outs) = flatten(inner, &format!("{full}."), false, flat)?;
            let one = |found: Vec<usize>, kind: &str| match found[..] {
                [i] => Ok(i),
                _ => Err(format!("subgraph '{full}' has {} {kind} nodes; edges to it need exactly one", found.len())),
            };
            entry.insert(name, one(ins, "Input")?);
            exit.insert(name, one(outs, "Output")?);
        } else {
            let i = flat.names.len();
            match node {
                Node::Input { .. } => inputs.push(i),
                Node::Output { .. } => outputs.push(i),
                _ => {}
            }
            flat.names.push(full);
            flat.top_input.push(top && matches!(node, Node::Input { .. }));
            flat.top_output.push(top && matches!(node, Node::Output { .. }));
            flat.nodes.push(node.clone());
            entry.insert(name, i);
            exit.insert(name, i);
        }
    }
    for (from, to) in &graph.edges {
        let missing = |n: &str| format!("edge {from} -> {to}: no node named '{prefix}{n}'");
        let a = *exit.get(from.as_str()).ok_or_else(|| missing(from))?;
        let b = *entry.get(to.as_str()).ok_or_else(|| missing(to))?;
        flat.edges.push((a, b));
    }
    Ok((inputs, outputs))
}

/// Depth-first order from the inputs: the reverse post-order, and which edges close a cycle.
/// Errors when a cycle has no stateful node.
fn order(flat: &Flat) -> Result<(Vec<usize>, Vec<bool>), String> {
    let n = flat.names.len();
    let mut out_edges: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (e, &(a, _)) in flat.edges.iter().enumerate() {
        out_edges[a].push(e);
    }
    // 0 unseen, 1 on the stack, 2 done.
    let mut state = vec![0u8; n];
    let mut back = vec![false; flat.edges.len()];
    let mut post = Vec::with_capacity(n);
    let roots = (0..n).filter(|&i| flat.top_input[i]).chain(0..n);
    for root in roots {
        if state[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        state[root] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&e) = out_edges[node].get(*next) {
                *next += 1;
                let target = flat.edges[e].1;
                match state[target] {
                    0 => {
                        state[target] = 1;
                        stack.push((target, 0));
                    }
                    1 => {
                        back[e] = true;
                        let from = stack.iter().position(|&(v, _)| v == target).expect("on the stack");
                        let cycle: Vec<usize> = stack[from..].iter().map(|&(v, _)| v).collect();
                        if !cycle.iter().any(|&v| flat.nodes[v].is_stateful()) {
                            let names: Vec<&str> = cycle.iter().map(|&v| flat.names[v].as_str()).collect();
                            return Err(format!(
                                "the cycle {} -> {} has no stateful node (neuron or delay): it has no value \
                                 within a step",
                                names.join(" -> "),
                                names[0]
                            ));
                        }
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                post.push(node);
                stack.pop();
            }
        }
    }
    post.reverse();
    Ok((post, back))
}

fn two(v: &[usize]) -> [usize; 2] {
    match v[..] {
        [x] => [1, x],
        [y, x] => [y, x],
        _ => unreachable!("read as one value per spatial dimension"),
    }
}

/// Output size of a window sliding over `size` with padding on both sides.
fn slide(size: usize, kernel: usize, stride: usize, pad: usize, dilation: usize) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    (size + 2 * pad).checked_sub(span).map(|v| v / stride.max(1) + 1)
}

/// Builds a node's operation and output shape from its input shape.
fn compile_node(name: &str, node: &Node, input: &[usize], dt: f64) -> Result<(Op, Vec<usize>), String> {
    let size: usize = input.iter().product();
    let expect = |needed: usize, what: &str| {
        if needed == size {
            Ok(())
        } else {
            Err(format!("node '{name}' ({what}) takes {needed} values, its input gives {size} (shape {input:?})"))
        }
    };
    let per_element = |a: &Array, field: &str| {
        if a.len() == 1 || a.len() == size {
            Ok(())
        } else {
            Err(format!("node '{name}': `{field}` has {} values for an input of {size}", a.len()))
        }
    };
    Ok(match node {
        Node::Input { .. } | Node::Output { .. } => (Op::Identity, input.to_vec()),
        Node::Affine { weight, .. } | Node::Linear { weight } if weight.shape.len() != 2 => {
            return Err(format!("node '{name}': weight has shape {:?}, not out x in", weight.shape));
        }
        Node::Affine { weight, bias } => {
            expect(weight.shape[1], "its weight's columns")?;
            if bias.len() != weight.shape[0] {
                return Err(format!("node '{name}': bias has {} values for {} outputs", bias.len(), weight.shape[0]));
            }
            (Op::Affine { weight: weight.clone(), bias: Some(bias.clone()) }, vec![weight.shape[0]])
        }
        Node::Linear { weight } => {
            expect(weight.shape[1], "its weight's columns")?;
            (Op::Affine { weight: weight.clone(), bias: None }, vec![weight.shape[0]])
        }
        Node::Scale { scale } => {
            per_element(scale, "scale")?;
            (Op::Scale(scale.clone()), input.to_vec())
        }
        Node::Threshold { threshold } => {
            per_element(threshold, "threshold")?;
            (Op::Threshold(threshold.clone()), input.to_vec())
        }
        Node::Flatten { start_dim, end_dim, .. } => {
            let rank = input.len() as i64;
            let fix = |d: i64| if d < 0 { d + rank } else { d };
            let (s, e) = (fix(*start_dim), fix(*end_dim));
            if !(0 <= s && s <= e && e < rank) {
                return Err(format!(
                    "node '{name}': cannot flatten dimensions {start_dim}..{end_dim} of shape {input:?}"
                ));
            }
            let (s, e) = (s as usize, e as usize);
            let mut shape = input[..s].to_vec();
            shape.push(input[s..=e].iter().product());
            shape.extend_from_slice(&input[e + 1..]);
            (Op::Identity, shape)
        }
        Node::Conv { spatial, weight, bias, input_shape, stride, padding, dilation, groups } => {
            let (out_ch, in_per_group) = (weight.shape[0], weight.shape[1]);
            let channels = in_per_group * groups;
            let spatial_in: Vec<usize> = match input_shape {
                Some(s) => s.clone(),
                None if input.len() == spatial + 1 => input[1..].to_vec(),
                None => return Err(format!("node '{name}': input shape {input:?} is not channels x {spatial}-d")),
            };
            expect(channels * spatial_in.iter().product::<usize>(), "channels x input_shape")?;
            if out_ch % groups != 0 || bias.len() != out_ch {
                return Err(format!(
                    "node '{name}': {out_ch} filters, {groups} groups and {} biases do not fit",
                    bias.len()
                ));
            }
            let kernel = two(&weight.shape[2..]);
            let (stride, dilation, hw) = (two(stride), two(dilation), two(&spatial_in));
            let pad = match padding {
                // A 1-d convolution is a 2-d one of height 1, with no padding in height.
                Padding::Explicit(p) if *spatial == 1 => [0, p[0]],
                Padding::Explicit(p) => two(p),
                Padding::Valid => [0, 0],
                Padding::Same if stride != [1, 1] => {
                    return Err(format!("node '{name}': padding \"same\" needs stride 1 (PyTorch's rule)"));
                }
                // PyTorch pads dilation (k - 1) in all, the odd one at the end: with odd spans the
                // two sides are equal, which is what the symmetric padding here can express.
                Padding::Same => {
                    let total = [dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)];
                    if total.iter().any(|t| t % 2 != 0) {
                        return Err(format!("node '{name}': padding \"same\" with an even kernel span pads unevenly"));
                    }
                    [total[0] / 2, total[1] / 2]
                }
            };
            let out = [0, 1].map(|d| slide(hw[d], kernel[d], stride[d], pad[d], dilation[d]));
            let [Some(oh), Some(ow)] = out else {
                return Err(format!("node '{name}': the kernel is larger than the padded input {hw:?}"));
            };
            let shape = if *spatial == 1 { vec![out_ch, ow] } else { vec![out_ch, oh, ow] };
            let conv = Conv {
                weight: weight.clone(),
                bias: bias.clone(),
                groups: *groups,
                input: [channels, hw[0], hw[1]],
                output: [out_ch, oh, ow],
                kernel,
                stride,
                pad,
                dilation,
            };
            (Op::Conv(conv), shape)
        }
        Node::Pool { average, kernel, stride, padding } => {
            let [c, h, w] = input[..] else {
                return Err(format!("node '{name}': pooling needs a channels x height x width input, got {input:?}"));
            };
            let (kernel, stride, pad) = (two(kernel), two(stride), two(padding));
            let out = [0, 1].map(|d| slide([h, w][d], kernel[d], stride[d], pad[d], 1));
            let [Some(oh), Some(ow)] = out else {
                return Err(format!("node '{name}': the window is larger than the input"));
            };
            let pool = Pool { average: *average, input: [c, h, w], output: [c, oh, ow], kernel, stride, pad };
            (Op::Pool(pool), vec![c, oh, ow])
        }
        Node::Delay { delay } => {
            per_element(delay, "delay")?;
            let steps = delay.data.iter().map(|d| (d / dt).round().max(0.0) as usize).collect();
            (Op::Delay(steps), input.to_vec())
        }
        Node::Neuron(n) => {
            let shape = if n.size() > 1 { n.shape() } else { input.to_vec() };
            expect(shape.iter().product(), "its parameters' size")?;
            if n.kind.spikes() && n.v_threshold.is_none() {
                return Err(format!("node '{name}': no v_threshold"));
            }
            (Op::Neuron(n.clone()), shape)
        }
        Node::Graph(_) => unreachable!("flattened"),
    })
}

/// NIR stores no time step; the one given must be a positive number of seconds.
pub fn check_dt(dt: f64) -> Result<(), String> {
    if dt > 0.0 && dt.is_finite() {
        Ok(())
    } else {
        Err(format!("--dt {dt}: the time step must be positive (seconds)"))
    }
}

impl Program {
    /// Flattens, orders and shapes `graph` for time step `dt` (seconds).
    pub fn compile(graph: &Graph, dt: f64) -> Result<Program, String> {
        check_dt(dt)?;
        let mut flat = Flat::default();
        flatten(graph, "", true, &mut flat)?;
        if flat.names.is_empty() {
            return Err("the graph has no nodes".into());
        }
        let sources: Vec<usize> = (0..flat.names.len()).filter(|&i| flat.top_input[i]).collect();
        let [source] = sources[..] else {
            return Err(format!("the graph has {} Input nodes; `snn nir run` feeds exactly one", sources.len()));
        };
        let (order, back) = order(&flat)?;
        let position: HashMap<usize, usize> = order.iter().enumerate().map(|(p, &v)| (v, p)).collect();
        let mut inputs = vec![Vec::new(); order.len()];
        for (e, &(a, b)) in flat.edges.iter().enumerate() {
            inputs[position[&b]].push((position[&a], back[e]));
        }
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(order.len());
        let mut ops = Vec::with_capacity(order.len());
        for (p, &v) in order.iter().enumerate() {
            let name = &flat.names[v];
            let node = &flat.nodes[v];
            let input_shape = if v == source {
                let Node::Input { shape } = node else { unreachable!("sources are Input nodes") };
                shape.clone()
            } else {
                let forward: Vec<&Vec<usize>> =
                    inputs[p].iter().filter(|(_, delayed)| !delayed).map(|&(s, _)| &shapes[s]).collect();
                // A neuron fed only around a cycle takes its own shape.
                match (forward.first(), node) {
                    (Some(s), _) => (*s).clone(),
                    (None, Node::Neuron(n)) => n.shape(),
                    (None, _) => return Err(format!("node '{name}' has no input")),
                }
            };
            let (op, shape) =
                if v == source { (Op::Source, input_shape) } else { compile_node(name, node, &input_shape, dt)? };
            if let Node::Output { shape: declared } | Node::Input { shape: declared } = node {
                let n: usize = declared.iter().product();
                if !declared.is_empty() && n != shape.iter().product::<usize>() {
                    return Err(format!("node '{name}' declares shape {declared:?} but receives {shape:?}"));
                }
            }
            shapes.push(shape);
            ops.push(op);
        }
        // Every edge must carry as many values as its target takes (delayed edges too).
        for p in 0..order.len() {
            for &(s, _) in &inputs[p] {
                let (got, want) = (shapes[s].iter().product::<usize>(), input_len(&ops[p], shapes[p].iter().product()));
                if got != want {
                    return Err(format!(
                        "edge {} -> {}: the source gives {got} values (shape {:?}), the target takes {want}",
                        flat.names[order[s]], flat.names[order[p]], shapes[s]
                    ));
                }
            }
        }
        let outputs = (0..order.len()).filter(|&p| flat.top_output[order[p]]).collect();
        let names = order.iter().map(|&v| flat.names[v].clone()).collect();
        Ok(Program { dt, names, ops, shapes, inputs, source: position[&source], outputs })
    }

    /// The input's shape per sample.
    pub fn input_shape(&self) -> &[usize] {
        &self.shapes[self.source]
    }

    /// Runs `steps` steps of a batch; `input` is T x B x input shape, row-major.
    pub fn run(&self, input: &[f64], steps: usize, batch: usize) -> RunRecord {
        let n = self.ops.len();
        let sizes: Vec<usize> = self.shapes.iter().map(|s| s.iter().product()).collect();
        let mut current: Vec<Vec<f64>> = sizes.iter().map(|&s| vec![0.0; s * batch]).collect();
        let mut previous = current.clone();
        let mut states: Vec<NeuronState> = self
            .ops
            .iter()
            .zip(&sizes)
            .map(|(op, &s)| match op {
                Op::Neuron(_) => NeuronState { v: vec![0.0; s * batch], i: vec![0.0; s * batch] },
                _ => NeuronState::default(),
            })
            .collect();
        let mut delay_lines: Vec<Vec<Vec<f64>>> = self
            .ops
            .iter()
            .zip(&sizes)
            .map(|(op, &s)| match op {
                Op::Delay(steps) => vec![vec![0.0; s * batch]; steps.iter().max().map_or(1, |m| m + 1)],
                _ => Vec::new(),
            })
            .collect();
        let mut records: Vec<(String, usize, Vec<f32>)> = Vec::new();
        let mut slots: Vec<[Option<usize>; 2]> = vec![[None, None]; n];
        for p in 0..n {
            if let Op::Neuron(neuron) = &self.ops[p] {
                if neuron.kind.spikes() {
                    slots[p][0] = Some(records.len());
                    records.push((format!("spk_{}", self.names[p]), p, Vec::with_capacity(steps * batch * sizes[p])));
                }
                slots[p][1] = Some(records.len());
                records.push((format!("mem_{}", self.names[p]), p, Vec::with_capacity(steps * batch * sizes[p])));
            }
        }
        let output_slots: Vec<usize> = self
            .outputs
            .iter()
            .map(|&p| {
                let name =
                    if self.outputs.len() == 1 { "output".to_string() } else { format!("output_{}", self.names[p]) };
                records.push((name, p, Vec::with_capacity(steps * batch * sizes[p])));
                records.len() - 1
            })
            .collect();
        let mut x = Vec::new();
        for t in 0..steps {
            for p in 0..n {
                x.clear();
                if p == self.source {
                    let s = sizes[p] * batch;
                    x.extend_from_slice(&input[t * s..(t + 1) * s]);
                } else {
                    x.resize(input_len(&self.ops[p], sizes[p]) * batch, 0.0);
                    for &(s, delayed) in &self.inputs[p] {
                        let from = if delayed { &previous[s] } else { &current[s] };
                        x.iter_mut().zip(from).for_each(|(a, b)| *a += b);
                    }
                }
                let y = &mut current[p];
                match &self.ops[p] {
                    Op::Source | Op::Identity => y.copy_from_slice(&x),
                    Op::Affine { weight, bias } => affine(weight, bias.as_ref(), &x, y, batch),
                    Op::Scale(a) => elementwise(&x, y, |i, v| v * a.at(i % a.len().max(1))),
                    Op::Threshold(a) => elementwise(&x, y, |i, v| if v > a.at(i % a.len().max(1)) { 1.0 } else { 0.0 }),
                    Op::Conv(c) => conv(c, &x, y, batch),
                    Op::Pool(pl) => pool(pl, &x, y, batch),
                    Op::Delay(steps_back) => {
                        let line = &mut delay_lines[p];
                        let len = line.len();
                        line[t % len].copy_from_slice(&x);
                        let per = sizes[p];
                        for (k, out) in y.iter_mut().enumerate() {
                            let d = steps_back[if steps_back.len() == 1 { 0 } else { k % per }];
                            *out = if d > t { 0.0 } else { line[(t - d) % len][k] };
                        }
                    }
                    Op::Neuron(neuron) => self.integrate(neuron, &mut states[p], &x, y, sizes[p]),
                }
                let [spk, mem] = slots[p];
                if let Some(r) = spk {
                    records[r].2.extend(current[p].iter().map(|&v| v as f32));
                }
                if let Some(r) = mem {
                    records[r].2.extend(states[p].v.iter().map(|&v| v as f32));
                }
            }
            for &r in &output_slots {
                let p = records[r].1;
                let values: Vec<f32> = current[p].iter().map(|&v| v as f32).collect();
                records[r].2.extend(values);
            }
            // Every node overwrites its whole output each step, so the old buffers can be reused.
            std::mem::swap(&mut previous, &mut current);
        }
        let arrays = records.into_iter().map(|(name, p, data)| (name, self.shapes[p].clone(), data)).collect();
        RunRecord { steps, batch, arrays }
    }

    fn integrate(&self, n: &Neuron, state: &mut NeuronState, x: &[f64], spikes: &mut [f64], size: usize) {
        let dt = self.dt;
        let get = |a: &Option<Array>, i: usize, default: f64| a.as_ref().map_or(default, |a| a.at(i));
        for (k, ((v, syn), &input)) in state.v.iter_mut().zip(state.i.iter_mut()).zip(x).enumerate() {
            let i = k % size;
            let r = n.r.at(i);
            let drive = if n.kind.has_synapse() {
                let tau_syn = get(&n.tau_syn, i, 1.0);
                *syn += dt / tau_syn * (-*syn + get(&n.w_in, i, 1.0) * input);
                *syn
            } else {
                input
            };
            if n.kind.leaks() {
                let tau = get(&n.tau_mem, i, 1.0);
                *v += dt / tau * (get(&n.v_leak, i, 0.0) - *v + r * drive);
            } else {
                *v += dt * r * drive;
            }
            spikes[k] = if n.kind.spikes() && *v > get(&n.v_threshold, i, f64::INFINITY) {
                *v = get(&n.v_reset, i, 0.0);
                1.0
            } else if n.kind.spikes() {
                0.0
            } else {
                *v
            };
        }
    }
}

/// Values a node takes per sample, given its output size.
fn input_len(op: &Op, output_size: usize) -> usize {
    match op {
        Op::Affine { weight, .. } => weight.shape[1],
        Op::Conv(c) => c.input.iter().product(),
        Op::Pool(pl) => pl.input.iter().product(),
        _ => output_size,
    }
}

#[derive(Default)]
struct NeuronState {
    v: Vec<f64>,
    i: Vec<f64>,
}

fn elementwise(x: &[f64], y: &mut [f64], f: impl Fn(usize, f64) -> f64) {
    for (k, (out, &v)) in y.iter_mut().zip(x).enumerate() {
        *out = f(k, v);
    }
}

fn affine(w: &Array, bias: Option<&Array>, x: &[f64], y: &mut [f64], batch: usize) {
    let (rows, cols) = (w.shape[0], w.shape[1]);
    for b in 0..batch {
        let xs = &x[b * cols..(b + 1) * cols];
        for (o, out) in y[b * rows..(b + 1) * rows].iter_mut().enumerate() {
            let row = &w.data[o * cols..(o + 1) * cols];
            *out = row.iter().zip(xs).map(|(a, b)| a * b).sum::<f64>() + bias.map_or(0.0, |b| b.data[o]);
        }
    }
}

fn conv(c: &Conv, x: &[f64], y: &mut [f64], batch: usize) {
    let [ci, h, w] = c.input;
    let [co, oh, ow] = c.output;
    let [kh, kw] = c.kernel;
    let (in_group, out_group) = (ci / c.groups, co / c.groups);
    let (insize, outsize) = (ci * h * w, co * oh * ow);
    for b in 0..batch {
        let xs = &x[b * insize..(b + 1) * insize];
        let ys = &mut y[b * outsize..(b + 1) * outsize];
        for o in 0..co {
            let g = o / out_group;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = c.bias.data[o];
                    for cg in 0..in_group {
                        let ch = g * in_group + cg;
                        for ky in 0..kh {
                            let iy = (oy * c.stride[0] + ky * c.dilation[0]) as isize - c.pad[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = (ox * c.stride[1] + kx * c.dilation[1]) as isize - c.pad[1] as isize;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                let weight = c.weight.data[((o * in_group + cg) * kh + ky) * kw + kx];
                                sum += weight * xs[(ch * h + iy as usize) * w + ix as usize];
                            }
                        }
                    }
                    ys[(o * oh + oy) * ow + ox] = sum;
                }
            }
        }
    }
}

fn pool(p: &Pool, x: &[f64], y: &mut [f64], batch: usize) {
    let [c, h, w] = p.input;
    let [_, oh, ow] = p.output;
    let [kh, kw] = p.kernel;
    let area = (kh * kw) as f64;
    let (insize, outsize) = (c * h * w, c * oh * ow);
    for b in 0..batch {
        let xs = &x[b * insize..(b + 1) * insize];
        let ys = &mut y[b * outsize..(b + 1) * outsize];
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = 0.0;
                    for ky in 0..kh {
                        let iy = (oy * p.stride[0] + ky) as isize - p.pad[0] as isize;
                        for kx in 0..kw {
                            let ix = (ox * p.stride[1] + kx) as isize - p.pad[1] as isize;
                            if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                sum += xs[(ch * h + iy as usize) * w + ix as usize];
                            }
                        }
                    }
                    ys[(ch * oh + oy) * ow + ox] = if p.average { sum / area } else { sum };
                }
            }
        }
    }
}
