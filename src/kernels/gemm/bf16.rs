//! The bf16 product on AVX-512 BF16: both operands packed as pairs of bfloat16 values and
//! multiplied with `vdpbf16ps`, which adds the two exact products of a pair to an f32
//! accumulator lane. Half the bytes of f32 panels and twice the multiply-adds per instruction.
//!
//! Packing rounds each f32 to the nearest bf16 (ties to even, `precision::round_bf16`); the
//! mixed-precision linear layer hands over operands that are bf16 values already, so nothing
//! is lost there. A packed k-pair holds `(x[2q], x[2q+1])` in the low and high half of one
//! 32-bit word; an odd k is padded with a zero.
//!
//! The loop nest is the f32 one (see `mod.rs`): B packed in KC×NR panels per NC columns, A in
//! MR-row panels per MC rows, a 14×32 tile of 28 zmm accumulators.

use super::microkernel::NC;
use super::Problem;
use crate::kernels::precision::round_bf16;
use std::cell::RefCell;

pub(super) const MR: usize = 14;
pub(super) const NR: usize = 32;
/// k values per packed block (even). A KC×NR B panel is KC/2 · NR · 4 = 32 KiB, as f32's
/// 256-deep one.
const KC: usize = 512;
const MC: usize = 112;

thread_local! {
    /// (packed A block, packed B block) of bf16 pairs, allocated once per thread.
    static PACK_BF16: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Allocates this thread's bf16 packing buffers (see `gemm::prepare_thread`).
pub(super) fn allocate(pa: &mut Vec<u32>, pb: &mut Vec<u32>) {
    pa.resize((MC + MR) * KC / 2, 0);
    pb.resize((NC + NR) * KC / 2, 0);
}

pub(super) fn prepare_thread() {
    PACK_BF16.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (pa, pb) = &mut *bufs;
        if pb.is_empty() {
            allocate(pa, pb);
        }
    });
}

/// The bf16 bits of `x`, rounded to nearest even.
#[inline(always)]
fn bf16_bits(x: f32) -> u32 {
    round_bf16(x).to_bits() >> 16
}

/// Element (i, q) of a strided matrix as a bf16 pair word with (i, q + 1), zero past `rows`
/// or `kc`.
#[inline(always)]
unsafe fn pair(x: *const f32, rs: usize, cs: usize, i: usize, q: usize, rows: usize, kc: usize) -> u32 {
    if i >= rows {
        return 0;
    }
    let lo = bf16_bits(*x.add(i * rs + q * cs));
    let hi = if q + 1 < kc { bf16_bits(*x.add(i * rs + (q + 1) * cs)) } else { 0 };
    lo | (hi << 16)
}

/// Packs the (mc, kc) block of A into MR-row panels: panel r holds, for each k-pair, MR words.
unsafe fn pack_a(dst: &mut [u32], a: *const f32, rs: usize, cs: usize, mc: usize, kc: usize) {
    let kp = kc.div_ceil(2);
    for (panel, r0) in (0..mc).step_by(MR).enumerate() {
        let out = &mut dst[panel * MR * kp..(panel + 1) * MR * kp];
        let rows = MR.min(mc - r0);
        let a0 = a.add(r0 * rs);
        for q2 in 0..kp {
            for i in 0..MR {
                out[q2 * MR + i] = pair(a0, rs, cs, i, 2 * q2, rows, kc);
            }
        }
    }
}

/// Packs the (kc, nc) block of B into NR-column panels: panel j holds, for each k-pair, NR
/// words. B's column j is read as a row of Bᵀ (rows `cs` apart, k steps `rs` apart).
unsafe fn pack_b(dst: &mut [u32], b: *const f32, rs: usize, cs: usize, kc: usize, nc: usize) {
    let kp = kc.div_ceil(2);
    for (panel, c0) in (0..nc).step_by(NR).enumerate() {
        let out = &mut dst[panel * NR * kp..(panel + 1) * NR * kp];
        let cols = NR.min(nc - c0);
        let b0 = b.add(c0 * cs);
        if rs == 1 {
            // Bᵀ rows contiguous (B = Wᵀ, the forward product): one column at a time.
            for j in 0..NR {
                for q2 in 0..kp {
                    out[q2 * NR + j] = pair(b0, cs, rs, j, 2 * q2, cols, kc);
                }
            }
        } else {
            for q2 in 0..kp {
                for j in 0..NR {
                    out[q2 * NR + j] = pair(b0, cs, rs, j, 2 * q2, cols, kc);
                }
            }
        }
    }
}

/// The loop nest on one thread.
///
/// # Safety
/// As `gemm_serial`, and the CPU must have AVX-512 BF16.
pub(super) unsafe fn gemm_serial_bf16(p: &Problem) {
    if p.k == 0 {
        super::scale_c(p);
        return;
    }
    PACK_BF16.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (pa, pb) = &mut *bufs;
        if pb.is_empty() {
            allocate(pa, pb);
        }
        for jc in (0..p.n).step_by(NC) {
            let nc = NC.min(p.n - jc);
            for pc in (0..p.k).step_by(KC) {
                let kc = KC.min(p.k - pc);
                let kp = kc.div_ceil(2);
                let beta = if pc == 0 { p.beta } else { 1.0 };
                pack_b(pb, p.b.add(pc * p.b_rs + jc * p.b_cs), p.b_rs, p.b_cs, kc, nc);
                for ic in (0..p.m).step_by(MC) {
                    let mc = MC.min(p.m - ic);
                    pack_a(pa, p.a.add(ic * p.a_rs + pc * p.a_cs), p.a_rs, p.a_cs, mc, kc);
                    for jr in (0..nc).step_by(NR) {
                        let nrv = NR.min(nc - jr);
                        let bp = pb.as_ptr().add(jr * kp);
                        for ir in (0..mc).step_by(MR) {
                            let mrv = MR.min(mc - ir);
                            let cp = p.c.add((ic + ir) * p.ldc + jc + jr);
                            let ap = pa.as_ptr().add(ir * kp);
                            kernel_bf16(kp, ap, bp, cp, p.ldc, p.alpha, beta, mrv, nrv);
                        }
                    }
                }
            }
        }
    });
}

/// 14×32 tile from kp packed k-pairs: per pair two B loads (32 columns × 2 bf16 each),
/// fourteen 32-bit broadcasts of A pairs and 28 `vdpbf16ps`. Masked write-back of the valid
/// (mr, nr) part: `C = alpha·acc + beta·C`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_bf16(
    kp: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
    mr: usize,
    nr: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kp {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp as *const __m512i));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(16) as *const __m512i));
        for (i, row) in acc.iter_mut().enumerate() {
            let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(i) as i32));
            row[0] = _mm512_dpbf16_ps(row[0], ai, b0);
            row[1] = _mm512_dpbf16_ps(row[1], ai, b1);
        }
        ap = ap.add(MR);
        bp = bp.add(NR);
    }
    super::microkernel::store_tile_avx512(&acc, c, ldc, alpha, beta, mr, nr);
}

/// Whether `vdpbf16ps` outruns f32 FMAs on this CPU, measured once: 24 independent
/// accumulator chains of each instruction for about a millisecond, best of three. One
/// `vdpbf16ps` does twice the multiply-adds of one `vfmadd231ps`, so bf16 wins when its
/// instruction rate is above half the FMA's; this asks for 0.6 so that noise cannot flip the
/// choice (measured: 0.25 on Intel Xeon Sapphire Rapids class cores, where the bf16 GEMM runs
/// at half the f32 one).
pub(super) fn bf16_pays_off() -> bool {
    probe_ratio() >= 0.6
}

/// `vdpbf16ps` instructions per `vfmadd231ps` instruction over the same time (0 when the CPU
/// lacks AVX-512 BF16), measured on first use.
pub fn probe_ratio() -> f64 {
    static RATIO: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *RATIO.get_or_init(measure_ratio)
}

fn measure_ratio() -> f64 {
    let cpu = crate::kernels::isa::Isa::detected();
    if !(cpu.level >= crate::kernels::isa::Level::Avx512 && cpu.bf16) {
        return 0.0;
    }
    const ITERS: usize = 20_000;
    let time = |f: unsafe fn(usize) -> f32| {
        (0..3)
            .map(|_| {
                let t = std::time::Instant::now();
                // SAFETY: the CPU has AVX-512 BF16 (checked above).
                std::hint::black_box(unsafe { f(ITERS) });
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    time(chains_fma) / time(chains_bf16)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn chains_bf16(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 24];
    let one: __m512bh = std::mem::transmute(_mm512_set1_epi32(std::hint::black_box(0x3f80_3f80)));
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm512_dpbf16_ps(*x, one, one);
        }
    }
    acc.iter().map(|x| _mm512_reduce_add_ps(*x)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn chains_fma(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 24];
    let one = _mm512_set1_ps(std::hint::black_box(1.0));
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(one, one, *x);
        }
    }
    acc.iter().map(|x| _mm512_reduce_add_ps(*x)).sum()
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn chains_bf16(_: usize) -> f32 {
    0.0
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn chains_fma(_: usize) -> f32 {
    0.0
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_bf16(
    _: usize,
    _: *const u32,
    _: *const u32,
    _: *mut f32,
    _: usize,
    _: f32,
    _: f32,
    _: usize,
    _: usize,
) {
    unreachable!("bf16 GEMM needs x86-64 AVX-512 BF16")
}
