//! Which weights a score prunes: the lowest `k` of a set (one matrix, one row, or all prunable
//! matrices together), or the lowest `m − n` of every group of `m` consecutive weights of a row
//! (N:M). Pure functions on slices; a mask is `true` where the weight is pruned.
//!
//! Ties are broken by position (the lower index is pruned first), which is what a stable sort
//! does (`torch.sort(stable=True)` in the reference Wanda code), so results never depend on the
//! sorting algorithm or the thread count.

use std::cmp::Ordering;

/// The total order used everywhere: by score, then by index.
fn by_score(scores: &[f64]) -> impl Fn(&usize, &usize) -> Ordering + '_ {
    move |&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b))
}

/// `k` = ⌊len · sparsity⌋, computed as Python's `int(len * sparsity)` does (f64 product,
/// truncated), so a fraction like 0.29 of 100 gives the same count as the reference.
pub fn count(len: usize, sparsity: f64) -> usize {
    ((len as f64 * sparsity) as usize).min(len)
}

/// Marks in `pruned` the `k` entries of `scores` with the lowest score (ties: lower index first).
/// Linear time (a selection, not a full sort).
pub fn lowest_k(scores: &[f64], k: usize, pruned: &mut [bool]) {
    debug_assert_eq!(scores.len(), pruned.len());
    let k = k.min(scores.len());
    if k == 0 {
        return;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, by_score(scores));
    }
    for &i in &idx[..k] {
        pruned[i] = true;
    }
}

/// Per row of a (rows, cols) score matrix: prunes the ⌊cols · sparsity⌋ lowest of each row
/// (Wanda's comparison group).
pub fn per_row(scores: &[f64], cols: usize, sparsity: f64) -> Vec<bool> {
    let mut pruned = vec![false; scores.len()];
    let k = count(cols, sparsity);
    for (s, p) in scores.chunks(cols).zip(pruned.chunks_mut(cols)) {
        lowest_k(s, k, p);
    }
    pruned
}

/// One set: prunes the ⌊len · sparsity⌋ lowest of all of `scores`.
pub fn per_set(scores: &[f64], sparsity: f64) -> Vec<bool> {
    let mut pruned = vec![false; scores.len()];
    lowest_k(scores, count(scores.len(), sparsity), &mut pruned);
    pruned
}

/// N:M on a (rows, cols) score matrix: in every group of `m` consecutive weights of a row
/// (columns g·m .. g·m + m), keeps the `n` highest and prunes the other `m − n`. `cols` must be
/// a multiple of `m` (checked by the caller).
pub fn n_of_m(scores: &[f64], cols: usize, n: usize, m: usize) -> Vec<bool> {
    debug_assert!(n < m && cols.is_multiple_of(m));
    let mut pruned = vec![false; scores.len()];
    for (s, p) in scores.chunks(cols).zip(pruned.chunks_mut(cols)) {
        for (sg, pg) in s.chunks(m).zip(p.chunks_mut(m)) {
            lowest_k(sg, m - n, pg);
        }
    }
    pruned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_prune_the_lower_index_first() {
        let mut p = vec![false; 5];
        lowest_k(&[1.0, 0.5, 0.5, 0.5, 2.0], 2, &mut p);
        assert_eq!(p, [false, true, true, false, false]);
    }

    #[test]
    fn counts_truncate_like_python() {
        assert_eq!(count(100, 0.29), 28); // 100 · 0.29 = 28.999999999999996
        assert_eq!(count(10, 0.7), 7);
        assert_eq!(count(10, 0.0), 0);
    }

    #[test]
    fn n_of_m_keeps_n_per_group() {
        let s: Vec<f64> = (0..16).map(|i| ((i * 7) % 16) as f64).collect();
        let p = n_of_m(&s, 8, 2, 4);
        for g in p.chunks(4) {
            assert_eq!(g.iter().filter(|x| !**x).count(), 2);
        }
    }
}
