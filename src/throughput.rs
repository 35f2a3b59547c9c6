//! Training and evaluation throughput on random data, measured exactly as `torch_train_bench.py` measures
//! PyTorch (same model, optimiser, batch, warm-up and clock), so the two figures compare.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;

use crate::model::VggConfig;
use crate::train::TrainConfig;

/// Warm-up steps before the clock starts, as the PyTorch script does.
const WARMUP_STEPS: usize = 5;
/// Distinct random batches cycled through, as the PyTorch script does.
const BATCHES: usize = 4;

/// Images per second of full training steps and of evaluation forward passes.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub train_images_per_sec: f64,
    pub eval_images_per_sec: f64,
}

pub fn measure<B: AutodiffBackend>(
    model_config: &VggConfig,
    batch_size: usize,
    seconds: f64,
    device: &B::Device,
) -> Throughput {
    let train_config = TrainConfig::seed();
    B::seed(device, train_config.seed);
    let side = model_config.input_size;
    let inputs: Vec<Tensor<B, 4>> = (0..BATCHES)
        .map(|_| Tensor::random([batch_size, 3, side, side], Distribution::Normal(0.0, 1.0), device))
        .collect();
    let labels: Vec<Tensor<B, 1, Int>> = (0..BATCHES)
        .map(|_| Tensor::<B, 1>::random([batch_size], Distribution::Uniform(0.0, 10.0), device).int())
        .collect();

    let mut model = model_config.init::<B>(device);
    let mut optimizer = train_config.optimizer().init::<B, crate::model::Vgg<B>>();
    let loss_fn = CrossEntropyLoss::new(None, device);
    let mut train_step = |step: usize| {
        let loss = loss_fn.forward(model.forward(inputs[step % BATCHES].clone()), labels[step % BATCHES].clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(train_config.learning_rate, model.clone(), grads);
    };
    let train = images_per_sec::<B>(&mut train_step, batch_size, seconds, device);

    let eval_model = model_config.init::<B>(device).valid();
    let eval_inputs: Vec<_> = inputs.iter().map(|x| x.clone().inner()).collect();
    let mut eval_step = |step: usize| {
        let _ = eval_model.forward(eval_inputs[step % BATCHES].clone());
    };
    let eval = images_per_sec::<B>(&mut eval_step, batch_size, seconds, device);
    Throughput { train_images_per_sec: train, eval_images_per_sec: eval }
}

/// Runs `step` for `seconds` after warm-up, synchronising the device before reading the clock.
fn images_per_sec<B: Backend>(step: &mut impl FnMut(usize), batch_size: usize, seconds: f64, device: &B::Device) -> f64 {
    for i in 0..WARMUP_STEPS {
        step(i);
    }
    B::sync(device).expect("device sync");
    let started = Instant::now();
    let mut steps = 0;
    while started.elapsed().as_secs_f64() < seconds {
        step(steps);
        steps += 1;
        if steps % 10 == 0 {
            B::sync(device).expect("device sync");
        }
    }
    B::sync(device).expect("device sync");
    (steps * batch_size) as f64 / started.elapsed().as_secs_f64()
}
