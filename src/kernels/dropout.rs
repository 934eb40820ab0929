//! Inverted dropout with a counter-based RNG.
//!
//! Whether element `i` is kept is a pure function of `(seed, i)` (a SplitMix64 hash), so the
//! mask never has to be stored: the backward pass regenerates it, any thread chunking gives the
//! same mask, and a resumed run reproduces it from the step number alone.

use rayon::prelude::*;

const CHUNK: usize = 4096;

/// SplitMix64 finaliser: a well-mixed 64-bit hash of `x`.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The seed of one dropout site at one step: distinct sites and steps get independent masks.
pub fn site_seed(run_seed: u64, step: u64, site: u64) -> u64 {
    mix64(mix64(run_seed ^ mix64(step)) ^ site.wrapping_mul(0xA24B_AED4_963E_E407))
}

/// Scale for element `i`: `1/(1-p)` when kept, `0` when dropped.
#[inline]
fn mask(seed: u64, i: usize, p: f32, scale: f32) -> f32 {
    // Top 24 bits as a uniform number in [0, 1).
    let u = (mix64(seed ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)) >> 40) as f32 * (1.0 / (1u64 << 24) as f32);
    if u < p {
        0.0
    } else {
        scale
    }
}

/// out (len) = inp ⊙ mask(seed) / (1-p). With `p == 0` this is a copy.
pub fn dropout_forward(out: &mut [f32], inp: &[f32], p: f32, seed: u64) {
    dropout_forward_at(out, inp, p, seed, 0)
}

/// [`dropout_forward`] of a slice that starts at element `first` of a larger buffer: element
/// `i` gets the mask of element `first + i`. A data-parallel rank holding rows of a global
/// batch drops exactly what one process holding the whole batch would.
pub fn dropout_forward_at(out: &mut [f32], inp: &[f32], p: f32, seed: u64, first: usize) {
    let _p = crate::profile::scope(crate::profile::Op::DropoutFwd);
    let scale = 1.0 / (1.0 - p);
    out.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK)).enumerate().for_each(|(ci, (o, x))| {
        for (j, (o, &x)) in o.iter_mut().zip(x).enumerate() {
            *o = x * mask(seed, first + ci * CHUNK + j, p, scale);
        }
    });
}

/// dinp (len) = dout ⊙ mask(seed) / (1-p), the same mask as the forward pass.
pub fn dropout_backward(dinp: &mut [f32], dout: &[f32], p: f32, seed: u64) {
    dropout_backward_at(dinp, dout, p, seed, 0)
}

/// [`dropout_backward`] with the masks of [`dropout_forward_at`] at element `first`.
pub fn dropout_backward_at(dinp: &mut [f32], dout: &[f32], p: f32, seed: u64, first: usize) {
    let _p = crate::profile::scope(crate::profile::Op::DropoutBwd);
    let scale = 1.0 / (1.0 - p);
    dinp.par_chunks_mut(CHUNK).zip(dout.par_chunks(CHUNK)).enumerate().for_each(|(ci, (di, d))| {
        for (j, (di, &d)) in di.iter_mut().zip(d).enumerate() {
            *di = d * mask(seed, first + ci * CHUNK + j, p, scale);
        }
    });
}

/// In-place variant used on attention probabilities: x ⊙= mask / (1-p).
pub fn dropout_inplace(x: &mut [f32], p: f32, seed: u64, offset: usize) {
    let scale = 1.0 / (1.0 - p);
    for (j, v) in x.iter_mut().enumerate() {
        *v *= mask(seed, offset + j, p, scale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_about_one_minus_p_and_preserves_the_mean() {
        let n = 200_000;
        let x = vec![1.0f32; n];
        let mut y = vec![0.0f32; n];
        dropout_forward(&mut y, &x, 0.2, 42);
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        assert!((kept - 0.8).abs() < 0.005, "kept {kept}");
        let mean = y.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
        // A different seed gives a different mask; the same seed the same one.
        let mut z = vec![0.0f32; n];
        dropout_forward(&mut z, &x, 0.2, 43);
        assert_ne!(y, z);
        dropout_forward(&mut z, &x, 0.2, 42);
        assert_eq!(y, z);
    }

    #[test]
    fn backward_uses_the_forward_mask() {
        let n = 10_000;
        let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.01 - 3.0).collect();
        let mut y = vec![0.0f32; n];
        dropout_forward(&mut y, &x, 0.3, 7);
        // A slice at element `first` of the buffer gets that part of the buffer's mask.
        let first = n / 3;
        let mut part = vec![0.0; n - first];
        dropout_forward_at(&mut part, &x[first..], 0.3, 7, first);
        assert_eq!(part, y[first..]);
        let mut dpart = vec![0.0; n - first];
        dropout_backward_at(&mut dpart, &vec![1.0; n - first], 0.3, 7, first);
        assert!(dpart.iter().zip(&y[first..]).all(|(d, y)| (*d == 0.0) == (*y == 0.0)));
        let mut dx = vec![0.0f32; n];
        dropout_backward(&mut dx, &vec![1.0; n], 0.3, 7);
        for i in 0..n {
            // d(out)/d(in) is exactly the mask, so out == in * grad.
            assert_eq!(y[i], x[i] * dx[i]);
        }
        let mut inplace = x.clone();
        dropout_inplace(&mut inplace, 0.3, 7, 0);
        assert_eq!(inplace, y);
    }
}
