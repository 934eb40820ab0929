//! Mixed-precision training: the bf16/f16 rounding kernels bit for bit against the `half` crate,
//! the low-precision linear layer against a naive f64 product, every architecture's passes in
//! bf16/f16, dynamic loss scaling (a forced overflow skips the step and leaves weights and
//! optimizer state bit-identical; the scale grows after N clean steps; skipped steps are
//! logged), and reduced-precision training staying close to fp32 without being equal to it.

mod common;
use common::rand_vec;
use lmlab::config::RunConfig;
use lmlab::data::{Batch, CharTokenizer};
use lmlab::io::checkpoint;
use lmlab::kernels::precision::{
    matmul_backward_lowp, matmul_forward_lowp, matmul_lowp_scratch_len, round_bf16, round_f16, round_inplace,
    round_into, Precision,
};
use lmlab::model::transformer::{ActivationKind, Arch, ModelConfig, Position, Transformer};
use lmlab::optim::Clipping;
use lmlab::optim::LossScaler;
use lmlab::train::{train, TrainOptions, Trainer};
use lmlab::util::thread_pool;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::path::Path;

fn ref_bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

fn ref_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// Same bits, or both NaN.
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn check_against_half(what: &str, xs: impl IntoIterator<Item = f32>) {
    let mut n = 0;
    for x in xs {
        let (b, rb) = (round_bf16(x), ref_bf16(x));
        assert!(same(b, rb), "{what}: bf16({x:e} = {:#010x}) = {b:e}, half says {rb:e}", x.to_bits());
        let (h, rh) = (round_f16(x), ref_f16(x));
        assert!(same(h, rh), "{what}: f16({x:e} = {:#010x}) = {h:e}, half says {rh:e}", x.to_bits());
        n += 1;
    }
    assert!(n > 0);
}

#[test]
fn rounding_matches_half_on_edge_cases() {
    let p = |e: i32| 2f32.powi(e);
    let edge = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        // f16 ties: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 (goes to even: 1), 1 + 3·2^-11
        // is halfway between two odd/even neighbours (goes up).
        1.0 + p(-11),
        1.0 + 3.0 * p(-11),
        -(1.0 + 3.0 * p(-11)),
        // bf16 ties.
        1.0 + p(-8),
        1.0 + 3.0 * p(-8),
        // f16 overflow: 65504 is the largest half, 65519 still rounds to it, 65520 is the tie
        // that rounds to infinity.
        65504.0,
        65519.0,
        65520.0,
        -65520.0,
        1e10,
        f32::MAX,
        f32::MIN,
        // f16 subnormals: 2^-24 is the smallest, 2^-25 is the tie to zero, 3·2^-25 the tie up.
        p(-24),
        p(-25),
        3.0 * p(-25),
        p(-26),
        -p(-24),
        p(-14),
        p(-14) - p(-25),
        p(-14) - p(-26),
        6.0e-8,
        // f32 subnormals (bf16 keeps them).
        f32::from_bits(1),
        f32::from_bits(0x0000_8000),
        f32::from_bits(0x0000_8001),
        f32::from_bits(0x0001_8000),
        -1e-40,
        f32::MIN_POSITIVE,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        // Signalling NaN with only low fraction bits set: masking them would make infinity.
        f32::from_bits(0x7F80_0001),
        f32::from_bits(0xFF80_0001),
        f32::from_bits(0x7FFF_FFFF),
    ];
    check_against_half("edge", edge);
    // The results are what the format says, not only what `half` says.
    assert_eq!(round_f16(65519.0), 65504.0);
    assert_eq!(round_f16(65520.0), f32::INFINITY);
    assert_eq!(round_f16(1.0 + p(-11)), 1.0);
    assert_eq!(round_f16(1.0 + 3.0 * p(-11)), 1.0 + 2.0 * p(-10));
    assert_eq!(round_f16(p(-25)), 0.0);
    assert_eq!(round_f16(3.0 * p(-25)), p(-23));
    assert_eq!(round_bf16(1.0 + p(-8)), 1.0);
    assert_eq!(round_bf16(f32::MAX), f32::INFINITY);
    assert!(round_f16(f32::from_bits(0x7F80_0001)).is_nan() && round_bf16(f32::from_bits(0x7F80_0001)).is_nan());
    assert_eq!(round_f16(-0.0).to_bits(), (-0.0f32).to_bits());
}

#[test]
fn rounding_matches_half_around_every_representable_value() {
    // Every f16 and bf16 value, the midpoints to their neighbours (the ties) and one f32 ulp on
    // either side of each: every rounding boundary of both formats.
    let around = |v: f32| {
        let b = v.to_bits();
        [b.wrapping_sub(1), b, b.wrapping_add(1)].map(f32::from_bits)
    };
    let mut xs = Vec::new();
    for bits in 0..=u16::MAX {
        for v in [half::f16::from_bits(bits).to_f32(), half::bf16::from_bits(bits).to_f32()] {
            let next = f32::from_bits(v.to_bits().wrapping_add(1 << 13));
            let next16 = f32::from_bits(v.to_bits().wrapping_add(1 << 16));
            xs.extend(around(v));
            for n in [next, next16] {
                let mid = (v as f64 + n as f64) / 2.0;
                if mid.is_finite() {
                    xs.extend(around(mid as f32));
                }
            }
        }
    }
    // f16 subnormal midpoints: k·2^-24 + 2^-25.
    for k in 0..1024 {
        xs.extend(around((k as f32 + 0.5) * 2f32.powi(-24)));
    }
    check_against_half("sweep", xs);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    check_against_half("random bits", (0..2_000_000).map(|_| f32::from_bits(rng.gen())));
}

#[test]
fn slice_kernels_round_every_element() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    // Longer than one parallel chunk, with a ragged end.
    let x: Vec<f32> = (0..20_001).map(|_| rng.gen_range(-1e5..1e5f32) * rng.gen_range(0.0..1.0f32).powi(8)).collect();
    for (p, f) in [(Precision::Bf16, ref_bf16 as fn(f32) -> f32), (Precision::F16, ref_f16)] {
        let mut a = x.clone();
        round_inplace(&mut a, p);
        let mut b = vec![0.0; x.len()];
        round_into(&mut b, &x, p);
        for i in 0..x.len() {
            assert!(same(a[i], f(x[i])) && same(b[i], f(x[i])), "{p:?} element {i}: {}", x[i]);
        }
    }
    let mut c = x.clone();
    round_inplace(&mut c, Precision::Fp32);
    assert_eq!(c, x);
}

/// Naive f64 product of already rounded operands: out (N, OC) = a (N, C) · w (OC, C)ᵀ + b.
fn naive(a: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, c: usize, oc: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * oc];
    for i in 0..n {
        for o in 0..oc {
            let s: f64 = (0..c).map(|k| a[i * c + k] as f64 * w[o * c + k] as f64).sum();
            out[i * oc + o] = s + b.map_or(0.0, |b| b[o] as f64);
        }
    }
    out
}

/// `got` is a value of format `p`, and equals round(want) or a neighbour of it (f32 and f64
/// sums may fall on either side of a rounding boundary).
fn assert_rounded_close(what: &str, got: &[f32], want: &[f64], p: Precision) {
    let ulp = if p == Precision::Bf16 { 2f64.powi(-8) } else { 2f64.powi(-11) };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert_eq!(p.round(g).to_bits(), g.to_bits(), "{what}[{i}] = {g} is not a {p:?} value");
        let tol = 2.0 * ulp * w.abs().max(1e-30);
        assert!((g as f64 - p.round(w as f32) as f64).abs() <= tol, "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn low_precision_linear_layer_matches_a_naive_product_of_rounded_operands() {
    let (n, c, oc) = (37, 29, 23);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let x = rand_vec(&mut rng, n * c, 2.0);
    let w = rand_vec(&mut rng, oc * c, 0.5);
    let b = rand_vec(&mut rng, oc, 0.5);
    let dout = rand_vec(&mut rng, n * oc, 1.0);
    for p in [Precision::Bf16, Precision::F16] {
        let r = |v: &[f32]| v.iter().map(|&v| p.round(v)).collect::<Vec<f32>>();
        let (xr, wr, br, dr) = (r(&x), r(&w), r(&b), r(&dout));
        let mut out = vec![0.0; n * oc];
        let mut x_low = vec![0.0; n * c];
        matmul_forward_lowp(&mut out, &mut x_low, &x, &wr, Some(&br), n, c, oc, p);
        assert_eq!(x_low, xr, "{p:?}: the input is rounded");
        assert_rounded_close(&format!("{p:?} out"), &out, &naive(&xr, &wr, Some(&br), n, c, oc), p);
        // Rounding changes the result: the same product in f32 differs.
        let mut out32 = vec![0.0; n * oc];
        lmlab::kernels::matmul::matmul_forward(&mut out32, &x, &w, Some(&b), n, c, oc);
        assert!(out != out32);

        let mut dx = vec![f32::NAN; n * c];
        let mut dw = vec![0.0f32; oc * c];
        let mut db = vec![0.0f32; oc];
        let mut scratch = vec![0.0; matmul_lowp_scratch_len(n, c, oc)];
        matmul_backward_lowp(&mut dx, &mut dw, Some(&mut db), &dr, &x, &wr, n, c, oc, p, &mut scratch);
        // dx = dout · W, dW = doutᵀ · round(x), db = Σ_n dout, each rounded once.
        let transpose = |m: &[f32], rows: usize, cols: usize| -> Vec<f32> {
            (0..rows * cols).map(|i| m[(i % rows) * cols + i / rows]).collect()
        };
        let wt = transpose(&wr, oc, c);
        assert_rounded_close(&format!("{p:?} dx"), &dx, &naive(&dr, &wt, None, n, oc, c), p);
        let (dt, xt) = (transpose(&dr, n, oc), transpose(&xr, n, c));
        assert_rounded_close(&format!("{p:?} dw"), &dw, &naive(&dt, &xt, None, oc, n, c), p);
        let col: Vec<f64> = (0..oc).map(|o| (0..n).map(|i| dr[i * oc + o] as f64).sum()).collect();
        assert_rounded_close(&format!("{p:?} db"), &db, &col, p);
        // Parameter gradients accumulate: the rounded contribution is added in f32.
        let start = rand_vec(&mut rng, oc * c, 1.0);
        let mut dw2 = start.clone();
        let mut db2 = vec![0.25f32; oc];
        matmul_backward_lowp(&mut dx, &mut dw2, Some(&mut db2), &dr, &x, &wr, n, c, oc, p, &mut scratch);
        assert!(dw2.iter().zip(&start).zip(&dw).all(|((a, s), d)| a.to_bits() == (s + d).to_bits()));
        assert!(db2.iter().zip(&db).all(|(a, d)| a.to_bits() == (0.25 + d).to_bits()));
    }
}

#[test]
fn f16_outputs_beyond_65504_become_infinite() {
    let (n, c, oc) = (2, 4, 3);
    let x = vec![100.0f32; n * c];
    let w = vec![200.0f32; oc * c]; // each output 4 · 100 · 200 = 80000 > 65504
    let mut out = vec![0.0; n * oc];
    let mut x_low = vec![0.0; n * c];
    matmul_forward_lowp(&mut out, &mut x_low, &x, &w, None, n, c, oc, Precision::F16);
    assert!(out.iter().all(|v| *v == f32::INFINITY), "{out:?}");
    matmul_forward_lowp(&mut out, &mut x_low, &x, &w, None, n, c, oc, Precision::Bf16);
    // bf16 has f32's range: 80000 is finite there, rounded to 8 significant bits.
    assert!(out.iter().all(|v| *v == 79872.0), "{out:?}");
}

fn tiny(arch: Arch) -> ModelConfig {
    ModelConfig {
        arch,
        vocab_size: 11,
        block_size: 8,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        num_classes: 3,
        ..ModelConfig::default()
    }
}

/// One forward and backward pass on a fixed batch; returns (loss, logits, grads).
fn pass(m: &mut Transformer, loss_scale: f32) -> (f32, Vec<f32>, Vec<f32>) {
    let (b, t) = (3, 7);
    let idx: Vec<u32> = (0..b * t).map(|i| (i * 5 % 11) as u32).collect();
    let mask: Vec<bool> = (0..b * t).map(|i| i < 2 * t || i % t < 4).collect();
    m.zero_grad();
    let loss = match m.config.arch {
        Arch::Decoder => {
            let tg: Vec<i32> = (0..b * t).map(|i| ((i * 7 + 1) % 11) as i32).collect();
            m.forward_lm(&idx, Some(&tg), b, t, true, 5).unwrap().unwrap()
        }
        Arch::Encoder => m.forward_classify(&idx, Some(&mask), Some(&[1, 0, 2]), b, t, true, 5).unwrap().unwrap(),
        Arch::EncoderDecoder => {
            let tin: Vec<u32> = (0..b * 5).map(|i| (i * 3 % 11) as u32).collect();
            let tout: Vec<i32> = (0..b * 5).map(|i| ((i * 2 + 1) % 11) as i32).collect();
            m.forward_seq2seq(&idx, Some(&mask), &tin, Some(&tout), b, t, 5, true, 5).unwrap().unwrap()
        }
        Arch::Lstm | Arch::Gru | Arch::Cnn => unreachable!("not a Transformer"),
    };
    m.backward_scaled(loss_scale).unwrap();
    (loss, m.logits().to_vec(), m.grads.clone())
}

#[test]
fn every_architecture_runs_in_bf16_and_f16_close_to_fp32() {
    let variants = [
        tiny(Arch::Decoder),
        ModelConfig {
            activation: ActivationKind::Swiglu,
            position: Position::Rope,
            n_kv_head: Some(1),
            ..tiny(Arch::Decoder)
        },
        ModelConfig { position: Position::T5, ..tiny(Arch::Encoder) },
        ModelConfig { tie_embeddings: false, ..tiny(Arch::EncoderDecoder) },
    ];
    for cfg in variants {
        let what = format!("{:?}/{:?}/{:?}", cfg.arch, cfg.activation, cfg.position);
        let mut m = Transformer::new(cfg.clone(), 3).unwrap();
        m.init(2);
        let (loss32, logits32, grads32) = pass(&mut m, 1.0);
        for p in [Precision::Bf16, Precision::F16] {
            m.set_precision(p);
            assert_eq!(m.precision(), p);
            let (loss, logits, grads) = pass(&mut m, 1.0);
            // The head's output is a value of the format: the rounding is applied.
            assert!(logits.iter().all(|&v| p.round(v) == v), "{what} {p:?}: logits not rounded");
            assert!(logits != logits32 && grads != grads32, "{what} {p:?}: identical to fp32");
            assert!((loss - loss32).abs() < 2e-2 * loss32, "{what} {p:?}: loss {loss} vs fp32 {loss32}");
            let norm = |g: &[f32]| g.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            let diff: Vec<f32> = grads.iter().zip(&grads32).map(|(a, b)| a - b).collect();
            let rel = norm(&diff) / norm(&grads32);
            assert!(rel < 0.1, "{what} {p:?}: gradient relative error {rel}");
            // A loss scale of 2^10 scales every gradient by about 2^10 (exactly, up to
            // rounding of values that are not multiplied exactly as a power of two would).
            let (_, _, scaled) = pass(&mut m, 1024.0);
            let unscaled: Vec<f32> = scaled.iter().map(|g| g / 1024.0).collect();
            let diff: Vec<f32> = unscaled.iter().zip(&grads).map(|(a, b)| a - b).collect();
            assert!(norm(&diff) <= 1e-2 * norm(&grads), "{what} {p:?}: scaled gradients");
            if p == Precision::F16 {
                // What loss scaling is for: gradients 2^14 times smaller fall into f16's
                // subnormal range and lose their low bits or flush to zero.
                let err = |g: &[f32]| {
                    let d: Vec<f32> = g.iter().zip(&grads32).map(|(a, b)| a - b).collect();
                    norm(&d) / norm(&grads32)
                };
                let tiny_scale = 2f32.powi(-14);
                let small: Vec<f32> = pass(&mut m, tiny_scale).2.iter().map(|g| g / tiny_scale).collect();
                eprintln!("{what}: f16 gradient error {:.3e} at scale 1, {:.3e} at 2^-14", err(&grads), err(&small));
                assert!(err(&small) > 10.0 * err(&grads), "{what}: f16 underflow not visible");
            }
            // The master weights are untouched by the rounding.
            m.set_precision(Precision::Fp32);
            assert_eq!(pass(&mut m, 1.0).0.to_bits(), loss32.to_bits(), "{what}: back to fp32");
        }
    }
}

fn tokens() -> Vec<u32> {
    let text = "First Citizen:\nBefore we proceed any further, hear me speak.\n".repeat(40);
    CharTokenizer::from_corpus(&text).unwrap().encode(&text).unwrap()
}

fn trainer(precision: Precision, scaler: LossScaler) -> Trainer {
    let cfg = RunConfig {
        model: ModelConfig { n_layer: 2, n_embd: 32, n_head: 2, block_size: 16, vocab_size: 28, ..Default::default() },
        ..RunConfig::default()
    };
    let mut model = Transformer::new(cfg.model.clone(), 4).unwrap();
    model.init(1);
    model.set_precision(precision);
    let opt = cfg.optim.build(&model.layout).unwrap();
    Trainer {
        accum: 1,
        model,
        opt,
        schedule: cfg.optim.schedule(),
        clip: Clipping::norm(1.0),
        batch: Batch::new(4, 16),
        rng: Xoshiro256PlusPlus::seed_from_u64(0),
        step: 0,
        seed: 0,
        scaler,
        teacher: None,
        masking: None,
    }
}

#[test]
fn f16_overflow_skips_the_step_and_leaves_weights_and_optimizer_state_unchanged() {
    let tokens = tokens();
    let pool = thread_pool(2).unwrap();
    pool.install(|| {
        let mut tr = trainer(Precision::F16, LossScaler::new(Precision::F16, 65536.0, 1000));
        // Two ordinary steps first, so the optimizer state is not all zeros.
        for _ in 0..2 {
            assert!(!tr.step(&tokens).unwrap().skipped);
        }
        let state = |o: &lmlab::optim::Optimizer| -> Vec<Vec<u32>> {
            o.state_tensors().iter().map(|(_, v)| v.iter().map(|x| x.to_bits()).collect()).collect()
        };
        let (params, opt_state, t) = (tr.model.params.clone(), state(&tr.opt), tr.opt.steps());
        // 2^100 times the logits' gradient is far beyond 65504: it becomes infinite in f16.
        tr.scaler.scale = 2f32.powi(100);
        let s = tr.step(&tokens).unwrap();
        assert!(s.skipped && s.loss.is_finite());
        assert_eq!(s.loss_scale, 2f32.powi(99), "the scale halves");
        assert_eq!(tr.scaler.scale, 2f32.powi(99));
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
        assert_eq!(bits(&tr.model.params), bits(&params), "weights changed by a skipped step");
        assert_eq!(state(&tr.opt), opt_state, "moments changed by a skipped step");
        assert_eq!(tr.opt.steps(), t, "the optimizer's step count advanced");
        assert_eq!(tr.step, 3, "the iteration (schedule, batches) moves on");
        // With a sane scale the next step is clean and does change the weights.
        tr.scaler.scale = 1024.0;
        let s = tr.step(&tokens).unwrap();
        assert!(!s.skipped && s.grad_norm.is_finite());
        assert!(tr.model.params != params && tr.opt.steps() == t + 1);
    });
}

#[test]
fn loss_scale_grows_after_the_growth_interval_of_clean_steps() {
    let tokens = tokens();
    let pool = thread_pool(2).unwrap();
    pool.install(|| {
        let mut tr = trainer(Precision::F16, LossScaler::new(Precision::F16, 256.0, 3));
        let mut scales = Vec::new();
        for _ in 0..7 {
            let s = tr.step(&tokens).unwrap();
            assert!(!s.skipped);
            scales.push(s.loss_scale);
        }
        assert_eq!(scales, [256.0, 256.0, 512.0, 512.0, 512.0, 1024.0, 1024.0]);
        assert_eq!(tr.scaler.growth_tracker, 1);
        // bf16 has no loss scaling.
        let mut tr = trainer(Precision::Bf16, LossScaler::new(Precision::Bf16, 256.0, 3));
        assert!((0..4).all(|_| tr.step(&tokens).unwrap().loss_scale == 1.0));
    });
}

fn config(data: &Path, out: &Path, precision: &str, extra: &str, max_iters: u64) -> RunConfig {
    let text = format!(
        r#"
[model]
block_size = 16
n_layer = 2
n_head = 2
n_embd = 32
[data]
path = "{}"
[train]
out_dir = "{}"
batch_size = 8
max_iters = {max_iters}
eval_interval = 100
eval_iters = 4
log_interval = 5
threads = 2
precision = "{precision}"
{extra}
[optim]
warmup_iters = 5
lr_decay_iters = 100
"#,
        data.display(),
        out.display()
    );
    RunConfig::from_toml_str(&text, &[]).unwrap()
}

fn corpus(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("corpus.txt");
    std::fs::write(
        &data,
        "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n".repeat(30),
    )
    .unwrap();
    data
}

#[test]
fn overflowing_run_logs_every_skipped_step_and_checkpoints_the_initial_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("f16");
    let quiet = TrainOptions { quiet: true, ..Default::default() };
    let cfg = config(&data, &out, "f16", "loss_scale_init = 1.2676506e30", 3); // 2^100
    train(cfg.clone(), None, &quiet).unwrap();
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let skipped: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|j: &serde_json::Value| j["skipped"] == true)
        .collect();
    assert_eq!(skipped.len(), 3, "{log}");
    for (i, j) in skipped.iter().enumerate() {
        assert_eq!(j["iter"], i as u64 + 1);
        assert_eq!(j["loss_scale"].as_f64().unwrap(), 2f64.powi(99 - i as i32));
        assert!(j["loss"].as_f64().unwrap().is_finite());
    }
    let ck = checkpoint::load(&out.join("ckpt"), 8, true).unwrap();
    let mut fresh = Transformer::new(ck.model.config.clone(), 8).unwrap();
    fresh.init(cfg.train.seed);
    assert!(ck.model.params == fresh.params, "three skipped steps changed the weights");
    let opt = ck.optimizer.unwrap();
    assert!(opt.buffers.iter().all(|(_, b)| b.iter().all(|&x| x == 0.0)) && opt.steps == 0);
    let state = ck.state.loss_scaler.unwrap();
    assert_eq!((state.scale, state.growth_tracker), (2f32.powi(97), 0));
}

#[test]
fn bf16_and_f16_training_stay_close_to_fp32_but_are_not_identical() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let quiet = TrainOptions { quiet: true, ..Default::default() };
    let run = |p: &str| {
        let out = dir.path().join(p);
        let s = train(config(&data, &out, p, "", 40), None, &quiet).unwrap();
        let ck = checkpoint::load(&out.join("ckpt"), 8, false).unwrap();
        let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        (s.val_loss, ck.model.params, log.contains("\"skipped\""))
    };
    let (l32, p32, _) = run("fp32");
    assert!(l32 < 2.5, "the fp32 run learns: val loss {l32}");
    for p in ["bf16", "f16"] {
        let (l, params, skipped) = run(p);
        assert!((l - l32).abs() < 0.1 * l32, "{p}: val loss {l} vs fp32 {l32}");
        assert!(params != p32, "{p}: bit-identical to fp32, so no rounding happened");
        assert!(!skipped, "{p}: no step should overflow at the default scale");
    }
    // Same precision, same seed: still deterministic.
    assert_eq!(run("bf16").1, run("bf16").1);
}
