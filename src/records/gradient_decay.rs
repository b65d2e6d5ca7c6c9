//! The gradient-decay series: per surrogate, how large the gradient is at each time step or
//! layer.

use crate::surrogate::Surrogate;

/// Per surrogate, the root-mean-square over samples of the gradient's norm at each position.
pub struct GradientDecay {
    pub surrogates: Vec<Surrogate>,
    pub norms: Vec<Vec<f64>>,
    /// Where the weights came from.
    pub source: String,
    /// What the positions are (time steps, layers) and what is measured at them.
    pub axis: &'static str,
    pub measured: &'static str,
}
