"""The torchvision VGG11-BN module matching a vggq configuration, and the PyTorch module each of vggq's
variants loads into, for the tests that load our files in PyTorch.

`config` is vggq-pth's layout configuration as JSON (`VggConfig::torch_module_json`): `features` (conv
widths, 0 for a max-pool), `avgpool_side`, `hidden`, `classes`, `input_side`.
"""
import torch
import torch.nn as nn
from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping, quantize_dynamic
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx
from torchvision.models.vgg import VGG, make_layers


def vgg_module(config):
    cfg = [c if c != 0 else "M" for c in config["features"]]
    side = config["avgpool_side"]
    last = [c for c in cfg if c != "M"][-1]
    model = VGG(make_layers(cfg, batch_norm=True), num_classes=config["classes"], init_weights=False)
    model.avgpool = nn.AdaptiveAvgPool2d((side, side))
    h = config["hidden"]
    model.classifier = nn.Sequential(
        nn.Linear(last * side * side, h), nn.ReLU(True), nn.Dropout(),
        nn.Linear(h, h), nn.ReLU(True), nn.Dropout(),
        nn.Linear(h, config["classes"]),
    )
    return model


def variant_module(variant, config):
    """The module `torch.save(model.state_dict())` of `variant` came from, as the seed builds it: `fp32`
    (torchvision's VGG11-BN), `dynamic_int8` (`quantize_dynamic({nn.Linear}, qint8)`), `static_int8_fx`
    (`prepare_fx`/`convert_fx`, fbgemm) or `qat_int8*` (`prepare_qat_fx`/`convert_fx`, fbgemm); its
    parameters are placeholders for `load_state_dict(strict=True)` to replace. Returns it with an example
    input."""
    torch.manual_seed(0)
    torch.backends.quantized.engine = "fbgemm"
    model = vgg_module(config)
    example = (torch.randn(2, 3, config["input_side"], config["input_side"]),)
    if variant == "fp32":
        return model.eval(), example
    if variant == "dynamic_int8":
        return quantize_dynamic(model.eval(), {nn.Linear}, torch.qint8), example
    if variant == "static_int8_fx":
        prepared = prepare_fx(model.eval(), get_default_qconfig_mapping("fbgemm"), example)
        prepared(*example)
        return convert_fx(prepared), example
    if variant.startswith("qat_int8"):
        prepared = prepare_qat_fx(model.train(), get_default_qat_qconfig_mapping("fbgemm"), example)
        prepared(*example)
        return convert_fx(prepared.eval()), example
    raise SystemExit(f"unknown variant {variant}")
