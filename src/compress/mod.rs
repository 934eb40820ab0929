//! Making models smaller: quantization (`quantize.rs`, GPTQ in `gptq.rs`).
pub mod quantize;
