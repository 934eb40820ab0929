//! The distillation loss: kernel against PyTorch (`scripts/make_distill_fixtures.py`), its
//! gradient by finite differences, and the model's training passes with a teacher's logits.

mod common;
use common::{assert_close, check, fixture};
use lmlab::kernels::distill::{distill_backward, distill_forward, DistillLoss};
use lmlab::model::transformer::{ModelConfig, Transformer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    n: usize,
    v: usize,
    temperature: f32,
    alpha: f32,
    eps: f32,
    student: Vec<f32>,
    teacher: Vec<f32>,
    targets: Vec<i32>,
    loss: f64,
    grad: Vec<f64>,
}

fn cases() -> Vec<Case> {
    #[derive(Deserialize)]
    struct File {
        cases: Vec<Case>,
    }
    let text = std::fs::read_to_string(fixture("distill.json")).unwrap();
    serde_json::from_str::<File>(&text).unwrap().cases
}

/// Mean loss and the gradient of the mean, as a training step uses them.
fn loss_and_grad(c: &Case, s: &[f32]) -> (f64, Vec<f32>) {
    let d = DistillLoss { temperature: c.temperature, alpha: c.alpha };
    let mut losses = vec![0.0; c.n];
    let (sum, count) = distill_forward(&mut losses, s, &c.teacher, &c.targets, c.v, d, c.eps);
    let mut grad = vec![0.0; c.n * c.v];
    distill_backward(&mut grad, s, &c.teacher, &c.targets, c.v, d, 1.0 / count as f32, c.eps);
    (sum / count as f64, grad)
}

#[test]
fn loss_and_gradient_match_pytorch() {
    let cases = cases();
    assert_eq!(cases.len(), 4);
    for c in &cases {
        let (loss, grad) = loss_and_grad(c, &c.student);
        assert!((loss - c.loss).abs() <= 1e-5 * c.loss.abs().max(1.0), "{}: loss {loss} vs torch {}", c.name, c.loss);
        assert_close(&format!("{}: grad", c.name), &grad, &c.grad, 1e-5);
        // Ignored rows have no gradient.
        for (r, &t) in c.targets.iter().enumerate() {
            if t < 0 {
                assert!(grad[r * c.v..(r + 1) * c.v].iter().all(|&g| g == 0.0), "{}: row {r}", c.name);
            }
        }
    }
}

#[test]
fn gradient_matches_finite_differences() {
    for c in &cases() {
        let (_, grad) = loss_and_grad(c, &c.student);
        check(&c.name, &c.student, &grad, |s| loss_and_grad(c, s).0);
    }
}

fn tiny(vocab: usize, n_embd: usize, n_layer: usize) -> Transformer {
    let cfg = ModelConfig { vocab_size: vocab, block_size: 8, n_layer, n_head: 2, n_embd, ..ModelConfig::default() };
    let mut m = Transformer::new(cfg, 2).unwrap();
    m.init(n_embd as u64);
    m
}

#[test]
fn a_model_trains_on_the_teacher_logits_and_evaluates_with_cross_entropy() {
    let (b, t, v) = (2, 8, 13);
    let mut teacher = tiny(v, 32, 2);
    let mut student = tiny(v, 16, 1);
    let idx: Vec<u32> = (0..b * t).map(|i| (i * 5 % v) as u32).collect();
    let targets: Vec<i32> = (0..b * t).map(|i| if i == 3 { -1 } else { (i * 7 % v) as i32 }).collect();
    teacher.forward_lm(&idx, None, b, t, false, 0).unwrap();
    let soft = teacher.logits().to_vec();
    let d = DistillLoss { temperature: 2.0, alpha: 0.7 };
    student.set_teacher_logits(d, &soft).unwrap();

    // The training pass's loss is the kernel's, its gradient reaches the parameters.
    let loss = student.forward_lm(&idx, Some(&targets), b, t, true, 0).unwrap().unwrap();
    let logits = student.logits().to_vec();
    let mut losses = vec![0.0; b * t];
    let (sum, count) = distill_forward(&mut losses, &logits, &soft, &targets, v, d, 0.0);
    assert_eq!(loss, (sum / count as f64) as f32);
    student.zero_grad();
    student.backward().unwrap();
    assert!(student.grads.iter().any(|&g| g != 0.0));
    // Whole-model finite differences of the distillation loss in one direction.
    let g = student.grads.clone();
    let dir: Vec<f32> = (0..g.len()).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
    let analytic: f64 = g.iter().zip(&dir).map(|(a, b)| *a as f64 * *b as f64).sum();
    let h = 1e-3f32;
    let base = student.params.clone();
    let mut at = |sign: f32| {
        student.params.iter_mut().zip(&base).zip(&dir).for_each(|((p, b), d)| *p = b + sign * h * d);
        student.forward_lm(&idx, Some(&targets), b, t, true, 0).unwrap().unwrap() as f64
    };
    let numeric = (at(1.0) - at(-1.0)) / (2.0 * h as f64);
    student.params.copy_from_slice(&base);
    assert!((numeric - analytic).abs() <= 2e-2 * analytic.abs().max(1e-2), "{numeric} vs {analytic}");

    // Evaluation passes report the plain cross-entropy.
    let eval = student.forward_lm(&idx, Some(&targets), b, t, false, 0).unwrap().unwrap();
    student.clear_teacher_logits();
    let ce = student.forward_lm(&idx, Some(&targets), b, t, true, 0).unwrap().unwrap();
    assert_eq!(eval, ce);
    assert_ne!(loss, ce);

    // Logits of another batch shape, or bad settings, are errors.
    student.set_teacher_logits(d, &soft[..v * t]).unwrap();
    let err = format!("{:#}", student.forward_lm(&idx, Some(&targets), b, t, true, 0).unwrap_err());
    assert!(err.contains("teacher's logits"), "{err}");
    assert!(student.set_teacher_logits(DistillLoss { temperature: 0.0, alpha: 0.5 }, &soft).is_err());
    assert!(student.set_teacher_logits(DistillLoss { temperature: 1.0, alpha: 1.5 }, &soft).is_err());
}

// ---------------------------------------------------------------------------------------------
// `[distill]` in training runs

mod runs {
    use lmlab::config::RunConfig;
    use lmlab::io::checkpoint;
    use lmlab::train::{self, TrainOptions};
    use std::path::Path;

    fn quiet() -> TrainOptions {
        TrainOptions { quiet: true, ..Default::default() }
    }

    fn lm_config(data: &Path, out: &Path, n_embd: usize, iters: usize, distill: &str) -> RunConfig {
        let text = format!(
            "[model]\nblock_size = 16\nn_layer = 1\nn_head = 2\nn_embd = {n_embd}\ndropout = 0.0\n\
             [data]\npath = {:?}\n[train]\nout_dir = {:?}\nbatch_size = 8\nmax_iters = {iters}\neval_interval = \
             {iters}\neval_iters = 4\n[optim]\nlearning_rate = 3e-3\nwarmup_iters = 5\n{distill}",
            data.display().to_string(),
            out.display().to_string()
        );
        RunConfig::from_toml_str(&text, &[]).unwrap()
    }

    fn text(n: usize) -> String {
        let words = ["the cat sat on the mat. ", "a dog ran to the park. ", "we like tea and cake. "];
        (0..n).map(|i| words[(i * 7 + i / 3) % 3]).collect()
    }

    #[test]
    fn a_student_trains_from_a_teacher_and_the_teacher_stays_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("corpus.txt");
        std::fs::write(&data, text(400)).unwrap();
        let teacher_dir = dir.path().join("teacher");
        train::train(lm_config(&data, &teacher_dir, 32, 60, ""), None, &quiet()).unwrap();
        let teacher_ckpt = teacher_dir.join("ckpt");
        let before = std::fs::read(teacher_ckpt.join("model.safetensors")).unwrap();

        let distill =
            format!("[distill]\nteacher = {:?}\ntemperature = 2.0\nalpha = 0.7\n", teacher_ckpt.display().to_string());
        let student_dir = dir.path().join("student");
        let s = train::train(lm_config(&data, &student_dir, 16, 40, &distill), None, &quiet()).unwrap();
        assert!(s.val_loss.is_finite() && s.val_loss < 2.5, "{}", s.val_loss);
        assert_eq!(
            std::fs::read(teacher_ckpt.join("model.safetensors")).unwrap(),
            before,
            "the teacher is not trained"
        );
        // The student's checkpoint records the distillation and resumes with it.
        let ck = checkpoint::load(&student_dir.join("ckpt"), 1, true).unwrap();
        assert_eq!(ck.run_config.distill.as_ref().unwrap().alpha, 0.7);
        let mut cfg = ck.run_config.clone();
        cfg.train.max_iters = 45;
        train::train(cfg, Some(&student_dir.join("ckpt")), &quiet()).unwrap();

        // A teacher with another vocabulary, or a missing one, is a clear error.
        let other = dir.path().join("other.txt");
        std::fs::write(&other, text(400).to_uppercase()).unwrap();
        let err = format!(
            "{:#}",
            train::train(lm_config(&other, &dir.path().join("x"), 16, 5, &distill), None, &quiet()).unwrap_err()
        );
        assert!(err.contains("does not fit the checkpoint's tokenizer") || err.contains("vocabulary"), "{err}");
        let missing = "[distill]\nteacher = \"/nonexistent/teacher\"\n";
        let err = format!(
            "{:#}",
            train::train(lm_config(&data, &dir.path().join("y"), 16, 5, missing), None, &quiet()).unwrap_err()
        );
        assert!(err.contains("distillation teacher") && err.contains("/nonexistent/teacher"), "{err}");
        // Bad settings name the key.
        let bad = format!("[distill]\nteacher = {:?}\nalpha = 1.5\n", teacher_ckpt.display().to_string());
        let text = format!("[model]\nblock_size = 16\n[data]\npath = \"x\"\n{bad}");
        let err = format!("{:#}", RunConfig::from_toml_str(&text, &[]).unwrap_err());
        assert!(err.contains("distill.alpha"), "{err}");
        let typo = "[model]\n[distill]\nteacher = \"t\"\ntemprature = 2.0\n";
        let err = format!("{:#}", RunConfig::from_toml_str(typo, &[]).unwrap_err());
        assert!(err.contains("temprature"), "{err}");
        // A student with a longer context than its teacher's.
        let mut cfg = lm_config(&data, &dir.path().join("z"), 16, 5, &distill);
        cfg.model.block_size = 32;
        let err = format!("{:#}", train::train(cfg, None, &quiet()).unwrap_err());
        assert!(err.contains("block_size 16 is shorter than the student's 32"), "{err}");
    }

    #[test]
    fn a_classifier_distils_from_a_classifier() {
        let dir = tempfile::tempdir().unwrap();
        let rows = |n: usize, seed: usize| -> String {
            let (pos, neg) = (["good", "great", "fine"], ["bad", "awful", "poor"]);
            let mut v = vec!["sentence\tlabel".to_string()];
            for i in 0..n {
                let label = (i * 7 + seed) % 2;
                let key = if label == 1 { pos[(i / 2 + seed) % 3] } else { neg[(i / 2 + seed) % 3] };
                v.push(format!("the film was {key} and long \t{label}"));
            }
            v.join("\n") + "\n"
        };
        let (train_f, test_f) = (dir.path().join("train.tsv"), dir.path().join("test.tsv"));
        std::fs::write(&train_f, rows(200, 0)).unwrap();
        std::fs::write(&test_f, rows(60, 1)).unwrap();
        let cfg = |out: &Path, n_embd: usize, distill: &str| {
            let text = format!(
                "[model]\narch = \"encoder\"\nblock_size = 12\nn_layer = 1\nn_head = 2\nn_embd = {n_embd}\n\
                 pooling = \"mean\"\n[data]\ntask = \"classify\"\nformat = \"sst2\"\ntrain = {:?}\ntest = {:?}\n\
                 vocab_size = 300\nmax_len = 10\n[train]\nout_dir = {:?}\nbatch_size = 16\nmax_iters = 60\n\
                 eval_interval = 60\n[optim]\nlearning_rate = 3e-3\nwarmup_iters = 5\n{distill}",
                train_f.display().to_string(),
                test_f.display().to_string(),
                out.display().to_string()
            );
            RunConfig::from_toml_str(&text, &[]).unwrap()
        };
        let teacher = dir.path().join("teacher");
        train::train(cfg(&teacher, 32, ""), None, &quiet()).unwrap();
        let distill = format!("[distill]\nteacher = {:?}\n", teacher.join("ckpt").display().to_string());
        let student = dir.path().join("student");
        train::train(cfg(&student, 16, &distill), None, &quiet()).unwrap();
        let results: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(student.join("results.json")).unwrap()).unwrap();
        assert!(results["test_accuracy"].as_f64().unwrap() >= 0.9, "{results}");
        // The student took the teacher's tokenizer.
        assert_eq!(
            std::fs::read(student.join("ckpt/tokenizer.json")).unwrap(),
            std::fs::read(teacher.join("ckpt/tokenizer.json")).unwrap()
        );
        // An LM teacher cannot teach a classifier.
        let lm = dir.path().join("lm.txt");
        std::fs::write(&lm, "abc ".repeat(300)).unwrap();
        let lm_run = dir.path().join("lm");
        let lm_cfg = format!(
            "[model]\nblock_size = 8\nn_layer = 1\nn_head = 2\nn_embd = 16\n[data]\npath = {:?}\n[train]\nout_dir = {:?}\n\
             max_iters = 2\neval_interval = 2\neval_iters = 1\nbatch_size = 2\n",
            lm.display().to_string(),
            lm_run.display().to_string()
        );
        train::train(RunConfig::from_toml_str(&lm_cfg, &[]).unwrap(), None, &quiet()).unwrap();
        let distill = format!("[distill]\nteacher = {:?}\n", lm_run.join("ckpt").display().to_string());
        let err = format!("{:#}", train::train(cfg(&dir.path().join("s2"), 16, &distill), None, &quiet()).unwrap_err());
        assert!(err.contains("Decoder") && err.contains("Encoder"), "{err}");
    }
}
