//! Micro-benchmark: f32 `matmul_forward` against `quant_matmul_forward` for each quantized type,
//! N = 1 (generation) and N = 256 (prompt), W 384×1536 and 1536×384, 1 and 2 threads.
//! Prints GFLOP/s-equivalent (2·N·rows·cols per product) and the speed-up over f32.
//!
//! Run: `cargo run --release --example quant_matmul` (`LMLAB_ISA=scalar|avx2|avx512,no-vnni`
//! forces an instruction set; the default is the best the CPU has).

use lmlab::kernels::matmul::matmul_forward;
use lmlab::kernels::quant::dot::Isa;
use lmlab::kernels::quant::{quant_matmul_forward, quant_matmul_scratch_len, QuantMatrix, QuantType};
use std::time::Instant;

/// Seconds per call: the best of 5 runs of enough calls to fill ~50 ms.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    let mut reps = 0;
    while t.elapsed().as_secs_f64() < 0.05 {
        f();
        reps += 1;
    }
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> anyhow::Result<()> {
    println!("quantized matmul, ISA {}", Isa::selected().name());
    let types = [QuantType::Q8_0, QuantType::Q4_0, QuantType::Int8, QuantType::W8A8, QuantType::Int4 { group: 128 }];
    for (rows, cols) in [(384, 1536), (1536, 384)] {
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 2654435761usize) % 1000) as f32 / 500.0 - 1.0).collect();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
            for n in [1, 256] {
                let x: Vec<f32> = (0..n * cols).map(|i| ((i * 40503) % 997) as f32 / 498.0 - 1.0).collect();
                let mut out = vec![0f32; n * rows];
                let flops = 2.0 * (n * rows * cols) as f64;
                let t32 = pool.install(|| time(|| matmul_forward(&mut out, &x, &w, None, n, cols, rows)));
                print!("W {rows}x{cols} N {n:3} threads {threads}: f32 {:6.1} GFLOP/s", flops / t32 / 1e9);
                for ty in types {
                    let m = QuantMatrix::quantize(&w, rows, cols, ty)?;
                    let mut scratch = vec![0u8; quant_matmul_scratch_len(&m, n)];
                    let t = pool.install(|| time(|| quant_matmul_forward(&mut out, &x, &m, None, n, &mut scratch)));
                    print!(" | {ty:?} {:6.1} ({:.2}x)", flops / t / 1e9, t32 / t);
                }
                println!();
            }
        }
    }
    Ok(())
}
