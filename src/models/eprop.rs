//! E-prop (Bellec et al. 2020, "A solution to the learning dilemma for recurrent networks of
//! spiking neurons"): online learning for one recurrent layer of Lif or Alif neurons with a
//! leaky readout, `Dense -> Lif|Alif (recurrent or not) -> Dense -> Li`. Its memory does not grow
//! with the sequence: instead of a tape, each synapse keeps eligibility traces forward in time,
//!
//! ```text
//! eps_v[t] = beta r[t-1] eps_v[t-1] + pre[t]            r = 1 (Subtract) or 1 - z (Zero)
//! eps_a[t] = psi[t-1] eps_v[t-1] + (rho - psi[t-1] b) eps_a[t-1]          (Alif only)
//! e[t]     = psi[t] (eps_v[t] - b eps_a[t])             psi = S'(v'[t] - threshold[t])
//! ```
//!
//! (pre: the input at step t for input weights, the presynaptic spike of step t - 1 for
//! recurrent ones, 1 for the bias), and the gradient of weight ji is the learning signal of
//! neuron j times its eligibility, summed over time: `sum_t L_j[t] e_ji[t]`. The learning signal
//! is the readout's error sent back through the readout weights (symmetric e-prop): with the
//! scores the mean of the Li readout `y[t] = kappa y[t-1] + W_out z[t] + b_out` over the scored
//! steps, `L_j[t] = sum_k W_out[k, j] delta_k g[t]`, delta the gradient of the loss w.r.t. the
//! scores and `g[t] = sum over scored t' >= t of kappa^(t'-t) / (scored steps)`, so each trace
//! is summed weighted by g as it goes and multiplied by `W_out^T delta` once the sample ends.
//! The readout's own gradients are exact. What e-prop leaves out, by design: the paths through
//! other neurons' recurrent input, and the reset (as `detach_reset`). With no recurrent weights
//! and `detach_reset`, that is nothing, and e-prop equals back-propagation through time (tested).

use nalgebra::{DMatrix, DVector};
use rayon::prelude::*;

use super::net::{LayerNet, Op};
use crate::nn::gemm::Gemm;
use crate::nn::spiking::{Kind, Spiking};
use crate::spec::SpikeReset;

/// One sample's eligibility traces and their g-weighted sums, for weights into `n` neurons
/// from `inputs` presynaptic units (row-major by neuron: element j inputs + i).
struct Traces<F> {
    v: Vec<F>,
    a: Vec<F>,
    sum: Vec<F>,
    inputs: usize,
}

impl<F: Gemm> Traces<F> {
    fn new(n: usize, inputs: usize, adaptive: bool) -> Self {
        let zeros = |len| vec![F::zero(); len];
        Traces { v: zeros(n * inputs), a: zeros(if adaptive { n * inputs } else { 0 }), sum: zeros(n * inputs), inputs }
    }

    /// One step: the traces advance on `pre` (this step's presynaptic values), and g times the
    /// eligibility joins the sum. Per neuron j: `decay[j]` = beta r[t-1], psi now and before.
    #[allow(clippy::too_many_arguments)]
    fn step(&mut self, pre: &[F], decay: &[F], psi: &[F], psi_before: &[F], adapt: Option<(F, F)>, g: F) {
        let m = self.inputs;
        for j in 0..decay.len() {
            let (v, sum) = (&mut self.v[j * m..(j + 1) * m], &mut self.sum[j * m..(j + 1) * m]);
            match adapt {
                Some((rho, b)) => {
                    let a = &mut self.a[j * m..(j + 1) * m];
                    let keep = rho - psi_before[j] * b;
                    for i in 0..m {
                        // eps_a uses eps_v of the step before, so it goes first.
                        a[i] = psi_before[j] * v[i] + keep * a[i];
                        v[i] = decay[j] * v[i] + pre[i];
                        sum[i] += g * psi[j] * (v[i] - b * a[i]);
                    }
                }
                None => {
                    for i in 0..m {
                        v[i] = decay[j] * v[i] + pre[i];
                        sum[i] += g * psi[j] * v[i];
                    }
                }
            }
        }
    }
}

/// What one sample leaves for the gradients once its error is known.
struct SampleSums<F> {
    scores: Vec<F>,
    input: Traces<F>,
    bias: Traces<F>,
    recurrent: Option<Traces<F>>,
    /// sum_t g[t] z[t] per hidden neuron (the readout weights' gradient).
    spikes: Vec<F>,
}

impl<F: Gemm> LayerNet<F> {
    /// Why e-prop cannot train this model, if it cannot.
    pub fn eprop_problem(&self) -> Option<String> {
        let ops: Vec<&Op<F>> = self.layers.iter().map(|l| &l.op).collect();
        let shape = "e-prop trains Dense -> Lif or Alif (recurrent or not) -> Dense -> Li";
        let [Op::Dense(first), Op::Spiking(hidden), Op::Dense(out), Op::Spiking(readout)] = ops[..] else {
            return Some(format!("{shape}; this stack has other layers"));
        };
        if first.binary || out.binary {
            return Some("e-prop trains real weights, not binarised ones".into());
        }
        if !matches!(hidden.kind, Kind::Lif | Kind::Alif) || readout.kind != Kind::Li {
            return Some(shape.into());
        }
        if hidden.beta.learnable || readout.beta.learnable {
            return Some("e-prop keeps the time constants fixed (learn_tau: Fixed)".into());
        }
        if self.static_prefix().is_some() {
            return Some("the direct-current input is computed once for all steps; use another encoder".into());
        }
        None
    }

    /// Bytes an e-prop pass over `batch` samples keeps: every sample's traces (two or three
    /// numbers per synapse into the hidden layer) and one step's input; nothing grows with the
    /// steps.
    pub fn eprop_bytes(&self, batch: usize) -> f64 {
        let (Some(Op::Spiking(hidden)), Some(first)) = (self.layers.get(1).map(|l| &l.op), self.layers.first()) else {
            return 0.0;
        };
        let n = hidden.shape.size();
        let synapses = n * (first.input.size() + 1 + if hidden.recurrent.is_some() { n } else { 0 });
        let per_synapse = 2 + hidden.adaptation.is_some() as usize;
        let input = self.input.size() * self.steps;
        ((batch * synapses * per_synapse + batch * input) * std::mem::size_of::<F>()) as f64
    }

    /// A training pass with e-prop: the loss, the samples classified correctly, and the
    /// gradients in [`LayerNet::params`] order. `x` is `features x (steps samples)`; the model
    /// must have no [`LayerNet::eprop_problem`].
    pub fn eprop_pass(&self, x: &DMatrix<F>, labels: &[u8]) -> (f64, usize, Vec<DMatrix<F>>) {
        let (Op::Dense(w_in), Op::Spiking(hidden), Op::Dense(w_out), Op::Spiking(readout)) =
            (&self.layers[0].op, &self.layers[1].op, &self.layers[2].op, &self.layers[3].op)
        else {
            unreachable!("checked by eprop_problem")
        };
        let samples = labels.len();
        let kappa = readout.beta.factors(1)[0];
        let g = self.readout_weights(kappa);
        let per_sample: Vec<SampleSums<F>> = (0..samples)
            .into_par_iter()
            .map(|b| self.eprop_sample(x, b, samples, w_in, hidden, w_out, kappa, &g))
            .collect();
        let scores = DMatrix::from_fn(self.classes(), samples, |k, b| per_sample[b].scores[k]);
        let (loss, delta, correct) = Self::loss(&scores, labels);
        let n = hidden.shape.size();
        let signal = |b: usize| w_out.weight.tr_mul(&delta.column(b).into_owned());
        let weights = |traces: &dyn Fn(&SampleSums<F>) -> &Traces<F>, cols: usize| {
            let mut grad = DMatrix::zeros(n, cols);
            for (b, sums) in per_sample.iter().enumerate() {
                let l = signal(b);
                let t = traces(sums);
                for j in 0..n {
                    for i in 0..cols {
                        grad[(j, i)] += l[j] * t.sum[j * cols + i];
                    }
                }
            }
            grad
        };
        let mut grads = vec![weights(&|s| &s.input, w_in.weight.ncols())];
        if w_in.bias.is_some() {
            grads.push(weights(&|s| &s.bias, 1));
        }
        if let Some(r) = &hidden.recurrent {
            let mut dw = weights(&|s| s.recurrent.as_ref().expect("a recurrent layer's traces"), n);
            if !r.self_connections {
                dw.fill_diagonal(F::zero());
            }
            grads.push(dw);
        }
        let total_g = g.iter().fold(F::zero(), |a, &b| a + b);
        let mut dw_out = DMatrix::zeros(self.classes(), n);
        let mut db_out = DMatrix::zeros(self.classes(), 1);
        for (b, sums) in per_sample.iter().enumerate() {
            let d = delta.column(b);
            dw_out += d * DVector::from_column_slice(&sums.spikes).transpose();
            db_out += d * total_g;
        }
        grads.push(dw_out);
        if w_out.bias.is_some() {
            grads.push(db_out);
        }
        (loss, correct, grads)
    }

    /// g[t]: how much the readout's value at step t counts in the scores, through its leak.
    fn readout_weights(&self, kappa: F) -> Vec<F> {
        let scored = F::of((self.steps - self.scored_from) as f64);
        let mut g = vec![F::zero(); self.steps];
        let mut later = F::zero();
        for t in (0..self.steps).rev() {
            later = kappa * later + if t >= self.scored_from { F::one() / scored } else { F::zero() };
            g[t] = later;
        }
        g
    }

    /// Sample `b` forward through the steps, its traces summed as it goes.
    #[allow(clippy::too_many_arguments)]
    fn eprop_sample(
        &self,
        x: &DMatrix<F>,
        b: usize,
        samples: usize,
        w_in: &crate::nn::linear::Linear<F>,
        hidden: &Spiking<F>,
        w_out: &crate::nn::linear::Linear<F>,
        kappa: F,
        g: &[F],
    ) -> SampleSums<F> {
        let n = hidden.shape.size();
        let inputs = w_in.weight.ncols();
        let adapt = hidden.adaptation.map(|a| (a.rho, a.b));
        let beta = hidden.beta.factors(hidden.shape.channels());
        let recurrent = hidden.recurrent.as_ref().map(|r| {
            let mut w = r.weight.clone();
            if !r.self_connections {
                w.fill_diagonal(F::zero());
            }
            w
        });
        let mut stepper = hidden.stepper(n);
        let mut sums = SampleSums {
            scores: vec![F::zero(); self.classes()],
            input: Traces::new(n, inputs, adapt.is_some()),
            bias: Traces::new(n, 1, adapt.is_some()),
            recurrent: recurrent.as_ref().map(|_| Traces::new(n, n, adapt.is_some())),
            spikes: vec![F::zero(); n],
        };
        let (mut z, mut z_before, mut psi, mut psi_before, mut decay) =
            (vec![F::zero(); n], vec![F::zero(); n], vec![F::zero(); n], vec![F::zero(); n], beta.clone());
        // Buffers reused at every step: this loop runs per sample and step.
        let (mut input, mut thresholds) = (DVector::zeros(n), vec![hidden.threshold; n]);
        let (mut spikes, mut o) = (DVector::zeros(n), DVector::zeros(self.classes()));
        let mut y = DVector::zeros(self.classes());
        let scored = F::of((self.steps - self.scored_from) as f64);
        let one = [F::one()];
        for (t, &g_t) in g.iter().enumerate() {
            let u = x.column(t * samples + b);
            input.gemv(F::one(), &w_in.weight, &u, F::zero());
            if let Some(bias) = &w_in.bias {
                input += bias.column(0);
            }
            if let Some(w) = &recurrent {
                for (i, _) in z.iter().enumerate().filter(|(_, s)| **s != F::zero()) {
                    input += w.column(i);
                }
            }
            if let Some((_, b_adapt)) = adapt {
                for (th, &a) in thresholds.iter_mut().zip(stepper.carried()) {
                    *th = hidden.threshold + b_adapt * a;
                }
            }
            std::mem::swap(&mut z, &mut z_before);
            hidden.step(&mut stepper, input.as_slice());
            z.copy_from_slice(&stepper.output);
            std::mem::swap(&mut psi, &mut psi_before);
            psi.clear();
            psi.extend(stepper.v_pre().iter().zip(&thresholds).map(|(&v, &th)| v - th));
            F::surrogate_derivatives(&hidden.derivative, &mut psi);
            sums.input.step(u.as_slice(), &decay, &psi, &psi_before, adapt, g_t);
            sums.bias.step(&one, &decay, &psi, &psi_before, adapt, g_t);
            if let Some(traces) = &mut sums.recurrent {
                traces.step(&z_before, &decay, &psi, &psi_before, adapt, g_t);
            }
            // The decay the traces take into the next step: beta times dv/dv' of this one.
            for ((d, &beta), &s) in decay.iter_mut().zip(&beta).zip(&z) {
                *d = if hidden.reset == SpikeReset::Zero { beta * (F::one() - s) } else { beta };
            }
            for (acc, &s) in sums.spikes.iter_mut().zip(&z) {
                *acc += g_t * s;
            }
            spikes.copy_from_slice(&z);
            o.gemv(F::one(), &w_out.weight, &spikes, F::zero());
            if let Some(bias) = &w_out.bias {
                o += bias.column(0);
            }
            y = y * kappa + &o;
            if t >= self.scored_from {
                for (s, &v) in sums.scores.iter_mut().zip(y.iter()) {
                    *s += v / scored;
                }
            }
        }
        sums
    }
}
