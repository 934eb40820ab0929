//! Branch-free `exp` and `tanh` that the compiler can vectorise.
//!
//! libm's `expf`/`tanhf` are scalar calls: profiling the training step showed a third of the
//! time inside `tanhf` (GELU) and `expm1f`. These versions use Cephes-style range reduction and a
//! degree-6 minimax polynomial; the relative error is within a few ulp of f32 (tested below).

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding and subtracting it rounds to the nearest integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x for finite x; saturates to 2^-126 below -87.3 and to ~e^88.7 above 88.7.
///
/// Written with min/max, multiply-adds and integer bit operations only (no float-to-int
/// conversion, no branches), so loops over it compile to straight AVX2 code.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    // t holds round(x·log2 e) in its low mantissa bits.
    let t = x.mul_add(LOG2E, ROUND_MAGIC);
    let n = t - ROUND_MAGIC;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 0.166_666_65);
    p = p.mul_add(r, 0.5);
    let y = (p * r).mul_add(r, r) + 1.0;
    // 2^n from the integer n = bits(t) - bits(MAGIC): exponent field n + 127.
    let n_int = t.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    y * f32::from_bits(n_int.wrapping_add(127) << 23)
}

/// tanh(x) = sign(x)·(1 - e)/(1 + e) with e = exp(-2|x|).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let e = exp(-2.0 * x.abs());
    let t = (1.0 - e) / (1.0 + e);
    t.copysign(x)
}

/// The eight partial sums of [`dot`], [`sum`] and friends, added pairwise in one fixed order.
#[inline(always)]
pub fn fold8(acc: [f32; 8]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Σ a·b with eight independent partial sums, so the loop compiles to vector FMAs (a plain
/// `sum()` is a serial chain the compiler may not reorder).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut s = fold8(acc);
    for (x, y) in ar.iter().zip(br) {
        s = x.mul_add(*y, s);
    }
    s
}

/// Σ x with eight independent partial sums, combined in a fixed order (vectorises like
/// [`dot`]; a plain `sum()` is a serial chain of dependent adds).
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let xc = x.chunks_exact(8);
    let rest = xc.remainder();
    for v in xc {
        for i in 0..8 {
            acc[i] += v[i];
        }
    }
    let mut s = fold8(acc);
    for v in rest {
        s += v;
    }
    s
}

/// Σ (x - mu)² in the same order as [`sum`].
#[inline(always)]
pub fn sum_sq_dev(x: &[f32], mu: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let xc = x.chunks_exact(8);
    let rest = xc.remainder();
    for v in xc {
        for i in 0..8 {
            let d = v[i] - mu;
            acc[i] = d.mul_add(d, acc[i]);
        }
    }
    let mut s = fold8(acc);
    for v in rest {
        let d = v - mu;
        s = d.mul_add(d, s);
    }
    s
}

/// y += alpha · x
#[inline(always)]
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = alpha.mul_add(*x, *y);
    }
}

/// In-place softmax of one row (attention rows, sampling).
#[inline(always)]
pub fn softmax_inplace(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for x in row.iter_mut() {
        *x = exp(*x - max);
    }
    let inv = 1.0 / sum(row);
    row.iter_mut().for_each(|x| *x *= inv);
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_and_tanh_match_libm() {
        let mut worst_exp = 0.0f64;
        let mut worst_tanh = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            worst_exp = worst_exp.max((super::exp(x) as f64 - want).abs() / want);
            x += 0.0137;
        }
        let mut x = -12.0f32;
        while x < 12.0 {
            let want = (x as f64).tanh();
            // Absolute error: tanh's result feeds 1 + tanh in GELU.
            worst_tanh = worst_tanh.max((super::tanh(x) as f64 - want).abs());
            x += 0.000_37;
        }
        assert!(worst_exp < 4e-7, "exp relative error {worst_exp:e}");
        assert!(worst_tanh < 3e-7, "tanh absolute error {worst_tanh:e}");
        assert_eq!(super::tanh(0.0), 0.0);
        assert_eq!(super::exp(0.0), 1.0);
    }

    #[test]
    fn dot_and_axpy() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.01).collect();
        let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((super::dot(&a, &b) as f64 - want).abs() < 1e-3);
        let mut y = b.clone();
        super::axpy(&mut y, 2.0, &a);
        assert!(y.iter().zip(&a).zip(&b).all(|((y, a), b)| (y - (b + 2.0 * a)).abs() < 1e-5));
    }
}
