//! The quick demo: find Tiny Shakespeare (or make a corpus), train a small GPT for about a
//! minute, print samples and the validation loss.

use crate::config::RunConfig;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TINY_SHAKESPEARE_URL: &str =
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt";
const FILE_NAME: &str = "tinyshakespeare.txt";

/// Where the demo's text came from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    Given(PathBuf),
    EnvVar(PathBuf),
    Cache(PathBuf),
    SharedData(PathBuf),
    Downloaded(PathBuf),
    /// Written by [`generated_corpus`] because no copy could be found or fetched.
    Generated(PathBuf),
}

impl DataSource {
    pub fn path(&self) -> &Path {
        match self {
            DataSource::Given(p)
            | DataSource::EnvVar(p)
            | DataSource::Cache(p)
            | DataSource::SharedData(p)
            | DataSource::Downloaded(p)
            | DataSource::Generated(p) => p,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            DataSource::Given(p) => format!("Tiny Shakespeare from --data {}", p.display()),
            DataSource::EnvVar(p) => format!("Tiny Shakespeare from $LMLAB_DATA ({})", p.display()),
            DataSource::Cache(p) => format!("Tiny Shakespeare from the cache ({})", p.display()),
            DataSource::SharedData(p) => format!("Tiny Shakespeare from shared data ({})", p.display()),
            DataSource::Downloaded(p) => format!("Tiny Shakespeare downloaded to {}", p.display()),
            DataSource::Generated(p) => format!(
                "a generated corpus ({}): Tiny Shakespeare was not found and could not be downloaded",
                p.display()
            ),
        }
    }
}

/// The demo's run: the default config (a small character-level GPT) on the text file `data`
/// for `iters` steps, with the learning rate decaying over all of them and four evaluations.
pub fn run_config(data: &Path, iters: u64, out: &Path) -> RunConfig {
    let mut cfg = RunConfig::default();
    cfg.data.path = data.to_string_lossy().into_owned();
    cfg.train.out_dir = out.to_string_lossy().into_owned();
    cfg.train.max_iters = iters;
    cfg.optim.lr_decay_iters = iters;
    cfg.train.eval_interval = (iters / 4).max(1);
    cfg
}

pub fn cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("lmlab");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/lmlab"),
        None => std::env::temp_dir().join("lmlab-cache"),
    }
}

/// Where to look for the demo corpus, in order.
pub struct DataSearch {
    /// `--data`.
    pub given: Option<PathBuf>,
    /// `$LMLAB_DATA`: a file, or a directory holding tinyshakespeare.txt.
    pub env_data: Option<PathBuf>,
    /// The cache directory (downloads and generated corpora go here).
    pub cache: PathBuf,
    /// `shared/data/` directories to try.
    pub shared: Vec<PathBuf>,
    pub allow_download: bool,
}

impl DataSearch {
    /// The standard search: `--data`, `$LMLAB_DATA`, the cache, `../shared/data/` (relative to
    /// the working directory and to the source tree), then a download.
    pub fn standard(given: Option<&Path>, allow_download: bool) -> Self {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        DataSearch {
            given: given.map(Path::to_path_buf),
            env_data: std::env::var_os("LMLAB_DATA").filter(|v| !v.is_empty()).map(PathBuf::from),
            cache: cache_dir(),
            shared: vec![
                PathBuf::from("../shared/data"),
                PathBuf::from("shared/data"),
                manifest.join("../shared/data"),
            ],
            allow_download,
        }
    }

    /// Finds the corpus; falls back to a generated one when nothing else is available.
    pub fn find(&self) -> Result<DataSource> {
        if let Some(p) = &self.given {
            anyhow::ensure!(p.is_file(), "--data {} is not a file", p.display());
            return Ok(DataSource::Given(p.clone()));
        }
        if let Some(p) = &self.env_data {
            let p = if p.is_dir() { p.join(FILE_NAME) } else { p.clone() };
            anyhow::ensure!(p.is_file(), "$LMLAB_DATA points to {}, which is not a file", p.display());
            return Ok(DataSource::EnvVar(p));
        }
        let cached = self.cache.join(FILE_NAME);
        if cached.is_file() {
            return Ok(DataSource::Cache(cached));
        }
        if let Some(p) = self.shared.iter().map(|d| d.join(FILE_NAME)).find(|p| p.is_file()) {
            return Ok(DataSource::SharedData(p));
        }
        if self.allow_download && download(TINY_SHAKESPEARE_URL, &cached) {
            return Ok(DataSource::Downloaded(cached));
        }
        let p = self.cache.join("generated-corpus.txt");
        std::fs::create_dir_all(&self.cache)?;
        std::fs::write(&p, generated_corpus(300_000, 1))?;
        Ok(DataSource::Generated(p))
    }
}

/// Downloads with `curl` (15 s limit) into a temporary file renamed into place on success.
fn download(url: &str, dst: &Path) -> bool {
    let Some(dir) = dst.parent() else {
        return false;
    };
    if std::fs::create_dir_all(dir).is_err() {
        return false;
    }
    let tmp = dst.with_extension("part");
    let ok = Command::new("curl")
        .args(["-fsSL", "--max-time", "15", "-o"])
        .arg(&tmp)
        .arg(url)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let valid =
        ok && std::fs::read(&tmp).map(|b| b.len() > 100_000 && std::str::from_utf8(&b).is_ok()).unwrap_or(false);
    if valid && std::fs::rename(&tmp, dst).is_ok() {
        return true;
    }
    std::fs::remove_file(&tmp).ok();
    false
}

/// A play-like corpus from a small seeded grammar: speakers, short lines, punctuation. It has
/// enough structure for a character model to learn words and layout.
pub fn generated_corpus(bytes: usize, seed: u64) -> String {
    use rand::{seq::SliceRandom, Rng, SeedableRng};
    const SPEAKERS: &[&str] = &["KING", "QUEEN", "HAMLET", "JULIET", "ROMEO", "FIRST CITIZEN", "NURSE", "DUKE"];
    const SUBJECTS: &[&str] =
        &["the king", "my lord", "this night", "the crown", "her love", "the sea", "our state", "thy heart"];
    const VERBS: &[&str] =
        &["doth keep", "shall see", "hath lost", "will find", "must leave", "did swear", "may bring"];
    const OBJECTS: &[&str] =
        &["the truth", "a sword", "his word", "the light", "no peace", "the gate", "my soul", "all hope"];
    const ENDS: &[&str] = &[".", "!", "?", ";", ","];
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut s = String::with_capacity(bytes + 256);
    while s.len() < bytes {
        s.push_str(SPEAKERS.choose(&mut rng).unwrap());
        s.push_str(":\n");
        for _ in 0..rng.gen_range(1..4) {
            let mut line = format!(
                "{} {} {}",
                SUBJECTS.choose(&mut rng).unwrap(),
                VERBS.choose(&mut rng).unwrap(),
                OBJECTS.choose(&mut rng).unwrap()
            );
            line[..1].make_ascii_uppercase();
            s.push_str(&line);
            s.push_str(ENDS.choose(&mut rng).unwrap());
            s.push('\n');
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_order_and_generated_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        let mut search = DataSearch {
            given: None,
            env_data: None,
            cache: dir.path().join("cache"),
            shared: vec![dir.path().join("nowhere"), shared.clone()],
            allow_download: false,
        };
        // Nothing anywhere and no download: a generated corpus, written to the cache.
        let src = search.find().unwrap();
        assert!(matches!(src, DataSource::Generated(_)), "{src:?}");
        let text = std::fs::read_to_string(src.path()).unwrap();
        assert!(text.len() >= 300_000 && text.contains(":\n"));
        assert_eq!(text, generated_corpus(300_000, 1), "the generated corpus is deterministic");
        // A shared copy wins over generating.
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::write(shared.join(FILE_NAME), "x").unwrap();
        assert_eq!(search.find().unwrap(), DataSource::SharedData(shared.join(FILE_NAME)));
        // $LMLAB_DATA (a directory) wins over shared data; --data wins over everything.
        search.env_data = Some(shared.clone());
        assert_eq!(search.find().unwrap(), DataSource::EnvVar(shared.join(FILE_NAME)));
        search.given = Some(dir.path().join("missing.txt"));
        assert!(search.find().unwrap_err().to_string().contains("missing.txt"));
    }
}
