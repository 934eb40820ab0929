//! The quick demo: find Tiny Shakespeare (or make a corpus), train a small GPT for about a
//! minute, print samples and the validation loss.

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

pub fn cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("lmlab");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/lmlab"),
        None => std::env::temp_dir().join("lmlab-cache"),
    }
}

/// Finds the demo corpus: `--data`, `$LMLAB_DATA` (a file, or a directory holding
/// tinyshakespeare.txt), the cache, `../shared/data/`, a download, or a generated corpus.
pub fn find_data(given: Option<&Path>, allow_download: bool) -> Result<DataSource> {
    if let Some(p) = given {
        anyhow::ensure!(p.is_file(), "--data {} is not a file", p.display());
        return Ok(DataSource::Given(p.to_path_buf()));
    }
    if let Some(v) = std::env::var_os("LMLAB_DATA").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        let p = if p.is_dir() { p.join(FILE_NAME) } else { p };
        anyhow::ensure!(
            p.is_file(),
            "$LMLAB_DATA points to {}, which is not a file",
            p.display()
        );
        return Ok(DataSource::EnvVar(p));
    }
    let cached = cache_dir().join(FILE_NAME);
    if cached.is_file() {
        return Ok(DataSource::Cache(cached));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for base in [
        Path::new(".."),
        Path::new("."),
        manifest.parent().unwrap_or(manifest),
    ] {
        let p = base.join("shared/data").join(FILE_NAME);
        if p.is_file() {
            return Ok(DataSource::SharedData(p));
        }
    }
    if allow_download && download(TINY_SHAKESPEARE_URL, &cached) {
        return Ok(DataSource::Downloaded(cached));
    }
    let p = cache_dir().join("generated-corpus.txt");
    std::fs::create_dir_all(cache_dir())?;
    std::fs::write(&p, generated_corpus(300_000, 1))?;
    Ok(DataSource::Generated(p))
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
    let valid = ok
        && std::fs::read(&tmp)
            .map(|b| b.len() > 100_000 && std::str::from_utf8(&b).is_ok())
            .unwrap_or(false);
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
    const SPEAKERS: &[&str] = &[
        "KING",
        "QUEEN",
        "HAMLET",
        "JULIET",
        "ROMEO",
        "FIRST CITIZEN",
        "NURSE",
        "DUKE",
    ];
    const SUBJECTS: &[&str] = &[
        "the king",
        "my lord",
        "this night",
        "the crown",
        "her love",
        "the sea",
        "our state",
        "thy heart",
    ];
    const VERBS: &[&str] = &[
        "doth keep",
        "shall see",
        "hath lost",
        "will find",
        "must leave",
        "did swear",
        "may bring",
    ];
    const OBJECTS: &[&str] = &[
        "the truth",
        "a sword",
        "his word",
        "the light",
        "no peace",
        "the gate",
        "my soul",
        "all hope",
    ];
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
