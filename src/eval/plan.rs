//! Which execution providers an evaluation asks for, and why: the CPU always; CUDA where the user
//! asked for it (`--device cuda`, and then it must run) or where training could use CUDA on this
//! machine (`--device auto`, and then a CUDA provider that cannot run is a recorded reason, not an
//! error). ONNX Runtime has no wgpu provider: a wgpu run evaluates on the CPU's.

use serde::{Deserialize, Serialize};

use super::metrics::ModelMetrics;
use super::session::{Provider, SessionSettings};
use crate::backend::{self, DeviceRequest};

/// The providers to run every model on, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderPlan {
    pub request: DeviceRequest,
    pub providers: Vec<Provider>,
    /// Whether a CUDA provider that cannot run is an error (`--device cuda`).
    pub cuda_required: bool,
    /// One line: what is asked for and why.
    pub reason: String,
}

impl ProviderPlan {
    pub fn for_request(request: DeviceRequest) -> Self {
        let plan = |providers, cuda_required, reason: String| ProviderPlan { request, providers, cuda_required, reason };
        match request {
            DeviceRequest::Cpu => plan(vec![Provider::Cpu], false, "CPU execution provider: --device cpu".into()),
            DeviceRequest::Cuda => plan(
                vec![Provider::Cuda, Provider::Cpu],
                true,
                "CUDA execution provider (required: --device cuda), and the CPU's beside it".into(),
            ),
            DeviceRequest::Wgpu => plan(
                vec![Provider::Cpu],
                false,
                "CPU execution provider: --device wgpu (ONNX Runtime has no wgpu provider)".into(),
            ),
            // Only CUDA changes the providers (ONNX Runtime has no wgpu provider): wgpu is not set up.
            DeviceRequest::Auto => {
                let probe = backend::probe_cuda();
                let found = probe.summary();
                if probe.unusable.is_none() {
                    plan(
                        vec![Provider::Cuda, Provider::Cpu],
                        false,
                        format!("CUDA and CPU execution providers: training could use {found}"),
                    )
                } else {
                    plan(vec![Provider::Cpu], false, format!("CPU execution provider: no usable CUDA GPU ({found})"))
                }
            }
        }
    }
}

/// A provider that was asked for and could not run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unavailable {
    pub provider: Provider,
    pub reason: String,
}

/// What `vggq eval` writes (`metrics.json`): the plan, what could not run, and a row per model and
/// provider that did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRun {
    pub plan: ProviderPlan,
    pub session: SessionSettings,
    pub unavailable: Vec<Unavailable>,
    pub rows: Vec<ModelMetrics>,
}
