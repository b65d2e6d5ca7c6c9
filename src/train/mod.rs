//! Training spiking networks with back-propagation through time and surrogate gradients.
//!
//! [`net`] turns a network spec into trainable layers, [`bptt`] runs one sample forward and
//! backward, [`trainer`] runs epochs over a data set (with the optimizers of `nn::optim`).

pub mod bptt;
pub mod event_products;
pub mod gradient_decay;
pub mod net;
pub mod trainer;
