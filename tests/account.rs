//! `lmlab account` (`lmlab::inspect::account`) against independent references:
//! - every preset's parameter count, total and per component, equals that of the Hugging Face
//!   `transformers` model built from the same config on the meta device
//!   (tests/fixtures/account/hf_params.json, scripts/make_account_fixtures.py);
//! - the closed form's value equals the layout's count for the presets and for lmlab variants;
//! - the forward FLOPs equal PyTorch's FlopCounterMode on small GPT-2, BERT and Llama models
//!   (tests/fixtures/account/flops.json);
//! - the repo's configs: the count equals the real model's `num_params`, and every memory
//!   figure equals the bytes lmlab's model, optimizer and KV cache really allocate;
//! - the command line: tables, JSON, and clear errors for bad input.

mod common;

use lmlab::config::RunConfig;
use lmlab::inspect::account::{
    self, bert_like, closed_form, gpt2_like, llama_like, param_breakdown, Architecture, MemoryQuery, Sizes, PRESETS,
};
use lmlab::kernels::precision::Precision;
use lmlab::model::transformer::{
    ActivationKind, Arch, AttentionKind, EncoderHead, ModelConfig, NormKind, NormPosition, Position, Transformer,
};
use serde_json::Value;

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(common::fixture(name)).unwrap()).unwrap()
}

fn count_of(arch: &Architecture) -> account::ParamBreakdown {
    let sizes = Transformer::buffer_sizes(&arch.model, 1, true).unwrap();
    param_breakdown(arch, &sizes.layout).unwrap()
}

#[test]
fn preset_counts_equal_hugging_face_models() {
    let hf = fixture_json("account/hf_params.json");
    let presets = hf["presets"].as_object().unwrap();
    assert_eq!(presets.len(), PRESETS.len(), "one fixture entry per preset");
    for p in PRESETS {
        let arch = p.architecture();
        let want = &presets[p.name];
        let got = count_of(&arch);
        let pairs = [
            ("total", got.total),
            ("embeddings", got.embeddings),
            ("attention", got.attention),
            ("feed_forward", got.feed_forward),
            ("norms", got.norms),
            ("head", got.head),
        ];
        for (field, n) in pairs {
            assert_eq!(n as u64, want[field].as_u64().unwrap(), "{}: {field}", p.name);
        }
        let f = closed_form(&arch).unwrap_or_else(|e| panic!("{}: no closed form: {e}", p.name));
        assert_eq!(f.value, got.total as u128, "{}: closed form {}", p.name, f.symbolic);
    }
}

#[test]
fn closed_forms_of_the_best_known_models() {
    let f = closed_form(&account::preset("gpt2").unwrap().architecture()).unwrap();
    assert_eq!(f.symbolic, "L·(12·d² + 13·d) + V·d + T·d + 2·d");
    assert_eq!(f.value, 124_439_808);
    let f = closed_form(&account::preset("llama-2-7b").unwrap().architecture()).unwrap();
    assert_eq!(f.symbolic, "L·(4·d² + 3·d·F + 2·d) + 2·V·d + d");
    assert_eq!(f.value, 6_738_415_616);
}

/// Variants the closed form covers (norms, activations, biases, GQA, post-norm, encoders,
/// encoder-decoders with and without shared embeddings): its value is lmlab's real count.
#[test]
fn closed_form_equals_the_real_model_for_variants() {
    let base = ModelConfig { vocab_size: 37, block_size: 16, n_layer: 2, n_head: 4, n_embd: 32, ..Default::default() };
    let variants = [
        base.clone(),
        ModelConfig { bias: false, tie_embeddings: false, ..base.clone() },
        ModelConfig { n_kv_head: Some(2), ffn_hidden: Some(40), activation: ActivationKind::Swiglu, ..base.clone() },
        ModelConfig { n_kv_head: Some(1), norm: NormKind::Rmsnorm, position: Position::Rope, ..base.clone() },
        ModelConfig { norm: NormKind::Batchnorm, position: Position::Alibi, ffn_hidden: Some(24), ..base.clone() },
        ModelConfig {
            position: Position::Sinusoidal,
            norm_position: NormPosition::Post,
            final_norm: false,
            ..base.clone()
        },
        ModelConfig { arch: Arch::Encoder, embedding_norm: true, num_classes: 5, ..base.clone() },
        ModelConfig { arch: Arch::Encoder, encoder_head: EncoderHead::Span, ..base.clone() },
        ModelConfig { arch: Arch::Encoder, encoder_head: EncoderHead::Mlm, ..base.clone() },
        ModelConfig {
            arch: Arch::Encoder,
            encoder_head: EncoderHead::Mlm,
            bias: false,
            norm: NormKind::Rmsnorm,
            ..base.clone()
        },
        ModelConfig { norm: NormKind::None, residual: false, ..base.clone() },
        ModelConfig { arch: Arch::EncoderDecoder, n_dec_layer: Some(3), ..base.clone() },
        ModelConfig { arch: Arch::EncoderDecoder, share_embeddings: false, tie_embeddings: false, ..base.clone() },
    ];
    for cfg in variants {
        let arch = Architecture { name: "variant".into(), model: cfg.clone(), bert: None };
        let real = Transformer::new(cfg.clone(), 1).unwrap().num_params();
        let f = closed_form(&arch).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
        assert_eq!(f.value, real as u128, "{} for {cfg:?}", f.symbolic);
        assert_eq!(count_of(&arch).total, real, "{cfg:?}");
    }
    // Variants with per-layer extras have no closed form, but their count is still the model's.
    let shaw = ModelConfig { position: Position::Shaw, ..base };
    let arch = Architecture { name: "shaw".into(), model: shaw.clone(), bert: None };
    assert!(closed_form(&arch).is_err());
    assert_eq!(count_of(&arch).total, Transformer::new(shaw, 1).unwrap().num_params());
}

#[test]
fn forward_flops_equal_torch_flop_counter() {
    let fx = fixture_json("account/flops.json");
    let models = fx["models"].as_object().unwrap();
    assert_eq!(models.len(), 4);
    for (name, m) in models {
        let c = &m["config"];
        let get = |k: &str| c[k].as_u64().unwrap_or(0) as usize;
        let s = Sizes {
            n_layer: get("n_layer"),
            n_embd: get("n_embd"),
            n_head: get("n_head"),
            n_kv_head: c.get("n_kv_head").map_or(get("n_head"), |_| get("n_kv_head")),
            ffn_hidden: c.get("ffn_hidden").map_or(4 * get("n_embd"), |_| get("ffn_hidden")),
            block_size: get("block_size"),
            vocab_size: get("vocab_size"),
        };
        let arch = match c["family"].as_str().unwrap() {
            "gpt2" => gpt2_like(name, s),
            "bert" => bert_like(name, s),
            "llama" => llama_like(name, s),
            other => panic!("unknown family {other}"),
        };
        for shape in m["shapes"].as_array().unwrap() {
            let (b, t) = (shape["b"].as_u64().unwrap() as usize, shape["t"].as_u64().unwrap() as usize);
            let want = shape["flops"].as_u64().unwrap() - shape["rotary_flops"].as_u64().unwrap();
            let got = b as f64 * account::sequence_flops(&arch, t).total();
            assert_eq!(got, want as f64, "{name} b={b} t={t}");
        }
    }
}

/// A repo config's model at its vocabulary (65 characters for Tiny Shakespeare).
fn repo_config(file: &str) -> (RunConfig, ModelConfig) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs").join(file);
    let run = RunConfig::from_file(&path, &[]).unwrap();
    let vocab = match run.data.task {
        lmlab::config::Task::Lm => 65,
        lmlab::config::Task::Mlm => 66, // and [MASK]
        _ => run.data.vocab_size,
    };
    let model = run.model_config(vocab);
    (run, model)
}

#[test]
fn repo_configs_count_and_memory_equal_the_real_allocations() {
    for file in [
        "shakespeare-char-cpu.toml",
        "shakespeare-char.toml",
        "shakespeare-char-mlm.toml",
        "trec-classify.toml",
        "multi30k-de-en.toml",
    ] {
        let (run, cfg) = repo_config(file);
        // A small batch keeps the test light; the sizes scale the same way at any batch.
        let batch = 2;
        let arch = Architecture { name: file.into(), model: cfg.clone(), bert: None };
        let query = MemoryQuery {
            batch,
            context: cfg.block_size,
            precision: Precision::Bf16,
            optimizer: run.optim.optimizer(),
        };
        let acc = account::account(&arch, &query).unwrap();
        let mut model = Transformer::new(cfg.clone(), batch).unwrap();
        assert_eq!(acc.params.total, model.num_params(), "{file}");
        let m = &acc.memory;
        assert_eq!(
            (m.weights + m.gradients + m.activations_for(cfg.attention)) as usize,
            model.buffer_bytes(),
            "{file}: weights, gradients and activations"
        );
        let optimizer = run.optim.build(&model.layout).unwrap();
        assert_eq!(m.optimizer_state as usize, optimizer.state_bytes(), "{file}: optimizer state");
        model.set_precision(Precision::Bf16);
        assert_eq!(m.low_precision_copy as usize, model.low_precision_bytes(), "{file}: bf16 copy");
        if cfg.arch != Arch::Encoder {
            let infer = Transformer::new_inference(cfg.clone(), batch).unwrap();
            assert_eq!(m.kv_cache as usize, infer.kv_cache(batch).unwrap().bytes(), "{file}: KV cache");
            assert_eq!((m.weights + m.inference_activations) as usize, infer.buffer_bytes(), "{file}: inference model");
        }
    }
}

#[test]
fn flash_attention_needs_less_activation_memory() {
    let (run, cfg) = repo_config("shakespeare-char.toml");
    let arch = Architecture { name: "s".into(), model: cfg.clone(), bert: None };
    let q = MemoryQuery { batch: 4, context: 256, precision: Precision::Fp32, optimizer: run.optim.optimizer() };
    let m = account::memory(&arch.model, &q).unwrap();
    let flash_cfg = ModelConfig { attention: AttentionKind::Flash, attn_dropout: Some(0.0), ..cfg };
    let flash = Transformer::new(flash_cfg, 4).unwrap();
    assert_eq!((m.weights + m.gradients + m.activations_flash.unwrap()) as usize, flash.buffer_bytes());
    assert!(m.activations_flash.unwrap() < m.activations);
}

#[test]
fn command_line_tables_json_and_errors() {
    let out = common::ok(common::lmlab(&["account", "--preset", "gpt2"]));
    assert!(out.contains("124,439,808"), "{out}");
    assert!(out.contains("L·(12·d² + 13·d) + V·d + T·d + 2·d"), "{out}");
    assert!(out.contains("attention share"), "{out}");
    let json = common::ok(common::lmlab(&[
        "account",
        "--preset",
        "llama-2-7b",
        "--batch",
        "2",
        "--context",
        "512",
        "--optimizer",
        "sgd",
        "--json",
    ]));
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["params"]["total"], 6_738_415_616u64);
    assert_eq!(v["memory"]["optimizer_state"], 0, "plain SGD keeps no state");
    assert_eq!(v["memory"]["kv_cache_per_token"], 2 * 32 * 4096 * 4);
    let list = common::ok(common::lmlab(&["account", "--list-presets"]));
    assert_eq!(list.lines().count(), PRESETS.len());

    let fails = |args: &[&str], needle: &str| {
        let o = common::lmlab(args);
        let (_, err) = common::text(&o);
        assert!(!o.status.success() && err.contains(needle) && !err.contains("panicked"), "{args:?}: {err}");
    };
    fails(&["account", "--preset", "gtp2"], "did you mean gpt2");
    fails(&["account", "--preset", "bert"], "did you mean bert-base");
    fails(&["account", "--preset", "nonsense-model-name"], "the presets are: gpt2");
    fails(&["account", "--config", "no/such/file.toml"], "cannot read config file");
    fails(&["account", "--checkpoint", "no/such/dir"], "does not exist");
    fails(&["account"], "give --preset NAME");
    let dir = std::env::temp_dir().join(format!("lmlab-account-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "[model]\nn_layers = 4\n").unwrap();
    fails(&["account", "--config", typo.to_str().unwrap()], "n_layers");
    let char_level = dir.join("char.toml");
    std::fs::write(&char_level, "[model]\nn_layer = 2\n").unwrap();
    fails(&["account", "--config", char_level.to_str().unwrap()], "--vocab");
    let out = common::ok(common::lmlab(&["account", "--config", char_level.to_str().unwrap(), "--vocab", "65"]));
    assert!(out.contains("parameters"), "{out}");
    let chart = dir.join("share.svg");
    common::ok(common::lmlab(&["account", "--preset", "gpt3-175b", "--chart", chart.to_str().unwrap()]));
    assert!(std::fs::read_to_string(&chart).unwrap().contains("<svg"), "the chart is an SVG file");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `lmlab args` to completion and returns its peak resident set size in bytes (the
/// child's `ru_maxrss`, from wait4).
#[allow(clippy::zombie_processes)] // reaped by libc::wait4, which also reports its peak RSS
fn peak_rss_of_run(args: &[&str]) -> u64 {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_lmlab"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run lmlab");
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; the pid is our own child's.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "lmlab {args:?} failed");
    usage.ru_maxrss as u64 * 1024
}

/// The memory estimate against the measured peak RSS of real runs: training a 43M-parameter
/// model (one step and its checkpoints) and sampling from it, within 10%.
#[test]
fn memory_estimate_within_ten_percent_of_measured_peak_rss() {
    let dir = std::env::temp_dir().join(format!("lmlab-account-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = dir.join("corpus.txt");
    let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyz .,;:!?\n".chars().collect();
    let text: String = (0..20_000usize).map(|i| alphabet[(i * 7 + i / 13) % alphabet.len()]).collect();
    std::fs::write(&corpus, text).unwrap();
    let out = dir.join("run");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nblock_size = 64\nn_layer = 6\nn_head = 12\nn_embd = 768\n\n[data]\npath = {:?}\n\n\
             [train]\nout_dir = {:?}\nbatch_size = 2\nmax_iters = 1\neval_interval = 1000\neval_iters = 1\n\
             log_interval = 1\nthreads = 2\n",
            corpus.to_str().unwrap(),
            out.to_str().unwrap()
        ),
    )
    .unwrap();
    let trained = peak_rss_of_run(&["train", "--config", config.to_str().unwrap(), "--quiet"]);
    let ckpt = out.join("ckpt");
    let ckpt = ckpt.to_str().unwrap();
    let sampled = peak_rss_of_run(&["sample", "--checkpoint", ckpt, "--max-new-tokens", "16", "--threads", "2"]);
    let acc: Value =
        serde_json::from_str(&common::ok(common::lmlab(&["account", "--checkpoint", ckpt, "--json"]))).unwrap();
    let params = acc["params"]["total"].as_u64().unwrap();
    assert!(params > 40_000_000, "a model whose buffers dominate the process: {params} parameters");
    let gen: Value =
        serde_json::from_str(&common::ok(common::lmlab(&["account", "--checkpoint", ckpt, "--batch", "1", "--json"])))
            .unwrap();
    for (what, estimate, measured) in [
        ("training", acc["memory"]["training_peak"].as_u64().unwrap(), trained),
        ("generation", gen["memory"]["generation_peak"].as_u64().unwrap(), sampled),
    ] {
        let rel = (estimate as f64 - measured as f64) / measured as f64;
        eprintln!("{what}: estimate {estimate} B, measured peak RSS {measured} B ({:+.1}%)", 100.0 * rel);
        assert!(rel.abs() < 0.10, "{what}: estimate {estimate} vs measured {measured} ({:+.1}%)", 100.0 * rel);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
