//! The teacher's logits a training pass distills from (Hinton et al., 2015): the trainer runs
//! the teacher on the batch, hands its logits to the student with
//! [`Transformer::set_teacher_logits`], and the student's next training forward and backward
//! use the distillation loss of `kernels::distill` instead of the plain cross-entropy.
//! Evaluation passes (`train = false`) always report the cross-entropy.

use super::{TeacherLogits, Transformer};
use crate::kernels::distill::DistillLoss;
use anyhow::{ensure, Result};

impl Transformer {
    /// Sets the teacher's logits for the next training pass: (B, T, V) for a language model,
    /// (B, K) for a classifier, of the batch that pass will see. The buffer is sized once, for
    /// the largest batch, so a training step allocates nothing after the first.
    pub fn set_teacher_logits(&mut self, loss: DistillLoss, logits: &[f32]) -> Result<()> {
        ensure!(
            loss.temperature > 0.0 && loss.temperature.is_finite(),
            "distillation temperature {} must be positive",
            loss.temperature
        );
        ensure!((0.0..=1.0).contains(&loss.alpha), "distillation alpha {} must be in [0, 1]", loss.alpha);
        let most = self.head.logits_len(&self.config, self.max_batch, self.config.block_size);
        ensure!(logits.len() <= most, "{} teacher logits, more than the largest batch's {most}", logits.len());
        let t = self.teacher.get_or_insert_with(|| TeacherLogits { loss, logits: vec![0.0; most], len: 0 });
        t.loss = loss;
        t.logits[..logits.len()].copy_from_slice(logits);
        t.len = logits.len();
        Ok(())
    }

    /// Back to the plain cross-entropy.
    pub fn clear_teacher_logits(&mut self) {
        self.teacher = None;
    }
}

/// The teacher's logits for a pass whose student logits have `len` values, when distilling.
pub(super) fn soft_targets(
    teacher: &Option<TeacherLogits>,
    train: bool,
    len: usize,
) -> Result<Option<(&[f32], DistillLoss)>> {
    match teacher {
        Some(t) if train => {
            ensure!(
                t.len == len,
                "the teacher's logits ({} values) are not of this batch ({len} student logits)",
                t.len
            );
            Ok(Some((&t.logits[..len], t.loss)))
        }
        _ => Ok(None),
    }
}
