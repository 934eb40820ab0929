//! An experiment of arms × seeds.
use super::{Budget, ExplainResult, Question, Spec};
use anyhow::{bail, Result};
use std::path::Path;

pub(super) fn run(q: &Question, _s: &Spec, _b: Budget, _d: &Path, _p: bool, _t: usize) -> Result<ExplainResult> {
    bail!("question {} is being built", q.number)
}

pub(super) fn pareto(q: &Question, _s: &Spec, _b: Budget, _o: &Path, _d: &Path) -> Result<ExplainResult> {
    bail!("question {} is being built", q.number)
}
