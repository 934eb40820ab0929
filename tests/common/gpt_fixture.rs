//! The GPT reference fixtures (scripts/make_fixtures.py: nanoGPT's model in float64) loaded
//! into the default decoder [`Transformer`], which is nanoGPT's GPT.

use super::{assert_close, fixture};
use lmlab::io::tensors::TensorFile;
use lmlab::model::transformer::{AttentionKind, ModelConfig, Transformer};

/// Tolerance of every comparison with the float64 reference.
pub const RTOL: f64 = 1e-4;

/// The bytes of one fixture file (a [`TensorFile`] borrows them).
pub struct GptFixture {
    bytes: Vec<u8>,
}

impl GptFixture {
    pub fn load(name: &str) -> Self {
        GptFixture { bytes: std::fs::read(fixture(name)).expect("fixture file") }
    }

    pub fn file(&self) -> TensorFile<'_> {
        TensorFile::parse(&self.bytes, "fixture").unwrap()
    }
}

/// The fixture's `config` metadata: sizes, bias/tying and the optimiser's settings.
pub fn config_of(tf: &TensorFile) -> serde_json::Value {
    serde_json::from_str(&tf.metadata["config"]).unwrap()
}

/// The default decoder with the fixture's sizes, `attention` and the fixture's initial
/// parameters; asserts that our layout and the reference's have the same tensors and shapes.
pub fn gpt_from_fixture(tf: &TensorFile, attention: AttentionKind) -> Transformer {
    let cfg = config_of(tf);
    let u = |k: &str| cfg[k].as_u64().unwrap() as usize;
    let config = ModelConfig {
        vocab_size: u("vocab_size"),
        block_size: u("block_size"),
        n_layer: u("n_layer"),
        n_head: u("n_head"),
        n_embd: u("n_embd"),
        dropout: 0.0,
        bias: cfg["bias"].as_bool().unwrap(),
        tie_embeddings: cfg["tie_embeddings"].as_bool().unwrap(),
        attention,
        ..ModelConfig::default()
    };
    let mut m = Transformer::new(config, u("batch")).unwrap();
    for t in m.layout.tensors.clone() {
        let (shape, vals) = tf.read_any(&format!("param.{}", t.name)).unwrap();
        assert_eq!(shape, t.shape, "{}", t.name);
        m.params[t.range()].iter_mut().zip(vals).for_each(|(d, v)| *d = v as f32);
    }
    // Every reference parameter exists in our layout, and vice versa.
    let n_ref = tf.st.names().iter().filter(|n| n.starts_with("param.")).count();
    assert_eq!(n_ref, m.layout.tensors.len());
    m
}

/// The batch `{prefix}idx`, `{prefix}targets` of a fixture: (idx, targets, B, T).
pub fn tokens(tf: &TensorFile, prefix: &str) -> (Vec<u32>, Vec<i32>, usize, usize) {
    let (shape, idx) = tf.read_any(&format!("{prefix}idx")).unwrap();
    let (_, tg) = tf.read_any(&format!("{prefix}targets")).unwrap();
    (idx.iter().map(|&x| x as u32).collect(), tg.iter().map(|&x| x as i32).collect(), shape[0], shape[1])
}

/// One forward and backward pass of fixture `name` (in training mode or not: with dropout 0
/// they are the same computation) against the reference's logits, loss and every parameter
/// gradient, at [`RTOL`].
pub fn check_forward_backward(name: &str, attention: AttentionKind, train: bool) {
    let fx = GptFixture::load(name);
    let tf = fx.file();
    let mut m = gpt_from_fixture(&tf, attention);
    let (idx, tg, b, t) = tokens(&tf, "");
    assert!(tg.contains(&-1), "the fixture exercises the ignore index");
    m.zero_grad();
    let loss = m.forward_lm(&idx, Some(&tg), b, t, train, 0).unwrap().unwrap();
    assert_close(&format!("{name} logits"), m.logits(), &tf.read_any("logits").unwrap().1, RTOL);
    assert_close(&format!("{name} loss"), &[loss], &tf.read_any("loss").unwrap().1, RTOL);
    m.backward().unwrap();
    for tv in m.layout.tensors.clone() {
        let (_, want) = tf.read_any(&format!("grad.{}", tv.name)).unwrap();
        assert_close(&format!("{name} grad.{}", tv.name), &m.grads[tv.range()], &want, RTOL);
    }
}
