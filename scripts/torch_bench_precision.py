"""Runs the shared PyTorch baseline (torch_train_bench.py) with TF32 on or off for matmuls and for
convolutions each, so that each computes at the precision burn-cuda was measured to use for it.

Usage: torch_bench_precision.py MATMUL CONV BENCH_SCRIPT [ARGS...]
MATMUL and CONV are what `vggq device --json --precision` measured: tf32, fp32, or other (some other
rounding, which PyTorch is given FP32 for, the nearer of its two). PyTorch's own defaults differ per
operation (matmuls FP32, cuDNN convolutions TF32); this sets both.
"""
import runpy
import sys

import torch

MEASURED = ("tf32", "fp32", "other")


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    matmul, conv, script, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    for name, value in (("MATMUL", matmul), ("CONV", conv)):
        if value not in MEASURED:
            raise SystemExit(f"{name} must be one of {', '.join(MEASURED)}, not {value}")
    torch.backends.cuda.matmul.allow_tf32 = matmul == "tf32"
    torch.backends.cudnn.allow_tf32 = conv == "tf32"
    on_off = lambda tf32: "on" if tf32 else "off"
    print(
        f"torch precision: matmul TF32 {on_off(matmul == 'tf32')}, cuDNN TF32 {on_off(conv == 'tf32')} "
        f"(vggq measured matmul {matmul}, conv {conv})",
        flush=True,
    )
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
