//! lmlab: Transformer language models with explicit forward/backward kernels.
// Numeric kernels index several arrays with one loop variable; iterator zips would hide that.
#![allow(clippy::needless_range_loop)]
pub mod bench;
pub mod compress;
pub mod config;
pub mod data;
pub mod demo;
pub mod dist;
pub mod eval;
pub mod explain;
pub mod infer;
pub mod inspect;
pub mod io;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod profile;
pub mod serve;
pub mod train;
pub mod util;
