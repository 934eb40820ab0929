//! NLTK's Porter stemmer: `nltk.stem.porter.PorterStemmer()` in its default NLTK_EXTENSIONS mode,
//! the stemmer rouge-score's `use_stemmer=True` runs. NLTK's variant differs from Porter's 1980
//! paper and from Snowball's English stemmer (its table of irregular forms, `ies`/`ied` of
//! four-letter words, the `y` -> `i` condition, `alli`/`fulli`/`logi`, words of one or two
//! characters left alone), so the `nltk-porter` crate, a port of exactly that class, does the
//! work. tests/metrics_generation.rs checks it against NLTK on every distinct word of Tiny
//! Shakespeare plus words chosen for each rule.

use nltk_porter::{Mode, PorterStemmer};
use std::sync::OnceLock;

/// `PorterStemmer().stem(word)`: lowercases `word` (Unicode lowercase, as Python's `str.lower`)
/// and strips its suffixes. Words of one or two characters are only lowercased.
pub fn stem(word: &str) -> String {
    static STEMMER: OnceLock<PorterStemmer> = OnceLock::new();
    STEMMER.get_or_init(|| PorterStemmer::new(Mode::Nltk)).stem(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn porter_nltk_examples() {
        // NLTK's own mode-specific results (not the 1980 paper's, nor Snowball's).
        for (word, want) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("dying", "die"),
            ("skies", "sky"),
            ("happy", "happi"),
            ("enjoy", "enjoy"),
            ("generously", "gener"),
            ("Running", "run"),
            ("is", "is"),
        ] {
            assert_eq!(stem(word), want, "{word}");
        }
    }
}
