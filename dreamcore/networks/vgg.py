"""VGG16 with torchvision's parameter names (``features.N``, ``classifier.N``), so ``vgg16-397923af.pth`` loads.

Layers are named after the paper's convolutions; a convolution's layer is the ReLU after it, which
is what people mean by "conv5_2".
"""

from __future__ import annotations

import torch
from torch import nn

from dreamcore.networks.base import LayerInfo, Stage

# torchvision's configuration "D": channel counts, "M" for a 2x2 max pool.
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip

_DESCRIPTIONS = {
    1: "edges and colour",
    2: "fine textures",
    3: "textures and patterns",
    4: "patterns and object parts",
    5: "object parts and whole objects",
}


class VGG16(nn.Module):
    native_size = 224
    min_size = 32  # five 2x2 pools

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels_in = 3
        for item in VGG16_CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels_in, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels_in = int(item)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def fc6(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier[0:2](torch.flatten(self.avgpool(x), 1))

    def fc7(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier[2:5](x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier[5:7](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    def stages(self) -> list[Stage]:
        stages: list[Stage] = []
        block, conv, stride, start, channels = 1, 1, 1, 0, 3
        for index, module in enumerate(self.features):
            if isinstance(module, nn.Conv2d):
                channels = module.out_channels
                continue
            if isinstance(module, nn.ReLU):
                name = f"conv{block}_{conv}"
                aliases = (f"relu{block}_{conv}", f"block{block}_conv{conv}")  # Caffe and Keras names
                description = _DESCRIPTIONS[block]
                conv += 1
            else:  # a max pool ends the block
                stride *= 2
                name, aliases, description = f"pool{block}", (f"block{block}_pool",), _DESCRIPTIONS[block]
                block, conv = block + 1, 1
            layers = self.features[start : index + 1]
            stages.append(Stage(LayerInfo(name, channels, stride, description, aliases), layers))
            start = index + 1
        classes = self.classifier[6].out_features
        stages += [
            Stage(LayerInfo("fc6", 4096, stride, "whole-image features", ("fc1", "relu6")), self.fc6),
            Stage(LayerInfo("fc7", 4096, stride, "whole-image features", ("fc2", "relu7")), self.fc7),
            Stage(LayerInfo("logits", classes, stride, "class scores", ("fc8", "predictions")), self.logits),
        ]
        return stages
