"""Inception v3 with torchvision's parameter names, so ``inception_v3_google-0cc3c7bd.pth`` loads strictly.

Like GoogLeNet, the TensorFlow-ported weights expect ``transform_input``, and the checkpoint holds
the auxiliary classifier (``AuxLogits``), defined here but never run. Inputs need at least 75 px.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dreamcore.networks.base import LayerInfo, Stage
from dreamcore.networks.googlenet import BasicConv2d, transform_input


class InceptionA(nn.Module):
    def __init__(self, channels_in: int, pool_features: int) -> None:
        super().__init__()
        self.channels_out = 224 + pool_features
        self.branch1x1 = BasicConv2d(channels_in, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(channels_in, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(channels_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(channels_in, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17."""

    def __init__(self, channels_in: int) -> None:
        super().__init__()
        self.channels_out = 384 + 96 + channels_in
        self.branch3x3 = BasicConv2d(channels_in, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(channels_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), branch3x3dbl, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """Factorised 7x7 convolutions."""

    def __init__(self, channels_in: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.channels_out = 4 * 192
        self.branch1x1 = BasicConv2d(channels_in, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(channels_in, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(channels_in, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(channels_in, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = conv(branch7x7dbl)
        branch_pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8."""

    def __init__(self, channels_in: int) -> None:
        super().__init__()
        self.channels_out = 320 + 192 + channels_in
        self.branch3x3_1 = BasicConv2d(channels_in, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(channels_in, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = conv(branch7x7x3)
        return torch.cat([branch3x3, branch7x7x3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """Expanded filter bank of the 8x8 grid."""

    def __init__(self, channels_in: int) -> None:
        super().__init__()
        self.channels_out = 320 + 768 + 768 + 192
        self.branch1x1 = BasicConv2d(channels_in, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(channels_in, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(channels_in, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(channels_in, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        branch_pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, branch_pool], 1)


class InceptionAux(nn.Module):
    """Training-time auxiliary classifier; kept only so that checkpoints load strictly."""

    def __init__(self, channels_in: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(channels_in, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(F.avg_pool2d(x, kernel_size=5, stride=3)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))


# (name, torchvision attribute, Keras name, cumulative stride, what it dreams)
_MIXED = (
    ("mixed_5b", "Mixed_5b", "mixed0", 8, "simple textures"),
    ("mixed_5c", "Mixed_5c", "mixed1", 8, "textures and swirls"),
    ("mixed_5d", "Mixed_5d", "mixed2", 8, "textures and patterns"),
    ("mixed_6a", "Mixed_6a", "mixed3", 16, "patterns"),
    ("mixed_6b", "Mixed_6b", "mixed4", 16, "patterns and eyes"),
    ("mixed_6c", "Mixed_6c", "mixed5", 16, "eyes and object parts"),
    ("mixed_6d", "Mixed_6d", "mixed6", 16, "object parts and faces"),
    ("mixed_6e", "Mixed_6e", "mixed7", 16, "animal faces and object parts"),
    ("mixed_7a", "Mixed_7a", "mixed8", 32, "object parts"),
    ("mixed_7b", "Mixed_7b", "mixed9", 32, "whole objects"),
    ("mixed_7c", "Mixed_7c", "mixed10", 32, "whole objects, densely packed"),
)


class InceptionV3(nn.Module):
    native_size = 299
    min_size = 75  # the stem's unpadded convolutions and pools need this much

    def __init__(self, num_classes: int = 1000, transform_input: bool = True, aux_logits: bool = True) -> None:
        super().__init__()
        self.transform_input = transform_input
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        if aux_logits:
            self.AuxLogits = InceptionAux(768, num_classes)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=0.5)
        self.fc = nn.Linear(2048, num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.Conv2d_1a_3x3(transform_input(x) if self.transform_input else x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.dropout(self.avgpool(x)), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Written out like torchvision's, so tests can check that the stages add up to it.
        x = self.maxpool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.stem(x))))
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        for _, attribute, _, _, _ in _MIXED:
            x = getattr(self, attribute)(x)
        return self.logits(x)

    def stages(self) -> list[Stage]:
        stages = [
            Stage(LayerInfo("conv2d_1a", 32, 2, "3x3: edges and colour", ("Conv2d_1a_3x3",)), self.stem),
            Stage(LayerInfo("conv2d_2a", 32, 2, "3x3: edges", ("Conv2d_2a_3x3",)), self.Conv2d_2a_3x3),
            Stage(LayerInfo("conv2d_2b", 64, 2, "3x3: edges and textures", ("Conv2d_2b_3x3",)), self.Conv2d_2b_3x3),
            Stage(LayerInfo("maxpool1", 64, 4, "simple textures", ("pool1",)), self.maxpool1),
            Stage(LayerInfo("conv2d_3b", 80, 4, "1x1: simple textures", ("Conv2d_3b_1x1",)), self.Conv2d_3b_1x1),
            Stage(LayerInfo("conv2d_4a", 192, 4, "3x3: textures", ("Conv2d_4a_3x3",)), self.Conv2d_4a_3x3),
            Stage(LayerInfo("maxpool2", 192, 8, "textures", ("pool2",)), self.maxpool2),
        ]
        for name, attribute, keras, stride, description in _MIXED:
            block = getattr(self, attribute)
            stages.append(Stage(LayerInfo(name, block.channels_out, stride, description, (keras,)), block))
        classes = self.fc.out_features
        stages.append(Stage(LayerInfo("logits", classes, 32, "class scores", ("fc", "predictions")), self.logits))
        return stages
