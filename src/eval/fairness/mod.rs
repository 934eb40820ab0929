//! Fairness and bias measures (`lmlab eval fairness ...`; see docs/FAIRNESS.md):
//! - [`groups`]: a classifier's metrics per group, demographic parity and equalized odds
//!   (fairlearn's definitions);
//! - [`crows_pairs`]: CrowS-Pairs for causal language models, scored as lm-evaluation-harness
//!   scores it;
//! - [`weat`]: WEAT and SEAT embedding association tests on sentence embeddings.

pub mod crows_pairs;
pub mod groups;
pub mod weat;
