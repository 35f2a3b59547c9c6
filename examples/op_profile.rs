//! Where a CPU training step of VGG11-BN goes, operation by operation (burn-flex through the backend's own
//! ops, the shapes of each layer at batch 32), beside the measured time of a whole step of the real loop:
//! `cargo run --release --example op_profile -- [smoke|full]`. Each figure is the median of a few runs.

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::module::{conv2d, max_pool2d_with_indices};
use burn::tensor::ops::{ConvOptions, ModuleOps};
use burn::tensor::{Distribution, TensorPrimitive};
use vggq::model::{BatchNorm2d, FeatureLayer, VggConfig};

type B = Flex;
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

fn primitive<const D: usize>(t: Tensor<B, D>) -> burn::tensor::ops::FloatTensor<B> {
    match t.into_primitive() {
        TensorPrimitive::Float(t) => t,
        TensorPrimitive::QFloat(_) => unreachable!("float tensors"),
    }
}

fn main() {
    let shapes = std::env::args().nth(1).unwrap_or_else(|| "smoke".into());
    let config = match shapes.as_str() {
        "full" => VggConfig::seed(),
        _ => VggConfig::for_input(4, 32, 512, 10),
    };
    let runs = if shapes == "full" { 3 } else { 7 };
    let device = Default::default();
    let random = |shape: [usize; 4]| Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let options = || ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    let (mut channels, mut side) = (3, config.input_size);
    let widths: Vec<(usize, bool)> = {
        let mut layers = Vec::new();
        for layer in config.features() {
            match layer {
                FeatureLayer::Conv(width) => layers.push((width, false)),
                FeatureLayer::MaxPool => layers.last_mut().expect("a conv first").1 = true,
            }
        }
        layers
    };
    for (i, &(width, pool)) in widths.iter().enumerate() {
        let x = random([BATCH, channels, side, side]);
        let w = random([width, channels, 3, 3]);
        let dy = random([BATCH, width, side, side]);
        let forward = time(runs, || drop(conv2d(x.clone(), w.clone(), None, options())));
        let backward_x = time(runs, || {
            drop(B::conv2d_x_backward(primitive(x.clone()), primitive(w.clone()), primitive(dy.clone()), options()))
        });
        let backward_w = time(runs, || {
            drop(B::conv2d_weight_backward(primitive(x.clone()), primitive(w.clone()), primitive(dy.clone()), options()))
        });
        rows.push((format!("conv{} {channels}->{width} @{side}px (input grad)", i + 1), forward, backward_x));
        rows.push((format!("conv{} (weight grad)", i + 1), 0.0, backward_w));
        let norm = BatchNorm2d::<AD>::new(width, &device);
        let y = Tensor::<AD, 4>::from_inner(dy.clone()).require_grad();
        let bn_forward = time(runs, || drop(norm.forward(y.clone()).clamp_min(0.0)));
        let bn_total = time(runs, || drop(norm.forward(y.clone()).clamp_min(0.0).sum().backward()));
        rows.push((format!("bn+relu{}", i + 1), bn_forward, (bn_total - bn_forward).max(0.0)));
        if pool {
            let out = max_pool2d_with_indices(dy.clone(), [2, 2], [2, 2], [0, 0], [1, 1], false);
            let pooled_grad = random([BATCH, width, side / 2, side / 2]);
            let pool_forward = time(runs, || drop(max_pool2d_with_indices(dy.clone(), [2, 2], [2, 2], [0, 0], [1, 1], false)));
            let indices = out.1.clone();
            let pool_backward = time(runs, || {
                drop(B::max_pool2d_with_indices_backward(
                    primitive(dy.clone()),
                    [2, 2],
                    [2, 2],
                    [0, 0],
                    [1, 1],
                    false,
                    primitive(pooled_grad.clone()),
                    indices.clone().into_primitive(),
                ))
            });
            rows.push((format!("maxpool{}", i + 1), pool_forward, pool_backward));
            side /= 2;
        }
        channels = width;
    }
    let inputs = config.classifier_inputs();
    for (j, (fan_in, fan_out)) in
        [(inputs, config.hidden), (config.hidden, config.hidden), (config.hidden, config.classes)].into_iter().enumerate()
    {
        let x = Tensor::<B, 2>::random([BATCH, fan_in], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<B, 2>::random([fan_in, fan_out], Distribution::Normal(0.0, 1.0), &device);
        let dy = Tensor::<B, 2>::random([BATCH, fan_out], Distribution::Normal(0.0, 1.0), &device);
        let forward = time(runs, || drop(x.clone().matmul(w.clone())));
        let backward = time(runs, || {
            drop(dy.clone().matmul(w.clone().transpose()));
            drop(x.clone().transpose().matmul(dy.clone()));
        });
        rows.push((format!("linear{} {fan_in}->{fan_out}", j + 1), forward, backward));
    }
    let step = vggq::throughput::seconds_per_training_step::<AD>(&config, BATCH, &device);
    let total: f64 = rows.iter().map(|(_, f, b)| f + b).sum();
    println!(
        "{shapes} shapes, batch {BATCH}, {} threads: a whole training step {:.1} ms",
        rayon::current_num_threads(),
        step * 1e3
    );
    println!("| operation | forward ms | backward ms | share of the step |");
    println!("|---|---|---|---|");
    for (name, forward, backward) in &rows {
        println!("| {name} | {:.2} | {:.2} | {:.1} % |", forward * 1e3, backward * 1e3, 100.0 * (forward + backward) / step);
    }
    println!("| everything else (loss, dropout, SGD, autodiff, loader) | | | {:.1} % |", 100.0 * (1.0 - total / step));
}
