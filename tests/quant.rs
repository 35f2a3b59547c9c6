//! The quantization passes against PyTorch's own results on the tiny VGG11-BN of
//! `fixtures/torch-reference` (see its README.txt for how the files were made).

use burn::backend::Flex;
use burn::prelude::*;
use indicatif::ProgressBar;
use vggq::data::Batch;
use vggq::model::VggConfig;
use vggq::quant::model::QuantizedWeight;
use vggq::quant::simulate::FloatNet;
use vggq::quant::state_dict::{fp32_state_dict, int8_from_state_dict, quantized_state_dict};
use vggq::quant::static_ptq::{calibrate, convert, weight_ranges, FusedVgg};
use vggq::quant::{quantize_dynamic, Calibration, FloatVgg, QuantMethod, QuantizedVgg, SimulatedVgg};
use vggq_pth::{read_state_dict, QTensor, Quantizer, StateDict, Value};

type B = Flex;

use std::path::Path;

use vggq_core::places::shared_dir;

fn fixture(name: &str) -> Vec<u8> {
    let path = shared_dir().join("fixtures/torch-reference").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The reference model: width 1/16, 32-px input (1x1 average pool), head 32 -> 64 -> 64 -> 10.
fn tiny_config() -> VggConfig {
    VggConfig::for_input(16, 32, 64, 10)
}

fn tiny_fp32() -> FloatVgg {
    let bytes = fixture("tiny_fp32.pth");
    FloatVgg::from_state_dict(&read_state_dict(&bytes).unwrap(), &tiny_config()).unwrap()
}

/// A tensor of `tiny_io.safetensors` as values and shape.
fn io_tensor(key: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = fixture("tiny_io.safetensors");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = tensors.tensor(key).unwrap();
    let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    (values, view.shape().to_vec())
}

fn io_batch(key: &str) -> Batch {
    let (images, shape) = io_tensor(key);
    Batch { labels: vec![0; shape[0]], images, side: shape[2] }
}

fn images(key: &str) -> Tensor<B, 4> {
    let (values, shape) = io_tensor(key);
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

/// Static quantization of the fixture model calibrated on calib_0..3, as the reference was made.
fn tiny_static(method: Calibration) -> QuantizedVgg {
    let fused = FusedVgg::fuse(&tiny_fp32());
    let batches = (0..4).map(|i| io_batch(&format!("calib_{i}")));
    let (activations, _) = calibrate::<B>(&fused, batches, method, &Default::default(), &ProgressBar::hidden()).unwrap();
    convert(&fused, &activations, &weight_ranges(&fused), QuantMethod::Static)
}

/// Top-1 agreement (of `n`) and max abs error of `logits` against `probe_logits_{name}`.
fn compare_logits(logits: Tensor<B, 2>, name: &str) -> (usize, usize, f32) {
    let (expected, shape) = io_tensor(&format!("probe_logits_{name}"));
    let expected = Tensor::<B, 2>::from_data(TensorData::new(expected, shape.clone()), &Default::default());
    let agree: i64 = logits.clone().argmax(1).equal(expected.clone().argmax(1)).int().sum().into_scalar().elem();
    let max_error: f32 = (logits - expected).abs().max().into_scalar().elem();
    println!("{name}: top-1 agrees on {agree}/{}, max abs logit error {max_error:e}", shape[0]);
    (agree as usize, shape[0], max_error)
}

/// The same metadata and entries, key by key in order.
fn assert_same_state_dict(ours: &StateDict<'_>, reference: &StateDict<'_>) {
    assert_eq!(ours.metadata, reference.metadata);
    assert_eq!(ours.entries.len(), reference.entries.len());
    for ((key, value), (reference_key, reference_value)) in ours.entries.iter().zip(&reference.entries) {
        assert_eq!(key, reference_key);
        assert_eq!(value, reference_value, "{key}");
    }
}

fn qtensor<'a>(state_dict: &'a StateDict<'_>, key: &str) -> &'a QTensor<'a> {
    match state_dict.get(key) {
        Some(Value::QTensor(q)) => q,
        Some(Value::PackedLinear(p)) => &p.weight,
        other => panic!("`{key}` is not a quantized tensor: {other:?}"),
    }
}

fn scalar_f32(state_dict: &StateDict<'_>, key: &str) -> f32 {
    match state_dict.get(key) {
        Some(Value::Tensor(t)) => f32::from_le_bytes(t.data[..4].try_into().unwrap()),
        other => panic!("`{key}` is not a tensor: {other:?}"),
    }
}

fn scalar_i64(state_dict: &StateDict<'_>, key: &str) -> i64 {
    match state_dict.get(key) {
        Some(Value::Tensor(t)) => i64::from_le_bytes(t.data[..8].try_into().unwrap()),
        other => panic!("`{key}` is not a tensor: {other:?}"),
    }
}

#[test]
fn fp32_state_dict_reproduces_pytorchs() {
    let bytes = fixture("tiny_fp32.pth");
    let reference = read_state_dict(&bytes).unwrap();
    // Every entry, the BatchNorms' batch counts included, read from the file and written back.
    assert_same_state_dict(&fp32_state_dict(&tiny_fp32()).unwrap(), &reference);
}

/// The largest logit difference from PyTorch's that float rounding explains, for each variant's logits
/// (at most 0.28 in magnitude; measured: FP32 1.5e-7, dynamic and static 3.0e-8, an f32 ulp or two).
/// The static model's output step is 3.5e-3 and its logits lie within 4e-3 of the FP32 model's, so a
/// step off, or FP32 logits where INT8 ones belong, is far beyond it.
const MAX_LOGIT_ERROR: f32 = 1e-6;

#[test]
fn fp32_logits_match_pytorch() {
    let net = FloatNet::<B>::unfused(&tiny_fp32(), &Default::default());
    let (agree, n, max_error) = compare_logits(net.forward(images("probe_input"), &mut |_, _| {}), "fp32");
    assert_eq!(agree, n);
    assert!(max_error < MAX_LOGIT_ERROR, "{max_error}");
}

#[test]
fn dynamic_state_dict_is_pytorchs_exactly() {
    let bytes = fixture("tiny_dynamic_int8.pth");
    let reference = read_state_dict(&bytes).unwrap();
    assert_same_state_dict(&quantized_state_dict(&quantize_dynamic(&tiny_fp32())).unwrap(), &reference);
}

#[test]
fn dynamic_logits_match_pytorch() {
    let model = SimulatedVgg::<B>::new(&quantize_dynamic(&tiny_fp32()), &Default::default());
    let (agree, n, max_error) = compare_logits(model.forward(images("probe_input")), "dynamic");
    assert_eq!(agree, n);
    assert!(max_error < MAX_LOGIT_ERROR, "{max_error}");
}

/// Weights and biases of the static model are BN folding plus per-channel quantization of the FP32 file's.
/// Folding may round an f32 differently from PyTorch's vectorised kernels, so an int8 value may differ by
/// one where the folded weight lies on a rounding boundary (measured: none of the 42,892 does); scales
/// within 1e-6 relative (measured: equal), float biases within 1e-6.
#[test]
fn static_weights_match_pytorch() {
    let bytes = fixture("tiny_static_int8_fx.pth");
    let reference = read_state_dict(&bytes).unwrap();
    let ours = quantized_state_dict(&tiny_static(Calibration::Histogram)).unwrap();
    let (mut weights, mut biases) = (0, 0);
    let mut compare_biases = |key: &str, a: &[u8], b: &[u8]| {
        let to_f32 = |d: &[u8]| d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>();
        assert_eq!(a.len(), b.len(), "{key}");
        for (a, b) in to_f32(a).iter().zip(to_f32(b)) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{key}: bias {a} vs {b}");
        }
        biases += 1;
    };
    let (mut values, mut off_by_one, mut worst_scale) = (0, 0, 0.0f64);
    for (key, value) in &ours.entries {
        let ours_weight = match value {
            Value::QTensor(q) => q,
            Value::PackedLinear(p) => {
                let Some(Value::PackedLinear(theirs)) = reference.get(key) else { panic!("{key}: PyTorch's is no Linear") };
                let (Some(a), Some(b)) = (&p.bias, &theirs.bias) else { panic!("{key}: a Linear without bias") };
                compare_biases(key, &a.data, &b.data);
                &p.weight
            }
            _ => continue,
        };
        weights += 1;
        let theirs = qtensor(&reference, key);
        assert_eq!((&ours_weight.shape, &ours_weight.strides), (&theirs.shape, &theirs.strides), "{key}");
        assert_eq!(ours_weight.data.len(), theirs.data.len(), "{key}");
        for (a, b) in ours_weight.data.iter().zip(theirs.data.iter()) {
            let difference = (*a as i8 as i32 - *b as i8 as i32).abs();
            assert!(difference <= 1, "{key}: int8 values {} and {}", *a as i8, *b as i8);
            off_by_one += difference as usize;
            values += 1;
        }
        let (
            Quantizer::PerChannelAffine { scales: a, zero_points: za, .. },
            Quantizer::PerChannelAffine { scales: b, zero_points: zb, .. },
        ) = (&ours_weight.quantizer, &theirs.quantizer)
        else {
            panic!("{key}: weights are per-channel")
        };
        assert_eq!(za, zb, "{key}");
        assert_eq!(a.len(), b.len(), "{key}");
        for (a, b) in a.iter().zip(b) {
            worst_scale = worst_scale.max((a - b).abs() / b);
        }
    }
    for (key, value) in &ours.entries {
        if let Value::Parameter(a) = value {
            let Some(Value::Parameter(b)) = reference.get(key) else { panic!("{key}: PyTorch's is no parameter") };
            compare_biases(key, &a.data, &b.data);
        }
    }
    println!(
        "static weights: {off_by_one} of {values} int8 values differ by one, worst relative scale difference {worst_scale:e}"
    );
    // Every layer's: 8 convolutions and 3 Linears.
    assert_eq!((weights, biases), (11, 11), "weights and biases compared");
    assert!(off_by_one * 1000 <= values, "more than 0.1 % of the int8 weights differ");
    assert!(worst_scale < 1e-6);
}

/// The histogram observers, fed calib_0..3 as FX feeds them (a max-pool's, the average pool's and the
/// flatten's outputs to their input's observer too), choose PyTorch's activation parameters: zero points
/// equal, scales to a few f32 ulps (measured: 3.1e-7 at worst).
#[test]
fn static_activation_qparams_match_pytorch() {
    let bytes = fixture("tiny_static_int8_fx.pth");
    let reference = read_state_dict(&bytes).unwrap();
    let ours = quantized_state_dict(&tiny_static(Calibration::Histogram)).unwrap();
    let (mut worst, mut exact) = (0.0f32, 0);
    let scales: Vec<&str> =
        ours.entries.iter().map(|(k, _)| k.as_str()).filter(|k| k.ends_with("scale") || k.ends_with("scale_0")).collect();
    // The model's input and the outputs of its 8 convolutions and 3 Linears.
    assert_eq!(scales.len(), 12, "{scales:?}");
    for key in scales {
        let (a, b) = (scalar_f32(&ours, key), scalar_f32(&reference, key));
        let zero_point_key = key.replace("scale", "zero_point");
        let (za, zb) = (scalar_i64(&ours, &zero_point_key), scalar_i64(&reference, &zero_point_key));
        println!("{key}: ours {a:e} zp {za}, PyTorch {b:e} zp {zb}");
        worst = worst.max((a - b).abs() / b);
        exact += usize::from((a - b).abs() / b < 1e-6);
        assert_eq!(za, zb, "{zero_point_key}");
    }
    println!("activation scales: {exact} of 12 within 1e-6, worst relative difference {worst:e}");
    assert_eq!(exact, 12, "scales beyond 1e-6 of PyTorch's");
}

#[test]
fn static_logits_match_pytorch() {
    let model = SimulatedVgg::<B>::new(&tiny_static(Calibration::Histogram), &Default::default());
    let (agree, n, max_error) = compare_logits(model.forward(images("probe_input")), "static");
    assert_eq!(agree, n);
    assert!(max_error < MAX_LOGIT_ERROR, "{max_error}");
}

/// PyTorch's own static parameters (the file), run through our simulated int8 forward: fbgemm's integer
/// arithmetic reproduced, so the logits match to float rounding of the final dequantization, and our
/// state_dict writer reproduces the file entry for entry.
#[test]
fn pytorchs_static_model_simulates_exactly_and_round_trips() {
    let bytes = fixture("tiny_static_int8_fx.pth");
    let reference = read_state_dict(&bytes).unwrap();
    let model = int8_from_state_dict(&reference, &tiny_config(), QuantMethod::Static).unwrap();
    assert_eq!(quantized_state_dict(&model).unwrap(), reference);
    let simulated = SimulatedVgg::<B>::new(&model, &Default::default());
    let (agree, n, max_error) = compare_logits(simulated.forward(images("probe_input")), "static");
    assert_eq!(agree, n);
    assert!(max_error < 1e-5, "{max_error}");
}

/// Quantizer parameters the kernels' int32 zero points and float32 scales cannot hold are refused by
/// key, not wrapped (2^32 + 3 read as 3) or narrowed to zero.
#[test]
fn quantizer_parameters_beyond_the_kernels_types_are_refused() {
    use vggq_pth::{Quantizer, Value};
    let bytes = fixture("tiny_static_int8_fx.pth");
    let reference = read_state_dict(&bytes).unwrap();
    let (key, _) = reference.entries.iter().find(|(_, value)| matches!(value, Value::QTensor(_))).unwrap();
    for (damage, said) in [(0, "has zero point 4294967299, beyond int32"), (1, "has scale 1e-50, not a positive float32")] {
        let mut damaged = reference.clone();
        let Some((_, Value::QTensor(weight))) = damaged.entries.iter_mut().find(|(k, _)| k == key) else { unreachable!() };
        let Quantizer::PerChannelAffine { scales, zero_points, .. } = &mut weight.quantizer else { panic!("{key}: per-channel") };
        match damage {
            0 => zero_points[0] = (1 << 32) + 3,
            _ => scales[0] = 1e-50,
        }
        let error = int8_from_state_dict(&damaged, &tiny_config(), QuantMethod::Static).unwrap_err().to_string();
        assert!(error.contains(key) && error.contains(said), "not `{key}` and `{said}`: {error}");
    }
}

/// MinMax calibration against PyTorch's `MinMaxObserver(reduce_range=True)` on the same activations (the
/// fixture model's second observation point on calib_0..3, as FX feeds it): the same scale and zero
/// point. Percentile calibration's range against numpy's quantiles of those activations (1e-4 cut at each
/// end): within one of its histogram's 2,048 bins, its resolution. Both models then write their state
/// dicts.
#[test]
fn minmax_and_percentile_calibrations_match_independent_references() {
    use vggq::quant::observer::{ActivationObserver, HISTOGRAM_BINS, PERCENTILE_TAIL};
    let (observed, [minmax, percentile]) = observation_point_two([Calibration::Minmax, Calibration::Percentile]);
    let script = format!(
        "o = torch.ao.quantization.MinMaxObserver(reduce_range=True)\n[o(v) for v in values]\ns, z = o.calculate_qparams()\n\
         import numpy\nlo, hi = numpy.quantile(numpy.concatenate([v.numpy() for v in values]), [{PERCENTILE_TAIL}, 1 - {PERCENTILE_TAIL}])\n\
         print(repr(s.item()), int(z.item()), repr(float(lo)), repr(float(hi)))"
    );
    let text = in_python(&observed, &script);
    let fields: Vec<&str> = text.split_whitespace().collect();
    let (scale, zero_point): (f64, i32) = (fields[0].parse().unwrap(), fields[1].parse().unwrap());
    let (low, high): (f64, f64) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
    let ours = minmax.qparams().unwrap();
    assert_eq!((ours.scale, ours.zero_point), (scale as f32, zero_point));
    let ActivationObserver::Percentile(histogram) = &percentile else { panic!("a percentile observer") };
    let range = percentile.range().unwrap();
    let bin = f64::from(histogram.max - histogram.min) / HISTOGRAM_BINS as f64;
    assert!((f64::from(range.min) - low).abs() <= bin, "low end {} vs numpy's {low} (a bin is {bin})", range.min);
    assert!((f64::from(range.max) - high).abs() <= bin, "high end {} vs numpy's {high} (a bin is {bin})", range.max);
    for method in [Calibration::Minmax, Calibration::Percentile] {
        quantized_state_dict(&tiny_static(method)).unwrap();
    }
}

#[test]
fn quantized_weights_round_half_to_even() {
    let weight = QuantizedWeight::symmetric(
        vec![1, 4],
        &[0.5, 1.5, -0.5, 127.5],
        &[vggq::quant::observer::MinMax { min: -127.5, max: 127.5 }],
        vggq::quant::QuantRange::QINT8,
    );
    assert_eq!(weight.scales, vec![1.0]);
    assert_eq!(weight.values, vec![0, 2, 0, 127]);
}

/// The histogram observer port against PyTorch's `HistogramObserver` on the same values: the fixture
/// model's second observation point on calib_0..3 (the second conv's output, then its max-pool's, per
/// batch, as FX feeds that observer): identical scale and zero point.
#[test]
fn histogram_port_is_exact_on_identical_data() {
    let (observed, [observer]) = observation_point_two([Calibration::Histogram]);
    let text = in_python(
        &observed,
        "o = torch.ao.quantization.HistogramObserver(reduce_range=True)\n[o(v) for v in values]\n\
         s, z = o.calculate_qparams()\nprint(repr(s.item()), int(z.item()))",
    );
    let mut fields = text.split_whitespace();
    let scale: f64 = fields.next().unwrap().parse().unwrap();
    let zero_point: i32 = fields.next().unwrap().parse().unwrap();
    let ours = observer.qparams().unwrap();
    assert_eq!((ours.scale, ours.zero_point), (scale as f32, zero_point));
}

/// The fixture model's second observation point on calib_0..3 (the second conv's output, then its
/// max-pool's, per batch, as FX feeds that observer), and observers of `methods` fed them.
fn observation_point_two<const N: usize>(
    methods: [Calibration; N],
) -> (Vec<Vec<f32>>, [vggq::quant::observer::ActivationObserver; N]) {
    let fused = FusedVgg::fuse(&tiny_fp32());
    let net = FloatNet::<B>::fused(&fused, &Default::default());
    let mut observers = methods.map(vggq::quant::observer::ActivationObserver::new);
    let mut observed: Vec<Vec<f32>> = Vec::new();
    for i in 0..4 {
        net.forward(images(&format!("calib_{i}")), &mut |point, values| {
            if point == 2 {
                observers.iter_mut().for_each(|o| o.observe(&values));
                observed.push(values);
            }
        });
    }
    assert_eq!(observed.len(), 8, "conv and pool outputs of 4 batches");
    (observed, observers)
}

/// Runs `script` in the tests' Python with `values` (a list of 1-D torch tensors, `observed` in order)
/// and torch imported; returns what it printed.
fn in_python(observed: &[Vec<f32>], script: &str) -> String {
    let bytes: Vec<Vec<u8>> = observed.iter().map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![bytes.len() / 4], bytes).unwrap();
            (format!("obs_{i}"), view)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activations.safetensors");
    std::fs::write(&path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
    let script = format!(
        "import warnings, torch\nfrom safetensors.torch import load_file\nwarnings.simplefilter('ignore')\n\
         x = load_file({:?})\nvalues = [x[f'obs_{{i}}'] for i in range({})]\n{script}",
        path.display().to_string(),
        observed.len()
    );
    let output = std::process::Command::new(vggq_core::places::test_python()).arg("-c").arg(script).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// Our QAT against PyTorch's `prepare_qat_fx` (fbgemm) on the fixture model, dropout off: two training
/// forward passes (calib_0, then calib_1 with a backward pass), then the second pass's logits, every
/// conv and Linear weight's gradient (straight-through estimator, Conv+BN weight scaling), every fake
/// quantizer's running range (moving averages), scale and zero point, and the BatchNorms' running
/// statistics and batch counts (tests/python/qat_step.py).
#[test]
fn qat_matches_pytorchs_prepare_qat_fx() {
    use burn::backend::Autodiff;
    use vggq::quant::qat::QatForward;
    use vggq::quant::qparams::runtime_qparams;
    use vggq::train::TrainingForward;
    type AD = Autodiff<Flex>;

    let python = vggq_core::places::test_python();
    let config = VggConfig { dropout: 0.0, ..tiny_config() };
    let float = FloatVgg { config: config.clone(), ..tiny_fp32() };
    let device = Default::default();
    let model = float.to_model::<AD>(&device);
    let (batch0, shape0) = io_tensor("calib_0");
    let (batch1, shape1) = io_tensor("calib_1");
    let labels: Vec<i64> = (0..shape1[0] as i64).map(|i| (i * 7) % 10).collect();

    let to_tensor = |values: &[f32], shape: &[usize]| {
        Tensor::<AD, 1>::from_floats(values, &device).reshape([shape[0], shape[1], shape[2], shape[3]])
    };
    let mut forward = QatForward::<AD>::new(&config);
    let reads = vggq::host_reads::count();
    let _ = forward.forward(&model, to_tensor(&batch0, &shape0));
    let logits = forward.forward(&model, to_tensor(&batch1, &shape1));
    let targets = Tensor::<AD, 1, Int>::from_ints(labels.as_slice(), &device);
    let grads = burn::nn::loss::CrossEntropyLoss::new(None, &device).forward(logits.clone(), targets).backward();
    // Observers and quantization parameters stay on the device: a QAT step never waits for it (the loop
    // before this change read the device 46 times a step, twice per activation and weight observer).
    assert_eq!(vggq::host_reads::count() - reads, 0, "host reads in two QAT training passes");
    let observers = forward.observers();

    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: Vec<u8>| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let f32_bytes = |values: &[f32]| values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let config_json = vggq::quant::float_model::pth_config(&config).torch_module_json(shape1[2]);
    let out = dir.path().join("torch_qat.safetensors");
    let output = std::process::Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/qat_step.py"))
        .arg(config_json)
        .arg(shared_dir().join("fixtures/torch-reference/tiny_fp32.pth"))
        .arg(file("batch0.f32", f32_bytes(&batch0)))
        .arg(file("batch1.f32", f32_bytes(&batch1)))
        .arg(file("labels.i64", labels.iter().flat_map(|l| l.to_le_bytes()).collect()))
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    println!("{}", String::from_utf8_lossy(&output.stdout));
    let bytes = std::fs::read(&out).unwrap();
    let torch = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let expected = |key: &str| -> Vec<f32> {
        torch
            .tensor(key)
            .unwrap_or_else(|_| panic!("PyTorch wrote no `{key}`"))
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    /// Largest difference relative to the largest magnitude of `expected`.
    fn relative(actual: &[f32], expected: &[f32]) -> f64 {
        assert_eq!(actual.len(), expected.len(), "lengths differ");
        let scale = expected.iter().fold(0.0f64, |m, &e| m.max(e.abs() as f64)).max(f64::MIN_POSITIVE);
        actual.iter().zip(expected).map(|(&a, &e)| (a as f64 - e as f64).abs()).fold(0.0, f64::max) / scale
    }

    // Observers: ranges to float rounding; the parameters fbgemm derives from them (weight scales measured
    // within 1.2e-7 of PyTorch's), zero points exactly.
    // PyTorch's activation fake quantizers in graph order: input, 8 convs, Linear, dropout, Linear,
    // dropout, Linear.
    let acts = &observers.activations;
    let ours = [&acts[..10], &[observers.dropouts[0], acts[10], observers.dropouts[1], acts[11]]].concat();
    assert_eq!(ours.len(), 14);
    for (i, observer) in ours.iter().enumerate() {
        let range = [observer.range.min, observer.range.max];
        let torch_range = [expected(&format!("act_{i}_min"))[0], expected(&format!("act_{i}_max"))[0]];
        assert!(relative(&range, &torch_range) < 1e-5, "activation {i}: ours {range:?}, PyTorch {torch_range:?}");
        let q = runtime_qparams(range[0], range[1], vggq::quant::QuantRange::QUINT8_REDUCED, false);
        assert!(relative(&[q.scale], &expected(&format!("act_{i}_scale"))) < 1e-5, "activation {i} scale");
        assert_eq!(q.zero_point as f32, expected(&format!("act_{i}_zero_point"))[0], "activation {i} zero point");
    }
    assert_eq!(observers.weights.len(), 11);
    let mut worst_weight_scale = 0.0f64;
    for (i, layer) in observers.weights.iter().enumerate() {
        let (mins, maxs): (Vec<f32>, Vec<f32>) = layer.iter().map(|o| (o.range.min, o.range.max)).unzip();
        assert!(relative(&mins, &expected(&format!("weight_{i}_min"))) < 1e-5, "weight {i} minima");
        assert!(relative(&maxs, &expected(&format!("weight_{i}_max"))) < 1e-5, "weight {i} maxima");
        let qparams: Vec<_> =
            layer.iter().map(|o| runtime_qparams(o.range.min, o.range.max, vggq::quant::QuantRange::QINT8, true)).collect();
        let scales: Vec<f32> = qparams.iter().map(|q| q.scale).collect();
        let scale_error = relative(&scales, &expected(&format!("weight_{i}_scale")));
        worst_weight_scale = worst_weight_scale.max(scale_error);
        assert!(scale_error < 1e-5, "weight {i} scales differ by {scale_error:e} of the largest");
        let zero_points: Vec<f32> = qparams.iter().map(|q| q.zero_point as f32).collect();
        assert_eq!(zero_points, expected(&format!("weight_{i}_zero_point")), "weight {i} zero points");
    }
    println!("QAT weight scales: worst relative difference {worst_weight_scale:e}");

    // Forward values and straight-through gradients.
    let logits = vggq::host_reads::values(logits.inner());
    let logit_error = relative(&logits, &expected("logits"));
    let mut grads_ours: Vec<Vec<f32>> =
        model.features.iter().map(|b| vggq::host_reads::values(b.conv.weight.grad(&grads).unwrap())).collect();
    let head = &model.classifier;
    grads_ours.extend(
        [&head.hidden1, &head.hidden2, &head.output]
            .map(|l| vggq::host_reads::values(l.weight.grad(&grads).unwrap().transpose())),
    );
    let grad_errors: Vec<f64> =
        grads_ours.iter().enumerate().map(|(i, g)| relative(g, &expected(&format!("weight_{i}_grad")))).collect();
    println!("QAT vs PyTorch: logits {logit_error:.2e}, weight gradients {grad_errors:?}");
    // Float rounding only (measured: 2.9e-7 and at most 1.6e-6); a flipped rounding of one fake-quantized
    // value would show as a whole quantization step.
    assert!(logit_error < 1e-5, "logits differ by {logit_error:e} of the largest");
    assert!(grad_errors.iter().all(|&e| e < 1e-5), "weight gradients differ: {grad_errors:?}");

    // BatchNorm running statistics after two training batches, and the batch count.
    for (i, block) in model.features.iter().enumerate() {
        let norm = &block.norm;
        assert!(
            relative(&vggq::host_reads::values(norm.running_mean.value_sync()), &expected(&format!("bn_{i}_running_mean")))
                < 1e-5,
            "bn {i} mean"
        );
        assert!(
            relative(&vggq::host_reads::values(norm.running_var.value_sync()), &expected(&format!("bn_{i}_running_var"))) < 1e-5,
            "bn {i} var"
        );
        assert_eq!(
            vggq::host_reads::values(norm.num_batches_tracked.value_sync()),
            expected(&format!("bn_{i}_num_batches_tracked"))
        );
    }
}
