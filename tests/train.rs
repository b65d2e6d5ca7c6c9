//! `snn train` and `snn eval` end to end on the shipped Fashion-MNIST subset.

mod common;
use common::{ok, repo, snn};

use std::path::Path;
use std::process::Output;

use snn::io::checkpoint;

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
    let (mut ha, mut hb) = (a.history.clone(), b.history.clone());
    ha.samples_per_s.clear();
    hb.samples_per_s.clear();
    assert!(
        same_weights && same_optimizer && ha == hb,
        "weights {same_weights}, optimizer {same_optimizer}, history {:?} vs {:?}",
        ha.train_loss,
        hb.train_loss
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

#[test]
fn a_trained_network_simulates_to_the_trainers_spikes_and_prediction() {
    use snn::data::encode::encoding_stream;
    use snn::train::bptt::{Events, Tape, forward};

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    ok(&train(&out, &["--epochs", "1", "--train-samples", "600", "--test-samples", "100"], None));
    let ckpt = out.join("checkpoint.h5");
    // The stimulus presents test image 3 of the shipped subset.
    let stimulus = dir.path().join("image.ron");
    std::fs::write(
        &stimulus,
        format!(
            "Stimulus(sources: [(name: \"pixels\", size: 784, kind: Image(data: {:?}, index: 3))])",
            repo("tests/data/fashion-mnist")
        ),
    )
    .unwrap();
    let sim_out = dir.path().join("sim");
    let stdout = ok(&snn(
        &[
            "simulate",
            &repo("networks/fashion_snn.ron"),
            "--stimulus",
            stimulus.to_str().unwrap(),
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--out",
            sim_out.to_str().unwrap(),
        ],
        None,
    ));
    let rec = snn::io::hdf5_file::read(&sim_out.join("spikes.h5")).unwrap();
    let (times, ids) = rec.population("hidden").unwrap().spikes.clone().unwrap();
    let mut engine: Vec<(u64, u64)> =
        times.iter().zip(&ids).map(|(&t, &i)| (t.round() as u64, i)).filter(|&(t, _)| t <= 25).collect();

    // The trainer's forward pass on the same image, with the same encoding stream.
    let saved = checkpoint::read(&ckpt).unwrap();
    let (_, training, net) = snn::train::net::from_checkpoint(&saved, &ckpt).unwrap();
    let data = snn::data::idx::load_dir(Path::new(&repo("tests/data/fashion-mnist"))).unwrap();
    let mut input = Events::default();
    training.encoder.encode(
        data.test.images.image(3),
        net.steps,
        &mut encoding_stream(saved.seed, None, 3),
        &mut input,
    );
    let mut tape = Tape::default();
    forward(&net, &input, &mut tape);
    // Hidden spikes of step n are stamped n + 1 ms by the engine (dt = 1 ms).
    let hidden_total = tape.spike_count(0);
    let mut trainer = Vec::new();
    let rec_sim_events = snn::train::bptt::layer_spikes(&tape, 0);
    for (n, id) in rec_sim_events {
        trainer.push((n as u64 + 1, id as u64));
    }
    engine.sort_unstable();
    trainer.sort_unstable();
    assert_eq!(trainer.len(), hidden_total);
    assert!(hidden_total > 100, "too little activity to compare: {hidden_total}");
    // f64 in the engine, f32 in the trainer: a potential within rounding of threshold may fall
    // either way, so allow a handful of differences.
    let common = engine.iter().filter(|e| trainer.binary_search(e).is_ok()).count();
    assert!(
        common as f64 >= 0.99 * trainer.len() as f64,
        "{common} of {} trainer spikes in the engine ({} there)",
        trainer.len(),
        engine.len()
    );
    let scores = &tape.scores;
    let predicted = scores.iter().enumerate().fold(0, |b, (k, &s)| if s > scores[b] { k } else { b });
    assert!(stdout.contains(&format!("predicted class {predicted} (")), "trainer predicts {predicted}:\n{stdout}");
}

#[test]
fn a_recurrent_projection_in_a_population_chain_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("networks/fashion_snn.ron")).unwrap().replace(
        r#"        (from: "hidden", to: "readout""#,
        "        (from: \"hidden\", to: \"hidden\", connect: AllToAll, weight: Constant(0.01), synapse: Instantaneous),\n        (from: \"hidden\", to: \"readout\"",
    );
    let network = dir.path().join("recurrent.ron");
    std::fs::write(&network, text).unwrap();
    let o = snn(&["validate", network.to_str().unwrap()], None);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("projections[1]: \"hidden\" -> \"hidden\" is recurrent"), "{e}");
}
