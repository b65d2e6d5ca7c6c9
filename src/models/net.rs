//! A layered model built from its spec: forward over a batch (keeping what the backward pass
//! needs), backward to every parameter's gradient, and the parameters in one fixed order for the
//! optimizer and checkpoints.
//!
//! A model with spiking layers runs over `steps` time steps: every value between layers is a
//! `features x (steps samples)` matrix, column `t samples + b` holding sample b at step t (see
//! [`crate::nn::spiking`]); stateless layers treat the columns as one batch, so batch norm takes
//! its statistics over batch and time (SpikingJelly's multi-step BatchNorm: tdBN without its
//! threshold scaling). The class scores reduce the last layer over the steps: the mean (Li,
//! Dense) or the sum (spike counts of Lif/CubaLif). With one step and no spiking layer this is
//! the plain one-pass model.

use nalgebra::DMatrix;
use rand::RngExt;
use rayon::prelude::*;

use crate::data::encode::Encoder;
use crate::data::spike_trains::SpikeTrains;
use crate::error::{Error, Result};
use crate::nn::activation::{self, Step, StepForward};
use crate::nn::bits;
use crate::nn::conv::{self, ConvGeometry};
use crate::nn::gemm::Gemm;
use crate::nn::linear::{self, Linear};
use crate::nn::loss::{argmax, cross_entropy};
use crate::nn::norm::{BatchNorm, NormCache};
use crate::nn::pool;
use crate::nn::spike_input::{self, Base, SpikeForm, SpikeRows};
use crate::nn::spiking::{
    Adaptation, Decay, Kind, Recurrent, SegmentCarry, SegmentState, Spiking, SpikingTape, StepInput,
};
use crate::nn::tiles::TileCache;
use crate::ranks::Exchange;
use crate::rng::{self, Purpose};
use crate::spec::validate::input_shape;
use crate::spec::{Layer as LayerSpec, Network, Recurrence, Shape, Training};
use crate::surrogate::{SpikeMode, Surrogate};

#[derive(Debug, Clone, PartialEq)]
pub enum Op<F> {
    Dense(Linear<F>),
    Conv(Linear<F>, ConvGeometry),
    MaxPool(usize),
    AvgPool(usize),
    BatchNorm(BatchNorm<F>),
    /// Heaviside or sign; `smooth` is SpikeMode::Smooth (S(x) while training, H(x) evaluated).
    Step {
        step: Step,
        smooth: bool,
    },
    Relu,
    Dropout(f64),
    Flatten,
    /// Lif, CubaLif or Li over the steps.
    Spiking(Spiking<F>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layer<F> {
    pub op: Op<F>,
    pub input: Shape,
    pub output: Shape,
    /// `layers[3] Dense`, for messages, checkpoints and figures.
    pub label: String,
    /// A Dense or Conv2d layer whose input is spikes (the encoder's, or a spiking layer's
    /// through dropout, flattening or max pooling) adds the weights of the inputs that fired
    /// rather than multiplying a mostly-zero matrix; all but a Dense layer of fewer than
    /// [`linear::MIN_EVENT_OUTPUTS`] outputs, which multiplies.
    pub event_driven: bool,
}

/// How a forward pass runs.
#[derive(Debug, Clone, Copy)]
pub enum Mode<'a> {
    /// Batch statistics, dropout, smooth concepts. Dropout masks are drawn from streams of
    /// (seed, epoch, the sample index of each column, layer), so they do not depend on how the
    /// batch is split.
    /// `ranks` hold the batch's other shares (batch norm's statistics are the whole batch's).
    Train { seed: u64, epoch: u32, samples: &'a [usize], ranks: &'a dyn Exchange },
    /// Running statistics, no dropout; smooth-mode units hardened to H(x) unless `soft`.
    Eval { soft: bool },
}

/// What a forward pass kept per layer for the backward pass.
#[derive(Debug, Clone)]
pub enum Extra<F> {
    None,
    /// The effective (binarised) weights, when they differ from the latent ones.
    Weights(DMatrix<F>),
    /// A convolution's effective weights (as in `Weights`) and what its backward pass reads.
    Conv {
        weights: Option<DMatrix<F>>,
        kept: conv::Kept<F>,
    },
    Winners(Vec<u32>),
    /// Max pooling that the spiking layer before it did in its own pass
    /// ([`Spiking::forward_pooled`]): the winners, which that layer's backward pass reads, while
    /// the pooling passes its gradient through. That layer's output is then not kept (its value
    /// in the trace is empty).
    PooledInPlace(Vec<u32>),
    Norm(NormCache<F>),
    /// Dropout's masks for one step's columns, which every step takes.
    Mask(Vec<F>),
    Spiking(SpikingTape<F>),
    /// An event-driven Dense layer's input spikes, as it took them.
    Spikes(SpikeRows<F>),
}

/// A batch's input: a dense `features x columns` matrix, or, for a model whose first layer
/// reads its input as events ([`LayerNet::reads_input_events`]), the encoder's spikes as bits,
/// which then never become a dense matrix.
#[derive(Debug, Clone)]
pub enum Input<F> {
    Dense(DMatrix<F>),
    Spikes(SpikeTrains),
}

impl<F> From<DMatrix<F>> for Input<F> {
    fn from(x: DMatrix<F>) -> Self {
        Input::Dense(x)
    }
}

impl<F: Gemm> Input<F> {
    pub fn into_dense(self) -> DMatrix<F> {
        match self {
            Input::Dense(x) => x,
            Input::Spikes(trains) => spike_input::dense(&trains),
        }
    }
}

/// An input as the layers take it: the first layer's spikes and the base they deviate from
/// (none: values), or a dense matrix.
pub(super) enum Sequence<F> {
    Spikes(SpikeTrains, Option<Base>),
    Dense(DMatrix<F>),
}

/// Steps of the first layer's input spikes and the base they deviate from, as the layer takes
/// them ([`LayerNet::dense_on_events`]).
pub(super) struct SpikeSteps<'a> {
    trains: &'a SpikeTrains,
    base: Option<&'a Base>,
    steps: (usize, usize),
}

impl<F: Gemm> Sequence<F> {
    /// Steps `a..b` of the input for a trace: a dense matrix, or where the first layer reads
    /// events, its spikes and an empty matrix of as many columns.
    pub(super) fn steps(&self, (a, b): (usize, usize), samples: usize) -> (DMatrix<F>, Option<SpikeSteps<'_>>) {
        match self {
            Sequence::Spikes(trains, base) => {
                let spikes = SpikeSteps { trains, base: base.as_ref(), steps: (a, b) };
                (DMatrix::zeros(0, (b - a) * samples), Some(spikes))
            }
            Sequence::Dense(x) => (x.columns(a * samples, (b - a) * samples).into_owned(), None),
        }
    }
}

/// A forward pass: `values[0]` is the input (an empty matrix of as many columns where the first
/// layer read events: they are in `extras[0]`), `values[i + 1]` the output of layer i (empty
/// for a spiking layer whose max pooling it did, [`Extra::PooledInPlace`], and for a batch
/// norm whose output that spiking layer normalised as it read it; while training, the input
/// of a Flatten layer, which moved on as its output).
#[derive(Debug, Clone)]
pub struct Trace<F> {
    pub values: Vec<DMatrix<F>>,
    pub extras: Vec<Extra<F>>,
    /// Step layers ran smooth (their backward uses the exact derivative).
    smooth_steps: Vec<bool>,
    /// Classes x samples: the last layer's output reduced over the steps.
    scores: DMatrix<F>,
}

impl<F> Trace<F> {
    pub fn scores(&self) -> &DMatrix<F> {
        &self.scores
    }
}

impl<F: Gemm> Trace<F> {
    /// A trace holding only its input, layers to be pushed.
    pub(super) fn starting_with(x: DMatrix<F>) -> Self {
        Trace { values: vec![x], extras: Vec::new(), smooth_steps: Vec::new(), scores: DMatrix::zeros(0, 0) }
    }

    pub(super) fn push(&mut self, y: DMatrix<F>, extra: Extra<F>, smooth: bool) {
        self.values.push(y);
        self.extras.push(extra);
        self.smooth_steps.push(smooth);
    }
}

/// How the last layer's output over the steps becomes the class scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreReduction {
    /// The mean over the steps (a membrane or a Dense output; with one step, the output itself).
    Mean,
    /// The sum over the steps (spike counts).
    Sum,
}

/// Parameter gradients summed while the backward pass goes down the layers (and back through
/// the segments of a sequence): per layer, its parameters' sums (zero to start), and a spiking
/// layer's carry.
pub(super) struct Sums<F> {
    layers: Vec<Vec<DMatrix<F>>>,
    pub(super) carries: Vec<Option<SegmentCarry<F>>>,
    /// Per Dense layer taking its input in deviation form, the sums of dL/dy over the steps
    /// after the segment (see [`linear::dense_backward_events`]).
    pub(super) later_sums: Vec<Option<Vec<F>>>,
}

impl<F: Gemm> Sums<F> {
    pub(super) fn new(net: &LayerNet<F>) -> Self {
        let layers = net
            .layers
            .iter()
            .map(|layer| match &layer.op {
                Op::Dense(l) | Op::Conv(l, _) => {
                    let mut own = vec![DMatrix::zeros(l.weight.nrows(), l.weight.ncols())];
                    own.extend(l.bias.as_ref().map(|b| DMatrix::zeros(b.nrows(), b.ncols())));
                    own
                }
                Op::BatchNorm(bn) => vec![DMatrix::zeros(bn.gamma.nrows(), 1), DMatrix::zeros(bn.beta.nrows(), 1)],
                _ => Vec::new(),
            })
            .collect();
        Sums { layers, carries: vec![None; net.layers.len()], later_sums: vec![None; net.layers.len()] }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LayerNet<F> {
    pub input: Shape,
    pub layers: Vec<Layer<F>>,
    /// The training section's surrogate: the default of step layers, and the smooth sign of
    /// binarised weights under `smooth`.
    pub surrogate: Surrogate,
    /// Every step unit, spike and binarised weight uses its smooth form (for gradient checks).
    pub smooth: bool,
    /// Time steps per sample (1 for a one-pass model).
    pub steps: usize,
    /// How a spiking model's input is encoded over the steps.
    pub encoder: Encoder,
    /// The first step whose output counts in the scores (the recall window of the memory task;
    /// 0 otherwise).
    pub scored_from: usize,
    /// The first layer's weights packed for a tile multiply of its input spikes (a cache, kept
    /// by [`LayerNet::refresh_tiles`] and checked against the weights at each use).
    tiles: TileCache,
}

impl<F: Gemm> LayerNet<F> {
    /// Builds a checked layered network; weights start as PyTorch's defaults (uniform in
    /// +-1/sqrt(fan_in), biases too), drawn from the stream of the layer's index.
    pub fn from_spec(net: &Network, training: &Training, seed: u64) -> Result<Self> {
        if !net.is_layered() {
            return super::chain::build(net, training, seed);
        }
        let input = input_shape(net).ok_or_else(|| Error::Training("the model has no input".into()))?;
        let mut shape = input;
        let mut layers = Vec::new();
        let (expanded, _) = crate::spec::layers::expand(&net.layers);
        // A model without layers over time sees the images themselves, not encoded.
        let over_time = expanded.iter().any(|(_, spec)| spec.is_stateful());
        let mut spikes = over_time && training.encoder.emits_spikes();
        for (i, (_, spec)) in expanded.iter().enumerate() {
            let output = spec.output_shape(shape).map_err(|why| Error::Training(format!("layers[{i}]: {why}")))?;
            let mut stream = rng::stream(seed, Purpose::Connectivity, i as u64);
            let mut linear = |rows: usize, fan_in: usize, bias: bool, binary: bool| {
                let bound = 1.0 / (fan_in as f64).sqrt();
                let mut draw = |_, _| F::of(bound * (2.0 * stream.random::<f64>() - 1.0));
                let weight = DMatrix::from_fn(rows, fan_in, &mut draw);
                let bias = bias.then(|| DMatrix::from_fn(rows, 1, &mut draw));
                Linear { weight, bias, binary }
            };
            let op = match *spec {
                LayerSpec::Repeat { .. } => unreachable!("expanded above"),
                LayerSpec::Dense { units, weights, bias } => {
                    Op::Dense(linear(units as usize, shape.size(), bias, weights.is_binary()))
                }
                LayerSpec::Conv2d { filters, kernel, stride, padding, weights, bias } => {
                    let k = kernel as usize;
                    let taps = shape.channels() * k * k;
                    let geometry = ConvGeometry {
                        input: shape,
                        output,
                        kernel: k,
                        stride: stride as usize,
                        padding: padding as usize,
                    };
                    Op::Conv(linear(filters as usize, taps, bias, weights.is_binary()), geometry)
                }
                LayerSpec::MaxPool { size } => Op::MaxPool(size as usize),
                LayerSpec::AvgPool { size } => Op::AvgPool(size as usize),
                LayerSpec::BatchNorm { momentum, eps } => {
                    Op::BatchNorm(BatchNorm::new(shape.channels(), shape.positions(), momentum, eps))
                }
                LayerSpec::Heaviside { mode, surrogate } => Op::Step {
                    step: Step::new(surrogate.unwrap_or(training.surrogate), false),
                    smooth: mode == SpikeMode::Smooth,
                },
                LayerSpec::Sign { surrogate } => {
                    Op::Step { step: Step::new(surrogate.unwrap_or(training.surrogate), true), smooth: false }
                }
                LayerSpec::Relu => Op::Relu,
                LayerSpec::Dropout { rate } => Op::Dropout(rate),
                LayerSpec::Flatten => Op::Flatten,
                LayerSpec::Lif { .. } | LayerSpec::CubaLif { .. } | LayerSpec::Alif { .. } | LayerSpec::Li { .. } => {
                    Op::Spiking(spiking_layer(
                        spec,
                        shape,
                        net.dt_ms,
                        training,
                        rng::stream(seed, Purpose::Connectivity, i as u64),
                    ))
                }
            };
            let label = format!("layers[{i}] {}", spec.kind());
            let narrow = matches!(&op, Op::Dense(l) if l.weight.nrows() < linear::MIN_EVENT_OUTPUTS);
            layers.push(Layer { op, input: shape, output, label, event_driven: spikes && !narrow });
            spikes = match spec {
                LayerSpec::Dropout { .. } | LayerSpec::Flatten | LayerSpec::MaxPool { .. } => spikes,
                _ => spec.fires(),
            };
            shape = output;
        }
        let steps = training.steps.max(1) as usize;
        Ok(LayerNet {
            input,
            layers,
            surrogate: training.surrogate,
            smooth: training.spike_mode == SpikeMode::Smooth,
            steps,
            encoder: training.encoder,
            scored_from: training
                .encoder
                .scored_from()
                .max(training.scored_steps.map_or(0, |n| steps.saturating_sub(n as usize)))
                .min(steps - 1),
            tiles: TileCache::default(),
        })
    }

    /// Bytes a training pass over `batch` samples keeps for the backward pass, estimated: every
    /// layer's output over the steps, a spiking layer's v' (and its current or adaptation), a
    /// dropout mask, a convolution's patches, and twice the largest layer for the gradients on
    /// their way back. It grows with the steps: what refuses a sequence too long for memory.
    /// Taken in segments of `segment` steps ([`super::segments`]), one segment's tape, and the
    /// spiking layers' state where each starts.
    pub fn tape_bytes(&self, batch: usize, segment: Option<usize>) -> f64 {
        let held = segment.map_or(self.steps, |k| k.min(self.steps));
        let columns = (batch * held) as f64;
        let boundaries = segment.map_or(0, |k| self.steps.div_ceil(k.max(1)));
        let states: usize =
            self.layers.iter().filter(|l| matches!(l.op, Op::Spiking(_))).map(|l| 3 * l.output.size()).sum();
        let mut elements = self.input.size() as f64 * columns;
        let mut largest: f64 = 0.0;
        for layer in &self.layers {
            let out = layer.output.size() as f64 * columns;
            largest = largest.max(out);
            let events = layer.event_driven && matches!(layer.op, Op::Dense(_) | Op::Conv(..));
            if events {
                // The input's events, an index and a value each: at most two per input value.
                elements += 2.0 * layer.input.size() as f64 * columns;
            }
            elements += out
                * match &layer.op {
                    Op::Spiking(s) => 2.0 + (s.alpha.is_some() || s.adaptation.is_some()) as u8 as f64,
                    Op::Conv(_, g) if !events => {
                        1.0 + (g.kernel * g.kernel * layer.input.channels()) as f64 / layer.output.channels() as f64
                    }
                    Op::Dropout(_) => 2.0,
                    _ => 1.0,
                };
        }
        let states = (boundaries * states * batch) as f64;
        (elements + 2.0 * largest + states) * std::mem::size_of::<F>() as f64
    }

    /// How the scores come from the last layer.
    pub fn reduction(&self) -> ScoreReduction {
        match self.layers.last().map(|l| &l.op) {
            Some(Op::Spiking(s)) if s.fires() => ScoreReduction::Sum,
            _ => ScoreReduction::Mean,
        }
    }

    /// Whether the model has spiking layers (and so reads encoded input over its steps).
    pub fn is_spiking(&self) -> bool {
        self.layers.iter().any(|l| matches!(l.op, Op::Spiking(_)))
    }

    /// With an input that is the same at every step (direct current into a spiking stack, or
    /// any stack without spiking layers), the layers before the first spiking layer see the same
    /// values at every step too: they run once on `samples` columns, and their output is
    /// repeated over the steps only where the first spiking layer reads it. Returns the number
    /// of such layers, or None when the input changes from step to step.
    pub fn static_prefix(&self) -> Option<usize> {
        let first_spiking = self.layers.iter().position(|l| matches!(l.op, Op::Spiking(_)));
        match first_spiking {
            None => Some(self.layers.len()),
            Some(k) if self.encoder == Encoder::Current => Some(k),
            Some(_) => None,
        }
    }

    /// `x` (`features x samples`) repeated for every step, step-major.
    fn repeat_over_steps(&self, x: &DMatrix<F>) -> DMatrix<F> {
        let samples = x.ncols();
        let mut out = DMatrix::zeros(x.nrows(), samples * self.steps);
        for t in 0..self.steps {
            out.columns_mut(t * samples, samples).copy_from(x);
        }
        out
    }

    /// The gradient with respect to a value repeated over the steps: the sum over the steps.
    fn sum_over_steps(&self, dy: DMatrix<F>) -> DMatrix<F> {
        let samples = dy.ncols() / self.steps;
        let mut sum = dy.columns(0, samples).into_owned();
        for t in 1..self.steps {
            sum += dy.columns(t * samples, samples);
        }
        sum
    }

    /// Classes x samples scores from the last layer's output. A stack without spiking layers
    /// ran once for all steps (its input is static), so its output is already every step's mean.
    pub(super) fn reduce_scores(&self, out: &DMatrix<F>) -> DMatrix<F> {
        if self.steps == 1 || !self.is_spiking() {
            return out.clone();
        }
        let samples = out.ncols() / self.steps;
        let mut scores = out.columns(self.scored_from * samples, samples).into_owned();
        for t in self.scored_from + 1..self.steps {
            scores += out.columns(t * samples, samples);
        }
        if self.reduction() == ScoreReduction::Mean {
            scores *= F::one() / F::of((self.steps - self.scored_from) as f64);
        }
        scores
    }

    /// The gradient with respect to the last layer's output, from the one w.r.t. the scores.
    pub(super) fn spread_scores(&self, mut d_scores: DMatrix<F>) -> DMatrix<F> {
        if self.steps == 1 || !self.is_spiking() {
            return d_scores;
        }
        if self.reduction() == ScoreReduction::Mean {
            d_scores *= F::one() / F::of((self.steps - self.scored_from) as f64);
        }
        let mut spread = self.repeat_over_steps(&d_scores);
        spread.columns_mut(0, self.scored_from * d_scores.ncols()).fill(F::zero());
        spread
    }

    pub fn classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.output.size())
    }

    pub(super) fn step_forward(&self, smooth_layer: bool, mode: Mode) -> StepForward {
        let smooth = self.smooth
            || (smooth_layer
                && match mode {
                    Mode::Train { .. } => true,
                    Mode::Eval { soft } => soft,
                });
        if smooth { StepForward::Smooth } else { StepForward::Hard }
    }

    /// Runs a batch forward. `x` is `features x (steps samples)`, step-major (see the module
    /// documentation), or `features x samples` when the input is the same at every step
    /// ([`LayerNet::static_prefix`]), or the encoder's events
    /// ([`crate::models::trainer::model_input`] gives the right one). Training mode updates
    /// batch-norm running statistics, hence `&mut self`.
    pub fn forward(&mut self, x: impl Into<Input<F>>, mode: Mode) -> Trace<F> {
        let trace = self.forward_keeping_statistics(x, mode);
        self.update_running_statistics(&trace);
        trace
    }

    /// Moves batch norm's running statistics towards the batch statistics of a training pass.
    pub fn update_running_statistics(&mut self, trace: &Trace<F>) {
        for (layer, extra) in self.layers.iter_mut().zip(&trace.extras) {
            if let (Op::BatchNorm(bn), Extra::Norm(cache)) = (&mut layer.op, extra) {
                bn.update_running(cache);
            }
        }
    }

    /// [`LayerNet::forward`] leaving batch norm's running statistics as they are: for a part of
    /// a batch, in a model whose layers see one sample at a time ([`LayerNet::couples_samples`]).
    pub fn forward_keeping_statistics(&self, x: impl Into<Input<F>>, mode: Mode) -> Trace<F> {
        let repeat_at = self.repeat_at();
        let input = self.sequence(x.into());
        let (x, mut first_spikes) = match input {
            Sequence::Dense(x) => (x, None),
            Sequence::Spikes(ref trains, _) => input.steps((0, self.steps), trains.samples()),
        };
        let mut trace = Trace::starting_with(x);
        // Layers already run by the one before them: the max pooling a spiking layer did, and
        // that spiking layer where a batch norm's output went straight into it.
        let mut done = 0;
        for i in 0..self.layers.len() {
            let x = trace.values.last().expect("input is there");
            if done > 0 {
                done -= 1;
                continue;
            }
            // Flatten changes no value. While training, nothing but the next layer reads a
            // layer's output, so its input moves on as its output instead of being copied.
            if matches!(self.layers[i].op, Op::Flatten) && matches!(mode, Mode::Train { .. }) {
                let input = trace.values.last_mut().expect("input is there");
                let columns = input.ncols();
                let y = std::mem::replace(input, DMatrix::zeros(0, columns));
                trace.push(y, Extra::None, false);
                continue;
            }
            // A batch norm whose output is read once, by a spiking layer that pools its own
            // spikes and reads each step's input as it comes (not repeated from a static
            // prefix, which it would recompute its membranes from).
            if let (Op::BatchNorm(bn), Mode::Train { ranks, .. }) = (&self.layers[i].op, mode)
                && Some(i) != self.repeat_at()
                && let Some(s) =
                    self.pools_in_place(i + 1, mode).filter(|_| self.step_input(i + 1) == StepInput::EachStep)
            {
                let mut cache = NormCache::default();
                bn.statistics(x, &mut cache, ranks);
                let (y, winners, tape) =
                    s.forward_pooled(x, self.steps, StepInput::EachStep, Some(&bn.channel_norms(&cache)));
                let columns = x.ncols();
                trace.push(DMatrix::zeros(0, columns), Extra::Norm(cache), false);
                trace.push(DMatrix::zeros(0, columns), Extra::Spiking(tape), false);
                trace.push(y, Extra::PooledInPlace(winners), false);
                done = 2;
                continue;
            }
            if let Some(s) = self.pools_in_place(i, mode) {
                let columns = x.ncols() * if self.step_input(i) == StepInput::Same { self.steps } else { 1 };
                let (y, winners, tape) = s.forward_pooled(x, self.steps, self.step_input(i), None);
                trace.push(DMatrix::zeros(0, columns), Extra::Spiking(tape), false);
                trace.push(y, Extra::PooledInPlace(winners), false);
                done = 1;
                continue;
            }
            let repeated =
                (Some(i) == repeat_at && self.step_input(i) == StepInput::EachStep).then(|| self.repeat_over_steps(x));
            let (y, extra, how) = match first_spikes.take() {
                Some(spikes) => self.dense_on_events(i, spikes, mode),
                None => self.apply(i, repeated.as_ref().unwrap_or(x), mode),
            };
            trace.push(y, extra, how == StepForward::Smooth);
        }
        trace.scores = self.reduce_scores(trace.values.last().expect("input is there"));
        trace
    }

    /// Spiking layer `i`, where it pools its own output in place of the max pooling after it
    /// ([`Spiking::forward_pooled`]): while training, since its output then is not kept for the
    /// tallies, figures and rasters that evaluation reads, and where it takes each step's input.
    fn pools_in_place(&self, i: usize, mode: Mode) -> Option<&Spiking<F>> {
        let training = matches!(mode, Mode::Train { .. }) && !self.smooth;
        let Op::Spiking(s) = &self.layers[i].op else { return None };
        let pool_next = matches!(self.layers.get(i + 1).map(|l| &l.op), Some(Op::MaxPool(2)));
        let repeated = Some(i) == self.repeat_at() && self.step_input(i) == StepInput::EachStep;
        (training && pool_next && !repeated && s.pools_in_place(false)).then_some(s)
    }

    /// The batch-norm layer, if any: the one layer whose output for a sample depends on the
    /// other samples of the batch (while training).
    pub fn couples_samples(&self) -> Option<&Layer<F>> {
        self.layers.iter().find(|l| matches!(l.op, Op::BatchNorm(_)))
    }

    /// The layer whose input is the static prefix's output repeated over the steps, if any.
    fn repeat_at(&self) -> Option<usize> {
        self.static_prefix().filter(|&k| self.steps > 1 && k < self.layers.len())
    }

    /// How layer `i` takes its input over the steps: a spiking layer without recurrence reads
    /// the static prefix's output at every step ([`StepInput::Same`]); every other layer, a copy
    /// per step (a recurrent layer adds its recurrence to each).
    fn step_input(&self, i: usize) -> StepInput {
        match &self.layers[i].op {
            Op::Spiking(s) if Some(i) == self.repeat_at() && s.recurrent.is_none() => StepInput::Same,
            _ => StepInput::EachStep,
        }
    }

    /// Evaluates layers `range` on `x`, keeping nothing for a backward pass.
    pub fn eval_layers(&self, mut x: DMatrix<F>, range: std::ops::Range<usize>, soft: bool) -> DMatrix<F> {
        for i in range {
            x = self.apply(i, &x, Mode::Eval { soft }).0;
        }
        x
    }

    /// Whether the first layer reads its input as events over the steps: an event-driven Dense
    /// layer (its input spikes) in a model of two steps at least. It then takes them as
    /// deviations from each sample's majority values where the sequence holds fewer of them
    /// than spikes (rate-coded images, whose pixels mostly keep to one value; see
    /// [`crate::nn::spike_input`]).
    pub fn reads_input_events(&self) -> bool {
        let first = self.layers.first();
        self.steps >= 2 && first.is_some_and(|l| l.event_driven && matches!(&l.op, Op::Dense(d) if !d.binary))
    }

    /// Packs the first layer's weights for the tile multiply of its input spikes, where it runs
    /// ([`Gemm::spike_currents`]): for a trainer, after each update, so that a batch's chunks
    /// find them packed.
    pub fn refresh_tiles(&self) {
        if !self.reads_input_events() {
            return;
        }
        if let Some(Op::Dense(l)) = self.layers.first().map(|l| &l.op) {
            F::refresh_tiles(&l.weight, &self.tiles);
        }
    }

    /// `input` as the layers take it: the first layer's spikes and their base where it reads
    /// events ([`Self::reads_input_events`]; a dense input of spikes over whole steps is taken
    /// as spike trains), else the dense matrix.
    pub(super) fn sequence(&self, input: Input<F>) -> Sequence<F> {
        let trains = match input {
            Input::Spikes(trains) => trains,
            Input::Dense(x) => {
                let trains = self.reads_input_events().then(|| spike_input::spike_trains(&x, x.ncols() / self.steps));
                match trains.flatten() {
                    Some(trains) => trains,
                    None => return Sequence::Dense(x),
                }
            }
        };
        let base = spike_input::deviation_base(&trains);
        Sequence::Spikes(trains, base)
    }

    /// Event-driven Dense layer `i` on its input spikes: the currents by a tile multiply where
    /// the CPU has one ([`Gemm::spike_currents`]), else from the spikes' rows; the rows kept
    /// while training, for the backward pass.
    pub(super) fn dense_on_events(
        &self,
        i: usize,
        spikes: SpikeSteps,
        mode: Mode,
    ) -> (DMatrix<F>, Extra<F>, StepForward) {
        let Op::Dense(l) = &self.layers[i].op else { unreachable!("events go to a Dense layer") };
        let tiled = F::spike_currents(&l.weight, l.bias.as_ref(), spikes.trains, spikes.steps, &self.tiles);
        let training = matches!(mode, Mode::Train { .. });
        let rows = (training || tiled.is_none()).then(|| spike_input::rows(spikes.trains, spikes.steps, spikes.base));
        let y = tiled.unwrap_or_else(|| {
            let rows = rows.as_ref().expect("rows are taken where there is no tile multiply");
            linear::dense_forward_events(&l.weight, l.bias.as_ref(), rows)
        });
        (y, rows.map_or(Extra::None, Extra::Spikes), StepForward::Hard)
    }

    /// Layer `i` on its input `x`.
    pub(super) fn apply(&self, i: usize, x: &DMatrix<F>, mode: Mode) -> (DMatrix<F>, Extra<F>, StepForward) {
        let smooth_w = self.smooth.then_some(self.surrogate);
        let how = match &self.layers[i].op {
            Op::Step { smooth, .. } => self.step_forward(*smooth, mode),
            Op::Spiking(_) => self.step_forward(false, mode),
            _ => StepForward::Hard,
        };
        let steps = self.steps;
        let layer = &self.layers[i];
        let (y, extra) = match &layer.op {
            Op::Dense(l) => {
                if l.binary {
                    let w = l.effective(smooth_w.as_ref());
                    // Training multiplies +-1 by +-1 by XNOR and popcount (the same values);
                    // evaluation keeps the float product, the reference that `snn eval` and the
                    // benchmark hold the bit-packed inference against.
                    let training = matches!(mode, Mode::Train { .. });
                    let y = if training && smooth_w.is_none() && bits::is_signs(x) {
                        let mut y = bits::sign_product(&w, x);
                        if let Some(b) = &l.bias {
                            linear::add_bias(y.as_mut_slice(), b, 1);
                        }
                        y
                    } else {
                        linear::dense_forward(&w, l.bias.as_ref(), x)
                    };
                    (y, Extra::Weights(w))
                } else if layer.event_driven {
                    let input = SpikeRows::values(x);
                    (linear::dense_forward_events(&l.weight, l.bias.as_ref(), &input), Extra::Spikes(input))
                } else {
                    (linear::dense_forward(&l.weight, l.bias.as_ref(), x), Extra::None)
                }
            }
            Op::Conv(l, g) => {
                let w = l.binary.then(|| l.effective(smooth_w.as_ref()));
                let effective = w.as_ref().unwrap_or(&l.weight);
                let (y, kept) = if layer.event_driven {
                    // Its columns' steps, whose spikes may be taken as deviations from each
                    // sample's majority (any grouping of the columns would be exact; this one
                    // makes the deviations few).
                    let steps = if self.static_prefix().is_some_and(|k| i < k) { 1 } else { steps };
                    conv::forward_events(g, effective, l.bias.as_ref(), x, steps)
                } else {
                    conv::forward(g, effective, l.bias.as_ref(), x)
                };
                (y, Extra::Conv { weights: w, kept })
            }
            Op::MaxPool(size) => {
                let (y, winners) = pool::max_forward(layer.input, *size, x);
                (y, Extra::Winners(winners))
            }
            Op::AvgPool(size) => (pool::avg_forward(layer.input, *size, x), Extra::None),
            Op::BatchNorm(bn) => match mode {
                Mode::Train { ranks, .. } => {
                    let mut cache = NormCache::default();
                    let y = bn.forward_train(x, &mut cache, ranks);
                    (y, Extra::Norm(cache))
                }
                Mode::Eval { .. } => (bn.forward_eval(x), Extra::None),
            },
            Op::Step { step, .. } => (step.forward(x, how), Extra::None),
            Op::Relu => (activation::relu_forward(x), Extra::None),
            Op::Dropout(rate) => match mode {
                Mode::Train { seed, epoch, samples, .. } if *rate > 0.0 => {
                    let n = x.nrows();
                    // Columns cycle through the samples once per step: each sample keeps its
                    // mask at every step (the same key), as multi-step dropout does, so one
                    // step's masks are drawn and kept. Each sample's mask from its own stream:
                    // drawn in parallel, the same masks.
                    let mut mask = vec![F::zero(); (n * samples.len()).min(x.len())];
                    mask.par_chunks_mut(n.max(1)).zip(samples).for_each(|(column, &sample)| {
                        let key = (epoch as u64) << 40 ^ (sample as u64) << 8 ^ i as u64;
                        activation::dropout_mask(*rate, n, &mut rng::stream(seed, Purpose::Dropout, key), column);
                    });
                    let y = activation::masked(x, &mask);
                    (y, Extra::Mask(mask))
                }
                _ => (x.clone(), Extra::None),
            },
            Op::Flatten => (x.clone(), Extra::None),
            Op::Spiking(s) => {
                let (y, tape) = s.forward(x, steps, how == StepForward::Smooth, self.step_input(i));
                (y, Extra::Spiking(tape))
            }
        };
        (y, extra, how)
    }

    /// Gradients of every parameter (in [`LayerNet::params`] order) given the gradient of the
    /// loss with respect to the scores of a training forward pass.
    pub fn backward(&self, trace: &Trace<F>, d_scores: DMatrix<F>, ranks: &dyn Exchange) -> Vec<DMatrix<F>> {
        self.backward_observed(trace, d_scores, ranks, |_, _| {})
    }

    /// [`LayerNet::backward`], showing `observe(i, dL/dy_i)` the gradient reaching the output
    /// of every layer i on its way down.
    pub fn backward_observed(
        &self,
        trace: &Trace<F>,
        d_scores: DMatrix<F>,
        ranks: &dyn Exchange,
        observe: impl FnMut(usize, &DMatrix<F>),
    ) -> Vec<DMatrix<F>> {
        let samples = d_scores.ncols();
        let mut sums = Sums::new(self);
        let dy = self.spread_scores(d_scores);
        self.backward_through(trace, dy, samples, &[], &mut sums, ranks, observe);
        self.finish(sums)
    }

    /// What a rank whose share of the batch is empty does in a training step: takes part in the
    /// batch-norm statistics the other ranks exchange (forward, then backward in reverse), with
    /// nothing of its own, and so updates the running statistics as they do.
    pub fn join_batch_statistics(&mut self, ranks: &dyn Exchange) {
        let mut passed = Vec::new();
        for layer in &mut self.layers {
            if let Op::BatchNorm(bn) = &mut layer.op {
                let nothing = DMatrix::zeros(layer.input.size(), 0);
                let mut cache = NormCache::default();
                bn.forward_train(&nothing, &mut cache, ranks);
                bn.update_running(&cache);
                passed.push((&*bn, nothing, cache));
            }
        }
        for (bn, nothing, cache) in passed.iter().rev() {
            bn.backward(cache, nothing, nothing, ranks);
        }
    }

    /// The backward pass through every layer of a forward pass (`trace`, of the whole sequence
    /// or of one segment of it, whose spiking layers started from `starts`, empty for rest),
    /// from dL/d(output), adding into `sums`. Weight gradients of layers that run over the steps
    /// are summed step by step from the last, so a sequence taken in segments sums them in the
    /// same order as taken whole. `ranks` hold the batch's other shares (batch norm sums over them).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward_through(
        &self,
        trace: &Trace<F>,
        mut dy: DMatrix<F>,
        samples: usize,
        starts: &[Option<SegmentState<F>>],
        sums: &mut Sums<F>,
        ranks: &dyn Exchange,
        mut observe: impl FnMut(usize, &DMatrix<F>),
    ) {
        let repeat_at = self.repeat_at();
        for (i, layer) in self.layers.iter().enumerate().rev() {
            if Some(i + 1) == repeat_at && self.step_input(i + 1) == StepInput::EachStep {
                dy = self.sum_over_steps(dy);
            }
            observe(i, &dy);
            let x = &trace.values[i];
            let extra = &trace.extras[i];
            let needs_input_grad = i > 0;
            // The layer's output runs over the steps unless the layer is in the static prefix.
            let steps = dy.ncols() / samples.max(1);
            let grads = &mut sums.layers[i];
            dy = match (&layer.op, extra) {
                (Op::Dense(l), extra) => {
                    let w = if let Extra::Weights(w) = extra { w } else { &l.weight };
                    if let Extra::Spikes(input) = extra {
                        let (dw, db) = grads.split_at_mut(1);
                        let carried = sums.later_sums[i].as_deref();
                        let (dx, later) = linear::dense_backward_events(
                            w,
                            input,
                            &dy,
                            steps,
                            carried,
                            &mut dw[0],
                            db.first_mut(),
                            needs_input_grad,
                        );
                        sums.later_sums[i] = (input.form != SpikeForm::Values).then_some(later);
                        dx
                    } else if steps > 1 {
                        let (dw, db) = grads.split_at_mut(1);
                        linear::dense_backward_by_step(w, x, &dy, steps, &mut dw[0], db.first_mut(), needs_input_grad)
                    } else {
                        let (dw, db, dx) = linear::dense_backward(w, l.bias.is_some(), x, &dy, needs_input_grad);
                        grads[0] += dw;
                        if let Some(db) = db {
                            grads[1] += db;
                        }
                        dx
                    }
                }
                (Op::Conv(l, g), Extra::Conv { weights, kept }) => {
                    let w = weights.as_ref().unwrap_or(&l.weight);
                    let (dw, db, dx) = conv::backward(g, w, l.bias.is_some(), kept, &dy, needs_input_grad);
                    grads[0] += dw;
                    if let Some(db) = db {
                        grads[1] += db;
                    }
                    dx
                }
                (Op::MaxPool(size), Extra::Winners(w)) => pool::max_backward(layer.input, *size, w, &dy),
                (Op::MaxPool(_), Extra::PooledInPlace(_)) => dy,
                (Op::AvgPool(size), _) => pool::avg_backward(layer.input, *size, &dy),
                (Op::BatchNorm(bn), Extra::Norm(cache)) => {
                    let (dgamma, dbeta, dx) = bn.backward(cache, x, &dy, ranks);
                    grads[0] += dgamma;
                    grads[1] += dbeta;
                    dx
                }
                (Op::Step { step, .. }, _) => {
                    let how = if trace.smooth_steps[i] { StepForward::Smooth } else { StepForward::Hard };
                    if needs_input_grad { step.backward(x, &dy, how) } else { dy }
                }
                (Op::Relu, _) => activation::relu_backward(x, &dy),
                (Op::Dropout(_), Extra::Mask(mask)) => {
                    let mut dx = dy;
                    activation::mask_in_place(&mut dx, mask);
                    dx
                }
                (Op::Dropout(_) | Op::Flatten, _) => dy,
                (Op::Spiking(s), Extra::Spiking(tape)) => {
                    let carry = sums.carries[i].get_or_insert_with(|| s.carry(tape.block));
                    let start = starts.get(i).and_then(Option::as_ref);
                    let pooled = match trace.extras.get(i + 1) {
                        Some(Extra::PooledInPlace(winners)) => Some(&winners[..]),
                        _ => None,
                    };
                    let smooth = trace.smooth_steps[i];
                    s.backward_into(tape, x, &dy, steps, smooth, start, carry, self.step_input(i), pooled)
                }
                (op, _) => unreachable!("backward of {op:?} needs a training forward pass"),
            };
        }
    }

    /// The gradients in [`LayerNet::params`] order from the sums of a finished backward pass.
    pub(super) fn finish(&self, sums: Sums<F>) -> Vec<DMatrix<F>> {
        let smooth_w = self.smooth.then_some(&self.surrogate);
        let mut grads = Vec::new();
        for ((layer, mut own), carry) in self.layers.iter().zip(sums.layers).zip(sums.carries) {
            match &layer.op {
                Op::Dense(l) | Op::Conv(l, _) => {
                    l.latent_gradient(&mut own[0], smooth_w);
                    grads.extend(own);
                }
                Op::Spiking(s) => grads.extend(carry.map(|c| s.carried_gradients(&c)).unwrap_or_default()),
                _ => grads.extend(own),
            }
        }
        grads
    }

    /// The trainable parameters, layer by layer: weight then bias; gamma then beta.
    pub fn params(&self) -> Vec<&DMatrix<F>> {
        self.named_params().into_iter().map(|(_, p)| p).collect()
    }

    /// Parameters with names such as `layers[3] Dense.weight`.
    pub fn named_params(&self) -> Vec<(String, &DMatrix<F>)> {
        let mut out = Vec::new();
        for layer in &self.layers {
            let name = |p: &str| format!("{}.{p}", layer.label);
            match &layer.op {
                Op::Dense(l) | Op::Conv(l, _) => {
                    out.push((name("weight"), &l.weight));
                    out.extend(l.bias.as_ref().map(|b| (name("bias"), b)));
                }
                Op::BatchNorm(bn) => {
                    out.push((name("gamma"), &bn.gamma));
                    out.push((name("beta"), &bn.beta));
                }
                Op::Spiking(s) => out.extend(s.params().into_iter().map(|(p, m)| (name(p), m))),
                _ => {}
            }
        }
        out
    }

    pub fn params_mut(&mut self) -> Vec<&mut DMatrix<F>> {
        let mut out = Vec::new();
        for layer in &mut self.layers {
            match &mut layer.op {
                Op::Dense(l) | Op::Conv(l, _) => {
                    out.push(&mut l.weight);
                    out.extend(l.bias.as_mut());
                }
                Op::BatchNorm(bn) => {
                    out.push(&mut bn.gamma);
                    out.push(&mut bn.beta);
                }
                Op::Spiking(s) => out.extend(s.params_mut()),
                _ => {}
            }
        }
        out
    }

    /// State that is not trained by gradients (batch-norm running statistics), with names.
    pub fn named_buffers(&self) -> Vec<(String, &DMatrix<F>)> {
        let mut out = Vec::new();
        for layer in &self.layers {
            if let Op::BatchNorm(bn) = &layer.op {
                out.push((format!("{}.running_mean", layer.label), &bn.running_mean));
                out.push((format!("{}.running_var", layer.label), &bn.running_var));
            }
        }
        out
    }

    pub fn buffers_mut(&mut self) -> Vec<&mut DMatrix<F>> {
        let mut out = Vec::new();
        for layer in &mut self.layers {
            if let Op::BatchNorm(bn) = &mut layer.op {
                out.push(&mut bn.running_mean);
                out.push(&mut bn.running_var);
            }
        }
        out
    }

    /// Clips latent binary weights after an optimizer step.
    pub fn clip_binary(&mut self) {
        for layer in &mut self.layers {
            if let Op::Dense(l) | Op::Conv(l, _) = &mut layer.op {
                l.clip();
            }
        }
    }

    /// Mean cross-entropy of a batch's scores against `labels`, its gradient with respect to the
    /// scores (of the mean loss), and the number of correct predictions.
    pub fn loss(scores: &DMatrix<F>, labels: &[u8]) -> (f64, DMatrix<F>, usize) {
        let n = scores.ncols();
        let weight = F::of(1.0 / n as f64);
        let mut grad = DMatrix::zeros(scores.nrows(), n);
        let mut column = Vec::new();
        let (mut loss, mut correct) = (0.0, 0);
        for (j, &label) in labels.iter().enumerate() {
            let s = scores.column(j);
            let s = s.as_slice();
            loss += cross_entropy(s, label as usize, weight, &mut column);
            grad.column_mut(j).copy_from_slice(&column);
            correct += (argmax(s) == label as usize) as usize;
        }
        (loss / n as f64, grad, correct)
    }

    /// Whether some step layer runs smooth while training (concepts hardened at evaluation).
    pub fn has_smooth_units(&self) -> bool {
        self.layers.iter().any(|l| matches!(l.op, Op::Step { smooth: true, .. }))
    }

    /// Indices of the step, sign, ReLU and spiking (firing) layers: the hidden units whose
    /// activity is reported.
    pub fn activation_layers(&self) -> Vec<usize> {
        (0..self.layers.len())
            .filter(|&i| match &self.layers[i].op {
                Op::Step { .. } | Op::Relu => true,
                Op::Spiking(s) => s.fires(),
                _ => false,
            })
            .collect()
    }
}

/// A spiking layer from its spec, on input `shape`.
/// A spiking layer from its spec; recurrent weights start as PyTorch's Linear(n, n) does
/// (uniform in +-1/sqrt(n)), drawn from `stream`.
fn spiking_layer<F: Gemm>(
    spec: &LayerSpec,
    shape: Shape,
    dt_ms: f64,
    training: &Training,
    mut stream: rng::Stream,
) -> Spiking<F> {
    let channels = shape.channels();
    let (kind, tau_syn) = match *spec {
        LayerSpec::Lif { .. } => (Kind::Lif, None),
        LayerSpec::CubaLif { tau_syn_ms, .. } => (Kind::CubaLif, Some(tau_syn_ms)),
        LayerSpec::Alif { .. } => (Kind::Alif, None),
        LayerSpec::Li { .. } => (Kind::Li, None),
        _ => unreachable!("called for spiking layers only"),
    };
    let adaptation = match *spec {
        LayerSpec::Alif { tau_adapt_ms, beta_adapt, .. } => {
            Some(Adaptation { rho: F::of((-dt_ms / tau_adapt_ms).exp()), b: F::of(beta_adapt) })
        }
        _ => None,
    };
    let (tau_mem, threshold, reset, detach, surrogate, learn, recurrence) = match *spec {
        LayerSpec::Lif { tau_mem_ms, threshold, reset, detach_reset, surrogate, learn_tau, recurrent }
        | LayerSpec::CubaLif { tau_mem_ms, threshold, reset, detach_reset, surrogate, learn_tau, recurrent, .. }
        | LayerSpec::Alif { tau_mem_ms, threshold, reset, detach_reset, surrogate, learn_tau, recurrent, .. } => {
            (tau_mem_ms, threshold, reset, detach_reset, surrogate, learn_tau, recurrent)
        }
        LayerSpec::Li { tau_mem_ms, learn_tau } => {
            (tau_mem_ms, 1.0, Default::default(), None, None, learn_tau, Recurrence::None)
        }
        _ => unreachable!("called for spiking layers only"),
    };
    let recurrent = (recurrence != Recurrence::None).then(|| {
        let n = shape.size();
        let bound = 1.0 / (n as f64).sqrt();
        let self_connections = recurrence == Recurrence::AllToAll;
        let weight = DMatrix::from_fn(n, n, |r, c| {
            let w = F::of(bound * (2.0 * stream.random::<f64>() - 1.0));
            if r == c && !self_connections { F::zero() } else { w }
        });
        Recurrent { weight, self_connections }
    });
    let surrogate = surrogate.unwrap_or(training.surrogate);
    Spiking {
        kind,
        beta: Decay::new(tau_mem, dt_ms, learn, channels),
        alpha: tau_syn.map(|tau| Decay::new(tau, dt_ms, learn, channels)),
        threshold: F::of(threshold),
        reset,
        detach_reset: detach.unwrap_or(training.detach_reset),
        surrogate,
        derivative: crate::surrogate::DerivativeTable::new(surrogate),
        shape,
        recurrent,
        adaptation,
    }
}
