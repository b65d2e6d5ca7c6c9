//! The event-driven engine against a naive dense reference written independently here: every
//! step, every (source, target) pair of every projection is visited and checks whether its
//! source fired `delay` steps ago. Inputs are applied in the engine's order, so the two must
//! produce identical spike trains.

use snn::engine::{Dynamics, Simulation};
use snn::recording::Recording;
use snn::spec::{Neuron, Reset, Synapse, model_from_text};

const NETWORK: &str = r#"Network(
    name: "reference",
    dt_ms: 0.1,
    duration_ms: 300.0,
    populations: [
        (name: "exc", size: 60,
         neuron: Lif(tau_mem_ms: 20.0, v_rest: -65.0, v_threshold: -50.0, v_reset: -65.0, refractory_ms: 2.0),
         init_v: Uniform(low: -65.0, high: -52.0)),
        (name: "inh", size: 20,
         neuron: Lif(tau_mem_ms: 10.0, v_rest: -65.0, v_threshold: -50.0, v_reset: -60.0, refractory_ms: 0.0, reset: Subtract),
         init_v: Uniform(low: -65.0, high: -52.0)),
    ],
    projections: [
        (from: "exc", to: "exc", connect: FixedProbability(0.2), weight: Constant(1.0),
         synapse: Exponential(tau_ms: 5.0), delay_ms: Uniform(low: 0.0, high: 2.0), allow_autapses: false),
        (from: "exc", to: "inh", connect: FixedInDegree(10), weight: Constant(2.5),
         synapse: Exponential(tau_ms: 3.0), delay_ms: Constant(0.5)),
        (from: "inh", to: "exc", connect: AllToAll, weight: Constant(-0.375),
         synapse: Exponential(tau_ms: 10.0), delay_ms: Constant(1.0)),
        (from: "inh", to: "inh", connect: FixedProbability(0.3), weight: Constant(-1.25),
         synapse: Instantaneous, delay_ms: Constant(0.3)),
    ],
)"#;

/// Input spike times: a small linear congruential generator, so the test needs nothing else.
fn input_spikes() -> (Vec<u32>, Vec<f64>) {
    let mut state: u64 = 12345;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut indices = Vec::new();
    let mut times = Vec::new();
    for i in 0..40u32 {
        let mut t = next() * 5.0;
        while t < 300.0 {
            indices.push(i);
            times.push((t * 10.0).round() / 10.0);
            t += 1.0 + next() * 20.0;
        }
    }
    (indices, times)
}

fn stimulus(indices: &[u32], times: &[f64]) -> String {
    let list = |xs: Vec<String>| xs.join(", ");
    format!(
        r#"Stimulus(
            sources: [(name: "input", size: 40, kind: SpikeTimes(indices: [{}], times_ms: [{}]))],
            projections: [(from: "input", to: "exc", connect: FixedProbability(0.25), weight: Constant(6.0),
                           synapse: Exponential(tau_ms: 5.0), delay_ms: Constant(1.0))],
            currents: [Step(population: "inh", amplitude_na: 0.125, start_ms: 50.0, stop_ms: 250.0)])"#,
        list(indices.iter().map(|i| i.to_string()).collect()),
        list(times.iter().map(|t| format!("{t:.1}")).collect())
    )
}

/// A synapse of the dense reference: weight and delay in steps; None where no synapse exists.
type Dense = Vec<Vec<Option<(f64, u64)>>>;

#[test]
fn event_driven_engine_matches_dense_reference() {
    let (indices, times) = input_spikes();
    let model = model_from_text(NETWORK, Some(&stimulus(&indices, &times))).unwrap();
    let mut sim = Simulation::build(&model, 7).unwrap();
    let steps = 3000u64;
    let dt = 0.1;

    // The reference takes the engine's connectivity and initial state as given (they are tested
    // elsewhere) and re-does everything else its own way.
    let sizes: Vec<usize> = sim.populations.iter().map(|p| p.size).collect();
    let mut dense: Vec<(usize, usize, Synapse, Dense)> = Vec::new();
    let specs: Vec<_> = model.network.projections.iter().chain(&model.stimulus.projections).collect();
    for (proj, spec) in sim.projections.iter().zip(&specs) {
        let mut m: Dense = vec![vec![None; sizes[proj.target]]; sizes[proj.source]];
        for syn in proj.synapses.iter() {
            let cell = &mut m[syn.source as usize][syn.target as usize];
            assert!(cell.is_none(), "multapse");
            *cell = Some((syn.weight as f64, syn.delay as u64));
        }
        dense.push((proj.source, proj.target, spec.synapse.clone(), m));
    }
    let mut v: Vec<Vec<f64>> = sim
        .populations
        .iter()
        .map(|p| match &p.dynamics {
            Dynamics::Lif(l) => l.v.clone(),
            Dynamics::Source(_) | Dynamics::Layer(_) => vec![],
        })
        .collect();
    let n_lif = model.network.populations.len();
    // Synaptic variables per (population, tau), in the order taus first appear.
    let mut taus: Vec<Vec<f64>> = vec![Vec::new(); n_lif];
    for (_, target, syn, _) in &dense {
        if let Synapse::Exponential { tau_ms } = syn
            && !taus[*target].contains(tau_ms)
        {
            taus[*target].push(*tau_ms);
        }
    }
    let mut s: Vec<Vec<Vec<f64>>> = (0..n_lif).map(|p| vec![vec![0.0; sizes[p]]; taus[p].len()]).collect();
    let mut refractory_left: Vec<Vec<u64>> = (0..n_lif).map(|p| vec![0; sizes[p]]).collect();
    // fired[stamp][population] = ids that fired with that stamp.
    let mut fired: Vec<Vec<Vec<u32>>> = vec![vec![Vec::new(); sizes.len()]; steps as usize + 2];
    for (&i, &t) in indices.iter().zip(&times) {
        fired[(t / dt).round() as usize][n_lif].push(i);
    }
    for n in 0..steps as usize {
        // Input due now, applied in the engine's order so that floating-point sums match: by
        // spike stamp, neuron spikes before source spikes of the same stamp (they were queued
        // earlier), then source population, projection and source neuron.
        let mut due = Vec::new();
        for (k, (source, target, syn, m)) in dense.iter().enumerate() {
            for (i, row) in m.iter().enumerate() {
                for (j, entry) in row.iter().enumerate() {
                    let Some((w, d)) = *entry else { continue };
                    if (n as u64) < d || !fired[n - d as usize][*source].contains(&(i as u32)) {
                        continue;
                    }
                    let is_source = *source >= n_lif;
                    due.push(((n as u64 - d, is_source, *source, k, i), *target, j, syn, w));
                }
            }
        }
        due.sort_by_key(|entry| entry.0);
        for (_, target, j, syn, w) in due {
            match syn {
                Synapse::Exponential { tau_ms } => {
                    let c = taus[target].iter().position(|t| t == tau_ms).unwrap();
                    s[target][c][j] += w;
                }
                Synapse::Instantaneous => {
                    if refractory_left[target][j] == 0 {
                        v[target][j] += w;
                    }
                }
            }
        }
        for p in 0..n_lif {
            let Neuron::Lif { tau_mem_ms, v_rest, v_threshold, v_reset, refractory_ms, r_mem_mohm, reset } =
                model.network.populations[p].neuron;
            let decay = (-dt / tau_mem_ms).exp();
            let t_ms = n as f64 * dt;
            let current = if p == 1 && (50.0..250.0).contains(&(t_ms + 1e-9)) { 0.125 } else { 0.0 };
            for j in 0..sizes[p] {
                let mut x = v_rest + (v[p][j] - v_rest) * decay;
                if p == 1 {
                    x += r_mem_mohm * (1.0 - decay) * current;
                }
                for (c, &tau) in taus[p].iter().enumerate() {
                    let d = (-dt / tau).exp();
                    x += tau / (tau - tau_mem_ms) * (d - decay) * s[p][c][j];
                    s[p][c][j] *= d;
                }
                if refractory_left[p][j] > 0 {
                    refractory_left[p][j] -= 1;
                    continue;
                }
                if x >= v_threshold {
                    fired[n + 1][p].push(j as u32);
                    x = match reset {
                        Reset::Hard => v_reset,
                        Reset::Subtract => x - (v_threshold - v_reset),
                    };
                    refractory_left[p][j] = (refractory_ms / dt).round() as u64;
                }
                v[p][j] = x;
            }
        }
    }

    sim.run(steps, |_| {});
    let rec = Recording::from_simulation(&sim, &model);
    let mut total = 0;
    for (p, name) in ["exc", "inh"].iter().enumerate() {
        let (t, ids) = rec.population(name).unwrap().spikes.clone().unwrap();
        let engine: Vec<(u64, u64)> = t.iter().zip(&ids).map(|(&t, &i)| ((t / dt).round() as u64, i)).collect();
        let reference: Vec<(u64, u64)> = fired
            .iter()
            .enumerate()
            .flat_map(|(stamp, f)| f[p].iter().map(move |&i| (stamp as u64, i as u64)))
            .collect();
        assert!(reference.len() > 100, "{name}: the comparison needs activity, got {} spikes", reference.len());
        assert_eq!(engine, reference, "{name}: spike trains differ");
        total += reference.len();
    }
    println!("{total} spikes identical");
}
