//! Populations that run a trained layer's own discrete-time update (`snn simulate --checkpoint`
//! on a layer stack): the neurons of a Lif, CubaLif or Li layer of the trainer, stepped by the
//! trainer's code ([`Spiking::step`]), so that what the engine computes is what was trained.
//!
//! A step of such a population: the input starts as the Dense layer's bias; every spike due
//! now adds its synapses' weights, times the value it carries (1 for a spike, a pixel's
//! intensity from an analog encoder); then the layer's update. Its spikes are stamped at the
//! end of the step, like every population's, so each layer adds one step of latency (the
//! engine's shortest delay): layer l of a stack computes the trainer's step t in the engine's
//! step t + l.

use super::synapses::Delays;
use super::{Projection, SpikeRing};
use crate::nn::spiking::{Spiking, Stepper};

#[derive(Debug, Clone)]
pub struct LayerPopulation {
    pub layer: Spiking<f64>,
    pub state: Stepper<f64>,
    /// Added to the input at every step (the bias of the Dense layer before the neurons).
    pub drive: Vec<f64>,
    input: Vec<f64>,
    /// The ids that fired in the last step.
    pub fired: Vec<u32>,
    /// The step this layer computes the trainer's first step in: before it, the layer waits
    /// at rest (its bias alone would otherwise move it).
    first_step: u64,
    /// Under ranks: neurons per block, and per block whether this rank owns it (its synapses
    /// are built here). Other blocks' neurons step on the bias alone; their spikes come from
    /// their owners.
    block: usize,
    owned: Vec<bool>,
}

impl LayerPopulation {
    pub fn new(layer: Spiking<f64>, drive: Vec<f64>, first_step: u64) -> Self {
        let n = drive.len();
        LayerPopulation {
            state: layer.stepper(n),
            layer,
            drive,
            input: vec![0.0; n],
            fired: Vec::new(),
            first_step,
            block: n.max(1),
            owned: vec![true],
        }
    }

    /// Takes the population's blocks of `block` neurons, `owned` by this rank or not.
    pub fn share(&mut self, block: usize, owned: Vec<bool>) {
        self.block = block;
        self.owned = owned;
    }

    pub fn block(&self) -> usize {
        self.block
    }

    /// The ids fired in the last step, per block this rank owns (ids ascend).
    pub fn fired_by_owned_block(&self) -> impl Iterator<Item = (usize, &[u32])> {
        let block = self.block as u32;
        self.owned.iter().enumerate().filter(|(_, mine)| **mine).map(move |(b, _)| {
            let start = self.fired.partition_point(|&id| id < b as u32 * block);
            let end = self.fired.partition_point(|&id| id < (b as u32 + 1) * block);
            (b, &self.fired[start..end])
        })
    }

    /// The membranes after the last step's reset (Li: its output).
    pub fn v(&self) -> &[f64] {
        &self.state.v
    }

    /// One step (`n`): arrivals on the projections `incoming`, in order, then the update.
    /// Returns the synaptic events delivered.
    pub fn update(&mut self, incoming: &[usize], projections: &[Projection], spikes: &[SpikeRing], n: u64) -> u64 {
        if n < self.first_step {
            return 0;
        }
        self.input.copy_from_slice(&self.drive);
        let mut events = 0;
        for &pk in incoming {
            let proj = &projections[pk];
            let Delays::Uniform(d) = proj.synapses.delays else {
                unreachable!("a trained layer's projections have one delay")
            };
            let Some(stamp) = n.checked_sub(d as u64) else { continue };
            let ring = &spikes[proj.source];
            let values = ring.values_at(stamp);
            for (k, &i) in ring.at(stamp).iter().enumerate() {
                let value = values.get(k).map_or(1.0, |&x| x as f64);
                for (b, blk) in proj.synapses.blocks.iter().enumerate() {
                    let range = blk.row(i as usize);
                    let first = b * proj.synapses.block;
                    events += range.len() as u64;
                    for (&t, &w) in blk.targets[range.clone()].iter().zip(&blk.weights[range]) {
                        self.input[first + t as usize] += w as f64 * value;
                    }
                }
            }
        }
        self.layer.step(&mut self.state, &self.input);
        self.fired.clear();
        if self.layer.fires() {
            let fired = self.state.output.iter().enumerate().filter(|(_, s)| **s > 0.0);
            self.fired.extend(fired.map(|(id, _)| id as u32));
        }
        events
    }
}
