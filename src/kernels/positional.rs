//! Positional-encoding helpers without parameters: the sinusoidal table, ALiBi slopes, the
//! relative-position buckets of T5 and of Shaw et al., and rotary embeddings (RoPE).
//!
//! The relative schemes' biases on the attention scores (ALiBi, T5's table, Shaw's keys and
//! values) and their gradients are applied in `general_attention/position_bias.rs`, which
//! calls the index functions here. Which scheme a model uses, and where its tables and
//! parameters live, is decided in `model/transformer/layers/position.rs`.

use rayon::prelude::*;

/// Rows per rayon task in the RoPE loops: a row costs hs/2 `sin_cos` calls, so a few rows
/// already outweigh the scheduling overhead.
const ROPE_ROWS_PER_TASK: usize = 8;

/// out (T, C) = the sinusoidal position table of Vaswani et al.:
/// `PE[pos, 2i] = sin(pos / 10000^(2i/C))`, `PE[pos, 2i+1] = cos(pos / 10000^(2i/C))`.
/// Computed in f64 so that large positions keep full f32 accuracy. `C` must be even.
pub fn sinusoidal_table(out: &mut [f32], t: usize, c: usize) {
    assert!(c.is_multiple_of(2), "sinusoidal_table: C = {c} must be even");
    assert!(out.len() >= t * c);
    for (pos, row) in out[..t * c].chunks_exact_mut(c).enumerate() {
        for (i, pair) in row.chunks_exact_mut(2).enumerate() {
            let angle = pos as f64 / 10000f64.powf((2 * i) as f64 / c as f64);
            let (s, co) = angle.sin_cos();
            pair[0] = s as f32;
            pair[1] = co as f32;
        }
    }
}

/// out (NH) = the ALiBi slope of every head, as the paper's reference `get_slopes(n)`:
/// for `n` a power of two, `slope_i = 2^(−8(i+1)/n)`; otherwise the `m` slopes of the largest
/// power of two `m < n`, followed by every other slope of `2m` heads, `2^(−8(2j+1)/(2m))` for
/// `j = 0 .. n−m`, which fall between the first ones.
pub fn alibi_slopes(out: &mut [f32]) {
    let n = out.len();
    if n == 0 {
        return;
    }
    // Largest power of two ≤ n (n itself when it is one).
    let m = 1usize << (usize::BITS - 1 - n.leading_zeros());
    // 2^(-8(i+1)/m) directly rather than start·ratio^i: exact for the power-of-two results.
    for (i, s) in out[..m].iter_mut().enumerate() {
        *s = (-8.0 * (i + 1) as f64 / m as f64).exp2() as f32;
    }
    for (j, s) in out[m..].iter_mut().enumerate() {
        *s = (-8.0 * (2 * j + 1) as f64 / (2 * m) as f64).exp2() as f32;
    }
}

/// The T5 relative-attention bucket of `relative_position = key_position − query_position`,
/// exactly as Hugging Face's `T5Attention._relative_position_bucket`: with `bidirectional`
/// half the buckets are for keys after the query; of each half, the first `max_exact = half/2`
/// distances get one bucket each and larger ones share logarithmically wider buckets up to
/// `max_distance`, beyond which everything falls in the last bucket.
///
/// The logarithmic branch is evaluated in f32 and truncated to an integer, as the PyTorch
/// original does on float32 tensors (the constant `log(max_distance / max_exact)` is computed
/// in f64 by Python and rounded to f32 when it meets the tensor), so bucket boundaries agree.
pub fn t5_bucket(relative_position: i64, bidirectional: bool, num_buckets: usize, max_distance: usize) -> usize {
    let mut buckets = num_buckets;
    let mut base = 0usize;
    let n = if bidirectional {
        buckets /= 2;
        if relative_position > 0 {
            base = buckets;
        }
        relative_position.unsigned_abs()
    } else {
        (-relative_position.min(0)) as u64
    };
    let max_exact = buckets / 2;
    assert!(max_exact >= 1, "t5_bucket: num_buckets = {num_buckets} is too small");
    if (n as usize) < max_exact {
        return base + n as usize;
    }
    let log_ratio = (max_distance as f64 / max_exact as f64).ln() as f32;
    let scaled = (n as f32 / max_exact as f32).ln() / log_ratio * (buckets - max_exact) as f32;
    // `as usize` truncates toward zero like `.to(torch.long)`; the value is ≥ 0 here.
    let large = max_exact + scaled as usize;
    base + large.min(buckets - 1)
}

/// Index of the relative-position embedding of Shaw et al. (2018): `clip(rel, −k, k) + k`,
/// in `0 ..= 2k`.
#[inline]
pub fn shaw_index(relative_position: i64, k: usize) -> usize {
    (relative_position.clamp(-(k as i64), k as i64) + k as i64) as usize
}

/// Rotates every row of `x` by its position's angles (sign +1: forward, −1: the inverse).
#[allow(clippy::too_many_arguments)]
fn rope_rotate(
    x: &mut [f32],
    rows: usize,
    stride: usize,
    n_heads: usize,
    hs: usize,
    seq: usize,
    pos_offset: usize,
    theta: f32,
    sign: f64,
) {
    assert!(hs.is_multiple_of(2), "rope: head size {hs} must be even");
    assert!(seq > 0 && stride >= n_heads * hs);
    if rows == 0 {
        return;
    }
    assert!(x.len() >= (rows - 1) * stride + n_heads * hs, "rope: x too short");
    let theta = theta as f64;
    x.par_chunks_mut(stride).take(rows).enumerate().with_min_len(ROPE_ROWS_PER_TASK).for_each(|(r, row)| {
        let pos = (pos_offset + r % seq) as f64;
        for i in 0..hs / 2 {
            // Angles in f64: pos·freq reaches ~8·10³ rad, where an f32 angle would be off by
            // ~5e-4 rad; f64 keeps the rotation accurate to f32 rounding.
            let freq = theta.powf(-((2 * i) as f64) / hs as f64);
            let (s, c) = (pos * freq).sin_cos();
            let (s, c) = ((sign * s) as f32, c as f32);
            for h in 0..n_heads {
                let j = h * hs + 2 * i;
                let (x0, x1) = (row[j], row[j + 1]);
                row[j] = x0 * c - x1 * s;
                row[j + 1] = x0 * s + x1 * c;
            }
        }
    });
}

/// Rotary position embedding, interleaved-pairs form (Meta llama, llama2.c), in place.
///
/// x (rows, stride): row `r` starts at `x[r·stride]` and has position `pos_offset + r % seq`;
/// head `h` occupies columns `h·hs .. (h+1)·hs` (pass the slice that starts at the q or k
/// columns of a packed qkv buffer). Each pair `(2i, 2i+1)` of a head is rotated by
/// `pos · theta^(−2i/hs)`: `(x0, x1) ← (x0·cos − x1·sin, x0·sin + x1·cos)`. Other columns are
/// left alone.
#[allow(clippy::too_many_arguments)]
pub fn rope_forward(
    x: &mut [f32],
    rows: usize,
    stride: usize,
    n_heads: usize,
    hs: usize,
    seq: usize,
    pos_offset: usize,
    theta: f32,
) {
    rope_rotate(x, rows, stride, n_heads, hs, seq, pos_offset, theta, 1.0);
}

/// Backward of [`rope_forward`], in place on dx (rows, stride): the gradient of a rotation is
/// the rotation by the opposite angle.
#[allow(clippy::too_many_arguments)]
pub fn rope_backward(
    dx: &mut [f32],
    rows: usize,
    stride: usize,
    n_heads: usize,
    hs: usize,
    seq: usize,
    pos_offset: usize,
    theta: f32,
) {
    rope_rotate(dx, rows, stride, n_heads, hs, seq, pos_offset, theta, -1.0);
}
