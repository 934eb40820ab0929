//! Tensor-parallel inference (Megatron-LM, Shoeybi et al., 2019): under `mpirun -np N`, each
//! rank holds 1/N of every block's attention heads and feed-forward neurons, and the blocks'
//! two output projections are summed over the ranks.
//!
//! Rank r keeps heads `r·H/N .. (r+1)·H/N` of every layer (their query, key and value rows of
//! `c_attn`, their columns of `attn.c_proj`; with grouped-query attention, key/value heads
//! `r·K/N .. (r+1)·K/N` with their groups of query heads) and neurons `r·F/N .. (r+1)·F/N` (their rows of
//! `mlp.c_fc`, both halves for SwiGLU, their columns of `mlp.c_proj`); the model is rebuilt that
//! size (`compress::structured::shrink`, the code that removes pruned heads and neurons). Each
//! rank's `attn.c_proj` and `mlp.c_proj` outputs are then partial sums over its heads and
//! neurons: one all-reduce each adds them up (`Transformer::set_tensor_parallel`), and only rank
//! 0 keeps those projections' biases, so the sum adds them once. Everything else — embeddings,
//! norms, the output layer — is on every rank, and every rank computes the same logits, so
//! greedy decoding and seeded sampling pick the same tokens everywhere.

use crate::compress::structured::{shrink, LayerKeep};
use crate::model::transformer::Transformer;
use anyhow::{ensure, Context, Result};

/// Replaces `model` by this rank's shard when the process is one of several MPI ranks (the
/// whole model is dropped), and rank 0 says on standard error what each rank now holds;
/// nothing in one process.
pub fn distribute(model: &mut Transformer) -> Result<()> {
    let world = crate::dist::world();
    if !world.is_distributed() {
        return Ok(());
    }
    let whole = 4 * model.params.len();
    *model = shard(model, world.rank(), world.size())?;
    let n = world.size();
    let mut held = vec![0.0f64; 2 * n];
    held[world.rank()] = (4 * model.params.len()) as f64;
    held[n + world.rank()] = crate::util::current_rss_bytes() as f64;
    world.all_reduce_sum_f64(&mut held);
    if world.is_root() {
        let mb = |v: &[f64]| v.iter().map(|b| format!("{:.1}", b / 1e6)).collect::<Vec<_>>().join(", ");
        eprintln!(
            "tensor parallel over {n} ranks: weights per rank {} MB (one process: {:.1} MB); resident per rank {} MB",
            mb(&held[..n]),
            whole as f64 / 1e6,
            mb(&held[n..])
        );
    }
    Ok(())
}

/// Rank `rank`'s shard of `model` for `ranks` ranks (see the module doc).
pub fn shard(model: &Transformer, rank: usize, ranks: usize) -> Result<Transformer> {
    ensure!(
        model.quantized().is_none(),
        "tensor parallelism splits float weights: this checkpoint is quantized; run its float original"
    );
    let cfg = &model.config;
    let (heads, ffn) = (cfg.n_head, cfg.ffn());
    ensure!(
        ranks <= heads && ranks <= ffn,
        "tensor parallelism over {ranks} ranks needs at least one attention head and one feed-forward neuron \
         per rank; the model has {heads} heads and {ffn} neurons per layer"
    );
    // Grouped-query attention splits by key/value head, each with its group of query heads.
    let kv_heads = cfg.kv_heads();
    let group = heads / kv_heads.max(1);
    ensure!(
        ranks <= kv_heads,
        "tensor parallelism over {ranks} ranks needs at least one key/value head per rank; the model has \
         {kv_heads} (model.n_kv_head), each shared by {group} query heads"
    );
    let part = |len: usize| rank * len / ranks..(rank + 1) * len / ranks;
    let my_heads: Vec<usize> = part(kv_heads).flat_map(|kv| kv * group..(kv + 1) * group).collect();
    let keep: Vec<LayerKeep> =
        (0..cfg.n_layer).map(|_| LayerKeep { heads: my_heads.clone(), neurons: part(ffn).collect() }).collect();
    let mut small = shrink(model, &keep, model.max_batch()).context("tensor parallelism splits attention heads")?;
    let projections: Vec<String> = small
        .layout
        .tensors
        .iter()
        .filter(|t| t.name.ends_with(".attn.c_proj.weight") || t.name.ends_with(".mlp.c_proj.weight"))
        .map(|t| t.name.clone())
        .collect();
    if rank > 0 {
        for w in &projections {
            let bias = w.replace(".weight", ".bias");
            if let Some(t) = small.layout.get(&bias) {
                let r = t.range();
                small.params[r].fill(0.0);
            }
        }
    }
    small.set_tensor_parallel(Some(&projections))?;
    Ok(small)
}
