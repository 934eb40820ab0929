//! Token embedding plus learned absolute position embedding (GPT-2's "encoder").

use super::{COLUMN_CHUNK, MIN_ROWS_PER_TASK};
use rayon::prelude::*;

/// out (B, T, C) = wte[idx[b, t]] + wpe[t], for idx (B, T), wte (V, C), wpe (block_size, C).
pub fn embedding_forward(out: &mut [f32], idx: &[u32], wte: &[f32], wpe: &[f32], t: usize, c: usize) {
    let _p = crate::profile::scope(crate::profile::Op::EmbeddingFwd);
    out.par_chunks_mut(c).zip(idx.par_iter()).enumerate().with_min_len(MIN_ROWS_PER_TASK).for_each(
        |(row, (o, &tok))| {
            let pos = row % t;
            let e = &wte[tok as usize * c..(tok as usize + 1) * c];
            let p = &wpe[pos * c..(pos + 1) * c];
            for i in 0..c {
                o[i] = e[i] + p[i];
            }
        },
    );
}

/// dwte (V, C) += scatter of dout (B, T, C) by token; dwpe (block_size, C) += Σ_b dout[b, t].
///
/// Column-parallel: each task owns a range of channels for every row, so repeated tokens never
/// race and the summation order is fixed.
pub fn embedding_backward(dwte: &mut [f32], dwpe: &mut [f32], dout: &[f32], idx: &[u32], t: usize, c: usize) {
    let _p = crate::profile::scope(crate::profile::Op::EmbeddingBwd);
    let n = idx.len();
    let chunks = c.div_ceil(COLUMN_CHUNK);
    let (wte_ptr, wpe_ptr) = (super::SendPtr(dwte.as_mut_ptr()), super::SendPtr(dwpe.as_mut_ptr()));
    (0..chunks).into_par_iter().for_each(|j| {
        let c0 = j * COLUMN_CHUNK;
        let w = COLUMN_CHUNK.min(c - c0);
        for row in 0..n {
            let d = &dout[row * c + c0..row * c + c0 + w];
            let tok = idx[row] as usize;
            let pos = row % t;
            // SAFETY: task j only touches columns c0..c0+w of each row of dwte and dwpe, and
            // these column ranges are disjoint between tasks; the indices are in bounds
            // because tok < V and pos < T <= block_size (checked by the model).
            unsafe {
                let e = wte_ptr.get().add(tok * c + c0);
                let p = wpe_ptr.get().add(pos * c + c0);
                for i in 0..w {
                    *e.add(i) += d[i];
                    *p.add(i) += d[i];
                }
            }
        }
    });
}
