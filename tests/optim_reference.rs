//! Every optimizer matches `torch.optim` (scripts/make_optim_fixtures.py, float64) after each of
//! ten steps on three small tensors, plus checks of gradient scaling and of the per-tensor
//! weight-decay groups.

mod common;
use common::{assert_close, fixture};
use lmlab::io::tensors::TensorFile;
use lmlab::model::{ParamKind, ParamLayout};
use lmlab::optim::{AdagradConfig, AdamConfig, AdamWConfig, Optimizer, OptimizerConfig, RmsPropConfig, SgdConfig};
use serde_json::Value;

const RTOL: f64 = 1e-6;

struct Reference {
    layout: ParamLayout,
    init: Vec<f32>,
    grads: Vec<Vec<f32>>,
    configs: serde_json::Map<String, Value>,
    bytes: Vec<u8>,
}

impl Reference {
    fn load() -> Self {
        let bytes = std::fs::read(fixture("optim.safetensors")).expect("fixture file");
        let tf = TensorFile::parse(&bytes, "fixture").unwrap();
        let steps: usize = tf.metadata["steps"].parse().unwrap();
        let configs: Value = serde_json::from_str(&tf.metadata["configs"]).unwrap();
        let mut layout = ParamLayout::default();
        let mut i = 0;
        while let Ok((shape, _)) = tf.read_any(&format!("init.{i}")) {
            // Matrix: the kind every optimizer decays, as torch decays all three tensors.
            layout.push(format!("t{i}"), &shape, ParamKind::Matrix);
            i += 1;
        }
        assert_eq!(layout.tensors.len(), 3);
        let flat = |prefix: &str| -> Vec<f64> {
            (0..layout.tensors.len()).flat_map(|i| tf.read_any(&format!("{prefix}.{i}")).unwrap().1).collect()
        };
        let init = flat("init").into_iter().map(|x| x as f32).collect();
        let grads = (0..steps).map(|s| flat(&format!("grad.{s}")).into_iter().map(|x| x as f32).collect()).collect();
        let configs = configs.as_object().unwrap().clone();
        drop(tf);
        Reference { layout, init, grads, configs, bytes }
    }

    /// The reference parameters of config `name` after step `s`, flattened.
    fn expected(&self, name: &str, s: usize) -> Vec<f64> {
        let tf = TensorFile::parse(&self.bytes, "fixture").unwrap();
        (0..self.layout.tensors.len()).flat_map(|i| tf.read_any(&format!("{name}.{s}.{i}")).unwrap().1).collect()
    }
}

fn f(c: &Value, key: &str, default: f32) -> f32 {
    c.get(key).map_or(default, |v| v.as_f64().unwrap() as f32)
}

fn b(c: &Value, key: &str) -> bool {
    c.get(key).is_some_and(|v| v.as_bool().unwrap())
}

/// Our configuration for a torch one (torch's defaults where a key is absent), and its lr.
fn config_of(c: &Value) -> (OptimizerConfig, f32) {
    let lr = f(c, "lr", f32::NAN);
    let wd = |default| f(c, "weight_decay", default);
    let config = match c["optimizer"].as_str().unwrap() {
        "SGD" => OptimizerConfig::Sgd(SgdConfig {
            momentum: f(c, "momentum", 0.0),
            dampening: f(c, "dampening", 0.0),
            nesterov: b(c, "nesterov"),
            weight_decay: wd(0.0),
            decay_embeddings: false,
        }),
        "Adam" | "AdamW" => {
            let betas =
                c.get("betas").map(|v| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect());
            let betas: Vec<f32> = betas.unwrap_or(vec![0.9, 0.999]);
            if c["optimizer"] == "AdamW" {
                OptimizerConfig::AdamW(AdamWConfig {
                    beta1: betas[0],
                    beta2: betas[1],
                    eps: f(c, "eps", 1e-8),
                    weight_decay: wd(0.01),
                    decay_embeddings: false,
                })
            } else {
                OptimizerConfig::Adam(AdamConfig {
                    beta1: betas[0],
                    beta2: betas[1],
                    eps: f(c, "eps", 1e-8),
                    weight_decay: wd(0.0),
                    amsgrad: b(c, "amsgrad"),
                    decay_embeddings: false,
                })
            }
        }
        "RMSprop" => OptimizerConfig::RmsProp(RmsPropConfig {
            alpha: f(c, "alpha", 0.99),
            eps: f(c, "eps", 1e-8),
            momentum: f(c, "momentum", 0.0),
            centered: b(c, "centered"),
            weight_decay: wd(0.0),
            decay_embeddings: false,
        }),
        "Adagrad" => OptimizerConfig::Adagrad(AdagradConfig {
            lr_decay: f(c, "lr_decay", 0.0),
            weight_decay: wd(0.0),
            initial_accumulator_value: f(c, "initial_accumulator_value", 0.0),
            eps: f(c, "eps", 1e-10),
            decay_embeddings: false,
        }),
        other => panic!("unknown optimizer {other}"),
    };
    (config, lr)
}

#[test]
fn every_optimizer_matches_pytorch_at_every_step() {
    let r = Reference::load();
    let mut seen = std::collections::BTreeSet::new();
    for (name, c) in &r.configs {
        let (config, lr) = config_of(c);
        let mut opt = Optimizer::new(&config, &r.layout);
        seen.insert(opt.name());
        let mut params = r.init.clone();
        let mut worst = 0.0f64;
        for (s, g) in r.grads.iter().enumerate() {
            opt.step(&mut params, g, lr);
            worst = worst.max(assert_close(&format!("{name} step {s}"), &params, &r.expected(name, s), RTOL));
        }
        assert_eq!(opt.steps(), r.grads.len() as u64);
        // The trajectory moved far beyond the tolerance, so the comparison could have failed.
        let last = r.expected(name, r.grads.len() - 1);
        let moved = r.init.iter().zip(&last).fold(0.0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
        assert!(moved > 1e3 * RTOL, "{name}: parameters barely moved ({moved:.2e})");
        eprintln!("{name:>18}: worst relative error {worst:.2e} over {} steps", r.grads.len());
    }
    assert_eq!(seen.len(), 5, "every optimizer kind is covered: {seen:?}");
}

/// The configurations differ from each other by far more than the tolerance, so a mix-up of
/// hyperparameters (say, dampening ignored) would fail the test above.
#[test]
fn reference_configurations_are_distinguishable() {
    let r = Reference::load();
    let last = r.grads.len() - 1;
    let pairs = [
        ("sgd_plain", "sgd_momentum"),
        ("sgd_momentum", "sgd_nesterov"),
        ("adam_default", "adam_wd"),
        ("rmsprop_default", "rmsprop_centered"),
        ("rmsprop_default", "rmsprop_wd"),
        ("adagrad_default", "adagrad_decay"),
        ("adam_wd", "adamw"),
    ];
    for (a, b) in pairs {
        let (x, y) = (r.expected(a, last), r.expected(b, last));
        let scale = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = x.iter().zip(&y).fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
        assert!(diff / scale > 1e3 * RTOL, "{a} vs {b}: only {:.2e} apart", diff / scale);
    }
}

/// Every configuration with some weight decay and every bit of optional state switched on.
fn full_configs() -> Vec<OptimizerConfig> {
    vec![
        OptimizerConfig::AdamW(AdamWConfig { weight_decay: 0.1, ..Default::default() }),
        OptimizerConfig::Adam(AdamConfig { weight_decay: 0.1, amsgrad: true, ..Default::default() }),
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            dampening: 0.1,
            nesterov: false,
            weight_decay: 0.1,
            ..Default::default()
        }),
        OptimizerConfig::Sgd(SgdConfig { momentum: 0.9, nesterov: true, weight_decay: 0.1, ..Default::default() }),
        OptimizerConfig::RmsProp(RmsPropConfig {
            momentum: 0.5,
            centered: true,
            weight_decay: 0.1,
            ..Default::default()
        }),
        OptimizerConfig::Adagrad(AdagradConfig {
            lr_decay: 0.01,
            weight_decay: 0.1,
            initial_accumulator_value: 0.1,
            ..Default::default()
        }),
    ]
}

#[test]
fn grad_scale_half_with_doubled_gradients_equals_scale_one() {
    let r = Reference::load();
    for config in full_configs() {
        let mut a = Optimizer::new(&config, &r.layout);
        let mut b = Optimizer::new(&config, &r.layout);
        let (mut pa, mut pb) = (r.init.clone(), r.init.clone());
        for g in &r.grads {
            let doubled: Vec<f32> = g.iter().map(|x| 2.0 * x).collect();
            a.step_scaled(&mut pa, g, 0.01, 1.0);
            b.step_scaled(&mut pb, &doubled, 0.01, 0.5);
        }
        // 2x then 0.5x is exact in binary floating point, so the trajectories are identical.
        assert_eq!(pa, pb, "{}", a.name());
        for ((na, sa), (nb, sb)) in a.state_tensors().iter().zip(b.state_tensors()) {
            assert_eq!((na, sa), (&nb, &sb));
        }
        // And the scale is really applied: scale 1 on doubled gradients goes elsewhere.
        let mut c = Optimizer::new(&config, &r.layout);
        let mut pc = r.init.clone();
        for g in &r.grads {
            let doubled: Vec<f32> = g.iter().map(|x| 2.0 * x).collect();
            c.step_scaled(&mut pc, &doubled, 0.01, 1.0);
        }
        assert_ne!(pa, pc, "{}", a.name());
    }
}

/// Biases, norm gains and (by default) embeddings get no weight decay; buffers are never touched;
/// matrices are decayed.
#[test]
fn weight_decay_follows_the_param_kinds_and_buffers_are_skipped() {
    let kinds = [ParamKind::Matrix, ParamKind::Embedding, ParamKind::Bias, ParamKind::Norm, ParamKind::Buffer];
    let mut layout = ParamLayout::default();
    for (i, k) in kinds.iter().enumerate() {
        layout.push(format!("t{i}"), &[7 + i], *k);
    }
    let n = layout.total;
    let init: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3).collect();
    let grads: Vec<Vec<f32>> =
        (0..5).map(|s| (0..n).map(|i| (((i + 3 * s) * 13 % 7) as f32 - 3.0) * 0.2).collect()).collect();
    let no_decay = |c: &OptimizerConfig| -> OptimizerConfig {
        let mut c = c.clone();
        match &mut c {
            OptimizerConfig::AdamW(c) => c.weight_decay = 0.0,
            OptimizerConfig::Adam(c) => c.weight_decay = 0.0,
            OptimizerConfig::Sgd(c) => c.weight_decay = 0.0,
            OptimizerConfig::RmsProp(c) => c.weight_decay = 0.0,
            OptimizerConfig::Adagrad(c) => c.weight_decay = 0.0,
        }
        c
    };
    for config in full_configs() {
        let run = |config: &OptimizerConfig| {
            let mut opt = Optimizer::new(config, &layout);
            let mut p = init.clone();
            for g in &grads {
                opt.step(&mut p, g, 0.05);
            }
            p
        };
        let (with, without) = (run(&config), run(&no_decay(&config)));
        let name = Optimizer::new(&config, &layout).name();
        for (t, k) in layout.tensors.iter().zip(kinds) {
            let r = t.range();
            match k {
                ParamKind::Matrix => assert_ne!(with[r.clone()], without[r], "{name}: matrix not decayed"),
                ParamKind::Buffer => assert_eq!(with[r.clone()], init[r], "{name}: buffer changed"),
                _ => {
                    assert_eq!(with[r.clone()], without[r.clone()], "{name}: {k:?} decayed");
                    assert_ne!(with[r.clone()], init[r], "{name}: {k:?} not updated");
                }
            }
        }
    }
}

/// The chunked parallel pass gives the same result as the same update on each tensor alone, with
/// tensors straddling chunk boundaries (the chunk is 8192 elements).
#[test]
fn chunk_boundaries_do_not_change_the_update() {
    let sizes = [5000usize, 7000, 9000];
    let mut big = ParamLayout::default();
    for (i, n) in sizes.iter().enumerate() {
        big.push(format!("t{i}"), &[*n], if i == 1 { ParamKind::Bias } else { ParamKind::Matrix });
    }
    let n = big.total;
    let init: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 2.0).collect();
    let grads: Vec<Vec<f32>> =
        (0..3).map(|s| (0..n).map(|i| ((i * 104729 + s * 31) % 997) as f32 / 997.0 - 0.5).collect()).collect();
    for config in full_configs() {
        let mut whole = Optimizer::new(&config, &big);
        let mut p = init.clone();
        for g in &grads {
            whole.step_scaled(&mut p, g, 0.01, 0.7);
        }
        for t in &big.tensors {
            let mut one = ParamLayout::default();
            one.push("t", &t.shape, t.kind);
            let mut opt = Optimizer::new(&config, &one);
            let r = t.range();
            let mut q = init[r.clone()].to_vec();
            for g in &grads {
                opt.step_scaled(&mut q, &g[r.clone()], 0.01, 0.7);
            }
            assert_eq!(p[r.clone()], q[..], "{} tensor {}", whole.name(), t.name);
        }
    }
}

#[test]
fn state_tensors_list_only_the_state_in_use() {
    let r = Reference::load();
    let names = |c: OptimizerConfig| -> Vec<&'static str> {
        Optimizer::new(&c, &r.layout).state_tensors().iter().map(|(n, _)| *n).collect()
    };
    assert_eq!(names(OptimizerConfig::Sgd(SgdConfig::default())), Vec::<&str>::new());
    assert_eq!(names(OptimizerConfig::Sgd(SgdConfig { momentum: 0.9, ..Default::default() })), ["momentum_buffer"]);
    assert_eq!(names(OptimizerConfig::Adam(AdamConfig::default())), ["exp_avg", "exp_avg_sq"]);
    assert_eq!(
        names(OptimizerConfig::Adam(AdamConfig { amsgrad: true, ..Default::default() })),
        ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
    );
    assert_eq!(names(OptimizerConfig::RmsProp(RmsPropConfig::default())), ["square_avg"]);
    assert_eq!(
        names(OptimizerConfig::RmsProp(RmsPropConfig { centered: true, momentum: 0.1, ..Default::default() })),
        ["square_avg", "grad_avg", "momentum_buffer"]
    );
    assert_eq!(names(OptimizerConfig::Adagrad(AdagradConfig::default())), ["sum"]);
    assert_eq!(names(OptimizerConfig::AdamW(AdamWConfig::default())), ["exp_avg", "exp_avg_sq"]);
    let mut opt = Optimizer::new(&OptimizerConfig::Adam(AdamConfig::default()), &r.layout);
    let mut p = r.init.clone();
    opt.step(&mut p, &r.grads[0], 0.01);
    for (_, s) in opt.state_tensors() {
        assert_eq!(s.len(), r.layout.total);
        assert!(s.iter().any(|x| *x != 0.0));
    }
    // Config round trip through JSON, with the variant selected by `name`.
    let c: OptimizerConfig = serde_json::from_str(r#"{"name": "rmsprop", "momentum": 0.5}"#).unwrap();
    assert_eq!(c, OptimizerConfig::RmsProp(RmsPropConfig { momentum: 0.5, ..Default::default() }));
}
