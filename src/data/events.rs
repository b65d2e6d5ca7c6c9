//! Sparse values over time: for each step, the (index, value) pairs of the inputs or neurons that
//! are active. Encoders write them, the forward pass reads them (adding only active columns of
//! the weights) and records each layer's spikes in them.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Sparse values over time: per step, (index, value) pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Events<F> {
    starts: Vec<usize>,
    index: Vec<u32>,
    value: Vec<F>,
}

impl<F> Default for Events<F> {
    fn default() -> Self {
        Events { starts: vec![0], index: Vec::new(), value: Vec::new() }
    }
}

impl<F: Copy> Events<F> {
    pub fn steps(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    pub fn clear(&mut self) {
        self.starts.clear();
        self.starts.push(0);
        self.index.clear();
        self.value.clear();
    }

    pub fn push(&mut self, index: u32, value: F) {
        self.index.push(index);
        self.value.push(value);
    }

    pub fn end_step(&mut self) {
        self.starts.push(self.index.len());
    }

    pub fn step(&self, n: usize) -> (&[u32], &[F]) {
        let r = self.starts[n]..self.starts[n + 1];
        (&self.index[r.clone()], &self.value[r])
    }

    pub fn total(&self) -> usize {
        self.index.len()
    }

    /// The steps of `parts`, one list after another, as one list: the pairs copied in parallel,
    /// each part into its own stretch.
    pub fn concat(parts: &[Events<F>]) -> Events<F>
    where
        F: Send + Sync,
    {
        let mut starts = vec![0];
        for part in parts {
            let offset = *starts.last().expect("starts holds 0");
            starts.extend(part.starts[1..].iter().map(|&s| offset + s));
        }
        Self::joined(starts, parts.iter().map(|part| (&part.index[..], &part.value[..])).collect(), 1)
    }

    /// The steps `steps` of `parts`, each (part, step), in that order, as one list: the pairs
    /// copied in parallel, step by step into its own stretch.
    pub fn gather(parts: &[Events<F>], steps: impl Iterator<Item = (usize, usize)>) -> Events<F>
    where
        F: Send + Sync,
    {
        let mut starts = vec![0];
        let stretches: Vec<(&[u32], &[F])> = steps
            .map(|(part, step)| {
                let pairs = parts[part].step(step);
                starts.push(starts.last().expect("starts holds 0") + pairs.0.len());
                pairs
            })
            .collect();
        // Steps are short: a few dozen to a task.
        Self::joined(starts, stretches, 32)
    }

    /// The list of steps `starts` whose pairs are `stretches`, one after another: each copied in
    /// parallel into its own part of the list, at least `per_task` stretches to a task.
    fn joined(starts: Vec<usize>, stretches: Vec<(&[u32], &[F])>, per_task: usize) -> Events<F>
    where
        F: Send + Sync,
    {
        let total = *starts.last().expect("starts holds 0");
        let (mut index, mut value) = (Vec::with_capacity(total), Vec::with_capacity(total));
        let (mut index_left, mut value_left) =
            (&mut index.spare_capacity_mut()[..total], &mut value.spare_capacity_mut()[..total]);
        let mut targets = Vec::with_capacity(stretches.len());
        for (from_i, from_v) in stretches {
            let (i, rest_i) = std::mem::take(&mut index_left).split_at_mut(from_i.len());
            let (v, rest_v) = std::mem::take(&mut value_left).split_at_mut(from_v.len());
            (index_left, value_left) = (rest_i, rest_v);
            targets.push(((from_i, from_v), (i, v)));
        }
        targets.into_par_iter().with_min_len(per_task).for_each(|((from_i, from_v), (i, v))| {
            i.iter_mut().zip(from_i).for_each(|(to, &from)| *to = MaybeUninit::new(from));
            v.iter_mut().zip(from_v).for_each(|(to, &from)| *to = MaybeUninit::new(from));
        });
        // SAFETY: the stretches cover the first `total` slots, and each was written.
        unsafe {
            index.set_len(total);
            value.set_len(total);
        }
        Events { starts, index, value }
    }

    /// Appends, in order, the pairs whose flag is set. The pairs are written first and the
    /// length advanced by the flag, so there is no branch on it: where flags are coin tosses
    /// a branch mispredicts for every other pair.
    pub fn push_kept(&mut self, pairs: impl ExactSizeIterator<Item = (u32, F, bool)>) {
        let (base, n) = (self.index.len(), pairs.len());
        self.index.reserve(n);
        self.value.reserve(n);
        let index = &mut self.index.spare_capacity_mut()[..n];
        let value = &mut self.value.spare_capacity_mut()[..n];
        let mut kept = 0;
        for (i, x, keep) in pairs {
            index[kept].write(i);
            value[kept].write(x);
            kept += keep as usize;
        }
        // SAFETY: slots base..base + kept were written above (kept <= n; an iterator longer
        // than its stated length panics at the index instead).
        unsafe {
            self.index.set_len(base + kept);
            self.value.set_len(base + kept);
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_kept_appends_exactly_the_flagged_pairs_in_order() {
        let mut events = Events::default();
        events.push(7, 0.5);
        events.push_kept([(1, 1.0, true), (2, 2.0, false), (3, 3.0, true), (4, 4.0, false)].into_iter());
        events.push_kept([(5, 5.0, false)].into_iter());
        events.end_step();
        assert_eq!(events.step(0), (&[7, 1, 3][..], &[0.5, 1.0, 3.0][..]));
    }

    #[test]
    fn joined_parts_equal_one_list_written_step_by_step() {
        // Steps of 0 to 4 pairs, cut into parts of 0 to 3 steps (an empty part among them).
        let steps: Vec<Vec<(u32, f32)>> =
            (0..9).map(|t| (0..t % 5).map(|k| (t * 10 + k, k as f32 - 0.5)).collect()).collect();
        let list = |steps: &[Vec<(u32, f32)>]| {
            let mut events = Events::default();
            for step in steps {
                step.iter().for_each(|&(i, x)| events.push(i, x));
                events.end_step();
            }
            events
        };
        let parts: Vec<Events<f32>> = [0..3, 3..3, 3..4, 4..6, 6..9].map(|r| list(&steps[r])).to_vec();
        assert_eq!(Events::concat(&parts), list(&steps));
        assert_eq!(Events::<f32>::concat(&[]), Events::default());
    }

    #[test]
    fn gathered_steps_equal_the_steps_pushed_in_that_order() {
        let part = |seed: u32| {
            let mut events = Events::default();
            for t in 0..3 {
                (0..(seed + t) % 4).for_each(|k| events.push(seed * 100 + t * 10 + k, k as f32));
                events.end_step();
            }
            events
        };
        let parts = [part(1), part(2), part(5)];
        let order = [(2, 0), (0, 2), (1, 1), (0, 0), (2, 2)];
        let gathered = Events::gather(&parts, order.into_iter());
        let mut pushed = Events::default();
        for (p, t) in order {
            let (index, value) = parts[p].step(t);
            index.iter().zip(value).for_each(|(&i, &v)| pushed.push(i, v));
            pushed.end_step();
        }
        assert_eq!(gathered, pushed);
    }
}
