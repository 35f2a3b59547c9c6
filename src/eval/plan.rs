//! Which execution providers an evaluation asks for, and why: the CPU always; CUDA where the user
//! asked for it (`--device cuda`, and then it must run) or where training could use CUDA on this
//! machine (`--device auto`, and then a CUDA provider that cannot run is a recorded reason, not an
//! error). ONNX Runtime has no wgpu provider: a wgpu run evaluates on the CPU's.

use serde::{Deserialize, Serialize};

use super::metrics::ModelMetrics;
use super::session::{Provider, SessionSettings};
use crate::backend::{self, BackendError, BackendKind, CudaProbe, DeviceRequest};

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
    pub fn for_request(request: DeviceRequest) -> Result<Self, BackendError> {
        let plan = |providers, cuda_required, reason: String| ProviderPlan { request, providers, cuda_required, reason };
        Ok(match request {
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
            DeviceRequest::Auto => {
                let selection = backend::select(request)?;
                let found = selection.probe.as_ref().map(CudaProbe::summary).unwrap_or_default();
                match selection.backend {
                    BackendKind::Cuda => plan(
                        vec![Provider::Cuda, Provider::Cpu],
                        false,
                        format!("CUDA and CPU execution providers: training could use {found}"),
                    ),
                    BackendKind::Wgpu => plan(
                        vec![Provider::Cpu],
                        false,
                        format!("CPU execution provider: ONNX Runtime has no wgpu provider ({})", selection.reason),
                    ),
                    BackendKind::Cpu => {
                        plan(vec![Provider::Cpu], false, format!("CPU execution provider: no usable GPU ({found})"))
                    }
                }
            }
        })
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
