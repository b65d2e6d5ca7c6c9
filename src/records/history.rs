//! Per-epoch training metrics, and the totals of a pass over samples they are made from.

use serde::{Deserialize, Serialize};

/// One entry per completed epoch in every series; per-layer series hold one value per layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub layer_names: Vec<String>,
    pub train_loss: Vec<f64>,
    pub train_accuracy: Vec<f64>,
    pub test_loss: Vec<f64>,
    pub test_accuracy: Vec<f64>,
    /// Training samples per second (forward, backward and update).
    pub samples_per_s: Vec<f64>,
    pub learning_rate: Vec<f64>,
    /// Spikes per neuron per step during training, per layer.
    pub spike_rate: Vec<Vec<f64>>,
    /// Mean Frobenius norm of the batch gradient, per layer.
    pub grad_norm: Vec<Vec<f64>>,
}

impl History {
    /// Appends one epoch: its training and test passes, how long training took, the learning
    /// rate, and the per-layer spike rates and mean gradient norms.
    pub fn push_epoch(
        &mut self,
        train: &PassTotals,
        test: &PassTotals,
        seconds: f64,
        learning_rate: f64,
        spike_rate: Vec<f64>,
        grad_norm: Vec<f64>,
    ) {
        self.train_loss.push(train.mean_loss());
        self.train_accuracy.push(train.accuracy());
        self.test_loss.push(test.mean_loss());
        self.test_accuracy.push(test.accuracy());
        self.samples_per_s.push(train.samples as f64 / seconds);
        self.learning_rate.push(learning_rate);
        self.spike_rate.push(spike_rate);
        self.grad_norm.push(grad_norm);
    }

    pub fn epochs(&self) -> usize {
        self.train_loss.len()
    }

    /// The scalar series by name, in the order files list them.
    pub fn scalar_series(&self) -> [(&'static str, &Vec<f64>); 6] {
        [
            ("train_loss", &self.train_loss),
            ("train_accuracy", &self.train_accuracy),
            ("test_loss", &self.test_loss),
            ("test_accuracy", &self.test_accuracy),
            ("samples_per_s", &self.samples_per_s),
            ("learning_rate", &self.learning_rate),
        ]
    }

    pub fn scalar_series_mut(&mut self) -> [(&'static str, &mut Vec<f64>); 6] {
        [
            ("train_loss", &mut self.train_loss),
            ("train_accuracy", &mut self.train_accuracy),
            ("test_loss", &mut self.test_loss),
            ("test_accuracy", &mut self.test_accuracy),
            ("samples_per_s", &mut self.samples_per_s),
            ("learning_rate", &mut self.learning_rate),
        ]
    }
}

/// Totals of a pass over some samples.
#[derive(Debug, Clone, Default)]
pub struct PassTotals {
    pub samples: usize,
    pub loss: f64,
    pub correct: usize,
    /// Row = true class, column = predicted class.
    pub confusion: Vec<u64>,
    /// Evaluation only: the class predicted for each sample, in the split's order.
    pub predictions: Vec<u8>,
}

impl PassTotals {
    pub fn mean_loss(&self) -> f64 {
        self.loss / self.samples.max(1) as f64
    }

    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.samples.max(1) as f64
    }
}
