//! Backward passes of our own for VGG's CPU operations: `Autodiff<Flex>` runs the forward kernels of
//! [`super::cpu`] and registers, per operation, the gradients [`super::cpu`] computes for its inputs.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::TensorMetadata;
use burn_flex::FlexTensor;

use super::cpu::{self, contiguous, new_tensor, values, Channels, Nchw};
use super::{composed, fake_quantize, BatchNormed, FakeQuantized, Observed, VggBackend};

type Ad = Autodiff<Flex>;

impl VggBackend for Ad {
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Conv3x3;

        impl Backward<Flex, 3> for Conv3x3 {
            /// The input and the weights.
            type State = (FlexTensor, FlexTensor);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_x, node_weight, node_bias] = ops.parents;
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let (x, weight) = ops.state;
                let out_channels = weight.shape().dims::<4>()[0];
                if let Some(node) = node_x {
                    grads.register::<Flex>(node.id, cpu::conv3x3_input_grad(grad.clone(), &weight));
                }
                let grad_shape = Nchw::of(&grad);
                if let Some(node) = node_weight {
                    let x = contiguous(x);
                    let dw = cpu::conv3x3_weight_grad(values(&x), Nchw::of(&x), values(&grad), out_channels);
                    grads.register::<Flex>(node.id, new_tensor(dw, weight.shape()));
                }
                if let Some(node) = node_bias {
                    grads.register::<Flex>(node.id, new_tensor(cpu::conv_bias_grad(values(&grad), grad_shape), [out_channels]));
                }
            }
        }

        let weight_primitive = contiguous(weight.primitive.clone());
        let output = Flex::conv3x3(x.primitive.clone(), weight_primitive.clone(), bias.primitive.clone());
        match Conv3x3
            .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone(), bias.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x.primitive, weight_primitive), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn batch_norm_relu(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> BatchNormed<Self> {
        /// What the backward pass needs: the input, the output (the ReLU's mask), the weight, the batch's
        /// mean and inverse standard deviation.
        #[derive(Debug, Clone)]
        struct State {
            x: FlexTensor,
            output: FlexTensor,
            gamma: Vec<f32>,
            mean: Vec<f32>,
            inverse_std: Vec<f32>,
        }

        #[derive(Debug)]
        struct BatchNormRelu;

        impl Backward<Flex, 3> for BatchNormRelu {
            type State = State;

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_x, node_weight, node_bias] = ops.parents;
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let state = ops.state;
                let shape = Nchw::of(&state.x);
                let (dx, dgamma, dbeta) = cpu::batch_norm_relu_backward(
                    values(&grad),
                    values(&state.x),
                    values(&state.output),
                    shape,
                    &state.gamma,
                    &state.mean,
                    &state.inverse_std,
                );
                if let Some(node) = node_x {
                    grads.register::<Flex>(node.id, new_tensor(dx, state.x.shape()));
                }
                if let Some(node) = node_weight {
                    grads.register::<Flex>(node.id, new_tensor(dgamma, [shape.c]));
                }
                if let Some(node) = node_bias {
                    grads.register::<Flex>(node.id, new_tensor(dbeta, [shape.c]));
                }
            }
        }

        let input = contiguous(x.primitive.clone());
        let gamma = contiguous(weight.primitive.clone());
        let beta = contiguous(bias.primitive.clone());
        let shape = Nchw::of(&input);
        let forward = cpu::batch_norm_relu_forward(values(&input), shape, values(&gamma), values(&beta));
        let output = new_tensor(forward.output, input.shape());
        // Constants to autodiff: the running statistics carry no gradient.
        let statistics = |v: Vec<f32>| Ad::from_inner(new_tensor(v, [shape.c]));
        let (mean, variance) = (statistics(forward.mean.clone()), statistics(forward.variance));
        let output = match BatchNormRelu.prepare::<NoCheckpointing>([x.node, weight.node, bias.node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let state = State {
                    x: input,
                    output: output.clone(),
                    gamma: values(&gamma).to_vec(),
                    mean: forward.mean,
                    inverse_std: forward.inverse_std,
                };
                prep.finish(state, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(output),
        };
        BatchNormed { output, mean, variance }
    }

    fn scale_shift_relu(x: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>) -> FloatTensor<Self> {
        // Evaluation runs on the inner backend; on this one, Burn's own operations differentiate it.
        composed::scale_shift_relu::<Self>(x, scale, shift)
    }

    fn linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Linear;

        impl Backward<Flex, 3> for Linear {
            /// The input and the weights.
            type State = (FlexTensor, FlexTensor);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_x, node_weight, node_bias] = ops.parents;
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let (x, weight) = ops.state;
                let ([n, i], o) = (x.shape().dims(), weight.shape().dims::<2>()[1]);
                let dy = values(&grad);
                if let Some(node) = node_x {
                    grads.register::<Flex>(node.id, new_tensor(cpu::linear_input_grad(dy, values(&weight), n, i, o), [n, i]));
                }
                if let Some(node) = node_weight {
                    grads.register::<Flex>(node.id, new_tensor(cpu::linear_weight_grad(values(&x), dy, n, i, o), [i, o]));
                }
                if let Some(node) = node_bias {
                    grads.register::<Flex>(node.id, new_tensor(cpu::linear_bias_grad(dy, n, o), [o]));
                }
            }
        }

        let (input, weights) = (contiguous(x.primitive.clone()), contiguous(weight.primitive.clone()));
        let output = <Flex as VggBackend>::linear(input.clone(), weights.clone(), bias.primitive.clone());
        match Linear.prepare::<NoCheckpointing>([x.node, weight.node, bias.node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((input, weights), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct CrossEntropy;

        impl Backward<Flex, 1> for CrossEntropy {
            /// The logits, the class indices and each row's `log(sum(exp(row)))`.
            type State = (FlexTensor, Vec<usize>, Vec<f64>);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_logits] = ops.parents;
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let (logits, targets, log_sum_exp) = ops.state;
                if let Some(node) = node_logits {
                    let classes = logits.shape().dims::<2>()[1];
                    let dx = cpu::cross_entropy_backward(values(&logits), classes, &targets, &log_sum_exp, values(&grad)[0]);
                    grads.register::<Flex>(node.id, new_tensor(dx, logits.shape()));
                }
            }
        }

        let input = contiguous(logits.primitive.clone());
        let classes = input.shape().dims::<2>()[1];
        let targets = cpu::class_indices(targets, classes);
        let forward = cpu::cross_entropy_forward(values(&input), classes, &targets);
        let output = new_tensor(vec![forward.loss], [1]);
        match CrossEntropy.prepare::<NoCheckpointing>([logits.node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((input, targets, forward.log_sum_exp), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn fake_quantize_activation(x: FloatTensor<Self>, observed: Option<Observed<Self>>) -> FakeQuantized<Self> {
        straight_through(x, Channels::Tensor, observed)
    }

    fn fake_quantize_linear_weight(weight: FloatTensor<Self>, observed: Option<Observed<Self>>) -> FakeQuantized<Self> {
        straight_through(weight, Channels::Columns, observed)
    }

    fn fake_quantize_weight(
        weight: FloatTensor<Self>,
        factor: FloatTensor<Self>,
        observed: Option<Observed<Self>>,
    ) -> FakeQuantized<Self> {
        #[derive(Debug)]
        struct FakeQuantizeWeight;

        impl Backward<Flex, 2> for FakeQuantizeWeight {
            /// The weight, the factor it was scaled by and where the gradient passes.
            type State = (FlexTensor, FlexTensor, Vec<u8>);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_weight, node_factor] = ops.parents;
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let (weight, factor, mask) = ops.state;
                let (dweight, dfactor) =
                    fake_quantize::scaled_weight_grads(values(&grad), &mask, values(&weight), values(&factor));
                if let Some(node) = node_weight {
                    grads.register::<Flex>(node.id, new_tensor(dweight, weight.shape()));
                }
                if let Some(node) = node_factor {
                    grads.register::<Flex>(node.id, new_tensor(dfactor, factor.shape()));
                }
            }
        }

        let (input, scale) = (contiguous(weight.primitive.clone()), contiguous(factor.primitive.clone()));
        let (quantized, mask) = cpu::fake_quantized(input.clone(), Channels::Rows(scale.clone()), observed.map(inner));
        let observed = constant(quantized.observed);
        let output = match FakeQuantizeWeight.prepare::<NoCheckpointing>([weight.node, factor.node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((input, scale, mask), quantized.output),
            OpsKind::UnTracked(prep) => prep.finish(quantized.output),
        };
        FakeQuantized { output, observed }
    }

    fn unscale_bias(y: FloatTensor<Self>, factor: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct UnscaleBias;

        impl Backward<Flex, 3> for UnscaleBias {
            /// The conv's output and the factor.
            type State = (FlexTensor, FlexTensor);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_y, node_factor, node_bias] = ops.parents;
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let (y, factor) = ops.state;
                let shape = Nchw::of(&y);
                let (dy, dfactor, dbias) = fake_quantize::unscale_bias_grads(values(&grad), values(&y), shape, values(&factor));
                if let Some(node) = node_y {
                    grads.register::<Flex>(node.id, new_tensor(dy, y.shape()));
                }
                if let Some(node) = node_factor {
                    grads.register::<Flex>(node.id, new_tensor(dfactor, [shape.c]));
                }
                if let Some(node) = node_bias {
                    grads.register::<Flex>(node.id, new_tensor(dbias, [shape.c]));
                }
            }
        }

        let (input, scale) = (contiguous(y.primitive.clone()), contiguous(factor.primitive.clone()));
        let output = Flex::unscale_bias(input.clone(), scale.clone(), bias.primitive.clone());
        match UnscaleBias.prepare::<NoCheckpointing>([y.node, factor.node, bias.node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((input, scale), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct MaxPool2x2;

        impl Backward<Flex, 1> for MaxPool2x2 {
            /// Where each maximum came from, and the input's shape.
            type State = (Vec<u8>, Nchw);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_x] = ops.parents;
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let (positions, shape) = ops.state;
                if let Some(node) = node_x {
                    let dx = cpu::max_pool2x2_backward(values(&grad), &positions, shape);
                    grads.register::<Flex>(node.id, new_tensor(dx, [shape.n, shape.c, shape.h, shape.w]));
                }
            }
        }

        let input = contiguous(x.primitive.clone());
        let shape = Nchw::of(&input);
        let (output, positions) = cpu::max_pool2x2_forward(values(&input), shape);
        let output = new_tensor(output, [shape.n, shape.c, shape.h / 2, shape.w / 2]);
        match MaxPool2x2.prepare::<NoCheckpointing>([x.node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((positions, shape), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }
}

/// A fake quantizer whose gradient is the straight-through one alone (an activation's, a Linear's weight's).
fn straight_through(x: FloatTensor<Ad>, channels: Channels, observed: Option<Observed<Ad>>) -> FakeQuantized<Ad> {
    #[derive(Debug)]
    struct StraightThrough;

    impl Backward<Flex, 1> for StraightThrough {
        /// Where the gradient passes.
        type State = Vec<u8>;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [node_x] = ops.parents;
            let grad = contiguous(grads.consume::<Flex>(&ops.node));
            if let Some(node) = node_x {
                grads.register::<Flex>(
                    node.id,
                    new_tensor(fake_quantize::straight_through(values(&grad), &ops.state), grad.shape()),
                );
            }
        }
    }

    let (quantized, mask) = cpu::fake_quantized(x.primitive.clone(), channels, observed.map(inner));
    let observed = constant(quantized.observed);
    let output = match StraightThrough.prepare::<NoCheckpointing>([x.node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(mask, quantized.output),
        OpsKind::UnTracked(prep) => prep.finish(quantized.output),
    };
    FakeQuantized { output, observed }
}

/// An observer's range on the inner backend.
fn inner(observed: Observed<Ad>) -> Observed<Flex> {
    Observed { min: observed.min.primitive, max: observed.max.primitive }
}

/// An observer's range as constants to autodiff.
fn constant(observed: Observed<Flex>) -> Observed<Ad> {
    Observed { min: Ad::from_inner(observed.min), max: Ad::from_inner(observed.max) }
}
