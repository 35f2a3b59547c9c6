//! Where a CPU training step of VGG11-BN goes, operation by operation, and what our kernels changed:
//! each of VGG's operations at each layer's shapes (batch 32), forward and backward through
//! `Autodiff<Flex>`, as Burn's own operations compose it (`kernels::composed`) and as our kernels run it
//! (`VggBackend`), beside the time of a whole step of the real loop.
//! `cargo run --release --example op_profile -- [smoke|full]`; each figure is the median of a few runs.

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Distribution, TensorPrimitive};
use vggq::model::kernels::{self, composed};
use vggq::model::FeatureLayer;
use vggq::profile::Profile;

type AD = Autodiff<Flex>;
const BATCH: usize = 32;

/// Median seconds of `runs` calls of `f`, after one warm-up call.
fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn primitive<const D: usize>(t: Tensor<AD, D>) -> FloatTensor<AD> {
    t.into_primitive().tensor()
}

fn tensor<const D: usize>(p: FloatTensor<AD>) -> Tensor<AD, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// (forward, backward) seconds of `op` on tracked inputs. The backward pass starts from a dense random
/// output gradient, as in training (`sum(op() * g)`; a bare `sum()` would hand the operation a broadcast
/// gradient to copy first), and is the whole minus the forward minus what this harness costs on a leaf of
/// the output's shape.
fn forward_backward(runs: usize, op: impl Fn() -> Tensor<AD, 4>) -> (f64, f64) {
    let output = op();
    let (shape, device) = (output.dims(), output.device());
    let gradient = Tensor::<AD, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let leaf = Tensor::<AD, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device).require_grad();
    let forward = time(runs, || drop(op()));
    let whole = time(runs, || drop((op() * gradient.clone()).sum().backward()));
    let harness = time(runs, || drop((leaf.clone() * gradient.clone()).sum().backward()));
    (forward, (whole - forward - harness).max(0.0))
}

fn main() {
    vggq::backend::join_cpu_pool().expect("the global pool, first thing");
    let shapes = std::env::args().nth(1).unwrap_or_else(|| "smoke".into());
    let config = match shapes.as_str() {
        "full" => Profile::full().model,
        _ => Profile::smoke().model,
    };
    let runs = if shapes == "full" { 3 } else { 7 };
    let device = Default::default();
    let random = |shape: [usize; 4]| Tensor::<AD, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device).require_grad();
    let vector = |len: usize| Tensor::<AD, 1>::random([len], Distribution::Normal(1.0, 0.1), &device).require_grad();
    let mut rows: Vec<(String, [f64; 4])> = Vec::new();
    let (mut channels, mut side) = (3, config.input_size);
    let mut layers = Vec::new();
    for layer in config.features() {
        match layer {
            FeatureLayer::Conv(width) => layers.push((width, false)),
            FeatureLayer::MaxPool => layers.last_mut().expect("a conv first").1 = true,
        }
    }
    for (i, &(width, pool)) in layers.iter().enumerate() {
        // The images need no gradient in training, so the first convolution's backward pass has none.
        let x = random([BATCH, channels, side, side]);
        let x = if i == 0 { x.detach() } else { x };
        let (w, b) = (random([width, channels, 3, 3]), vector(width));
        let burn = forward_backward(runs, || {
            tensor(composed::conv3x3::<AD>(primitive(x.clone()), primitive(w.clone()), primitive(b.clone())))
        });
        let ours = forward_backward(runs, || kernels::conv3x3(x.clone(), w.clone(), b.clone()));
        rows.push((format!("conv{} {channels}->{width} @{side}px", i + 1), [burn.0, burn.1, ours.0, ours.1]));
        let (y, gamma, beta) = (random([BATCH, width, side, side]), vector(width), vector(width));
        let burn = forward_backward(runs, || {
            tensor(
                composed::batch_norm_relu::<AD>(
                    primitive(y.clone()),
                    gamma.clone().into_primitive().tensor(),
                    beta.clone().into_primitive().tensor(),
                )
                .output,
            )
        });
        let ours = forward_backward(runs, || kernels::batch_norm_relu(y.clone(), gamma.clone(), beta.clone()).0);
        rows.push((format!("batchnorm+relu{}", i + 1), [burn.0, burn.1, ours.0, ours.1]));
        if pool {
            let burn = forward_backward(runs, || tensor(composed::max_pool2x2::<AD>(primitive(y.clone()))));
            let ours = forward_backward(runs, || kernels::max_pool2x2(y.clone()));
            rows.push((format!("maxpool{}", i + 1), [burn.0, burn.1, ours.0, ours.1]));
            side /= 2;
        }
        channels = width;
    }
    let inputs = config.classifier_inputs();
    for (j, (fan_in, fan_out)) in
        [(inputs, config.hidden), (config.hidden, config.hidden), (config.hidden, config.classes)].into_iter().enumerate()
    {
        let x = Tensor::<AD, 2>::random([BATCH, fan_in], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let w = Tensor::<AD, 2>::random([fan_in, fan_out], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let b = vector(fan_out);
        let as4 = |t: Tensor<AD, 2>| t.unsqueeze::<4>();
        let burn = forward_backward(runs, || {
            as4(Tensor::from_primitive(TensorPrimitive::Float(composed::linear::<AD>(
                x.clone().into_primitive().tensor(),
                w.clone().into_primitive().tensor(),
                b.clone().into_primitive().tensor(),
            ))))
        });
        let ours = forward_backward(runs, || as4(kernels::linear(x.clone(), w.clone(), b.clone())));
        rows.push((format!("linear{} {fan_in}->{fan_out}", j + 1), [burn.0, burn.1, ours.0, ours.1]));
    }
    let step = vggq::throughput::seconds_per_training_step::<AD>(&config, BATCH, &device);
    let ours: f64 = rows.iter().map(|(_, t)| t[2] + t[3]).sum();
    let burn: f64 = rows.iter().map(|(_, t)| t[0] + t[1]).sum();
    println!(
        "{shapes} shapes, batch {BATCH}, {} threads: a whole training step now {:.1} ms",
        rayon::current_num_threads(),
        step * 1e3
    );
    println!("| operation | Burn's forward ms | Burn's backward ms | our forward ms | our backward ms | share of the step now |");
    println!("|---|---|---|---|---|---|");
    for (name, [bf, bb, of, ob]) in &rows {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} % |",
            bf * 1e3,
            bb * 1e3,
            of * 1e3,
            ob * 1e3,
            100.0 * (of + ob) / step
        );
    }
    println!("| all of the above | {:.1} | | {:.1} | | {:.1} % |", burn * 1e3, ours * 1e3, 100.0 * ours / step);
    println!("| everything else (loss, dropout, SGD, autodiff, loader) | | | | | {:.1} % |", 100.0 * (1.0 - ours / step));
}
