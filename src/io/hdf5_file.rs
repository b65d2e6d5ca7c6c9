//! HDF5 recordings, SONATA-style so that h5py, h5dump and SONATA tools read them:
//!
//! ```text
//! /                                  attrs: schema_version, snn_version, network_name,
//!                                           network_spec, stimulus_spec, seed, dt_ms, duration_ms
//! /spikes/<population>               attrs: sorting = "by_time", index, size, is_neuron, total_spikes
//! /spikes/<population>/timestamps    f64 (ms), attr units = "ms"
//! /spikes/<population>/node_ids      u64
//! /rates/<population>/rate_hz        f64 per bin, attr bin_ms
//! /report/<population>/v             f32 (steps x recorded neurons), attr units = "mV"
//! /report/<population>/node_ids      u64, the recorded neurons (columns of v)
//! /report/<population>/time          f64 [start, stop, step] in ms (SONATA mapping/time)
//! ```
//!
//! Populations whose spikes were not recorded still get a `/spikes/<population>` group (with
//! its size and total spike count) but no datasets.

use std::path::Path;

use super::atomic::write_atomically;
use super::hdf5_util::{dataset, read_dataset, read_scalar_attr, read_str_attr, scalar_attr, str_attr};
use crate::error::{Error, Result};
use crate::recording::{PopulationRecord, Recording, RunInfo, TraceRecord};

/// Bumped whenever the layout above changes; checked on load.
pub const SCHEMA_VERSION: u32 = 1;

/// Writes `rec` to `path` atomically.
pub fn write(rec: &Recording, path: &Path) -> Result<()> {
    write_atomically(path, |tmp| write_file(rec, tmp).map_err(|e| Error::write(path, e)))
}

fn write_file(rec: &Recording, path: &Path) -> Result<(), String> {
    let file = hdf5::File::create(path).map_err(|e| e.to_string())?;
    let i = &rec.info;
    scalar_attr(&file, "schema_version", SCHEMA_VERSION)?;
    str_attr(&file, "snn_version", env!("CARGO_PKG_VERSION"))?;
    str_attr(&file, "network_name", &i.network_name)?;
    str_attr(&file, "network_spec", &i.network_spec)?;
    str_attr(&file, "stimulus_spec", &i.stimulus_spec)?;
    scalar_attr(&file, "seed", i.seed)?;
    scalar_attr(&file, "dt_ms", i.dt_ms)?;
    scalar_attr(&file, "duration_ms", i.duration_ms)?;
    let err = |e: hdf5::Error| e.to_string();
    let spikes = file.create_group("spikes").map_err(err)?;
    let rates = file.create_group("rates").map_err(err)?;
    for (index, p) in rec.populations.iter().enumerate() {
        let g = spikes.create_group(&p.name).map_err(err)?;
        str_attr(&g, "sorting", "by_time")?;
        scalar_attr(&g, "index", index as u64)?;
        scalar_attr(&g, "size", p.size)?;
        scalar_attr(&g, "is_neuron", p.is_neuron as u8)?;
        scalar_attr(&g, "total_spikes", p.total_spikes)?;
        if let Some((times, ids)) = &p.spikes {
            let ds = dataset(&g, "timestamps", times)?;
            str_attr(&ds, "units", "ms")?;
            dataset(&g, "node_ids", ids)?;
        }
        let r = rates.create_group(&p.name).map_err(err)?;
        let ds = dataset(&r, "rate_hz", &p.rate_hz)?;
        scalar_attr(&ds, "bin_ms", p.rate_bin_ms)?;
    }
    if !rec.traces.is_empty() {
        let report = file.create_group("report").map_err(err)?;
        for t in &rec.traces {
            let g = report.create_group(&t.population).map_err(err)?;
            let cols = t.node_ids.len();
            let rows = t.v.len() / cols.max(1);
            let ds = g.new_dataset::<f32>().shape((rows, cols)).create("v").map_err(err)?;
            ds.write_raw(&t.v).map_err(err)?;
            str_attr(&ds, "units", "mV")?;
            dataset(&g, "node_ids", &t.node_ids)?;
            let time = dataset(&g, "time", &[0.0, rows as f64 * i.dt_ms, i.dt_ms])?;
            str_attr(&time, "units", "ms")?;
        }
    }
    file.close().map_err(err)
}

/// Reads a recording written by [`write`].
pub fn read(path: &Path) -> Result<Recording> {
    read_file(path).map_err(|message| Error::Syntax { path: path.to_owned(), line: 0, column: 0, message })
}

fn read_file(path: &Path) -> Result<Recording, String> {
    let err = |e: hdf5::Error| e.to_string();
    let file = hdf5::File::open(path).map_err(err)?;
    let version: u32 = read_scalar_attr(&file, "schema_version")?;
    if version != SCHEMA_VERSION {
        return Err(format!("schema_version {version} is not the supported {SCHEMA_VERSION}"));
    }
    let info = RunInfo {
        network_name: read_str_attr(&file, "network_name")?,
        network_spec: read_str_attr(&file, "network_spec")?,
        stimulus_spec: read_str_attr(&file, "stimulus_spec")?,
        seed: read_scalar_attr(&file, "seed")?,
        dt_ms: read_scalar_attr(&file, "dt_ms")?,
        duration_ms: read_scalar_attr(&file, "duration_ms")?,
    };
    let spikes = file.group("spikes").map_err(err)?;
    // HDF5 lists members by name; the `index` attribute restores the network's order.
    let mut indexed = Vec::new();
    for name in spikes.member_names().map_err(err)? {
        let g = spikes.group(&name).map_err(err)?;
        let rate = file.group(&format!("rates/{name}")).map_err(err)?;
        let recorded = g.link_exists("timestamps");
        let index: u64 = read_scalar_attr(&g, "index")?;
        indexed.push((
            index,
            PopulationRecord {
                size: read_scalar_attr(&g, "size")?,
                is_neuron: read_scalar_attr::<u8>(&g, "is_neuron")? != 0,
                total_spikes: read_scalar_attr(&g, "total_spikes")?,
                spikes: if recorded {
                    Some((read_dataset(&g, "timestamps")?, read_dataset(&g, "node_ids")?))
                } else {
                    None
                },
                rate_bin_ms: read_scalar_attr(&*rate.dataset("rate_hz").map_err(err)?, "bin_ms")?,
                rate_hz: read_dataset(&rate, "rate_hz")?,
                name,
            },
        ));
    }
    indexed.sort_by_key(|(index, _)| *index);
    let populations = indexed.into_iter().map(|(_, p)| p).collect();
    let mut traces = Vec::new();
    if file.link_exists("report") {
        let report = file.group("report").map_err(err)?;
        for name in report.member_names().map_err(err)? {
            let g = report.group(&name).map_err(err)?;
            traces.push(TraceRecord {
                node_ids: read_dataset(&g, "node_ids")?,
                v: read_dataset(&g, "v")?,
                population: name,
            });
        }
    }
    Ok(Recording { info, populations, traces })
}
