//! Architectures assembled from kernels: parameter layout, forward, backward.
pub mod baseline;
pub mod init;
pub mod layout;
pub mod lm;
pub mod ngram;
pub mod transformer;

pub use init::InitScheme;
pub use layout::{ParamKind, ParamLayout, TensorView};
pub use lm::LanguageModel;
