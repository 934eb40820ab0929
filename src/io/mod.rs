//! Files in and out: checkpoints (safetensors), atomic directory writes.
pub mod atomic;
pub mod checkpoint;
pub mod hf_bert;
pub mod hf_gpt2;
pub mod gguf;
pub mod llama2c;
pub mod tensors;
