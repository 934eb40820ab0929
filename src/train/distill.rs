//! Knowledge distillation (`[distill]` in the run config): the teacher checkpoint, loaded for
//! inference, runs forward on every micro-batch and hands its logits to the student, whose
//! training loss becomes α·T²·KL + (1−α)·cross-entropy (`kernels::distill`). Teacher and student
//! may differ in every size but the vocabulary: a fresh student takes the teacher's tokenizer,
//! a resumed one must hold the same.

use crate::config::{DistillSection, RunConfig};
use crate::data::Tokenizer;
use crate::io::checkpoint;
use crate::kernels::distill::DistillLoss;
use crate::model::transformer::{Arch, ModelConfig, Transformer};
use anyhow::{ensure, Context, Result};
use std::path::Path;

pub struct Teacher {
    pub model: Transformer,
    pub tokenizer: Tokenizer,
    pub loss: DistillLoss,
}

impl Teacher {
    /// The teacher of `cfg`'s `[distill]` section, if any, sized for its micro-batches.
    pub fn load(cfg: &RunConfig) -> Result<Option<Teacher>> {
        let Some(DistillSection { teacher, temperature, alpha }) = &cfg.distill else { return Ok(None) };
        let ck = checkpoint::load_inference(Path::new(teacher), cfg.train.batch_size)
            .with_context(|| format!("cannot load the distillation teacher {teacher}"))?;
        let want = match cfg.data.task {
            crate::config::Task::Classify => Arch::Encoder,
            _ => Arch::Decoder,
        };
        ensure!(
            ck.model.config.arch == want,
            "the distillation teacher {teacher} is a {:?} model; this run trains a {want:?} model",
            ck.model.config.arch
        );
        let loss = DistillLoss { temperature: *temperature, alpha: *alpha };
        Ok(Some(Teacher { model: ck.model, tokenizer: ck.tokenizer, loss }))
    }

    /// Checks that the student `m` (with tokenizer `tok`) can learn from this teacher.
    pub fn check_student(&self, m: &ModelConfig, tok: &Tokenizer) -> Result<()> {
        let t = &self.model.config;
        ensure!(
            t.vocab_size == m.vocab_size && self.tokenizer.to_json()? == tok.to_json()?,
            "the distillation teacher's vocabulary ({} {} tokens) is not the student's ({} {} tokens): teacher and \
             student must share one tokenizer",
            self.tokenizer.kind(),
            t.vocab_size,
            tok.kind(),
            m.vocab_size
        );
        ensure!(
            t.block_size >= m.block_size,
            "the distillation teacher's block_size {} is shorter than the student's {}",
            t.block_size,
            m.block_size
        );
        if m.arch == Arch::Encoder {
            ensure!(
                t.num_classes == m.num_classes,
                "the distillation teacher has {} classes, the student {}",
                t.num_classes,
                m.num_classes
            );
        }
        Ok(())
    }

    /// Runs the teacher on the language-model batch `idx` (B, T) and gives `student` its logits.
    pub fn teach_lm(&mut self, student: &mut Transformer, idx: &[u32], b: usize, t: usize) -> Result<()> {
        self.model.forward_lm(idx, None, b, t, false, 0)?;
        student.set_teacher_logits(self.loss, self.model.logits())
    }

    /// Runs the teacher on the classification batch and gives `student` its logits (B, K).
    pub fn teach_classify(
        &mut self,
        student: &mut Transformer,
        idx: &[u32],
        mask: &[bool],
        b: usize,
        t: usize,
    ) -> Result<()> {
        self.model.forward_classify(idx, Some(mask), None, b, t, false, 0)?;
        student.set_teacher_logits(self.loss, self.model.logits())
    }
}
