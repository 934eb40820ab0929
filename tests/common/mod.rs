//! Helpers shared by the integration tests.
#![allow(dead_code)]

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
