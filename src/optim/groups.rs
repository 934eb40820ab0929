//! Per-tensor optimizer settings: which tensors get weight decay and at what learning-rate
//! multiple they train (PyTorch's parameter groups).
//!
//! By default matrices are decayed, embedding tables only when `decay_embeddings` is on, and
//! biases and norm gains never (the GPT-2 / nanoGPT convention). `[[optim.groups]]` rules
//! override that per tensor; the first rule that matches a tensor wins.
//!
//! ```toml
//! [[optim.groups]]            # no decay and a smaller step for the embeddings
//! params = ["embedding"]      # a kind: matrix, embedding, bias, norm
//! weight_decay = 0.0
//! lr_scale = 0.5
//!
//! [[optim.groups]]
//! params = ["transformer.h.0.*", "*.attn.c_proj.weight"]   # or name patterns (`*` = anything)
//! lr_scale = 0.1
//! ```

use crate::model::{ParamKind, ParamLayout};
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// One parameter tensor's settings: its range in the flat buffer, the weight decay it gets and
/// the factor its learning rate is multiplied by.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorGroup {
    pub range: Range<usize>,
    pub weight_decay: f32,
    pub lr_scale: f32,
}

/// One `[[optim.groups]]` rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRule {
    /// Tensor kinds ("matrix", "embedding", "bias", "norm") or tensor-name patterns where `*`
    /// matches any run of characters.
    pub params: Vec<String>,
    /// Weight decay of the matched tensors; absent = the default decision for each tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f32>,
    /// Learning-rate multiplier of the matched tensors.
    #[serde(default = "one")]
    pub lr_scale: f32,
}

fn one() -> f32 {
    1.0
}

const KINDS: [(&str, ParamKind); 4] = [
    ("matrix", ParamKind::Matrix),
    ("embedding", ParamKind::Embedding),
    ("bias", ParamKind::Bias),
    ("norm", ParamKind::Norm),
];

pub use crate::util::glob_match;

impl GroupRule {
    /// Whether the rule applies to the tensor `name` of `kind`.
    pub fn matches(&self, name: &str, kind: ParamKind) -> bool {
        self.params.iter().any(|p| match KINDS.iter().find(|(k, _)| k == p) {
            Some((_, k)) => *k == kind,
            None => glob_match(p, name),
        })
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(!self.params.is_empty(), "an [[optim.groups]] rule needs a non-empty `params` list");
        ensure!(self.lr_scale >= 0.0 && self.lr_scale.is_finite(), "optim.groups lr_scale must be non-negative");
        if let Some(wd) = self.weight_decay {
            ensure!(wd >= 0.0 && wd.is_finite(), "optim.groups weight_decay must be non-negative");
        }
        Ok(())
    }
}

/// Default groups: every trainable tensor in layout order, decay on matrices (and embeddings
/// if `decay_embeddings`), learning-rate multiplier 1. `Buffer` tensors are left out, so the
/// optimizers never touch them.
pub fn default_groups(layout: &ParamLayout, weight_decay: f32, decay_embeddings: bool) -> Vec<TensorGroup> {
    resolve_groups(layout, weight_decay, decay_embeddings, &[]).expect("no rules, nothing to fail")
}

/// The groups after applying `rules` (first match wins). A rule that matches no tensor is an
/// error, so a typo in a pattern does not silently change nothing.
pub fn resolve_groups(
    layout: &ParamLayout,
    weight_decay: f32,
    decay_embeddings: bool,
    rules: &[GroupRule],
) -> Result<Vec<TensorGroup>> {
    let mut used = vec![false; rules.len()];
    let mut groups = Vec::new();
    for t in layout.tensors.iter().filter(|t| t.kind != ParamKind::Buffer) {
        let decay = match t.kind {
            ParamKind::Matrix => true,
            ParamKind::Embedding => decay_embeddings,
            ParamKind::Bias | ParamKind::Norm | ParamKind::Buffer => false,
        };
        let mut g =
            TensorGroup { range: t.range(), weight_decay: if decay { weight_decay } else { 0.0 }, lr_scale: 1.0 };
        if let Some(i) = rules.iter().position(|r| r.matches(&t.name, t.kind)) {
            used[i] = true;
            g.weight_decay = rules[i].weight_decay.unwrap_or(g.weight_decay);
            g.lr_scale = rules[i].lr_scale;
        }
        groups.push(g);
    }
    if let Some(i) = used.iter().position(|u| !u) {
        bail!(
            "[[optim.groups]] rule {} (params = {:?}) matches no parameter tensor (kinds: matrix, embedding, bias, \
             norm; or a name pattern such as \"transformer.h.0.*\")",
            i + 1,
            rules[i].params
        );
    }
    Ok(groups)
}

/// The groups overlapping the chunk `lo..lo + len`, as (chunk-local range, weight decay, learning-rate
/// multiplier): a chunk that spans two tensors applies each one's settings to its own part.
/// `groups` restricted to the parameters `range`, renumbered from `range.start` (ZeRO-1: an
/// optimizer holding one slice of the flat buffer).
pub(crate) fn cut_groups(groups: &[TensorGroup], range: &Range<usize>) -> Vec<TensorGroup> {
    groups_in_chunk(groups, range.start, range.len())
        .map(|(r, weight_decay, lr_scale)| TensorGroup { range: r, weight_decay, lr_scale })
        .collect()
}

pub(crate) fn groups_in_chunk(
    groups: &[TensorGroup],
    lo: usize,
    len: usize,
) -> impl Iterator<Item = (Range<usize>, f32, f32)> + '_ {
    let hi = lo + len;
    let first = groups.partition_point(|g| g.range.end <= lo);
    groups[first..]
        .iter()
        .take_while(move |g| g.range.start < hi)
        .map(move |g| (g.range.start.max(lo) - lo..g.range.end.min(hi) - lo, g.weight_decay, g.lr_scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("a.*.w", "a.1.w"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("*.bias", "h.0.bias"));
        assert!(!glob_match("*.bias", "h.0.weight"));
        assert!(glob_match("h.*.attn.*", "h.10.attn.c_proj.weight"));
        assert!(!glob_match("h.*.attn.*", "h.10.mlp.c_fc.weight"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("exact", "exact") && !glob_match("exact", "exact2"));
    }

    #[test]
    fn rules_override_defaults_first_match_wins() {
        let mut l = ParamLayout::default();
        l.push("wte.weight", &[4, 2], ParamKind::Embedding);
        l.push("h.0.w", &[2, 2], ParamKind::Matrix);
        l.push("h.0.b", &[2], ParamKind::Bias);
        l.push("h.1.w", &[2, 2], ParamKind::Matrix);
        l.push("bn.running_mean", &[2], ParamKind::Buffer);
        let d = default_groups(&l, 0.1, false);
        assert_eq!(d.iter().map(|g| g.weight_decay).collect::<Vec<_>>(), [0.0, 0.1, 0.0, 0.1]);
        let rules = vec![
            GroupRule { params: vec!["h.1.*".into()], weight_decay: Some(0.5), lr_scale: 2.0 },
            GroupRule { params: vec!["matrix".into(), "embedding".into()], weight_decay: None, lr_scale: 0.5 },
        ];
        let g = resolve_groups(&l, 0.1, false, &rules).unwrap();
        let got: Vec<(f32, f32)> = g.iter().map(|g| (g.weight_decay, g.lr_scale)).collect();
        assert_eq!(got, [(0.0, 0.5), (0.1, 0.5), (0.0, 1.0), (0.5, 2.0)]);
        let bad = vec![GroupRule { params: vec!["h.9.*".into()], weight_decay: None, lr_scale: 1.0 }];
        let e = resolve_groups(&l, 0.1, false, &bad).unwrap_err().to_string();
        assert!(e.contains("matches no parameter") && e.contains("h.9.*"), "{e}");
    }

    #[test]
    fn every_optimizer_applies_the_group_settings() {
        use crate::optim::{
            AdagradConfig, AdamConfig, AdamWConfig, Optimizer, OptimizerConfig, RmsPropConfig, SgdConfig,
        };
        let mut l = ParamLayout::default();
        l.push("a.w", &[3, 3], ParamKind::Matrix);
        l.push("b.w", &[3, 3], ParamKind::Matrix);
        l.push("c.bias", &[3], ParamKind::Bias);
        let rules = vec![
            GroupRule { params: vec!["b.*".into()], weight_decay: None, lr_scale: 0.0 },
            GroupRule { params: vec!["bias".into()], weight_decay: Some(0.5), lr_scale: 1.0 },
        ];
        let configs = [
            OptimizerConfig::AdamW(AdamWConfig { weight_decay: 0.1, ..Default::default() }),
            OptimizerConfig::Adam(AdamConfig { weight_decay: 0.1, ..Default::default() }),
            OptimizerConfig::Sgd(SgdConfig { momentum: 0.9, weight_decay: 0.1, ..Default::default() }),
            OptimizerConfig::RmsProp(RmsPropConfig { weight_decay: 0.1, ..Default::default() }),
            OptimizerConfig::Adagrad(AdagradConfig { weight_decay: 0.1, ..Default::default() }),
        ];
        for c in configs {
            let p0: Vec<f32> = (0..l.total).map(|i| 0.5 + i as f32 * 0.01).collect();
            let g: Vec<f32> = (0..l.total).map(|i| if i < 18 { 0.3 } else { 0.0 }).collect();
            let mut p = p0.clone();
            let mut opt = Optimizer::with_groups(&c, &l, &rules).unwrap();
            opt.step(&mut p, &g, 0.1);
            assert!(p[..9] != p0[..9], "{c:?}: a.w must move");
            assert_eq!(p[9..18], p0[9..18], "{c:?}: lr_scale 0 freezes b.w");
            // The bias has zero gradient: only its weight decay (0.5 from the rule) moves it.
            assert!(p[18..].iter().zip(&p0[18..]).all(|(a, b)| a < b), "{c:?}: the rule's decay applies");
            let mut plain = p0.clone();
            Optimizer::new(&c, &l).step(&mut plain, &g, 0.1);
            assert_eq!(plain[18..], p0[18..], "{c:?}: by default biases are not decayed");
        }
    }
}
