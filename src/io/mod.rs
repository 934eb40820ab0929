//! Files in and out: checkpoints (safetensors), atomic directory writes.
pub mod atomic;
pub mod checkpoint;
pub mod gguf;
pub mod hf_bert;
pub mod hf_gpt2;
pub mod llama2c;
pub mod quant_checkpoint;
pub mod tensors;
