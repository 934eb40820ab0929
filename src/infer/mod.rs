//! Running a trained model: autoregressive sampling and translation.
pub mod beam;
pub mod checkpoint_sampler;
pub mod embed;
pub mod embed_driver;
pub mod llama2c;
pub mod sample;
pub mod translate;
