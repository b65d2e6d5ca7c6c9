//! The results of a surrogate sweep: one record per finished run, and the table rows (one per
//! surrogate) made from them.

use super::History;
use crate::surrogate::Surrogate;

/// One finished run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub surrogate: String,
    pub seed: u64,
    pub history: History,
    pub dead_share: f64,
}

impl RunResult {
    pub fn final_accuracy(&self) -> f64 {
        self.history.test_accuracy.last().copied().unwrap_or(f64::NAN)
    }

    /// The first epoch (1-based) whose test accuracy reaches 95% of the final one.
    pub fn epochs_to_95(&self) -> usize {
        let target = 0.95 * self.final_accuracy();
        self.history.test_accuracy.iter().position(|&a| a >= target).map_or(0, |e| e + 1)
    }
}

/// One surrogate over all seeds.
#[derive(Debug, Clone)]
pub struct Row {
    pub surrogate: String,
    pub runs: usize,
    pub mean: f64,
    /// Sample standard deviation over seeds (0 for one seed).
    pub std: f64,
    pub epochs_to_95: f64,
    pub dead_share: f64,
    /// Mean test accuracy per epoch over seeds.
    pub curve: Vec<f64>,
    pub accuracies: Vec<f64>,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn std(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// One row per surrogate that has runs.
pub fn rows(results: &[RunResult], surrogates: &[Surrogate]) -> Vec<Row> {
    surrogates
        .iter()
        .filter_map(|s| {
            let runs: Vec<&RunResult> = results.iter().filter(|r| r.surrogate == s.name()).collect();
            if runs.is_empty() {
                return None;
            }
            let accuracies: Vec<f64> = runs.iter().map(|r| r.final_accuracy()).collect();
            let epochs = runs.iter().map(|r| r.history.epochs()).min().unwrap_or(0);
            let curve = (0..epochs)
                .map(|e| mean(&runs.iter().map(|r| r.history.test_accuracy[e]).collect::<Vec<_>>()))
                .collect();
            Some(Row {
                surrogate: s.name().to_owned(),
                runs: runs.len(),
                mean: mean(&accuracies),
                std: std(&accuracies),
                epochs_to_95: mean(&runs.iter().map(|r| r.epochs_to_95() as f64).collect::<Vec<_>>()),
                dead_share: mean(&runs.iter().map(|r| r.dead_share).collect::<Vec<_>>()),
                curve,
                accuracies,
            })
        })
        .collect()
}
