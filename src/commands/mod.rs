//! What the command line runs, as library calls: `train`, `eval` and `explain` ([`train`]),
//! `sweep` ([`sweep`]). Each loads its inputs, calls the library, writes files and figures, and
//! returns a summary to print; `main.rs` only parses arguments and maps errors to exit codes.

pub mod nir;
pub mod sweep;
pub mod train;
