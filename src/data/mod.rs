//! Text data: tokenizers and batch sampling.
pub mod dataset;
pub mod tokenizer;

pub use dataset::{Batch, TokenDataset};
pub use tokenizer::CharTokenizer;
