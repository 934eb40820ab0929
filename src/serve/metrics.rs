//! The server's counters, gauges and histograms, shown by `GET /metrics` in Prometheus' text
//! format (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BOUNDS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// A Prometheus histogram: cumulative bucket counts, the sum and the count.
struct Histogram {
    state: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    fn new() -> Self {
        Histogram { state: Mutex::new((vec![0; LATENCY_BOUNDS.len()], 0.0, 0)) }
    }

    fn observe(&self, x: f64) {
        let mut s = self.state.lock().unwrap();
        for (c, &b) in s.0.iter_mut().zip(&LATENCY_BOUNDS) {
            if x <= b {
                *c += 1;
            }
        }
        s.1 += x;
        s.2 += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let s = self.state.lock().unwrap();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (c, b) in s.0.iter().zip(&LATENCY_BOUNDS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}", s.2, s.1, s.2);
    }
}

/// Everything `/metrics` reports. Shared by the request handlers and the scheduler thread.
pub struct Metrics {
    /// (endpoint, HTTP status) → requests answered.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    /// Jobs (prompts) accepted and not yet being processed.
    queued: AtomicUsize,
    /// Sequences being processed or generating.
    running: AtomicUsize,
    latency: Histogram,
    ttft: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            latency: Histogram::new(),
            ttft: Histogram::new(),
        }
    }
}

impl Metrics {
    /// Counts `jobs` more queued jobs unless that makes more than `max`; false when full.
    pub fn try_enqueue(&self, jobs: usize, max: usize) -> bool {
        self.queued.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| (q + jobs <= max).then_some(q + jobs)).is_ok()
    }

    /// `jobs` queued jobs left the queue (started, or dropped because their client left).
    pub fn dequeued(&self, jobs: usize) {
        self.queued.fetch_sub(jobs, Ordering::SeqCst);
    }

    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    pub fn set_running(&self, seqs: usize) {
        self.running.store(seqs, Ordering::Relaxed);
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    pub fn add_prompt_tokens(&self, n: usize) {
        self.prompt_tokens.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn add_generated_tokens(&self, n: usize) {
        self.generated_tokens.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Seconds from a request's arrival to its first generated token.
    pub fn observe_ttft(&self, secs: f64) {
        self.ttft.observe(secs);
    }

    /// A request answered with `status` after `secs` (a stream: when its last byte was made).
    pub fn observe_request(&self, endpoint: &str, status: u16, secs: f64) {
        *self.requests.lock().unwrap().entry((endpoint.to_owned(), status)).or_default() += 1;
        self.latency.observe(secs);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP lmlab_requests_total HTTP requests answered, by endpoint and status.\n");
        out.push_str("# TYPE lmlab_requests_total counter\n");
        for ((endpoint, status), n) in self.requests.lock().unwrap().iter() {
            let _ = writeln!(out, "lmlab_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}");
        }
        let counters = [
            ("lmlab_prompt_tokens_total", "Prompt tokens processed.", self.prompt_tokens.load(Ordering::Relaxed)),
            ("lmlab_generation_tokens_total", "Tokens generated.", self.generated_tokens.load(Ordering::Relaxed)),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let gauges = [
            ("lmlab_queue_depth", "Prompts waiting for the scheduler.", self.queue_depth()),
            ("lmlab_running_sequences", "Sequences in the batch (prefill and decode).", self.running()),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        self.latency.render(
            &mut out,
            "lmlab_request_duration_seconds",
            "Time from a request's arrival to its answer's end.",
        );
        self.ttft.render(
            &mut out,
            "lmlab_time_to_first_token_seconds",
            "Time from a prompt's arrival to its first token.",
        );
        out
    }
}
