//! Training checkpoints and histories in HDF5, written atomically (temporary file, then rename),
//! so an interrupted run always leaves the previous complete checkpoint.
//!
//! ```text
//! checkpoint.h5   /                     attrs: schema_version, kind = "snn-checkpoint",
//!                                              network_spec (RON text), training (effective RON),
//!                                              seed, epochs_done
//!                 /weights/<k>          f32 (source x target), attrs source, target (layer k);
//!                                       layered models: source = layer, target = parameter
//!                 /buffers/<k>          f32, attr name (batch-norm running statistics)
//!                 /optimizer/m/<k>, /optimizer/v/<k>   f32 like the weights; attr step
//!                 /history/...          as history.h5
//! history.h5      /<series>             f64 per epoch: train_loss, train_accuracy, test_loss,
//!                                       test_accuracy, samples_per_s, learning_rate
//!                 /spike_rate, /grad_norm   f64 (epochs x layers); attr layers
//! ```

use std::path::Path;

use nalgebra::DMatrix;

use super::atomic::write_atomically;
use super::hdf5_util::{dataset, read_dataset, read_scalar_attr, read_str_attr, scalar_attr, str_attr};
use crate::error::{Error, Result};
use crate::nn::optim::OptimizerState;
use crate::records::History;
use crate::spec::{Network, Training};

pub const SCHEMA_VERSION: u32 = 1;

/// Everything a run needs to continue exactly where it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub network_spec: String,
    /// The effective training section (after command-line overrides), as RON.
    pub training: String,
    pub seed: u64,
    pub epochs_done: u32,
    /// Per layer: (source population, target population, weights n_target x n_source).
    pub layers: Vec<(String, String, DMatrix<f32>)>,
    /// State outside the optimizer's reach (batch-norm running statistics), by name.
    pub buffers: Vec<(String, DMatrix<f32>)>,
    pub optimizer: OptimizerState,
    pub history: History,
}

impl Checkpoint {
    /// The network and the effective training settings the checkpoint was written with;
    /// `path` names the checkpoint in errors.
    pub fn specs(&self, path: &Path) -> Result<(Network, Training)> {
        Ok((crate::spec::parse_ron(&self.network_spec, path)?, crate::spec::parse_ron(&self.training, path)?))
    }
}

fn err(e: hdf5::Error) -> String {
    e.to_string()
}

fn write_matrix(group: &hdf5::Group, name: &str, m: &DMatrix<f32>) -> Result<hdf5::Dataset, String> {
    // Column-major n_target x n_source is row-major n_source x n_target.
    let ds = group.new_dataset::<f32>().shape((m.ncols(), m.nrows())).create(name).map_err(err)?;
    ds.write_raw(m.as_slice()).map_err(err)?;
    Ok(ds)
}

fn read_matrix(group: &hdf5::Group, name: &str) -> Result<DMatrix<f32>, String> {
    let ds = group.dataset(name).map_err(err)?;
    let shape = ds.shape();
    if shape.len() != 2 {
        return Err(format!("dataset {name} has shape {shape:?}, expected 2 dimensions"));
    }
    let data: Vec<f32> = ds.read_raw().map_err(err)?;
    Ok(DMatrix::from_column_slice(shape[1], shape[0], &data))
}

fn write_history_into(group: &hdf5::Group, h: &History) -> Result<(), String> {
    for (name, series) in h.scalar_series() {
        dataset(group, name, series)?;
    }
    str_attr(group, "layers", &h.layer_names.join(","))?;
    for (name, per_layer) in [("spike_rate", &h.spike_rate), ("grad_norm", &h.grad_norm)] {
        let flat: Vec<f64> = per_layer.iter().flatten().copied().collect();
        let ds = group.new_dataset::<f64>().shape((per_layer.len(), h.layer_names.len())).create(name).map_err(err)?;
        ds.write_raw(&flat).map_err(err)?;
    }
    Ok(())
}

fn read_history_from(group: &hdf5::Group) -> Result<History, String> {
    let mut h = History {
        layer_names: read_str_attr(group, "layers")?.split(',').map(String::from).collect(),
        ..History::default()
    };
    for (name, series) in h.scalar_series_mut() {
        *series = read_dataset(group, name)?;
    }
    let layers = h.layer_names.len().max(1);
    h.spike_rate = read_dataset::<f64>(group, "spike_rate")?.chunks(layers).map(<[f64]>::to_vec).collect();
    h.grad_norm = read_dataset::<f64>(group, "grad_norm")?.chunks(layers).map(<[f64]>::to_vec).collect();
    Ok(h)
}

pub fn write_history(path: &Path, h: &History) -> Result<()> {
    write_atomically(path, |tmp| {
        let file = hdf5::File::create(tmp).map_err(|e| Error::write(path, e))?;
        write_history_into(&file, h).map_err(|e| Error::write(path, e))
    })
}

pub fn read_history(path: &Path) -> Result<History> {
    let file = hdf5::File::open(path).map_err(|e| Error::Data { path: path.to_owned(), message: e.to_string() })?;
    read_history_from(&file).map_err(|message| Error::Data { path: path.to_owned(), message })
}

pub fn write(path: &Path, c: &Checkpoint) -> Result<()> {
    write_atomically(path, |tmp| write_file(tmp, c).map_err(|e| Error::write(path, e)))
}

fn write_file(path: &Path, c: &Checkpoint) -> Result<(), String> {
    let file = hdf5::File::create(path).map_err(err)?;
    scalar_attr(&file, "schema_version", SCHEMA_VERSION)?;
    str_attr(&file, "kind", "snn-checkpoint")?;
    str_attr(&file, "snn_version", env!("CARGO_PKG_VERSION"))?;
    str_attr(&file, "network_spec", &c.network_spec)?;
    str_attr(&file, "training", &c.training)?;
    scalar_attr(&file, "seed", c.seed)?;
    scalar_attr(&file, "epochs_done", c.epochs_done)?;
    let weights = file.create_group("weights").map_err(err)?;
    for (k, (from, to, w)) in c.layers.iter().enumerate() {
        let ds = write_matrix(&weights, &k.to_string(), w)?;
        str_attr(&ds, "source", from)?;
        str_attr(&ds, "target", to)?;
    }
    if !c.buffers.is_empty() {
        let group = file.create_group("buffers").map_err(err)?;
        for (k, (name, b)) in c.buffers.iter().enumerate() {
            let ds = write_matrix(&group, &k.to_string(), b)?;
            str_attr(&ds, "name", name)?;
        }
    }
    let opt = file.create_group("optimizer").map_err(err)?;
    scalar_attr(&opt, "step", c.optimizer.step)?;
    for (name, moments) in [("m", &c.optimizer.m), ("v", &c.optimizer.v)] {
        let g = opt.create_group(name).map_err(err)?;
        for (k, m) in moments.iter().enumerate() {
            write_matrix(&g, &k.to_string(), m)?;
        }
    }
    write_history_into(&file.create_group("history").map_err(err)?, &c.history)?;
    file.close().map_err(err)
}

pub fn read(path: &Path) -> Result<Checkpoint> {
    read_file(path).map_err(|message| Error::Data { path: path.to_owned(), message })
}

fn read_file(path: &Path) -> Result<Checkpoint, String> {
    let file = hdf5::File::open(path).map_err(err)?;
    if read_str_attr(&file, "kind").ok().as_deref() != Some("snn-checkpoint") {
        return Err("not an snn checkpoint (no kind = \"snn-checkpoint\" attribute)".into());
    }
    let version: u32 = read_scalar_attr(&file, "schema_version")?;
    if version != SCHEMA_VERSION {
        return Err(format!("checkpoint schema_version {version} is not the supported {SCHEMA_VERSION}"));
    }
    let weights = file.group("weights").map_err(err)?;
    let count = weights.member_names().map_err(err)?.len();
    let mut layers = Vec::new();
    for k in 0..count {
        let name = k.to_string();
        let ds = weights.dataset(&name).map_err(err)?;
        layers.push((read_str_attr(&ds, "source")?, read_str_attr(&ds, "target")?, read_matrix(&weights, &name)?));
    }
    let mut buffers = Vec::new();
    if let Ok(group) = file.group("buffers") {
        for k in 0..group.member_names().map_err(err)?.len() {
            let name = k.to_string();
            let ds = group.dataset(&name).map_err(err)?;
            buffers.push((read_str_attr(&ds, "name")?, read_matrix(&group, &name)?));
        }
    }
    let opt = file.group("optimizer").map_err(err)?;
    let moments = |name: &str| -> Result<Vec<DMatrix<f32>>, String> {
        let g = opt.group(name).map_err(err)?;
        (0..count).map(|k| read_matrix(&g, &k.to_string())).collect()
    };
    Ok(Checkpoint {
        network_spec: read_str_attr(&file, "network_spec")?,
        training: read_str_attr(&file, "training")?,
        seed: read_scalar_attr(&file, "seed")?,
        epochs_done: read_scalar_attr(&file, "epochs_done")?,
        layers,
        buffers,
        optimizer: OptimizerState { step: read_scalar_attr(&opt, "step")?, m: moments("m")?, v: moments("v")? },
        history: read_history_from(&file.group("history").map_err(err)?)?,
    })
}
