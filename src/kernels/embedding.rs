//! Token embedding plus learned absolute position embedding (GPT-2's "encoder").

use super::{COLUMN_CHUNK, MIN_ROWS_PER_TASK};
use rayon::prelude::*;

/// out (B, T, C) = `scale · wte[idx[b, t]] (+ pos[t])`, for idx (B, T), wte (V, C) and an optional
/// position table pos (≥ T, C) (learned or fixed sinusoidal).
pub fn token_embedding_forward(
    out: &mut [f32],
    idx: &[u32],
    wte: &[f32],
    scale: f32,
    pos: Option<&[f32]>,
    t: usize,
    c: usize,
) {
    let _p = crate::profile::scope(crate::profile::Op::EmbeddingFwd);
    out[..idx.len() * c].par_chunks_mut(c).zip(idx.par_iter()).enumerate().with_min_len(MIN_ROWS_PER_TASK).for_each(
        |(row, (o, &tok))| {
            let e = &wte[tok as usize * c..(tok as usize + 1) * c];
            match pos {
                Some(table) => {
                    let p = &table[(row % t) * c..(row % t + 1) * c];
                    for i in 0..c {
                        o[i] = scale * e[i] + p[i];
                    }
                }
                None => o.iter_mut().zip(e).for_each(|(o, &e)| *o = scale * e),
            }
        },
    );
}

/// dwte (V, C) += scale · scatter of dout (B, T, C) by token; dpos (block_size, C) += Σ_b dout[b, t]
/// when the position table is trained.
///
/// Column-parallel: each task owns a range of channels for every row, so repeated tokens never
/// race and the summation order is fixed.
pub fn token_embedding_backward(
    dwte: &mut [f32],
    dpos: Option<&mut [f32]>,
    dout: &[f32],
    idx: &[u32],
    scale: f32,
    t: usize,
    c: usize,
) {
    let _p = crate::profile::scope(crate::profile::Op::EmbeddingBwd);
    let n = idx.len();
    let chunks = c.div_ceil(COLUMN_CHUNK);
    let wte_ptr = super::SendPtr(dwte.as_mut_ptr());
    let pos_ptr = dpos.map(|d| super::SendPtr(d.as_mut_ptr()));
    (0..chunks).into_par_iter().for_each(|j| {
        let c0 = j * COLUMN_CHUNK;
        let w = COLUMN_CHUNK.min(c - c0);
        for row in 0..n {
            let d = &dout[row * c + c0..row * c + c0 + w];
            let tok = idx[row] as usize;
            // SAFETY: task j only touches columns c0..c0+w of each row of dwte and dpos, and
            // these column ranges are disjoint between tasks; the indices are in bounds
            // because tok < V and row % t < T <= block_size (checked by the model).
            unsafe {
                let e = wte_ptr.get().add(tok * c + c0);
                for i in 0..w {
                    *e.add(i) += scale * d[i];
                }
                if let Some(pp) = pos_ptr {
                    let p = pp.get().add((row % t) * c + c0);
                    for i in 0..w {
                        *p.add(i) += d[i];
                    }
                }
            }
        }
    });
}
