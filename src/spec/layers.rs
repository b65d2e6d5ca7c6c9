//! Layered (non-spiking, one pass per image) models: deep Heaviside nets, binary nets and concept
//! bottleneck models are a `layers: [...]` stack in the network file instead of populations and
//! projections. Names follow PyTorch and Larq: `Dense`, `Conv2d`, `MaxPool`, `BatchNorm`, ...
//!
//! ```ron
//! inputs: [(name: "pixels", size: 784, shape: (1, 28, 28))],
//! layers: [
//!     Conv2d(filters: 32, kernel: 3, padding: 1), BatchNorm(), Relu, MaxPool(size: 2),
//!     Flatten, Dense(units: 64), BatchNorm(), Heaviside(mode: Smooth), Dense(units: 10),
//! ],
//! ```
//!
//! The checks here infer every layer's output shape, so a convolution that does not fit its
//! input is reported with the layer's index and kind before anything is built.

use serde::{Deserialize, Serialize};

use crate::surrogate::{SpikeMode, Surrogate};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Layer {
    /// Fully connected: `y = W x + b`.
    Dense {
        units: u32,
        #[serde(default)]
        weights: Weights,
        #[serde(default = "yes")]
        bias: bool,
    },
    /// 2-D convolution over a (channels, height, width) input, square kernel.
    Conv2d {
        filters: u32,
        kernel: u32,
        #[serde(default = "one")]
        stride: u32,
        #[serde(default)]
        padding: u32,
        #[serde(default)]
        weights: Weights,
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Maximum over non-overlapping `size x size` windows (stride = size; a ragged edge is dropped).
    MaxPool {
        size: u32,
    },
    /// Mean over non-overlapping `size x size` windows.
    AvgPool {
        size: u32,
    },
    /// Batch normalisation per feature (per channel after a convolution), with running
    /// statistics for evaluation; PyTorch's defaults.
    BatchNorm {
        #[serde(default = "bn_momentum")]
        momentum: f64,
        #[serde(default = "bn_eps")]
        eps: f64,
    },
    /// The Heaviside step, 0/1. Surrogate mode: forward H(x), backward S'(x). Smooth mode: forward
    /// S(x) while training, hardened to H(x) at evaluation. `surrogate` defaults to the training
    /// section's.
    Heaviside {
        #[serde(default)]
        mode: SpikeMode,
        #[serde(default)]
        surrogate: Option<Surrogate>,
    },
    /// The sign, -1/+1 (sign(0) = +1), i.e. 2 H(x) - 1, with backward 2 S'(x).
    Sign {
        #[serde(default)]
        surrogate: Option<Surrogate>,
    },
    Relu,
    /// Zeroes each input with probability `rate` while training (inverted dropout).
    Dropout {
        rate: f64,
    },
    /// (channels, height, width) to one feature vector, channel-major as PyTorch flattens.
    Flatten,
    /// Leaky integrate-and-fire neurons over the training section's steps, one per input
    /// feature (the update is written out in the `nn::spiking` module): beta = exp(-dt / tau_mem_ms).
    /// `surrogate` and `detach_reset` default to the training section's.
    Lif {
        tau_mem_ms: f64,
        #[serde(default = "one_f64")]
        threshold: f64,
        #[serde(default)]
        reset: SpikeReset,
        #[serde(default)]
        detach_reset: Option<bool>,
        #[serde(default)]
        surrogate: Option<Surrogate>,
        #[serde(default)]
        learn_tau: Learnable,
        #[serde(default)]
        recurrent: Recurrence,
    },
    /// LIF with a synaptic current of its own time constant feeding the membrane (NIR's
    /// CubaLIF, snnTorch's Synaptic, Norse's LIF).
    CubaLif {
        tau_syn_ms: f64,
        tau_mem_ms: f64,
        #[serde(default = "one_f64")]
        threshold: f64,
        #[serde(default)]
        reset: SpikeReset,
        #[serde(default)]
        detach_reset: Option<bool>,
        #[serde(default)]
        surrogate: Option<Surrogate>,
        #[serde(default)]
        learn_tau: Learnable,
        #[serde(default)]
        recurrent: Recurrence,
    },
    /// Adaptive LIF (Bellec et al. 2018, LSNN; 2020, e-prop): LIF whose threshold rises by
    /// `beta_adapt` with each spike and decays back with `tau_adapt_ms`, giving the layer a
    /// memory longer than its membrane's.
    Alif {
        tau_mem_ms: f64,
        tau_adapt_ms: f64,
        beta_adapt: f64,
        #[serde(default = "one_f64")]
        threshold: f64,
        #[serde(default)]
        reset: SpikeReset,
        #[serde(default)]
        detach_reset: Option<bool>,
        #[serde(default)]
        surrogate: Option<Surrogate>,
        #[serde(default)]
        learn_tau: Learnable,
        #[serde(default)]
        recurrent: Recurrence,
    },
    /// Leaky integrator without spikes: the usual readout, scores = its membrane averaged over
    /// the steps.
    Li {
        tau_mem_ms: f64,
        #[serde(default)]
        learn_tau: Learnable,
    },
    /// `layers` stacked `times` times, each copy with its own weights: depth as one number.
    Repeat {
        times: u32,
        layers: Vec<Layer>,
    },
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn one_f64() -> f64 {
    1.0
}
fn bn_momentum() -> f64 {
    0.1
}
fn bn_eps() -> f64 {
    1e-5
}

/// How a spiking layer's membrane resets after a spike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpikeReset {
    /// v <- v - threshold (snnTorch's default).
    #[default]
    Subtract,
    /// v <- 0.
    Zero,
}

/// Recurrent weights within a spiking layer (snnTorch's RLeaky / RSynaptic with `all_to_all`):
/// the layer's spikes of step t - 1, through a trained n x n matrix, add to its input at step t.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recurrence {
    #[default]
    None,
    /// Every neuron to every neuron, itself included.
    AllToAll,
    /// Every neuron to every other neuron.
    NoSelf,
}

/// Whether a spiking layer learns its time constants (SpikingJelly's PLIF).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Learnable {
    #[default]
    Fixed,
    /// One decay for the whole layer.
    PerLayer,
    /// One decay per channel (per feature of a vector input).
    PerChannel,
}

/// How a layer's weights are used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Weights {
    #[default]
    Real,
    /// sign(w) of latent real weights, which are clipped to [-1, 1] after every update; the
    /// gradient passes straight through where |w| <= 1 (Larq's `ste_sign` with `weight_clip`).
    /// With `batch_norm: true` (the default) a BatchNorm must follow, as binary layers need one to
    /// train.
    Binary {
        #[serde(default = "yes")]
        batch_norm: bool,
    },
}

impl Weights {
    pub fn is_binary(self) -> bool {
        matches!(self, Weights::Binary { .. })
    }
}

/// The shape of one sample between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Flat(usize),
    Image { channels: usize, height: usize, width: usize },
}

impl Shape {
    pub fn size(self) -> usize {
        match self {
            Shape::Flat(n) => n,
            Shape::Image { channels, height, width } => channels * height * width,
        }
    }

    /// Channels for batch normalisation: per channel of an image, per feature of a vector.
    pub fn channels(self) -> usize {
        match self {
            Shape::Flat(n) => n,
            Shape::Image { channels, .. } => channels,
        }
    }

    /// Positions per channel (1 for a vector).
    pub fn positions(self) -> usize {
        match self {
            Shape::Flat(_) => 1,
            Shape::Image { height, width, .. } => height * width,
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Shape::Flat(n) => write!(f, "{n}"),
            Shape::Image { channels, height, width } => write!(f, "{channels}x{height}x{width}"),
        }
    }
}

impl Layer {
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Dense { .. } => "Dense",
            Layer::Conv2d { .. } => "Conv2d",
            Layer::MaxPool { .. } => "MaxPool",
            Layer::AvgPool { .. } => "AvgPool",
            Layer::BatchNorm { .. } => "BatchNorm",
            Layer::Heaviside { .. } => "Heaviside",
            Layer::Sign { .. } => "Sign",
            Layer::Relu => "Relu",
            Layer::Dropout { .. } => "Dropout",
            Layer::Flatten => "Flatten",
            Layer::Lif { .. } => "Lif",
            Layer::CubaLif { .. } => "CubaLif",
            Layer::Alif { .. } => "Alif",
            Layer::Li { .. } => "Li",
            Layer::Repeat { .. } => "Repeat",
        }
    }

    /// Whether the layer keeps state from step to step (a spiking layer).
    pub fn is_stateful(&self) -> bool {
        self.fires() || matches!(self, Layer::Li { .. })
    }

    /// Whether the layer emits spikes (a readout of it scores spike counts).
    pub fn fires(&self) -> bool {
        matches!(self, Layer::Lif { .. } | Layer::CubaLif { .. } | Layer::Alif { .. })
    }

    /// The output shape for input `shape`, or what does not fit.
    pub fn output_shape(&self, shape: Shape) -> Result<Shape, String> {
        match *self {
            Layer::Dense { units, .. } => match shape {
                Shape::Flat(_) if units > 0 => Ok(Shape::Flat(units as usize)),
                Shape::Flat(_) => Err("units: must be at least 1".into()),
                Shape::Image { .. } => Err(format!("its input is an image ({shape}); put Flatten before it")),
            },
            Layer::Conv2d { filters, kernel, stride, padding, .. } => {
                let Shape::Image { height, width, .. } = shape else {
                    return Err(format!(
                        "its input is a vector of {shape} features, not an image; give inputs[0].shape or move it before Flatten"
                    ));
                };
                if filters == 0 || kernel == 0 || stride == 0 {
                    return Err(format!(
                        "filters, kernel and stride must be at least 1, got {filters}, {kernel}, {stride}"
                    ));
                }
                let (k, p, s) = (kernel as usize, padding as usize, stride as usize);
                if k > height + 2 * p || k > width + 2 * p {
                    return Err(format!(
                        "a {k}x{k} kernel with padding {p} does not fit its {height}x{width} input ({shape})"
                    ));
                }
                Ok(Shape::Image {
                    channels: filters as usize,
                    height: (height + 2 * p - k) / s + 1,
                    width: (width + 2 * p - k) / s + 1,
                })
            }
            Layer::MaxPool { size } | Layer::AvgPool { size } => {
                let Shape::Image { channels, height, width } = shape else {
                    return Err(format!("its input is a vector of {shape} features, not an image"));
                };
                let s = size as usize;
                if s == 0 || s > height || s > width {
                    return Err(format!("a {s}x{s} window does not fit its {height}x{width} input"));
                }
                Ok(Shape::Image { channels, height: height / s, width: width / s })
            }
            Layer::Flatten => Ok(Shape::Flat(shape.size())),
            Layer::BatchNorm { momentum, eps } => {
                if !(momentum > 0.0 && momentum <= 1.0) {
                    return Err(format!("momentum: must lie in (0, 1], got {momentum}"));
                }
                if !(eps.is_finite() && eps > 0.0) {
                    return Err(format!("eps: must be a positive number, got {eps}"));
                }
                Ok(shape)
            }
            Layer::Dropout { rate } => {
                if !(0.0..1.0).contains(&rate) {
                    return Err(format!("rate: must lie in [0, 1), got {rate}"));
                }
                Ok(shape)
            }
            Layer::Heaviside { surrogate, .. } | Layer::Sign { surrogate } => {
                let problems = surrogate.map(|s| s.problems("surrogate")).unwrap_or_default();
                if problems.is_empty() { Ok(shape) } else { Err(problems.join("; ")) }
            }
            Layer::Relu => Ok(shape),
            Layer::Lif { tau_mem_ms, threshold, surrogate, recurrent, .. } => {
                spiking_problems(&[("tau_mem_ms", tau_mem_ms)], threshold, surrogate)?;
                recurrence_problems(recurrent, shape).map(|_| shape)
            }
            Layer::CubaLif { tau_syn_ms, tau_mem_ms, threshold, surrogate, recurrent, .. } => {
                spiking_problems(&[("tau_syn_ms", tau_syn_ms), ("tau_mem_ms", tau_mem_ms)], threshold, surrogate)?;
                recurrence_problems(recurrent, shape).map(|_| shape)
            }
            Layer::Alif { tau_mem_ms, tau_adapt_ms, beta_adapt, threshold, surrogate, recurrent, .. } => {
                spiking_problems(&[("tau_mem_ms", tau_mem_ms), ("tau_adapt_ms", tau_adapt_ms)], threshold, surrogate)?;
                if !(beta_adapt.is_finite() && beta_adapt >= 0.0) {
                    return Err(format!("beta_adapt: must be a number >= 0, got {beta_adapt}"));
                }
                recurrence_problems(recurrent, shape).map(|_| shape)
            }
            Layer::Li { tau_mem_ms, .. } => spiking_problems(&[("tau_mem_ms", tau_mem_ms)], 1.0, None).map(|_| shape),
            Layer::Repeat { .. } => unreachable!("Repeat is expanded before shapes are inferred"),
        }
    }
}

/// Recurrence joins the neurons of a vector: after a Dense layer (or a Flatten), not over an
/// image's positions.
fn recurrence_problems(recurrent: Recurrence, shape: Shape) -> Result<(), String> {
    match (recurrent, shape) {
        (Recurrence::None, _) | (_, Shape::Flat(_)) => Ok(()),
        (_, Shape::Image { .. }) => {
            Err(format!("recurrent: {recurrent:?} needs a vector input (after Dense or Flatten), got {shape:?}"))
        }
    }
}

/// What is wrong with a spiking layer's time constants, threshold or surrogate.
fn spiking_problems(taus: &[(&str, f64)], threshold: f64, surrogate: Option<Surrogate>) -> Result<(), String> {
    let mut problems: Vec<String> = taus
        .iter()
        .filter(|(_, tau)| !(tau.is_finite() && *tau > 0.0))
        .map(|(name, tau)| format!("{name}: must be a positive number, got {tau}"))
        .collect();
    if !(threshold.is_finite() && threshold > 0.0) {
        problems.push(format!("threshold: must be a positive number, got {threshold}"));
    }
    problems.extend(surrogate.map(|s| s.problems("surrogate")).unwrap_or_default());
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

/// The layers with every Repeat unrolled, each with the path that names it in messages
/// (`layers[2]`, or `layers[1].layers[0] (copy 3 of 12)`), plus problems of empty repeats.
pub fn expand(layers: &[Layer]) -> (Vec<(String, Layer)>, Vec<String>) {
    fn walk(layers: &[Layer], prefix: &str, suffix: &str, out: &mut Vec<(String, Layer)>, problems: &mut Vec<String>) {
        for (i, layer) in layers.iter().enumerate() {
            let path = format!("{prefix}layers[{i}]");
            match layer {
                Layer::Repeat { times, layers } => {
                    if *times == 0 || layers.is_empty() {
                        problems.push(format!("{path}{suffix} (Repeat): needs times >= 1 and at least one layer"));
                    }
                    for copy in 0..*times {
                        let suffix = format!("{suffix} (copy {} of {times})", copy + 1);
                        walk(layers, &format!("{path}."), &suffix, out, problems);
                    }
                }
                other => out.push((format!("{path}{suffix}"), other.clone())),
            }
        }
    }
    let (mut out, mut problems) = (Vec::new(), Vec::new());
    walk(layers, "", "", &mut out, &mut problems);
    (out, problems)
}

/// The output shapes of the expanded layers (see [`expand`]), or every problem with the layer's
/// path (`layers[3] (Conv2d): ...`).
pub fn check_layers(input: Shape, layers: &[Layer]) -> (Vec<Shape>, Vec<String>) {
    let (layers, mut problems) = expand(layers);
    let mut shapes = Vec::with_capacity(layers.len());
    let mut shape = input;
    for (i, (path, layer)) in layers.iter().enumerate() {
        match layer.output_shape(shape) {
            Ok(s) => shape = s,
            Err(why) => {
                problems.push(format!("{path} ({}): {why}", layer.kind()));
                // Later shapes cannot be known; stop rather than report follow-on errors.
                return (shapes, problems);
            }
        }
        shapes.push(shape);
        if let Layer::Dense { weights: Weights::Binary { batch_norm: true }, .. }
        | Layer::Conv2d { weights: Weights::Binary { batch_norm: true }, .. } = layer
        {
            // Pooling, dropout and flattening may sit between; the next layer doing arithmetic
            // must be the normalisation.
            let next = layers[i + 1..].iter().map(|(_, l)| l).find(|l| {
                !matches!(l, Layer::MaxPool { .. } | Layer::AvgPool { .. } | Layer::Dropout { .. } | Layer::Flatten)
            });
            if !matches!(next, Some(Layer::BatchNorm { .. })) {
                problems.push(format!(
                    "{path} ({}): binarised weights with batch_norm: true need a BatchNorm after them, found {}",
                    layer.kind(),
                    next.map_or("the end of the network", Layer::kind)
                ));
            }
        }
    }
    let spiking = layers.iter().any(|(_, l)| l.is_stateful());
    match layers.last() {
        None => problems.push("layers: the model has no layer".into()),
        Some((_, Layer::Dense { .. })) if !spiking => {}
        Some((_, last)) if last.is_stateful() => {}
        Some((path, last)) if spiking => problems.push(format!(
            "{path} ({}): a spiking model ends in its readout, whose output over the steps gives the class \
             scores: Li (its mean membrane) or Lif/CubaLif (its spike counts)",
            last.kind()
        )),
        Some((path, last)) => problems
            .push(format!("{path} ({}): the last layer must be a Dense layer giving the class scores", last.kind())),
    }
    (shapes, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Shape {
        Shape::Image { channels: 1, height: 28, width: 28 }
    }

    #[test]
    fn shapes_of_a_small_cnn() {
        let layers = vec![
            Layer::Conv2d { filters: 8, kernel: 3, stride: 1, padding: 1, weights: Weights::Real, bias: true },
            Layer::MaxPool { size: 2 },
            Layer::Conv2d { filters: 16, kernel: 5, stride: 1, padding: 0, weights: Weights::Real, bias: true },
            Layer::Flatten,
            Layer::Dense { units: 10, weights: Weights::Real, bias: true },
        ];
        let (shapes, problems) = check_layers(image(), &layers);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(shapes[1], Shape::Image { channels: 8, height: 14, width: 14 });
        assert_eq!(shapes[2], Shape::Image { channels: 16, height: 10, width: 10 });
        assert_eq!(shapes[3], Shape::Flat(1600));
    }

    #[test]
    fn repeats_unroll_with_paths_naming_the_copy() {
        let block = vec![Layer::Dense { units: 8, weights: Weights::Real, bias: true }, Layer::Relu];
        let layers = vec![
            Layer::Repeat { times: 3, layers: block },
            Layer::Dense { units: 2, weights: Weights::Real, bias: true },
        ];
        let (expanded, problems) = expand(&layers);
        assert!(problems.is_empty());
        assert_eq!(expanded.len(), 7);
        assert_eq!(expanded[2].0, "layers[0].layers[0] (copy 2 of 3)");
        assert_eq!(expanded[6].0, "layers[1]");
        let bad = vec![Layer::Repeat {
            times: 2,
            layers: vec![
                Layer::Flatten,
                Layer::Conv2d { filters: 1, kernel: 3, stride: 1, padding: 0, weights: Weights::Real, bias: true },
            ],
        }];
        let (_, problems) = check_layers(image(), &bad);
        assert!(
            problems[0].starts_with("layers[0].layers[1] (copy 1 of 2) (Conv2d): its input is a vector"),
            "{problems:?}"
        );
    }

    #[test]
    fn misfits_name_the_layer() {
        let conv = Layer::Conv2d { filters: 8, kernel: 31, stride: 1, padding: 1, weights: Weights::Real, bias: true };
        let (_, problems) = check_layers(image(), &[conv]);
        assert!(problems[0].starts_with("layers[0] (Conv2d): a 31x31 kernel"), "{problems:?}");
        let dense = Layer::Dense { units: 4, weights: Weights::Real, bias: true };
        let (_, problems) = check_layers(image(), &[dense]);
        assert!(problems[0].contains("put Flatten before it"), "{problems:?}");
        let binary = Layer::Dense { units: 4, weights: Weights::Binary { batch_norm: true }, bias: false };
        let (_, problems) = check_layers(
            Shape::Flat(4),
            &[binary, Layer::Sign { surrogate: None }, Layer::Dense { units: 2, weights: Weights::Real, bias: true }],
        );
        assert!(problems[0].contains("layers[0] (Dense): binarised weights") && problems[0].contains("found Sign"));
    }
}
