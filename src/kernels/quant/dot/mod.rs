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
//! (`TileArgs`): 8 outputs (8 W rows × 1 x row, or 4 × 2) per step, the eight block sums
//! reduced together (`reduce8`) and scaled and accumulated as one f32 vector, each lane with
//! the very operations of the scalar reference, in block order.
//!
//! 4-bit codes are unpacked in registers (`& 0x0F`, `>> 4`), never into a temporary row.
//! Q4_0 (`q − 8`) and asymmetric int4 (`q − z`) use `Σ q·x − z·Σ x` with `Σ x` precomputed per
//! activation block.
//!
//! The choice follows the engine's one instruction-set choice ([`Isa::selected`], from
//! `kernels::isa`): `LMLAB_ISA=scalar`, `avx2` or `avx512,no-vnni` force the scalar and AVX2
//! paths (for tests and benchmarks).
//!
//! This file holds the [`Isa`] choice, the kernel table (`kernels`), the `*_row!` macros and
//! the scalar path; `avx2.rs` and `vnni.rs` the SIMD kernels of each path, `x86.rs` the helpers
//! and the `tile_kernel!` macro both share.

use super::ggml::{block_scale, Q4_0_BYTES, Q8_0_BYTES, QK};

/// An instruction set for the quantized dot products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512Vnni,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni];

    /// Whether this CPU can run the path (FMA too: the int8 weight-only kernels of
    /// `quant::weight_only` use it on both SIMD paths).
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("f16c")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("f16c")
                    && std::arch::is_x86_feature_detected!("fma")
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

    /// The path's name in reports.
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

    /// The path of these kernels within a global instruction-set path: VNNI needs AVX-512
    /// with VNNI, the AVX2 kernels (which also use F16C and FMA) any AVX2 level.
    pub fn for_path(path: crate::kernels::isa::Isa) -> Isa {
        use crate::kernels::isa::Level;
        match path.level {
            Level::Avx512 if path.vnni => Isa::Avx512Vnni,
            Level::Avx512 | Level::Avx2 => Isa::Avx2,
            Level::Scalar => Isa::Scalar,
        }
    }

    /// The path `quant_matmul_forward` uses: the one [`crate::kernels::isa::Isa::active`]
    /// (`LMLAB_ISA`, else the CPU's best) allows.
    pub fn selected() -> Isa {
        Isa::for_path(crate::kernels::isa::Isa::active())
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
            q8_0: avx2::q8_0_avx2,
            q4_0: avx2::q4_0_avx2,
            int8: avx2::int8_avx2,
            int4: avx2::int4_avx2,
            tiles: Some(avx2::TILES_AVX2),
            int8_tile: None,
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => Kernels {
            q8_0: vnni::q8_0_vnni,
            q4_0: vnni::q4_0_vnni,
            int8: vnni::int8_vnni,
            int4: vnni::int4_vnni,
            tiles: Some(vnni::TILES_VNNI),
            int8_tile: Some(vnni::int8_tile_vnni),
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
#[macro_use]
mod x86;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod vnni;
