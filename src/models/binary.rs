//! Bit-packed inference for binary layers: a block `Dense(binary) -> BatchNorm -> Sign` whose
//! input is itself a sign output multiplies +-1 vectors, which is `n - 2 popcount(x XOR w)` over
//! 64 inputs per machine word. The batch norm and sign then reduce to one integer threshold per
//! unit on the popcount, found by evaluating the float path's own arithmetic on every possible
//! count, so the packed path gives exactly the float path's outputs, not just nearly.
//!
//! Layers outside such blocks (the first layer, which sees real pixels, and the real-valued
//! output layer) run in float as usual.
//!
//! Training uses the product alone ([`crate::nn::bits::sign_product`]): a binarised layer fed by signs gets the
//! integer sums by XNOR and popcount, then goes on in float (batch norm, sign, backward pass).

use std::ops::Range;

use nalgebra::DMatrix;
use rayon::prelude::*;

use super::net::{LayerNet, Op};
use crate::error::{Error, Result};
use crate::nn::bits::{PackedBlock, pack_columns, pack_rows};

/// A layered model with its bit-packable blocks packed.
#[derive(Debug, Clone)]
pub struct PackedNet {
    /// Layers before the packed run, the packed run (a multiple of 3 layers), and after.
    pub packed_layers: Range<usize>,
    pub blocks: Vec<PackedBlock>,
}

/// Whether layer `i` is the start of a packable block whose input is a sign output.
fn packable(net: &LayerNet<f32>, i: usize) -> bool {
    let is_sign = |k: usize| matches!(&net.layers[k].op, Op::Step { step, .. } if step.low == -1.0);
    let fed_by_sign =
        net.layers[..i].iter().rposition(|l| !matches!(l.op, Op::Dropout(_) | Op::Flatten)).is_some_and(is_sign);
    i + 2 < net.layers.len()
        && matches!(&net.layers[i].op, Op::Dense(l) if l.binary)
        && matches!(net.layers[i + 1].op, Op::BatchNorm(_))
        && is_sign(i + 2)
        && fed_by_sign
}

impl PackedNet {
    /// Packs the first run of packable blocks of `net`, or says why there is none.
    pub fn new(net: &LayerNet<f32>) -> Result<Self> {
        if net.smooth {
            return Err(Error::Training("a model in smooth mode has no binary values to pack".into()));
        }
        let start = (0..net.layers.len()).find(|&i| packable(net, i)).ok_or_else(|| {
            Error::Training(
                "the model has no Dense(weights: Binary) -> BatchNorm -> Sign block fed by a Sign layer to pack".into(),
            )
        })?;
        let mut end = start;
        let mut blocks = Vec::new();
        while end < net.layers.len() && packable(net, end) {
            let (Op::Dense(dense), Op::BatchNorm(bn)) = (&net.layers[end].op, &net.layers[end + 1].op) else {
                unreachable!("checked by packable")
            };
            let (units, inputs) = dense.weight.shape();
            let weights = pack_rows(&dense.effective(None));
            let (scale, shift) = bn.eval_affine();
            let ranges = (0..units)
                .map(|j| {
                    // Exactly what the float path computes from the integer sum d = n - 2 count.
                    let on = |count: usize| {
                        let d = (inputs as i64 - 2 * count as i64) as f32;
                        let v = match &dense.bias {
                            Some(b) => d + b[j],
                            None => d,
                        };
                        v * scale[j] + shift[j] >= 0.0
                    };
                    let table: Vec<bool> = (0..=inputs).map(on).collect();
                    let (Some(lo), Some(hi)) = (table.iter().position(|&o| o), table.iter().rposition(|&o| o)) else {
                        return Ok((1, 0));
                    };
                    // Rounding is monotone, so the counts that turn a unit on are contiguous
                    // (fewer mismatches for a positive scale, more for a negative); check it.
                    if table[lo..=hi].iter().any(|&o| !o) {
                        return Err(Error::Training(format!(
                            "{}: unit {j}'s batch norm is not monotone in its input (NaN parameters?)",
                            net.layers[end + 1].label
                        )));
                    }
                    Ok((lo as u64, hi as u64))
                })
                .collect::<Result<Vec<_>>>()?;
            blocks.push(PackedBlock::new(inputs, weights, ranges));
            end += 3;
        }
        Ok(PackedNet { packed_layers: start..end, blocks })
    }

    /// Scores of a batch (`pixels x samples`): float layers, packed blocks, float layers.
    pub fn forward(&self, net: &mut LayerNet<f32>, x: DMatrix<f32>) -> DMatrix<f32> {
        let samples = x.ncols();
        let before = net.eval_layers(x, 0..self.packed_layers.start, false);
        let bits = self.forward_blocks(&self.pack_input(&before));
        net.eval_layers(self.unpack_output(&bits, samples), self.packed_layers.end..net.layers.len(), false)
    }

    /// One block over the samples, in parallel over fixed groups of samples.
    fn par_forward(block: &PackedBlock, bits: &[u64]) -> Vec<u64> {
        const GROUP: usize = 16;
        let parts: Vec<Vec<u64>> =
            bits.par_chunks(block.words() * GROUP).map(|x| block.forward(x, x.len() / block.words())).collect();
        parts.concat()
    }

    /// The packed blocks alone on packed inputs (what the benchmark times).
    pub fn forward_blocks(&self, bits: &[u64]) -> Vec<u64> {
        let mut bits = bits.to_vec();
        for block in &self.blocks {
            bits = Self::par_forward(block, &bits);
        }
        bits
    }

    /// The last block's packed outputs as a `units x samples` batch of +-1.
    pub fn unpack_output(&self, bits: &[u64], samples: usize) -> DMatrix<f32> {
        let units = self.blocks.last().expect("at least one block").units();
        let words = units.div_ceil(64);
        DMatrix::from_fn(units, samples, |i, s| if bits[s * words + i / 64] >> (i % 64) & 1 == 1 { 1.0 } else { -1.0 })
    }

    /// Packs a batch of +-1 activations for the first block.
    pub fn pack_input(&self, x: &DMatrix<f32>) -> Vec<u64> {
        pack_columns(x.as_slice(), self.blocks[0].inputs())
    }
}

/// Packed against float inference on a set of images.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedReport {
    pub samples: usize,
    /// Samples whose packed scores equal the float scores bit for bit.
    pub identical: usize,
    /// Samples with the same predicted class.
    pub same_prediction: usize,
    /// Seconds spent in the packable layers: float (matrix product, batch norm, sign) and packed
    /// (XNOR-popcount and thresholds, packing included).
    pub float_s: f64,
    pub packed_s: f64,
}

/// Runs `split` through `net` both ways, in batches of `batch` images.
pub fn compare(
    net: &mut LayerNet<f32>,
    packed: &PackedNet,
    split: &crate::data::idx::Split,
    batch: usize,
) -> PackedReport {
    use std::time::Instant;
    let mut report = PackedReport { samples: 0, identical: 0, same_prediction: 0, float_s: 0.0, packed_s: 0.0 };
    let indices: Vec<usize> = (0..split.len()).collect();
    let range = packed.packed_layers.clone();
    for chunk in indices.chunks(batch.max(1)) {
        let before = net.eval_layers(super::trainer::batch(split, chunk), 0..range.start, false);
        let started = Instant::now();
        let hidden = net.eval_layers(before.clone(), range.clone(), false);
        report.float_s += started.elapsed().as_secs_f64();
        let float_scores = net.eval_layers(hidden, range.end..net.layers.len(), false);
        let started = Instant::now();
        let bits = packed.forward_blocks(&packed.pack_input(&before));
        report.packed_s += started.elapsed().as_secs_f64();
        let packed_scores =
            net.eval_layers(packed.unpack_output(&bits, chunk.len()), range.end..net.layers.len(), false);
        for (f, p) in float_scores.column_iter().zip(packed_scores.column_iter()) {
            report.samples += 1;
            report.identical += (f == p) as usize;
            report.same_prediction +=
                (crate::nn::loss::argmax(f.as_slice()) == crate::nn::loss::argmax(p.as_slice())) as usize;
        }
    }
    report
}
