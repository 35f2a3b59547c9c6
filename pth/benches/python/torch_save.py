"""Times torch.save of the full VGG11-BN FP32 state_dict (random weights) for the write_fp32 bench.

Usage: torch_save.py OUT_PATH REPEATS
Prints one line per repeat: `seconds bytes`.
"""
import sys
import time

import torch
import torch.nn as nn
from torchvision.models import vgg11_bn


def main():
    path, repeats = sys.argv[1], int(sys.argv[2])
    model = vgg11_bn(weights=None, num_classes=10)
    model.avgpool = nn.AdaptiveAvgPool2d((4, 4))
    model.classifier = nn.Sequential(
        nn.Linear(512 * 4 * 4, 4096), nn.ReLU(True), nn.Dropout(),
        nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
        nn.Linear(4096, 10),
    )
    state_dict = model.eval().state_dict()
    for _ in range(repeats):
        start = time.perf_counter()
        torch.save(state_dict, path)
        seconds = time.perf_counter() - start
        with open(path, "rb") as f:
            size = len(f.read())
        print(f"{seconds} {size}", flush=True)


if __name__ == "__main__":
    main()
