//! What a run keeps: spikes (SONATA-style: one timestamp and one node id per spike), membrane
//! traces of chosen neurons, and spike counts per population in rate bins.

/// Spikes of one population, in the order they occurred (by time, then id).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpikeLog {
    /// Spike time in steps: the time is `step * dt`.
    pub steps: Vec<u64>,
    pub ids: Vec<u32>,
}

/// Membrane potential of chosen neurons, sampled at the start of every step (time `step * dt`),
/// before that step's arriving input.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceLog {
    pub population: usize,
    pub ids: Vec<u32>,
    /// Row-major (steps x ids).
    pub v: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct Monitors {
    /// Per population, None when its spikes are not recorded.
    pub spikes: Vec<Option<SpikeLog>>,
    pub traces: Vec<TraceLog>,
    pub rate_bin_steps: u64,
    /// Per population, spike counts per rate bin.
    pub counts: Vec<Vec<u32>>,
    /// Per population, all spikes (recorded or not).
    pub totals: Vec<u64>,
}

impl Monitors {
    pub fn record_spikes(&mut self, population: usize, step: u64, ids: &[u32]) {
        if ids.is_empty() {
            return;
        }
        self.totals[population] += ids.len() as u64;
        let bin = (step / self.rate_bin_steps) as usize;
        let counts = &mut self.counts[population];
        if counts.len() <= bin {
            counts.resize(bin + 1, 0);
        }
        counts[bin] += ids.len() as u32;
        if let Some(log) = &mut self.spikes[population] {
            log.steps.extend(std::iter::repeat_n(step, ids.len()));
            log.ids.extend_from_slice(ids);
        }
    }
}
