//! Layered models: deep Heaviside nets (DHN), binary nets (BNN), implicit concept bottleneck
//! models (ICBM) and plain CNNs, described by a `layers: [...]` stack in a network file
//! ([`crate::spec::layers`]) and trained by the same `snn train` with the same surrogates.
//!
//! [`net`] builds a model and runs it forward and backward over a batch; its layers are in
//! [`crate::nn`] ([`crate::nn::linear`], [`crate::nn::conv`], [`crate::nn::norm`],
//! [`crate::nn::pool`], [`crate::nn::activation`], [`crate::nn::spiking`]), over the matrix
//! products of [`crate::nn::gemm`].

pub mod binary;
pub mod chain;
pub mod concepts;
pub mod eprop;
pub mod net;
pub mod nir;
pub mod segments;
pub mod spikes;
pub mod trainer;

pub use net::{LayerNet, Mode, Trace};
