//! The reviewed metric table of a run (`golden/<profile>-<device>.snap`, e.g. `smoke-cpu`): exact
//! sizes, accuracy and agreement with FP32, no timings, compared exactly for a CPU run and within the
//! tolerance the table states for a GPU run (`vggq::report::GoldenTable`). `cargo xtask all` and
//! `cargo xtask test` point `VGGQ_GOLDEN_RUN` at the run they made. A run with limits or overrides,
//! quantized otherwise, evaluated on other test images, or trained on data of other image counts than
//! CIFAR-10's, is not its profile's recipe and has no golden table. Where a profile and device have none
//! yet, or the table differs, insta writes the run's as a pending snapshot (`.snap.new`) for review; a
//! missing table passes (under CI, `CI=true`, it fails), a differing one fails naming the rows and the
//! machines.

use std::path::{Path, PathBuf};

use vggq::backend::autotune::AutotuneCache;
use vggq::backend::Selection;
use vggq::data::ImageCounts;
use vggq::eval::EvalRun;
use vggq::pipeline::QuantizeSettings;
use vggq::profile::{Limits, Profile};
use vggq::quant::Calibration;
use vggq::report::{departure_note, golden_table, markdown, Comparison, GoldenTable, ReportInput, RunRecipe, Tolerance};
use vggq_core::run_folder::{MANIFEST_FILE, METRICS_FILE, QUANT_REPORT_FILE, TRAIN_REPORT_FILE};
use vggq_core::QatMode;

mod util;

#[test]
fn metrics_match_the_reviewed_golden_table() {
    let run = util::golden_run();
    let train_report = read_json(&run, TRAIN_REPORT_FILE);
    let profile: Profile = serde_json::from_value(train_report["profile"].clone()).unwrap();
    let device: Selection = serde_json::from_value(train_report["device"].clone()).unwrap();
    let data_images: Option<ImageCounts> = serde_json::from_value(train_report["data_images"].clone()).unwrap();
    let quantize: QuantizeSettings = serde_json::from_value(read_json(&run, QUANT_REPORT_FILE)).unwrap();
    let recipe = RunRecipe { profile: &profile, data_images, quantize };
    let eval: EvalRun = serde_json::from_value(read_json(&run, METRICS_FILE)).unwrap();
    if let Some(note) = departure_note(&recipe, &eval) {
        // On a line of its own: `cargo xtask all` shows it among the test harness's progress dots.
        println!("\n{}: {note}", run.display());
        return;
    }
    let manifest = read_json(&run, MANIFEST_FILE);
    let provenance = &manifest["provenance"];
    let name = format!("{}-{}", profile.name(), device.backend.name());
    let autotune: Option<AutotuneCache> = serde_json::from_value(provenance["autotune"].clone()).unwrap();
    let tolerance = Tolerance::for_run(&profile.name(), device.arithmetic(autotune.as_ref()));
    let table = golden_table(&eval, tolerance, &recipe);
    let machine = machine(provenance);

    insta::with_settings!({
        snapshot_path => "../golden",
        prepend_module_to_snapshot => false,
        omit_expression => true,
        description => format!(
            "profile {}; device {}; gpu {}; adapter {}; {}; onnxruntime {}; dataset {} ({}); recorded on {machine}",
            profile.name(), provenance["device"], provenance["gpu"], provenance["adapter"], provenance["execution_providers"],
            provenance["onnxruntime"], provenance["dataset"], provenance["dataset_sha256"]
        ),
    }, {
        let reviewed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden").join(format!("{name}.snap"));
        if reviewed.exists() {
            let (recorded_on, reviewed_table) = reviewed_snapshot(&reviewed);
            let reviewed_table = GoldenTable::parse(&reviewed_table).unwrap();
            let run_table = GoldenTable::parse(&table).unwrap();
            let differences = reviewed_table.differences(&run_table);
            let comparison = reviewed_table.tolerance.comparison(&run_table.tolerance);
            if differences.is_empty() {
                // An earlier run's pending table is one this run contradicts: left in place, `cargo insta
                // review` would offer to accept it over the reviewed table this run matches.
                let pending = reviewed.with_extension("snap.new");
                if pending.exists() {
                    std::fs::remove_file(&pending).unwrap_or_else(|e| panic!("{}: {e}", pending.display()));
                    println!("removed {}: an earlier run's table, and this run matches the reviewed one", pending.display());
                }
                return;
            }
            // Written as `.snap.new` for review (outside CI), then failed with what differs and where.
            let _ = std::panic::catch_unwind(|| insta::assert_snapshot!(name.clone(), table.clone()));
            panic!(
                "{} differs from the reviewed golden/{name}.snap, compared {}:\n  {}\n\
                 this run: {machine}\nreviewed: {recorded_on}\n{}",
                run.display(),
                comparison,
                differences.join("\n  "),
                advice(comparison)
            );
        } else if std::env::var_os("CI").is_some() {
            panic!("{} has no reviewed golden/{name}.snap, which CI requires; its table:\n{table}", run.display());
        } else {
            // No reviewed table for this profile and device: insta writes the run's as `.snap.new` (and
            // fails its assertion, unless `INSTA_FORCE_PASS`, which `cargo xtask` sets so that this
            // expected failure prints no panic), and `cargo xtask all` says how to review the table. The
            // run passes where its table is within the recipe's spread of the profile's reviewed tables
            // on other devices: a first GPU table beyond it comes from a GPU path that breaks a model,
            // and is not to be accepted as that device's reference before what broke is found.
            let _ = std::panic::catch_unwind(|| insta::assert_snapshot!(name.clone(), table.clone()));
            let pending = reviewed.with_extension("snap.new");
            assert!(pending.is_file(), "insta left no {} for review", pending.display());
            let run_table = GoldenTable::parse(&table).unwrap();
            let (mut beyond, mut what_to_do) = (Vec::new(), "");
            for other in reviewed_tables().iter().filter(|other| other.profile == profile.name()) {
                let differences = other.table.differences_across_devices(&run_table);
                if !differences.is_empty() {
                    let comparison = other.table.tolerance.across_devices(&run_table.tolerance);
                    beyond.push(format!("golden/{}.snap, compared {comparison}:\n  {}", other.name, differences.join("\n  ")));
                    what_to_do = advice(comparison);
                }
            }
            assert!(
                beyond.is_empty(),
                "{} has no reviewed golden/{name}.snap yet, and its table (pending in {}) is beyond the recipe's \
                 spread from the profile's reviewed table on another device:\n{}\nthis run: {machine}\n{what_to_do}",
                run.display(),
                pending.display(),
                beyond.join("\n"),
            );
        }
    });
}

/// A run of a recipe with limits or overrides, quantized otherwise than the recipe, evaluated on other
/// test images than its profile takes, or trained on data of other image counts than CIFAR-10's (a copy
/// cut short), says so above its figures, in `report.md` and its golden table, and that table differs
/// from one of the profile's own recipe: its figures are never read as the profile's.
#[test]
fn a_limited_recipes_tables_say_so() {
    let run = util::golden_run();
    let train_report = read_json(&run, TRAIN_REPORT_FILE);
    let profile: Profile = serde_json::from_value(train_report["profile"].clone()).unwrap();
    let classes: Vec<String> = serde_json::from_value(train_report["classes"].clone()).unwrap();
    // The profile's recipe, evaluated as it evaluates: the run itself may have limits (the wgpu and
    // full-shape runs of `cargo xtask test` have).
    let recipe = Profile::named(profile.name);
    let mut eval: EvalRun = serde_json::from_value(read_json(&run, METRICS_FILE)).unwrap();
    let (_, recipe_images) = recipe.data.eval_counts();
    eval.rows.iter_mut().for_each(|row| row.eval.images = recipe_images);
    let epochs = recipe.train.epochs;
    let limited = recipe.clone().limited(&Limits { epochs: Some(epochs + 1), ..Limits::default() });
    let mut fewer_images = eval.clone();
    fewer_images.rows.iter_mut().for_each(|row| row.eval.images = 200);
    let cifar10 = Some(ImageCounts::CIFAR10);
    let cut_short = Some(ImageCounts { train: 49_999, test: 10_000 });
    // Data with fewer test images than the profile takes: the run evaluates all of them, and only the
    // data is said to depart.
    let fewer_test_images = Some(ImageCounts { train: 50_000, test: 150 });
    let mut all_of_fewer = eval.clone();
    all_of_fewer.rows.iter_mut().for_each(|row| row.eval.images = 150);
    let note = |departure: &str| format!("not the {} profile's recipe, and no golden table's: {departure}", recipe.name());
    let run_of = |profile, data_images, quantize| RunRecipe { profile, data_images, quantize };
    let recipes_quantization = QuantizeSettings::RECIPE;
    let minmax = QuantizeSettings { calibration: Calibration::Minmax, ..recipes_quantization };
    let finetune = QuantizeSettings { qat_mode: QatMode::Finetune, ..recipes_quantization };
    let departures = [
        (
            run_of(&limited, cifar10, recipes_quantization),
            &eval,
            note(&format!("train.epochs {} where the recipe has {epochs}", epochs + 1)),
        ),
        (
            run_of(&recipe, cifar10, recipes_quantization),
            &fewer_images,
            note(&format!("evaluated on 200 test images (the run's profile takes {recipe_images})")),
        ),
        (
            run_of(&recipe, cut_short, recipes_quantization),
            &eval,
            note("the data holds 49999 training and 10000 test images where CIFAR-10 has 50000 and 10000"),
        ),
        (
            run_of(&recipe, fewer_test_images, recipes_quantization),
            &all_of_fewer,
            note("the data holds 50000 training and 150 test images where CIFAR-10 has 50000 and 10000"),
        ),
        (run_of(&recipe, cifar10, minmax), &eval, note("quantize --calibration minmax where the recipe has histogram")),
        (run_of(&recipe, cifar10, finetune), &eval, note("quantize --qat-mode finetune where the recipe has fp32match")),
    ];

    let recipes =
        GoldenTable::parse(&golden_table(&eval, Tolerance::Exact, &run_of(&recipe, cifar10, recipes_quantization))).unwrap();
    for (run, eval, note) in departures {
        let table = golden_table(eval, Tolerance::Exact, &run);
        assert!(table.starts_with(&format!("{note}\n\n")), "{table}");
        let differences = recipes.differences(&GoldenTable::parse(&table).unwrap());
        assert_eq!(differences.len(), 1, "{differences:?}");
        assert!(differences[0].starts_with("notes: ") && differences[0].contains(note.as_str()), "{differences:?}");
        let input = ReportInput { recipe: run, dataset: "CIFAR-10", device: "CPU", class_names: &classes, eval };
        assert!(markdown(&input).contains(&format!("**This run is {note}.**")));
    }
    // A run whose build did not record its data's counts is not said to depart for that.
    for data_images in [cifar10, None] {
        let input = ReportInput {
            recipe: run_of(&recipe, data_images, recipes_quantization),
            dataset: "CIFAR-10",
            device: "CPU",
            class_names: &classes,
            eval: &eval,
        };
        // The departure's sentence and note (a full recipe's report says "recipe" elsewhere: beside the
        // seed's run of it).
        let report = markdown(&input);
        assert!(
            !report.contains("**This run is ") && !report.contains("no golden table's"),
            "a run of the profile's recipe is said to depart from it:\n{report}"
        );
    }
}

/// The report sets a run beside the seed's own run only where it is a run of the seed's recipe, the full
/// profile without limits or overrides: a smoke run, or a full one cut short, would read as falling far
/// short of it.
#[test]
fn only_a_run_of_the_full_recipe_stands_beside_the_seeds_run() {
    let run = util::golden_run();
    let classes: Vec<String> = serde_json::from_value(read_json(&run, TRAIN_REPORT_FILE)["classes"].clone()).unwrap();
    let mut eval: EvalRun = serde_json::from_value(read_json(&run, METRICS_FILE)).unwrap();
    let full = Profile::full();
    let (_, full_images) = full.data.eval_counts();
    eval.rows.iter_mut().for_each(|row| row.eval.images = full_images);
    let cut_short = full.clone().limited(&Limits { train_images: Some(128), ..Limits::default() });
    for (profile, stands) in [(&full, true), (&cut_short, false), (&Profile::smoke(), false)] {
        let input = ReportInput {
            recipe: RunRecipe { profile, data_images: Some(ImageCounts::CIFAR10), quantize: QuantizeSettings::RECIPE },
            dataset: "CIFAR-10",
            device: "CPU",
            class_names: &classes,
            eval: &eval,
        };
        let report = markdown(&input);
        assert_eq!(
            report.contains("## Against the seed's run"),
            stands,
            "{} profile, {:?}:\n{report}",
            profile.name(),
            profile.departures()
        );
    }
}

/// Every reviewed table in `golden/` reads back with today's reader, states the tolerance of its device
/// (exact for a CPU table, a GPU table's limits and arithmetic otherwise) and where it was recorded. Only
/// the CPU table is checked against a run in CI; without this, a change to how tables are written would
/// leave a GPU table unreadable until its next GPU run.
#[test]
fn every_reviewed_table_reads_back() {
    let tables = reviewed_tables();
    for ReviewedTable { name, recorded_on, table, .. } in &tables {
        match &table.tolerance {
            Tolerance::Exact => assert!(name.ends_with("-cpu"), "{name}: an exact tolerance on a GPU table"),
            Tolerance::Gpu(gpu) => assert!(!name.ends_with("-cpu") && !gpu.arithmetic.is_empty(), "{name}: {gpu:?}"),
        }
        assert_ne!(recorded_on, "(not recorded)", "{name}");
        assert!(table.differences(table).is_empty(), "{name}");
        let without_rows = GoldenTable::parse(&table.tolerance.to_string()).unwrap();
        assert!(!table.differences(&without_rows).is_empty(), "{name}: no rows");
    }
    assert!(tables.len() >= 2, "golden/ holds smoke-cpu.snap and smoke-wgpu.snap at least; read {}", tables.len());
}

/// The reviewed tables of one profile on different devices are within the recipe's spread of each other,
/// as a device's first table had to be of those before it (`metrics_match_the_reviewed_golden_table`):
/// one accepted beyond it, or a table changed since, is caught here, in CI, without a GPU.
#[test]
fn a_profiles_reviewed_tables_hold_each_other_across_devices() {
    let tables = reviewed_tables();
    let mut pairs = 0;
    for (i, first) in tables.iter().enumerate() {
        for second in tables[i + 1..].iter().filter(|second| second.profile == first.profile) {
            for (reviewed, run) in [(first, second), (second, first)] {
                let differences = reviewed.table.differences_across_devices(&run.table);
                assert!(
                    differences.is_empty(),
                    "golden/{}.snap against golden/{}.snap: {differences:?}",
                    reviewed.name,
                    run.name
                );
            }
            pairs += 1;
        }
    }
    assert!(pairs >= 1, "golden/ holds smoke-cpu.snap and smoke-wgpu.snap at least");
}

/// A reviewed table in `golden/`: its name (`<profile>-<device>`), its profile, where it was recorded.
struct ReviewedTable {
    name: String,
    profile: String,
    recorded_on: String,
    table: GoldenTable,
}

/// Every reviewed table in `golden/`, in the order of their names.
fn reviewed_tables() -> Vec<ReviewedTable> {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden");
    let mut tables = Vec::new();
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "snap") {
            continue;
        }
        let (recorded_on, text) = reviewed_snapshot(&path);
        let table = GoldenTable::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let profile = name.split_once('-').unwrap_or_else(|| panic!("{name}: not <profile>-<device>")).0.to_string();
        tables.push(ReviewedTable { name, profile, recorded_on, table });
    }
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    tables
}

/// The JSON file `name` of the run folder `run`.
fn read_json(run: &Path, name: &str) -> serde_json::Value {
    let path = run.join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The machine facts of a run, from its manifest.
fn machine(provenance: &serde_json::Value) -> String {
    let cpu = &provenance["cpu"];
    format!(
        "{} threads, {} kernels (the CPU has {}), {}; {}",
        cpu["threads"], cpu["isa"], cpu["detected_isa"], cpu["processor"], provenance["device_reason"]
    )
}

/// What to do about a difference, by how the reviewed table held the run.
fn advice(comparison: Comparison) -> &'static str {
    match comparison {
        Comparison::Exact => {
            "A CPU run gives the same bytes on every machine (core count and instruction set do not change \
             them): a difference means the code, the dependencies or the data changed. If you changed them on \
             purpose, review the pending table with `cargo insta review` and commit it; otherwise, find what changed."
        }
        Comparison::SameArithmetic(_) => {
            "The same GPU and kernels as the reviewed run, beyond what a rerun moves: the code, the dependencies \
             or the data changed. If you changed them on purpose, review the pending table with \
             `cargo insta review` and commit it; otherwise, find what changed."
        }
        Comparison::OtherDevice(_) => {
            "A table this far from another device's comes from a path that breaks training or a quantized model, \
             not from other rounding: find what broke before accepting it as this device's reference."
        }
        Comparison::OtherArithmetic { .. } => {
            "Beyond the spread of this recipe over seeds, which is how far other arithmetic moves it: more than \
             another GPU's rounding. Find what changed; if it was intended, review the pending table with \
             `cargo insta review` and commit it."
        }
    }
}

/// A reviewed snapshot's description (where it was recorded) and its table: what follows insta's header.
fn reviewed_snapshot(path: &Path) -> (String, String) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut parts = text.splitn(3, "---\n");
    let (header, table) = match (parts.next(), parts.next(), parts.next()) {
        (Some(""), Some(header), Some(table)) => (header, table),
        _ => ("", text.as_str()),
    };
    // insta writes the description as a double-quoted YAML string, whose escapes here are JSON's.
    let description = header
        .lines()
        .find_map(|line| line.strip_prefix("description: "))
        .map(|d| serde_json::from_str::<String>(d).unwrap_or_else(|_| d.to_string()));
    let recorded_on = description
        .as_deref()
        .and_then(|d| d.rsplit_once("recorded on "))
        .map_or_else(|| "(not recorded)".to_string(), |(_, on)| on.to_string());
    (recorded_on, table.to_string())
}
