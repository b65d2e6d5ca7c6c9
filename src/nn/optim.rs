//! Optimizers over the layers' weight matrices: Adam with decoupled weight decay (AdamW) and
//! SGD with momentum (weight decay added to the gradient, as PyTorch's SGD does).

use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::spec::Optimizer;

/// Weights per unit of parallel work.
const SLICE: usize = 1 << 16;

/// Moments and step count; saved in checkpoints so a resumed run continues exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    pub step: u64,
    /// Adam: first moments; SGD: momentum buffers.
    pub m: Vec<DMatrix<f32>>,
    /// Adam: second moments; SGD: unused (empty matrices).
    pub v: Vec<DMatrix<f32>>,
}

impl OptimizerState {
    pub fn new(weights: &[DMatrix<f32>], optimizer: &Optimizer) -> Self {
        let zeros = |w: &DMatrix<f32>| DMatrix::zeros(w.nrows(), w.ncols());
        let v = match optimizer {
            Optimizer::Adam { .. } => weights.iter().map(zeros).collect(),
            Optimizer::Sgd { .. } => weights.iter().map(|_| DMatrix::zeros(0, 0)).collect(),
        };
        OptimizerState { step: 0, m: weights.iter().map(zeros).collect(), v }
    }
}

/// Per gradient, its squared Frobenius norm, summed in f64 over fixed slices in parallel and
/// then over the slices in order (so the thread count does not change it). One pass serves two
/// ends: the norms the history reports, and the check before an update that every gradient is
/// finite, since squares of finite f32 values cannot overflow an f64 sum: a sum that is not
/// finite means a NaN or an infinity.
pub fn squared_norms(grads: &[DMatrix<f32>]) -> Vec<f64> {
    grads
        .iter()
        .map(|g| {
            let slices: Vec<f64> = g
                .as_slice()
                .par_chunks(SLICE)
                .map(|xs| {
                    // Eight running sums, one per vector lane, so the additions need not wait
                    // on each other; their order is fixed all the same.
                    let mut lanes = [0.0f64; 8];
                    let mut words = xs.chunks_exact(8);
                    for w in &mut words {
                        lanes.iter_mut().zip(w).for_each(|(l, &x)| *l += (x as f64) * (x as f64));
                    }
                    let tail: f64 = words.remainder().iter().map(|&x| (x as f64) * (x as f64)).sum();
                    lanes.iter().sum::<f64>() + tail
                })
                .collect();
            slices.iter().sum()
        })
        .collect()
}

/// One update of every weight with its gradient; `lr_factor` comes from the schedule.
/// Gradient clipping by the global norm (PyTorch's `clip_grad_norm_`): when the norm of all
/// gradients together, from their squared norms `squares`, exceeds `max_norm`, every gradient is
/// scaled by max_norm / norm. Returns whether it was.
pub fn clip_to_norm(grads: &mut [DMatrix<f32>], squares: &[f64], max_norm: Option<f64>) -> bool {
    let norm = squares.iter().sum::<f64>().sqrt();
    match max_norm {
        Some(max) if norm > max => {
            let scale = (max / norm) as f32;
            grads.iter_mut().for_each(|g| {
                g.as_mut_slice().par_chunks_mut(SLICE).for_each(|c| c.iter_mut().for_each(|x| *x *= scale))
            });
            true
        }
        _ => false,
    }
}

pub fn update(
    optimizer: &Optimizer,
    weight_decay: f64,
    lr_factor: f64,
    weights: &mut [&mut DMatrix<f32>],
    grads: &[DMatrix<f32>],
    state: &mut OptimizerState,
) {
    state.step += 1;
    let wd = weight_decay as f32;
    match *optimizer {
        Optimizer::Adam { lr, beta1, beta2, eps } => {
            let lr = (lr * lr_factor) as f32;
            let (b1, b2) = (beta1 as f32, beta2 as f32);
            let c1 = 1.0 - beta1.powi(state.step as i32) as f32;
            let c2 = 1.0 - beta2.powi(state.step as i32) as f32;
            for (((w, g), m), v) in weights.iter_mut().zip(grads).zip(&mut state.m).zip(&mut state.v) {
                // Element-wise, so splitting over threads changes nothing in the result.
                w.as_mut_slice()
                    .par_chunks_mut(SLICE)
                    .zip(g.as_slice().par_chunks(SLICE))
                    .zip(m.as_mut_slice().par_chunks_mut(SLICE))
                    .zip(v.as_mut_slice().par_chunks_mut(SLICE))
                    .for_each(|(((w, g), m), v)| {
                        for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                            *m = b1 * *m + (1.0 - b1) * g;
                            *v = b2 * *v + (1.0 - b2) * g * g;
                            let step = (*m / c1) / ((*v / c2).sqrt() + eps as f32);
                            *w -= lr * (step + wd * *w);
                        }
                    });
            }
        }
        Optimizer::Sgd { lr, momentum } => {
            let lr = (lr * lr_factor) as f32;
            let mu = momentum as f32;
            for ((w, g), buf) in weights.iter_mut().zip(grads).zip(&mut state.m) {
                for ((w, &g), b) in w.iter_mut().zip(g.iter()).zip(buf.iter_mut()) {
                    *b = mu * *b + g + wd * *w;
                    *w -= lr * *b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimise(optimizer: Optimizer) -> f32 {
        // f(w) = sum (w - 3)^2, gradient 2 (w - 3).
        let mut w = DMatrix::from_element(2, 2, 0.0f32);
        let mut state = OptimizerState::new(std::slice::from_ref(&w), &optimizer);
        for _ in 0..2000 {
            let g = w.map(|x| 2.0 * (x - 3.0));
            update(&optimizer, 0.0, 1.0, &mut [&mut w], &[g], &mut state);
        }
        w.iter().map(|x| (x - 3.0).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn clipping_scales_every_gradient_to_the_global_norm() {
        let mut grads = vec![DMatrix::from_element(1, 2, 3.0f32), DMatrix::from_element(2, 1, 4.0f32)];
        let squares = squared_norms(&grads);
        // Norm sqrt(9 + 9 + 16 + 16) = sqrt(50).
        assert!(!clip_to_norm(&mut grads.clone(), &squares, Some(8.0)));
        assert!(!clip_to_norm(&mut grads.clone(), &squares, None));
        assert!(clip_to_norm(&mut grads, &squares, Some(1.0)));
        let norm = squared_norms(&grads).iter().sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6, "{norm}");
        assert!((grads[0][0] / grads[1][0] - 0.75).abs() < 1e-6, "directions kept");
    }

    #[test]
    fn adam_and_sgd_minimise_a_quadratic() {
        assert!(minimise(Optimizer::Adam { lr: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8 }) < 1e-3);
        assert!(minimise(Optimizer::Sgd { lr: 0.01, momentum: 0.9 }) < 1e-3);
    }

    #[test]
    fn squared_norms_flag_every_non_finite_gradient() {
        let g = DMatrix::from_fn(300, 500, |i, j| ((i + j) % 7) as f32 - 3.0);
        // Small integers: every order of summation gives the same exact value.
        let exact: f64 = g.iter().map(|&x| (x as f64) * (x as f64)).sum();
        assert_eq!(squared_norms(std::slice::from_ref(&g)), vec![exact]);
        let big = DMatrix::from_element(4, 4, f32::MAX);
        assert!(squared_norms(&[big])[0].is_finite());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut h = g.clone();
            h[(299, 499)] = bad;
            assert!(!squared_norms(&[g.clone(), h])[1].is_finite(), "{bad}");
        }
    }

    #[test]
    fn first_adam_step_has_the_size_of_the_learning_rate() {
        let mut w = DMatrix::from_element(1, 1, 1.0f32);
        let opt = Optimizer::Adam { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
        let mut state = OptimizerState::new(std::slice::from_ref(&w), &opt);
        update(&opt, 0.0, 1.0, &mut [&mut w], &[DMatrix::from_element(1, 1, 123.0)], &mut state);
        assert!((w[(0, 0)] - 0.9).abs() < 1e-6);
    }
}
