//! Training spiking networks with back-propagation through time and surrogate gradients.
//!
//! [`net`] turns a network spec into trainable layers, [`bptt`] runs one sample forward and
//! backward, [`optim`] updates the weights, [`trainer`] runs epochs over a data set.

pub mod bptt;
pub mod command;
pub mod event_products;
pub mod gradient_decay;
pub mod history;
pub mod net;
pub mod optim;
pub mod sweep;
pub mod trainer;
