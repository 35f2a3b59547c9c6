"""PyTorch's quantization-aware training on a fixture model, for tests/quant.rs to compare with ours.

Usage: qat_step.py CONFIG_JSON FP32_PTH BATCH0_F32 BATCH1_F32 LABELS_I64 OUT_SAFETENSORS

Loads the FP32 state_dict into torchvision's VGG11-BN (scripts/torch_vgg.py; dropout off, so both sides
draw nothing at random), prepares it with `prepare_qat_fx(model.train(),
get_default_qat_qconfig_mapping("fbgemm"))` (Conv+BN+ReLU and Linear+ReLU fused, fused moving-average
fake quantizers), runs a forward pass on BATCH0, then a forward pass on BATCH1 and a backward pass of
the cross-entropy against LABELS. Writes the second pass's logits, the gradients of every conv and
Linear weight, the activation and weight fake quantizers' running ranges, scales and zero points, and
the BatchNorms' running statistics.
"""
import json
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.ao.quantization import get_default_qat_qconfig_mapping
from torch.ao.quantization.quantize_fx import prepare_qat_fx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../scripts"))
from torch_vgg import vgg_module  # noqa: E402


def main():
    warnings.simplefilter("ignore")
    config_json, pth, batch0, batch1, labels_path, out = sys.argv[1:7]
    config = json.loads(config_json)
    side = config["input_side"]
    torch.backends.quantized.engine = "fbgemm"
    model = vgg_module(config)
    model.load_state_dict(torch.load(pth, weights_only=True), strict=True)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    images = [torch.from_numpy(np.fromfile(p, dtype="<f4").reshape(-1, 3, side, side)) for p in (batch0, batch1)]
    labels = torch.from_numpy(np.fromfile(labels_path, dtype="<i8"))
    prepared = prepare_qat_fx(model.train(), get_default_qat_qconfig_mapping("fbgemm"), (images[0],))
    prepared(images[0])
    logits = prepared(images[1])
    F.cross_entropy(logits, labels).backward()

    tensors = {"logits": logits.detach()}
    modules = dict(prepared.named_modules())
    # Numbered in graph order: the input, then each fused conv and Linear.
    activation = sorted((n for n in modules if n.startswith("activation_post_process_") and "." not in n), key=lambda n: int(n.rsplit("_", 1)[1]))
    for i, name in enumerate(activation):
        fq = modules[name]
        tensors[f"act_{i}_min"], tensors[f"act_{i}_max"] = fq.activation_post_process.min_val.reshape(1), fq.activation_post_process.max_val.reshape(1)
        tensors[f"act_{i}_scale"], tensors[f"act_{i}_zero_point"] = fq.scale.reshape(1), fq.zero_point.reshape(1).double()
    layers = [n for n, m in modules.items() if hasattr(m, "weight_fake_quant")]
    for i, name in enumerate(layers):
        layer = modules[name]
        fq = layer.weight_fake_quant
        tensors[f"weight_{i}_min"], tensors[f"weight_{i}_max"] = fq.activation_post_process.min_val, fq.activation_post_process.max_val
        tensors[f"weight_{i}_scale"], tensors[f"weight_{i}_zero_point"] = fq.scale, fq.zero_point.double()
        tensors[f"weight_{i}_grad"] = layer.weight.grad
        if hasattr(layer, "bn"):
            tensors[f"bn_{i}_running_mean"], tensors[f"bn_{i}_running_var"] = layer.bn.running_mean, layer.bn.running_var
            tensors[f"bn_{i}_num_batches_tracked"] = layer.bn.num_batches_tracked.reshape(1).double()
    save_file({k: v.detach().contiguous().double().float() for k, v in tensors.items()}, out)
    print(json.dumps({"activation_fake_quants": len(activation), "weight_fake_quants": len(layers)}))


if __name__ == "__main__":
    main()
