//! NIR: graphs exported by snnTorch 1.0.0 and Norse 1.1.0 (tests/data/nir, made by
//! benches/peers/nir_peers.py) run to the frameworks' own spikes and membranes; the file layout
//! round-trips; bad graphs are refused by name with nothing written.

mod common;
use common::{ok, repo, serial, snn};

use std::path::Path;

use snn::io::nir_file;
use snn::nir::graph::{Array, Graph, Neuron, NeuronKind, Node};

fn dataset(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let file = hdf5::File::open(path).unwrap();
    let ds = file.dataset(name).unwrap_or_else(|_| panic!("{}: no dataset {name}", path.display()));
    (ds.shape(), ds.read_raw().unwrap())
}

fn names(path: &Path) -> Vec<String> {
    hdf5::File::open(path).unwrap().member_names().unwrap()
}

/// Runs `snn nir run` on a fixture and compares every recorded array with the framework's.
fn reproduces(fixture: &str) {
    let dir = tempfile::tempdir().unwrap();
    let graph = repo(&format!("tests/data/nir/{fixture}.nir"));
    let expected = Path::new(&repo(&format!("tests/data/nir/{fixture}.h5"))).to_path_buf();
    let dt: Vec<f64> = hdf5::File::open(&expected).unwrap().dataset("dt").unwrap().read_raw().unwrap();
    let out = dir.path().join("out.h5");
    let summary = ok(&snn(
        &[
            "nir",
            "run",
            &graph,
            "--dt",
            &dt[0].to_string(),
            "--input",
            expected.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    ));
    assert!(summary.contains("spikes"), "{summary}");
    let mut compared = 0;
    let recorded = |n: &String| n.starts_with("spk_") || n.starts_with("mem_") || n.starts_with("output_");
    for name in names(&expected).into_iter().filter(recorded) {
        let (shape_a, a) = dataset(&expected, &name);
        let (shape_b, b) = dataset(&out, &name);
        assert_eq!(shape_a, shape_b, "{fixture} {name}");
        if name.starts_with("spk_") {
            let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
            assert!(a.contains(&1.0), "{fixture} {name}: the fixture should spike");
            assert_eq!(differ, 0, "{fixture} {name}: {differ} of {} spikes differ", a.len());
        } else {
            let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "{fixture} {name}: membranes differ by {worst}");
        }
        compared += 1;
    }
    assert!(compared >= 3, "{fixture}: only {compared} arrays compared");
    let output = names(&out).into_iter().find(|n| n.starts_with("output")).expect("an output is written");
    assert_eq!(dataset(&out, &output).0[..2], dataset(&expected, "input").0[..2]);
}

#[test]
fn snntorch_feed_forward_reproduced() {
    let _turn = serial();
    reproduces("snntorch_ff");
}

#[test]
fn snntorch_convolutional_reproduced() {
    let _turn = serial();
    reproduces("snntorch_conv");
}

#[test]
fn snntorch_recurrent_reproduced() {
    let _turn = serial();
    reproduces("snntorch_recurrent");
}

#[test]
fn snntorch_synaptic_reproduced() {
    let _turn = serial();
    reproduces("snntorch_synaptic");
}

/// Every node type of NIR 1.0 that the frameworks above do not make (IF, I, CubaLI, Linear,
/// Scale, Threshold, Conv1d with dilation, SumPool2d, AvgPool2d with padding, Delay, "same"
/// padding, several outputs, a nested graph with a cycle), against NIR's definitions written out
/// in NumPy by benches/peers/nir_peers.py.
#[test]
fn every_node_type_reproduced() {
    let _turn = serial();
    let graph = nir_file::read(Path::new(&repo("tests/data/nir/numpy_every_node.nir"))).unwrap();
    let mut types: Vec<&str> = graph.nodes.iter().map(|(_, n)| n.type_name()).collect();
    for (_, node) in &graph.nodes {
        if let Node::Graph(inner) = node {
            types.extend(inner.nodes.iter().map(|(_, n)| n.type_name()));
        }
    }
    for kind in [
        "Input",
        "Output",
        "Affine",
        "Linear",
        "Scale",
        "Threshold",
        "Conv1d",
        "Conv2d",
        "Flatten",
        "SumPool2d",
        "AvgPool2d",
        "Delay",
        "I",
        "IF",
        "LIF",
        "CubaLI",
        "NIRGraph",
    ] {
        assert!(types.contains(&kind), "the fixture lacks a {kind} node");
    }
    reproduces("numpy_every_node");
}

#[test]
fn norse_feed_forward_reproduced() {
    let _turn = serial();
    reproduces("norse_ff");
}

/// Every fixture written by `nir.write` reads, writes and reads again to the same graph.
#[test]
fn file_layout_round_trips() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    for fixture in
        ["snntorch_ff", "snntorch_conv", "snntorch_recurrent", "snntorch_synaptic", "norse_ff", "numpy_every_node"]
    {
        let graph = nir_file::read(Path::new(&repo(&format!("tests/data/nir/{fixture}.nir")))).unwrap();
        assert!(graph.nodes.len() >= 4 && !graph.edges.is_empty());
        let copy = dir.path().join(format!("{fixture}.nir"));
        nir_file::write(&copy, &graph).unwrap();
        assert_eq!(nir_file::read(&copy).unwrap(), graph, "{fixture}");
        // The same groups and datasets, with the same type strings, as nir.write made.
        let original = hdf5::File::open(repo(&format!("tests/data/nir/{fixture}.nir"))).unwrap();
        let ours = hdf5::File::open(&copy).unwrap();
        assert_eq!(layout(&original, ""), layout(&ours, ""), "{fixture}");
    }
}

/// Every member path of a NIR file with, for `type` datasets, the type string.
fn layout(group: &hdf5::Group, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for name in group.member_names().unwrap() {
        let path = format!("{prefix}/{name}");
        if let Ok(g) = group.group(&name) {
            out.extend(layout(&g, &path));
        } else if name == "type" {
            let t: hdf5::types::VarLenUnicode = group.dataset(&name).unwrap().read_scalar().unwrap();
            out.push(format!("{path} = {t}"));
        } else {
            out.push(path);
        }
    }
    out
}

fn lif(n: usize) -> Node {
    Node::Neuron(Neuron {
        kind: NeuronKind::Lif,
        tau_mem: Some(Array::filled(&[n], 1e-3)),
        tau_syn: None,
        r: Array::filled(&[n], 1.0),
        v_leak: Some(Array::filled(&[n], 0.0)),
        v_threshold: Some(Array::filled(&[n], 1.0)),
        v_reset: Some(Array::filled(&[n], 0.0)),
        w_in: None,
    })
}

fn linear(rows: usize, cols: usize) -> Node {
    Node::Linear { weight: Array::new(vec![rows, cols], vec![0.5; rows * cols]) }
}

fn graph(nodes: Vec<(&str, Node)>, edges: &[(&str, &str)]) -> Graph {
    Graph {
        nodes: nodes.into_iter().map(|(n, node)| (n.to_string(), node)).collect(),
        edges: edges.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
    }
}

/// Writes `g`, runs it, and asserts the run fails with `needle` in the message and writes nothing.
fn refused(g: &Graph, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.nir");
    nir_file::write(&file, g).unwrap();
    refused_file(&file, needle);
}

fn refused_file(file: &Path, needle: &str) {
    let dir = file.parent().unwrap();
    let out = dir.join("out.h5");
    let input = repo("tests/data/nir/snntorch_ff.h5");
    let o = snn(
        &["nir", "run", file.to_str().unwrap(), "--dt", "1e-4", "--input", &input, "--out", out.to_str().unwrap()],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "accepted: {needle}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!out.exists(), "wrote output for a bad graph");
    assert_eq!(std::fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().path() != file).count(), 0);
}

#[test]
fn bad_graphs_are_refused_by_name() {
    let _turn = serial();
    let input = || ("input", Node::Input { shape: vec![12] });
    let output = |n| ("output", Node::Output { shape: vec![n] });
    // An edge to a node that does not exist.
    refused(
        &graph(vec![input(), ("w", linear(4, 12)), output(4)], &[("input", "w"), ("w", "out")]),
        "no node named 'out'",
    );
    // A cycle through stateless nodes only.
    refused(
        &graph(
            vec![input(), ("a", linear(12, 12)), ("b", linear(12, 12)), output(12)],
            &[("input", "a"), ("a", "b"), ("b", "a"), ("b", "output")],
        ),
        "has no stateful node",
    );
    // Shapes that do not fit: 12 inputs into a weight with 10 columns.
    refused(
        &graph(
            vec![input(), ("w", linear(4, 10)), ("lif", lif(4)), output(4)],
            &[("input", "w"), ("w", "lif"), ("lif", "output")],
        ),
        "node 'w'",
    );
    // A neuron layer of the wrong size.
    refused(
        &graph(
            vec![input(), ("w", linear(4, 12)), ("lif", lif(5)), output(5)],
            &[("input", "w"), ("w", "lif"), ("lif", "output")],
        ),
        "node 'lif'",
    );
}

#[test]
fn bad_files_are_refused() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    // Not HDF5 at all.
    let text = dir.path().join("text.nir");
    std::fs::write(&text, "not a graph").unwrap();
    refused_file(&text, "not an HDF5 file");
    std::fs::remove_file(&text).unwrap();
    // An unknown node type, written as nir.write would.
    let unknown = dir.path().join("unknown.nir");
    nir_file::write(&unknown, &graph(vec![("input", Node::Input { shape: vec![12] })], &[])).unwrap();
    {
        let file = hdf5::File::open_rw(&unknown).unwrap();
        let node = file.group("node/nodes").unwrap().create_group("mystery").unwrap();
        let kind: hdf5::types::VarLenUnicode = "Spiral".parse().unwrap();
        node.new_dataset::<hdf5::types::VarLenUnicode>().create("type").unwrap().write_scalar(&kind).unwrap();
    }
    refused_file(&unknown, "node 'mystery': unknown node type \"Spiral\"");
}

// ---------------------------------------------------------------- snn models to NIR and back

use nalgebra::DMatrix;
use snn::models::{LayerNet, Mode};
use snn::nir::run::Program;
use snn::spec::{Network, Training};

fn stack(layers: &str) -> (Network, Training) {
    let text = format!(
        "Network(name: \"t\", dt_ms: 1.0, inputs: [(name: \"x\", size: 64, shape: (1, 8, 8))], layers: [{layers}], \
         training: (steps: 6, encoder: Current))"
    );
    let network: Network = snn::spec::parse_ron(&text, Path::new("test.ron")).unwrap();
    let training = network.training.clone().unwrap();
    (network, training)
}

/// Inputs in [0, 1], one column per sample, from a fixed sequence.
fn inputs(samples: usize) -> DMatrix<f32> {
    let mut state = 12345u64;
    DMatrix::from_fn(64, samples, |_, _| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    })
}

const SPIKING: &str = "Conv2d(filters: 4, kernel: 3, padding: 1), Lif(tau_mem_ms: 3.0, threshold: 0.3, reset: Zero, \
    learn_tau: PerChannel), MaxPool(size: 2), Flatten, Dense(units: 16), CubaLif(tau_syn_ms: 2.0, tau_mem_ms: 4.0, \
    threshold: 0.2, reset: Zero, recurrent: AllToAll), Dense(units: 5), Li(tau_mem_ms: 10.0)";

/// Gives every learnable decay its own value per channel, so the export carries real variety.
fn vary_decays(net: &mut LayerNet<f32>) {
    for (k, p) in net.params_mut().into_iter().enumerate() {
        if p.ncols() == 1 && p.nrows() == 4 && k == 2 {
            p.iter_mut().enumerate().for_each(|(i, w)| *w += 0.3 * i as f32);
        }
    }
}

/// export -> file -> import gives the same weights and the same values in every layer, bit for bit.
#[test]
fn export_import_round_trip_is_exact() {
    let _turn = serial();
    let (network, training) = stack(SPIKING);
    let mut net = LayerNet::<f32>::from_spec(&network, &training, 7).unwrap();
    vary_decays(&mut net);
    let exported = snn::models::nir::export(&net, 1e-4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.nir");
    nir_file::write(&file, &exported.graph).unwrap();
    let imported = snn::models::nir::import(&nir_file::read(&file).unwrap(), "m", 1e-4, 6).unwrap();
    let mut copy =
        LayerNet::<f32>::from_spec(&imported.network, imported.network.training.as_ref().unwrap(), 1).unwrap();
    assert_eq!(copy.layers.len(), net.layers.len());
    for (slot, value) in copy.params_mut().into_iter().zip(&imported.params) {
        slot.copy_from(value);
    }
    for (a, b) in net.params().iter().zip(copy.params()) {
        if a.ncols() > 1 {
            assert_eq!(*a, b, "a weight changed on the way");
        }
    }
    let x = inputs(12);
    let (ours, theirs) =
        (net.forward(x.clone(), Mode::Eval { soft: false }), copy.forward(x, Mode::Eval { soft: false }));
    for (layer, (a, b)) in ours.values.iter().zip(&theirs.values).enumerate() {
        assert_eq!(a, b, "layer {layer}'s output differs after the round trip");
    }
    let fired: f32 = ours.values[2].iter().sum::<f32>() + ours.values[6].iter().sum::<f32>();
    assert!(fired > 10.0, "the test net should spike ({fired} spikes)");
}

/// The exported graph, run by the NIR interpreter in f64, gives the stack's spikes and readout.
#[test]
fn exported_graph_runs_like_the_stack() {
    let _turn = serial();
    let (network, training) = stack(&format!(
        "Conv2d(filters: 4, kernel: 3, padding: 1), BatchNorm(), {}",
        &SPIKING[SPIKING.find("Lif").unwrap()..]
    ));
    let mut net = LayerNet::<f32>::from_spec(&network, &training, 3).unwrap();
    // Batch norm with statistics of its own, so that folding it is tested.
    for (k, b) in net.buffers_mut().into_iter().enumerate() {
        b.iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = if k == 0 { 0.1 * i as f32 - 0.1 } else { 0.5 + 0.2 * i as f32 });
    }
    let exported = snn::models::nir::export(&net, 1e-4).unwrap();
    assert!(exported.graph.node("1").is_none(), "batch norm should be folded away");
    let (samples, steps) = (12, net.steps);
    let x = inputs(samples);
    let trace = net.forward(x.clone(), Mode::Eval { soft: false });
    let program = Program::compile(&exported.graph, 1e-4).unwrap();
    let mut repeated = Vec::new();
    for _ in 0..steps {
        repeated.extend(x.iter().map(|&v| v as f64));
    }
    let record = program.run(&repeated, steps, samples);
    let array = |name: &str| &record.arrays.iter().find(|(n, ..)| n == name).unwrap_or_else(|| panic!("no {name}")).2;
    // Layer 2 (Lif) and layer 6 (CubaLif): spikes; layer 8 (Li): the readout membrane.
    for (layer, name) in [(2, "spk_2"), (6, "spk_6")] {
        let stack = trace.values[layer + 1].as_slice();
        let nir = array(name);
        let differ = stack.iter().zip(nir).filter(|(a, b)| **a != **b).count();
        assert!(stack.iter().sum::<f32>() > 10.0, "layer {layer} should spike");
        assert!(differ * 1000 <= stack.len(), "layer {layer}: {differ} of {} spikes differ", stack.len());
    }
    let readout = trace.values[9].as_slice();
    let worst = readout.iter().zip(array("mem_8")).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "readout membranes differ by {worst}");
}

/// Graphs from snnTorch and Norse imported as layer stacks (the RLeaky loop as a recurrent Lif)
/// run to every one of the frameworks' spikes. A graph with nodes the stack lacks is refused by
/// node.
#[test]
fn imported_framework_graphs_run_in_the_stack() {
    let _turn = serial();
    for fixture in ["snntorch_ff", "snntorch_conv", "snntorch_recurrent", "snntorch_synaptic", "norse_ff"] {
        let graph = nir_file::read(Path::new(&repo(&format!("tests/data/nir/{fixture}.nir")))).unwrap();
        let expected = Path::new(&repo(&format!("tests/data/nir/{fixture}.h5"))).to_path_buf();
        let dt: Vec<f64> = hdf5::File::open(&expected).unwrap().dataset("dt").unwrap().read_raw().unwrap();
        let (shape, input) = dataset(&expected, "input");
        let (steps, batch) = (shape[0], shape[1]);
        let imported = snn::models::nir::import(&graph, fixture, dt[0], steps as u32).unwrap();
        let training = imported.network.training.clone().unwrap();
        let mut net = LayerNet::<f32>::from_spec(&imported.network, &training, 1).unwrap();
        for (slot, value) in net.params_mut().into_iter().zip(&imported.params) {
            slot.copy_from(value);
        }
        // The fixtures' input changes from step to step: every layer runs on every step.
        net.encoder = snn::data::encode::Encoder::Rate { gain: 1.0 };
        let x = DMatrix::from_column_slice(input.len() / (steps * batch), steps * batch, &input);
        let trace = net.forward(x, Mode::Eval { soft: false });
        let mut compared = 0;
        for (layer, values) in trace.values[1..].iter().enumerate() {
            // snnTorch names a flattened RLeaky's neuron `<index>.lif`.
            let all = names(&expected);
            let Some(name) = [format!("spk_{layer}"), format!("spk_{layer}.lif")].into_iter().find(|n| all.contains(n))
            else {
                continue;
            };
            let (_, theirs) = dataset(&expected, &name);
            let differ = values.iter().zip(&theirs).filter(|(a, b)| a != b).count();
            assert_eq!(differ, 0, "{fixture} {name}: {differ} of {} spikes differ", theirs.len());
            compared += 1;
        }
        assert_eq!(compared, 2 - (fixture == "norse_ff") as usize, "{fixture}: spiking layers compared");
    }
    // snnTorch's RLeaky with a recurrent bias: NIR delivers nothing around the loop at step 0
    // and W s + b after, which a layer cannot hold; refused by name.
    let mut biased = nir_file::read(Path::new(&repo("tests/data/nir/snntorch_recurrent.nir"))).unwrap();
    for (name, node) in &mut biased.nodes {
        if let (true, Node::Affine { bias, .. }) = (name == "1.w_rec", node) {
            bias.data[0] = 0.5;
        }
    }
    let err = snn::models::nir::import(&biased, "b", 1e-4, 10).err().expect("a loop with a bias is refused");
    assert!(err.contains("node '1.w_rec': a recurrent loop's bias must be 0"), "{err}");
    let every = nir_file::read(Path::new(&repo("tests/data/nir/numpy_every_node.nir"))).unwrap();
    let err = snn::models::nir::import(&every, "e", 1e-3, 10).err().expect("a graph the stack cannot hold is refused");
    assert!(err.starts_with("node '"), "{err}");
}

/// A population chain (as networks/fashion_snn.ron, smaller, hard reset, a projection onto the
/// hidden population itself), compiled onto the stack as `snn train` does, exported to NIR,
/// runs in the interpreter to the stack's spikes and readout membranes.
#[test]
fn exported_population_chain_runs_like_the_chain() {
    let _turn = serial();
    let text = "Network(name: \"chain\", dt_ms: 1.0, inputs: [(name: \"x\", size: 64)], populations: [\
        (name: \"hidden\", size: 30, neuron: Lif(tau_mem_ms: 8.0, v_rest: 0.0, v_threshold: 1.0, v_reset: 0.0, reset: Hard)), \
        (name: \"readout\", size: 4, neuron: Lif(tau_mem_ms: 20.0, v_rest: 0.0, v_threshold: 1.0, v_reset: 0.0))], \
        projections: [(from: \"x\", to: \"hidden\", connect: AllToAll, weight: Uniform(low: -0.2, high: 0.6), synapse: Instantaneous), \
        (from: \"hidden\", to: \"hidden\", connect: AllToAll, weight: Uniform(low: -0.2, high: 0.2), synapse: Instantaneous, allow_autapses: false), \
        (from: \"hidden\", to: \"readout\", connect: AllToAll, weight: Uniform(low: -0.3, high: 0.3), synapse: Instantaneous)], \
        training: (steps: 15, encoder: Current))";
    let network: Network = snn::spec::parse_ron(text, Path::new("chain.ron")).unwrap();
    let training = network.training.clone().unwrap();
    let mut net = LayerNet::<f32>::from_spec(&network, &training, 5).unwrap();
    let labels: Vec<&str> = net.layers.iter().map(|l| l.label.as_str()).collect();
    assert_eq!(labels, ["x -> hidden", "hidden", "hidden -> readout", "readout"]);
    let exported = snn::models::nir::export(&net, 1e-3).unwrap();
    let (samples, steps) = (12, net.steps);
    let x = inputs(samples);
    let trace = net.forward(x.clone(), Mode::Eval { soft: false });
    let mut repeated = Vec::new();
    for _ in 0..steps {
        repeated.extend(x.iter().map(|&v| v as f64));
    }
    let record = Program::compile(&exported.graph, 1e-3).unwrap().run(&repeated, steps, samples);
    let array = |name: &str| &record.arrays.iter().find(|(n, ..)| n == name).unwrap_or_else(|| panic!("no {name}")).2;
    let ours = trace.values[2].as_slice();
    let theirs = array("spk_1");
    let differ = ours.iter().zip(theirs).filter(|(a, b)| **a != **b).count();
    assert!(ours.iter().sum::<f32>() > 50.0, "the hidden population should fire");
    assert!(differ * 1000 <= ours.len(), "{differ} of {} hidden spikes differ", ours.len());
    let readout = trace.values[4].as_slice();
    let worst = readout.iter().zip(array("mem_3")).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "readout membranes differ by {worst}");
}

/// Graphs imported from snnTorch (feed-forward, recurrent RLeaky, synaptic) run in the engine
/// (`snn nir import`, then `snn simulate --checkpoint` with the fixture's input as spike times)
/// to every spike of snnTorch's own run, each layer one engine step later than the one before.
#[test]
fn imported_framework_graphs_simulate_in_the_engine() {
    let _turn = serial();
    for fixture in ["snntorch_ff", "snntorch_recurrent", "snntorch_synaptic"] {
        let dir = tempfile::tempdir().unwrap();
        let expected = Path::new(&repo(&format!("tests/data/nir/{fixture}.h5"))).to_path_buf();
        let (shape, input) = dataset(&expected, "input");
        let (steps, batch, inputs) = (shape[0], shape[1], shape[2]);
        let imported = dir.path().join("imported");
        let graph = repo(&format!("tests/data/nir/{fixture}.nir"));
        let steps_arg = steps.to_string();
        let args =
            ["nir", "import", &graph, "--dt", "1e-4", "--steps", &steps_arg, "--out", imported.to_str().unwrap()];
        ok(&snn(&args, None));
        let mut spiking: Vec<String> = names(&expected).into_iter().filter(|n| n.starts_with("spk_")).collect();
        spiking.sort();
        for b in 0..batch {
            // Input value at (step t, sample b, input i), as the fixture holds it (T x B x inputs).
            let fired = (0..steps).flat_map(|t| (0..inputs).map(move |i| (t, i)));
            let fired: Vec<(usize, usize)> =
                fired.filter(|&(t, i)| input[(t * batch + b) * inputs + i] != 0.0).collect();
            let indices: Vec<String> = fired.iter().map(|(_, i)| i.to_string()).collect();
            let times: Vec<String> = fired.iter().map(|(t, _)| format!("{:.1}", *t as f64 * 0.1)).collect();
            let stimulus = dir.path().join(format!("input{b}.ron"));
            let text = format!(
                "Stimulus(sources: [(name: \"input\", size: {inputs}, kind: SpikeTimes(indices: [{}], times_ms: [{}]))])",
                indices.join(", "),
                times.join(", ")
            );
            std::fs::write(&stimulus, text).unwrap();
            let out = dir.path().join(format!("sim{b}"));
            let network = imported.join("network.ron");
            let checkpoint = imported.join("checkpoint.h5");
            ok(&snn(
                &[
                    "simulate",
                    network.to_str().unwrap(),
                    "--stimulus",
                    stimulus.to_str().unwrap(),
                    "--checkpoint",
                    checkpoint.to_str().unwrap(),
                    "--no-figures",
                    "--out",
                    out.to_str().unwrap(),
                ],
                None,
            ));
            let recording = hdf5::File::open(out.join("spikes.h5")).unwrap();
            let mut populations = recording.group("spikes").unwrap().member_names().unwrap();
            populations.retain(|p| p != "input");
            populations
                .sort_by_key(|p| p.trim_start_matches("layer").split('_').next().unwrap().parse::<usize>().unwrap());
            assert_eq!(populations.len(), spiking.len(), "{fixture}: {populations:?}");
            for (k, (population, name)) in populations.iter().zip(&spiking).enumerate() {
                let (shape, theirs) = dataset(&expected, name);
                let n = shape[2];
                let group = recording.group(&format!("spikes/{population}")).unwrap();
                let times: Vec<f64> = group.dataset("timestamps").unwrap().read_raw().unwrap();
                let ids: Vec<u64> = group.dataset("node_ids").unwrap().read_raw().unwrap();
                let mut ours = vec![0.0f32; steps * n];
                for (&time, &id) in times.iter().zip(&ids) {
                    // Layer k computes step t in the engine's step t + k, stamped at its end.
                    let t = (time / 0.1).round() as usize - k - 1;
                    if t < steps {
                        ours[t * n + id as usize] = 1.0;
                    }
                }
                let theirs: Vec<f32> = (0..steps)
                    .flat_map(|t| (0..n).map(move |j| (t, j)))
                    .map(|(t, j)| theirs[(t * batch + b) * n + j])
                    .collect();
                assert!(theirs.contains(&1.0), "{fixture} {name} sample {b}: the fixture should spike");
                let differ = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
                assert_eq!(differ, 0, "{fixture} {name} sample {b}: {differ} of {} spikes differ", theirs.len());
            }
        }
    }
}
