//! `lmlab report`: every explain result present, in one self-contained HTML page.

use anyhow::{bail, Result};
use std::path::Path;

/// What [`write_report`] put in the page.
#[derive(Clone, Debug, Default)]
pub struct ReportSummary {
    /// Questions with a result, and questions listed as pending.
    pub answered: usize,
    pub pending: usize,
    pub charts: usize,
}

/// Writes the report of the results under `results_dir` (`ID/result.json` and its charts) to
/// `out`.
pub fn write_report(results_dir: &Path, out: &Path) -> Result<ReportSummary> {
    bail!("lmlab report is not built yet ({} → {})", results_dir.display(), out.display())
}
