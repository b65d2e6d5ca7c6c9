//! BPTT gradients against central finite differences, in f64 with smooth spikes (the forward
//! pass uses S(x) itself, so the loss is differentiable and the gradient exact).

use nalgebra::DMatrix;
use snn::nn::loss::cross_entropy;
use snn::spec::{Network, parse_ron};
use snn::train::bptt::{Events, Tape, backward, forward};
use snn::train::net::TrainNet;

fn network(readout: &str, detach_reset: bool) -> Network {
    network_with(readout, detach_reset, "", 8)
}

/// The tiny chain with `extra` projections (recurrent ones) and `steps` steps.
fn network_with(readout: &str, detach_reset: bool, extra: &str, steps: usize) -> Network {
    let text = format!(
        r#"Network(
        name: "tiny", dt_ms: 1.0,
        inputs: [(name: "x", size: 6)],
        populations: [
            (name: "h1", size: 5, neuron: Lif(tau_mem_ms: 5.0, v_rest: 0.0, v_threshold: 1.0, v_reset: 0.0, reset: Subtract)),
            (name: "h2", size: 4, neuron: Lif(tau_mem_ms: 8.0, v_rest: 0.0, v_threshold: 1.0, v_reset: -0.2, reset: Hard)),
            (name: "out", size: 3, neuron: Lif(tau_mem_ms: 10.0, v_rest: 0.0, v_threshold: 1.0, v_reset: 0.0, reset: Subtract)),
        ],
        projections: [
            (from: "x", to: "h1", connect: AllToAll, weight: Normal(mean: 0.4, std: 0.6), synapse: Instantaneous),
            (from: "h1", to: "h2", connect: AllToAll, weight: Normal(mean: 0.5, std: 0.8), synapse: Instantaneous),
            (from: "h2", to: "out", connect: AllToAll, weight: Normal(mean: 0.3, std: 0.8), synapse: Instantaneous),
            {extra}
        ],
        training: (steps: {steps}, surrogate: Htaf(alpha: 2.0, beta: 1.5), spike_mode: Smooth,
                   readout: {readout}, detach_reset: {detach_reset}),
    )"#
    );
    parse_ron(&text, std::path::Path::new("<tiny>")).unwrap()
}

fn input(steps: usize) -> Events<f64> {
    let mut e = Events::default();
    e.clear();
    for n in 0..steps {
        for i in 0..6u32 {
            if (n + i as usize) % 3 != 0 {
                e.push(i, 0.3 + 0.1 * ((n * 7 + i as usize * 3) % 5) as f64);
            }
        }
        e.end_step();
    }
    e
}

/// Input that mostly holds its value from step to step (direct-current input, or rate coding of
/// bright pixels): the trainer takes it in change form.
fn steady_input(steps: usize) -> Events<f64> {
    let mut e = Events::default();
    for n in 0..steps {
        for i in 0..6u32 {
            // Input 5 switches on at step 3, input 2 changes value at step 5, input 0 is off
            // after step 4.
            let value = match i {
                0 if n > 4 => continue,
                5 if n < 3 => continue,
                2 if n >= 5 => 0.9,
                _ => 0.3 + 0.1 * i as f64,
            };
            e.push(i, value);
        }
        e.end_step();
    }
    e
}

fn loss(net: &TrainNet<f64>, x: &Events<f64>, tape: &mut Tape<f64>) -> f64 {
    forward(net, x, tape);
    let mut g = Vec::new();
    cross_entropy(&tape.scores.clone(), 1, 1.0, &mut g)
}

fn check(readout: &str, detach_reset: bool, x: &Events<f64>) {
    check_network(&network(readout, detach_reset), x);
}

fn check_network(spec: &Network, x: &Events<f64>) {
    let training = spec.training.clone().unwrap();
    let mut net = TrainNet::<f64>::from_spec(spec, &training, 3).unwrap();
    let x = x.clone();
    let mut tape = Tape::default();
    forward(&net, &x, &mut tape);
    let mut g_scores = Vec::new();
    cross_entropy(&tape.scores.clone(), 1, 1.0, &mut g_scores);
    let mut grads: Vec<DMatrix<f64>> = net.zero_gradients();
    backward(&net, &x, &mut tape, &g_scores, &mut grads);

    let h = 1e-4;
    let mut worst: f64 = 0.0;
    let mut checked = 0;
    let n_layers = net.layers.len();
    for (p, grad) in grads.iter().enumerate() {
        for (idx, &analytic) in grad.iter().enumerate() {
            // A weight held at zero (no autapses) is not a parameter.
            let fixed = p >= n_layers && !net.loops[p - n_layers].autapses && idx % (grad.nrows() + 1) == 0;
            if fixed {
                assert_eq!(analytic, 0.0, "parameter {p}: the diagonal without autapses gets no gradient");
                continue;
            }
            let mut central = |h: f64| {
                let w0 = net.parameters_mut()[p][idx];
                net.parameters_mut()[p][idx] = w0 + h;
                let up = loss(&net, &x, &mut tape);
                net.parameters_mut()[p][idx] = w0 - h;
                let down = loss(&net, &x, &mut tape);
                net.parameters_mut()[p][idx] = w0;
                (up - down) / (2.0 * h)
            };
            // Richardson's combination of two step sizes cancels the h^2 term, whose size the
            // spike-count readout's curvature would otherwise make comparable to 1e-4.
            let numeric = (4.0 * central(h / 2.0) - central(h)) / 3.0;
            let error = (numeric - analytic).abs() / numeric.abs().max(analytic.abs()).max(1e-6);
            assert!(
                error < 1e-4,
                "{}, parameter {p} weight {idx}: backprop {analytic}, finite difference {numeric}",
                spec.name
            );
            worst = worst.max(error);
            checked += 1;
        }
    }
    for (lp, grad) in net.loops.iter().zip(&grads[n_layers..]) {
        assert!(
            grad.norm() > 1e-4,
            "loop {} -> {}: its gradient vanishes, the check would be vacuous",
            lp.source,
            lp.target
        );
    }
    let total: f64 = grads.iter().map(|g| g.norm()).sum();
    assert!(total > 1e-3, "gradients vanish, the check would be vacuous");
    println!("{}: {checked} weights, worst relative error {worst:.2e}", spec.name);
}

#[test]
fn bptt_matches_finite_differences_through_recurrent_projections_over_20_steps() {
    // A self loop without autapses, feedback from h2 onto h1 one step later, and a self loop
    // on h2 two steps later; over 20 steps, both readouts (detach_reset drops a term on
    // purpose, so the exact gradient is checked without it).
    let loops = r#"(from: "h1", to: "h1", connect: AllToAll, weight: Normal(mean: 0.0, std: 0.5), synapse: Instantaneous, allow_autapses: false),
            (from: "h2", to: "h1", connect: AllToAll, weight: Normal(mean: -0.2, std: 0.5), synapse: Instantaneous, delay_ms: Constant(1.0)),
            (from: "h2", to: "h2", connect: AllToAll, weight: Normal(mean: 0.1, std: 0.4), synapse: Instantaneous, delay_ms: Constant(2.0)),"#;
    for readout in ["MeanMembrane", "SpikeCount"] {
        let spec = network_with(readout, false, loops, 20);
        let net = TrainNet::<f64>::from_spec(&spec, spec.training.as_ref().unwrap(), 3).unwrap();
        assert_eq!(net.loops.len(), 3);
        assert_eq!(net.loops.iter().map(|l| l.delay).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(net.loops[0].weights.diagonal().iter().all(|&w| w == 0.0), "no autapses drawn");
        check_network(&spec, &input(20));
        check_network(&spec, &steady_input(20));
    }
}

#[test]
fn bptt_matches_finite_differences_with_a_membrane_readout() {
    check("MeanMembrane", false, &input(8));
}

#[test]
fn bptt_matches_finite_differences_with_a_spike_count_readout() {
    check("SpikeCount", false, &input(8));
}

#[test]
fn bptt_matches_finite_differences_with_input_in_change_form() {
    use snn::nn::event_products::Form;
    let x = steady_input(8);
    let (spec, mut tape) = (network("MeanMembrane", false), Tape::default());
    forward(&TrainNet::<f64>::from_spec(&spec, spec.training.as_ref().unwrap(), 3).unwrap(), &x, &mut tape);
    assert_eq!(tape.form(0), Form::Changes { steps: 8 }, "the input should be taken in change form");
    assert_eq!(tape.form(1), Form::Values, "smooth spikes change every step");
    check("MeanMembrane", false, &x);
    check("SpikeCount", false, &x);
}

#[test]
fn surrogate_mode_touches_only_the_columns_of_inputs_that_fired() {
    let mut spec = network("MeanMembrane", true);
    let training = spec.training.as_mut().unwrap();
    training.spike_mode = snn::surrogate::SpikeMode::Surrogate;
    let training = training.clone();
    let net = TrainNet::<f64>::from_spec(&spec, &training, 3).unwrap();
    let x = input(net.steps);
    let mut silent = Events::default();
    silent.clear();
    for n in 0..net.steps {
        let (idx, val) = x.step(n);
        for (&i, &v) in idx.iter().zip(val) {
            if i != 4 {
                silent.push(i, v);
            }
        }
        silent.end_step();
    }
    let mut tape = Tape::default();
    forward(&net, &silent, &mut tape);
    let mut g = Vec::new();
    cross_entropy(&tape.scores.clone(), 0, 1.0, &mut g);
    let mut grads: Vec<DMatrix<f64>> = net.zero_gradients();
    backward(&net, &silent, &mut tape, &g, &mut grads);
    assert!(grads[0].column(4).iter().all(|&v| v == 0.0), "input 4 never fired");
    assert!(grads[0].column(1).iter().any(|&v| v != 0.0));
}
