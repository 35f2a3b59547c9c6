//! The `vggq` binary against bad input, as a user meets it: every bad flag a one-line usage error that
//! names the flag (exit 2) before anything is written, every bad file a runtime error that names it
//! (exit 1), never a panic (exit 101) or an abort; and no error printed where nothing failed.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use prost::Message;
use vggq::export::onnx::proto::{tensor_shape_proto, type_proto, ModelProto, TensorShapeProto, TypeProto, ValueInfoProto};
use vggq::model::kernels::isa::ISA_VARIABLE;
use vggq_core::interrupted::kill_once_written;
use vggq_core::run_folder::{
    checkpoint_in_run, AUTOTUNE_FOLDER, MANIFEST_FILE, METRICS_FILE, MODEL_FILE, QUANT_REPORT_FILE, REPORT_FILE, REPORT_OUTPUTS,
    STEPS_FOLDER, TRAIN_REPORT_FILE,
};
use vggq_core::{QatMode, Variant};

mod util;

fn vggq(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vggq")).args(args).envs(env.iter().copied()).output().expect("vggq runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Usage errors: (arguments, what the message must name). `--out` points at a folder that must not
/// appear.
const BAD_FLAGS: &[(&[&str], &str)] = &[
    (&["train", "--train-images", "0"], "--train-images"),
    (&["train", "--eval-images", "0"], "--eval-images"),
    (&["train", "--eval-images", "31"], "must be at least 32: the run's evaluation times full batches of 32 images"),
    (&["train", "--calibration-batches", "0"], "--calibration-batches"),
    (&["train", "--epochs", "100000000000"], "--epochs"),
    (&["train", "--profile", "medium"], "--profile"),
    (&["train", "--device", "tpu"], "--device"),
    (&["bench-train", "--batch", "0"], "--batch"),
    (&["bench-train", "--size", "0"], "--size"),
    (&["bench-train", "--size", "48"], "--size"),
    (&["bench-train", "--width-div", "0"], "--width-div"),
    (&["bench-train", "--hidden", "0"], "--hidden"),
    (&["bench-train", "--hidden", "200000"], "--hidden"),
    (&["bench-train", "--seconds", "0"], "--seconds"),
    (&["bench-train", "--seconds", "nan"], "--seconds"),
    (&["bench-train", "--rounds", "0"], "--rounds"),
    (&["eval", "model.onnx", "--batch", "0"], "--batch"),
    (&["eval", "model.onnx", "--images", "0"], "--images"),
    (&["eval", "model.onnx", "--threads", "0"], "--threads"),
    (&["eval", "model.onnx", "--threads", "100000"], "--threads"),
    (&["bench-loader", "--data", "data", "--size", "0"], "--size"),
    (&["bench-loader", "--data", "data", "--size", "100000"], "--size"),
    (&["bench-loader", "--data", "data", "--images", "0"], "--images"),
];

#[test]
fn bad_flags_are_usage_errors_naming_the_flag_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (args, flag) in BAD_FLAGS {
        let out = dir.path().join("run");
        let mut all: Vec<&str> = args.to_vec();
        if args[0] == "train" {
            all.extend(["--out", out.to_str().unwrap()]);
        }
        let output = vggq(&all, &[]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert!(message.contains(flag), "{args:?}: the message does not name {flag}: {message}");
        assert!(!out.exists(), "{args:?} created {}", out.display());
    }
    // A path variable set to nothing is a usage error too, and says where the empty value came from.
    let commands: [(&[&str], _, _); 2] =
        [(&["train"], "VGGQ_DATA", "--data"), (&["quantize", "--run", "run"], "VGGQ_WEIGHTS", "--weights")];
    for (args, variable, flag) in commands {
        let output = vggq(args, &[(variable, "")]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{variable}: {message}");
        assert!(
            message.contains(flag) && message.contains("an environment variable set to nothing counts as given"),
            "{variable}: {message}"
        );
    }
}

#[test]
fn an_unknown_instruction_set_is_a_usage_error() {
    // No such set anywhere, and one of another architecture's.
    let foreign = if cfg!(target_arch = "aarch64") { "avx2" } else { "neon" };
    for value in ["avx3", foreign] {
        let output = vggq(&["device"], &[("VGGQ_ISA", value)]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{message}");
        let named = [ISA_VARIABLE, value, std::env::consts::ARCH, "scalar"];
        assert!(named.iter().all(|word| message.contains(word)), "{message}");
    }
}

/// An ONNX model whose input is `[N, 3, side, side]` with `side` as given.
fn model_with_side(side: i64) -> Vec<u8> {
    model_with_shapes(&[None, Some(3), Some(side), Some(side)], None)
}

/// An ONNX model (no nodes) whose input `input` and, where given, output `logits` have these dimensions
/// (`None`: free).
fn model_with_shapes(input: &[Option<i64>], output: Option<&[Option<i64>]>) -> Vec<u8> {
    let value = |name: &str, dims: &[Option<i64>]| ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|value| tensor_shape_proto::Dimension {
                            value: value.map(tensor_shape_proto::dimension::Value::DimValue),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let graph = vggq::export::onnx::proto::GraphProto {
        input: vec![value("input", input)],
        output: output.map(|dims| value("logits", dims)).into_iter().collect(),
        ..Default::default()
    };
    ModelProto { graph: Some(graph), ..Default::default() }.encode_to_vec()
}

/// A model that cannot take the batch asked for, or gives logits for other classes than the data's, is
/// refused naming the file and what fits, before any model runs (the last would otherwise be scored,
/// against labels of another task, and the first fail in ONNX Runtime naming no file). An empty file is
/// said to be empty.
#[test]
fn models_that_do_not_fit_the_data_or_the_batch_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    util::fixtures::write_cifar_binary_of(data.path(), &util::fixtures::CIFAR10_CLASSES);
    let data = data.path().to_str().unwrap();
    let side = Some(32);
    let files: [(&str, Vec<u8>, &str, &str); 4] = [
        (
            "two-classes.onnx",
            model_with_shapes(&[None, Some(3), side, side], Some(&[None, Some(2)])),
            "1",
            "gives logits for 2 classes, and the data has 10 (airplane, automobile,",
        ),
        (
            "one-at-a-time.onnx",
            model_with_shapes(&[Some(1), Some(3), side, side], Some(&[Some(1), Some(10)])),
            "32",
            "takes one image at a time: give --batch 1",
        ),
        (
            "batch-of-eight.onnx",
            model_with_shapes(&[Some(8), Some(3), side, side], None),
            "8",
            "takes batches of exactly 8 images, and vggq eval also runs it on one image",
        ),
        ("empty.onnx", Vec::new(), "1", "is empty (0 bytes), not an ONNX model"),
    ];
    for (name, bytes, batch, said) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let output = vggq(&["eval", path.to_str().unwrap(), "--device", "cpu", "--data", data, "--batch", batch], &[]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{name}: {message}");
        assert!(message.contains(&format!("{} {said}", path.display())), "{name}: not `{said}`: {message}");
        assert!(!String::from_utf8_lossy(&output.stdout).contains("top-1"), "{name}: the table began");
    }
}

/// Hostile or broken files: a negative side, a side of 2^40 (a batch of it would be exabytes), a
/// truncated protobuf. Each is refused naming the file, before any batch is allocated, and the folders
/// made for its report go with the failed command.
#[test]
fn hostile_onnx_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("negative.onnx", model_with_side(-32)),
        ("huge.onnx", model_with_side(1 << 40)),
        ("truncated.onnx", model_with_side(32)[..20].to_vec()),
    ];
    for (name, bytes) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let report = dir.path().join("reports/of-hostile-files/report.json");
        let report = report.to_str().unwrap();
        let output =
            vggq(&["eval", path.to_str().unwrap(), "--device", "cpu", "--data", "/nonexistent", "--report", report], &[]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{name}: {message}");
        assert!(message.contains(name), "{name}: the message does not name the file: {message}");
        assert!(!message.contains("panicked"), "{name}: {message}");
        assert!(!dir.path().join("reports").exists(), "{name}: the failed evaluation left its report's folders");
    }
    assert!(!Path::new("/nonexistent").exists());
}

/// A PyTorch file given as a model, a model whose output is not named as vggq's export names it, one ONNX
/// Runtime cannot load, and a folder (a run's, `--run` forgotten): each is refused by what it is (not a
/// protobuf decoder's error, not a panic on the missing output), in vggq's words alone.
#[test]
fn files_that_are_not_vggqs_kind_of_onnx_model_say_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let run = util::golden_run();
    let mut model = ModelProto::decode(std::fs::read(run.join(Variant::StaticInt8.onnx_file())).unwrap().as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    for output in &mut graph.output {
        output.name = Some("scores".into());
    }
    for name in graph.node.iter_mut().flat_map(|node| &mut node.output).filter(|name| *name == "logits") {
        *name = "scores".into();
    }
    let renamed = dir.path().join("renamed.onnx");
    std::fs::write(&renamed, model.encode_to_vec()).unwrap();
    let folder = dir.path().to_path_buf();
    let no_opset = dir.path().join("no-opset.onnx");
    std::fs::write(&no_opset, model_with_shapes(&[None, Some(3), Some(32), Some(32)], Some(&[None, Some(3)]))).unwrap();
    let data = tempfile::tempdir().unwrap();
    util::fixtures::write_cifar_binary(data.path());
    let pth = run.join(Variant::StaticInt8.pth_file());
    for (model, said) in [
        (&renamed, "the model has no output named `logits` (its outputs: `scores`)".to_string()),
        (&pth, format!("{} is not an ONNX model (a zip archive, as a PyTorch .pth is", pth.display())),
        (&no_opset, format!("opening {} on the CPU provider", no_opset.display())),
        (&folder, format!("{} is a folder, not an ONNX model (a run's folder is evaluated with `--run", folder.display())),
    ] {
        let data = data.path().to_str().unwrap();
        let output = vggq(&["eval", model.to_str().unwrap(), "--device", "cpu", "--data", data, "--batch", "1"], &[]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(message.contains(&said), "not `{said}`: {message}");
        // ONNX Runtime's own log adds nothing to ours (it said it had no profile to write), and no table
        // header stands above the error without rows.
        assert!(!message.contains("[E:onnxruntime"), "{message}");
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(!printed.contains("top-1 %"), "{printed}");
    }
}

/// Logits that cannot be scored are refused, not counted: more classes than the data's behind a symbolic
/// dimension (no fixed size to check before the run), and a model that gives NaN (argmax would call every
/// such row class 0, a plausible-looking top-1). A model listing another input before vggq's `input` is
/// fed by name and runs.
#[test]
fn logits_that_cannot_be_scored_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    util::fixtures::write_cifar_binary_of(data.path(), &util::fixtures::CIFAR10_CLASSES);
    let eval = |model: &Path| {
        let data = data.path().to_str().unwrap();
        vggq(&["eval", model.to_str().unwrap(), "--device", "cpu", "--data", data, "--batch", "1"], &[])
    };
    let golden = std::fs::read(util::golden_run().join(Variant::Fp32.onnx_file())).unwrap();
    let edited = |name: &str, edit: &dyn Fn(&mut vggq::export::onnx::proto::GraphProto)| {
        let mut model = ModelProto::decode(golden.as_slice()).unwrap();
        edit(model.graph.as_mut().unwrap());
        let path = dir.path().join(name);
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        path
    };
    let eleven_classes = edited("eleven-classes.onnx", &|graph| {
        for initializer in graph.initializer.iter_mut().filter(|i| i.name.as_deref().unwrap().starts_with("classifier.output.")) {
            let row = initializer.raw_data.as_ref().unwrap()[..initializer.raw_data.as_ref().unwrap().len() / 10].to_vec();
            initializer.raw_data.as_mut().unwrap().extend(row);
            initializer.dims[0] = 11;
        }
        let Some(type_proto::Value::TensorType(tensor)) = graph.output[0].r#type.as_mut().unwrap().value.as_mut() else {
            unreachable!("the export's output is a tensor")
        };
        tensor.shape.as_mut().unwrap().dim[1].value = Some(tensor_shape_proto::dimension::Value::DimParam("classes".into()));
    });
    let not_a_number = edited("not-a-number.onnx", &|graph| {
        let bias = graph.initializer.iter_mut().find(|i| i.name.as_deref() == Some("classifier.output.bias")).unwrap();
        bias.raw_data.as_mut().unwrap()[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    for (model, said) in [
        (&eleven_classes, "the model gives logits for 11 classes, and the data has 10: it is not a model of these classes"),
        (&not_a_number, "the model's logits for test image 0 include NaN: a broken model (or export)"),
    ] {
        let output = eval(model);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(message.contains(&format!("evaluating {} on the CPU provider", model.display())), "{message}");
        assert!(message.contains(said), "not `{said}`: {message}");
    }
    let another_input_first = edited("another-input-first.onnx", &|graph| {
        let mut mask = graph.input[0].clone();
        mask.name = Some("mask".into());
        graph.input.insert(0, mask);
    });
    let output = eval(&another_input_first);
    assert!(output.status.success(), "{}", stderr(&output));
}

/// A machine with no display session (CI's, a server's): Mesa's device-selection layer looks for the
/// display's GPU through libwayland, which prints "error: XDG_RUNTIME_DIR is invalid or not set" though
/// nothing failed; vggq turns the layer off there, and the wgpu probe still finds its adapter.
#[cfg(feature = "wgpu")]
#[test]
fn a_wgpu_run_without_a_display_prints_no_false_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_vggq"))
        .args(["device", "--device", "wgpu"])
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("WAYLAND_SOCKET")
        .env_remove("DISPLAY")
        .env_remove("NODEVICE_SELECT")
        .env_remove("MESA_VK_DEVICE_SELECT")
        .output()
        .expect("vggq runs");
    let message = stderr(&output);
    assert!(output.status.success(), "{message}");
    assert!(!message.contains("XDG_RUNTIME_DIR"), "{message}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("chooses wgpu"), "{message}");
}

/// A run's later steps refuse data other than the data it was trained on, before any is loaded or
/// downloaded, and write nothing: its variants and ONNX files would be calibrated and scored on other
/// images than its FP32 model. The run is a copy of the report of `cargo xtask test`'s smoke run (trained
/// on the JPEG copy); the other data, generated CIFAR binary files.
#[test]
fn a_runs_later_steps_refuse_other_data_before_loading_any() {
    let run = golden_run_holding(&[TRAIN_REPORT_FILE]);
    let other = tempfile::tempdir().unwrap();
    util::fixtures::write_cifar_binary(other.path());
    let cache = tempfile::tempdir().unwrap();
    let folder = |dir: &Path| dir.to_str().unwrap().to_string();
    for step in ["quantize", "eval"] {
        let with_other = ["--data".to_string(), folder(other.path())];
        for data in [&with_other[..], &[]] {
            let output = Command::new(env!("CARGO_BIN_EXE_vggq"))
                .args([step, "--run", &folder(run.path()), "--device", "cpu"])
                .args(data)
                .env_remove("VGGQ_DATA")
                .env("VGGQ_CACHE", cache.path())
                .output()
                .expect("vggq runs");
            let message = stderr(&output);
            assert_eq!(output.status.code(), Some(1), "{step} {data:?}: {message}");
            assert!(
                message.contains("was trained on sha256:") && message.contains("(archive cifar10-jpeg.tar.gz)"),
                "{step} {data:?}: {message}"
            );
            let given = if data.is_empty() { "without --data it is the official archive" } else { "--data " };
            assert!(message.contains(given), "{step} {data:?}: {message}");
        }
    }
    let names = |dir: &Path| std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>();
    assert_eq!(names(run.path()), [TRAIN_REPORT_FILE], "the run's folder gained files");
    assert!(names(cache.path()).is_empty(), "something was downloaded into the cache");
}

/// An output path that cannot be a folder (one below a file, or a file), or a report path that is a
/// folder, is refused before anything runs: before the data is read (it does not exist here), so never
/// after hours of training or evaluation.
#[test]
fn an_output_folder_that_cannot_be_made_is_refused_first() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let out = file.join("run");
    let report = out.join("metrics.json");
    let (out, report) = (out.to_str().unwrap(), report.to_str().unwrap());
    let file = file.to_str().unwrap();
    let model = util::golden_run().join(Variant::StaticInt8.onnx_file());
    let model = model.to_str().unwrap();
    let commands: [(&[&str], &str); 4] = [
        (&["train", "--profile", "smoke", "--device", "cpu", "--out", out, "--data", "/nonexistent"], out),
        (&["eval", "model.onnx", "--device", "cpu", "--report", report, "--data", "/nonexistent"], out),
        // The output itself a file; a report path that is a folder (before, refused only after the models ran).
        (&["train", "--profile", "smoke", "--device", "cpu", "--out", file, "--data", "/nonexistent"], file),
        (&["eval", model, "--device", "cpu", "--report", dir.path().to_str().unwrap(), "--data", "/nonexistent"], "is a folder"),
    ];
    for (args, said) in commands {
        let output = vggq(args, &[]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
        assert!(message.contains(said) && !message.contains("nonexistent"), "{args:?}: {message}");
    }
}

/// Files vggq did not write are never replaced: `eval --report` naming a model (as `--report` given
/// before the models takes the first) or a run's file, `train` into a folder holding a report and a
/// manifest that no step recorded (a person's, or a package copied without its records). Each is
/// refused, before any model runs or any training, naming the files, which stay as they were; a report
/// `eval` wrote is replaced. An autotune cache that is a file is refused before training, not after it.
#[test]
fn files_vggq_did_not_write_are_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    util::fixtures::write_cifar_binary_of(data.path(), &util::fixtures::CIFAR10_CLASSES);
    let data = data.path().to_str().unwrap();
    let golden = util::golden_run();
    let model = dir.path().join(Variant::StaticInt8.onnx_file());
    std::fs::copy(golden.join(Variant::StaticInt8.onnx_file()), &model).unwrap();
    let train_report = dir.path().join(TRAIN_REPORT_FILE);
    std::fs::copy(golden.join(TRAIN_REPORT_FILE), &train_report).unwrap();
    let eval = |report: &Path| {
        let (model, report) = (model.to_str().unwrap(), report.to_str().unwrap());
        vggq(&["eval", "--device", "cpu", "--data", data, "--batch", "1", "--report", report, model], &[])
    };
    for theirs in [&model, &train_report] {
        let before = std::fs::read(theirs).unwrap();
        let output = eval(theirs);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        let said = format!("--report {} is a file `vggq eval` did not write, which the report would replace", theirs.display());
        assert!(message.contains(&said), "{message}");
        assert_eq!(std::fs::read(theirs).unwrap(), before, "{} changed", theirs.display());
    }
    // A pipe (`/dev/stdout` piped on, a model fed through one) is refused unread, as reading it could wait
    // forever: its writer holds it open until vggq has answered, or a minute.
    let pipe = dir.path().join("pipe.onnx");
    assert!(Command::new("mkfifo").arg(&pipe).status().unwrap().success());
    let (answered, wait) = std::sync::mpsc::channel::<()>();
    let head = std::fs::read(&model).unwrap()[..4096].to_vec();
    let writer = std::thread::spawn({
        let pipe = pipe.clone();
        move || {
            // Read and write: opening a pipe so returns at once on Linux, whether vggq opens it or not.
            let mut pipe = std::fs::OpenOptions::new().read(true).write(true).open(pipe).unwrap();
            pipe.write_all(&head).unwrap();
            wait.recv_timeout(std::time::Duration::from_secs(60)).is_ok()
        }
    });
    let output = eval(&pipe);
    let _ = answered.send(());
    assert!(writer.join().unwrap(), "vggq read the pipe to its end before answering");
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains(&format!("--report {} is not a file (a pipe or a device)", pipe.display())), "{message}");

    let report = dir.path().join("evaluated.json");
    for _ in 0..2 {
        let output = eval(&report);
        assert!(output.status.success(), "{}", stderr(&output));
    }

    let out = dir.path().join("notes");
    std::fs::create_dir(&out).unwrap();
    for file in [REPORT_FILE, MANIFEST_FILE] {
        std::fs::write(out.join(file), file).unwrap();
    }
    let out_arg = out.to_str().unwrap();
    let train = ["train", "--profile", "smoke", "--device", "cpu", "--data", data, "--out", out_arg];
    let output = vggq(&train, &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    let said = format!("{out_arg} holds manifest.json, report.md, which no vggq step recorded there");
    assert!(message.contains(&said), "{message}");
    let mut left: Vec<_> = std::fs::read_dir(&out).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    left.sort();
    assert_eq!(left, [MANIFEST_FILE, REPORT_FILE], "the refused training left or removed files");
    for file in [REPORT_FILE, MANIFEST_FILE] {
        assert_eq!(std::fs::read_to_string(out.join(file)).unwrap(), file);
    }
    // Anything else no step writes (notes, the data itself), which `report` would refuse to package
    // beside the run, is refused before the training, not after it; a step's file or the run's own
    // folders are not.
    std::fs::remove_file(out.join(REPORT_FILE)).unwrap();
    std::fs::remove_file(out.join(MANIFEST_FILE)).unwrap();
    std::fs::create_dir_all(out.join("data")).unwrap();
    std::fs::create_dir_all(out.join(AUTOTUNE_FOLDER)).unwrap();
    for file in ["notes.txt", MODEL_FILE, &Variant::Qat(QatMode::Finetune).pth_file()] {
        std::fs::write(out.join(file), file).unwrap();
    }
    let output = vggq(&train, &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains(&format!("{out_arg} holds data/, notes.txt, which no step of a run writes")), "{message}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("epoch"), "it trained first");

    let run = dir.path().join("run");
    let cache = train_report.to_str().unwrap();
    let output = vggq(&[&train[..7], &["--out", run.to_str().unwrap(), "--autotune-cache", cache]].concat(), &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains(&format!("the autotune cache {cache} is a file")), "{message}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("epoch"), "it trained first");
    assert!(!run.exists(), "the refused training left {}", run.display());
}

/// ImageNet weights a run does not read (a `random` run's) are said to go unread rather than passed
/// over in silence, which reads as used. (The run then stops at the generated data, of 3 classes where
/// the model has 10: the note comes first.)
#[test]
fn weights_a_run_does_not_read_are_said_to_go_unread() {
    let (data, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    util::fixtures::write_cifar_binary(data.path());
    let (data, out) = (data.path().to_str().unwrap(), dir.path().join("run"));
    let train = ["train", "--profile", "smoke", "--device", "cpu", "--data", data, "--weights", "/nonexistent/vgg11_bn.pth"];
    let output = vggq(&[&train[..], &["--out", out.to_str().unwrap()]].concat(), &[]);
    let said = "note: --weights (or $VGGQ_WEIGHTS) /nonexistent/vgg11_bn.pth is not read: a `random` run starts from no weights";
    assert!(String::from_utf8_lossy(&output.stdout).contains(said), "{}", stderr(&output));
}

/// A full-profile run limited to a few steps is not timed ahead, and `--device auto` trains it on the CPU
/// it finds rather than refusing it as hours of work (here it then stops at the generated data, of 3
/// classes where the model has 10).
#[test]
fn a_few_full_profile_steps_are_not_refused_as_hours() {
    let (data, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    util::fixtures::write_cifar_binary(data.path());
    let (data, out) = (data.path().to_str().unwrap(), dir.path().join("run"));
    let limited = ["--profile", "full", "--init", "random", "--epochs", "1", "--train-images", "32", "--eval-images", "32"];
    let output =
        vggq(&[&["train", "--device", "auto"], &limited[..], &["--data", data, "--out", out.to_str().unwrap()]].concat(), &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("has 3 classes") && message.contains("but the model classifies CIFAR-10's 10"), "{message}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("takes about"), "a run of 2 steps was timed ahead");
}

/// A baseline `bench-train` cannot run is said before vggq's first round, not after it.
#[test]
fn a_baseline_that_is_not_there_is_said_first() {
    for program in ["/nonexistent/python3", "no-such-vggq-baseline"] {
        let output = vggq(&["bench-train", "--profile", "smoke", "--seconds", "1", "--rounds", "1", "--", program], &[]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(message.contains(&format!("the baseline's program `{program}` is not there to run")), "{message}");
        assert!(!String::from_utf8_lossy(&output.stdout).contains("round 1"), "a round ran first");
    }
}

/// A run folder or an evaluation's report inside the data folder is refused: every file of a data
/// folder is its data, so the run's files would be read as data (and change its fingerprint from one
/// step to the next).
#[test]
fn a_run_inside_its_data_folder_is_refused() {
    let data = tempfile::tempdir().unwrap();
    util::fixtures::write_cifar_binary(data.path());
    let out = data.path().join("runs").join("smoke");
    let (out_arg, data_arg) = (out.to_str().unwrap(), data.path().to_str().unwrap());
    let output = vggq(&["train", "--profile", "smoke", "--device", "cpu", "--out", out_arg, "--data", data_arg], &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains(&format!("--out {out_arg} is inside the --data folder {data_arg}")), "{message}");
    assert!(!data.path().join("runs").exists(), "the refused run left its folder in the data");
    // An evaluation's report likewise, before any model runs, where it is to be and where it is.
    let model = util::golden_run().join(Variant::Fp32.onnx_file());
    for report in [data.path().join("reports/eval.json"), data.path().join("cifar-10-batches-bin/../eval.json")] {
        let report_arg = report.to_str().unwrap();
        let output = vggq(&["eval", model.to_str().unwrap(), "--device", "cpu", "--data", data_arg, "--report", report_arg], &[]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(message.contains(&format!("--report {report_arg} is inside the --data folder {data_arg}")), "{message}");
        assert!(!String::from_utf8_lossy(&output.stdout).contains("top-1"), "a model ran first");
    }
    assert!(!data.path().join("reports").exists(), "the refused evaluation left its folder in the data");
}

/// An error is printed with each cause once: the message that names the missing data already says it
/// is missing, and what `--data` takes; a cause below it would say it again. Missing data is the first
/// thing `train` says, and the run folder the failed command made goes with it.
#[test]
fn an_error_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = ["train", "--profile", "smoke", "--device", "cpu", "--data", "/nonexistent"];
    let output = vggq(&[&args[..], &["--out", out.to_str().unwrap()]].concat(), &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.starts_with("Error: `/nonexistent` does not exist: --data (or $VGGQ_DATA) names CIFAR-10"), "{message}");
    assert_eq!(message.matches("does not exist").count(), 1, "{message}");
    // Said first: nothing (the device, the profile) printed above it.
    assert!(output.stdout.is_empty(), "before the missing data: {}", String::from_utf8_lossy(&output.stdout));
    assert!(!out.exists(), "a training that failed before it wrote anything left {}", out.display());
    // A path the environment gave, which the user never typed, is said to come from there.
    let output = vggq(&[&args[..5], &["--out", out.to_str().unwrap()]].concat(), &[("VGGQ_DATA", " ")]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.starts_with("Error: ` ` comes from the environment ($VGGQ_DATA)"), "{message}");
    assert_eq!(message.matches("does not exist").count(), 1, "{message}");
}

/// A step whose input an earlier step writes says which step to run when that file is missing (never
/// written, or deleted since), instead of the operating system's bare "no such file"; an input that is a
/// folder is said not to be a file, and a run folder that does not exist not to exist. The run is the
/// reports of `cargo xtask test`'s smoke run without its model, `.pth` and ONNX files, metrics and
/// manifest, and then without its reports.
#[test]
fn a_missing_input_names_the_step_that_writes_it() {
    let run = golden_run_holding(&[TRAIN_REPORT_FILE, QUANT_REPORT_FILE]);
    let data = util::shared_cifar10_jpeg();
    let (folder, data) = (run.path().to_str().unwrap(), data.to_str().unwrap());
    let quantize = ["quantize", "--run", folder, "--device", "cpu", "--data", data];
    let fp32_pth = Variant::Fp32.pth_file();
    let cases: [(&[&str], &str, &str); 5] = [
        (&quantize, MODEL_FILE, "train"),
        (&["export", "--run", folder], &fp32_pth, "quantize"),
        (&["eval", "--run", folder, "--device", "cpu", "--data", data], Variant::Fp32.onnx_file(), "export"),
        (&["report", "--run", folder], METRICS_FILE, "eval"),
        (&["verify", "--run", folder], MANIFEST_FILE, "report"),
    ];
    let expect = |args: &[&str], said: &str| {
        let output = vggq(args, &[]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
        assert!(message.contains(said), "{args:?}: the message does not say `{said}`: {message}");
    };
    for (args, missing, earlier) in cases {
        expect(args, &format!("{missing} is missing (run `vggq {earlier}` first)"));
    }
    // One there that is not a file is said to be that, not missing.
    std::fs::create_dir(run.path().join(MANIFEST_FILE)).unwrap();
    expect(&["verify", folder], &format!("{MANIFEST_FILE} is not a file"));
    std::fs::remove_file(run.path().join(QUANT_REPORT_FILE)).unwrap();
    expect(&["export", "--run", folder], &format!("{QUANT_REPORT_FILE} is missing (run `vggq quantize` first)"));
    std::fs::remove_file(run.path().join(TRAIN_REPORT_FILE)).unwrap();
    expect(&quantize, &format!("{TRAIN_REPORT_FILE} is missing (run `vggq train` first)"));
    let nowhere = run.path().join("nowhere");
    let nowhere = nowhere.to_str().unwrap();
    for args in [&["verify", nowhere][..], &["report", "--run", nowhere]] {
        expect(args, &format!("Error: {nowhere} does not exist\n"));
    }
    // `verify` takes its folder as the other steps do or as its one argument, not both.
    let both = vggq(&["verify", folder, "--run", folder], &[]);
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
    assert!(stderr(&both).contains("cannot be used with"), "{}", stderr(&both));
}

/// `vggq eval --images N` with N past the test set evaluates the whole set and says so, instead of a
/// table that reads as N images; likewise `--warmup` past all but the last batch. The model is the
/// smoke run's; the data, three generated test images.
#[test]
fn eval_says_how_many_test_images_it_ran() {
    let model = util::golden_run().join(Variant::StaticInt8.onnx_file());
    let data = tempfile::tempdir().unwrap();
    util::fixtures::write_cifar_binary_of(data.path(), &util::fixtures::CIFAR10_CLASSES);
    let (model, data) = (model.to_str().unwrap(), data.path().to_str().unwrap());
    for (images, warmup, said) in [
        ("5", "1", "test images: all 3 (--images asked for 5)"),
        ("2", "1", "test images: 2 of 3"),
        ("3", "3", "warm-up batches: 2 (--warmup asked for 3; the last full batch is timed)"),
    ] {
        let flags = ["--images", images, "--batch", "1", "--warmup", warmup];
        let output = vggq(&[&["eval", model, "--device", "cpu", "--data", data][..], &flags].concat(), &[]);
        assert!(output.status.success(), "{}", stderr(&output));
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(printed.contains(said), "--images {images} --warmup {warmup}: not `{said}`: {printed}");
        assert_eq!(printed.contains("warm-up batches:"), warmup == "3", "{printed}");
    }
    // Fewer images than a batch cannot be timed: said so before the table, and not as ONNX Runtime's fault.
    let output = vggq(&["eval", model, "--device", "cpu", "--data", data, "--batch", "4"], &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("3 test images are fewer than one batch (--batch 4)"), "{message}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("top-1"), "the table began");
}

/// While one `vggq` writes a run folder, every command that would write into it refuses at once, naming
/// the process that holds it, and writes nothing: two runs in one folder would mix their files. The
/// run is the reports, metrics and ONNX files of `cargo xtask test`'s smoke run; this test holds its lock.
#[test]
fn a_run_folder_being_written_is_refused_by_every_writer() {
    let golden = util::golden_run();
    let run = tempfile::tempdir().unwrap();
    let data = util::shared_cifar10_jpeg();
    let (folder, data) = (run.path().to_str().unwrap(), data.to_str().unwrap());
    let held = vggq::steps::RunFolderLock::take(run.path()).unwrap();
    let holder = format!("{folder} is being written by another vggq (process {}:", std::process::id());
    // Not yet trained, as the run holding the lock would be at first: the next step says who is writing.
    let output = vggq(&["quantize", "--run", folder, "--device", "cpu", "--data", data], &[]);
    let message = stderr(&output);
    assert!(message.contains(&format!("{TRAIN_REPORT_FILE} is missing: {holder}")), "{message}");
    let copied: Vec<String> = [TRAIN_REPORT_FILE, QUANT_REPORT_FILE, METRICS_FILE, MANIFEST_FILE]
        .into_iter()
        .chain(Variant::all(QatMode::Fp32match).iter().map(|v| v.onnx_file()))
        .map(String::from)
        .collect();
    for name in &copied {
        std::fs::copy(golden.join(name), run.path().join(name)).unwrap();
    }
    // And `verify`, which only reads, refuses to vouch for a package while it is being written.
    let commands: [&[&str]; 6] = [
        &["train", "--profile", "smoke", "--device", "cpu", "--out", folder, "--data", data],
        &["quantize", "--run", folder, "--device", "cpu", "--data", data],
        &["export", "--run", folder],
        &["eval", "--run", folder, "--device", "cpu", "--data", data],
        &["report", "--run", folder],
        &["verify", folder],
    ];
    for args in commands {
        let output = vggq(args, &[]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
        assert!(message.contains(&holder), "{args:?}: the message does not say `{holder}`: {message}");
        let mut files: Vec<String> =
            std::fs::read_dir(run.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        files.retain(|name| name != ".steps");
        files.sort();
        let mut expected = copied.clone();
        expected.sort();
        assert_eq!(files, expected, "{args:?} wrote into the folder");
    }
    // The lock's folder goes with it where nothing else was written there.
    drop(held);
    assert!(!run.path().join(STEPS_FOLDER).exists(), "the lock left its folder behind");
}

/// An `ORT_DYLIB_PATH` that names no file is said to be one (the loader itself said only "dlopen
/// failed"), before the data is read (here it does not exist) and before the table begins.
#[test]
fn an_ort_library_path_that_names_no_file_is_said_to_first() {
    let model = util::golden_run().join(Variant::StaticInt8.onnx_file());
    let args = ["eval", model.to_str().unwrap(), "--device", "cpu", "--data", "/nonexistent/data"];
    let output = vggq(&args, &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    let said = "Error: loading ONNX Runtime from `/nonexistent/libonnxruntime.so`: `ORT_DYLIB_PATH` names no file there";
    assert!(message.starts_with(said), "{message}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("top-1 %"), "the table began");
}

/// A run's data is known by its content, not its file name (a renamed or linked copy of the archive is
/// the run's data), and a model cut short since training is named as changed, with the command that
/// writes it again. The run is the smoke run's training report and stamp, then its model cut short.
#[test]
fn renamed_data_is_the_runs_and_a_damaged_model_says_so() {
    let stamp = Path::new(STEPS_FOLDER).join("train.json");
    let run = golden_run_holding(&[Path::new(TRAIN_REPORT_FILE), &stamp]);
    let renamed = run.path().join("my-copy.tar.gz");
    std::os::unix::fs::symlink(util::shared_cifar10_jpeg(), &renamed).unwrap();
    let (folder, data) = (run.path().to_str().unwrap(), renamed.to_str().unwrap());
    let quantize = ["quantize", "--run", folder, "--device", "cpu", "--data", data];
    let expect = |said: &str| {
        let output = vggq(&quantize, &[]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(message.contains(said), "the message does not say `{said}`: {message}");
    };
    expect(&format!("{MODEL_FILE} is missing (run `vggq train` first)"));
    let model = std::fs::read(util::golden_run().join(MODEL_FILE)).unwrap();
    std::fs::write(run.path().join(MODEL_FILE), &model[..model.len() / 2]).unwrap();
    expect(&format!("{MODEL_FILE} has changed since `vggq train` wrote it: run `vggq train` again"));
}

/// A run folder holding a copy of these files (paths in the run) of `cargo xtask test`'s smoke run, and
/// nothing else.
fn golden_run_holding<P: AsRef<Path>>(files: &[P]) -> tempfile::TempDir {
    let (golden, run) = (util::golden_run(), tempfile::tempdir().unwrap());
    for file in files {
        let copy = run.path().join(file);
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        std::fs::copy(golden.join(file), copy).unwrap();
    }
    run
}

/// A copy of the finished run at `run`: its files and step records.
fn copy_of_run(run: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for folder in [Path::new(""), Path::new(STEPS_FOLDER)] {
        std::fs::create_dir_all(copy.path().join(folder)).unwrap();
        for entry in std::fs::read_dir(run.join(folder)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), copy.path().join(folder).join(entry.file_name())).unwrap();
            }
        }
    }
    copy
}

/// QAT (fp32match) of a pretrained run starts from the ImageNet weights its training started from: by
/// default the file training was given, never another. The run is a copy of the smoke run, recorded as
/// trained from a file of its own.
#[test]
fn qat_starts_from_the_weights_training_started_from() {
    let run = copy_of_run(&util::golden_run());
    let elsewhere = tempfile::tempdir().unwrap();
    let (weights, other) = (elsewhere.path().join("imagenet.pth"), elsewhere.path().join("other.pth"));
    std::fs::write(&weights, b"the weights training started from").unwrap();
    std::fs::write(&other, b"other weights").unwrap();
    let report_path = run.path().join(TRAIN_REPORT_FILE);
    let mut report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    report["profile"]["init"] = "pretrained".into();
    let sha256 = vggq::data::file_digest(&weights, vggq::data::DigestAlgorithm::Sha256).unwrap().hex;
    report["imagenet_weights"] = serde_json::json!({ "path": weights, "sha256": sha256, "downloaded_from": null });
    std::fs::write(&report_path, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    let trained = vec![run.path().join(MODEL_FILE), report_path];
    vggq::steps::Step::new("train", run.path(), &(), &[], trained).unwrap().record().unwrap();

    let folder = run.path().to_str().unwrap();
    let data = util::shared_cifar10_jpeg();
    let quantize = ["quantize", "--run", folder, "--device", "cpu", "--data", data.to_str().unwrap()];
    let expect_with = |args: &[&str], env: &[(&str, &str)], said: &str| {
        let output = vggq(args, env);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
        assert!(message.contains(said), "{args:?}: the message does not say `{said}`: {message}");
    };
    let expect = |args: &[&str], said: &str| expect_with(args, &[], said);
    let trained_from = format!("{folder} was trained from the ImageNet weights {} (SHA-256 {sha256}), but", weights.display());
    expect(&[&quantize[..], &["--weights", other.to_str().unwrap()]].concat(), &trained_from);
    std::fs::remove_file(&weights).unwrap();
    expect(&quantize, &format!("{folder} was trained from the ImageNet weights {}, which are not there now", weights.display()));
    // The right file, which is no checkpoint: refused before PTQ's minutes of work, not after them at QAT.
    std::fs::write(&weights, b"the weights training started from").unwrap();
    expect(&quantize, &format!("the ImageNet weights `{}` are not a PyTorch checkpoint", weights.display()));
    // Given by the environment, the message says so.
    let from_environment = [("VGGQ_WEIGHTS", weights.to_str().unwrap())];
    expect_with(&quantize, &from_environment, &format!("`{}` comes from the environment ($VGGQ_WEIGHTS)", weights.display()));
    assert!(run.path().join(MANIFEST_FILE).is_file(), "a refused quantize unfinished the run");
}

/// A run's later steps build on, and its report vouches for, only files that belong together: an ONNX
/// file cut short since `vggq export` wrote it is refused by `report` (which re-hashed it into the
/// manifest before), and `.pth` files quantized from an earlier model (the run trained again since) by
/// `export` and `report`, each naming the step to run again. The run is a copy of `cargo xtask test`'s
/// smoke run, its stamps included: as it is, it is up to date from any working folder (quantize finds
/// the autotune cache by its place in the run, not where `train` was run from).
#[test]
fn files_that_do_not_belong_together_are_refused() {
    let run = copy_of_run(&util::golden_run());
    let folder = run.path().to_str().unwrap();
    let data = util::shared_cifar10_jpeg();
    let elsewhere = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vggq"))
        .args(["quantize", "--run", folder, "--device", "cpu", "--data", data.to_str().unwrap()])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && printed.contains("quantize: up to date"), "{printed}{}", stderr(&output));
    // Another autotune cache is the same step for a CPU run, which reads none (nor makes its folder, in a
    // build that does not tune).
    let other_cache = elsewhere.path().join("other-cache");
    let args = ["quantize", "--run", folder, "--device", "cpu", "--data", data.to_str().unwrap(), "--autotune-cache"];
    let output = vggq(&[&args[..], &[other_cache.to_str().unwrap()]].concat(), &[]);
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && printed.contains("quantize: up to date"), "{printed}{}", stderr(&output));
    assert!(vggq::backend::autotune::TUNED || !other_cache.exists(), "a build that does not tune made the cache's folder");
    // An evaluation written elsewhere leaves both that folder's package files and the run's, and is
    // evaluated each time: that folder is no run's, and the evaluation no step of one (no step's record
    // there).
    let elsewhere_report = elsewhere.path().join(METRICS_FILE);
    std::fs::write(elsewhere.path().join(MANIFEST_FILE), b"a user's").unwrap();
    let eval_run = ["eval", "--run", folder, "--device", "cpu", "--data", data.to_str().unwrap(), "--report"];
    for _ in 0..2 {
        let output = vggq(&[&eval_run[..], &[elsewhere_report.to_str().unwrap()]].concat(), &[]);
        assert!(output.status.success() && elsewhere_report.is_file(), "{}", stderr(&output));
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(printed.contains(Variant::Fp32.onnx_file()) && !printed.contains("up to date"), "{printed}");
        assert!(elsewhere.path().join(MANIFEST_FILE).is_file() && run.path().join(MANIFEST_FILE).is_file());
        assert!(!elsewhere.path().join(STEPS_FOLDER).exists(), "the evaluation elsewhere made that folder a run's");
    }
    // A report into a run folder, or one of its folders, however spelt, other than as its own metrics
    // (here a model named on the command line, or beside the metrics) is refused: the finished package
    // would change under its manifest.
    let metrics = std::fs::read(run.path().join(METRICS_FILE)).unwrap();
    let model = run.path().join(Variant::StaticInt8.onnx_file());
    let into_run = [METRICS_FILE, "bench/round.json", "missing/../other.json"].map(|name| run.path().join(name));
    for (index, report) in into_run.iter().enumerate() {
        let report_arg = report.to_str().unwrap();
        let named = if index == 0 { vec![model.to_str().unwrap()] } else { vec!["--run", folder] };
        let rest = ["--device", "cpu", "--data", data.to_str().unwrap(), "--report", report_arg];
        let output = vggq(&[&["eval"], &named[..], &rest[..]].concat(), &[]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(message.contains(&format!("--report {report_arg} would go into the run folder {folder}")), "{message}");
    }
    assert_eq!(std::fs::read(run.path().join(METRICS_FILE)).unwrap(), metrics, "a refused evaluation changed the metrics");
    for made in ["bench", "missing"] {
        assert!(!run.path().join(made).exists(), "a refused evaluation made {made} in the run");
    }
    // export too, and the run stays finished; made to run again, it leaves the run unfinished (no
    // manifest, no checksums, no report of what it held) until `report` vouches for it again.
    let output = vggq(&["export", "--run", folder], &[]);
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && printed.contains("export: up to date"), "{printed}{}", stderr(&output));
    assert!(run.path().join(MANIFEST_FILE).is_file());
    let output = vggq(&["export", "--run", folder, "--force"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    for reported in REPORT_OUTPUTS {
        assert!(!run.path().join(reported).exists(), "export ran and left the finished run's {reported}");
    }
    // And says so, naming them.
    let said = format!("export: removed {} from {folder} (they describe the run as it was", REPORT_OUTPUTS.join(", "));
    assert!(String::from_utf8_lossy(&output.stdout).contains(&said), "not `{said}`");
    // Run by hand, `report` still names the compiler and the ONNX Runtime; git's facts, which only
    // `cargo xtask all` adds, are unknown, not a clean tree.
    let output = Command::new(env!("CARGO_BIN_EXE_vggq"))
        .args(["report", "--run", folder])
        .env_remove("VGGQ_GIT_COMMIT")
        .env_remove("VGGQ_GIT_DIRTY")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(run.path().join(MANIFEST_FILE)).unwrap()).unwrap();
    let provenance = &manifest["provenance"];
    assert_eq!((&provenance["git_commit"], &provenance["git_dirty"]), (&serde_json::json!("unknown"), &serde_json::Value::Null));
    assert!(provenance["rustc"].as_str().unwrap().starts_with("rustc 1."), "{provenance}");
    assert!(provenance["onnxruntime"].as_str().unwrap().starts_with("ONNX Runtime 1."), "{provenance}");
    let expect = |args: &[&str], said: &str| {
        let output = vggq(args, &[]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
        assert!(message.contains(said), "{args:?}: the message does not say `{said}`: {message}");
    };
    // What `verify` would refuse, `report` refuses to package: a user's file in the run folder. What a
    // killed write of the run's own files left, it clears.
    let (notes, killed_write) = (run.path().join("notes.txt"), run.path().join(format!(".{METRICS_FILE}.Ab12Cd.tmp")));
    std::fs::write(&notes, b"a user's").unwrap();
    std::fs::write(&killed_write, b"half a metrics.json").unwrap();
    expect(&["report", "--run", folder], &format!("{folder} holds what no step of the run wrote: notes.txt; move it out"));
    std::fs::remove_file(&notes).unwrap();
    let output = vggq(&["report", "--run", folder], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!killed_write.exists(), "report left a killed write's temporary file");
    let output = vggq(&["verify", folder], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    // Nor a link in place of one of the run's files: its bytes would not travel with the folder.
    let (metrics, moved) = (run.path().join(METRICS_FILE), elsewhere.path().join("moved-metrics.json"));
    std::fs::rename(&metrics, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &metrics).unwrap();
    let refused = format!("{folder} holds links in place of files its steps wrote: {METRICS_FILE} (vggq eval); put the files");
    expect(&["report", "--run", folder], &refused);
    std::fs::remove_file(&metrics).unwrap();
    std::fs::rename(&moved, &metrics).unwrap();
    // A link in place of report's own output is replaced by what report writes, and what it pointed to
    // is left as it was.
    let (report, elsewhere_report) = (run.path().join(REPORT_FILE), elsewhere.path().join("notes.md"));
    std::fs::write(&elsewhere_report, b"someone's notes").unwrap();
    std::fs::remove_file(&report).unwrap();
    std::os::unix::fs::symlink(&elsewhere_report, &report).unwrap();
    let output = vggq(&["report", "--run", folder], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!report.is_symlink() && report.is_file(), "report left the link in place of {REPORT_FILE}");
    assert_eq!(std::fs::read(&elsewhere_report).unwrap(), b"someone's notes");
    // A CUDA evaluation asked for where ONNX Runtime's CUDA provider cannot run (no GPU, as in CI) fails
    // before it loads the data or touches the finished run.
    if vggq::eval::load_runtime(true).is_err() {
        let eval_on_cuda = ["eval", "--run", folder, "--device", "cuda", "--data", data.to_str().unwrap(), "--force"];
        expect(&eval_on_cuda, "Error: CUDA execution provider unavailable: ");
        assert!(run.path().join(MANIFEST_FILE).is_file(), "a CUDA evaluation that could not run unfinished the run");
    }
    // The run's own metrics.json spelt another way (relative, where the run is given absolute) is the
    // run's: evaluated again, the run is unfinished until `report` vouches for it again.
    let (parent, name) = (run.path().parent().unwrap(), run.path().file_name().unwrap().to_str().unwrap());
    let output = Command::new(env!("CARGO_BIN_EXE_vggq"))
        .args(["eval", "--run", folder, "--device", "cpu", "--data", data.to_str().unwrap(), "--force"])
        .args(["--report", &format!("{name}/{METRICS_FILE}")])
        .current_dir(parent)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!run.path().join(MANIFEST_FILE).exists(), "the run's metrics changed and its manifest stayed");
    // Its record holds the run's ONNX files it read, so that a later export is seen to outdate it.
    let record = std::fs::read_to_string(run.path().join(STEPS_FOLDER).join("eval.json")).unwrap();
    assert!(record.contains(&format!("\"{}\"", Variant::Fp32.onnx_file())), "{record}");
    // The step is its request's: up to date for the CPU it was evaluated on, not for another request with
    // the same providers (wgpu's evaluation is the CPU provider's; `auto`'s may be where CUDA cannot
    // run), which evaluates again and says so in the metrics.
    let eval_on = |device| ["eval", "--run", folder, "--device", device, "--data", data.to_str().unwrap()];
    let said = |output: &std::process::Output| String::from_utf8_lossy(&output.stdout).into_owned();
    let output = vggq(&eval_on("cpu"), &[]);
    assert!(output.status.success() && said(&output).contains("eval: up to date"), "{}{}", said(&output), stderr(&output));
    let output = vggq(&eval_on("wgpu"), &[]);
    assert!(output.status.success() && !said(&output).contains("up to date"), "{}{}", said(&output), stderr(&output));
    let metrics = std::fs::read_to_string(run.path().join(METRICS_FILE)).unwrap();
    assert!(metrics.contains("\"request\": \"wgpu\""), "{metrics}");
    let output = vggq(&["report", "--run", folder], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let onnx = run.path().join(Variant::Fp32.onnx_file());
    let exported = std::fs::read(&onnx).unwrap();
    std::fs::write(&onnx, &exported[..exported.len() / 2]).unwrap();
    expect(&["report", "--run", folder], &format!("{} has changed since `vggq export` wrote it", onnx.display()));
    std::fs::write(&onnx, &exported).unwrap();

    let model = run.path().join(MODEL_FILE);
    std::fs::write(&model, b"the model of a later training").unwrap();
    vggq::steps::Step::new("train", run.path(), &(), &[], vec![model.clone(), run.path().join(TRAIN_REPORT_FILE)])
        .unwrap()
        .record()
        .unwrap();
    let retrained = format!("`vggq quantize` ran on another {} than the one there now", model.display());
    expect(&["export", "--run", folder], &retrained);
    expect(&["report", "--run", folder], &retrained);
}

/// Output piped into a reader that stops early (`vggq eval ... | head -1`) ends vggq quietly, as it ends
/// any Unix tool, not with a panic on the closed pipe (exit 101).
#[test]
fn a_closed_pipe_ends_vggq_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let data = tempfile::tempdir().unwrap();
    util::fixtures::write_cifar_binary_of(data.path(), &util::fixtures::CIFAR10_CLASSES);
    let model = util::golden_run().join(Variant::StaticInt8.onnx_file());
    let output = Command::new(env!("CARGO_BIN_EXE_vggq"))
        .args(["eval", model.to_str().unwrap(), "--device", "cpu", "--batch", "1", "--data"])
        .arg(data.path())
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(output.status.signal(), Some(vggq_core::signals::SIGPIPE), "{:?}: {}", output.status, stderr(&output));
    assert!(output.stderr.is_empty(), "{}", stderr(&output));
}

/// A path that is not UTF-8 is a path like any other: the run folder's lock, which `train` takes before
/// it reads the data (here missing), names the command lossily instead of panicking.
#[test]
fn a_path_that_is_not_utf8_is_no_panic() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join(std::ffi::OsStr::from_bytes(b"run-\xff"));
    let output = Command::new(env!("CARGO_BIN_EXE_vggq"))
        .args(["train", "--profile", "smoke", "--device", "cpu", "--data", "/nonexistent", "--out"])
        .arg(&run)
        .output()
        .expect("vggq runs");
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("/nonexistent"), "{message}");
}

/// `train` asked to stop by SIGHUP (its terminal closed) or SIGTERM (a job's time limit) as it trains
/// saves its state at its next progress read (its interval takes no checkpoint of its own), says where,
/// and ends as the signal ends a process; run again, it resumes there (stopped once more, by the other
/// signal) and ends with the smoke run's model.
#[test]
fn a_training_asked_to_stop_saves_its_state_and_resumes_from_it() {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    use vggq_core::signals::{self, SIGHUP, SIGTERM};
    let golden = util::golden_run();
    let run = tempfile::tempdir().unwrap();
    let data = util::shared_cifar10_jpeg();
    let (folder, data) = (run.path().to_str().unwrap(), data.to_str().unwrap());
    let args = ["train", "--profile", "smoke", "--out", folder, "--checkpoint-minutes", "600", "--device", "cpu", "--data", data];
    let checkpoint = run.path().join(checkpoint_in_run("train"));
    for signal in [SIGHUP, SIGTERM] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vggq"));
        command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        // With the signal's default action, as a terminal's session gives it, where the tests run with it
        // ignored (under `nohup`, which vggq then leaves ignored).
        // SAFETY: signal() is async-signal-safe, as the time between fork and exec requires.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                libc::signal(signal, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut training = command.spawn().unwrap();
        // Signalled once it says it trains and listens (before, the signal would end it at once); its
        // output is read to its end, so that it never writes into a closed pipe.
        let said = std::io::BufReader::new(training.stdout.take().unwrap());
        let (listening, heard) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in said.lines().map_while(Result::ok) {
                if line == vggq::train::stop::HOW_TO_STOP {
                    let _ = listening.send(());
                }
            }
        });
        heard.recv().expect("the training says that it listens");
        signals::send(training.id(), signal).unwrap();
        let stopped = training.wait_with_output().unwrap();
        reader.join().unwrap();
        let message = stderr(&stopped);
        let name = signals::name(signal);
        assert_eq!(stopped.status.signal(), Some(signal), "{message}");
        let saved = format!(" of 250 in epoch 1 of 2: its state is saved in {}, and the same command", checkpoint.display());
        assert!(message.contains(&format!("{name}: the training stops at its next progress read")), "{message}");
        assert!(message.contains(&format!("stopped on {name} after step ")) && message.contains(&saved), "{message}");
        assert!(!message.contains("Error: stopped"), "a stop asked for is no error: {message}");
    }

    let resumed = vggq(&args, &[]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        String::from_utf8_lossy(&resumed.stdout).contains("resuming after step "),
        "{}",
        String::from_utf8_lossy(&resumed.stdout)
    );
    assert!(!checkpoint.exists(), "train finished and left its checkpoint");
    let same = std::fs::read(run.path().join(MODEL_FILE)).unwrap() == std::fs::read(golden.join(MODEL_FILE)).unwrap();
    assert!(same, "train, stopped and resumed, wrote another model than the smoke run's");
}

/// `train` killed once its first checkpoint inside an epoch is saved (`--checkpoint-minutes 0`: at every
/// progress read), and `quantize` once its first epoch is (with an interval that takes none inside an
/// epoch), then run again: each resumes there, ends with the smoke run's bytes (the
/// model, the four `.pth` files) and leaves no checkpoint, nor keeps one found beside it once it is up to
/// date.
#[test]
fn a_killed_training_resumes_and_ends_with_the_bytes_it_would_have_written() {
    let golden = util::golden_run();
    let run = tempfile::tempdir().unwrap();
    let data = util::shared_cifar10_jpeg();
    let (folder, data) = (run.path().to_str().unwrap(), data.to_str().unwrap());
    let steps: [(&str, &[&str], &str, Vec<String>); 2] = [
        (
            "train",
            &["train", "--profile", "smoke", "--out", folder, "--checkpoint-minutes", "0"],
            // Killed moments after the save at step 50 (the next is 50 steps later), inside the epoch.
            " of 250 in epoch 1 of 2 from ",
            vec![MODEL_FILE.to_string()],
        ),
        (
            "quantize",
            // Not an interval a step of the smoke profile reaches, however slow the machine.
            &["quantize", "--run", folder, "--checkpoint-minutes", "600"],
            "resuming after epoch 1 of 2 from ",
            Variant::all(QatMode::Fp32match).map(|v| v.pth_file()).to_vec(),
        ),
    ];
    for (step, args, resuming, outputs) in steps {
        let args = [args, &["--device", "cpu", "--data", data]].concat();
        let checkpoint = run.path().join(checkpoint_in_run(step));
        let mut killed = Command::new(env!("CARGO_BIN_EXE_vggq"));
        killed.args(&args).stdout(Stdio::null()).stderr(Stdio::null());
        kill_once_written(&mut killed, &checkpoint).unwrap();
        let output = vggq(&args, &[]);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(said.contains(resuming), "{step} did not resume as expected: {said}");
        assert!(!checkpoint.exists(), "{step} finished and left its checkpoint");
        for name in outputs {
            let same = std::fs::read(run.path().join(&name)).unwrap() == std::fs::read(golden.join(&name)).unwrap();
            assert!(same, "{step}, resumed, wrote another {name} than the smoke run's");
        }
        // What a run killed between the step's record and the checkpoint's removal leaves goes at the next.
        std::fs::write(&checkpoint, b"left over").unwrap();
        let output = vggq(&args, &[]);
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success() && said.contains(&format!("{step}: up to date")), "{said}{}", stderr(&output));
        assert!(!checkpoint.exists(), "{step} is up to date and kept a checkpoint");
    }
}
