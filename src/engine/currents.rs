//! Injected currents. Each current is active over a range of steps; whenever one starts or
//! stops, the affected population's per-neuron current is recomputed from scratch, so a current
//! switched off leaves exactly zero behind (no add-then-subtract rounding).

use crate::spec::Current;

#[derive(Debug, Clone)]
pub struct Injection {
    pub population: usize,
    pub neurons: Option<Vec<u32>>,
    pub amplitude_na: f64,
    pub start_step: u64,
    /// First step without the current; None runs to the end.
    pub stop_step: Option<u64>,
}

impl Injection {
    pub fn from_spec(current: &Current, population: usize, dt_ms: f64) -> Self {
        let steps = |t: f64| (t / dt_ms).round() as u64;
        match current {
            Current::Constant { amplitude_na, neurons, .. } => Injection {
                population,
                neurons: neurons.clone(),
                amplitude_na: *amplitude_na,
                start_step: 0,
                stop_step: None,
            },
            Current::Step { amplitude_na, start_ms, stop_ms, neurons, .. } => Injection {
                population,
                neurons: neurons.clone(),
                amplitude_na: *amplitude_na,
                start_step: steps(*start_ms),
                stop_step: stop_ms.map(steps),
            },
        }
    }

    fn active(&self, step: u64) -> bool {
        step >= self.start_step && self.stop_step.is_none_or(|stop| step < stop)
    }
}

/// Every (step, population) at which some population's injected current changes, sorted, so the
/// engine can walk them with a cursor instead of searching every step.
pub fn change_points(injections: &[Injection]) -> Vec<(u64, usize)> {
    let mut points: Vec<(u64, usize)> = injections
        .iter()
        .flat_map(|j| std::iter::once(j.start_step).chain(j.stop_step).map(move |s| (s, j.population)))
        .collect();
    points.sort_unstable();
    points.dedup();
    points
}

/// Recomputes the injected current (nA) of every neuron of `population` at `step`.
pub fn fill_current(injections: &[Injection], population: usize, step: u64, i_ext: &mut [f64]) {
    i_ext.fill(0.0);
    for j in injections.iter().filter(|j| j.population == population && j.active(step)) {
        match &j.neurons {
            None => i_ext.iter_mut().for_each(|i| *i += j.amplitude_na),
            Some(ids) => ids.iter().for_each(|&id| i_ext[id as usize] += j.amplitude_na),
        }
    }
}
