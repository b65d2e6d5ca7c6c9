//! Data sets generated instead of read from files. The store-and-recall memory task's samples
//! are their cue classes alone, one "pixel" each; the [`Encoder::Recall`] encoder turns a cue
//! into the trial's input spikes, drawn afresh every epoch like rate-coded images.
//!
//! [`Encoder::Recall`]: super::encode::Encoder::Recall

use rand::RngExt;

use super::idx::{Dataset, Images, Split};
use crate::rng::{self, Purpose};

/// Samples of the recall task when the training section does not give its sizes.
pub const RECALL_TRAIN_SAMPLES: usize = 4096;
pub const RECALL_TEST_SAMPLES: usize = 1024;

/// `train` and `test` cues drawn uniformly from `classes` classes. The cues do not depend on
/// the run's seed, so every run (and every surrogate or delay of a sweep) sees the same ones.
pub fn recall(classes: u32, train: usize, test: usize) -> Dataset {
    let split = |which: u64, n: usize| {
        let mut stream = rng::stream(0, Purpose::Task, which);
        let cues: Vec<u8> = (0..n).map(|_| stream.random_range(0..classes) as u8).collect();
        Split { images: Images { count: n, rows: 1, cols: 1, pixels: cues.clone() }, labels: cues }
    };
    Dataset { train: split(0, train), test: split(1, test) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::encode::Encoder;
    use crate::data::events::Events;

    #[test]
    fn a_trial_shows_its_cue_then_noise_then_the_recall_signal() {
        let data = recall(3, 200, 10);
        assert_eq!(data.train.images.pixels, data.train.labels);
        assert!((0..3).all(|c| data.train.labels.iter().filter(|&&l| l == c).count() > 40));
        let encoder = Encoder::Recall {
            classes: 3,
            group: 4,
            cue_steps: 5,
            delay: 30,
            recall_steps: 5,
            cue_probability: 1.0,
            noise_probability: 0.0,
        };
        assert_eq!((encoder.inputs(1), encoder.sequence_steps(1), encoder.scored_from()), (16, Some(40), 35));
        let mut events = Events::default();
        encoder.encode(&[2], 40, &mut rng::stream(1, Purpose::Encoding, 0), &mut events);
        for t in 0..40 {
            let expected: Vec<u32> = match t {
                0..5 => (8..12).collect(),
                35..40 => (12..16).collect(),
                _ => vec![],
            };
            assert_eq!(events.step(t).0, &expected[..], "step {t}");
        }
    }
}
