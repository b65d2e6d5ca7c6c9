//! Data sets (MNIST-format IDX files) and the encoders that turn images into input over time.

pub mod encode;
pub mod idx;
