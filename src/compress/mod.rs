//! Post-training compression of trained weights: quantizing a model's linear layers
//! ([`quantize`]), GPTQ and round-to-nearest on one weight matrix ([`gptq`]), and the f64
//! linear algebra GPTQ needs ([`linalg`]); pruning linear weights to exact zeros ([`prune`]).

pub mod gptq;
pub mod linalg;
pub mod prune;
pub mod quantize;
pub mod structured;
