//! What the one training loop (`train::fit`) needs of a model: its run state, one optimizer
//! step on a batch, the test pass, and its parameters as a checkpoint stores them. The layer
//! stack's run ([`super::trainer::LayerRun`]) implements it; every model trains as a stack,
//! population chains included (compiled by [`super::chain`]).

use crate::data::idx::Split;
use crate::error::Result;
use crate::io::checkpoint::Checkpoint;
use crate::ranks::Exchange;
use crate::records::{PassTotals, RunState, SavedParameters};

/// A model the loop can train.
pub trait Trainable {
    fn state(&self) -> &RunState;
    fn state_mut(&mut self) -> &mut RunState;
    /// One optimizer step on the samples `indices` of `split` with the learning rate scaled by
    /// `lr_factor`, adding the pass to `totals`. Returns the gradient norms the history reports,
    /// or the loss when it or a gradient is not finite (the parameters are then left as they were).
    /// With several `ranks`, each computes its share of the batch and all end with the same step.
    fn train_batch(
        &mut self,
        split: &Split,
        indices: &[usize],
        epoch: u32,
        lr_factor: f64,
        totals: &mut PassTotals,
        ranks: &dyn Exchange,
    ) -> std::result::Result<Vec<f64>, f64>;
    /// Bytes one training batch keeps for back-propagation through time, when the model can
    /// estimate them ([`crate::models::net::LayerNet::tape_bytes`]).
    fn tape_bytes(&self) -> Option<f64> {
        None
    }
    /// The test pass, and per reported layer its activity over the epoch (spikes per neuron and
    /// step, or the share of outputs on), given the training pass's totals.
    fn test(&mut self, split: &Split, train: &PassTotals) -> (PassTotals, Vec<f64>);
    fn parameters(&self) -> SavedParameters;
    fn load_parameters(&mut self, c: &Checkpoint) -> Result<()>;
}
