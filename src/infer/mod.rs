//! Running a trained model: autoregressive sampling and translation.
pub mod sample;
pub mod translate;
