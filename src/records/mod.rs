//! Plain records that training produces and that files and figures read: the history of a run,
//! the totals of a pass, the state of a run between epochs, sweep results, gradient-decay series,
//! a concept model's explanation of one image.
//! They hold data only, so `io` and `plot` depend on them and not on the trainer.

pub mod explanation;
pub mod gradient_decay;
pub mod history;
pub mod run;
pub mod sweep;

pub use explanation::Explanation;
pub use gradient_decay::GradientDecay;
pub use history::{History, PassTotals};
pub use run::{RunState, SavedParameters};
