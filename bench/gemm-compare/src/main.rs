//! gemm-compare: f32 row-major GEMM backends on the shapes a nanoGPT-style
//! Transformer step uses.
//!
//! Backends:
//!   * `gemm` crate 0.19 (pure Rust, arbitrary strides), `Parallelism::None` /
//!     `Parallelism::Rayon(2)`.
//!   * OpenBLAS (Debian libopenblas-dev), `cblas_sgemm` via `cblas-sys`, linked
//!     at build time (build.rs), threads via `openblas_set_num_threads`.
//!   * lmlab's own GEMM (`lmlab::kernels::gemm::sgemm`, path dependency on the
//!     repository root), 1 thread or the rayon pool.
//!   * BLIS (Debian libblis-dev), its own `cblas_sgemm`, loaded at run time with
//!     `dlopen(RTLD_LOCAL | RTLD_DEEPBIND)`: OpenBLAS and BLIS export the same
//!     `cblas_sgemm` / `sgemm_` symbols, so linking both would silently route
//!     every call to whichever library the linker saw first. DEEPBIND makes
//!     BLIS resolve its internal calls inside itself as well.
//!
//! Layouts (row-major, C is always (m, n) with ldc = n):
//!   NN: C = A·B,   A stored (m,k), B stored (k,n)   -> dinp = dout·W
//!   NT: C = A·Bᵀ,  A stored (m,k), B stored (n,k)   -> out  = inp·Wᵀ
//!   TN: C = Aᵀ·B,  A stored (k,m), B stored (k,n)   -> dW   = doutᵀ·inp
//!
//! Usage: gemm-compare [--quick] [--heads-only]
//!   --quick: short timings, for smoke tests; --heads-only: only the section
//!   comparing serial attention GEMMs with heads spread over rayon workers.

use cblas_sys::{cblas_sgemm, CBLAS_LAYOUT, CBLAS_TRANSPOSE};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::time::{Duration, Instant};

extern "C" {
    fn openblas_set_num_threads(n: c_int);
    fn openblas_get_num_threads() -> c_int;
    fn openblas_get_corename() -> *const c_char;
    fn openblas_get_config() -> *const c_char;
}

// ---------------------------------------------------------------- shapes ---

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layout {
    NN,
    NT,
    TN,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::NN => "NN",
            Layout::NT => "NT",
            Layout::TN => "TN",
        }
    }
}

#[derive(Clone, Debug)]
struct Shape {
    label: String,
    m: usize,
    n: usize,
    k: usize,
    layout: Layout,
}

impl Shape {
    fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
    /// Number of floats in the stored A and B.
    fn a_len(&self) -> usize {
        self.m * self.k
    }
    fn b_len(&self) -> usize {
        self.k * self.n
    }
}

struct Config {
    name: &'static str,
    batch: usize,
    seq: usize,
    c: usize,
    vocab: usize,
    layers: usize,
    head_size: usize,
}

impl Config {
    fn tokens(&self) -> usize {
        self.batch * self.seq
    }
    fn n_head(&self) -> usize {
        self.c / self.head_size
    }
}

const S_CFG: Config = Config { name: "S", batch: 12, seq: 64, c: 128, vocab: 65, layers: 4, head_size: 32 };
const M_CFG: Config = Config { name: "M", batch: 16, seq: 256, c: 384, vocab: 65, layers: 6, head_size: 64 };

/// Adds the shapes of one config and returns its step composition:
/// (index into `shapes`, calls per training step, is_attention).
fn add_config(cfg: &Config, shapes: &mut Vec<Shape>) -> Vec<(usize, usize, bool)> {
    let n = cfg.tokens();
    let c = cfg.c;
    let mut step = Vec::new();
    // (name, out_features, in_features, calls per step)
    let weights = [
        ("c_attn", 3 * c, c, cfg.layers),
        ("attn.c_proj", c, c, cfg.layers),
        ("c_fc", 4 * c, c, cfg.layers),
        ("mlp.c_proj", c, 4 * c, cfg.layers),
        ("lm_head", cfg.vocab, c, 1),
    ];
    for (wname, oc, ic, calls) in weights {
        let base = format!("{} {wname} W({oc},{ic})", cfg.name);
        // forward: out(N,OC) = inp(N,IC) · Wᵀ
        shapes.push(Shape { label: format!("{base} fwd"), m: n, n: oc, k: ic, layout: Layout::NT });
        step.push((shapes.len() - 1, calls, false));
        // backward: dinp(N,IC) = dout(N,OC) · W(OC,IC)
        shapes.push(Shape { label: format!("{base} dinp"), m: n, n: ic, k: oc, layout: Layout::NN });
        step.push((shapes.len() - 1, calls, false));
        // backward: dW(OC,IC) = doutᵀ(OC,N) · inp(N,IC)
        shapes.push(Shape { label: format!("{base} dW"), m: oc, n: ic, k: n, layout: Layout::TN });
        step.push((shapes.len() - 1, calls, false));
    }
    // attention, per (batch, head): 6 products, two of each layout
    let t = cfg.seq;
    let hs = cfg.head_size;
    let heads = cfg.layers * cfg.batch * cfg.n_head();
    let att = [
        ("Q·Kᵀ fwd, dAtt=dY·Vᵀ", t, t, hs, Layout::NT),
        ("att·V fwd, dQ=dS·K", t, hs, t, Layout::NN),
        ("dV=attᵀ·dY, dK=dSᵀ·Q", t, hs, t, Layout::TN),
    ];
    for (what, m, nn, k, layout) in att {
        shapes.push(Shape { label: format!("{} attn {what}", cfg.name), m, n: nn, k, layout });
        step.push((shapes.len() - 1, 2 * heads, true));
    }
    step
}

// --------------------------------------------------------------- backends ---

const BACKENDS: [&str; 4] = ["gemm", "OpenBLAS", "BLIS", "lmlab"];

type CblasSgemmFn = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    f32,
    *const f32,
    c_int,
    *const f32,
    c_int,
    f32,
    *mut f32,
    c_int,
);
type BliSetThreadsFn = unsafe extern "C" fn(i64);

struct Blis {
    sgemm: CblasSgemmFn,
    set_threads: BliSetThreadsFn,
    info: String,
}

unsafe fn dlsym_checked(h: *mut c_void, name: &str) -> Result<*mut c_void, String> {
    let cname = CString::new(name).unwrap();
    let p = libc::dlsym(h, cname.as_ptr());
    if p.is_null() {
        Err(format!("dlsym({name}) failed"))
    } else {
        Ok(p)
    }
}

fn load_blis() -> Result<Blis, String> {
    unsafe {
        let mut last = String::new();
        for path in ["libblis.so.4", "/usr/lib/x86_64-linux-gnu/libblis.so.4", "libblis.so"] {
            let cpath = CString::new(path).unwrap();
            let h = libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL | libc::RTLD_DEEPBIND);
            if h.is_null() {
                let e = libc::dlerror();
                last = if e.is_null() { "dlopen failed".into() } else { CStr::from_ptr(e).to_string_lossy().into_owned() };
                continue;
            }
            let sgemm: CblasSgemmFn = std::mem::transmute(dlsym_checked(h, "cblas_sgemm")?);
            let set_threads: BliSetThreadsFn = std::mem::transmute(dlsym_checked(h, "bli_thread_set_num_threads")?);
            let mut info = format!("{path}");
            if let Ok(p) = dlsym_checked(h, "bli_info_get_version_str") {
                let f: unsafe extern "C" fn() -> *const c_char = std::mem::transmute(p);
                info += &format!(", version {}", CStr::from_ptr(f()).to_string_lossy());
            }
            if let (Ok(q), Ok(s)) = (dlsym_checked(h, "bli_arch_query_id"), dlsym_checked(h, "bli_arch_string")) {
                let q: unsafe extern "C" fn() -> c_int = std::mem::transmute(q);
                let s: unsafe extern "C" fn(c_int) -> *const c_char = std::mem::transmute(s);
                info += &format!(", arch {}", CStr::from_ptr(s(q())).to_string_lossy());
            }
            return Ok(Blis { sgemm, set_threads, info });
        }
        Err(last)
    }
}

fn cblas_args(s: &Shape) -> (c_int, c_int, c_int, c_int) {
    // (transA, transB, lda, ldb) for row-major storage as described at the top
    let (nt, t) = (CBLAS_TRANSPOSE::CblasNoTrans as c_int, CBLAS_TRANSPOSE::CblasTrans as c_int);
    let (m, n, k) = (s.m as c_int, s.n as c_int, s.k as c_int);
    match s.layout {
        Layout::NN => (nt, nt, k, n),
        Layout::NT => (nt, t, k, k),
        Layout::TN => (t, nt, m, n),
    }
}

/// Run one GEMM with backend `be` (0 gemm, 1 OpenBLAS, 2 BLIS). Thread counts
/// for the BLAS libraries are set globally beforehand (`set_threads`).
fn run_gemm(be: usize, blis: Option<&Blis>, threads: usize, s: &Shape, a: &[f32], b: &[f32], c: &mut [f32]) {
    debug_assert!(a.len() >= s.a_len() && b.len() >= s.b_len() && c.len() >= s.m * s.n);
    let (m, n, k) = (s.m, s.n, s.k);
    match be {
        0 => {
            // logical lhs (m,k), rhs (k,n): (row stride, col stride)
            let (lhs_rs, lhs_cs) = match s.layout {
                Layout::NN | Layout::NT => (k as isize, 1),
                Layout::TN => (1, m as isize),
            };
            let (rhs_rs, rhs_cs) = match s.layout {
                Layout::NN | Layout::TN => (n as isize, 1),
                Layout::NT => (1, k as isize),
            };
            let par = if threads <= 1 { gemm::Parallelism::None } else { gemm::Parallelism::Rayon(threads) };
            unsafe {
                // dst := alpha*dst + beta*lhs*rhs, read_dst=false ignores dst
                gemm::gemm(
                    m, n, k,
                    c.as_mut_ptr(), 1, n as isize, false,
                    a.as_ptr(), lhs_cs, lhs_rs,
                    b.as_ptr(), rhs_cs, rhs_rs,
                    0.0f32, 1.0f32, false, false, false, par,
                );
            }
        }
        1 => {
            let (ta, tb, lda, ldb) = cblas_args(s);
            let tr = |x: c_int| if x == CBLAS_TRANSPOSE::CblasTrans as c_int { CBLAS_TRANSPOSE::CblasTrans } else { CBLAS_TRANSPOSE::CblasNoTrans };
            unsafe {
                cblas_sgemm(
                    CBLAS_LAYOUT::CblasRowMajor, tr(ta), tr(tb),
                    m as c_int, n as c_int, k as c_int,
                    1.0, a.as_ptr(), lda, b.as_ptr(), ldb,
                    0.0, c.as_mut_ptr(), n as c_int,
                );
            }
        }
        2 => {
            let bl = blis.expect("BLIS not loaded");
            let (ta, tb, lda, ldb) = cblas_args(s);
            unsafe {
                (bl.sgemm)(
                    CBLAS_LAYOUT::CblasRowMajor as c_int, ta, tb,
                    m as c_int, n as c_int, k as c_int,
                    1.0, a.as_ptr(), lda, b.as_ptr(), ldb,
                    0.0, c.as_mut_ptr(), n as c_int,
                );
            }
        }
        3 => {
            // lmlab's own GEMM (src/kernels/gemm.rs): the engine's single entry point.
            let (ta, tb, lda, ldb) = match s.layout {
                Layout::NN => (false, false, k, n),
                Layout::NT => (false, true, k, k),
                Layout::TN => (true, false, m, n),
            };
            let th = if threads <= 1 { lmlab::kernels::gemm::Threads::Single } else { lmlab::kernels::gemm::Threads::Pool };
            lmlab::kernels::gemm::sgemm(ta, tb, m, n, k, 1.0, a, lda, b, ldb, 0.0, c, n, th);
        }
        _ => unreachable!(),
    }
}

fn set_threads(be: usize, blis: Option<&Blis>, threads: usize) {
    unsafe {
        match be {
            1 => openblas_set_num_threads(threads as c_int),
            2 => (blis.unwrap().set_threads)(threads as i64),
            _ => {}
        }
    }
}

// ------------------------------------------------------------ utilities ---

struct Rng(u64);
impl Rng {
    fn next_f32(&mut self) -> f32 {
        // xorshift64*, uniform in [-1, 1)
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545F4914F6CDD1D);
        ((x >> 40) as f32) / (1u64 << 23) as f32 - 1.0
    }
}

fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1);
    (0..len).map(|_| r.next_f32()).collect()
}

/// Rows of C that are checked against an f64 reference (evenly spread).
fn check_rows(m: usize) -> Vec<usize> {
    let cnt = m.min(48);
    (0..cnt).map(|r| r * m / cnt).collect()
}

/// f64 reference for the selected rows: returns rows.len() * n values.
fn reference_rows(s: &Shape, a: &[f32], b: &[f32], rows: &[usize]) -> Vec<f64> {
    let (m, n, k) = (s.m, s.n, s.k);
    let mut out = vec![0.0f64; rows.len() * n];
    for (ri, &i) in rows.iter().enumerate() {
        let o = &mut out[ri * n..(ri + 1) * n];
        for p in 0..k {
            let av = match s.layout {
                Layout::NN | Layout::NT => a[i * k + p],
                Layout::TN => a[p * m + i],
            } as f64;
            for j in 0..n {
                let bv = match s.layout {
                    Layout::NN | Layout::TN => b[p * n + j],
                    Layout::NT => b[j * k + p],
                } as f64;
                o[j] += av * bv;
            }
        }
    }
    out
}

/// max |c - ref| / max |ref| over the checked rows (normwise relative error).
fn rel_err_rows(c: &[f32], n: usize, rows: &[usize], reference: &[f64]) -> f64 {
    let mut maxdiff = 0.0f64;
    let mut maxref = 0.0f64;
    for (ri, &i) in rows.iter().enumerate() {
        for j in 0..n {
            let r = reference[ri * n + j];
            maxref = maxref.max(r.abs());
            maxdiff = maxdiff.max((c[i * n + j] as f64 - r).abs());
        }
    }
    if maxref == 0.0 { maxdiff } else { maxdiff / maxref }
}

/// max |x - y| / max |x| over full matrices.
fn rel_diff(x: &[f32], y: &[f32]) -> f64 {
    let mut md = 0.0f64;
    let mut mx = 0.0f64;
    for (a, b) in x.iter().zip(y) {
        md = md.max((*a as f64 - *b as f64).abs());
        mx = mx.max((*a as f64).abs());
    }
    if mx == 0.0 { md } else { md / mx }
}

struct TimingParams {
    min_total: f64,
    min_samples: usize,
    warmup: f64,
}

/// Median seconds per call.
fn bench<F: FnMut()>(tp: &TimingParams, mut f: F) -> f64 {
    // warm-up: at least 2 calls and `warmup` seconds
    let t0 = Instant::now();
    let mut calls = 0usize;
    while calls < 2 || t0.elapsed().as_secs_f64() < tp.warmup {
        f();
        calls += 1;
    }
    let est = t0.elapsed().as_secs_f64() / calls as f64;
    // aim for samples of ~ min_total / (2*min_samples) so that the sample
    // count stays well above the minimum
    let target_sample = tp.min_total / (2.0 * tp.min_samples as f64);
    let reps = ((target_sample / est).ceil() as usize).max(1);
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < tp.min_samples || start.elapsed().as_secs_f64() < tp.min_total {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        samples.push(t.elapsed().as_secs_f64() / reps as f64);
        if samples.len() >= 200 {
            break;
        }
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[samples.len() / 2]
}

fn cpu_info() -> (String, bool, bool, bool) {
    let txt = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = txt
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "model name: ?".into());
    let fam = |key: &str| {
        txt.lines()
            .find(|l| l.split(':').next().map(|k| k.trim() == key).unwrap_or(false))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let model = format!("{model} (cpu family {}, model {})", fam("cpu family"), fam("model"));
    let flags = txt.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    (model, has("avx512f"), has("avx2"), has("fma"))
}

/// (busy ticks of the whole machine, ticks used by this process, wall clock)
#[derive(Clone, Copy)]
struct CpuSnap {
    busy: u64,
    own: u64,
    at: Instant,
}

fn cpu_snap() -> CpuSnap {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user)
    let busy = [0usize, 1, 2, 5, 6, 7].iter().map(|&i| f.get(i).copied().unwrap_or(0)).sum();
    let me = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // fields after the ")" of comm: state is field 3; utime=14, stime=15 (1-based)
    let rest = me.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let v: Vec<&str> = rest.split_whitespace().collect();
    let own = v.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0) + v.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    CpuSnap { busy, own, at: Instant::now() }
}

/// Average number of cores kept busy by OTHER processes between two snapshots.
fn foreign_cores(a: CpuSnap, b: CpuSnap) -> f64 {
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let dt = (b.at - a.at).as_secs_f64().max(1e-9);
    let other = b.busy.saturating_sub(a.busy) as f64 - b.own.saturating_sub(a.own) as f64;
    (other / hz / dt).max(0.0)
}

/// Wait (at most `max_s` seconds) until other processes use < `thr` cores,
/// measured over 0.3 s windows.
fn wait_quiet(thr: f64, max_s: f64) {
    let t0 = Instant::now();
    loop {
        let a = cpu_snap();
        std::thread::sleep(Duration::from_millis(300));
        if foreign_cores(a, cpu_snap()) < thr || t0.elapsed().as_secs_f64() > max_s {
            return;
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string()
}

fn fmt_gf(x: Option<f64>) -> String {
    match x {
        Some(v) => format!("{v:.1}"),
        None => "n/a".into(),
    }
}

// -------------------------------------------------- attention over heads ---

/// Attention GEMMs for a whole layer's worth of heads (B·n_head independent
/// products per kind), three ways: one after another with 1-thread GEMMs, one
/// after another with 2-thread GEMMs, and spread over the heads with rayon
/// (2 workers) each calling a 1-thread GEMM. Prints per-step attention time.
fn heads_section(shapes: &[Shape], steps: &[(&Config, &Vec<(usize, usize, bool)>)], blis: Option<&Blis>, tp: &TimingParams, pause_ms: u64) {
    use rayon::prelude::*;
    let nbe = BACKENDS.len();
    let have = |be: usize| be != 2 || blis.is_some();
    let modes = ["serial, 1-thread GEMM", "serial, 2-thread GEMM", "rayon over heads (2 workers), 1-thread GEMM"];
    println!("\n## Attention: one GEMM at a time vs heads in parallel (ms per training step)\n");
    println!("Each attention product kind is run for all B·n_head heads of a layer (distinct buffers per head); the time is scaled to the step (×2 products of each kind × layers). `other CPU` as above.\n");
    println!("| step | mode | gemm | OpenBLAS | BLIS | lmlab | other CPU |");
    println!("|---|---|---|---|---|---|---|");
    for (cfg, step) in steps {
        let heads = cfg.batch * cfg.n_head();
        // step_ms[mode][be]
        let mut step_ms = [[0.0f64; 4]; 3];
        let mut worst_fc = 0.0f64;
        for &(si, calls, is_att) in step.iter() {
            if !is_att {
                continue;
            }
            let s = &shapes[si];
            let mut bufs: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..heads)
                .map(|h| (fill(s.a_len(), 1000 + 2 * h as u64), fill(s.b_len(), 1001 + 2 * h as u64), vec![0.0f32; s.m * s.n]))
                .collect();
            for (mi, _) in modes.iter().enumerate() {
                wait_quiet(0.1, 10.0);
                let snap0 = cpu_snap();
                for be in 0..nbe {
                    if !have(be) {
                        continue;
                    }
                    let threads = if mi == 1 { 2 } else { 1 };
                    for other in 0..nbe {
                        if have(other) {
                            set_threads(other, blis, 1);
                        }
                    }
                    set_threads(be, blis, threads);
                    std::thread::sleep(Duration::from_millis(pause_ms));
                    let t = if mi == 2 {
                        bench(tp, || {
                            bufs.par_iter_mut().for_each(|(a, b, c)| run_gemm(be, blis, 1, s, a, b, c));
                        })
                    } else {
                        bench(tp, || {
                            for (a, b, c) in bufs.iter_mut() {
                                run_gemm(be, blis, threads, s, a, b, c);
                            }
                        })
                    };
                    // t covers `heads` products; the step issues `calls` of them
                    step_ms[mi][be] += t / heads as f64 * calls as f64 * 1e3;
                }
                worst_fc = worst_fc.max(foreign_cores(snap0, cpu_snap()));
            }
        }
        for be in 0..nbe {
            if have(be) {
                set_threads(be, blis, 1);
            }
        }
        for (mi, m) in modes.iter().enumerate() {
            let f = |be: usize| if have(be) { format!("{:.2}", step_ms[mi][be]) } else { "n/a".into() };
            println!("| {} attention | {} | {} | {} | {} | {} | {:.2} |", cfg.name, m, f(0), f(1), f(2), f(3), worst_fc);
        }
    }
}

// ------------------------------------------------------------------ main ---

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // --heads-only: run only the "attention heads in parallel" section
    let heads_only = std::env::args().any(|a| a == "--heads-only");
    let tp = if quick {
        TimingParams { min_total: 0.02, min_samples: 7, warmup: 0.005 }
    } else {
        TimingParams { min_total: 0.2, min_samples: 7, warmup: 0.05 }
    };

    let (model, avx512, avx2, fma) = cpu_info();
    println!("# gemm-compare results\n");
    println!("- CPU: `{model}`");
    println!("- avx512f: {}, avx2: {}, fma: {}", if avx512 { "yes" } else { "no" }, avx2, fma);
    println!("- logical CPUs: {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!("- rayon global pool threads: {}", rayon_threads());
    unsafe {
        println!(
            "- OpenBLAS: core `{}`, config `{}`, default threads {}",
            CStr::from_ptr(openblas_get_corename()).to_string_lossy(),
            CStr::from_ptr(openblas_get_config()).to_string_lossy().trim(),
            openblas_get_num_threads()
        );
    }
    let blis = match load_blis() {
        Ok(b) => {
            println!("- BLIS: {} (cblas_sgemm via dlopen RTLD_LOCAL|RTLD_DEEPBIND)", b.info);
            Some(b)
        }
        Err(e) => {
            println!("- BLIS: NOT available ({e}); column shows n/a");
            None
        }
    };
    println!("- timing: warm-up >= {:.3} s, then median of >= {} samples, >= {:.2} s total per (backend, shape, threads)", tp.warmup, tp.min_samples, tp.min_total);
    println!("- loadavg at start: `{}`", loadavg());
    println!();

    let mut shapes = Vec::new();
    let s_step = add_config(&S_CFG, &mut shapes);
    let m_step = add_config(&M_CFG, &mut shapes);
    shapes.push(Shape { label: "square".into(), m: 2048, n: 2048, k: 2048, layout: Layout::NN });

    let nbe = BACKENDS.len();
    let have = |be: usize| be != 2 || blis.is_some();
    let thread_counts = [1usize, 2];
    let pause_ms = if quick { 20 } else { 150 };
    if heads_only {
        let t0 = Instant::now();
        heads_section(&shapes, &[(&S_CFG, &s_step), (&M_CFG, &m_step)], blis.as_ref(), &tp, pause_ms);
        println!("\n- loadavg at end: `{}`; wall time {:.0} s", loadavg(), t0.elapsed().as_secs_f64());
        return;
    }

    // inputs + f64 reference rows per shape
    let inputs: Vec<(Vec<f32>, Vec<f32>, Vec<usize>, Vec<f64>)> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let a = fill(s.a_len(), 2 * i as u64 + 1);
            let b = fill(s.b_len(), 2 * i as u64 + 2);
            let rows = check_rows(s.m);
            let r = reference_rows(s, &a, &b, &rows);
            (a, b, rows, r)
        })
        .collect();
    let max_c = shapes.iter().map(|s| s.m * s.n).max().unwrap();

    // ---- correctness: once per shape, 1 thread, full outputs compared ----
    println!("## Agreement check (1 thread, once per shape)\n");
    println!("Errors are normwise: max|C - ref| / max|ref|. `vs f64` uses an f64 reference on {} sampled rows; `max pairwise` compares full C matrices of all backends.\n", 48);
    println!("| shape | m×n×k | layout | gemm vs f64 | OpenBLAS vs f64 | BLIS vs f64 | lmlab vs f64 | max pairwise |");
    println!("|---|---|---|---|---|---|---|---|");
    for be in 0..nbe {
        if have(be) {
            set_threads(be, blis.as_ref(), 1);
        }
    }
    let mut worst_check = 0.0f64;
    for (si, s) in shapes.iter().enumerate() {
        let (a, b, rows, r) = &inputs[si];
        let mut outs: Vec<Option<Vec<f32>>> = Vec::new();
        let mut errs = Vec::new();
        for be in 0..nbe {
            if !have(be) {
                outs.push(None);
                errs.push(None);
                continue;
            }
            let mut c = vec![f32::NAN; s.m * s.n];
            run_gemm(be, blis.as_ref(), 1, s, a, b, &mut c);
            let e = rel_err_rows(&c, s.n, rows, r);
            worst_check = worst_check.max(e);
            errs.push(Some(e));
            outs.push(Some(c));
        }
        let mut pair = 0.0f64;
        for x in 0..nbe {
            for y in x + 1..nbe {
                if let (Some(cx), Some(cy)) = (&outs[x], &outs[y]) {
                    pair = pair.max(rel_diff(cx, cy));
                }
            }
        }
        worst_check = worst_check.max(pair);
        let e = |v: &Option<f64>| v.map(|x| format!("{x:.1e}")).unwrap_or_else(|| "n/a".into());
        println!(
            "| {} | {}×{}×{} | {} | {} | {} | {} | {} | {:.1e} |",
            s.label, s.m, s.n, s.k, s.layout.name(), e(&errs[0]), e(&errs[1]), e(&errs[2]), e(&errs[3]), pair
        );
    }
    println!("\nWorst error in the check: {worst_check:.1e} ({})\n", if worst_check < 1e-4 { "OK" } else { "SUSPICIOUS" });

    // ---- timing ----
    // secs[be][shape][thread_idx]
    let mut secs = vec![vec![[f64::NAN; 2]; shapes.len()]; nbe];
    let mut worst_timed_err = vec![0.0f64; nbe];
    let mut c = vec![0.0f32; max_c];
    let bench_start = Instant::now();
    let snap_start = cpu_snap();
    // foreign[shape][thread_idx]: average cores used by other processes while
    // that row was measured
    let mut foreign = vec![[0.0f64; 2]; shapes.len()];
    let mut tries = vec![[0usize; 2]; shapes.len()];
    let quiet_max = 0.15;
    let max_retries = if quick { 0 } else { 3 };
    // Interleaved: for every (shape, threads) all backends run back to back, in
    // an order rotated per shape, so that background load drifting over the run
    // hits the backends alike. Before each measurement every BLAS library is set
    // to 1 thread, the one under test to `threads`, and we pause so that worker
    // threads still spinning from the previous backend go to sleep.
    for (si, s) in shapes.iter().enumerate() {
        let (a, b, rows, r) = &inputs[si];
        for (ti, &threads) in thread_counts.iter().enumerate() {
            // Shared 2-core machine: wait for a quiet moment, measure the row,
            // and re-measure it (up to `max_retries` times) if other processes
            // used more than `quiet_max` cores meanwhile; keep the quietest try.
            let mut best_foreign = f64::INFINITY;
            for attempt in 0..=max_retries {
                wait_quiet(quiet_max * 0.5, if attempt == 0 { 5.0 } else { 15.0 });
                let snap0 = cpu_snap();
                let mut row = [f64::NAN; 4];
                for j in 0..nbe {
                    let be = (j + si + ti) % nbe;
                    if !have(be) {
                        continue;
                    }
                    for other in 0..nbe {
                        if have(other) {
                            set_threads(other, blis.as_ref(), 1);
                        }
                    }
                    set_threads(be, blis.as_ref(), threads);
                    std::thread::sleep(Duration::from_millis(pause_ms));
                    let cc = &mut c[..s.m * s.n];
                    row[be] = bench(&tp, || run_gemm(be, blis.as_ref(), threads, s, a, b, cc));
                    worst_timed_err[be] = worst_timed_err[be].max(rel_err_rows(cc, s.n, rows, r));
                }
                let fc = foreign_cores(snap0, cpu_snap());
                if fc < best_foreign {
                    best_foreign = fc;
                    for be in 0..nbe {
                        secs[be][si][ti] = row[be];
                    }
                }
                tries[si][ti] = attempt + 1;
                if best_foreign <= quiet_max {
                    break;
                }
            }
            foreign[si][ti] = best_foreign;
        }
        eprintln!(
            "[{:6.1}s] {} done, other CPU {:.2}/{:.2} cores (1T/2T), tries {}/{}, loadavg {}",
            bench_start.elapsed().as_secs_f64(),
            s.label,
            foreign[si][0],
            foreign[si][1],
            tries[si][0],
            tries[si][1],
            loadavg()
        );
    }
    for be in 0..nbe {
        if have(be) {
            set_threads(be, blis.as_ref(), 1);
        }
    }
    let errs: Vec<String> = (0..nbe)
        .filter(|&b| have(b))
        .map(|b| format!("{} {:.1e}", BACKENDS[b], worst_timed_err[b]))
        .collect();
    println!("Outputs of the timed runs (incl. 2 threads) vs the f64 reference, worst: {}\n", errs.join(", "));

    // ---- table ----
    println!("## GFLOP/s per shape\n");
    println!("Layouts: NT = inp·Wᵀ (A (m,k), B stored (n,k)); NN = A·B; TN = Aᵀ·B (A stored (k,m)). Best: winner and its margin over the runner-up. `other CPU`: average cores (of the machine's {}) used by other processes while that row was measured — rows with a high value are disturbed; a row measured with more than {quiet_max} was re-measured (`tries`) and the quietest try kept.\n", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!("| shape | m×n×k | layout | threads | gemm GF/s | OpenBLAS GF/s | BLIS GF/s | lmlab GF/s | best | other CPU | tries |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (si, s) in shapes.iter().enumerate() {
        for (ti, &threads) in thread_counts.iter().enumerate() {
            let gf: Vec<Option<f64>> = (0..nbe)
                .map(|be| if have(be) { Some(s.flops() / secs[be][si][ti] / 1e9) } else { None })
                .collect();
            let mut order: Vec<(usize, f64)> = gf.iter().enumerate().filter_map(|(i, v)| v.map(|x| (i, x))).collect();
            order.sort_by(|x, y| y.1.partial_cmp(&x.1).unwrap());
            let best = if order.len() >= 2 {
                format!("{} ({:.2}×)", BACKENDS[order[0].0], order[0].1 / order[1].1)
            } else {
                BACKENDS[order[0].0].to_string()
            };
            println!(
                "| {} | {}×{}×{} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} |",
                s.label, s.m, s.n, s.k, s.layout.name(), threads, fmt_gf(gf[0]), fmt_gf(gf[1]), fmt_gf(gf[2]), fmt_gf(gf[3]), best, foreign[si][ti], tries[si][ti]
            );
        }
    }

    // ---- step sums ----
    println!("\n## Summed GEMM time of one training step (ms)\n");
    for cfg in [&S_CFG, &M_CFG] {
        println!(
            "- {}: B={} T={} N={} C={} n_head={} hs={} vocab={} layers={}",
            cfg.name, cfg.batch, cfg.seq, cfg.tokens(), cfg.c, cfg.n_head(), cfg.head_size, cfg.vocab, cfg.layers
        );
    }
    println!("- per layer: c_attn, attn.c_proj, c_fc, mlp.c_proj × (fwd NT, dinp NN, dW TN); lm_head once × (fwd, dinp, dW);");
    println!("  attention per layer: B·n_head × (QKᵀ and att·V forward + 4 backward products) — each GEMM issued one at a time with the given thread count.");
    println!("- `best-per-shape` picks the fastest backend for each shape separately.\n");
    println!("| step | threads | part | gemm | OpenBLAS | BLIS | lmlab | best-per-shape |");
    println!("|---|---|---|---|---|---|---|---|");
    for (cfg, step) in [(&S_CFG, &s_step), (&M_CFG, &m_step)] {
        for (ti, &threads) in thread_counts.iter().enumerate() {
            for part in ["linear", "attention", "total"] {
                let sel = |is_att: bool| match part {
                    "linear" => !is_att,
                    "attention" => is_att,
                    _ => true,
                };
                let mut sums = vec![0.0f64; nbe];
                let mut best = 0.0f64;
                for &(si, calls, is_att) in step.iter() {
                    if !sel(is_att) {
                        continue;
                    }
                    let mut b = f64::INFINITY;
                    for be in 0..nbe {
                        if have(be) {
                            sums[be] += calls as f64 * secs[be][si][ti];
                            b = b.min(secs[be][si][ti]);
                        }
                    }
                    best += calls as f64 * b;
                }
                let f = |be: usize| if have(be) { format!("{:.2}", sums[be] * 1e3) } else { "n/a".into() };
                let bold = if part == "total" { "**" } else { "" };
                println!(
                    "| {}{}{} | {} | {} | {} | {} | {} | {} | {:.2} |",
                    bold, cfg.name, bold, threads, part, f(0), f(1), f(2), f(3), best * 1e3
                );
            }
        }
    }
    heads_section(&shapes, &[(&S_CFG, &s_step), (&M_CFG, &m_step)], blis.as_ref(), &tp, pause_ms);
    let flops = |step: &Vec<(usize, usize, bool)>| -> f64 { step.iter().map(|&(si, calls, _)| calls as f64 * shapes[si].flops()).sum() };
    println!("\nGEMM FLOPs per step: S {:.3} GFLOP, M {:.2} GFLOP.", flops(&s_step) / 1e9, flops(&m_step) / 1e9);
    println!("\n- loadavg at end: `{}`", loadavg());
    let worst_row = foreign.iter().flat_map(|x| x.iter()).cloned().fold(0.0f64, f64::max);
    println!(
        "- CPU used by other processes during the timed part (average cores busy, of {}): {:.2} overall (incl. re-measured tries); kept rows: worst {:.2}, {} of {} rows above {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        foreign_cores(snap_start, cpu_snap()),
        worst_row,
        foreign.iter().flat_map(|x| x.iter()).filter(|&&f| f > quiet_max).count(),
        2 * shapes.len(),
        quiet_max
    );
    println!("- benchmark wall time: {:.0} s", bench_start.elapsed().as_secs_f64());
}

fn rayon_threads() -> usize {
    // touching the global pool through the gemm crate's rayon dependency is not
    // possible without depending on rayon; report available_parallelism, which
    // is what rayon's default global pool uses.
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

