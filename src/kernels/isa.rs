//! Which instruction set the kernels run on: detected once at start-up, overridable for tests
//! and benchmarks.
//!
//! lmlab ships one binary for every x86-64 CPU with AVX2 and FMA (the build's baseline, see
//! `.cargo/config.toml`). Everything past that baseline is chosen here at run time with
//! `is_x86_feature_detected!`, never by compile-time flags, and every kernel family keeps one
//! entry point per path:
//!
//! | path | what it needs | used by |
//! |---|---|---|
//! | `scalar` | nothing | the correctness reference of every family |
//! | `avx2` | AVX2, FMA, F16C | GEMM 6×16 micro-kernel, element-wise kernels (8 lanes), quantized dots |
//! | `avx512` | AVX-512 F/BW/VL/DQ | GEMM 14×32 micro-kernel, element-wise kernels (16 lanes) |
//! | `+vnni` | AVX-512 VNNI | int8 × int8 dots in one instruction (`vpdpbusd`) |
//! | `+bf16` | AVX-512 BF16 | bf16 GEMM (`vdpbf16ps`) for `train.precision = "bf16"` |
//!
//! `LMLAB_ISA` caps the choice: `scalar`, `avx2`, `avx512` (with whichever of VNNI and BF16 the
//! CPU has), or `avx512` followed by `,no-vnni` and/or `,no-bf16`; `native` (or unset) takes the
//! best the CPU has. Naming a path the CPU lacks is an error (`lmlab` checks the variable before
//! doing anything, see [`check_env`]). `lmlab info --isa` and every bench report print the path
//! that ran ([`Isa::name`]).

use std::sync::OnceLock;

/// Vector width tiers, in order: a CPU at one level has everything below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Scalar,
    Avx2,
    Avx512,
}

/// One path: a vector level plus the AVX-512 extensions that change which kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Isa {
    pub level: Level,
    /// AVX-512 VNNI (only meaningful at `Level::Avx512`).
    pub vnni: bool,
    /// AVX-512 BF16 (only meaningful at `Level::Avx512`).
    pub bf16: bool,
}

impl Isa {
    pub const SCALAR: Isa = Isa { level: Level::Scalar, vnni: false, bf16: false };
    pub const AVX2: Isa = Isa { level: Level::Avx2, vnni: false, bf16: false };

    /// What this CPU can run.
    pub fn detected() -> Isa {
        static CPU: OnceLock<Isa> = OnceLock::new();
        *CPU.get_or_init(detect)
    }

    /// The path the kernels use: [`Isa::detected`] capped by `LMLAB_ISA`. An invalid value
    /// falls back to the CPU's best here; [`check_env`] is where it becomes an error.
    pub fn active() -> Isa {
        static ACTIVE: OnceLock<Isa> = OnceLock::new();
        *ACTIVE.get_or_init(|| check_env().unwrap_or_else(|_| Isa::detected()))
    }

    /// Whether this CPU can run `self`.
    pub fn available(self) -> bool {
        let cpu = Isa::detected();
        self.level <= cpu.level && (!self.vnni || cpu.vnni) && (!self.bf16 || cpu.bf16)
    }

    /// Every path this CPU can run, from the scalar reference up (tests run each of them).
    pub fn all_available() -> Vec<Isa> {
        let cpu = Isa::detected();
        let mut v = vec![Isa::SCALAR];
        if cpu.level >= Level::Avx2 {
            v.push(Isa::AVX2);
        }
        if cpu.level >= Level::Avx512 {
            v.push(Isa { level: Level::Avx512, vnni: false, bf16: false });
            if cpu.vnni || cpu.bf16 {
                v.push(cpu);
            }
        }
        v
    }

    /// e.g. `avx512+vnni+bf16`, `avx2`, `scalar`.
    pub fn name(self) -> String {
        let mut s = match self.level {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
        .to_string();
        if self.level == Level::Avx512 {
            if self.vnni {
                s.push_str("+vnni");
            }
            if self.bf16 {
                s.push_str("+bf16");
            }
        }
        s
    }

    /// Parses an `LMLAB_ISA` value against the CPU `cpu`.
    pub fn parse(value: &str, cpu: Isa) -> Result<Isa, String> {
        let mut parts = value.split(',').map(str::trim);
        let head = parts.next().unwrap_or("");
        let mut isa = match head {
            "" | "native" => cpu,
            "scalar" => Isa::SCALAR,
            "avx2" => Isa::AVX2,
            "avx512" => Isa { level: Level::Avx512, vnni: cpu.vnni, bf16: cpu.bf16 },
            other => {
                return Err(format!("unknown instruction set {other:?} (expected native, scalar, avx2 or avx512)"))
            }
        };
        for p in parts {
            match p {
                "no-vnni" => isa.vnni = false,
                "no-bf16" => isa.bf16 = false,
                other => return Err(format!("unknown modifier {other:?} (expected no-vnni or no-bf16)")),
            }
        }
        if isa.level < Level::Avx512 {
            isa.vnni = false;
            isa.bf16 = false;
        }
        if isa.level > cpu.level {
            return Err(format!("{head}: this CPU only has {}", cpu.name()));
        }
        Ok(isa)
    }
}

/// The path each kernel family takes on `isa` (for `lmlab info` and the bench reports).
pub fn kernel_paths(isa: Isa) -> Vec<(&'static str, String)> {
    let gemm = match isa.level {
        Level::Scalar => "6×16 scalar micro-kernel (reference)",
        Level::Avx2 => "6×16 AVX2/FMA micro-kernel",
        Level::Avx512 => "14×32 AVX-512 micro-kernel",
    };
    let elementwise = match isa.level {
        Level::Avx512 => "AVX-512 copy (16 lanes)",
        _ => "baseline copy (AVX2, 8 lanes)",
    };
    let quant = crate::kernels::quant::Isa::for_path(isa).name();
    let bf16 = if crate::kernels::gemm::bf16_gemm_in_use() {
        format!(
            "vdpbf16ps GEMM (measured {:.2}× the FMA rate per instruction)",
            crate::kernels::gemm::bf16_probe_ratio()
        )
    } else if isa.level == Level::Avx512 && isa.bf16 {
        format!(
            "f32 GEMM on bf16-rounded operands: vdpbf16ps measured {:.2}× the FMA rate per instruction here, \
             under the 0.6 where it pays",
            crate::kernels::gemm::bf16_probe_ratio()
        )
    } else {
        "f32 GEMM on bf16-rounded operands (no AVX-512 BF16 in the active path)".to_string()
    };
    vec![
        ("f32 gemm", gemm.to_string()),
        ("element-wise", elementwise.to_string()),
        ("quantized dots", quant.to_string()),
        ("bf16 matmul", bf16),
    ]
}

/// `LMLAB_ISA` applied to this CPU: an error for a typo or a path the CPU lacks (the CLI calls
/// this first, so a typo is an error, not a silent fallback).
pub fn check_env() -> Result<Isa, String> {
    match std::env::var("LMLAB_ISA") {
        Ok(v) => Isa::parse(&v, Isa::detected()).map_err(|e| format!("LMLAB_ISA={v}: {e}")),
        Err(_) => Ok(Isa::detected()),
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    use std::arch::is_x86_feature_detected as has;
    if !(has!("avx2") && has!("fma") && has!("f16c")) {
        return Isa::SCALAR;
    }
    if !(has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq")) {
        return Isa::AVX2;
    }
    Isa { level: Level::Avx512, vnni: has!("avx512vnni"), bf16: has!("avx512bf16") }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Isa {
    Isa::SCALAR
}

/// Defines a function whose body is compiled twice, for the build's baseline and for AVX-512,
/// and dispatched on [`Isa::active`]: the element-wise kernels are plain loops that LLVM
/// vectorises, 8 lanes wide at the baseline and 16 inside the AVX-512 copy. Closures and
/// `#[inline(always)]` helpers called from the body are compiled into each copy. Beside
/// `fn name` it defines `mod name` with `name::on(level, ...)`, which runs one chosen copy (the
/// tests compare them).
///
/// The copies do the same arithmetic per element in the same order (only the vector width
/// differs), so they agree bit for bit wherever the body does not reassociate a sum.
/// (The `multiversion` crate does the same, but dispatches on the CPU alone, so `LMLAB_ISA`
/// and the per-path tests could not pick a copy.)
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            $name::on($crate::kernels::isa::Isa::active().level, $($arg),*)
        }

        #[allow(dead_code)]
        $vis mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }

            /// Runs the copy for `level` (the baseline copy below AVX-512).
            #[allow(clippy::too_many_arguments)]
            pub fn on(level: $crate::kernels::isa::Level, $($arg: $ty),*) $(-> $ret)? {
                #[cfg(target_arch = "x86_64")]
                if level >= $crate::kernels::isa::Level::Avx512 {
                    assert!($crate::kernels::isa::Isa::detected().level >= level, "this CPU lacks AVX-512");
                    // SAFETY: the CPU has AVX-512 (checked above).
                    return unsafe { avx512($($arg),*) };
                }
                body($($arg),*)
            }
        }
    };
}
pub(crate) use multiversion;

/// For the tests of [`multiversion`] kernels: whether the AVX-512 copy can run here, saying so
/// on stderr when it cannot (the test then checks the baseline copy alone).
#[cfg(test)]
pub(crate) fn avx512_or_skip(what: &str) -> bool {
    let ok = Isa::detected().level >= Level::Avx512;
    if !ok {
        eprintln!("SKIPPED {what}, AVX-512 copy: this CPU has {}", Isa::detected().name());
    }
    ok
}

/// Test data: `n` values in about ±`scale`, deterministic.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) as f32 / u32::MAX as f32 - 0.5) * 2.0 * scale
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_caps_and_rejects() {
        let zen4 = Isa { level: Level::Avx512, vnni: true, bf16: true };
        assert_eq!(Isa::parse("native", zen4).unwrap(), zen4);
        assert_eq!(Isa::parse("avx2", zen4).unwrap(), Isa::AVX2);
        assert_eq!(Isa::parse("avx512,no-bf16", zen4).unwrap().name(), "avx512+vnni");
        assert_eq!(Isa::parse("avx512, no-vnni,no-bf16", zen4).unwrap().name(), "avx512");
        assert!(Isa::parse("avx512", Isa::AVX2).unwrap_err().contains("only has avx2"));
        assert!(Isa::parse("avx-512", zen4).unwrap_err().contains("unknown instruction set"));
        assert!(Isa::parse("avx512,no-amx", zen4).unwrap_err().contains("unknown modifier"));
    }

    #[test]
    fn active_path_is_available() {
        assert!(Isa::active().available());
        assert!(Isa::all_available().iter().all(|i| i.available()));
        println!("cpu: {}, active: {}", Isa::detected().name(), Isa::active().name());
    }
}
