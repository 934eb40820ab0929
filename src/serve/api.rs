//! The OpenAI API's request bodies, their checks, and the error body every failure answers
//! with (`{"error": {"message", "type", "param", "code"}}`).
//!
//! Fields follow the OpenAI API reference; `top_k`, `min_p`, `repetition_penalty` and
//! `ignore_eos` are extensions with vLLM's names. A field the API does not have is a 400, as
//! the OpenAI API answers it; a field it has that lmlab does not implement (`logit_bias`,
//! penalties other than 0, `best_of` other than `n`, `suffix`) is a 400 that says so.

use crate::infer::sample::SampleOptions;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

/// The most stop strings a request may give (the OpenAI API's limit).
pub const MAX_STOPS: usize = 4;
/// The most alternatives `logprobs` (completions) and `top_logprobs` (chat) may ask for.
pub const MAX_LOGPROBS: usize = 20;
/// The most tokens one choice may generate (past the context, the window slides).
pub const MAX_TOKENS: usize = 1 << 16;

/// An error answered as the OpenAI API answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400 invalid_request_error about `param`.
    pub fn invalid(param: Option<&'static str>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    pub fn with(mut self, status: StatusCode, kind: &'static str, code: Option<&'static str>) -> Self {
        (self.status, self.kind, self.code) = (status, kind, code);
        self
    }

    pub fn unauthorized() -> Self {
        ApiError::invalid(None, "Incorrect API key provided. Give it as the header `Authorization: Bearer KEY`.").with(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
        )
    }

    pub fn queue_full(max_queue: usize) -> Self {
        ApiError::invalid(None, format!("The server is busy: {max_queue} prompts are already waiting. Retry later."))
            .with(StatusCode::TOO_MANY_REQUESTS, "requests", Some("rate_limit_exceeded"))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::invalid(None, message).with(StatusCode::NOT_FOUND, "invalid_request_error", Some("not_found"))
    }

    pub fn server(message: impl Into<String>) -> Self {
        ApiError::invalid(None, message).with(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// A string or a list of strings (`stop`).
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `prompt` of a completion and `input` of an embedding: text, texts, token ids, or lists of
/// token ids.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Inputs {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}

/// One input of [`Inputs`].
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Text(String),
    Ids(Vec<u32>),
}

impl Inputs {
    pub fn into_list(self) -> Vec<Input> {
        match self {
            Inputs::Text(s) => vec![Input::Text(s)],
            Inputs::Texts(v) => v.into_iter().map(Input::Text).collect(),
            Inputs::Ids(v) => vec![Input::Ids(v)],
            Inputs::IdLists(v) => v.into_iter().map(Input::Ids).collect(),
        }
    }
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// A last chunk with the usage and no choices.
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling fields completions and chat share (flattened into both).
#[derive(Deserialize, Debug, Clone, Default)]
pub struct Sampling {
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// vLLM's extension: -1 or absent = all tokens.
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub stop: Option<OneOrMany>,
    pub seed: Option<i64>,
    pub n: Option<usize>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    pub ignore_eos: Option<bool>,
}

/// Fields a request has that the API does not: a 400 ([`reject_unknown`]).
pub type Unknown = std::collections::BTreeMap<String, serde_json::Value>;

/// POST /v1/completions.
#[derive(Deserialize, Debug, Clone)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Inputs,
    pub logprobs: Option<usize>,
    pub echo: Option<bool>,
    pub best_of: Option<usize>,
    pub suffix: Option<String>,
    pub user: Option<String>,
    #[serde(flatten)]
    pub sampling: Sampling,
    // Last: it collects the fields none of the above took.
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// One message of a chat.
#[derive(Deserialize, Debug, Clone)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<Content>,
    pub name: Option<String>,
}

/// A message's content: text, or a list of parts of which only text parts are read.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Debug, Clone)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

impl ChatMessage {
    pub fn text(&self) -> Result<String, ApiError> {
        match &self.content {
            None => Ok(String::new()),
            Some(Content::Text(s)) => Ok(s.clone()),
            Some(Content::Parts(parts)) => parts
                .iter()
                .map(|p| match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => Ok(t.as_str()),
                    (kind, _) => Err(ApiError::invalid(
                        Some("messages"),
                        format!("content parts of type {kind:?} are not supported (text only)"),
                    )),
                })
                .collect(),
        }
    }
}

/// POST /v1/chat/completions.
#[derive(Deserialize, Debug, Clone)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    /// The newer name of `max_tokens`; it wins when both are given.
    pub max_completion_tokens: Option<usize>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<usize>,
    pub user: Option<String>,
    #[serde(flatten)]
    pub sampling: Sampling,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// POST /v1/embeddings.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    pub model: Option<String>,
    pub input: Inputs,
    /// "float" (default) or "base64" (little-endian f32, as the openai package asks by default).
    pub encoding_format: Option<String>,
    pub dimensions: Option<usize>,
    pub user: Option<String>,
}

/// 400 for the first field the API does not have, as the OpenAI API words it.
pub fn reject_unknown(unknown: &Unknown) -> Result<(), ApiError> {
    match unknown.keys().next() {
        Some(name) => Err(ApiError::invalid(None, format!("Unrecognized request argument supplied: {name}"))),
        None => Ok(()),
    }
}

/// What the scheduler needs of a request's sampling fields, checked.
#[derive(Clone, Debug)]
pub struct Checked {
    pub opts: SampleOptions,
    pub n: usize,
    pub seed: u64,
    pub stream: bool,
    pub include_usage: bool,
    pub stop_at_eos: bool,
}

impl Sampling {
    /// The options, or a 400 naming the field. `default_max` is the `max_tokens` when absent;
    /// `max_n` the most choices (the batch).
    pub fn check(&self, default_max: usize, max_n: usize) -> Result<Checked, ApiError> {
        let bad = |param: &'static str, msg: String| Err(ApiError::invalid(Some(param), msg));
        let max_tokens = self.max_tokens.unwrap_or(default_max);
        if !(1..=MAX_TOKENS).contains(&max_tokens) {
            return bad("max_tokens", format!("max_tokens must be in 1..={MAX_TOKENS}, got {max_tokens}"));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return bad("temperature", format!("temperature must be in [0, 2], got {temperature}"));
        }
        if let Some(p) = self.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return bad("top_p", format!("top_p must be in (0, 1], got {p}"));
        }
        let top_k = match self.top_k {
            None | Some(-1) => None,
            Some(k) if k >= 1 => Some(k as usize),
            Some(k) => return bad("top_k", format!("top_k must be -1 (all) or at least 1, got {k}")),
        };
        if let Some(m) = self.min_p.filter(|m| !(0.0..=1.0).contains(m)) {
            return bad("min_p", format!("min_p must be in [0, 1], got {m}"));
        }
        let penalty = self.repetition_penalty.unwrap_or(1.0);
        if !(penalty > 0.0 && penalty.is_finite()) {
            return bad("repetition_penalty", format!("repetition_penalty must be > 0, got {penalty}"));
        }
        let stop = self.stop.clone().map(OneOrMany::into_vec).unwrap_or_default();
        if stop.len() > MAX_STOPS {
            return bad("stop", format!("at most {MAX_STOPS} stop strings, got {}", stop.len()));
        }
        if stop.iter().any(String::is_empty) {
            return bad("stop", "a stop string must not be empty".into());
        }
        let n = self.n.unwrap_or(1);
        if !(1..=max_n).contains(&n) {
            return bad("n", format!("n must be in 1..={max_n} (the server's --max-batch), got {n}"));
        }
        for (param, v) in [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)] {
            if v.is_some_and(|v| v != 0.0) {
                return bad(param, format!("{param} is not supported (only 0); use repetition_penalty"));
            }
        }
        if self.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
            return bad("logit_bias", "logit_bias is not supported".into());
        }
        let stream = self.stream.unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return bad("stream_options", "stream_options is only allowed when stream is true".into());
        }
        let opts = SampleOptions {
            max_new_tokens: max_tokens,
            temperature,
            top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: penalty,
            stop,
        };
        opts.validate().map_err(|e| ApiError::invalid(None, format!("{e:#}")))?;
        Ok(Checked {
            opts,
            n,
            // No seed: a fresh one per request.
            seed: self.seed.map_or_else(rand::random, |s| s as u64),
            stream,
            include_usage: self.stream_options.as_ref().is_some_and(|o| o.include_usage),
            stop_at_eos: !self.ignore_eos.unwrap_or(false),
        })
    }
}

/// The plain chat template, for checkpoints without one of their own: each message as
/// `Role: content` on its own line (`System`, `User`, `Assistant`, or the role as given), then
/// `Assistant:` for the model to continue. The default stop string is `\nUser:`.
pub fn plain_chat_prompt(messages: &[ChatMessage]) -> Result<String, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(Some("messages"), "messages must not be empty"));
    }
    let mut out = String::new();
    for m in messages {
        let role = match m.role.as_str() {
            "system" | "developer" => "System",
            "user" => "User",
            "assistant" => "Assistant",
            "tool" | "function" => "Tool",
            other => return Err(ApiError::invalid(Some("messages"), format!("unknown role {other:?}"))),
        };
        out.push_str(&format!("{role}: {}\n", m.text()?));
    }
    out.push_str("Assistant:");
    Ok(out)
}

/// The stop string the plain chat template ends a reply with when the request gives none.
pub const CHAT_STOP: &str = "\nUser:";
