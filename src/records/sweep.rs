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
    /// The run stopped early because its loss or a gradient stopped being finite; its history
    /// ends at the last good epoch, whose test accuracy it scores.
    pub diverged: bool,
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
    /// Runs that diverged (scored at their last good epoch).
    pub diverged: usize,
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
            let diverged = runs.iter().filter(|r| r.diverged).count();
            // A run that diverged before finishing an epoch has no score: it counts as diverged.
            let runs: Vec<&RunResult> = runs.into_iter().filter(|r| r.history.epochs() > 0).collect();
            if runs.is_empty() {
                return Some(Row {
                    surrogate: s.name().to_owned(),
                    runs: diverged,
                    mean: f64::NAN,
                    std: f64::NAN,
                    epochs_to_95: f64::NAN,
                    dead_share: f64::NAN,
                    diverged,
                    curve: Vec::new(),
                    accuracies: Vec::new(),
                });
            }
            let accuracies: Vec<f64> = runs.iter().map(|r| r.final_accuracy()).collect();
            let epochs = runs.iter().map(|r| r.history.epochs()).min().unwrap_or(0);
            let curve = (0..epochs)
                .map(|e| mean(&runs.iter().map(|r| r.history.test_accuracy[e]).collect::<Vec<_>>()))
                .collect();
            Some(Row {
                surrogate: s.name().to_owned(),
                runs: runs.len() + diverged - runs.iter().filter(|r| r.diverged).count(),
                mean: mean(&accuracies),
                std: std(&accuracies),
                epochs_to_95: mean(&runs.iter().map(|r| r.epochs_to_95() as f64).collect::<Vec<_>>()),
                dead_share: mean(&runs.iter().map(|r| r.dead_share).collect::<Vec<_>>()),
                diverged,
                curve,
                accuracies,
            })
        })
        .collect()
}
