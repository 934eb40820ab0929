//! Interpretability: what a trained model attends to, what each layer would predict, which
//! input tokens drove an output, and what each head is worth (`lmlab inspect ...`).
//!
//! Every function runs ordinary forward (and backward) passes of the model — nothing here
//! re-implements a layer — and reads the activations through the model's probes
//! (`Transformer::blocks`, `Transformer::activations`).
//!
//! - `attention`: every layer's and head's attention probabilities, and attention rollout.
//! - `lens`: the logit lens (final norm + unembedding applied after every layer).
//! - `attribution`: gradient × input and integrated gradients on the token embeddings.
//! - `ablation`: the change in loss when a head or a feed-forward layer is zero- or
//!   mean-ablated.
//! - `pca`: a 2-D principal-component projection of vectors (token or sentence
//!   representations).

pub mod ablation;
pub mod attention;
pub mod attribution;
pub mod lens;
pub mod pca;

use crate::data::Tokenizer;
use crate::model::transformer::{Arch, Transformer};
use anyhow::{ensure, Result};

/// A text as the model reads it: its token ids and each token's text.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub labels: Vec<String>,
}

impl Tokens {
    /// `text` encoded with `tok`, at most `max_len` tokens (the model's context); an empty
    /// text or one longer than the context is an error naming the lengths.
    pub fn encode(tok: &Tokenizer, text: &str, max_len: usize) -> Result<Tokens> {
        let ids = tok.encode(text)?;
        ensure!(!ids.is_empty(), "the text is empty: there is nothing to inspect");
        ensure!(
            ids.len() <= max_len,
            "the text is {} tokens long, but the model's context (block_size) is {max_len}",
            ids.len()
        );
        let labels = ids.iter().map(|&id| tok.decode(&[id]).unwrap_or_else(|_| format!("<{id}>"))).collect();
        Ok(Tokens { ids, labels })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// One forward pass without targets over a single sequence: `src` feeds the encoder of an
/// encoder-decoder (whose decoder reads `tokens`); for the other architectures `src` must be
/// None. Probes read its activations afterwards.
pub(crate) fn forward(model: &mut Transformer, tokens: &[u32], src: Option<&[u32]>) -> Result<()> {
    let t = tokens.len();
    match (model.config.arch, src) {
        (Arch::Decoder, None) => model.forward_lm(tokens, None, 1, t, false, 0).map(|_| ()),
        (Arch::Encoder, None) => model.forward_classify(tokens, None, None, 1, t, false, 0).map(|_| ()),
        (Arch::EncoderDecoder, Some(s)) => {
            model.forward_seq2seq(s, None, tokens, None, 1, s.len(), t, false, 0).map(|_| ())
        }
        (Arch::EncoderDecoder, None) => anyhow::bail!("an encoder-decoder model needs a source text (--source)"),
        (Arch::Lstm | Arch::Gru | Arch::Cnn, None) => unreachable!("a Transformer has a Transformer arch"),
        (_, Some(_)) => anyhow::bail!("a source text (--source) is only for encoder-decoder models"),
    }
}

/// One forward pass over a single sequence of a decoder or encoder (no targets), for the
/// probes; an encoder-decoder is an error (it needs a source: use the commands that take one).
pub fn forward_tokens(model: &mut Transformer, tokens: &[u32]) -> Result<()> {
    forward(model, tokens, None)
}
