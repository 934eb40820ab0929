//! Running a trained model: sampling (one prompt, a batch, beam search, llama2.c's loop),
//! translation, summarization, sentence embeddings and contextual token embeddings.
pub mod beam;
pub mod checkpoint_sampler;
pub mod embed;
pub mod embed_driver;
pub mod llama2c;
pub mod qa_span;
pub mod sample;
pub mod summarize;
pub mod tensor_parallel;
pub mod token_embed;
pub mod translate;
