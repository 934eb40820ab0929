//! lmlab: Transformer language models with explicit forward/backward kernels.
pub mod data;
pub mod io;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod train;
