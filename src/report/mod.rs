//! The run's report, from `metrics.json` alone: the seed's tables, a run of the full recipe beside the
//! seed's own ([`seed_run`]), agreement with FP32 and confidence intervals, per-class accuracy, EP
//! placement and operator counts (`report.md`), bar charts (SVG), and the timing-free table the golden
//! snapshots hold, and how a reviewed one is compared ([`golden`]).

mod golden;
mod seed_run;
mod stats;
mod svg;

use std::fmt::Write;

pub use golden::{golden_table, Comparison, GoldenTable, GoldenTableError, Tolerance};
pub use stats::{accuracy, agreement, paired_bootstrap, per_class_accuracy, Difference};

use vggq_core::run_folder::{ACCURACY_CHART_FILE, SIZE_CHART_FILE, SPEED_CHART_FILE};
use vggq_core::{ProfileName, Variant};

use crate::data::ImageCounts;
use crate::eval::{EvalRun, ModelMetrics};
use crate::pipeline::QuantizeSettings;
use crate::profile::Profile;

/// How a run was made, as its report holds it to its profile's recipe ([`departure_note`]).
#[derive(Debug, Clone, Copy)]
pub struct RunRecipe<'a> {
    /// The profile the run trained with, its limits and overrides included.
    pub profile: &'a Profile,
    /// The images of the data the run trained on (`None` where its build did not record them).
    pub data_images: Option<ImageCounts>,
    /// How `vggq quantize` made the INT8 variants.
    pub quantize: QuantizeSettings,
}

/// What a report is made of.
pub struct ReportInput<'a> {
    pub recipe: RunRecipe<'a>,
    /// How the data is to be named, e.g. "CIFAR-10 (JPEG copy)".
    pub dataset: &'a str,
    /// Where the model was trained, and why there.
    pub device: &'a str,
    pub class_names: &'a [String],
    pub eval: &'a EvalRun,
}

/// The short name of a variant's file (the file name itself for a file that is no variant's).
pub fn variant_label(file: &str) -> &str {
    Variant::of_file(file).map_or(file, |variant| variant.label())
}

fn provider(row: &ModelMetrics) -> String {
    row.eval.requested.to_string()
}

/// The FP32 row evaluated on the same execution provider as `row`: every INT8 model is compared with it.
fn fp32_twin<'a>(rows: &'a [ModelMetrics], row: &ModelMetrics) -> Option<&'a ModelMetrics> {
    rows.iter().find(|r| r.file == Variant::Fp32.onnx_file() && r.eval.requested == row.eval.requested)
}

fn is_fp32(row: &ModelMetrics) -> bool {
    row.file == Variant::Fp32.onnx_file()
}

/// What a report says above figures that are not its profile's recipe's, `None` for the recipe's own:
/// data other than CIFAR-10's images, the profile's departures from its recipe (limits, overrides),
/// quantization other than the recipe's (`vggq quantize --calibration`, `--qat-mode`), and an evaluation
/// on other than the test images the run's profile takes (`vggq eval --run R --images N`).
pub fn departure_note(run: &RunRecipe, eval: &EvalRun) -> Option<String> {
    let RunRecipe { profile, data_images: data, quantize } = *run;
    let mut departures: Vec<String> = data.and_then(ImageCounts::departure_from_cifar10).into_iter().collect();
    departures.extend(profile.departures());
    departures.extend(quantize.departures());
    // Of data with fewer test images, the run takes all (said above), not the profile's count.
    let (_, profile_test_images) = profile.data.eval_counts();
    let taken = data.map_or(profile_test_images, |data| profile_test_images.min(data.test));
    if let Some(images) = eval.rows.first().map(|row| row.eval.images).filter(|&images| images != taken) {
        departures.push(format!("evaluated on {images} test images (the run's profile takes {taken})"));
    }
    (!departures.is_empty())
        .then(|| format!("not the {} profile's recipe, and no golden table's: {}", profile.name(), departures.join(", ")))
}

/// `report.md`.
pub fn markdown(input: &ReportInput) -> String {
    let rows = &input.eval.rows;
    let mut out = String::new();
    let images = rows.first().map_or(0, |r| r.eval.images);
    let _ = writeln!(out, "# vggq report: profile `{}`\n", input.recipe.profile.name());
    let departure = departure_note(&input.recipe, input.eval);
    if let Some(note) = &departure {
        let _ = writeln!(out, "**This run is {note}.**\n");
    }
    let _ = writeln!(
        out,
        "Every number below comes from `metrics.json`: ONNX Runtime on {images} test images of {}, batch {}.\n",
        input.dataset,
        rows.first().map_or(0, |r| r.eval.batch_size)
    );
    let _ = writeln!(out, "Training: {}.\n\nExecution providers: {}.\n", input.device, input.eval.plan.reason);
    for unavailable in &input.eval.unavailable {
        let _ = writeln!(out, "**{:?} execution provider not available:** {}\n", unavailable.provider, unavailable.reason);
    }

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
    // The seed's table is of its full recipe: a run of it, and of nothing else, stands beside it.
    if input.recipe.profile.name == ProfileName::Full && departure.is_none() {
        out.push_str(&seed_run::section(rows, input.dataset));
    }

    out.push_str("## INT8 against FP32\n\n");
    out.push_str("| model | EP | agreement with FP32 (top-1) | accuracy difference (points) | 95 % CI (paired bootstrap) |\n|---|---|---|---|---|\n");
    for row in rows.iter().filter(|r| !is_fp32(r)) {
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
    let per_class: Vec<Vec<f64>> =
        per_ep.iter().map(|r| per_class_accuracy(&r.eval.predictions, &r.eval.labels, input.class_names.len())).collect();
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
        let _ =
            writeln!(out, "| {} | {} | {} | {} |", variant_label(&row.file), provider(row), row.eval.placement, ops.join(", "));
    }
    out.push_str("\n![size](size.svg) ![accuracy](accuracy.svg) ![speed](speed.svg)\n");
    out
}

/// The charts of a report: (file name, SVG text).
pub fn charts(rows: &[ModelMetrics]) -> Vec<(&'static str, String)> {
    let label = |r: &ModelMetrics| format!("{} {}", variant_label(&r.file), provider(r));
    let bars = |value: fn(&ModelMetrics) -> f64| rows.iter().map(|r| (label(r), value(r))).collect::<Vec<_>>();
    vec![
        (SIZE_CHART_FILE, svg::bar_chart("Size (MiB)", &bars(|r| r.size_mib))),
        (ACCURACY_CHART_FILE, svg::bar_chart("Top-1 accuracy (%)", &bars(|r| r.eval.top1))),
        (SPEED_CHART_FILE, svg::bar_chart("Images/s (inference)", &bars(|r| r.eval.inference.images_per_s))),
    ]
}
