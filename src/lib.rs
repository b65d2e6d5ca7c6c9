//! `snn`: a spiking neural network simulator. Networks and stimuli are RON files ([`spec`]),
//! simulated by a time-stepped LIF engine with event-driven spike delivery ([`engine`]),
//! recorded to HDF5 ([`io`]) and drawn with plotters ([`plot`]). [`simulate`] ties them together
//! for the command line.

pub mod commands;
pub mod data;
pub mod engine;
pub mod error;
pub mod spec;

pub use error::{Error, Result};
pub mod io;
pub mod models;
pub mod nir;
pub mod nn;
pub mod plot;
pub mod process;
pub mod ranks;
pub mod recording;
pub mod records;
pub mod rng;
pub mod simulate;
pub mod surrogate;
pub mod train;
