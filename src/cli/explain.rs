//! `lmlab explain` (the questions and their experiments) and `lmlab report` (their results in
//! one HTML page). The experiments themselves: `lmlab::explain`.

use anyhow::Result;
use clap::{Args, Subcommand};
use lmlab::explain::{self, Budget, QUESTIONS};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ExplainCmd {
    /// Print the questions, each with its experiment's id (or why it is pending).
    List {
        /// One JSON object per question.
        #[arg(long)]
        json: bool,
    },
    /// Run one experiment (an id or a question number from `explain list`, or `all`): writes
    /// OUT/ID/result.json, its charts (PNG and SVG) and its findings.
    Run {
        id: String,
        /// quick: every experiment in about ten minutes on two cores; full: the publishable
        /// numbers (several seeds where differences are small).
        #[arg(long, value_enum, default_value = "quick")]
        budget: Budget,
        /// Results directory (one subdirectory per experiment).
        #[arg(long, default_value = "explain")]
        out: PathBuf,
        /// Threads of every training run (0: all cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Print the result.json instead of the findings.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ExplainCmd) -> Result<()> {
    match cmd {
        ExplainCmd::List { json } => {
            for q in QUESTIONS {
                if json {
                    let j = serde_json::json!({"number": q.number, "id": q.id, "question": q.title,
                        "status": if q.experiment.is_some() { "ready" } else { "pending" }, "pending": q.pending});
                    println!("{j}");
                } else {
                    println!("{:>2}. {:<11} {}", q.number, q.id, q.title);
                    if let Some(why) = q.pending {
                        println!("    {:<11} pending: {why}", "");
                    }
                }
            }
            Ok(())
        }
        ExplainCmd::Run { id, budget, out, threads, json } => {
            let ids: Vec<&str> = if id == "all" {
                QUESTIONS.iter().filter(|q| q.experiment.is_some()).map(|q| q.id).collect()
            } else {
                vec![id.as_str()]
            };
            let pool = lmlab::util::thread_pool(threads)?;
            for id in ids {
                let r = pool.install(|| explain::run(id, budget, &out, !json, threads))?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!("{}. {}", r.question, r.title);
                    for f in &r.findings {
                        println!("  - {f}");
                    }
                    println!("  wrote {}", out.join(&r.id).join("result.json").display());
                }
            }
            Ok(())
        }
    }
}

// The subcommand's description is the doc comment of `Cmd::Report` in main.rs.
#[derive(Args)]
pub struct ReportArgs {
    /// The results directory of `lmlab explain run`.
    #[arg(long, default_value = "explain")]
    dir: PathBuf,
    /// The HTML file to write.
    #[arg(long, default_value = "report.html")]
    out: PathBuf,
}

pub fn report(a: ReportArgs) -> Result<()> {
    let s = explain::write_report(&a.dir, &a.out)?;
    println!(
        "wrote {} ({} questions answered, {} pending, {} charts)",
        a.out.display(),
        s.answered,
        s.pending,
        s.charts
    );
    Ok(())
}
