//! The vector instructions the CPU kernels use: the widest the CPU has, or a narrower one `VGGQ_ISA`
//! asks for. Which one runs changes how fast the kernels are, never what they compute: every kernel
//! gives the same bytes on each (`gemm` and `dot_products` define their arithmetic so, and their tests
//! hold each path to it), which `VGGQ_ISA=avx2` lets one machine show.

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// The environment variable that caps the instruction set.
pub const ISA_VARIABLE: &str = "VGGQ_ISA";

/// An instruction set the kernels have a path for, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isa {
    /// No vectors: `f32::mul_add` (the same fused arithmetic, slowly).
    Scalar,
    /// AVX2 with FMA (x86-64-v3).
    Avx2,
    /// AVX-512F.
    Avx512,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    /// The name `VGGQ_ISA` takes and manifests record.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
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
        Isa::Scalar
    }

    /// The instruction set `VGGQ_ISA` allows on this CPU (the detected one where it is unset), or why
    /// its value is not one.
    pub fn configured() -> Result<Isa, IsaError> {
        let detected = Isa::detected();
        let Some(value) = std::env::var_os(ISA_VARIABLE) else { return Ok(detected) };
        let value = value.to_string_lossy().into_owned();
        let cap = Isa::ALL.into_iter().find(|isa| isa.name() == value).ok_or(IsaError::Unknown(value))?;
        Ok(cap.min(detected))
    }
}

/// A `VGGQ_ISA` that names no instruction set.
#[derive(Debug, thiserror::Error)]
pub enum IsaError {
    #[error("{ISA_VARIABLE}={0:?} is not an instruction set: use scalar, avx2 or avx512 (or leave it unset)")]
    Unknown(String),
}

/// The instruction set the kernels run with in this process, chosen once ([`Isa::configured`]; an
/// invalid `VGGQ_ISA`, which the binary reports at its start, leaves the detected one).
pub fn isa() -> Isa {
    static CHOSEN: OnceLock<Isa> = OnceLock::new();
    *CHOSEN.get_or_init(|| Isa::configured().unwrap_or_else(|_| Isa::detected()))
}
