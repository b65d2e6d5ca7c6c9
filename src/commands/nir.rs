//! `snn nir run|import|export`: NIR graphs in and out of `snn`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::{checkpoint, nir_file};
use crate::models;
use crate::nir::run::{Program, check_dt};

/// What `snn nir run` did.
pub struct RunSummary {
    pub graph: PathBuf,
    pub out: PathBuf,
    pub steps: usize,
    pub batch: usize,
    /// Spikes per spiking node, in execution order.
    pub spikes: Vec<(String, usize)>,
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "ran {} for {} steps x {} samples", self.graph.display(), self.steps, self.batch)?;
        for (node, count) in &self.spikes {
            writeln!(f, "  {node}: {count} spikes")?;
        }
        writeln!(f, "wrote {}", self.out.display())
    }
}

/// Runs the graph in `graph` on the spikes in `input` (dataset `input`, T x B x input shape)
/// with time step `dt` seconds, and writes every node's spikes and membranes to `out`.
pub fn run(graph: &Path, dt: f64, input: &Path, out: &Path) -> Result<RunSummary> {
    let nir = nir_file::read(graph)?;
    let program = Program::compile(&nir, dt).map_err(|message| Error::Data { path: graph.to_path_buf(), message })?;
    let (steps, batch, values) = nir_file::read_run_input(input, program.input_shape())?;
    let record = program.run(&values, steps, batch);
    nir_file::write_run(out, &record, dt)?;
    let spikes = record
        .arrays
        .iter()
        .filter_map(|(name, _, v)| {
            name.strip_prefix("spk_").map(|n| (n.to_string(), v.iter().filter(|&&s| s != 0.0).count()))
        })
        .collect();
    Ok(RunSummary { graph: graph.to_path_buf(), out: out.to_path_buf(), steps, batch, spikes })
}

/// What `snn nir export` did.
pub struct ExportSummary {
    pub out: PathBuf,
    pub nodes: usize,
    pub warnings: Vec<String>,
}

impl fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "wrote {} ({} nodes)", self.out.display(), self.nodes)?;
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// Writes the trained layer stack in `checkpoint` as a NIR graph for time step `dt` seconds.
pub fn export(checkpoint: &Path, out: &Path, dt: f64) -> Result<ExportSummary> {
    check_dt(dt).map_err(|message| Error::Data { path: checkpoint.to_path_buf(), message })?;
    let saved = checkpoint::read(checkpoint)?;
    let net = models::trainer::from_checkpoint(&saved, checkpoint)?;
    let exported =
        models::nir::export(&net, dt).map_err(|message| Error::Data { path: checkpoint.to_path_buf(), message })?;
    nir_file::write(out, &exported.graph)?;
    Ok(ExportSummary { out: out.to_path_buf(), nodes: exported.graph.nodes.len(), warnings: exported.warnings })
}

/// What `snn nir import` did.
pub struct ImportSummary {
    pub network: PathBuf,
    pub checkpoint: PathBuf,
    pub layers: usize,
    pub notes: Vec<String>,
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "imported {} layers", self.layers)?;
        for n in &self.notes {
            writeln!(f, "  {n}")?;
        }
        writeln!(f, "wrote {}", self.network.display())?;
        writeln!(f, "wrote {}", self.checkpoint.display())
    }
}

/// Reads a NIR chain graph as a layer stack: writes `network.ron` and `checkpoint.h5` (its
/// weights, epoch 0) into `out`, to evaluate, train further or export again.
pub fn import(graph_path: &Path, dt: f64, steps: u32, out: &Path) -> Result<ImportSummary> {
    let data = |message: String| Error::Data { path: graph_path.to_path_buf(), message };
    check_dt(dt).map_err(data)?;
    if steps == 0 {
        return Err(data("--steps 0: a spiking stack needs at least one step".into()));
    }
    let graph = nir_file::read(graph_path)?;
    let name = graph_path.file_stem().map_or("nir".into(), |s| s.to_string_lossy().into_owned());
    let imported = models::nir::import(&graph, &name, dt, steps).map_err(data)?;
    let text = ron::ser::to_string_pretty(&imported.network, ron::ser::PrettyConfig::default())
        .map_err(|e| data(format!("cannot describe the network: {e}")))?;
    let network_path = out.join("network.ron");
    // The description must read back as the same network (and pass the usual checks).
    let network: crate::spec::Network = crate::spec::parse_ron(&text, &network_path)?;
    let training = crate::spec::training_section(&network, &network_path)?;
    let seed = network.seed;
    let mut run = models::trainer::LayerRun::new(network, text.clone(), training, seed)?;
    let slots = run.net.params_mut();
    if slots.len() != imported.params.len() || slots.iter().zip(&imported.params).any(|(a, b)| a.shape() != b.shape()) {
        return Err(data("the imported parameters do not fit the layers built from them".into()));
    }
    for (slot, value) in slots.into_iter().zip(&imported.params) {
        slot.copy_from(value);
    }
    std::fs::create_dir_all(out).map_err(|e| Error::write(out, e))?;
    let checkpoint_path = out.join("checkpoint.h5");
    crate::io::atomic::write_atomically(&network_path, |tmp| {
        std::fs::write(tmp, &text).map_err(|e| Error::write(&network_path, e))
    })?;
    checkpoint::write(&checkpoint_path, &crate::train::fit::checkpoint(&run))?;
    Ok(ImportSummary {
        network: network_path,
        checkpoint: checkpoint_path,
        layers: imported.network.layers.len(),
        notes: imported.notes,
    })
}
