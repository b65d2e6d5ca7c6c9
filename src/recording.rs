//! The outcome of a run, independent of the engine's internals: what is written to HDF5, read
//! back from it, drawn and summarised.

use crate::engine::{Dynamics, Simulation};
use crate::spec::Model;

/// Everything needed to reproduce the run: the specs' text, seed, dt, duration.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub network_name: String,
    pub network_spec: String,
    pub stimulus_spec: String,
    pub seed: u64,
    pub dt_ms: f64,
    pub duration_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PopulationRecord {
    pub name: String,
    pub size: u64,
    /// False for spike generators (stimulus sources).
    pub is_neuron: bool,
    /// Spike times (ms) and node ids, sorted by time; None when not recorded.
    pub spikes: Option<(Vec<f64>, Vec<u64>)>,
    pub total_spikes: u64,
    pub rate_bin_ms: f64,
    /// Population rate per bin (spikes per neuron per second).
    pub rate_hz: Vec<f64>,
}

impl PopulationRecord {
    pub fn mean_rate_hz(&self, duration_ms: f64) -> f64 {
        self.total_spikes as f64 / self.size as f64 / (duration_ms / 1000.0)
    }

    /// Coefficient of variation of the inter-spike intervals (std / mean, population std),
    /// averaged over the neurons with at least 3 spikes; None when spikes were not recorded or
    /// no neuron qualifies. 1 for a Poisson process, 0 for a clock.
    pub fn cv_isi(&self) -> Option<f64> {
        let (times, ids) = self.spikes.as_ref()?;
        let mut per_neuron: Vec<Vec<f64>> = vec![Vec::new(); self.size as usize];
        for (&t, &id) in times.iter().zip(ids) {
            per_neuron[id as usize].push(t);
        }
        let cvs: Vec<f64> = per_neuron
            .iter()
            .filter(|ts| ts.len() >= 3)
            .map(|ts| {
                let isi: Vec<f64> = ts.windows(2).map(|w| w[1] - w[0]).collect();
                let mean = isi.iter().sum::<f64>() / isi.len() as f64;
                let var = isi.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / isi.len() as f64;
                var.sqrt() / mean
            })
            .collect();
        (!cvs.is_empty()).then(|| cvs.iter().sum::<f64>() / cvs.len() as f64)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TraceRecord {
    pub population: String,
    pub node_ids: Vec<u64>,
    /// Row-major (steps x node_ids), mV; row k is time k * dt.
    pub v: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub info: RunInfo,
    pub populations: Vec<PopulationRecord>,
    pub traces: Vec<TraceRecord>,
}

impl Recording {
    pub fn from_simulation(sim: &Simulation, model: &Model) -> Self {
        let dt = sim.dt_ms;
        let m = &sim.monitors;
        let bin_ms = m.rate_bin_steps as f64 * dt;
        let populations = sim
            .populations
            .iter()
            .enumerate()
            .map(|(p, pop)| PopulationRecord {
                name: pop.name.clone(),
                size: pop.size as u64,
                is_neuron: !matches!(pop.dynamics, Dynamics::Source(_)),
                spikes: m.spikes[p].as_ref().map(|log| {
                    (log.steps.iter().map(|&s| s as f64 * dt).collect(), log.ids.iter().map(|&i| i as u64).collect())
                }),
                total_spikes: m.totals[p],
                rate_bin_ms: bin_ms,
                rate_hz: m.counts[p].iter().map(|&c| c as f64 / pop.size as f64 / (bin_ms / 1000.0)).collect(),
            })
            .collect();
        let traces = m
            .traces
            .iter()
            .map(|t| TraceRecord {
                population: sim.populations[t.population].name.clone(),
                node_ids: t.ids.iter().map(|&i| i as u64).collect(),
                v: t.v.clone(),
            })
            .collect();
        Recording {
            info: RunInfo {
                network_name: model.network.name.clone(),
                network_spec: model.network_text.clone(),
                stimulus_spec: model.stimulus_text.clone(),
                seed: sim.seed,
                dt_ms: dt,
                duration_ms: sim.step as f64 * dt,
            },
            populations,
            traces,
        }
    }

    pub fn population(&self, name: &str) -> Option<&PopulationRecord> {
        self.populations.iter().find(|p| p.name == name)
    }
}
