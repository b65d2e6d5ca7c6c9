//! The time-stepped engine with event-driven spike delivery.
//!
//! Schedule of step `n` (time `t_n = n dt`), written once here and tested in `tests/`:
//!
//! 1. currents: injected currents that start or stop at `t_n` take effect;
//! 2. monitors: membrane traces sample `v(t_n)`, before this step's input;
//! 3. sources: spike generators emit spikes stamped `t_n`;
//! 4. arrival: every spike due at `t_n` adds its weights to its targets' synaptic variables (or
//!    membrane, for instantaneous synapses);
//! 5. neurons: every LIF population integrates to `t_{n+1}`, tests the threshold and resets
//!    ([`lif::update_chunk`]); spikes are stamped `t_{n+1}`, when the threshold was found crossed.
//!
//! A spike stamped `t_s` on a projection with delay `d` steps arrives at step `s + d`. Spikes are
//! delayed, not their weights: each target population keeps a ring of `max delay + 1` slots,
//! each a list of synapse ranges (a CSR row, or the part of a row sharing one delay) due at that
//! step. Work per step is thus the neuron update plus the synapses of neurons that fired; silent
//! synapses cost nothing.
//!
//! Random numbers come from streams derived from (seed, purpose, index) ([`rng`]); neuron updates
//! of large populations run in parallel over fixed-size chunks whose spikes are concatenated in
//! chunk order, so results are identical for any number of threads.

pub mod currents;
pub mod lif;
pub mod monitor;
pub mod sources;
pub mod synapses;

use rayon::prelude::*;

use crate::data::encode::{Encoder, encoding_stream};
use crate::data::idx;
use crate::error::{Error, Result};
use crate::rng::{self, Purpose};
use crate::spec::{self, Model, Neuron, SpikeRecord, Synapse};
use currents::Injection;
use lif::{Exponential, Input, LifConstants, Refractory};
use monitor::{Monitors, SpikeLog, TraceLog};
use sources::Generator;
use synapses::{ConnectionPlan, Csr, Delays};

/// Populations at least this large update in parallel, in chunks of [`CHUNK`] neurons. The chunk
/// size is fixed (not derived from the thread count) so that results never depend on it.
pub const PARALLEL_MIN_NEURONS: usize = 16_384;
pub const CHUNK: usize = 4_096;

/// Synapses `start..end` of projection `projection`, due at one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    pub projection: usize,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone)]
pub struct LifPopulation {
    pub constants: LifConstants,
    /// Per exponential synaptic variable, its constants and its values per neuron.
    pub exponentials: Vec<Exponential>,
    pub syn: Vec<Vec<f64>>,
    pub v: Vec<f64>,
    pub refractory: Refractory,
    pub i_ext: Vec<f64>,
    pub has_current: bool,
    /// Slot `s % len` holds the spikes due at step `s`.
    pub arrivals: Vec<Vec<Arrival>>,
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
    pub input: Input,
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
    current_changes: Vec<(u64, usize)>,
    next_change: usize,
    /// Per population, the ids that fired in the current step (preallocated, reused).
    fired: Vec<Vec<u32>>,
    pub monitors: Monitors,
    /// Synaptic events delivered so far (one per synapse of a neuron that fired).
    pub events_delivered: u64,
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
            .chain(stim.projections.iter().enumerate().map(|(i, p)| ((1 << 32) + i as u64, p)))
            .collect();

        let mut populations = Vec::new();
        for (pi, pop) in net.populations.iter().enumerate() {
            let Neuron::Lif { tau_mem_ms, v_rest, v_threshold, v_reset, refractory_ms, r_mem_mohm, reset } = pop.neuron;
            let constants =
                LifConstants::new(dt, tau_mem_ms, v_rest, v_threshold, v_reset, refractory_ms, r_mem_mohm, reset);
            let taus = synaptic_taus(&all_projections, &pop.name);
            let n = pop.size as usize;
            let mut rng = rng::stream(seed, Purpose::InitialState, pi as u64);
            let v = match &pop.init_v {
                Some(dist) => (0..n).map(|_| dist.sample(&mut rng)).collect(),
                None => vec![v_rest; n],
            };
            populations.push(Population {
                name: pop.name.clone(),
                size: n,
                dynamics: Dynamics::Lif(Box::new(LifPopulation {
                    constants,
                    exponentials: taus.iter().map(|&tau| Exponential::new(tau, tau_mem_ms, dt)).collect(),
                    syn: vec![vec![0.0; n]; taus.len()],
                    v,
                    refractory: Refractory::new(n, CHUNK),
                    i_ext: vec![0.0; n],
                    has_current: false,
                    arrivals: vec![Vec::new()],
                    chunk_spikes: vec![Vec::new(); n.div_ceil(CHUNK)],
                })),
            });
        }
        for (si, src) in stim.sources.iter().enumerate() {
            let generator = match &src.kind {
                spec::SourceKind::Poisson { rate_hz } => {
                    Generator::poisson(src.size, *rate_hz, dt, rng::stream(seed, Purpose::PoissonSource, si as u64))
                }
                spec::SourceKind::Image { data, index, encoder } => {
                    image_source(model, &src.name, src.size, data.as_deref(), *index, *encoder, seed)?
                }
                spec::SourceKind::SpikeTimes { indices, times_ms } => Generator::times(indices, times_ms, dt),
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
            if !matches!(populations[target].dynamics, Dynamics::Lif(_)) {
                return Err(Error::Simulation(format!("projection target {:?} is not a neuron population", p.to)));
            }
            let input = match p.synapse {
                Synapse::Instantaneous => Input::Membrane,
                Synapse::Exponential { tau_ms } => {
                    let index = synaptic_taus(&all_projections, &p.to)
                        .iter()
                        .position(|&t| t == tau_ms)
                        .expect("the population's variables were made from the same list");
                    Input::Synaptic { index, tau_ms }
                }
            };
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
            projections.push(Projection { source, target, input, synapses });
        }
        // Pending spikes span at most max delay + 1 steps.
        for (ti, pop) in populations.iter_mut().enumerate() {
            if let Dynamics::Lif(lif) = &mut pop.dynamics {
                let max_delay =
                    projections.iter().filter(|p| p.target == ti).map(|p| p.synapses.max_delay()).max().unwrap_or(0);
                lif.arrivals = vec![Vec::new(); max_delay as usize + 1];
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
                let (spec::Current::Constant { population, .. } | spec::Current::Step { population, .. }) = c;
                Ok(Injection::from_spec(c, index_of(population)?, dt))
            })
            .collect::<Result<Vec<_>>>()?;
        for j in &injections {
            if let Dynamics::Lif(lif) = &mut populations[j.population].dynamics {
                lif.has_current = true;
            }
        }

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
            .map(|t| Ok(TraceLog { population: index_of(&t.population)?, ids: t.ids.clone(), v: Vec::new() }))
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
            fired: populations.iter().map(|p| Vec::with_capacity(p.size)).collect(),
            populations,
            projections,
            outgoing,
            current_changes: currents::change_points(&injections),
            next_change: 0,
            injections,
            monitors,
            events_delivered: 0,
        })
    }

    /// The label of the data-set image a source presents, if one does.
    pub fn presented_label(&self) -> Option<u8> {
        self.populations.iter().find_map(|p| match &p.dynamics {
            Dynamics::Source(Generator::Image { label, .. }) => Some(*label),
            _ => None,
        })
    }

    pub fn neuron_count(&self) -> usize {
        self.populations.iter().filter(|p| matches!(p.dynamics, Dynamics::Lif(_))).map(|p| p.size).sum()
    }

    pub fn synapse_count(&self) -> usize {
        self.projections.iter().map(|p| p.synapses.len()).sum()
    }

    /// Bytes held by synapse storage: the memory that grows with the synapse count.
    pub fn synapse_bytes(&self) -> usize {
        self.projections
            .iter()
            .map(|p| {
                let s = &p.synapses;
                s.len() * s.bytes_per_synapse() + std::mem::size_of_val(s.row_start.as_slice())
            })
            .sum()
    }

    /// Runs `steps` steps, calling `progress` with the number of steps done now and then.
    pub fn run(&mut self, steps: u64, mut progress: impl FnMut(u64) + Send) {
        let report_every = (steps / 200).max(1);
        // The loop runs on a pool thread, so that the parallel sections inside a step start
        // from a worker rather than being handed over from outside the pool each time.
        rayon::scope(|_| {
            for k in 0..steps {
                self.advance();
                if (k + 1) % report_every == 0 || k + 1 == steps {
                    progress(k + 1);
                }
            }
        });
        self.finish_bins();
    }

    /// Gives every population exactly the rate bins covering the run; spikes stamped at the very
    /// end of the run (time = duration) count in the last bin.
    fn finish_bins(&mut self) {
        let bins = (self.step.div_ceil(self.monitors.rate_bin_steps) as usize).max(1);
        for counts in &mut self.monitors.counts {
            let overflow: u32 = counts.iter().skip(bins).sum();
            counts.resize(bins, 0);
            counts[bins - 1] += overflow;
        }
    }

    /// One step of the schedule in the module documentation.
    pub fn advance(&mut self) {
        let n = self.step;
        while let Some(&(step, pop)) = self.current_changes.get(self.next_change) {
            if step > n {
                break;
            }
            if let Dynamics::Lif(lif) = &mut self.populations[pop].dynamics {
                currents::fill_current(&self.injections, pop, n, &mut lif.i_ext);
            }
            self.next_change += 1;
        }
        for trace in &mut self.monitors.traces {
            if let Dynamics::Lif(lif) = &self.populations[trace.population].dynamics {
                trace.v.extend(trace.ids.iter().map(|&id| lif.v[id as usize] as f32));
            }
        }
        for p in 0..self.populations.len() {
            if let Dynamics::Source(generator) = &mut self.populations[p].dynamics {
                self.fired[p].clear();
                generator.emit(n, &mut self.fired[p]);
                self.monitors.record_spikes(p, n, &self.fired[p]);
                self.schedule(p, n);
            }
        }
        for p in 0..self.populations.len() {
            if let Dynamics::Lif(lif) = &mut self.populations[p].dynamics {
                self.events_delivered += deliver_arrivals(lif, &self.projections, n);
                update_population(lif, n, &mut self.fired[p]);
            }
        }
        for p in 0..self.populations.len() {
            if matches!(self.populations[p].dynamics, Dynamics::Lif(_)) {
                self.monitors.record_spikes(p, n + 1, &self.fired[p]);
                self.schedule(p, n + 1);
            }
        }
        self.step += 1;
    }

    /// Queues the synapses of population `source`'s spikes, stamped at step `stamp`, for arrival
    /// at `stamp + delay` in their targets.
    fn schedule(&mut self, source: usize, stamp: u64) {
        let fired = &self.fired[source];
        if fired.is_empty() {
            return;
        }
        for &k in &self.outgoing[source] {
            let proj = &self.projections[k];
            let Dynamics::Lif(target) = &mut self.populations[proj.target].dynamics else {
                unreachable!("checked at build")
            };
            let slots = target.arrivals.len() as u64;
            let csr = &proj.synapses;
            match &csr.delays {
                Delays::Uniform(d) => {
                    let slot = &mut target.arrivals[((stamp + *d as u64) % slots) as usize];
                    slot.extend(fired.iter().map(|&i| {
                        let r = csr.row(i as usize);
                        Arrival { projection: k, start: r.start, end: r.end }
                    }));
                }
                Delays::PerSynapse(delays) => {
                    // Rows are sorted by delay: one arrival per run of equal delays.
                    for &i in fired {
                        let r = csr.row(i as usize);
                        let mut start = r.start;
                        while start < r.end {
                            let d = delays[start];
                            let end = start + delays[start..r.end].partition_point(|&x| x == d);
                            target.arrivals[((stamp + d as u64) % slots) as usize].push(Arrival {
                                projection: k,
                                start,
                                end,
                            });
                            start = end;
                        }
                    }
                }
            }
        }
    }
}

/// The distinct time constants of the exponential synapses into `target`, in order of first
/// appearance: one synaptic variable per entry.
fn synaptic_taus(projections: &[(u64, &spec::Projection)], target: &str) -> Vec<f64> {
    let mut taus = Vec::new();
    for (_, p) in projections.iter().filter(|(_, p)| p.to == target) {
        if let Synapse::Exponential { tau_ms } = p.synapse {
            if !taus.contains(&tau_ms) {
                taus.push(tau_ms);
            }
        }
    }
    taus
}

/// The generator of an `Image` source: the test image `index` of the data folder (relative to
/// the stimulus file), checked against the source's size, encoded over the network's duration.
fn image_source(
    model: &Model,
    name: &str,
    size: u32,
    data: Option<&str>,
    index: u32,
    encoder: Encoder,
    seed: u64,
) -> Result<Generator> {
    let folder = idx::stimulus_folder(data, model.stimulus_path.as_deref());
    let split = idx::load_dir(&folder)?.test;
    let pixels = split.images.pixels_per_image();
    if pixels != size as usize {
        return Err(Error::Data {
            path: folder,
            message: format!("images have {pixels} pixels, but source {name:?} has size {size}"),
        });
    }
    if index as usize >= split.len() {
        return Err(Error::Data {
            path: folder,
            message: format!("source {name:?} asks for test image {index}, but there are {}", split.len()),
        });
    }
    let steps = (model.network.duration_ms / model.network.dt_ms).round() as usize;
    Ok(Generator::Image {
        pixels: split.images.image(index as usize).to_vec(),
        label: split.labels[index as usize],
        encoder,
        steps: steps.max(1),
        rng: encoding_stream(seed, None, index as usize),
    })
}

/// Adds the weights of every synapse due at step `n` into `lif`; returns how many there were.
fn deliver_arrivals(lif: &mut LifPopulation, projections: &[Projection], n: u64) -> u64 {
    let slot = (n % lif.arrivals.len() as u64) as usize;
    let mut arrivals = std::mem::take(&mut lif.arrivals[slot]);
    let mut events = 0;
    for a in &arrivals {
        let proj = &projections[a.projection];
        let targets = &proj.synapses.targets[a.start..a.end];
        let weights = &proj.synapses.weights[a.start..a.end];
        events += targets.len() as u64;
        match proj.input {
            Input::Synaptic { index, .. } => {
                let syn = &mut lif.syn[index];
                for (&t, &w) in targets.iter().zip(weights) {
                    syn[t as usize] += w as f64;
                }
            }
            Input::Membrane => {
                for (&t, &w) in targets.iter().zip(weights) {
                    if !lif.refractory.is_refractory(t as usize, n) {
                        lif.v[t as usize] += w as f64;
                    }
                }
            }
        }
    }
    arrivals.clear();
    lif.arrivals[slot] = arrivals; // keep the allocation
    events
}

/// Integrates one LIF population over step `n`, filling `fired` with the ids that spiked.
/// Large populations run as one parallel section per step (rayon's hand-off between threads
/// costs tens of microseconds here, so there is only one), and only when the pool has more than
/// one thread; chunks are fixed, so either way the result is the same.
fn update_population(lif: &mut LifPopulation, n: u64, fired: &mut Vec<u32>) {
    fired.clear();
    let LifPopulation { constants: k, exponentials, syn, v, refractory, i_ext, has_current, chunk_spikes, .. } = lif;
    let i_ext = has_current.then_some(i_ext.as_slice());
    let Refractory { active_from, queues, .. } = refractory;
    if v.len() < PARALLEL_MIN_NEURONS || rayon::current_num_threads() < 2 {
        lif::integrate(k, exponentials, v, i_ext, syn.iter_mut().map(|s| s.as_mut_slice()).collect());
        for (c, (v, queue)) in v.chunks_mut(CHUNK).zip(queues.iter_mut()).enumerate() {
            queue.hold(v, (c * CHUNK) as u32, n);
        }
        lif::threshold(k, 0, v, active_from, n, fired);
    } else {
        let mut syn_chunks: Vec<_> = syn.iter_mut().map(|s| s.chunks_mut(CHUNK)).collect();
        let mut i_ext_chunks = i_ext.map(|i| i.chunks(CHUNK));
        let chunks: Vec<_> = v
            .chunks_mut(CHUNK)
            .zip(active_from.chunks(CHUNK))
            .zip(queues.iter_mut())
            .zip(chunk_spikes.iter_mut())
            .map(|(((v, active_from), queue), out)| {
                let syn: Vec<&mut [f64]> =
                    syn_chunks.iter_mut().map(|it| it.next().expect("same length as v")).collect();
                (v, active_from, queue, i_ext_chunks.as_mut().and_then(|it| it.next()), syn, out)
            })
            .collect();
        chunks.into_par_iter().enumerate().for_each(|(c, (v, active_from, queue, i_ext, syn, out))| {
            let offset = (c * CHUNK) as u32;
            out.clear();
            lif::integrate(k, exponentials, v, i_ext, syn);
            queue.hold(v, offset, n);
            lif::threshold(k, offset, v, active_from, n, out);
        });
        for out in chunk_spikes.iter() {
            fired.extend_from_slice(out);
        }
    }
    refractory.start(fired, v, n, k);
}
