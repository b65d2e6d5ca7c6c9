//! Files the runs write: HDF5 recordings and training checkpoints, written atomically.

pub mod atomic;
pub mod checkpoint;
pub mod hdf5_file;
pub mod hdf5_util;
pub mod nir_file;
