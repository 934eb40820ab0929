//! Integer dot products of one quantized weight row with one quantized activation row, for each
//! instruction set, and the run-time choice between them.
//!
//! Every path computes, per block or group, the same exact `i32` sum of int8 × int8 (or
//! unsigned 4-bit × int8) products, and then the same scalar f32 accumulation over blocks in
//! block order, written once in the `*_row!` macros below. Integer sums do not depend on the
//! order of their terms, so every path gives bit-identical results.
//!
//! - scalar: plain Rust, any CPU.
//! - AVX2: `_mm256_maddubs_epi16` (u8 × i8 → pairs summed to i16) and `_mm256_madd_epi16` with
//!   ones (→ i32). For int8 × int8 the unsigned operand is `|x|` and the signed one
//!   `sign(w, x)` (llama.cpp's trick; both are in −127..=127, so no pair sum saturates i16:
//!   2·127·127 < 32767). 4-bit codes (0..=15) are already unsigned.
//! - AVX-512 VNNI: `_mm512_dpbusd_epi32` / `_mm256_dpbusd_epi32` (u8 × i8 → i32 in one
//!   instruction), with the same `|x|`, `sign(w, x)` trick for int8 × int8.
//!
//! On the SIMD paths, `quant_matmul_forward` runs Q8_0, Q4_0 and Int4 through register tiles
//! ([`TileArgs`]): 8 outputs (8 W rows × 1 x row, or 4 × 2) per step, the eight block sums
//! reduced together (`reduce8`) and scaled and accumulated as one f32 vector, each lane with
//! the very operations of the scalar reference, in block order.
//!
//! 4-bit codes are unpacked in registers (`& 0x0F`, `>> 4`), never into a temporary row.
//! Q4_0 (`q − 8`) and asymmetric int4 (`q − z`) use `Σ q·x − z·Σ x` with `Σ x` precomputed per
//! activation block.
//!
//! The choice is made once ([`Isa::selected`]): the best the CPU has, or the one named by the
//! environment variable `LMLAB_QUANT_ISA=scalar|avx2|avx512vnni` (for tests and benchmarks).

use super::ggml::{block_scale, Q4_0_BYTES, Q8_0_BYTES, QK};
use std::sync::OnceLock;

/// An instruction set for the quantized dot products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512Vnni,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni];

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("f16c")
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest path this CPU has.
    pub fn best() -> Isa {
        [Isa::Avx512Vnni, Isa::Avx2].into_iter().find(|i| i.available()).unwrap_or(Isa::Scalar)
    }

    /// The name `LMLAB_QUANT_ISA` uses.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }

    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == name)
    }

    /// The path `quant_matmul_forward` uses, chosen on first use: `LMLAB_QUANT_ISA` if set
    /// (panics if it names an unknown path or one this CPU lacks), else [`Isa::best`].
    pub fn selected() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| match std::env::var("LMLAB_QUANT_ISA") {
            Ok(v) if !v.is_empty() => {
                let isa = Isa::from_name(&v)
                    .unwrap_or_else(|| panic!("LMLAB_QUANT_ISA={v}: expected scalar, avx2 or avx512vnni"));
                assert!(isa.available(), "LMLAB_QUANT_ISA={v}: this CPU lacks that instruction set");
                isa
            }
            _ => Isa::best(),
        })
    }
}

/// Q8_0 weight row (nb · 34 bytes) · Q8 activations (nb · 32 codes, nb f32 scales).
pub(crate) type Q8Row = unsafe fn(&[u8], &[i8], &[f32]) -> f32;
/// Q4_0 weight row (nb · 18 bytes) · Q8 activations (codes, scales, Σ codes per block).
pub(crate) type Q4Row = unsafe fn(&[u8], &[i8], &[f32], &[i32]) -> f32;
/// Σ w·x over an int8 weight row and an int8 activation row of the same length.
pub(crate) type I8Row = unsafe fn(&[i8], &[i8]) -> i32;
/// Int4 weight row (cols/2 bytes, per-group scales and zero points) · int8 activations
/// (codes, per-group scales and Σ codes), group size last.
pub(crate) type I4Row = unsafe fn(&[u8], &[f32], &[u8], &[i8], &[f32], &[i32], usize) -> f32;

/// The row kernels of one path. Unsafe to call only because the SIMD ones need their CPU
/// features: [`kernels`] hands them out only for an available [`Isa`].
#[derive(Clone, Copy)]
pub(crate) struct Kernels {
    pub q8_0: Q8Row,
    pub q4_0: Q4Row,
    pub int8: I8Row,
    pub int4: I4Row,
    /// Register-tiled kernels for Q8_0, Q4_0 and Int4 ([`TILE_Q8_0`]…), for 1 and 2 x rows;
    /// None on the scalar path.
    pub tiles: Option<[[TileFn; 2]; 3]>,
    /// Int8 4 W rows × 4 x rows ([`I8Tile`]); None where the path has none.
    pub int8_tile: Option<I8Tile>,
}

/// Σ w·x over `len` int8 pairs for 4 W rows × 4 x rows: `out[4·r + i]` = row `w[r]` · row `x[i]`
/// (each pointer covers `len` values). The exact integer sums of [`I8Row`].
pub(crate) type I8Tile = unsafe fn(&[*const i8; 4], &[*const i8; 4], usize, &mut [i32; 16]);

/// Indices into [`Kernels::tiles`].
pub(crate) const TILE_Q8_0: usize = 0;
pub(crate) const TILE_Q4_0: usize = 1;
pub(crate) const TILE_INT4: usize = 2;

/// One tile: 8 outputs, for `8 / NX` weight rows × `NX` activation rows (NX = 1 or 2); output
/// lane `k` is weight row `k / NX`, activation row `k % NX`.
///
/// - `w[r]`: weight row `r`'s data; Int4 also `ws[r]`, `wz[r]` (its `ng` scales and zero
///   points); unused entries (r ≥ 8 / NX) are ignored.
/// - `x`: the first activation row's codes, the next `xq_step` later; `xd`, `xs`: its block
///   scales and Σ codes, the next row's `xb_step` later (steps of 0 repeat the row).
/// - `nb`: blocks (Q8_0/Q4_0) or groups (Int4); `nsub`: sub-blocks of 32 per group (Int4).
///
/// Each lane computes exactly what the row kernels' `*_row!` macros compute (same i32 block
/// sums, same f32 operations in the same block order); the lanes just run side by side.
pub(crate) struct TileArgs {
    pub w: [*const u8; 8],
    pub ws: [*const f32; 8],
    pub wz: [*const u8; 8],
    pub x: *const i8,
    pub xd: *const f32,
    pub xs: *const i32,
    pub xq_step: usize,
    pub xb_step: usize,
    pub nb: usize,
    pub nsub: usize,
}

/// A tile kernel; unsafe: every pointer must cover what [`TileArgs`] says it is read for.
pub(crate) type TileFn = unsafe fn(&TileArgs, &mut [f32; 8]);

pub(crate) fn kernels(isa: Isa) -> Kernels {
    assert!(isa.available(), "quantized matmul: this CPU lacks {}", isa.name());
    match isa {
        Isa::Scalar => Kernels {
            q8_0: q8_0_scalar,
            q4_0: q4_0_scalar,
            int8: int8_scalar,
            int4: int4_scalar,
            tiles: None,
            int8_tile: None,
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Kernels {
            q8_0: x86::q8_0_avx2,
            q4_0: x86::q4_0_avx2,
            int8: x86::int8_avx2,
            int4: x86::int4_avx2,
            tiles: Some(x86::TILES_AVX2),
            int8_tile: None,
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => Kernels {
            q8_0: x86::q8_0_vnni,
            q4_0: x86::q4_0_vnni,
            int8: x86::int8_vnni,
            int4: x86::int4_vnni,
            tiles: Some(x86::TILES_VNNI),
            int8_tile: Some(x86::int8_tile_vnni),
        },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!(),
    }
}

// The f32 accumulation shared by every path: `$dot` is the exact integer block sum.

/// Σ_b (Σ w·x)_b · (d_w,b · d_x,b) over Q8_0 blocks. `$dot(32 w codes, 32 x codes) -> i32`.
macro_rules! q8_0_row {
    ($w:ident, $xq:ident, $xd:ident, $dot:expr) => {{
        let nb = $xd.len();
        assert!($w.len() == nb * Q8_0_BYTES && $xq.len() == nb * QK, "q8_0 row: lengths");
        let mut acc = 0.0f32;
        for (b, &xd) in $xd.iter().enumerate() {
            let wb = &$w[b * Q8_0_BYTES..(b + 1) * Q8_0_BYTES];
            let isum: i32 = $dot(wb.as_ptr().add(2) as *const i8, $xq.as_ptr().add(b * QK));
            acc += isum as f32 * (block_scale(wb) * xd);
        }
        acc
    }};
}

/// Σ_b (Σ q·x − 8·Σx)_b · (d_w,b · d_x,b) over Q4_0 blocks. `$dot(16 packed bytes, 32 codes)`.
macro_rules! q4_0_row {
    ($w:ident, $xq:ident, $xd:ident, $xs:ident, $dot:expr) => {{
        let nb = $xd.len();
        assert!($w.len() == nb * Q4_0_BYTES && $xq.len() == nb * QK && $xs.len() == nb, "q4_0 row: lengths");
        let mut acc = 0.0f32;
        for (b, &xd) in $xd.iter().enumerate() {
            let wb = &$w[b * Q4_0_BYTES..(b + 1) * Q4_0_BYTES];
            let isum: i32 = $dot(wb.as_ptr().add(2), $xq.as_ptr().add(b * QK), 1) - 8 * $xs[b];
            acc += isum as f32 * (block_scale(wb) * xd);
        }
        acc
    }};
}

/// Σ_g (Σ q·x − z_g·Σx)_g · (s_w,g · s_x,g) over groups. `$dot(packed, codes, sub-blocks of 32)`.
macro_rules! int4_row {
    ($w:ident, $ws:ident, $wz:ident, $xq:ident, $xd:ident, $xs:ident, $group:ident, $dot:expr) => {{
        let ng = $xd.len();
        assert!(
            $group.is_multiple_of(QK)
                && $w.len() * 2 == ng * $group
                && $xq.len() == ng * $group
                && $ws.len() == ng
                && $wz.len() == ng
                && $xs.len() == ng,
            "int4 row: lengths"
        );
        let mut acc = 0.0f32;
        for (g, &xd) in $xd.iter().enumerate() {
            let dot: i32 = $dot($w.as_ptr().add(g * $group / 2), $xq.as_ptr().add(g * $group), $group / QK);
            let isum = dot - $wz[g] as i32 * $xs[g];
            acc += isum as f32 * ($ws[g] * xd);
        }
        acc
    }};
}

// ---- scalar ----

/// Σ w[i]·x[i], i < len.
#[inline(always)]
unsafe fn dot_i8_scalar(w: *const i8, x: *const i8, len: usize) -> i32 {
    let (w, x) = (std::slice::from_raw_parts(w, len), std::slice::from_raw_parts(x, len));
    w.iter().zip(x).map(|(a, b)| *a as i32 * *b as i32).sum()
}

/// Σ q·x over `nsub` sub-blocks of 32 codes packed GGML-style (16 bytes each: value j in the
/// low nibble of byte j, value j+16 in the high nibble).
#[inline(always)]
unsafe fn dot_q4_scalar(p: *const u8, x: *const i8, nsub: usize) -> i32 {
    let (p, x) = (std::slice::from_raw_parts(p, nsub * QK / 2), std::slice::from_raw_parts(x, nsub * QK));
    let mut s = 0i32;
    for (pb, xb) in p.chunks_exact(QK / 2).zip(x.chunks_exact(QK)) {
        for j in 0..QK / 2 {
            s += (pb[j] & 0x0F) as i32 * xb[j] as i32 + (pb[j] >> 4) as i32 * xb[j + QK / 2] as i32;
        }
    }
    s
}

#[inline(always)]
unsafe fn dot32_scalar(w: *const i8, x: *const i8) -> i32 {
    dot_i8_scalar(w, x, QK)
}

unsafe fn q8_0_scalar(w: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    q8_0_row!(w, xq, xd, dot32_scalar)
}

unsafe fn q4_0_scalar(w: &[u8], xq: &[i8], xd: &[f32], xs: &[i32]) -> f32 {
    q4_0_row!(w, xq, xd, xs, dot_q4_scalar)
}

unsafe fn int8_scalar(w: &[i8], x: &[i8]) -> i32 {
    assert_eq!(w.len(), x.len(), "int8 row: lengths");
    dot_i8_scalar(w.as_ptr(), x.as_ptr(), w.len())
}

unsafe fn int4_scalar(w: &[u8], ws: &[f32], wz: &[u8], xq: &[i8], xd: &[f32], xs: &[i32], group: usize) -> f32 {
    int4_row!(w, ws, wz, xq, xd, xs, group, dot_q4_scalar)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// Sum of the eight i32 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn hsum256(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    /// 32 codes unpacked from 16 GGML-packed bytes: low nibbles (values 0..16) in the low
    /// 128 bits, high nibbles (values 16..32) in the high 128 bits.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack32(p: *const u8) -> __m256i {
        let b = _mm_loadu_si128(p as *const __m128i);
        let m = _mm_set1_epi8(0x0F);
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16::<4>(b), m), _mm_and_si128(b, m))
    }

    // ---- AVX2 ----

    /// i32 lanes of Σ w·x over 32 int8 pairs (|x| · sign(w, x); values in −127..=127).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn madd_i8_avx2(w: __m256i, x: __m256i) -> __m256i {
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(w, x));
        _mm256_madd_epi16(p, _mm256_set1_epi16(1))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dot_i8_avx2(w: *const i8, x: *const i8, len: usize) -> i32 {
        let mut acc = _mm256_setzero_si256();
        let mut i = 0;
        while i + 32 <= len {
            let wv = _mm256_loadu_si256(w.add(i) as *const __m256i);
            let xv = _mm256_loadu_si256(x.add(i) as *const __m256i);
            acc = _mm256_add_epi32(acc, madd_i8_avx2(wv, xv));
            i += 32;
        }
        hsum256(acc) + dot_i8_scalar(w.add(i), x.add(i), len - i)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dot32_avx2(w: *const i8, x: *const i8) -> i32 {
        let wv = _mm256_loadu_si256(w as *const __m256i);
        let xv = _mm256_loadu_si256(x as *const __m256i);
        hsum256(madd_i8_avx2(wv, xv))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dot_q4_avx2(p: *const u8, x: *const i8, nsub: usize) -> i32 {
        let mut acc = _mm256_setzero_si256();
        for s in 0..nsub {
            let q = unpack32(p.add(s * QK / 2));
            let xv = _mm256_loadu_si256(x.add(s * QK) as *const __m256i);
            // codes 0..=15 · |x| ≤ 127: pair sums ≤ 3810, no i16 saturation.
            let pr = _mm256_maddubs_epi16(q, xv);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pr, _mm256_set1_epi16(1)));
        }
        hsum256(acc)
    }

    // SAFETY (all row kernels below): the `*_row!` macros assert every slice length before the
    // loops, so every pointer read stays inside its slice; `kernels` hands these functions out
    // only when `Isa::available` found their CPU features.

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn q8_0_avx2(w: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
        q8_0_row!(w, xq, xd, dot32_avx2)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn q4_0_avx2(w: &[u8], xq: &[i8], xd: &[f32], xs: &[i32]) -> f32 {
        q4_0_row!(w, xq, xd, xs, dot_q4_avx2)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn int8_avx2(w: &[i8], x: &[i8]) -> i32 {
        assert_eq!(w.len(), x.len(), "int8 row: lengths");
        dot_i8_avx2(w.as_ptr(), x.as_ptr(), w.len())
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn int4_avx2(
        w: &[u8],
        ws: &[f32],
        wz: &[u8],
        xq: &[i8],
        xd: &[f32],
        xs: &[i32],
        group: usize,
    ) -> f32 {
        int4_row!(w, ws, wz, xq, xd, xs, group, dot_q4_avx2)
    }

    // ---- AVX-512 VNNI ----

    /// Σ w·x over 32 int8 pairs in one `vpdpbusd` (256-bit, AVX512VL).
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn dot32_vnni(w: *const i8, x: *const i8) -> i32 {
        let wv = _mm256_loadu_si256(w as *const __m256i);
        let xv = _mm256_loadu_si256(x as *const __m256i);
        let acc = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(xv, xv), _mm256_sign_epi8(wv, xv));
        hsum256(acc)
    }

    /// Σ w·x over `len` int8 pairs, 64 per step; the tail through masked loads (masked-off bytes
    /// are not read and count as zero).
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn dot_i8_vnni(w: *const i8, x: *const i8, len: usize) -> i32 {
        #[inline]
        #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
        unsafe fn step(acc: __m512i, wv: __m512i, xv: __m512i) -> __m512i {
            let neg = _mm512_movepi8_mask(xv);
            let sw = _mm512_mask_sub_epi8(wv, neg, _mm512_setzero_si512(), wv);
            _mm512_dpbusd_epi32(acc, _mm512_abs_epi8(xv), sw)
        }
        let mut acc = _mm512_setzero_si512();
        let mut i = 0;
        while i + 64 <= len {
            let wv = _mm512_loadu_si512(w.add(i) as *const __m512i);
            let xv = _mm512_loadu_si512(x.add(i) as *const __m512i);
            acc = step(acc, wv, xv);
            i += 64;
        }
        if i < len {
            let m: __mmask64 = (1u64 << (len - i)) - 1;
            let wv = _mm512_maskz_loadu_epi8(m, w.add(i));
            let xv = _mm512_maskz_loadu_epi8(m, x.add(i));
            acc = step(acc, wv, xv);
        }
        _mm512_reduce_add_epi32(acc)
    }

    /// Σ q·x over `nsub` GGML-packed sub-blocks of 32, two per 512-bit step.
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn dot_q4_vnni(p: *const u8, x: *const i8, nsub: usize) -> i32 {
        let m = _mm256_set1_epi8(0x0F);
        let mut acc = _mm512_setzero_si512();
        let mut s = 0;
        while s + 2 <= nsub {
            let b = _mm256_loadu_si256(p.add(s * QK / 2) as *const __m256i);
            let lo = _mm256_and_si256(b, m);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(b), m);
            // [lo0, lo1, hi0, hi1] (128-bit lanes) → [lo0, hi0, lo1, hi1] = codes of 64 values.
            let q = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            let q = _mm512_shuffle_i64x2::<0b11_01_10_00>(q, q);
            let xv = _mm512_loadu_si512(x.add(s * QK) as *const __m512i);
            acc = _mm512_dpbusd_epi32(acc, q, xv);
            s += 2;
        }
        let mut sum = _mm512_reduce_add_epi32(acc);
        if s < nsub {
            let q = unpack32(p.add(s * QK / 2));
            let xv = _mm256_loadu_si256(x.add(s * QK) as *const __m256i);
            sum += hsum256(_mm256_dpbusd_epi32(_mm256_setzero_si256(), q, xv));
        }
        sum
    }

    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn q8_0_vnni(w: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
        q8_0_row!(w, xq, xd, dot32_vnni)
    }

    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn q4_0_vnni(w: &[u8], xq: &[i8], xd: &[f32], xs: &[i32]) -> f32 {
        q4_0_row!(w, xq, xd, xs, dot_q4_vnni)
    }

    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn int8_vnni(w: &[i8], x: &[i8]) -> i32 {
        assert_eq!(w.len(), x.len(), "int8 row: lengths");
        dot_i8_vnni(w.as_ptr(), x.as_ptr(), w.len())
    }

    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn int4_vnni(
        w: &[u8],
        ws: &[f32],
        wz: &[u8],
        xq: &[i8],
        xd: &[f32],
        xs: &[i32],
        group: usize,
    ) -> f32 {
        int4_row!(w, ws, wz, xq, xd, xs, group, dot_q4_vnni)
    }

    // ---- register tiles (8 outputs per step, see `TileArgs`) ----

    /// Lane k = the sum of the eight i32 lanes of v[k].
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn reduce8(v: &[__m256i; 8]) -> __m256i {
        let s01 = _mm256_hadd_epi32(v[0], v[1]);
        let s23 = _mm256_hadd_epi32(v[2], v[3]);
        let s45 = _mm256_hadd_epi32(v[4], v[5]);
        let s67 = _mm256_hadd_epi32(v[6], v[7]);
        // t0 = [Σlo v0..v3 | Σhi v0..v3], t1 the same for v4..v7.
        let t0 = _mm256_hadd_epi32(s01, s23);
        let t1 = _mm256_hadd_epi32(s45, s67);
        _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(t0, t1), _mm256_permute2x128_si256::<0x31>(t0, t1))
    }

    /// The tile kernel for one ISA: `$dot8(w, x)` (int8 × int8 → 8 i32 lanes) and
    /// `$dot4(codes, x)` (u4 × int8 → 8 i32 lanes, accumulated onto `$acc`).
    macro_rules! tile_kernel {
        ($name:ident, $feat:literal, $dot8:ident, $dot4:ident) => {
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn $name<const K: usize, const NX: usize>(a: &TileArgs, b0: usize, mut acc: __m256) -> __m256 {
                let rw = 8 / NX;
                for b in b0..a.nb {
                    let mut d = [_mm256_setzero_si256(); 8];
                    let mut h = [0u16; 8];
                    let mut dws = [0f32; 8];
                    let (mut dx, mut sx) = ([0f32; 2], [0i32; 2]);
                    for i in 0..NX {
                        dx[i] = *a.xd.add(i * a.xb_step + b);
                        sx[i] = *a.xs.add(i * a.xb_step + b);
                    }
                    if K == TILE_INT4 {
                        for s in 0..a.nsub {
                            let mut xv = [_mm256_setzero_si256(); 2];
                            for (i, xv) in xv.iter_mut().enumerate().take(NX) {
                                *xv = _mm256_loadu_si256(
                                    a.x.add(i * a.xq_step + (b * a.nsub + s) * QK) as *const __m256i
                                );
                            }
                            for r in 0..rw {
                                let q = unpack32(a.w[r].add((b * a.nsub + s) * QK / 2));
                                for i in 0..NX {
                                    d[r * NX + i] = $dot4(d[r * NX + i], q, xv[i]);
                                }
                            }
                        }
                    } else {
                        let mut xv = [_mm256_setzero_si256(); 2];
                        for (i, xv) in xv.iter_mut().enumerate().take(NX) {
                            *xv = _mm256_loadu_si256(a.x.add(i * a.xq_step + b * QK) as *const __m256i);
                        }
                        for r in 0..rw {
                            let p = a.w[r].add(b * if K == TILE_Q8_0 { Q8_0_BYTES } else { Q4_0_BYTES });
                            h[r] = (p as *const u16).read_unaligned().to_le();
                            if K == TILE_Q8_0 {
                                let wv = _mm256_loadu_si256(p.add(2) as *const __m256i);
                                for i in 0..NX {
                                    d[r * NX + i] = $dot8(wv, xv[i]);
                                }
                            } else {
                                let q = unpack32(p.add(2));
                                for i in 0..NX {
                                    d[r * NX + i] = $dot4(_mm256_setzero_si256(), q, xv[i]);
                                }
                            }
                        }
                    }
                    let mut isum = reduce8(&d);
                    let mut sxl = [0i32; 8];
                    let mut dxl = [0f32; 8];
                    let mut hl = [0u16; 8];
                    let mut zl = [0i32; 8];
                    for k in 0..8 {
                        sxl[k] = sx[k % NX];
                        dxl[k] = dx[k % NX];
                        hl[k] = h[k / NX];
                        if K == TILE_INT4 {
                            dws[k] = *a.ws[k / NX].add(b);
                            zl[k] = *a.wz[k / NX].add(b) as i32;
                        }
                    }
                    let sxv = _mm256_loadu_si256(sxl.as_ptr() as *const __m256i);
                    let dw = if K == TILE_INT4 {
                        isum = _mm256_sub_epi32(
                            isum,
                            _mm256_mullo_epi32(_mm256_loadu_si256(zl.as_ptr() as *const __m256i), sxv),
                        );
                        _mm256_loadu_ps(dws.as_ptr())
                    } else {
                        if K == TILE_Q4_0 {
                            isum = _mm256_sub_epi32(isum, _mm256_slli_epi32::<3>(sxv));
                        }
                        _mm256_cvtph_ps(_mm_loadu_si128(hl.as_ptr() as *const __m128i))
                    };
                    let sc = _mm256_mul_ps(dw, _mm256_loadu_ps(dxl.as_ptr()));
                    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(isum), sc));
                }
                acc
            }
        };
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dot8_avx2(w: __m256i, x: __m256i) -> __m256i {
        madd_i8_avx2(w, x)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dot4_avx2(acc: __m256i, q: __m256i, x: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), _mm256_set1_epi16(1)))
    }

    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn dot8_vnni(w: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(x, x), _mm256_sign_epi8(w, x))
    }

    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn dot4_vnni(acc: __m256i, q: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, q, x)
    }

    tile_kernel!(tile_avx2, "avx2,f16c", dot8_avx2, dot4_avx2);
    tile_kernel!(tile_vnni, "avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni", dot8_vnni, dot4_vnni);

    #[target_feature(enable = "avx2,f16c")]
    unsafe fn tile_avx2_all<const K: usize, const NX: usize>(a: &TileArgs, out: &mut [f32; 8]) {
        _mm256_storeu_ps(out.as_mut_ptr(), tile_avx2::<K, NX>(a, 0, _mm256_setzero_ps()));
    }

    /// [`reduce8`] of two blocks at once: v[k] holds block b in its low 256 bits and block b+1
    /// in its high 256 bits; lane 8·j + k of the result = the sum of v[k]'s half j.
    #[inline]
    #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn reduce8x2(v: &[__m512i; 8]) -> __m512i {
        // Per 128-bit lane, as `_mm256_hadd_epi32`.
        #[inline]
        #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        unsafe fn hadd(a: __m512i, b: __m512i) -> __m512i {
            let (a, b) = (_mm512_castsi512_ps(a), _mm512_castsi512_ps(b));
            let e = _mm512_castps_si512(_mm512_shuffle_ps::<0x88>(a, b));
            let o = _mm512_castps_si512(_mm512_shuffle_ps::<0xDD>(a, b));
            _mm512_add_epi32(e, o)
        }
        let t0 = hadd(hadd(v[0], v[1]), hadd(v[2], v[3]));
        let t1 = hadd(hadd(v[4], v[5]), hadd(v[6], v[7]));
        // Lane L of t0: v0..v3 summed over 128-bit lane L (L = 0, 1 block b; 2, 3 block b+1).
        let a = _mm512_shuffle_i64x2::<0x88>(t0, t1);
        let b = _mm512_shuffle_i64x2::<0xDD>(t0, t1);
        let s = _mm512_add_epi32(a, b);
        _mm512_shuffle_i64x2::<0xD8>(s, s)
    }

    /// The VNNI tile: for one x row (N = 1), Q8_0 and Q4_0 two blocks per step in 512-bit
    /// registers (each lane's operations unchanged: block b's product is added before block
    /// b+1's), then any last block, two x rows and Int4 through `tile_vnni` (with two x rows
    /// the 512-bit step measured slower).
    #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn tile_vnni_all<const K: usize, const NX: usize>(a: &TileArgs, out: &mut [f32; 8]) {
        let rw = 8 / NX;
        let bytes = if K == TILE_Q8_0 { Q8_0_BYTES } else { Q4_0_BYTES };
        let zero = _mm512_setzero_si512();
        let mut acc = _mm256_setzero_ps();
        let mut b = 0;
        while K != TILE_INT4 && NX == 1 && b + 2 <= a.nb {
            let mut xv = [zero; 2];
            let mut xa = [zero; 2];
            let mut xn: [__mmask64; 2] = [0; 2];
            for i in 0..NX {
                xv[i] = _mm512_loadu_si512(a.x.add(i * a.xq_step + b * QK) as *const __m512i);
                xa[i] = _mm512_abs_epi8(xv[i]);
                xn[i] = _mm512_movepi8_mask(xv[i]);
            }
            let mut d = [zero; 8];
            let mut hl = [0u16; 16];
            let mut dxl = [0f32; 16];
            let mut sxl = [0i32; 16];
            for r in 0..rw {
                let p = a.w[r].add(b * bytes);
                let (h0, h1) =
                    ((p as *const u16).read_unaligned().to_le(), (p.add(bytes) as *const u16).read_unaligned().to_le());
                let wv = if K == TILE_Q8_0 {
                    let lo = _mm256_loadu_si256(p.add(2) as *const __m256i);
                    _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(lo),
                        _mm256_loadu_si256(p.add(bytes + 2) as *const __m256i),
                    )
                } else {
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(unpack32(p.add(2))), unpack32(p.add(bytes + 2)))
                };
                for i in 0..NX {
                    let k = r * NX + i;
                    hl[k] = h0;
                    hl[8 + k] = h1;
                    d[k] = if K == TILE_Q8_0 {
                        _mm512_dpbusd_epi32(zero, xa[i], _mm512_mask_sub_epi8(wv, xn[i], zero, wv))
                    } else {
                        _mm512_dpbusd_epi32(zero, wv, xv[i])
                    };
                }
            }
            for k in 0..8 {
                let xo = (k % NX) * a.xb_step + b;
                dxl[k] = *a.xd.add(xo);
                dxl[8 + k] = *a.xd.add(xo + 1);
                if K == TILE_Q4_0 {
                    sxl[k] = *a.xs.add(xo);
                    sxl[8 + k] = *a.xs.add(xo + 1);
                }
            }
            let mut isum = reduce8x2(&d);
            if K == TILE_Q4_0 {
                isum =
                    _mm512_sub_epi32(isum, _mm512_slli_epi32::<3>(_mm512_loadu_si512(sxl.as_ptr() as *const __m512i)));
            }
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(hl.as_ptr() as *const __m256i));
            let sc = _mm512_mul_ps(dw, _mm512_loadu_ps(dxl.as_ptr()));
            let t = _mm512_mul_ps(_mm512_cvtepi32_ps(isum), sc);
            acc = _mm256_add_ps(acc, _mm512_castps512_ps256(t));
            acc = _mm256_add_ps(acc, _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(t))));
            b += 2;
        }
        _mm256_storeu_ps(out.as_mut_ptr(), tile_vnni::<K, NX>(a, b, acc));
    }

    pub(super) const TILES_AVX2: [[TileFn; 2]; 3] = [
        [tile_avx2_all::<TILE_Q8_0, 1>, tile_avx2_all::<TILE_Q8_0, 2>],
        [tile_avx2_all::<TILE_Q4_0, 1>, tile_avx2_all::<TILE_Q4_0, 2>],
        [tile_avx2_all::<TILE_INT4, 1>, tile_avx2_all::<TILE_INT4, 2>],
    ];
    pub(super) const TILES_VNNI: [[TileFn; 2]; 3] = [
        [tile_vnni_all::<TILE_Q8_0, 1>, tile_vnni_all::<TILE_Q8_0, 2>],
        [tile_vnni_all::<TILE_Q4_0, 1>, tile_vnni_all::<TILE_Q4_0, 2>],
        [tile_vnni_all::<TILE_INT4, 1>, tile_vnni_all::<TILE_INT4, 2>],
    ];

    /// [`I8Tile`] with `vpdpbusd`: u = x + 128 (x ^ 0x80, unsigned), so Σ u·w = Σ x·w + 128·Σ w,
    /// and Σ w comes from `vpdpbusd(1, w)`; one instruction per pair and 64 values. The tail
    /// goes through masked loads (zeros: w = 0 adds nothing to either sum).
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn int8_tile_vnni(w: &[*const i8; 4], x: &[*const i8; 4], len: usize, out: &mut [i32; 16]) {
        let (ones, flip) = (_mm512_set1_epi8(1), _mm512_set1_epi8(-128));
        let mut acc = [_mm512_setzero_si512(); 16];
        let mut sw = [_mm512_setzero_si512(); 4];
        let mut i = 0;
        while i < len {
            let m: __mmask64 = if len - i >= 64 { !0 } else { (1u64 << (len - i)) - 1 };
            let mut u = [_mm512_setzero_si512(); 4];
            for (u, x) in u.iter_mut().zip(x) {
                *u = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, x.add(i)), flip);
            }
            for r in 0..4 {
                let wv = _mm512_maskz_loadu_epi8(m, w[r].add(i));
                sw[r] = _mm512_dpbusd_epi32(sw[r], ones, wv);
                for c in 0..4 {
                    acc[4 * r + c] = _mm512_dpbusd_epi32(acc[4 * r + c], u[c], wv);
                }
            }
            i += 64;
        }
        for r in 0..4 {
            let s = _mm512_reduce_add_epi32(sw[r]).wrapping_mul(128);
            for c in 0..4 {
                out[4 * r + c] = _mm512_reduce_add_epi32(acc[4 * r + c]).wrapping_sub(s);
            }
        }
    }
}
