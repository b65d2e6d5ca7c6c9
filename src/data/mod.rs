//! Data sets (MNIST-format IDX files, or generated tasks), the encoders that turn images into input over time, and
//! the sparse per-step events or spike bits they produce.

pub mod encode;
pub mod events;
pub mod idx;
pub mod spike_trains;
pub mod tasks;
