//! Training spiking networks with back-propagation through time and surrogate gradients.
//!
//! [`net`] turns a network spec into trainable layers, [`bptt`] runs one sample forward and
//! backward, [`trainer`] runs it over batches; [`fit`] is the one epoch loop, checkpoint and
//! restore for every model, spiking chains and layer stacks alike.

pub mod bptt;
pub mod fit;
pub mod gradient_decay;
pub mod net;
pub mod nir;
pub mod trainer;
