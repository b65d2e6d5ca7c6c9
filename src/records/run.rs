//! What every training run carries between epochs, whatever its model: the network and its
//! text, the effective training settings, the seed, the optimizer's moments, the history and the
//! number of epochs done. A checkpoint stores exactly this plus the model's parameters.

use nalgebra::DMatrix;

use crate::nn::optim::OptimizerState;
use crate::spec::{Network, Training};

use super::History;

#[derive(Debug, Clone)]
pub struct RunState {
    pub network: Network,
    pub network_text: String,
    pub training: Training,
    pub seed: u64,
    pub optimizer: OptimizerState,
    pub history: History,
    pub epochs_done: u32,
}

/// A model's parameters as a checkpoint stores them: (layer, parameter, values), and named
/// buffers (batch-norm running statistics).
pub type SavedParameters = (Vec<(String, String, DMatrix<f32>)>, Vec<(String, DMatrix<f32>)>);
