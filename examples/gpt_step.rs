//! One GPT training step, read top to bottom: the default decoder `Transformer` is nanoGPT's
//! GPT-2 (learned positions, pre-LayerNorm, GELU-tanh MLP, tied lm_head), and a step is
//! forward (logits and mean cross-entropy), backward (every gradient), global-norm clipping
//! and one AdamW update, as in nanoGPT's train.py. `lmlab train` runs the same calls in a loop
//! with batches, evaluation and checkpoints around them.
//!
//! `cargo run --release --example gpt_step`

use lmlab::data::CharTokenizer;
use lmlab::model::transformer::{ModelConfig, Transformer};
use lmlab::optim::{clip_grad_norm, AdamW, AdamWConfig};

fn main() -> anyhow::Result<()> {
    let text = "First Citizen:\nBefore we proceed any further, hear me speak.\n";
    let tokenizer = CharTokenizer::from_corpus(text)?;
    let tokens = tokenizer.encode(text)?;

    // nanoGPT's GPT with every choice at its default; only the sizes are small.
    let (b, t) = (2, 16);
    let config = ModelConfig { vocab_size: tokenizer.vocab_size(), block_size: t, ..ModelConfig::default() };
    let mut model = Transformer::new(config, b)?;
    model.init(1337); // N(0, 0.02); residual projections N(0, 0.02/√(2·n_layer))
    println!("{} parameters in {} tensors", model.num_params(), model.layout.tensors.len());

    // A batch: B rows of T tokens, each target the next token (idx shifted by one).
    let (mut idx, mut targets) = (Vec::with_capacity(b * t), Vec::with_capacity(b * t));
    for row in 0..b {
        let start = row * t;
        idx.extend_from_slice(&tokens[start..start + t]);
        targets.extend(tokens[start + 1..start + t + 1].iter().map(|&x| x as i32));
    }

    let mut optimizer =
        AdamW::new(AdamWConfig { weight_decay: 0.1, beta2: 0.95, ..AdamWConfig::default() }, &model.layout);
    for step in 0..3 {
        // Forward: logits (B, T, V) and the mean cross-entropy. `train` turns dropout on (its
        // rate is 0 by default), with masks drawn from the seed `step`.
        model.zero_grad();
        let loss = model.forward_lm(&idx, Some(&targets), b, t, true, step)?.expect("targets give a loss");
        // Backward: ∂loss/∂every parameter into model.grads (same layout as model.params).
        model.backward()?;
        // Clip the global gradient norm to 1, then one AdamW update at a fixed learning rate.
        let norm = clip_grad_norm(&mut model.grads, 1.0);
        optimizer.step(&mut model.params, &model.grads, 1e-3);
        println!("step {step}: loss {loss:.4}, gradient norm {norm:.4}");
    }
    Ok(())
}
