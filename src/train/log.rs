//! Run output: the JSONL metrics log and the terminal progress bar.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

/// Appends one JSON object per line: `{"iter", "loss", "lr", ...}` for training steps,
/// `{"iter", "train_loss", "val_loss"}` for evaluations, `{"iter", "skipped": true, "loss",
/// "loss_scale"}` for every f16 step skipped because its gradients overflowed, and `{"iter",
/// "health"}` for the per-layer statistics (`train.health_interval`).
pub struct MetricsLog {
    out: BufWriter<File>,
}

impl MetricsLog {
    pub fn open(path: &Path) -> Result<Self> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(MetricsLog { out: BufWriter::new(f) })
    }

    pub fn step(
        &mut self,
        iter: u64,
        loss: f32,
        lr: f32,
        grad_norm: f32,
        ms_per_iter: f64,
        tokens_per_s: f64,
    ) -> Result<()> {
        let line = serde_json::json!({
            "iter": iter, "loss": loss, "lr": lr, "grad_norm": grad_norm,
            "ms_per_iter": ms_per_iter, "tokens_per_s": tokens_per_s,
        });
        writeln!(self.out, "{line}")?;
        // Flushed per line so that a long run can be followed with `tail -f`.
        self.out.flush()?;
        Ok(())
    }

    /// An f16 step whose gradients overflowed: the optimizer step was skipped and the loss scale
    /// halved to `loss_scale`.
    pub fn skipped(&mut self, iter: u64, loss: f32, loss_scale: f32) -> Result<()> {
        let line = serde_json::json!({"iter": iter, "skipped": true, "loss": loss, "loss_scale": loss_scale});
        writeln!(self.out, "{line}")?;
        self.out.flush()?;
        Ok(())
    }

    /// `{"iter", "health": {"layers": [...], "tensors": [...]}}` (see [`crate::inspect::health`]).
    pub fn health(&mut self, iter: u64, stats: &crate::inspect::HealthStats) -> Result<()> {
        writeln!(self.out, "{}", serde_json::json!({"iter": iter, "health": stats}))?;
        self.out.flush()?;
        Ok(())
    }

    pub fn eval(&mut self, iter: u64, train_loss: f32, val_loss: f32) -> Result<()> {
        writeln!(self.out, "{}", serde_json::json!({"iter": iter, "train_loss": train_loss, "val_loss": val_loss}))?;
        self.out.flush()?;
        Ok(())
    }
}

/// Progress bar with iteration, loss, learning rate, ms/iter and tokens/s; hidden when quiet.
pub struct Progress {
    bar: ProgressBar,
    quiet: bool,
}

impl Progress {
    pub fn new(total: u64, start: u64, quiet: bool) -> Self {
        let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
        if !quiet {
            bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
        }
        bar.set_style(
            ProgressStyle::with_template("{bar:30.cyan/blue} {pos:>6}/{len} {msg} [{elapsed_precise} < {eta_precise}]")
                .unwrap()
                .progress_chars("=> "),
        );
        bar.set_position(start);
        Progress { bar, quiet }
    }

    pub fn update(&self, iter: u64, loss: f32, lr: f32, ms: f64, tok_s: f64) {
        self.bar.set_position(iter);
        self.bar.set_message(format!("loss {loss:.4} | lr {lr:.2e} | {ms:.1} ms/it | {:.1}k tok/s", tok_s / 1e3));
    }

    pub fn println(&self, line: String) {
        if !self.quiet {
            if self.bar.is_hidden() {
                eprintln!("{line}");
            } else {
                self.bar.println(line);
            }
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
