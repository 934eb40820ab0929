//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod gpt_fixture;

use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::path::PathBuf;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Asserts `max|got - want| <= rtol * max|want|` (plus a tiny absolute floor) and returns the
/// relative error, so failures say how far off a tensor is.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], rtol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-12);
    let err = got.iter().zip(want).fold(0.0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
    let rel = err / scale;
    assert!(rel <= rtol, "{what}: relative error {rel:.3e} > {rtol:.0e} (max abs diff {err:.3e}, scale {scale:.3e})");
    rel
}

/// Uniform values in (-scale, scale).
pub fn rand_vec(rng: &mut Xoshiro256PlusPlus, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0..1.0f32) * scale).collect()
}

pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Compares `analytic` with central differences of `loss` at `x`, element by element.
pub fn check(name: &str, x: &[f32], analytic: &[f32], mut loss: impl FnMut(&[f32]) -> f64) {
    let h = 1e-2f32;
    let mut xp = x.to_vec();
    let mut worst = 0.0f64;
    let scale = analytic.iter().fold(0.0f64, |m, g| m.max(g.abs() as f64)).max(1e-3);
    for i in 0..x.len() {
        xp[i] = x[i] + h;
        let up = loss(&xp);
        xp[i] = x[i] - h;
        let down = loss(&xp);
        xp[i] = x[i];
        let numeric = (up - down) / (2.0 * h as f64);
        worst = worst.max((numeric - analytic[i] as f64).abs() / scale);
    }
    assert!(worst < 2e-3, "{name}: finite-difference mismatch {worst:.2e} (relative to max |grad| {scale:.3})");
}
