//! Per-epoch training metrics.

/// One entry per completed epoch in every series; per-layer series hold one value per layer.
#[derive(Debug, Clone, Default, PartialEq)]
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
