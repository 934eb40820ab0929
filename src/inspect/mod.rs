//! Looking inside training: per-layer gradient-health statistics, the place where a NaN or an
//! infinity first appeared, and charts of a run's metrics.
pub mod health;
pub mod interpret;
pub mod plot;

pub use health::{first_nonfinite, health_stats, HealthMonitor, HealthStats, LayerHealth, TensorHealth};
