//! A backward pass of our own for the GPU backends' 3x3 convolution. Burn's own computes the input's
//! gradient as a transposed convolution, which without autotune runs burn-cubecl's direct transposed
//! kernel: on lavapipe 37 of a training step's 60 s of kernel time (`CUBECL_DEBUG_OPTION=profile`). For
//! stride 1 and padding 1 that gradient is the same 3x3 convolution of the output's gradient with the
//! weights' channels swapped and their taps flipped, which runs the forward convolution instead. The
//! forward pass, the input's and the weights' gradients follow the backend's [`Conv3x3Algorithm`]; the
//! bias's gradient is Burn's.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

use super::composed::{conv3x3_by, conv3x3_weight_gradient_by, Conv3x3Algorithm};

/// [`super::VggBackend::conv3x3`] on `Autodiff<B>` by `algorithm`, its input's gradient a forward
/// convolution.
pub fn conv3x3<B: Backend>(
    algorithm: Conv3x3Algorithm,
    x: FloatTensor<Autodiff<B>>,
    weight: FloatTensor<Autodiff<B>>,
    bias: FloatTensor<Autodiff<B>>,
) -> FloatTensor<Autodiff<B>> {
    #[derive(Debug)]
    struct Conv3x3(Conv3x3Algorithm);

    impl<B: Backend> Backward<B, 3> for Conv3x3 {
        /// The input, the weights and the bias.
        type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let Conv3x3(algorithm) = self;
            let [node_x, node_weight, node_bias] = ops.parents;
            let grad = grads.consume::<B>(&ops.node);
            let (x, weight, bias) = ops.state;
            if let Some(node) = node_bias {
                grads.register::<B>(node.id, B::conv2d_bias_backward(x.clone(), bias, grad.clone()));
            }
            if let Some(node) = node_weight {
                grads.register::<B>(node.id, conv3x3_weight_gradient_by::<B>(algorithm, x, weight.clone(), grad.clone()));
            }
            if let Some(node) = node_x {
                // [O, C, 3, 3] -> [C, O, 3, 3], each 3x3 turned by 180 degrees.
                let transposed = B::float_flip(B::float_swap_dims(weight, 0, 1), &[2, 3]);
                grads.register::<B>(node.id, conv3x3_by::<B>(algorithm, grad, transposed, None));
            }
        }
    }

    let output = conv3x3_by::<B>(algorithm, x.primitive.clone(), weight.primitive.clone(), Some(bias.primitive.clone()));
    let parents = [x.node.clone(), weight.node.clone(), bias.node.clone()];
    match Conv3x3(algorithm).prepare::<NoCheckpointing>(parents).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((x.primitive, weight.primitive, bias.primitive), output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}
