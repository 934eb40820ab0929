//! `lmlab serve`: an OpenAI-compatible HTTP server for a decoder checkpoint (and/or a
//! sentence-embedding model), with continuous batching. See docs/SERVING.md.

use anyhow::{Context, Result};
use clap::Args;
use lmlab::infer::embed_driver::open_embedder;
use lmlab::io::checkpoint;
use lmlab::model::transformer::Arch;
use lmlab::serve::scheduler::BatchConfig;
use lmlab::serve::{serve, ServeConfig, ServedLm};
use lmlab::util::thread_pool;
use std::path::{Path, PathBuf};
use std::time::Duration;

// The subcommand's description is the doc comment of `Cmd::Serve` in main.rs.
#[derive(Args)]
pub struct ServeArgs {
    /// Decoder checkpoint directory (also one made by `lmlab import --llama2c`, `--hf` or a GGUF file).
    #[arg(long, required_unless_present = "embedder")]
    checkpoint: Option<PathBuf>,
    /// Sentence-embedding model directory for /v1/embeddings (all-MiniLM-L6-v2: scripts/fetch_minilm.sh).
    #[arg(long, value_name = "DIR")]
    embedder: Option<PathBuf>,
    /// The model id clients name (default: the checkpoint directory's name).
    #[arg(long)]
    model_name: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 = any free port (the address is printed on standard error).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/ requests (default: $LMLAB_API_KEY if set).
    #[arg(long)]
    api_key: Option<String>,
    /// Sequences generated at once (KV cache rows).
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Prompts that may wait for a free row; past it, requests get 429.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Prompt tokens one prompt advances by per step (chunked prefill).
    #[arg(long, default_value_t = 64)]
    prefill_chunk: usize,
    /// Padded prompt positions per prefill pass (prompts × longest chunk).
    #[arg(long, default_value_t = 256)]
    prefill_tokens: usize,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Seconds in-flight requests may run after SIGTERM.
    #[arg(long, default_value_t = 30.0)]
    shutdown_timeout: f64,
    /// Worker threads of the kernels (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: ServeArgs) -> Result<()> {
    anyhow::ensure!(a.max_batch >= 1, "--max-batch must be at least 1");
    anyhow::ensure!(a.prefill_chunk >= 1, "--prefill-chunk must be at least 1");
    anyhow::ensure!(a.shutdown_timeout >= 0.0, "--shutdown-timeout must be >= 0");
    let pool = thread_pool(a.threads)?;
    let lm = match &a.checkpoint {
        Some(dir) => {
            let ck = checkpoint::load_inference(dir, a.max_batch)?;
            ck.require_arch(Arch::Decoder, dir, "serve")?;
            let name = a.model_name.clone().unwrap_or_else(|| dir_name(dir));
            Some(ServedLm { name, model: ck.model, tokenizer: ck.tokenizer })
        }
        None => None,
    };
    let embed = match &a.embedder {
        Some(dir) => {
            let e = pool.install(|| open_embedder(Some(dir.clone()), 8))?;
            Some((dir_name(dir.parent().filter(|_| dir.ends_with("model")).unwrap_or(dir)), e))
        }
        None => None,
    };
    let cfg = ServeConfig {
        host: a.host,
        port: a.port,
        api_key: a.api_key.or_else(|| std::env::var("LMLAB_API_KEY").ok()).filter(|k| !k.is_empty()),
        batch: BatchConfig { max_batch: a.max_batch, prefill_chunk: a.prefill_chunk, prefill_tokens: a.prefill_tokens },
        max_queue: a.max_queue,
        max_body_bytes: a.max_body_bytes,
        shutdown_timeout: Duration::from_secs_f64(a.shutdown_timeout),
    };
    serve(cfg, lm, embed, pool, |addr| eprintln!("lmlab serve: listening on http://{addr}")).context("lmlab serve")
}

/// A directory's last component as a model id.
fn dir_name(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
}
