//! The library's one error type. Every variant names what the user has to look at: the file, the
//! field path and the offending value, so that the binary can print it and exit non-zero.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read (missing, unreadable).
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// RON syntax or type error, with the position ron reports.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax { path: PathBuf, line: usize, column: usize, message: String },

    /// The file parsed but describes something impossible. Every problem found is listed,
    /// each starting with its field path.
    #[error("{path}: invalid specification:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, problems: Vec<String> },

    /// Writing an output (recording, figure) failed.
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },

    /// A data file (IDX images or labels, a checkpoint) is malformed or does not fit.
    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },

    /// Training went wrong (a bad setting, a checkpoint that does not fit).
    #[error("training failed: {0}")]
    Training(String),

    /// Training diverged: the loss or a gradient stopped being finite. The last good
    /// checkpoint is kept (a sweep records such a run as diverged and goes on).
    #[error("training failed: {0}")]
    Diverged(String),

    /// The simulation itself went wrong (for instance runaway firing).
    #[error("simulation failed: {0}")]
    Simulation(String),
}

impl Error {
    pub(crate) fn write(path: impl Into<PathBuf>, message: impl ToString) -> Self {
        Error::Write { path: path.into(), message: message.to_string() }
    }
}
