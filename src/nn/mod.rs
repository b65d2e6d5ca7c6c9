//! Numerical pieces shared by every model: the scalar type, matrix products and event-driven
//! products (sparse rows of spikes or their changes times a dense matrix), the layers of a
//! stack (dense and convolutional products, pooling, batch norm, step units, spiking layers over
//! time), the loss and the optimizers. Nothing here knows about training runs, files or figures.

pub mod activation;
pub mod amx;
pub mod bits;
pub mod block_sums;
pub mod conv;
pub mod conv_tiles;
pub mod event_products;
pub mod fresh;
pub mod gemm;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod pool_lanes;
pub mod real;
pub mod spike_input;
pub mod spiking;
pub mod tiles;

pub use real::Real;
