"""dreamcore's public face: dream a photo from settings, in one call."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from PIL import Image

from dreamcore import objectives
from dreamcore.devices import default_tile_size
from dreamcore.errors import UnknownNameError
from dreamcore.gradients import TiledGradient
from dreamcore.images import LoadedImage, finish_image, from_pil, load_image, to_image, to_tensor
from dreamcore.networks import LayerCatalog, Network, load_network, networks_with_layer
from dreamcore.objectives import Objective
from dreamcore.render import Step, deep_dream
from dreamcore.settings import DreamSettings, get_preset, preset_objective

ImageSource = str | Path | bytes | BinaryIO | Image.Image | LoadedImage
ProgressFn = Callable[[Step], None]
StopFn = Callable[[], bool]


@dataclass(frozen=True)
class DreamResult:
    image: Image.Image
    settings: DreamSettings  # fully resolved: objective and seed filled in, so the result can be reproduced
    seconds: float
    kernels: str = ""  # which CPU path the dream took and why (dreamcore.kernel_choice), for people to read

    def metadata(self) -> dict:
        return {"dreamcore": 1, "settings": self.settings.to_dict(), "seconds": round(self.seconds, 3)}


def as_loaded(source: ImageSource, max_side: int | None = None) -> LoadedImage:
    if isinstance(source, LoadedImage):
        return source
    if isinstance(source, Image.Image):
        return from_pil(source, max_side=max_side)
    return load_image(source, max_side=max_side)


def resolve(settings: DreamSettings, network: Network, with_guide: bool = False) -> DreamSettings:
    """Fill in what the preset decides and pick a seed, so the settings describe the result exactly."""
    spec = settings.objective or preset_objective(get_preset(settings.preset), network.name, network.catalog.names())
    check_layers_exist(spec, network.catalog)
    seed = settings.seed if settings.seed is not None else random.randrange(2**31)
    guide_layer = ""
    if with_guide:
        # The guide is matched at one layer: the one asked for, else the objective's shallowest.
        layers = objectives.parse(spec, network.catalog).layers
        guide_layer = network.catalog.resolve(settings.guide_layer or min(layers, key=network.catalog.depth)).name
    tile_size = settings.tile_size or default_tile_size(network.device)
    return settings.replace(
        network=network.name, objective=spec, seed=seed, guide_layer=guide_layer, tile_size=tile_size
    )


def check_layers_exist(spec: str, catalog: LayerCatalog) -> None:
    """Parse ``spec`` for its errors; a layer of another network gets a hint naming that network."""
    try:
        objectives.parse(spec, catalog)
    except UnknownNameError as error:
        owners = [name for name in networks_with_layer(error.name) if name != catalog.network]
        if owners:
            raise UnknownNameError(
                error.kind,
                error.name,
                error.suggestions,
                f"{error.name} is a layer of {' and '.join(owners)}; choose that network to dream with it.",
            ) from None
        raise


def build_objective(settings: DreamSettings, network: Network, guide: ImageSource | None = None) -> Objective:
    """The settings' objective; with a guide image, dream toward its features at the guide layer instead."""
    objective = objectives.parse(settings.objective, network.catalog)
    if guide is None:
        return objective
    layer_name = settings.guide_layer
    guide_image = as_loaded(guide, max_side=512)
    with torch.no_grad():
        features = network.activations(to_tensor(guide_image.rgb).to(network.device), [layer_name])[layer_name]
    return objectives.guide(layer_name, features)


def preview_image(step: Step | torch.Tensor, max_side: int = 256) -> Image.Image:
    """A small picture of a render in progress (a step, or its image), for live progress displays."""
    image = (step.image if isinstance(step, Step) else step).detach().float()
    scale = min(1.0, max_side / max(image.shape[-2:]))
    if scale < 1.0:
        size = (max(1, round(image.shape[-2] * scale)), max(1, round(image.shape[-1] * scale)))
        image = torch.nn.functional.interpolate(image, size=size, mode="bilinear", antialias=True)
    return to_image(image)


def dream(
    image: ImageSource,
    settings: DreamSettings | None = None,
    *,
    guide: ImageSource | None = None,
    on_step: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> DreamResult:
    """Dream a photo. Raises DreamError subclasses with sentences a person can act on."""
    settings = settings or DreamSettings()
    started = time.perf_counter()
    loaded = as_loaded(image, settings.max_side)
    network = load_network(settings.network, settings.device)
    settings = resolve(settings, network, with_guide=guide is not None)
    objective = build_objective(settings, network, guide)
    gradient = TiledGradient(network, objective, tile_size=settings.tile_size, precision=settings.precision)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        dreamed = deep_dream(
            to_tensor(loaded.rgb).to(network.device),
            gradient,
            octaves=settings.octaves,
            octave_scale=settings.octave_scale,
            iterations=settings.iterations,
            step=settings.step,
            jitter=settings.jitter,
            max_loss=settings.max_loss,
            seed=settings.seed,
            on_step=on_step,
            should_stop=should_stop,
        )
    seconds = time.perf_counter() - started
    return DreamResult(finish_image(to_image(dreamed), loaded), settings, seconds, gradient.kernel_path.describe())
