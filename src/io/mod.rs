//! Files the runs write: HDF5 recordings, written atomically.

pub mod atomic;
pub mod hdf5_file;
