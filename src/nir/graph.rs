//! A NIR graph as plain data: the node types of NIR 1.0 with their fields, and the edges. Read and
//! written by `io::nir_file`, run by `nir::run`, made from and turned into `snn` models by
//! `nir::convert`.

/// An n-dimensional array of a node field, row-major, held in f64 whatever the file's float type.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Array {
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Array { shape, data }
    }

    pub fn vector(data: Vec<f64>) -> Self {
        Array { shape: vec![data.len()], data }
    }

    pub fn filled(shape: &[usize], value: f64) -> Self {
        Array { shape: shape.to_vec(), data: vec![value; shape.iter().product()] }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Element `i` of a parameter that is either per element or one value for all.
    pub fn at(&self, i: usize) -> f64 {
        if self.data.len() == 1 { self.data[0] } else { self.data[i] }
    }
}

/// Convolution padding: explicit per spatial dimension, or PyTorch's "same" / "valid".
#[derive(Debug, Clone, PartialEq)]
pub enum Padding {
    Explicit(Vec<usize>),
    Same,
    Valid,
}

/// The six neuron models of NIR 1.0. Continuous time; NIR stores no dt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeuronKind {
    /// Integrator: dv/dt = r I.
    I,
    /// Integrate-and-fire: dv/dt = r I, spike when v > v_threshold, v <- v_reset.
    If,
    /// Leaky integrator: tau dv/dt = (v_leak - v) + r I.
    Li,
    /// Leaky integrate-and-fire: LI with a threshold and reset.
    Lif,
    /// Current-based leaky integrator: tau_syn dI/dt = -I + w_in x feeding an LI.
    CubaLi,
    /// Current-based LIF.
    CubaLif,
}

impl NeuronKind {
    pub fn type_name(self) -> &'static str {
        match self {
            NeuronKind::I => "I",
            NeuronKind::If => "IF",
            NeuronKind::Li => "LI",
            NeuronKind::Lif => "LIF",
            NeuronKind::CubaLi => "CubaLI",
            NeuronKind::CubaLif => "CubaLIF",
        }
    }

    pub fn spikes(self) -> bool {
        matches!(self, NeuronKind::If | NeuronKind::Lif | NeuronKind::CubaLif)
    }

    pub fn leaks(self) -> bool {
        !matches!(self, NeuronKind::I | NeuronKind::If)
    }

    pub fn has_synapse(self) -> bool {
        matches!(self, NeuronKind::CubaLi | NeuronKind::CubaLif)
    }

    /// The fields a file of this type holds, in NIR's names; `v_reset` and `w_in` may be absent
    /// (meaning 0 and 1).
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            NeuronKind::I => &["r"],
            NeuronKind::If => &["r", "v_threshold", "v_reset"],
            NeuronKind::Li => &["tau", "r", "v_leak"],
            NeuronKind::Lif => &["tau", "r", "v_leak", "v_threshold", "v_reset"],
            NeuronKind::CubaLi => &["tau_mem", "tau_syn", "r", "v_leak", "w_in"],
            NeuronKind::CubaLif => &["tau_mem", "tau_syn", "r", "v_leak", "v_threshold", "v_reset", "w_in"],
        }
    }

    pub const ALL: [NeuronKind; 6] =
        [NeuronKind::I, NeuronKind::If, NeuronKind::Li, NeuronKind::Lif, NeuronKind::CubaLi, NeuronKind::CubaLif];
}

/// A neuron node's parameters, by NIR field name (`tau` is stored as `tau_mem`). Fields the kind
/// lacks are None; absent `v_reset` is 0 and absent `w_in` 1, as NIR says.
#[derive(Debug, Clone, PartialEq)]
pub struct Neuron {
    pub kind: NeuronKind,
    pub tau_mem: Option<Array>,
    pub tau_syn: Option<Array>,
    pub r: Array,
    pub v_leak: Option<Array>,
    pub v_threshold: Option<Array>,
    pub v_reset: Option<Array>,
    pub w_in: Option<Array>,
}

impl Neuron {
    /// The parameter arrays present, with their NIR names (`tau` for LI/LIF's membrane).
    pub fn params(&self) -> Vec<(&'static str, &Array)> {
        let tau_name = if self.kind.has_synapse() { "tau_mem" } else { "tau" };
        [
            (tau_name, self.tau_mem.as_ref()),
            ("tau_syn", self.tau_syn.as_ref()),
            ("r", Some(&self.r)),
            ("v_leak", self.v_leak.as_ref()),
            ("v_threshold", self.v_threshold.as_ref()),
            ("v_reset", self.v_reset.as_ref()),
            ("w_in", self.w_in.as_ref()),
        ]
        .into_iter()
        .filter_map(|(n, a)| a.map(|a| (n, a)))
        .collect()
    }

    /// Number of neurons: the largest parameter (the others hold one value or as many).
    pub fn size(&self) -> usize {
        self.params().iter().map(|(_, a)| a.len()).max().unwrap_or(1)
    }

    /// The shape of the largest parameter, the node's own shape.
    pub fn shape(&self) -> Vec<usize> {
        self.params().iter().max_by_key(|(_, a)| a.len()).map(|(_, a)| a.shape.clone()).unwrap_or_default()
    }
}

/// One NIR node.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Input {
        shape: Vec<usize>,
    },
    Output {
        shape: Vec<usize>,
    },
    /// y = W x + b, W out x in.
    Affine {
        weight: Array,
        bias: Array,
    },
    /// y = W x.
    Linear {
        weight: Array,
    },
    Scale {
        scale: Array,
    },
    /// y = H(x - threshold).
    Threshold {
        threshold: Array,
    },
    /// Conv1d (one spatial dimension) or Conv2d; weight out x in/groups x kernel.
    Conv {
        spatial: usize,
        weight: Array,
        bias: Array,
        input_shape: Option<Vec<usize>>,
        stride: Vec<usize>,
        padding: Padding,
        dilation: Vec<usize>,
        groups: usize,
    },
    /// Merges dimensions start..=end of the shape without the batch (negative from the end).
    Flatten {
        start_dim: i64,
        end_dim: i64,
        input_type: Option<Vec<usize>>,
    },
    /// SumPool2d (`average` false) or AvgPool2d (divided by the window's area).
    Pool {
        average: bool,
        kernel: Vec<usize>,
        stride: Vec<usize>,
        padding: Vec<usize>,
    },
    /// y(t) = x(t - delay), per element, delay in seconds.
    Delay {
        delay: Array,
    },
    Neuron(Neuron),
    Graph(Graph),
}

impl Node {
    pub fn type_name(&self) -> &'static str {
        match self {
            Node::Input { .. } => "Input",
            Node::Output { .. } => "Output",
            Node::Affine { .. } => "Affine",
            Node::Linear { .. } => "Linear",
            Node::Scale { .. } => "Scale",
            Node::Threshold { .. } => "Threshold",
            Node::Conv { spatial: 1, .. } => "Conv1d",
            Node::Conv { .. } => "Conv2d",
            Node::Flatten { .. } => "Flatten",
            Node::Pool { average: false, .. } => "SumPool2d",
            Node::Pool { average: true, .. } => "AvgPool2d",
            Node::Delay { .. } => "Delay",
            Node::Neuron(n) => n.kind.type_name(),
            Node::Graph(_) => "NIRGraph",
        }
    }

    /// Whether the node keeps state from one step to the next (and so may close a cycle).
    pub fn is_stateful(&self) -> bool {
        matches!(self, Node::Neuron(_) | Node::Delay { .. })
    }
}

/// Nodes by name (in the file's order) and directed edges between names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    pub nodes: Vec<(String, Node)>,
    pub edges: Vec<(String, String)>,
}

impl Graph {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|(n, _)| n == name).map(|(_, node)| node)
    }
}
