//! After the first step, a training step (batch sampling, forward, backward, clipping, any
//! optimizer, gradient accumulation) performs no heap allocation, on any thread, in fp32, bf16
//! and f16 (with loss scaling, clean and skipped steps). Counted through the global allocator.

use lmlab::config::{OptimizerName, RunConfig};
use lmlab::data::{Batch, CharTokenizer};
use lmlab::kernels::precision::Precision;
use lmlab::model::transformer::Transformer;
use lmlab::optim::LossScaler;
use lmlab::train::Trainer;
use lmlab::util::thread_pool;
use rand::SeedableRng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
/// Sizes of the first allocations seen while counting, to say what allocated when one does.
static SIZES: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];

fn record(size: usize) {
    let i = ALLOCS.fetch_add(1, Ordering::Relaxed);
    if i < SIZES.len() {
        SIZES[i].store(size, Ordering::Relaxed);
    }
}
static COUNTING: AtomicBool = AtomicBool::new(false);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            record(l.size());
        }
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            record(n);
        }
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is global: tests that count take this lock so they never count each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn training_step_allocates_nothing_after_the_first() {
    let _serial = SERIAL.lock().unwrap();
    let text = "First Citizen:\nBefore we proceed any further, hear me speak.\n".repeat(40);
    let tok = CharTokenizer::from_corpus(&text).unwrap();
    let tokens = tok.encode(&text).unwrap();
    use lmlab::model::transformer::AttentionKind::{Dense, Flash};
    use lmlab::model::transformer::{ActivationKind, ModelConfig, NormKind, NormPosition, Position, ScoreKind};
    let base = ModelConfig { n_layer: 2, n_embd: 64, n_head: 4, block_size: 32, ..ModelConfig::default() };
    // Llama's choices: the general attention kernel with RoPE and grouped-query heads.
    let llama = ModelConfig {
        norm: NormKind::Rmsnorm,
        position: Position::Rope,
        activation: ActivationKind::Swiglu,
        n_kv_head: Some(2),
        bias: false,
        ..base.clone()
    };
    // Post-norm BatchNorm, T5 biases, cosine scores and attention dropout.
    let post_bn = ModelConfig {
        norm: NormKind::Batchnorm,
        norm_position: NormPosition::Post,
        position: Position::T5,
        score: ScoreKind::Cosine,
        attn_dropout: Some(0.1),
        ..base.clone()
    };
    let fp32 = (Precision::Fp32, 65536.0);
    let variants = [
        (ModelConfig { attention: Dense, ..base.clone() }, fp32),
        (ModelConfig { dropout: 0.1, ..base.clone() }, fp32),
        (ModelConfig { attention: Flash, ..base.clone() }, fp32),
        (llama.clone(), fp32),
        (post_bn.clone(), fp32),
        (ModelConfig { dropout: 0.1, ..base.clone() }, (Precision::Bf16, 1.0)),
        (post_bn, (Precision::Bf16, 1.0)),
        (llama.clone(), (Precision::F16, 1024.0)),
        // A loss scale so large that every f16 step overflows and is skipped.
        (llama, (Precision::F16, 2f32.powi(100))),
    ];
    // Each variant also runs a different optimizer, and every other one accumulates gradients.
    use OptimizerName::*;
    let optimizers = [AdamW, Sgd, RmsProp, Adam, Adagrad];
    for (i, (variant, (precision, scale))) in variants.into_iter().enumerate() {
        let mut cfg = RunConfig { model: variant, ..RunConfig::default() };
        cfg.optim.name = optimizers[i % optimizers.len()];
        if matches!(cfg.optim.name, Sgd | RmsProp) {
            cfg.optim.momentum = 0.9;
        }
        cfg.optim.centered = cfg.optim.name == RmsProp;
        let accum = 1 + i % 2;
        let m = &cfg.model;
        // Every other variant is a pruned model, whose steps hold its zeros.
        let pruned = i % 2 == 0;
        let what = format!(
            "{:?}/{:?}/{:?}/dropout {}/{precision:?} scale {scale}/{:?}/accum {accum}/pruned {pruned}",
            m.position, m.norm, m.attention, m.dropout, cfg.optim.name
        );
        let mut model = Transformer::new(cfg.model_config(tok.vocab_size()), 4).unwrap();
        model.init(1);
        if pruned {
            use lmlab::compress::prune::{prunable_weights, prune_model, Method, Pattern, PruneSpec};
            let nm = Pattern::NofM { n: 2, m: 4 };
            let spec = PruneSpec { method: Method::MagnitudeLayer, pattern: nm, include_head: false };
            prune_model(&mut model, &spec, &[], &mut |_, _| {}).unwrap();
            let names = prunable_weights(&model, false);
            let mask = lmlab::model::transformer::SparsityMask::from_zeros(&model.layout, &model.params, &names);
            model.set_sparsity_mask(Some(mask.unwrap()));
        }
        model.set_precision(precision);
        let opt = cfg.optim.build(&model.layout).unwrap();
        let mut tr = Trainer {
            accum,
            model,
            opt,
            schedule: cfg.optim.schedule(),
            clip: lmlab::optim::Clipping::norm(1.0),
            batch: Batch::new(4, 32),
            rng: rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(0),
            step: 0,
            seed: 0,
            scaler: LossScaler::new(precision, scale, 3),
            // The second variant distils from a wider teacher (its forward pass and the
            // distillation loss allocate nothing per step either).
            teacher: (i == 1).then(|| {
                let tc = ModelConfig { n_embd: 48, dropout: 0.0, ..cfg.model_config(tok.vocab_size()) };
                let mut model = Transformer::new_inference(tc, 4).unwrap();
                model.init(2);
                let loss = lmlab::kernels::distill::DistillLoss { temperature: 2.0, alpha: 0.5 };
                lmlab::train::distill::Teacher { model, tokenizer: lmlab::data::Tokenizer::Char(tok.clone()), loss }
            }),
            masking: None,
        };
        let pool = thread_pool(2).unwrap();
        let counted = pool.install(|| {
            tr.step(&tokens).unwrap();
            tr.step(&tokens).unwrap();
            ALLOCS.store(0, Ordering::SeqCst);
            COUNTING.store(true, Ordering::SeqCst);
            let mut skipped = 0;
            for _ in 0..5 {
                skipped += tr.step(&tokens).unwrap().skipped as usize;
            }
            COUNTING.store(false, Ordering::SeqCst);
            // The counted steps took the path the case is about.
            let expect_skips = if scale > 1e20 { 5 } else { 0 };
            assert_eq!(skipped, expect_skips, "{what}: {skipped} skipped steps");
            ALLOCS.load(Ordering::SeqCst)
        });
        let sizes: Vec<usize> = SIZES.iter().map(|s| s.load(Ordering::Relaxed)).take(counted).collect();
        assert_eq!(counted, 0, "{what}: {counted} heap allocations in 5 training steps, sizes {sizes:?}");
    }
}

#[test]
fn generation_allocates_nothing_per_token() {
    let _serial = SERIAL.lock().unwrap();
    use lmlab::model::transformer::{ModelConfig, Position, Transformer};
    let cfg = ModelConfig {
        vocab_size: 30,
        block_size: 48,
        n_layer: 2,
        n_head: 4,
        n_kv_head: Some(2),
        n_embd: 32,
        position: Position::Rope,
        ..ModelConfig::default()
    };
    // Float weights, and every linear layer quantized (GGML Q4_0; int8 per channel, weight-only
    // and W8A8).
    use lmlab::compress::quantize::{quantize_model, KeepFloat, Scheme};
    for scheme in [None, Some(Scheme::Q4_0), Some(Scheme::Int8), Some(Scheme::W8A8), Some(Scheme::Bf16)] {
        let mut model = Transformer::new(cfg.clone(), 1).unwrap();
        model.init(3);
        if let Some(s) = scheme {
            quantize_model(&mut model, s, KeepFloat::default()).unwrap();
        }
        generation_allocations_do_not_grow(&mut model, &format!("{scheme:?}"));
    }
}

/// Asserts that generating 5, 40 or 70 tokens (past block_size 48) with `model` allocates the
/// same, i.e. nothing per token.
fn generation_allocations_do_not_grow(model: &mut lmlab::model::transformer::Transformer, what: &str) {
    use lmlab::infer::sample::{generate, SampleOptions};
    let pool = thread_pool(2).unwrap();
    // Allocations of one generate() call with `n` new tokens (every sampling option on). A
    // worker thread allocates its GEMM packing buffers the first time it runs a product, which
    // work stealing may delay to any call: the least of three calls is the call's own.
    let mut count = |n: usize| {
        pool.install(|| {
            let opts = SampleOptions {
                max_new_tokens: n,
                temperature: 0.9,
                top_k: Some(10),
                top_p: Some(0.9),
                min_p: Some(0.05),
                repetition_penalty: 1.3,
                ..SampleOptions::default()
            };
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
            generate(model, &[1, 2, 3], &opts, &mut rng, |_| {}).unwrap();
            (0..3)
                .map(|_| {
                    ALLOCS.store(0, Ordering::SeqCst);
                    COUNTING.store(true, Ordering::SeqCst);
                    generate(model, &[1, 2, 3], &opts, &mut rng, |_| {}).unwrap();
                    COUNTING.store(false, Ordering::SeqCst);
                    ALLOCS.load(Ordering::SeqCst)
                })
                .min()
                .unwrap()
        })
    };
    // The same fixed set of buffers whether 5 or 40 tokens are generated (all within the cache)
    // or 70 (past block_size, where each step re-runs the last 48 tokens).
    let (few, many, past) = (count(5), count(40), count(70));
    assert_eq!(few, many, "{what}: allocations grow with the number of tokens: {few} for 5, {many} for 40");
    assert_eq!(few, past, "{what}: allocations grow past the cache: {few} for 5, {past} for 70");
}
