//! `lmlab explain run efficiency --budget quick` (question 11) through the binary: the numbers
//! it reports have the properties they must have — flash attention's buffers grow linearly and
//! are smaller than dense attention's at the longest length (also in the measured peak memory of
//! the bench processes), both kernels agree, bf16 trains like fp32, generation with and without
//! the KV cache picks the same tokens and the cache is faster, quantized weights are smaller at a
//! small cost in loss, pruning costs more the more it removes, and MPI is measured or says why not.

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

#[test]
fn efficiency_experiment_measures_what_it_claims() {
    let data = Path::new("../shared/data/tinyshakespeare.txt");
    if !data.exists() {
        common::skip(&format!("{} not found", data.display()));
        return;
    }
    let out_dir = std::env::temp_dir().join(format!("lmlab-explain-efficiency-{}", std::process::id()));
    let start = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_lmlab"))
        .args(["explain", "run", "efficiency", "--budget", "quick", "--threads", "2", "--json", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("explain run efficiency --budget quick took {:.1} s", start.elapsed().as_secs_f64());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["question"], 11);
    assert_eq!(r["command"], "lmlab explain run efficiency --budget quick");
    let d = &r["data"];

    // 1. Attention: exact buffers, dense quadratic and flash linear in T.
    let points = d["attention"]["points"].as_array().unwrap();
    let of = |kernel: &str| -> Vec<&Value> { points.iter().filter(|p| p["kernel"] == kernel).collect() };
    let (dense, flash) = (of("dense"), of("flash"));
    assert!(dense.len() >= 4 && dense.len() == flash.len());
    let heads = u(&d["attention"]["heads"]);
    for p in &dense {
        let t = u(&p["t"]);
        assert_eq!(u(&p["buffer_bytes"]), 2 * 4 * heads * t * t, "dense keeps att and datt (NH, T, T)");
    }
    for w in flash.windows(3) {
        let (t, b): (Vec<u64>, Vec<u64>) = w.iter().map(|p| (u(&p["t"]), u(&p["buffer_bytes"]))).unzip();
        assert_eq!((b[1] - b[0]) * (t[2] - t[1]), (b[2] - b[1]) * (t[1] - t[0]), "flash memory is not linear in T");
    }
    let (dl, fl) = (dense.last().unwrap(), flash.last().unwrap());
    assert!(u(&fl["buffer_bytes"]) * 10 < u(&dl["buffer_bytes"]), "flash keeps far less at the longest length");
    for p in points {
        assert!(f(&p["forward_ms"]) > 0.0 && f(&p["backward_ms"]) > 0.0, "{p}");
    }
    // Measured: the bench processes' peak memory differs by about the exact buffer difference.
    let (rd, rf) = (u(&dl["bench_peak_rss_bytes"]), u(&fl["bench_peak_rss_bytes"]));
    let exact = u(&dl["buffer_bytes"]) - u(&fl["buffer_bytes"]);
    assert!(rd > rf && (rd - rf) as f64 > 0.8 * exact as f64, "peak RSS {rd} vs {rf}, exact difference {exact}");
    for a in d["attention"]["dense_vs_flash"].as_array().unwrap() {
        assert!(f(&a["max_abs_diff_out"]) < 1e-4 && f(&a["max_abs_diff_dqkv"]) < 1e-3, "{a}");
    }

    // 2. Number formats: every arm trains; bf16 and f16 reach about fp32's loss.
    let arms = d["formats"]["arms"].as_array().unwrap();
    let loss = |p: &str| f(&arms.iter().find(|a| a["precision"] == p).unwrap()["val_loss"]);
    let fp32 = loss("fp32");
    assert!(fp32.is_finite() && fp32 < 3.0, "fp32 did not train: {fp32}");
    for p in ["bf16", "f16"] {
        assert!((loss(p) - fp32).abs() < 0.05, "{p} {} against fp32 {fp32}", loss(p));
    }

    // 3. The KV cache: the same greedy tokens, fewer positions, less time at the longest length.
    let gens = d["kv_cache"]["points"].as_array().unwrap();
    for g in gens {
        assert_eq!(g["same_tokens"], true, "{g}");
        assert!(u(&g["recompute_positions"]) > u(&g["cached_positions"]) || u(&g["tokens"]) == 1);
    }
    let g = gens.last().unwrap();
    assert!(f(&g["recompute_ms_per_token"]) > f(&g["cached_ms_per_token"]), "{g}");

    // 4. Compression: smaller weights, finite losses near fp32's; more pruning costs more.
    let comp = d["compression"]["points"].as_array().unwrap();
    let base = comp.iter().find(|c| c["kind"] == "fp32").unwrap();
    let named = |n: &str| comp.iter().find(|c| c["name"] == n).unwrap_or_else(|| panic!("no {n}"));
    for c in comp.iter().filter(|c| c["kind"] == "quantize") {
        assert!(u(&c["weight_bytes"]) < u(&base["weight_bytes"]), "{c}");
        assert!((f(&c["val_loss"]) - f(&base["val_loss"])).abs() < 0.05, "{c}");
        assert!(f(&c["decode_tokens_per_s"]) > 0.0);
    }
    assert!(u(&named("int4")["weight_bytes"]) < u(&named("int8")["weight_bytes"]));
    for c in comp.iter().filter(|c| c["kind"] == "prune") {
        assert!(f(&c["val_loss"]).is_finite(), "{c}");
        assert_eq!(u(&c["weight_bytes"]), u(&base["weight_bytes"]), "pruned zeros are stored dense");
    }
    let (p25, p75) = (named("magnitude 25%"), named("magnitude 75%"));
    assert!((f(&p75["sparsity"]) - 0.75).abs() < 0.01, "{p75}");
    assert!(f(&p75["val_loss"]) > f(&p25["val_loss"]), "75% pruning should cost more than 25%");

    // 5. MPI: measured, or the reason it was not.
    let dist = &d["distributed"];
    assert!(
        !dist["points"].as_array().unwrap().is_empty() || dist["not_measured"].as_str().is_some_and(|s| !s.is_empty())
    );

    // Charts exist; findings state the numbers; the report shows the question.
    for c in r["charts"].as_array().unwrap() {
        for k in ["png", "svg"] {
            let file = out_dir.join("efficiency").join(c[k].as_str().unwrap());
            assert!(file.metadata().unwrap().len() > 1000, "{} is empty", file.display());
        }
    }
    let findings: Vec<&str> = r["findings"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    let longest = u(&dl["t"]);
    assert!(findings.iter().any(|s| s.contains(&format!("At T = {longest}")) && s.contains("flash attention")));
    assert!(findings.iter().any(|s| s.contains("same greedy tokens")));
    let html = out_dir.join("report.html");
    let rep = Command::new(env!("CARGO_BIN_EXE_lmlab"))
        .args(["report", "--dir"])
        .arg(&out_dir)
        .arg("--out")
        .arg(&html)
        .output()
        .unwrap();
    assert!(rep.status.success(), "{}", String::from_utf8_lossy(&rep.stderr));
    assert!(std::fs::read_to_string(&html).unwrap().contains("Making it efficient"));
    let _ = std::fs::remove_dir_all(&out_dir);
}
