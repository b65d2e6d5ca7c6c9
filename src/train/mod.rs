//! Training spiking networks with back-propagation through time and surrogate gradients.
//!
//! [`net`] turns a network spec into trainable layers, [`bptt`] runs one sample forward and
//! backward.

pub mod bptt;
pub mod net;
