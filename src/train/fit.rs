//! The one training loop every model runs as a layer stack ([`LayerRun`]; population chains
//! are compiled onto one by `models::chain`): shuffle by the seed's stream of the epoch, one
//! optimizer step per batch at the schedule's learning rate, stop with the batch named when the
//! loss or a gradient stops being finite, evaluate the test split, append the epoch to the
//! history. Checkpoints are written and read here too.

use std::time::Instant;

use rand::seq::SliceRandom;

use crate::data::idx::Dataset;
use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::models::trainer::LayerRun;
use crate::ranks::Exchange;
use crate::records::PassTotals;
use crate::rng::{self, Purpose};

/// One epoch over `data.train`, then the test pass on `data.test`; `progress` gets (samples
/// done, running loss, running accuracy) after each batch.
pub fn epoch(
    run: &mut LayerRun,
    data: &Dataset,
    ranks: &dyn Exchange,
    progress: &mut dyn FnMut(usize, f64, f64),
) -> Result<()> {
    let (epoch, seed, training) = {
        let s = &run.state;
        (s.epochs_done, s.seed, s.training.clone())
    };
    let started = Instant::now();
    let mut order: Vec<usize> = (0..data.train.len()).collect();
    order.shuffle(&mut rng::stream(seed, Purpose::Shuffle, epoch as u64));
    let lr_factor = training.schedule.factor(epoch, training.epochs);
    let mut totals = PassTotals::default();
    let mut norms: Vec<f64> = Vec::new();
    let mut batches = 0;
    for (b, indices) in order.chunks(training.batch_size as usize).enumerate() {
        let batch_norms =
            run.train_batch(&data.train, indices, epoch, lr_factor, &mut totals, ranks).map_err(|loss| {
                let what = if loss.is_finite() {
                    format!(
                        "a gradient overflowed (loss {loss:.4}) in epoch {} batch {}; over long sequences \
                         detach_reset or a smaller learning rate often helps",
                        epoch + 1,
                        b + 1
                    )
                } else {
                    format!("the loss became {loss} in epoch {} batch {}", epoch + 1, b + 1)
                };
                Error::Diverged(format!("{what}; the last good checkpoint is kept"))
            })?;
        norms.resize(batch_norms.len(), 0.0);
        norms.iter_mut().zip(batch_norms).for_each(|(n, b)| *n += b);
        batches += 1;
        progress(totals.samples, totals.mean_loss(), totals.accuracy());
    }
    let seconds = started.elapsed().as_secs_f64();
    let (test, activity) = run.test(&data.test);
    let state = &mut run.state;
    state.history.push_epoch(
        &totals,
        &test,
        seconds,
        training.optimizer.lr() * lr_factor,
        activity,
        norms.iter().map(|n| n / batches.max(1) as f64).collect(),
    );
    state.epochs_done += 1;
    Ok(())
}

/// The run as a checkpoint.
pub fn checkpoint(run: &LayerRun) -> Checkpoint {
    let s = &run.state;
    let (layers, buffers) = run.parameters();
    Checkpoint {
        network_spec: s.network_text.clone(),
        training: ron::to_string(&s.training).expect("training settings serialise"),
        seed: s.seed,
        epochs_done: s.epochs_done,
        layers,
        buffers,
        optimizer: s.optimizer.clone(),
        history: s.history.clone(),
    }
}

/// Continues from a checkpoint written by [`checkpoint`] for the same network.
pub fn restore(run: &mut LayerRun, c: Checkpoint) -> Result<()> {
    run.load_parameters(&c)?;
    let s = &mut run.state;
    s.optimizer = c.optimizer;
    s.history = c.history;
    s.epochs_done = c.epochs_done;
    s.seed = c.seed;
    Ok(())
}
