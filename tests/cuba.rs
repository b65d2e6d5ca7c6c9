//! The CUBA benchmark network (networks/cuba.ron) is stable across seeds and matches Brian2.
//!
//! Reference: Brian2 2.x C++ standalone, same network, seed 1 (`benches/peers/brian2_cuba.py`):
//! 22463 spikes in 1 s, excitatory rate 5.60 Hz, mean CV of inter-spike intervals 0.512.

use std::path::Path;

use snn::engine::Simulation;
use snn::recording::Recording;
use snn::spec::load_model;

fn run(seed: u64) -> Recording {
    let model = load_model(&Path::new(env!("CARGO_MANIFEST_DIR")).join("networks/cuba.ron"), None).unwrap();
    let mut sim = Simulation::build(&model, seed).unwrap();
    sim.run(10_000, |_| {});
    Recording::from_simulation(&sim, &model)
}

#[test]
fn cuba_statistics_are_stable_across_seeds_and_match_brian2() {
    let mut rates = Vec::new();
    let mut totals = Vec::new();
    for seed in 1..=4 {
        let rec = run(seed);
        let exc = rec.population("exc").unwrap();
        let inh = rec.population("inh").unwrap();
        let rate = exc.mean_rate_hz(rec.info.duration_ms);
        let cv = exc.cv_isi().unwrap();
        let total = exc.total_spikes + inh.total_spikes;
        println!("seed {seed}: exc rate {rate:.2} Hz, CV ISI {cv:.3}, {total} spikes");
        // Brian2: 5.60 Hz, CV 0.512. Seeds move the rate by about +-10 %.
        assert!((4.5..7.0).contains(&rate), "seed {seed}: excitatory rate {rate} Hz");
        assert!((0.4..0.65).contains(&cv), "seed {seed}: CV ISI {cv}");
        assert!((18_000..28_000).contains(&total), "seed {seed}: {total} spikes");
        rates.push(rate);
        totals.push(total as f64);
    }
    let spread = |xs: &[f64]| {
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        xs.iter().map(|x| (x - mean).abs() / mean).fold(0.0, f64::max)
    };
    assert!(spread(&rates) < 0.15, "rates vary too much across seeds: {rates:?}");
    assert!(spread(&totals) < 0.15, "spike counts vary too much across seeds: {totals:?}");
}
