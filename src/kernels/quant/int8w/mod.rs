//! Int8 weight-only matmul: `out = x · Wᵀ + b` with W in int8 (one f32 scale per output
//! channel) and x in f32. Each weight is converted to f32 in registers and multiplied into f32
//! accumulators; activations are never quantized, so only the weights' rounding is lost.
//!
//! ## Layout
//!
//! The weights run from panels of [`PANEL`] = 16 output rows: panel p holds, for every input
//! column k in order, the 16 codes `w[16p + j][k]` (j = 0..16) as 16 consecutive bytes, so one
//! 16-byte load gives one column of 16 rows (one AVX-512 register of f32 after conversion, or
//! two AVX2 ones). Rows are padded with zero codes to a multiple of 16. The row-major codes are
//! what checkpoints store ([`pack`], [`unpack`]).
//!
//! ## Arithmetic (the same on every path)
//!
//! Output (i, r) = `acc · scale[r] + bias[r]`, where `acc` starts at 0 and takes, for k = 0, 1,
//! …, cols − 1 in order, `acc = fma(w[r][k] as f32, x[i][k], acc)` (one rounding per step, as
//! `f32::mul_add`). Each lane of a SIMD register is one output, so the vector paths perform
//! exactly the scalar reference's operations and every path gives bit-identical results, for
//! every tile shape and thread count.
//!
//! ## Tiles
//!
//! A tile kernel computes the accumulators of P panels × NX activation rows. N = 1
//! (generation): P = 4 panels against one row (four independent FMA chains hide the FMA
//! latency; the 1 byte per weight streamed is the cost). N > 1: each converted weight vector is
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

/// One tile's operands: `w[p]` the first code of panel p (each covers `cols · PANEL` bytes),
/// `x[i]` activation row i (each covers `cols` floats). Entries past the kernel's P / NX are
/// ignored.
pub(crate) struct Tile {
    pub w: [*const i8; P_MAX],
    pub x: [*const f32; NX_MAX],
    pub cols: usize,
}

/// A tile kernel; unsafe: the pointers must cover what [`Tile`] says (and the CPU must have
/// the kernel's features, which [`kernels`] checks).
pub(crate) type TileFn = unsafe fn(&Tile, &mut [f32; TILE_OUT]);

/// The tile kernels of one instruction set: `gemv` (N = 1) over `gemv_p` panels, and
/// `gemm[nx − 1]` over `gemm_p` panels × nx activation rows (nx ≤ `gemm.len()`).
struct Kernels {
    gemv: TileFn,
    gemv_p: usize,
    gemm: &'static [TileFn],
    gemm_p: usize,
}

/// The scalar reference tile: P panels × NX rows, lane by lane, with `f32::mul_add`.
unsafe fn tile_scalar<const P: usize, const NX: usize>(t: &Tile, out: &mut [f32; TILE_OUT]) {
    for i in 0..NX {
        let x = std::slice::from_raw_parts(t.x[i], t.cols);
        for p in 0..P {
            let w = std::slice::from_raw_parts(t.w[p], t.cols * PANEL);
            let mut acc = [0f32; PANEL];
            for (wk, &xk) in w.chunks_exact(PANEL).zip(x) {
                for (a, &c) in acc.iter_mut().zip(wk) {
                    *a = (c as f32).mul_add(xk, *a);
                }
            }
            out[(i * P + p) * PANEL..(i * P + p + 1) * PANEL].copy_from_slice(&acc);
        }
    }
}

static SCALAR_GEMM: [TileFn; 1] = [tile_scalar::<1, 1>];

fn kernels(isa: Isa) -> Kernels {
    assert!(isa.available(), "int8 weight-only matmul: this CPU lacks {}", isa.name());
    match isa {
        Isa::Scalar => Kernels { gemv: tile_scalar::<1, 1>, gemv_p: 1, gemm: &SCALAR_GEMM, gemm_p: 1 },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Kernels { gemv: x86::GEMV_AVX2, gemv_p: 4, gemm: &x86::GEMM_AVX2, gemm_p: 1 },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => Kernels { gemv: x86::GEMV_AVX512, gemv_p: 4, gemm: &x86::GEMM_AVX512, gemm_p: 2 },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!(),
    }
}

/// Bytes of the panel layout of a (rows, cols) matrix.
pub fn packed_len(rows: usize, cols: usize) -> usize {
    rows.div_ceil(PANEL) * PANEL * cols
}

/// Row-major codes w (rows, cols) → the panel layout (module doc), padded with zero codes.
pub fn pack(w: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    assert_eq!(w.len(), rows * cols, "int8 pack: length");
    let mut out = vec![0u8; packed_len(rows, cols)];
    for (r, row) in w.chunks_exact(cols.max(1)).take(rows).enumerate() {
        let base = (r / PANEL) * PANEL * cols + r % PANEL;
        for (k, &v) in row.iter().enumerate() {
            out[base + k * PANEL] = v;
        }
    }
    out
}

/// The panel layout → row-major codes (rows, cols), the padding dropped.
pub fn unpack(p: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    assert_eq!(p.len(), packed_len(rows, cols), "int8 unpack: length");
    let mut out = vec![0u8; rows * cols];
    for (r, row) in out.chunks_exact_mut(cols.max(1)).take(rows).enumerate() {
        let base = (r / PANEL) * PANEL * cols + r % PANEL;
        for (k, v) in row.iter_mut().enumerate() {
            *v = p[base + k * PANEL];
        }
    }
    out
}

/// Activation rows per task when N > 1 (a multiple of every path's largest NX).
const N_TASK: usize = 48;
/// Panels per task.
const P_TASK: usize = 4;

/// out (N, rows) = x (N, cols) · Wᵀ (+ bias), W the panel-packed codes `packed` with one scale
/// per row. No allocation; tiles of `P_TASK` panels × `N_TASK` rows run in parallel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    out: &mut [f32],
    x: &[f32],
    packed: &[u8],
    scales: &[f32],
    rows: usize,
    cols: usize,
    bias: Option<&[f32]>,
    n: usize,
    isa: Isa,
) {
    assert!(packed.len() == packed_len(rows, cols) && scales.len() == rows, "int8 matmul: weight parts");
    assert!(out.len() >= n * rows && x.len() >= n * cols, "int8 matmul: out/x too short");
    if n == 0 || rows == 0 {
        return;
    }
    let k = kernels(isa);
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
                *w = packed[p * PANEL * cols..].as_ptr() as *const i8;
            }
            for is in (n0..n1).step_by(nx_max) {
                let nx = (n1 - is).min(nx_max);
                for (j, xr) in tile.x.iter_mut().enumerate().take(nx) {
                    *xr = x[(is + j) * cols..].as_ptr();
                }
                let f = if n == 1 { k.gemv } else { k.gemm[nx - 1] };
                // SAFETY: `kernels` checked the CPU features; every panel pointer covers
                // cols · PANEL bytes (p < np), every x pointer `cols` floats.
                unsafe { f(&tile, &mut acc) };
                for i in 0..nx {
                    for p in 0..f_p.min(p1 - ps) {
                        let lanes = &acc[(i * f_p + p) * PANEL..(i * f_p + p + 1) * PANEL];
                        let r0 = (ps + p) * PANEL;
                        for (j, a) in lanes.iter().enumerate().take(rows - r0.min(rows)) {
                            let r = r0 + j;
                            let v = a * scales[r] + bias.map_or(0.0, |b| b[r]);
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
