"""Loads a .pth written by vggq-pth into real PyTorch and checks it against the writer's values.

Usage: check_load.py VARIANT PTH MANIFEST_JSON BLOB CONFIG_JSON

The manifest lists every entry the Rust test wrote (kind, dtype, shape, strides, quantizer, and the
byte range of its storage in BLOB), so the expected values reach Python without our .pth reader.
Prints one line per failure and exits 1 if any; prints `ok ...` and exits 0 otherwise.
"""
import json
import sys

import torch
import torch.nn as nn
# The shared torchvision module builder lives in the repository's scripts/.
import os  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../scripts"))
from torch_vgg import variant_module  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "qint8": torch.int8, "quint8": torch.uint8}
QDTYPES = {"qint8": torch.qint8, "quint8": torch.quint8}


def expected_tensor(spec, blob):
    raw = bytearray(blob[spec["offset"]:spec["offset"] + spec["nbytes"]])
    storage = torch.frombuffer(raw, dtype=DTYPES[spec["dtype"]]) if raw else torch.empty(0, dtype=DTYPES[spec["dtype"]])
    return torch.as_strided(storage, spec["shape"], spec["strides"]).clone()


def compare(key, got, spec, blob, failures, check_strides):
    def fail(what):
        failures.append(f"{key}: {what}")

    if spec["kind"] == "dtype":
        if got != QDTYPES[spec["dtype"]]:
            fail(f"dtype {got} != {spec['dtype']}")
        return
    if spec["kind"] == "packed":
        weight, bias = got if isinstance(got, tuple) else got._weight_bias()
        compare(key + "[weight]", weight, spec["weight"], blob, failures, check_strides)
        if spec["bias"] is None:
            if bias is not None:
                fail("bias should be None")
        else:
            compare(key + "[bias]", bias, spec["bias"], blob, failures, check_strides)
        return
    if not isinstance(got, torch.Tensor):
        fail(f"not a tensor: {type(got)}")
        return
    if list(got.shape) != spec["shape"]:
        fail(f"shape {list(got.shape)} != {spec['shape']}")
        return
    if check_strides and list(got.stride()) != spec["strides"]:
        fail(f"strides {list(got.stride())} != {spec['strides']}")
    want = expected_tensor(spec, blob)
    if spec["kind"] == "parameter" and check_strides and not isinstance(got, nn.Parameter):
        fail("not a Parameter")
    if spec["kind"] == "qtensor":
        if got.dtype != QDTYPES[spec["dtype"]]:
            fail(f"dtype {got.dtype} != {spec['dtype']}")
            return
        if not torch.equal(got.int_repr(), want):
            fail("int_repr differs")
        if spec["qscheme"] == "per_tensor_affine":
            if got.qscheme() != torch.per_tensor_affine or got.q_scale() != spec["scale"] or got.q_zero_point() != spec["zero_point"]:
                fail(f"quantizer {got.qscheme()} {got.q_scale()} {got.q_zero_point()} != {spec}")
        else:
            if got.qscheme() != torch.per_channel_affine or got.q_per_channel_axis() != spec["axis"]:
                fail(f"qscheme {got.qscheme()} axis {got.q_per_channel_axis()}")
            if got.q_per_channel_scales().tolist() != spec["scales"]:
                fail("per-channel scales differ")
            if got.q_per_channel_zero_points().tolist() != spec["zero_points"]:
                fail("per-channel zero points differ")
    else:
        if got.dtype != DTYPES[spec["dtype"]]:
            fail(f"dtype {got.dtype} != {spec['dtype']}")
        elif not torch.equal(got.detach(), want):
            fail("values differ")


def main():
    variant, pth, manifest_path, blob_path, config_json = sys.argv[1:6]
    manifest = json.load(open(manifest_path))
    blob = open(blob_path, "rb").read()
    config = json.loads(config_json)
    torch.backends.quantized.engine = "fbgemm"

    loaded = torch.load(pth, weights_only=True)
    failures = []
    if list(loaded.keys()) != [e["key"] for e in manifest["entries"]]:
        failures.append(f"keys differ: {list(loaded.keys())}")
    if [[k, v["version"]] for k, v in loaded._metadata.items()] != manifest["metadata"]:
        failures.append(f"_metadata differs: {loaded._metadata}")
    for spec in manifest["entries"]:
        if spec["key"] in loaded:
            compare(spec["key"], loaded[spec["key"]], spec, blob, failures, check_strides=True)

    model, example = variant_module(variant, config)
    try:
        model.load_state_dict(loaded, strict=True)
    except Exception as error:  # the message names the keys; report it as a failure line
        failures.append(f"load_state_dict(strict=True) failed: {error}")
    else:
        # After loading, the module's own state_dict (fbgemm repacks, then unpacks) holds our values.
        reloaded = model.state_dict()
        for spec in manifest["entries"]:
            compare("module " + spec["key"], reloaded[spec["key"]], spec, blob, failures, check_strides=False)
        with torch.no_grad():
            out = model(*example)
        if list(out.shape) != [example[0].shape[0], config["classes"]]:
            failures.append(f"forward gave shape {list(out.shape)}")

    for line in failures:
        print(line)
    if failures:
        sys.exit(1)
    print(f"ok {variant}: {len(manifest['entries'])} entries loaded, strict load_state_dict, forward {list(out.shape)}")


if __name__ == "__main__":
    main()
