"""The smoke profile's recipe in PyTorch, for comparing accuracies with vggq's (README, "Fidelity").

Usage: torch_smoke_recipe.py CIFAR10_JPEG_TAR_GZ SEED

The seed's training as the user wrote it, at the smoke profile's shapes: torchvision's VGG11-BN at width
1/4 with its own initialisation (`init_weights=True`), the classifier rebuilt for 32-px input (1x1 average
pool, 128 -> 512 -> 512 -> 10, `nn.Linear`'s default initialisation); 10,000 of the 50,000 training images
(a seeded random subset) split 8:2 with `random_split`, Resize(32), RandomHorizontalFlip on train, ImageNet
mean/std; SGD lr 0.005, momentum 0.9, weight decay 5e-4, batch 32, 2 epochs; CrossEntropy. Prints the
validation accuracy after each epoch and the test accuracy, as JSON.
"""
import io
import json
import sys
import tarfile

import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset, random_split
from torchvision import transforms
from torchvision.models.vgg import VGG, make_layers

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Images(Dataset):
    def __init__(self, items, transform):
        self.items, self.transform = items, transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        data, label = self.items[i]
        return self.transform(Image.open(io.BytesIO(data)).convert("RGB")), label


def read(archive):
    splits = {"train": [], "test": []}
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        classes = sorted({m.name.split("/")[-2] for m in members})
        for m in members:
            split = m.name.split("/")[-3]
            splits[split].append((tar.extractfile(m).read(), classes.index(m.name.split("/")[-2])))
    return splits


def main():
    archive, seed = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(seed)
    data = read(archive)
    train_tf = transforms.Compose([transforms.Resize((32, 32)), transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    eval_tf = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    generator = torch.Generator().manual_seed(seed)
    subset = torch.randperm(len(data["train"]), generator=generator)[:10_000].tolist()
    train_idx, val_idx = random_split(subset, [8_000, 2_000], generator=generator)
    train = Subset(Images(data["train"], train_tf), list(train_idx))
    val = Subset(Images(data["train"], eval_tf), list(val_idx))
    test = Images(data["test"], eval_tf)

    cfg = [c if c == "M" else c // 4 for c in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]]
    model = VGG(make_layers(cfg, batch_norm=True), num_classes=10, init_weights=True)
    model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    model.classifier = nn.Sequential(nn.Linear(128, 512), nn.ReLU(True), nn.Dropout(), nn.Linear(512, 512), nn.ReLU(True), nn.Dropout(), nn.Linear(512, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()

    def accuracy(dataset):
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in DataLoader(dataset, batch_size=256):
                correct += (model(x).argmax(1) == y).sum().item()
        return 100.0 * correct / len(dataset)

    vals = []
    for _ in range(2):
        model.train()
        for x, y in DataLoader(train, batch_size=32, shuffle=True, generator=generator):
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
        vals.append(accuracy(val))
    print(json.dumps({"seed": seed, "val": vals, "test": accuracy(test)}))


if __name__ == "__main__":
    main()
