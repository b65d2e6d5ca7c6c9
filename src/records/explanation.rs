//! Why a concept model (ICBM) gave one image its class, as `snn explain` reports and draws it.

/// Why one image got its class.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub index: usize,
    pub label: usize,
    pub predicted: usize,
    /// Concepts that fired (H(x) = 1), with their contribution (classifier weight) to the
    /// predicted class, largest first.
    pub fired: Vec<(usize, f32)>,
    pub bias: f32,
    pub scores: Vec<f32>,
    pub concepts: usize,
}
