//! Architectures assembled from kernels: parameter layout, forward, backward.
pub mod init;
pub mod layout;
pub mod transformer;

pub use init::InitScheme;
pub use layout::{ParamKind, ParamLayout, TensorView};
