//! `snn train` and `snn eval` end to end on the shipped Fashion-MNIST subset.

mod common;
use common::{history_bits, ok, repo, snn};

use std::path::Path;
use std::process::Output;

use snn::io::checkpoint;
use snn::models::LayerNet;

/// Trains networks/fashion_snn.ron on the shipped subset into `out`.
fn train(out: &Path, extra: &[&str], threads: Option<usize>) -> Output {
    let network = repo("networks/fashion_snn.ron");
    let data = repo("tests/data/fashion-mnist");
    let mut args = vec!["train", &network, "--data", &data, "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    snn(&args, threads)
}

#[test]
fn training_lowers_the_loss_and_beats_chance() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let stdout = ok(&train(&out, &["--epochs", "2", "--train-samples", "1536", "--test-samples", "500"], None));
    let h = checkpoint::read_history(&out.join("history.h5")).unwrap();
    println!("{stdout}");
    assert_eq!(h.epochs(), 2);
    assert!(h.train_loss[1] < h.train_loss[0], "loss {:?}", h.train_loss);
    assert!(h.train_loss[0] < 2.3, "the first epoch already learns: {:?}", h.train_loss);
    assert!(h.test_accuracy[1] > 0.6, "test accuracy {:?} (chance is 0.1)", h.test_accuracy);
    assert!(h.spike_rate[1][0] > 0.001 && h.spike_rate[1][0] < 0.5, "hidden spike rate {:?}", h.spike_rate);
    assert!(h.grad_norm.iter().flatten().all(|g| g.is_finite() && *g > 0.0));
    for file in ["checkpoint.h5", "history.h5", "training_curves.png"] {
        assert!(out.join(file).exists(), "{file}");
    }
    // eval reproduces the last epoch's test accuracy on the same test samples.
    let eval = ok(&snn(
        &["eval", out.join("checkpoint.h5").to_str().unwrap(), "--data", &repo("tests/data/fashion-mnist")],
        None,
    ));
    assert!(eval.contains("test accuracy") && eval.contains("confusion matrix"), "{eval}");
    assert!(out.join("confusion.png").exists());
}

fn weights(path: &Path) -> Vec<Vec<f32>> {
    checkpoint::read(path).unwrap().layers.iter().map(|(_, _, w)| w.as_slice().to_vec()).collect()
}

#[test]
fn the_same_seed_gives_the_same_run_with_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for threads in [1, 2] {
        let out = dir.path().join(format!("t{threads}"));
        ok(&train(&out, &["--epochs", "1", "--train-samples", "600", "--test-samples", "200"], Some(threads)));
        let h = checkpoint::read_history(&out.join("history.h5")).unwrap();
        runs.push((h.train_loss, h.test_loss, h.test_accuracy, weights(&out.join("checkpoint.h5"))));
    }
    assert_eq!(runs[0], runs[1]);
}

#[test]
fn resuming_equals_training_without_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    let resumed = dir.path().join("resumed");
    let limits = ["--train-samples", "600", "--test-samples", "200"];
    ok(&train(&straight, &[&["--epochs", "2"][..], &limits].concat(), None));
    ok(&train(&resumed, &[&["--epochs", "1"][..], &limits].concat(), None));
    ok(&train(&resumed, &[&["--epochs", "2", "--resume"][..], &limits].concat(), None));
    let a = checkpoint::read(&straight.join("checkpoint.h5")).unwrap();
    let b = checkpoint::read(&resumed.join("checkpoint.h5")).unwrap();
    assert_eq!((a.epochs_done, b.epochs_done), (2, 2));
    // Everything but the measured speed must be identical, bit for bit.
    let same_weights = a.layers == b.layers;
    let same_optimizer = a.optimizer == b.optimizer;
    let (ha, hb) = (history_bits(&a.history), history_bits(&b.history));
    assert!(
        same_weights && same_optimizer && ha == hb,
        "weights {same_weights}, optimizer {same_optimizer}, history {:?} vs {:?}",
        a.history,
        b.history
    );
}

#[test]
fn unknown_surrogate_lists_the_valid_names() {
    let dir = tempfile::tempdir().unwrap();
    let o = train(&dir.path().join("x"), &["--surrogate", "relu"], None);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("relu") && stderr.contains("htaf, sigmoid, fast-sigmoid, arctan, triangle, ste"),
        "{stderr}"
    );
}

#[test]
fn missing_and_truncated_data_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let network = repo("networks/fashion_snn.ron");
    let out = dir.path().join("out");
    let o = snn(&["train", &network, "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()], None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("train-images-idx3-ubyte"));
    for f in std::fs::read_dir(repo("tests/data/fashion-mnist")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), data.join(f.file_name())).unwrap();
    }
    let labels = data.join("train-labels-idx1-ubyte.gz");
    let bytes = std::fs::read(&labels).unwrap();
    std::fs::write(&labels, &bytes[..bytes.len() / 2]).unwrap();
    let o = snn(&["train", &network, "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()], None);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("train-labels-idx1-ubyte.gz") && stderr.contains("truncated"), "{stderr}");
    assert!(!out.exists(), "nothing is written when the data is bad");
}

#[test]
fn image_size_must_match_the_input_layer() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("networks/fashion_snn.ron")).unwrap().replace("size: 784", "size: 100");
    let network = dir.path().join("small_input.ron");
    std::fs::write(&network, text).unwrap();
    let o = snn(&["train", network.to_str().unwrap(), "--data", &repo("tests/data/fashion-mnist")], None);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("784 pixels") && stderr.contains("\"pixels\" has size 100"), "{stderr}");
}

#[test]
fn a_nan_loss_stops_with_epoch_and_batch_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    ok(&train(&out, &["--epochs", "1", "--train-samples", "256", "--test-samples", "100"], None));
    let before = std::fs::read(out.join("checkpoint.h5")).unwrap();
    // Weights so large that the membrane overflows to infinity, and the loss to NaN.
    let text = std::fs::read_to_string(repo("networks/fashion_snn.ron"))
        .unwrap()
        .replace("weight: Uniform(low: -0.0354, high: 0.0354)", "weight: Constant(3.0e38)");
    let network = dir.path().join("exploding.ron");
    std::fs::write(&network, text).unwrap();
    let data = repo("tests/data/fashion-mnist");
    let o = snn(
        &[
            "train",
            network.to_str().unwrap(),
            "--data",
            &data,
            "--out",
            out.to_str().unwrap(),
            "--train-samples",
            "256",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("epoch 1 batch 1") && stderr.contains("NaN"), "{stderr}");
    assert_eq!(std::fs::read(out.join("checkpoint.h5")).unwrap(), before, "the good checkpoint is untouched");
}

/// Trains networks/fashion_rows_populations.ron (a recurrent population) on the shipped subset.
fn train_recurrent(out: &Path, extra: &[&str], threads: Option<usize>) -> Output {
    let network = repo("networks/fashion_rows_populations.ron");
    let data = repo("tests/data/fashion-mnist");
    let mut args = vec!["train", &network, "--data", &data, "--out", out.to_str().unwrap()];
    args.extend_from_slice(&["--train-samples", "400", "--test-samples", "100"]);
    args.extend_from_slice(extra);
    snn(&args, threads)
}

#[test]
fn a_recurrent_population_chain_trains_the_same_on_any_thread_count_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for threads in [1, 2] {
        let out = dir.path().join(format!("t{threads}"));
        ok(&train_recurrent(&out, &["--epochs", "2"], Some(threads)));
        runs.push(checkpoint::read(&out.join("checkpoint.h5")).unwrap());
    }
    let names: Vec<(&str, &str)> = runs[0].layers.iter().map(|(f, t, _)| (f.as_str(), t.as_str())).collect();
    assert_eq!(
        names,
        [("row -> hidden", "weight"), ("hidden", "recurrent_weight"), ("hidden -> readout", "weight")],
        "the compiled stack's parameters carry the file's population names"
    );
    let recurrent = &runs[0].layers[1].2;
    assert!(recurrent.diagonal().iter().all(|&w| w == 0.0), "allow_autapses: false keeps the diagonal at zero");
    let (network, training) = runs[0].specs(Path::new("x")).unwrap();
    let initial = LayerNet::<f32>::from_spec(&network, &training, 1).unwrap();
    let (_, initial_recurrent) =
        initial.named_params().into_iter().find(|(n, _)| n == "hidden.recurrent_weight").unwrap();
    assert!((recurrent - initial_recurrent).norm() > 1e-3, "the recurrent weights train");
    assert!(runs[0].history.test_accuracy[1] > 0.3, "learns: {:?}", runs[0].history.test_accuracy);
    assert_eq!(runs[0].layers, runs[1].layers, "1 and 2 threads give the same weights");
    assert_eq!(runs[0].optimizer, runs[1].optimizer);

    let resumed = dir.path().join("resumed");
    ok(&train_recurrent(&resumed, &["--epochs", "1"], None));
    ok(&train_recurrent(&resumed, &["--epochs", "2", "--resume"], None));
    let r = checkpoint::read(&resumed.join("checkpoint.h5")).unwrap();
    assert_eq!(r.layers, runs[0].layers, "resuming gives the weights of a run without a stop");
    assert_eq!(r.optimizer, runs[0].optimizer);
}

#[test]
fn recurrent_projections_a_chain_cannot_train_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo("networks/fashion_snn.ron")).unwrap();
    let cases = [
        (
            r#"(from: "readout", to: "hidden", connect: AllToAll, weight: Constant(0.01), synapse: Instantaneous),"#,
            r#"projections[2].from: training takes recurrence within a population only (a projection from a population onto itself); "hidden" is fed back from the later population "readout""#,
        ),
        (
            r#"(from: "readout", to: "readout", connect: AllToAll, weight: Constant(0.01), synapse: Instantaneous),"#,
            r#"projections[2].from: the readout "readout" does not fire"#,
        ),
        (
            r#"(from: "hidden", to: "hidden", connect: AllToAll, weight: Constant(0.01), synapse: Instantaneous, delay_ms: Constant(2.0)),"#,
            "projections[2].delay_ms: a population's projection onto itself trains with delay 0",
        ),
        (
            r#"(from: "hidden", to: "hidden", connect: FixedProbability(0.1), weight: Constant(0.01), synapse: Instantaneous),"#,
            "projections[2].connect: training layers are AllToAll",
        ),
        (
            r#"(from: "pixels", to: "readout", connect: AllToAll, weight: Constant(0.01), synapse: Instantaneous),"#,
            r#"projections[2].from: training needs a chain of layers; "readout" should be fed from "hidden""#,
        ),
    ];
    for (k, (extra, message)) in cases.iter().enumerate() {
        let text = base.replace("    ],\n    training:", &format!("        {extra}\n    ],\n    training:"));
        assert_ne!(text, base);
        let network = dir.path().join(format!("bad{k}.ron"));
        std::fs::write(&network, text).unwrap();
        let o = snn(&["validate", network.to_str().unwrap()], None);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains(message), "case {k}: {e}");
    }
    // The trained neurons rest at 0 and reset to 0 or by the threshold.
    for (field, from, to) in [("v_rest", "v_rest: 0.0", "v_rest: -0.1"), ("v_reset", "v_reset: 0.0", "v_reset: -0.2")] {
        let network = dir.path().join(format!("{field}.ron"));
        std::fs::write(&network, base.replacen(from, to, 1)).unwrap();
        let o = snn(&["validate", network.to_str().unwrap()], None);
        let e = String::from_utf8_lossy(&o.stderr);
        let message = format!("populations[0].neuron.Lif.{field}: training supports 0 only");
        assert!(!o.status.success() && e.contains(&message), "{field}: {e}");
    }
}

#[test]
fn a_sweep_records_a_diverged_run_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // A learning rate near f32's largest value: the weights overflow after the first update.
    let text = std::fs::read_to_string(repo("networks/fashion_snn.ron"))
        .unwrap()
        .replace("optimizer: Adam(lr: 5e-4)", "optimizer: Sgd(lr: 1e38, momentum: 0.0)");
    let network = dir.path().join("diverges.ron");
    std::fs::write(&network, text).unwrap();
    let out = dir.path().join("sweep");
    let data = repo("tests/data/fashion-mnist");
    let args = [
        "sweep",
        network.to_str().unwrap(),
        "--surrogates",
        "htaf,ste",
        "--seeds",
        "1",
        "--epochs",
        "2",
        "--data",
        &data,
        "--train-samples",
        "256",
        "--test-samples",
        "64",
        "--out",
        out.to_str().unwrap(),
    ];
    let stdout = ok(&snn(&args, None));
    assert!(stdout.contains("| htaf | 1 | 1 |") && stdout.contains("| ste | 1 | 1 |"), "{stdout}");
    let record = std::fs::read_to_string(out.join("htaf/seed1/result.ron")).unwrap();
    assert!(record.contains("diverged: Some(") && record.contains("epoch 1 batch"), "{record}");
    // The record stands for the run: a second sweep reuses it instead of training again.
    assert_eq!(ok(&snn(&args, None)), stdout);
}
