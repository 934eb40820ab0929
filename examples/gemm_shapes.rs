//! Times lmlab's GEMM on the products of a training step (S and M configs), 1 and 2 threads:
//! `cargo run --release --example gemm_shapes [-- bf16]` (`bf16`: the AVX-512 BF16 product;
//! `LMLAB_ISA` picks the f32 micro-kernel).
use lmlab::kernels::gemm::{sgemm, sgemm_bf16, Threads};
use std::time::Instant;

fn main() {
    let pool = lmlab::util::thread_pool(2).unwrap();
    let bf16 = std::env::args().any(|a| a == "bf16");
    let gemm = if bf16 { sgemm_bf16 } else { sgemm };
    println!("{}", if bf16 { "bf16 (vdpbf16ps)".to_string() } else { lmlab::kernels::isa::Isa::active().name() });
    let shapes: &[(&str, bool, bool, usize, usize, usize)] = &[
        ("S c_attn fwd NT", false, true, 768, 384, 128),
        ("S c_attn dinp NN", false, false, 768, 128, 384),
        ("S c_attn dW TN", true, false, 384, 128, 768),
        ("S c_fc fwd NT", false, true, 768, 512, 128),
        ("S mlp_proj dW TN", true, false, 128, 512, 768),
        ("M c_fc fwd NT", false, true, 4096, 1536, 384),
        ("M c_fc dinp NN", false, false, 4096, 384, 1536),
        ("M c_fc dW TN", true, false, 1536, 384, 4096),
        ("square NN", false, false, 2048, 2048, 2048),
    ];
    for &(name, ta, tb, m, n, k) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0.0f32; m * n];
        let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
        for th in [Threads::Single, Threads::Pool] {
            let mut ts = vec![];
            pool.install(|| {
                for i in 0..15 {
                    let t = Instant::now();
                    gemm(ta, tb, m, n, k, 1.0, &a, lda, &b, ldb, 0.0, &mut c, n, th);
                    if i >= 3 {
                        ts.push(t.elapsed().as_secs_f64());
                    }
                }
            });
            ts.sort_by(|a, b| a.total_cmp(b));
            let med = ts[ts.len() / 2];
            let gf = 2.0 * (m * n * k) as f64 / med / 1e9;
            println!("{name:<18} {m}x{n}x{k} {th:?}: {:.3} ms, {gf:.1} GF/s", med * 1e3);
        }
    }
}
