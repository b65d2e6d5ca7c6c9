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
//! Order inside [`update_chunk`], per neuron: arriving input is added (to s_c, or straight to v
//! for instantaneous synapses), then v integrates from t to t + dt, then the threshold is
//! tested, then the reset. A refractory neuron keeps v frozen (Brian2's `unless refractory`):
//! its synaptic variables still receive input and decay, but instantaneous input is dropped
//! (NEST's convention).

use crate::spec::Reset;

/// Per-step constants of a LIF population, derived once from its parameters and dt.
#[derive(Debug, Clone)]
pub struct LifConstants {
    pub v_rest: f64,
    pub v_threshold: f64,
    pub v_reset: f64,
    pub reset: Reset,
    pub refractory_steps: u32,
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
            refractory_steps: (refractory_ms / dt_ms).round() as u32,
            decay_mem,
            current_gain: r_mem_mohm * (1.0 - decay_mem),
        }
    }
}

/// One synaptic input channel of a population: instantaneous, or exponential with one tau.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    /// None for instantaneous synapses.
    pub tau_ms: Option<f64>,
    /// D_c: per-step decay of the synaptic variable.
    pub decay: f64,
    /// G_c: contribution of the synaptic variable to v over one step.
    pub gain: f64,
}

impl Channel {
    pub fn instantaneous() -> Self {
        Channel {
            tau_ms: None,
            decay: 0.0,
            gain: 0.0,
        }
    }

    pub fn exponential(tau_ms: f64, tau_mem_ms: f64, dt_ms: f64) -> Self {
        let decay = (-dt_ms / tau_ms).exp();
        let p = (-dt_ms / tau_mem_ms).exp();
        let gain = if ((tau_ms - tau_mem_ms) / tau_mem_ms).abs() < 1e-9 {
            dt_ms / tau_mem_ms * p
        } else {
            tau_ms / (tau_ms - tau_mem_ms) * (decay - p)
        };
        Channel {
            tau_ms: Some(tau_ms),
            decay,
            gain,
        }
    }
}

/// Mutable views of one contiguous chunk of a population, neurons `offset..offset + v.len()`.
/// Synaptic arrays interleave channels per neuron: index `i * channels + c`.
pub struct Chunk<'a> {
    pub offset: u32,
    pub v: &'a mut [f64],
    pub refractory: &'a mut [u32],
    pub i_ext: &'a [f64],
    pub syn: &'a mut [f64],
    /// The delay-ring slot arriving this step; drained (zeroed) as it is read.
    pub arriving: &'a mut [f64],
}

/// Advances a chunk by one step and appends the ids of neurons that fired to `spikes`.
pub fn update_chunk(k: &LifConstants, channels: &[Channel], chunk: Chunk, spikes: &mut Vec<u32>) {
    let nc = channels.len();
    let Chunk {
        offset,
        v,
        refractory,
        i_ext,
        syn,
        arriving,
    } = chunk;
    for i in 0..v.len() {
        let syn_i = &mut syn[i * nc..(i + 1) * nc];
        let arriving_i = &mut arriving[i * nc..(i + 1) * nc];
        let frozen = refractory[i] > 0;
        let mut drive = 0.0;
        for ((ch, s), a) in channels
            .iter()
            .zip(syn_i.iter_mut())
            .zip(arriving_i.iter_mut())
        {
            let input = std::mem::take(a);
            if ch.tau_ms.is_none() {
                if !frozen {
                    v[i] += input;
                }
            } else {
                *s += input;
                drive += ch.gain * *s;
                *s *= ch.decay;
            }
        }
        if frozen {
            refractory[i] -= 1;
            continue;
        }
        let vi = k.v_rest + (v[i] - k.v_rest) * k.decay_mem + drive + k.current_gain * i_ext[i];
        if vi >= k.v_threshold {
            spikes.push(offset + i as u32);
            v[i] = match k.reset {
                Reset::Hard => k.v_reset,
                Reset::Subtract => vi - (k.v_threshold - k.v_reset),
            };
            refractory[i] = k.refractory_steps;
        } else {
            v[i] = vi;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_time_constants_use_the_limit() {
        let a = Channel::exponential(20.0, 20.0, 0.1);
        let b = Channel::exponential(20.0 + 1e-6, 20.0, 0.1);
        assert!((a.gain - b.gain).abs() < 1e-9);
    }

    #[test]
    fn subtract_reset_keeps_the_overshoot() {
        let k = LifConstants::new(1.0, 10.0, 0.0, 1.0, 0.0, 0.0, 1.0, Reset::Subtract);
        let mut v = [0.0];
        let mut refr = [0];
        let i_ext = [0.0];
        let channels = [Channel::instantaneous()];
        let mut syn = [0.0];
        let mut arriving = [1.5];
        let mut spikes = Vec::new();
        let chunk = Chunk {
            offset: 0,
            v: &mut v,
            refractory: &mut refr,
            i_ext: &i_ext,
            syn: &mut syn,
            arriving: &mut arriving,
        };
        update_chunk(&k, &channels, chunk, &mut spikes);
        assert_eq!(spikes, vec![0]);
        let expected = 1.5 * (-0.1f64).exp() - 1.0;
        assert!((v[0] - expected).abs() < 1e-12);
    }
}
