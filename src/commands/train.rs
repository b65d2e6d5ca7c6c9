//! `snn train`, `snn eval` and `snn explain` as the command line runs them: load, train epoch by epoch with a
//! progress bar, and after every epoch write the checkpoint, the history and the training
//! curves (each atomically).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::data::idx::{FASHION_CLASSES, Split};
use crate::error::{Error, Result};
use crate::io::checkpoint;
use crate::io::hdf5_file;
use crate::models::binary::{PackedNet, PackedReport};
use crate::models::concepts::{self, ConceptLayer};
use crate::models::spikes::{self, ImageRun};
use crate::models::trainer::{Activity, LayerRun};
use crate::models::{self, LayerNet};
use crate::plot;
use crate::ranks::{Alone, Exchange};
use crate::records::Explanation;
use crate::records::PassTotals;
use crate::spec::Training;
use crate::train::fit;
use crate::train::setup::{self, TrainOptions};

/// What `snn train` reports at the end.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub run_name: String,
    pub surrogate: String,
    pub history: crate::records::History,
    pub epochs_run: u32,
    pub files: Vec<PathBuf>,
}

impl fmt::Display for TrainSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.history;
        writeln!(
            f,
            "{} trained with {}: {} epochs ({} in this run)",
            self.run_name,
            self.surrogate,
            h.epochs(),
            self.epochs_run
        )?;
        writeln!(
            f,
            "{:>5} {:>10} {:>9} {:>10} {:>9} {:>10}",
            "epoch", "train loss", "train acc", "test loss", "test acc", "samples/s"
        )?;
        for e in 0..h.epochs() {
            writeln!(
                f,
                "{:>5} {:>10.4} {:>8.2}% {:>10.4} {:>8.2}% {:>10.0}",
                e + 1,
                h.train_loss[e],
                100.0 * h.train_accuracy[e],
                h.test_loss[e],
                100.0 * h.test_accuracy[e],
                h.samples_per_s[e]
            )?;
        }
        for file in &self.files {
            writeln!(f, "wrote {}", file.display())?;
        }
        Ok(())
    }
}

/// Refuses, naming `path`, a run whose values kept for back-propagation through time would not
/// fit in the memory available; returns what they take.
fn check_training_memory(run: &LayerRun, training: &Training, path: &Path) -> Result<f64> {
    let bytes = run.tape_bytes();
    if let Some(free) = crate::engine::estimate::available_memory()
        && bytes > free
    {
        let size = crate::engine::estimate::size;
        return Err(Error::Data {
            path: path.to_owned(),
            message: format!(
                "training over {} steps at batch {} keeps about {} for back-propagation through time, {} \
                     available; shorten the sequence (--delay) or the batch, or keep less (--bptt recompute:K)",
                training.steps,
                training.batch_size,
                size(bytes),
                size(free)
            ),
        });
    }
    Ok(bytes)
}

/// What `snn validate` says of a network trained from data: the memory one training batch
/// keeps for back-propagation through time, after the checks training itself makes
/// (`training.bptt` against the layers, memory).
pub fn training_memory(network_path: &Path) -> Result<String> {
    let opts = TrainOptions { network: network_path.to_owned(), ..TrainOptions::default() };
    let (network, text, training) = setup::load_training(&opts)?;
    let seed = network.seed;
    let run = LayerRun::new(network, text, training.clone(), seed)?;
    let bytes = check_training_memory(&run, &training, network_path)?;
    Ok(format!(
        "training keeps about {} per batch of {} for the backward pass{}",
        crate::engine::estimate::size(bytes),
        training.batch_size,
        if training.steps > 1 {
            format!(" over {} steps (bptt {:?})", training.steps, training.bptt)
        } else {
            String::new()
        }
    ))
}

pub fn train(opts: &TrainOptions) -> Result<TrainSummary> {
    train_shared(opts, &Alone)
}

/// [`train`] as one of the ranks of `ranks`: each computes its share of every batch, all hold
/// the same weights after every step, and rank 0 alone writes the files and shows progress.
pub fn train_shared(opts: &TrainOptions, ranks: &dyn Exchange) -> Result<TrainSummary> {
    let (network, text, training) = setup::load_training(opts)?;
    let dir = setup::data_folder(opts.data.as_deref(), &training, &opts.network);
    let data = setup::load_data(&dir, &network, &training, opts.train_samples, opts.test_samples)?;
    let out = opts.out.clone().unwrap_or_else(|| Path::new("outputs").join(&network.name));
    let checkpoint_path = out.join("checkpoint.h5");
    let seed = opts.seed.unwrap_or(network.seed);
    let name = network.name.clone();
    let mut run = LayerRun::new(network, text, training.clone(), seed)?;
    check_training_memory(&run, &training, &opts.network)?;
    let writer = ranks.rank() == 0;
    if opts.resume {
        let saved = checkpoint::read(&checkpoint_path)?;
        if saved.network_spec != run.state.network_text {
            return Err(Error::Training(format!(
                "{} was written for another version of {}; resume needs the same network file",
                checkpoint_path.display(),
                opts.network.display()
            )));
        }
        let (_, saved_training) = saved.specs(&checkpoint_path)?;
        // A resumed run keeps everything but the number of epochs from the checkpoint.
        run.state.training = Training { epochs: training.epochs, ..saved_training };
        fit::restore(&mut run, saved)?;
    }
    let start = run.state.epochs_done;
    let epochs = run.state.training.epochs;
    if start >= epochs {
        return Err(Error::Training(format!(
            "{} already holds {start} epochs; ask for more with --epochs",
            checkpoint_path.display()
        )));
    }
    if writer {
        std::fs::create_dir_all(&out).map_err(|e| Error::write(&out, e))?;
    }
    let history_path = out.join("history.h5");
    let curves_path = out.join("training_curves.png");
    let samples = data.train.len();
    for epoch in start..epochs {
        let bar = (opts.progress && writer).then(|| {
            let bar = indicatif::ProgressBar::new(samples as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("epoch {prefix} {bar:30} {pos}/{len} {msg} [{elapsed}<{eta}]")
                    .expect("static template"),
            );
            bar.set_prefix(format!("{}/{epochs}", epoch + 1));
            bar
        });
        let started = std::time::Instant::now();
        fit::epoch(&mut run, &data, ranks, &mut |done, loss, acc| {
            if let Some(bar) = &bar {
                bar.set_position(done as u64);
                let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("loss {loss:.4} acc {:.1}% {rate:.0} samples/s", 100.0 * acc));
            }
        })?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if writer {
            checkpoint::write(&checkpoint_path, &fit::checkpoint(&run))?;
            checkpoint::write_history(&history_path, &run.state.history)?;
            plot::training_curves(&run.state.history, &name, &curves_path)?;
        }
    }
    Ok(TrainSummary {
        run_name: name,
        surrogate: run.state.training.surrogate.to_string(),
        history: run.state.history.clone(),
        epochs_run: epochs - start,
        files: vec![checkpoint_path, history_path, curves_path],
    })
}

/// What `snn eval` reports.
#[derive(Debug, Clone)]
pub struct EvalSummary {
    pub totals: PassTotals,
    pub classes: usize,
    /// What the hidden units did.
    pub activity: Activity,
    /// Models with smooth-mode (concept) units: the same test set with the units left smooth.
    pub soft: Option<(PassTotals, Activity)>,
    /// Binary models: bit-packed against float inference of the binary layers.
    pub packed: Option<PackedReport>,
    pub files: Vec<PathBuf>,
}

impl fmt::Display for EvalSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.totals;
        writeln!(
            f,
            "test accuracy {:.2}% ({} of {}), mean loss {:.4}",
            100.0 * t.accuracy(),
            t.correct,
            t.samples,
            t.mean_loss()
        )?;
        if let Some((soft, activity)) = &self.soft {
            writeln!(
                f,
                "concepts: hard (exactly H(x)) {:.2}%, soft (S(x)) {:.2}%, discretisation gap {:+.2} points",
                100.0 * t.accuracy(),
                100.0 * soft.accuracy(),
                100.0 * (t.accuracy() - soft.accuracy())
            )?;
            for (layer, share) in activity.layers.iter().zip(&activity.near_binary) {
                if share.is_finite() {
                    writeln!(f, "{layer}: {:.1}% of soft activations within 0.05 of 0 or 1", 100.0 * share)?;
                }
            }
        }
        if let Some(p) = &self.packed {
            writeln!(
                f,
                "bit-packed inference: {} of {} samples with bit-identical scores, {} with the same class; \
                 binary layers {:.1} ms float, {:.1} ms packed ({:.1}x)",
                p.identical,
                p.samples,
                p.same_prediction,
                1e3 * p.float_s,
                1e3 * p.packed_s,
                p.float_s / p.packed_s.max(1e-12)
            )?;
        }
        let a = &self.activity;
        for ((layer, on), dead) in a.layers.iter().zip(&a.on_share).zip(&a.dead_share) {
            writeln!(f, "{layer}: {:.1}% of outputs on, {:.1}% of units dead", 100.0 * on, 100.0 * dead)?;
        }
        writeln!(f, "confusion matrix (rows: true class, columns: predicted class):")?;
        for row in t.confusion.chunks(self.classes) {
            writeln!(f, "{}", row.iter().map(|c| format!("{c:>5}")).collect::<String>())?;
        }
        for file in &self.files {
            writeln!(f, "wrote {}", file.display())?;
        }
        Ok(())
    }
}

/// Evaluates a checkpoint on the test split of `data` (default: as for training); draws the
/// confusion matrix into `out` (default: beside the checkpoint).
pub fn eval(checkpoint_path: &Path, data: Option<&Path>, out: Option<&Path>) -> Result<EvalSummary> {
    let saved = checkpoint::read(checkpoint_path)?;
    let (network, training) = saved.specs(checkpoint_path)?;
    let dataset = setup::test_data(data, &network, &training, checkpoint_path, None)?;
    let mut files = Vec::new();
    let mut net = models::trainer::from_checkpoint(&saved, checkpoint_path)?;
    let (totals, activity) = models::trainer::evaluate(&net, &dataset.test, false, saved.seed);
    let soft = net.has_smooth_units().then(|| models::trainer::evaluate(&net, &dataset.test, true, saved.seed));
    let packed = PackedNet::new(&net).ok().map(|p| models::binary::compare(&mut net, &p, &dataset.test, 500));
    if let Ok(layer) = ConceptLayer::find(&net) {
        concept_figures(&mut net, layer, &dataset.test, &network.name, &folder(out, checkpoint_path)?, &mut files)?;
    }
    let classes = net.classes();
    let summary = EvalSummary { totals, classes, activity, soft, packed, files: Vec::new() };
    // Per test image: its label and the predicted class, for comparisons with other tools
    // (e.g. the same model exported to NIR and run elsewhere).
    let table = folder(out, checkpoint_path)?.join("predictions.csv");
    let mut csv = String::from("index,label,predicted\n");
    for (i, (label, predicted)) in dataset.test.labels.iter().zip(&summary.totals.predictions).enumerate() {
        csv.push_str(&format!("{i},{label},{predicted}\n"));
    }
    crate::io::atomic::write_atomically(&table, |tmp| std::fs::write(tmp, &csv).map_err(|e| Error::write(&table, e)))?;
    files.push(table);
    let figure = folder(out, checkpoint_path)?.join("confusion.png");
    plot::confusion(
        &summary.totals.confusion,
        classes,
        &format!("{}: test accuracy {:.2}%", network.name, 100.0 * summary.totals.accuracy()),
        &figure,
    )?;
    files.insert(0, figure);
    Ok(EvalSummary { files, ..summary })
}

/// Where figures go: `out`, else the checkpoint's folder; created if missing.
fn folder(out: Option<&Path>, checkpoint_path: &Path) -> Result<PathBuf> {
    let folder =
        out.map(Path::to_owned).unwrap_or_else(|| checkpoint_path.parent().unwrap_or(Path::new(".")).to_owned());
    std::fs::create_dir_all(&folder).map_err(|e| Error::write(&folder, e))?;
    Ok(folder)
}

/// The concept grid (top 8 test images per concept) and the class x concept weight map.
fn concept_figures(
    net: &mut LayerNet<f32>,
    layer: ConceptLayer,
    test: &Split,
    name: &str,
    folder: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<()> {
    let top = concepts::top_images(net, layer, test, 8);
    let grid = folder.join("concept_grid.png");
    plot::concept_grid(&top, test, &format!("{name}: test images that turn each concept on most"), &grid)?;
    let weights = folder.join("concept_weights.png");
    plot::concept_weights(
        layer.classifier(net).0,
        &FASHION_CLASSES,
        &format!("{name}: class x concept weights"),
        &weights,
    )?;
    files.extend([grid, weights]);
    Ok(())
}

/// What `snn explain` reports.
#[derive(Debug, Clone)]
pub struct ExplainSummary {
    pub explained: Explained,
    pub files: Vec<PathBuf>,
}

/// How an image's class is explained: by a concept model's concepts, or by a spiking stack's
/// spikes.
#[derive(Debug, Clone)]
pub enum Explained {
    Concepts(Explanation),
    Spikes(ImageRun),
}

fn class_name(k: usize) -> String {
    FASHION_CLASSES.get(k).map_or(k.to_string(), |s| s.to_string())
}

impl fmt::Display for ExplainSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.explained {
            Explained::Concepts(e) => {
                writeln!(
                    f,
                    "test image {}: true class {}, predicted {}",
                    e.index,
                    class_name(e.label),
                    class_name(e.predicted)
                )?;
                writeln!(
                    f,
                    "{} of {} concepts fired; score of {} = bias {:+.3} + their weights:",
                    e.fired.len(),
                    e.concepts,
                    class_name(e.predicted),
                    e.bias
                )?;
                for &(c, w) in &e.fired {
                    writeln!(f, "  concept {c:>3}: {w:+.3}")?;
                }
                let scores: Vec<String> =
                    e.scores.iter().enumerate().map(|(k, s)| format!("{}={s:.2}", class_name(k))).collect();
                writeln!(f, "class scores: {}", scores.join(", "))?;
            }
            Explained::Spikes(run) => {
                let steps = (run.recording.info.duration_ms / run.recording.info.dt_ms).round() as usize;
                writeln!(
                    f,
                    "test image {}: true class {}, predicted {} ({steps} steps)",
                    run.index,
                    class_name(run.label),
                    class_name(run.predicted)
                )?;
                for p in &run.recording.populations {
                    writeln!(
                        f,
                        "  {}: {} spikes from {} neurons ({:.3} per neuron and step)",
                        p.name,
                        p.total_spikes,
                        p.size,
                        p.total_spikes as f64 / p.size as f64 / steps.max(1) as f64
                    )?;
                }
                let scores: Vec<String> =
                    run.scores.iter().enumerate().map(|(k, s)| format!("{}={s:.2}", class_name(k))).collect();
                writeln!(f, "class scores (mean readout membrane or spike count): {}", scores.join(", "))?;
            }
        }
        for file in &self.files {
            writeln!(f, "wrote {}", file.display())?;
        }
        Ok(())
    }
}

/// `snn explain`: the concepts behind one test image's class (concept models), or the spikes
/// every layer of a spiking stack fired for it (written as `spikes_INDEX.h5`, drawn as
/// `raster_INDEX.png` and `readout_INDEX.png`).
pub fn explain(
    checkpoint_path: &Path,
    index: usize,
    data: Option<&Path>,
    out: Option<&Path>,
) -> Result<ExplainSummary> {
    let saved = checkpoint::read(checkpoint_path)?;
    let (network, training) = saved.specs(checkpoint_path)?;
    let mut net = models::trainer::from_checkpoint(&saved, checkpoint_path)?;
    let dataset = setup::test_data(data, &network, &training, checkpoint_path, None)?;
    let folder = folder(out, checkpoint_path)?;
    if net.is_spiking() {
        let run = spikes::record_image(
            &mut net,
            &dataset.test,
            index,
            saved.seed,
            (&network.name, &saved.network_spec),
            network.dt_ms,
        )?;
        let (h5, raster, readout) = (
            folder.join(format!("spikes_{index}.h5")),
            folder.join(format!("raster_{index}.png")),
            folder.join(format!("readout_{index}.png")),
        );
        hdf5_file::write(&run.recording, &h5)?;
        let note = format!(", test image {index}: {} predicted {}", class_name(run.label), class_name(run.predicted));
        plot::raster(&run.recording, &note, &raster)?;
        plot::traces(&run.recording, &readout)?;
        return Ok(ExplainSummary { explained: Explained::Spikes(run), files: vec![h5, raster, readout] });
    }
    let explanation = concepts::explain(&mut net, &dataset.test, index)?;
    let figure = folder.join(format!("explain_{index}.png"));
    plot::explanation(&explanation, &dataset.test, &FASHION_CLASSES, &figure)?;
    Ok(ExplainSummary { explained: Explained::Concepts(explanation), files: vec![figure] })
}
