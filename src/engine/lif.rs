//! Leaky integrate-and-fire neurons with current-based synapses, integrated exactly.
//!
//! Equations (v in mV, synaptic variables s_c in mV as in Brian2's CUBA, I_ext in nA):
//!
//! ```text
//! tau_mem dv/dt = -(v - v_rest) + sum_c s_c + r_mem * I_ext
//! tau_c  ds_c/dt = -s_c                        (exponential channel c)
//! ```
//!
//! Over one step of length dt, with s_c and I_ext constant at the start of the step, the exact
//! solution is (Rotter & Diesmann 1999):
//!
//! ```text
//! v(t+dt)   = v_rest + (v - v_rest) P + sum_c G_c s_c + r_mem I_ext (1 - P)
//! s_c(t+dt) = s_c D_c
//! P = exp(-dt/tau_mem),  D_c = exp(-dt/tau_c),
//! G_c = tau_c / (tau_c - tau_mem) (D_c - P)     (= dt/tau_mem P when tau_c = tau_mem)
//! ```
//!
//! The synaptic variables are stored without their decay ([`PendingDecay`]): the population
//! keeps one factor per variable, `s_c = factor_c x stored_c`, multiplies the factor by D_c each
//! step and divides arriving weights by it. Integration then only reads the synaptic variables
//! and writes v, a third of the state traffic it had when it wrote every decayed s_c back (at
//! CUBA's size the step was bound by moving that state through the L2 cache).
//!
//! A step of a population, once arriving input has been added (to s_c, or straight to v for
//! instantaneous synapses), is: [`integrate`] every neuron from t to t + dt; [`HeldQueue::hold`]
//! puts frozen neurons back; [`threshold`] finds the neurons at or above threshold, resets them
//! and starts their refractory period.
//!
//! A refractory neuron keeps v frozen (Brian2's `unless refractory`): its synaptic variables
//! still receive input and decay, but instantaneous input is dropped (NEST's convention). Few
//! neurons are refractory at a time, so rather than testing every neuron every step, all are
//! integrated and the frozen few are then put back from a short queue; this keeps the
//! integration a branch-free loop that the compiler vectorises.

use std::collections::VecDeque;

use crate::spec::Reset;

/// Per-step constants of a LIF population, derived once from its parameters and dt.
#[derive(Debug, Clone)]
pub struct LifConstants {
    pub v_rest: f64,
    pub v_threshold: f64,
    pub v_reset: f64,
    pub reset: Reset,
    /// Steps a neuron stays frozen after a spike.
    pub refractory_steps: u64,
    /// P = exp(-dt / tau_mem).
    pub decay_mem: f64,
    /// r_mem (1 - P): mV per nA of injected current held over a step.
    pub current_gain: f64,
}

impl LifConstants {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dt_ms: f64,
        tau_mem_ms: f64,
        v_rest: f64,
        v_threshold: f64,
        v_reset: f64,
        refractory_ms: f64,
        r_mem_mohm: f64,
        reset: Reset,
    ) -> Self {
        let decay_mem = (-dt_ms / tau_mem_ms).exp();
        LifConstants {
            v_rest,
            v_threshold,
            v_reset,
            reset,
            refractory_steps: (refractory_ms / dt_ms).round() as u64,
            decay_mem,
            current_gain: r_mem_mohm * (1.0 - decay_mem),
        }
    }
}

/// Where a projection's weights go in its target population.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input {
    /// Instantaneous synapses: straight onto the membrane potential.
    Membrane,
    /// Exponential synapses: onto synaptic variable `index` of the population.
    Synaptic { index: usize, tau_ms: f64 },
}

/// Per-step constants of one exponential synaptic variable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exponential {
    /// D_c: per-step decay of the synaptic variable.
    pub decay: f64,
    /// G_c: contribution of the synaptic variable to v over one step.
    pub gain: f64,
}

impl Exponential {
    pub fn new(tau_ms: f64, tau_mem_ms: f64, dt_ms: f64) -> Self {
        let decay = (-dt_ms / tau_ms).exp();
        let p = (-dt_ms / tau_mem_ms).exp();
        let gain = if ((tau_ms - tau_mem_ms) / tau_mem_ms).abs() < 1e-9 {
            dt_ms / tau_mem_ms * p
        } else {
            tau_ms / (tau_ms - tau_mem_ms) * (decay - p)
        };
        Exponential { decay, gain }
    }
}

/// The decay of one synaptic variable not yet applied to its stored values: the variable of
/// neuron i is `factor x stored[i]`, and input arriving now is stored as `weight x inverse`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PendingDecay {
    pub factor: f64,
    /// 1 / factor, so that adding a synapse costs a multiplication, not a division.
    pub inverse: f64,
}

impl PendingDecay {
    /// Nothing pending: stored values are the variables.
    pub const NONE: PendingDecay = PendingDecay { factor: 1.0, inverse: 1.0 };

    /// Below this factor the stored values are brought back to scale ([`PendingDecay::apply`]),
    /// long before the factor could underflow or the stored values overflow (D = 0.98 per
    /// step reaches it after about 17 000 steps).
    const RESCALE_BELOW: f64 = 1e-150;

    /// Advances by one step of per-step decay `decay`; true when the stored values must now be
    /// brought back to scale with [`PendingDecay::apply`].
    pub fn step(&mut self, decay: f64) -> bool {
        self.factor *= decay;
        self.inverse = 1.0 / self.factor;
        self.factor < Self::RESCALE_BELOW
    }

    /// Applies the pending decay to the stored values (in as many parts as they are kept),
    /// leaving none pending.
    pub fn apply<'a>(&mut self, stored: impl IntoIterator<Item = &'a mut [f64]>) {
        for s in stored.into_iter().flatten() {
            *s *= self.factor;
        }
        *self = PendingDecay::NONE;
    }
}

/// Synaptic variable `c` among a block's stored values, which hold the block's variables one
/// after the other, each `neurons` long.
pub fn variable(stored: &[f64], c: usize, neurons: usize) -> &[f64] {
    &stored[c * neurons..(c + 1) * neurons]
}

/// [`variable`], to write.
pub fn variable_mut(stored: &mut [f64], c: usize, neurons: usize) -> &mut [f64] {
    &mut stored[c * neurons..(c + 1) * neurons]
}

/// Neurons are tested against the threshold in groups of this many: integration notes the
/// groups that hold a potential at or above threshold, and [`threshold`] visits only those, so
/// the potentials are not read a second time.
pub const GROUP: usize = 16;

/// Integrates every neuron of a chunk from t to t + dt, refractory or not (see [`Refractory`]),
/// and replaces `crossed` by the groups ([`GROUP`]) holding a potential at or above threshold.
/// `syn` holds the stored values of the exponential synaptic variables, one after the other,
/// each as long as `v`, and `pending` their decay ([`PendingDecay`]); `i_ext` is absent when
/// no current targets the population.
/// Specialised for up to three synaptic variables, so that the loop is fused and vectorised.
pub fn integrate(
    k: &LifConstants,
    synapses: &[Exponential],
    pending: &[PendingDecay],
    v: &mut [f64],
    i_ext: Option<&[f64]>,
    syn: &[f64],
    crossed: &mut Vec<u32>,
) {
    crossed.clear();
    // What the stored value of each variable adds to v over the step.
    let gain = |j: usize| synapses[j].gain * pending[j].factor;
    let n = v.len();
    let var = |j: usize| variable(syn, j, n);
    match synapses.len() {
        0 => integrate_fused::<0>(k, [], v, i_ext, [], crossed),
        1 => integrate_fused::<1>(k, [gain(0)], v, i_ext, [var(0)], crossed),
        2 => integrate_fused::<2>(k, [gain(0), gain(1)], v, i_ext, [var(0), var(1)], crossed),
        3 => integrate_fused::<3>(k, [gain(0), gain(1), gain(2)], v, i_ext, [var(0), var(1), var(2)], crossed),
        count => {
            let gains: Vec<f64> = (0..count).map(gain).collect();
            let vars: Vec<&[f64]> = (0..count).map(var).collect();
            integrate_passes(k, &gains, v, i_ext, &vars);
            for (g, group) in v.chunks(GROUP).enumerate() {
                if group.iter().fold(false, |any, &x| any | (x >= k.v_threshold)) {
                    crossed.push(g as u32);
                }
            }
        }
    }
}

fn integrate_fused<const N: usize>(
    k: &LifConstants,
    gains: [f64; N],
    v: &mut [f64],
    i_ext: Option<&[f64]>,
    syn: [&[f64]; N],
    crossed: &mut Vec<u32>,
) {
    let n = v.len();
    let full = n / GROUP * GROUP;
    for start in (0..full).step_by(GROUP) {
        let group = start..start + GROUP;
        let v = (&mut v[group.clone()]).try_into().expect("a full group");
        let syn = syn.map(|s| s[group.clone()].try_into().expect("a full group"));
        let i_ext = i_ext.map(|i| i[group.clone()].try_into().expect("a full group"));
        if integrate_group(k, &gains, v, i_ext, syn) {
            crossed.push((start / GROUP) as u32);
        }
    }
    if full < n {
        // The remainder goes through the same code, padded with neurons that cannot cross.
        let rest = n - full;
        let mut v_pad = [f64::NEG_INFINITY; GROUP];
        v_pad[..rest].copy_from_slice(&v[full..]);
        let mut syn_pad = [[0.0; GROUP]; N];
        for (pad, s) in syn_pad.iter_mut().zip(syn.iter()) {
            pad[..rest].copy_from_slice(&s[full..]);
        }
        let i_pad = i_ext.map(|i| {
            let mut pad = [0.0; GROUP];
            pad[..rest].copy_from_slice(&i[full..]);
            pad
        });
        if integrate_group(k, &gains, &mut v_pad, i_pad.as_ref(), syn_pad.each_ref()) {
            crossed.push((full / GROUP) as u32);
        }
        v[full..].copy_from_slice(&v_pad[..rest]);
    }
}

/// One group of [`integrate_fused`], as fixed-size arrays so that the loop has a constant trip
/// count and is vectorised whole (a variable 16-trip loop ran 3x slower); whether any neuron
/// reached the threshold.
#[inline(always)]
fn integrate_group<const N: usize>(
    k: &LifConstants,
    gains: &[f64; N],
    v: &mut [f64; GROUP],
    i_ext: Option<&[f64; GROUP]>,
    syn: [&[f64; GROUP]; N],
) -> bool {
    let mut above = false;
    for i in 0..GROUP {
        let mut c = k.v_rest + (v[i] - k.v_rest) * k.decay_mem;
        if let Some(i_ext) = i_ext {
            c += k.current_gain * i_ext[i];
        }
        for j in 0..N {
            c += gains[j] * syn[j][i];
        }
        v[i] = c;
        above |= c >= k.v_threshold;
    }
    above
}

/// [`integrate_fused`] for any number of synaptic variables, as whole-array passes.
fn integrate_passes(k: &LifConstants, gains: &[f64], v: &mut [f64], i_ext: Option<&[f64]>, syn: &[&[f64]]) {
    for v in v.iter_mut() {
        *v = k.v_rest + (*v - k.v_rest) * k.decay_mem;
    }
    if let Some(i_ext) = i_ext {
        for (v, &i) in v.iter_mut().zip(i_ext) {
            *v += k.current_gain * i;
        }
    }
    for (&gain, s) in gains.iter().zip(syn) {
        for (v, &s) in v.iter_mut().zip(s.iter()) {
            *v += gain * s;
        }
    }
}

/// The neurons of a population that are refractory: per neuron the step it becomes active
/// again, and per chunk of neurons a queue of the values they are held at. A queue is in spike
/// order, which is also the order of release, and each chunk's queue is touched only by the
/// thread that updates the chunk.
#[derive(Debug, Clone, Default)]
pub struct Refractory {
    /// Per neuron, the first step in which it integrates again.
    pub active_from: Vec<u64>,
    pub queues: Vec<HeldQueue>,
    chunk: usize,
}

/// Refractory neurons of one chunk: (neuron id, held potential, first active step).
#[derive(Debug, Clone, Default)]
pub struct HeldQueue(VecDeque<(u32, f64, u64)>);

impl HeldQueue {
    /// Forgets the neurons whose refractory period ends before step `step`, then puts the
    /// potentials of the others back, within the chunk `v` of neurons `offset..`.
    pub fn hold(&mut self, v: &mut [f64], offset: u32, step: u64) {
        while self.0.front().is_some_and(|&(_, _, until)| until <= step) {
            self.0.pop_front();
        }
        for &(id, value, _) in &self.0 {
            v[(id - offset) as usize] = value;
        }
    }
}

impl Refractory {
    /// For `n` neurons updated in chunks of `chunk`.
    pub fn new(n: usize, chunk: usize) -> Self {
        Refractory { active_from: vec![0; n], queues: vec![HeldQueue::default(); n.div_ceil(chunk).max(1)], chunk }
    }

    pub fn is_refractory(&self, neuron: usize, step: u64) -> bool {
        step < self.active_from[neuron]
    }

    /// Starts the refractory period of neurons that fired in step `step`; `v` holds their reset
    /// potential.
    pub fn start(&mut self, fired: &[u32], v: &[f64], step: u64, k: &LifConstants) {
        if k.refractory_steps == 0 {
            return;
        }
        let until = step + 1 + k.refractory_steps;
        for &id in fired {
            self.active_from[id as usize] = until;
            self.queues[id as usize / self.chunk].0.push_back((id, v[id as usize], until));
        }
    }
}

/// Finds the neurons of a chunk (ids `offset..`) at or above threshold in step `step`, among the
/// groups `crossed` that [`integrate`] found (refractory neurons that [`HeldQueue::hold`] put
/// back cannot fire, so holding adds none), skipping refractory ones; resets them and appends
/// their ids to `spikes`.
pub fn threshold(
    k: &LifConstants,
    offset: u32,
    v: &mut [f64],
    active_from: &[u64],
    step: u64,
    crossed: &[u32],
    spikes: &mut Vec<u32>,
) {
    for &g in crossed {
        let start = g as usize * GROUP;
        let end = (start + GROUP).min(v.len());
        for (j, x) in v[start..end].iter_mut().enumerate() {
            let i = start + j;
            if *x < k.v_threshold || step < active_from[i] {
                continue;
            }
            spikes.push(offset + i as u32);
            *x = match k.reset {
                Reset::Hard => k.v_reset,
                Reset::Subtract => *x - (k.v_threshold - k.v_reset),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_time_constants_use_the_limit() {
        let a = Exponential::new(20.0, 20.0, 0.1);
        let b = Exponential::new(20.0 + 1e-6, 20.0, 0.1);
        assert!((a.gain - b.gain).abs() < 1e-9);
    }

    #[test]
    fn fused_and_general_integration_agree() {
        let k = LifConstants::new(0.1, 20.0, -70.0, -50.0, -70.0, 0.0, 100.0, Reset::Hard);
        let e: Vec<Exponential> = [2.0, 5.0, 10.0, 30.0].iter().map(|&t| Exponential::new(t, 20.0, 0.1)).collect();
        let pending = [0.5, 0.25, 1.0, 0.125].map(|factor| PendingDecay { factor, inverse: 1.0 / factor });
        let mut v0: Vec<f64> = (0..37).map(|i| -70.0 + i as f64 * 0.5).collect();
        // Above threshold in the second group and in the remainder.
        (v0[20], v0[36]) = (-40.0, -45.0);
        let s0: Vec<Vec<f64>> = (0..4).map(|c| (0..37).map(|i| (i * (c + 1)) as f64 * 0.01).collect()).collect();
        let i_ext: Vec<f64> = (0..37).map(|i| i as f64 * 0.001).collect();
        for n_syn in 0..=4 {
            let (mut v1, mut v2) = (v0.clone(), v0.clone());
            let syn: Vec<&[f64]> = s0[..n_syn].iter().map(|s| s.as_slice()).collect();
            let stored = s0[..n_syn].concat();
            let (mut c1, mut c2) = (Vec::new(), Vec::new());
            integrate(&k, &e[..n_syn], &pending[..n_syn], &mut v1, Some(&i_ext), &stored, &mut c1);
            let gains: Vec<f64> = e[..n_syn].iter().zip(&pending).map(|(e, p)| e.gain * p.factor).collect();
            integrate_passes(&k, &gains, &mut v2, Some(&i_ext), &syn);
            assert_eq!(v1, v2, "{n_syn} synaptic variables");
            // The groups noted are exactly those holding a potential at or above threshold.
            c2.extend((0..v2.len().div_ceil(GROUP) as u32).filter(|&g| {
                v2[g as usize * GROUP..((g as usize + 1) * GROUP).min(v2.len())].iter().any(|&x| x >= k.v_threshold)
            }));
            assert_eq!(c2, [1, 2], "the test crosses the threshold in some groups only");
            assert_eq!(c1, c2, "{n_syn} synaptic variables");
        }
    }

    #[test]
    fn pending_decay_follows_the_decayed_variable_through_rescaling() {
        // Input every 7th step into a variable decaying by D per step, for long enough to be
        // brought back to scale twice; against the plain recursion s = D s + input.
        let decay = (-0.1f64 / 5.0).exp();
        let (mut plain, mut stored, mut pending, mut rescaled) = (0.0f64, [0.0f64], PendingDecay::NONE, 0);
        for step in 0..40_000u32 {
            if step % 7 == 0 {
                plain += 1.62;
                stored[0] += 1.62 * pending.inverse;
            }
            let value = pending.factor * stored[0];
            assert!((value - plain).abs() <= 1e-11 * plain.abs().max(1.0), "step {step}: {value} vs {plain}");
            plain *= decay;
            if pending.step(decay) {
                pending.apply([&mut stored[..]]);
                rescaled += 1;
            }
        }
        assert_eq!(rescaled, 2);
        // A decay that empties the variable in one step leaves exactly zero.
        let mut pending = PendingDecay::NONE;
        let mut stored = [3.0];
        assert!(pending.step(0.0));
        pending.apply([&mut stored[..]]);
        assert_eq!((stored[0], pending), (0.0, PendingDecay::NONE));
    }

    #[test]
    fn subtract_reset_keeps_the_overshoot() {
        let k = LifConstants::new(1.0, 10.0, 0.0, 1.0, 0.0, 0.0, 1.0, Reset::Subtract);
        let mut v = [1.5];
        let mut crossed = Vec::new();
        integrate(&k, &[], &[], &mut v, None, &[], &mut crossed);
        let mut spikes = Vec::new();
        threshold(&k, 0, &mut v, &[0], 0, &crossed, &mut spikes);
        assert_eq!(spikes, vec![0]);
        let expected = 1.5 * (-0.1f64).exp() - 1.0;
        assert!((v[0] - expected).abs() < 1e-12);
    }

    #[test]
    fn refractory_neurons_stay_frozen_then_resume() {
        let k = LifConstants::new(0.1, 10.0, 0.0, 1.0, 0.0, 0.2, 1.0, Reset::Hard);
        let mut refractory = Refractory::new(3, 2);
        let mut v = [0.0, 0.0, 5.0];
        let mut spikes = Vec::new();
        threshold(&k, 0, &mut v, &refractory.active_from, 0, &[0], &mut spikes);
        refractory.start(&spikes, &v, 0, &k);
        assert_eq!((spikes, v[2]), (vec![2], 0.0));
        for step in 1..=3 {
            v[2] = 3.0; // what integration with strong input would give
            refractory.queues[1].hold(&mut v[2..], 2, step);
            let frozen = step <= 2;
            assert_eq!(v[2] == 0.0, frozen, "step {step}");
            assert_eq!(refractory.is_refractory(2, step), frozen);
        }
    }
}
