//! Post-training compression of trained weights: GPTQ and round-to-nearest quantization
//! ([`gptq`]), on flat f32 buffers like the kernels, with the f64 linear algebra they need.

pub mod gptq;
pub mod linalg;
