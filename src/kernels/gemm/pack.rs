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

/// Packs the (mc, kc) block of A into mr-row panels: panel r holds, for each p, mr
/// values `A[r·mr + 0..mr, p]`, zero-padded past `mc`.
pub(super) unsafe fn pack_a(dst: &mut [f32], a: *const f32, rs: usize, cs: usize, mc: usize, kc: usize, mr: usize) {
    for (panel, r0) in (0..mc).step_by(mr).enumerate() {
        let out = &mut dst[panel * mr * kc..(panel + 1) * mr * kc];
        let rows = mr.min(mc - r0);
        if cs == 1 {
            // Rows of A are contiguous: read each row once, scatter with stride mr.
            for i in 0..mr {
                if i < rows {
                    let src = a.add((r0 + i) * rs);
                    for q in 0..kc {
                        out[q * mr + i] = *src.add(q);
                    }
                } else {
                    for q in 0..kc {
                        out[q * mr + i] = 0.0;
                    }
                }
            }
        } else {
            for q in 0..kc {
                let src = a.add(q * cs + r0 * rs);
                for i in 0..mr {
                    out[q * mr + i] = if i < rows { *src.add(i * rs) } else { 0.0 };
                }
            }
        }
    }
}

/// Packs the (kc, nc) block of B into nr-column panels: panel j holds, for each p,
/// nr values `B[p, j·nr + 0..nr]`, zero-padded past `nc`.
pub(super) unsafe fn pack_b(dst: &mut [f32], b: *const f32, rs: usize, cs: usize, kc: usize, nc: usize, nr: usize) {
    for (panel, c0) in (0..nc).step_by(nr).enumerate() {
        let out = &mut dst[panel * nr * kc..(panel + 1) * nr * kc];
        let cols = nr.min(nc - c0);
        if cs == 1 {
            for q in 0..kc {
                let src = b.add(q * rs + c0);
                let o = &mut out[q * nr..(q + 1) * nr];
                for j in 0..nr {
                    o[j] = if j < cols { *src.add(j) } else { 0.0 };
                }
            }
        } else {
            // Columns of B are contiguous (B = Wᵀ): read each column once, scatter with stride nr.
            for j in 0..nr {
                if j < cols {
                    let src = b.add((c0 + j) * cs);
                    for q in 0..kc {
                        out[q * nr + j] = *src.add(q * rs);
                    }
                } else {
                    for q in 0..kc {
                        out[q * nr + j] = 0.0;
                    }
                }
            }
        }
    }
}
