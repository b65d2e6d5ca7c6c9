//! Data sets (MNIST-format IDX files), the encoders that turn images into input over time, and
//! the sparse per-step events they produce.

pub mod encode;
pub mod events;
pub mod idx;
