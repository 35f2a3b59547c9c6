"""Runs the PyTorch module loaded from our .pth on the images ONNX Runtime saw, and compares logits.

Usage: torch_agreement.py VARIANT PTH CONFIG_JSON IMAGES_F32 ONNX_LOGITS_F32

VARIANT is `fp32` (torchvision's VGG11-BN layout, eval mode), `dynamic_int8` (the FP32 .pth through
`torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, torch.qint8)`, as the seed quantizes it) or
`static_int8_fx` (a `convert_fx` fbgemm module, loaded with the quantized state_dict in PTH).
The image and logit files are raw little-endian float32. Prints one JSON line: the largest absolute
difference relative to the largest |logit| and the share of images whose top-1 class agrees.
"""
import json
import sys

import numpy as np
import torch
import torch.nn as nn
from torch.ao.quantization import get_default_qconfig_mapping, quantize_dynamic
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
# The shared torchvision module builder lives in the repository's scripts/.
import os  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../scripts"))
from torch_vgg import vgg_module  # noqa: E402


def build(config):
    model = vgg_module(config)
    return model.eval()


def main():
    variant, pth, config_json, images_path, logits_path = sys.argv[1:6]
    config = json.loads(config_json)
    torch.backends.quantized.engine = "fbgemm"
    side = config["input_side"]
    model = build(config)
    state_dict = torch.load(pth, weights_only=True)
    if variant == "static_int8_fx":
        # The module structure convert_fx gives; its calibration is replaced by the parameters we load.
        example = (torch.randn(2, 3, side, side),)
        prepared = prepare_fx(model, get_default_qconfig_mapping("fbgemm"), example)
        prepared(*example)
        model = convert_fx(prepared)
    model.load_state_dict(state_dict, strict=True)
    if variant == "dynamic_int8":
        model = quantize_dynamic(model, {nn.Linear}, torch.qint8)
    images = torch.from_numpy(np.fromfile(images_path, dtype="<f4").reshape(-1, 3, side, side))
    onnx_logits = np.fromfile(logits_path, dtype="<f4").reshape(images.shape[0], -1)
    with torch.no_grad():
        torch_logits = model(images).numpy()
    # PyTorch's logits for the caller, which scores top-1 agreement with ties on the quantized grid in mind.
    np.asarray(torch_logits, dtype="<f4").tofile(logits_path + ".torch")
    scale = float(np.abs(torch_logits).max())
    print(json.dumps({
        "relative_error": float(np.abs(torch_logits - onnx_logits).max()) / scale,
        "top1_agreement": float((torch_logits.argmax(1) == onnx_logits.argmax(1)).mean()),
    }))


if __name__ == "__main__":
    main()
