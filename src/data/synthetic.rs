//! Synthetic text with answers at known distances: multi-query associative recall (Ba et al.,
//! 2016; the "MQAR" of Arora et al., 2023), the classic probe of what a sequence model can
//! carry across a sequence.
//!
//! One example is one line of characters:
//!
//! ```text
//! k3a7x0q9m2 ........................ :a7m2k3
//! └ pairs ─┘ └── gap of g dots ──┘ └ queries ┘
//! ```
//!
//! `pairs` distinct keys (a–z), each followed by its value (0–9); a gap of `g` filler dots
//! (g uniform in 0..=max_gap); a colon; then `queries` of the keys again, in a random order,
//! each followed by its value. A query's value is the only predictable character of its line
//! besides the layout, and predicting it needs the pair seen `distance` characters earlier:
//! from the value in the pairs to the value in the queries. A model that cannot reach that far
//! (a CNN's receptive field, a recurrent state that forgets, a context window) guesses one
//! value in ten.
//!
//! The lines are written as an ordinary text file, so any language model trains on them with
//! `lmlab train` (character tokenizer); [`RecallExample::answers`] says where to look.

use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The shape of the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecallTask {
    /// Key–value pairs at the start of a line (distinct keys: at most 26).
    pub pairs: usize,
    /// Queries after the gap (at most `pairs`; each key is asked once).
    pub queries: usize,
    /// The longest gap of filler dots between the pairs and the queries.
    pub max_gap: usize,
}

/// One line of the task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecallExample {
    /// The line, ending in '\n' (ASCII: byte i is character i).
    pub text: String,
    /// Per query: (index in `text` of the value to predict, its distance in characters from
    /// the same value in the pairs).
    pub answers: Vec<(usize, usize)>,
}

impl RecallTask {
    pub fn validate(&self) -> Result<()> {
        ensure!((1..=26).contains(&self.pairs), "recall: pairs must be 1..=26 (distinct keys a–z), got {}", self.pairs);
        ensure!(
            (1..=self.pairs).contains(&self.queries),
            "recall: queries must be 1..=pairs ({}), got {}",
            self.pairs,
            self.queries
        );
        Ok(())
    }

    /// The longest line, newline included.
    pub fn max_len(&self) -> usize {
        2 * self.pairs + self.max_gap + 1 + 2 * self.queries + 1
    }

    /// A random line.
    pub fn example(&self, rng: &mut impl Rng) -> RecallExample {
        let mut keys: Vec<u8> = (b'a'..=b'z').collect();
        keys.shuffle(rng);
        keys.truncate(self.pairs);
        let values: Vec<u8> = (0..self.pairs).map(|_| b'0' + rng.gen_range(0..10u8)).collect();
        let mut text = Vec::with_capacity(self.max_len());
        for (k, v) in keys.iter().zip(&values) {
            text.extend([*k, *v]);
        }
        let gap = rng.gen_range(0..=self.max_gap);
        text.extend(std::iter::repeat_n(b'.', gap));
        text.push(b':');
        let mut asked: Vec<usize> = (0..self.pairs).collect();
        asked.shuffle(rng);
        let mut answers = Vec::with_capacity(self.queries);
        for &i in &asked[..self.queries] {
            text.extend([keys[i], values[i]]);
            let at = text.len() - 1;
            answers.push((at, at - (2 * i + 1)));
        }
        text.push(b'\n');
        RecallExample { text: String::from_utf8(text).expect("ASCII"), answers }
    }

    /// `lines` random lines from `seed`, one text.
    pub fn corpus(&self, lines: usize, seed: u64) -> String {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
        (0..lines).map(|_| self.example(&mut rng).text).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_is_the_value_of_its_key_at_the_stated_distance() {
        let task = RecallTask { pairs: 8, queries: 4, max_gap: 40 };
        task.validate().unwrap();
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        let mut gaps = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let ex = task.example(&mut rng);
            let b = ex.text.as_bytes();
            assert!(b.len() <= task.max_len() && *b.last().unwrap() == b'\n');
            let colon = ex.text.find(':').unwrap();
            gaps.insert(colon - 2 * task.pairs);
            assert_eq!(ex.answers.len(), 4);
            for &(at, d) in &ex.answers {
                let key = b[at - 1];
                assert!(key.is_ascii_lowercase() && b[at].is_ascii_digit() && at > colon);
                // The pair with that key, `d` characters back, holds the same value.
                assert_eq!(b[at - d - 1], key);
                assert_eq!(b[at - d], b[at]);
                assert_eq!(b[..2 * task.pairs].chunks(2).filter(|p| p[0] == key).count(), 1);
            }
        }
        // Gaps cover 0..=max_gap.
        assert_eq!(gaps.len(), 41);
        // Deterministic from the seed.
        assert_eq!(task.corpus(20, 7), task.corpus(20, 7));
        assert_ne!(task.corpus(20, 7), task.corpus(20, 8));
        assert!(RecallTask { pairs: 27, queries: 1, max_gap: 0 }.validate().is_err());
        assert!(RecallTask { pairs: 4, queries: 5, max_gap: 0 }.validate().is_err());
    }
}
