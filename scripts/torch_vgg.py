"""The torchvision VGG11-BN module matching a vggq configuration, for the tests that load our files in PyTorch.

`config` is vggq-pth's layout configuration as JSON: `features` (conv widths, 0 for a max-pool),
`avgpool_side`, `hidden`, `classes`.
"""
import torch.nn as nn
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
