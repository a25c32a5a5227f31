"""A tiny random network in dreamcore's Network shape, for testing the algorithm in milliseconds."""

from __future__ import annotations

import torch
from torch import nn

from dreamcore.networks.base import LayerInfo, Network, Stage


class TinyNet(nn.Module):
    def __init__(self, kernel: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        padding = kernel // 2
        self.conv1 = nn.Conv2d(3, 8, kernel, padding=padding, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, kernel, stride=2, padding=padding, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)
        for bn in (self.bn1, self.bn2):  # non-trivial statistics, so folding them is a real rewrite
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)
        self.runs: list[str] = []

    def first(self, x: torch.Tensor) -> torch.Tensor:
        self.runs.append("first")
        return torch.relu(self.bn1(self.conv1(x)))

    def second(self, x: torch.Tensor) -> torch.Tensor:
        self.runs.append("second")
        return torch.relu(self.bn2(self.conv2(x)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.runs.append("logits")
        return self.fc(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.second(self.first(x)))

    def stages(self) -> list[Stage]:
        return [
            Stage(LayerInfo("first", 8, 1, "first layer", ("one",)), self.first),
            Stage(LayerInfo("second", 16, 2, "second layer"), self.second),
            Stage(LayerInfo("logits", 10, 2, "class scores"), self.logits),
        ]


def tiny_network(kernel: int = 3) -> Network:
    module = TinyNet(kernel).eval().requires_grad_(False)
    return Network(
        name="tiny",
        module=module,
        stages=module.stages(),
        labels=[f"class{i}" for i in range(10)],
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        native_size=32,
    )


def frozen_random(cls: type[nn.Module], *args: object) -> nn.Module:
    """A randomly initialised architecture in eval mode, frozen, with batch-norm statistics that matter
    (so eval mode and folding them are really tested)."""
    torch.manual_seed(0)
    module = cls(*args)
    for child in module.modules():
        if isinstance(child, nn.BatchNorm2d):
            child.running_mean.uniform_(-0.1, 0.1)
            child.running_var.uniform_(0.5, 2.0)
    return module.eval().requires_grad_(False)
