//! The loss every model trains on, softmax cross-entropy, and the prediction it scores, the
//! argmax.

use super::Real;

/// Softmax cross-entropy of `scores` for class `label`: the loss and its gradient w.r.t. the
/// scores, scaled by `weight` (1 / batch size, so that summed gradients are batch means).
pub fn cross_entropy<F: Real>(scores: &[F], label: usize, weight: F, grad: &mut Vec<F>) -> f64 {
    let max = scores.iter().copied().fold(F::min_value().unwrap_or(F::zero()), |m, s| if s > m { s } else { m });
    let exp: Vec<F> = scores.iter().map(|&s| (s - max).exp()).collect();
    let sum = exp.iter().copied().fold(F::zero(), |a, b| a + b);
    grad.clear();
    grad.extend(
        exp.iter().enumerate().map(|(k, &e)| (e / sum - if k == label { F::one() } else { F::zero() }) * weight),
    );
    (sum.ln() - (scores[label] - max)).to_f64()
}

/// The index of the largest score (the first on ties): the predicted class.
pub fn argmax<F: PartialOrd>(scores: &[F]) -> usize {
    (0..scores.len()).fold(0, |best, k| if scores[k] > scores[best] { k } else { best })
}
