//! The time-stepped engine with event-driven spike delivery.
//!
//! Schedule of step `n` (time `t_n = n dt`), written once here and tested in `tests/`:
//!
//! 1. currents: injected currents that start or stop at `t_n` take effect;
//! 2. sources: spike generators emit spikes stamped `t_n`; each is delivered into the delay ring
//!    of its targets at slot `n + delay`;
//! 3. monitors: membrane traces sample `v(t_n)`;
//! 4. neurons: every LIF population drains ring slot `n` into its synapses, integrates to
//!    `t_{n+1}`, tests the threshold and resets ([`lif::update_chunk`]); spikes are stamped
//!    `t_{n+1}`, when the threshold was found crossed;
//! 5. delivery: each neuron spike is delivered at slot `n + 1 + delay`, so any spike stamped
//!    `t_s` arrives at `t_s + delay`. Only the rows of neurons that fired are visited.
//!
//! Random numbers come from streams derived from (seed, purpose, index) ([`rng`]); neuron updates
//! of large populations run in parallel over fixed-size chunks whose spikes are concatenated in
//! chunk order, so results are identical for any number of threads.

pub mod currents;
pub mod lif;
pub mod monitor;
pub mod rng;
pub mod sources;
pub mod synapses;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::spec::{self, Model, Neuron, SpikeRecord, Synapse};
use currents::Injection;
use lif::{Channel, Chunk, LifConstants};
use monitor::{Monitors, SpikeLog, TraceLog};
use rng::Purpose;
use sources::Generator;
use synapses::{ConnectionPlan, Csr, Delays};

/// Populations at least this large update in parallel, in chunks of [`CHUNK`] neurons. The chunk
/// size is fixed (not derived from the thread count) so that results never depend on it.
pub const PARALLEL_MIN_NEURONS: usize = 16_384;
pub const CHUNK: usize = 4_096;

/// Input waiting to arrive, one slot per step of delay: `slots x (neurons x channels)`.
#[derive(Debug, Clone)]
pub struct DelayRing {
    pub slots: usize,
    width: usize,
    data: Vec<f64>,
}

impl DelayRing {
    fn new(slots: usize, width: usize) -> Self {
        DelayRing {
            slots,
            width,
            data: vec![0.0; slots * width],
        }
    }

    fn slot_mut(&mut self, step: u64) -> &mut [f64] {
        let s = (step % self.slots as u64) as usize;
        &mut self.data[s * self.width..(s + 1) * self.width]
    }
}

#[derive(Debug, Clone)]
pub struct LifPopulation {
    pub constants: LifConstants,
    pub channels: Vec<Channel>,
    pub v: Vec<f64>,
    pub refractory: Vec<u32>,
    pub i_ext: Vec<f64>,
    /// Synaptic variables, `neuron * channels + channel`.
    pub syn: Vec<f64>,
    pub ring: DelayRing,
    chunk_spikes: Vec<Vec<u32>>,
}

#[derive(Debug, Clone)]
pub enum Dynamics {
    Lif(Box<LifPopulation>),
    Source(Generator),
}

#[derive(Debug, Clone)]
pub struct Population {
    pub name: String,
    pub size: usize,
    pub dynamics: Dynamics,
}

#[derive(Debug, Clone)]
pub struct Projection {
    pub source: usize,
    pub target: usize,
    pub channel: usize,
    pub synapses: Csr,
}

/// A built network, ready to step.
#[derive(Debug, Clone)]
pub struct Simulation {
    pub dt_ms: f64,
    pub seed: u64,
    /// Index of the next step to run.
    pub step: u64,
    pub populations: Vec<Population>,
    pub projections: Vec<Projection>,
    /// Per population, indices of the projections leaving it.
    outgoing: Vec<Vec<usize>>,
    injections: Vec<Injection>,
    /// Per population, the ids that fired in the current step (preallocated, reused).
    fired: Vec<Vec<u32>>,
    pub monitors: Monitors,
    /// Synaptic events delivered so far (one per synapse of a neuron that fired).
    pub events_delivered: u64,
}

fn channel_key(syn: &Synapse) -> Option<f64> {
    match syn {
        Synapse::Instantaneous => None,
        Synapse::Exponential { tau_ms } => Some(*tau_ms),
    }
}

impl Simulation {
    /// Builds a checked model: populations, then connectivity, then stimuli and monitors.
    pub fn build(model: &Model, seed: u64) -> Result<Self> {
        let net = &model.network;
        let stim = &model.stimulus;
        let dt = net.dt_ms;
        let index_of = |name: &str| {
            net.populations
                .iter()
                .map(|p| p.name.as_str())
                .chain(stim.sources.iter().map(|s| s.name.as_str()))
                .position(|n| n == name)
                .ok_or_else(|| Error::Simulation(format!("unknown population {name:?}")))
        };
        // Stimulus projections follow the network's; the index offset keeps their random
        // streams apart from any network projection's.
        let all_projections: Vec<(u64, &spec::Projection)> = net
            .projections
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u64, p))
            .chain(
                stim.projections
                    .iter()
                    .enumerate()
                    .map(|(i, p)| ((1 << 32) + i as u64, p)),
            )
            .collect();

        let mut populations = Vec::new();
        for (pi, pop) in net.populations.iter().enumerate() {
            let Neuron::Lif {
                tau_mem_ms,
                v_rest,
                v_threshold,
                v_reset,
                refractory_ms,
                r_mem_mohm,
                reset,
            } = pop.neuron;
            let constants = LifConstants::new(
                dt,
                tau_mem_ms,
                v_rest,
                v_threshold,
                v_reset,
                refractory_ms,
                r_mem_mohm,
                reset,
            );
            let mut keys: Vec<Option<f64>> = Vec::new();
            for (_, p) in all_projections.iter().filter(|(_, p)| p.to == pop.name) {
                let key = channel_key(&p.synapse);
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            if keys.is_empty() {
                // An unused channel keeps the per-neuron synaptic arrays non-empty, so chunked
                // iteration over them stays aligned with the neurons.
                keys.push(None);
            }
            let channels: Vec<Channel> = keys
                .iter()
                .map(|k| {
                    k.map_or_else(Channel::instantaneous, |tau| {
                        Channel::exponential(tau, tau_mem_ms, dt)
                    })
                })
                .collect();
            let n = pop.size as usize;
            let mut rng = rng::stream(seed, Purpose::InitialState, pi as u64);
            let v = match &pop.init_v {
                Some(dist) => (0..n).map(|_| rng::draw(dist, &mut rng)).collect(),
                None => vec![v_rest; n],
            };
            let nc = channels.len();
            populations.push(Population {
                name: pop.name.clone(),
                size: n,
                dynamics: Dynamics::Lif(Box::new(LifPopulation {
                    constants,
                    channels,
                    v,
                    refractory: vec![0; n],
                    i_ext: vec![0.0; n],
                    syn: vec![0.0; n * nc],
                    ring: DelayRing::new(1, n * nc),
                    chunk_spikes: vec![Vec::new(); n.div_ceil(CHUNK)],
                })),
            });
        }
        for (si, src) in stim.sources.iter().enumerate() {
            let generator = match &src.kind {
                spec::SourceKind::Poisson { rate_hz } => Generator::poisson(
                    src.size,
                    *rate_hz,
                    dt,
                    rng::stream(seed, Purpose::PoissonSource, si as u64),
                ),
                spec::SourceKind::SpikeTimes { indices, times_ms } => {
                    Generator::times(indices, times_ms, dt)
                }
            };
            populations.push(Population {
                name: src.name.clone(),
                size: src.size as usize,
                dynamics: Dynamics::Source(generator),
            });
        }

        let mut projections = Vec::new();
        for (stream_index, p) in &all_projections {
            let (source, target) = (index_of(&p.from)?, index_of(&p.to)?);
            let Dynamics::Lif(target_pop) = &populations[target].dynamics else {
                return Err(Error::Simulation(format!(
                    "projection target {:?} is not a neuron population",
                    p.to
                )));
            };
            let key = channel_key(&p.synapse);
            let channel = target_pop
                .channels
                .iter()
                .position(|c| c.tau_ms == key)
                .expect("channel made above");
            let plan = ConnectionPlan {
                connect: &p.connect,
                n_source: populations[source].size,
                n_target: populations[target].size,
                exclude_self: source == target && !p.allow_autapses,
                weight: &p.weight,
                delay_ms: &p.delay_ms,
                dt_ms: dt,
            };
            let mut rng = rng::stream(seed, Purpose::Connectivity, *stream_index);
            let synapses = synapses::build(&plan, &mut rng);
            projections.push(Projection {
                source,
                target,
                channel,
                synapses,
            });
        }
        // Ring sizes: pending input spans at most max delay + 1 steps.
        for (ti, pop) in populations.iter_mut().enumerate() {
            if let Dynamics::Lif(lif) = &mut pop.dynamics {
                let max_delay = projections
                    .iter()
                    .filter(|p| p.target == ti)
                    .map(|p| p.synapses.max_delay())
                    .max()
                    .unwrap_or(0);
                lif.ring = DelayRing::new(max_delay as usize + 1, lif.ring.width);
            }
        }
        let mut outgoing = vec![Vec::new(); populations.len()];
        for (k, p) in projections.iter().enumerate() {
            outgoing[p.source].push(k);
        }

        let injections = stim
            .currents
            .iter()
            .map(|c| {
                let (spec::Current::Constant { population, .. }
                | spec::Current::Step { population, .. }) = c;
                Ok(Injection::from_spec(c, index_of(population)?, dt))
            })
            .collect::<Result<Vec<_>>>()?;

        let record = &net.record;
        let spikes = populations
            .iter()
            .map(|p| {
                let keep = match &record.spikes {
                    SpikeRecord::All => true,
                    SpikeRecord::Nothing => false,
                    SpikeRecord::Only(names) => names.contains(&p.name),
                };
                keep.then(SpikeLog::default)
            })
            .collect();
        let traces = record
            .traces
            .iter()
            .map(|t| {
                Ok(TraceLog {
                    population: index_of(&t.population)?,
                    ids: t.ids.clone(),
                    v: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let n_pops = populations.len();
        let monitors = Monitors {
            spikes,
            traces,
            rate_bin_steps: ((record.rate_bin_ms / dt).round() as u64).max(1),
            counts: vec![Vec::new(); n_pops],
            totals: vec![0; n_pops],
        };
        Ok(Simulation {
            dt_ms: dt,
            seed,
            step: 0,
            fired: populations
                .iter()
                .map(|p| Vec::with_capacity(p.size))
                .collect(),
            populations,
            projections,
            outgoing,
            injections,
            monitors,
            events_delivered: 0,
        })
    }

    pub fn neuron_count(&self) -> usize {
        self.populations
            .iter()
            .filter(|p| matches!(p.dynamics, Dynamics::Lif(_)))
            .map(|p| p.size)
            .sum()
    }

    pub fn synapse_count(&self) -> usize {
        self.projections.iter().map(|p| p.synapses.len()).sum()
    }

    /// Bytes held by synapse storage and delay rings: the memory that scales with the network.
    pub fn synapse_bytes(&self) -> usize {
        self.projections
            .iter()
            .map(|p| {
                let s = &p.synapses;
                s.len() * s.bytes_per_synapse() + s.row_start.len() * std::mem::size_of::<usize>()
            })
            .sum()
    }

    /// Runs `steps` steps, calling `progress` with the number of steps done now and then.
    pub fn run(&mut self, steps: u64, mut progress: impl FnMut(u64)) {
        let report_every = (steps / 200).max(1);
        for k in 0..steps {
            self.advance();
            if (k + 1) % report_every == 0 || k + 1 == steps {
                progress(k + 1);
            }
        }
        self.finish_bins();
    }

    /// Pads the rate bins so every population covers the whole run.
    fn finish_bins(&mut self) {
        let bins = self.step.div_ceil(self.monitors.rate_bin_steps) as usize;
        for counts in &mut self.monitors.counts {
            counts.resize(bins.max(counts.len()), 0);
        }
    }

    /// One step of the schedule in the module documentation.
    pub fn advance(&mut self) {
        let n = self.step;
        for pop in currents::changed_populations(&self.injections, n) {
            if let Dynamics::Lif(lif) = &mut self.populations[pop].dynamics {
                currents::fill_current(&self.injections, pop, n, &mut lif.i_ext);
            }
        }
        for p in 0..self.populations.len() {
            if let Dynamics::Source(generator) = &mut self.populations[p].dynamics {
                self.fired[p].clear();
                generator.emit(n, &mut self.fired[p]);
                self.monitors.record_spikes(p, n, &self.fired[p]);
                self.deliver(p, n);
            }
        }
        for trace in &mut self.monitors.traces {
            if let Dynamics::Lif(lif) = &self.populations[trace.population].dynamics {
                trace
                    .v
                    .extend(trace.ids.iter().map(|&id| lif.v[id as usize] as f32));
            }
        }
        for p in 0..self.populations.len() {
            if let Dynamics::Lif(lif) = &mut self.populations[p].dynamics {
                update_population(lif, n, &mut self.fired[p]);
                self.monitors.record_spikes(p, n + 1, &self.fired[p]);
            }
        }
        for p in 0..self.populations.len() {
            if matches!(self.populations[p].dynamics, Dynamics::Lif(_)) {
                self.deliver(p, n + 1);
            }
        }
        self.step += 1;
    }

    /// Adds the outgoing weights of population `source`'s spikes, stamped at step `stamp`, into
    /// the delay rings of their targets.
    fn deliver(&mut self, source: usize, stamp: u64) {
        let fired = &self.fired[source];
        if fired.is_empty() {
            return;
        }
        for &k in &self.outgoing[source] {
            let proj = &self.projections[k];
            let Dynamics::Lif(target) = &mut self.populations[proj.target].dynamics else {
                unreachable!("checked at build")
            };
            let nc = target.channels.len();
            let ch = proj.channel;
            let csr = &proj.synapses;
            let ring = &mut target.ring;
            match &csr.delays {
                Delays::Uniform(d) => {
                    let slot = ring.slot_mut(stamp + *d as u64);
                    for &i in fired {
                        let r = csr.row(i as usize);
                        for (&t, &w) in csr.targets[r.clone()].iter().zip(&csr.weights[r]) {
                            slot[t as usize * nc + ch] += w as f64;
                        }
                    }
                }
                Delays::PerSynapse(delays) => {
                    for &i in fired {
                        let r = csr.row(i as usize);
                        for k in r {
                            let slot = ring.slot_mut(stamp + delays[k] as u64);
                            slot[csr.targets[k] as usize * nc + ch] += csr.weights[k] as f64;
                        }
                    }
                }
            }
            self.events_delivered += fired
                .iter()
                .map(|&i| csr.row(i as usize).len() as u64)
                .sum::<u64>();
        }
    }
}

/// Integrates one LIF population over step `n`, filling `fired` with the ids that spiked.
fn update_population(lif: &mut LifPopulation, n: u64, fired: &mut Vec<u32>) {
    fired.clear();
    let LifPopulation {
        constants,
        channels,
        v,
        refractory,
        i_ext,
        syn,
        ring,
        chunk_spikes,
    } = lif;
    let nc = channels.len();
    let arriving = ring.slot_mut(n);
    if v.len() < PARALLEL_MIN_NEURONS {
        let chunk = Chunk {
            offset: 0,
            v,
            refractory,
            i_ext,
            syn,
            arriving,
        };
        lif::update_chunk(constants, channels, chunk, fired);
        return;
    }
    v.par_chunks_mut(CHUNK)
        .zip(refractory.par_chunks_mut(CHUNK))
        .zip(i_ext.par_chunks(CHUNK))
        .zip(syn.par_chunks_mut(CHUNK * nc.max(1)))
        .zip(arriving.par_chunks_mut(CHUNK * nc.max(1)))
        .zip(chunk_spikes.par_iter_mut())
        .enumerate()
        .for_each(|(c, (((((v, refractory), i_ext), syn), arriving), out))| {
            out.clear();
            let chunk = Chunk {
                offset: (c * CHUNK) as u32,
                v,
                refractory,
                i_ext,
                syn,
                arriving,
            };
            lif::update_chunk(constants, channels, chunk, out);
        });
    for out in chunk_spikes.iter() {
        fired.extend_from_slice(out);
    }
}
