//! What a training run starts from: the command line's options, the network with its
//! overrides applied, and the data set cut to the requested sizes and checked against the
//! model's input.

use std::path::{Path, PathBuf};

use crate::data::encode::Encoder;
use crate::data::idx::{self, Dataset, Split};
use crate::data::tasks;
use crate::error::{Error, Result};
use crate::spec::{self, Network, Training};
use crate::surrogate::Surrogate;

#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub network: PathBuf,
    pub surrogate: Option<Surrogate>,
    pub epochs: Option<u32>,
    pub data: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub resume: bool,
    pub seed: Option<u64>,
    pub train_samples: Option<u32>,
    pub test_samples: Option<u32>,
    pub progress: bool,
    /// The recall task's delay in steps, replacing the network's (`--delay`).
    pub delay: Option<i64>,
    /// How back-propagation through time holds the sequence, replacing the network's (`--bptt`).
    pub bptt: Option<crate::spec::Bptt>,
}

/// Where the data comes from: `--data`, else the spec's `data` (relative to the network file),
/// else Debian's Fashion-MNIST when installed, else the shipped subset.
pub fn data_folder(cli: Option<&Path>, training: &Training, network_path: &Path) -> PathBuf {
    if let Some(dir) = cli {
        return dir.to_owned();
    }
    if let Some(rel) = &training.data {
        return network_path.parent().unwrap_or(Path::new(".")).join(rel);
    }
    idx::default_folder()
}

/// The data for evaluating a checkpoint at `checkpoint_path`: its test split, cut to
/// `test_samples` (None: all of it, whatever the run was cut to).
pub fn test_data(
    data: Option<&Path>,
    network: &Network,
    training: &Training,
    checkpoint_path: &Path,
    test_samples: Option<u32>,
) -> Result<Dataset> {
    let dir = data_folder(data, training, checkpoint_path);
    load_data(&dir, network, &Training { test_samples: None, ..training.clone() }, None, test_samples)
}

/// Loads the data set, cut to the requested sizes, and checks it fits the network's input.
pub fn load_data(
    dir: &Path,
    network: &Network,
    training: &Training,
    train_samples: Option<u32>,
    test_samples: Option<u32>,
) -> Result<Dataset> {
    let encoder = training.encoder;
    let mut data = match encoder {
        Encoder::Recall { classes, .. } => {
            let train = train_samples.or(training.train_samples).map_or(tasks::RECALL_TRAIN_SAMPLES, |n| n as usize);
            let test = test_samples.or(training.test_samples).map_or(tasks::RECALL_TEST_SAMPLES, |n| n as usize);
            tasks::recall(classes, train, test)
        }
        _ => idx::load_dir(dir)?,
    };
    let pixels = data.train.images.pixels_per_image();
    let input = &network.inputs[0];
    if encoder.inputs(pixels) != input.size as usize {
        return Err(Error::Data {
            path: dir.to_owned(),
            message: format!(
                "the encoder feeds {}, but the input population {:?} has size {}",
                encoder.describe_input(pixels),
                input.name,
                input.size
            ),
        });
    }
    if let Some(steps) = encoder.sequence_steps(pixels)
        && steps != training.steps as usize
    {
        return Err(Error::Data {
            path: dir.to_owned(),
            message: format!(
                "{} takes {steps} steps, but training.steps is {}",
                encoder.describe_sequence(pixels),
                training.steps
            ),
        });
    }
    let cut = |split: &mut Split, n: Option<u32>| {
        if let Some(n) = n.map(|n| (n as usize).min(split.len())) {
            split.labels.truncate(n);
            split.images.count = n;
            split.images.pixels.truncate(n * pixels);
        }
    };
    cut(&mut data.train, train_samples.or(training.train_samples));
    cut(&mut data.test, test_samples.or(training.test_samples));
    if data.train.is_empty() || data.test.is_empty() {
        return Err(Error::Data { path: dir.to_owned(), message: "no training or no test samples left".into() });
    }
    Ok(data)
}

/// Loads a training network and applies the command-line overrides.
pub fn load_training(opts: &TrainOptions) -> Result<(Network, String, Training)> {
    let (network, text) = spec::load_network(&opts.network)?;
    let mut training = spec::training_section(&network, &opts.network)?;
    // Naming the network's own kind keeps the network's parameters for it (a sweep's `htaf` row
    // is the network as written); another kind comes with its usual parameters.
    if let Some(s) = opts.surrogate.filter(|s| s.name() != training.surrogate.name()) {
        training.surrogate = s;
    }
    if let Some(e) = opts.epochs {
        if e == 0 {
            return Err(Error::Invalid {
                path: "--epochs".into(),
                problems: vec!["--epochs: must be at least 1".into()],
            });
        }
        training.epochs = e;
    }
    if let Some(delay) = opts.delay {
        set_delay(&mut training, delay)?;
    }
    if let Some(bptt) = opts.bptt {
        training.bptt = bptt;
    }
    Ok((network, text, training))
}

/// Sets the recall task's delay, and the steps of a trial with it.
fn set_delay(training: &mut Training, delay: i64) -> Result<()> {
    let refuse = |why: String| Error::Invalid { path: "--delay".into(), problems: vec![format!("--delay: {why}")] };
    let Encoder::Recall { delay: ref mut d, cue_steps, recall_steps, .. } = training.encoder else {
        return Err(refuse(format!(
            "only the recall task has a delay; this network's encoder is {:?}",
            training.encoder
        )));
    };
    if !(0..=i64::from(u32::MAX) - i64::from(cue_steps) - i64::from(recall_steps)).contains(&delay) {
        return Err(refuse(format!("must be a number of steps >= 0, got {delay}")));
    }
    *d = delay as u32;
    training.steps = cue_steps + delay as u32 + recall_steps;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naming_the_networks_own_surrogate_keeps_its_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let network = dir.path().join("net.ron");
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/networks/fashion_snn.ron")).unwrap();
        let custom = text.replace("surrogate: Htaf(alpha: 4.0, beta: 2.0)", "surrogate: Htaf(alpha: 3.0, beta: 1.5)");
        assert_ne!(custom, text, "the shipped network names its surrogate as this test expects");
        std::fs::write(&network, custom).unwrap();
        let surrogate_with = |name: &str| {
            let opts = TrainOptions {
                network: network.clone(),
                surrogate: Some(name.parse().unwrap()),
                epochs: None,
                data: None,
                out: None,
                resume: false,
                seed: None,
                train_samples: None,
                test_samples: None,
                progress: false,
                delay: None,
                bptt: None,
            };
            load_training(&opts).unwrap().2.surrogate
        };
        assert_eq!(surrogate_with("htaf"), Surrogate::Htaf { alpha: 3.0, beta: 1.5 });
        assert_eq!(surrogate_with("arctan"), "arctan".parse().unwrap());
    }
}
