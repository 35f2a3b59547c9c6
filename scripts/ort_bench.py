"""ONNX Runtime's own Python API on ONNX files: the baseline for `vggq eval`'s inference timing.

Same measure as vggq's: batches of --batch images, `session.run` alone, --warmup batches excluded, every
graph optimization on, the CPU execution provider, --threads intra-op threads (0: ORT's default).
Run by `cargo xtask bench onnx` beside `vggq eval` on the same files.
"""

import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def bench(path, batch, batches, warmup, threads):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    side = session.get_inputs()[0].shape[3]
    images = np.random.default_rng(0).standard_normal((batch, 3, side, side), dtype=np.float32)
    for _ in range(warmup):
        session.run(["logits"], {"input": images})
    latencies = []
    for _ in range(batches):
        start = time.perf_counter()
        session.run(["logits"], {"input": images})
        latencies.append(time.perf_counter() - start)
    total = sum(latencies)
    latencies.sort()
    pick = lambda p: latencies[round((len(latencies) - 1) * p)] * 1e3
    return {
        "file": path.rsplit("/", 1)[-1],
        "ort_version": ort.__version__,
        "images_per_s": batch * batches / total,
        "ms_per_image": total * 1e3 / (batch * batches),
        "p50_batch_ms": pick(0.5),
        "p95_batch_ms": pick(0.95),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    for path in args.models:
        print(json.dumps(bench(path, args.batch, args.batches, args.warmup, args.threads)))


if __name__ == "__main__":
    main()
