//! Back-propagation through time in segments of the sequence, for sequences whose tape would
//! not fit in memory (or should not take it):
//!
//! - **recomputation** (exact): a first forward pass keeps only the state of every spiking layer
//!   where each segment of `every` steps starts, and the readout's output; the backward pass
//!   then goes through the segments from the last, recomputing each one's forward from its saved
//!   state to have its tape, so one segment's tape is held at a time. The gradients are the
//!   plain pass's, bit for bit: the recomputed forward is the same arithmetic, and the sums over
//!   steps run in the same order (see [`LayerNet::backward_through`]).
//! - **truncation**: the same, with the gradient stopped where each segment of `window` steps
//!   starts, so it reaches at most `window` steps back; with a window of at least the sequence,
//!   the plain pass.
//!
//! Both need every layer to work step by step: no batch norm (its statistics run over all the
//! steps) and no input computed once for all steps (direct-current encoding).

use nalgebra::DMatrix;

use super::net::{Extra, Input, LayerNet, Mode, Op, Sequence, Sums, Trace};
use crate::nn::activation::StepForward;
use crate::nn::gemm::Gemm;
use crate::nn::spiking::SegmentState;
use crate::ranks::Alone;

impl<F: Gemm> LayerNet<F> {
    /// Why this model cannot be trained in segments, if it cannot.
    pub fn segment_problem(&self) -> Option<String> {
        if self.steps < 2 {
            return Some("the model runs one step; there is no sequence to cut".into());
        }
        if let Some(layer) = self.couples_samples() {
            return Some(format!("{}: batch norm takes statistics over all the steps at once", layer.label));
        }
        if self.static_prefix().is_some() {
            return Some("the direct-current input is computed once for all steps; use another encoder".into());
        }
        None
    }

    /// A training pass with back-propagation through time in segments of `segment` steps,
    /// truncated at their starts when `truncate`: the loss, the number of samples classified
    /// correctly, and the gradients in [`LayerNet::params`] order. `x` is the whole sequence
    /// (`features x (steps samples)`, or its events); the model must have no
    /// [`LayerNet::segment_problem`].
    pub fn segmented_pass(
        &self,
        x: impl Into<Input<F>>,
        mode: Mode,
        labels: &[u8],
        segment: usize,
        truncate: bool,
    ) -> (f64, usize, Vec<DMatrix<F>>) {
        let samples = labels.len();
        let bounds: Vec<(usize, usize)> =
            (0..self.steps).step_by(segment.max(1)).map(|a| (a, (a + segment.max(1)).min(self.steps))).collect();
        let mut states: Vec<Option<SegmentState<F>>> = vec![None; self.layers.len()];
        let input = self.sequence(x.into());
        let mut saved = Vec::with_capacity(bounds.len());
        let mut output = Vec::new();
        for &(a, b) in &bounds {
            saved.push(states.clone());
            let trace = self.forward_segment(&input, (a, b), samples, mode, &mut states);
            output.extend_from_slice(trace.values.last().expect("input is there").as_slice());
        }
        let out = DMatrix::from_vec(self.classes(), self.steps * samples, output);
        let (loss, d_scores, correct) = Self::loss(&self.reduce_scores(&out), labels);
        let d_out = self.spread_scores(d_scores);
        let mut sums = Sums::new(self);
        for (k, &(a, b)) in bounds.iter().enumerate().rev() {
            let mut states = saved[k].clone();
            let trace = self.forward_segment(&input, (a, b), samples, mode, &mut states);
            let dy = d_out.columns(a * samples, (b - a) * samples).into_owned();
            // Segments refuse batch norm, the one layer whose backward pass exchanges among ranks.
            self.backward_through(&trace, dy, samples, &saved[k], &mut sums, &Alone, |_, _| {});
            if truncate {
                sums.carries.iter_mut().flatten().for_each(|c| c.truncate());
            }
        }
        (loss, correct, self.finish(sums))
    }

    /// The forward pass over steps `a..b` of `input`, its spiking layers starting from `states`,
    /// which are left where the segment ends; an input layer in deviation form deviates from
    /// the whole sequence's base.
    fn forward_segment(
        &self,
        input: &Sequence<F>,
        (a, b): (usize, usize),
        samples: usize,
        mode: Mode,
        states: &mut [Option<SegmentState<F>>],
    ) -> Trace<F> {
        let (x, mut first_spikes) = input.steps((a, b), samples);
        let mut trace = Trace::starting_with(x);
        for (i, state) in states.iter_mut().enumerate() {
            let x = trace.values.last().expect("input is there");
            let layer = &self.layers[i];
            let (y, extra, how) = match &layer.op {
                Op::Spiking(s) => {
                    let how = self.step_forward(false, mode);
                    let (y, tape, end) = s.forward_from(x, b - a, how == StepForward::Smooth, state.as_ref());
                    *state = Some(end);
                    (y, Extra::Spiking(tape), how)
                }
                _ => match first_spikes.take() {
                    Some(spikes) => self.dense_on_events(i, spikes, mode),
                    None => self.apply(i, x, mode),
                },
            };
            trace.push(y, extra, how == StepForward::Smooth);
        }
        trace
    }
}
