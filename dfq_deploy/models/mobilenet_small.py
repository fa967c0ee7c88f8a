"""A MobileNetV2 for small images (Sandler et al. 2018): inverted residual blocks of a 1x1 expansion, a 3x3
depthwise convolution and a 1x1 linear projection, ReLU6 activations, residual adds where the shape allows.

The layout follows the paper's table 2 with the strides of the CIFAR adaptations (a stride-1 stem, three stride-2
stages), so a 28x28 image ends on a 4x4 map. Channel counts scale with ``width`` (the stem's channels, 16 in the
paper at width multiplier 0.5). It is here as the second shipped teacher because depthwise-separable networks are
what edge users deploy and the hardest case for low-bit quantization: a depthwise filter has 9 weights per channel,
so a per-channel weight grid has little to average over.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError

# (expansion, output channels in units of width / 2, blocks, first block's stride)
SETTING = ((1, 2, 1, 1), (6, 3, 2, 2), (6, 4, 3, 2), (6, 8, 3, 2), (6, 12, 2, 1))
LAST_CHANNELS = 16  # the 1x1 convolution before pooling, in units of width


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        expand = [_conv_bn(cin, hidden, 1)] if expansion != 1 else []
        self.conv = nn.Sequential(*expand, _conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                  _conv_bn(hidden, cout, 1, act=False))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class SmallMobileNetV2(nn.Module):
    """MobileNetV2 for small images.

    Args:
        width: channels of the stem (16 = the paper's network at width multiplier 0.5); must be even.
        in_channels: image channels (1 for Fashion-MNIST).
        num_classes: size of the classifier output.
    """

    def __init__(self, width: int = 16, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        if width < 2 or width % 2 or in_channels < 1 or num_classes < 2:
            raise ModelError(f"bad MobileNetV2 shape width={width} in_channels={in_channels} "
                             f"num_classes={num_classes}", hint="width must be even and >= 2, in_channels >= 1 and "
                                                                "num_classes >= 2")
        self.stem = _conv_bn(in_channels, width, 3)
        blocks, cin = [], width
        for expansion, units, n, stride in SETTING:
            cout = units * width // 2
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv_bn(cin, LAST_CHANNELS * width, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(LAST_CHANNELS * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(self.flatten(self.pool(x)))
