//! Summarization: an encoder-decoder checkpoint's summaries (greedy or beam search, the
//! translation decoder of [`crate::infer::translate`]) and the extractive baselines of the
//! DialogSum paper (Chen et al., 2021).
//!
//! Baselines pick utterances ([`crate::data::summarize::utterances`]: `\n`-separated turns,
//! trimmed, speaker tag kept) and join them with one space, in dialogue order:
//! - LEAD-3: the first three utterances.
//! - LONGEST-3: the three longest utterances, length in whitespace-separated words (speaker tag
//!   included; ties go to the earlier one).
//!
//! A dialogue of three utterances or fewer is its own summary under both.

use crate::data::summarize::utterances;
use crate::infer::translate::{translate_lines, DecodeOptions};
use crate::io::checkpoint::{self, Checkpoint};
use crate::model::transformer::Arch;
use anyhow::Result;
use std::path::Path;

/// An extractive baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// The first three utterances.
    Lead3,
    /// The three longest utterances, in dialogue order.
    Longest3,
}

impl Baseline {
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Lead3 => "LEAD-3",
            Baseline::Longest3 => "LONGEST-3",
        }
    }

    /// The baseline's summary of `dialogue`.
    pub fn summarize(self, dialogue: &str) -> String {
        match self {
            Baseline::Lead3 => lead(dialogue, 3),
            Baseline::Longest3 => longest(dialogue, 3),
        }
    }
}

/// The first `k` utterances of `dialogue`, joined by spaces.
pub fn lead(dialogue: &str, k: usize) -> String {
    utterances(dialogue).into_iter().take(k).collect::<Vec<_>>().join(" ")
}

/// The `k` longest utterances of `dialogue` (in words; the earlier one on a tie), joined by
/// spaces in dialogue order.
pub fn longest(dialogue: &str, k: usize) -> String {
    let utts = utterances(dialogue);
    let mut by_length: Vec<usize> = (0..utts.len()).collect();
    // Stable sort: equal lengths keep dialogue order, so the earlier utterance wins a tie.
    by_length.sort_by_key(|&i| std::cmp::Reverse(utts[i].split_whitespace().count()));
    let mut chosen = by_length[..k.min(utts.len())].to_vec();
    chosen.sort_unstable();
    chosen.iter().map(|&i| utts[i]).collect::<Vec<_>>().join(" ")
}

/// An encoder-decoder checkpoint loaded to summarize texts.
pub struct Summarizer {
    pub ck: Checkpoint,
}

impl Summarizer {
    /// Loads the encoder-decoder checkpoint `dir`, decoding `batch` rows (texts × beam) at once.
    pub fn load(dir: &Path, batch: usize) -> Result<Self> {
        let ck = checkpoint::load_inference(dir, batch)?;
        ck.require_arch(Arch::EncoderDecoder, dir, "summarize")?;
        Ok(Summarizer { ck })
    }

    /// Longest source the model was trained on (`data.max_src_len`, else `max_len`, at most
    /// block_size): longer sources are cut to it, as in training.
    pub fn max_src_len(&self) -> usize {
        let d = &self.ck.run_config.data;
        let trained = if d.task.is_seq2seq() { d.src_len() } else { usize::MAX };
        trained.min(self.ck.model.config.block_size)
    }

    /// Longest target the model was trained on (`data.max_tgt_len`, else `max_len`).
    pub fn max_tgt_len(&self) -> usize {
        self.ck.run_config.data.tgt_len()
    }

    /// Summaries of `sources`, in order; `on_progress(done)` after each batch.
    pub fn summarize(
        &mut self,
        sources: &[String],
        opts: &DecodeOptions,
        on_progress: impl FnMut(usize),
    ) -> Result<Vec<String>> {
        let max_src = self.max_src_len();
        translate_lines(&mut self.ck.model, &self.ck.tokenizer, sources, opts, max_src, on_progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_on_a_short_dialogue() {
        let d = "#Person1#: Hi.\n#Person2#: Hello, how are you today?\n#Person1#: Fine.\n#Person2#: Good to hear that.";
        assert_eq!(lead(d, 3), "#Person1#: Hi. #Person2#: Hello, how are you today? #Person1#: Fine.");
        assert_eq!(longest(d, 3), "#Person1#: Hi. #Person2#: Hello, how are you today? #Person2#: Good to hear that.");
        assert_eq!(longest("#A#: x", 3), "#A#: x");
    }
}
