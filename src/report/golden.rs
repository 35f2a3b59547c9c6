//! The golden table of a run (`golden/<profile>-<device>.snap` reviews it) and how a reviewed table is
//! compared with a new one. A CPU run is the same bytes on any machine, so its table is compared exactly.
//! A GPU run is not: its kernels follow the GPU (what it supports, and with the `autotune` feature what
//! was fastest there), some run in TF32 and some sum in no fixed order, so its top-1 and agreement are
//! compared within a tolerance the table itself states; sizes, placement and providers exactly.

use std::fmt::{self, Write};

use super::{agreement, fp32_twin, provider, variant_label};
use crate::eval::EvalRun;

/// How far a table's accuracy figures may move before it differs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    /// Every figure to the last digit shown.
    Exact,
    /// Top-1 and agreement within this many percentage points.
    Points(f64),
}

impl Tolerance {
    /// A run's: exact on the CPU; on a GPU 0.5 points for the smoke profile (its 10,000 test images make
    /// a point 100 of them) and 0.3 for the full one.
    pub fn for_run(profile: &str, device: &str) -> Tolerance {
        match (device, profile) {
            ("cpu", _) => Tolerance::Exact,
            (_, "full") => Tolerance::Points(0.3),
            _ => Tolerance::Points(0.5),
        }
    }

    fn allows(self, reviewed: f64, actual: f64) -> bool {
        match self {
            // As the table shows them: two decimals.
            Tolerance::Exact => format!("{reviewed:.2}") == format!("{actual:.2}"),
            Tolerance::Points(points) => (reviewed - actual).abs() <= points + 1e-9,
        }
    }
}

/// The line a table states its tolerance in.
const TOLERANCE_PREFIX: &str = "tolerance: ";

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tolerance::Exact => write!(f, "{TOLERANCE_PREFIX}exact (a CPU run is the same bytes on every machine)"),
            Tolerance::Points(points) => write!(
                f,
                "{TOLERANCE_PREFIX}top-1 and agreement within {points} points (GPU kernels and their arithmetic follow the GPU); sizes, placement and providers exact"
            ),
        }
    }
}

/// The golden table: the tolerance it is compared with, exact sizes, accuracy and agreement to two
/// decimals, no timings (those vary between runs; they are in `report.md`), and the execution
/// providers that could not run (their reasons without folders, which differ between machines).
pub fn golden_table(eval: &EvalRun, tolerance: Tolerance) -> String {
    let rows = &eval.rows;
    let mut out = format!(
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
        let _ = writeln!(
            out,
            "\n{:?} execution provider not available: {}",
            unavailable.provider,
            without_folders(&unavailable.reason)
        );
    }
    out
}

/// `text` with each absolute path cut to its last part.
fn without_folders(text: &str) -> String {
    text.split(' ')
        .map(|word| match word.strip_prefix('/') {
            Some(path) => path.rsplit('/').next().unwrap_or(path),
            None => word,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A golden table read back.
#[derive(Debug, Clone, PartialEq)]
pub struct GoldenTable {
    pub tolerance: Tolerance,
    rows: Vec<Row>,
    /// Every other non-empty line (the providers that could not run).
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
        let mut out = Vec::new();
        for row in &self.rows {
            let Some(theirs) = actual.rows.iter().find(|r| r.key == row.key) else {
                out.push(format!("{}: reviewed, missing from this run", row.key));
                continue;
            };
            for (field, (reviewed, actual)) in ["placement", "bytes", "MiB"].iter().zip(row.exact.iter().zip(&theirs.exact)) {
                if reviewed != actual {
                    out.push(format!("{}: {field} {reviewed} reviewed, {actual} now", row.key));
                }
            }
            if !self.tolerance.allows(row.top1, theirs.top1) {
                out.push(format!("{}: top-1 {:.2} reviewed, {:.2} now", row.key, row.top1, theirs.top1));
            }
            match (row.agreement, theirs.agreement) {
                (Some(reviewed), Some(now)) if !self.tolerance.allows(reviewed, now) => {
                    out.push(format!("{}: agreement {reviewed:.2} reviewed, {now:.2} now", row.key));
                }
                (Some(_), Some(_)) | (None, None) => {}
                (reviewed, now) => out.push(format!("{}: agreement {reviewed:?} reviewed, {now:?} now", row.key)),
            }
        }
        for row in actual.rows.iter().filter(|r| !self.rows.iter().any(|mine| mine.key == r.key)) {
            out.push(format!("{}: in this run, not reviewed", row.key));
        }
        if self.notes != actual.notes {
            out.push(format!("providers: {:?} reviewed, {:?} now", self.notes, actual.notes));
        }
        out
    }
}

fn parse_tolerance(text: &str) -> Option<Tolerance> {
    if text.starts_with("exact") {
        return Some(Tolerance::Exact);
    }
    let points = text.strip_prefix("top-1 and agreement within ")?.split(' ').next()?;
    points.parse().ok().map(Tolerance::Points)
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

    #[test]
    fn a_gpu_table_holds_within_its_tolerance_and_not_beyond() {
        let reviewed = table(Tolerance::Points(0.5), 42.97, 96.37);
        assert_eq!(reviewed.tolerance, Tolerance::Points(0.5));
        assert!(reviewed.differences(&table(Tolerance::Points(0.5), 43.27, 96.07)).is_empty());
        let beyond = reviewed.differences(&table(Tolerance::Points(0.5), 43.67, 96.37));
        assert_eq!(beyond, vec!["INT8 static | CUDA: top-1 42.97 reviewed, 43.67 now"]);
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
        let reviewed = table(Tolerance::Points(0.5), 42.97, 96.37);
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
    fn reasons_lose_their_folders() {
        assert_eq!(
            without_folders("libcudnn.so.9 missing from /opt/x/target/onnxruntime/lib and /usr/lib/x86_64-linux-gnu"),
            "libcudnn.so.9 missing from lib and x86_64-linux-gnu"
        );
    }

    #[test]
    fn tolerances_follow_the_device_and_profile() {
        assert_eq!(Tolerance::for_run("smoke", "cpu"), Tolerance::Exact);
        assert_eq!(Tolerance::for_run("smoke", "cuda"), Tolerance::Points(0.5));
        assert_eq!(Tolerance::for_run("full", "wgpu"), Tolerance::Points(0.3));
        assert_eq!(GoldenTable::parse(&Tolerance::Points(0.3).to_string()).unwrap().tolerance, Tolerance::Points(0.3));
    }
}
