//! Running a trained model: autoregressive sampling and translation.
pub mod beam;
pub mod embed;
pub mod llama2c;
pub mod sample;
pub mod translate;
