//! NIR: graphs exported by snnTorch 1.0.0 and Norse 1.1.0 (tests/data/nir, made by
//! benches/peers/nir_peers.py) run to the frameworks' own spikes and membranes; the file layout
//! round-trips; bad graphs are refused by name with nothing written.

mod common;
use common::{ok, repo, snn};

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
    for name in names(&expected).into_iter().filter(|n| n.starts_with("spk_") || n.starts_with("mem_")) {
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
    let (shape, _) = dataset(&out, "output");
    assert_eq!(shape[..2], dataset(&expected, "input").0[..2]);
}

#[test]
fn snntorch_feed_forward_reproduced() {
    reproduces("snntorch_ff");
}

#[test]
fn snntorch_convolutional_reproduced() {
    reproduces("snntorch_conv");
}

#[test]
fn snntorch_recurrent_reproduced() {
    reproduces("snntorch_recurrent");
}

#[test]
fn snntorch_synaptic_reproduced() {
    reproduces("snntorch_synaptic");
}

#[test]
fn norse_feed_forward_reproduced() {
    reproduces("norse_ff");
}

/// Every fixture written by `nir.write` reads, writes and reads again to the same graph.
#[test]
fn file_layout_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in ["snntorch_ff", "snntorch_conv", "snntorch_recurrent", "snntorch_synaptic", "norse_ff"] {
        let graph = nir_file::read(Path::new(&repo(&format!("tests/data/nir/{fixture}.nir")))).unwrap();
        assert!(graph.nodes.len() >= 4 && !graph.edges.is_empty());
        let copy = dir.path().join(format!("{fixture}.nir"));
        nir_file::write(&copy, &graph).unwrap();
        assert_eq!(nir_file::read(&copy).unwrap(), graph, "{fixture}");
    }
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
