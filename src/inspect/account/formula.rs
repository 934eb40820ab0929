//! The closed-form parameter count: a polynomial in the model's sizes whose value is the exact
//! count of [`super::params`].
//!
//! Symbols: L layers, d = n_embd, F = ffn_hidden (folded into d when F = 4·d), V vocabulary, T
//! block_size (learned positions), Y token types (BERT), K classes. GPT-2 reads
//! `L·(12·d² + 13·d) + V·d + T·d + 2·d`.

use super::Architecture;
use crate::model::transformer::{ActivationKind, Arch, EncoderHead, NormKind, Position, ScoreKind};
use serde::Serialize;

/// A closed form and its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Formula {
    /// In symbols: `L·(12·d² + 13·d) + V·d + T·d + 2·d`.
    pub symbolic: String,
    /// The same with the sizes substituted: `12·(12·768² + 13·768) + 50257·768 + …`.
    pub substituted: String,
    /// Its value.
    pub value: u128,
}

/// One monomial with a rational coefficient `num / den` (den = n_head, for grouped-query
/// attention's NKV/NH).
struct Term {
    num: i128,
    sym: &'static str,
    subst: String,
    value: u128,
}

fn gcd(a: i128, b: i128) -> i128 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

/// `terms` as a sum, each monomial written by `name` (its symbol or its substituted value).
fn render(terms: &[Term], den: i128, name: impl Fn(&Term) -> String) -> String {
    let parts: Vec<String> = terms
        .iter()
        .filter(|t| t.num != 0)
        .map(|t| {
            let g = gcd(t.num, den);
            let (n, d) = (t.num / g, den / g);
            let m = name(t);
            match (n, d, m.is_empty()) {
                (n, 1, true) => n.to_string(),
                (1, 1, false) => m,
                (n, 1, false) => format!("{n}·{m}"),
                (n, d, true) => format!("({n}/{d})"),
                (n, d, false) => format!("({n}/{d})·{m}"),
            }
        })
        .collect();
    parts.join(" + ")
}

/// Adds `num` to the term with symbol `sym` (or appends it).
fn add(terms: &mut Vec<Term>, num: i128, sym: &'static str, subst: String, value: u128) {
    match terms.iter_mut().find(|t| t.sym == sym) {
        Some(t) => t.num += num,
        None => terms.push(Term { num, sym, subst, value }),
    }
}

/// The closed form of `arch`'s parameter count, or why there is none (variants with
/// per-layer extras: Shaw and T5 positions, cosine and additive scores, heads narrower than d).
pub fn closed_form(arch: &Architecture) -> Result<Formula, String> {
    let m = &arch.model;
    if !m.heads_tile_embedding() {
        return Err("n_head · head_size ≠ n_embd (pruned heads): no closed form, see the per-tensor count".into());
    }
    if !matches!(m.score, ScoreKind::Scaled | ScoreKind::Unscaled)
        || matches!(m.position, Position::Shaw | Position::T5)
    {
        return Err(format!(
            "score {:?} with position {:?} adds per-layer parameters the closed form does not cover",
            m.score, m.position
        ));
    }
    let den = m.n_head as i128;
    let (nh, kv) = (m.n_head as i128, m.kv_heads() as i128);
    let (d, f, v, t, k) =
        (m.n_embd as u128, m.ffn() as u128, m.vocab_size as u128, m.block_size as u128, m.num_classes as u128);
    let four_d = f == 4 * d;
    let b = m.bias as i128;
    let norm_per = match m.norm {
        NormKind::None => 0,
        _ => den * (1 + (m.bias && m.norm != NormKind::Rmsnorm) as i128),
    };
    let gated = m.activation == ActivationKind::Swiglu;
    // (d², d·F, d, F) monomials; d·F and F fold into d² and d when F = 4·d.
    let d2 = |terms: &mut Vec<Term>, num: i128| add(terms, num, "d²", format!("{d}²"), d * d);
    let dd = |terms: &mut Vec<Term>, num: i128| add(terms, num, "d", format!("{d}"), d);
    let df = |terms: &mut Vec<Term>, num: i128| {
        if four_d {
            add(terms, 4 * num, "d²", format!("{d}²"), d * d)
        } else {
            add(terms, num, "d·F", format!("{d}·{f}"), d * f)
        }
    };
    let ff = |terms: &mut Vec<Term>, num: i128| {
        if four_d {
            add(terms, 4 * num, "d", format!("{d}"), d)
        } else {
            add(terms, num, "F", format!("{f}"), f)
        }
    };
    // One block: attention (q, k, v, output: (2·NH + 2·NKV)/NH · d² and as many bias elements),
    // an optional cross-attention of the same size, the feed-forward, 2 or 3 norms.
    let layer = |cross: bool| {
        let mut terms = Vec::new();
        let attentions = 1 + cross as i128;
        d2(&mut terms, attentions * (2 * nh + 2 * kv));
        df(&mut terms, den * if gated { 3 } else { 2 });
        dd(&mut terms, attentions * b * (2 * nh + 2 * kv) + b * den + (2 + cross as i128) * norm_per);
        ff(&mut terms, b * den * if gated { 2 } else { 1 });
        terms
    };
    let stacks: Vec<(&str, usize, bool)> = match m.arch {
        Arch::Decoder | Arch::Encoder | Arch::Lstm | Arch::Gru | Arch::Cnn => vec![("L", m.n_layer, false)],
        Arch::EncoderDecoder => vec![("L_enc", m.n_layer, false), ("L_dec", m.dec_layers(), true)],
    };
    let n_stacks = stacks.len() as i128;
    let mut outer = Vec::new();
    let tables = if m.arch == Arch::EncoderDecoder && !m.share_embeddings { 2 } else { 1 };
    add(&mut outer, tables * den, "V·d", format!("{v}·{d}"), v * d);
    if m.position == Position::Learned {
        add(&mut outer, n_stacks * den, "T·d", format!("{t}·{d}"), t * d);
    }
    if let Some(bert) = &arch.bert {
        let y = bert.type_vocab as u128;
        add(&mut outer, den, "Y·d", format!("{y}·{d}"), y * d);
    }
    let norms = n_stacks * (m.embedding_norm as i128 + m.final_norm as i128) * norm_per;
    add(&mut outer, norms, "d", format!("{d}"), d);
    match (m.arch, &arch.bert) {
        (Arch::Encoder, Some(_)) => {
            // BERT's pooler: a (d, d) dense layer with bias.
            add(&mut outer, den, "d²", format!("{d}²"), d * d);
            add(&mut outer, den, "d", format!("{d}"), d);
        }
        (Arch::Encoder, None) => match m.encoder_head {
            EncoderHead::Classifier => {
                add(&mut outer, den, "K·d", format!("{k}·{d}"), k * d);
                add(&mut outer, den, "K", format!("{k}"), k);
            }
            // qa_outputs: (2, d) and 2 biases.
            EncoderHead::Span => {
                add(&mut outer, 2 * den, "d", format!("{d}"), d);
                add(&mut outer, 2 * den, "", String::new(), 1);
            }
            // The masked-LM head: dense (d, d) + bias, a norm, the tied decoder's bias (V).
            EncoderHead::Mlm => {
                add(&mut outer, den, "d²", format!("{d}²"), d * d);
                add(&mut outer, b * den + norm_per, "d", format!("{d}"), d);
                add(&mut outer, den, "V", format!("{v}"), v);
            }
        },
        _ if !m.tie_embeddings => add(&mut outer, den, "V·d", format!("{v}·{d}"), v * d),
        _ => {}
    }
    outer.sort_by_key(|t| ["d²", "V·d", "T·d", "Y·d", "K·d", "d", "V", "K", ""].iter().position(|s| *s == t.sym));

    let sum = |terms: &[Term]| terms.iter().map(|t| t.num * t.value as i128).sum::<i128>();
    let mut symbolic = Vec::new();
    let mut substituted = Vec::new();
    let mut total = sum(&outer);
    for (sym, layers, cross) in &stacks {
        let terms = layer(*cross);
        symbolic.push(format!("{sym}·({})", render(&terms, den, |t| t.sym.to_string())));
        substituted.push(format!("{layers}·({})", render(&terms, den, |t| t.subst.clone())));
        total += *layers as i128 * sum(&terms);
    }
    symbolic.push(render(&outer, den, |t| t.sym.to_string()));
    substituted.push(render(&outer, den, |t| t.subst.clone()));
    assert!(total % den == 0, "the closed form's terms add up to whole parameters");
    Ok(Formula { symbolic: symbolic.join(" + "), substituted: substituted.join(" + "), value: (total / den) as u128 })
}
