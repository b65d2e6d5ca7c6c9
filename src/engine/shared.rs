//! A simulation shared among ranks (MPI processes). Every rank builds the whole model's neuron
//! state but owns only some blocks of target neurons: it builds and stores just the synapses
//! onto them, and updates just them (a trained layer's population updates all its neurons, an
//! elementwise step, but only its own blocks receive their input and send their spikes). The blocks of all LIF populations, counted in order, are
//! dealt round-robin (block g to rank g mod N), so that every rank gets a share of every
//! population, and of its heavy and light blocks alike. After every interval of steps no
//! longer than the shortest delay (spikes wait in the rings meanwhile, as in NEST), the ranks
//! all-gather the ids their blocks fired; every rank then puts each step's spikes into the
//! population's ring in block order, exactly as one process would have, and records them. Spike
//! generators draw the same numbers on every rank, so their spikes need no exchange.

use super::{Dynamics, Simulation};
use crate::ranks::Exchange;

/// Which rank this is, of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub rank: usize,
    pub size: usize,
}

impl Share {
    pub const ALONE: Share = Share { rank: 0, size: 1 };

    pub fn of(exchange: &dyn Exchange) -> Share {
        Share { rank: exchange.rank(), size: exchange.size() }
    }

    /// The rank owning global block `g`.
    pub fn owner(&self, g: usize) -> usize {
        g % self.size
    }
}

/// What a shared simulation keeps between exchanges.
#[derive(Debug, Clone)]
pub(super) struct Sharing {
    pub share: Share,
    /// Steps between exchanges: no spike can be needed by another rank sooner.
    pub interval: u64,
    /// Per population, the global index of its first block (LIF populations only).
    pub first_block: Vec<usize>,
    /// This rank's spikes since the last exchange, as records
    /// `[stamp high, stamp low, population, block, count, ids...]`.
    pub outgoing: Vec<u32>,
    /// The first step stamp of LIF spikes not exchanged yet.
    pub next_stamp: u64,
}

impl Sharing {
    /// Queues the ids block `block` of `population` fired, stamped `stamp`.
    pub fn push(&mut self, stamp: u64, population: usize, block: usize, ids: &[u32]) {
        if ids.is_empty() {
            return;
        }
        self.outgoing.extend([(stamp >> 32) as u32, stamp as u32, population as u32, block as u32, ids.len() as u32]);
        self.outgoing.extend_from_slice(ids);
    }
}

impl Simulation {
    /// Runs `steps` steps on this rank's share, exchanging spikes with the other ranks; every
    /// rank ends with the recording a single process would have made.
    pub fn run_shared(&mut self, steps: u64, exchange: &dyn Exchange, mut progress: impl FnMut(u64) + Send) {
        let Some(interval) = self.sharing.as_ref().map(|s| s.interval) else {
            return self.run(steps, progress);
        };
        let mut done = 0;
        while done < steps {
            let chunk = (interval - self.step % interval).min(steps - done);
            // As in `run`, the steps run on a pool thread; the exchange stays on this one,
            // the thread that initialised MPI.
            rayon::scope(|_| (0..chunk).for_each(|_| self.advance()));
            done += chunk;
            progress(done);
            if self.step.is_multiple_of(interval) || done == steps {
                self.exchange_spikes(exchange);
            }
        }
        self.merge_traces(exchange);
        self.events_delivered = exchange.sum(self.events_delivered);
        self.finish_bins();
    }

    /// Gathers every rank's spikes since the last exchange and files them, step by step and
    /// population by population, in block order.
    fn exchange_spikes(&mut self, exchange: &dyn Exchange) {
        let sharing = self.sharing.as_mut().expect("a shared simulation");
        let all = exchange.all_gather(&sharing.outgoing);
        sharing.outgoing.clear();
        let first = sharing.next_stamp;
        sharing.next_stamp = self.step + 1;
        // (stamp, population, block, start of the ids in `all`, count), sorted.
        let mut records = Vec::new();
        let mut at = 0;
        while at < all.len() {
            let stamp = ((all[at] as u64) << 32) | all[at + 1] as u64;
            let (population, block, count) = (all[at + 2] as usize, all[at + 3] as usize, all[at + 4] as usize);
            records.push((stamp, population, block, at + 5, count));
            at += 5 + count;
        }
        records.sort_unstable();
        let mut next = records.iter().peekable();
        for stamp in first..=self.step {
            for p in 0..self.populations.len() {
                if matches!(self.populations[p].dynamics, Dynamics::Source(_)) {
                    continue;
                }
                let fired = self.spikes[p].start(stamp);
                while let Some(&&(s, q, _, start, count)) = next.peek() {
                    if (s, q) != (stamp, p) {
                        break;
                    }
                    fired.extend_from_slice(&all[start..start + count]);
                    next.next();
                }
                self.monitors.record_spikes(p, stamp, self.spikes[p].at(stamp));
            }
        }
    }

    /// Every rank sampled the traces of all chosen neurons, but only an owner's samples are
    /// right: each column is taken from the rank owning that neuron's block.
    fn merge_traces(&mut self, exchange: &dyn Exchange) {
        let sharing = self.sharing.as_ref().expect("a shared simulation");
        for trace in &mut self.monitors.traces {
            let block = match &self.populations[trace.population].dynamics {
                Dynamics::Lif(lif) => lif.block,
                Dynamics::Layer(layer) => layer.block(),
                Dynamics::Source(_) => continue,
            };
            let mine: Vec<u32> = trace.v.iter().map(|x| x.to_bits()).collect();
            let all = exchange.all_gather(&mine);
            let columns = trace.ids.len();
            for (c, &id) in trace.ids.iter().enumerate() {
                let owner = sharing.share.owner(sharing.first_block[trace.population] + id as usize / block);
                for (row, x) in trace.v.chunks_mut(columns).enumerate() {
                    x[c] = f32::from_bits(all[owner * mine.len() + row * columns + c]);
                }
            }
        }
    }
}
