//! `lmlab eval fairness ...`: group metrics of a classifier's predictions, CrowS-Pairs for a
//! decoder checkpoint, WEAT/SEAT on sentence embeddings. The measures live in
//! `lmlab::eval::fairness`; docs/FAIRNESS.md says what each means and when it misleads.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use lmlab::eval::fairness::{crows_pairs, groups, weat};
use lmlab::eval::files::{read_items, CsvTable};
use lmlab::infer::embed::{default_model_dir, Embedder};
use lmlab::io::checkpoint;
use lmlab::model::transformer::Arch;
use lmlab::util::thread_pool;
use std::path::{Path, PathBuf};

/// Where CrowS-Pairs is looked for without --data (under the shared data directory).
const CROWS_PAIRS: &str = "crows-pairs/crows_pairs_anonymized.csv";

#[derive(Subcommand)]
pub enum FairnessCmd {
    /// A classifier's accuracy, precision, recall and F1 per group, demographic parity
    /// difference and ratio, equalized-odds difference (fairlearn's definitions).
    Groups {
        /// Gold labels, one per line (or JSONL with --field).
        #[arg(long)]
        gold: PathBuf,
        /// Predicted labels, aligned with --gold.
        #[arg(long)]
        pred: PathBuf,
        /// The group of each item, one per line (or JSONL with --field, or a CSV file with a
        /// header, its column --group-column).
        #[arg(long)]
        groups: PathBuf,
        /// The column of --groups holding the group when it is a .csv file.
        #[arg(long, default_value = "group")]
        group_column: String,
        /// The positive class (the "selected" outcome); other labels are negatives.
        #[arg(long, default_value = "1")]
        positive: String,
        /// JSONL field holding the label or group.
        #[arg(long, default_value = "label")]
        field: String,
        #[arg(long)]
        json: bool,
    },
    /// CrowS-Pairs: how often a causal LM gives the more stereotypical sentence of a pair the
    /// higher log-likelihood (lm-evaluation-harness's crows_pairs scoring), or a masked LM the
    /// higher pseudo-log-likelihood of the tokens the two share (Nangia et al.'s metric.py),
    /// overall and per bias type.
    CrowsPairs {
        /// Checkpoint directory of a decoder (a causal LM) or a masked LM.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The CrowS-Pairs CSV (default: crows-pairs/crows_pairs_anonymized.csv of the shared
        /// data directory, $LMLAB_DATA or ../shared/data).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Score only the first N pairs.
        #[arg(long)]
        limit: Option<usize>,
        /// Leave out (and count) pairs the model cannot score: characters its tokenizer lacks,
        /// sentences longer than its context. Without it such a pair is an error.
        #[arg(long)]
        skip_unscorable: bool,
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// JSON with every pair's log-likelihoods.
        #[arg(long)]
        json: bool,
    },
    /// WEAT / SEAT: effect size and permutation p-value of Caliskan et al.'s association tests
    /// on sentence embeddings (weatN: the words; seatN: template sentences of them).
    Weat {
        /// weat1, weat2, weat6 … weat10, seat1 … seat10, or all.
        #[arg(long, default_value = "all")]
        test: String,
        /// Sentence-embedding model directory (default: all-MiniLM-L6-v2 as `lmlab embed`
        /// finds it).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Random partitions for the p-value when there are more partitions than this
        /// (otherwise every partition is counted: an exact p-value).
        #[arg(long, default_value_t = 100_000)]
        permutations: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
}

/// The group column: a CSV's named column, else one item per line.
fn read_groups(path: &Path, column: &str, field: &str) -> Result<Vec<String>> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
        CsvTable::read(path)?.column(column)
    } else {
        read_items(path, field)
    }
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Logits a CrowS-Pairs pass may hold (16M floats, 64 MB).
const MLM_LOGITS: usize = 1 << 24;

pub fn run(cmd: FairnessCmd) -> Result<()> {
    match cmd {
        FairnessCmd::Groups { gold, pred, groups: group_file, group_column, positive, field, json } => {
            let g = read_items(&gold, &field)?;
            let p = read_items(&pred, &field)?;
            let k = read_groups(&group_file, &group_column, &field)?;
            let r = groups::group_metrics(&refs(&g), &refs(&p), &refs(&k), &positive).with_context(|| {
                format!("--gold {} --pred {} --groups {}", gold.display(), pred.display(), group_file.display())
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r.to_json())?);
            } else {
                print!("{}", r.to_text());
            }
            Ok(())
        }
        FairnessCmd::CrowsPairs { checkpoint: dir, data, limit, skip_unscorable, threads, json } => {
            let data = match data {
                Some(d) => d,
                None => lmlab::data::parallel::shared_data_file(CROWS_PAIRS).with_context(|| {
                    format!("{CROWS_PAIRS} not found under $LMLAB_DATA or ../shared/data: pass --data FILE")
                })?,
            };
            let mut pairs = crows_pairs::read_pairs(&data)?;
            if let Some(n) = limit {
                pairs.truncate(n);
            }
            thread_pool(threads)?.install(|| {
                // A masked LM scores a sentence once per shared token: several masked copies per
                // pass, as many as keep the logits (B, T, V) within 64 MB.
                let mc = checkpoint::read_model_config(&dir)?;
                let batch = (MLM_LOGITS / (mc.block_size * mc.vocab_size).max(1)).clamp(1, 16);
                let mut ck = checkpoint::load_inference(&dir, batch)?;
                let r = if ck.model.is_masked_lm() {
                    crows_pairs::score_pairs_mlm(&mut ck.model, &ck.tokenizer, &pairs, skip_unscorable, batch)
                } else if ck.model.config.arch == Arch::Decoder {
                    crows_pairs::score_pairs(&mut ck.model, &ck.tokenizer, &pairs, skip_unscorable)
                } else {
                    bail!(
                        "{} is neither a causal language model nor a masked LM (model.arch = {:?} with the {:?} \
                         head): CrowS-Pairs scores sentences by their (pseudo-)likelihood",
                        dir.display(),
                        ck.model.config.arch,
                        ck.model.config.encoder_head
                    );
                };
                let r = r.with_context(|| format!("scoring {} with {}", data.display(), dir.display()))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    print!("{}", r.to_text());
                }
                Ok(())
            })
        }
        FairnessCmd::Weat { test, model, permutations, seed, threads, json } => {
            let chosen: Vec<(weat::WeatTest, weat::Unit)> = if test == "all" {
                weat::test_names().iter().map(|n| weat::find_test(n)).collect::<Result<_>>()?
            } else {
                vec![weat::find_test(&test)?]
            };
            let dir = model.unwrap_or_else(default_model_dir);
            thread_pool(threads)?.install(|| {
                let mut embedder = Embedder::load(&dir, 8)
                    .with_context(|| format!("loading the sentence-embedding model {}", dir.display()))?;
                let mut embed = |texts: &[String]| embedder.embed(texts);
                let mut out = Vec::new();
                for (t, unit) in &chosen {
                    let r = weat::run_test(t, *unit, &mut embed, permutations, seed)?;
                    let name = match unit {
                        weat::Unit::Word => t.name.clone(),
                        weat::Unit::Sentence => t.name.replace("weat", "seat"),
                    };
                    if !json {
                        println!(
                            "{name:<7} {:<60} d = {:>7.4}  p = {:<8.6} ({} {})",
                            format!("{} vs {}, {} vs {}", t.x.name, t.y.name, t.a.name, t.b.name),
                            r.effect_size,
                            r.p_value,
                            if r.exact { "exact over" } else { "estimated from" },
                            if r.exact {
                                format!("{} partitions", r.partitions)
                            } else {
                                format!("{} permutations", r.partitions)
                            }
                        );
                    }
                    out.push(serde_json::json!({"test": name, "title": t.title, "unit": unit,
                        "sets": [&t.x.name, &t.y.name, &t.a.name, &t.b.name], "result": r}));
                }
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({"model": dir, "seed": seed, "tests": out}))?
                    );
                }
                Ok(())
            })
        }
    }
}
