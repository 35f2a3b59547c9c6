//! The golden table of a run (`golden/<profile>-<device>.snap` reviews it) and how a reviewed table is
//! compared with a new one. A CPU run is the same bytes on any machine, so its table is compared exactly.
//! A GPU run is not: its kernels follow the GPU (what it supports, and with the `autotune` feature what
//! was fastest there) and some run in TF32, so its top-1 and agreement are compared within a tolerance
//! the table itself states, tight for a run with the arithmetic it was recorded with and the recipe's
//! spread for one with other arithmetic; sizes, placement and providers exactly.

use std::fmt::{self, Write};

use super::{agreement, departure_note, fp32_twin, provider, variant_label, RunRecipe};
use crate::eval::EvalRun;

/// How far a table's accuracy figures may move before it differs.
#[derive(Debug, Clone, PartialEq)]
pub enum Tolerance {
    /// Every figure to the last digit shown: a CPU run's table.
    Exact,
    /// A GPU run's table.
    Gpu(GpuTolerance),
}

/// How a GPU run's table is compared. A run with the arithmetic the table was recorded with (the same GPU
/// and kernels) should repeat it, so top-1 and agreement may move `same` points; with other
/// arithmetic the first differing roundings send training along another path, and the figures move as
/// with another seed, so they may move by the recipe's spread (`other_top1`, `other_agreement`), stated
/// with where it comes from (`basis`).
#[derive(Debug, Clone, PartialEq)]
pub struct GpuTolerance {
    /// The arithmetic the table was recorded with (`Selection::arithmetic`).
    pub arithmetic: String,
    pub same: f64,
    pub other_top1: f64,
    pub other_agreement: f64,
    pub basis: String,
}

impl Tolerance {
    /// A run's: exact on the CPU (`arithmetic` `None`); on a GPU, for a run with the same arithmetic 0.5
    /// points for the smoke profile (its 10,000 test images make a point 100 of them) and 0.3 for the full
    /// one, and for a run with other arithmetic the recipe's spread: for smoke, measured over seeds (a
    /// change of rounding alone moves a run that far: new CPU kernels moved seed 0's top-1 by 2.7 points);
    /// for full, an estimate until two GPUs have run it.
    pub fn for_run(profile: &str, arithmetic: Option<String>) -> Tolerance {
        let Some(arithmetic) = arithmetic else { return Tolerance::Exact };
        let (same, other_top1, other_agreement, basis) = match profile {
            "full" => (0.3, 1.0, 1.0, "estimated: no two GPUs have run the full profile yet"),
            _ => (0.5, 7.0, 13.0, "the smoke recipe's range over seeds 0-5 on the CPU: top-1 6.29, QAT's agreement 12.30"),
        };
        Tolerance::Gpu(GpuTolerance { arithmetic, same, other_top1, other_agreement, basis: basis.to_string() })
    }

    /// How this (reviewed) tolerance holds a run whose table states `actual`: decided here once, for the
    /// limits and for what a difference says.
    pub fn comparison<'a>(&'a self, actual: &'a Tolerance) -> Comparison<'a> {
        match (self, actual) {
            (Tolerance::Exact, _) => Comparison::Exact,
            (Tolerance::Gpu(reviewed), Tolerance::Gpu(run)) if reviewed.arithmetic == run.arithmetic => {
                Comparison::SameArithmetic(reviewed)
            }
            (Tolerance::Gpu(reviewed), run) => Comparison::OtherArithmetic {
                reviewed,
                run: match run {
                    Tolerance::Gpu(run) => &run.arithmetic,
                    Tolerance::Exact => "the CPU",
                },
            },
        }
    }

    /// How this reviewed table of one device holds a run on another device of the same profile, one
    /// without a reviewed table of its own yet (its first, before review): the two devices compute with
    /// other arithmetic, so within the recipe's spread, as the GPU table of the two states it. Two exact
    /// tables (no two devices give them today) exactly.
    pub fn across_devices<'a>(&'a self, actual: &'a Tolerance) -> Comparison<'a> {
        match (self, actual) {
            (Tolerance::Gpu(gpu), _) | (Tolerance::Exact, Tolerance::Gpu(gpu)) => Comparison::OtherDevice(gpu),
            (Tolerance::Exact, Tolerance::Exact) => Comparison::Exact,
        }
    }
}

/// Which limits a reviewed table holds a run to ([`Tolerance::comparison`], [`Tolerance::across_devices`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Comparison<'a> {
    /// A CPU table: every figure exactly.
    Exact,
    /// A GPU table, and a run with the arithmetic it was recorded with.
    SameArithmetic(&'a GpuTolerance),
    /// A GPU table, and a run with other arithmetic (`run` names it).
    OtherArithmetic { reviewed: &'a GpuTolerance, run: &'a str },
    /// Another device's table, and a device's first run: the recipe's spread, as the GPU one of the two
    /// states it.
    OtherDevice(&'a GpuTolerance),
}

impl Comparison<'_> {
    /// The points top-1 and agreement may move; `None` for exactly.
    fn limits(self) -> (Option<f64>, Option<f64>) {
        match self {
            Comparison::Exact => (None, None),
            Comparison::SameArithmetic(reviewed) => (Some(reviewed.same), Some(reviewed.same)),
            Comparison::OtherArithmetic { reviewed: gpu, .. } | Comparison::OtherDevice(gpu) => {
                (Some(gpu.other_top1), Some(gpu.other_agreement))
            }
        }
    }
}

/// In words: "exactly", or the limits and why they apply.
impl fmt::Display for Comparison<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Comparison::Exact => write!(f, "exactly"),
            Comparison::SameArithmetic(reviewed) => {
                write!(f, "within {} points: the arithmetic it was recorded with ({})", reviewed.same, reviewed.arithmetic)
            }
            Comparison::OtherArithmetic { reviewed, run } => write!(
                f,
                "top-1 within {} and agreement within {} points: other arithmetic (recorded with {}, this run {run})",
                reviewed.other_top1, reviewed.other_agreement, reviewed.arithmetic
            ),
            Comparison::OtherDevice(gpu) => write!(
                f,
                "top-1 within {} and agreement within {} points in the rows both have: another device's table ({})",
                gpu.other_top1, gpu.other_agreement, gpu.basis
            ),
        }
    }
}

/// Whether `actual` is within `limit` points of `reviewed` (`None`: the same to the two decimals shown).
fn within(limit: Option<f64>, reviewed: f64, actual: f64) -> bool {
    match limit {
        None => format!("{reviewed:.2}") == format!("{actual:.2}"),
        Some(points) => (reviewed - actual).abs() <= points + 1e-9,
    }
}

/// The line a table states its tolerance in, and the parts of a GPU table's.
const TOLERANCE_PREFIX: &str = "tolerance: ";
const RECORDED_WITH: &str = "recorded with ";
const SAME_ARITHMETIC: &str = "top-1 and agreement within ";
const OTHER_ARITHMETIC: &str = "with other arithmetic (another GPU or other kernels) top-1 within ";
const OTHER_AGREEMENT: &str = " and agreement within ";

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tolerance::Exact => write!(f, "{TOLERANCE_PREFIX}exact (a CPU run is the same bytes on every machine)"),
            Tolerance::Gpu(gpu) => write!(
                f,
                "{TOLERANCE_PREFIX}{RECORDED_WITH}{}; {SAME_ARITHMETIC}{} points with that arithmetic; \
                 {OTHER_ARITHMETIC}{}{OTHER_AGREEMENT}{} points ({}); sizes, placement and providers exact",
                gpu.arithmetic, gpu.same, gpu.other_top1, gpu.other_agreement, gpu.basis
            ),
        }
    }
}

/// The golden table: its run's departures from its profile's recipe where it has any ([`departure_note`]:
/// such a table is no golden one, and says so), the tolerance it is compared with, exact sizes, accuracy and agreement to two
/// decimals, no timings (those vary between runs; they are in `report.md`), and the execution
/// providers that could not run (their reasons without folders, which differ between machines).
pub fn golden_table(eval: &EvalRun, tolerance: Tolerance, run: &RunRecipe) -> String {
    let rows = &eval.rows;
    let mut out = departure_note(run, eval).map_or(String::new(), |note| format!("{note}\n\n"));
    let _ = write!(
        out,
        "{tolerance}\n\n| model | EP | placement | bytes | MiB | top-1 % | agreement with FP32 % |\n|---|---|---|---|---|---|---|\n"
    );
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
    for unavailable in &eval.unavailable {
        let _ = writeln!(out, "\n{:?} execution provider not available: {}", unavailable.provider, portable(&unavailable.reason));
    }
    out
}

/// `text` without what names the machine: each absolute path cut to its last part, and the host's name
/// that ONNX Runtime's CUDA errors give (`... ; GPU=0 ; hostname=NAME ; file=...`) left out.
fn portable(text: &str) -> String {
    text.split(' ')
        .map(|word| match (word.strip_prefix('/'), word.strip_prefix(HOSTNAME)) {
            (Some(path), _) => path.rsplit('/').next().unwrap_or(path).to_string(),
            (None, Some(_)) => format!("{HOSTNAME}(the machine's)"),
            (None, None) => word.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How ONNX Runtime's CUDA errors name the host.
const HOSTNAME: &str = "hostname=";

/// A golden table read back.
#[derive(Debug, Clone, PartialEq)]
pub struct GoldenTable {
    pub tolerance: Tolerance,
    rows: Vec<Row>,
    /// Every other non-empty line (the providers that could not run, a recipe's departures from its
    /// profile's).
    notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Row {
    /// `model | EP`: how rows are matched.
    key: String,
    /// Placement, bytes, MiB: compared exactly.
    exact: Vec<String>,
    top1: f64,
    agreement: Option<f64>,
}

/// A table that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("not a golden table: {0}")]
pub struct GoldenTableError(String);

impl GoldenTable {
    /// Reads a table [`golden_table`] wrote (a table without a tolerance line is compared exactly).
    pub fn parse(text: &str) -> Result<GoldenTable, GoldenTableError> {
        let mut table = GoldenTable { tolerance: Tolerance::Exact, rows: Vec::new(), notes: Vec::new() };
        for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
            if let Some(rest) = line.strip_prefix(TOLERANCE_PREFIX) {
                table.tolerance = parse_tolerance(rest).ok_or_else(|| GoldenTableError(format!("tolerance `{rest}`")))?;
            } else if line.starts_with("| model") || line.starts_with("|---") {
                continue;
            } else if let Some(cells) = line.strip_prefix('|').and_then(|l| l.strip_suffix('|')) {
                let cells: Vec<&str> = cells.split('|').map(str::trim).collect();
                let [model, ep, placement, bytes, mib, top1, agreement] = cells[..] else {
                    return Err(GoldenTableError(format!("row `{line}`")));
                };
                let number =
                    |cell: &str| cell.parse::<f64>().map_err(|_| GoldenTableError(format!("number `{cell}` in `{line}`")));
                table.rows.push(Row {
                    key: format!("{model} | {ep}"),
                    exact: vec![placement.into(), bytes.into(), mib.into()],
                    top1: number(top1)?,
                    agreement: if agreement == "-" { None } else { Some(number(agreement)?) },
                });
            } else {
                table.notes.push(line.to_string());
            }
        }
        Ok(table)
    }

    /// Where `actual` differs from this (reviewed) table beyond its tolerance: one line per difference,
    /// none where it holds.
    pub fn differences(&self, actual: &GoldenTable) -> Vec<String> {
        let mut out = self.row_differences(actual, self.tolerance.comparison(&actual.tolerance));
        for row in &self.rows {
            if !actual.rows.iter().any(|theirs| theirs.key == row.key) {
                out.push(format!("{}: reviewed, missing from this run", row.key));
            }
        }
        for row in actual.rows.iter().filter(|r| !self.rows.iter().any(|mine| mine.key == r.key)) {
            out.push(format!("{}: in this run, not reviewed", row.key));
        }
        if self.notes != actual.notes {
            out.push(format!("notes: {:?} reviewed, {:?} now", self.notes, actual.notes));
        }
        out
    }

    /// Where `actual`, a device's first table (no reviewed one of its own yet), is beyond this reviewed
    /// table of another device for the same profile ([`Tolerance::across_devices`]): in the rows both
    /// have, as each device evaluates on its own execution providers and names its own that could not run
    /// (a CUDA run's CPU-provider rows are a CPU or wgpu table's). Rows in common there must be.
    pub fn differences_across_devices(&self, actual: &GoldenTable) -> Vec<String> {
        if !self.rows.iter().any(|row| actual.rows.iter().any(|theirs| theirs.key == row.key)) {
            return vec!["no row (model and execution provider) in common".to_string()];
        }
        self.row_differences(actual, self.tolerance.across_devices(&actual.tolerance))
    }

    /// Where the rows `actual` shares with this table differ beyond `comparison`'s limits (sizes and
    /// placement exactly).
    fn row_differences(&self, actual: &GoldenTable, comparison: Comparison) -> Vec<String> {
        let mut out = Vec::new();
        let (top1_limit, agreement_limit) = comparison.limits();
        for row in &self.rows {
            let Some(theirs) = actual.rows.iter().find(|r| r.key == row.key) else { continue };
            for (field, (reviewed, actual)) in ["placement", "bytes", "MiB"].iter().zip(row.exact.iter().zip(&theirs.exact)) {
                if reviewed != actual {
                    out.push(format!("{}: {field} {reviewed} reviewed, {actual} now", row.key));
                }
            }
            if !within(top1_limit, row.top1, theirs.top1) {
                out.push(format!("{}: top-1 {:.2} reviewed, {:.2} now", row.key, row.top1, theirs.top1));
            }
            match (row.agreement, theirs.agreement) {
                (Some(reviewed), Some(now)) if !within(agreement_limit, reviewed, now) => {
                    out.push(format!("{}: agreement {reviewed:.2} reviewed, {now:.2} now", row.key));
                }
                (Some(_), Some(_)) | (None, None) => {}
                (reviewed, now) => out.push(format!("{}: agreement {reviewed:?} reviewed, {now:?} now", row.key)),
            }
        }
        out
    }
}

/// A tolerance line's text after its prefix, as [`Tolerance`]'s `Display` writes it.
fn parse_tolerance(text: &str) -> Option<Tolerance> {
    if text.starts_with("exact") {
        return Some(Tolerance::Exact);
    }
    let number = |text: &str| text.split(' ').next()?.parse::<f64>().ok();
    // The arithmetic names what the run computed on in its own words, which may hold "; " themselves.
    let (arithmetic, rest) = text.strip_prefix(RECORDED_WITH)?.split_once(&format!("; {SAME_ARITHMETIC}"))?;
    let mut parts = rest.split("; ");
    let same = number(parts.next()?)?;
    let (other_top1, rest) = parts.next()?.strip_prefix(OTHER_ARITHMETIC)?.split_once(OTHER_AGREEMENT)?;
    let (other_agreement, basis) = rest.split_once(" points (")?;
    let basis = basis.strip_suffix(')')?.to_string();
    Some(Tolerance::Gpu(GpuTolerance {
        arithmetic: arithmetic.to_string(),
        same,
        other_top1: number(other_top1)?,
        other_agreement: number(other_agreement)?,
        basis,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(tolerance: Tolerance, top1: f64, agreement: f64) -> GoldenTable {
        let text = format!(
            "{tolerance}\n\n| model | EP | placement | bytes | MiB | top-1 % | agreement with FP32 % |\n|---|---|---|---|---|---|---|\n\
             | FP32 | CUDA | CUDA | 3648553 | 3.48 | 42.73 | 100.00 |\n\
             | INT8 static | CUDA | CUDA | 955311 | 0.91 | {top1:.2} | {agreement:.2} |\n"
        );
        GoldenTable::parse(&text).unwrap()
    }

    const H200: &str = "NVIDIA H200 (compute capability 9.0, NVRTC 13.0, driver CUDA 13.0), default kernels";

    fn smoke_on(arithmetic: &str) -> Tolerance {
        Tolerance::for_run("smoke", Some(arithmetic.to_string()))
    }

    #[test]
    fn a_gpu_table_holds_within_its_tolerance_and_not_beyond() {
        let reviewed = table(smoke_on(H200), 42.97, 96.37);
        assert!(reviewed.differences(&table(smoke_on(H200), 43.27, 96.07)).is_empty());
        let beyond = reviewed.differences(&table(smoke_on(H200), 43.67, 96.37));
        assert_eq!(beyond, vec!["INT8 static | CUDA: top-1 42.97 reviewed, 43.67 now"]);
        let beyond = reviewed.differences(&table(smoke_on(H200), 42.97, 95.67));
        assert_eq!(beyond, vec!["INT8 static | CUDA: agreement 96.37 reviewed, 95.67 now"]);
    }

    /// Another GPU, or the same one with kernels chosen otherwise, is held to the recipe's spread: the
    /// differences lavapipe's smoke run showed against the CPU's (top-1 3.91, QAT's agreement 6.55) pass,
    /// figures beyond the spread over seeds do not.
    #[test]
    fn other_arithmetic_is_held_to_the_recipes_spread() {
        let reviewed = table(smoke_on(H200), 42.97, 66.37);
        for other in [
            "NVIDIA GeForce RTX 4090 (compute capability 8.9, NVRTC 13.0, driver CUDA 13.0), default kernels",
            "NVIDIA H200 (compute capability 9.0, NVRTC 13.0, driver CUDA 13.0), kernels chosen by timing",
            "NVIDIA H200 (compute capability 9.0, NVRTC 13.2, driver CUDA 13.2), default kernels",
        ] {
            assert!(reviewed.differences(&table(smoke_on(other), 39.06, 59.82)).is_empty(), "{other}");
            assert_eq!(
                reviewed.differences(&table(smoke_on(other), 35.47, 53.27)),
                vec![
                    "INT8 static | CUDA: top-1 42.97 reviewed, 35.47 now",
                    "INT8 static | CUDA: agreement 66.37 reviewed, 53.27 now"
                ],
                "{other}"
            );
        }
        assert_eq!(
            reviewed.tolerance.comparison(&smoke_on(H200)).to_string(),
            format!("within 0.5 points: the arithmetic it was recorded with ({H200})")
        );
        assert_eq!(
            reviewed.tolerance.comparison(&smoke_on("llvmpipe (Mesa 22.3.6), default kernels")).to_string(),
            format!("top-1 within 7 and agreement within 13 points: other arithmetic (recorded with {H200}, this run llvmpipe (Mesa 22.3.6), default kernels)")
        );
    }

    /// A table of `tolerance` with an FP32 and an INT8 static row on each of `providers`, the static one
    /// at `top1` and `agreement`, and `notes` below.
    fn table_on(tolerance: &Tolerance, providers: &[&str], top1: f64, agreement: f64, notes: &str) -> GoldenTable {
        let mut text = format!("{tolerance}\n\n| model | EP | placement | bytes | MiB | top-1 % | agreement with FP32 % |\n|---|---|---|---|---|---|---|\n");
        for ep in providers {
            text += &format!("| FP32 | {ep} | {ep} | 3648553 | 3.48 | 42.73 | 100.00 |\n");
            text += &format!("| INT8 static | {ep} | {ep} | 955311 | 0.91 | {top1:.2} | {agreement:.2} |\n");
        }
        GoldenTable::parse(&(text + notes)).unwrap()
    }

    /// A device's first table is held to another device's reviewed table of its profile within the
    /// recipe's spread, in the rows both have: figures as far from the CPU's as lavapipe's first smoke
    /// run was (top-1 3.91, QAT's agreement 6.55) pass, whichever table is the GPU's; a GPU path that
    /// breaks a model does not; sizes stay exact; the devices' own providers and reasons are not compared.
    #[test]
    fn a_devices_first_table_is_held_to_another_devices_within_the_spread() {
        let cpu = table_on(&Tolerance::Exact, &["CPU"], 42.97, 66.37, "");
        let cuda_run = |top1, agreement| {
            table_on(&smoke_on(H200), &["CUDA", "CPU"], top1, agreement, "Cuda execution provider not available: none\n")
        };
        assert!(cpu.differences_across_devices(&cuda_run(39.06, 59.82)).is_empty());
        assert!(!cpu.differences(&cuda_run(39.06, 59.82)).is_empty(), "against its own device's, exactly");
        assert_eq!(
            cpu.differences_across_devices(&cuda_run(10.00, 59.82)),
            vec!["INT8 static | CPU: top-1 42.97 reviewed, 10.00 now"]
        );
        assert_eq!(
            cpu.differences_across_devices(&cuda_run(39.06, 53.27)),
            vec!["INT8 static | CPU: agreement 66.37 reviewed, 53.27 now"]
        );
        let resized = table_on(&smoke_on(H200), &["CPU"], 42.97, 66.37, "");
        let resized = GoldenTable::parse(&table_text(&resized).replace("955311", "955312")).unwrap();
        assert_eq!(cpu.differences_across_devices(&resized), vec!["INT8 static | CPU: bytes 955311 reviewed, 955312 now"]);
        // A GPU's reviewed table holds a device's first CPU run alike.
        let gpu = cuda_run(42.97, 66.37);
        assert!(gpu.differences_across_devices(&table_on(&Tolerance::Exact, &["CPU"], 39.06, 59.82, "")).is_empty());
        assert_eq!(
            gpu.differences_across_devices(&table_on(&Tolerance::Exact, &["TensorRT"], 42.97, 66.37, "")),
            vec!["no row (model and execution provider) in common"]
        );
        assert_eq!(
            cpu.tolerance.across_devices(&gpu.tolerance).to_string(),
            "top-1 within 7 and agreement within 13 points in the rows both have: another device's table \
             (the smoke recipe's range over seeds 0-5 on the CPU: top-1 6.29, QAT's agreement 12.30)"
        );
    }

    #[test]
    fn a_cpu_table_holds_exactly() {
        let reviewed = table(Tolerance::Exact, 42.97, 96.37);
        assert!(reviewed.differences(&table(Tolerance::Exact, 42.97, 96.37)).is_empty());
        assert_eq!(
            reviewed.differences(&table(Tolerance::Exact, 42.98, 96.37)),
            vec!["INT8 static | CUDA: top-1 42.97 reviewed, 42.98 now"]
        );
    }

    /// Sizes, placement and providers are exact whatever the tolerance.
    #[test]
    fn exact_fields_stay_exact_on_a_gpu() {
        let reviewed = table(smoke_on(H200), 42.97, 96.37);
        let mut text = table_text(&reviewed).replace("955311", "955312");
        assert_eq!(
            reviewed.differences(&GoldenTable::parse(&text).unwrap()),
            vec!["INT8 static | CUDA: bytes 955311 reviewed, 955312 now"]
        );
        text.push_str("\nCuda execution provider not available: no driver\n");
        assert_eq!(reviewed.differences(&GoldenTable::parse(&text).unwrap()).len(), 2);
    }

    fn table_text(table: &GoldenTable) -> String {
        let mut text = format!("{}\n\n", table.tolerance);
        for row in &table.rows {
            let agreement = row.agreement.map_or("-".into(), |a| format!("{a:.2}"));
            text += &format!("| {} | {} | {:.2} | {agreement} |\n", row.key, row.exact.join(" | "), row.top1);
        }
        text
    }

    #[test]
    fn reasons_lose_their_folders_and_host() {
        assert_eq!(
            portable("libcudnn.so.9 missing from /opt/x/target/onnxruntime/lib and /usr/lib/x86_64-linux-gnu"),
            "libcudnn.so.9 missing from lib and x86_64-linux-gnu"
        );
        assert_eq!(
            portable("CUDA failure 100: no CUDA-capable device is detected ; GPU=0 ; hostname=gpu-7f3a ; file=/src/cuda_call.cc ; line=1"),
            "CUDA failure 100: no CUDA-capable device is detected ; GPU=0 ; hostname=(the machine's) ; file=/src/cuda_call.cc ; line=1"
        );
    }

    #[test]
    fn tolerances_follow_the_device_and_profile() {
        assert_eq!(Tolerance::for_run("smoke", None), Tolerance::Exact);
        let Tolerance::Gpu(smoke) = smoke_on(H200) else { panic!("a GPU run's tolerance") };
        assert_eq!((smoke.arithmetic.as_str(), smoke.same, smoke.other_top1, smoke.other_agreement), (H200, 0.5, 7.0, 13.0));
        let Tolerance::Gpu(full) = Tolerance::for_run("full", Some(H200.into())) else { panic!("a GPU run's tolerance") };
        assert_eq!((full.same, full.other_top1, full.other_agreement), (0.3, 1.0, 1.0));
        // An adapter or driver may name itself with the line's own separator.
        let separated = smoke_on("Some GPU (driver 1.2; build 3), default kernels");
        for tolerance in [Tolerance::Exact, smoke_on(H200), Tolerance::Gpu(full), separated] {
            assert_eq!(GoldenTable::parse(&tolerance.to_string()).unwrap().tolerance, tolerance);
        }
    }
}
