//! What an implicit concept bottleneck model (ICBM) learned: its concept layer (the last
//! Heaviside layer in smooth mode, feeding the final Dense classifier), which images turn each
//! concept on most strongly, and why one image got its class.
//!
//! At evaluation a concept is exactly H(x) of its pre-activation x, so a class score is the
//! classifier's bias plus the weights of the concepts that fired: each fired concept's weight is
//! its whole contribution.

use nalgebra::DMatrix;

use super::net::{LayerNet, Op};
use super::trainer::batch;
use crate::data::idx::Split;
use crate::error::{Error, Result};
use crate::nn::loss::argmax;
use crate::records::Explanation;

/// Where the concepts sit in a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConceptLayer {
    /// The smooth Heaviside layer whose outputs are the concepts.
    pub step: usize,
    /// The final Dense layer reading them.
    pub classifier: usize,
}

impl ConceptLayer {
    /// The concept layer of `net`, or why it has none.
    pub fn find(net: &LayerNet<f32>) -> Result<Self> {
        let step = net
            .layers
            .iter()
            .rposition(|l| matches!(l.op, Op::Step { smooth: true, .. }))
            .ok_or_else(|| Error::Training("the model has no concept layer (Heaviside(mode: Smooth))".into()))?;
        let classifier = net.layers.len() - 1;
        let between_is_identity =
            net.layers[step + 1..classifier].iter().all(|l| matches!(l.op, Op::Dropout(_) | Op::Flatten));
        if !between_is_identity || !matches!(net.layers[classifier].op, Op::Dense(_)) {
            return Err(Error::Training(format!(
                "{} must feed the final Dense layer directly for its concepts to explain the class",
                net.layers[step].label
            )));
        }
        Ok(ConceptLayer { step, classifier })
    }

    pub fn concepts(&self, net: &LayerNet<f32>) -> usize {
        net.layers[self.step].output.size()
    }

    /// The classifier's weights (classes x concepts) and biases.
    pub fn classifier<'a>(&self, net: &'a LayerNet<f32>) -> (&'a DMatrix<f32>, Option<&'a DMatrix<f32>>) {
        match &net.layers[self.classifier].op {
            Op::Dense(l) => (&l.weight, l.bias.as_ref()),
            _ => unreachable!("checked in find"),
        }
    }

    /// Concept pre-activations (concepts x samples) of images `indices`.
    pub fn pre_activations(&self, net: &mut LayerNet<f32>, split: &Split, indices: &[usize]) -> DMatrix<f32> {
        let mut out = DMatrix::zeros(self.concepts(net), indices.len());
        for (k, chunk) in indices.chunks(500).enumerate() {
            let pre = net.eval_layers(batch(split, chunk), 0..self.step, false);
            out.columns_mut(k * 500, chunk.len()).copy_from(&pre);
        }
        out
    }
}

/// For every concept, the `count` images of `split` with the largest pre-activation, best first.
pub fn top_images(net: &mut LayerNet<f32>, layer: ConceptLayer, split: &Split, count: usize) -> Vec<Vec<usize>> {
    let indices: Vec<usize> = (0..split.len()).collect();
    let pre = layer.pre_activations(net, split, &indices);
    (0..pre.nrows())
        .map(|c| {
            let mut order = indices.clone();
            order.sort_by(|&a, &b| pre[(c, b)].total_cmp(&pre[(c, a)]).then(a.cmp(&b)));
            order.truncate(count);
            order
        })
        .collect()
}

pub fn explain(net: &mut LayerNet<f32>, split: &Split, index: usize) -> Result<Explanation> {
    if index >= split.len() {
        return Err(Error::Training(format!(
            "--index {index}: the test set has {} images (0 to {})",
            split.len(),
            split.len() - 1
        )));
    }
    let layer = ConceptLayer::find(net)?;
    let pre = layer.pre_activations(net, split, &[index]);
    let on: Vec<usize> = (0..pre.nrows()).filter(|&c| pre[(c, 0)] >= 0.0).collect();
    // The scores the hardened model computes: bias plus the weights of the fired concepts.
    let hard = DMatrix::from_fn(pre.nrows(), 1, |c, _| if pre[(c, 0)] >= 0.0 { 1.0f32 } else { 0.0 });
    let scores = net.eval_layers(hard, layer.step + 1..net.layers.len(), false);
    let scores: Vec<f32> = scores.iter().copied().collect();
    let predicted = argmax(&scores);
    let (weights, bias) = layer.classifier(net);
    let mut fired: Vec<(usize, f32)> = on.iter().map(|&c| (c, weights[(predicted, c)])).collect();
    fired.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(Explanation {
        index,
        label: split.labels[index] as usize,
        predicted,
        fired,
        bias: bias.map_or(0.0, |b| b[predicted]),
        scores,
        concepts: pre.nrows(),
    })
}
