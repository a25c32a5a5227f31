"""A plain DeepDream gradient, as one would first write it: the fast path is measured against this.

fp32, the whole network's forward pass with a forward hook on the target layer, no tiling, no
layout or precision tricks, batch norms left as they are.
"""

from __future__ import annotations

import torch

from dreamcore.networks import Network
from dreamcore.objectives import Objective


def reference_gradient(network: Network, objective: Objective):
    captured: dict[str, torch.Tensor] = {}
    modules = {stage.info.name: stage.run for stage in network.stages}
    for name in objective.layers:
        canonical = network.catalog.resolve(name).name
        modules[canonical].register_forward_hook(
            lambda _module, _inputs, output, key=name: captured.__setitem__(key, output)
        )

    def gradient(image: torch.Tensor) -> tuple[float, torch.Tensor]:
        image = image.detach().clone().requires_grad_(True)
        network.module(network.preprocess(image))
        loss = objective(captured)
        (grad,) = torch.autograd.grad(loss, image)
        return float(loss.detach()), grad

    return gradient
