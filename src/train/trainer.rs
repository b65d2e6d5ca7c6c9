//! `snn train` and `snn eval`: epochs of shuffled mini-batches, data-parallel over the batch,
//! evaluation on the test split, history, figures and checkpoints.
//!
//! Determinism: a batch is cut into fixed chunks of [`SAMPLE_CHUNK`] samples; each chunk sums
//! its samples' gradients in order, and the chunks are summed in order, whatever thread ran
//! them. Shuffling and input encoding draw from streams derived from (seed, epoch, sample), so
//! the loss curve depends on the seed alone, and a run resumed from a checkpoint continues
//! exactly as if it had never stopped.

use std::path::{Path, PathBuf};

use nalgebra::DMatrix;
use rayon::prelude::*;

use super::bptt::{self, Events, Scratch, Tape};
use super::net::TrainNet;
use crate::data::encode::{Encoder, encoding_stream};
use crate::data::idx::{self, Dataset, Split};
use crate::data::tasks;
use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::models::Trainable;
use crate::nn::loss::{argmax, cross_entropy};
use crate::nn::optim::{self, OptimizerState};
use crate::ranks::{Exchange, WordReader, Words};
use crate::records::{History, PassTotals, RunState, SavedParameters};
use crate::spec::{self, Network, Training};
use crate::surrogate::Surrogate;

/// Samples per unit of parallel work; fixed so results do not depend on the thread count.
pub const SAMPLE_CHUNK: usize = 16;

/// Weights per unit of parallel work when summing the chunks' gradients.
const REDUCE_SLICE: usize = 1 << 16;

#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub network: PathBuf,
    pub surrogate: Option<Surrogate>,
    pub epochs: Option<u32>,
    pub data: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub resume: bool,
    pub seed: Option<u64>,
    pub train_samples: Option<u32>,
    pub test_samples: Option<u32>,
    pub progress: bool,
    /// The recall task's delay in steps, replacing the network's (`--delay`).
    pub delay: Option<i64>,
    /// How back-propagation through time holds the sequence, replacing the network's (`--bptt`).
    pub bptt: Option<crate::spec::Bptt>,
}

/// Per-chunk scratch space, kept across batches.
struct Workspace {
    grads: Vec<DMatrix<f32>>,
    tapes: Vec<Tape<f32>>,
    inputs: Vec<Events<f32>>,
    g_scores: Vec<Vec<f32>>,
    scratch: Scratch<f32>,
    loss: f64,
    correct: usize,
    spikes: Vec<u64>,
    /// Evaluation only: per layer, per neuron, whether it fired at all.
    fired: Vec<Vec<bool>>,
    confusion: Vec<u64>,
    /// Evaluation only: the predicted classes, in the pass's order.
    predictions: Vec<u8>,
}

impl Workspace {
    fn new(net: &TrainNet<f32>) -> Self {
        Workspace {
            grads: net.zero_gradients(),
            tapes: Vec::new(),
            inputs: Vec::new(),
            g_scores: Vec::new(),
            scratch: Scratch::default(),
            loss: 0.0,
            correct: 0,
            spikes: vec![0; net.layers.len()],
            fired: net.layers.iter().map(|l| vec![false; l.outputs()]).collect(),
            confusion: vec![0; net.classes() * net.classes()],
            predictions: Vec::new(),
        }
    }

    /// Zeroes the totals (the gradients are overwritten by each backward pass).
    fn reset(&mut self) {
        self.loss = 0.0;
        self.correct = 0;
        self.spikes.iter_mut().for_each(|s| *s = 0);
        self.fired.iter_mut().flatten().for_each(|f| *f = false);
        self.confusion.iter_mut().for_each(|c| *c = 0);
        self.predictions.clear();
    }
}

/// A pass over samples of one split: what to run and how.
struct Pass<'a> {
    net: &'a TrainNet<f32>,
    training: &'a Training,
    split: &'a Split,
    seed: u64,
    /// The training epoch (None: evaluation, with fixed encodings).
    epoch: Option<u32>,
    /// With Some(1 / batch size), also run backward and accumulate gradients.
    backward_weight: Option<f32>,
}

impl Pass<'_> {
    /// Runs the samples `indices` through the network in lockstep, accumulating into `ws`.
    fn run(&self, indices: &[usize], ws: &mut Workspace) {
        let net = self.net;
        let classes = net.classes();
        let count = indices.len();
        ws.inputs.resize(count.max(ws.inputs.len()), Events::default());
        ws.tapes.resize_with(count.max(ws.tapes.len()), Tape::default);
        ws.g_scores.resize(count.max(ws.g_scores.len()), Vec::new());
        for (&i, input) in indices.iter().zip(&mut ws.inputs) {
            let mut stream = encoding_stream(self.seed, self.epoch, i);
            self.training.encoder.encode(self.split.images.image(i), net.steps, &mut stream, input);
        }
        let inputs: Vec<&Events<f32>> = ws.inputs[..count].iter().collect();
        bptt::forward_batch(net, &inputs, &mut ws.tapes[..count], &mut ws.scratch);
        for ((&i, tape), g) in indices.iter().zip(&ws.tapes).zip(&mut ws.g_scores) {
            let label = self.split.labels[i] as usize;
            ws.loss += cross_entropy(&tape.scores, label, self.backward_weight.unwrap_or(1.0), g);
            let predicted = argmax(&tape.scores);
            ws.correct += (predicted == label) as usize;
            ws.confusion[label * classes + predicted] += 1;
            for (l, s) in ws.spikes.iter_mut().enumerate() {
                *s += tape.spike_count(l) as u64;
            }
            if self.backward_weight.is_none() {
                ws.predictions.push(predicted as u8);
                for (l, fired) in ws.fired.iter_mut().enumerate() {
                    for (_, j) in bptt::layer_spikes(tape, l) {
                        fired[j as usize] = true;
                    }
                }
            }
        }
        if self.backward_weight.is_some() {
            let g: Vec<&[f32]> = ws.g_scores[..count].iter().map(Vec::as_slice).collect();
            bptt::backward_batch(net, &inputs, &mut ws.tapes[..count], &g, &mut ws.grads, &mut ws.scratch);
        }
    }
}

/// The totals of one chunk's pass.
fn chunk_totals(ws: &Workspace, samples: usize) -> PassTotals {
    PassTotals {
        samples,
        loss: ws.loss,
        correct: ws.correct,
        spikes: ws.spikes.clone(),
        fired: ws.fired.clone(),
        confusion: ws.confusion.clone(),
        predictions: ws.predictions.clone(),
    }
}

/// Forward pass over a whole split (test evaluation), in parallel, deterministic.
pub fn evaluate(net: &TrainNet<f32>, training: &Training, split: &Split, seed: u64) -> PassTotals {
    let indices: Vec<usize> = (0..split.len()).collect();
    let chunks: Vec<&[usize]> = indices.chunks(SAMPLE_CHUNK * 4).collect();
    // A workspace per thread, reused; only each chunk's small totals are kept, and summed in
    // chunk order.
    let partial: Vec<PassTotals> = chunks
        .par_iter()
        .map_init(
            || Workspace { grads: Vec::new(), ..Workspace::new(net) },
            |ws, chunk| {
                ws.reset();
                Pass { net, training, split, seed, epoch: None, backward_weight: None }.run(chunk, ws);
                chunk_totals(ws, chunk.len())
            },
        )
        .collect();
    let mut totals = PassTotals::default();
    partial.iter().for_each(|chunk| totals.add(chunk));
    totals
}

/// A spiking population chain's training run between epochs; [`super::fit`] drives it.
pub struct Run {
    pub state: RunState,
    pub net: TrainNet<f32>,
    workspaces: Vec<Workspace>,
    total: Vec<DMatrix<f32>>,
}

impl Run {
    pub fn new(network: Network, network_text: String, training: Training, seed: u64) -> Result<Self> {
        if training.bptt != crate::spec::Bptt::Full {
            return Err(Error::Training(format!(
                "training.bptt {:?}: recomputation and truncation run on layer stacks; a chain of populations \
                 keeps the whole sequence (write it as Dense + Lif layers to cut it)",
                training.bptt
            )));
        }
        if let Some(n) = training.scored_steps {
            return Err(Error::Training(format!(
                "training.scored_steps {n}: a chain of populations scores every step; write it as Dense + \
                 Lif layers to score the last steps only"
            )));
        }
        let net = TrainNet::<f32>::from_spec(&network, &training, seed)?;
        let weights: Vec<DMatrix<f32>> = net.parameters().cloned().collect();
        let optimizer = OptimizerState::new(&weights, &training.optimizer);
        let history =
            History { layer_names: net.layers.iter().map(|l| l.name.clone()).collect(), ..History::default() };
        let total = weights.iter().map(|w| DMatrix::zeros(w.nrows(), w.ncols())).collect();
        let state = RunState { network, network_text, training, seed, optimizer, history, epochs_done: 0 };
        Ok(Run { state, net, workspaces: Vec::new(), total })
    }
}

impl Trainable for Run {
    fn state(&self) -> &RunState {
        &self.state
    }

    fn state_mut(&mut self) -> &mut RunState {
        &mut self.state
    }

    /// Forward and backward in chunks of [`SAMPLE_CHUNK`] samples in parallel, the chunks'
    /// gradients summed in chunk order, then the update. Reports the gradient norm per layer.
    /// With several ranks, chunk c is computed by rank c mod N, and every rank gathers all the
    /// chunks' gradients and totals and sums them in chunk order as one process does, so the
    /// weights stay bit-identical whatever the number of ranks.
    fn train_batch(
        &mut self,
        split: &Split,
        batch: &[usize],
        epoch: u32,
        lr_factor: f64,
        totals: &mut PassTotals,
        ranks: &dyn Exchange,
    ) -> Result<Vec<f64>, f64> {
        let chunks: Vec<&[usize]> = batch.chunks(SAMPLE_CHUNK).collect();
        let mine: Vec<usize> = (0..chunks.len()).filter(|c| c % ranks.size() == ranks.rank()).collect();
        while self.workspaces.len() < mine.len() {
            self.workspaces.push(Workspace::new(&self.net));
        }
        let state = &mut self.state;
        let pass = Pass {
            net: &self.net,
            training: &state.training,
            split,
            seed: state.seed,
            epoch: Some(epoch),
            backward_weight: Some(1.0 / batch.len() as f32),
        };
        self.workspaces[..mine.len()].par_iter_mut().zip(mine.par_iter()).for_each(|(ws, &c)| {
            ws.reset();
            pass.run(chunks[c], ws);
        });
        let used = &self.workspaces[..mine.len()];
        // Every chunk's gradients (per layer) and totals, in chunk order.
        let gathered: Vec<Vec<Vec<f32>>>;
        let (grads, chunk_totals): (Vec<Vec<&[f32]>>, Vec<PassTotals>) = if ranks.size() == 1 {
            let grads = used.iter().map(|ws| ws.grads.iter().map(|g| g.as_slice()).collect()).collect();
            (grads, used.iter().zip(&chunks).map(|(ws, chunk)| chunk_totals(ws, chunk.len())).collect())
        } else {
            let totals;
            (gathered, totals) = gather_chunks(used, &mine, &chunks, ranks);
            (gathered.iter().map(|g| g.iter().map(|g| g.as_slice()).collect()).collect(), totals)
        };
        // Sum the chunks' gradients, chunk after chunk for every weight (so the result does not
        // depend on the threads or ranks), spread over the threads by slices of the matrices.
        for (l, total) in self.total.iter_mut().enumerate() {
            total.as_mut_slice().par_chunks_mut(REDUCE_SLICE).enumerate().for_each(|(k, slice)| {
                let range = k * REDUCE_SLICE..k * REDUCE_SLICE + slice.len();
                slice.copy_from_slice(&grads[0][l][range.clone()]);
                for chunk in &grads[1..] {
                    for (t, g) in slice.iter_mut().zip(&chunk[l][range.clone()]) {
                        *t += g;
                    }
                }
            });
        }
        let mut batch_loss = 0.0;
        for chunk in &chunk_totals {
            batch_loss += chunk.loss;
            totals.add(chunk);
        }
        let squares = optim::squared_norms(&self.total);
        if !batch_loss.is_finite() || squares.iter().any(|s| !s.is_finite()) {
            return Err(batch_loss);
        }
        // A layer's norm covers every weight into it: its feed-forward and recurrent ones.
        let mut per_layer = squares[..self.net.layers.len()].to_vec();
        for (lp, s) in self.net.loops.iter().zip(&squares[self.net.layers.len()..]) {
            per_layer[lp.target] += s;
        }
        let norms = per_layer.iter().map(|s| s.sqrt()).collect();
        optim::clip_to_norm(&mut self.total, &squares, state.training.clip_grad_norm);
        let mut weights = self.net.parameters_mut();
        optim::update(
            &state.training.optimizer,
            state.training.weight_decay,
            lr_factor,
            &mut weights,
            &self.total,
            &mut state.optimizer,
        );
        Ok(norms)
    }

    /// The test pass, and per layer its spikes per neuron and step over the training pass.
    fn test(&mut self, split: &Split, train: &PassTotals) -> (PassTotals, Vec<f64>) {
        let test = evaluate(&self.net, &self.state.training, split, self.state.seed);
        let steps = (train.samples * self.net.steps) as f64;
        let rates =
            train.spikes.iter().zip(&self.net.layers).map(|(&s, l)| s as f64 / steps / l.outputs() as f64).collect();
        (test, rates)
    }

    /// Each parameter matrix under (its source population, its target population).
    fn parameters(&self) -> SavedParameters {
        let names = self.net.parameter_names(&self.state.network.inputs[0].name);
        let layers =
            names.into_iter().zip(self.net.parameters()).map(|((from, to), w)| (from, to, w.clone())).collect();
        (layers, Vec::new())
    }

    fn load_parameters(&mut self, c: &Checkpoint) -> Result<()> {
        self.net.load_weights(&c.layers)
    }
}

/// Every rank's chunks (`mine` computed into `used`), gathered: per chunk of the batch, in
/// order, its gradients per layer, and its totals, bit for bit.
fn gather_chunks(
    used: &[Workspace],
    mine: &[usize],
    chunks: &[&[usize]],
    ranks: &dyn Exchange,
) -> (Vec<Vec<Vec<f32>>>, Vec<PassTotals>) {
    let mut words = Words::default();
    for (ws, &c) in used.iter().zip(mine) {
        words.push_u64(c as u64);
        words.push_f64(ws.loss);
        words.push_u64(ws.correct as u64);
        words.push_u64s(&ws.spikes);
        words.push_u64s(&ws.confusion);
        words.push_u64(ws.grads.len() as u64);
        for g in &ws.grads {
            words.push_f32s(g.as_slice());
        }
    }
    let all = ranks.all_gather(&words.0);
    let mut by_chunk: Vec<Option<(Vec<Vec<f32>>, PassTotals)>> = vec![None; chunks.len()];
    let mut read = WordReader::new(&all);
    let fired = used.first().map(|ws| ws.fired.clone()).unwrap_or_default();
    while !read.done() {
        let c = read.u64() as usize;
        let loss = read.f64();
        let correct = read.u64() as usize;
        let spikes = read.u64s();
        let confusion = read.u64s();
        let grads = (0..read.u64()).map(|_| read.f32s()).collect();
        // Training leaves `fired` untouched (it is for evaluation): as every chunk's.
        let totals = PassTotals {
            samples: chunks[c].len(),
            loss,
            correct,
            spikes,
            fired: fired.clone(),
            confusion,
            predictions: Vec::new(),
        };
        by_chunk[c] = Some((grads, totals));
    }
    by_chunk.into_iter().map(|x| x.expect("every chunk computed by some rank")).unzip()
}

/// Where the data comes from: `--data`, else the spec's `data` (relative to the network file),
/// else Debian's Fashion-MNIST when installed, else the shipped subset.
pub fn data_folder(cli: Option<&Path>, training: &Training, network_path: &Path) -> PathBuf {
    if let Some(dir) = cli {
        return dir.to_owned();
    }
    if let Some(rel) = &training.data {
        return network_path.parent().unwrap_or(Path::new(".")).join(rel);
    }
    idx::default_folder()
}

/// The data for evaluating a checkpoint at `checkpoint_path`: its test split, cut to
/// `test_samples` (None: all of it, whatever the run was cut to).
pub fn test_data(
    data: Option<&Path>,
    network: &Network,
    training: &Training,
    checkpoint_path: &Path,
    test_samples: Option<u32>,
) -> Result<Dataset> {
    let dir = data_folder(data, training, checkpoint_path);
    load_data(&dir, network, &Training { test_samples: None, ..training.clone() }, None, test_samples)
}

/// Loads the data set, cut to the requested sizes, and checks it fits the network's input.
pub fn load_data(
    dir: &Path,
    network: &Network,
    training: &Training,
    train_samples: Option<u32>,
    test_samples: Option<u32>,
) -> Result<Dataset> {
    let encoder = training.encoder;
    let mut data = match encoder {
        Encoder::Recall { classes, .. } => {
            let train = train_samples.or(training.train_samples).map_or(tasks::RECALL_TRAIN_SAMPLES, |n| n as usize);
            let test = test_samples.or(training.test_samples).map_or(tasks::RECALL_TEST_SAMPLES, |n| n as usize);
            tasks::recall(classes, train, test)
        }
        _ => idx::load_dir(dir)?,
    };
    let pixels = data.train.images.pixels_per_image();
    let input = &network.inputs[0];
    if encoder.inputs(pixels) != input.size as usize {
        return Err(Error::Data {
            path: dir.to_owned(),
            message: format!(
                "the encoder feeds {}, but the input population {:?} has size {}",
                encoder.describe_input(pixels),
                input.name,
                input.size
            ),
        });
    }
    if let Some(steps) = encoder.sequence_steps(pixels) {
        if steps != training.steps as usize {
            return Err(Error::Data {
                path: dir.to_owned(),
                message: format!(
                    "{} takes {steps} steps, but training.steps is {}",
                    encoder.describe_sequence(pixels),
                    training.steps
                ),
            });
        }
    }
    let cut = |split: &mut Split, n: Option<u32>| {
        if let Some(n) = n.map(|n| (n as usize).min(split.len())) {
            split.labels.truncate(n);
            split.images.count = n;
            split.images.pixels.truncate(n * pixels);
        }
    };
    cut(&mut data.train, train_samples.or(training.train_samples));
    cut(&mut data.test, test_samples.or(training.test_samples));
    if data.train.is_empty() || data.test.is_empty() {
        return Err(Error::Data { path: dir.to_owned(), message: "no training or no test samples left".into() });
    }
    Ok(data)
}

/// Loads a training network and applies the command-line overrides.
pub fn load_training(opts: &TrainOptions) -> Result<(Network, String, Training)> {
    let (network, text) = spec::load_network(&opts.network)?;
    let mut training = spec::training_section(&network, &opts.network)?;
    if let Some(s) = opts.surrogate {
        training.surrogate = s;
    }
    if let Some(e) = opts.epochs {
        if e == 0 {
            return Err(Error::Invalid {
                path: "--epochs".into(),
                problems: vec!["--epochs: must be at least 1".into()],
            });
        }
        training.epochs = e;
    }
    if let Some(delay) = opts.delay {
        set_delay(&mut training, delay)?;
    }
    if let Some(bptt) = opts.bptt {
        training.bptt = bptt;
    }
    Ok((network, text, training))
}

/// Sets the recall task's delay, and the steps of a trial with it.
fn set_delay(training: &mut Training, delay: i64) -> Result<()> {
    let refuse = |why: String| Error::Invalid { path: "--delay".into(), problems: vec![format!("--delay: {why}")] };
    let Encoder::Recall { delay: ref mut d, cue_steps, recall_steps, .. } = training.encoder else {
        return Err(refuse(format!(
            "only the recall task has a delay; this network's encoder is {:?}",
            training.encoder
        )));
    };
    if !(0..=i64::from(u32::MAX) - i64::from(cue_steps) - i64::from(recall_steps)).contains(&delay) {
        return Err(refuse(format!("must be a number of steps >= 0, got {delay}")));
    }
    *d = delay as u32;
    training.steps = cue_steps + delay as u32 + recall_steps;
    Ok(())
}
