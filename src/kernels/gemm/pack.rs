//! Packing: the per-thread buffers, and the routines that copy blocks of A and B into the
//! panel layouts the micro-kernels read.

use super::microkernel::{MAX_KC, MAX_MC, MAX_MR, MAX_NR, NC};
use std::cell::RefCell;

thread_local! {
    /// (packed A block, packed B block), allocated at full size once per thread.
    pub(super) static PACK: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Sized for the largest tile and blocks of any micro-kernel, so one buffer serves every path.
pub(super) fn allocate_packing(pa: &mut Vec<f32>, pb: &mut Vec<f32>) {
    pa.resize((MAX_MC + MAX_MR) * MAX_KC, 0.0);
    pb.resize((NC + MAX_NR) * MAX_KC, 0.0);
}

/// Packs the (mc, kc) block of A into MR-row panels (MR = `mr`): panel r holds, for each p, MR
/// values `A[r·MR + 0..MR, p]`, zero-padded past `mc`.
#[allow(non_snake_case)]
pub(super) unsafe fn pack_a(dst: &mut [f32], a: *const f32, rs: usize, cs: usize, mc: usize, kc: usize, MR: usize) {
    for (panel, r0) in (0..mc).step_by(MR).enumerate() {
        let out = &mut dst[panel * MR * kc..(panel + 1) * MR * kc];
        let rows = MR.min(mc - r0);
        if cs == 1 {
            // Rows of A are contiguous: read each row once, scatter with stride MR.
            for i in 0..MR {
                if i < rows {
                    let src = a.add((r0 + i) * rs);
                    for q in 0..kc {
                        out[q * MR + i] = *src.add(q);
                    }
                } else {
                    for q in 0..kc {
                        out[q * MR + i] = 0.0;
                    }
                }
            }
        } else {
            for q in 0..kc {
                let src = a.add(q * cs + r0 * rs);
                for i in 0..MR {
                    out[q * MR + i] = if i < rows { *src.add(i * rs) } else { 0.0 };
                }
            }
        }
    }
}

/// Packs the (kc, nc) block of B into NR-column panels (NR = `nr`): panel j holds, for each p,
/// NR values `B[p, j·NR + 0..NR]`, zero-padded past `nc`.
#[allow(non_snake_case)]
pub(super) unsafe fn pack_b(dst: &mut [f32], b: *const f32, rs: usize, cs: usize, kc: usize, nc: usize, NR: usize) {
    for (panel, c0) in (0..nc).step_by(NR).enumerate() {
        let out = &mut dst[panel * NR * kc..(panel + 1) * NR * kc];
        let cols = NR.min(nc - c0);
        if cs == 1 {
            for q in 0..kc {
                let src = b.add(q * rs + c0);
                let o = &mut out[q * NR..(q + 1) * NR];
                for j in 0..NR {
                    o[j] = if j < cols { *src.add(j) } else { 0.0 };
                }
            }
        } else {
            // Columns of B are contiguous (B = Wᵀ): read each column once, scatter with stride NR.
            for j in 0..NR {
                if j < cols {
                    let src = b.add((c0 + j) * cs);
                    for q in 0..kc {
                        out[q * NR + j] = *src.add(q * rs);
                    }
                } else {
                    for q in 0..kc {
                        out[q * NR + j] = 0.0;
                    }
                }
            }
        }
    }
}
