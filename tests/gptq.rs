//! GPTQ and round-to-nearest match a float64 transcription of the reference implementation
//! (IST-DASLab/gptq; scripts/make_gptq_fixtures.py) on small seeded cases: the Hessian, the
//! codes (identical), the scales and zeros, the permutation and the dequantized weight; GPTQ's
//! output error is below RTN's on correlated inputs; bad settings are clear errors.

mod common;
use common::{assert_close, fixture};
use lmlab::compress::gptq::{gptq, output_error, rtn, GptqConfig, HessianAccumulator, Quantized};
use lmlab::io::tensors::TensorFile;
use serde_json::Value;
use std::collections::BTreeMap;

struct Fixture {
    bytes: Vec<u8>,
    cases: BTreeMap<String, Value>,
    datasets: BTreeMap<String, Value>,
}

impl Fixture {
    fn load() -> Self {
        let bytes = std::fs::read(fixture("gptq/gptq.safetensors")).expect("fixture file");
        let tf = TensorFile::parse(&bytes, "fixture").unwrap();
        let cases = serde_json::from_str(&tf.metadata["cases"]).unwrap();
        let datasets = serde_json::from_str(&tf.metadata["datasets"]).unwrap();
        drop(tf);
        Fixture { bytes, cases, datasets }
    }

    fn get(&self, name: &str) -> Vec<f64> {
        TensorFile::parse(&self.bytes, "fixture").unwrap().read_any(name).unwrap().1
    }

    fn get_f32(&self, name: &str) -> Vec<f32> {
        self.get(name).into_iter().map(|x| x as f32).collect()
    }

    fn has(&self, name: &str) -> bool {
        TensorFile::parse(&self.bytes, "fixture").unwrap().read_any(name).is_ok()
    }

    /// (rows, cols, W, X) of a data set.
    fn data(&self, d: &str) -> (usize, usize, Vec<f32>, Vec<f32>) {
        let meta = &self.datasets[d];
        let u = |k: &str| meta[k].as_u64().unwrap() as usize;
        (u("rows"), u("cols"), self.get_f32(&format!("{d}.w")), self.get_f32(&format!("{d}.x")))
    }
}

fn usize_of(v: &Value, k: &str) -> usize {
    v[k].as_u64().unwrap() as usize
}

/// Feeds X to an accumulator in the data set's batches, as the script fed the reference.
fn accumulate(fx: &Fixture, d: &str) -> HessianAccumulator {
    let (_, cols, _, x) = fx.data(d);
    let batching = fx.datasets[d]["batching"].as_str().unwrap();
    let (kind, shape) = batching.split_once(':').unwrap();
    let mut acc = HessianAccumulator::new(cols);
    if kind == "3d" {
        let (b, t) = shape.split_once(',').unwrap();
        let (b, t): (usize, usize) = (b.parse().unwrap(), t.parse().unwrap());
        for chunk in x.chunks(b * t * cols) {
            acc.add_batch(chunk, b).unwrap();
        }
    } else {
        let step: usize = shape.parse().unwrap();
        for chunk in x.chunks(step * cols) {
            acc.add_batch(chunk, 1).unwrap();
        }
    }
    acc
}

fn max_rel(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    got.iter().zip(want).fold(0.0f64, |m, (a, b)| m.max((a - b).abs())) / scale
}

#[test]
fn hessian_matches_reference() {
    let fx = Fixture::load();
    for d in fx.datasets.keys() {
        let acc = accumulate(&fx, d);
        assert_eq!(acc.nsamples(), usize_of(&fx.datasets[d], "nsamples"), "{d}: nsamples");
        let rel = max_rel(acc.hessian(), &fx.get(&format!("{d}.h")));
        eprintln!("{d}: H relative error {rel:.2e}");
        assert!(rel < 1e-6, "{d}: H relative error {rel:.2e}");
        let h32 = acc.hessian_f32();
        assert_close(&format!("{d} H as f32"), &h32, &fx.get(&format!("{d}.h")), 1e-6);
    }
}

#[test]
fn hessian_with_every_row_a_sample_is_two_xtx_over_n() {
    let cols = 5;
    let x: Vec<f32> = (0..7 * cols).map(|i| ((i * 37 % 13) as f32 - 6.0) / 4.0).collect();
    let mut acc = HessianAccumulator::new(cols);
    acc.add_batch(&x[..3 * cols], 3).unwrap();
    acc.add_batch(&x[3 * cols..], 4).unwrap();
    let h = acc.into_hessian();
    for i in 0..cols {
        for j in 0..cols {
            let want: f64 = (0..7).map(|r| 2.0 * x[r * cols + i] as f64 * x[r * cols + j] as f64).sum::<f64>() / 7.0;
            assert!((h[i * cols + j] - want).abs() < 1e-12, "H[{i}][{j}] = {} ≠ {want}", h[i * cols + j]);
        }
    }
}

/// Compares a result with the reference's tensors under `prefix` ("" for GPTQ, "rtn_" for RTN).
fn compare(fx: &Fixture, name: &str, prefix: &str, q: &Quantized) {
    let want_codes = fx.get(&format!("{name}.{prefix}codes"));
    let diff = q.codes.iter().zip(&want_codes).filter(|(a, b)| **a as f64 != **b).count();
    assert_eq!(diff, 0, "{name} {prefix}codes: {diff} of {} differ", want_codes.len());
    let rel =
        max_rel(&q.scale.iter().map(|&v| v as f64).collect::<Vec<_>>(), &fx.get(&format!("{name}.{prefix}scale")));
    assert!(rel < 1e-6, "{name} {prefix}scale: relative error {rel:.2e}");
    let want_zero = fx.get(&format!("{name}.{prefix}zero"));
    assert!(q.zero.iter().zip(&want_zero).all(|(a, b)| *a as f64 == *b), "{name} {prefix}zero differ");
    let want = fx.get(&format!("{name}.{prefix}dequant"));
    let err = q.dequant.iter().zip(&want).fold(0.0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
    assert!(err <= 1e-5, "{name} {prefix}dequant: max abs difference {err:.2e}");
    // The stored parts reproduce the dequantized weight.
    let groups = q.cols / q.group;
    for r in 0..q.rows {
        for c in 0..q.cols {
            let g = r * groups + q.g_idx[c] as usize;
            let v = q.scale[g] * (q.codes[r * q.cols + c] as f32 - q.zero[g]);
            assert!((v - q.dequant[r * q.cols + c]).abs() <= 1e-6, "{name}: parts do not give dequant at ({r}, {c})");
            assert!((q.codes[r * q.cols + c] as u32) < (1 << q.bits));
        }
    }
}

#[test]
fn gptq_and_rtn_match_reference() {
    let fx = Fixture::load();
    assert!(fx.cases.len() >= 15);
    for (name, case) in &fx.cases {
        let d = case["data"].as_str().unwrap();
        let (rows, cols, w, x) = fx.data(d);
        let h = fx.get(&format!("{d}.h"));
        let mut cfg = GptqConfig::new(case["bits"].as_u64().unwrap() as u32, usize_of(case, "group"));
        cfg.act_order = case["act_order"].as_bool().unwrap();
        cfg.percdamp = case["percdamp"].as_f64().unwrap();
        let q = gptq(&w, rows, cols, &h, &cfg).unwrap();
        compare(&fx, name, "", &q);
        match &q.perm {
            Some(p) => {
                let want: Vec<usize> = fx.get(&format!("{name}.perm")).iter().map(|&v| v as usize).collect();
                assert_eq!(p, &want, "{name}: permutation");
            }
            None => assert!(!fx.has(&format!("{name}.perm")), "{name}: reference permuted"),
        }
        let loss = q.loss.unwrap();
        let want_loss = fx.get(&format!("{name}.loss"))[0];
        assert!((loss - want_loss).abs() <= 1e-9 * want_loss.abs(), "{name}: loss {loss} vs {want_loss}");

        let r = rtn(&w, rows, cols, cfg.bits, cfg.group).unwrap();
        compare(&fx, name, "rtn_", &r);

        // GPTQ's whole point: less output error than rounding each weight to nearest.
        let (eg, er) = (output_error(&w, &q.dequant, rows, cols, &x), output_error(&w, &r.dequant, rows, cols, &x));
        eprintln!("{name}: output error GPTQ {eg:.4e}, RTN {er:.4e}, ratio {:.3}", eg / er);
        assert!(eg < er, "{name}: GPTQ output error {eg:.4e} is not below RTN's {er:.4e}");

        // With the Hessian accumulated here instead of the reference's, the same codes.
        let q2 = gptq(&w, rows, cols, accumulate(&fx, d).hessian(), &cfg).unwrap();
        let diff = q2.codes.iter().zip(&q.codes).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{name}: {diff} codes change with the accumulated Hessian");
    }
}

#[test]
fn dead_columns_are_zero() {
    let fx = Fixture::load();
    let (rows, cols, w, _) = fx.data("dead");
    let h = fx.get("dead.h");
    for act_order in [false, true] {
        let cfg = GptqConfig { act_order, ..GptqConfig::new(4, 16) };
        let q = gptq(&w, rows, cols, &h, &cfg).unwrap();
        for c in [5, 40] {
            assert_eq!(h[c * cols + c], 0.0);
            assert!((0..rows).all(|r| q.dequant[r * cols + c] == 0.0), "column {c} is not zero");
        }
    }
}

#[test]
fn bad_settings_are_clear_errors() {
    let (rows, cols) = (4, 8);
    let w = vec![0.5f32; rows * cols];
    let mut h = vec![0.0f64; cols * cols];
    for i in 0..cols {
        h[i * cols + i] = 1.0;
    }
    let err = |r: anyhow::Result<Quantized>| r.unwrap_err().to_string();
    for bits in [0, 1, 5, 16] {
        let e = err(gptq(&w, rows, cols, &h, &GptqConfig::new(bits, 8)));
        assert!(e.contains("bits must be 2, 3, 4 or 8"), "{e}");
        assert!(err(rtn(&w, rows, cols, bits, 8)).contains("bits must be"));
    }
    for group in [0, 3, 16] {
        let e = err(gptq(&w, rows, cols, &h, &GptqConfig::new(4, group)));
        assert!(e.contains("does not divide the 8 columns"), "{e}");
        assert!(err(rtn(&w, rows, cols, 4, group)).contains("does not divide"));
    }
    let e = err(gptq(&w, rows, cols, &h[..49], &GptqConfig::new(4, 8)));
    assert!(e.contains("Hessian has 49 values, expected 8×8"), "{e}");
    let e = err(gptq(&w[..30], rows, cols, &h, &GptqConfig::new(4, 8)));
    assert!(e.contains("weight has 30 values"), "{e}");
    // Indefinite even after dampening.
    let mut bad = h.clone();
    bad[1] = 5.0;
    bad[cols] = 5.0;
    let e = err(gptq(&w, rows, cols, &bad, &GptqConfig::new(4, 8)));
    assert!(e.contains("not positive definite"), "{e}");
    let mut nan = h.clone();
    nan[3] = f64::NAN;
    assert!(err(gptq(&w, rows, cols, &nan, &GptqConfig::new(4, 8))).contains("not finite"));

    let mut acc = HessianAccumulator::new(cols);
    assert!(acc.add_batch(&[1.0; 12], 1).unwrap_err().to_string().contains("whole number of 8-wide rows"));
    assert!(acc.add_batch(&[1.0; 16], 0).unwrap_err().to_string().contains("at least one sample"));
}

#[test]
fn layer_1536_by_384_is_fast() {
    use rand::{Rng, SeedableRng};
    let (rows, cols, n) = (1536, 384, 2048);
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(14);
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-0.1..0.1f32)).collect();
    let z: Vec<f32> = (0..n * 96).map(|_| rng.gen_range(-1.0..1.0f32)).collect();
    let mix: Vec<f32> = (0..96 * cols).map(|_| rng.gen_range(-1.0..1.0f32)).collect();
    let x: Vec<f32> = (0..n * cols)
        .map(|i| {
            (0..96).map(|k| z[i / cols * 96 + k] * mix[k * cols + i % cols]).sum::<f32>() + rng.gen_range(-0.1..0.1f32)
        })
        .collect();
    let t = std::time::Instant::now();
    let mut acc = HessianAccumulator::new(cols);
    for chunk in x.chunks(512 * cols) {
        acc.add_batch(chunk, 512).unwrap();
    }
    let th = t.elapsed();
    let t = std::time::Instant::now();
    let cfg = GptqConfig { act_order: true, ..GptqConfig::new(4, 128) };
    let q = gptq(&w, rows, cols, acc.hessian(), &cfg).unwrap();
    let tq = t.elapsed();
    let r = rtn(&w, rows, cols, 4, 128).unwrap();
    let (eg, er) = (output_error(&w, &q.dequant, rows, cols, &x), output_error(&w, &r.dequant, rows, cols, &x));
    eprintln!("1536×384: H from {n} rows {th:.2?}, GPTQ {tq:.2?}; output error GPTQ {eg:.4e}, RTN {er:.4e}");
    assert!(eg < er);
    // The times are printed, not asserted: cargo test makes no timing assertions.
}
