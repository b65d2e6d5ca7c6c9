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
//!    ([`lif`]); spikes are stamped `t_{n+1}`, when the threshold was found crossed.
//!
//! A spike stamped `t_s` on a projection with delay `d` steps arrives at step `s + d`. Spikes are
//! delayed, not their weights: each population keeps the ids that fired in each of its last
//! `max outgoing delay + 1` steps ([`SpikeRing`]), and a target block reads, per incoming
//! projection and delay `d`, the spikes stamped `n - d` and adds those neurons' rows. Work per
//! step is thus the neuron update plus the synapses of neurons that fired; silent synapses cost
//! nothing.
//!
//! Steps 4 and 5 run per block of target neurons ([`synapses::block_size`]), in parallel for
//! large populations: a block's arrivals, integration and threshold touch only its own neurons,
//! in a fixed order, and the blocks' spikes are concatenated in block order, so results are
//! identical for any number of threads. Random numbers come from streams derived from (seed,
//! purpose, index) ([`rng`]).

pub mod currents;
pub mod drive;
pub mod estimate;
pub mod layer;
pub mod lif;
pub mod monitor;
mod shared;
pub mod sources;
pub mod synapses;

use rayon::prelude::*;

use crate::data::encode::{Encoder, encoding_stream};
use crate::data::idx;
use crate::error::{Error, Result};
use crate::rng::{self, Purpose, Stream};
use crate::spec::{self, Model, Neuron, SpikeRecord, Synapse};
use currents::Injection;
use drive::PoissonDrive;
use layer::LayerPopulation;
use lif::{Exponential, HeldQueue, Input, LifConstants, PendingDecay, Refractory};
use monitor::{Monitors, SpikeLog, TraceLog};
pub use shared::Share;
use shared::Sharing;
use sources::Generator;
use synapses::{ConnectionPlan, Delays, Synapses};

/// A population updates its blocks in parallel when it has more than one and its work per step,
/// counted as neurons plus incoming synapses / 100, reaches this; below it a parallel section
/// costs more than it saves (rayon's hand-off takes tens of microseconds, a step of CUBA a
/// few). Either way the blocks are the same, so the result is too.
pub const PARALLEL_MIN_WORK: usize = 16_384;

#[derive(Debug, Clone)]
pub struct LifPopulation {
    pub constants: LifConstants,
    /// Per exponential synaptic variable, its constants and the decay not yet applied to its
    /// stored values ([`PendingDecay`]).
    pub exponentials: Vec<Exponential>,
    pending: Vec<PendingDecay>,
    /// The stored values of the synaptic variables, block after block, and within a block
    /// variable after variable ([`lif::variable`]): a block's share is one slice, handed to
    /// its task without building a list per step.
    syn: Vec<f64>,
    pub v: Vec<f64>,
    pub refractory: Refractory,
    pub i_ext: Vec<f64>,
    pub has_current: bool,
    /// Neurons per block ([`synapses::block_size`] of the population's size).
    pub block: usize,
    /// Whether the blocks are worth updating in parallel ([`PARALLEL_MIN_WORK`]).
    parallel: bool,
    /// Per block, whether this rank updates it (all of them in a single process).
    owned: Vec<bool>,
    /// Poisson inputs into the population.
    drives: Vec<PoissonDrive>,
    /// What each block keeps for itself.
    blocks: Vec<BlockLocal>,
}

impl LifPopulation {
    /// The values of exponential synaptic variable `c` (in the order of [`Self::exponentials`]),
    /// one per neuron.
    pub fn synaptic_variable(&self, c: usize) -> Vec<f64> {
        let channels = self.exponentials.len();
        let blocks = self.syn.chunks(self.block * channels);
        let stored = blocks.flat_map(|values| lif::variable(values, c, values.len() / channels));
        stored.map(|&s| self.pending[c].factor * s).collect()
    }
}

/// State a block of neurons keeps between steps, touched only by the task updating it.
#[derive(Debug, Clone, Default)]
struct BlockLocal {
    /// The ids that fired in the current step, and the synaptic events received in it.
    spikes: Vec<u32>,
    /// Groups of neurons at or above threshold after integration ([`lif::GROUP`]).
    crossed: Vec<u32>,
    events: u64,
    /// One random stream per Poisson input of the population.
    drive_streams: Vec<Stream>,
    /// Synapses of projections with per-synapse delays, queued when their spike is emitted:
    /// slot `s % len` holds those due at step `s`.
    pending: Vec<Vec<Arrival>>,
}

/// Synapses `start..end` of one block of projection `projection`, due at one step.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Arrival {
    projection: u32,
    start: u32,
    end: u32,
}

/// The ids a population fired in each of its last `len` steps: slot `s % len` holds the spikes
/// stamped at step `s`, as long as a projection may still deliver them.
#[derive(Debug, Clone)]
pub struct SpikeRing {
    slots: Vec<Vec<u32>>,
    /// Per slot, the value each id carries when its source is an analog encoder (a pixel's
    /// intensity); empty for spikes, which carry 1.
    values: Vec<Vec<f32>>,
}

impl SpikeRing {
    fn new(len: usize) -> Self {
        SpikeRing { slots: vec![Vec::new(); len.max(1)], values: vec![Vec::new(); len.max(1)] }
    }

    /// The ids stamped at step `stamp` (one of the last `len` steps).
    pub fn at(&self, stamp: u64) -> &[u32] {
        &self.slots[(stamp % self.slots.len() as u64) as usize]
    }

    /// The values the ids stamped at `stamp` carry: empty for spikes (1 each).
    pub fn values_at(&self, stamp: u64) -> &[f32] {
        &self.values[(stamp % self.values.len() as u64) as usize]
    }

    /// The emptied slot for step `stamp`, to be filled with its spikes.
    fn start(&mut self, stamp: u64) -> &mut Vec<u32> {
        self.start_with_values(stamp).0
    }

    /// The emptied slot for step `stamp` and its values.
    fn start_with_values(&mut self, stamp: u64) -> (&mut Vec<u32>, &mut Vec<f32>) {
        let k = (stamp % self.slots.len() as u64) as usize;
        self.slots[k].clear();
        self.values[k].clear();
        (&mut self.slots[k], &mut self.values[k])
    }
}

#[derive(Debug, Clone)]
pub enum Dynamics {
    Lif(Box<LifPopulation>),
    /// A trained layer's neurons ([`layer`]), installed by [`Simulation::install_layer`].
    Layer(Box<LayerPopulation>),
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
    pub synapses: Synapses,
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
    /// Per population, indices of the projections into it, in file order (the order in which
    /// their spikes are added).
    incoming: Vec<Vec<usize>>,
    /// Per population, its recent spikes.
    spikes: Vec<SpikeRing>,
    injections: Vec<Injection>,
    current_changes: Vec<(u64, usize)>,
    next_change: usize,
    pub monitors: Monitors,
    /// Synaptic events delivered so far (one per synapse of a neuron that fired).
    pub events_delivered: u64,
    /// Present when the simulation is shared among ranks ([`shared`]).
    sharing: Option<Sharing>,
}

impl Simulation {
    /// Builds a checked model: populations, then connectivity, then stimuli and monitors.
    pub fn build(model: &Model, seed: u64) -> Result<Self> {
        Self::build_shared(model, seed, Share::ALONE)
    }

    /// Builds this rank's share of a model ([`shared`]): the synapses onto its own blocks only.
    pub fn build_shared(model: &Model, seed: u64, share: Share) -> Result<Self> {
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
            let taus = synaptic_taus(model, &pop.name);
            let n = pop.size as usize;
            let block = synapses::block_size(n);
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
                    syn: vec![0.0; n * taus.len()],
                    pending: vec![PendingDecay::NONE; taus.len()],
                    v,
                    refractory: Refractory::new(n, block),
                    i_ext: vec![0.0; n],
                    has_current: false,
                    block,
                    parallel: false,
                    owned: vec![true; n.div_ceil(block)],
                    drives: Vec::new(),
                    blocks: vec![BlockLocal::default(); n.div_ceil(block)],
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

        // Blocks of all LIF populations, counted in order, dealt round-robin to the ranks.
        let mut first_block = vec![0; populations.len()];
        let mut blocks_so_far = 0;
        for (pi, pop) in populations.iter_mut().enumerate() {
            if let Dynamics::Lif(lif) = &mut pop.dynamics {
                first_block[pi] = blocks_so_far;
                for (b, owned) in lif.owned.iter_mut().enumerate() {
                    *owned = share.owner(blocks_so_far + b) == share.rank;
                }
                blocks_so_far += lif.owned.len();
            }
        }

        let mut projections = Vec::new();
        for (stream_index, p) in &all_projections {
            let (source, target) = (index_of(&p.from)?, index_of(&p.to)?);
            if !matches!(populations[target].dynamics, Dynamics::Lif(_)) {
                return Err(Error::Simulation(format!("projection target {:?} is not a neuron population", p.to)));
            }
            let input = input_of(&p.synapse, &synaptic_taus(model, &p.to));
            let plan = ConnectionPlan {
                connect: &p.connect,
                n_source: populations[source].size,
                n_target: populations[target].size,
                exclude_self: source == target && !p.allow_autapses,
                weight: &p.weight,
                delay_ms: &p.delay_ms,
                dt_ms: dt,
            };
            let stream_index = *stream_index;
            let Dynamics::Lif(target_lif) = &populations[target].dynamics else { unreachable!("checked above") };
            let owned = &target_lif.owned;
            let synapses = synapses::build(
                &plan,
                |j| rng::item_stream(seed, Purpose::Connectivity, stream_index, j as u64),
                |b| owned[b],
            )
            .map_err(|e| Error::Simulation(format!("projection {:?} -> {:?}: {e}", p.from, p.to)))?;
            projections.push(Projection { source, target, input, synapses });
        }
        // A population's spikes are kept as long as a projection with a shared delay reads
        // them; spikes on projections with per-synapse delays are queued by the target blocks
        // when emitted, in rings as long as their longest delay.
        let shared_delay = |p: &Projection| match p.synapses.delays {
            Delays::Uniform(d) => d as usize,
            Delays::PerSynapse { .. } => 0,
        };
        let spikes = (0..populations.len())
            .map(|pi| {
                SpikeRing::new(projections.iter().filter(|p| p.source == pi).map(shared_delay).max().unwrap_or(0) + 1)
            })
            .collect();
        for (pi, pop) in populations.iter_mut().enumerate() {
            if let Dynamics::Lif(lif) = &mut pop.dynamics {
                let synapses_in: usize = projections.iter().filter(|p| p.target == pi).map(|p| p.synapses.len()).sum();
                lif.parallel = lif.blocks.len() > 1 && lif.v.len() + synapses_in / 100 >= PARALLEL_MIN_WORK;
                let into = projections.iter().filter(|p| p.target == pi);
                let longest = into.filter(|p| shared_delay(p) == 0).map(|p| p.synapses.max_delay()).max().unwrap_or(0);
                for local in &mut lif.blocks {
                    local.pending = vec![Vec::new(); longest as usize + 1];
                }
            }
        }
        let incoming = (0..populations.len())
            .map(|pi| (0..projections.len()).filter(|&k| projections[k].target == pi).collect())
            .collect();

        for (di, drive) in stim.poisson_inputs.iter().enumerate() {
            let pi = index_of(&drive.population)?;
            let taus = synaptic_taus(model, &drive.population);
            let Dynamics::Lif(lif) = &mut populations[pi].dynamics else {
                return Err(Error::Simulation(format!(
                    "Poisson input target {:?} is not a neuron population",
                    drive.population
                )));
            };
            let p = drive.rate_hz * dt / 1000.0;
            lif.drives.push(PoissonDrive::new(drive.inputs, p, drive.weight, input_of(&drive.synapse, &taus))?);
            for (b, local) in lif.blocks.iter_mut().enumerate() {
                local.drive_streams.push(rng::item_stream(seed, Purpose::PoissonInput, di as u64, b as u64));
            }
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
        let spike_logs = populations
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
            spikes: spike_logs,
            traces,
            rate_bin_steps: ((record.rate_bin_ms / dt).round() as u64).max(1),
            counts: vec![Vec::new(); n_pops],
            totals: vec![0; n_pops],
        };
        // Another rank may need a spike no sooner than the shortest delay after it: exchange
        // that often (every step when some delays are drawn per synapse, as those are queued
        // when the spike is emitted).
        let sharing = (share.size > 1).then(|| {
            let from_neurons =
                projections.iter().filter(|p| matches!(populations[p.source].dynamics, Dynamics::Lif(_)));
            let shortest = from_neurons
                .map(|p| match p.synapses.delays {
                    Delays::Uniform(d) => d as u64,
                    Delays::PerSynapse { .. } => 1,
                })
                .min()
                .unwrap_or(256);
            Sharing { share, interval: shortest.clamp(1, 256), first_block, outgoing: Vec::new(), next_stamp: 1 }
        });
        Ok(Simulation {
            sharing,
            dt_ms: dt,
            seed,
            step: 0,
            populations,
            projections,
            incoming,
            spikes,
            current_changes: currents::change_points(&injections),
            next_change: 0,
            injections,
            monitors,
            events_delivered: 0,
        })
    }

    /// Makes population `index` (built as LIF, with the projections into it) run a trained
    /// layer instead; the layer's size must be the population's.
    /// Under ranks the layer takes the population's blocks: this rank's blocks receive their
    /// synapses here, and only their spikes count (see [`LayerPopulation::share`]).
    pub fn install_layer(&mut self, index: usize, mut layer: LayerPopulation) {
        assert_eq!(
            layer.drive.len(),
            self.populations[index].size,
            "a trained layer replaces a population of its size"
        );
        if let Dynamics::Lif(lif) = &self.populations[index].dynamics {
            layer.share(lif.block, lif.owned.clone());
        }
        self.populations[index].dynamics = Dynamics::Layer(Box::new(layer));
    }

    /// The label of the data-set image a source presents, if one does.
    pub fn presented_label(&self) -> Option<u8> {
        self.populations.iter().find_map(|p| match &p.dynamics {
            Dynamics::Source(Generator::Image { label, .. }) => Some(*label),
            _ => None,
        })
    }

    pub fn neuron_count(&self) -> usize {
        self.populations.iter().filter(|p| !matches!(p.dynamics, Dynamics::Source(_))).map(|p| p.size).sum()
    }

    pub fn synapse_count(&self) -> usize {
        self.projections.iter().map(|p| p.synapses.len()).sum()
    }

    /// Bytes held by synapse storage: the memory that grows with the synapse count.
    pub fn synapse_bytes(&self) -> usize {
        self.projections.iter().map(|p| p.synapses.heap_bytes()).sum()
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
            let v = match &self.populations[trace.population].dynamics {
                Dynamics::Lif(lif) => &lif.v,
                Dynamics::Layer(layer) => layer.v(),
                Dynamics::Source(_) => continue,
            };
            trace.v.extend(trace.ids.iter().map(|&id| v[id as usize] as f32));
        }
        for p in 0..self.populations.len() {
            if let Dynamics::Source(generator) = &mut self.populations[p].dynamics {
                let (ids, values) = self.spikes[p].start_with_values(n);
                generator.emit(n, ids, values);
                self.monitors.record_spikes(p, n, self.spikes[p].at(n));
            }
        }
        for p in 0..self.populations.len() {
            match &mut self.populations[p].dynamics {
                Dynamics::Lif(lif) => {
                    self.events_delivered +=
                        update_population(lif, &self.incoming[p], &self.projections, &self.spikes, n);
                }
                Dynamics::Layer(layer) => {
                    self.events_delivered += layer.update(&self.incoming[p], &self.projections, &self.spikes, n);
                }
                Dynamics::Source(_) => {}
            }
        }
        for p in 0..self.populations.len() {
            if let Dynamics::Layer(layer) = &self.populations[p].dynamics {
                match &mut self.sharing {
                    None => {
                        let fired = self.spikes[p].start(n + 1);
                        fired.extend_from_slice(&layer.fired);
                        self.monitors.record_spikes(p, n + 1, fired);
                    }
                    Some(sharing) => {
                        for (b, ids) in layer.fired_by_owned_block() {
                            sharing.push(n + 1, p, b, ids);
                        }
                    }
                }
            }
            if let Dynamics::Lif(lif) = &mut self.populations[p].dynamics {
                match &mut self.sharing {
                    None => {
                        let fired = self.spikes[p].start(n + 1);
                        for local in &lif.blocks {
                            fired.extend_from_slice(&local.spikes);
                        }
                        lif.refractory.start(fired, &lif.v, n, &lif.constants);
                        self.monitors.record_spikes(p, n + 1, fired);
                    }
                    // Filed into the ring and recorded when the ranks exchange them.
                    Some(sharing) => {
                        for (b, local) in lif.blocks.iter().enumerate() {
                            lif.refractory.start(&local.spikes, &lif.v, n, &lif.constants);
                            sharing.push(n + 1, p, b, &local.spikes);
                        }
                    }
                }
            }
        }
        self.step += 1;
    }
}

/// The distinct time constants of the exponential synapses into `target` (the network's
/// projections, the stimulus's, then Poisson inputs), in order of first appearance: one synaptic
/// variable per entry.
fn synaptic_taus(model: &Model, target: &str) -> Vec<f64> {
    let (net, stim) = (&model.network, &model.stimulus);
    let projections = net.projections.iter().chain(&stim.projections).filter(|p| p.to == target);
    let drives = stim.poisson_inputs.iter().filter(|d| d.population == target);
    let synapses = projections.map(|p| &p.synapse).chain(drives.map(|d| &d.synapse));
    let mut taus = Vec::new();
    for synapse in synapses {
        if let Synapse::Exponential { tau_ms } = *synapse
            && !taus.contains(&tau_ms)
        {
            taus.push(tau_ms);
        }
    }
    taus
}

/// Where input through `synapse` goes in a population whose synaptic variables have `taus`.
fn input_of(synapse: &Synapse, taus: &[f64]) -> Input {
    match *synapse {
        Synapse::Instantaneous => Input::Membrane,
        Synapse::Exponential { tau_ms } => Input::Synaptic {
            index: taus
                .iter()
                .position(|&t| t == tau_ms)
                .expect("the population's variables were made from the same list"),
            tau_ms,
        },
    }
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
    // A generated task's trials are its own test set, as `snn eval` scores them.
    let split = match encoder {
        Encoder::Recall { classes, .. } => {
            crate::data::tasks::recall(classes, 0, crate::data::tasks::RECALL_TEST_SAMPLES).test
        }
        _ => idx::load_dir(&folder)?.test,
    };
    let pixels = split.images.pixels_per_image();
    if encoder.inputs(pixels) != size as usize {
        let needs = encoder.describe_input(pixels);
        return Err(Error::Data {
            path: folder,
            message: format!(
                "{needs} need a source of size {}, but source {name:?} has size {size}",
                encoder.inputs(pixels)
            ),
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

/// How many spikes ahead delivery prefetches rows.
const PREFETCH_AHEAD: usize = 4;

/// One block's share of a LIF population's state during a step.
struct BlockState<'a> {
    /// Id of the block's first neuron.
    offset: usize,
    v: &'a mut [f64],
    /// The block's synaptic variables, one after the other, each as long as `v`.
    syn: &'a mut [f64],
    pending: &'a [PendingDecay],
    i_ext: Option<&'a [f64]>,
    active_from: &'a [u64],
    held: &'a mut HeldQueue,
    local: &'a mut BlockLocal,
}

/// Steps 4 and 5 of the schedule for one LIF population over step `n`: per block, the arrivals,
/// integration and threshold; each block's spikes are left in its `BlockLocal`. Returns the
/// synaptic events delivered.
fn update_population(
    lif: &mut LifPopulation,
    incoming: &[usize],
    projections: &[Projection],
    spikes: &[SpikeRing],
    n: u64,
) -> u64 {
    let LifPopulation {
        constants,
        exponentials,
        syn,
        pending,
        v,
        refractory,
        i_ext,
        has_current,
        block,
        parallel,
        owned,
        drives,
        blocks,
    } = lif;
    let block = *block;
    let i_ext = has_current.then_some(i_ext.as_slice());
    let Refractory { active_from, queues, .. } = refractory;
    let channels = exponentials.len();
    let mut syn_blocks = syn.chunks_mut(block * channels.max(1));
    let mut i_ext_blocks = i_ext.map(|i| i.chunks(block));
    let parallel = *parallel && rayon::current_num_threads() > 1;
    let states = v
        .chunks_mut(block)
        .zip(active_from.chunks(block))
        .zip(queues.iter_mut())
        .zip(blocks.iter_mut())
        .enumerate()
        .map(|(b, (((v, active_from), held), local))| {
            let state = BlockState {
                offset: b * block,
                v,
                // A population without synaptic variables has no shares to hand out.
                syn: syn_blocks.next().unwrap_or_default(),
                pending,
                i_ext: i_ext_blocks.as_mut().and_then(|it| it.next()),
                active_from,
                held,
                local,
            };
            (b, state)
        })
        .filter(|(b, _)| owned[*b]);
    let step_block = |(b, state): (usize, BlockState)| {
        update_block(constants, exponentials, drives, b, state, incoming, projections, spikes, n)
    };
    if parallel {
        states.collect::<Vec<_>>().into_par_iter().for_each(step_block);
    } else {
        states.for_each(step_block);
    }
    for (c, (pending, e)) in pending.iter_mut().zip(exponentials.iter()).enumerate() {
        if pending.step(e.decay) {
            let blocks = syn.chunks_mut(block * channels);
            pending.apply(blocks.map(|values| {
                let neurons = values.len() / channels;
                lif::variable_mut(values, c, neurons)
            }));
        }
    }
    blocks.iter().map(|local| local.events).sum()
}

/// Steps 4 and 5 for block `b` of a population: queues the synapses of this step's spikes on
/// projections with per-synapse delays; adds the rows of the spikes due now (projections with
/// a shared delay in file order, then the queue), then the Poisson inputs; integrates and
/// thresholds the block's neurons.
#[allow(clippy::too_many_arguments)]
fn update_block(
    k: &LifConstants,
    exponentials: &[Exponential],
    drives: &[PoissonDrive],
    b: usize,
    mut st: BlockState,
    incoming: &[usize],
    projections: &[Projection],
    spikes: &[SpikeRing],
    n: u64,
) {
    let mut events = 0;
    let slots = st.local.pending.len() as u64;
    for &pk in incoming {
        let proj = &projections[pk];
        let blk = &proj.synapses.blocks[b];
        if blk.targets.is_empty() {
            continue;
        }
        let ring = &spikes[proj.source];
        match &proj.synapses.delays {
            Delays::Uniform(d) => {
                if let Some(stamp) = n.checked_sub(*d as u64) {
                    let ids = ring.at(stamp);
                    let values = ring.values_at(stamp);
                    if !values.is_empty() {
                        // Analog input (an image source's currents): each row scaled by its value.
                        for (&i, &x) in ids.iter().zip(values) {
                            events += add_row(&mut st, proj.input, blk, blk.row(i as usize), n, x as f64);
                        }
                        continue;
                    }
                    for (k, &i) in ids.iter().enumerate() {
                        // Rows lie far apart: fetch ahead, the row start first, then the row.
                        if let Some(&later) = ids.get(k + 2 * PREFETCH_AHEAD) {
                            blk.prefetch_row_start(later as usize);
                        }
                        if let Some(&next) = ids.get(k + PREFETCH_AHEAD) {
                            blk.prefetch_row(next as usize);
                        }
                        events += add_row(&mut st, proj.input, blk, blk.row(i as usize), n, 1.0);
                    }
                }
            }
            Delays::PerSynapse { .. } => {
                // Rows are sorted by delay: one arrival per run of equal delays.
                for &i in ring.at(n) {
                    let row = blk.row(i as usize);
                    let mut start = row.start;
                    while start < row.end {
                        let d = blk.delays[start];
                        let end = start + blk.delays[start..row.end].partition_point(|&x| x == d);
                        st.local.pending[((n + d as u64) % slots) as usize].push(Arrival {
                            projection: pk as u32,
                            start: start as u32,
                            end: end as u32,
                        });
                        start = end;
                    }
                }
            }
        }
    }
    let slot = (n % slots) as usize;
    let due = std::mem::take(&mut st.local.pending[slot]);
    for a in &due {
        let proj = &projections[a.projection as usize];
        events += add_row(&mut st, proj.input, &proj.synapses.blocks[b], a.start as usize..a.end as usize, n, 1.0);
    }
    st.local.pending[slot] = due;
    st.local.pending[slot].clear(); // keeps the allocation
    st.local.events = events;
    for (drive, rng) in drives.iter().zip(st.local.drive_streams.iter_mut()) {
        drive.add(rng, st.v, st.syn, st.pending, st.active_from, n);
    }
    st.local.spikes.clear();
    lif::integrate(k, exponentials, st.pending, st.v, st.i_ext, st.syn, &mut st.local.crossed);
    st.held.hold(st.v, st.offset as u32, n);
    lif::threshold(k, st.offset as u32, st.v, st.active_from, n, &st.local.crossed, &mut st.local.spikes);
}

/// Adds synapses `range` of `blk`, each weight times `scale`, into the block's neurons; returns
/// how many there were. Spikes pass `scale` 1 (folded away once inlined); an analog source's
/// ids pass the value they carry.
#[inline(always)]
fn add_row(
    st: &mut BlockState,
    input: Input,
    blk: &synapses::Block,
    range: std::ops::Range<usize>,
    n: u64,
    scale: f64,
) -> u64 {
    let targets = &blk.targets[range.clone()];
    let weights = &blk.weights[range];
    match input {
        Input::Synaptic { index, .. } => {
            let syn = lif::variable_mut(st.syn, index, st.v.len());
            let scale = scale * st.pending[index].inverse;
            for (&t, &w) in targets.iter().zip(weights) {
                syn[t as usize] += w as f64 * scale;
            }
        }
        Input::Membrane => {
            for (&t, &w) in targets.iter().zip(weights) {
                // A refractory neuron drops instantaneous input (see `lif`).
                if n >= st.active_from[t as usize] {
                    st.v[t as usize] += w as f64 * scale;
                }
            }
        }
    }
    targets.len() as u64
}
