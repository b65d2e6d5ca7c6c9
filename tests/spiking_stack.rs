//! Spiking layers in the layer stack, end to end on the shipped Fashion-MNIST subset: a spiking
//! CNN learns, repeats itself with one and two threads, trains its time constants and resumes
//! exactly; a rate-coded stack with a spike-count readout learns; bad spiking stacks are
//! refused with the layer named.

mod common;
use common::{snn, train_cli};

use std::path::Path;

use snn::io::checkpoint;

/// A smaller copy of networks/fashion_scnn.ron (fewer filters), quick enough for a test.
const SMALL_SCNN: &str = r#"Network(
    name: "small_scnn", dt_ms: 1.0, seed: 2,
    inputs: [(name: "pixels", size: 784, shape: (1, 28, 28))],
    layers: [
        Conv2d(filters: 8, kernel: 3, padding: 1), BatchNorm(), Lif(tau_mem_ms: 1.5, learn_tau: PerChannel),
        MaxPool(size: 2),
        Conv2d(filters: 16, kernel: 3, padding: 1), BatchNorm(), Lif(tau_mem_ms: 1.4427), MaxPool(size: 2),
        Flatten, Dropout(rate: 0.25), Dense(units: 32), CubaLif(tau_syn_ms: 2.0, tau_mem_ms: 3.0, learn_tau: PerLayer),
        Dense(units: 10), Li(tau_mem_ms: 20.0),
    ],
    training: (steps: 4, encoder: Current, epochs: 2, batch_size: 64, optimizer: Adam(lr: 2e-3)),
)"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn spiking_cnn_learns_its_time_constants_and_repeats_itself_with_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let network = write(dir.path(), "scnn.ron", SMALL_SCNN);
    let mut runs = Vec::new();
    for threads in [1, 2] {
        let out = dir.path().join(format!("run{threads}"));
        train_cli(&network, &out, &["--train-samples", "1024", "--test-samples", "200"], Some(threads));
        let h = checkpoint::read_history(&out.join("history.h5")).unwrap();
        assert!(h.train_loss[1] < h.train_loss[0], "loss {:?}", h.train_loss);
        assert!(h.test_accuracy[1] > 0.5, "test accuracy {:?} (chance is 0.1)", h.test_accuracy);
        let saved = checkpoint::read(&out.join("checkpoint.h5")).unwrap();
        // Per-channel decays of the first Lif and one pair for the CubaLif, kept as logits;
        // the first Lif's moved from their start, the logit of exp(-1 / 1.5).
        let decay = |layer: &str, param: &str| {
            saved.layers.iter().find(|(l, p, _)| l == layer && p == param).map(|(_, _, m)| m.clone())
        };
        let first = decay("layers[2] Lif", "beta_logit").expect("per-channel decays are saved");
        assert_eq!(first.nrows(), 8);
        let start = {
            let beta = (-1.0f64 / 1.5).exp();
            (beta / (1.0 - beta)).ln() as f32
        };
        assert!(first.iter().all(|w| (w - start).abs() > 1e-4), "per-channel decays did not train: {first}");
        assert!(decay("layers[6] Lif", "beta_logit").is_none(), "a fixed decay is not a parameter");
        assert_eq!(decay("layers[11] CubaLif", "alpha_logit").expect("learnt synaptic decay").len(), 1);
        runs.push((h.train_loss, h.test_accuracy, saved.layers, saved.buffers));
    }
    assert_eq!(runs[0], runs[1], "1 and 2 threads differ");
}

#[test]
fn resuming_a_spiking_cnn_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let network = write(dir.path(), "scnn.ron", SMALL_SCNN);
    let cut = ["--train-samples", "256", "--test-samples", "100"];
    let straight = dir.path().join("straight");
    train_cli(&network, &straight, &[&["--epochs", "2"][..], &cut].concat(), None);
    let resumed = dir.path().join("resumed");
    train_cli(&network, &resumed, &[&["--epochs", "1"][..], &cut].concat(), None);
    train_cli(&network, &resumed, &[&["--epochs", "2", "--resume"][..], &cut].concat(), None);
    let (a, b) = (
        checkpoint::read(&straight.join("checkpoint.h5")).unwrap(),
        checkpoint::read(&resumed.join("checkpoint.h5")).unwrap(),
    );
    assert_eq!(a.layers, b.layers);
    assert_eq!(a.buffers, b.buffers);
    assert_eq!(a.history.test_loss, b.history.test_loss);

    // The trained stack's spikes for one test image, as a simulation recording.
    let figures = dir.path().join("explain");
    let checkpoint = straight.join("checkpoint.h5");
    let said = common::ok(&snn(
        &["explain", checkpoint.to_str().unwrap(), "--index", "3", "--out", figures.to_str().unwrap()],
        None,
    ));
    assert!(said.contains("test image 3") && said.contains("layer2_lif"), "{said}");
    let recording = snn::io::hdf5_file::read(&figures.join("spikes_3.h5")).unwrap();
    let names: Vec<&str> = recording.populations.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["layer2_lif", "layer6_lif", "layer11_cubalif"]);
    assert_eq!(recording.populations[0].size, 8 * 28 * 28);
    assert!(recording.populations[0].total_spikes > 0, "the first layer stayed silent");
    assert_eq!(recording.info.duration_ms, 4.0);
    assert!(figures.join("raster_3.png").exists() && figures.join("readout_3.png").exists());
}

#[test]
fn rate_coded_stack_with_a_spike_count_readout_learns() {
    let dir = tempfile::tempdir().unwrap();
    let network = write(
        dir.path(),
        "rate.ron",
        r#"Network(name: "rate", dt_ms: 1.0, seed: 4, inputs: [(name: "pixels", size: 784)],
            layers: [Dense(units: 64), Lif(tau_mem_ms: 10.0), Dense(units: 10), Lif(tau_mem_ms: 10.0, reset: Zero)],
            training: (steps: 10, encoder: Rate(gain: 1.0), readout: SpikeCount, epochs: 2, batch_size: 32,
                       optimizer: Adam(lr: 2e-3)))"#,
    );
    let out = dir.path().join("out");
    train_cli(&network, &out, &["--train-samples", "1000", "--test-samples", "300"], None);
    let h = checkpoint::read_history(&out.join("history.h5")).unwrap();
    assert!(h.test_accuracy[1] > 0.5, "test accuracy {:?} (chance is 0.1)", h.test_accuracy);
}

/// `snn validate` on a small stack; returns its error output.
fn refused(layers: &str, training: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "Network(name: \"bad\", inputs: [(name: \"pixels\", size: 784)], layers: [{layers}], training: ({training}))"
    );
    let path = write(dir.path(), "bad.ron", &text);
    let o = snn(&["validate", &path], None);
    assert!(!o.status.success(), "validate accepted {layers} with {training}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_spiking_stacks_name_the_layer() {
    let e = refused("Dense(units: 10), Lif(tau_mem_ms: 5.0), Dense(units: 10), Li(tau_mem_ms: 5.0)", "steps: 0");
    assert!(e.contains("layers[1] (Lif): a stateful layer runs over the training section's steps"), "{e}");
    let e = refused("Dense(units: 10), Lif(tau_mem_ms: -5.0), Dense(units: 10), Li(tau_mem_ms: 5.0)", "steps: 4");
    assert!(e.contains("layers[1] (Lif): tau_mem_ms: must be a positive number, got -5"), "{e}");
    let e = refused(
        "Dense(units: 10), CubaLif(tau_syn_ms: 0.0, tau_mem_ms: 5.0), Dense(units: 10), Li(tau_mem_ms: 5.0)",
        "steps: 4",
    );
    assert!(e.contains("layers[1] (CubaLif): tau_syn_ms: must be a positive number, got 0"), "{e}");
    let e = refused("Dense(units: 10), Lif(tau_mem_ms: 5.0), Dense(units: 10)", "steps: 4");
    assert!(e.contains("layers[2] (Dense): a spiking model ends in its readout") && e.contains("Li"), "{e}");
    let e = refused(
        "Dense(units: 10), Lif(tau_mem_ms: 5.0), Dense(units: 10), Li(tau_mem_ms: 5.0)",
        "steps: 4, readout: SpikeCount",
    );
    assert!(
        e.contains("training.readout: SpikeCount scores the last layer's spikes, but the model ends in layers[3] (Li)"),
        "{e}"
    );
    // Recurrence over an image's positions is refused (the input here is an image).
    let dir = tempfile::tempdir().unwrap();
    let text = "Network(name: \"bad\", inputs: [(name: \"pixels\", size: 784, shape: (1, 28, 28))], layers: [\
        Conv2d(filters: 2, kernel: 3), Lif(tau_mem_ms: 5.0, recurrent: AllToAll), Flatten, Dense(units: 10), \
        Li(tau_mem_ms: 5.0)], training: (steps: 4))";
    let o = snn(&["validate", &write(dir.path(), "bad.ron", text)], None);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("layers[1] (Lif): recurrent: AllToAll needs a vector input"), "{e}");
}

/// A sequence encoder must match the input and the steps; the mismatch names both.
#[test]
fn a_sequence_that_does_not_fit_the_input_or_the_steps_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let layers = "Dense(units: 8), Lif(tau_mem_ms: 5.0, recurrent: NoSelf), Dense(units: 10), Li(tau_mem_ms: 5.0)";
    for (size, steps, needle) in [
        (28, 20, "a sequence of 784 pixels at 28 per step takes 28 steps, but training.steps is 20"),
        (14, 28, "the encoder feeds a sequence of 28 pixels per step, but the input population \"row\" has size 14"),
    ] {
        let text = format!(
            "Network(name: \"rows\", inputs: [(name: \"row\", size: {size})], layers: [{layers}], \
             training: (steps: {steps}, encoder: Sequence(per_step: 28)))"
        );
        let network = write(dir.path(), "rows.ron", &text);
        let out = dir.path().join("out");
        let data = common::repo("tests/data/fashion-mnist");
        let o = snn(&["train", &network, "--data", &data, "--out", out.to_str().unwrap()], None);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains(needle), "{e}");
        assert!(!out.join("checkpoint.h5").exists());
    }
}

#[test]
fn a_static_input_computed_once_equals_the_input_repeated_over_the_steps() {
    // Direct current: the convolution and batch norm before the first Lif run once; with the
    // encoder switched to one that varies over steps, the same input is given at every step.
    let text = SMALL_SCNN.replace("epochs: 2", "epochs: 1");
    let network: snn::spec::Network = snn::spec::parse_ron(&text, Path::new("<test>")).unwrap();
    let training = network.training.clone().unwrap();
    let mut once = snn::models::LayerNet::<f32>::from_spec(&network, &training, 5).unwrap();
    assert_eq!(once.static_prefix(), Some(2));
    let mut every_step = once.clone();
    every_step.encoder = snn::data::encode::Encoder::Latency { threshold: 0.01 };
    assert_eq!(every_step.static_prefix(), None);
    let x = nalgebra::DMatrix::from_fn(784, 3, |i, j| ((i * 31 + j * 17) % 255) as f32 / 255.0);
    let repeated = nalgebra::DMatrix::from_fn(784, 12, |i, j| x[(i, j % 3)]);
    let mode = snn::models::Mode::Eval { soft: false };
    let (a, b) = (once.forward(x, mode), every_step.forward(repeated, mode));
    assert_eq!(a.scores(), b.scores());
    assert_eq!(a.values.last(), b.values.last());
}

/// A recurrent spiking layer (snnTorch's RLeaky without self-connections) and a recurrent adaptive one
/// (LSNN's ALIF, all to all) on rate-coded images.
const RECURRENT: &str = r#"Network(
    name: "recurrent", dt_ms: 1.0, seed: 3,
    inputs: [(name: "pixels", size: 784)],
    layers: [
        Dense(units: 48), Lif(tau_mem_ms: 5.0, threshold: 0.5, learn_tau: PerChannel, recurrent: NoSelf),
        Dense(units: 24), Alif(tau_mem_ms: 5.0, tau_adapt_ms: 20.0, beta_adapt: 0.1, threshold: 0.5, recurrent: AllToAll),
        Dense(units: 10), Li(tau_mem_ms: 20.0),
    ],
    training: (steps: 8, encoder: Rate(), epochs: 2, batch_size: 64, optimizer: Adam(lr: 2e-3)),
)"#;

#[test]
fn recurrent_stack_learns_repeats_itself_with_one_and_two_threads_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let network = write(dir.path(), "recurrent.ron", RECURRENT);
    let cut = ["--train-samples", "512", "--test-samples", "200"];
    let mut runs = Vec::new();
    for threads in [1, 2] {
        let out = dir.path().join(format!("run{threads}"));
        train_cli(&network, &out, &cut, Some(threads));
        let saved = checkpoint::read(&out.join("checkpoint.h5")).unwrap();
        let h = &saved.history;
        assert!(h.test_accuracy[1] > 0.4, "test accuracy {:?} (chance is 0.1)", h.test_accuracy);
        let (_, _, w) = saved.layers.iter().find(|(_, p, _)| p == "recurrent_weight").expect("saved");
        let adaptive = saved.layers.iter().filter(|(l, p, _)| l.ends_with("Alif") && p == "recurrent_weight");
        assert_eq!(adaptive.count(), 1, "the Alif layer's recurrent weights are trained and saved");
        assert_eq!(w.shape(), (48, 48));
        assert!((0..48).all(|i| w[(i, i)] == 0.0), "no self-connections");
        runs.push(saved.layers);
    }
    assert_eq!(runs[0], runs[1], "1 and 2 threads differ");
    let resumed = dir.path().join("resumed");
    train_cli(&network, &resumed, &[&["--epochs", "1"][..], &cut].concat(), None);
    train_cli(&network, &resumed, &[&["--epochs", "2", "--resume"][..], &cut].concat(), None);
    assert_eq!(checkpoint::read(&resumed.join("checkpoint.h5")).unwrap().layers, runs[0]);
}

#[test]
fn a_recall_delay_that_is_negative_or_too_long_for_memory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let network = common::repo("networks/recall.ron");
    for (delay, needle) in [
        ("-5", "--delay: must be a number of steps >= 0, got -5"),
        // 2 million steps: some 340 GB of values to keep, more than any test machine has.
        ("2000000", "training over 2000040 steps at batch 64 keeps about"),
    ] {
        let out = dir.path().join("out");
        let started = std::time::Instant::now();
        let o = snn(&["train", &network, "--delay", delay, "--out", out.to_str().unwrap()], None);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains(needle), "{e}");
        assert!(started.elapsed().as_secs_f64() < 10.0, "refused only after {:?}", started.elapsed());
        assert!(!out.exists(), "nothing is written");
    }
    let o = snn(&["train", &common::repo("networks/fashion_rows.ron"), "--delay", "10"], None);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--delay: only the recall task has a delay"));
}

#[test]
fn recomputation_trains_to_the_same_weights_as_full_bptt_and_eprop_repeats_itself() {
    let dir = tempfile::tempdir().unwrap();
    let network = write(dir.path(), "recurrent.ron", RECURRENT);
    let cut = ["--train-samples", "256", "--test-samples", "64", "--epochs", "1"];
    let weights = |name: &str, extra: &[&str], threads: usize| {
        let out = dir.path().join(name);
        train_cli(&network, &out, &[extra, &cut[..]].concat(), Some(threads));
        checkpoint::read(&out.join("checkpoint.h5")).unwrap().layers
    };
    let full = weights("full", &["--bptt", "full"], 2);
    assert_eq!(weights("recompute", &["--bptt", "recompute:3"], 2), full, "recomputation changes training");
    assert_ne!(weights("truncated", &["--bptt", "truncated:3"], 2), full, "truncation changes nothing");
    // e-prop: one recurrent Alif layer with fixed time constants and an Li readout.
    let eprop = RECURRENT.replace(
        "Dense(units: 48), Lif(tau_mem_ms: 5.0, threshold: 0.5, learn_tau: PerChannel, recurrent: NoSelf),\n",
        "",
    );
    assert_ne!(eprop, RECURRENT, "the first layer is taken out");
    let network = write(dir.path(), "eprop.ron", &eprop);
    let runs: Vec<_> = [1, 2]
        .iter()
        .map(|&threads| {
            let out = dir.path().join(format!("eprop{threads}"));
            train_cli(&network, &out, &[&["--bptt", "eprop"][..], &cut[..]].concat(), Some(threads));
            checkpoint::read(&out.join("checkpoint.h5")).unwrap()
        })
        .collect();
    assert_eq!(runs[0].layers, runs[1].layers, "e-prop with 1 and 2 threads");
    assert!(runs[0].history.test_accuracy[0] > 0.2, "e-prop learns: {:?}", runs[0].history.test_accuracy);
}

#[test]
fn validate_gives_the_memory_a_training_batch_keeps_and_checks_the_bptt_mode() {
    let dir = tempfile::tempdir().unwrap();
    let o = snn(&["validate", &common::repo("networks/fashion_pixels.ron")], None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("per batch of 128 for the backward pass over 784 steps"), "{out}");
    // e-prop needs one recurrent layer: the spiking CNN is refused, naming the setting.
    let scnn = std::fs::read_to_string(common::repo("networks/fashion_scnn.ron")).unwrap();
    let network = write(dir.path(), "scnn_eprop.ron", &scnn.replace("training: (", "training: (bptt: Eprop, "));
    let o = snn(&["validate", &network], None);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("training.bptt Eprop: e-prop trains Dense -> Lif or Alif"), "{e}");
    let recall = std::fs::read_to_string(common::repo("networks/recall.ron")).unwrap();
    let network = write(dir.path(), "clip.ron", &recall.replace("training: (", "training: (clip_grad_norm: -1.0, "));
    let o = snn(&["validate", &network], None);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("training.clip_grad_norm"), "{e}");
}

#[test]
fn scoring_the_last_steps_reads_the_readout_there_only_and_bad_windows_are_refused() {
    let text = RECURRENT.replace("training: (", "training: (scored_steps: 3, ");
    let network: snn::spec::Network = snn::spec::parse_ron(&text, Path::new("<test>")).unwrap();
    let training = network.training.clone().unwrap();
    let mut net = snn::models::LayerNet::<f64>::from_spec(&network, &training, 5).unwrap();
    assert_eq!(net.scored_from, 5, "8 steps, the last 3 scored");
    // Rate-coded spikes of 2 samples over the 8 steps, step-major.
    let x = nalgebra::DMatrix::from_fn(784, 16, |i, j| f64::from((i * 7 + j * 3) % 5 == 0));
    let trace = net.forward(x, snn::models::Mode::Eval { soft: false });
    let readout = trace.values.last().unwrap();
    let expected = nalgebra::DMatrix::from_fn(10, 2, |k, s| (5..8).map(|t| readout[(k, t * 2 + s)]).sum::<f64>() / 3.0);
    let scores = trace.scores();
    assert!((scores - &expected).amax() < 1e-12, "scores are the mean of the last 3 steps");
    let mean_all = nalgebra::DMatrix::from_fn(10, 2, |k, s| (0..8).map(|t| readout[(k, t * 2 + s)]).sum::<f64>() / 8.0);
    assert!((scores - mean_all).amax() > 1e-6, "and not of every step");

    let dir = tempfile::tempdir().unwrap();
    for bad in ["scored_steps: 0, ", "scored_steps: 9, "] {
        let path = write(dir.path(), "bad.ron", &RECURRENT.replace("training: (", &format!("training: ({bad}")));
        let o = snn(&["validate", &path], None);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains("training.scored_steps: must lie in 1 ..= steps (8)"), "{e}");
    }
}
