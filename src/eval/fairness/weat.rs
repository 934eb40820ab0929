//! Embedding association tests: WEAT (Caliskan, Bryson and Narayanan, 2017) on embeddings of
//! words, and SEAT (May et al., 2019), the same test on embeddings of the words put into
//! semantically bleached sentences. For target sets X, Y and attribute sets A, B:
//!
//! ```text
//! s(w, A, B)   = mean_{a∈A} cos(w, a) − mean_{b∈B} cos(w, b)
//! statistic    = Σ_{x∈X} s(x, A, B) − Σ_{y∈Y} s(y, A, B)
//! effect size  = (mean_{x∈X} s(x, A, B) − mean_{y∈Y} s(y, A, B)) / std_{w∈X∪Y} s(w, A, B)
//!                (sample standard deviation, ddof = 1, as May et al.'s SEAT code computes it)
//! p-value      = P_i[statistic(X_i, Y_i) > statistic(X, Y)] over the partitions of X∪Y into
//!                sets of sizes |X| and |Y| (one-sided)
//! ```
//!
//! The p-value is exact (every partition, the observed one included) when there are at most
//! `permutations` partitions; otherwise it is estimated from `permutations` random partitions
//! (seeded Fisher–Yates shuffles). A partition's statistic counts as greater only when it
//! exceeds the observed one by more than [`TIE_TOLERANCE`], so the observed partition itself,
//! summed in another order, never counts. Cosines are computed in f64 from the f32 embeddings.
//!
//! The test sets ([`standard_tests`]) are Caliskan et al.'s WEAT 1, 2 and 6–10
//! (`weat_tests.json`, with its citation); SEAT's sentences come from [`seat_sentences`].

use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

/// How much larger than the observed statistic a partition's must be to count as greater.
pub const TIE_TOLERANCE: f64 = 1e-10;

/// A named set of words.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct WordSet {
    pub name: String,
    pub words: Vec<String>,
}

/// One test: targets X, Y and attributes A, B.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct WeatTest {
    pub name: String,
    pub title: String,
    pub x: WordSet,
    pub y: WordSet,
    pub a: WordSet,
    pub b: WordSet,
}

#[derive(Deserialize)]
struct TestFile {
    tests: Vec<WeatTest>,
}

/// Caliskan et al.'s WEAT 1, 2, 6, 7, 8, 9, 10 (`weat_tests.json`).
pub fn standard_tests() -> Vec<WeatTest> {
    let f: TestFile =
        serde_json::from_str(include_str!("weat_tests.json")).expect("weat_tests.json is valid (tests check it)");
    f.tests
}

/// The test names `--test` accepts: `weatN` (words) and `seatN` (template sentences) for every
/// standard test.
pub fn test_names() -> Vec<String> {
    let tests = standard_tests();
    let weat = tests.iter().map(|t| t.name.clone());
    let seat = tests.iter().map(|t| t.name.replace("weat", "seat"));
    weat.chain(seat).collect()
}

/// Whether a test runs on words or on template sentences.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Word,
    Sentence,
}

/// The test `name` (`weatN` or `seatN`), or an error listing the names there are.
pub fn find_test(name: &str) -> Result<(WeatTest, Unit)> {
    let lower = name.to_ascii_lowercase();
    let (unit, base) = match lower.strip_prefix("seat") {
        Some(n) => (Unit::Sentence, format!("weat{n}")),
        None => (Unit::Word, lower.clone()),
    };
    match standard_tests().into_iter().find(|t| t.name == base) {
        Some(t) => Ok((t, unit)),
        None => bail!("unknown test {name:?}; the tests are: {}, or all", test_names().join(", ")),
    }
}

/// SEAT's bleached templates (after May et al. 2019, reduced to six): for a capitalised word (a
/// name) "This is W.", "That is W.", "There is W.", "Here is W.", "W is here.", "W is there.";
/// otherwise "This is a(n) W.", "That is a(n) W.", "There is a(n) W.", "Here is a(n) W.",
/// "The W is here.", "The W is there." ("an" before a vowel letter).
pub fn seat_sentences(word: &str) -> Vec<String> {
    if word.chars().next().is_some_and(char::is_uppercase) {
        return ["This is {}.", "That is {}.", "There is {}.", "Here is {}.", "{} is here.", "{} is there."]
            .iter()
            .map(|t| t.replace("{}", word))
            .collect();
    }
    let art = if word.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    [
        format!("This is {art} {word}."),
        format!("That is {art} {word}."),
        format!("There is {art} {word}."),
        format!("Here is {art} {word}."),
        format!("The {word} is here."),
        format!("The {word} is there."),
    ]
    .into()
}

/// The texts a set contributes: its words (WEAT) or every template sentence of every word (SEAT).
pub fn set_texts(set: &WordSet, unit: Unit) -> Vec<String> {
    match unit {
        Unit::Word => set.words.clone(),
        Unit::Sentence => set.words.iter().flat_map(|w| seat_sentences(w)).collect(),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// s(w, A, B).
pub fn association(w: &[f32], a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let mean = |set: &[Vec<f32>]| set.iter().map(|v| cosine(w, v)).sum::<f64>() / set.len() as f64;
    mean(a) - mean(b)
}

/// The result of one test.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WeatResult {
    pub effect_size: f64,
    pub statistic: f64,
    pub p_value: f64,
    /// True when every partition was counted; false for a random-permutation estimate.
    pub exact: bool,
    /// Partitions counted (all of them, or the random ones).
    pub partitions: u64,
    pub sizes: [usize; 4],
}

/// C(n, k), saturating at u64::MAX.
pub fn binomial(n: usize, k: usize) -> u64 {
    let k = k.min(n - k.min(n));
    let mut c: u128 = 1;
    for i in 0..k {
        c = c * (n - i) as u128 / (i + 1) as u128;
        if c > u64::MAX as u128 {
            return u64::MAX;
        }
    }
    c as u64
}

/// Counts the k-subsets of `s` whose sum exceeds `threshold`.
fn count_subsets_above(s: &[f64], k: usize, threshold: f64) -> u64 {
    fn go(s: &[f64], start: usize, k: usize, sum: f64, threshold: f64) -> u64 {
        if k == 0 {
            return u64::from(sum > threshold);
        }
        (start..=s.len() - k).map(|i| go(s, i + 1, k - 1, sum + s[i], threshold)).sum()
    }
    go(s, 0, k, 0.0, threshold)
}

/// WEAT on embeddings of X, Y, A, B; the p-value from every partition when there are at most
/// `permutations`, else from `permutations` random ones drawn with `seed`.
pub fn weat(
    x: &[Vec<f32>],
    y: &[Vec<f32>],
    a: &[Vec<f32>],
    b: &[Vec<f32>],
    permutations: u64,
    seed: u64,
) -> Result<WeatResult> {
    for (name, set) in [("X", x), ("Y", y), ("A", a), ("B", b)] {
        ensure!(!set.is_empty(), "the set {name} is empty");
    }
    ensure!(x.len() + y.len() >= 3, "X and Y need 3 or more members together for a standard deviation");
    ensure!(permutations > 0, "the number of permutations must be positive");
    let s: Vec<f64> = x.iter().chain(y).map(|w| association(w, a, b)).collect();
    let (nx, n) = (x.len(), s.len());
    let sum_x: f64 = s[..nx].iter().sum();
    let total: f64 = s.iter().sum();
    let statistic = sum_x - (total - sum_x);
    let mean_x = sum_x / nx as f64;
    let mean_y = (total - sum_x) / (n - nx) as f64;
    let mean = total / n as f64;
    let var = s.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
    let effect_size = (mean_x - mean_y) / var.sqrt();
    // A partition X_i has statistic 2·Σ_{X_i} s − total: compare the sums.
    let threshold = (statistic + TIE_TOLERANCE + total) / 2.0;
    let all = binomial(n, nx);
    let (count, partitions, exact) = if all <= permutations {
        (count_subsets_above(&s, nx, threshold), all, true)
    } else {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..n).collect();
        let mut count = 0u64;
        for _ in 0..permutations {
            order.shuffle(&mut rng);
            let sum: f64 = order[..nx].iter().map(|&i| s[i]).sum();
            count += u64::from(sum > threshold);
        }
        (count, permutations, false)
    };
    Ok(WeatResult {
        effect_size,
        statistic,
        p_value: count as f64 / partitions as f64,
        exact,
        partitions,
        sizes: [x.len(), y.len(), a.len(), b.len()],
    })
}

/// Texts → one embedding each, in order.
pub type EmbedFn<'a> = dyn FnMut(&[String]) -> Result<Vec<Vec<f32>>> + 'a;

/// Runs `test` with `embed`.
pub fn run_test(
    test: &WeatTest,
    unit: Unit,
    embed: &mut EmbedFn<'_>,
    permutations: u64,
    seed: u64,
) -> Result<WeatResult> {
    let mut sets = Vec::new();
    for set in [&test.x, &test.y, &test.a, &test.b] {
        let texts = set_texts(set, unit);
        let e = embed(&texts).with_context(|| format!("embedding the set {:?} of {}", set.name, test.name))?;
        ensure!(e.len() == texts.len(), "{} texts gave {} embeddings", texts.len(), e.len());
        sets.push(e);
    }
    weat(&sets[0], &sets[1], &sets[2], &sets[3], permutations, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sets_and_names() {
        let tests = standard_tests();
        assert_eq!(tests.len(), 7);
        for t in &tests {
            for set in [&t.x, &t.y, &t.a, &t.b] {
                assert!(!set.words.is_empty(), "{} {}", t.name, set.name);
            }
            assert_eq!(t.x.words.len(), t.y.words.len(), "{}", t.name);
        }
        assert_eq!(find_test("SEAT7").unwrap().1, Unit::Sentence);
        let e = format!("{:#}", find_test("weat3").unwrap_err());
        assert!(e.contains("unknown test \"weat3\"") && e.contains("weat1, weat2, weat6"), "{e}");
        assert_eq!(seat_sentences("aster")[0], "This is an aster.");
        assert_eq!(seat_sentences("NASA")[4], "NASA is here.");
        assert_eq!(binomial(16, 8), 12870);
        assert_eq!(binomial(50, 25), 126_410_606_437_752);
    }

    #[test]
    fn hand_made_association() {
        // X points towards A, Y towards B: a large positive effect; the observed partition is
        // the most extreme of the C(4, 2) = 6, so none exceeds it and the exact p is 0.
        let v = |x: f32, y: f32| vec![x, y];
        let (x, y) = (vec![v(1.0, 0.1), v(1.0, 0.2)], vec![v(0.1, 1.0), v(0.2, 1.0)]);
        let (a, b) = (vec![v(1.0, 0.0)], vec![v(0.0, 1.0)]);
        let r = weat(&x, &y, &a, &b, 1000, 0).unwrap();
        assert!(r.effect_size > 1.5 && r.statistic > 0.0, "{r:?}");
        assert!(r.exact && r.partitions == 6 && r.p_value == 0.0, "{r:?}");
        // Swapping the targets flips the sign; every other partition is greater.
        let r = weat(&y, &x, &a, &b, 1000, 0).unwrap();
        assert!(r.effect_size < -1.5 && (r.p_value - 5.0 / 6.0).abs() < 1e-15, "{r:?}");
        assert!(weat(&x, &[], &a, &b, 10, 0).is_err());
    }
}
