//! `snn simulate`: load, build, run, record, draw, summarise. Nothing is written until the run
//! has succeeded, and every file is written under a temporary name and then renamed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::engine::estimate::{self, Estimate};
use crate::engine::{Share, Simulation};
use crate::error::{Error, Result};
use crate::io::hdf5_file;
use crate::plot;
use crate::ranks::{Alone, Exchange};
use crate::recording::Recording;
use crate::spec::{self, Model};

mod stack;
mod trained;

#[derive(Debug, Clone)]
pub struct SimulateOptions {
    pub network: PathBuf,
    pub stimulus: Option<PathBuf>,
    pub duration_ms: Option<f64>,
    pub seed: Option<u64>,
    /// Output folder; defaults to `outputs/<network name>`.
    pub out: Option<PathBuf>,
    /// Draw figures (raster, traces).
    pub figures: bool,
    /// Show a progress bar (the binary enables it on terminals).
    pub progress: bool,
    /// Weights from a training checkpoint (`snn train`), replacing the projections' own.
    pub checkpoint: Option<PathBuf>,
}

/// What a run did, printed by the binary.
#[derive(Debug, Clone)]
pub struct Summary {
    pub recording: Recording,
    pub neurons: usize,
    pub synapses: usize,
    pub synapse_bytes: usize,
    pub events: u64,
    pub build_s: f64,
    pub run_s: f64,
    pub files: Vec<PathBuf>,
    /// With a checkpoint: the readout's predicted class, and the image's label when the
    /// stimulus presents a data-set image.
    pub prediction: Option<(usize, Option<u8>)>,
    /// Whether the classes are Fashion-MNIST's (named), not a generated task's.
    pub fashion_classes: bool,
}

/// `predicted class 4 (Coat), label 4 (Coat)`; without the names for a generated task.
fn describe_prediction(predicted: usize, label: Option<u8>, fashion: bool) -> String {
    let name = |c: usize| match crate::data::idx::FASHION_CLASSES.get(c) {
        Some(name) if fashion => format!(" ({name})"),
        _ => String::new(),
    };
    let mut text = format!("predicted class {predicted}{}", name(predicted));
    if let Some(l) = label {
        text += &format!(", label {l}{}", name(l as usize));
    }
    text
}

/// Whether the stimulus presents a data-set image, rather than a generated task's trial.
fn presents_fashion(model: &Model) -> bool {
    !model
        .stimulus
        .sources
        .iter()
        .any(|s| matches!(s.kind, spec::SourceKind::Image { encoder: crate::data::encode::Encoder::Recall { .. }, .. }))
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = &self.recording.info;
        writeln!(
            f,
            "network {}: {} neurons, {} synapses, dt {} ms, {} ms simulated, seed {}",
            info.network_name, self.neurons, self.synapses, info.dt_ms, info.duration_ms, info.seed
        )?;
        writeln!(f, "{:<22} {:>9} {:>10} {:>15} {:>7}", "population", "size", "spikes", "mean rate (Hz)", "CV ISI")?;
        for p in &self.recording.populations {
            let kind = if p.is_neuron { "" } else { " (source)" };
            let cv = p.cv_isi().map_or("-".to_string(), |cv| format!("{cv:.3}"));
            writeln!(
                f,
                "{:<22} {:>9} {:>10} {:>15.2} {:>7}",
                format!("{}{kind}", p.name),
                p.size,
                p.total_spikes,
                p.mean_rate_hz(info.duration_ms),
                cv
            )?;
        }
        let speed = info.duration_ms / 1000.0 / self.run_s.max(1e-12);
        writeln!(
            f,
            "build {:.3} s, run {:.3} s wall ({:.2}x real time), {} synaptic events ({:.3e} events/s)",
            self.build_s,
            self.run_s,
            speed,
            self.events,
            self.events as f64 / self.run_s.max(1e-12)
        )?;
        if let Some((predicted, label)) = self.prediction {
            writeln!(f, "{}", describe_prediction(predicted, label, self.fashion_classes))?;
        }
        for file in &self.files {
            writeln!(f, "wrote {}", file.display())?;
        }
        Ok(())
    }
}

/// The steps and seed of a run of `model`, from the command line or the network file.
fn run_length(model: &Model, opts: &SimulateOptions) -> Result<(u64, u64)> {
    let net = &model.network;
    let (dt_ms, seed) = (net.dt_ms, opts.seed.unwrap_or(net.seed));
    let duration = opts.duration_ms.unwrap_or(net.duration_ms);
    if !(duration.is_finite() && duration > 0.0) {
        return Err(Error::Invalid {
            path: PathBuf::from("--duration-ms"),
            problems: vec![format!("--duration-ms: must be a positive number, got {duration}")],
        });
    }
    let steps = (duration / dt_ms).round().max(1.0) as u64;
    Ok((steps, seed))
}

/// Estimates what `model` needs to simulate for `steps` steps (default: its duration) and
/// refuses it, naming `path`, when that exceeds the memory available.
pub fn check_memory(model: &Model, steps: Option<u64>, path: &Path) -> Result<Estimate> {
    let net = &model.network;
    let steps = steps.unwrap_or_else(|| (net.duration_ms / net.dt_ms).round().max(1.0) as u64);
    let estimate = estimate::estimate(model, steps, rayon::current_num_threads());
    estimate::check_fits(&estimate, estimate::available_memory(), path)?;
    Ok(estimate)
}

pub fn simulate(opts: &SimulateOptions) -> Result<Summary> {
    simulate_shared(opts, &Alone)
}

/// [`simulate`] as one of the ranks of `exchange`: each builds and runs its share, all end with
/// the same recording, and rank 0 alone writes the files.
pub fn simulate_shared(opts: &SimulateOptions, exchange: &dyn Exchange) -> Result<Summary> {
    // A trained model is compiled onto populations running its layers; an untrained network
    // is read as it is.
    let (model, trained) = match &opts.checkpoint {
        Some(checkpoint) => {
            let (model, trained) = stack::compile(&opts.network, checkpoint, opts.stimulus.as_deref())?;
            (model, Some(trained))
        }
        None => (spec::load_model(&opts.network, opts.stimulus.as_deref())?, None),
    };
    let (mut steps, seed) = run_length(&model, opts)?;
    check_memory(&model, Some(steps), &opts.network)?;
    if let Some(t) = &trained {
        steps += t.extra_steps;
    }
    let started = Instant::now();
    let mut sim = Simulation::build_shared(&model, seed, Share::of(exchange))?;
    if let Some(t) = &trained {
        t.load(&mut sim)?;
    }
    let build_s = started.elapsed().as_secs_f64();

    let bar = (opts.progress && exchange.rank() == 0).then(|| {
        let bar = indicatif::ProgressBar::new(steps);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} steps, {elapsed} elapsed, {eta} left")
                .expect("static template"),
        );
        bar
    });
    let started = Instant::now();
    sim.run_shared(steps, exchange, |done| {
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
    });
    let run_s = started.elapsed().as_secs_f64();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }

    let recording = Recording::from_simulation(&sim, &model);
    let prediction = match &trained {
        Some(t) => t.predict(&recording, sim.presented_label()),
        None => None,
    };
    let fashion_classes = presents_fashion(&model);
    let note = prediction.map(|(p, l)| format!(", {}", describe_prediction(p, l, fashion_classes))).unwrap_or_default();
    let out = opts.out.clone().unwrap_or_else(|| Path::new("outputs").join(&model.network.name));
    let mut files = Vec::new();
    if exchange.rank() == 0 {
        files = write_outputs(&recording, &out, opts.figures, &note)?;
    }
    Ok(Summary {
        recording,
        neurons: sim.neuron_count(),
        synapses: exchange.sum(sim.synapse_count() as u64) as usize,
        synapse_bytes: exchange.sum(sim.synapse_bytes() as u64) as usize,
        events: sim.events_delivered,
        build_s,
        run_s,
        files,
        prediction,
        fashion_classes,
    })
}

/// Writes spikes.h5 and, with `figures`, the raster and traces into `out`; returns the paths.
fn write_outputs(recording: &Recording, out: &Path, figures: bool, note: &str) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(|e| Error::write(out, e))?;
    let mut files = vec![out.join("spikes.h5")];
    hdf5_file::write(recording, &files[0])?;
    if figures {
        let raster = out.join("raster.png");
        plot::raster(recording, note, &raster)?;
        files.push(raster);
        if !recording.traces.is_empty() {
            let traces = out.join("traces.png");
            plot::traces(recording, &traces)?;
            files.push(traces);
        }
    }
    Ok(files)
}
