"""GoogLeNet (Inception v1), the network of the original 2015 DeepDream, with torchvision's parameter names.

torchvision's ImageNet checkpoint (``googlenet-1378be20.pth``) loads unchanged, auxiliary heads
included. Two of torchvision's choices are kept on purpose because the weights were trained with
them: the "5x5" branch of each Inception block is a 3x3 convolution, and the pretrained weights
expect ``transform_input`` (inputs normalised with ImageNet mean/std are re-scaled to [-1, 1]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dreamcore.networks.base import LayerInfo, Stage

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def transform_input(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised input -> the [-1, 1] scale the TensorFlow-ported weights expect (as torchvision)."""
    channels = [
        x[:, i : i + 1] * (std / 0.5) + (mean - 0.5) / 0.5
        for i, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
    ]
    return torch.cat(channels, 1)


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm, ReLU."""

    def __init__(self, channels_in: int, channels_out: int, **conv_options: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, bias=False, **conv_options)  # type: ignore[arg-type]
        self.bn = nn.BatchNorm2d(channels_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(
        self,
        channels_in: int,
        ch1x1: int,
        ch3x3_reduce: int,
        ch3x3: int,
        ch5x5_reduce: int,
        ch5x5: int,
        pool_projection: int,
    ) -> None:
        super().__init__()
        self.channels_out = ch1x1 + ch3x3 + ch5x5 + pool_projection
        self.branch1 = BasicConv2d(channels_in, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(channels_in, ch3x3_reduce, kernel_size=1),
            BasicConv2d(ch3x3_reduce, ch3x3, kernel_size=3, padding=1),
        )
        # 3x3, not 5x5: torchvision's known quirk (pytorch/vision#906), which its weights were trained with.
        self.branch3 = nn.Sequential(
            BasicConv2d(channels_in, ch5x5_reduce, kernel_size=1),
            BasicConv2d(ch5x5_reduce, ch5x5, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(channels_in, pool_projection, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Training-time auxiliary classifier; kept only so that checkpoints load strictly."""

    def __init__(self, channels_in: int, num_classes: int) -> None:
        super().__init__()
        self.conv = BasicConv2d(channels_in, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(F.adaptive_avg_pool2d(x, (4, 4))), 1)
        x = F.dropout(F.relu(self.fc1(x), inplace=True), 0.7, training=self.training)
        return self.fc2(x)


# (name, torchvision attribute, Inception arguments after channels_in, cumulative stride, what it dreams)
_INCEPTION_BLOCKS = (
    ("inception_3a", "inception3a", (64, 96, 128, 16, 32, 32), 8, "simple textures and lines"),
    ("inception_3b", "inception3b", (128, 128, 192, 32, 96, 64), 8, "swirls and repeating patterns"),
    ("inception_4a", "inception4a", (192, 96, 208, 16, 48, 64), 16, "patterns and eyes"),
    ("inception_4b", "inception4b", (160, 112, 224, 24, 64, 64), 16, "eyes and simple object parts"),
    ("inception_4c", "inception4c", (128, 128, 256, 24, 64, 64), 16, "eyes and dog faces (the classic DeepDream)"),
    ("inception_4d", "inception4d", (112, 144, 288, 32, 64, 64), 16, "dog faces and animal parts"),
    ("inception_4e", "inception4e", (256, 160, 320, 32, 128, 128), 16, "animals and buildings"),
    ("inception_5a", "inception5a", (256, 160, 320, 32, 128, 128), 32, "whole objects"),
    ("inception_5b", "inception5b", (384, 192, 384, 48, 128, 128), 32, "whole objects, densely packed"),
)


class GoogLeNet(nn.Module):
    native_size = 224
    min_size = 15  # smaller inputs shrink to nothing in the ceil-mode pools

    def __init__(self, num_classes: int = 1000, transform_input: bool = True, aux_logits: bool = True) -> None:
        super().__init__()
        self.transform_input = transform_input
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        channels = 192
        for _, attribute, arguments, _, _ in _INCEPTION_BLOCKS:
            block = Inception(channels, *arguments)
            setattr(self, attribute, block)
            channels = block.channels_out
            if attribute == "inception3b":
                self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            elif attribute == "inception4e":
                self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes)
            self.aux2 = InceptionAux(528, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(transform_input(x) if self.transform_input else x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Written out like torchvision's, so tests can check that the stages add up to it.
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.stem(x)))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        for block in (self.inception4a, self.inception4b, self.inception4c, self.inception4d, self.inception4e):
            x = block(x)
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        return self.logits(x)

    def stages(self) -> list[Stage]:
        stages = [
            Stage(LayerInfo("conv1", 64, 2, "7x7: edges and colour blobs", ("conv2d0", "conv1/7x7_s2")), self.stem),
            Stage(LayerInfo("maxpool1", 64, 4, "edges and colour blobs", ("pool1", "pool1/3x3_s2")), self.maxpool1),
            Stage(LayerInfo("conv2", 64, 4, "1x1: edges", ("conv2d1", "conv2/3x3_reduce")), self.conv2),
            Stage(LayerInfo("conv3", 192, 4, "3x3: edges and simple textures", ("conv2d2", "conv2/3x3")), self.conv3),
            Stage(LayerInfo("maxpool2", 192, 8, "simple textures", ("pool2", "pool2/3x3_s2")), self.maxpool2),
        ]
        pools = {  # the pool that follows a block
            "inception_3b": Stage(LayerInfo("maxpool3", 480, 16, "swirls", ("pool3", "pool3/3x3_s2")), self.maxpool3),
            "inception_4e": Stage(LayerInfo("maxpool4", 832, 32, "animals", ("pool4", "pool4/3x3_s2")), self.maxpool4),
        }
        for name, attribute, _, stride, description in _INCEPTION_BLOCKS:
            block: Inception = getattr(self, attribute)
            short = name.removeprefix("inception_")
            aliases = (attribute, f"mixed{short}", f"{name}/output")  # torchvision, lucid and Caffe names
            stages.append(Stage(LayerInfo(name, block.channels_out, stride, description, aliases), block))
            if name in pools:
                stages.append(pools[name])
        classes = self.fc.out_features
        stages.append(Stage(LayerInfo("logits", classes, 32, "class scores", ("fc", "loss3/classifier")), self.logits))
        return stages
