"""PyTorch's outputs and gradients for tests/kernels.rs: a conv block of VGG11-BN in training mode.

Usage: kernels.py INPUTS_SAFETENSORS OUT_SAFETENSORS

INPUTS holds `x` [N, C, H, W], `weight` [O, C, 3, 3], `bias` [O], `gamma` [O], `beta` [O] and
`output_weights` [N, O, H/2, W/2]. Computes y = max_pool2d(relu(batch_norm(conv2d(x, weight, bias,
padding=1), training=True)), 2), then z = linear(y flattened, linear_weight [O*H*W/4, K] as Burn lays a
Linear out, linear_bias [K]), and the gradients of sum(z * linear_output_weights) with respect to every
input; writes `y`, `z` and `grad_<input>`.
"""
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


def main():
    inputs = {k: v.double().float().requires_grad_(not k.endswith("output_weights")) for k, v in load_file(sys.argv[1]).items()}
    conv = F.conv2d(inputs["x"], inputs["weight"], inputs["bias"], padding=1)
    normed = F.batch_norm(conv, None, None, inputs["gamma"], inputs["beta"], training=True, eps=1e-5)
    y = F.max_pool2d(F.relu(normed), 2)
    z = F.linear(y.flatten(1), inputs["linear_weight"].t(), inputs["linear_bias"])
    (z * inputs["linear_output_weights"]).sum().backward()
    out = {"y": y.detach(), "z": z.detach()}
    out.update({f"grad_{k}": v.grad for k, v in inputs.items() if not k.endswith("output_weights")})
    save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[2])


if __name__ == "__main__":
    main()
