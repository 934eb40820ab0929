//! The key/value cache of a decoder: what incremental generation keeps between forward passes.
//!
//! One code path serves prompt processing (prefill) and token-by-token decoding:
//! [`super::Transformer::forward_cached`] runs a batch of *new* tokens — any number per row —
//! through the stack, appends their self-attention keys and values to the cache, and lets
//! every new query attend to everything its row has cached. Each row keeps its own length, so
//! a batch of prompts of different lengths needs no left padding and no position shift: row
//! `b`'s new tokens sit at positions `len[b] ..` exactly as if the row ran alone.
//!
//! ```text
//! k, v   (L, R, NKV, block_size, hs)  keys after RoPE, values; row r's positions 0..len[r]
//! cross  (L, R·T_enc, 2·NKV·hs)       encoder-decoder: cross-attention [k | v] of the encoder output
//! probs  (max(Q_CHUNK, R)·NH, block)  attention probabilities of one row's query chunk, or of
//!                                     every row of a decode step
//! ```
//!
//! Each kv head's positions sit together (as in Hugging Face's (B, NKV, T, hs) cache): a decode
//! step reads every head's keys and values as one contiguous run, which the hardware prefetcher
//! streams (heads side by side in a position's row made each head a 256-byte read every
//! 1.5 KiB; see docs/SERVING.md, "Decode attention").
//!
//! Positions enter wherever the full forward pass puts them (`layers/position.rs`): learned
//! and sinusoidal tables at `len[b] + i`, RoPE rotates new queries and keys by their absolute
//! position before the keys are cached, and ALiBi, T5 and Shaw biases see query position
//! `len[b] + i` against key positions `0 ..` (the attention kernel's `q_offset`). So cached and
//! uncached passes give the same logits up to float summation order
//! (tests/kv_cache_variants.rs checks every variant).
//!
//! This file holds all of it: the cache ([`KvCache`]), the view of it that one pass's layers
//! read ([`CacheView`], reached through `Ctx::cache`), the cached attention computation
//! ([`CacheView::attend`]) and the cached passes themselves ([`Transformer::forward_cached`],
//! [`Transformer::decode_cached`]). The attention layer only dispatches here.

use super::config::{Arch, ModelConfig};
use super::layers::{Attention, Ctx};
use super::quant::linear_hooks;
use super::stack::Stack;
use super::{ctx, low_regions, lowp, Head, Transformer};
use crate::kernels::general_attention::{
    general_attention_forward, general_attention_fwd_scratch_len, ragged_decode_forward, ragged_decode_scratch_len,
    AttnInputs, AttnMask, RaggedDecode,
};
use crate::model::layout::Regions;
use anyhow::{bail, ensure, Context, Result};
use std::ops::Range;

/// Queries of one row attend in chunks of this many, bounding the probability buffer to
/// (NH, Q_CHUNK, block_size) however long the prompt.
pub(crate) const Q_CHUNK: usize = 64;

/// What attention reads and writes in a cached pass: views of a [`KvCache`]'s buffers (layouts
/// above) and the rows' positions.
/// Row `b` of the batch holds `count[b]` new tokens (the rest of its T positions is padding)
/// at positions `start[b] ..`.
pub(crate) struct CacheView<'a> {
    /// (L, R, NKV, block, hs) keys and values.
    pub k: Regions<'a>,
    pub v: Regions<'a>,
    /// (L, R·T_enc, 2·KV) cross-attention keys and values.
    pub cross: Regions<'a>,
    /// Whether `cross` already holds this encoding's entries (else the pass computes them).
    pub cross_ready: bool,
    /// (NH, Q_CHUNK, block) probabilities and the kernel's forward scratch.
    pub probs: Regions<'a>,
    pub scratch: Regions<'a>,
    pub start: &'a [usize],
    pub count: &'a [usize],
    /// A decode step (every row 0 or 1 new token): each row's key count after this step, 0 for
    /// a waiting row. Self-attention then runs all rows in one [`ragged_decode_forward`] pass.
    pub decode_lens: Option<&'a [usize]>,
    /// Cache capacity R, block size, KV = NKV·hs and hs.
    pub capacity: usize,
    pub block: usize,
    pub kv: usize,
    pub hs: usize,
}

impl CacheView<'_> {
    /// Range of row `b`'s keys (or values) of `layer`: (NKV, block, hs).
    pub fn row(&self, layer: usize, b: usize) -> Range<usize> {
        let size = self.block * self.kv;
        let start = (layer * self.capacity + b) * size;
        start..start + size
    }

    /// Range of the cross entries of `layer` for `b` rows of `t_enc` positions: (b·T_enc, 2·KV).
    pub fn cross_layer(&self, layer: usize, b: usize, t_enc: usize) -> Range<usize> {
        let start = layer * self.capacity * self.block * 2 * self.kv;
        start..start + b * t_enc * 2 * self.kv
    }
    /// The cross-attention [k | v] entries (b·T_enc, 2·KV) of `layer` that this pass must
    /// project the encoder output into; None when the cache holds them already (the encoder
    /// output is projected once per encoding).
    #[allow(clippy::mut_from_ref)]
    pub fn cross_to_fill(&self, layer: usize, b: usize, t_enc: usize) -> Option<&mut [f32]> {
        (!self.cross_ready).then(|| self.cross.mut_(&self.cross_layer(layer, b, t_enc), b * t_enc * 2 * self.kv))
    }

    /// y (N, C) of a cached pass of attention layer `at`, with q its projected queries (and,
    /// for self-attention, the new keys and values): self-attention appends each row's new keys
    /// and values to the cache and attends over the row's cached positions (causally, query
    /// `i` at position `start + i`); cross-attention attends over the cached encoder keys and
    /// values. Rows run one at a time (each has its own length), their queries in chunks of
    /// [`Q_CHUNK`]; padding rows of y are zero.
    pub fn attend(&self, at: &Attention, cx: &Ctx, y: &mut [f32], q: &[f32]) {
        let h = &at.heads;
        let (t, kv, layer) = (cx.t, h.kv(), at.layer());
        let (score, pos) = at.kernel_fns(cx);
        let cross = at.is_cross();
        let qw = if cross { h.nh * h.hs } else { h.qkv() };
        if let (false, Some(key_lens)) = (cross, self.decode_lens) {
            return self.attend_decode(at, cx, y, q, key_lens);
        }
        let cross_all =
            cross.then(|| self.cross.get(&self.cross_layer(layer, cx.b, cx.t_enc), cx.b * cx.t_enc * 2 * kv));
        for bi in 0..cx.b {
            let (start, count) = (self.start[bi], self.count[bi]);
            let y_row = &mut y[bi * t * h.inner()..(bi + 1) * t * h.inner()];
            y_row[count * h.inner()..].fill(0.0);
            if count == 0 {
                continue;
            }
            let q_row = &q[bi * t * qw..];
            let (inputs, tk_end, key_mask, causal) = match cross_all {
                Some(all) => {
                    let te = cx.t_enc;
                    let kvr = &all[bi * te * 2 * kv..(bi + 1) * te * 2 * kv];
                    let inputs = AttnInputs {
                        q: q_row,
                        q_stride: qw,
                        k: kvr,
                        k_stride: 2 * kv,
                        v: &kvr[kv..],
                        v_stride: 2 * kv,
                        kv_head_stride: h.hs,
                    };
                    (inputs, None, cx.enc_mask.map(|m| &m[bi * te..(bi + 1) * te]), false)
                }
                None => {
                    let (kr, vr) = (
                        self.k.mut_(&self.row(layer, bi), self.block * kv),
                        self.v.mut_(&self.row(layer, bi), self.block * kv),
                    );
                    for i in 0..count {
                        self.append(kr, vr, start + i, &q_row[i * qw..], h.nh);
                    }
                    let inputs = AttnInputs {
                        q: q_row,
                        q_stride: qw,
                        k: kr,
                        k_stride: h.hs,
                        v: vr,
                        v_stride: h.hs,
                        kv_head_stride: self.block * h.hs,
                    };
                    (inputs, Some(start), None, true)
                }
            };
            for c0 in (0..count).step_by(Q_CHUNK) {
                let tq = Q_CHUNK.min(count - c0);
                // Causal: the chunk sees keys up to its last query's position.
                let tk = tk_end.map_or(cx.t_enc, |s| s + c0 + tq);
                let dims = at.dims(1, tq, tk);
                let x = AttnInputs { q: &inputs.q[c0 * qw..], ..inputs };
                let mask = AttnMask { causal, q_offset: tk_end.map_or(0, |s| s + c0), key_mask };
                let probs = self.probs.prefix(h.nh * tq * tk);
                let scratch = self.scratch.prefix(general_attention_fwd_scratch_len(&dims, &score, &pos));
                general_attention_forward(
                    &mut y_row[c0 * h.inner()..],
                    probs,
                    None,
                    scratch,
                    &x,
                    &dims,
                    &score,
                    &pos,
                    &mask,
                );
            }
        }
    }

    /// Writes the key and value of position `pos` into one row's keys `k` and values `v`
    /// (NKV, block, hs) from `qkv`, a row of the projection [q (NH·hs) | k (KV) | v (KV)].
    fn append(&self, k: &mut [f32], v: &mut [f32], pos: usize, qkv: &[f32], nh: usize) {
        let hs = self.hs;
        let (new_k, new_v) = (&qkv[nh * hs..][..self.kv], &qkv[nh * hs + self.kv..][..self.kv]);
        for (g, (kh, vh)) in new_k.chunks_exact(hs).zip(new_v.chunks_exact(hs)).enumerate() {
            let at = (g * self.block + pos) * hs;
            k[at..at + hs].copy_from_slice(kh);
            v[at..at + hs].copy_from_slice(vh);
        }
    }

    /// Self-attention of a decode step (T = 1; row b's key count after the step is
    /// `key_lens[b]`, 0 when it waits): appends the new keys and values, then every row's
    /// (row, kv head) tasks run in one parallel pass. Each row's output equals what the
    /// one-row-at-a-time path above gives it, bit for bit.
    fn attend_decode(&self, at: &Attention, cx: &Ctx, y: &mut [f32], q: &[f32], key_lens: &[usize]) {
        let h = &at.heads;
        let (kv, layer, qw, b) = (h.kv(), at.layer(), h.qkv(), cx.b);
        let (score, pos) = at.kernel_fns(cx);
        let rows = self.row(layer, 0).start..self.row(layer, b - 1).end;
        let (k, v) = (self.k.mut_(&rows, b * self.block * kv), self.v.mut_(&rows, b * self.block * kv));
        for (bi, &n) in key_lens.iter().enumerate() {
            if n == 0 {
                y[bi * h.inner()..(bi + 1) * h.inner()].fill(0.0);
                continue;
            }
            let row = bi * self.block * kv..(bi + 1) * self.block * kv;
            self.append(&mut k[row.clone()], &mut v[row], n - 1, &q[bi * qw..], h.nh);
        }
        let x = RaggedDecode {
            q,
            q_rs: qw,
            k,
            v,
            kv_rs: self.block * kv,
            kv_stride: h.hs,
            kv_head_stride: self.block * h.hs,
            key_lens,
            max_keys: self.block,
            n_head: h.nh,
            n_kv_head: h.nkv,
            head_size: h.hs,
        };
        let probs = self.probs.prefix(b * h.nh * self.block);
        let scratch = self.scratch.prefix(ragged_decode_scratch_len(b, self.block, (h.nh, h.nkv, h.hs), &score, &pos));
        ragged_decode_forward(y, h.inner(), probs, scratch, &x, &score, &pos);
    }
}

/// Forward-scratch elements the attention kernel needs in a cached pass of `dec`'s layers:
/// one query chunk (see [`Q_CHUNK`]) against up to `block` cached keys or `t_enc` encoder keys,
/// or a decode step of `rows` rows (one query each) against up to `block` keys.
pub(super) fn cached_attention_scratch(dec: &Stack, block: usize, t_enc: usize, rows: usize) -> usize {
    dec.attention_layers()
        .map(|at| {
            let tk = if at.is_cross() { t_enc } else { block };
            let (score, pos) = at.kernel_shape();
            let heads = (at.heads.nh, at.heads.nkv, at.heads.hs);
            general_attention_fwd_scratch_len(&at.dims(1, Q_CHUNK.min(block), tk), &score, &pos)
                .max(ragged_decode_scratch_len(rows, block, heads, &score, &pos))
        })
        .max()
        .unwrap_or(0)
}

/// Element counts (f32) of the buffers of a [`KvCache`] of `capacity` rows of `block_size`
/// positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCacheSizes {
    /// Cached (self-attention) layers.
    pub layers: usize,
    /// Key (or value) width of one position: NKV·hs.
    pub kv: usize,
    /// Keys, and as many values: (layers, capacity, block_size, NKV·hs).
    pub keys: usize,
    /// Cross-attention keys and values of the encoder output (encoder-decoders).
    pub cross: usize,
    /// Attention probabilities of one query chunk, (NH, Q_CHUNK, block_size), or of a decode
    /// step, (capacity, NH, block_size): the larger.
    pub probs: usize,
    /// Attention-kernel scratch.
    pub scratch: usize,
    /// The gather buffer of beam search's reorder: (capacity, block_size, 2·NKV·hs).
    pub reorder: usize,
}

impl KvCacheSizes {
    pub(crate) fn of(cfg: &ModelConfig, capacity: usize, scratch: usize) -> KvCacheSizes {
        let layers = if cfg.arch == Arch::EncoderDecoder { cfg.dec_layers() } else { cfg.n_layer };
        let (block, kv) = (cfg.block_size, cfg.kv_heads() * cfg.head_size());
        KvCacheSizes {
            layers,
            kv,
            keys: layers * capacity * block * kv,
            cross: if cfg.arch == Arch::EncoderDecoder { layers * capacity * block * 2 * kv } else { 0 },
            probs: cfg.n_head * Q_CHUNK.min(block).max(capacity) * block,
            scratch,
            reorder: capacity * block * 2 * kv,
        }
    }

    /// All elements: keys and values, cross, probabilities, scratch, reorder buffer.
    pub fn total(&self) -> usize {
        2 * self.keys + self.cross + self.probs + self.scratch + self.reorder
    }
}

/// Keys and values of every self-attention layer (and, for an encoder-decoder, the
/// cross-attention keys and values of the encoder output) for up to `capacity` rows.
pub struct KvCache {
    /// (L, R, block, KV) self-attention keys (after RoPE) and values.
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    /// (L, R·T_enc, 2·KV) cross-attention [k | v] rows; valid when `cross_len > 0`.
    pub(crate) cross: Vec<f32>,
    /// T_enc of the cross entries (0: not computed yet; the next pass computes them).
    pub(crate) cross_len: usize,
    /// (NH, Q_CHUNK, block) probabilities and the attention kernel's forward scratch.
    pub(crate) probs: Vec<f32>,
    pub(crate) scratch: Vec<f32>,
    /// Positions cached per row (R; the first `rows` are in use).
    pub(crate) lens: Vec<usize>,
    /// A decode step's key count per row (see [`CacheView::decode_lens`]).
    decode_lens: Vec<usize>,
    rows: usize,
    pub(crate) capacity: usize,
    pub(crate) layers: usize,
    pub(crate) block: usize,
    /// NKV·hs, and hs.
    pub(crate) kv: usize,
    hs: usize,
    /// Gather buffer for [`KvCache::reorder`]: (R, block, KV).
    tmp: Vec<f32>,
    tmp_lens: Vec<usize>,
}

impl KvCache {
    /// A cache for `capacity` rows of `cfg`'s decoder (`scratch` elements of attention-kernel
    /// scratch), holding no positions; its batch size is `capacity`.
    pub(crate) fn new(cfg: &ModelConfig, capacity: usize, scratch: usize) -> Result<Self> {
        ensure!(capacity >= 1, "a KV cache needs at least one row");
        ensure!(cfg.arch != Arch::Encoder, "an encoder has no causal decoder to cache");
        let sizes = KvCacheSizes::of(cfg, capacity, scratch);
        let (layers, block, kv) = (sizes.layers, cfg.block_size, sizes.kv);
        Ok(KvCache {
            k: vec![0.0; sizes.keys],
            v: vec![0.0; sizes.keys],
            cross: vec![0.0; sizes.cross],
            cross_len: 0,
            probs: vec![0.0; sizes.probs],
            scratch: vec![0.0; sizes.scratch],
            lens: vec![0; capacity],
            decode_lens: vec![0; capacity],
            rows: capacity,
            capacity,
            layers,
            block,
            kv,
            hs: cfg.head_size(),
            tmp: vec![0.0; sizes.reorder],
            tmp_lens: vec![0; capacity],
        })
    }

    /// Rows in use (the batch size of the next cached pass).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Positions cached in row `r`.
    pub fn len(&self, r: usize) -> usize {
        self.lens[r]
    }

    /// Positions cached per row in use.
    pub fn lens(&self) -> &[usize] {
        &self.lens[..self.rows]
    }

    /// The model's context: no row can hold more positions.
    pub fn block_size(&self) -> usize {
        self.block
    }

    /// Empties every row and sets the batch size to `rows`; cross-attention entries are
    /// recomputed on the next pass.
    pub fn reset(&mut self, rows: usize) -> Result<()> {
        ensure!(
            (1..=self.capacity).contains(&rows),
            "KV cache: {rows} rows outside 1..={} (its capacity)",
            self.capacity
        );
        self.rows = rows;
        self.lens.fill(0);
        self.cross_len = 0;
        Ok(())
    }

    /// Empties row `r` only (its next pass starts again at position 0).
    pub fn clear_row(&mut self, r: usize) {
        self.lens[r] = 0;
    }

    /// Rearranges the rows: new row `i` is old row `rows[i]` (rows may repeat or be dropped),
    /// and the batch size becomes `rows.len()`. Beam search follows each surviving hypothesis's
    /// parent this way. Copies only the cached positions; allocates nothing.
    pub fn reorder(&mut self, rows: &[usize]) -> Result<()> {
        ensure!(
            (1..=self.capacity).contains(&rows.len()),
            "KV cache reorder: {} rows outside 1..={}",
            rows.len(),
            self.capacity
        );
        if let Some(bad) = rows.iter().find(|&&r| r >= self.rows) {
            bail!("KV cache reorder: row {bad} out of range for {} rows", self.rows);
        }
        let (block, kv, cap) = (self.block, self.kv, self.capacity);
        let row = block * kv;
        for buf in [&mut self.k, &mut self.v] {
            for l in 0..self.layers {
                let layer = &mut buf[l * cap * row..(l + 1) * cap * row];
                for (i, &r) in rows.iter().enumerate() {
                    for span in head_spans(self.lens[r], self.block, self.hs, self.kv) {
                        self.tmp[i * row..][span.clone()].copy_from_slice(&layer[r * row..][span]);
                    }
                }
                for (i, &r) in rows.iter().enumerate() {
                    for span in head_spans(self.lens[r], self.block, self.hs, self.kv) {
                        layer[i * row..][span.clone()].copy_from_slice(&self.tmp[i * row..][span]);
                    }
                }
            }
        }
        if self.cross_len > 0 {
            let row = self.cross_len * 2 * kv;
            for l in 0..self.layers {
                let layer = &mut self.cross[l * cap * block * 2 * kv..(l + 1) * cap * block * 2 * kv];
                for (i, &r) in rows.iter().enumerate() {
                    self.tmp[i * row..(i + 1) * row].copy_from_slice(&layer[r * row..(r + 1) * row]);
                }
                layer[..rows.len() * row].copy_from_slice(&self.tmp[..rows.len() * row]);
            }
        }
        for (i, &r) in rows.iter().enumerate() {
            self.tmp_lens[i] = self.lens[r];
        }
        self.lens[..rows.len()].copy_from_slice(&self.tmp_lens[..rows.len()]);
        self.rows = rows.len();
        Ok(())
    }

    /// Sets the batch size of the next cached pass to `rows` (1..=capacity) and keeps every
    /// row's cached positions: a server's batch grows and shrinks as requests come and go
    /// (rows past `rows` wait, untouched).
    pub fn set_rows(&mut self, rows: usize) -> Result<()> {
        ensure!(
            (1..=self.capacity).contains(&rows),
            "KV cache: {rows} rows outside 1..={} (its capacity)",
            self.capacity
        );
        self.rows = rows;
        Ok(())
    }

    /// Replaces row `to` with row `from` of `src`, a cache of the same model (e.g. one that
    /// processed a prompt alone): copies only its cached positions. Decoders only.
    pub fn copy_row_from(&mut self, to: usize, src: &KvCache, from: usize) -> Result<()> {
        ensure!(
            (self.layers, self.block, self.kv) == (src.layers, src.block, src.kv),
            "KV cache copy between caches of different models"
        );
        ensure!(self.cross.is_empty(), "KV cache row copy: an encoder-decoder cache also holds cross entries");
        ensure!(to < self.capacity && from < src.capacity, "KV cache copy: row {from} → {to} out of range");
        let row = self.block * self.kv;
        for (dst, s) in [(&mut self.k, &src.k), (&mut self.v, &src.v)] {
            for l in 0..self.layers {
                let d0 = (l * self.capacity + to) * row;
                let s0 = (l * src.capacity + from) * row;
                for span in head_spans(src.lens[from], self.block, self.hs, self.kv) {
                    dst[d0..][span.clone()].copy_from_slice(&s[s0..][span]);
                }
            }
        }
        self.lens[to] = src.lens[from];
        Ok(())
    }

    /// Replaces row `to` with row `from` of this cache (which keeps its positions): closes the
    /// gap a finished row leaves by moving the last row into it. Decoders only.
    pub fn move_row(&mut self, from: usize, to: usize) -> Result<()> {
        ensure!(self.cross.is_empty(), "KV cache row move: an encoder-decoder cache also holds cross entries");
        ensure!(from < self.capacity && to < self.capacity, "KV cache move: row {from} → {to} out of range");
        if from == to {
            return Ok(());
        }
        let row = self.block * self.kv;
        for buf in [&mut self.k, &mut self.v] {
            for l in 0..self.layers {
                let (s0, d0) = ((l * self.capacity + from) * row, (l * self.capacity + to) * row);
                for span in head_spans(self.lens[from], self.block, self.hs, self.kv) {
                    buf.copy_within(s0 + span.start..s0 + span.end, d0 + span.start);
                }
            }
        }
        self.lens[to] = self.lens[from];
        Ok(())
    }

    /// Bytes held by the cache.
    pub fn bytes(&self) -> usize {
        4 * (self.k.len() + self.v.len() + self.cross.len() + self.probs.len() + self.scratch.len() + self.tmp.len())
    }
}

/// Where the first `n` positions of each kv head lie in a cache row (NKV, block, hs).
fn head_spans(n: usize, block: usize, hs: usize, kv: usize) -> impl Iterator<Item = Range<usize>> {
    (0..kv / hs).map(move |g| g * block * hs..g * block * hs + n * hs)
}

/// Which logits a cached pass computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitRows {
    /// (B, V): each row's last new token (zeros for a row without new tokens).
    Last,
    /// (B, T, V): every position of the padded batch (padding positions hold garbage).
    All,
}

impl Transformer {
    /// A KV cache for up to `capacity` rows of this model's decoder (at most the model's
    /// batch capacity).
    pub fn kv_cache(&self, capacity: usize) -> Result<KvCache> {
        ensure!(
            capacity <= self.max_batch,
            "KV cache of {capacity} rows exceeds the model's batch capacity {}",
            self.max_batch
        );
        let dec = self.decoder.as_ref().context("an encoder has no causal decoder to cache")?;
        let block = self.config.block_size;
        KvCache::new(&self.config, capacity, cached_attention_scratch(dec, block, block, capacity))
    }

    /// Decoder-only LM, incremental: runs `tokens` (B, T) — row `b` holds `counts[b]` new tokens
    /// followed by padding (any valid ids) — at positions `cache.len(b) ..`, appends their
    /// keys and values to `cache` and returns the logits `rows` asks for. B = `cache.rows()`.
    /// Prompt processing is a call with the whole prompt, decoding a call with one token per
    /// row; both are this function, and a row with `counts[b] = 0` just waits. Read the logits
    /// from the returned slice: [`Transformer::logits`] and [`Transformer::hidden`] describe
    /// full forward passes.
    pub fn forward_cached(
        &mut self,
        tokens: &[u32],
        counts: &[usize],
        t: usize,
        cache: &mut KvCache,
        rows: LogitRows,
    ) -> Result<&[f32]> {
        ensure!(self.config.arch == Arch::Decoder, "forward_cached needs arch = \"decoder\" (use decode_cached)");
        self.check_cached(tokens, counts, t, cache)?;
        let b = counts.len();
        self.begin(b, t, t, false, 0);
        self.last.has_targets = false;
        self.last.has_mask = false;
        self.run_cached(tokens, counts, cache, rows)
    }

    /// Encoder-decoder, incremental: [`Transformer::decode`] on a KV cache. Decoder row `b`
    /// reads encoded row `b` (B = `cache.rows()` = the encoded batch; after
    /// [`Transformer::reorder_encoded`] reorder the cache the same way). The first pass after
    /// [`KvCache::reset`] projects the encoder output into the cache's cross-attention entries.
    pub fn decode_cached(
        &mut self,
        tokens: &[u32],
        counts: &[usize],
        t: usize,
        cache: &mut KvCache,
        rows: LogitRows,
    ) -> Result<&[f32]> {
        ensure!(self.config.arch == Arch::EncoderDecoder, "decode_cached needs arch = \"encoder_decoder\"");
        ensure!(self.last.encoded, "decode_cached() needs encode() first (a forward pass discards the encoder output)");
        ensure!(
            counts.len() == self.last.b,
            "decode_cached with {} rows, but {} rows are encoded",
            counts.len(),
            self.last.b
        );
        ensure!(
            cache.cross_len == 0 || cache.cross_len == self.last.t_enc,
            "the KV cache holds cross-attention entries of another encoding: reset it after encode()"
        );
        self.check_cached(tokens, counts, t, cache)?;
        self.last.t = t;
        self.run_cached(tokens, counts, cache, rows)
    }

    fn check_cached(&self, tokens: &[u32], counts: &[usize], t: usize, cache: &KvCache) -> Result<()> {
        let cfg = &self.config;
        let layers = if cfg.arch == Arch::EncoderDecoder { cfg.dec_layers() } else { cfg.n_layer };
        ensure!(
            cache.layers == layers && cache.block == cfg.block_size && cache.kv == cfg.kv_heads() * cfg.head_size(),
            "the KV cache was made for another model"
        );
        ensure!(
            counts.len() == cache.rows,
            "{} rows of new tokens for a KV cache of {} rows",
            counts.len(),
            cache.rows
        );
        self.check_shape(counts.len(), t, "new-token")?;
        ensure!(
            tokens.len() == counts.len() * t,
            "tokens has {} ids, expected B·T = {}",
            tokens.len(),
            counts.len() * t
        );
        self.check_tokens("tokens", tokens)?;
        for (r, &n) in counts.iter().enumerate() {
            ensure!(n <= t, "row {r}: {n} new tokens in a batch of length {t}");
            ensure!(
                cache.lens[r] + n <= cfg.block_size,
                "row {r}: {} cached + {n} new tokens exceed block_size {}",
                cache.lens[r],
                cfg.block_size
            );
        }
        Ok(())
    }

    fn run_cached(&mut self, tokens: &[u32], counts: &[usize], cache: &mut KvCache, rows: LogitRows) -> Result<&[f32]> {
        if let Some(l) = &mut self.low {
            l.refresh(&self.params);
        }
        let (b, t) = (counts.len(), self.last.t);
        self.last.idx[..b * t].copy_from_slice(tokens);
        let last = &self.last;
        let te = last.t_enc;
        let (c, v) = (self.config.n_embd, self.config.vocab_size);
        let w = Regions::new(&mut self.params);
        let g = Regions::new(&mut self.grads);
        let r = Regions::new(&mut self.acts);
        let low_views = self.low.as_mut().map(low_regions);
        let low = lowp(&low_views);
        let lora_views = super::lora::lora_regions(&mut self.lora);
        let hooks =
            linear_hooks(&self.quant, &self.observer, &self.tp_reduce, &self.ablation, &lora_views, &self.frozen);
        let enc_mask = last.has_mask.then(|| &last.mask[..b * te]);
        let KvCache {
            k, v: vals, cross, cross_len, probs, scratch, lens, decode_lens, capacity, block, kv, hs, ..
        } = cache;
        let decode = t == 1;
        if decode {
            for ((d, &len), &n) in decode_lens.iter_mut().zip(lens.iter()).zip(counts) {
                *d = if n == 0 { 0 } else { len + 1 };
            }
        }
        let view = CacheView {
            k: Regions::new(k),
            v: Regions::new(vals),
            cross: Regions::new(cross),
            cross_ready: *cross_len > 0,
            probs: Regions::new(probs),
            scratch: Regions::new(scratch),
            start: &lens[..b],
            count: counts,
            decode_lens: decode.then(|| &decode_lens[..b]),
            capacity: *capacity,
            block: *block,
            kv: *kv,
            hs: *hs,
        };
        let mut cx = ctx(&w, &g, &r, &self.consts, &self.scratch, last, t, None, enc_mask, low, hooks);
        cx.cache = Some(&view);
        let (dec, da) = (self.decoder.as_ref().unwrap(), self.dec_acts.as_ref().unwrap());
        let enc_out = self.encoder.as_ref().map(|enc| {
            enc.output(
                &ctx(&w, &g, &r, &self.consts, &self.scratch, last, te, None, None, low, hooks),
                self.enc_acts.as_ref().unwrap(),
            )
        });
        dec.forward(&cx, da, &last.idx[..b * t], enc_out);
        let h = dec.output(&cx, da);
        let Head::Lm { w: hw } = &self.head else { unreachable!("a decoder has an LM head") };
        let logits = r.mut_(&self.head_acts.logits, b * t * v);
        let out_rows = match rows {
            LogitRows::All => {
                cx.linear_forward(logits, h, hw, &None, b * t, c, v);
                b * t
            }
            LogitRows::Last => {
                // Gather each row's last new hidden state (zeros for a waiting row), then one product.
                let last_h = r.mut_(&self.scratch.d_fin, b * c);
                for (bi, &n) in counts.iter().enumerate() {
                    let dst = &mut last_h[bi * c..(bi + 1) * c];
                    match n {
                        0 => dst.fill(0.0),
                        n => dst.copy_from_slice(&h[(bi * t + n - 1) * c..(bi * t + n) * c]),
                    }
                }
                cx.linear_forward(logits, last_h, hw, &None, b, c, v);
                b
            }
        };
        for (len, &n) in lens.iter_mut().zip(counts) {
            *len += n;
        }
        if self.encoder.is_some() {
            *cross_len = te;
        }
        let start = self.head_acts.logits.start;
        Ok(&self.acts[start..start + out_rows * v])
    }
}
