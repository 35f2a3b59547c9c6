//! The seed's own run of the full recipe (PyTorch's quantization, ONNX Runtime's CUDA provider): the
//! figures vggq aims to match in accuracy and beat in speed, and the report's section that sets a run of
//! that recipe beside them.

use std::fmt::Write;

use vggq_core::{QatMode, Variant};

use crate::eval::{ModelMetrics, Provider};

/// One model of the seed's table.
struct SeedFigures {
    variant: Variant,
    /// Bytes / 2^20, as the seed gives them ("MB").
    size_mib: f64,
    /// Top-1 % on CIFAR-10's test images.
    top1: f64,
}

/// The seed's table, each ONNX file on ONNX Runtime's CUDA provider.
const SEED_RUN: [SeedFigures; 4] = [
    SeedFigures { variant: Variant::Fp32, size_mib: 227.37, top1: 92.28 },
    SeedFigures { variant: Variant::DynamicInt8, size_mib: 83.25, top1: 92.30 },
    SeedFigures { variant: Variant::StaticInt8, size_mib: 57.03, top1: 92.24 },
    SeedFigures { variant: Variant::Qat(QatMode::Fp32match), size_mib: 56.99, top1: 91.37 },
];

/// The seed's FP32 throughput on ONNX Runtime's CUDA provider, batch 32: the one speed its table gives.
const SEED_FP32_IMAGES_PER_S: f64 = 516.0;

/// The row of `variant`'s file that stands beside the seed's: the CUDA provider's where the run has one
/// (the seed's provider), else the CPU's.
fn counterpart(rows: &[ModelMetrics], variant: Variant) -> Option<&ModelMetrics> {
    let of_file = || rows.iter().filter(move |row| row.file == variant.onnx_file());
    of_file().find(|row| row.eval.requested == Provider::Cuda).or_else(|| of_file().next())
}

/// The report's section "Against the seed's run" for a run of the full recipe evaluated on `dataset`:
/// each model's size and top-1 beside the seed's, and FP32's speed beside the seed's on CUDA.
pub fn section(rows: &[ModelMetrics], dataset: &str) -> String {
    let mut out = String::from("## Against the seed's run\n\n");
    let _ = writeln!(
        out,
        "The seed's run of this recipe (PyTorch's quantization, ONNX Runtime's CUDA provider, CIFAR-10's test \
         images) beside this one (ONNX Runtime, {dataset}; each model's CUDA row where it has one): the aim \
         is the seed's accuracy, within the recipe's spread of about a point, at more than its speed.\n"
    );
    out.push_str("| model | size (MiB), seed / this run | top-1 %, seed / this run | top-1 difference (points) | EP |\n");
    out.push_str("|---|---|---|---|---|\n");
    for seed in &SEED_RUN {
        let label = seed.variant.label();
        match counterpart(rows, seed.variant) {
            Some(row) => {
                let _ = writeln!(
                    out,
                    "| {label} | {:.2} / {:.2} | {:.2} / {:.2} | {:+.2} | {} |",
                    seed.size_mib,
                    row.size_mib,
                    seed.top1,
                    row.eval.top1,
                    row.eval.top1 - seed.top1,
                    row.eval.requested
                );
            }
            None => {
                let _ = writeln!(out, "| {label} | {:.2} / - | {:.2} / - | - | - |", seed.size_mib, seed.top1);
            }
        }
    }
    let fp32_on_cuda = counterpart(rows, Variant::Fp32).filter(|row| row.eval.requested == Provider::Cuda);
    let _ = match fp32_on_cuda {
        Some(row) => writeln!(
            out,
            "\nFP32's speed, batch 32: the seed {SEED_FP32_IMAGES_PER_S:.0} images/s on ONNX Runtime's CUDA provider; \
             this run {:.1} images/s ({:.2}x the seed's; `session.run` alone, placement {}), {:.1} with its \
             preprocessing ({:.2}x).\n",
            row.eval.inference.images_per_s,
            row.eval.inference.images_per_s / SEED_FP32_IMAGES_PER_S,
            row.eval.placement,
            row.eval.with_preprocessing.images_per_s,
            row.eval.with_preprocessing.images_per_s / SEED_FP32_IMAGES_PER_S
        ),
        None => writeln!(
            out,
            "\nFP32's speed: the seed {SEED_FP32_IMAGES_PER_S:.0} images/s on ONNX Runtime's CUDA provider; this run \
             has no CUDA row to set beside it.\n"
        ),
    };
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::eval::{EvalReport, Timing};

    fn row(variant: Variant, requested: Provider, size_mib: f64, top1: f64, images_per_s: f64) -> ModelMetrics {
        let timing = Timing { ms_per_image: 1e3 / images_per_s, images_per_s };
        ModelMetrics {
            file: variant.onnx_file().to_string(),
            size_bytes: (size_mib * crate::eval::MIB) as u64,
            size_mib,
            eval: EvalReport {
                requested,
                placement: requested.to_string(),
                op_counts: BTreeMap::new(),
                images: 10_000,
                top1,
                batch_size: 32,
                warmup_batches: 2,
                timed_batches: 20,
                inference: timing,
                with_preprocessing: Timing { ms_per_image: 2e3 / images_per_s, images_per_s: images_per_s / 2.0 },
                p50_batch_ms: 1.0,
                p95_batch_ms: 1.0,
                predictions: Vec::new(),
                labels: Vec::new(),
            },
        }
    }

    #[test]
    fn a_run_stands_beside_the_seeds_table_on_its_cuda_rows() {
        let mut rows = Vec::new();
        for (index, variant) in Variant::all(QatMode::Fp32match).into_iter().enumerate() {
            rows.push(row(variant, Provider::Cuda, 227.37 - index as f64, 91.5 + index as f64 / 10.0, 1290.0));
            // The CPU's rows, which a run with CUDA rows does not stand on.
            rows.push(row(variant, Provider::Cpu, 227.37, 10.0, 45.0));
        }
        let section = section(&rows, "CIFAR-10 (JPEG copy)");
        for line in [
            "| FP32 | 227.37 / 227.37 | 92.28 / 91.50 | -0.78 | CUDA |",
            "| INT8 dynamic | 83.25 / 226.37 | 92.30 / 91.60 | -0.70 | CUDA |",
            "| INT8 static | 57.03 / 225.37 | 92.24 / 91.70 | -0.54 | CUDA |",
            "| INT8 QAT (fp32match) | 56.99 / 224.37 | 91.37 / 91.80 | +0.43 | CUDA |",
            "this run 1290.0 images/s (2.50x the seed's; `session.run` alone, placement CUDA), 645.0 with its preprocessing (1.25x)",
            "CIFAR-10 (JPEG copy)",
        ] {
            assert!(section.contains(line), "no `{line}` in:\n{section}");
        }
    }

    #[test]
    fn a_run_without_cuda_rows_stands_on_its_cpu_rows_and_gives_no_speed() {
        let rows = vec![row(Variant::Fp32, Provider::Cpu, 227.37, 92.0, 45.0)];
        let section = section(&rows, "CIFAR-10");
        assert!(section.contains("| FP32 | 227.37 / 227.37 | 92.28 / 92.00 | -0.28 | CPU |"), "{section}");
        // A model the run lacks is shown without figures of this run.
        assert!(section.contains("| INT8 static | 57.03 / - | 92.24 / - | - | - |"), "{section}");
        assert!(section.contains("this run has no CUDA row to set beside it"), "{section}");
        assert!(!section.contains("45.0"), "a CPU speed set beside the seed's CUDA one:\n{section}");
    }
}
