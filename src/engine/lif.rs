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
//! Arriving input has already been added (to s_c, or straight to v for instantaneous synapses)
//! when [`update_chunk`] runs; it integrates v from t to t + dt, tests the threshold, then
//! resets. A refractory neuron keeps v frozen (Brian2's `unless refractory`): its synaptic
//! variables still receive input and decay, but instantaneous input is dropped (NEST's
//! convention).

use crate::spec::Reset;

/// Per-step constants of a LIF population, derived once from its parameters and dt.
#[derive(Debug, Clone)]
pub struct LifConstants {
    pub v_rest: f64,
    pub v_threshold: f64,
    pub v_reset: f64,
    pub reset: Reset,
    /// Steps a neuron stays frozen after a spike; a float like the countdowns it sets.
    pub refractory_steps: f64,
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
            refractory_steps: (refractory_ms / dt_ms).round(),
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

/// Mutable views of one contiguous chunk of a population, neurons `offset..offset + v.len()`.
pub struct Chunk<'a> {
    pub offset: u32,
    pub v: &'a mut [f64],
    /// Refractory steps left, counted in f64 so that the update vectorises in f64 lanes.
    pub refractory: &'a mut [f64],
    /// Injected current (nA), absent when no current targets the population.
    pub i_ext: Option<&'a [f64]>,
    /// One slice per exponential synaptic variable.
    pub syn: Vec<&'a mut [f64]>,
    /// Scratch space for the integrated potential.
    pub candidate: &'a mut [f64],
}

/// Advances a chunk by one step (input has already been added) and appends the ids of the
/// neurons that fired to `spikes`. Integration and refractoriness run as one branch-free pass
/// that the compiler vectorises (specialised for up to three synaptic variables); the threshold
/// test follows as a scan whose rare hits do the reset.
pub fn update_chunk(
    k: &LifConstants,
    synapses: &[Exponential],
    chunk: Chunk,
    spikes: &mut Vec<u32>,
) {
    let Chunk {
        offset,
        v,
        refractory,
        i_ext,
        syn,
        candidate,
    } = chunk;
    let n = v.len();
    match syn.len() {
        0 => integrate::<0>(k, &[], v, refractory, i_ext, [], candidate),
        1 => integrate::<1>(
            k,
            &[synapses[0]],
            v,
            refractory,
            i_ext,
            to_array(syn),
            candidate,
        ),
        2 => integrate::<2>(
            k,
            &[synapses[0], synapses[1]],
            v,
            refractory,
            i_ext,
            to_array(syn),
            candidate,
        ),
        3 => integrate::<3>(
            k,
            &[synapses[0], synapses[1], synapses[2]],
            v,
            refractory,
            i_ext,
            to_array(syn),
            candidate,
        ),
        _ => integrate_general(k, synapses, v, refractory, i_ext, syn, candidate),
    }
    // Most blocks hold no crossing; a vectorised test skips them.
    const BLOCK: usize = 16;
    for b in (0..n).step_by(BLOCK) {
        let block = &candidate[b..(b + BLOCK).min(n)];
        if !block
            .iter()
            .fold(false, |any, &c| any | (c >= k.v_threshold))
        {
            continue;
        }
        for (j, &c) in block.iter().enumerate() {
            if c < k.v_threshold {
                continue;
            }
            let i = b + j;
            spikes.push(offset + i as u32);
            v[i] = match k.reset {
                Reset::Hard => k.v_reset,
                Reset::Subtract => c - (k.v_threshold - k.v_reset),
            };
            refractory[i] = k.refractory_steps;
        }
    }
}

fn to_array<const N: usize>(syn: Vec<&mut [f64]>) -> [&mut [f64]; N] {
    syn.try_into()
        .unwrap_or_else(|_| unreachable!("length matched by the caller"))
}

/// Integrates every neuron: `candidate` gets the new potential of active neurons and -inf for
/// refractory ones (which keep v and count down).
fn integrate<const N: usize>(
    k: &LifConstants,
    synapses: &[Exponential; N],
    v: &mut [f64],
    refractory: &mut [f64],
    i_ext: Option<&[f64]>,
    syn: [&mut [f64]; N],
    candidate: &mut [f64],
) {
    let n = v.len();
    let (refractory, candidate) = (&mut refractory[..n], &mut candidate[..n]);
    let syn = syn.map(|s| &mut s[..n]);
    let i_ext = i_ext.map(|i| &i[..n]);
    for i in 0..n {
        let mut c = k.v_rest + (v[i] - k.v_rest) * k.decay_mem;
        if let Some(i_ext) = i_ext {
            c += k.current_gain * i_ext[i];
        }
        for j in 0..N {
            c += synapses[j].gain * syn[j][i];
            syn[j][i] *= synapses[j].decay;
        }
        let active = refractory[i] <= 0.0;
        v[i] = if active { c } else { v[i] };
        candidate[i] = if active { c } else { f64::NEG_INFINITY };
        refractory[i] = if active { 0.0 } else { refractory[i] - 1.0 };
    }
}

/// The same as [`integrate`] for any number of synaptic variables, as whole-array passes.
fn integrate_general(
    k: &LifConstants,
    synapses: &[Exponential],
    v: &mut [f64],
    refractory: &mut [f64],
    i_ext: Option<&[f64]>,
    syn: Vec<&mut [f64]>,
    candidate: &mut [f64],
) {
    for (c, &vi) in candidate.iter_mut().zip(v.iter()) {
        *c = k.v_rest + (vi - k.v_rest) * k.decay_mem;
    }
    if let Some(i_ext) = i_ext {
        for (c, &i) in candidate.iter_mut().zip(i_ext) {
            *c += k.current_gain * i;
        }
    }
    for (e, s) in synapses.iter().zip(syn) {
        for (c, s) in candidate.iter_mut().zip(s.iter_mut()) {
            *c += e.gain * *s;
            *s *= e.decay;
        }
    }
    for ((v, r), c) in v
        .iter_mut()
        .zip(refractory.iter_mut())
        .zip(candidate.iter_mut())
    {
        let active = *r <= 0.0;
        *v = if active { *c } else { *v };
        *c = if active { *c } else { f64::NEG_INFINITY };
        *r = if active { 0.0 } else { *r - 1.0 };
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
    fn subtract_reset_keeps_the_overshoot() {
        let k = LifConstants::new(1.0, 10.0, 0.0, 1.0, 0.0, 0.0, 1.0, Reset::Subtract);
        let (mut v, mut refractory, mut candidate) = ([1.5], [0.0], [0.0]);
        let mut spikes = Vec::new();
        let chunk = Chunk {
            offset: 0,
            v: &mut v,
            refractory: &mut refractory,
            i_ext: None,
            syn: vec![],
            candidate: &mut candidate,
        };
        update_chunk(&k, &[], chunk, &mut spikes);
        assert_eq!(spikes, vec![0]);
        let expected = 1.5 * (-0.1f64).exp() - 1.0;
        assert!((v[0] - expected).abs() < 1e-12);
    }

    #[test]
    fn refractory_neurons_stay_frozen_while_synapses_decay() {
        let k = LifConstants::new(0.1, 10.0, 0.0, 1.0, 0.0, 0.2, 1.0, Reset::Hard);
        let e = Exponential::new(5.0, 10.0, 0.1);
        let (mut v, mut refractory, mut candidate, mut s) = ([0.3], [2.0], [0.0], [1.0]);
        let mut spikes = Vec::new();
        for _ in 0..2 {
            let chunk = Chunk {
                offset: 0,
                v: &mut v,
                refractory: &mut refractory,
                i_ext: None,
                syn: vec![&mut s],
                candidate: &mut candidate,
            };
            update_chunk(&k, &[e], chunk, &mut spikes);
        }
        assert_eq!((v[0], refractory[0]), (0.3, 0.0));
        assert!((s[0] - e.decay * e.decay).abs() < 1e-15);
    }
}
