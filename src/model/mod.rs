//! Architectures assembled from kernels: parameter layout, forward, backward.
pub mod gpt;
pub mod init;
pub mod layout;
pub mod transformer;

pub use gpt::{AttentionKind, Gpt, GptConfig};
pub use init::InitScheme;
pub use layout::{ParamKind, ParamLayout, TensorView};
