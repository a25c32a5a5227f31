"""What every network looks like to the rest of dreamcore.

An architecture (an ``nn.Module`` with torchvision's parameter names) lists its forward pass as an
ordered sequence of named *stages*. That one list gives three things: the layer catalog people type
names from, a forward pass that stops at the deepest layer an objective needs, and a classifier
(the last stage is always ``logits``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from dreamcore.errors import UnknownNameError


def zero_padding(conv: nn.Conv2d, height: int, width: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom): the zeros ``conv`` puts around an input of this size, as F.pad takes them.

    Strided convolutions with a ``same_padding`` method pad like TensorFlow's "SAME", which depends on
    the input's size (EfficientNet-Lite); the others use their own symmetric ``padding``.
    """
    if conv.stride[0] > 1 and hasattr(conv, "same_padding"):
        return conv.same_padding(height, width)
    (top, left) = conv.padding
    return (left, left, top, top)


@dataclass(frozen=True)
class LayerInfo:
    """One layer a user can dream with."""

    name: str
    channels: int
    stride: int
    description: str = ""
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stage:
    """One step of an architecture's forward pass, whose output is the layer ``info.name``."""

    info: LayerInfo
    run: Callable[[torch.Tensor], torch.Tensor]


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace("/", "_").replace(".", "_")


class LayerCatalog:
    """The ordered layers of one network, looked up by name or alias, forgivingly."""

    def __init__(self, network: str, layers: Sequence[LayerInfo]) -> None:
        self.network = network
        self.layers = tuple(layers)
        self._by_key: dict[str, LayerInfo] = {}
        for layer in self.layers:
            for key in (layer.name, *layer.aliases):
                self._by_key[_normalise(key)] = layer
                self._by_key[_normalise(key).replace("_", "")] = layer
        self._order = {layer.name: i for i, layer in enumerate(self.layers)}

    def __iter__(self) -> Iterator[LayerInfo]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def find(self, name: str) -> LayerInfo | None:
        key = _normalise(name)
        return self._by_key.get(key) or self._by_key.get(key.replace("_", ""))

    def resolve(self, name: str) -> LayerInfo:
        """The layer called ``name`` (or one of its aliases); an error listing the closest names otherwise."""
        layer = self.find(name)
        if layer is not None:
            return layer
        candidates = self.names() + [a for layer in self.layers for a in layer.aliases]
        close = difflib.get_close_matches(_normalise(name), candidates, n=5, cutoff=0.5)
        hint = f"Run `dreamcore layers {self.network}` to see all {len(self.layers)} layers."
        raise UnknownNameError(f"layer of {self.network}", name, close, hint)

    def depth(self, name: str) -> int:
        """Position of a layer in the forward pass (0 is the first stage)."""
        return self._order[self.resolve(name).name]


@dataclass
class Network:
    """A frozen classifier, ready to dream with.

    ``preprocess`` maps RGB images in [0, 1] (N, 3, H, W) to what ``module`` expects.
    """

    name: str
    module: nn.Module
    stages: list[Stage]
    labels: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    description: str = ""

    def __post_init__(self) -> None:
        self.catalog = LayerCatalog(self.name, [stage.info for stage in self.stages])
        self._mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std).view(1, 3, 1, 1)

    def to(self, device: torch.device | str) -> Network:
        self.device = torch.device(device)
        self.module.to(self.device)
        self._mean = self._mean.to(self.device)
        self._std = self._std.to(self.device)
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self._mean.to(images.dtype)) / self._std.to(images.dtype)

    def activations(self, images: torch.Tensor, layers: Collection[str]) -> dict[str, torch.Tensor]:
        """Outputs of ``layers`` (keyed as asked) for images in [0, 1]; the forward pass stops at the deepest one."""
        canonical = {name: self.catalog.resolve(name).name for name in layers}
        wanted = set(canonical.values())
        found: dict[str, torch.Tensor] = {}
        x = self.preprocess(images)
        for stage in self.stages:
            x = stage.run(x)
            if stage.info.name in wanted:
                found[stage.info.name] = x
                if len(found) == len(wanted):
                    break
        return {name: found[canonical_name] for name, canonical_name in canonical.items()}

    @torch.no_grad()
    def classify(self, images: torch.Tensor, top: int = 5) -> list[list[tuple[str, float]]]:
        """Top ``top`` (label, probability) pairs for each image in [0, 1]."""
        logits = self.activations(images.to(self.device), ["logits"])["logits"].float()
        probabilities = logits.softmax(dim=1)
        values, indices = probabilities.topk(top, dim=1)
        return [
            [(self.labels[i], float(p)) for p, i in zip(row_values, row_indices.tolist(), strict=True)]
            for row_values, row_indices in zip(values, indices, strict=True)
        ]
