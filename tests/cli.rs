//! The `snn` binary end to end: outputs, determinism across thread counts, and bad input.

mod common;
use common::{repo, snn};

use std::path::{Path, PathBuf};

fn read_spikes(path: &Path) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let file = hdf5::File::open(path).unwrap();
    let spikes = file.group("spikes").unwrap();
    spikes
        .member_names()
        .unwrap()
        .into_iter()
        .filter(|name| spikes.group(name).unwrap().link_exists("timestamps"))
        .map(|name| {
            let g = spikes.group(&name).unwrap();
            let t: Vec<f64> = g.dataset("timestamps").unwrap().read_raw().unwrap();
            let i: Vec<u64> = g.dataset("node_ids").unwrap().read_raw().unwrap();
            let bytes_t = t.iter().flat_map(|x| x.to_le_bytes()).collect();
            let bytes_i = i.iter().flat_map(|x| x.to_le_bytes()).collect();
            (name, bytes_t, bytes_i)
        })
        .collect()
}

#[test]
fn simulate_writes_recording_figures_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o =
        snn(&["simulate", &repo("networks/cuba.ron"), "--duration-ms", "200", "--out", out.to_str().unwrap()], None);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for needle in ["4000 neurons", "synapses", "exc", "inh", "mean rate (Hz)", "x real time", "events/s"] {
        assert!(stdout.contains(needle), "summary lacks {needle:?}:\n{stdout}");
    }
    for file in ["spikes.h5", "raster.png", "traces.png"] {
        assert!(out.join(file).metadata().unwrap().len() > 1000, "{file} missing or empty");
    }
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let rec = snn::io::hdf5_file::read(&out.join("spikes.h5")).unwrap();
    assert_eq!(rec.info.duration_ms, 200.0);
    assert!(rec.info.network_spec.contains("Vogels"));
    assert_eq!(rec.populations.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["exc", "inh"]);
    assert_eq!(rec.traces[0].v.len(), 2000 * 3);
}

#[test]
fn same_seed_gives_byte_identical_recordings_with_one_and_two_threads() {
    // parallel.ron has 2 x 20 000 neurons (5 blocks each, updated in parallel with 2 threads),
    // per-synapse delays, instantaneous and exponential synapses; CUBA runs on one block.
    let dir = tempfile::tempdir().unwrap();
    for (network, duration) in [("tests/data/parallel.ron", "100"), ("networks/cuba.ron", "300")] {
        let mut files = Vec::new();
        for threads in [1, 2] {
            let out = dir.path().join(format!("{}_{threads}", network.replace('/', "_")));
            let o = snn(
                &[
                    "simulate",
                    &repo(network),
                    "--duration-ms",
                    duration,
                    "--no-figures",
                    "--out",
                    out.to_str().unwrap(),
                ],
                Some(threads),
            );
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            files.push(out.join("spikes.h5"));
        }
        let total: usize = read_spikes(&files[0]).iter().map(|(_, t, _)| t.len() / 8).sum();
        assert!(total > 5_000, "{network}: the check needs real activity, got {total} spikes");
        assert!(std::fs::read(&files[0]).unwrap() == std::fs::read(&files[1]).unwrap(), "{network}: files differ");
    }
}

#[test]
fn another_seed_gives_other_spikes() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for seed in ["1", "2"] {
        let out = dir.path().join(seed);
        let o = snn(
            &[
                "simulate",
                &repo("networks/cuba.ron"),
                "--duration-ms",
                "50",
                "--seed",
                seed,
                "--no-figures",
                "--out",
                out.to_str().unwrap(),
            ],
            None,
        );
        assert!(o.status.success());
        runs.push(read_spikes(&out.join("spikes.h5")));
    }
    assert_ne!(runs[0], runs[1]);
}

#[test]
fn validate_accepts_the_shipped_files() {
    for file in [
        "networks/cuba.ron",
        "networks/poisson_drive.ron",
        "stimuli/poisson_background.ron",
        "stimuli/step_current.ron",
    ] {
        let o = snn(&["validate", &repo(file)], None);
        assert!(o.status.success(), "{file}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("valid"));
    }
}

const GOOD: &str = r#"Network(
    name: "small",
    dt_ms: 0.1,
    duration_ms: 10.0,
    populations: [
        (name: "exc", size: 10, neuron: Lif(tau_mem_ms: 20.0, v_rest: -70.0, v_threshold: -50.0, v_reset: -70.0, refractory_ms: 2.0)),
    ],
    projections: [
        (from: "exc", to: "exc", connect: FixedProbability(0.5), weight: Constant(1.0), synapse: Exponential(tau_ms: 5.0)),
    ],
)"#;

/// Writes `network` into a fresh folder, runs `simulate` on it and checks the failure: non-zero
/// exit, every `needles` in stderr, and no output folder created.
fn assert_rejected(network: &str, extra: &[&str], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.ron");
    std::fs::write(&file, network).unwrap();
    let out: PathBuf = dir.path().join("out");
    let mut args = vec!["simulate", file.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = snn(&args, None);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "accepted:\n{network}");
    for needle in needles {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}:\n{stderr}");
    }
    assert!(!out.exists(), "output folder written despite the error");
    if extra.is_empty() {
        // The problem lies in the file, so `validate` reports it too.
        let v = snn(&["validate", file.to_str().unwrap()], None);
        assert!(!v.status.success());
    }
}

#[test]
fn good_network_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("good.ron");
    std::fs::write(&file, GOOD).unwrap();
    let out = dir.path().join("out");
    let o = snn(&["simulate", file.to_str().unwrap(), "--out", out.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let broken = GOOD.replace("dt_ms: 0.1,", "dt_ms: 0.1,,");
    assert_rejected(&broken, &[], &["bad.ron:3:"]);
}

#[test]
fn unknown_field_is_a_syntax_error_with_position() {
    let broken = GOOD.replace("duration_ms: 10.0", "duraton_ms: 10.0");
    assert_rejected(&broken, &[], &["bad.ron:4:", "duraton_ms"]);
}

#[test]
fn unknown_population_in_a_projection() {
    assert_rejected(
        &GOOD.replace(r#"to: "exc""#, r#"to: "inh""#),
        &[],
        &["projections[0].to", "unknown population \"inh\""],
    );
}

#[test]
fn negative_time_constant() {
    assert_rejected(
        &GOOD.replace("tau_mem_ms: 20.0", "tau_mem_ms: -20.0"),
        &[],
        &["populations[0].neuron.Lif.tau_mem_ms", "-20"],
    );
    assert_rejected(
        &GOOD.replace("tau_ms: 5.0", "tau_ms: -5.0"),
        &[],
        &["projections[0].synapse.Exponential.tau_ms", "-5"],
    );
}

#[test]
fn probability_outside_unit_interval() {
    assert_rejected(
        &GOOD.replace("FixedProbability(0.5)", "FixedProbability(1.5)"),
        &[],
        &["projections[0].connect.FixedProbability", "1.5"],
    );
}

#[test]
fn threshold_below_reset() {
    assert_rejected(
        &GOOD.replace("v_threshold: -50.0", "v_threshold: -75.0"),
        &[],
        &["populations[0].neuron.Lif.v_threshold", "-75", "-70"],
    );
}

#[test]
fn empty_population() {
    assert_rejected(&GOOD.replace("size: 10", "size: 0"), &[], &["populations[0].size", "\"exc\" is empty"]);
}

#[test]
fn missing_stimulus_file() {
    let with_stimulus = GOOD.replace("duration_ms: 10.0,", "duration_ms: 10.0, stimulus: Some(\"nowhere.ron\"),");
    assert_rejected(&with_stimulus, &[], &["nowhere.ron", "cannot read"]);
    assert_rejected(GOOD, &["--stimulus", "/definitely/missing.ron"], &["/definitely/missing.ron", "cannot read"]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let broken = GOOD.replace("size: 10", "size: 0").replace("FixedProbability(0.5)", "FixedProbability(-0.1)");
    assert_rejected(&broken, &[], &["populations[0].size", "projections[0].connect.FixedProbability"]);
}

#[test]
fn bad_duration_on_the_command_line() {
    assert_rejected(GOOD, &["--duration-ms", "-5"], &["--duration-ms", "-5"]);
}
