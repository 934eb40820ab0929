//! `lmlab info`: what a checkpoint holds.

use anyhow::Result;
use clap::Args;
use lmlab::io::checkpoint;
use lmlab::kernels::isa::{kernel_paths, Isa};
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Info` in main.rs.
#[derive(Args)]
pub struct InfoArgs {
    /// Checkpoint directory (omit it to see the CPU and the kernel paths).
    checkpoint: Option<PathBuf>,
    /// One JSON object on standard output.
    #[arg(long)]
    json: bool,
}

pub fn run(a: InfoArgs) -> Result<()> {
    let Some(dir) = &a.checkpoint else { return machine(a.json) };
    let ck = checkpoint::load_inference(dir, 1)?;
    let m = &ck.model;
    let files: Vec<(String, u64)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), e.metadata().ok()?.len())))
        .collect();
    let quant: Vec<(String, String)> = m
        .quantized()
        .map(|q| {
            q.iter()
                .map(|(n, qm)| {
                    let ty = lmlab::io::quant_checkpoint::type_name(qm.ty);
                    (n.to_string(), if qm.perm.is_some() { format!("{ty} (act-order)") } else { ty.to_string() })
                })
                .collect()
        })
        .unwrap_or_default();
    let disk: u64 = files.iter().map(|(_, s)| s).sum();
    // Exact zeros per tensor (a pruned checkpoint's sparsity), in layout order.
    let zeros: Vec<usize> =
        m.layout.tensors.iter().map(|t| m.params[t.range()].iter().filter(|w| **w == 0.0).count()).collect();
    let all_zeros: usize = zeros.iter().sum();
    if a.json {
        let tensors: Vec<serde_json::Value> = m
            .layout
            .tensors
            .iter()
            .zip(&zeros)
            .map(|(t, &z)| {
                let ty = quant.iter().find(|(n, _)| *n == t.name).map_or("f32".to_string(), |(_, ty)| ty.clone());
                serde_json::json!({"name": t.name, "shape": t.shape, "type": ty, "zeros": z,
                    "sparsity": z as f64 / t.numel().max(1) as f64})
            })
            .collect();
        let j = serde_json::json!({"checkpoint": dir, "isa": Isa::active().name(), "step": ck.state.step, "model": m.config,
            "parameters": m.num_params(), "tokenizer": ck.tokenizer.kind(), "vocab_size": ck.tokenizer.vocab_size(),
            "tensors": tensors, "files": files.iter().map(|(n, s)| serde_json::json!({"name": n, "bytes": s})).collect::<Vec<_>>(),
            "bytes_on_disk": disk, "zeros": all_zeros, "sparsity": all_zeros as f64 / m.params.len().max(1) as f64,
            "prune": ck.run_config.prune});
        println!("{j}");
        return Ok(());
    }
    let c = &m.config;
    println!("{}: step {}", dir.display(), ck.state.step);
    println!(
        "model: {:?}{}, {} layers, {} wide, {} heads ({} kv), block {}, vocab {}; {} parameters",
        c.arch,
        match (c.arch, c.encoder_head) {
            (lmlab::model::transformer::Arch::Encoder, h) => format!(" ({h:?} head)"),
            _ => String::new(),
        },
        c.n_layer,
        c.n_embd,
        c.n_head,
        c.n_kv_head.unwrap_or(c.n_head),
        c.block_size,
        c.vocab_size,
        m.num_params()
    );
    println!("tokenizer: {} ({} tokens)", ck.tokenizer.kind(), ck.tokenizer.vocab_size());
    if quant.is_empty() {
        println!("weights: f32");
    } else {
        let mut kinds: Vec<&str> = quant.iter().map(|(_, t)| t.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        println!("weights: {} linear weights quantized ({}); the rest f32", quant.len(), kinds.join(", "));
        for (n, t) in &quant {
            println!("  {n}: {t}");
        }
    }
    print_sparsity(&ck, &zeros);
    println!("on disk: {:.2} MB", disk as f64 / 1e6);
    Ok(())
}

/// This CPU's instruction sets and the path each kernel family takes.
fn machine(json: bool) -> Result<()> {
    let (cpu, active) = (Isa::detected(), Isa::active());
    let paths = kernel_paths(active);
    if json {
        let fam: serde_json::Map<String, serde_json::Value> =
            paths.iter().map(|(f, p)| (f.to_string(), serde_json::Value::from(p.clone()))).collect();
        let j = serde_json::json!({"cpu": cpu.name(), "active": active.name(),
            "override": std::env::var("LMLAB_ISA").ok(), "kernels": fam});
        println!("{j}");
        return Ok(());
    }
    println!("cpu: {}", cpu.name());
    match std::env::var("LMLAB_ISA") {
        Ok(v) => println!("active: {} (LMLAB_ISA={v})", active.name()),
        Err(_) => {
            println!("active: {} (set LMLAB_ISA=scalar|avx2|avx512[,no-vnni][,no-bf16] to cap it)", active.name())
        }
    }
    for (family, path) in paths {
        println!("  {family:<16} {path}");
    }
    Ok(())
}

/// The share of exact zeros: of all parameters, and per tensor that has any (with how the
/// checkpoint was pruned, if it was).
fn print_sparsity(ck: &checkpoint::Checkpoint, zeros: &[usize]) {
    let m = &ck.model;
    let total: usize = zeros.iter().sum();
    let pct = |z: usize, n: usize| 100.0 * z as f64 / n.max(1) as f64;
    println!(
        "sparsity: {total} of {} parameters are exactly zero ({:.2}%)",
        m.params.len(),
        pct(total, m.params.len())
    );
    if let Some(p) = &ck.run_config.prune {
        let how = if p.nm.is_empty() { format!("{:.1}% unstructured", 100.0 * p.sparsity) } else { p.nm.clone() };
        println!("pruned: {} ({how}), {} tensors held sparse by training", p.method, p.tensors.len());
    }
    for (t, &z) in m.layout.tensors.iter().zip(zeros).filter(|(_, z)| **z > 0) {
        println!("  {}: {:.2}% zero ({z} of {})", t.name, pct(z, t.numel()), t.numel());
    }
}
