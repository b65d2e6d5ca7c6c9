//! The `snn` command line: parse arguments, call the library, map errors to an exit code.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use snn::ranks::Exchange;
use snn::simulate::{SimulateOptions, simulate_shared};
use snn::spec::{FileKind, validate_file};
use snn::train::setup::TrainOptions;

#[derive(Parser)]
#[command(
    name = "snn",
    version,
    about = "Spiking neural network simulator: RON networks, event-driven LIF engine, HDF5 recordings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a network; writes spikes.h5 and figures into the output folder.
    Simulate {
        /// Network description (RON).
        network: PathBuf,
        /// Stimulus file (RON); overrides the one the network names.
        #[arg(long)]
        stimulus: Option<PathBuf>,
        /// Biological time to simulate, in ms (default: the network's duration_ms).
        #[arg(long, allow_negative_numbers = true)]
        duration_ms: Option<f64>,
        /// Seed of every random stream (default: the network's seed).
        #[arg(long)]
        seed: Option<u64>,
        /// Output folder (default: outputs/<network name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Skip the figures (raster, traces).
        #[arg(long)]
        no_figures: bool,
        /// Load trained weights from this checkpoint (`snn train`); the class the readout votes
        /// for is printed and put in the raster's title.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Train a network with a `training` section by BPTT; writes checkpoint.h5, history.h5 and
    /// training_curves.png into the output folder after every epoch.
    Train {
        /// Network description (RON) with `inputs` and `training`.
        network: PathBuf,
        /// Surrogate gradient (default: the network's): htaf, sigmoid, fast-sigmoid, arctan,
        /// triangle, ste; the network's own kind keeps the network's parameters, another kind
        /// comes with its usual ones.
        #[arg(long)]
        surrogate: Option<snn::surrogate::Surrogate>,
        /// Continue from the output folder's checkpoint.
        #[arg(long)]
        resume: bool,
        /// Seed of every random stream (default: the network's).
        #[arg(long)]
        seed: Option<u64>,
        /// Delay of the recall task in steps (default: the network's); the trial's steps follow.
        #[arg(long, allow_negative_numbers = true)]
        delay: Option<i64>,
        /// Back-propagation through time: full, recompute:K (exact, the state kept every K
        /// steps), truncated:W (the gradient reaches W steps back at most), or eprop (online,
        /// eligibility traces; one recurrent layer).
        #[arg(long)]
        bptt: Option<snn::spec::Bptt>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Evaluate a training checkpoint on the test set: accuracy and confusion matrix figure;
    /// for concept models also soft vs hard concepts and concept figures, for binary models
    /// bit-packed vs float inference.
    Eval {
        checkpoint: PathBuf,
        /// Folder with the IDX files (default: as for training).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where to draw confusion.png (default: beside the checkpoint).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Train a network with several surrogates and seeds; write a results table (markdown,
    /// CSV) and a figure comparing them.
    Sweep {
        /// Network description (RON) with `inputs` and `training`.
        network: PathBuf,
        /// Comma-separated surrogate names (the network's own kind with the network's
        /// parameters, the others with their usual ones).
        #[arg(long, value_delimiter = ',', default_value = "htaf,sigmoid,fast-sigmoid,arctan,triangle,ste")]
        surrogates: Vec<snn::surrogate::Surrogate>,
        /// Seeds per surrogate (the network's seed, seed + 1, ...).
        #[arg(long, default_value_t = 3)]
        seeds: u32,
        /// Comma-separated delays of the recall task: the sweep repeats for each, and draws
        /// accuracy against delay.
        #[arg(long, value_delimiter = ',')]
        delays: Vec<u32>,
        /// Train nothing: tabulate the runs already finished in the output folder (a sweep
        /// still running, or stopped early).
        #[arg(long)]
        finished_only: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Explain one test image's class: by the concepts of a concept model (ICBM) that fired, or
    /// by the spikes of a spiking layer stack (recorded to HDF5, drawn as a raster).
    Explain {
        checkpoint: PathBuf,
        /// Index of the image in the test set.
        #[arg(long)]
        index: usize,
        /// Folder with the IDX files (default: as for training).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where to write explain_INDEX.png, or spikes_INDEX.h5 and its figures (default: beside
        /// the checkpoint).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a network or stimulus file without running it.
    Validate {
        /// Network or stimulus file (RON).
        file: PathBuf,
    },
    /// Draw a figure.
    Plot {
        #[command(subcommand)]
        figure: Figure,
    },
    /// NIR graphs (snnTorch, Norse, SpikingJelly, hardware tool chains): run, import, export.
    Nir {
        #[command(subcommand)]
        action: NirAction,
    },
}

#[derive(Subcommand)]
enum NirAction {
    /// Run a NIR graph on a spike tensor (dataset `input`, T x B x input shape); writes every
    /// stateful node's `spk_<node>` and `mem_<node>` (membrane after the step's reset) and
    /// `output`, each T x B x the node's shape.
    Run {
        /// The NIR file (nir.write's HDF5 layout).
        graph: PathBuf,
        /// Time step in seconds; NIR stores none (snnTorch exports with 1e-4).
        #[arg(long)]
        dt: f64,
        /// HDF5 file with dataset `input`.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the results (HDF5).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a trained layer stack (checkpoint) as a NIR graph: batch norm folded into the
    /// weights, max pooling of spikes as SumPool2d + Threshold; what NIR cannot say is named.
    Export {
        checkpoint: PathBuf,
        /// The NIR file to write.
        #[arg(long)]
        out: PathBuf,
        /// Time step in seconds the taus are written for (snnTorch's importer assumes 1e-4).
        #[arg(long, default_value_t = 1e-4)]
        dt: f64,
    },
    /// Read a NIR chain graph (Affine/Linear/Conv2d/pooling/Flatten + LIF/CubaLIF/LI) as a layer
    /// stack: writes network.ron and checkpoint.h5, to evaluate, train further or export.
    Import {
        /// The NIR file.
        graph: PathBuf,
        /// Time step in seconds the graph was exported for (snnTorch: 1e-4).
        #[arg(long)]
        dt: f64,
        /// Time steps per sample in the training section written.
        #[arg(long, default_value_t = 25)]
        steps: u32,
        /// Output folder (default: outputs/<file name>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// What `train` and `sweep` share: how long, on which data, cut how, written where.
#[derive(Args)]
struct RunArgs {
    /// Number of epochs in all (default: the network's).
    #[arg(long)]
    epochs: Option<u32>,
    /// Folder with the four MNIST-format IDX files (default: the network's, else
    /// /usr/share/datasets/fashion-mnist, else the shipped subset).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder (default: outputs/<network name>; for sweeps outputs/sweep_<network name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use only the first N training samples.
    #[arg(long)]
    train_samples: Option<u32>,
    /// Use only the first N test samples.
    #[arg(long)]
    test_samples: Option<u32>,
}

impl RunArgs {
    fn options(self) -> TrainOptions {
        TrainOptions {
            epochs: self.epochs,
            data: self.data,
            out: self.out,
            train_samples: self.train_samples,
            test_samples: self.test_samples,
            progress: std::io::stderr().is_terminal(),
            ..TrainOptions::default()
        }
    }
}

#[derive(Subcommand)]
enum Figure {
    /// Norm of the loss gradient per surrogate: per time step (hidden membrane of a spiking
    /// network) or per layer (layered models), at initialisation, for a checkpoint, or after
    /// each surrogate's own training in a sweep; data as CSV beside.
    GradientDecay {
        /// Training network (RON).
        network: PathBuf,
        /// Use this checkpoint's weights instead of fresh ones.
        #[arg(long, conflicts_with = "sweep")]
        checkpoint: Option<PathBuf>,
        /// Use each surrogate's trained weights from this `snn sweep` output folder.
        #[arg(long)]
        sweep: Option<PathBuf>,
        /// Folder with the IDX files (default: as for training).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Test samples averaged over.
        #[arg(long, default_value_t = 64)]
        samples: usize,
        /// Output folder.
        #[arg(long, default_value = "outputs/figures")]
        out: PathBuf,
    },
    /// Every surrogate gradient: primitive, derivative (linear and log axis); data as CSV beside.
    Surrogates {
        /// Output folder.
        #[arg(long, default_value = "outputs/figures")]
        out: PathBuf,
    },
}

fn run(cli: Cli, ranks: &dyn Exchange) -> snn::Result<()> {
    if ranks.size() > 1 && !matches!(cli.command, Command::Simulate { .. } | Command::Train { .. }) {
        return Err(snn::Error::Simulation(format!(
            "only `simulate` and `train` run on several ranks so far; this was started on {}",
            ranks.size()
        )));
    }
    match cli.command {
        Command::Simulate { network, stimulus, duration_ms, seed, out, no_figures, checkpoint } => {
            let opts = SimulateOptions {
                network,
                stimulus,
                duration_ms,
                seed,
                out,
                figures: !no_figures,
                progress: std::io::stderr().is_terminal(),
                checkpoint,
            };
            let summary = simulate_shared(&opts, ranks)?;
            if ranks.rank() == 0 {
                say(&summary.to_string());
            }
        }
        Command::Validate { file } => match validate_file(&file)? {
            FileKind::Stimulus => say(&format!("{}: valid stimulus\n", file.display())),
            FileKind::Network(model) => {
                let cost = match model {
                    Some(model) => format!(": {}", snn::simulate::check_memory(&model, None, &file)?),
                    None => format!(": {}", snn::commands::train::training_memory(&file)?),
                };
                say(&format!("{}: valid network{cost}\n", file.display()));
            }
        },
        Command::Train { network, surrogate, resume, seed, delay, bptt, run } => {
            let opts = TrainOptions { network, surrogate, resume, seed, delay, bptt, ..run.options() };
            let summary = snn::commands::train::train_shared(&opts, ranks)?;
            if ranks.rank() == 0 {
                say(&summary.to_string());
            }
        }
        Command::Eval { checkpoint, data, out } => {
            say(&snn::commands::train::eval(&checkpoint, data.as_deref(), out.as_deref())?.to_string());
        }
        Command::Sweep { network, surrogates, seeds, delays, finished_only, run } => {
            let runs = TrainOptions { network, ..run.options() };
            let opts = snn::commands::sweep::SweepOptions { runs, surrogates, seeds, delays, finished_only };
            say(&snn::commands::sweep::sweep(&opts)?.to_string());
        }
        Command::Explain { checkpoint, index, data, out } => {
            say(&snn::commands::train::explain(&checkpoint, index, data.as_deref(), out.as_deref())?.to_string());
        }
        Command::Plot { figure: Figure::GradientDecay { network, checkpoint, sweep, data, samples, out } } => {
            use snn::train::gradient_decay::{Weights, gradient_decay};
            let weights = match (&checkpoint, &sweep) {
                (Some(c), _) => Weights::Checkpoint(c),
                (None, Some(s)) => Weights::Sweep(s),
                (None, None) => Weights::Initial,
            };
            let decay = gradient_decay(&network, weights, data.as_deref(), samples)?;
            std::fs::create_dir_all(&out)
                .map_err(|e| snn::Error::Write { path: out.clone(), message: e.to_string() })?;
            let name = network.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            for file in snn::plot::gradient_decay(&decay, &name, &out)? {
                say(&format!("wrote {}\n", file.display()));
            }
        }
        Command::Nir { action: NirAction::Run { graph, dt, input, out } } => {
            say(&snn::commands::nir::run(&graph, dt, &input, &out)?.to_string());
        }
        Command::Nir { action: NirAction::Import { graph, dt, steps, out } } => {
            let stem = graph.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let out = out.unwrap_or_else(|| PathBuf::from("outputs").join(stem));
            say(&snn::commands::nir::import(&graph, dt, steps, &out)?.to_string());
        }
        Command::Nir { action: NirAction::Export { checkpoint, out, dt } } => {
            say(&snn::commands::nir::export(&checkpoint, &out, dt)?.to_string());
        }
        Command::Plot { figure: Figure::Surrogates { out } } => {
            std::fs::create_dir_all(&out)
                .map_err(|e| snn::Error::Write { path: out.clone(), message: e.to_string() })?;
            for file in snn::plot::surrogates(&snn::surrogate::Surrogate::all(), &out)? {
                say(&format!("wrote {}\n", file.display()));
            }
        }
    }
    Ok(())
}

/// Prints to stdout; a closed pipe (`snn ... | head`) is not an error worth a panic.
fn say(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn main() -> ExitCode {
    snn::process::set_up();
    // Started by mpirun (with the `mpi` feature), the ranks share the work; else one process.
    #[cfg(feature = "mpi")]
    let universe = mpi::initialize();
    #[cfg(feature = "mpi")]
    let ranks: Box<dyn Exchange> = match &universe {
        Some(universe) => Box::new(snn::ranks::Mpi::new(universe.world())),
        None => Box::new(snn::ranks::Alone),
    };
    #[cfg(not(feature = "mpi"))]
    let ranks: Box<dyn Exchange> = Box::new(snn::ranks::Alone);
    match run(Cli::parse(), &*ranks) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The library's messages already carry their causes.
            if ranks.size() > 1 {
                eprintln!("error (rank {} of {}): {e}", ranks.rank(), ranks.size());
                // Every rank meets bad input alike; a rank failing alone must not leave the
                // others waiting in an exchange.
                ranks.abort(1);
            }
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
