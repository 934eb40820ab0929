//! Looking inside training: per-layer gradient-health statistics, the place where a NaN or an
//! infinity first appeared, and charts of a run's metrics; accounting for a model's parameters,
//! FLOPs and memory.
pub mod account;
pub mod health;
pub mod interpret;
pub mod plot;

pub use health::{first_nonfinite, health_stats, HealthMonitor, HealthStats, LayerHealth, TensorHealth};
