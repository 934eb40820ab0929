//! `lmlab answer`: extractive question answering with a QA checkpoint (`data.task = "qa"`):
//! one question about a context file, or every question of a SQuAD file into the official
//! predictions JSON that `lmlab eval squad` scores.

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lmlab::eval::squad::{read_squad_file, select_articles};
use lmlab::infer::qa_span::QaModel;
use lmlab::util::thread_pool;
use std::collections::BTreeMap;
use std::path::PathBuf;

// The subcommand's description is the doc comment of `Cmd::Answer` in main.rs.
#[derive(Args)]
pub struct AnswerArgs {
    /// A checkpoint of a QA run (data.task = "qa"): its model, tokenizer and window settings.
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// The context: a UTF-8 text file (its whole text, as one SQuAD paragraph).
    #[arg(long, value_name = "FILE", requires = "question", conflicts_with = "data")]
    context: Option<PathBuf>,
    /// The question about --context.
    #[arg(long, value_name = "TEXT", requires = "context")]
    question: Option<String>,
    /// Answers to print (best first).
    #[arg(long, default_value_t = 1)]
    top_k: usize,
    /// Batch mode: every question of a SQuAD v1.1-format JSON file.
    #[arg(long, value_name = "SQUAD.json", requires = "output")]
    data: Option<PathBuf>,
    /// Batch mode: write {question id: answer text} here (atomically).
    #[arg(long, value_name = "PREDICTIONS.json", requires = "data")]
    output: Option<PathBuf>,
    /// Batch mode: only these articles of --data, by index in file order: A..B (B excluded,
    /// e.g. 40..48) or a list 3,7,41.
    #[arg(long, value_name = "SPEC", requires = "data")]
    articles: Option<String>,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// JSON output: the answers (text, character start and end, score), or the batch summary.
    #[arg(long)]
    json: bool,
}

pub fn run(a: AnswerArgs) -> Result<()> {
    if a.top_k == 0 || a.batch == 0 {
        bail!("--top-k and --batch must be positive");
    }
    thread_pool(a.threads)?.install(|| {
        let mut qa = QaModel::load(&a.checkpoint, a.batch)?;
        match (&a.context, &a.question, &a.data, &a.output) {
            (Some(ctx), Some(q), None, None) => {
                let context =
                    std::fs::read_to_string(ctx).with_context(|| format!("cannot read context {}", ctx.display()))?;
                let answers = qa.answer_all(&[(q.as_str(), context.as_str())], a.top_k, |_| {})?.remove(0);
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "answers": answers }))?);
                } else if answers.is_empty() {
                    println!("(no answer: no valid span in the context)");
                }
                for ans in answers.iter().filter(|_| !a.json) {
                    println!("{}\t(characters {}..{}, score {:.3})", ans.text, ans.start, ans.end, ans.score);
                }
                Ok(())
            }
            (None, None, Some(data), Some(output)) => {
                let mut questions = read_squad_file(data)?;
                if let Some(spec) = &a.articles {
                    questions = select_articles(questions, spec)?;
                }
                let pairs: Vec<(&str, &str)> =
                    questions.iter().map(|q| (q.question.as_str(), q.context.as_str())).collect();
                let windows = qa.windows(&pairs)?.len();
                let bar = if a.json { ProgressBar::hidden() } else { ProgressBar::new(windows as u64) };
                bar.set_style(
                    ProgressStyle::with_template("{bar:40} {pos}/{len} windows {elapsed_precise} (eta {eta})")
                        .expect("valid template"),
                );
                let t0 = std::time::Instant::now();
                let answers = qa.answer_all(&pairs, 1, |n| bar.inc(n as u64))?;
                bar.finish_and_clear();
                let preds: BTreeMap<&str, String> = questions
                    .iter()
                    .zip(answers)
                    .map(|(q, a)| (q.id.as_str(), a.into_iter().next().map(|a| a.text).unwrap_or_default()))
                    .collect();
                lmlab::io::atomic::write_file_atomic(output, serde_json::to_string_pretty(&preds)?.as_bytes())?;
                let secs = t0.elapsed().as_secs_f64();
                if a.json {
                    let v = serde_json::json!({"questions": preds.len(), "windows": windows, "seconds": secs,
                        "output": output});
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!(
                        "answered {} questions ({windows} windows) in {secs:.1} s; predictions in {}",
                        preds.len(),
                        output.display()
                    );
                }
                Ok(())
            }
            _ => bail!("give --context FILE --question TEXT, or --data SQUAD.json --output PREDICTIONS.json"),
        }
    })
}
