"""CIFAR-style ResNet (He et al. 2016, section 4.2): 3 stages of basic blocks, depth = 6n + 2.

Shortcuts that change shape use a 1x1 convolution + BatchNorm ("option B") rather than zero padding, so every
operation is a Conv/BN/ReLU/Add that Brevitas can quantize and ONNX Runtime can fuse into integer kernels.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-{depth} for small images.

    Args:
        depth: 6n + 2 (20, 32, 44, 56, ...).
        width: channels of the first stage (16 in the paper); stages use width, 2*width, 4*width.
        in_channels: image channels (1 for Fashion-MNIST, 3 for CIFAR).
        num_classes: size of the classifier output.
    """

    def __init__(self, depth: int = 20, width: int = 16, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ModelError(f"ResNet depth {depth} is not of the form 6n+2", hint="use 20, 32, 44 or 56")
        if width < 1 or in_channels < 1 or num_classes < 2:
            raise ModelError(
                f"bad ResNet shape width={width} in_channels={in_channels} num_classes={num_classes}",
                hint="width and in_channels must be >= 1 and num_classes >= 2",
            )
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        layers = []
        in_planes = width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))
