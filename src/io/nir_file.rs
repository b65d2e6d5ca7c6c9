//! NIR files (the Neuromorphic Intermediate Representation, `nir.write` / `nir.read` of nir
//! 1.0): HDF5 with a root dataset `version` and the graph in group `node`. A graph is a group
//! with `type` = "NIRGraph", a group `nodes` holding one group per node, and `edges`, an E x 2
//! array of names. A node is a group with a `type` string and one dataset per field; no
//! attributes. Floats may be f32 or f64, integers i64, strings variable-length UTF-8.

use std::path::Path;

use hdf5::types::{TypeDescriptor, VarLenAscii, VarLenUnicode};

use super::atomic::write_atomically;
use super::hdf5_util::text;
use crate::error::{Error, Result};
use crate::nir::graph::{Array, Graph, Neuron, NeuronKind, Node, Padding};
use crate::nir::run::RunRecord;

/// The NIR version this module reads and writes (checked against nir 1.0.8).
pub const NIR_VERSION: &str = "1.0.8";

/// Reads a NIR file; errors name the file and the node (with its path through subgraphs).
pub fn read(path: &Path) -> Result<Graph> {
    let data = |message: String| Error::Data { path: path.to_path_buf(), message };
    let file = open(path)?;
    let root = file.group("node").map_err(|_| data("no group `node`: not a NIR file".into()))?;
    match read_node(&root, "").map_err(data)? {
        Node::Graph(g) => Ok(g),
        other => Err(data(format!("the root node is a {}, not a NIRGraph", other.type_name()))),
    }
}

/// Opens an HDF5 file for reading: a missing file and a file that is not HDF5 are told apart.
fn open(path: &Path) -> Result<hdf5::File> {
    if !path.exists() {
        return Err(Error::Read { path: path.to_path_buf(), source: std::io::ErrorKind::NotFound.into() });
    }
    hdf5::File::open(path)
        .map_err(|e| Error::Data { path: path.to_path_buf(), message: format!("not an HDF5 file ({e})") })
}

fn string(ds: &hdf5::Dataset) -> Result<String, String> {
    ds.read_scalar::<VarLenUnicode>()
        .map(|s| s.to_string())
        .or_else(|_| ds.read_scalar::<VarLenAscii>().map(|s| s.to_string()))
        .map_err(|e| e.to_string())
}

fn strings(ds: &hdf5::Dataset) -> Result<Vec<String>, String> {
    ds.read_raw::<VarLenUnicode>()
        .map(|v| v.iter().map(|s| s.to_string()).collect())
        .or_else(|_| ds.read_raw::<VarLenAscii>().map(|v| v.iter().map(|s| s.to_string()).collect()))
        .map_err(|e| e.to_string())
}

fn is_string(ds: &hdf5::Dataset) -> bool {
    matches!(
        ds.dtype().and_then(|t| t.to_descriptor()),
        Ok(TypeDescriptor::VarLenUnicode | TypeDescriptor::VarLenAscii | TypeDescriptor::FixedAscii(_))
            | Ok(TypeDescriptor::FixedUnicode(_))
    )
}

/// Field access for one node group, with errors naming the node and field.
struct Fields<'a> {
    group: &'a hdf5::Group,
    node: &'a str,
}

impl Fields<'_> {
    fn has(&self, name: &str) -> bool {
        self.group.link_exists(name)
    }

    fn dataset(&self, name: &str) -> Result<hdf5::Dataset, String> {
        self.group.dataset(name).map_err(|_| format!("node '{}': missing field `{name}`", self.node))
    }

    fn array(&self, name: &str) -> Result<Array, String> {
        let ds = self.dataset(name)?;
        let data =
            ds.read_raw::<f64>().map_err(|e| format!("node '{}': field `{name}` is not numeric ({e})", self.node))?;
        if let Some(bad) = data.iter().find(|v| !v.is_finite()) {
            return Err(format!("node '{}': field `{name}` holds {bad}", self.node));
        }
        Ok(Array::new(ds.shape(), data))
    }

    fn optional(&self, name: &str) -> Result<Option<Array>, String> {
        if self.has(name) { self.array(name).map(Some) } else { Ok(None) }
    }

    fn ints(&self, name: &str) -> Result<Vec<i64>, String> {
        let ds = self.dataset(name)?;
        ds.read_raw::<i64>().map_err(|e| format!("node '{}': field `{name}` is not integer ({e})", self.node))
    }

    fn sizes(&self, name: &str) -> Result<Vec<usize>, String> {
        self.ints(name)?
            .into_iter()
            .map(|v| usize::try_from(v).map_err(|_| format!("node '{}': field `{name}` holds {v}", self.node)))
            .collect()
    }

    /// A per-dimension field written either as one value or one per spatial dimension.
    fn per_dim(&self, name: &str, dims: usize) -> Result<Vec<usize>, String> {
        let v = self.sizes(name)?;
        match v.len() {
            1 => Ok(vec![v[0]; dims]),
            n if n == dims => Ok(v),
            n => Err(format!("node '{}': field `{name}` has {n} values for {dims} dimensions", self.node)),
        }
    }

    fn int(&self, name: &str) -> Result<i64, String> {
        let v = self.ints(name)?;
        match v[..] {
            [x] => Ok(x),
            _ => Err(format!("node '{}': field `{name}` should be one integer, has {}", self.node, v.len())),
        }
    }
}

fn read_node(group: &hdf5::Group, name: &str) -> Result<Node, String> {
    let f = Fields { group, node: if name.is_empty() { "<root>" } else { name } };
    let type_name = string(&f.dataset("type")?).map_err(|e| format!("node '{}': field `type`: {e}", f.node))?;
    let neuron = NeuronKind::ALL.into_iter().find(|k| k.type_name() == type_name);
    if let Some(kind) = neuron {
        return read_neuron(&f, kind).map(Node::Neuron);
    }
    Ok(match type_name.as_str() {
        "NIRGraph" => Node::Graph(read_graph(group, name)?),
        "Input" => Node::Input { shape: f.sizes("shape")? },
        "Output" => Node::Output { shape: f.sizes("shape")? },
        "Affine" => Node::Affine { weight: f.array("weight")?, bias: f.array("bias")? },
        "Linear" => Node::Linear { weight: f.array("weight")? },
        "Scale" => Node::Scale { scale: f.array("scale")? },
        "Threshold" => Node::Threshold { threshold: f.array("threshold")? },
        "Conv1d" | "Conv2d" => {
            let spatial = if type_name == "Conv1d" { 1 } else { 2 };
            let weight = f.array("weight")?;
            if weight.shape.len() != spatial + 2 {
                return Err(format!(
                    "node '{}': {type_name} weight has shape {:?}, expected {} dimensions",
                    f.node,
                    weight.shape,
                    spatial + 2
                ));
            }
            let padding_ds = f.dataset("padding")?;
            let padding = if is_string(&padding_ds) {
                match string(&padding_ds)?.as_str() {
                    "same" => Padding::Same,
                    "valid" => Padding::Valid,
                    other => return Err(format!("node '{}': padding \"{other}\" is neither same nor valid", f.node)),
                }
            } else {
                Padding::Explicit(f.per_dim("padding", spatial)?)
            };
            let input_shape = if f.has("input_shape") && f.dataset("input_shape")?.size() > 0 {
                Some(f.per_dim("input_shape", spatial)?)
            } else {
                None
            };
            Node::Conv {
                spatial,
                bias: f.array("bias")?,
                input_shape,
                stride: f.per_dim("stride", spatial)?,
                padding,
                dilation: f.per_dim("dilation", spatial)?,
                groups: f.int("groups")?.max(1) as usize,
                weight,
            }
        }
        "Flatten" => Node::Flatten {
            start_dim: f.int("start_dim")?,
            end_dim: f.int("end_dim")?,
            input_type: if f.has("input_type") { Some(f.sizes("input_type")?) } else { None },
        },
        "SumPool2d" | "AvgPool2d" => Node::Pool {
            average: type_name == "AvgPool2d",
            kernel: f.per_dim("kernel_size", 2)?,
            stride: f.per_dim("stride", 2)?,
            padding: f.per_dim("padding", 2)?,
        },
        "Delay" => Node::Delay { delay: f.array("delay")? },
        other => return Err(format!("node '{}': unknown node type \"{other}\"", f.node)),
    })
}

fn read_neuron(f: &Fields, kind: NeuronKind) -> Result<Neuron, String> {
    let tau_name = if kind.has_synapse() { "tau_mem" } else { "tau" };
    let need = |name: &str| -> Result<Option<Array>, String> {
        if kind.fields().contains(&name) && name != "v_reset" && name != "w_in" {
            f.array(name).map(Some)
        } else if kind.fields().contains(&name) {
            f.optional(name)
        } else {
            Ok(None)
        }
    };
    let neuron = Neuron {
        kind,
        tau_mem: need(tau_name)?,
        tau_syn: need("tau_syn")?,
        r: f.array("r")?,
        v_leak: need("v_leak")?,
        v_threshold: need("v_threshold")?,
        v_reset: need("v_reset")?,
        w_in: need("w_in")?,
    };
    let size = neuron.size();
    for (field, a) in neuron.params() {
        if a.len() != size && a.len() != 1 {
            return Err(format!("node '{}': field `{field}` has {} values, others {size}", f.node, a.len()));
        }
        if field.starts_with("tau")
            && let Some(bad) = a.data.iter().find(|&&t| t <= 0.0)
        {
            return Err(format!("node '{}': field `{field}` holds {bad}, a time constant must be positive", f.node));
        }
    }
    Ok(neuron)
}

fn read_graph(group: &hdf5::Group, name: &str) -> Result<Graph, String> {
    let label = if name.is_empty() { "<root>".to_string() } else { name.to_string() };
    let nodes_group = group.group("nodes").map_err(|_| format!("graph '{label}': no group `nodes`"))?;
    let mut nodes = Vec::new();
    for member in nodes_group.member_names().map_err(|e| e.to_string())? {
        let child =
            nodes_group.group(&member).map_err(|_| format!("graph '{label}': `nodes/{member}` is not a group"))?;
        let path = if name.is_empty() { member.clone() } else { format!("{name}.{member}") };
        nodes.push((member, read_node(&child, &path)?));
    }
    let edges = if group.link_exists("edges") {
        let ds = group.dataset("edges").map_err(|e| e.to_string())?;
        let names = strings(&ds).map_err(|e| format!("graph '{label}': edges: {e}"))?;
        if names.len() % 2 != 0 {
            return Err(format!("graph '{label}': edges hold {} names, not pairs", names.len()));
        }
        names.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect()
    } else {
        Vec::new()
    };
    Ok(Graph { nodes, edges })
}

/// Writes `graph` as a NIR file, atomically; `nir.read` reads it.
pub fn write(path: &Path, graph: &Graph) -> Result<()> {
    write_atomically(path, |tmp| write_file(tmp, graph).map_err(|e| Error::write(path, e)))
}

fn write_file(path: &Path, graph: &Graph) -> Result<(), String> {
    let file = hdf5::File::create(path).map_err(|e| e.to_string())?;
    write_string(&file, "version", NIR_VERSION)?;
    write_graph(&file.create_group("node").map_err(|e| e.to_string())?, graph)?;
    file.close().map_err(|e| e.to_string())
}

fn write_string(group: &hdf5::Group, name: &str, value: &str) -> Result<(), String> {
    group
        .new_dataset::<VarLenUnicode>()
        .create(name)
        .and_then(|d| d.write_scalar(&text(value).expect("node names and types are plain text")))
        .map_err(|e| e.to_string())
}

fn write_array(group: &hdf5::Group, name: &str, a: &Array) -> Result<(), String> {
    let builder = group.new_dataset::<f64>().shape(a.shape.clone());
    // Compressed like nir.write's arrays: per-neuron parameters repeat one value per layer.
    let builder = if a.len() >= 64 && !a.shape.is_empty() { builder.deflate(4) } else { builder };
    let ds = builder.create(name).map_err(|e| e.to_string())?;
    ds.write_raw(&a.data).map_err(|e| e.to_string())
}

fn write_ints(group: &hdf5::Group, name: &str, values: &[usize]) -> Result<(), String> {
    let v: Vec<i64> = values.iter().map(|&x| x as i64).collect();
    let ds = group.new_dataset::<i64>().shape(v.len()).create(name).map_err(|e| e.to_string())?;
    ds.write_raw(&v).map_err(|e| e.to_string())
}

fn write_int(group: &hdf5::Group, name: &str, value: i64) -> Result<(), String> {
    group.new_dataset::<i64>().create(name).and_then(|d| d.write_scalar(&value)).map_err(|e| e.to_string())
}

fn write_graph(group: &hdf5::Group, graph: &Graph) -> Result<(), String> {
    write_string(group, "type", "NIRGraph")?;
    let nodes = group.create_group("nodes").map_err(|e| e.to_string())?;
    for (name, node) in &graph.nodes {
        let g = nodes.create_group(name).map_err(|e| e.to_string())?;
        write_node(&g, node)?;
    }
    let names: Vec<VarLenUnicode> =
        graph.edges.iter().flat_map(|(a, b)| [a, b]).map(|s| text(s)).collect::<Result<_, _>>()?;
    let ds = group
        .new_dataset::<VarLenUnicode>()
        .shape((graph.edges.len(), 2))
        .create("edges")
        .map_err(|e| e.to_string())?;
    if !names.is_empty() {
        ds.write_raw(&names).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn write_node(g: &hdf5::Group, node: &Node) -> Result<(), String> {
    if let Node::Graph(inner) = node {
        return write_graph(g, inner);
    }
    write_string(g, "type", node.type_name())?;
    match node {
        Node::Input { shape } | Node::Output { shape } => write_ints(g, "shape", shape),
        Node::Affine { weight, bias } => {
            write_array(g, "weight", weight)?;
            write_array(g, "bias", bias)
        }
        Node::Linear { weight } => write_array(g, "weight", weight),
        Node::Scale { scale } => write_array(g, "scale", scale),
        Node::Threshold { threshold } => write_array(g, "threshold", threshold),
        Node::Conv { weight, bias, input_shape, stride, padding, dilation, groups, .. } => {
            write_array(g, "weight", weight)?;
            write_array(g, "bias", bias)?;
            if let Some(s) = input_shape {
                write_ints(g, "input_shape", s)?;
            }
            write_ints(g, "stride", stride)?;
            match padding {
                Padding::Explicit(p) => write_ints(g, "padding", p)?,
                Padding::Same => write_string(g, "padding", "same")?,
                Padding::Valid => write_string(g, "padding", "valid")?,
            }
            write_ints(g, "dilation", dilation)?;
            write_int(g, "groups", *groups as i64)
        }
        Node::Flatten { start_dim, end_dim, input_type } => {
            write_int(g, "start_dim", *start_dim)?;
            write_int(g, "end_dim", *end_dim)?;
            match input_type {
                Some(t) => write_ints(g, "input_type", t),
                None => Ok(()),
            }
        }
        Node::Pool { kernel, stride, padding, .. } => {
            write_ints(g, "kernel_size", kernel)?;
            write_ints(g, "stride", stride)?;
            write_ints(g, "padding", padding)
        }
        Node::Delay { delay } => write_array(g, "delay", delay),
        Node::Neuron(n) => n.params().into_iter().try_for_each(|(field, a)| write_array(g, field, a)),
        Node::Graph(_) => unreachable!("handled above"),
    }
}

/// Reads the input spikes of `snn nir run`: dataset `input`, T x B x the input's shape.
/// Returns (T, B, values).
pub fn read_run_input(path: &Path, input_shape: &[usize]) -> Result<(usize, usize, Vec<f64>)> {
    let data = |message: String| Error::Data { path: path.to_path_buf(), message };
    let file = open(path)?;
    let ds = file.dataset("input").map_err(|_| data("no dataset `input` (T x B x input shape)".into()))?;
    let shape = ds.shape();
    if shape.len() < 2
        || shape[2..] != *input_shape && shape[2..].iter().product::<usize>() != input_shape.iter().product()
    {
        return Err(data(format!(
            "dataset `input` has shape {shape:?}; the graph's Input takes T x B x {input_shape:?}"
        )));
    }
    let values = ds.read_raw::<f64>().map_err(|e| data(format!("dataset `input`: {e}")))?;
    Ok((shape[0], shape[1], values))
}

/// Writes what `snn nir run` recorded, atomically: one f32 dataset per record, T x B x shape,
/// and `dt`.
pub fn write_run(path: &Path, record: &RunRecord, dt: f64) -> Result<()> {
    write_atomically(path, |tmp| {
        let write = || -> Result<(), String> {
            let file = hdf5::File::create(tmp).map_err(|e| e.to_string())?;
            for (name, shape, values) in &record.arrays {
                let mut dims = vec![record.steps, record.batch];
                dims.extend_from_slice(shape);
                let ds = file.new_dataset::<f32>().shape(dims).create(name.as_str()).map_err(|e| e.to_string())?;
                ds.write_raw(values).map_err(|e| e.to_string())?;
            }
            file.new_dataset::<f64>().create("dt").and_then(|d| d.write_scalar(&dt)).map_err(|e| e.to_string())?;
            file.close().map_err(|e| e.to_string())
        };
        write().map_err(|e| Error::write(path, e))
    })
}
