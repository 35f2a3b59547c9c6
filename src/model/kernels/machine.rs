//! What the CPU kernels ran with on this machine, as a run records it (`train_report.json`, the
//! manifest, the golden check's messages): none of it changes a result, and all of it is what a reviewer
//! asks first when two machines' results differ.

use serde::{Deserialize, Serialize};

use super::isa::{isa, Isa};
use super::{cpu, dot_products, gemm};

/// The CPU facts of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuFacts {
    /// Threads of rayon's pool, which runs the kernels.
    pub threads: usize,
    /// The instruction set the kernels used (`VGGQ_ISA` may cap it) and the widest the CPU has.
    pub isa: Isa,
    pub detected_isa: Isa,
    /// The processor, as `/proc/cpuinfo` names it (ARM's names none: there, the architecture).
    pub processor: String,
    /// How the kernels block their work: fixed sizes, the same on every machine (no cache size is read).
    pub blocking: String,
}

impl CpuFacts {
    /// This process's.
    pub fn here() -> Self {
        let processor = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
            })
            .unwrap_or_else(|| std::env::consts::ARCH.into());
        CpuFacts {
            threads: rayon::current_num_threads(),
            isa: isa(),
            detected_isa: Isa::detected(),
            processor,
            blocking: format!(
                "GEMM blocks {} x {} x {}, dot products in chunks of {} over {} lanes, im2col blocks of {} floats",
                gemm::BLOCKING.mc,
                gemm::BLOCKING.kc,
                gemm::BLOCKING.nc,
                dot_products::K_CHUNK,
                dot_products::LANES,
                cpu::IM2COL_BUDGET
            ),
        }
    }
}

impl std::fmt::Display for CpuFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} threads, {} kernels (the CPU has {}), {}",
            self.threads,
            self.isa.name(),
            self.detected_isa.name(),
            self.processor
        )
    }
}
