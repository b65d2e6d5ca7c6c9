//! NIR, the Neuromorphic Intermediate Representation that snnTorch, Norse, SpikingJelly, Sinabs,
//! Lava and hardware tool chains read and write: the graph as plain data ([`graph`]) and a
//! step-by-step interpreter with the frameworks' semantics ([`run`]). The file format lives in
//! `io::nir_file`, the commands in `commands::nir`.

pub mod graph;
pub mod run;
