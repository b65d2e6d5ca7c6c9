//! Engine benchmarks (criterion). Run with `cargo bench --bench engine`; figures are quoted in
//! BENCHMARKS.md.
//!
//! - `cuba_1s`: the CUBA network (networks/cuba.ron), 1 s of simulated time.
//! - `event_driven/*`: the same 10 000-neuron network with 10 million or 0.1 million synapses,
//!   silent (no input, nothing fires) or active (Poisson drive). Event-driven delivery means the
//!   silent runs cost the same whatever the synapse count, and the active run pays for the
//!   spikes delivered.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use snn::engine::Simulation;
use snn::spec::{load_model, model_from_text};

fn network(p: f64) -> String {
    format!(
        r#"Network(name: "bench", dt_ms: 0.1, duration_ms: 100.0,
            populations: [(name: "n", size: 10000,
                neuron: Lif(tau_mem_ms: 20.0, v_rest: -65.0, v_threshold: -50.0, v_reset: -65.0, refractory_ms: 2.0),
                init_v: Uniform(low: -65.0, high: -55.0))],
            projections: [(from: "n", to: "n", connect: FixedProbability({p}), weight: Normal(mean: 0.0, std: 0.1),
                           synapse: Exponential(tau_ms: 5.0), delay_ms: Constant(1.5))])"#
    )
}

const DRIVE: &str = r#"Stimulus(
    sources: [(name: "drive", size: 100, kind: Poisson(rate_hz: 50.0))],
    projections: [(from: "drive", to: "n", connect: FixedProbability(0.2), weight: Constant(3.0),
                   synapse: Exponential(tau_ms: 5.0))])"#;

fn bench_run(c: &mut Criterion, name: &str, sim: Simulation, steps: u64) {
    let mut once = sim.clone();
    once.run(steps, |_| {});
    let spikes: u64 = once.monitors.totals.iter().sum();
    eprintln!(
        "{name}: {} synapses, {spikes} spikes, {} synaptic events per run",
        sim.synapse_count(),
        once.events_delivered
    );
    c.bench_function(name, |b| {
        b.iter_batched(
            || sim.clone(),
            // The simulation is returned so that freeing it happens outside the timing.
            |mut sim| {
                sim.run(steps, |_| {});
                black_box(sim)
            },
            BatchSize::LargeInput,
        )
    });
}

fn cuba(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("networks/cuba.ron");
    let model = load_model(&path, None).expect("cuba.ron is valid");
    let sim = Simulation::build(&model, 1).expect("builds");
    bench_run(c, "cuba_1s", sim, 10_000);
}

fn event_driven(c: &mut Criterion) {
    for (label, p) in [("10M_synapses", 0.1), ("0.1M_synapses", 0.001)] {
        for (activity, stimulus) in [("silent", None), ("active", Some(DRIVE))] {
            let model = model_from_text(&network(p), stimulus).expect("valid");
            let sim = Simulation::build(&model, 1).expect("builds");
            bench_run(c, &format!("event_driven/{label}/{activity}"), sim, 1_000);
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = cuba, event_driven
}
criterion_main!(benches);
