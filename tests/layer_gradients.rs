//! Finite-difference checks of the layered models' backward pass (f64): convolution (of real
//! values and of spikes), pooling, batch normalisation, binarised weights and step units in their
//! smooth forms, dropout, ReLU, and the spiking layers (Lif, CubaLif, Li, learnable time
//! constants) through time.

use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};

use nalgebra::DMatrix;
use snn::models::{LayerNet, Mode};
use snn::nn::spike_input::{self, SpikeForm};
use snn::ranks::{Alone, Exchange};
use snn::spec::{self, Network};

fn net(layers: &str, input: &str, surrogate: &str) -> LayerNet<f64> {
    timed_net(layers, input, &format!("surrogate: {surrogate}"))
}

/// A model with the given training settings (steps, surrogate, ...), dt 1 ms.
fn timed_net(layers: &str, input: &str, training: &str) -> LayerNet<f64> {
    let text = format!(
        "Network(name: \"check\", dt_ms: 1.0, inputs: [{input}], layers: [{layers}], training: ({training}, epochs: 1))"
    );
    let network: Network = spec::parse_ron(&text, Path::new("<test>")).expect("parses");
    let (_, problems) = spec::validate::check_network(&network);
    assert!(problems.is_empty(), "{problems:?}");
    let training = network.training.clone().expect("training section");
    let mut net = LayerNet::from_spec(&network, &training, 7).expect("builds");
    net.smooth = true;
    net
}

/// A deterministic pseudo-random batch.
fn batch(features: usize, samples: usize) -> DMatrix<f64> {
    DMatrix::from_fn(features, samples, |i, j| ((i * 7919 + j * 104_729) % 1000) as f64 / 500.0 - 1.0)
}

fn loss(net: &mut LayerNet<f64>, x: &DMatrix<f64>, labels: &[u8]) -> f64 {
    let samples: Vec<usize> = (0..x.ncols()).collect();
    let trace = net.forward(x.clone(), Mode::Train { seed: 3, epoch: 0, samples: &samples, ranks: &Alone });
    LayerNet::loss(trace.scores(), labels).0
}

/// Compares every parameter's backprop gradient with a central difference; returns the worst
/// error relative to max(|analytic|, |numeric|, 1e-3 x the largest gradient of the tensor, 1e-7: the finite differences resolve no better).
fn worst_error(mut net: LayerNet<f64>, x: DMatrix<f64>, labels: &[u8]) -> f64 {
    let samples: Vec<usize> = (0..x.ncols()).collect();
    let trace = net.forward(x.clone(), Mode::Train { seed: 3, epoch: 0, samples: &samples, ranks: &Alone });
    let (_, d_scores, _) = LayerNet::loss(trace.scores(), labels);
    let grads = net.backward(&trace, d_scores, &Alone);
    let names: Vec<String> = net.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(grads.len(), names.len());
    let h = 1e-5;
    let mut worst: f64 = 0.0;
    for (p, name) in names.iter().enumerate() {
        let scale = (grads[p].amax() * 1e-3).max(1e-7);
        for (k, &analytic) in grads[p].iter().enumerate() {
            let original = net.params()[p][k];
            net.params_mut()[p][k] = original + h;
            let up = loss(&mut net, &x, labels);
            net.params_mut()[p][k] = original - h;
            let down = loss(&mut net, &x, labels);
            net.params_mut()[p][k] = original;
            let numeric = (up - down) / (2.0 * h);
            let error = (numeric - analytic).abs() / analytic.abs().max(numeric.abs()).max(scale);
            assert!(error < 1e-3, "{name}[{k}]: backprop {analytic:e}, finite difference {numeric:e}");
            worst = worst.max(error);
        }
    }
    worst
}

#[test]
fn convolution_max_pooling_and_batch_norm() {
    let net = net(
        "Conv2d(filters: 3, kernel: 3, padding: 1), BatchNorm(), Relu, MaxPool(size: 2), \
         Conv2d(filters: 2, kernel: 2, stride: 2), Flatten, Dense(units: 3)",
        "(name: \"x\", size: 72, shape: (2, 6, 6))",
        "Htaf()",
    );
    let worst = worst_error(net, batch(72, 4), &[0, 2, 1, 2]);
    assert!(worst < 1e-4, "worst relative error {worst:e}");
}

#[test]
fn binarised_layers_and_step_units_in_smooth_form() {
    // Binary conv and dense weights through the smooth sign 2 S(w) - 1, sign and Heaviside
    // units through their smooth primitives, average pooling, dropout.
    let net = net(
        "Conv2d(filters: 2, kernel: 3, padding: 1, weights: Binary(), bias: false), BatchNorm(), \
         Sign(), AvgPool(size: 2), Flatten, Dropout(rate: 0.3), \
         Dense(units: 5, weights: Binary()), BatchNorm(), Heaviside(), Dense(units: 3)",
        "(name: \"x\", size: 32, shape: (2, 4, 4))",
        "Htaf(alpha: 4.0, beta: 1.0)",
    );
    let worst = worst_error(net, batch(32, 5), &[1, 0, 2, 2, 1]);
    assert!(worst < 1e-4, "worst relative error {worst:e}");
}

#[test]
fn deep_heaviside_stack_with_every_surrogate() {
    for surrogate in ["Sigmoid(slope: 4.0)", "Arctan()", "FastSigmoid(slope: 5.0)", "Htaf()"] {
        let net = net(
            "Dense(units: 6), BatchNorm(), Heaviside(), Dense(units: 6), BatchNorm(), Heaviside(), Dense(units: 2)",
            "(name: \"x\", size: 5)",
            surrogate,
        );
        let worst = worst_error(net, batch(5, 6), &[0, 1, 1, 0, 1, 0]);
        assert!(worst < 1e-4, "{surrogate}: worst relative error {worst:e}");
    }
}

/// Ranks played by threads of one process, which meet at a barrier to exchange.
struct ThreadRank {
    rank: usize,
    size: usize,
    meeting: Arc<(Mutex<Vec<Vec<u32>>>, Barrier)>,
}

impl ThreadRank {
    fn all(size: usize) -> Vec<ThreadRank> {
        let meeting = Arc::new((Mutex::new(vec![Vec::new(); size]), Barrier::new(size)));
        (0..size).map(|rank| ThreadRank { rank, size, meeting: meeting.clone() }).collect()
    }
}

impl Exchange for ThreadRank {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_gather(&self, mine: &[u32]) -> Vec<u32> {
        let (slots, barrier) = &*self.meeting;
        slots.lock().unwrap()[self.rank] = mine.to_vec();
        barrier.wait();
        let all = slots.lock().unwrap().concat();
        // Nobody writes the next exchange before everyone has read this one.
        barrier.wait();
        all
    }

    fn sum(&self, x: u64) -> u64 {
        self.all_gather(&[(x >> 32) as u32, x as u32]).chunks(2).map(|w| (w[0] as u64) << 32 | w[1] as u64).sum()
    }

    fn abort(&self, code: i32) -> ! {
        panic!("rank {} aborted with {code}", self.rank)
    }
}

#[test]
fn batch_norm_over_ranks_gives_the_whole_batch_gradients_and_statistics() {
    // A batch of 6 shared as 0, 2 and 4 samples among 3 ranks (the empty rank only takes part
    // in the statistics): each rank's gradient of its own mean loss, weighted by its share,
    // sums to the whole batch's gradient, and every rank's running statistics are the whole
    // batch's. Batch norm over samples (before the direct-current repeat) and over samples and
    // steps (after a Dense on spikes); smooth spikes, f64.
    let net = timed_net(
        "Conv2d(filters: 3, kernel: 3, padding: 1), BatchNorm(), \
         Lif(tau_mem_ms: 4.0, threshold: 0.5, learn_tau: PerChannel), MaxPool(size: 2), Flatten, \
         Dense(units: 5), BatchNorm(), CubaLif(tau_syn_ms: 3.0, tau_mem_ms: 6.0, threshold: 0.3), \
         Dropout(rate: 0.2), Dense(units: 3), Li(tau_mem_ms: 5.0)",
        "(name: \"x\", size: 32, shape: (2, 4, 4))",
        "steps: 5, surrogate: Htaf(), encoder: Current",
    );
    let (x, labels) = (batch(32, 6), [0u8, 2, 1, 1, 0, 2]);
    let samples: Vec<usize> = (0..6).collect();
    let mut whole = net.clone();
    let trace = whole.forward(x.clone(), Mode::Train { seed: 3, epoch: 0, samples: &samples, ranks: &Alone });
    let (_, d_scores, _) = LayerNet::loss(trace.scores(), &labels);
    let expected = whole.backward(&trace, d_scores, &Alone);

    let shares = [0..0, 0..2, 2..6];
    let results: Vec<(Vec<DMatrix<f64>>, LayerNet<f64>)> = std::thread::scope(|scope| {
        let runs: Vec<_> = ThreadRank::all(3)
            .into_iter()
            .zip(shares.clone())
            .map(|(rank, share)| {
                let (mut net, x, samples) = (net.clone(), &x, &samples);
                scope.spawn(move || {
                    if share.is_empty() {
                        net.join_batch_statistics(&rank);
                        let zeros = net.params().iter().map(|p| DMatrix::zeros(p.nrows(), p.ncols())).collect();
                        return (zeros, net);
                    }
                    let mine = x.columns(share.start, share.len()).into_owned();
                    let mode = Mode::Train { seed: 3, epoch: 0, samples: &samples[share.clone()], ranks: &rank };
                    let trace = net.forward(mine, mode);
                    let (_, d_scores, _) = LayerNet::loss(trace.scores(), &labels[share]);
                    (net.backward(&trace, d_scores, &rank), net)
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for (p, name) in whole.named_params().iter().map(|(n, _)| n).enumerate() {
        let summed = results
            .iter()
            .zip(&shares)
            .fold(DMatrix::zeros(expected[p].nrows(), expected[p].ncols()), |sum, ((g, _), s)| {
                sum + &g[p] * (s.len() as f64 / 6.0)
            });
        // A bias before batch norm has no gradient: its 1e-16 of rounding is compared with 1e-3.
        let error = (&summed - &expected[p]).amax() / expected[p].amax().max(1e-3);
        assert!(error < 1e-10, "{name}: shared gradient off by {error:e} of the largest");
    }
    for (_, net) in &results {
        for ((name, a), (_, b)) in net.named_buffers().iter().zip(whole.named_buffers()) {
            assert!((*a - b).amax() < 1e-12, "{name}: running statistics differ");
        }
    }
}

/// Column t B + b of a batch over `steps` steps is sample b at step t.
fn timed_batch(features: usize, samples: usize, steps: usize) -> DMatrix<f64> {
    batch(features, samples * steps)
}

#[test]
fn convolution_of_spikes_through_time() {
    // The second convolution takes the first Lif's spikes, so it runs event-driven (its input's
    // nonzero values times the filters); with stride 2 and padding, before batch norm and a Lif.
    let net = timed_net(
        "Conv2d(filters: 3, kernel: 3, padding: 1), Lif(tau_mem_ms: 4.0, threshold: 0.5), \
         Conv2d(filters: 4, kernel: 3, stride: 2, padding: 1), BatchNorm(), \
         Lif(tau_mem_ms: 3.0, threshold: 0.3, learn_tau: PerChannel), Flatten, Dense(units: 3), Li(tau_mem_ms: 5.0)",
        "(name: \"x\", size: 32, shape: (2, 4, 4))",
        "steps: 4, surrogate: Htaf(), encoder: Current",
    );
    assert!(net.layers[2].event_driven, "the second convolution takes spikes");
    let worst = worst_error(net, batch(32, 3), &[0, 2, 1]);
    assert!(worst < 1e-4, "worst relative error {worst:e}");
}

#[test]
fn recurrent_layer_reading_a_direct_current() {
    // The first spiking layer reads the Dense layer's output, computed once for all steps; a
    // recurrent one takes a copy per step (the recurrence adds to each), a plain one reads it
    // at every step and sums its gradient over them.
    for recurrence in ["", ", recurrent: AllToAll"] {
        let net = timed_net(
            &format!(
                "Dense(units: 5), Lif(tau_mem_ms: 4.0, threshold: 0.5{recurrence}), Dense(units: 3), Li(tau_mem_ms: 5.0)"
            ),
            "(name: \"x\", size: 6)",
            "steps: 5, surrogate: Htaf(), encoder: Current",
        );
        assert_eq!(net.static_prefix(), Some(1));
        let worst = worst_error(net, batch(6, 3), &[0, 2, 1]);
        assert!(worst < 1e-4, "worst relative error {worst:e}{recurrence}");
    }
}

#[test]
fn spiking_cnn_through_time_with_learnable_time_constants() {
    // Lif with per-channel time constants after a convolution and batch norm, CubaLif with one
    // learnt pair of constants and zero reset, Li readout. Direct-current input: the convolution
    // and batch norm run once, their output repeated over the six steps, its gradient summed.
    let net = timed_net(
        "Conv2d(filters: 3, kernel: 3, padding: 1), BatchNorm(), \
         Lif(tau_mem_ms: 4.0, threshold: 0.5, learn_tau: PerChannel), MaxPool(size: 2), Flatten, \
         Dense(units: 5), CubaLif(tau_syn_ms: 3.0, tau_mem_ms: 6.0, threshold: 0.3, reset: Zero, learn_tau: PerLayer), \
         Dense(units: 3), Li(tau_mem_ms: 5.0, learn_tau: PerChannel)",
        "(name: \"x\", size: 32, shape: (2, 4, 4))",
        "steps: 6, surrogate: Htaf(), encoder: Current",
    );
    assert_eq!((net.steps, net.static_prefix()), (6, Some(2)));
    let worst = worst_error(net, batch(32, 3), &[0, 2, 1]);
    assert!(worst < 1e-4, "worst relative error {worst:e}");
}

#[test]
fn dense_spiking_stack_over_twenty_steps() {
    // CubaLif with per-neuron constants, Lif, and a spiking readout whose spike counts are the
    // scores. (A detached reset is left out: its gradient is by design not the true one.)
    let net = timed_net(
        "Dense(units: 6), CubaLif(tau_syn_ms: 2.0, tau_mem_ms: 8.0, threshold: 0.4, learn_tau: PerChannel), \
         Dense(units: 5), Lif(tau_mem_ms: 10.0, threshold: 0.4, reset: Zero, learn_tau: PerLayer), \
         Dense(units: 3), Lif(tau_mem_ms: 10.0, threshold: 0.5, surrogate: Arctan())",
        "(name: \"x\", size: 4)",
        "steps: 20, surrogate: Htaf(), readout: SpikeCount",
    );
    let worst = worst_error(net, timed_batch(4, 3, 20), &[1, 0, 2]);
    assert!(worst < 1e-4, "worst relative error {worst:e}");
}

#[test]
fn leaky_integrator_readout_with_every_surrogate() {
    for surrogate in ["Sigmoid(slope: 4.0)", "FastSigmoid(slope: 5.0)", "Triangle()", "Htaf()"] {
        let net = timed_net(
            "Dense(units: 5), Lif(tau_mem_ms: 5.0, learn_tau: PerChannel), Dense(units: 2), Li(tau_mem_ms: 20.0)",
            "(name: \"x\", size: 3)",
            &format!("steps: 8, surrogate: {surrogate}"),
        );
        let worst = worst_error(net, timed_batch(3, 4, 8), &[0, 1, 1, 0]);
        assert!(worst < 1e-4, "{surrogate}: worst relative error {worst:e}");
    }
}

#[test]
fn recurrent_lif_and_cubalif_over_twenty_five_steps() {
    // snnTorch's RLeaky (all to all) and an RSynaptic without self-connections, with learnt
    // decays, over 25 steps: the gradient reaches each step's spikes through the next step's
    // recurrent input too.
    let net = timed_net(
        "Dense(units: 6), Lif(tau_mem_ms: 6.0, threshold: 0.4, learn_tau: PerChannel, recurrent: AllToAll), \
         Dense(units: 5), CubaLif(tau_syn_ms: 3.0, tau_mem_ms: 8.0, threshold: 0.3, reset: Zero, learn_tau: PerLayer, \
         recurrent: NoSelf), Dense(units: 3), Li(tau_mem_ms: 10.0)",
        "(name: \"x\", size: 4)",
        "steps: 25, surrogate: Htaf(), encoder: Rate()",
    );
    let names: Vec<String> = net.named_params().into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().filter(|n| n.ends_with("recurrent_weight")).count() == 2, "{names:?}");
    let worst = worst_error(net, timed_batch(4, 3, 25), &[1, 0, 2]);
    assert!(worst < 1e-4, "worst relative error {worst:e}");
}

#[test]
fn adaptive_lif_recurrent_and_feed_forward_over_thirty_steps() {
    // LSNN-style: a recurrent Alif layer (learnt decays, reset by subtracting the adapted
    // threshold) and a feed-forward one with reset to zero, over 30 steps: the gradient reaches
    // earlier spikes through the threshold they raised as well as through the membrane.
    let net = timed_net(
        "Dense(units: 6), Alif(tau_mem_ms: 6.0, tau_adapt_ms: 20.0, beta_adapt: 0.3, threshold: 0.4, \
         learn_tau: PerChannel, recurrent: NoSelf), \
         Dense(units: 5), Alif(tau_mem_ms: 8.0, tau_adapt_ms: 12.0, beta_adapt: 0.5, threshold: 0.3, reset: Zero), \
         Dense(units: 3), Li(tau_mem_ms: 10.0)",
        "(name: \"x\", size: 4)",
        "steps: 30, surrogate: Htaf(), encoder: Rate()",
    );
    let worst = worst_error(net, timed_batch(4, 3, 30), &[1, 0, 2]);
    assert!(worst < 1e-4, "worst relative error {worst:e}");
}

#[test]
fn recomputed_segments_give_the_plain_gradients_bit_for_bit_and_truncation_cuts_them() {
    // Recurrent Alif and CubaLif layers with learnt decays and dropout between them, over 30
    // steps, in smooth and in hard (surrogate) mode.
    for smooth in [true, false] {
        let mut net = timed_net(
            "Dense(units: 6), Alif(tau_mem_ms: 6.0, tau_adapt_ms: 20.0, beta_adapt: 0.3, threshold: 0.4, \
             learn_tau: PerChannel, recurrent: NoSelf), Dropout(rate: 0.3), \
             Dense(units: 5), CubaLif(tau_syn_ms: 3.0, tau_mem_ms: 8.0, threshold: 0.3, learn_tau: PerLayer, \
             recurrent: AllToAll), Dense(units: 3), Li(tau_mem_ms: 10.0, learn_tau: PerChannel)",
            "(name: \"x\", size: 4)",
            "steps: 30, surrogate: Htaf(), encoder: Rate()",
        );
        net.smooth = smooth;
        assert_eq!(net.segment_problem(), None);
        let (x, labels) = (timed_batch(4, 3, 30), [1u8, 0, 2]);
        let samples = [0, 1, 2];
        let mode = Mode::Train { seed: 3, epoch: 0, samples: &samples, ranks: &Alone };
        let trace = net.forward(x.clone(), mode);
        let (loss, d_scores, _) = LayerNet::loss(trace.scores(), &labels);
        let plain = net.backward(&trace, d_scores, &Alone);
        for every in [1, 7, 29, 30] {
            let (l, _, grads) = net.segmented_pass(x.clone(), mode, &labels, every, false);
            assert_eq!((l, &grads), (loss, &plain), "recomputation every {every} steps, smooth {smooth}");
        }
        for window in [30, 45] {
            assert_eq!(net.segmented_pass(x.clone(), mode, &labels, window, true).2, plain, "window {window}");
        }
        let truncated = net.segmented_pass(x.clone(), mode, &labels, 5, true).2;
        let differ = truncated.iter().zip(&plain).filter(|(a, b)| a != b).count();
        assert!(differ > 0, "a window of 5 of 30 steps changes the gradients");
    }
}

/// e-prop's and BPTT's gradients of a stack, and the largest difference relative to the largest
/// gradient of each tensor.
fn eprop_against_bptt(layers: &str, training: &str) -> (Vec<DMatrix<f64>>, Vec<DMatrix<f64>>, f64) {
    let mut net = timed_net(layers, "(name: \"x\", size: 4)", training);
    net.smooth = false;
    assert_eq!(net.eprop_problem(), None);
    // Inputs of 0 and 1.5, so that the hard spikes come and go.
    let x = timed_batch(4, 3, 40).map(|v| if v > 0.2 { 1.5 } else { 0.0 });
    let labels = [1u8, 0, 2];
    let trace = net.forward(x.clone(), Mode::Eval { soft: false });
    let (loss, d_scores, _) = LayerNet::loss(trace.scores(), &labels);
    let samples = [0, 1, 2];
    let trace = net.forward(x.clone(), Mode::Train { seed: 3, epoch: 0, samples: &samples, ranks: &Alone });
    let bptt = net.backward(&trace, d_scores, &Alone);
    let (eprop_loss, _, eprop) = net.eprop_pass(&x, &labels);
    assert!((loss - eprop_loss).abs() < 1e-12, "losses {loss} and {eprop_loss}");
    let worst = bptt.iter().zip(&eprop).map(|(a, b)| (a - b).amax() / a.amax().max(1e-12)).fold(0.0, f64::max);
    (bptt, eprop, worst)
}

#[test]
fn eprop_equals_bptt_without_recurrence_and_through_the_adaptation() {
    // With no recurrent weights and the reset detached, nothing e-prop leaves out is there:
    // its eligibility traces (through the membrane, and the threshold's adaptation) give BPTT's
    // gradients, to rounding.
    let training = "steps: 40, surrogate: Htaf(), encoder: Rate(), detach_reset: true";
    for hidden in [
        "Lif(tau_mem_ms: 6.0, threshold: 0.8)",
        "Lif(tau_mem_ms: 6.0, threshold: 0.8, reset: Zero)",
        "Alif(tau_mem_ms: 6.0, tau_adapt_ms: 25.0, beta_adapt: 0.4, threshold: 0.8)",
    ] {
        let layers = format!("Dense(units: 5), {hidden}, Dense(units: 3), Li(tau_mem_ms: 8.0)");
        let (bptt, _, worst) = eprop_against_bptt(&layers, training);
        assert!(bptt[0].amax() > 1e-6, "{hidden}: the hidden weights get a gradient");
        assert!(worst < 1e-9, "{hidden}: e-prop and BPTT differ by {worst:e}");
    }
    // With recurrent weights e-prop drops the paths through other neurons: close, not equal.
    let layers = "Dense(units: 5), Alif(tau_mem_ms: 6.0, tau_adapt_ms: 25.0, beta_adapt: 0.4, threshold: 0.8, \
                  recurrent: NoSelf), Dense(units: 3), Li(tau_mem_ms: 8.0)";
    let (bptt, eprop, worst) = eprop_against_bptt(layers, training);
    assert!(worst > 1e-6, "recurrent paths are missing from e-prop, so the gradients differ");
    // The readout's gradients are exact all the same.
    let last = bptt.len() - 2;
    let readout = (&bptt[last] - &eprop[last]).amax() / bptt[last].amax();
    assert!(readout < 1e-9, "readout weights differ by {readout:e}");
}

#[test]
fn eprop_gradient_equals_its_formula_on_a_tiny_recurrent_net() {
    // One input, two recurrent Alif neurons, two classes, 12 steps, one sample: the formula of
    // Bellec et al. 2020 written out here with scalars, against the library's pass.
    let mut net = timed_net(
        "Dense(units: 2), Alif(tau_mem_ms: 4.0, tau_adapt_ms: 10.0, beta_adapt: 0.3, threshold: 0.6, \
         recurrent: AllToAll), Dense(units: 2), Li(tau_mem_ms: 5.0)",
        "(name: \"x\", size: 1)",
        "steps: 12, surrogate: Htaf(), encoder: Rate(), detach_reset: true",
    );
    net.smooth = false;
    let u = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0];
    let x = DMatrix::from_row_slice(1, 12, &u);
    let label = 1usize;
    // Weights that make both neurons fire now and then, and excite and inhibit each other.
    let set = [
        DMatrix::from_row_slice(2, 1, &[0.9, 0.7]),
        DMatrix::from_row_slice(2, 1, &[0.05, 0.1]),
        DMatrix::from_row_slice(2, 2, &[0.1, 0.5, -0.3, 0.2]),
    ];
    for (slot, value) in net.params_mut().into_iter().zip(&set) {
        slot.copy_from(value);
    }
    let p: Vec<DMatrix<f64>> = net.params().into_iter().cloned().collect();
    let (w_in, b_in, w_rec, w_out, b_out) = (&p[0], &p[1], &p[2], &p[3], &p[4]);
    let (beta, rho, kappa, b, theta) = ((-1.0f64 / 4.0).exp(), (-1.0f64 / 10.0).exp(), (-1.0f64 / 5.0).exp(), 0.3, 0.6);
    // Forward, keeping z, psi and the readout per step.
    let (mut v, mut a, mut z_prev, mut y) = ([0.0; 2], [0.0; 2], [0.0; 2], [0.0; 2]);
    let (mut zs, mut psis, mut scores) = (Vec::new(), Vec::new(), [0.0; 2]);
    for &ut in &u {
        let mut z = [0.0; 2];
        let mut psi = [0.0; 2];
        for j in 0..2 {
            let input = w_in[(j, 0)] * ut + b_in[j] + w_rec[(j, 0)] * z_prev[0] + w_rec[(j, 1)] * z_prev[1];
            let vp = beta * v[j] + input;
            let th = theta + b * a[j];
            z[j] = if vp >= th { 1.0 } else { 0.0 };
            // f64 evaluates the surrogate's closed form (see nn::Real).
            psi[j] = net.surrogate.derivative(vp - th);
            v[j] = vp - th * z[j];
            a[j] = rho * a[j] + z[j];
        }
        for k in 0..2 {
            y[k] = kappa * y[k] + w_out[(k, 0)] * z[0] + w_out[(k, 1)] * z[1] + b_out[k];
            scores[k] += y[k] / 12.0;
        }
        zs.push(z);
        psis.push(psi);
        z_prev = z;
    }
    let e = [(scores[0] - scores[1]).exp(), 1.0];
    let softmax = [e[0] / (e[0] + e[1]), e[1] / (e[0] + e[1])];
    let delta = [softmax[0] - (label == 0) as u8 as f64, softmax[1] - (label == 1) as u8 as f64];
    // dE/dz_j[t] through the readout: sum_k W_out[k, j] delta_k sum_{t' >= t} kappa^(t'-t) / 12.
    let signal = |j: usize, t: usize| {
        let g: f64 = (t..12).map(|s| kappa.powi((s - t) as i32) / 12.0).sum();
        (0..2).map(|k| w_out[(k, j)] * delta[k] * g).sum::<f64>()
    };
    // Eligibility traces for the recurrent weight j <- i: presynaptic z_i[t - 1].
    let mut grad_rec = [[0.0; 2]; 2];
    for j in 0..2 {
        for i in 0..2 {
            let (mut eps_v, mut eps_a) = (0.0, 0.0);
            for t in 0..12 {
                let pre = if t > 0 { zs[t - 1][i] } else { 0.0 };
                let psi_before = if t > 0 { psis[t - 1][j] } else { 0.0 };
                eps_a = psi_before * eps_v + (rho - psi_before * b) * eps_a;
                eps_v = beta * eps_v + pre;
                grad_rec[j][i] += signal(j, t) * psis[t][j] * (eps_v - b * eps_a);
            }
        }
    }
    let (_, _, grads) = net.eprop_pass(&x, &[label as u8]);
    for j in 0..2 {
        for i in 0..2 {
            let ours = grads[2][(j, i)];
            assert!(
                (ours - grad_rec[j][i]).abs() <= 1e-12 * grad_rec[j][i].abs().max(1e-9),
                "w_rec[{j}][{i}]: {ours} vs {}",
                grad_rec[j][i]
            );
        }
    }
    assert!(grad_rec.iter().flatten().any(|g| g.abs() > 1e-6), "the recurrent weights get a gradient");
}

#[test]
fn input_spikes_taken_as_deviations_give_the_gradients_and_the_same_ones_in_segments() {
    // Spikes that mostly keep to one value per sample (as rate-coded bright pixels do), so the
    // first Dense layer takes them as deviations from that value; a second one takes the
    // hidden spikes as values.
    let (features, samples, steps) = (6, 3, 12);
    let x = DMatrix::from_fn(features, samples * steps, |i, c| {
        let (t, b) = (c / samples, c % samples);
        if ((i + b) % 3 == 0 && t >= i % 4) || i == 5 { 1.0 } else { 0.0 }
    });
    let trains = spike_input::spike_trains(&x, samples).expect("spikes");
    assert!(spike_input::deviation_base(&trains).is_some(), "fewer events as deviations");
    // Layers wide enough to take their spikes as events (linear::MIN_EVENT_OUTPUTS).
    let layers = "Dense(units: 16), Lif(tau_mem_ms: 4.0, threshold: 0.4, learn_tau: PerChannel, recurrent: NoSelf), \
                  Dense(units: 16), Li(tau_mem_ms: 6.0)";
    let training = "steps: 12, surrogate: Htaf(), encoder: Rate()";
    let net = timed_net(layers, "(name: \"x\", size: 6)", training);
    assert!(net.layers[0].event_driven && net.layers[2].event_driven, "both Dense layers take spikes");
    // A model without layers over time reads the images themselves, whatever the encoder.
    let one_pass =
        timed_net("Dense(units: 4), Heaviside(), Dense(units: 3)", "(name: \"x\", size: 6)", "encoder: Rate()");
    assert!(!one_pass.layers[0].event_driven && !one_pass.layers[2].event_driven);
    // A Dense layer of few outputs multiplies its spikes.
    let narrow = timed_net(
        "Dense(units: 15), Lif(tau_mem_ms: 4.0), Dense(units: 3), Li(tau_mem_ms: 6.0)",
        "(name: \"x\", size: 6)",
        training,
    );
    assert!(!narrow.layers[0].event_driven && !narrow.layers[2].event_driven);
    let worst = worst_error(net, x.clone(), &[1, 0, 2]);
    assert!(worst < 1e-4, "worst relative error {worst:e}");
    for smooth in [true, false] {
        let mut net = timed_net(layers, "(name: \"x\", size: 6)", training);
        net.smooth = smooth;
        let samples = [0, 1, 2];
        let mode = Mode::Train { seed: 3, epoch: 0, samples: &samples, ranks: &Alone };
        let trace = net.forward(x.clone(), mode);
        let form = |i: usize| match &trace.extras[i] {
            snn::models::net::Extra::Spikes(rows) => Some(rows.form == SpikeForm::Values),
            _ => None,
        };
        assert_eq!((form(0), form(2)), (Some(false), Some(true)), "deviations into the first layer only");
        let (loss, d_scores, _) = LayerNet::loss(trace.scores(), &[1, 0, 2]);
        let plain = net.backward(&trace, d_scores, &Alone);
        for every in [1, 5, 12] {
            let (l, _, grads) = net.segmented_pass(x.clone(), mode, &[1, 0, 2], every, false);
            assert_eq!((l, &grads), (loss, &plain), "recomputation every {every} steps, smooth {smooth}");
        }
    }
}
