//! `snn sweep`: trains one network with several surrogates and seeds, then tabulates and draws
//! how they compare: mean and standard deviation of the final test accuracy, the epochs needed
//! to reach 95% of it, and the share of dead hidden units (units whose output never changes on
//! the test set: a step unit stuck at 0 or 1, a ReLU never on, a spiking neuron that never
//! fires).
//!
//! Each run is an ordinary `snn train` run in `OUT/<surrogate>/seed<k>/`. A finished run leaves
//! `result.ron` there (its settings, every epoch's metrics and its dead share), which a later
//! sweep reads instead of training again; a run cut short continues from its checkpoint. So an
//! interrupted sweep goes on where it stopped, and a sweep folder kept without its checkpoints
//! (as benches/report/sweeps/ keeps them) can still be tabulated and extended.
//!
//! With `--delays` (the recall task) the sweep repeats for each delay D in `OUT/delay<D>/`, then
//! tabulates and draws the final accuracy against the delay per surrogate (`delays.md`,
//! `delays.csv`, `delays.png`), and the largest delay each surrogate solved to 95%.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::train::{self, TrainSummary};
use crate::error::{Error, Result};
use crate::io::atomic::write_atomically;
use crate::io::checkpoint;
use crate::models;
use crate::plot;
use crate::records::History;
use crate::records::sweep::{Row, RunResult, rows};
use crate::spec;
use crate::surrogate::Surrogate;
use crate::train::setup::{self, TrainOptions};

#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// What every run shares (network, epochs, data, cuts, progress); `out` is the sweep's
    /// folder, and each run's surrogate, seed and folder are set by the sweep.
    pub runs: TrainOptions,
    pub surrogates: Vec<Surrogate>,
    pub seeds: u32,
    /// Recall-task delays to sweep (empty: the network's own).
    pub delays: Vec<u32>,
    /// Tabulate only the runs already finished; train nothing.
    pub finished_only: bool,
}

/// What `snn sweep` reports.
#[derive(Debug, Clone)]
pub struct SweepSummary {
    pub name: String,
    pub rows: Vec<Row>,
    pub files: Vec<PathBuf>,
}

impl fmt::Display for SweepSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", markdown(&self.name, &self.rows))?;
        for file in &self.files {
            writeln!(f, "wrote {}", file.display())?;
        }
        Ok(())
    }
}

fn markdown(name: &str, rows: &[Row]) -> String {
    let mut s = format!(
        "{name}: final test accuracy over seeds (a diverged run: its last good epoch)\n\n| surrogate | runs | diverged | test accuracy (%) mean | std | epochs to 95% of final | dead hidden units (%) |\n|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.2} |",
            r.surrogate,
            r.runs,
            r.diverged,
            100.0 * r.mean,
            100.0 * r.std,
            r.epochs_to_95,
            100.0 * r.dead_share
        );
    }
    s
}

fn csv(rows: &[Row], results: &[RunResult]) -> (String, String) {
    let mut table =
        String::from("surrogate,runs,diverged,mean_test_accuracy,std_test_accuracy,epochs_to_95,dead_share\n");
    for r in rows {
        let (name, runs, diverged) = (&r.surrogate, r.runs, r.diverged);
        let _ = writeln!(table, "{name},{runs},{diverged},{},{},{},{}", r.mean, r.std, r.epochs_to_95, r.dead_share);
    }
    let mut runs = String::from("surrogate,seed,epoch,train_loss,train_accuracy,test_loss,test_accuracy\n");
    for r in results {
        let h = &r.history;
        for e in 0..h.epochs() {
            let _ = writeln!(
                runs,
                "{},{},{},{},{},{},{}",
                r.surrogate,
                r.seed,
                e + 1,
                h.train_loss[e],
                h.train_accuracy[e],
                h.test_loss[e],
                h.test_accuracy[e]
            );
        }
    }
    (table, runs)
}

/// Share of hidden units that are dead on the test set, for a trained checkpoint.
pub fn dead_share(checkpoint_path: &Path, data: Option<&Path>, test_samples: Option<u32>) -> Result<f64> {
    let saved = checkpoint::read(checkpoint_path)?;
    let (network, training) = saved.specs(checkpoint_path)?;
    // The test samples the run itself was scored on.
    let cut = test_samples.or(training.test_samples);
    let dataset = setup::test_data(data, &network, &training, checkpoint_path, cut)?;
    let net = models::trainer::from_checkpoint(&saved, checkpoint_path)?;
    let (_, activity) = models::trainer::evaluate(&net, &dataset.test, false, saved.seed);
    let sizes: Vec<f64> = net.activation_layers().iter().map(|&l| net.layers[l].output.size() as f64).collect();
    let dead: f64 = activity.dead_share.iter().zip(&sizes).map(|(d, n)| d * n).sum();
    Ok(dead / sizes.iter().sum::<f64>().max(1.0))
}

/// What a sweep keeps of a finished run (`result.ron` in the run's folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunRecord {
    /// The network file's text, as the run's checkpoint stores it.
    network_spec: String,
    surrogate: String,
    seed: u64,
    epochs: u32,
    /// The data folder and the cuts the run was trained and scored with.
    data: PathBuf,
    train_samples: Option<u32>,
    test_samples: Option<u32>,
    /// The recall task's delay, when the sweep sets it.
    #[serde(default)]
    delay: Option<i64>,
    dead_share: f64,
    history: History,
    /// Why the run stopped before its last epoch, when its loss or a gradient stopped being
    /// finite; its history ends at the last good epoch.
    #[serde(default)]
    diverged: Option<String>,
}

impl RunRecord {
    fn read(path: &Path) -> Option<Self> {
        ron::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }

    fn write(&self, path: &Path) -> Result<()> {
        let text = ron::ser::to_string_pretty(self, ron::ser::PrettyConfig::default())
            .map_err(|e| Error::Training(format!("{}: {e}", path.display())))?;
        write_atomically(path, |tmp| std::fs::write(tmp, text).map_err(|e| Error::write(path, e)))
    }

    /// Whether the record is of the run `wanted` describes (all but the results).
    fn is_run(&self, wanted: &RunRecord) -> bool {
        type Settings<'a> = (&'a str, &'a str, u64, u32, &'a Path, Option<u32>, Option<u32>, Option<i64>);
        fn settings(r: &RunRecord) -> Settings<'_> {
            (&r.network_spec, &r.surrogate, r.seed, r.epochs, &r.data, r.train_samples, r.test_samples, r.delay)
        }
        settings(self) == settings(wanted)
    }
}

/// How far a run's checkpoint got, for this network.
enum Progress {
    Done(Box<History>),
    /// Some epochs, fewer than asked for: the run resumes.
    Partial,
    Nothing,
}

fn progress(checkpoint_path: &Path, network_text: &str, epochs: u32) -> Progress {
    match checkpoint::read(checkpoint_path) {
        Ok(saved) if saved.network_spec == network_text && saved.epochs_done == epochs => {
            Progress::Done(Box::new(saved.history))
        }
        Ok(saved) if saved.network_spec == network_text && saved.epochs_done < epochs => Progress::Partial,
        _ => Progress::Nothing,
    }
}

/// The run `wanted` describes, in `dir`: its record if one is there, else its checkpoint's
/// history if the checkpoint is finished, else (unless `finished_only`, which gives None)
/// trained, continuing a checkpoint cut short; then its record is written.
fn reuse_or_train(
    base: &TrainOptions,
    surrogate: Surrogate,
    dir: &Path,
    wanted: RunRecord,
    finished_only: bool,
    say: impl Fn(&str),
) -> Result<Option<RunRecord>> {
    let record_path = dir.join("result.ron");
    if let Some(saved) = RunRecord::read(&record_path).filter(|saved| saved.is_run(&wanted)) {
        say(" already done");
        return Ok(Some(saved));
    }
    let checkpoint_path = dir.join("checkpoint.h5");
    let progress = progress(&checkpoint_path, &wanted.network_spec, wanted.epochs);
    let (history, diverged) = match progress {
        Progress::Done(history) => {
            say(" already trained");
            (*history, None)
        }
        Progress::Partial | Progress::Nothing if finished_only => {
            say(" not finished: left out");
            return Ok(None);
        }
        Progress::Partial | Progress::Nothing => {
            let resume = matches!(progress, Progress::Partial);
            say(if resume { " (continuing from its checkpoint)" } else { "" });
            if !resume {
                let _ = std::fs::remove_file(&checkpoint_path);
            }
            let trained = train::train(&TrainOptions {
                surrogate: Some(surrogate),
                epochs: Some(wanted.epochs),
                out: Some(dir.to_owned()),
                resume,
                seed: Some(wanted.seed),
                delay: wanted.delay,
                ..base.clone()
            });
            match trained {
                Ok(TrainSummary { history, .. }) => (history, None),
                // A diverged run is a result too: it scores its last good epoch, and is marked;
                // diverged in its first epoch, it has no checkpoint and no score.
                Err(Error::Diverged(why)) => {
                    say(&format!(" diverged: {why}"));
                    let history = checkpoint::read(&checkpoint_path).map(|saved| saved.history).unwrap_or_default();
                    (history, Some(why))
                }
                Err(e) => return Err(e),
            }
        }
    };
    let dead_share = match history.epochs() {
        0 => f64::NAN,
        _ => dead_share(&checkpoint_path, base.data.as_deref(), base.test_samples)?,
    };
    let record = RunRecord { history, dead_share, diverged, ..wanted };
    record.write(&record_path)?;
    Ok(Some(record))
}

pub fn sweep(opts: &SweepOptions) -> Result<SweepSummary> {
    if opts.seeds == 0 || opts.surrogates.is_empty() {
        return Err(Error::Invalid {
            path: "sweep".into(),
            problems: vec!["--seeds and --surrogates: need at least one seed and one surrogate".into()],
        });
    }
    let base = &opts.runs;
    let (network, _) = spec::load_network(&base.network)?;
    let out = base.out.clone().unwrap_or_else(|| Path::new("outputs").join(format!("sweep_{}", network.name)));
    if opts.delays.is_empty() {
        return sweep_in(opts, &out, None);
    }
    let mut by_delay = Vec::new();
    let mut files = Vec::new();
    for &delay in &opts.delays {
        let summary = sweep_in(opts, &out.join(format!("delay{delay}")), Some(delay))?;
        files.extend(summary.files);
        by_delay.push((delay, summary.rows));
    }
    let (table, csv) = delay_tables(&network.name, &by_delay);
    for (name, text) in [("delays.md", table), ("delays.csv", csv)] {
        let path = out.join(name);
        write_atomically(&path, |tmp| std::fs::write(tmp, &text).map_err(|e| Error::write(&path, e)))?;
        files.push(path);
    }
    let figure = out.join("delays.png");
    plot::delays(&by_delay, &network.name, &figure)?;
    files.push(figure);
    let rows = by_delay.pop().map(|(_, rows)| rows).unwrap_or_default();
    Ok(SweepSummary {
        name: format!("{} (delays {:?}; the table: the longest delay)", network.name, opts.delays),
        rows,
        files,
    })
}

/// Accuracy against delay, a row per surrogate (mean +- std over seeds; a diverged run counts
/// with its last good epoch, and the cell says how many diverged), with the largest delay
/// solved (mean final accuracy >= 95%, whatever the shorter ones did): as markdown and CSV.
fn delay_tables(name: &str, by_delay: &[(u32, Vec<Row>)]) -> (String, String) {
    let surrogates: Vec<&str> =
        by_delay.first().map(|(_, rows)| rows.iter().map(|r| r.surrogate.as_str()).collect()).unwrap_or_default();
    let mut md = format!("{name}: final test accuracy (%) against the delay, mean +- std over seeds\n\n| surrogate |");
    let mut csv = String::from("surrogate,delay,runs,mean_test_accuracy,std_test_accuracy,diverged\n");
    for (d, _) in by_delay {
        let _ = write!(md, " D = {d} |");
    }
    md += " largest D solved (>= 95%) |\n|---|";
    md += &"---|".repeat(by_delay.len() + 1);
    md += "\n";
    for s in surrogates {
        let _ = write!(md, "| {s} |");
        let mut largest = None;
        for (d, rows) in by_delay {
            match rows.iter().find(|r| r.surrogate == s) {
                Some(r) => {
                    let diverged = match r.diverged {
                        0 => String::new(),
                        k => format!(", {k} diverged"),
                    };
                    let _ = write!(md, " {:.1} +- {:.1} ({}{diverged}) |", 100.0 * r.mean, 100.0 * r.std, r.runs);
                    let _ = writeln!(csv, "{s},{d},{},{},{},{}", r.runs, r.mean, r.std, r.diverged);
                    if r.mean >= 0.95 {
                        largest = Some(*d);
                    }
                }
                None => md += " - |",
            }
        }
        let _ = writeln!(md, " {} |", largest.map_or("none".to_string(), |d| d.to_string()));
    }
    (md, csv)
}

/// The sweep of one configuration (the network's, or with the recall task's `delay`) in `out`.
fn sweep_in(opts: &SweepOptions, out: &Path, delay: Option<u32>) -> Result<SweepSummary> {
    let base = &opts.runs;
    let (network, text) = spec::load_network(&base.network)?;
    let training = spec::training_section(&network, &base.network)?;
    let epochs = base.epochs.unwrap_or(training.epochs);
    let data = setup::data_folder(base.data.as_deref(), &training, &base.network);
    let out = out.to_owned();
    let mut results = Vec::new();
    let total = opts.surrogates.len() * opts.seeds as usize;
    // Seed by seed, so that a sweep stopped early has every surrogate with as many seeds as
    // it got to.
    for k in 0..opts.seeds as u64 {
        for (s, surrogate) in opts.surrogates.iter().enumerate() {
            let seed = network.seed + k;
            let dir = out.join(surrogate.name()).join(format!("seed{seed}"));
            let run = k as usize * opts.surrogates.len() + s + 1;
            let wanted = RunRecord {
                network_spec: text.clone(),
                surrogate: surrogate.name().to_owned(),
                seed,
                epochs,
                data: data.clone(),
                train_samples: base.train_samples,
                test_samples: base.test_samples,
                delay: delay.map(i64::from),
                dead_share: f64::NAN,
                history: History::default(),
                diverged: None,
            };
            let at = delay.map(|d| format!(" delay {d}")).unwrap_or_default();
            let say = |what: &str| {
                if base.progress {
                    eprintln!("run {run}/{total}:{at} {} seed {seed}{what}", surrogate.name());
                }
            };
            let Some(record) = reuse_or_train(base, *surrogate, &dir, wanted, opts.finished_only, say)? else {
                continue;
            };
            results.push(RunResult {
                surrogate: record.surrogate,
                seed,
                history: record.history,
                dead_share: record.dead_share,
                diverged: record.diverged.is_some(),
            });
        }
    }
    if results.is_empty() {
        return Err(Error::Training(format!("{}: no finished runs to tabulate", out.display())));
    }
    // Tables list the runs surrogate by surrogate, in the order asked for.
    let position = |name: &str| opts.surrogates.iter().position(|s| s.name() == name);
    results.sort_by_key(|r| (position(&r.surrogate), r.seed));
    let rows = rows(&results, &opts.surrogates);
    std::fs::create_dir_all(&out).map_err(|e| Error::write(&out, e))?;
    let (table, runs) = csv(&rows, &results);
    let mut files = Vec::new();
    for (name, text) in [("results.md", markdown(&network.name, &rows)), ("results.csv", table), ("runs.csv", runs)] {
        let path = out.join(name);
        write_atomically(&path, |tmp| std::fs::write(tmp, &text).map_err(|e| Error::write(&path, e)))?;
        files.push(path);
    }
    let figure = out.join("sweep.png");
    plot::sweep(&rows, &results, &network.name, &figure)?;
    files.push(figure);
    Ok(SweepSummary { name: network.name, rows, files })
}
