//! Layered models (DHN, BNN, ICBM, CNN) end to end on the shipped Fashion-MNIST subset: each
//! family trains, reproducibly; binary inference packed and float agree exactly; concepts are
//! hardened to exactly H(x); bad layer stacks are refused with the layer named.

mod common;
use common::{ok, repo, snn, train_cli};

use std::path::Path;

use nalgebra::DMatrix;
use snn::data::idx;
use snn::io::checkpoint;
use snn::models::binary::{self, PackedNet};
use snn::models::concepts::ConceptLayer;
use snn::models::trainer::{LayerRun, batch};
use snn::models::{LayerNet, Mode};
use snn::spec::{self, Network};
use snn::train::setup::load_data;

fn weights(path: &Path) -> Vec<Vec<f32>> {
    checkpoint::read(path).unwrap().layers.iter().map(|(_, _, w)| w.as_slice().to_vec()).collect()
}

#[test]
fn every_family_learns_and_repeats_itself_with_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    for (network, samples, floor) in [
        ("networks/fashion_dhn.ron", "1500", 0.6),
        ("networks/fashion_bnn.ron", "1000", 0.6),
        ("networks/fashion_icbm.ron", "1000", 0.3),
    ] {
        let mut runs = Vec::new();
        for threads in [1, 2] {
            let out = dir.path().join(format!("{}-{threads}", Path::new(network).file_stem().unwrap().display()));
            train_cli(
                network,
                &out,
                &["--epochs", "2", "--train-samples", samples, "--test-samples", "300"],
                Some(threads),
            );
            let h = checkpoint::read_history(&out.join("history.h5")).unwrap();
            assert!(h.train_loss[1] < h.train_loss[0], "{network}: loss {:?}", h.train_loss);
            assert!(h.test_accuracy[1] > floor, "{network}: test accuracy {:?} (chance is 0.1)", h.test_accuracy);
            runs.push((h.train_loss, h.test_accuracy, weights(&out.join("checkpoint.h5"))));
        }
        assert_eq!(runs[0], runs[1], "{network}: 1 and 2 threads differ");
    }
}

fn model_text(layers: &str, shape: &str) -> String {
    format!(
        "Network(name: \"small\", seed: 3, inputs: [(name: \"pixels\", size: 784{shape})], layers: [{layers}], \
         training: (epochs: 1, batch_size: 64, optimizer: Adam(lr: 3e-3)))"
    )
}

fn small_model(layers: &str, shape: &str) -> (Network, String) {
    let text = model_text(layers, shape);
    let network: Network = spec::parse_ron(&text, Path::new("<test>")).unwrap();
    (network, text)
}

fn trained(layers: &str, shape: &str, samples: u32) -> (LayerRun, idx::Dataset) {
    let (network, text) = small_model(layers, shape);
    let training = network.training.clone().unwrap();
    let data = load_data(&idx::shipped_subset(), &network, &training, Some(samples), Some(500)).unwrap();
    let mut run = LayerRun::new(network, text, training, 3).unwrap();
    snn::train::fit::epoch(&mut run, &data, &snn::ranks::Alone, &mut |_, _, _| {}).unwrap();
    (run, data)
}

#[test]
fn bit_packed_and_float_inference_agree_exactly_on_a_trained_bnn() {
    // Widths that are not multiples of 64 exercise the padding bits; an odd batch the lone
    // last sample of the two-sample kernel.
    let (mut run, data) = trained(
        "Dense(units: 200, weights: Binary(), bias: false), BatchNorm(), Sign(), \
         Dense(units: 130, weights: Binary()), BatchNorm(), Sign(), \
         Dense(units: 70, weights: Binary(), bias: false), BatchNorm(), Sign(), Dense(units: 10)",
        "",
        1000,
    );
    let packed = PackedNet::new(&run.net).unwrap();
    assert_eq!(packed.packed_layers, 3..9, "the two blocks fed by a sign are packed");
    let report = binary::compare(&mut run.net, &packed, &data.test, 333);
    assert_eq!(report.samples, 500);
    assert_eq!(report.identical, 500, "{report:?}");
    assert_eq!(report.same_prediction, 500);
    // The whole packed model predicts as the float model does, and better than chance.
    let indices: Vec<usize> = (0..data.test.len()).collect();
    let float_scores = run.net.forward(batch(&data.test, &indices), Mode::Eval { soft: false }).scores().clone();
    let packed_scores = packed.forward(&mut run.net, batch(&data.test, &indices));
    assert_eq!(float_scores, packed_scores);
    let (_, _, correct) = LayerNet::loss(&float_scores, &data.test.labels);
    assert!(correct > 250, "{correct} of 500 correct");
}

#[test]
fn evaluation_hardens_concepts_to_exactly_the_step_of_their_pre_activations() {
    let (mut run, data) = trained(
        "Conv2d(filters: 4, kernel: 3, padding: 1), BatchNorm(), Relu, MaxPool(size: 2), Flatten, \
         Dense(units: 12), BatchNorm(), Heaviside(mode: Smooth), Dense(units: 10)",
        ", shape: (1, 28, 28)",
        600,
    );
    let net = &mut run.net;
    let layer = ConceptLayer::find(net).unwrap();
    let indices: Vec<usize> = (0..200).collect();
    let pre = layer.pre_activations(net, &data.test, &indices);
    let hard = pre.map(|x| if x >= 0.0 { 1.0f32 } else { 0.0 });
    let by_hand = net.eval_layers(hard, layer.step + 1..net.layers.len(), false);
    let evaluated = net.forward(batch(&data.test, &indices), Mode::Eval { soft: false });
    assert_eq!(evaluated.values[layer.step + 1], pre.map(|x| if x >= 0.0 { 1.0f32 } else { 0.0 }));
    assert_eq!(*evaluated.scores(), by_hand);
    // Soft evaluation keeps S(x): some concept is strictly between 0 and 1.
    let soft = net.forward(batch(&data.test, &indices), Mode::Eval { soft: true });
    let concepts: &DMatrix<f32> = &soft.values[layer.step + 1];
    assert!(concepts.iter().any(|&c| c > 0.0 && c < 1.0));
}

#[test]
fn eval_explain_and_sweep_run_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo("tests/data/fashion-mnist");
    let out = dir.path().join("icbm");
    train_cli(
        "networks/fashion_icbm.ron",
        &out,
        &["--epochs", "1", "--train-samples", "300", "--test-samples", "100"],
        None,
    );
    let checkpoint = out.join("checkpoint.h5");
    let eval = ok(&snn(&["eval", checkpoint.to_str().unwrap(), "--data", &data], None));
    assert!(eval.contains("concepts: hard (exactly H(x))") && eval.contains("within 0.05 of 0 or 1"), "{eval}");
    for figure in ["confusion.png", "concept_grid.png", "concept_weights.png"] {
        assert!(out.join(figure).exists(), "{figure}");
    }
    let explain = ok(&snn(&["explain", checkpoint.to_str().unwrap(), "--index", "7", "--data", &data], None));
    assert!(explain.contains("test image 7: true class") && explain.contains("concepts fired"), "{explain}");
    assert!(out.join("explain_7.png").exists());
    let bad = snn(&["explain", checkpoint.to_str().unwrap(), "--index", "5000", "--data", &data], None);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--index 5000"));

    let sweep = dir.path().join("sweep");
    let network = repo("networks/fashion_dhn.ron");
    let sweep_cli = |out: &Path, extra: &[&str]| {
        let out = out.to_str().unwrap();
        let mut args = vec!["sweep", &network, "--surrogates", "htaf,ste", "--seeds", "2", "--epochs", "2"];
        args.extend_from_slice(&["--data", &data, "--train-samples", "400", "--test-samples", "200", "--out", out]);
        args.extend_from_slice(extra);
        snn(&args, None)
    };
    let run_sweep = || ok(&sweep_cli(&sweep, &[]));
    let stdout = run_sweep();
    assert!(stdout.contains("| htaf | 2 |") && stdout.contains("| ste | 2 |"), "{stdout}");
    let csv = std::fs::read_to_string(sweep.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let runs_csv = std::fs::read_to_string(sweep.join("runs.csv")).unwrap();
    assert_eq!(runs_csv.lines().count(), 1 + 2 * 2 * 2);
    assert!(sweep.join("sweep.png").exists() && sweep.join("htaf/seed2/checkpoint.h5").exists());

    // A run cut short after one epoch continues from its checkpoint to the same result as the
    // run trained in one go (every metric but the timing).
    let run_dir = sweep.join("htaf/seed1");
    let record = std::fs::read_to_string(run_dir.join("result.ron")).unwrap();
    std::fs::remove_file(run_dir.join("result.ron")).unwrap();
    let cut =
        ["--epochs", "1", "--seed", "1", "--surrogate", "htaf", "--train-samples", "400", "--test-samples", "200"];
    train_cli("networks/fashion_dhn.ron", &run_dir, &cut, None);
    let first_epoch = checkpoint::read(&run_dir.join("checkpoint.h5")).unwrap().history.samples_per_s;
    run_sweep();
    // It continued (a retrained first epoch would not have taken exactly as long).
    let history = checkpoint::read(&run_dir.join("checkpoint.h5")).unwrap().history;
    assert_eq!((history.epochs(), &history.samples_per_s[..1]), (2, &first_epoch[..]));
    // runs.csv holds the losses and accuracies; the record's fields after the timing
    // (samples_per_s) hold the learning rates, activity and gradient norms.
    assert_eq!(std::fs::read_to_string(sweep.join("runs.csv")).unwrap(), runs_csv);
    let after_timing = |record: &str| record[record.find("learning_rate").unwrap()..].to_owned();
    let resumed = std::fs::read_to_string(run_dir.join("result.ron")).unwrap();
    assert_eq!(after_timing(&resumed), after_timing(&record));

    // Without any checkpoint, the run records alone give the same tables, and nothing trains.
    for s in ["htaf", "ste"] {
        for seed in ["seed1", "seed2"] {
            std::fs::remove_file(sweep.join(s).join(seed).join("checkpoint.h5")).unwrap();
        }
    }
    assert_eq!(run_sweep(), stdout);
    assert!(!sweep.join("htaf/seed2/checkpoint.h5").exists());
    assert_eq!(std::fs::read_to_string(sweep.join("runs.csv")).unwrap(), runs_csv);

    // --finished-only tabulates what is there and trains nothing.
    std::fs::remove_file(sweep.join("ste/seed2/result.ron")).unwrap();
    let finished_only = |out: &Path| sweep_cli(out, &["--finished-only"]);
    let partial = ok(&finished_only(&sweep));
    assert!(partial.contains("| htaf | 2 |") && partial.contains("| ste | 1 |"), "{partial}");
    assert!(!sweep.join("ste/seed2/checkpoint.h5").exists());
    let empty = finished_only(&dir.path().join("nothing"));
    assert!(!empty.status.success() && String::from_utf8_lossy(&empty.stderr).contains("no finished runs"));
}

fn invalid(layers: &str, shape: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.ron");
    std::fs::write(&path, model_text(layers, shape)).unwrap();
    let o = snn(&["validate", path.to_str().unwrap()], None);
    assert!(!o.status.success(), "validate accepted {layers}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_layer_stacks_name_the_layer() {
    let e = invalid("Conv2d(filters: 4, kernel: 30), Flatten, Dense(units: 10)", ", shape: (1, 28, 28)");
    assert!(e.contains("layers[0] (Conv2d): a 30x30 kernel with padding 0 does not fit its 28x28 input"), "{e}");
    let e = invalid("Conv2d(filters: 4, kernel: 3), Flatten, Dense(units: 10)", "");
    assert!(e.contains("layers[0] (Conv2d): its input is a vector of 784 features"), "{e}");
    let e = invalid("Dense(units: 64, weights: Binary()), Sign(), Dense(units: 10)", "");
    assert!(
        e.contains(
            "layers[0] (Dense): binarised weights with batch_norm: true need a BatchNorm after them, found Sign"
        ),
        "{e}"
    );
    let e = invalid("Dense(units: 64), Softmax, Dense(units: 10)", "");
    assert!(e.contains("Softmax") && e.contains("bad.ron"), "{e}");
    let e = invalid("Dense(units: 64), Relu", "");
    assert!(e.contains("layers[1] (Relu): the last layer must be a Dense layer"), "{e}");
    let e = invalid("Dense(units: 10)", ", shape: (1, 28, 27)");
    assert!(e.contains("inputs[0].shape: 1 x 28 x 27 = 756 values, but size is 784"), "{e}");
}

#[test]
fn resuming_a_layered_model_continues_exactly() {
    // Batch-norm running statistics, dropout streams and Adam moments all carry over.
    let dir = tempfile::tempdir().unwrap();
    let network = "networks/fashion_icbm.ron";
    let cut = ["--train-samples", "256", "--test-samples", "100"];
    let straight = dir.path().join("straight");
    train_cli(network, &straight, &[&["--epochs", "2"][..], &cut].concat(), None);
    let resumed = dir.path().join("resumed");
    train_cli(network, &resumed, &[&["--epochs", "1"][..], &cut].concat(), None);
    train_cli(network, &resumed, &[&["--epochs", "2", "--resume"][..], &cut].concat(), None);
    let (a, b) = (
        checkpoint::read(&straight.join("checkpoint.h5")).unwrap(),
        checkpoint::read(&resumed.join("checkpoint.h5")).unwrap(),
    );
    assert_eq!(a.layers, b.layers);
    assert_eq!(a.buffers, b.buffers);
    assert!(!a.buffers.is_empty());
    assert_eq!(a.history.test_loss, b.history.test_loss);
}
