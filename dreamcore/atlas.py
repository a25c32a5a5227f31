"""A layer atlas: one photo dreamed at a row of layers, on one labelled sheet.

It answers "what does each layer do?" at a glance, which is how people choose a layer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from PIL import Image, ImageDraw, ImageFont

from dreamcore.api import DreamResult, ImageSource, StopFn, as_loaded, dream
from dreamcore.networks import Network, load_network
from dreamcore.render import Step
from dreamcore.settings import DreamSettings

LABEL_HEIGHT = 44
GAP = 6
# Cells are small, so each layer gets a stronger push than a full-size dream needs to show its character.
ATLAS_DEFAULTS = {"octaves": 3, "iterations": 10, "step": 0.012}


def default_atlas_layers(network: Network, count: int = 8) -> list[str]:
    """``count`` feature layers spread evenly from shallow to deep (skipping the first and the logits)."""
    features = [layer.name for layer in network.catalog if layer.name != "logits" and layer.channels > 3]
    if len(features) <= count:
        return features
    picks = [round(1 + i * (len(features) - 2) / (count - 1)) for i in range(count)]
    return [features[i] for i in dict.fromkeys(picks)]


def layer_atlas(
    image: ImageSource,
    settings: DreamSettings | None = None,
    *,
    layers: Sequence[str] | None = None,
    cell_side: int = 256,
    columns: int | None = None,
    on_step: Callable[[int, int, Step], None] | None = None,
    should_stop: StopFn | None = None,
) -> tuple[Image.Image, list[DreamResult]]:
    """Dream ``image`` at each layer and lay the results out on a sheet with the layer names under them.

    ``on_step(cell, cells, step)`` reports progress across the whole sheet.
    """
    settings = settings or DreamSettings.from_preset("default", **ATLAS_DEFAULTS)
    if settings.seed is None:  # one seed for every cell, so the sheet's settings describe all of it
        settings = settings.replace(seed=random.randrange(2**31))
    network = load_network(settings.network, settings.device)
    chosen = [network.catalog.resolve(name).name for name in (layers or default_atlas_layers(network))]
    loaded = as_loaded(image, max_side=cell_side)
    results = []
    for index, layer_name in enumerate(chosen):
        report = (lambda step, index=index: on_step(index, len(chosen), step)) if on_step else None
        results.append(dream(loaded, settings.replace(objective=layer_name), on_step=report, should_stop=should_stop))
    return compose_sheet(results, network, columns), results


def compose_sheet(results: Sequence[DreamResult], network: Network, columns: int | None = None) -> Image.Image:
    columns = columns or min(len(results), 4)
    rows = math.ceil(len(results) / columns)
    cell_w = max(result.image.width for result in results)
    cell_h = max(result.image.height for result in results)
    sheet = Image.new("RGB", (columns * (cell_w + GAP) + GAP, rows * (cell_h + LABEL_HEIGHT + GAP) + GAP), "white")
    draw = ImageDraw.Draw(sheet)
    title_font = ImageFont.load_default(size=16)
    note_font = ImageFont.load_default(size=12)
    for i, result in enumerate(results):
        x = GAP + (i % columns) * (cell_w + GAP)
        y = GAP + (i // columns) * (cell_h + LABEL_HEIGHT + GAP)
        sheet.paste(result.image.convert("RGB"), (x, y))
        info = network.catalog.resolve(result.settings.objective)
        draw.text((x + 2, y + cell_h + 4), info.name, fill="black", font=title_font)
        note = f"{info.channels} ch, 1/{info.stride}" + (f", {info.description}" if info.description else "")
        if draw.textlength(note, font=note_font) > cell_w - 4:
            while note and draw.textlength(note + "…", font=note_font) > cell_w - 4:
                note = note[:-1]
            note = note.rstrip(" ,") + "…"
        draw.text((x + 2, y + cell_h + 24), note, fill=(90, 90, 90), font=note_font)
    return sheet
