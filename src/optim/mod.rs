//! Optimizers, learning-rate schedules and gradient clipping over flat buffers.
pub mod adamw;
pub mod clip;
pub mod schedule;

pub use adamw::{AdamW, AdamWConfig};
pub use clip::{clip_factor, clip_grad_norm, clip_grad_value, grad_norm, Clipping};
pub use schedule::{LrSchedule, ScheduleKind};
