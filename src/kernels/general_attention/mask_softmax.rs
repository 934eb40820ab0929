//! Step 3 of the kernel: the mask (causal rule and key padding) and the softmax over the keys
//! left visible, forward and backward side by side.

use super::{AttnDims, AttnMask};
use crate::kernels::math;

/// Softmax of every row of a (Tq, Tk) over its visible keys (batch element's `key_mask` row
/// `km`, if any); hidden keys get probability 0 and a row with no visible key is all zero.
pub(super) fn masked_softmax_forward(a: &mut [f32], km: Option<&[bool]>, d: &AttnDims, mask: &AttnMask) {
    let tk = d.tk;
    for i in 0..d.tq {
        let row = &mut a[i * tk..(i + 1) * tk];
        let (live, hidden) = row.split_at_mut(mask.key_end(i, tk));
        hidden.fill(0.0);
        let Some(km) = km else {
            math::softmax_inplace(live);
            continue;
        };
        let km = &km[..live.len()];
        let mut max = f32::NEG_INFINITY;
        let mut any = false;
        for (&s, &ok) in live.iter().zip(km) {
            if ok {
                max = max.max(s);
                any = true;
            }
        }
        if !any {
            live.fill(0.0);
            continue;
        }
        let mut sum = 0.0;
        for (s, &ok) in live.iter_mut().zip(km) {
            *s = if ok { math::exp(*s - max) } else { 0.0 };
            sum += *s;
        }
        let inv = 1.0 / sum;
        live.iter_mut().for_each(|s| *s *= inv);
    }
}

/// Backward of [`masked_softmax_forward`], in place on dp (Tq, Tk) given the probabilities p:
/// dS = P ⊙ (dP − Σ_j P·dP) per row; hidden keys get 0.
pub(super) fn masked_softmax_backward(dp: &mut [f32], p: &[f32], d: &AttnDims, mask: &AttnMask) {
    let tk = d.tk;
    for i in 0..d.tq {
        let end = mask.key_end(i, tk);
        let pr = &p[i * tk..i * tk + end];
        let row = &mut dp[i * tk..(i + 1) * tk];
        let dot = math::dot(pr, &row[..end]);
        for j in 0..end {
            row[j] = pr[j] * (row[j] - dot);
        }
        row[end..].fill(0.0);
    }
}
