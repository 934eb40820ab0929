//! GELU, the tanh approximation GPT-2 uses:
//! `gelu(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.

use super::isa::multiversion;
use super::math;
use rayon::prelude::*;

const CHUNK: usize = 4096;
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const COEF: f32 = 0.044715;

#[inline(always)]
fn gelu(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + COEF * x * x * x);
    0.5 * x * (1.0 + math::tanh(u))
}

#[inline(always)]
fn gelu_grad(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + COEF * x * x * x);
    let t = math::tanh(u);
    let sech2 = 1.0 - t * t;
    0.5 * (1.0 + t) + 0.5 * x * sech2 * SQRT_2_OVER_PI * (1.0 + 3.0 * COEF * x * x)
}

/// out (len) = gelu(inp (len))
pub fn gelu_forward(out: &mut [f32], inp: &[f32]) {
    let _p = crate::profile::scope(crate::profile::Op::GeluFwd);
    out.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK)).for_each(|(o, x)| gelu_chunk(o, x));
}

multiversion! {
    fn gelu_chunk(out: &mut [f32], inp: &[f32]) {
        out.iter_mut().zip(inp).for_each(|(o, &x)| *o = gelu(x));
    }
}

multiversion! {
    fn gelu_grad_chunk(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
        for ((di, &x), &d) in dinp.iter_mut().zip(inp).zip(dout) {
            *di = gelu_grad(x) * d;
        }
    }
}

/// dinp (len) = gelu'(inp) · dout
pub fn gelu_backward(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    let _p = crate::profile::scope(crate::profile::Op::GeluBwd);
    dinp.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK).zip(dout.par_chunks(CHUNK)))
        .for_each(|(di, (x, d))| gelu_grad_chunk(di, x, d));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::{avx512_or_skip, test_values, Level};

    #[test]
    fn avx512_copy_is_bit_identical() {
        if !avx512_or_skip("gelu") {
            return;
        }
        let x = test_values(1001, 3, 6.0);
        let d = test_values(1001, 5, 1.0);
        let (mut a, mut b) = (vec![0.0; 1001], vec![0.0; 1001]);
        gelu_chunk::on(Level::Avx2, &mut a, &x);
        gelu_chunk::on(Level::Avx512, &mut b, &x);
        assert_eq!(a, b);
        gelu_grad_chunk::on(Level::Avx2, &mut a, &x, &d);
        gelu_grad_chunk::on(Level::Avx512, &mut b, &x, &d);
        assert_eq!(a, b);
    }
}
