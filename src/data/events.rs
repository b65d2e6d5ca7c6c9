//! Sparse values over time: for each step, the (index, value) pairs of the inputs or neurons that
//! are active. Encoders write them, the forward pass reads them (adding only active columns of
//! the weights) and records each layer's spikes in them.

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
}

impl<F: Copy + Default> Events<F> {
    /// Appends, in order, the pairs whose flag is set. The pairs are written first and the
    /// length advanced by the flag, so there is no branch on it: where flags are coin tosses
    /// a branch mispredicts for every other pair.
    pub fn push_kept(&mut self, pairs: impl ExactSizeIterator<Item = (u32, F, bool)>) {
        let base = self.index.len();
        self.index.resize(base + pairs.len(), 0);
        self.value.resize(base + pairs.len(), F::default());
        let mut kept = base;
        for (i, x, keep) in pairs {
            self.index[kept] = i;
            self.value[kept] = x;
            kept += keep as usize;
        }
        self.index.truncate(kept);
        self.value.truncate(kept);
    }
}
