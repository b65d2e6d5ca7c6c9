//! Training every model with back-propagation through time and surrogate gradients.
//!
//! [`setup`] reads what a run starts from (options, network, data), [`fit`] is the one epoch
//! loop, checkpoint and restore for every model (the models themselves live in `models`), and
//! [`gradient_decay`] measures how far the loss gradient reaches through time or depth.

pub mod fit;
pub mod gradient_decay;
pub mod setup;
