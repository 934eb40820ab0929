//! Positional encoding, model side: which scheme a stack uses (`ModelConfig::position`), where
//! its parameters and tables live, and the calls that apply it.
//!
//! ```text
//! position    applied                          parameters / tables
//! learned     added to the token embeddings    {stack}.wpe.weight (block_size, C)
//! sinusoidal  added to the token embeddings    fixed (block_size, C) table in the model's constants
//! rope        rotates q and k of self-attn     θ (rope_theta)
//! alibi       bias on self-attention scores    fixed slopes (NH) in the model's constants
//! t5          bias on self-attention scores    {stack}.rel_bias.weight (buckets, NH), shared by the layers
//! shaw        q·key bias on the scores and     {layer}.rel_k (2k+1, hs), {layer}.rel_v (2k+1, hs)
//!             a value term on the output        per self-attention layer
//! ```
//!
//! [`AbsolutePosition`] is the stack's part (the first two rows), [`SelfPosition`] a
//! self-attention layer's (the rest); cross-attention has none. The math is pure kernels:
//! the sinusoidal table, ALiBi slopes, T5 buckets, Shaw indices and RoPE in
//! [`crate::kernels::positional`]; the biases on the scores and their gradients in
//! `kernels/general_attention/position_bias.rs`, which reads the [`PositionBias`] built here.
//!
//! In a cached pass ([`Ctx::cache`]) row b's new tokens sit at positions `start[b] ..`: the
//! tables are read from there and RoPE rotates by those positions; the biases get the query
//! offset from `transformer/cache.rs`.

use super::{Ctx, Heads};
use crate::kernels::{
    embedding::{token_embedding_backward, token_embedding_forward},
    general_attention::{AttnParamGrads, PositionBias},
    positional::{alibi_slopes, rope_backward, rope_forward, sinusoidal_table},
};
use crate::model::layout::{ParamKind, ParamLayout};
use crate::model::transformer::config::{ModelConfig, Position};
use std::ops::Range;

/// Positions added to the token embeddings at the bottom of a stack.
#[derive(Clone, Debug)]
pub(crate) enum AbsolutePosition {
    None,
    /// (block_size, C) trained table in the parameters.
    Learned {
        wpe: Range<usize>,
    },
    /// (block_size, C) fixed table in the model's constants.
    Sinusoidal {
        table: Range<usize>,
    },
}

impl AbsolutePosition {
    /// Lays out the learned table under `prefix` ("transformer", "encoder", "decoder"), or
    /// appends the sinusoidal one to `consts`.
    pub fn new(l: &mut ParamLayout, consts: &mut Vec<f32>, cfg: &ModelConfig, prefix: &str) -> Self {
        let c = cfg.n_embd;
        match cfg.position {
            Position::Learned => AbsolutePosition::Learned {
                wpe: l.push(format!("{prefix}.wpe.weight"), &[cfg.block_size, c], ParamKind::Embedding),
            },
            Position::Sinusoidal => {
                let start = consts.len();
                consts.resize(start + cfg.block_size * c, 0.0);
                sinusoidal_table(&mut consts[start..], cfg.block_size, c);
                AbsolutePosition::Sinusoidal { table: start..consts.len() }
            }
            _ => AbsolutePosition::None,
        }
    }

    /// The (block_size, C) table, if any.
    fn table<'c>(&self, cx: &'c Ctx) -> Option<&'c [f32]> {
        match self {
            AbsolutePosition::Learned { wpe } => Some(cx.p(wpe)),
            AbsolutePosition::Sinusoidal { table } => Some(&cx.consts[table.clone()]),
            AbsolutePosition::None => None,
        }
    }

    /// emb (N, C) = scale·wte[idx] + the table's row of each token's position (one kernel).
    /// In a cached pass row b's `count[b]` new tokens sit at positions `start[b] ..` and its
    /// padding rows are zero.
    pub fn embed_forward(&self, cx: &Ctx, emb: &mut [f32], idx: &[u32], wte: &[f32], scale: f32, c: usize) {
        let pos = self.table(cx);
        match cx.cache {
            None => token_embedding_forward(emb, idx, wte, scale, pos, cx.t, c),
            Some(kc) => {
                let t = cx.t;
                for (bi, (rows, ids)) in emb.chunks_mut(t * c).zip(idx.chunks(t)).enumerate() {
                    let (start, count) = (kc.start[bi], kc.count[bi]);
                    let pos = pos.map(|p| &p[start * c..]);
                    token_embedding_forward(rows, &ids[..count], wte, scale, pos, t, c);
                    rows[count * c..].fill(0.0);
                }
            }
        }
    }

    /// Backward of [`AbsolutePosition::embed_forward`] (full passes): dwte and, for the learned
    /// table, its gradient accumulate from d_emb (N, C).
    pub fn embed_backward(&self, cx: &Ctx, dwte: &mut [f32], d_emb: &[f32], idx: &[u32], scale: f32, c: usize) {
        let dpos = match self {
            AbsolutePosition::Learned { wpe } => Some(cx.gw(wpe)),
            _ => None,
        };
        token_embedding_backward(dwte, dpos, d_emb, idx, scale, cx.t, c);
    }
}

/// Positions inside a self-attention layer: rotated queries and keys (RoPE) or a bias on the
/// scores (ALiBi, T5, Shaw).
#[derive(Clone, Debug)]
pub(crate) enum SelfPosition {
    None,
    Rope {
        theta: f32,
    },
    /// Offset of the (NH) slopes in the constants buffer.
    Alibi {
        slopes: Range<usize>,
    },
    /// `bidirectional` for encoders.
    T5 {
        table: Range<usize>,
        buckets: usize,
        max_distance: usize,
        bidirectional: bool,
    },
    Shaw {
        k: usize,
        keys: Range<usize>,
        values: Option<Range<usize>>,
    },
}

impl SelfPosition {
    /// The scheme of a stack's self-attention layers: T5's table (shared by the layers) is laid
    /// out under `prefix`, ALiBi's slopes are appended to `consts`; Shaw's per-layer tables come
    /// with each layer ([`SelfPosition::for_layer`]). `bidirectional`: an encoder's T5 buckets.
    pub fn new(
        l: &mut ParamLayout,
        consts: &mut Vec<f32>,
        cfg: &ModelConfig,
        prefix: &str,
        bidirectional: bool,
    ) -> Self {
        match cfg.position {
            Position::Rope => SelfPosition::Rope { theta: cfg.rope_theta },
            Position::Alibi => {
                let start = consts.len();
                consts.resize(start + cfg.n_head, 0.0);
                alibi_slopes(&mut consts[start..]);
                SelfPosition::Alibi { slopes: start..consts.len() }
            }
            Position::T5 => SelfPosition::T5 {
                table: l.push(format!("{prefix}.rel_bias.weight"), &[cfg.t5_buckets, cfg.n_head], ParamKind::Embedding),
                buckets: cfg.t5_buckets,
                max_distance: cfg.t5_max_distance,
                bidirectional,
            },
            Position::Shaw => SelfPosition::Shaw { k: cfg.shaw_k, keys: 0..0, values: None },
            Position::None | Position::Learned | Position::Sinusoidal => SelfPosition::None,
        }
    }

    /// The scheme of the layer `name`: Shaw lays out the layer's keys (and values) here.
    pub fn for_layer(&self, l: &mut ParamLayout, name: &str, cfg: &ModelConfig) -> Self {
        let hs = cfg.head_size();
        match self {
            SelfPosition::Shaw { k, .. } => {
                let keys = l.push(format!("{name}.rel_k"), &[2 * k + 1, hs], ParamKind::Embedding);
                let values =
                    cfg.shaw_values.then(|| l.push(format!("{name}.rel_v"), &[2 * k + 1, hs], ParamKind::Embedding));
                SelfPosition::Shaw { k: *k, keys, values }
            }
            p => p.clone(),
        }
    }

    /// Whether the scores carry no position bias (the dedicated causal kernels have none).
    pub fn is_bias_free(&self) -> bool {
        matches!(self, SelfPosition::None | SelfPosition::Rope { .. })
    }

    /// RoPE: rotates the q and k columns of q (N, QKV), the packed projection, by each row's
    /// position (row b's new tokens from `start[b]` in a cached pass). Nothing for the others.
    pub fn rope_forward(&self, cx: &Ctx, q: &mut [f32], h: &Heads) {
        let SelfPosition::Rope { theta } = *self else { return };
        let (b, t, n, w) = (cx.b, cx.t, cx.n(), h.qkv());
        match cx.cache {
            None => {
                rope_forward(q, n, w, h.nh, h.hs, t, 0, theta);
                rope_forward(&mut q[h.nh * h.hs..], n, w, h.nkv, h.hs, t, 0, theta);
            }
            Some(kc) => {
                // Each row's new tokens start at its own cached length.
                for bi in 0..b {
                    let (rows, q) = (kc.count[bi], &mut q[bi * t * w..]);
                    rope_forward(q, rows, w, h.nh, h.hs, t, kc.start[bi], theta);
                    rope_forward(&mut q[h.nh * h.hs..], rows, w, h.nkv, h.hs, t, kc.start[bi], theta);
                }
            }
        }
    }

    /// Backward of [`SelfPosition::rope_forward`] (full passes), in place on d_q (N, QKV).
    pub fn rope_backward(&self, cx: &Ctx, d_q: &mut [f32], h: &Heads) {
        let SelfPosition::Rope { theta } = *self else { return };
        let (t, n, w) = (cx.t, cx.n(), h.qkv());
        rope_backward(d_q, n, w, h.nh, h.hs, t, 0, theta);
        rope_backward(&mut d_q[h.nh * h.hs..], n, w, h.nkv, h.hs, t, 0, theta);
    }

    /// The bias handed to the attention kernel, reading the tables of `cx`.
    pub fn bias<'a>(&self, cx: &Ctx<'a>) -> PositionBias<'a> {
        match self {
            SelfPosition::Alibi { slopes } => PositionBias::Alibi { slopes: &cx.consts[slopes.clone()] },
            SelfPosition::T5 { table, buckets, max_distance, bidirectional } => PositionBias::T5 {
                table: cx.w.get(table, table.len()),
                num_buckets: *buckets,
                max_distance: *max_distance,
                bidirectional: *bidirectional,
            },
            SelfPosition::Shaw { k, keys, values } => PositionBias::Shaw {
                k: *k,
                keys: cx.w.get(keys, keys.len()),
                values: values.as_ref().map(|v| cx.w.get(v, v.len())),
            },
            SelfPosition::None | SelfPosition::Rope { .. } => PositionBias::None,
        }
    }

    /// A bias with empty tables: only its kind and sizes matter for scratch sizing.
    pub fn bias_shape(&self) -> PositionBias<'static> {
        match self {
            SelfPosition::Shaw { k, values, .. } => {
                PositionBias::Shaw { k: *k, keys: &[], values: values.as_ref().map(|_| &[][..]) }
            }
            SelfPosition::T5 { buckets, max_distance, bidirectional, .. } => PositionBias::T5 {
                table: &[],
                num_buckets: *buckets,
                max_distance: *max_distance,
                bidirectional: *bidirectional,
            },
            SelfPosition::Alibi { .. } => PositionBias::Alibi { slopes: &[] },
            _ => PositionBias::None,
        }
    }

    /// Where the kernel accumulates the gradients of the bias's tables (T5's table, Shaw's keys
    /// and values); the score's fields are left empty.
    pub fn param_grads<'c>(&self, cx: &'c Ctx) -> AttnParamGrads<'c> {
        match self {
            SelfPosition::T5 { table, .. } => AttnParamGrads { t5_table: Some(cx.gw(table)), ..Default::default() },
            SelfPosition::Shaw { keys, values, .. } => AttnParamGrads {
                shaw_keys: Some(cx.gw(keys)),
                shaw_values: values.as_ref().map(|r| cx.gw(r)),
                ..Default::default()
            },
            _ => AttnParamGrads::default(),
        }
    }
}
