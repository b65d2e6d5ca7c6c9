//! The engine against closed-form LIF results: firing rate under constant current, the
//! post-synaptic potential of one input spike, and exact delays.

use snn::engine::Simulation;
use snn::recording::Recording;
use snn::spec::model_from_text;

fn run(network: &str, stimulus: &str) -> Recording {
    let model = model_from_text(network, Some(stimulus)).expect("valid model");
    let mut sim = Simulation::build(&model, 1).expect("builds");
    let steps = (model.network.duration_ms / model.network.dt_ms).round() as u64;
    sim.run(steps, |_| {});
    Recording::from_simulation(&sim, &model)
}

fn single_neuron(dt_ms: f64, duration_ms: f64, refractory_ms: f64) -> String {
    format!(
        r#"Network(name: "one", dt_ms: {dt_ms}, duration_ms: {duration_ms},
            populations: [(name: "n", size: 1,
                neuron: Lif(tau_mem_ms: 20.0, v_rest: -70.0, v_threshold: -50.0, v_reset: -70.0,
                            refractory_ms: {refractory_ms}, r_mem_mohm: 100.0))])"#
    )
}

/// 1 / (t_ref + tau ln(RI / (RI - (V_th - V_rest)))), in Hz.
fn analytic_rate_hz(current_na: f64, refractory_ms: f64) -> f64 {
    let ri = 100.0 * current_na;
    1000.0 / (refractory_ms + 20.0 * (ri / (ri - 20.0)).ln())
}

fn spike_times(rec: &Recording, population: &str) -> Vec<f64> {
    rec.population(population).unwrap().spikes.as_ref().unwrap().0.clone()
}

#[test]
fn constant_current_fires_at_the_analytic_rate() {
    for (current, refractory) in [(0.25, 0.0), (0.3, 2.0), (0.5, 5.0), (1.0, 1.0)] {
        let stimulus = format!("Stimulus(currents: [Constant(population: \"n\", amplitude_na: {current})])");
        let rec = run(&single_neuron(0.01, 2000.0, refractory), &stimulus);
        let times = spike_times(&rec, "n");
        assert!(times.len() > 10, "I = {current} nA fired only {} spikes", times.len());
        // Rate from the inter-spike intervals; the first spike starts from rest, like the rest.
        let mean_isi = (times[times.len() - 1] - times[0]) / (times.len() - 1) as f64;
        let measured = 1000.0 / mean_isi;
        let expected = analytic_rate_hz(current, refractory);
        let error = (measured - expected).abs() / expected;
        assert!(error < 0.01, "I = {current} nA, t_ref = {refractory}: {measured} Hz vs analytic {expected} Hz");
    }
}

#[test]
fn subthreshold_current_never_fires() {
    // R I = 19.9 mV settles just below the 20 mV needed.
    let stimulus = "Stimulus(currents: [Constant(population: \"n\", amplitude_na: 0.199)])";
    let rec = run(&single_neuron(0.1, 5000.0, 2.0), stimulus);
    assert_eq!(rec.population("n").unwrap().total_spikes, 0);
}

fn psp_run(synapse: &str, delay_ms: f64, weight: f64) -> Vec<f32> {
    let network = r#"Network(name: "psp", dt_ms: 0.1, duration_ms: 60.0,
        populations: [(name: "n", size: 1,
            neuron: Lif(tau_mem_ms: 20.0, v_rest: -70.0, v_threshold: -50.0, v_reset: -70.0))],
        record: (traces: [(population: "n", ids: [0])]))"#;
    let stimulus = format!(
        r#"Stimulus(
            sources: [(name: "probe", size: 1, kind: SpikeTimes(indices: [0], times_ms: [1.0]))],
            projections: [(from: "probe", to: "n", connect: OneToOne, weight: Constant({weight}),
                           synapse: {synapse}, delay_ms: Constant({delay_ms}))])"#
    );
    run(network, &stimulus).traces[0].v.clone()
}

#[test]
fn exponential_synapse_gives_the_analytic_psp_after_exactly_the_delay() {
    let (w, tau_s, tau_m, dt) = (2.0, 5.0, 20.0, 0.1);
    let v = psp_run("Exponential(tau_ms: 5.0)", 1.5, w);
    let arrival = 10 + 15; // spike at step 10, delay 15 steps
    for (n, &vn) in v.iter().enumerate() {
        let expected = if n <= arrival {
            -70.0
        } else {
            let t = (n - arrival) as f64 * dt;
            -70.0 + w * tau_s / (tau_s - tau_m) * ((-t / tau_s).exp() - (-t / tau_m).exp())
        };
        assert!((vn as f64 - expected).abs() < 1e-5, "step {n}: v = {vn}, analytic {expected}");
    }
    assert!(v[arrival + 1] > -70.0, "the PSP starts right after the arrival step");
}

#[test]
fn instantaneous_synapse_jumps_then_decays_with_tau_mem() {
    let v = psp_run("Instantaneous", 0.7, 3.0);
    let arrival = 10 + 7;
    for (n, &vn) in v.iter().enumerate() {
        let expected = if n <= arrival { -70.0 } else { -70.0 + 3.0 * (-((n - arrival) as f64) * 0.1 / 20.0).exp() };
        assert!((vn as f64 - expected).abs() < 1e-5, "step {n}: v = {vn}, analytic {expected}");
    }
}

#[test]
fn each_delay_slot_delivers_on_its_own_step() {
    // Brian2's spike-queue test: generator i drives neuron i with a delay of i steps; an input of
    // 100 mV makes the neuron fire in the step its input arrives.
    let n = 12;
    let network = format!(
        r#"Network(name: "delays", dt_ms: 0.1, duration_ms: 5.0,
            populations: [(name: "n", size: {n},
                neuron: Lif(tau_mem_ms: 10.0, v_rest: 0.0, v_threshold: 10.0, v_reset: 0.0, refractory_ms: 100.0))])"#
    );
    let projections: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "(from: \"g\", to: \"n\", connect: Explicit([({i}, {i})]), weight: Constant(100.0), synapse: Instantaneous, delay_ms: Constant({}))",
                i as f64 * 0.1
            )
        })
        .collect();
    let stimulus = format!(
        r#"Stimulus(sources: [(name: "g", size: {n}, kind: SpikeTimes(indices: [{}], times_ms: [{}]))],
                    projections: [{}])"#,
        (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(", "),
        vec!["0.0"; n].join(", "),
        projections.join(",\n")
    );
    let rec = run(&network, &stimulus);
    let (times, ids) = rec.population("n").unwrap().spikes.clone().unwrap();
    assert_eq!(ids, (0..n as u64).collect::<Vec<_>>());
    for (i, t) in times.iter().enumerate() {
        // Arrives at step i, crosses threshold during step i, stamped at the end of it.
        let expected = (i + 1) as f64 * 0.1;
        assert!((t - expected).abs() < 1e-9, "neuron {i} fired at {t} ms, expected {expected} ms");
    }
}

#[test]
fn per_synapse_delays_deliver_each_spike_at_its_own_delay() {
    let network = r#"Network(name: "jitter", dt_ms: 0.1, duration_ms: 20.0,
        populations: [(name: "n", size: 200,
            neuron: Lif(tau_mem_ms: 10.0, v_rest: 0.0, v_threshold: 10.0, v_reset: 0.0, refractory_ms: 100.0))])"#;
    let stimulus = r#"Stimulus(
        sources: [(name: "g", size: 200, kind: Poisson(rate_hz: 10000.0))],
        projections: [(from: "g", to: "n", connect: OneToOne, weight: Constant(100.0),
                       synapse: Instantaneous, delay_ms: Uniform(low: 0.0, high: 5.0))])"#;
    let model = model_from_text(network, Some(stimulus)).unwrap();
    let mut sim = Simulation::build(&model, 3).unwrap();
    // The generators fire every step (p = 1), so neuron i first fires one step after its delay.
    let delay_of: std::collections::HashMap<u32, u16> =
        sim.projections[0].synapses.iter().map(|s| (s.target, s.delay)).collect();
    assert!(matches!(sim.projections[0].synapses.delays, snn::engine::synapses::Delays::PerSynapse { .. }));
    sim.run(200, |_| {});
    let rec = Recording::from_simulation(&sim, &model);
    let (times, ids) = rec.population("n").unwrap().spikes.clone().unwrap();
    assert_eq!(times.len(), 200, "every neuron fires once (refractory afterwards)");
    for (t, id) in times.iter().zip(&ids) {
        let delay = delay_of[&(*id as u32)];
        let expected = (delay as f64 + 1.0) * 0.1;
        assert!((t - expected).abs() < 1e-9, "neuron {id}: fired at {t}, delay {delay} steps");
    }
}

#[test]
fn poisson_input_gives_the_shot_noise_mean_and_variance() {
    // 20 000 silent neurons (threshold out of reach), each receiving Binomial(N, p) spikes of
    // weight w per step onto the membrane: v_{n+1} = P (v_n + w X_n), so after n steps
    // E[v] = w N p P (1 - P^n) / (1 - P) and Var[v] = w^2 N p (1 - p) P^2 (1 - P^2n) / (1 - P^2).
    let (n_inputs, rate_hz, w, dt, tau): (u32, f64, f64, f64, f64) = (800, 25.0, 0.1, 0.1, 10.0);
    let network = format!(
        r#"Network(name: "shot", dt_ms: {dt}, duration_ms: 30.0,
            populations: [(name: "n", size: 20000,
                neuron: Lif(tau_mem_ms: {tau}, v_rest: 0.0, v_threshold: 1e9, v_reset: 0.0))])"#
    );
    let stimulus = format!(
        r#"Stimulus(poisson_inputs: [(population: "n", inputs: {n_inputs}, rate_hz: {rate_hz}, weight: {w},
                                      synapse: Instantaneous)])"#
    );
    let model = model_from_text(&network, Some(&stimulus)).expect("valid model");
    let mut sim = Simulation::build(&model, 3).expect("builds");
    let steps = 300;
    sim.run(steps, |_| {});
    let snn::engine::Dynamics::Lif(lif) = &sim.populations[0].dynamics else { panic!("a LIF population") };
    let count = lif.v.len() as f64;
    let mean = lif.v.iter().sum::<f64>() / count;
    let var = lif.v.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (count - 1.0);
    let p = rate_hz * dt / 1000.0;
    let decay = (-dt / tau).exp();
    let np = n_inputs as f64 * p;
    let expected_mean = w * np * decay * (1.0 - decay.powi(steps as i32)) / (1.0 - decay);
    let expected_var =
        w * w * np * (1.0 - p) * decay * decay * (1.0 - decay.powi(2 * steps as i32)) / (1.0 - decay * decay);
    // Standard errors over 20 000 neurons: mean sd/141, variance about var * sqrt(2/20000).
    assert!((mean - expected_mean).abs() < 4.0 * (expected_var / count).sqrt(), "mean {mean} vs {expected_mean}");
    assert!((var - expected_var).abs() < 4.0 * expected_var * (2.0 / count).sqrt(), "var {var} vs {expected_var}");
}

#[test]
fn poisson_input_through_an_exponential_synapse_reaches_its_steady_state() {
    // Through an exponential synapse the mean input N p w per step settles the synaptic
    // variable at N p w D / (1 - D) after the step's decay, and the membrane at the time
    // average of the synaptic variable.
    let network = r#"Network(name: "drive", dt_ms: 0.1, duration_ms: 100.0,
        populations: [(name: "n", size: 5000,
            neuron: Lif(tau_mem_ms: 20.0, v_rest: 0.0, v_threshold: 1e9, v_reset: 0.0))])"#;
    let stimulus = r#"Stimulus(poisson_inputs: [(population: "n", inputs: 1000, rate_hz: 10.0, weight: 0.2,
                                                 synapse: Exponential(tau_ms: 5.0))])"#;
    let model = model_from_text(network, Some(stimulus)).expect("valid model");
    let mut sim = Simulation::build(&model, 1).expect("builds");
    sim.run(1000, |_| {});
    let snn::engine::Dynamics::Lif(lif) = &sim.populations[0].dynamics else { panic!("a LIF population") };
    let mean_syn = lif.synaptic_variable(0).iter().sum::<f64>() / 5000.0;
    let d = (-0.1f64 / 5.0).exp();
    let expected_syn = 1000.0 * 0.001 * 0.2 * d / (1.0 - d);
    assert!((mean_syn - expected_syn).abs() < 0.02 * expected_syn, "synaptic mean {mean_syn} vs {expected_syn}");
    // Membrane: tau_m dv/dt = -v + s settles at the time average of s (same units), N p w
    // tau_s / dt, to within e^-5 after 100 ms.
    let mean_v = lif.v.iter().sum::<f64>() / 5000.0;
    let step_average = 1000.0 * 0.001 * 0.2 * 5.0 / 0.1;
    assert!((mean_v - step_average).abs() < 0.03 * step_average, "membrane mean {mean_v} vs {step_average}");
}
