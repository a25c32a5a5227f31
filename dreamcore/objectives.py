"""What to maximise: composable values computed from a network's activations.

An objective knows which layers it reads and turns their activations into one number. Objectives add
and scale like numbers (``layer("block8") + 0.5 * channel("block10", [3])``), and a short string
(``"inception_4c:12+0.5*inception_4d"``) parses into one, as in lucent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from dreamcore.errors import UsageError
from dreamcore.networks.base import LayerCatalog

Activations = Mapping[str, torch.Tensor]


class Objective:
    """A scalar to maximise, with the set of layers it needs."""

    def __init__(self, compute: Callable[[Activations], torch.Tensor], layers: Iterable[str], description: str):
        self.compute = compute
        self.layers = frozenset(layers)
        self.description = description

    def __call__(self, activations: Activations) -> torch.Tensor:
        return self.compute(activations)

    def __repr__(self) -> str:
        return f"Objective({self.description!r})"

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, (int, float)):
            return Objective(lambda acts: self(acts) + other, self.layers, f"{self.description} + {other}")
        return Objective(
            lambda acts: self(acts) + other(acts),
            self.layers | other.layers,
            f"{self.description} + {other.description}",
        )

    def __radd__(self, other: float) -> Objective:
        # sum() starts from 0
        return self if other == 0 else self + other

    def __mul__(self, factor: float) -> Objective:
        return Objective(lambda acts: factor * self(acts), self.layers, f"{factor:g}*{self.description}")

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return self * -1.0

    def __sub__(self, other: Objective) -> Objective:
        return self + (-other)


def layer(name: str) -> Objective:
    """Make the whole layer fire harder: the mean squared activation (the original DeepDream's L2)."""
    return Objective(lambda acts: acts[name].float().square().mean(), [name], name)


def channel(name: str, channels: Sequence[int]) -> Objective:
    """Make chosen channels (feature maps) of a layer fire harder: their mean activation."""
    chosen = list(channels)

    def compute(acts: Activations) -> torch.Tensor:
        return acts[name][:, chosen].float().mean()

    return Objective(compute, [name], f"{name}:{','.join(map(str, chosen))}")


def guide(name: str, guide_features: torch.Tensor) -> Objective:
    """Dream toward a guide image: each position of the layer moves toward the guide feature it matches best.

    ``guide_features`` is the layer's activation for the guide image, shape (1, C, H, W). This is the
    original notebook's ``objective_guide``: the gradient at each position is the guide feature vector
    with the largest dot product.
    """
    features = guide_features.detach().float().flatten(2)[0]  # (C, M)

    def compute(acts: Activations) -> torch.Tensor:
        x = acts[name].float().flatten(2)[0]  # (C, N)
        guide_on_device = features.to(x.device)
        best = guide_on_device[:, (x.detach().T @ guide_on_device).argmax(dim=1)]  # (C, N)
        return (x * best).sum() / x.numel()

    return Objective(compute, [name], f"guide@{name}")


def class_logit(index: int, name: str = "logits") -> Objective:
    """Raise one class's score (before softmax, so other classes are not pushed down instead)."""
    return Objective(lambda acts: acts[name][:, index].float().mean(), [name], f"class {index}")


_TERM = re.compile(
    r"^\s*(?:(?P<weight>[-+]?\d*\.?\d+(?:e[-+]?\d+)?)\s*\*\s*)?(?P<layer>[^:*\s]+)(?::(?P<channels>[\d,\s]+))?\s*$"
)


def parse(spec: str, catalog: LayerCatalog) -> Objective:
    """Parse ``"layer"``, ``"layer:3,7"`` and weighted sums such as ``"block8 + 0.5*block10:3"``.

    Layer names are checked against ``catalog``; an unknown one is an error naming the closest.
    """
    terms = [term for term in spec.split("+")]
    if not spec.strip() or any(not term.strip() for term in terms):
        raise UsageError(
            f"Could not read the objective {spec!r}. Write a layer name (e.g. {catalog.names()[len(catalog) // 2]}), "
            "optionally with channels (layer:3,7) and weights (0.5*layer + layer2)."
        )
    objectives = []
    for term in terms:
        match = _TERM.match(term)
        if match is None:
            raise UsageError(f"Could not read {term.strip()!r} in the objective; expected [weight*]layer[:channels].")
        info = catalog.resolve(match["layer"])
        weight = float(match["weight"]) if match["weight"] else 1.0
        if not math.isfinite(weight):
            raise UsageError(f"The weight in {term.strip()!r} is not a finite number.")
        if match["channels"]:
            channels = [int(c) for c in match["channels"].replace(" ", "").split(",") if c]
            bad = [c for c in channels if not 0 <= c < info.channels]
            if bad:
                raise UsageError(
                    f"Layer {info.name} has channels 0 to {info.channels - 1}; "
                    f"{', '.join(map(str, bad))} is out of range."
                )
            term_objective = channel(info.name, channels)
        else:
            term_objective = layer(info.name)
        objectives.append(term_objective if weight == 1.0 else weight * term_objective)
    return sum(objectives[1:], objectives[0])
