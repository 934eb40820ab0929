//! GELU, the tanh approximation GPT-2 uses:
//! `gelu(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.

use super::math;
use rayon::prelude::*;

const CHUNK: usize = 4096;
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const COEF: f32 = 0.044715;

#[inline]
fn gelu(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + COEF * x * x * x);
    0.5 * x * (1.0 + math::tanh(u))
}

#[inline]
fn gelu_grad(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + COEF * x * x * x);
    let t = math::tanh(u);
    let sech2 = 1.0 - t * t;
    0.5 * (1.0 + t) + 0.5 * x * sech2 * SQRT_2_OVER_PI * (1.0 + 3.0 * COEF * x * x)
}

/// out (len) = gelu(inp (len))
pub fn gelu_forward(out: &mut [f32], inp: &[f32]) {
    let _p = crate::profile::scope(crate::profile::Op::GeluFwd);
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &x)| *o = gelu(x)));
}

/// dinp (len) = gelu'(inp) · dout
pub fn gelu_backward(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    let _p = crate::profile::scope(crate::profile::Op::GeluBwd);
    dinp.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK).zip(dout.par_chunks(CHUNK))).for_each(|(di, (x, d))| {
        for ((di, &x), &d) in di.iter_mut().zip(x).zip(d) {
            *di = gelu_grad(x) * d;
        }
    });
}
