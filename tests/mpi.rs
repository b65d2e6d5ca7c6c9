//! MPI ranks (the `mpi` feature): the same seed gives byte-identical recordings for 1 and 2
//! ranks and 1 and 2 threads (trained networks too: a population chain, a recurrent one fed
//! analog rows and a recurrent layer stack), the same weights after training on 1 and 2 ranks
//! (a population chain and a stack without batch norm bit for bit, one with batch norm to
//! rounding), and bad input stops every rank
//! at once. The test builds the
//! MPI-enabled binary itself (into target/mpi) and runs it under `mpirun` on this machine
//! only. Where Open MPI is not installed it says so and passes, unless SNN_REQUIRE_MPI is set
//! (as CI sets it), in which case a missing `mpirun` fails it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::{history_bits, repo, snn};

fn mpirun_available() -> bool {
    let found = Command::new("mpirun").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("SNN_REQUIRE_MPI").is_some() {
        panic!("SNN_REQUIRE_MPI is set but mpirun is not installed (Debian: openmpi-bin libopenmpi-dev)");
    }
    found
}

/// Builds `snn` with the `mpi` feature; returns the binary.
fn mpi_binary() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("mpi");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--features", "mpi", "--bin", "snn", "--target-dir"])
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building snn with --features mpi failed");
    target.join("release").join("snn")
}

/// `mpirun -np RANKS BINARY ARGS...` on this machine only, with RAYON_NUM_THREADS=THREADS.
fn mpirun(binary: &Path, ranks: usize, threads: usize, args: &[&str]) -> Output {
    Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", &ranks.to_string()])
        .args(["--mca", "btl", "self,vader", "--bind-to", "none", "-x", "RAYON_NUM_THREADS"])
        .env("RAYON_NUM_THREADS", threads.to_string())
        .arg(binary)
        .args(args)
        .output()
        .expect("mpirun runs")
}

#[test]
fn ranks_and_threads_give_identical_recordings_and_weights_and_bad_input_stops_every_rank() {
    if !mpirun_available() {
        eprintln!("mpirun not found: the MPI test is skipped (install openmpi-bin libopenmpi-dev)");
        return;
    }
    let binary = mpi_binary();
    let dir = tempfile::tempdir().unwrap();
    // CUBA (zero delays: an exchange every step), parallel.ron (per-synapse delays, currents,
    // Poisson inputs into 2 x 5 blocks) and a small Brunel network (uniform delays of 15 steps:
    // an exchange every 15 steps).
    for (network, duration) in
        [("networks/cuba.ron", "200"), ("tests/data/parallel.ron", "60"), ("tests/data/brunel_small.ron", "60")]
    {
        let reference = dir.path().join("reference");
        let args = |out: &Path| {
            ["simulate", &repo(network), "--duration-ms", duration, "--no-figures", "--out", out.to_str().unwrap()]
                .map(String::from)
        };
        let o = snn(&args(&reference).each_ref().map(|s| s.as_str()), Some(1));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let expected = std::fs::read(reference.join("spikes.h5")).unwrap();
        for ranks in [1, 2] {
            for threads in [1, 2] {
                let out = dir.path().join(format!("r{ranks}t{threads}"));
                let o = mpirun(&binary, ranks, threads, &args(&out).each_ref().map(|s| s.as_str()));
                assert!(o.status.success(), "{network}, {ranks} ranks: {}", String::from_utf8_lossy(&o.stderr));
                let stdout = String::from_utf8_lossy(&o.stdout);
                assert_eq!(stdout.matches("wrote ").count(), 1, "rank 0 alone writes and reports: {stdout}");
                let got = std::fs::read(out.join("spikes.h5")).unwrap();
                assert!(got == expected, "{network}: {ranks} ranks x {threads} threads differ from one process");
            }
        }
    }

    // Training shared among ranks: the same weights, optimizer moments and history (but for
    // the wall-clock speed) as one process.
    let data = repo("tests/data/fashion-mnist");
    let train_args = |out: &Path| {
        let args = ["train", &repo("networks/fashion_snn.ron"), "--data", &data, "--epochs", "1"];
        let more = ["--train-samples", "384", "--test-samples", "100", "--out", out.to_str().unwrap()];
        args.into_iter().chain(more).map(String::from).collect::<Vec<_>>()
    };
    let read = |dir: &Path| {
        let mut c = snn::io::checkpoint::read(&dir.join("checkpoint.h5")).unwrap();
        let history = history_bits(&std::mem::take(&mut c.history));
        (c, history)
    };
    let one = dir.path().join("train1");
    let o = snn(&train_args(&one).iter().map(|s| s.as_str()).collect::<Vec<_>>(), Some(2));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for threads in [1, 2] {
        let shared = dir.path().join(format!("train2_{threads}"));
        let o = mpirun(&binary, 2, threads, &train_args(&shared).iter().map(|s| s.as_str()).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(read(&one) == read(&shared), "2 ranks x {threads} threads trained other weights than one process");
    }
    // The trained network simulated with a presented image: the same recording on 2 ranks.
    let simulate_trained = |out: &Path| {
        let args = ["simulate", &repo("networks/fashion_snn.ron"), "--stimulus", &repo("stimuli/fashion_image.ron")];
        let checkpoint = one.join("checkpoint.h5");
        let more = ["--checkpoint", checkpoint.to_str().unwrap(), "--no-figures", "--out", out.to_str().unwrap()];
        args.into_iter().chain(more).map(String::from).collect::<Vec<_>>()
    };
    let alone = dir.path().join("trained1");
    let o = snn(&simulate_trained(&alone).iter().map(|s| s.as_str()).collect::<Vec<_>>(), Some(1));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let prediction = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout).lines().find(|l| l.starts_with("predicted")).map(str::to_owned)
    };
    let expected = prediction(&o).expect("the class is reported");
    let shared = dir.path().join("trained2");
    let o = mpirun(&binary, 2, 1, &simulate_trained(&shared).iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(prediction(&o), Some(expected));
    let (a, b) = (std::fs::read(alone.join("spikes.h5")).unwrap(), std::fs::read(shared.join("spikes.h5")).unwrap());
    assert!(a == b, "a trained network on 2 ranks recorded other spikes than one process");

    // Row by row (analog input), a recurrent layer stack and a recurrent population chain,
    // each trained briefly: the same recording and class on 2 ranks as in one process.
    let rows = dir.path().join("rows.ron");
    std::fs::write(
        &rows,
        format!(
            "Stimulus(sources: [(name: \"row\", size: 28, kind: Image(data: {data:?}, index: 0, \
             encoder: Sequence(per_step: 28)))])"
        ),
    )
    .unwrap();
    for network in ["networks/fashion_rows.ron", "networks/fashion_rows_populations.ron"] {
        let trained = dir.path().join("rows_run");
        let path = repo(network);
        let more = ["--epochs", "1", "--train-samples", "256", "--test-samples", "64"];
        let args = [&["train", &path, "--data", &data, "--out", trained.to_str().unwrap()][..], &more].concat();
        let o = snn(&args, Some(2));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let checkpoint = trained.join("checkpoint.h5");
        let simulate = |out: &Path| {
            let args = ["simulate", &repo(network), "--stimulus", rows.to_str().unwrap(), "--checkpoint"];
            let more = [checkpoint.to_str().unwrap(), "--no-figures", "--out", out.to_str().unwrap()];
            args.into_iter().chain(more).map(String::from).collect::<Vec<_>>()
        };
        let alone = dir.path().join("rows1");
        let o = snn(&simulate(&alone).iter().map(|s| s.as_str()).collect::<Vec<_>>(), Some(1));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let expected = prediction(&o).expect("the class is reported");
        let shared = dir.path().join("rows2");
        let o = mpirun(&binary, 2, 1, &simulate(&shared).iter().map(|s| s.as_str()).collect::<Vec<_>>());
        assert!(o.status.success(), "{network}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(prediction(&o), Some(expected), "{network}");
        let (a, b) =
            (std::fs::read(alone.join("spikes.h5")).unwrap(), std::fs::read(shared.join("spikes.h5")).unwrap());
        assert!(a == b, "{network}: 2 ranks recorded other spikes than one process");
    }

    // Layer stacks share their batches too. Without batch norm (the recurrent rows model) the
    // ranks take the batch's fixed chunks in turn and every rank adds all the chunks' gradients
    // in chunk order, as one process does: the weights are the same bit for bit. With batch norm
    // (the DHN, and the spiking CNN over samples and steps) each rank takes half of every batch,
    // the statistics' sums are exchanged and the ranks' mean gradients are summed in rank order,
    // which rounds differently from one process's single product over the batch, so the weights
    // agree to rounding. Those two train with SGD here: Adam divides each gradient by its own
    // running size, so a gradient that is only rounding (a bias before batch norm, whose true
    // gradient is zero) moves its weight by the whole learning rate, in a direction the rounding
    // picks. 500 samples leave a last batch of 116, cut into chunks of 32 and 20. The
    // spiking CNN is compared after one batch: its millions of hard spikes per batch make the
    // rounding flip a few at the threshold from the second batch on, and the runs drift apart.
    let with_sgd = |network: &str| {
        let path = dir.path().join(Path::new(network).file_name().unwrap());
        let text = std::fs::read_to_string(repo(network)).unwrap();
        assert!(text.contains("Adam(lr: 1e-3)"), "{network} trains with Adam");
        std::fs::write(&path, text.replace("Adam(lr: 1e-3)", "Sgd(lr: 0.05)")).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let stacks = [
        (repo("networks/fashion_rows.ron"), "2", "500", 0.0),
        (with_sgd("networks/fashion_dhn.ron"), "2", "512", 1e-4),
        (with_sgd("networks/fashion_scnn.ron"), "1", "128", 1e-4),
    ];
    for (network, epochs, samples, bound) in &stacks {
        let stack_args = |out: &Path| {
            let args = ["train", network, "--data", &data, "--epochs", epochs, "--train-samples", samples];
            let more = ["--test-samples", "100", "--out", out.to_str().unwrap()];
            args.into_iter().chain(more).map(String::from).collect::<Vec<_>>()
        };
        let (one, two) = (dir.path().join("stack1"), dir.path().join("stack2"));
        let o = snn(&stack_args(&one).iter().map(|s| s.as_str()).collect::<Vec<_>>(), Some(2));
        assert!(o.status.success(), "{network}: {}", String::from_utf8_lossy(&o.stderr));
        let o = mpirun(&binary, 2, 1, &stack_args(&two).iter().map(|s| s.as_str()).collect::<Vec<_>>());
        assert!(o.status.success(), "{network}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout).matches("wrote ").count(), 3, "rank 0 alone writes");
        let ((a, _), (b, _)) = (read(&one), read(&two));
        let mut worst: f32 = 0.0;
        for ((name, param, wa), (_, _, wb)) in a.layers.iter().zip(&b.layers) {
            let scale = wa.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let diff = (wa - wb).iter().fold(0.0f32, |m, x| m.max(x.abs()));
            println!("{network} {name}.{param}: largest difference {diff:.2e} of largest weight {scale:.2e}");
            worst = worst.max(diff / scale.max(1e-6));
        }
        if *bound == 0.0 {
            assert_eq!(worst, 0.0, "{network}: 2 ranks' weights differ by {worst:.2e} of the largest");
        } else {
            assert!(worst > 0.0 && worst < *bound, "{network}: 2 ranks' weights differ by {worst:.2e} of the largest");
        }
        for ((name, x), (_, y)) in a.buffers.iter().zip(&b.buffers) {
            let diff = (x - y).amax();
            assert!(diff < bound * x.amax().max(1.0), "{network} {name}: running statistics differ by {diff:e}");
        }
        for (x, y) in a.history.train_loss.iter().zip(&b.history.train_loss) {
            assert!((x - y).abs() < 1e-3 * x.abs(), "{network}: training losses {x} and {y}");
        }
    }

    // Bad input: every rank stops with the message, quickly.
    let bad = dir.path().join("bad.ron");
    let cuba = std::fs::read_to_string(repo("networks/cuba.ron")).unwrap();
    std::fs::write(&bad, cuba.replace("tau_mem_ms: 20.0", "tau_mem_ms: -20.0")).unwrap();
    let started = Instant::now();
    let o = mpirun(&binary, 2, 1, &["simulate", bad.to_str().unwrap(), "--no-figures"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "bad input must fail: {stderr}");
    assert!(stderr.contains("tau_mem_ms") && stderr.contains("rank"), "{stderr}");
    assert!(started.elapsed().as_secs_f64() < 30.0, "took {:?}", started.elapsed());
}
