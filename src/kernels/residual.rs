//! Residual connection: `out = a + b`.

use rayon::prelude::*;

const CHUNK: usize = 4096;

/// out (N·C) = a (N·C) + b (N·C)
pub fn residual_forward(out: &mut [f32], a: &[f32], b: &[f32]) {
    let _p = crate::profile::scope(crate::profile::Op::ResidualFwd);
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(o, (a, b))| {
        for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
            *o = a + b;
        }
    });
}

/// da += dout; db += dout
pub fn residual_backward(da: &mut [f32], db: &mut [f32], dout: &[f32]) {
    da.par_chunks_mut(CHUNK).zip(db.par_chunks_mut(CHUNK).zip(dout.par_chunks(CHUNK))).for_each(|(da, (db, d))| {
        for ((da, db), d) in da.iter_mut().zip(db.iter_mut()).zip(d) {
            *da += d;
            *db += d;
        }
    });
}

/// x (len) += b (len): a residual add in place (inference, where the input is not kept).
pub fn residual_add_inplace(x: &mut [f32], b: &[f32]) {
    let _p = crate::profile::scope(crate::profile::Op::ResidualFwd);
    x.iter_mut().zip(b).for_each(|(x, b)| *x += b);
}
