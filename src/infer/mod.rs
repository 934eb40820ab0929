//! Running a trained model: autoregressive sampling.
pub mod sample;
