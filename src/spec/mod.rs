//! RON specifications, loaded in two stages: serde types that mirror the files
//! (`deny_unknown_fields`, so a typo is an error), then [`validate`] checks that report every
//! semantic problem with its field path. A [`Model`] exists only once both stages passed.

pub mod common;
pub mod layers;
pub mod network;
pub mod stimulus;
pub mod training;
pub mod validate;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use common::{Connect, Distribution, Projection, Synapse};
pub use layers::{Layer, Learnable, Recurrence, Shape, SpikeReset, Weights};
pub use network::{Network, Neuron, Population, Record, Reset, SpikeRecord, TraceRecord};
pub use stimulus::{Current, PoissonInput, Source, SourceKind, Stimulus};
pub use training::{Bptt, InputPopulation, Optimizer, Readout, Schedule, Training};

use crate::error::{Error, Result};

/// A network together with the stimulus that drives it, both checked.
#[derive(Debug, Clone)]
pub struct Model {
    pub network: Network,
    pub network_path: PathBuf,
    /// The network file's text, stored in recordings so a run can be reproduced from them.
    pub network_text: String,
    pub stimulus: Stimulus,
    pub stimulus_path: Option<PathBuf>,
    pub stimulus_text: String,
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })
}

/// Parses RON text, turning ron's error into one that names file, line and column. Optional
/// fields take their value directly (`init_v: Uniform(..)`, no `Some(..)` needed).
pub fn parse_ron<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME).from_str(text).map_err(
        |e: ron::error::SpannedError| Error::Syntax {
            path: path.to_owned(),
            line: e.span.start.line,
            column: e.span.start.col,
            message: e.code.to_string(),
        },
    )
}

fn invalid(path: &Path, problems: Vec<String>) -> Result<()> {
    if problems.is_empty() { Ok(()) } else { Err(Error::Invalid { path: path.to_owned(), problems }) }
}

/// Loads and checks a network file on its own (no stimulus): what training needs.
pub fn load_network(path: &Path) -> Result<(Network, String)> {
    let text = read_text(path)?;
    let network: Network = parse_ron(&text, path)?;
    let (_, problems) = validate::check_network(&network);
    invalid(path, problems)?;
    Ok((network, text))
}

/// The training section of a network, or an error naming the file.
pub fn training_section(network: &Network, path: &Path) -> Result<Training> {
    network.training.clone().ok_or_else(|| Error::Invalid {
        path: path.to_owned(),
        problems: vec!["training: the network has no training section".into()],
    })
}

/// Loads and checks a network, then its stimulus: `stimulus_override` if given, else the one the
/// network names (relative to the network file), else none.
pub fn load_model(network_path: &Path, stimulus_override: Option<&Path>) -> Result<Model> {
    let network_text = read_text(network_path)?;
    let network: Network = parse_ron(&network_text, network_path)?;
    let stimulus_path = match (stimulus_override, &network.stimulus) {
        (Some(p), _) => Some(p.to_owned()),
        (None, Some(rel)) => Some(network_path.parent().unwrap_or(Path::new(".")).join(rel)),
        (None, None) => None,
    };
    // The network is checked before the stimulus is read, so its problems come first.
    let (table, problems) = validate::check_network(&network);
    invalid(network_path, problems)?;
    if network.is_layered() {
        return Err(Error::Invalid {
            path: network_path.to_owned(),
            problems: vec![
                "layers: the simulator runs a layer stack once it is trained: give its weights with --checkpoint \
                 CHECKPOINT.h5 (Dense and spiking layers), or record a trained stack's spikes for one image with \
                 snn explain CHECKPOINT --index N"
                    .into(),
            ],
        });
    }
    if stimulus_path.is_none() && !network.inputs.is_empty() {
        let names: Vec<&str> = network.inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(Error::Invalid {
            path: network_path.to_owned(),
            problems: vec![format!(
                "inputs: {names:?} must be fed by a stimulus (--stimulus FILE) with sources of those names"
            )],
        });
    }
    let stimulus = match &stimulus_path {
        Some(path) => Some((read_text(path)?, path.clone())),
        None => None,
    };
    check_model(network, network_text, network_path, &table, stimulus)
}

/// The model of a trained layer stack compiled to populations (`snn simulate STACK.ron
/// --checkpoint`), with its stimulus (`stimulus_override`, else the one the stack's file names);
/// `network_text` is the stack's file, which the recording keeps.
pub fn model_for_trained_layers(
    network: Network,
    network_text: String,
    network_path: &Path,
    stimulus_override: Option<&Path>,
) -> Result<Model> {
    let (table, problems) = validate::check_network(&network);
    if !problems.is_empty() {
        return Err(Error::Training(format!("the compiled stack is not a valid network: {}", problems.join("; "))));
    }
    let stimulus_path = match (stimulus_override, &network.stimulus) {
        (Some(p), _) => p.to_owned(),
        (None, Some(rel)) => network_path.parent().unwrap_or(Path::new(".")).join(rel),
        (None, None) => {
            return Err(Error::Invalid {
                path: network_path.to_owned(),
                problems: vec![format!(
                    "inputs: {:?} must be fed by a stimulus (--stimulus FILE) with a source of that name, e.g. an \
                     Image source encoded as in training",
                    network.inputs.first().map_or("", |i| i.name.as_str())
                )],
            });
        }
    };
    let stimulus_text = read_text(&stimulus_path)?;
    let stimulus: Stimulus = parse_ron(&stimulus_text, &stimulus_path)?;
    invalid(&stimulus_path, validate::check_stimulus(&stimulus, &network, &table))?;
    Ok(Model {
        network,
        network_path: network_path.to_owned(),
        network_text,
        stimulus,
        stimulus_path: Some(stimulus_path),
        stimulus_text,
    })
}

/// Builds a checked model from texts; `path`s only name the texts in error messages.
pub fn model_from_text(network_text: &str, stimulus_text: Option<&str>) -> Result<Model> {
    let network_path = Path::new("<network>");
    let network: Network = parse_ron(network_text, network_path)?;
    let (table, problems) = validate::check_network(&network);
    invalid(network_path, problems)?;
    let stimulus = stimulus_text.map(|t| (t.to_owned(), PathBuf::from("<stimulus>")));
    check_model(network, network_text.to_owned(), network_path, &table, stimulus)
}

fn check_model(
    network: Network,
    network_text: String,
    network_path: &Path,
    table: &validate::PopulationTable,
    stimulus: Option<(String, PathBuf)>,
) -> Result<Model> {
    let (stimulus, stimulus_text, stimulus_path) = match stimulus {
        Some((text, path)) => {
            let stim: Stimulus = parse_ron(&text, &path)?;
            invalid(&path, validate::check_stimulus(&stim, &network, table))?;
            (stim, text, Some(path))
        }
        None => (Stimulus::default(), String::new(), None),
    };
    Ok(Model { network, network_path: network_path.to_owned(), network_text, stimulus, stimulus_path, stimulus_text })
}

/// What kind of file `snn validate` was handed.
#[derive(Debug, Clone)]
pub enum FileKind {
    /// A network, with the model it simulates when it is one (not a model trained from data).
    Network(Option<Box<Model>>),
    Stimulus,
}

/// The first identifier of a RON text (skipping whitespace and comments), which names the
/// top-level struct when the author wrote it.
fn leading_identifier(text: &str) -> Option<&str> {
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else if rest.starts_with("#!") {
            rest = rest.split_once('\n').map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// Checks one file without running it. A network is checked together with the stimulus it names;
/// a stimulus file on its own can only be checked for its internal consistency.
pub fn validate_file(path: &Path) -> Result<FileKind> {
    let text = read_text(path)?;
    if leading_identifier(&text) == Some("Stimulus") {
        let stim: Stimulus = parse_ron(&text, path)?;
        invalid(path, validate::check_stimulus_alone(&stim))?;
        Ok(FileKind::Stimulus)
    } else {
        let (network, _) = load_network(path)?;
        // A network trained from data needs no stimulus; any other is checked with its own.
        if network.training.is_none() || network.stimulus.is_some() {
            Ok(FileKind::Network(Some(Box::new(load_model(path, None)?))))
        } else {
            Ok(FileKind::Network(None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_identifier_skips_comments() {
        assert_eq!(leading_identifier("// hi\n/* x */ Stimulus(\n"), Some("Stimulus"));
        assert_eq!(leading_identifier("  (name: 1)"), None);
    }
}
