//! Helpers shared by the command-line tests.
#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `snn` binary, optionally with `RAYON_NUM_THREADS` set.
pub fn snn(args: &[&str], threads: Option<usize>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_snn"));
    cmd.args(args);
    if let Some(n) = threads {
        cmd.env("RAYON_NUM_THREADS", n.to_string());
    }
    cmd.output().expect("snn runs")
}

/// A path inside the repository.
pub fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path).to_string_lossy().into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `snn train NETWORK --data <shipped subset> --out OUT EXTRA...`, asserting success.
pub fn train_cli(network: &str, out: &Path, extra: &[&str], threads: Option<usize>) -> String {
    let network = repo(network);
    let data = repo("tests/data/fashion-mnist");
    let mut args = vec!["train", &network, "--data", &data, "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(&snn(&args, threads))
}

/// Tests that open HDF5 files while others spawn `snn` take turns. HDF5 opens files without close-on-exec, so a child `snn` spawned
/// by one test inherits (and keeps locked) a file another test has open in this process at that
/// moment; that test's next open of the file then fails to lock it.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A training history as runs that must agree are compared: every figure but the measured
/// speed, by its bits, so that the NaN spike rate of a readout that never fires (not measured)
/// equals itself.
pub fn history_bits(h: &snn::records::History) -> (Vec<String>, Vec<Vec<u64>>) {
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mut figures = vec![
        bits(&h.train_loss),
        bits(&h.train_accuracy),
        bits(&h.test_loss),
        bits(&h.test_accuracy),
        bits(&h.learning_rate),
    ];
    figures.extend(h.spike_rate.iter().chain(&h.grad_norm).map(|v| bits(v)));
    (h.layer_names.clone(), figures)
}
