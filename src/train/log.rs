//! Run output: the JSONL metrics log and the terminal progress bar.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

/// Appends one JSON object per line: `{"iter", "loss", "lr", ...}` for training steps,
/// `{"iter", "train_loss", "val_loss"}` for evaluations, `{"iter", "skipped": true, "loss",
/// "loss_scale"}` for every f16 step skipped because its gradients overflowed, `{"iter",
/// "health"}` for the per-layer statistics (`train.health_interval`), and `{"event", "iter", ...}`
/// for events (`early_stop`, `resume`). With [`MetricsLog::echo_stdout`], every line also goes to
/// standard output with an `"event"` key (`"step"`, `"eval"`, `"skipped"`, `"health"`, ...):
/// `lmlab train --json`.
pub struct MetricsLog {
    /// None: a log that writes nothing (the ranks other than 0 of a data-parallel job).
    out: Option<BufWriter<File>>,
    stdout: bool,
}

impl MetricsLog {
    /// Opens `path` for appending.
    pub fn open(path: &Path) -> Result<Self> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(MetricsLog { out: Some(BufWriter::new(f)), stdout: false })
    }

    /// A log that writes nothing, to no file and not to standard output.
    pub fn discard() -> Self {
        MetricsLog { out: None, stdout: false }
    }

    /// Starts `path` afresh (a new run in the directory).
    pub fn create(path: &Path) -> Result<Self> {
        File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Self::open(path)
    }

    /// Continues the log of a run resumed at `step`: drops what the interrupted run logged
    /// after `step` (the resumed run logs those iterations again) and any torn last line, then
    /// appends. Returns the log and the number of lines dropped.
    pub fn resume(path: &Path, step: u64) -> Result<(Self, usize)> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut kept = String::with_capacity(text.len());
        let mut dropped = 0;
        for line in text.lines() {
            let keep = match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) => v.is_object() && v.get("iter").and_then(|i| i.as_u64()).is_none_or(|i| i <= step),
                Err(_) => false,
            };
            if keep {
                kept.push_str(line);
                kept.push('\n');
            } else {
                dropped += 1;
            }
        }
        if dropped > 0 {
            crate::io::atomic::write_file_atomic(path, kept.as_bytes())?;
        }
        Ok((Self::open(path)?, dropped))
    }

    /// Also print every line to standard output, tagged with its `"event"`.
    pub fn echo_stdout(&mut self, on: bool) {
        self.stdout = on;
    }

    /// Writes one line; `event` tags it on standard output (and in the file too when
    /// `tag_file`).
    fn write(&mut self, event: &str, mut line: serde_json::Value, tag_file: bool) -> Result<()> {
        let Some(out) = &mut self.out else { return Ok(()) };
        if tag_file {
            tag(&mut line, event);
        }
        writeln!(out, "{line}")?;
        // Flushed per line so that a long run can be followed with `tail -f`.
        out.flush()?;
        if self.stdout {
            tag(&mut line, event);
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}").and_then(|_| out.flush()).context("cannot write to standard output")?;
        }
        Ok(())
    }

    /// An event line `{"event": event, ...fields}`; `fields` is a JSON object.
    pub fn event(&mut self, event: &str, fields: serde_json::Value) -> Result<()> {
        self.write(event, fields, true)
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
        self.write("step", line, false)
    }

    /// An f16 step whose gradients overflowed: the optimizer step was skipped and the loss scale
    /// halved to `loss_scale`.
    pub fn skipped(&mut self, iter: u64, loss: f32, loss_scale: f32) -> Result<()> {
        let line = serde_json::json!({"iter": iter, "skipped": true, "loss": loss, "loss_scale": loss_scale});
        self.write("skipped", line, false)
    }

    /// `{"iter", "health": {"layers": [...], "tensors": [...]}}` (see [`crate::inspect::health`]).
    pub fn health(&mut self, iter: u64, stats: &crate::inspect::HealthStats) -> Result<()> {
        self.write("health", serde_json::json!({"iter": iter, "health": stats}), false)
    }

    /// An evaluation; `val_accuracy` for classifiers.
    pub fn eval(&mut self, iter: u64, train_loss: f32, val_loss: f32, val_accuracy: Option<f64>) -> Result<()> {
        let mut line = serde_json::json!({"iter": iter, "train_loss": train_loss, "val_loss": val_loss});
        if let Some(acc) = val_accuracy {
            line["val_accuracy"] = acc.into();
        }
        self.write("eval", line, false)
    }
}

/// Adds `"event": event` to the object `line` (unless it has an event already).
fn tag(line: &mut serde_json::Value, event: &str) {
    if let Some(fields) = line.as_object_mut() {
        fields.entry("event").or_insert_with(|| event.into());
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
        // A resumed run starts at `start`: record that position, then restart the rate
        // estimate, so the ETA counts only the steps this process takes.
        bar.tick();
        bar.reset_eta();
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
