//! What skipping the frozen weights' gradient GEMMs buys a LoRA step: forward + backward of a
//! classifier built from a checkpoint (e.g. the imported all-MiniLM-L6-v2), timed three ways on
//! the same random batch, interleaved so that a shared machine's load hits each alike:
//!
//! - full: no adapters, every weight gradient computed (full fine-tuning's backward);
//! - lora: rank-8 adapters on c_attn, c_proj, c_fc, the base frozen (its weight GEMMs skipped);
//! - lora-no-skip: the same adapters with the freezing lifted in the model, so the base weight
//!   gradients are computed as well (what a LoRA step costs without the skip).
//!
//!   cargo run --release --example lora_step -- CHECKPOINT_DIR [batch] [tokens] [rounds]

use anyhow::{Context, Result};
use lmlab::io::checkpoint;
use lmlab::model::transformer::{LoraConfig, Transformer};
use std::time::Instant;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).context("usage: lora_step CHECKPOINT_DIR [batch] [tokens] [rounds]")?;
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (b, t, rounds) = (arg(2, 32), arg(3, 40), arg(4, 5));
    let lora = LoraConfig {
        rank: 8,
        alpha: 16.0,
        targets: vec!["c_attn".into(), "c_proj".into(), "c_fc".into()],
        dropout: 0.0,
    };
    let load = |with_lora: bool, skip: bool| -> Result<Transformer> {
        let mut m = checkpoint::load(dir.as_ref(), b, false)?.model;
        if with_lora {
            m.add_lora(&lora, 0)?;
            if !skip {
                m.set_frozen(Vec::new());
            }
        }
        Ok(m)
    };
    let mut models = [("full", load(false, false)?), ("lora", load(true, true)?), ("lora-no-skip", load(true, false)?)];
    let v = models[0].1.config.vocab_size as u32;
    let idx: Vec<u32> = (0..b * t).map(|i| (i as u32 * 7919 + 13) % v).collect();
    let labels: Vec<i32> = (0..b).map(|i| (i % 2) as i32).collect();
    let mut times = vec![Vec::new(); models.len()];
    for round in 0..=rounds {
        for (k, (_, m)) in models.iter_mut().enumerate() {
            let start = Instant::now();
            m.zero_grad();
            m.forward_classify(&idx, None, Some(&labels), b, t, true, 0)?;
            m.backward()?;
            if round > 0 {
                times[k].push(start.elapsed().as_secs_f64());
            }
        }
    }
    println!("forward + backward, batch {b} × {t} tokens, median of {rounds} interleaved rounds (after 1 warm-up):");
    for ((name, _), ts) in models.iter().zip(&mut times) {
        ts.sort_by(|a, b| a.total_cmp(b));
        println!("  {name:<14} {:>7.3} s  (min {:.3}, max {:.3})", ts[ts.len() / 2], ts[0], ts[ts.len() - 1]);
    }
    Ok(())
}
