//! Weight-only matmul: `out = x · Wᵀ + b` with W stored narrow — int8 codes with one f32 scale
//! per output channel ([`Elem::I8`]), or bf16 values ([`Elem::Bf16`]) — and x in f32. Each weight
//! is widened to f32 in registers and multiplied into f32 accumulators; activations are never
//! quantized, so only the weights' rounding is lost, and the bytes streamed per weight (1 or 2
//! instead of 4) are what generation, bound by memory traffic, pays for.
//!
//! ## Layout
//!
//! The weights run from panels of [`PANEL`] = 16 output rows: panel p holds, for every input
//! column k in order, the 16 elements `w[16p + j][k]` (j = 0..16) consecutively (16 bytes of
//! int8, 32 bytes of little-endian bf16), so one load gives one column of 16 rows (one AVX-512
//! register of f32 after widening, or two AVX2 ones). Rows are padded with zeros to a multiple
//! of 16. The row-major elements are what checkpoints store ([`pack`], [`unpack`]).
//!
//! ## Arithmetic (the same on every path)
//!
//! Output (i, r) = `acc · scale[r] + bias[r]` (int8) or `acc + bias[r]` (bf16), where `acc`
//! starts at 0 and takes, for k = 0, 1, …, cols − 1 in order, `acc = fma(w[r][k] as f32,
//! x[i][k], acc)` (one rounding per step, as `f32::mul_add`; the widening is exact). Each lane of
//! a SIMD register is one output, so the vector paths perform exactly the scalar reference's
//! operations and every path gives bit-identical results, for every tile shape and thread count.
//!
//! ## Tiles
//!
//! A tile kernel computes the accumulators of P panels × NX activation rows. N = 1
//! (generation): P = 4 panels against one row (four independent FMA chains hide the FMA
//! latency; the bytes per weight streamed are the cost). N > 1: each widened weight vector is
//! reused across NX activation rows: AVX-512 2 panels × up to 12 rows (24 accumulators),
//! AVX2 1 panel (2 registers) × up to 6 rows (12 accumulators).

#[cfg(target_arch = "x86_64")]
mod x86;

use super::dot::Isa;
use super::SendPtr;
use rayon::prelude::*;

/// Output rows per panel.
pub const PANEL: usize = 16;
/// Most activation rows per tile call.
const NX_MAX: usize = 12;
/// Most panels per tile call.
const P_MAX: usize = 4;
/// Accumulators a tile writes: `out[(i · P + p) · PANEL + j]` for activation row i, panel p,
/// lane j.
pub(crate) const TILE_OUT: usize = P_MAX * NX_MAX * PANEL;

/// The stored element type of the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    /// int8 codes (one f32 scale per row, applied after the sum).
    I8,
    /// bf16 values, little-endian (no scale).
    Bf16,
}

impl Elem {
    /// Bytes per stored weight.
    pub const fn bytes(self) -> usize {
        match self {
            Elem::I8 => 1,
            Elem::Bf16 => 2,
        }
    }
}

/// One tile's operands: `w[p]` the first byte of panel p (each covers `cols · PANEL` elements),
/// `x[i]` activation row i (each covers `cols` floats). Entries past the kernel's P / NX are
/// ignored.
pub(crate) struct Tile {
    pub w: [*const u8; P_MAX],
    pub x: [*const f32; NX_MAX],
    pub cols: usize,
}

/// A tile kernel; unsafe: the pointers must cover what [`Tile`] says (and the CPU must have
/// the kernel's features, which [`kernels`] checks).
pub(crate) type TileFn = unsafe fn(&Tile, &mut [f32; TILE_OUT]);

/// The tile kernels of one instruction set and element type: `gemv` (N = 1) over `gemv_p`
/// panels, and `gemm[nx − 1]` over `gemm_p` panels × nx activation rows (nx ≤ `gemm.len()`).
struct Kernels {
    gemv: TileFn,
    gemv_p: usize,
    gemm: &'static [TileFn],
    gemm_p: usize,
}

/// Weight `k` of a panel column run as f32: int8 code (BF16 = false) or bf16 bits (exact).
#[inline(always)]
unsafe fn widen<const BF16: bool>(p: *const u8, k: usize) -> f32 {
    if BF16 {
        let b = [*p.add(2 * k), *p.add(2 * k + 1)];
        f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
    } else {
        *p.add(k) as i8 as f32
    }
}

/// The scalar reference tile: P panels × NX rows, lane by lane, with `f32::mul_add`.
unsafe fn tile_scalar<const BF16: bool, const P: usize, const NX: usize>(t: &Tile, out: &mut [f32; TILE_OUT]) {
    for i in 0..NX {
        let x = std::slice::from_raw_parts(t.x[i], t.cols);
        for p in 0..P {
            let mut acc = [0f32; PANEL];
            for (k, &xk) in x.iter().enumerate() {
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = widen::<BF16>(t.w[p], k * PANEL + j).mul_add(xk, *a);
                }
            }
            out[(i * P + p) * PANEL..(i * P + p + 1) * PANEL].copy_from_slice(&acc);
        }
    }
}

static SCALAR_GEMM_I8: [TileFn; 1] = [tile_scalar::<false, 1, 1>];
static SCALAR_GEMM_BF16: [TileFn; 1] = [tile_scalar::<true, 1, 1>];

fn kernels(isa: Isa, elem: Elem) -> Kernels {
    assert!(isa.available(), "weight-only matmul: this CPU lacks {}", isa.name());
    let bf16 = elem == Elem::Bf16;
    match isa {
        Isa::Scalar => Kernels {
            gemv: if bf16 { tile_scalar::<true, 1, 1> } else { tile_scalar::<false, 1, 1> },
            gemv_p: 1,
            gemm: if bf16 { &SCALAR_GEMM_BF16 } else { &SCALAR_GEMM_I8 },
            gemm_p: 1,
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Kernels {
            gemv: if bf16 { x86::GEMV_AVX2_BF16 } else { x86::GEMV_AVX2_I8 },
            gemv_p: 4,
            gemm: if bf16 { &x86::GEMM_AVX2_BF16 } else { &x86::GEMM_AVX2_I8 },
            gemm_p: 1,
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => Kernels {
            gemv: if bf16 { x86::GEMV_AVX512_BF16 } else { x86::GEMV_AVX512_I8 },
            gemv_p: 4,
            gemm: if bf16 { &x86::GEMM_AVX512_BF16 } else { &x86::GEMM_AVX512_I8 },
            gemm_p: 2,
        },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!(),
    }
}

/// Bytes of the panel layout of a (rows, cols) matrix of `elem`.
pub fn packed_len(rows: usize, cols: usize, elem: Elem) -> usize {
    rows.div_ceil(PANEL) * PANEL * cols * elem.bytes()
}

/// Row-major elements w (rows, cols; `elem.bytes()` bytes each) → the panel layout (module
/// doc), padded with zeros.
pub fn pack(w: &[u8], rows: usize, cols: usize, elem: Elem) -> Vec<u8> {
    let eb = elem.bytes();
    assert_eq!(w.len(), rows * cols * eb, "weight-only pack: length");
    let mut out = vec![0u8; packed_len(rows, cols, elem)];
    for (r, row) in w.chunks_exact((cols * eb).max(1)).take(rows).enumerate() {
        let base = (r / PANEL) * PANEL * cols + r % PANEL;
        for (k, v) in row.chunks_exact(eb).enumerate() {
            let o = (base + k * PANEL) * eb;
            out[o..o + eb].copy_from_slice(v);
        }
    }
    out
}

/// The panel layout → row-major elements (rows, cols), the padding dropped.
pub fn unpack(p: &[u8], rows: usize, cols: usize, elem: Elem) -> Vec<u8> {
    let eb = elem.bytes();
    assert_eq!(p.len(), packed_len(rows, cols, elem), "weight-only unpack: length");
    let mut out = vec![0u8; rows * cols * eb];
    for (r, row) in out.chunks_exact_mut((cols * eb).max(1)).take(rows).enumerate() {
        let base = (r / PANEL) * PANEL * cols + r % PANEL;
        for (k, v) in row.chunks_exact_mut(eb).enumerate() {
            let o = (base + k * PANEL) * eb;
            v.copy_from_slice(&p[o..o + eb]);
        }
    }
    out
}

/// Activation rows per task when N > 1 (a multiple of every path's largest NX).
const N_TASK: usize = 48;
/// Panels per task.
const P_TASK: usize = 4;

/// out (N, rows) = x (N, cols) · Wᵀ (+ bias), W the panel-packed elements `packed` of type
/// `elem`, with one scale per row for [`Elem::I8`] (`scales` is ignored for bf16). No
/// allocation; tiles of `P_TASK` panels × `N_TASK` rows run in parallel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    out: &mut [f32],
    x: &[f32],
    packed: &[u8],
    elem: Elem,
    scales: &[f32],
    rows: usize,
    cols: usize,
    bias: Option<&[f32]>,
    n: usize,
    isa: Isa,
) {
    assert!(packed.len() == packed_len(rows, cols, elem), "weight-only matmul: weight length");
    assert!(elem == Elem::Bf16 || scales.len() == rows, "weight-only matmul: one scale per row");
    assert!(out.len() >= n * rows && x.len() >= n * cols, "weight-only matmul: out/x too short");
    if n == 0 || rows == 0 {
        return;
    }
    let k = kernels(isa, elem);
    let panel_bytes = PANEL * cols * elem.bytes();
    let np = rows.div_ceil(PANEL);
    let n_task = if n == 1 { 1 } else { N_TASK };
    let (nt, pt) = (n.div_ceil(n_task), np.div_ceil(P_TASK));
    let outp = SendPtr(out.as_mut_ptr());
    (0..nt * pt).into_par_iter().for_each(|t| {
        let (n0, p0) = ((t / pt) * n_task, (t % pt) * P_TASK);
        let (n1, p1) = ((n0 + n_task).min(n), (p0 + P_TASK).min(np));
        let (f_p, nx_max) = if n == 1 { (k.gemv_p, 1) } else { (k.gemm_p, k.gemm.len()) };
        let mut acc = [0f32; TILE_OUT];
        let mut tile = Tile { w: [std::ptr::null(); P_MAX], x: [std::ptr::null(); NX_MAX], cols };
        for ps in (p0..p1).step_by(f_p) {
            // A group past the task's last panel repeats that panel; its outputs are dropped.
            for (j, w) in tile.w.iter_mut().enumerate().take(f_p) {
                let p = (ps + j).min(p1 - 1);
                *w = packed[p * panel_bytes..].as_ptr();
            }
            for is in (n0..n1).step_by(nx_max) {
                let nx = (n1 - is).min(nx_max);
                for (j, xr) in tile.x.iter_mut().enumerate().take(nx) {
                    *xr = x[(is + j) * cols..].as_ptr();
                }
                let f = if n == 1 { k.gemv } else { k.gemm[nx - 1] };
                // SAFETY: `kernels` checked the CPU features; every panel pointer covers
                // cols · PANEL elements (p < np), every x pointer `cols` floats.
                unsafe { f(&tile, &mut acc) };
                for i in 0..nx {
                    for p in 0..f_p.min(p1 - ps) {
                        let lanes = &acc[(i * f_p + p) * PANEL..(i * f_p + p + 1) * PANEL];
                        let r0 = (ps + p) * PANEL;
                        for (j, a) in lanes.iter().enumerate().take(rows - r0.min(rows)) {
                            let r = r0 + j;
                            let scaled = if elem == Elem::I8 { a * scales[r] } else { *a };
                            let v = scaled + bias.map_or(0.0, |b| b[r]);
                            // SAFETY: is + i < n, r < rows: inside `out`; tasks own disjoint
                            // (row, panel) blocks.
                            unsafe { *outp.get().add((is + i) * rows + r) = v };
                        }
                    }
                }
            }
        }
    });
}
