//! `lmlab serve`: an OpenAI-compatible HTTP server (completions, chat, embeddings, streaming)
//! with continuous batching. See docs/SERVING.md.
//!
//! ```text
//! HTTP clients ──► tokio + axum (routes.rs: check, encode, queue) ──► std mpsc ──► scheduler thread
//!                  ◄── JSON / server-sent events ◄── tokio mpsc (Event per token) ◄──┘ (scheduler.rs,
//!                                                                                     owns the model)
//! ```
//!
//! The async side never touches the model: handlers check a request ([`api`]), encode its
//! prompts and send one [`scheduler::Job`] per prompt; the scheduler thread runs every job in
//! one batch ([`scheduler::Scheduler`]) and sends each token back as it is made. Embeddings
//! run on the blocking pool, one request at a time.
pub mod api;
pub mod metrics;
pub mod routes;
pub mod scheduler;

use crate::data::Tokenizer;
use crate::infer::embed::Embedder;
use crate::model::transformer::Transformer;
use anyhow::{Context, Result};
use metrics::Metrics;
use routes::{AppState, EmbedModel, LmModel};
use scheduler::{BatchConfig, Scheduler};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A language model to serve, with its name.
pub struct ServedLm {
    pub name: String,
    pub model: Transformer,
    pub tokenizer: Tokenizer,
}

/// How the server runs.
pub struct ServeConfig {
    pub host: String,
    /// 0: any free port (the address is printed).
    pub port: u16,
    pub api_key: Option<String>,
    pub batch: BatchConfig,
    pub max_queue: usize,
    pub max_body_bytes: usize,
    /// After SIGTERM or SIGINT: how long in-flight requests may still run.
    pub shutdown_timeout: Duration,
}

/// Serves until SIGTERM or SIGINT: stops accepting connections, lets in-flight requests finish
/// (at most `shutdown_timeout`) and returns. `on_listen` gets the bound address.
pub fn serve(
    cfg: ServeConfig,
    lm: Option<ServedLm>,
    embed: Option<(String, Embedder)>,
    pool: rayon::ThreadPool,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<()> {
    anyhow::ensure!(lm.is_some() || embed.is_some(), "nothing to serve: give a checkpoint or an embedder");
    let metrics = Arc::new(Metrics::default());
    let pool = Arc::new(pool);
    let mut scheduler_thread = None;
    let lm = match lm {
        Some(ServedLm { name, model, tokenizer }) => {
            let (tx, rx) = std::sync::mpsc::channel();
            let handle = LmModel {
                name,
                tokenizer: tokenizer.clone(),
                block_size: model.config.block_size,
                max_batch: cfg.batch.max_batch,
                jobs: tx,
            };
            let sched = Scheduler::new(model, tokenizer, cfg.batch, rx, metrics.clone())?;
            let pool = pool.clone();
            let t = std::thread::Builder::new().name("lmlab-scheduler".into()).spawn(move || sched.run(&pool))?;
            scheduler_thread = Some(t);
            Some(handle)
        }
        None => None,
    };
    let state = Arc::new(AppState {
        lm,
        embed: embed.map(|(name, e)| EmbedModel { name, embedder: Mutex::new(e) }),
        metrics,
        api_key: cfg.api_key.clone(),
        max_queue: cfg.max_queue,
        pool,
        started: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let listener =
            tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        on_listen(listener.local_addr()?);
        let app = routes::router(state, cfg.max_body_bytes);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        let mut stop = stop_rx.clone();
        // After the signal, in-flight requests get `shutdown_timeout`; then the server stops.
        let deadline = async move {
            let _ = stop.wait_for(|&s| s).await;
            tokio::time::sleep(cfg.shutdown_timeout).await;
        };
        tokio::select! {
            r = server => r.context("the server failed")?,
            _ = deadline => eprintln!("shutdown: requests still running after {:?} were cut off", cfg.shutdown_timeout),
        }
        anyhow::Ok(())
    })?;
    // The runtime is gone, and with it every job sender: the scheduler finishes and stops.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Some(t) = scheduler_thread {
        let _ = t.join();
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("shutdown: no new connections; finishing the requests in flight");
}
