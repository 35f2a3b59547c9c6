"""Runs the shared PyTorch baseline (torch_train_bench.py) with TF32 on or off for both matmuls and
convolutions, so it computes at the precision burn-cuda was measured to use.

Usage: torch_bench_precision.py (tf32|fp32) BENCH_SCRIPT [ARGS...]
PyTorch's own defaults differ per operation (matmuls FP32, cuDNN convolutions TF32); this sets both.
"""
import runpy
import sys

import torch


def main():
    precision, script, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if precision not in ("tf32", "fp32"):
        raise SystemExit(f"precision must be tf32 or fp32, not {precision}")
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    print(f"torch precision: matmul and cuDNN TF32 {'on' if tf32 else 'off'}", flush=True)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
