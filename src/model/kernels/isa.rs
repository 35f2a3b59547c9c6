//! The vector instructions the CPU kernels use: the widest the CPU has, or a narrower one `VGGQ_ISA`
//! asks for. Which one runs changes how fast the kernels are, never what they compute: every kernel
//! gives the same bytes on each (`gemm` and `dot_products` define their arithmetic so, and their tests
//! hold each path to it), which `VGGQ_ISA=scalar` (or `avx2` on an AVX-512 CPU) lets one machine show.

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// The environment variable that caps the instruction set.
pub const ISA_VARIABLE: &str = "VGGQ_ISA";

/// An instruction set the kernels have a path for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isa {
    /// No vectors: `f32::mul_add` (the same fused arithmetic, slowly).
    Scalar,
    /// AVX2 with FMA (x86-64-v3).
    Avx2,
    /// AVX-512F.
    Avx512,
    /// Advanced SIMD (NEON), which every aarch64 CPU has.
    Neon,
}

/// This architecture's paths, narrowest first: what a CPU of it may have, and what `VGGQ_ISA` may name.
#[cfg(target_arch = "x86_64")]
const PATHS: &[Isa] = &[Isa::Scalar, Isa::Avx2, Isa::Avx512];
#[cfg(target_arch = "aarch64")]
const PATHS: &[Isa] = &[Isa::Scalar, Isa::Neon];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const PATHS: &[Isa] = &[Isa::Scalar];

impl Isa {
    /// The name `VGGQ_ISA` takes and manifests record.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// The widest instruction set this CPU has.
    pub fn detected() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Isa::Neon;
        }
        Isa::Scalar
    }

    /// Every path this CPU can run, narrowest first (the tests hold each to the definitions).
    pub fn available() -> &'static [Isa] {
        let widest = Isa::detected();
        &PATHS[..=Isa::rank(widest)]
    }

    /// Where `self` stands among this architecture's paths.
    fn rank(self) -> usize {
        PATHS.iter().position(|&isa| isa == self).expect("the detected path is one of this architecture's")
    }

    /// The instruction set `VGGQ_ISA` allows on this CPU (the detected one where it is unset; a wider
    /// one than the CPU has gives the detected one), or why its value is not one of this architecture's.
    pub fn configured() -> Result<Isa, IsaError> {
        let detected = Isa::detected();
        let Some(value) = std::env::var_os(ISA_VARIABLE) else { return Ok(detected) };
        let value = value.to_string_lossy().into_owned();
        let cap = PATHS.iter().copied().find(|isa| isa.name() == value).ok_or_else(|| IsaError::Unknown {
            value,
            architecture: std::env::consts::ARCH,
            choices: PATHS.iter().map(|isa| isa.name()).collect::<Vec<_>>().join(", "),
        })?;
        Ok(PATHS[cap.rank().min(detected.rank())])
    }
}

/// A `VGGQ_ISA` that names none of this architecture's instruction sets.
#[derive(Debug, thiserror::Error)]
pub enum IsaError {
    #[error(
        "{ISA_VARIABLE}={value:?} is not an instruction set of this {architecture} CPU: use one of {choices} (or leave it unset)"
    )]
    Unknown { value: String, architecture: &'static str, choices: String },
}

/// The instruction set the kernels run with in this process, chosen once ([`Isa::configured`]; an
/// invalid `VGGQ_ISA`, which the binary reports at its start, leaves the detected one).
pub fn isa() -> Isa {
    static CHOSEN: OnceLock<Isa> = OnceLock::new();
    *CHOSEN.get_or_init(|| Isa::configured().unwrap_or_else(|_| Isa::detected()))
}

/// Defines a function whose body is compiled twice, for the baseline target and for AVX2, the latter run
/// where [`isa`] allows it: for loops over values that the compiler vectorizes, which the baseline x86-64
/// target runs 4 floats at a time. Closures in the body (rayon's tasks, the sums' terms) are compiled with
/// it. The same arithmetic on each path: Rust neither fuses nor reorders float operations, so the vectors
/// change only how many values an instruction takes.
macro_rules! vectorized {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            fn avx2($($arg: $ty),*) $(-> $ret)? $body
            fn baseline($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            if matches!($crate::model::kernels::isa::isa(), $crate::model::kernels::isa::Isa::Avx2 | $crate::model::kernels::isa::Isa::Avx512) {
                // SAFETY: the CPU has AVX2 (`isa` never names a set it lacks).
                return unsafe { avx2($($arg),*) };
            }
            baseline($($arg),*)
        }
    };
}
pub(crate) use vectorized;
