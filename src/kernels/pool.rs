//! Pooling: one vector per sequence from its token vectors, over the positions a padding mask
//! keeps. The classifier head pools the encoder's output before its linear layer (trained, in
//! f32); a sentence embedding is the pooled last hidden state (inference, sums in f64 as
//! `infer::embed` has always computed them, to stay close to sentence-transformers).

/// How the token vectors of a sequence become one vector (sentence-transformers' `Pooling`
/// modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolingMode {
    /// The first token's vector (`[CLS]`); the mask is not read.
    Cls,
    /// The mean over the kept tokens.
    Mean,
    /// The element-wise maximum over the kept tokens.
    Max,
    /// The sum over the kept tokens divided by √(their count).
    MeanSqrtLen,
}

/// The number type the sums of [`PoolingMode::Mean`] and [`PoolingMode::MeanSqrtLen`] run in,
/// and how a sum becomes the result.
pub trait PoolSum: Copy + From<f32> + std::ops::Add<Output = Self> {
    /// sum / divisor, as f32.
    fn divide(sum: Self, divisor: f64) -> f32;
}

/// The classifier head's arithmetic: sum · (1/divisor) in f32.
impl PoolSum for f32 {
    fn divide(sum: f32, divisor: f64) -> f32 {
        sum * (1.0 / divisor as f32)
    }
}

/// Sentence embeddings' arithmetic: the sum in f64, divided, rounded once.
impl PoolSum for f64 {
    fn divide(sum: f64, divisor: f64) -> f32 {
        (sum / divisor) as f32
    }
}

/// What a sum over `count` tokens is divided by: the count, or its square root.
fn divisor(count: usize, mode: PoolingMode) -> f64 {
    match mode {
        PoolingMode::MeanSqrtLen => (count as f64).sqrt(),
        _ => count as f64,
    }
}

/// One pooling of token vectors h (B, T, C) into (B, C), over the positions where `mask`
/// (B, T) is true (every position without a mask).
#[derive(Clone, Copy, Debug)]
pub struct Pool<'a> {
    pub mode: PoolingMode,
    pub mask: Option<&'a [bool]>,
    pub b: usize,
    pub t: usize,
    pub c: usize,
}

impl Pool<'_> {
    /// Positions of row `bi` that the mask keeps, and their count (at least 1, so an empty
    /// row pools to zeros instead of dividing by zero).
    fn kept(&self, bi: usize) -> (impl Iterator<Item = usize> + Clone + '_, usize) {
        let (mask, t) = (self.mask, self.t);
        let live = (0..t).filter(move |&ti| mask.is_none_or(|m| m[bi * t + ti]));
        let count = live.clone().count().max(1);
        (live, count)
    }

    /// pooled (B, C) from h (B, T, C), with the sums in `S`. Each channel adds its tokens in
    /// position order.
    pub fn forward<S: PoolSum>(&self, pooled: &mut [f32], h: &[f32]) {
        let (t, c) = (self.t, self.c);
        for bi in 0..self.b {
            let out = &mut pooled[bi * c..(bi + 1) * c];
            let at = |ti: usize, j: usize| h[(bi * t + ti) * c + j];
            let (live, count) = self.kept(bi);
            match self.mode {
                PoolingMode::Cls => out.copy_from_slice(&h[bi * t * c..bi * t * c + c]),
                PoolingMode::Max => {
                    for (j, o) in out.iter_mut().enumerate() {
                        *o = live.clone().map(|ti| at(ti, j)).fold(f32::NEG_INFINITY, f32::max);
                    }
                }
                PoolingMode::Mean | PoolingMode::MeanSqrtLen => {
                    let div = divisor(count, self.mode);
                    for (j, o) in out.iter_mut().enumerate() {
                        let sum = live.clone().fold(S::from(0.0), |s, ti| s + S::from(at(ti, j)));
                        *o = S::divide(sum, div);
                    }
                }
            }
        }
    }

    /// d_h (B, T, C) = ∂L/∂h (overwritten) from d_pooled (B, C), for [`Pool::forward`] in f32
    /// over the same `h` (max pooling sends each channel's gradient to the first kept
    /// position holding its maximum).
    pub fn backward(&self, d_h: &mut [f32], d_pooled: &[f32], h: &[f32]) {
        let (t, c) = (self.t, self.c);
        d_h[..self.b * t * c].fill(0.0);
        for bi in 0..self.b {
            let dp = &d_pooled[bi * c..(bi + 1) * c];
            let row = |ti: usize| (bi * t + ti) * c;
            let (live, count) = self.kept(bi);
            match self.mode {
                PoolingMode::Cls => d_h[row(0)..row(0) + c].copy_from_slice(dp),
                PoolingMode::Max => {
                    for (j, &d) in dp.iter().enumerate() {
                        let max = live.clone().map(|ti| h[row(ti) + j]).fold(f32::NEG_INFINITY, f32::max);
                        if let Some(ti) = live.clone().find(|&ti| h[row(ti) + j] == max) {
                            d_h[row(ti) + j] = d;
                        }
                    }
                }
                PoolingMode::Mean | PoolingMode::MeanSqrtLen => {
                    let div = divisor(count, self.mode) as f32;
                    for ti in live {
                        let out = &mut d_h[row(ti)..row(ti) + c];
                        out.iter_mut().zip(dp).for_each(|(o, &d)| *o = d / div);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_modes_by_hand() {
        let t = [1.0f32, -2.0, 3.0, 4.0, 5.0, -6.0]; // three tokens of width 2
        let pool = |mode| {
            let mut out = vec![0.0; 2];
            Pool { mode, mask: None, b: 1, t: 3, c: 2 }.forward::<f64>(&mut out, &t);
            out
        };
        assert_eq!(pool(PoolingMode::Cls), vec![1.0, -2.0]);
        assert_eq!(pool(PoolingMode::Mean), vec![3.0, -4.0 / 3.0]);
        assert_eq!(pool(PoolingMode::Max), vec![5.0, 4.0]);
        let s = 3f32.sqrt();
        let got = pool(PoolingMode::MeanSqrtLen);
        assert!((got[0] - 9.0 / s).abs() < 1e-6 && (got[1] + 4.0 / s).abs() < 1e-6, "{got:?}");
    }
}
