"""Loads vggq's `.pth` files into the PyTorch modules the seed builds, strictly, and runs them.

Usage: load_variants.py CONFIG_JSON VARIANT PTH [VARIANT PTH ...]

VARIANT is vggq's name for the file's variant (`fp32`, `dynamic_int8`, `static_int8_fx`,
`qat_int8_fp32match`); its module comes from scripts/torch_vgg.py's `variant_module`. Every file is read with `torch.load(weights_only=True)`,
loaded with `load_state_dict(strict=True)` and run on a random batch. Prints one JSON line per file:
its variant, parameter count and the logits' shape; exits non-zero on the first failure.
"""
import json
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../scripts"))
from torch_vgg import variant_module  # noqa: E402



def main():
    warnings.simplefilter("ignore")
    config = json.loads(sys.argv[1])
    pairs = sys.argv[2:]
    for variant, path in zip(pairs[::2], pairs[1::2]):
        model, example = variant_module(variant, config)
        state_dict = torch.load(path, weights_only=True)
        model.load_state_dict(state_dict, strict=True)
        with torch.no_grad():
            logits = model.eval()(*example)
        if not torch.isfinite(logits).all():
            raise SystemExit(f"{path}: non-finite logits")
        print(json.dumps({"variant": variant, "entries": len(state_dict), "logits": list(logits.shape)}))


if __name__ == "__main__":
    main()
