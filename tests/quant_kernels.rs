//! Quantization kernels (src/kernels/quant/): GGML Q8_0/Q4_0 byte-exactness against gguf-py
//! fixtures, round-trip error bounds, every instruction-set path against the scalar one (bit
//! for bit), the quantized matmul against an f64 product of the dequantized operands, thread
//! count independence and shape errors.

mod common;

use lmlab::kernels::precision::round_bf16;
use lmlab::kernels::quant::dot::Isa;
use lmlab::kernels::quant::ggml::{self, QK};
use lmlab::kernels::quant::{
    quant_matmul_forward, quant_matmul_forward_isa, quant_matmul_scratch_len, QuantMatrix, QuantType,
};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

const TYPES: [QuantType; 7] = [
    QuantType::Q8_0,
    QuantType::Bf16,
    QuantType::Q4_0,
    QuantType::Int8,
    QuantType::W8A8,
    QuantType::Int4 { group: 32 },
    QuantType::Int4 { group: 64 },
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn ggml_formats_match_gguf_py_byte_for_byte() {
    let text = std::fs::read_to_string(common::fixture("quant/ggml.json")).unwrap();
    let fx: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let x = floats(&case["x"]);
        for (key, bpb) in [("q8_0", ggml::Q8_0_BYTES), ("q4_0", ggml::Q4_0_BYTES)] {
            let mut q = vec![0u8; x.len() / QK * bpb];
            let mut deq = vec![0f32; x.len()];
            if key == "q8_0" {
                ggml::quantize_row_q8_0(&x, &mut q);
                ggml::dequantize_row_q8_0(&q, &mut deq);
            } else {
                ggml::quantize_row_q4_0(&x, &mut q);
                ggml::dequantize_row_q4_0(&q, &mut deq);
            }
            assert_eq!(hex(&q), case[key]["bytes"].as_str().unwrap(), "{name} {key}: bytes");
            let want = floats(&case[key]["dequant"]);
            for (i, (a, b)) in deq.iter().zip(&want).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{name} {key}: dequantized value {i}: {a} vs {b}");
            }
            // The matrix type stores the same blocks.
            let ty = if key == "q8_0" { QuantType::Q8_0 } else { QuantType::Q4_0 };
            let m = QuantMatrix::quantize(&x, 1, x.len(), ty).unwrap();
            assert_eq!(m.data, q, "{name} {key}: QuantMatrix data");
            assert_eq!(m.bytes(), q.len());
        }
    }
}

fn weights(rng: &mut Xoshiro256PlusPlus, rows: usize, cols: usize) -> Vec<f32> {
    let mut w = common::rand_vec(rng, rows * cols, 1.0);
    // Rows of different scales, and a few outliers.
    for (r, row) in w.chunks_mut(cols).enumerate() {
        let s = [0.02f32, 1.0, 7.0][r % 3];
        row.iter_mut().for_each(|v| *v *= s);
        if r % 5 == 4 {
            row[r % cols] *= 20.0;
        }
    }
    w
}

#[test]
fn dequantize_error_is_within_half_a_step() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    let (rows, cols) = (9, 192);
    let w = weights(&mut rng, rows, cols);
    for ty in TYPES {
        let m = QuantMatrix::quantize(&w, rows, cols, ty).unwrap();
        let mut d = vec![0f32; rows * cols];
        m.dequantize(&mut d);
        for (i, (a, b)) in d.iter().zip(&w).enumerate() {
            let (r, c) = (i / cols, i % cols);
            let blk = |n: usize| &w[r * cols + c / n * n..r * cols + c / n * n + n];
            let amax = |s: &[f32]| s.iter().fold(0f32, |m, v| m.max(v.abs()));
            // Allowed error: half a quantization step (plus the f16 rounding of GGML scales);
            // Q4_0 codes the largest magnitude as −8·d and clips +8·d to 7·d: one full step.
            let bound = match ty {
                QuantType::Q8_0 => 0.51 * amax(blk(QK)) / 127.0 * (1.0 + 127.0 / 1024.0),
                QuantType::Q4_0 => 1.01 * amax(blk(QK)) / 8.0 * (1.0 + 8.0 / 1024.0),
                QuantType::Int8 | QuantType::W8A8 => 0.501 * amax(blk(cols)) / 127.0,
                // Half a unit in the last of bf16's 8 significant bits, and exactly the
                // rounding bf16 mixed precision uses.
                QuantType::Bf16 => {
                    assert_eq!(a.to_bits(), round_bf16(*b).to_bits(), "bf16 [{r},{c}]");
                    b.abs() / 256.0
                }
                QuantType::Int4 { group } => {
                    let g = blk(group);
                    let lo = g.iter().fold(0f32, |m, v| m.min(*v));
                    let hi = g.iter().fold(0f32, |m, v| m.max(*v));
                    0.501 * (hi - lo) / 15.0
                }
            };
            assert!((a - b).abs() <= bound + 1e-30, "{ty:?} [{r},{c}]: {a} vs {b} (bound {bound})");
        }
        let f32_bytes = rows * cols * 4;
        let ratio = f32_bytes as f64 / m.bytes() as f64;
        let want = match ty {
            QuantType::Q8_0 => 128.0 / 34.0,
            QuantType::Q4_0 => 128.0 / 18.0,
            QuantType::Int8 | QuantType::W8A8 => 4.0 * cols as f64 / (cols + 4) as f64,
            QuantType::Bf16 => 2.0,
            QuantType::Int4 { group } => 8.0 / (1.0 + 10.0 / group as f64),
        };
        assert!((ratio - want).abs() < 1e-9, "{ty:?}: compression {ratio} vs {want}");
    }
}

/// Runs the product on `isa`; None after saying why if the CPU lacks it.
fn run(isa: Isa, m: &QuantMatrix, x: &[f32], bias: Option<&[f32]>, n: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; n * m.rows];
    let mut scratch = vec![0u8; quant_matmul_scratch_len(m, n)];
    quant_matmul_forward_isa(&mut out, x, m, bias, n, &mut scratch, isa);
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// (rows, cols, n, types): cols not a multiple of 64 where the format allows.
fn shapes() -> Vec<(usize, usize, usize, Vec<QuantType>)> {
    let all = TYPES.to_vec();
    let (i8w, w8a8, bf16) = (QuantType::Int8, QuantType::W8A8, QuantType::Bf16);
    vec![
        (37, 96, 1, vec![QuantType::Q8_0, QuantType::Q4_0, i8w, w8a8, bf16, QuantType::Int4 { group: 32 }]),
        (37, 96, 19, vec![QuantType::Q8_0, QuantType::Q4_0, i8w, w8a8, bf16, QuantType::Int4 { group: 32 }]),
        (70, 384, 1, all.clone()),
        (70, 384, 33, all.clone()),
        (5, 100, 3, vec![i8w, w8a8, bf16]),
        (5, 7, 2, vec![i8w, w8a8, bf16]),
        (3, 224, 17, vec![QuantType::Q4_0, QuantType::Int4 { group: 32 }, i8w, w8a8, bf16]),
        // Weight-only tiles: partial panels (rows not a multiple of 16), every activation-row
        // count of a tile (1..=12 and a remainder past 12), several tasks along both axes.
        (16, 5, 1, vec![i8w, bf16]),
        (100, 33, 2, vec![i8w, bf16]),
        (129, 40, 7, vec![i8w, bf16]),
        (17, 64, 12, vec![i8w, bf16]),
        (65, 48, 13, vec![i8w, bf16]),
        (33, 80, 61, vec![i8w, bf16]),
        // Register tiles: rows not a multiple of 8 or 4, n even, one block per row.
        (41, 64, 2, vec![QuantType::Q8_0, QuantType::Q4_0, QuantType::Int4 { group: 64 }]),
        (9, 32, 3, vec![QuantType::Q8_0, QuantType::Q4_0, QuantType::Int4 { group: 32 }]),
    ]
}

#[test]
fn every_isa_path_equals_scalar_bit_for_bit() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    for isa in [Isa::Avx2, Isa::Avx512Vnni] {
        if !isa.available() {
            common::skip_cpu(&format!("this CPU lacks {}", isa.name()));
            continue;
        }
        for (rows, cols, n, types) in shapes() {
            let w = weights(&mut rng, rows, cols);
            let x = common::rand_vec(&mut rng, n * cols, 3.0);
            let bias = common::rand_vec(&mut rng, rows, 1.0);
            for ty in types {
                let m = QuantMatrix::quantize(&w, rows, cols, ty).unwrap();
                let want = run(Isa::Scalar, &m, &x, Some(&bias), n);
                let got = run(isa, &m, &x, Some(&bias), n);
                assert_eq!(bits(&got), bits(&want), "{} {ty:?} rows {rows} cols {cols} n {n}", isa.name());
            }
        }
    }
}

/// Activations as the kernel sees them: each block of `ab` values quantized to int8 (f16 scale
/// for the GGML types), then dequantized.
fn quantized_activations(x: &[f32], cols: usize, ty: QuantType) -> Vec<f32> {
    let ab = match ty {
        QuantType::Q8_0 | QuantType::Q4_0 => {
            let mut q = vec![0u8; x.len() / QK * ggml::Q8_0_BYTES];
            let mut d = vec![0f32; x.len()];
            ggml::quantize_row_q8_0(x, &mut q);
            ggml::dequantize_row_q8_0(&q, &mut d);
            return d;
        }
        QuantType::Int8 | QuantType::Bf16 => return x.to_vec(),
        QuantType::W8A8 => cols,
        QuantType::Int4 { group } => group,
    };
    let m = QuantMatrix::quantize(x, x.len() / ab, ab, QuantType::W8A8).unwrap();
    let mut d = vec![0f32; x.len()];
    m.dequantize(&mut d);
    d
}

#[test]
fn quant_matmul_matches_the_product_of_dequantized_operands() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    for (rows, cols, n, types) in shapes() {
        let w = weights(&mut rng, rows, cols);
        let x = common::rand_vec(&mut rng, n * cols, 2.0);
        let bias = common::rand_vec(&mut rng, rows, 1.0);
        for ty in types {
            let m = QuantMatrix::quantize(&w, rows, cols, ty).unwrap();
            let mut wd = vec![0f32; rows * cols];
            m.dequantize(&mut wd);
            let xd = quantized_activations(&x, cols, ty);
            let mut out = vec![0f32; n * rows];
            let mut scratch = vec![0u8; quant_matmul_scratch_len(&m, n)];
            quant_matmul_forward(&mut out, &x, &m, Some(&bias), n, &mut scratch);
            // Exact products and integer block sums; the f32 rounding is one product of scales
            // per block, one multiply and one add per block: (blocks + 3) roundings of at most
            // Σ|w·x| each. Int8 and Bf16 (f32 activations) round once per column (an FMA each).
            let weight_only = matches!(ty, QuantType::Int8 | QuantType::Bf16);
            let blocks = if weight_only { cols as f64 } else { (cols / QK).max(1) as f64 };
            for i in 0..n {
                for r in 0..rows {
                    let (wr, xr) = (&wd[r * cols..(r + 1) * cols], &xd[i * cols..(i + 1) * cols]);
                    let want = common::dot(wr, xr) + bias[r] as f64;
                    let mag: f64 = wr.iter().zip(xr).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum::<f64>()
                        + bias[r].abs() as f64;
                    let bound = (blocks + 3.0) * f32::EPSILON as f64 * mag + 1e-30;
                    let got = out[i * rows + r] as f64;
                    assert!((got - want).abs() <= bound, "{ty:?} [{i},{r}]: {got} vs {want} (bound {bound:.2e})");
                }
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let (rows, cols) = (100, 256);
    let w = weights(&mut rng, rows, cols);
    for n in [1, 37] {
        let x = common::rand_vec(&mut rng, n * cols, 1.0);
        for ty in TYPES {
            let m = QuantMatrix::quantize(&w, rows, cols, ty).unwrap();
            let outs: Vec<Vec<u32>> = [1, 2]
                .iter()
                .map(|&t| {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
                    pool.install(|| {
                        let mut out = vec![0f32; n * rows];
                        let mut scratch = vec![0u8; quant_matmul_scratch_len(&m, n)];
                        quant_matmul_forward(&mut out, &x, &m, None, n, &mut scratch);
                        bits(&out)
                    })
                })
                .collect();
            assert_eq!(outs[0], outs[1], "{ty:?} n {n}");
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let w = vec![0.5f32; 4 * 48];
    for ty in [QuantType::Q8_0, QuantType::Q4_0] {
        let e = QuantMatrix::quantize(&w, 4, 48, ty).unwrap_err().to_string();
        assert!(e.contains("cols 48 is not a multiple of the block size 32"), "{e}");
    }
    let e = QuantMatrix::quantize(&w, 4, 48, QuantType::Int4 { group: 48 }).unwrap_err().to_string();
    assert!(e.contains("group 48 must be a positive multiple of 32"), "{e}");
    let e = QuantMatrix::quantize(&w, 2, 96, QuantType::Int4 { group: 64 }).unwrap_err().to_string();
    assert!(e.contains("cols 96 is not a multiple of the group size 64"), "{e}");
    let e = QuantMatrix::quantize(&w, 5, 48, QuantType::Int8).unwrap_err().to_string();
    assert!(e.contains("expected rows 5 × cols 48"), "{e}");
    let mut bad = w.clone();
    bad[50] = f32::NAN;
    let e = QuantMatrix::quantize(&bad, 4, 48, QuantType::Int8).unwrap_err().to_string();
    assert!(e.contains("row 1, col 2"), "{e}");
    assert!(QuantMatrix::quantize(&w, 4, 48, QuantType::Int8).is_ok());
}

#[test]
fn int4_holds_gptq_codes_scales_and_zeros() {
    let (rows, cols, group) = (3, 128, 64);
    let codes: Vec<u8> = (0..rows * cols).map(|i| ((i * 7 + i / 5) % 16) as u8).collect();
    let scales: Vec<f32> = (0..rows * 2).map(|i| 0.01 * (i + 1) as f32).collect();
    let zeros: Vec<u8> = (0..rows * 2).map(|i| (3 + i) as u8).collect();
    let m = QuantMatrix::from_int4_codes(rows, cols, group, &codes, scales.clone(), zeros.clone()).unwrap();
    let mut d = vec![0f32; rows * cols];
    m.dequantize(&mut d);
    for (i, v) in d.iter().enumerate() {
        let g = i / cols * 2 + i % cols / group;
        assert_eq!(*v, scales[g] * (codes[i] as i32 - zeros[g] as i32) as f32, "element {i}");
    }
    assert!(QuantMatrix::from_int4_codes(rows, cols, group, &codes[1..], scales, zeros).is_err());
}

/// Int8 and Bf16 (weight-only) on every path are the arithmetic their module documents: per
/// output, an f32 `fma` chain over the columns in order from the stored weights (int8 codes, or
/// bf16 values widened exactly), times the row's scale (int8), plus the bias — bit for bit, for
/// N = 1 and N > 1.
#[test]
fn weight_only_is_the_documented_fma_chain() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(17);
    let (rows, cols) = (45, 72);
    let w = weights(&mut rng, rows, cols);
    for ty in [QuantType::Int8, QuantType::Bf16] {
        let m = QuantMatrix::quantize(&w, rows, cols, ty).unwrap();
        let codes = m.stored_data();
        let weight = |i: usize| match ty {
            QuantType::Int8 => codes[i] as i8 as f32,
            _ => f32::from_bits((u16::from_le_bytes([codes[2 * i], codes[2 * i + 1]]) as u32) << 16),
        };
        assert_eq!(codes.len(), rows * cols * if ty == QuantType::Bf16 { 2 } else { 1 });
        let bias = common::rand_vec(&mut rng, rows, 1.0);
        for n in [1, 5, 26] {
            let x = common::rand_vec(&mut rng, n * cols, 3.0);
            let mut want = vec![0f32; n * rows];
            for i in 0..n {
                for r in 0..rows {
                    let acc = (0..cols).fold(0f32, |acc, k| weight(r * cols + k).mul_add(x[i * cols + k], acc));
                    want[i * rows + r] = if ty == QuantType::Int8 { acc * m.scales[r] } else { acc } + bias[r];
                }
            }
            for isa in Isa::ALL {
                if !isa.available() {
                    common::skip_cpu(&format!("this CPU lacks {}", isa.name()));
                    continue;
                }
                let got = run(isa, &m, &x, Some(&bias), n);
                assert_eq!(bits(&got), bits(&want), "{ty:?} {} n {n}", isa.name());
            }
        }
    }
}

/// An Int4 matrix with a column order (GPTQ act-order) computes exactly what the unpermuted
/// matrix of the same codes computes on the activations gathered into that order, on every
/// path, for N = 1 and N > 1; it dequantizes each stored column to its input feature, its
/// order travels in `bytes`, and an order that is not a permutation is refused.
#[test]
fn int4_with_a_column_order_equals_the_gathered_product() {
    use rand::seq::SliceRandom;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(23);
    for (rows, cols, n, group) in [(41, 128, 1, 32), (41, 128, 5, 64), (70, 384, 33, 32), (9, 64, 2, 64)] {
        let w = weights(&mut rng, rows, cols);
        let plain = QuantMatrix::quantize(&w, rows, cols, QuantType::Int4 { group }).unwrap();
        let mut perm: Vec<u32> = (0..cols as u32).collect();
        perm.shuffle(&mut rng);
        let permuted = plain.clone().with_perm(perm.clone()).unwrap();
        assert_eq!(permuted.bytes(), plain.bytes() + 4 * cols);
        let x = common::rand_vec(&mut rng, n * cols, 3.0);
        let gathered: Vec<f32> = x.chunks(cols).flat_map(|row| perm.iter().map(move |&c| row[c as usize])).collect();
        let bias = common::rand_vec(&mut rng, rows, 1.0);
        let want = run(Isa::Scalar, &plain, &gathered, Some(&bias), n);
        for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni] {
            if !isa.available() {
                common::skip_cpu(&format!("this CPU lacks {}", isa.name()));
                continue;
            }
            let got = run(isa, &permuted, &x, Some(&bias), n);
            assert_eq!(bits(&got), bits(&want), "{} rows {rows} cols {cols} n {n} group {group}", isa.name());
        }
        let (mut dp, mut dq) = (vec![0f32; rows * cols], vec![0f32; rows * cols]);
        plain.dequantize(&mut dp);
        permuted.dequantize(&mut dq);
        for r in 0..rows {
            for (k, &c) in perm.iter().enumerate() {
                assert_eq!(dq[r * cols + c as usize], dp[r * cols + k], "row {r}, stored column {k}");
            }
        }
    }
    let m = QuantMatrix::quantize(&vec![0.5f32; 64], 1, 64, QuantType::Int4 { group: 32 }).unwrap();
    let mut twice: Vec<u32> = (0..64).collect();
    twice[3] = 5;
    let e = m.clone().with_perm(twice).unwrap_err().to_string();
    assert!(e.contains("not a permutation"), "{e}");
    assert!(m.clone().with_perm((0..63).collect()).is_err());
    let q8 = QuantMatrix::quantize(&vec![0.5f32; 64], 1, 64, QuantType::Q8_0).unwrap();
    assert!(q8.with_perm((0..64).collect()).unwrap_err().to_string().contains("only Int4"));
}
