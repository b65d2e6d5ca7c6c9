//! Training and evaluating a layered model: shuffled mini-batches (the same shuffling streams as
//! the spiking trainer), one forward and backward pass per batch, the shared optimizers, then an
//! evaluation on the test split with hardened concepts.
//!
//! A model with batch norm runs a batch as one matrix per layer; the products split into fixed
//! blocks (see [`crate::nn::gemm`]). A model whose layers see one sample at a time runs the batch
//! in fixed chunks of [`CHUNK`] samples in parallel, each through all its layers, and adds the
//! chunks' gradients in chunk order: a step's many small per-step products leave a second thread
//! little to do inside one product. Either way a seed gives the same run with any number of
//! threads.

use nalgebra::DMatrix;
use rayon::prelude::*;

use super::net::{Input, LayerNet, Mode, Op, Trace};
use crate::data::encode::{encode_spikes_of, encoding_stream, intensity};
use crate::data::events::Events;
use crate::data::idx::Split;
use crate::data::spike_trains::SpikeTrains;
use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::nn::gemm::Gemm;
use crate::nn::loss::argmax;
use crate::nn::optim::{self, OptimizerState};
use crate::ranks::{Alone, Exchange, WordReader, Words};
use crate::records::PassTotals;
use crate::records::{History, RunState, SavedParameters};
use crate::spec::{Bptt, Network, Training};

/// Samples per batch when evaluating.
const EVAL_BATCH: usize = 500;

/// Samples per chunk of a training batch, for models whose samples do not interact.
const CHUNK: usize = 32;

/// Gradient elements per parallel piece when the chunks' gradients are added.
const COMBINE_SLICE: usize = 1 << 15;

/// Images `indices` of `split` as a `pixels x samples` batch, intensities scaled to [0, 1].
pub fn batch(split: &Split, indices: &[usize]) -> DMatrix<f32> {
    let pixels = split.images.pixels_per_image();
    let mut x = DMatrix::zeros(pixels, indices.len());
    for (column, &i) in x.as_mut_slice().chunks_mut(pixels).zip(indices) {
        for (v, &p) in column.iter_mut().zip(split.images.image(i)) {
            *v = intensity(p);
        }
    }
    x
}

/// Images `indices` of `split` as `net`'s input: `pixels x samples` intensities when the input
/// is the same at every step (models without spiking layers, and the direct-current encoder;
/// the model repeats it over the steps where needed), else encoded over the steps, rate coding
/// drawing from each sample's stream of the run's `seed` (of `epoch` while training, the fixed
/// evaluation stream with None): the spikes as bits where the first layer reads events
/// ([`LayerNet::reads_input_events`]), else `pixels x (steps samples)`, step-major.
pub fn model_input<F: Gemm>(
    net: &LayerNet<F>,
    split: &Split,
    indices: &[usize],
    seed: u64,
    epoch: Option<u32>,
) -> Input<f32> {
    if net.static_prefix().is_some() {
        return Input::Dense(batch(split, indices));
    }
    if net.reads_input_events() {
        let mut trains = SpikeTrains::new(net.input.size(), net.steps);
        let spikes = trains.push_samples(indices.len());
        encode_spikes_of(&net.encoder, |i| split.images.image(i), indices, (seed, epoch), net.steps, spikes);
        return Input::Spikes(trains);
    }
    let (inputs, samples) = (net.input.size(), indices.len());
    let mut x = DMatrix::zeros(inputs, samples * net.steps);
    let mut events = Events::default();
    for (b, &i) in indices.iter().enumerate() {
        let mut stream = encoding_stream(seed, epoch, i);
        net.encoder.encode(split.images.image(i), net.steps, &mut stream, &mut events);
        for t in 0..net.steps {
            let column = t * samples + b;
            let (ids, values) = events.step(t);
            for (&k, &v) in ids.iter().zip(values) {
                x[(k as usize, column)] = v;
            }
        }
    }
    Input::Dense(x)
}

/// What an evaluation pass saw of the hidden units.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    /// Labels of the activation layers (step, sign, ReLU), in order.
    pub layers: Vec<String>,
    /// Share of outputs above zero (a step unit that fired, a ReLU that passed).
    pub on_share: Vec<f64>,
    /// Share of units whose output never changed over the samples (dead: no signal, and for
    /// step units no gradient either).
    pub dead_share: Vec<f64>,
    /// Share of outputs within 0.05 of 0 or 1 (Heaviside layers; NaN for others): how binary
    /// smooth concepts already are.
    pub near_binary: Vec<f64>,
}

/// Evaluation of `net` on `split`; `soft` keeps smooth-mode units smooth instead of hardening
/// them to H(x); a rate-coded spiking model encodes with the run's `seed`. Chunks of samples run
/// in parallel, each whole (encoding, forward, tallies), and their tallies are added in chunk
/// order, so the figures are the same with any number of threads.
pub fn evaluate(net: &LayerNet<f32>, split: &Split, soft: bool, seed: u64) -> (PassTotals, Activity) {
    let classes = net.classes();
    let layers = net.activation_layers();
    let mut totals = PassTotals { confusion: vec![0; classes * classes], ..PassTotals::default() };
    let units: Vec<usize> = layers.iter().map(|&l| net.layers[l].output.size()).collect();
    let mut seen = Seen::new(&units);
    let indices: Vec<usize> = (0..split.len()).collect();
    // Every step's values are kept while a chunk runs: fewer samples per chunk with more steps.
    let chunks: Vec<&[usize]> = indices.chunks((EVAL_BATCH / net.steps).max(1)).collect();
    // A group of chunks at a time, so that what waits to be added stays small.
    for group in chunks.chunks(EVAL_GROUP) {
        let tallies: Vec<(ChunkScores, Seen)> =
            group.par_iter().map(|chunk| evaluate_chunk(net, (split, chunk), soft, seed, (&layers, &units))).collect();
        for (scores, chunk_seen) in tallies {
            totals.samples += scores.labels.len();
            totals.loss += scores.loss * scores.labels.len() as f64;
            totals.correct += scores.correct;
            for (&label, &predicted) in scores.labels.iter().zip(&scores.predicted) {
                totals.confusion[label as usize * classes + predicted as usize] += 1;
            }
            totals.predictions.extend(scores.predicted);
            seen.add(chunk_seen);
        }
    }
    let activity = Activity {
        layers: layers.iter().map(|&l| net.layers[l].label.clone()).collect(),
        on_share: seen.on.iter().zip(&seen.values).map(|(&o, &n)| o as f64 / n.max(1) as f64).collect(),
        dead_share: seen
            .changed
            .iter()
            .map(|c| c.iter().filter(|&&c| !c).count() as f64 / c.len().max(1) as f64)
            .collect(),
        near_binary: layers
            .iter()
            .zip(seen.near.iter().zip(&seen.values))
            .map(|(&l, (&k, &n))| match &net.layers[l].op {
                Op::Step { step, .. } if step.low == 0.0 => k as f64 / n.max(1) as f64,
                _ => f64::NAN,
            })
            .collect(),
    };
    (totals, activity)
}

/// Chunks evaluated in parallel before their tallies are added.
const EVAL_GROUP: usize = 16;

/// One chunk's scores: its labels, its mean loss, the classes predicted.
struct ChunkScores {
    labels: Vec<u8>,
    loss: f64,
    correct: usize,
    predicted: Vec<u8>,
}

/// What an evaluation saw of each activation layer's outputs, over the samples so far.
struct Seen {
    /// Outputs above zero, outputs within 0.05 of 0 or 1, outputs in all.
    on: Vec<u64>,
    near: Vec<u64>,
    values: Vec<u64>,
    /// Per unit: its first output, and whether any later output differed from it.
    first: Vec<Vec<f32>>,
    changed: Vec<Vec<bool>>,
}

impl Seen {
    /// Nothing seen yet of layers of `units` units each.
    fn new(units: &[usize]) -> Self {
        let layers = units.len();
        Seen {
            on: vec![0; layers],
            near: vec![0; layers],
            values: vec![0; layers],
            first: vec![Vec::new(); layers],
            changed: units.iter().map(|&n| vec![false; n]).collect(),
        }
    }

    /// Adds `later`, seen after these. A unit changed over both if it changed within either or
    /// if their first outputs differ.
    fn add(&mut self, later: Seen) {
        let layers = later.first.into_iter().zip(later.changed);
        for (k, (first, changed)) in layers.enumerate() {
            self.on[k] += later.on[k];
            self.near[k] += later.near[k];
            self.values[k] += later.values[k];
            if self.first[k].is_empty() {
                (self.first[k], self.changed[k]) = (first, changed);
                continue;
            }
            let units = self.changed[k].iter_mut().zip(changed);
            for ((c, l), (&a, &b)) in units.zip(self.first[k].iter().zip(&first)) {
                *c |= l || a != b;
            }
        }
    }
}

/// Evaluates samples `chunk` of `split`, tallying activation layers `layers` of `units` units.
fn evaluate_chunk(
    net: &LayerNet<f32>,
    (split, chunk): (&Split, &[usize]),
    soft: bool,
    seed: u64,
    (layers, units): (&[usize], &[usize]),
) -> (ChunkScores, Seen) {
    let trace = net.forward_keeping_statistics(model_input(net, split, chunk, seed, None), Mode::Eval { soft });
    let labels: Vec<u8> = chunk.iter().map(|&i| split.labels[i]).collect();
    let (loss, _, correct) = LayerNet::loss(trace.scores(), &labels);
    let predicted = (0..chunk.len()).map(|j| argmax(trace.scores().column(j).as_slice()) as u8).collect();
    let mut seen = Seen::new(units);
    for (k, &l) in layers.iter().enumerate() {
        let out = &trace.values[l + 1];
        if let Some(first) = out.as_slice().get(..units[k]) {
            seen.first[k] = first.to_vec();
            for column in out.as_slice().chunks_exact(units[k].max(1)) {
                for ((c, &v), &f) in seen.changed[k].iter_mut().zip(column).zip(first) {
                    *c |= v != f;
                }
            }
        }
        // Over the slice: nalgebra's element iterator does not vectorise, and took a seventh of
        // fashion_snn's test pass.
        let values = out.as_slice();
        seen.on[k] = values.iter().map(|&v| u64::from(v > 0.0)).sum();
        if matches!(&net.layers[l].op, Op::Step { step, .. } if step.low == 0.0) {
            seen.near[k] = values.iter().map(|&v| u64::from(v.abs() <= 0.05 || (1.0 - v).abs() <= 0.05)).sum();
        }
        seen.values[k] = out.len() as u64;
    }
    (ChunkScores { labels, loss, correct, predicted }, seen)
}

/// A model's training run between epochs (every model trains as a layer stack); `train::fit`
/// drives it.
pub struct LayerRun {
    pub state: RunState,
    pub net: LayerNet<f32>,
    /// Parameters whose gradient norm the history reports (the weights of Dense and Conv2d
    /// layers), with the activation layer that follows each (for its activity).
    reported: Vec<(usize, Option<usize>)>,
}

impl LayerRun {
    pub fn new(network: Network, network_text: String, training: Training, seed: u64) -> Result<Self> {
        let net = LayerNet::<f32>::from_spec(&network, &training, seed)?;
        let problem = match training.bptt {
            Bptt::Full => None,
            Bptt::Eprop => net.eprop_problem(),
            Bptt::Recompute { .. } | Bptt::Truncated { .. } => net.segment_problem(),
        };
        if let Some(problem) = problem {
            return Err(Error::Training(format!("training.bptt {:?}: {problem}", training.bptt)));
        }
        let params: Vec<DMatrix<f32>> = net.params().into_iter().cloned().collect();
        let optimizer = OptimizerState::new(&params, &training.optimizer);
        let names = net.named_params();
        let mut reported = Vec::new();
        let mut layer_names = Vec::new();
        let activations = net.activation_layers();
        for (p, (name, _)) in names.iter().enumerate() {
            if let Some(label) = name.strip_suffix(".weight") {
                let layer = net.layers.iter().position(|l| l.label == label).expect("parameter of a layer");
                let next_weight =
                    net.layers[layer + 1..].iter().position(|l| matches!(l.op, Op::Dense(_) | Op::Conv(..)));
                let limit = next_weight.map_or(net.layers.len(), |k| layer + 1 + k);
                let activation = activations.iter().position(|&a| a > layer && a < limit);
                reported.push((p, activation));
                layer_names.push(label.to_owned());
            }
        }
        let history = History { layer_names, ..History::default() };
        let state = RunState { network, network_text, training, seed, optimizer, history, epochs_done: 0 };
        Ok(LayerRun { state, net, reported })
    }

    /// Bytes one training batch keeps for back-propagation through time.
    pub fn tape_bytes(&self) -> f64 {
        let batch = self.state.training.batch_size as usize;
        match self.state.training.bptt {
            Bptt::Eprop => self.net.eprop_bytes(batch),
            bptt => self.net.tape_bytes(batch, bptt.segment()),
        }
    }

    /// The parameters as a checkpoint stores them, (layer label, parameter name, values), and
    /// the batch-norm buffers.
    pub fn parameters(&self) -> SavedParameters {
        let layers = self
            .net
            .named_params()
            .into_iter()
            .map(|(name, p)| {
                let (layer, param) = name.rsplit_once('.').expect("parameter names are layer.param");
                (layer.to_owned(), param.to_owned(), p.clone())
            })
            .collect();
        (layers, self.net.named_buffers().into_iter().map(|(n, b)| (n, b.clone())).collect())
    }

    /// Loads a checkpoint's parameters and buffers.
    pub fn load_parameters(&mut self, c: &Checkpoint) -> Result<()> {
        load_state(&mut self.net, c)
    }

    /// One training step on the samples `indices` of `split`: forward, backward, optimizer
    /// update (learning rate scaled by `lr_factor`), clipping of binary latent weights. Adds the
    /// batch to `totals` and returns the norms of the reported weight gradients, or the loss
    /// when it or a gradient is not finite (the weights are then left as they were).
    pub fn train_batch(
        &mut self,
        split: &Split,
        indices: &[usize],
        epoch: u32,
        lr_factor: f64,
        totals: &mut PassTotals,
        ranks: &dyn Exchange,
    ) -> std::result::Result<Vec<f64>, f64> {
        let state = &mut self.state;
        let batch = indices;
        let (seed, bptt) = (state.seed, state.training.bptt);
        let mine = if self.net.couples_samples().is_some() {
            // Batch norm takes the statistics of the whole batch: with several ranks, rank r
            // takes the r-th contiguous share of it, and the statistics' sums are exchanged.
            let share = |r: usize| batch.len() * r / ranks.size()..batch.len() * (r + 1) / ranks.size();
            let indices = &batch[share(ranks.rank())];
            let part = if indices.is_empty() {
                // A batch smaller than the ranks leaves some with nothing to add, but a part to
                // play in the batch statistics.
                self.net.join_batch_statistics(ranks);
                Part::empty(&self.net)
            } else {
                let (part, trace) = sample_pass(&self.net, split, indices, seed, epoch, bptt, ranks);
                if let Some(trace) = trace {
                    self.net.update_running_statistics(&trace);
                }
                part
            };
            if ranks.size() > 1 { reduce_over_ranks(part, ranks) } else { part }
        } else {
            // Chunk c of the batch is computed by rank c mod N; every rank gathers every chunk's
            // part and adds them in chunk order, as one process does: the same step bit for bit.
            let net = &self.net;
            let chunks: Vec<&[usize]> = batch.chunks(CHUNK).collect();
            let mine: Vec<usize> = (0..chunks.len()).filter(|c| c % ranks.size() == ranks.rank()).collect();
            let parts: Vec<Part> =
                mine.par_iter().map(|&c| sample_pass(net, split, chunks[c], seed, epoch, bptt, &Alone).0).collect();
            Part::combine(if ranks.size() > 1 { gather_parts(&mine, parts, chunks.len(), ranks) } else { parts })
        };
        let Part { loss, correct, mut grads, .. } = mine;
        let squares = optim::squared_norms(&grads);
        if !loss.is_finite() || squares.iter().any(|s| !s.is_finite()) {
            return Err(loss);
        }
        let norms = self.reported.iter().map(|&(p, _)| squares[p].sqrt()).collect();
        optim::clip_to_norm(&mut grads, &squares, state.training.clip_grad_norm);
        optim::update(
            &state.training.optimizer,
            state.training.weight_decay,
            lr_factor,
            &mut self.net.params_mut(),
            &grads,
            &mut state.optimizer,
        );
        self.net.clip_binary();
        self.net.refresh_tiles();
        totals.samples += batch.len();
        totals.loss += loss * batch.len() as f64;
        totals.correct += correct;
        Ok(norms)
    }

    /// The test pass with hardened concepts, and per reported layer the share of outputs on in
    /// the activation that follows it.
    pub fn test(&mut self, split: &Split) -> (PassTotals, Vec<f64>) {
        let (test, activity) = evaluate(&self.net, split, false, self.state.seed);
        let on = self.reported.iter().map(|&(_, a)| a.map_or(f64::NAN, |a| activity.on_share[a])).collect();
        (test, on)
    }
}

/// A training pass over some samples of a batch: their mean loss, how many were classified
/// correctly, and the gradients of the mean loss in [`LayerNet::params`] order.
struct Part {
    samples: usize,
    loss: f64,
    correct: usize,
    grads: Vec<DMatrix<f32>>,
}

impl Part {
    fn empty(net: &LayerNet<f32>) -> Self {
        let grads = net.params().iter().map(|p| DMatrix::zeros(p.nrows(), p.ncols())).collect();
        Part { samples: 0, loss: 0.0, correct: 0, grads }
    }

    /// The parts as one over all their samples: each part's gradients weighted by its share of
    /// the samples and added in the parts' order.
    fn combine(parts: Vec<Part>) -> Part {
        let samples: usize = parts.iter().map(|p| p.samples).sum();
        let mut parts = parts.into_iter();
        let mut total = parts.next().expect("a batch has a part");
        let weight = |n: usize| n as f32 / samples.max(1) as f32;
        let first = weight(total.samples);
        total.loss *= total.samples as f64;
        let rest: Vec<Part> = parts.collect();
        // Element by element, the parts in order: the same sums whatever the threads.
        for (l, t) in total.grads.iter_mut().enumerate() {
            t.as_mut_slice().par_chunks_mut(COMBINE_SLICE).enumerate().for_each(|(k, slice)| {
                let range = k * COMBINE_SLICE..k * COMBINE_SLICE + slice.len();
                slice.iter_mut().for_each(|x| *x *= first);
                for part in &rest {
                    let w = weight(part.samples);
                    slice.iter_mut().zip(&part.grads[l].as_slice()[range.clone()]).for_each(|(t, &x)| *t += x * w);
                }
            });
        }
        for part in &rest {
            total.loss += part.loss * part.samples as f64;
            total.correct += part.correct;
        }
        total.loss /= samples.max(1) as f64;
        total.samples = samples;
        total
    }
}

/// Forward and backward over the samples `indices` of `split` as one batch, whose statistics
/// `ranks` share; with the forward pass, when it kept one, for batch norm's running statistics.
fn sample_pass(
    net: &LayerNet<f32>,
    split: &Split,
    indices: &[usize],
    seed: u64,
    epoch: u32,
    bptt: Bptt,
    ranks: &dyn Exchange,
) -> (Part, Option<Trace<f32>>) {
    let labels: Vec<u8> = indices.iter().map(|&i| split.labels[i]).collect();
    let input = model_input(net, split, indices, seed, Some(epoch));
    let mode = Mode::Train { seed, epoch, samples: indices, ranks };
    let ((loss, correct, grads), trace) = match bptt {
        Bptt::Full => {
            let trace = net.forward_keeping_statistics(input, mode);
            let (loss, d_scores, correct) = LayerNet::loss(trace.scores(), &labels);
            let grads = net.backward(&trace, d_scores, ranks);
            ((loss, correct, grads), Some(trace))
        }
        Bptt::Recompute { every } => (net.segmented_pass(input, mode, &labels, every as usize, false), None),
        Bptt::Truncated { window } => (net.segmented_pass(input, mode, &labels, window as usize, true), None),
        Bptt::Eprop => (net.eprop_pass(&input.into_dense(), &labels), None),
    };
    (Part { samples: indices.len(), loss, correct, grads }, trace)
}

/// Every chunk's part of the batch, in chunk order, from the ranks that computed them (this one
/// computed the chunks `mine` into `parts`); `chunks` in all.
fn gather_parts(mine: &[usize], parts: Vec<Part>, chunks: usize, ranks: &dyn Exchange) -> Vec<Part> {
    let mut words = Words::default();
    for (&c, part) in mine.iter().zip(&parts) {
        words.push_u64(c as u64);
        words.push_u64(part.samples as u64);
        words.push_f64(part.loss);
        words.push_u64(part.correct as u64);
        words.push_u64(part.grads.len() as u64);
        for g in &part.grads {
            words.push_u64(g.nrows() as u64);
            words.push_u64(g.ncols() as u64);
            words.push_f32s(g.as_slice());
        }
    }
    let all = ranks.all_gather(&words.0);
    let mut read = WordReader::new(&all);
    let mut by_chunk: Vec<Option<Part>> = (0..chunks).map(|_| None).collect();
    while !read.done() {
        let c = read.u64() as usize;
        let (samples, loss, correct) = (read.u64() as usize, read.f64(), read.u64() as usize);
        let grads = (0..read.u64())
            .map(|_| {
                let (rows, cols) = (read.u64() as usize, read.u64() as usize);
                DMatrix::from_vec(rows, cols, read.f32s())
            })
            .collect();
        by_chunk[c] = Some(Part { samples, loss, correct, grads });
    }
    by_chunk.into_iter().map(|p| p.expect("every chunk computed by some rank")).collect()
}

/// The ranks' parts of the batch, gathered and combined in rank order on every rank. The sum's
/// order differs from one process's, so the weights agree with one process's to rounding, not
/// bit for bit (see tests/mpi.rs); models with batch norm only.
fn reduce_over_ranks(mine: Part, ranks: &dyn Exchange) -> Part {
    let mut words = Words::default();
    words.push_u64(mine.samples as u64);
    words.push_f64(mine.loss);
    words.push_u64(mine.correct as u64);
    for g in &mine.grads {
        words.push_f32s(g.as_slice());
    }
    let all = ranks.all_gather(&words.0);
    let mut read = WordReader::new(&all);
    let parts = (0..ranks.size())
        .map(|_| {
            let (samples, loss, correct) = (read.u64() as usize, read.f64(), read.u64() as usize);
            let grads = mine.grads.iter().map(|g| DMatrix::from_vec(g.nrows(), g.ncols(), read.f32s())).collect();
            Part { samples, loss, correct, grads }
        })
        .collect();
    Part::combine(parts)
}

/// Loads a checkpoint's parameters and buffers into `net`, checking names and shapes.
/// In f64 the stored f32 values are taken exactly.
pub fn load_state<F: Gemm>(net: &mut LayerNet<F>, c: &Checkpoint) -> Result<()> {
    let names = net.named_params();
    let fits = c.layers.len() == names.len()
        && c.layers
            .iter()
            .zip(&names)
            .all(|((l, p, m), (name, q))| format!("{l}.{p}") == *name && m.shape() == q.shape());
    let buffers = net.named_buffers();
    let buffers_fit = c.buffers.len() == buffers.len()
        && c.buffers.iter().zip(&buffers).all(|((n, m), (name, q))| n == name && m.shape() == q.shape());
    if !fits || !buffers_fit {
        return Err(Error::Training("the checkpoint's parameters do not match the model's layers".into()));
    }
    let cast = |m: &DMatrix<f32>| m.map(|x| F::of(x as f64));
    for (p, (_, _, m)) in net.params_mut().into_iter().zip(&c.layers) {
        p.copy_from(&cast(m));
    }
    for (b, (_, m)) in net.buffers_mut().into_iter().zip(&c.buffers) {
        b.copy_from(&cast(m));
    }
    Ok(())
}

/// The trained model stored in a checkpoint, in f32 (as trained) or f64.
pub fn from_checkpoint<F: Gemm>(saved: &Checkpoint, path: &std::path::Path) -> Result<LayerNet<F>> {
    let (network, training) = saved.specs(path)?;
    let mut net = LayerNet::from_spec(&network, &training, saved.seed)?;
    load_state(&mut net, saved)?;
    Ok(net)
}
