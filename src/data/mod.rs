//! Text data: tokenizers and batch sampling.
pub mod bpe;
pub mod classify;
pub mod dataset;
pub mod gpt2;
pub mod hf_tokenizer;
pub mod llama2c_tokenizer;
pub mod mlm;
pub mod parallel;
pub mod summarize;
pub mod synthetic;
pub mod tokenizer;

pub use dataset::{Batch, TokenDataset};
pub use tokenizer::{CharTokenizer, Tokenizer};
