//! How each task's part of the caller's `scratch` is cut up: the buffers of the score function
//! and position bias in use, and (backward) the partial sums of their parameter gradients.

use super::position_bias::BiasScratch;
use super::scores::ScoreScratch;
use super::{AttnDims, PositionBias, ScoreFn};

/// Cuts the next `n` elements off the front of `s`.
fn carve<'s>(s: &mut &'s mut [f32], n: usize) -> &'s mut [f32] {
    let (head, tail) = std::mem::take(s).split_at_mut(n);
    *s = tail;
    head
}

/// Per-task forward scratch, in this order: normalised keys (Tk, hs) and queries (Tq, hs) for
/// the cosine score; the bias of every relative position (Tq+Tk−1) for T5; the (Tq, 2k+1)
/// products of the queries with Shaw's keys, reused for the bucketed probabilities.
#[derive(Clone, Copy)]
pub(super) struct FwdScratch {
    kn: usize,
    qn: usize,
    rel: usize,
    shaw: usize,
}

/// One task's forward scratch, carved into its parts (see [`FwdScratch`]).
pub(super) struct FwdParts<'s> {
    pub kn: &'s mut [f32],
    pub qn: &'s mut [f32],
    pub rel: &'s mut [f32],
    pub shaw: &'s mut [f32],
}

impl FwdScratch {
    pub fn new(d: &AttnDims, score: &ScoreFn, pos: &PositionBias) -> Self {
        let cosine = matches!(score, ScoreFn::Cosine { .. });
        FwdScratch {
            kn: if cosine { d.tk * d.head_size } else { 0 },
            qn: if cosine { d.tq * d.head_size } else { 0 },
            rel: if matches!(pos, PositionBias::T5 { .. }) { d.n_rel() } else { 0 },
            shaw: match pos {
                PositionBias::Shaw { k, .. } => d.tq * (2 * k + 1),
                _ => 0,
            },
        }
    }

    pub fn per_task(&self) -> usize {
        self.kn + self.qn + self.rel + self.shaw
    }

    pub fn split<'s>(&self, mut s: &'s mut [f32]) -> FwdParts<'s> {
        let s = &mut s;
        FwdParts { kn: carve(s, self.kn), qn: carve(s, self.qn), rel: carve(s, self.rel), shaw: carve(s, self.shaw) }
    }
}

/// Per-task backward scratch (see [`BwdParts`], [`ScoreScratch`] and [`BiasScratch`] for what
/// each part holds).
#[derive(Clone, Copy)]
pub(super) struct BwdScratch {
    dp: usize,
    kn: usize,
    knorm: usize,
    qn: usize,
    qnorm: usize,
    tau: usize,
    add: usize,
    rel: usize,
    t5: usize,
    shaw: usize,
    keys: usize,
    vals: usize,
}

/// One task's backward scratch, carved into its parts.
pub(super) struct BwdParts<'s> {
    /// (Tq, Tk): dP, then dS, of the current head.
    pub dp: &'s mut [f32],
    pub score: ScoreScratch<'s>,
    pub bias: BiasScratch<'s>,
}

impl BwdScratch {
    pub fn new(d: &AttnDims, score: &ScoreFn, pos: &PositionBias) -> Self {
        let (tq, tk, hs, g) = (d.tq, d.tk, d.head_size, d.group());
        let cosine = matches!(score, ScoreFn::Cosine { .. });
        let additive = matches!(score, ScoreFn::Additive { .. });
        let (rel, t5) = match pos {
            PositionBias::T5 { num_buckets, .. } => (d.n_rel(), num_buckets * g),
            _ => (0, 0),
        };
        let (shaw, keys, vals) = match pos {
            PositionBias::Shaw { k, values, .. } => {
                let r = 2 * k + 1;
                (tq * r, r * hs, if values.is_some() { r * hs } else { 0 })
            }
            _ => (0, 0, 0),
        };
        let c = |on: bool, n: usize| if on { n } else { 0 };
        BwdScratch {
            dp: tq * tk,
            kn: c(cosine, tk * hs),
            knorm: c(cosine, tk),
            qn: c(cosine, tq * hs),
            qnorm: c(cosine, tq),
            tau: c(cosine, g),
            add: c(additive, g * hs),
            rel,
            t5,
            shaw,
            keys,
            vals,
        }
    }

    pub fn per_task(&self) -> usize {
        let l = self;
        l.dp + l.kn + l.knorm + l.qn + l.qnorm + l.tau + l.add + l.rel + l.t5 + l.shaw + l.keys + l.vals
    }

    pub fn split<'s>(&self, mut s: &'s mut [f32]) -> BwdParts<'s> {
        let s = &mut s;
        BwdParts {
            dp: carve(s, self.dp),
            score: ScoreScratch {
                kn: carve(s, self.kn),
                knorm: carve(s, self.knorm),
                qn: carve(s, self.qn),
                qnorm: carve(s, self.qnorm),
                tau: carve(s, self.tau),
                add: carve(s, self.add),
            },
            bias: BiasScratch {
                rel: carve(s, self.rel),
                t5: carve(s, self.t5),
                shaw: carve(s, self.shaw),
                keys: carve(s, self.keys),
                vals: carve(s, self.vals),
            },
        }
    }
}
