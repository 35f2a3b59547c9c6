//! The run's report, from `metrics.json` alone: the seed's tables, agreement with FP32 and confidence
//! intervals, per-class accuracy, EP placement and operator counts (`report.md`), bar charts (SVG), and
//! the timing-free table the golden snapshots hold.

mod stats;
mod svg;

use std::fmt::Write;

pub use stats::{accuracy, agreement, paired_bootstrap, per_class_accuracy, Difference};

use crate::eval::ModelMetrics;

/// The FP32 ONNX file: every INT8 model is compared with it, on the same execution provider.
const FP32_FILE: &str = "mission16_vgg11bn_fp32.onnx";

/// What a report is made of.
pub struct ReportInput<'a> {
    pub profile: &'a str,
    /// How the data is to be named, e.g. "CIFAR-10 (JPEG copy)".
    pub dataset: &'a str,
    pub class_names: &'a [String],
    pub rows: &'a [ModelMetrics],
}

/// The short name of a variant's file.
pub fn variant_label(file: &str) -> &str {
    match file {
        "mission16_vgg11bn_fp32.onnx" => "FP32",
        "mission16_vgg11bn_int8_dynamic.onnx" => "INT8 dynamic",
        "mission16_vgg11bn_int8_static.onnx" => "INT8 static",
        "mission_16_vgg11bn_qat_int8_fp32match.onnx" => "INT8 QAT (fp32match)",
        "mission_16_vgg11bn_qat_int8_finetune.onnx" => "INT8 QAT (finetune)",
        other => other,
    }
}

fn provider(row: &ModelMetrics) -> String {
    format!("{:?}", row.eval.requested).to_uppercase()
}

/// The FP32 row evaluated on the same execution provider as `row`.
fn fp32_twin<'a>(rows: &'a [ModelMetrics], row: &ModelMetrics) -> Option<&'a ModelMetrics> {
    rows.iter().find(|r| r.file == FP32_FILE && r.eval.requested == row.eval.requested)
}

/// The golden table: exact sizes, accuracy and agreement to two decimals, no timings (those vary between
/// runs; they are in `report.md`).
pub fn golden_table(rows: &[ModelMetrics]) -> String {
    let mut out = String::from("| model | EP | placement | bytes | MiB | top-1 % | agreement with FP32 % |\n|---|---|---|---|---|---|---|\n");
    for row in rows {
        let agreement = fp32_twin(rows, row)
            .map_or("-".to_string(), |fp32| format!("{:.2}", agreement(&row.eval.predictions, &fp32.eval.predictions)));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} | {:.2} | {agreement} |",
            variant_label(&row.file),
            provider(row),
            row.eval.placement,
            row.size_bytes,
            row.size_mib,
            row.eval.top1
        );
    }
    out
}

/// `report.md`.
pub fn markdown(input: &ReportInput) -> String {
    let rows = input.rows;
    let mut out = String::new();
    let images = rows.first().map_or(0, |r| r.eval.images);
    let _ = writeln!(out, "# vggq report: profile `{}`\n", input.profile);
    let _ = writeln!(
        out,
        "Every number below comes from `metrics.json`: ONNX Runtime on {images} test images of {}, batch {}.\n",
        input.dataset,
        rows.first().map_or(0, |r| r.eval.batch_size)
    );

    out.push_str("## Models\n\n");
    out.push_str("| model | size (MiB) | size reduction | top-1 % | ms / image | images/s | ms / image incl. preprocessing | images/s incl. preprocessing | p50 / p95 batch ms | EP |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for row in rows {
        let reduction = fp32_twin(rows, row)
            .map_or("-".to_string(), |fp32| format!("{:.1} %", 100.0 * (1.0 - row.size_bytes as f64 / fp32.size_bytes as f64)));
        let _ = writeln!(
            out,
            "| {} | {:.2} | {reduction} | {:.2} | {:.3} | {:.1} | {:.3} | {:.1} | {:.1} / {:.1} | {} |",
            variant_label(&row.file),
            row.size_mib,
            row.eval.top1,
            row.eval.inference.ms_per_image,
            row.eval.inference.images_per_s,
            row.eval.with_preprocessing.ms_per_image,
            row.eval.with_preprocessing.images_per_s,
            row.eval.p50_batch_ms,
            row.eval.p95_batch_ms,
            row.eval.placement
        );
    }
    out.push_str("\nSizes are bytes / 2^20. \"ms / image\" times `session.run` alone on preprocessed batches (warm-up excluded); the columns \"incl. preprocessing\" time the whole pass with the data loader decoding, resizing and normalising meanwhile.\n\n");

    out.push_str("## INT8 against FP32\n\n");
    out.push_str("| model | EP | agreement with FP32 (top-1) | accuracy difference (points) | 95 % CI (paired bootstrap) |\n|---|---|---|---|---|\n");
    for row in rows.iter().filter(|r| r.file != FP32_FILE) {
        let Some(fp32) = fp32_twin(rows, row) else { continue };
        let d = paired_bootstrap(&fp32.eval.predictions, &row.eval.predictions, &row.eval.labels);
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} % | {:+.2} | [{:+.2}, {:+.2}] |",
            variant_label(&row.file),
            provider(row),
            agreement(&row.eval.predictions, &fp32.eval.predictions),
            d.points,
            d.low,
            d.high
        );
    }

    out.push_str("\n## Per-class accuracy (%)\n\n| class |");
    let first_ep = rows.first().map(|r| r.eval.requested);
    let per_ep: Vec<&ModelMetrics> = rows.iter().filter(|r| Some(r.eval.requested) == first_ep).collect();
    for row in &per_ep {
        let _ = write!(out, " {} |", variant_label(&row.file));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(per_ep.len()));
    out.push('\n');
    let per_class: Vec<Vec<f64>> = per_ep
        .iter()
        .map(|r| per_class_accuracy(&r.eval.predictions, &r.eval.labels, input.class_names.len()))
        .collect();
    for (class, name) in input.class_names.iter().enumerate() {
        let _ = write!(out, "| {name} |");
        for accuracies in &per_class {
            let _ = write!(out, " {:.1} |", accuracies[class]);
        }
        out.push('\n');
    }

    out.push_str("\n## Execution providers and optimized graphs\n\nThe operators ONNX Runtime ran after its graph optimizations, and where (from its profile).\n\n| model | EP | placement | operators |\n|---|---|---|---|\n");
    for row in rows {
        let ops: Vec<String> = row.eval.op_counts.iter().map(|(op, n)| format!("{op} x{n}")).collect();
        let _ = writeln!(out, "| {} | {} | {} | {} |", variant_label(&row.file), provider(row), row.eval.placement, ops.join(", "));
    }
    out.push_str("\n![size](size.svg) ![accuracy](accuracy.svg) ![speed](speed.svg)\n");
    out
}

/// The charts of a report: (file name, SVG text).
pub fn charts(rows: &[ModelMetrics]) -> Vec<(&'static str, String)> {
    let label = |r: &ModelMetrics| format!("{} {}", variant_label(&r.file), provider(r));
    let bars = |value: fn(&ModelMetrics) -> f64| rows.iter().map(|r| (label(r), value(r))).collect::<Vec<_>>();
    vec![
        ("size.svg", svg::bar_chart("Size (MiB)", &bars(|r| r.size_mib))),
        ("accuracy.svg", svg::bar_chart("Top-1 accuracy (%)", &bars(|r| r.eval.top1))),
        ("speed.svg", svg::bar_chart("Images/s (inference)", &bars(|r| r.eval.inference.images_per_s))),
    ]
}
