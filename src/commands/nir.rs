//! `snn nir run|import|export`: NIR graphs in and out of `snn`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::nir_file;
use crate::nir::run::Program;

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
