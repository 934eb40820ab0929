//! The HTTP side: the routes, the API key check, the request metrics, and each endpoint's
//! handler, which checks the request, hands its prompts to the scheduler thread and turns the
//! scheduler's [`Event`]s into the OpenAI API's JSON (or server-sent events).

use crate::data::Tokenizer;
use crate::infer::embed::Embedder;
use crate::serve::api::{
    plain_chat_prompt, reject_unknown, ApiError, ChatRequest, Checked, CompletionRequest, EmbeddingRequest, Input,
    CHAT_STOP, MAX_LOGPROBS,
};
use crate::serve::metrics::Metrics;
use crate::serve::scheduler::{Event, Finish, Job, TokenLogprob};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// The web page at `/`.
const PAGE: &str = include_str!("page.html");

/// The language model the scheduler thread runs, as the handlers see it.
pub struct LmModel {
    /// The id `/v1/models` lists and responses name.
    pub name: String,
    pub tokenizer: Tokenizer,
    pub block_size: usize,
    pub max_batch: usize,
    pub jobs: std::sync::mpsc::Sender<Job>,
}

/// The sentence-embedding model; one request at a time runs it.
pub struct EmbedModel {
    pub name: String,
    pub embedder: Mutex<Embedder>,
}

/// What every handler shares.
pub struct AppState {
    pub lm: Option<LmModel>,
    pub embed: Option<EmbedModel>,
    pub metrics: Arc<Metrics>,
    pub api_key: Option<String>,
    /// Prompts that may wait for the scheduler; past it, 429.
    pub max_queue: usize,
    /// The worker threads the embedder's kernels run on.
    pub pool: Arc<rayon::ThreadPool>,
    /// Seconds since the Unix epoch when the server started (`created` of `/v1/models`).
    pub started: u64,
}

type Shared = Arc<AppState>;

/// Every route; request bodies larger than `max_body` bytes get 413.
pub fn router(state: Shared, max_body: usize) -> Router {
    let v1 = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .merge(v1)
        .route("/", get(page))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("Unknown URL: the API is under /v1 (see GET /v1/models).") })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// 401 unless the request carries `Authorization: Bearer KEY` (when the server has a key).
async fn require_key(State(st): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.api_key {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given.and_then(|v| v.strip_prefix("Bearer ")).map(str::trim) != Some(key.as_str()) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Counts each answered request by endpoint and status, and its duration: to the end of the
/// body for a stream, else to the response.
async fn track(State(st): State<Shared>, req: Request, next: Next) -> Response {
    const KNOWN: [&str; 7] =
        ["/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/", "/health", "/metrics"];
    let path = req.uri().path();
    let endpoint = KNOWN.iter().find(|&&k| k == path).copied().unwrap_or("other");
    let started = Instant::now();
    let resp = next.run(req).await;
    let done = Observed { metrics: st.metrics.clone(), endpoint, status: resp.status().as_u16(), started };
    let streaming =
        resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !streaming {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    // Observed when the body stream ends or is dropped (a client that left).
    let body = body.into_data_stream().map(move |chunk| {
        let _ = &done;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// Records a request in the metrics when dropped.
struct Observed {
    metrics: Arc<Metrics>,
    endpoint: &'static str,
    status: u16,
    started: Instant,
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.metrics.observe_request(self.endpoint, self.status, self.started.elapsed().as_secs_f64());
    }
}

/// A JSON body whose errors are the API's: 413 past the size limit, 400 for invalid JSON or
/// fields the request type does not have.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes =
            Bytes::from_request(req, state).await.map_err(|e| {
                let status = e.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::invalid(None, "The request body is larger than the server's limit (--max-body-bytes).")
                        .with(status, "invalid_request_error", Some("request_too_large"))
                } else {
                    ApiError::invalid(None, format!("cannot read the request body: {}", e.body_text()))
                }
            })?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            let msg = match e.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    format!("We could not parse the JSON body of your request: {e}")
                }
                _ => format!("Invalid request: {e}"),
            };
            ApiError::invalid(None, msg)
        })
    }
}

async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}

async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(st): State<Shared>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render())
}

async fn models(State(st): State<Shared>) -> impl IntoResponse {
    let names = st.lm.iter().map(|m| &m.name).chain(st.embed.iter().map(|e| &e.name));
    let data: Vec<Value> =
        names.map(|id| json!({"id": id, "object": "model", "created": st.started, "owned_by": "lmlab"})).collect();
    Json(json!({"object": "list", "data": data}))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn request_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}{:08x}", rand::random::<u64>(), rand::random::<u32>())
}

/// 404 when the request names a model this server does not serve.
fn check_model(given: &Option<String>, served: &str) -> Result<(), ApiError> {
    match given {
        Some(m) if m != served => Err(ApiError::not_found(format!(
            "The model `{m}` does not exist (this server serves `{served}`)."
        ))
        .with(StatusCode::NOT_FOUND, "invalid_request_error", Some("model_not_found"))),
        _ => Ok(()),
    }
}

impl AppState {
    fn lm(&self) -> Result<&LmModel, ApiError> {
        self.lm.as_ref().ok_or_else(|| {
            ApiError::not_found("This server has no language model (start it with --checkpoint).").with(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
            )
        })
    }
}

impl LmModel {
    /// The prompt's ids: 400 when empty, out of the vocabulary, or longer than the context.
    fn encode(&self, input: &Input, param: &'static str) -> Result<Vec<u32>, ApiError> {
        let ids = match input {
            Input::Text(s) => self.tokenizer.encode(s).map_err(|e| ApiError::invalid(Some(param), format!("{e:#}")))?,
            Input::Ids(ids) => ids.clone(),
        };
        let v = self.tokenizer.vocab_size();
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= v) {
            return Err(ApiError::invalid(Some(param), format!("token id {bad} is outside the vocabulary of {v}")));
        }
        if ids.is_empty() {
            return Err(ApiError::invalid(Some(param), "the prompt must contain at least one token"));
        }
        if ids.len() > self.block_size {
            return Err(ApiError::invalid(
                Some(param),
                format!(
                    "This model's maximum context length is {} tokens, however your prompt has {} tokens. \
                     Please reduce the length of the prompt.",
                    self.block_size,
                    ids.len()
                ),
            )
            .with(StatusCode::BAD_REQUEST, "invalid_request_error", Some("context_length_exceeded")));
        }
        Ok(ids)
    }
}

/// Sets its flag when dropped: the scheduler then frees the request's rows.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Queues one job per prompt (429 when the queue is full); prompt `i`'s choices are
/// `i·n ..`, sampled with seeds `seed + i·n ..`.
fn submit(
    st: &AppState,
    lm: &LmModel,
    prompts: &[Vec<u32>],
    c: &Checked,
    logprobs: Option<usize>,
) -> Result<(UnboundedReceiver<Event>, CancelOnDrop), ApiError> {
    if !st.metrics.try_enqueue(prompts.len(), st.max_queue) {
        return Err(ApiError::queue_full(st.max_queue));
    }
    let (tx, rx) = unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let arrived = Instant::now();
    for (i, p) in prompts.iter().enumerate() {
        let job = Job {
            prompt: p.clone(),
            n: c.n,
            first_choice: i * c.n,
            seed: c.seed.wrapping_add((i * c.n) as u64),
            opts: c.opts.clone(),
            logprobs,
            stop_at_eos: c.stop_at_eos,
            events: tx.clone(),
            cancel: cancel.clone(),
            arrived,
        };
        if lm.jobs.send(job).is_err() {
            st.metrics.dequeued(prompts.len() - i);
            return Err(ApiError::server("the scheduler has stopped").with(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                None,
            ));
        }
    }
    Ok((rx, CancelOnDrop(cancel)))
}

/// One choice's result, gathered from the events.
#[derive(Default)]
struct ChoiceOut {
    text: String,
    finish: Option<Finish>,
    tokens: usize,
    logprobs: Vec<TokenLogprob>,
}

/// Waits for every choice to finish.
async fn collect(mut rx: UnboundedReceiver<Event>, choices: usize) -> Result<Vec<ChoiceOut>, ApiError> {
    let mut out: Vec<ChoiceOut> = (0..choices).map(|_| ChoiceOut::default()).collect();
    let mut left = choices;
    while left > 0 {
        match rx.recv().await {
            Some(Event::Token { choice, text, logprob }) => {
                out[choice].text.push_str(&text);
                out[choice].logprobs.extend(logprob);
            }
            Some(Event::Done { choice, finish, tokens }) => {
                (out[choice].finish, out[choice].tokens) = (Some(finish), tokens);
                left -= 1;
            }
            Some(Event::Failed(msg)) => return Err(ApiError::server(msg)),
            None => return Err(ApiError::server("the scheduler stopped before the request finished")),
        }
    }
    Ok(out)
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// The legacy completions `logprobs` object of `lps`, text offsets from `offset`.
fn completion_logprobs(lps: &[TokenLogprob], offset: &mut usize) -> Value {
    let mut offsets = Vec::with_capacity(lps.len());
    for lp in lps {
        offsets.push(*offset);
        *offset += lp.token.len();
    }
    json!({
        "tokens": lps.iter().map(|l| &l.token).collect::<Vec<_>>(),
        "token_logprobs": lps.iter().map(|l| l.logprob).collect::<Vec<_>>(),
        "top_logprobs": lps.iter().map(|l| l.top.iter().map(|(t, p)| (t.clone(), json!(p))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

/// The chat `logprobs` object of `lps`.
fn chat_logprobs(lps: &[TokenLogprob]) -> Value {
    let entry = |t: &str, p: f32| json!({"token": t, "logprob": p, "bytes": t.as_bytes()});
    let content: Vec<Value> = lps
        .iter()
        .map(|l| {
            let mut e = entry(&l.token, l.logprob);
            e["top_logprobs"] = l.top.iter().map(|(t, p)| entry(t, *p)).collect();
            e
        })
        .collect();
    json!({"content": content})
}

/// What differs between the two generating endpoints' responses.
#[derive(Clone)]
enum Shape {
    /// `/v1/completions`; `echo`: each prompt's text, put before its choices' text.
    Completion { echo: Option<Vec<String>>, logprobs: bool },
    /// `/v1/chat/completions`.
    Chat { logprobs: bool },
}

/// Everything a response (whole or streamed) is made from.
struct Reply {
    id: String,
    created: u64,
    model: String,
    shape: Shape,
    /// Choices per prompt.
    n: usize,
    choices: usize,
    prompt_tokens: usize,
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (&self.shape, chunk) {
            (Shape::Completion { .. }, _) => "text_completion",
            (Shape::Chat { .. }, false) => "chat.completion",
            (Shape::Chat { .. }, true) => "chat.completion.chunk",
        }
    }

    fn echo(&self, choice: usize) -> &str {
        match &self.shape {
            Shape::Completion { echo: Some(texts), .. } => &texts[choice / self.n],
            _ => "",
        }
    }

    /// The non-streamed response.
    fn whole(&self, out: Vec<ChoiceOut>) -> Value {
        let completion_tokens: usize = out.iter().map(|c| c.tokens).sum();
        let choices: Vec<Value> = out
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let finish = c.finish.map(Finish::as_str);
                match &self.shape {
                    Shape::Completion { logprobs, .. } => {
                        let echo = self.echo(i);
                        let mut offset = echo.len();
                        let lp = logprobs.then(|| completion_logprobs(&c.logprobs, &mut offset));
                        json!({"index": i, "text": format!("{echo}{}", c.text), "logprobs": lp, "finish_reason": finish})
                    }
                    Shape::Chat { logprobs } => json!({
                        "index": i,
                        "message": {"role": "assistant", "content": c.text},
                        "logprobs": logprobs.then(|| chat_logprobs(&c.logprobs)),
                        "finish_reason": finish,
                    }),
                }
            })
            .collect();
        json!({
            "id": self.id, "object": self.object(false), "created": self.created, "model": self.model,
            "system_fingerprint": null, "choices": choices, "usage": usage(self.prompt_tokens, completion_tokens),
        })
    }

    /// One streamed chunk holding `choice`.
    fn chunk(&self, choice: Value) -> Value {
        let mut c = json!({"id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "choices": [choice]});
        if let Shape::Chat { .. } = self.shape {
            c["system_fingerprint"] = Value::Null;
        }
        c
    }

    /// The chunk of a generated piece of text of `choice`.
    fn text_chunk(&self, choice: usize, text: &str, lp: Option<&TokenLogprob>, offset: &mut usize) -> Value {
        let lps: Vec<TokenLogprob> = lp.into_iter().cloned().collect();
        match &self.shape {
            Shape::Completion { logprobs, .. } => {
                let lp = logprobs.then(|| completion_logprobs(&lps, offset));
                self.chunk(json!({"index": choice, "text": text, "logprobs": lp, "finish_reason": null}))
            }
            Shape::Chat { logprobs } => self.chunk(json!({
                "index": choice, "delta": {"content": text},
                "logprobs": logprobs.then(|| chat_logprobs(&lps)), "finish_reason": null,
            })),
        }
    }

    fn finish_chunk(&self, choice: usize, finish: Finish) -> Value {
        match &self.shape {
            Shape::Completion { .. } => {
                self.chunk(json!({"index": choice, "text": "", "logprobs": null, "finish_reason": finish.as_str()}))
            }
            Shape::Chat { .. } => {
                self.chunk(json!({"index": choice, "delta": {}, "logprobs": null, "finish_reason": finish.as_str()}))
            }
        }
    }

    /// The chunks sent before any token: the assistant role of each chat choice, the echoed
    /// prompt of each completion choice.
    fn opening(&self) -> Vec<Value> {
        (0..self.choices)
            .filter_map(|i| match &self.shape {
                Shape::Chat { .. } => Some(self.chunk(json!({
                    "index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null,
                }))),
                Shape::Completion { echo: Some(_), .. } => {
                    Some(self.chunk(json!({"index": i, "text": self.echo(i), "logprobs": null, "finish_reason": null})))
                }
                Shape::Completion { echo: None, .. } => None,
            })
            .collect()
    }
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// The response: whole JSON, or server-sent events as the OpenAI API sends them (`data: {json}`
/// per chunk, `data: [DONE]` last).
async fn respond(
    reply: Reply,
    rx: UnboundedReceiver<Event>,
    cancel: CancelOnDrop,
    stream: bool,
    include_usage: bool,
) -> Result<Response, ApiError> {
    if !stream {
        let out = collect(rx, reply.choices).await?;
        drop(cancel);
        return Ok(Json(reply.whole(out)).into_response());
    }
    struct St {
        reply: Reply,
        rx: UnboundedReceiver<Event>,
        _cancel: CancelOnDrop,
        left: usize,
        completion_tokens: usize,
        offsets: Vec<usize>,
        include_usage: bool,
        ended: bool,
    }
    let offsets = (0..reply.choices).map(|i| reply.echo(i).len()).collect();
    let opening: Vec<u8> = reply.opening().iter().flat_map(|c| sse(c).to_vec()).collect();
    let left = reply.choices;
    let st = St { reply, rx, _cancel: cancel, left, completion_tokens: 0, offsets, include_usage, ended: false };
    let events = futures_util::stream::unfold(st, |mut st| async move {
        if st.ended {
            return None;
        }
        let bytes = if st.left == 0 {
            st.ended = true;
            let mut b = Vec::new();
            if st.include_usage {
                let mut u = st.reply.chunk(json!(null));
                u["choices"] = json!([]);
                u["usage"] = usage(st.reply.prompt_tokens, st.completion_tokens);
                b.extend_from_slice(&sse(&u));
            }
            b.extend_from_slice(b"data: [DONE]\n\n");
            Bytes::from(b)
        } else {
            match st.rx.recv().await {
                Some(Event::Token { choice, text, logprob }) => {
                    let c = st.reply.text_chunk(choice, &text, logprob.as_ref(), &mut st.offsets[choice]);
                    sse(&c)
                }
                Some(Event::Done { choice, finish, tokens }) => {
                    st.left -= 1;
                    st.completion_tokens += tokens;
                    sse(&st.reply.finish_chunk(choice, finish))
                }
                Some(Event::Failed(msg)) => {
                    st.left = 0;
                    sse(&ApiError::server(msg).body())
                }
                None => {
                    st.left = 0;
                    sse(&ApiError::server("the scheduler stopped before the request finished").body())
                }
            }
        };
        Some((Ok::<_, std::convert::Infallible>(bytes), st))
    });
    let body = futures_util::stream::iter([Ok(Bytes::from(opening))]).chain(events);
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

async fn completions(State(st): State<Shared>, ApiJson(req): ApiJson<CompletionRequest>) -> Result<Response, ApiError> {
    reject_unknown(&req.unknown)?;
    let lm = st.lm()?;
    check_model(&req.model, &lm.name)?;
    let c = req.sampling.check(16, lm.max_batch)?;
    if req.best_of.is_some_and(|b| b != c.n) {
        return Err(ApiError::invalid(Some("best_of"), "best_of is not supported (only equal to n)"));
    }
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid(Some("suffix"), "suffix is not supported"));
    }
    let logprobs = req.logprobs;
    if let Some(k) = logprobs.filter(|&k| k > MAX_LOGPROBS) {
        return Err(ApiError::invalid(Some("logprobs"), format!("logprobs must be in 0..={MAX_LOGPROBS}, got {k}")));
    }
    let echo = req.echo.unwrap_or(false);
    if echo && logprobs.is_some() {
        return Err(ApiError::invalid(
            Some("echo"),
            "echo with logprobs (the prompt's log-probabilities) is not supported",
        ));
    }
    let inputs = req.prompt.into_list();
    if inputs.is_empty() {
        return Err(ApiError::invalid(Some("prompt"), "the prompt list is empty"));
    }
    let prompts = inputs.iter().map(|p| lm.encode(p, "prompt")).collect::<Result<Vec<_>, _>>()?;
    let echo = echo.then(|| {
        inputs
            .iter()
            .zip(&prompts)
            .map(|(input, ids)| match input {
                Input::Text(s) => s.clone(),
                Input::Ids(_) => lm.tokenizer.decode(ids).unwrap_or_default(),
            })
            .collect()
    });
    let (rx, cancel) = submit(&st, lm, &prompts, &c, logprobs)?;
    let reply = Reply {
        id: request_id("cmpl"),
        created: now(),
        model: lm.name.clone(),
        shape: Shape::Completion { echo, logprobs: logprobs.is_some() },
        n: c.n,
        choices: prompts.len() * c.n,
        prompt_tokens: prompts.iter().map(Vec::len).sum(),
    };
    respond(reply, rx, cancel, c.stream, c.include_usage).await
}

async fn chat(State(st): State<Shared>, ApiJson(req): ApiJson<ChatRequest>) -> Result<Response, ApiError> {
    reject_unknown(&req.unknown)?;
    let lm = st.lm()?;
    check_model(&req.model, &lm.name)?;
    let prompt = lm.encode(&Input::Text(plain_chat_prompt(&req.messages)?), "messages")?;
    // Without max_tokens: to the end of the context (at least 16 tokens).
    let mut sampling = req.sampling.clone();
    sampling.max_tokens = req.max_completion_tokens.or(sampling.max_tokens);
    let mut c = sampling.check(lm.block_size.saturating_sub(prompt.len()).max(16), lm.max_batch)?;
    if req.sampling.stop.is_none() {
        c.opts.stop = vec![CHAT_STOP.to_owned()];
    }
    let logprobs = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (_, Some(k)) if k > MAX_LOGPROBS => {
            return Err(ApiError::invalid(Some("top_logprobs"), format!("top_logprobs must be in 0..={MAX_LOGPROBS}")))
        }
        (false, Some(_)) => return Err(ApiError::invalid(Some("top_logprobs"), "top_logprobs needs logprobs: true")),
        (true, k) => Some(k.unwrap_or(0)),
        (false, None) => None,
    };
    let prompts = [prompt];
    let (rx, cancel) = submit(&st, lm, &prompts, &c, logprobs)?;
    let reply = Reply {
        id: request_id("chatcmpl"),
        created: now(),
        model: lm.name.clone(),
        shape: Shape::Chat { logprobs: logprobs.is_some() },
        n: c.n,
        choices: c.n,
        prompt_tokens: prompts[0].len(),
    };
    respond(reply, rx, cancel, c.stream, c.include_usage).await
}

async fn embeddings(State(st): State<Shared>, ApiJson(req): ApiJson<EmbeddingRequest>) -> Result<Response, ApiError> {
    let em = st.embed.as_ref().ok_or_else(|| {
        ApiError::not_found("This server has no embedding model (start it with --embedder DIR).").with(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
        )
    })?;
    check_model(&req.model, &em.name)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                Some("encoding_format"),
                format!("encoding_format must be float or base64, got {other:?}"),
            ))
        }
    };
    let inputs = req.input.into_list();
    if inputs.is_empty() {
        return Err(ApiError::invalid(Some("input"), "input must not be empty"));
    }
    let st2 = st.clone();
    let dims = req.dimensions;
    // The encoder runs on the worker threads, off the async runtime.
    let (vecs, tokens) = tokio::task::spawn_blocking(move || -> Result<(Vec<Vec<f32>>, usize), ApiError> {
        let em = st2.embed.as_ref().expect("checked above");
        let mut e = em.embedder.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = dims.filter(|&d| d != e.dim()) {
            return Err(ApiError::invalid(
                Some("dimensions"),
                format!("this model's embeddings have {} dimensions, not {d}", e.dim()),
            ));
        }
        let limit = e.model().config.block_size;
        let mut ids = Vec::with_capacity(inputs.len());
        for input in &inputs {
            let s = match input {
                Input::Text(t) => e.tokenize(t).map_err(|err| ApiError::invalid(Some("input"), format!("{err:#}")))?,
                Input::Ids(v) => v.clone(),
            };
            if s.is_empty() || s.len() > limit {
                return Err(ApiError::invalid(
                    Some("input"),
                    format!("an input has {} tokens, outside 1..={limit}", s.len()),
                ));
            }
            ids.push(s);
        }
        let tokens = ids.iter().map(Vec::len).sum();
        let e: &mut Embedder = &mut e;
        let vecs = st2.pool.install(|| e.embed_ids(&ids)).map_err(|err| ApiError::server(format!("{err:#}")))?;
        Ok((vecs, tokens))
    })
    .await
    .map_err(|e| ApiError::server(format!("the embedding task failed: {e}")))??;
    let data: Vec<Value> = vecs
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 { json!(base64_f32(v)) } else { json!(v) };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data, "model": em.name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
        .into_response())
}

/// Standard base64 (with padding) of the little-endian bytes of `v`: the OpenAI API's
/// `encoding_format: "base64"`.
fn base64_f32(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    crate::util::base64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        // 1.0f32 = 00 00 80 3f; base64.b64encode(struct.pack('<f', 1.0)) == b'AACAPw=='
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        // [1.0, -2.5]: b'AACAPwAAIMA='
        assert_eq!(base64_f32(&[1.0, -2.5]), "AACAPwAAIMA=");
    }
}
