//! Which execution provider ran each node, read from ONNX Runtime's own profile (one `Node` event per
//! kernel run, with `op_name` and `provider`), so what we report is what ran, not what was asked for.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;

use super::EvalError;

const CUDA_PROVIDER: &str = "CUDAExecutionProvider";
const CPU_PROVIDER: &str = "CPUExecutionProvider";
/// The suffix of the profile events that time a node's kernel (others time the fences around it).
const KERNEL_EVENT_SUFFIX: &str = "_kernel_time";

/// The nodes of the optimized graph, by provider and operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// Operator type -> nodes, per provider (ORT's names, e.g. `CPUExecutionProvider`).
    pub nodes: BTreeMap<String, BTreeMap<String, usize>>,
}

impl Placement {
    /// Reads the profile ORT wrote for one run, then deletes it.
    pub fn from_profile(path: &Path) -> Result<Self, EvalError> {
        let profile_error = |message: String| EvalError::Profile { path: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| profile_error(e.to_string()))?;
        let placement = Self::from_profile_json(&text).map_err(profile_error)?;
        std::fs::remove_file(path).map_err(|e| profile_error(e.to_string()))?;
        Ok(placement)
    }

    /// Parses ORT's profile: a JSON array of trace events.
    pub fn from_profile_json(text: &str) -> Result<Self, String> {
        let events: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut placement = Placement::default();
        let mut seen = std::collections::BTreeSet::new();
        for event in &events {
            let name = event["name"].as_str().unwrap_or_default();
            if event["cat"] != "Node" || !name.ends_with(KERNEL_EVENT_SUFFIX) {
                continue;
            }
            // One run: each node once (a node running twice would be counted once anyway).
            if !seen.insert(name.to_string()) {
                continue;
            }
            let args = &event["args"];
            let (Some(op), Some(provider)) = (args["op_name"].as_str(), args["provider"].as_str()) else {
                return Err(format!("node event `{name}` lacks op_name or provider"));
            };
            *placement.nodes.entry(provider.to_string()).or_default().entry(op.to_string()).or_default() += 1;
        }
        if placement.nodes.is_empty() {
            return Err("no node events: was profiling on?".into());
        }
        Ok(placement)
    }

    /// Operator type -> nodes, all providers together: the optimized graph's operator counts.
    pub fn op_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for ops in self.nodes.values() {
            for (op, n) in ops {
                *counts.entry(op.clone()).or_default() += n;
            }
        }
        counts
    }

    /// Whether the CUDA provider ran any node: a session that asked for CUDA and ran everything on the
    /// CPU fell back whole.
    pub fn ran_on_cuda(&self) -> bool {
        self.count(CUDA_PROVIDER) > 0
    }

    fn count(&self, provider: &str) -> usize {
        self.nodes.get(provider).map_or(0, |ops| ops.values().sum())
    }
}

/// `CUDA`, `CPU`, or `CUDA (k nodes on CPU: <ops>)`; only nodes CUDA actually ran make it say CUDA.
impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (cuda, cpu) = (self.count(CUDA_PROVIDER), self.count(CPU_PROVIDER));
        let others: Vec<&String> = self.nodes.keys().filter(|p| *p != CUDA_PROVIDER && *p != CPU_PROVIDER).collect();
        if !others.is_empty() {
            return write!(
                f,
                "{}",
                self.nodes.iter().map(|(p, ops)| format!("{p}: {}", ops.values().sum::<usize>())).collect::<Vec<_>>().join(", ")
            );
        }
        match (cuda, cpu) {
            (0, _) => f.write_str("CPU"),
            (_, 0) => f.write_str("CUDA"),
            (_, cpu) => {
                let ops = &self.nodes[CPU_PROVIDER];
                let list: Vec<String> =
                    ops.iter().map(|(op, n)| if *n == 1 { op.clone() } else { format!("{op} x{n}") }).collect();
                write!(f, "CUDA ({cpu} nodes on CPU: {})", list.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(node: &str, op: &str, provider: &str) -> String {
        format!(r#"{{"cat":"Node","name":"{node}_kernel_time","args":{{"op_name":"{op}","provider":"{provider}"}}}}"#)
    }

    fn profile(events: &[String]) -> Placement {
        let session = r#"{"cat":"Session","name":"model_run","args":{}}"#.to_string();
        let fence = r#"{"cat":"Node","name":"a_fence_before","args":{}}"#.to_string();
        let all: Vec<String> = [session, fence].into_iter().chain(events.iter().cloned()).collect();
        Placement::from_profile_json(&format!("[{}]", all.join(","))).unwrap()
    }

    #[test]
    fn all_on_cpu_reads_cpu() {
        let p = profile(&[event("a", "Conv", CPU_PROVIDER), event("b", "Gemm", CPU_PROVIDER)]);
        assert_eq!(p.to_string(), "CPU");
        assert_eq!(p.op_counts(), BTreeMap::from([("Conv".into(), 1), ("Gemm".into(), 1)]));
    }

    #[test]
    fn all_on_cuda_reads_cuda() {
        assert_eq!(profile(&[event("a", "Conv", CUDA_PROVIDER)]).to_string(), "CUDA");
    }

    #[test]
    fn partial_fallback_names_the_cpu_ops() {
        let p = profile(&[
            event("a", "Conv", CUDA_PROVIDER),
            event("b", "DynamicQuantizeMatMul", CPU_PROVIDER),
            event("c", "DynamicQuantizeMatMul", CPU_PROVIDER),
            event("d", "MemcpyToHost", CPU_PROVIDER),
        ]);
        assert_eq!(p.to_string(), "CUDA (3 nodes on CPU: DynamicQuantizeMatMul x2, MemcpyToHost)");
    }

    #[test]
    fn a_silent_fallback_never_reads_cuda() {
        // CUDA was requested, but the profile shows every node on the CPU.
        assert_eq!(profile(&[event("a", "Conv", CPU_PROVIDER)]).to_string(), "CPU");
    }

    #[test]
    fn a_profile_without_nodes_is_an_error() {
        assert!(Placement::from_profile_json("[]").is_err());
    }
}
