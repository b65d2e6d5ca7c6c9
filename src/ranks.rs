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
