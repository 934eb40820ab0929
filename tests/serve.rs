//! `lmlab serve` end to end: the binary on 127.0.0.1 with an ephemeral port and a tiny random
//! checkpoint, talked to over HTTP. Every endpoint, the streaming format, the error codes, a
//! disconnect freeing its row, graceful shutdown, and greedy output equal to `lmlab sample`'s
//! whether a request runs alone or batched with others.

mod common;

use common::{lmlab_text, ok};
use lmlab::data::{CharTokenizer, Tokenizer};
use lmlab::io::checkpoint;
use lmlab::model::transformer::{ModelConfig, Transformer};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CORPUS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;'!?\n";
const BLOCK: usize = 48;

/// A random char-level decoder checkpoint (weights large enough that greedy choices are far
/// from ties), made once per test process.
fn tiny_checkpoint() -> PathBuf {
    static DIR: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let tok = CharTokenizer::from_corpus(CORPUS).unwrap();
        let cfg = ModelConfig {
            vocab_size: tok.vocab_size(),
            block_size: BLOCK,
            n_layer: 2,
            n_head: 2,
            n_embd: 32,
            ..ModelConfig::default()
        };
        let mut m = Transformer::new(cfg, 1).unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let values = common::rand_vec(&mut rng, m.params.len(), 0.5);
        m.params.copy_from_slice(&values);
        let gains = m.layout.tensors.iter().filter(|t| t.name.contains(".ln_") && t.name.ends_with(".weight"));
        for r in gains.map(|t| t.range()).collect::<Vec<_>>() {
            m.params[r].iter_mut().for_each(|x| *x = 1.0 + 0.8 * *x);
        }
        let dir = tmp.path().join("tiny");
        checkpoint::save_new(&dir, &m, &Tokenizer::Char(tok)).unwrap();
        (tmp, dir)
    })
    .1
    .clone()
}

/// A running `lmlab serve`; killed when dropped.
struct Server {
    child: Child,
    base: String,
    /// Lines of its standard error, after the address.
    stderr: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
}

impl Server {
    /// `lmlab serve` of the tiny checkpoint with `extra` options.
    fn start(extra: &[&str]) -> Server {
        let ckpt = tiny_checkpoint();
        Server::spawn(&[&["--checkpoint", ckpt.to_str().unwrap()], extra].concat())
    }

    /// `lmlab serve ARGS --port 0 --threads 1`, once it listens.
    fn spawn(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lmlab"))
            .arg("serve")
            .args(args)
            .args(["--port", "0", "--threads", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lmlab serve");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Killed on drop, also when it never listens.
        let mut server = Server { child, base: String::new(), stderr: std::sync::Mutex::new(rx) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.base.is_empty() {
            let line = server
                .stderr
                .lock()
                .unwrap()
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("lmlab serve printed no address");
            if let Some(addr) = line.strip_prefix("lmlab serve: listening on ") {
                server.base = addr.to_owned();
            }
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn post(&self, path: &str, body: &Value) -> Response {
        client().post(self.url(path)).json(body).send().expect("request")
    }

    fn get(&self, path: &str) -> Response {
        client().get(self.url(path)).send().expect("request")
    }

    /// The Prometheus value of the line starting with `name` (with its labels).
    fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").text().unwrap();
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

fn json_of(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

/// What `lmlab sample` prints after the prompt, greedy.
fn sample_greedy(prompt: &str, max_new_tokens: usize) -> String {
    let ckpt = tiny_checkpoint();
    let n = max_new_tokens.to_string();
    let out = ok(common::lmlab(&[
        "sample",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--prompt",
        prompt,
        "--max-new-tokens",
        &n,
        "--temperature",
        "0",
        "--threads",
        "1",
    ]));
    out.strip_prefix(prompt).unwrap().strip_suffix('\n').unwrap().to_owned()
}

fn completion_text(server: &Server, prompt: &str, max_tokens: usize) -> String {
    let (status, v) =
        json_of(server.post("/v1/completions", &json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0})));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], max_tokens, "{v}");
    v["choices"][0]["text"].as_str().unwrap().to_owned()
}

/// The `data:` payloads of a server-sent event stream, checking the framing: every event is
/// one `data: ` line and a blank line.
fn sse_events(r: Response) -> Vec<String> {
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut body = String::new();
    BufReader::new(r).read_to_string(&mut body).unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    body.split_terminator("\n\n")
        .map(|e| e.strip_prefix("data: ").unwrap_or_else(|| panic!("bad event {e:?}")).to_owned())
        .collect()
}

#[test]
fn greedy_output_equals_lmlab_sample_alone_and_batched() {
    // Prompts of 1 to 40 tokens; with a prefill chunk of 8, the long ones take several chunks,
    // and 30 new tokens slide the window past block_size = 48 for the longer prompts.
    let prompts = ["a", "To be, or not", "Once upon a time, there was a", "Now is the winter of our discontent mad"];
    let max_tokens = 30;
    let want: Vec<String> = prompts.iter().map(|p| sample_greedy(p, max_tokens)).collect();
    let server = Server::start(&["--max-batch", "4", "--prefill-chunk", "8", "--prefill-tokens", "16"]);
    for (p, w) in prompts.iter().zip(&want) {
        assert_eq!(&completion_text(&server, p, max_tokens), w, "alone: {p:?}");
    }
    // All at once, three times over: 12 requests for 4 rows, joining and leaving the batch.
    let got: Vec<(usize, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let server = &server;
                s.spawn(move || (i % 4, completion_text(server, prompts[i % 4], max_tokens)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, text) in got {
        assert_eq!(text, want[i], "batched: {:?}", prompts[i]);
    }
    // A batch of prompts in one request, and n choices of one: each equals its own sample.
    let (status, v) = json_of(server.post(
        "/v1/completions",
        &json!({"prompt": [prompts[1], prompts[2]], "max_tokens": max_tokens, "temperature": 0, "n": 2}),
    ));
    assert_eq!(status, 200, "{v}");
    let texts: Vec<&str> = v["choices"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert_eq!(texts, [&want[1], &want[1], &want[2], &want[2]]);
    assert_eq!(v["usage"]["prompt_tokens"], prompts[1].len() + prompts[2].len());
    assert_eq!(v["usage"]["completion_tokens"], 4 * max_tokens);
}

#[test]
fn seeded_sampling_equals_lmlab_sample_num_samples() {
    let ckpt = tiny_checkpoint();
    let out = ok(common::lmlab(&[
        "sample",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "12",
        "--temperature",
        "0.9",
        "--top-k",
        "20",
        "--seed",
        "5",
        "--num-samples",
        "2",
        "--threads",
        "1",
    ]));
    let want: Vec<String> =
        out.split("---\n").map(|s| s.strip_prefix("Hello").unwrap().trim_end_matches('\n').to_owned()).collect();
    let server = Server::start(&[]);
    let body = json!({"prompt": "Hello", "max_tokens": 12, "temperature": 0.9, "top_k": 20, "seed": 5, "n": 2});
    let (status, v) = json_of(server.post("/v1/completions", &body));
    assert_eq!(status, 200, "{v}");
    let got: Vec<&str> = v["choices"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert_eq!(got, want);
}

#[test]
fn streaming_is_server_sent_events_as_openai_sends_them() {
    let server = Server::start(&[]);
    let whole = completion_text(&server, "The ", 20);
    // Completions.
    let body = json!({"prompt": "The ", "max_tokens": 20, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
    let events = sse_events(server.post("/v1/completions", &body));
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("cmpl-"));
    let mut text = String::new();
    for c in &chunks[..chunks.len() - 2] {
        assert_eq!((c["object"].as_str(), c["id"].as_str()), (Some("text_completion"), Some(id)), "{c}");
        assert!(c["choices"][0]["finish_reason"].is_null());
        text.push_str(c["choices"][0]["text"].as_str().unwrap());
    }
    assert_eq!(text, whole);
    let last = &chunks[chunks.len() - 2];
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], json!({"prompt_tokens": 4, "completion_tokens": 20, "total_tokens": 24}));

    // Chat: the role first, then content deltas, then an empty delta with the finish reason.
    let body =
        json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10, "temperature": 0, "stream": true});
    let events = sse_events(server.post("/v1/chat/completions", &body));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let streamed: String =
        chunks[1..].iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    let end = chunks.last().unwrap();
    assert_eq!(end["choices"][0]["delta"], json!({}));
    assert!(["stop", "length"].contains(&end["choices"][0]["finish_reason"].as_str().unwrap()));
    let (status, v) = json_of(server.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10, "temperature": 0}),
    ));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"].as_str().unwrap(), streamed);
    assert_eq!(v["object"], "chat.completion");
}

#[test]
fn chat_uses_the_plain_template_and_stops_at_the_next_user_turn() {
    let server = Server::start(&[]);
    let messages = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]);
    let (status, v) = json_of(
        server.post("/v1/chat/completions", &json!({"messages": messages, "max_tokens": 25, "temperature": 0})),
    );
    assert_eq!(status, 200, "{v}");
    let prompt = "System: Be brief.\nUser: Hi there\nAssistant:";
    assert_eq!(v["usage"]["prompt_tokens"], prompt.len());
    // The reply is what a completion of the rendered prompt gives, cut at "\nUser:".
    let (_, c) = json_of(
        server
            .post("/v1/completions", &json!({"prompt": prompt, "max_tokens": 25, "temperature": 0, "stop": "\nUser:"})),
    );
    assert_eq!(v["choices"][0]["message"]["content"], c["choices"][0]["text"]);
    assert_eq!(v["choices"][0]["finish_reason"], c["choices"][0]["finish_reason"]);
}

#[test]
fn stop_strings_logprobs_and_echo() {
    let server = Server::start(&[]);
    let full = completion_text(&server, "Mo", 30);
    // Stop at a piece of the greedy text: the text ends right before it.
    let stop: String = full.chars().skip(5).take(2).collect();
    let (_, v) = json_of(
        server.post("/v1/completions", &json!({"prompt": "Mo", "max_tokens": 30, "temperature": 0, "stop": [stop]})),
    );
    let cut = &full[..full.find(&stop).unwrap()];
    assert_eq!(v["choices"][0]["text"], cut);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Log-probabilities: one entry per token, the greedy token the most likely.
    let (_, v) = json_of(
        server.post("/v1/completions", &json!({"prompt": "Mo", "max_tokens": 6, "temperature": 0, "logprobs": 3})),
    );
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 6);
    assert_eq!(lp["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect::<String>(), full[..6]);
    for (i, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
        let top = top.as_object().unwrap();
        assert_eq!(top.len(), 3);
        let best = top.values().map(|x| x.as_f64().unwrap()).fold(f64::NEG_INFINITY, f64::max);
        let chosen = lp["token_logprobs"][i].as_f64().unwrap();
        assert!(chosen <= 0.0 && (chosen - best).abs() < 1e-6, "{chosen} vs {best}");
    }
    assert_eq!(lp["text_offset"], json!([0, 1, 2, 3, 4, 5]));
    let (_, v) = json_of(
        server.post("/v1/completions", &json!({"prompt": "Mo", "max_tokens": 6, "temperature": 0, "echo": true})),
    );
    assert_eq!(v["choices"][0]["text"], format!("Mo{}", &full[..6]));
    // Chat log-probabilities.
    let body = json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 4, "temperature": 0, "logprobs": true, "top_logprobs": 2});
    let (_, v) = json_of(server.post("/v1/chat/completions", &body));
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), v["usage"]["completion_tokens"].as_u64().unwrap() as usize);
    assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 2);
}

#[test]
fn models_health_metrics_and_page() {
    let server = Server::start(&["--model-name", "tiny-char"]);
    let (status, v) = json_of(server.get("/v1/models"));
    assert_eq!(status, 200);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "tiny-char");
    assert_eq!(v["data"][0]["object"], "model");
    let (status, v) = json_of(server.get("/health"));
    assert_eq!((status, v), (200, json!({"status": "ok"})));
    completion_text(&server, "ab", 7);
    let (status, v) = json_of(server.post("/v1/completions", &json!({"model": "gpt-4", "prompt": "ab"})));
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(server.metric("lmlab_generation_tokens_total"), 7.0);
    assert_eq!(server.metric("lmlab_prompt_tokens_total"), 2.0);
    assert_eq!(server.metric("lmlab_requests_total{endpoint=\"/v1/completions\",status=\"200\"}"), 1.0);
    assert_eq!(server.metric("lmlab_requests_total{endpoint=\"/v1/completions\",status=\"404\"}"), 1.0);
    assert_eq!(server.metric("lmlab_queue_depth"), 0.0);
    assert_eq!(server.metric("lmlab_time_to_first_token_seconds_count"), 1.0);
    assert!(server.metric("lmlab_request_duration_seconds_count") >= 2.0);
    let page = server.get("/");
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().unwrap();
    assert!(html.contains("/v1/completions") && html.contains("<textarea"));
    // No embedder: embeddings are a 404 with the API's error body.
    let (status, v) = json_of(server.post("/v1/embeddings", &json!({"input": "x"})));
    assert_eq!(status, 404);
    assert!(v["error"]["message"].as_str().unwrap().contains("--embedder"));
}

fn assert_error(r: Response, status: u16, param: Option<&str>) -> Value {
    let (got, v) = json_of(r);
    assert_eq!(got, status, "{v}");
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    if let Some(p) = param {
        assert_eq!(e["param"], p, "{v}");
    }
    v
}

#[test]
fn bad_requests_get_openai_error_bodies() {
    let server = Server::start(&["--max-body-bytes", "2000"]);
    let raw = |body: &str| {
        client()
            .post(server.url("/v1/completions"))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .unwrap()
    };
    let v = assert_error(raw("{\"prompt\": \"a\""), 400, None);
    assert!(v["error"]["message"].as_str().unwrap().contains("parse the JSON"), "{v}");
    let v = assert_error(server.post("/v1/completions", &json!({"prompt": "a", "frobnicate": 1})), 400, None);
    assert_eq!(v["error"]["message"], "Unrecognized request argument supplied: frobnicate");
    assert_error(
        server.post("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "x"}], "tools": []})),
        400,
        None,
    );
    // Known fields of the wrong type are a 400 too.
    assert_error(server.post("/v1/completions", &json!({"prompt": "a", "max_tokens": "many"})), 400, None);
    assert_error(server.post("/v1/completions", &json!({"max_tokens": 3})), 400, None);
    let cases = [
        (json!({"prompt": "a", "temperature": 2.5}), "temperature"),
        (json!({"prompt": "a", "top_p": 0}), "top_p"),
        (json!({"prompt": "a", "max_tokens": 0}), "max_tokens"),
        (json!({"prompt": "a", "n": 99}), "n"),
        (json!({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}), "stop"),
        (json!({"prompt": "a", "presence_penalty": 0.5}), "presence_penalty"),
        (json!({"prompt": "a", "logprobs": 50}), "logprobs"),
        (json!({"prompt": "é"}), "prompt"),
        (json!({"prompt": [999]}), "prompt"),
        (json!({"prompt": ""}), "prompt"),
    ];
    for (body, param) in cases {
        assert_error(server.post("/v1/completions", &body), 400, Some(param));
    }
    let long = "a".repeat(BLOCK + 1);
    let v = assert_error(server.post("/v1/completions", &json!({"prompt": long})), 400, Some("prompt"));
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_error(server.post("/v1/chat/completions", &json!({"messages": []})), 400, Some("messages"));
    assert_error(
        server.post("/v1/chat/completions", &json!({"messages": [{"role": "wizard", "content": "x"}]})),
        400,
        Some("messages"),
    );
    // 413: a body over --max-body-bytes.
    let big = json!({"prompt": "a".repeat(3000)});
    let v = assert_error(server.post("/v1/completions", &big), 413, None);
    assert_eq!(v["error"]["code"], "request_too_large");
    // Unknown paths: 404 with an error body.
    assert_error(server.get("/v2/nothing"), 404, None);
    // The server is still fine.
    completion_text(&server, "ok", 3);
}

#[test]
fn api_key_is_required_when_set() {
    let server = Server::start(&["--api-key", "sekret"]);
    let body = json!({"prompt": "a", "max_tokens": 2});
    let v = assert_error(server.post("/v1/completions", &body), 401, None);
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let wrong = client().post(server.url("/v1/completions")).bearer_auth("nope").json(&body).send().unwrap();
    assert_error(wrong, 401, None);
    assert_error(server.get("/v1/models"), 401, None);
    let right = client().post(server.url("/v1/completions")).bearer_auth("sekret").json(&body).send().unwrap();
    assert_eq!(right.status(), 200);
    // Health and metrics stay open (probes, scrapers).
    assert_eq!(server.get("/health").status(), 200);
    assert_eq!(server.get("/metrics").status(), 200);
}

/// Starts an endless streaming completion and waits for its first chunk.
fn endless_stream(server: &Server) -> BufReader<Response> {
    let body = json!({"prompt": "z", "max_tokens": 65536, "temperature": 1.0, "stream": true});
    let r = server.post("/v1/completions", &body);
    assert_eq!(r.status(), 200);
    let mut reader = BufReader::new(r);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("data: {"), "{line}");
    reader
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_queue_is_429_and_a_disconnect_frees_the_row() {
    let server = Server::start(&["--max-batch", "1", "--max-queue", "1"]);
    let first = endless_stream(&server);
    wait_for("the first stream to run", || server.metric("lmlab_running_sequences") == 1.0);
    // The one row is taken: the next request waits in the queue, a third is refused.
    let base = server.base.clone();
    let queued = std::thread::spawn(move || {
        let r = client()
            .post(format!("{base}/v1/completions"))
            .json(&json!({"prompt": "q", "max_tokens": 5, "temperature": 0}))
            .send()
            .unwrap();
        json_of(r)
    });
    wait_for("the second request to queue", || server.metric("lmlab_queue_depth") == 1.0);
    let v = assert_error(server.post("/v1/completions", &json!({"prompt": "x", "max_tokens": 1})), 429, None);
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    // The first client hangs up: its row is freed and the queued request completes.
    let started = Instant::now();
    drop(first);
    let (status, v) = queued.join().unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert!(started.elapsed() < Duration::from_secs(10), "the row was freed after {:?}", started.elapsed());
    wait_for("the batch to empty", || server.metric("lmlab_running_sequences") == 0.0);
    assert_eq!(server.metric("lmlab_queue_depth"), 0.0);
}

#[test]
fn a_non_streaming_client_that_leaves_frees_its_row() {
    let server = Server::start(&["--max-batch", "1"]);
    let base = server.base.clone();
    // A request with a short timeout gives up while generating.
    let impatient = std::thread::spawn(move || {
        let c = Client::builder().timeout(Duration::from_millis(700)).build().unwrap();
        c.post(format!("{base}/v1/completions")).json(&json!({"prompt": "z", "max_tokens": 65536})).send().is_err()
    });
    wait_for("the long request to run", || server.metric("lmlab_running_sequences") == 1.0);
    assert!(impatient.join().unwrap(), "the long request should have timed out");
    wait_for("the row to be freed", || server.metric("lmlab_running_sequences") == 0.0);
    completion_text(&server, "ok", 3);
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_0() {
    let mut server = Server::start(&[]);
    let body = json!({"prompt": "abc", "max_tokens": 40, "temperature": 0, "stream": true});
    let r = server.post("/v1/completions", &body);
    let mut reader = BufReader::new(r);
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    // The stream in flight still ends properly.
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(rest.ends_with("data: [DONE]\n\n"), "{rest}");
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // Its standard error up to the end (the pipe closed with the process).
    let said: Vec<String> = server.stderr.lock().unwrap().iter().collect();
    assert!(said.iter().any(|l| l.contains("shutdown")), "{said:?}");
    assert!(client().get(server.url("/health")).send().is_err(), "still accepting after shutdown");
}

#[test]
fn embeddings_equal_lmlab_embed() {
    let Some(minilm) = common::minilm_dir() else { return };
    // With the language model on one worker thread: embeddings run between its steps.
    let server = Server::start(&["--embedder", minilm.to_str().unwrap()]);
    completion_text(&server, "warm", 3);
    let texts = ["A man is eating food.", "The cat sits on the mat."];
    let (okay, out, err) = lmlab_text(&["embed", "--model", minilm.to_str().unwrap(), texts[0], texts[1]]);
    assert!(okay, "{err}");
    let want: Vec<Vec<f64>> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (status, v) = json_of(server.post("/v1/embeddings", &json!({"input": texts})));
    assert_eq!(status, 200, "{v}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    for (i, w) in want.iter().enumerate() {
        let got: Vec<f64> = serde_json::from_value(v["data"][i]["embedding"].clone()).unwrap();
        assert_eq!(got.len(), w.len());
        let diff = got.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(diff < 1e-6, "embedding {i} differs by {diff}");
    }
    // base64: little-endian f32, as the openai package asks for by default.
    let (_, b) = json_of(server.post("/v1/embeddings", &json!({"input": texts[0], "encoding_format": "base64"})));
    let (_, f) = json_of(server.post("/v1/embeddings", &json!({"input": texts[0]})));
    let floats: Vec<f32> = serde_json::from_value(f["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(b["data"][0]["embedding"].as_str().unwrap(), base64_f32_reference(&floats));
    let (_, models) = json_of(server.get("/v1/models"));
    assert_eq!(models["data"][1]["id"], "minilm");
    // Embeddings and generation at the same time.
    let generating = endless_stream(&server);
    let (status, _) = json_of(server.post("/v1/embeddings", &json!({"input": texts[1]})));
    assert_eq!(status, 200);
    drop(generating);
}

/// Base64 written independently of the server's: through the bits, 6 at a time.
fn base64_f32_reference(v: &[f32]) -> String {
    let alphabet: Vec<char> = ('A'..='Z').chain('a'..='z').chain('0'..='9').chain(['+', '/']).collect();
    let bits: Vec<u8> =
        v.iter().flat_map(|x| x.to_le_bytes()).flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1)).collect();
    let mut out: String = bits
        .chunks(6)
        .map(|c| alphabet[c.iter().chain(std::iter::repeat(&0)).take(6).fold(0, |a, &b| a * 2 + b as usize)])
        .collect();
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

#[test]
fn a_bad_checkpoint_is_a_clear_error() {
    let (okay, _, err) = lmlab_text(&["serve", "--checkpoint", "/nonexistent/ckpt", "--port", "0"]);
    assert!(!okay && err.contains("/nonexistent/ckpt"), "{err}");
}
