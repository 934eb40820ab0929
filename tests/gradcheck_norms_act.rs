//! RMSNorm, BatchNorm, the element-wise activations and SwiGLU: finite-difference checks of every
//! backward pass (loss L = Σ r ⊙ out with fixed random r, so dout = r), direct comparisons of the
//! forward passes with naive f64 implementations written here, the accumulate (`+=`) contract of
//! the norm layers, and the accuracy of the erf the exact GELU is built on.

use lmlab::kernels::activation::{self, Activation};
use lmlab::kernels::{batchnorm, gelu, rmsnorm};
mod common;
use common::{check, dot, rand_vec};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn assert_close(name: &str, got: &[f32], want: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(err <= abs + rel * w.abs(), "{name}[{i}]: {g} vs {w} (error {err:.2e})");
    }
}

// ---------------------------------------------------------------------------------------------
// f64 references

/// erfc(u) for u ≥ 0 in f64: below 2.5 as 1 - erf(u) with the all-positive series
/// erf(u) = 2/√π·e^(-u²)·Σ 2ⁿu^(2n+1)/(1·3···(2n+1)); from 2.5 on the continued fraction
/// erfc(u) = e^(-u²)/√π / (u + (1/2)/(u + 1/(u + (3/2)/(u + ...)))), evaluated bottom-up.
/// Relative error about 1e-12 (checked against mpmath while writing this test).
fn erfc_ref(u: f64) -> f64 {
    assert!(u >= 0.0);
    if u < 2.5 {
        1.0 - erf_series(u)
    } else {
        let mut k = u;
        for j in (1..=200).rev() {
            k = u + (j as f64 / 2.0) / k;
        }
        (-u * u).exp() / std::f64::consts::PI.sqrt() / k
    }
}

fn erf_series(u: f64) -> f64 {
    let (mut term, mut sum) = (u, u);
    for n in 1..500 {
        term *= 2.0 * u * u / (2 * n + 1) as f64;
        sum += term;
        if term < 1e-17 * sum {
            break;
        }
    }
    2.0 / std::f64::consts::PI.sqrt() * (-u * u).exp() * sum
}

fn erf_ref(x: f64) -> f64 {
    let u = x.abs();
    let e = if u < 2.5 { erf_series(u) } else { 1.0 - erfc_ref(u) };
    e.copysign(x)
}

/// Standard normal CDF, relatively accurate in both tails.
fn phi_ref(x: f64) -> f64 {
    let e = 0.5 * erfc_ref(x.abs() / std::f64::consts::SQRT_2);
    if x < 0.0 {
        e
    } else {
        1.0 - e
    }
}

fn pdf_ref(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

fn sigmoid_ref(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn act_ref(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Relu => x.max(0.0),
        Activation::LeakyRelu(s) => {
            if x > 0.0 {
                x
            } else {
                s as f64 * x
            }
        }
        Activation::GeluTanh => {
            0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::GeluErf => x * phi_ref(x),
        Activation::Silu => x * sigmoid_ref(x),
    }
}

const ALL_ACTS: [Activation; 6] = [
    Activation::Relu,
    Activation::LeakyRelu(0.1),
    Activation::LeakyRelu(0.01),
    Activation::GeluTanh,
    Activation::GeluErf,
    Activation::Silu,
];

// ---------------------------------------------------------------------------------------------
// RMSNorm

fn rmsnorm_ref(inp: &[f32], w: &[f32], c: usize, eps: f32) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0; inp.len()];
    let mut rstd = vec![];
    for (row, x) in inp.chunks(c).enumerate() {
        let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / c as f64;
        let s = 1.0 / (ms + eps as f64).sqrt();
        for i in 0..c {
            out[row * c + i] = x[i] as f64 * s * w[i] as f64;
        }
        rstd.push(s);
    }
    (out, rstd)
}

#[test]
fn rmsnorm_gradients() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(21);
    let (n, c, eps) = (4, 40, 1e-5); // c > COLUMN_CHUNK exercises the column split
    let inp = rand_vec(&mut rng, n * c, 2.0);
    let w = rand_vec(&mut rng, c, 1.0);
    let r = rand_vec(&mut rng, n * c, 1.0);
    let f = |inp: &[f32], w: &[f32]| {
        let (mut out, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
        rmsnorm::rmsnorm_forward(&mut out, &mut rstd, inp, w, c, eps);
        dot(&out, &r)
    };
    let (mut out, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
    rmsnorm::rmsnorm_forward(&mut out, &mut rstd, &inp, &w, c, eps);
    let (mut di, mut dw) = (vec![0.0; n * c], vec![0.0; c]);
    rmsnorm::rmsnorm_backward(&mut di, &mut dw, &r, &inp, &w, &rstd, c);
    check("rmsnorm dinp", &inp, &di, |x| f(x, &w));
    check("rmsnorm dweight", &w, &dw, |x| f(&inp, x));
}

#[test]
fn rmsnorm_matches_naive() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(22);
    for &(n, c, eps) in &[(3usize, 7usize, 1e-5f32), (5, 70, 1e-6), (2, 16, 0.5)] {
        let inp = rand_vec(&mut rng, n * c, 3.0);
        let w = rand_vec(&mut rng, c, 1.5);
        let (mut out, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
        rmsnorm::rmsnorm_forward(&mut out, &mut rstd, &inp, &w, c, eps);
        let (want_out, want_rstd) = rmsnorm_ref(&inp, &w, c, eps);
        assert_close("rmsnorm out", &out, &want_out, 1e-6, 1e-6);
        assert_close("rmsnorm rstd", &rstd, &want_rstd, 1e-6, 0.0);
    }
    // A row of zeros: out = 0, rstd = 1/sqrt(eps).
    let (mut out, mut rstd) = (vec![1.0; 4], vec![0.0; 1]);
    rmsnorm::rmsnorm_forward(&mut out, &mut rstd, &[0.0; 4], &[1.0; 4], 4, 0.25);
    assert_eq!(out, vec![0.0; 4]);
    assert_eq!(rstd[0], 2.0);
}

// ---------------------------------------------------------------------------------------------
// BatchNorm

struct BnRef {
    out: Vec<f64>,
    mean: Vec<f64>,
    rstd: Vec<f64>,
    var_unbiased: Vec<f64>,
}

fn batchnorm_train_ref(inp: &[f32], w: &[f32], b: Option<&[f32]>, c: usize, eps: f32) -> BnRef {
    let n = inp.len() / c;
    let col = |j: usize| (0..n).map(move |row| inp[row * c + j] as f64);
    let mean: Vec<f64> = (0..c).map(|j| col(j).sum::<f64>() / n as f64).collect();
    let ss: Vec<f64> = (0..c).map(|j| col(j).map(|x| (x - mean[j]) * (x - mean[j])).sum::<f64>()).collect();
    let rstd: Vec<f64> = ss.iter().map(|s| 1.0 / (s / n as f64 + eps as f64).sqrt()).collect();
    let out = (0..n * c)
        .map(|k| {
            let j = k % c;
            (inp[k] as f64 - mean[j]) * rstd[j] * w[j] as f64 + b.map_or(0.0, |b| b[j] as f64)
        })
        .collect();
    BnRef { out, mean, rstd, var_unbiased: ss.iter().map(|s| s / (n - 1) as f64).collect() }
}

#[allow(clippy::too_many_arguments)]
fn bn_train(
    inp: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    rm: &mut [f32],
    rv: &mut [f32],
    c: usize,
    eps: f32,
    momentum: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut out, mut mean, mut rstd) = (vec![0.0; inp.len()], vec![0.0; c], vec![0.0; c]);
    batchnorm::batchnorm_forward_train(&mut out, &mut mean, &mut rstd, rm, rv, inp, w, b, c, eps, momentum);
    (out, mean, rstd)
}

#[test]
fn batchnorm_gradients() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(31);
    let (n, c) = (6, 40); // c > COLUMN_CHUNK exercises the column split
    let inp = rand_vec(&mut rng, n * c, 2.0);
    let w = rand_vec(&mut rng, c, 1.0);
    let b = rand_vec(&mut rng, c, 1.0);
    let r = rand_vec(&mut rng, n * c, 1.0);
    for with_bias in [true, false] {
        let bias = with_bias.then_some(&b[..]);
        let f = |inp: &[f32], w: &[f32], b: Option<&[f32]>| {
            let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
            let (out, _, _) = bn_train(inp, w, b, &mut rm, &mut rv, c, batchnorm::BN_EPS, batchnorm::BN_MOMENTUM);
            dot(&out, &r)
        };
        let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
        let (_, mean, rstd) = bn_train(&inp, &w, bias, &mut rm, &mut rv, c, batchnorm::BN_EPS, batchnorm::BN_MOMENTUM);
        let (mut di, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
        let dbias = with_bias.then_some(&mut db[..]);
        batchnorm::batchnorm_backward(&mut di, &mut dw, dbias, &r, &inp, &w, &mean, &rstd, c);
        check(&format!("batchnorm dinp (bias {with_bias})"), &inp, &di, |x| f(x, &w, bias));
        check(&format!("batchnorm dweight (bias {with_bias})"), &w, &dw, |x| f(&inp, x, bias));
        if with_bias {
            check("batchnorm dbias", &b, &db, |x| f(&inp, &w, Some(x)));
        } else {
            assert!(db.iter().all(|&g| g == 0.0));
        }
    }
}

#[test]
fn batchnorm_train_eval_and_running_stats_match_naive() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(32);
    let (n, c, eps, momentum) = (12, 37, 1e-5f32, 0.1f32);
    let w = rand_vec(&mut rng, c, 1.5);
    let b = rand_vec(&mut rng, c, 1.0);
    // PyTorch's initial running statistics.
    let (mut rm, mut rv) = (vec![0.0f32; c], vec![1.0f32; c]);
    let (mut want_rm, mut want_rv) = (vec![0.0f64; c], vec![1.0f64; c]);
    for step in 0..2 {
        // Per-channel offsets and scales so the statistics differ between channels and calls.
        let inp: Vec<f32> = (0..n * c)
            .map(|k| rng.gen_range(-1.0..1.0f32) * (1.0 + (k % c) as f32 * 0.1) + step as f32 + 0.5)
            .collect();
        let (out, mean, rstd) = bn_train(&inp, &w, Some(&b), &mut rm, &mut rv, c, eps, momentum);
        let want = batchnorm_train_ref(&inp, &w, Some(&b), c, eps);
        assert_close("batchnorm train out", &out, &want.out, 1e-5, 1e-5);
        assert_close("batchnorm mean", &mean, &want.mean, 1e-6, 1e-7);
        assert_close("batchnorm rstd", &rstd, &want.rstd, 1e-6, 0.0);
        for j in 0..c {
            want_rm[j] = (1.0 - momentum as f64) * want_rm[j] + momentum as f64 * want.mean[j];
            want_rv[j] = (1.0 - momentum as f64) * want_rv[j] + momentum as f64 * want.var_unbiased[j];
        }
        assert_close(&format!("running_mean after {} calls", step + 1), &rm, &want_rm, 1e-6, 1e-7);
        assert_close(&format!("running_var after {} calls", step + 1), &rv, &want_rv, 1e-6, 0.0);
    }
    // Eval mode normalises with the running statistics.
    let inp = rand_vec(&mut rng, n * c, 3.0);
    for bias in [Some(&b[..]), None] {
        let mut out = vec![0.0; n * c];
        batchnorm::batchnorm_forward_eval(&mut out, &inp, &rm, &rv, &w, bias, c, eps);
        let want: Vec<f64> = (0..n * c)
            .map(|k| {
                let j = k % c;
                (inp[k] as f64 - rm[j] as f64) / (rv[j] as f64 + eps as f64).sqrt() * w[j] as f64
                    + bias.map_or(0.0, |b| b[j] as f64)
            })
            .collect();
        assert_close("batchnorm eval out", &out, &want, 1e-5, 1e-5);
    }
    // Another momentum: running = (1 - m)·running + m·stat.
    let inp = rand_vec(&mut rng, 2 * c, 1.0);
    let (mut rm2, mut rv2) = (vec![2.0f32; c], vec![3.0f32; c]);
    bn_train(&inp, &w, None, &mut rm2, &mut rv2, c, eps, 0.25);
    let want = batchnorm_train_ref(&inp, &w, None, c, eps);
    let want_rm: Vec<f64> = want.mean.iter().map(|m| 0.75 * 2.0 + 0.25 * m).collect();
    let want_rv: Vec<f64> = want.var_unbiased.iter().map(|v| 0.75 * 3.0 + 0.25 * v).collect();
    assert_close("running_mean, momentum 0.25", &rm2, &want_rm, 1e-6, 1e-7);
    assert_close("running_var, momentum 0.25", &rv2, &want_rv, 1e-6, 0.0);
}

#[test]
fn batchnorm_statistics_are_accurate_over_many_rows() {
    // N = 16·256 rows around a large offset: a one-pass f32 variance would lose most digits.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(33);
    let (n, c) = (4096, 70);
    let inp: Vec<f32> = (0..n * c).map(|k| 100.0 + (k % c) as f32 + rng.gen_range(-1.0..1.0f32) * 0.05).collect();
    let w = vec![1.0; c];
    let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
    let (out, mean, rstd) = bn_train(&inp, &w, None, &mut rm, &mut rv, c, 1e-5, 0.1);
    let want = batchnorm_train_ref(&inp, &w, None, c, 1e-5);
    assert_close("mean, N 4096", &mean, &want.mean, 1e-7, 0.0);
    assert_close("rstd, N 4096", &rstd, &want.rstd, 1e-6, 0.0);
    // x - mean cancels about 11 bits here (|x| ≈ 128, |x - mean| ≤ 0.05): compare absolutely.
    assert_close("out, N 4096", &out, &want.out, 0.0, 3e-4);
}

// ---------------------------------------------------------------------------------------------
// The norms' input gradients add into dinp; their parameter gradients accumulate.

#[test]
fn norm_backward_accumulates() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(41);
    let (n, c) = (5, 40);
    let inp = rand_vec(&mut rng, n * c, 2.0);
    let w = rand_vec(&mut rng, c, 1.0);
    let dout = rand_vec(&mut rng, n * c, 1.0);
    let prior = rand_vec(&mut rng, n * c, 1.0);
    let prior_w = rand_vec(&mut rng, c, 1.0);
    let prior_b = rand_vec(&mut rng, c, 1.0);
    let assert_added = |name: &str, got: &[f32], prior: &[f32], fresh: &[f32]| {
        assert!(fresh.iter().any(|&g| g.abs() > 1e-3), "{name}: gradient is trivially zero");
        for i in 0..got.len() {
            assert!(
                (got[i] - (prior[i] + fresh[i])).abs() < 1e-5,
                "{name}[{i}]: {} vs {}",
                got[i],
                prior[i] + fresh[i]
            );
        }
    };

    let (mut out, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
    rmsnorm::rmsnorm_forward(&mut out, &mut rstd, &inp, &w, c, 1e-5);
    let (mut di0, mut dw0) = (vec![0.0; n * c], vec![0.0; c]);
    rmsnorm::rmsnorm_backward(&mut di0, &mut dw0, &dout, &inp, &w, &rstd, c);
    let (mut di, mut dw) = (prior.clone(), prior_w.clone());
    rmsnorm::rmsnorm_backward(&mut di, &mut dw, &dout, &inp, &w, &rstd, c);
    assert_added("rmsnorm dinp", &di, &prior, &di0);
    assert_added("rmsnorm dweight", &dw, &prior_w, &dw0);

    let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
    let (_, mean, rstd) = bn_train(&inp, &w, None, &mut rm, &mut rv, c, 1e-5, 0.1);
    let (mut di0, mut dw0, mut db0) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
    batchnorm::batchnorm_backward(&mut di0, &mut dw0, Some(&mut db0), &dout, &inp, &w, &mean, &rstd, c);
    let (mut di, mut dw, mut db) = (prior.clone(), prior_w.clone(), prior_b.clone());
    batchnorm::batchnorm_backward(&mut di, &mut dw, Some(&mut db), &dout, &inp, &w, &mean, &rstd, c);
    assert_added("batchnorm dinp", &di, &prior, &di0);
    assert_added("batchnorm dweight", &dw, &prior_w, &dw0);
    assert_added("batchnorm dbias", &db, &prior_b, &db0);
}

#[test]
fn norm_results_do_not_depend_on_thread_count() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(42);
    let (n, c) = (300, 100);
    let inp = rand_vec(&mut rng, n * c, 2.0);
    let w = rand_vec(&mut rng, c, 1.0);
    let dout = rand_vec(&mut rng, n * c, 1.0);
    let run = || {
        let (mut out, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
        rmsnorm::rmsnorm_forward(&mut out, &mut rstd, &inp, &w, c, 1e-5);
        let (mut di, mut dw) = (vec![0.0; n * c], vec![0.0; c]);
        rmsnorm::rmsnorm_backward(&mut di, &mut dw, &dout, &inp, &w, &rstd, c);
        let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
        let (bout, mean, brstd) = bn_train(&inp, &w, None, &mut rm, &mut rv, c, 1e-5, 0.1);
        let (mut bdi, mut bdw, mut bdb) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
        batchnorm::batchnorm_backward(&mut bdi, &mut bdw, Some(&mut bdb), &dout, &inp, &w, &mean, &brstd, c);
        [out, rstd, di, dw, bout, mean, brstd, rm, rv, bdi, bdw, bdb]
    };
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
    let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(run);
    for (k, (a, b)) in one.iter().zip(&three).enumerate() {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "output {k} differs between pool sizes");
    }
}

// ---------------------------------------------------------------------------------------------
// Activations and SwiGLU

/// Random inputs kept at least 0.05 away from 0, where ReLU and leaky ReLU have their kink
/// (the finite-difference step is 0.01).
fn away_from_zero(mut v: Vec<f32>) -> Vec<f32> {
    for x in v.iter_mut() {
        if x.abs() < 0.05 {
            *x = if *x < 0.0 { *x - 0.1 } else { *x + 0.1 };
        }
    }
    v
}

#[test]
fn activation_gradients() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(51);
    let n = 200;
    let x = away_from_zero(rand_vec(&mut rng, n, 4.0));
    let r = rand_vec(&mut rng, n, 1.0);
    for act in ALL_ACTS {
        let mut dx = vec![f32::NAN; n]; // overwritten, not accumulated
        activation::activation_backward(act, &mut dx, &x, &r);
        check(&format!("{act:?}"), &x, &dx, |x| {
            let mut out = vec![0.0; n];
            activation::activation_forward(act, &mut out, x);
            dot(&out, &r)
        });
    }
}

#[test]
fn activation_gradients_match_formulas_and_torch_conventions() {
    // Gradients at exactly 0: ReLU 0 (torch's threshold_backward), leaky ReLU the slope.
    let mut d = [f32::NAN; 3];
    activation::activation_backward(Activation::Relu, &mut d, &[0.0, -1.0, 2.0], &[1.5; 3]);
    assert_eq!(d, [0.0, 0.0, 1.5]);
    activation::activation_backward(Activation::LeakyRelu(0.1), &mut d, &[0.0, -1.0, 2.0], &[2.0; 3]);
    assert_eq!(d, [0.2, 0.2, 2.0]);
    // Exact GELU's derivative Φ(x) + x·φ(x) and SiLU's σ(x)·(1 + x·(1 - σ(x))) over a grid. The
    // GELU derivative crosses zero near x = -0.75, so the tolerance scales with |Φ| + |x·φ|.
    let xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.0025).collect();
    let ones = vec![1.0f32; xs.len()];
    let mut g = vec![0.0; xs.len()];
    activation::activation_backward(Activation::GeluErf, &mut g, &xs, &ones);
    for (&x, &g) in xs.iter().zip(&g) {
        let x64 = x as f64;
        let (cdf, xpdf) = (phi_ref(x64), x64 * pdf_ref(x64));
        let err = (g as f64 - (cdf + xpdf)).abs();
        assert!(err <= 1e-6 * (cdf.abs() + xpdf.abs()), "gelu_erf'({x}) = {g} vs {} (error {err:.2e})", cdf + xpdf);
    }
    activation::activation_backward(Activation::Silu, &mut g, &xs, &ones);
    for (&x, &g) in xs.iter().zip(&g) {
        let s = sigmoid_ref(x as f64);
        let want = s * (1.0 + x as f64 * (1.0 - s));
        assert!((g as f64 - want).abs() <= 1e-6 * (s + (x as f64 * s * (1.0 - s)).abs()), "silu'({x}) = {g} vs {want}");
    }
}

#[test]
fn activations_match_naive() {
    let xs: Vec<f32> = (-8000..=8000).map(|i| i as f32 * 0.00125 + 0.000_37).collect();
    for act in ALL_ACTS {
        let mut out = vec![0.0; xs.len()];
        activation::activation_forward(act, &mut out, &xs);
        let want: Vec<f64> = xs.iter().map(|&x| act_ref(act, x as f64)).collect();
        match act {
            // 1 + tanh(u) cancels in the left tail of the tanh approximation: absolute error.
            Activation::GeluTanh => assert_close("gelu_tanh", &out, &want, 1e-6, 1e-6),
            _ => assert_close(&format!("{act:?}"), &out, &want, 1e-6, 0.0),
        }
    }
    // GeluTanh is the existing GPT-2 kernel, bit for bit.
    let mut a = vec![0.0; xs.len()];
    let mut b = vec![0.0; xs.len()];
    activation::activation_forward(Activation::GeluTanh, &mut a, &xs);
    gelu::gelu_forward(&mut b, &xs);
    assert_eq!(a, b);
    // Known values: nn.GELU()(1) = 0.8413447, nn.GELU()(-3) = -0.0040496 (PyTorch).
    let mut o = [0.0f32; 2];
    activation::activation_forward(Activation::GeluErf, &mut o, &[1.0, -3.0]);
    assert!((o[0] - 0.841_344_7).abs() < 1e-6 && (o[1] + 0.004_049_6).abs() < 1e-6, "{o:?}");
    // Exact GELU keeps its relative accuracy far into the left tail: x·Φ(x) is ~1e-22 at x = -10.
    let tail: Vec<f32> = (0..=400).map(|i| -10.0 + i as f32 * 0.0217).collect();
    let mut out = vec![0.0; tail.len()];
    activation::activation_forward(Activation::GeluErf, &mut out, &tail);
    let want: Vec<f64> = tail.iter().map(|&x| x as f64 * phi_ref(x as f64)).collect();
    assert_close("gelu_erf left tail", &out, &want, 1e-6, 0.0);
    // Saturation: far tails and infinities.
    let mut o = [0.0f32; 4];
    activation::activation_forward(Activation::GeluErf, &mut o, &[-20.0, 20.0, f32::INFINITY, -1e30]);
    assert_eq!(o[..3], [0.0, 20.0, f32::INFINITY]);
    assert_eq!(o[3], 0.0);
}

#[test]
fn erf_accuracy() {
    // Dense grid over [-6, 6]: the documented accuracy of activation::erf.
    let mut worst_abs = 0.0f64;
    let mut worst_rel_small = 0.0f64;
    for i in -600_000..=600_000 {
        let x = i as f32 * 1e-5;
        let want = erf_ref(x as f64);
        let err = (activation::erf(x) as f64 - want).abs();
        worst_abs = worst_abs.max(err);
        if x != 0.0 && x.abs() < 0.75 {
            worst_rel_small = worst_rel_small.max(err / want.abs());
        }
    }
    assert!(worst_abs < 1.5e-7, "erf absolute error {worst_abs:.3e}");
    assert!(worst_rel_small < 2.5e-7, "erf relative error below 0.75: {worst_rel_small:.3e}");
    assert_eq!(activation::erf(0.0), 0.0);
    assert_eq!(activation::erf(f32::INFINITY), 1.0);
    assert_eq!(activation::erf(f32::NEG_INFINITY), -1.0);
    assert_eq!(activation::erf(-5.0), -1.0);
    assert!(activation::erf(f32::NAN).is_nan());
    // Odd symmetry, exactly.
    for x in [0.3f32, 0.75, 1.1, 2.7] {
        assert_eq!(activation::erf(-x), -activation::erf(x));
    }
}

#[test]
fn swiglu_gradients_and_values() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(61);
    let (n, h) = (5, 12);
    let inp = rand_vec(&mut rng, n * 2 * h, 3.0);
    let r = rand_vec(&mut rng, n * h, 1.0);
    let mut out = vec![0.0; n * h];
    activation::swiglu_forward(&mut out, &inp, h);
    let want: Vec<f64> = (0..n * h)
        .map(|k| {
            let (row, i) = (k / h, k % h);
            let (g, u) = (inp[row * 2 * h + i] as f64, inp[row * 2 * h + h + i] as f64);
            g * sigmoid_ref(g) * u
        })
        .collect();
    assert_close("swiglu out", &out, &want, 1e-6, 1e-7);
    let mut d = vec![f32::NAN; n * 2 * h]; // overwritten, not accumulated
    activation::swiglu_backward(&mut d, &inp, &r, h);
    check("swiglu dinp", &inp, &d, |x| {
        let mut out = vec![0.0; n * h];
        activation::swiglu_forward(&mut out, x, h);
        dot(&out, &r)
    });
    // More rows than one parallel task holds (4096 / h rows) must give the same per-row result.
    let (n, h) = (700, 8);
    let inp = rand_vec(&mut rng, n * 2 * h, 3.0);
    let mut out = vec![0.0; n * h];
    activation::swiglu_forward(&mut out, &inp, h);
    let mut row = vec![0.0; h];
    for k in [0, 511, 512, 699] {
        activation::swiglu_forward(&mut row, &inp[k * 2 * h..(k + 1) * 2 * h], h);
        assert_eq!(row[..], out[k * h..(k + 1) * h], "row {k}");
    }
}
