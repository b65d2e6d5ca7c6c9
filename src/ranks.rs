//! The processes a simulation is shared among (MPI ranks), seen through the few collective
//! operations the engine needs. Without the `mpi` feature, or when not started by `mpirun`,
//! there is one process ([`Alone`]) and the operations cost nothing.

/// Collective operations over every rank; each is called by every rank in the same order.
pub trait Exchange {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Every rank's `mine`, concatenated in rank order; all ranks receive the same.
    fn all_gather(&self, mine: &[u32]) -> Vec<u32>;
    /// The sum of every rank's `x`.
    fn sum(&self, x: u64) -> u64;
    /// Stops every rank with `code`, after an error on this one, so none waits for it forever.
    fn abort(&self, code: i32) -> !;
}

impl std::fmt::Debug for dyn Exchange + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rank {} of {}", self.rank(), self.size())
    }
}

/// One process, alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Alone;

impl Exchange for Alone {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_gather(&self, mine: &[u32]) -> Vec<u32> {
        mine.to_vec()
    }

    fn sum(&self, x: u64) -> u64 {
        x
    }

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

#[cfg(feature = "mpi")]
pub use self::mpi_ranks::Mpi;

#[cfg(feature = "mpi")]
mod mpi_ranks {
    use mpi::collective::SystemOperation;
    use mpi::datatype::PartitionMut;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;

    use super::Exchange;

    /// The ranks of `MPI_COMM_WORLD`.
    pub struct Mpi {
        world: SimpleCommunicator,
    }

    impl Mpi {
        pub fn new(world: SimpleCommunicator) -> Self {
            Mpi { world }
        }
    }

    impl Exchange for Mpi {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }

        fn size(&self) -> usize {
            self.world.size() as usize
        }

        fn all_gather(&self, mine: &[u32]) -> Vec<u32> {
            let mut counts = vec![0i32; self.size()];
            self.world.all_gather_into(&(mine.len() as i32), &mut counts[..]);
            let displs: Vec<i32> = counts.iter().scan(0, |at, &c| Some(std::mem::replace(at, *at + c))).collect();
            let mut all = vec![0u32; counts.iter().map(|&c| c as usize).sum()];
            let mut partition = PartitionMut::new(&mut all[..], counts, displs);
            self.world.all_gather_varcount_into(mine, &mut partition);
            all
        }

        fn sum(&self, x: u64) -> u64 {
            let mut total = 0u64;
            self.world.all_reduce_into(&x, &mut total, SystemOperation::sum());
            total
        }

        fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
    }
}

/// Values flattened into the 32-bit words [`Exchange::all_gather`] carries, bit for bit.
#[derive(Debug, Clone, Default)]
pub struct Words(pub Vec<u32>);

impl Words {
    pub fn push_u64(&mut self, x: u64) {
        self.0.extend([(x >> 32) as u32, x as u32]);
    }

    pub fn push_f64(&mut self, x: f64) {
        self.push_u64(x.to_bits());
    }

    /// A length, then the values.
    pub fn push_f32s(&mut self, xs: &[f32]) {
        self.push_u64(xs.len() as u64);
        self.0.extend(xs.iter().map(|x| x.to_bits()));
    }

    /// A length, then the values.
    pub fn push_u64s(&mut self, xs: &[u64]) {
        self.push_u64(xs.len() as u64);
        xs.iter().for_each(|&x| self.push_u64(x));
    }
}

/// Reads back what [`Words`] wrote, in the same order.
#[derive(Debug, Clone)]
pub struct WordReader<'a> {
    words: &'a [u32],
    at: usize,
}

impl<'a> WordReader<'a> {
    pub fn new(words: &'a [u32]) -> Self {
        WordReader { words, at: 0 }
    }

    pub fn done(&self) -> bool {
        self.at >= self.words.len()
    }

    pub fn u64(&mut self) -> u64 {
        let x = ((self.words[self.at] as u64) << 32) | self.words[self.at + 1] as u64;
        self.at += 2;
        x
    }

    pub fn f64(&mut self) -> f64 {
        f64::from_bits(self.u64())
    }

    pub fn f32s(&mut self) -> Vec<f32> {
        let n = self.u64() as usize;
        let xs = self.words[self.at..self.at + n].iter().map(|&w| f32::from_bits(w)).collect();
        self.at += n;
        xs
    }

    pub fn u64s(&mut self) -> Vec<u64> {
        let n = self.u64() as usize;
        (0..n).map(|_| self.u64()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_read_back_bit_for_bit() {
        let mut w = Words::default();
        w.push_u64(u64::MAX - 3);
        w.push_f64(-0.1);
        w.push_f32s(&[1.5, f32::MIN_POSITIVE, -0.0]);
        w.push_u64s(&[7, 1 << 40]);
        let mut r = WordReader::new(&w.0);
        assert_eq!(r.u64(), u64::MAX - 3);
        assert_eq!(r.f64().to_bits(), (-0.1f64).to_bits());
        assert_eq!(
            r.f32s().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            [1.5f32, f32::MIN_POSITIVE, -0.0].map(f32::to_bits)
        );
        assert_eq!(r.u64s(), [7, 1 << 40]);
        assert!(r.done());
    }
}
