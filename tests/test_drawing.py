"""Pictures from nothing: the Fourier picture, the robustness transforms, the drawing loop (on tiny
networks, fast) and every drawing mode with the real packaged lite0 weights on small canvases.

Every region step of lite0 costs one 224-pixel forward and backward pass whatever the canvas size, so
the lite0 tests draw few steps, share one network (load_network's cache) and one banana picture, and
check what the picture is with the network itself: which class a crop of it scores for.
"""

from __future__ import annotations

import io
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from tiny import tiny_network
from torch import nn

from dreamcore import drawing
from dreamcore.classes import ALPHABET, AmbiguousClassError, find_class
from dreamcore.drawing import (
    DrawSettings,
    PictureResult,
    Region,
    draw_path,
    draw_picture,
    fill_mask,
    letters,
    mix,
    octave_sizes,
    split_steps,
    visualize,
)
from dreamcore.errors import Cancelled, ImageError, UnknownNameError, UsageError
from dreamcore.images import load_image, to_tensor
from dreamcore.networks import load_network
from dreamcore.networks.base import LayerInfo, Network, Stage
from dreamcore.parameterization import FourierImage
from dreamcore.shapes import parse_points, path_points, text_mask
from dreamcore.transforms import RobustnessTransforms

DATA = Path(__file__).parent / "data"
# fp32 on the CPU with a fixed seed repeats exactly; one octave and one view keep a step to one pass.
SMALL = DrawSettings(width=128, height=128, steps=24, octaves=1, views=1, precision="fp32", device="cpu", seed=5)
ONE_PIXEL = 1 / 255 + 1e-6  # what 8-bit quantisation may move a value by


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on two cores shared with other work, two threads wait on each other (50x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lite0():
    return load_network("lite0", "cpu")


def logits_of(network, image: Image.Image) -> torch.Tensor:
    """The network's class scores for a picture (or a crop of one), seen whole at its native size."""
    side = network.native_size
    with torch.no_grad():
        return network.activations(to_tensor(image.resize((side, side), Image.Resampling.BILINEAR)), ["logits"])[
            "logits"
        ][0].float()


def index_of(name: str) -> int:
    return find_class(name).index


@pytest.fixture(scope="module")
def banana(lite0) -> PictureResult:
    return visualize("banana", SMALL)


# ------------------------------------------------------------------------------------- the Fourier picture


@pytest.mark.parametrize(("height", "width"), [(64, 64), (33, 47), (48, 80)])
def test_fourier_image_is_a_picture_in_range_that_starts_near_grey(height: int, width: int) -> None:
    picture = FourierImage(height, width, generator=torch.Generator().manual_seed(0))
    image = picture().detach()
    assert image.shape == (1, 3, height, width)
    assert float(image.min()) > 0.0 and float(image.max()) < 1.0
    assert float((image - 0.5).abs().max()) < 0.05  # faint noise on mid-grey
    assert float(image.std()) > 0  # but noise, not a flat grey
    # a big spectrum still gives a picture in range (the sigmoid), not values past 0 or 1
    with torch.no_grad():
        picture.spectrum.mul_(1000)
    loud = picture().detach()
    assert float(loud.min()) >= 0.0 and float(loud.max()) <= 1.0 and float(loud.std()) > 0.1


def test_fourier_image_noise_repeats_with_the_generator_seed() -> None:
    first = FourierImage(32, 40, generator=torch.Generator().manual_seed(3))()
    again = FourierImage(32, 40, generator=torch.Generator().manual_seed(3))()
    other = FourierImage(32, 40, generator=torch.Generator().manual_seed(4))()
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def smooth_image(height: int, width: int) -> torch.Tensor:
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    red = 0.2 + 0.6 * x.expand(height, width)
    green = 0.5 + 0.3 * torch.sin(2 * torch.pi * y) * torch.cos(torch.pi * x)
    blue = 0.8 - 0.5 * (x * y)
    return torch.stack([red, green, blue])[None]


@pytest.mark.parametrize(("height", "width"), [(64, 64), (48, 80), (37, 29)])
def test_set_image_round_trips_a_smooth_picture(height: int, width: int) -> None:
    target = smooth_image(height, width)
    picture = FourierImage(height, width, generator=torch.Generator().manual_seed(0))
    picture.set_image(target)
    with torch.no_grad():
        assert float((picture() - target).abs().mean()) < 0.02
        assert float((picture() - target).abs().max()) < 0.05


def test_set_image_resizes_a_picture_of_another_size() -> None:
    picture = FourierImage(40, 60)
    picture.set_image(smooth_image(80, 120))  # a smaller octave's result is fed the other way round
    with torch.no_grad():
        assert picture().shape == (1, 3, 40, 60)
        assert float((picture() - smooth_image(40, 60)).abs().mean()) < 0.02


def test_gradients_reach_the_spectrum_and_a_step_changes_the_picture() -> None:
    picture = FourierImage(32, 32, generator=torch.Generator().manual_seed(0))
    assert [name for name, _ in picture.named_parameters()] == ["spectrum"]
    before = picture().detach()
    picture()[:, 0].mean().backward()  # make it redder
    grad = picture.spectrum.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    optimiser = torch.optim.Adam(picture.parameters(), lr=0.05)
    for _ in range(5):
        optimiser.zero_grad()
        (-picture()[:, 0].mean()).backward()
        optimiser.step()
    after = picture().detach()
    assert float(after[:, 0].mean()) > float(before[:, 0].mean()) + 0.001  # redder
    assert float(after[:, 0].mean() - after[:, 2].mean()) > float(before[:, 0].mean() - before[:, 2].mean())


# ------------------------------------------------------------------------------------------ the transforms


def test_transforms_honour_the_output_size() -> None:
    images = torch.rand(3, 3, 40, 60, generator=torch.Generator().manual_seed(0))
    views = RobustnessTransforms()(images, random.Random(0), out_size=(32, 48))
    assert views.shape == (3, 3, 32, 48)
    assert RobustnessTransforms()(images, random.Random(0)).shape == images.shape


def test_transforms_without_jitter_zoom_or_turn_are_the_identity() -> None:
    images = torch.rand(2, 3, 24, 36, generator=torch.Generator().manual_seed(1))
    still = RobustnessTransforms(jitter=0, scale=(1.0, 1.0), rotate=0.0)
    assert torch.allclose(still(images, random.Random(5)), images, atol=1e-5)


def test_the_same_rng_seed_gives_the_same_views_and_another_seed_other_views() -> None:
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    transforms = RobustnessTransforms(jitter=6, scale=(0.8, 1.2), rotate=20)
    first = transforms(images, random.Random(11))
    assert torch.equal(first, transforms(images, random.Random(11)))
    assert not torch.allclose(first, transforms(images, random.Random(12)))
    # every view in a batch is drawn anew: identical inputs give different looks
    same = transforms(images[:1].expand(4, -1, -1, -1), random.Random(11))
    assert not torch.allclose(same[0], same[1])


def test_zooming_out_shows_the_grey_pad_value_at_the_edges() -> None:
    black = torch.zeros(1, 3, 32, 32)
    views = RobustnessTransforms(jitter=0, scale=(0.5, 0.5), rotate=0, pad_value=0.5)(black, random.Random(0))
    assert torch.allclose(views[..., :4, :4], torch.full((1, 3, 4, 4), 0.5), atol=1e-6)  # outside: pad grey
    assert float(views[..., 14:18, 14:18].abs().max()) < 1e-6  # the middle: the picture itself


# ------------------------------------------------------------------------------------- octave arithmetic


def test_octave_sizes_halve_from_the_smallest_to_the_full_size() -> None:
    assert octave_sizes(512, 512, 2) == [(256, 256), (512, 512)]
    assert octave_sizes(512, 512, 1) == [(512, 512)]
    assert octave_sizes(512, 256, 3) == [(64, 128), (128, 256), (256, 512)]  # (height, width)
    assert octave_sizes(300, 200, 4) == [(100, 150), (200, 300)]  # 50 and 25 px octaves are skipped


@pytest.mark.parametrize(("width", "height", "octaves"), [(40, 40, 3), (100, 80, 4), (129, 300, 4), (4096, 64, 4)])
def test_octaves_never_go_below_64_pixels_except_the_last(width: int, height: int, octaves: int) -> None:
    sizes = octave_sizes(width, height, octaves)
    assert sizes[-1] == (height, width)
    assert 1 <= len(sizes) <= octaves
    assert all(min(size) >= 64 for size in sizes[:-1])
    assert sizes == sorted(sizes)


@pytest.mark.parametrize(("steps", "parts"), [(256, 2), (10, 3), (7, 4), (1, 1), (1, 2), (5000, 4)])
def test_split_steps_shares_every_step_and_the_first_octaves_get_the_remainder(steps: int, parts: int) -> None:
    shares = split_steps(steps, parts)
    assert len(shares) == parts and sum(shares) == steps
    assert max(shares) - min(shares) <= 1
    assert shares == sorted(shares, reverse=True)


def test_split_steps_examples() -> None:
    assert split_steps(10, 3) == [4, 3, 3]
    assert split_steps(256, 2) == [128, 128]


# ------------------------------------------------------------------------------ the loop, on the tiny network

TINY = DrawSettings(width=64, height=64, steps=12, octaves=1, views=2, jitter=2, rotate=5, precision="fp32", seed=3)
WHOLE = Region((0.0, 0.0, 1.0, 1.0), ((3, 1.0),))


def tiny_logits(network, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return network.activations(image, ["logits"])["logits"][0]


def sharp_network() -> Network:
    """A small conv net without batch norms, whose class scores respond to what a picture shows.

    (tests/tiny.py's random network scores class 3 almost the same for every picture: -0.12 for grey,
    and nothing the loop can draw raises it by more than a thousandth.)
    """
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 10, 1)).eval()
    module.requires_grad_(False)
    return Network(
        name="sharp",
        module=module,
        stages=[Stage(LayerInfo("logits", 10, 1, "class scores"), lambda x: module(x).mean(dim=(2, 3)))],
        labels=[f"class{i}" for i in range(10)],
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        native_size=32,
    )


def test_drawing_raises_the_chosen_class() -> None:
    network = sharp_network()
    settings = TINY.replace(steps=30, learning_rate=0.5)
    steps = []
    result = draw_picture(network, lambda step: [WHOLE], settings, on_step=steps.append)
    start = steps[0].image  # the faint noise, before the first update
    assert result.shape == (1, 3, 64, 64)
    assert float(result.min()) >= 0.0 and float(result.max()) <= 1.0
    before, after = tiny_logits(network, start), tiny_logits(network, result)
    # 0.27 is how far apart black, grey and white are for this class
    assert float(after[3]) > float(before[3]) + 0.04, (before, after)
    assert steps[-1].loss > steps[0].loss + 0.04  # the score the loop reports rose too
    # the same budget aimed the other way (a weight of -1) lowers it: the rise is the loop's doing
    away = Region((0.0, 0.0, 1.0, 1.0), ((3, -1.0),))
    lowered = tiny_logits(network, draw_picture(network, lambda step: [away], settings))
    assert float(lowered[3]) < float(before[3]) - 0.04, (before, lowered)


def test_a_mask_holds_the_pixels_outside_it_at_the_background_exactly() -> None:
    network = tiny_network()
    mask = torch.zeros(1, 1, 128, 128)
    mask[..., :64] = 1.0
    settings = TINY.replace(width=128, height=128, octaves=2, steps=6, background=0.25)
    result = draw_picture(network, lambda step: [WHOLE], settings, mask=mask)
    assert torch.equal(result[..., 64:], torch.full_like(result[..., 64:], 0.25))
    assert float((result[..., :64] - 0.25).abs().mean()) > 0.05  # the drawn half is a picture, not grey


def test_a_photo_start_is_where_the_picture_begins() -> None:
    network = tiny_network()
    start = smooth_image(64, 64)
    steps = []
    draw_picture(network, lambda step: [WHOLE], TINY.replace(steps=1), start=start, on_step=steps.append)
    assert float((steps[0].image - start).abs().mean()) < 0.02


def test_should_stop_cancels_between_steps() -> None:
    network = tiny_network()
    asked, steps = [], []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(Cancelled):
        draw_picture(network, lambda step: [WHOLE], TINY, on_step=steps.append, should_stop=should_stop)
    assert len(steps) == 2


def test_progress_comes_in_order_with_totals_that_match_the_steps() -> None:
    network = tiny_network()
    steps = []
    settings = TINY.replace(width=128, height=128, octaves=2, steps=7)
    draw_picture(network, lambda step: [WHOLE], settings, on_step=steps.append)
    assert [(step.octave, step.iteration) for step in steps] == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3)]
    assert all(step.octaves == 2 for step in steps)
    assert [step.iterations for step in steps] == [4] * 4 + [3] * 3
    assert len(steps) == settings.steps
    assert steps[-1].fraction == 1.0
    assert steps[0].image.shape == (1, 3, 64, 64) and steps[-1].image.shape == (1, 3, 128, 128)
    fractions = [step.fraction for step in steps]
    assert fractions == sorted(fractions)


def test_the_same_seed_draws_the_same_picture() -> None:
    network = tiny_network()
    first = draw_picture(network, lambda step: [WHOLE], TINY.replace(steps=4))
    again = draw_picture(network, lambda step: [WHOLE], TINY.replace(steps=4))
    other = draw_picture(network, lambda step: [WHOLE], TINY.replace(steps=4, seed=4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.fixture
def visits(monkeypatch):
    """Which region boxes the loop scores at each octave (keyed by the octave's width); scoring is free."""
    seen: dict[int, set] = defaultdict(set)

    def record(network, image, region, transforms, settings, rng):
        seen[image.shape[-1]].add(region.box)
        return image.mean() * 0.0

    monkeypatch.setattr(drawing, "region_score", record)
    return seen


def test_every_path_window_is_drawn_in_every_octave(lite0, visits) -> None:
    draw_path("jellyfish", "line", SMALL.replace(octaves=2, steps=8), count=4)
    assert sorted(visits) == [64, 128]
    assert len(visits[128]) == 4
    assert visits[64] == visits[128]


def test_every_letter_is_drawn_in_every_octave(lite0, visits) -> None:
    letters("ABCDEF", SMALL.replace(width=256, octaves=2, steps=8))
    assert sorted(visits) == [128, 256]
    assert len(visits[256]) == 6
    assert visits[128] == visits[256]


def test_with_one_octave_every_path_window_and_letter_gets_its_turn(lite0, visits) -> None:
    draw_path("jellyfish", "line", SMALL.replace(steps=8), count=4)
    assert len(visits[128]) == 4
    visits.clear()
    letters("ABCDEF", SMALL.replace(width=256, steps=4))
    assert len(visits[256]) == 6


# ---------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 5001}, "steps"),
        ({"width": 10}, "width"),
        ({"height": 5000}, "height"),
        ({"octaves": 9}, "octaves"),
        ({"views": 0}, "views"),
        ({"background": 2}, "background"),
        ({"background": -0.1}, "background"),
        ({"learning_rate": 0}, "learning rate"),
        ({"jitter": -1}, "jitter"),
        ({"steps": "10"}, "steps must be a whole number"),
        ({"seed": "abc"}, "seed"),
    ],
)
def test_draw_settings_refuse_bad_values_in_a_sentence(changes: dict, words: str) -> None:
    with pytest.raises(UsageError) as error:
        DrawSettings(**changes)
    message = str(error.value)
    assert words in message and message.endswith(".")


def test_draw_settings_round_trip_and_refuse_unknown_names() -> None:
    settings = DrawSettings(width=200, background=0.3, seed=9)
    assert DrawSettings.from_dict(settings.to_dict()) == settings
    assert settings.replace(steps=10).steps == 10 and settings.replace(steps=10).width == 200
    with pytest.raises(UsageError, match="colour"):
        DrawSettings.from_dict({"colour": 1})


# ----------------------------------------------------------------------------- visualize, with lite0


def test_visualize_draws_a_banana_lite0_sees(banana: PictureResult, lite0) -> None:
    assert isinstance(banana, PictureResult)
    assert banana.image.size == (128, 128) and banana.image.mode == "RGB"
    assert banana.mode == "visualize"
    assert banana.params["classes"] == ["banana"]
    meta = banana.metadata()
    assert meta["mode"] == "visualize" and meta["params"]["classes"] == ["banana"]
    assert meta["settings"]["seed"] == 5 and meta["settings"]["width"] == 128
    assert meta["settings"] == SMALL.to_dict()
    assert banana.seconds > 0

    scores = logits_of(lite0, banana.image)
    grey = logits_of(lite0, Image.new("RGB", (128, 128), (128, 128, 128)))
    target = index_of("banana")
    assert float(scores[target]) > float(grey[target]) + 8, (float(grey[target]), float(scores[target]))
    assert int(scores.argmax()) == target


def test_visualize_fills_in_a_seed_and_takes_class_numbers(lite0) -> None:
    result = visualize(954, SMALL.replace(seed=None, steps=1))  # 954 is banana
    assert result.params["classes"] == ["banana"]
    assert isinstance(result.settings.seed, int)
    assert result.metadata()["settings"]["seed"] == result.settings.seed


def test_unknown_and_ambiguous_classes_are_explained(lite0) -> None:
    with pytest.raises(UnknownNameError) as error:
        visualize("bananna", SMALL.replace(steps=1))
    assert "banana" in error.value.suggestions and "banana" in str(error.value)
    with pytest.raises(AmbiguousClassError):
        visualize("dog", SMALL.replace(steps=1))
    with pytest.raises(UnknownNameError):
        mix(["gorilla", "bananna"], "side", settings=SMALL.replace(steps=1))


def test_a_class_dreamed_into_a_photo_keeps_the_photo(banana: PictureResult, lite0) -> None:
    photo = load_image(DATA / "coffee.png", max_side=128)
    size = photo.rgb.size  # 128 x 85
    result = visualize("banana", SMALL.replace(steps=16, width=160, height=160), photo=photo)
    assert result.image.size == size
    assert result.params["photo"] is True
    assert (result.settings.width, result.settings.height) == size

    original = pixels(photo.rgb)
    kept = np.abs(pixels(result.image) - original).mean()
    from_noise = np.abs(pixels(banana.image.resize(size)) - original).mean()
    assert kept < 0.25 * from_noise, (kept, from_noise)

    target = index_of("banana")
    before, after = logits_of(lite0, photo.rgb)[target], logits_of(lite0, result.image)[target]
    assert float(after) > float(before) + 3, (float(before), float(after))


def test_a_larger_photo_is_scaled_down_to_the_settings_size(lite0) -> None:
    photo = Image.open(DATA / "coffee.png").convert("RGB").resize((240, 160))
    result = visualize("banana", SMALL.replace(steps=1, width=96, height=96), photo=photo)
    assert result.image.size == (96, 64)


# ---------------------------------------------------------------------------------------- mix, with lite0


def halves(image: Image.Image, layout: str) -> tuple[Image.Image, Image.Image]:
    width, height = image.size
    if layout == "side":
        return image.crop((0, 0, width // 2, height)), image.crop((width // 2, 0, width, height))
    return image.crop((0, 0, width, height // 2)), image.crop((0, height // 2, width, height))


@pytest.mark.parametrize(("layout", "width", "height"), [("side", 160, 96), ("above", 96, 160)])
def test_mix_puts_each_class_in_its_own_half(layout: str, width: int, height: int, lite0) -> None:
    settings = SMALL.replace(width=width, height=height, steps=24, seed=1)
    result = mix(["gorilla", "french horn"], layout, settings=settings)
    assert result.mode == "mix" and result.image.size == (width, height)
    assert result.params["classes"] == ["gorilla", "French horn"] and result.params["layout"] == layout
    first, second = (logits_of(lite0, half) for half in halves(result.image, layout))
    gorilla, horn = index_of("gorilla"), index_of("french horn")
    assert float(first[gorilla]) > float(second[gorilla]) + 8, (first[gorilla], second[gorilla])
    assert float(second[horn]) > float(first[horn]) + 2, (first[horn], second[horn])


def test_blend_takes_weights_and_counts_them(lite0) -> None:
    result = mix(["gorilla", "banana"], "blend", weights=[2.0, 0.5], settings=SMALL.replace(steps=1))
    assert result.params["weights"] == [2.0, 0.5] and result.params["layout"] == "blend"
    assert result.image.size == (128, 128)
    for weights in ([1.0], [1.0, 2.0, 3.0], [1.0, 0.0], [1.0, -1.0], [1.0, float("nan")]):
        with pytest.raises(UsageError, match="weights"):
            mix(["gorilla", "banana"], "blend", weights=weights, settings=SMALL.replace(steps=1))


def test_mix_refuses_bad_layouts_and_class_counts() -> None:
    with pytest.raises(UsageError, match="side, above, blend"):
        mix(["gorilla", "banana"], "diagonal", settings=SMALL)
    with pytest.raises(UsageError, match="at least one"):
        mix([], "side", settings=SMALL)
    with pytest.raises(UsageError, match="at most 6"):
        mix(["banana"] * 7, "side", settings=SMALL)


# --------------------------------------------------------------------------------------- paths, with lite0


def test_a_path_draws_along_its_line_and_leaves_the_rest_background(lite0) -> None:
    settings = SMALL.replace(width=192, height=96, steps=6, background=0.4)
    result = draw_path("jellyfish", "line", settings, count=4)
    assert result.mode == "path" and result.image.size == (192, 96)
    assert result.params["classes"] == ["jellyfish"] and result.params["shape"] == "line"
    assert len(result.params["points"]) == 4
    assert all(y == 48 for _, y in result.params["points"])
    image = pixels(result.image)
    # the line runs across the middle; a 0.3 brush (29 px) and the 4 px soft edge stay within rows 29..67
    assert np.abs(image[:26] - 0.4).max() <= ONE_PIXEL
    assert np.abs(image[70:] - 0.4).max() <= ONE_PIXEL
    assert np.abs(image[40:56, 30:162] - 0.4).mean() > 0.01  # faint start noise is ~0.001


@pytest.mark.parametrize("shape", ["line", "circle", "spiral", "wave"])
def test_path_shapes_give_points_inside_the_canvas(shape: str) -> None:
    points = path_points(shape, 12, 300, 200)
    assert len(points) == 12
    assert all(0 <= x <= 300 and 0 <= y <= 200 for x, y in points)
    assert len(set(points)) == 12  # evenly along the shape, no point twice


def test_path_shapes_have_their_shape() -> None:
    circle = path_points("circle", 8, 200, 200)
    radii = [((x - 100) ** 2 + (y - 100) ** 2) ** 0.5 for x, y in circle]
    assert max(radii) - min(radii) < 1e-6 and radii[0] > 20
    spiral = path_points("spiral", 8, 200, 200)
    radii = [((x - 100) ** 2 + (y - 100) ** 2) ** 0.5 for x, y in spiral]
    assert radii == sorted(radii)
    line = path_points("line", 5, 200, 100)
    assert [x for x, _ in line] == sorted(x for x, _ in line) and {y for _, y in line} == {50}
    assert path_points("circle", 1, 100, 100) == [(82.0, 50.0)]  # 0.32 of the canvas right of the centre


def test_points_are_read_in_fractions_or_pixels() -> None:
    assert parse_points("0.2,0.5 0.8,0.5", 200, 100) == [(40.0, 50.0), (160.0, 50.0)]
    assert parse_points("20,30; 150,90", 200, 100) == [(20.0, 30.0), (150.0, 90.0)]


def test_explicit_points_draw_a_path(lite0) -> None:
    result = draw_path("jellyfish", "0.2,0.5 0.8,0.5", SMALL.replace(width=160, height=96, steps=1))
    assert result.params["shape"] == "points"
    assert result.params["points"] == [[32.0, 48.0], [128.0, 48.0]]


def test_points_given_as_pairs_draw_a_path(lite0) -> None:
    result = draw_path("jellyfish", [(40.0, 48.0), (120, 48)], SMALL.replace(width=160, height=96, steps=1))
    assert result.params["shape"] == "points" and result.params["points"] == [[40.0, 48.0], [120, 48]]


@pytest.mark.parametrize("points", [[(1000.0, 1000.0)], []], ids=["outside", "empty"])
def test_points_given_as_pairs_are_checked(points: list, lite0) -> None:
    with pytest.raises(UsageError):
        draw_path("jellyfish", points, SMALL.replace(steps=1))


@pytest.mark.parametrize(
    ("shape", "kwargs", "words"),
    [
        ("a,b", {}, "Could not read the point"),
        ("0.2,0.5 1.5,300", {}, "outside"),
        ("-0.1,0.5", {}, "outside"),
        ("   ", {}, "No points"),
        ("zigzag", {}, "zigzag"),
        ("line", {"brush": 0.01}, "brush"),
        ("line", {"brush": 1.5}, "brush"),
        ("line", {"count": 0}, "count"),
        ("line", {"count": 201}, "count"),
    ],
)
def test_bad_paths_are_refused(shape: str, kwargs: dict, words: str, lite0) -> None:
    with pytest.raises(UsageError, match=words):
        draw_path("jellyfish", shape, SMALL.replace(steps=1), **kwargs)


def test_unknown_path_shapes_are_refused_by_name() -> None:
    with pytest.raises(UsageError, match="line, circle, spiral, wave"):
        path_points("zigzag", 5, 100, 100)
    with pytest.raises(UsageError):
        path_points("circle", 0, 100, 100)


# ------------------------------------------------------------------------------------- letters, with lite0


def test_alphabet_letters_use_the_alphabet_classes_and_keep_the_background(lite0) -> None:
    settings = SMALL.replace(width=160, height=96, steps=2, background=0.6)
    result = letters("AB", settings)
    assert result.mode == "letters" and result.image.size == (160, 96)
    assert result.params["classes"] == [ALPHABET["A"], ALPHABET["B"]] and result.params["alphabet"] is True
    mask, _ = text_mask("AB", 160, 96)
    outside = (mask[0, 0] == 0).numpy()
    assert outside.mean() > 0.5  # most of the canvas is not letter
    image = pixels(result.image)
    assert np.abs(image[outside] - 0.6).max() <= ONE_PIXEL
    inside = (mask[0, 0] > 0.99).numpy()
    assert np.abs(image[inside] - 0.6).max() > 2 * ONE_PIXEL  # the letters are drawn


def test_letters_with_one_class_use_it_for_every_letter(lite0) -> None:
    result = letters("hi", SMALL.replace(steps=1), target="goldfish")
    assert result.params["classes"] == ["goldfish", "goldfish"] and result.params["alphabet"] is False
    assert letters("a b", SMALL.replace(steps=1)).params["classes"] == [ALPHABET["A"], ALPHABET["B"]]


def test_letters_without_a_class_need_an_override(lite0) -> None:
    with pytest.raises(UsageError, match="letters"):
        letters("A1", SMALL.replace(steps=1))
    result = letters("A1", SMALL.replace(steps=1), overrides={"1": "banana"})
    assert result.params["classes"] == [ALPHABET["A"], "banana"]
    result = letters("A", SMALL.replace(steps=1), overrides={"a": "goldfish"})  # an override beats the alphabet
    assert result.params["classes"] == ["goldfish"]


@pytest.mark.parametrize(("text", "words"), [("", "empty"), ("   ", "empty"), ("A" * 41, "at most 40")])
def test_letters_refuse_empty_and_long_text(text: str, words: str, lite0) -> None:
    with pytest.raises(UsageError, match=words):
        letters(text, SMALL.replace(steps=1))


def test_forty_letters_are_still_fine_for_the_mask() -> None:
    mask, boxes = text_mask("A" * 40, 512, 128)
    assert mask.shape == (1, 1, 128, 512) and len(boxes) == 40
    assert [box[-1] for box in boxes] == ["A"] * 40


# ---------------------------------------------------------------------------------------- masks, with lite0


def disc_png(size: tuple[int, int], radius: float) -> bytes:
    canvas = Image.new("L", size, 0)
    cx, cy = size[0] / 2, size[1] / 2
    ImageDraw.Draw(canvas).ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()


def test_fill_mask_draws_inside_the_white_and_leaves_the_black(lite0, tmp_path: Path) -> None:
    path = tmp_path / "disc.png"
    path.write_bytes(disc_png((256, 256), 64))  # twice the canvas: same proportions, resized
    result = fill_mask("banana", path, SMALL.replace(steps=2, background=0.3))
    assert result.mode == "mask" and result.params["classes"] == ["banana"]
    assert result.image.size == (128, 128)
    image = pixels(result.image)
    y, x = np.mgrid[0:128, 0:128]
    distance = np.hypot(x + 0.5 - 64, y + 0.5 - 64)
    assert np.abs(image[distance > 36] - 0.3).max() <= ONE_PIXEL  # the disc has radius 32 on the canvas
    assert np.abs(image[distance < 28] - 0.3).max() > 2 * ONE_PIXEL


def test_fill_mask_refuses_bad_masks(lite0) -> None:
    with pytest.raises(UsageError, match="proportions"):
        fill_mask("banana", disc_png((200, 50), 20), SMALL.replace(steps=1))
    with pytest.raises(UsageError, match="all black"):
        fill_mask("banana", black_png(), SMALL.replace(steps=1))
    with pytest.raises(ImageError):
        fill_mask("banana", b"this is not a picture", SMALL.replace(steps=1))


def black_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 0).save(buffer, "PNG")
    return buffer.getvalue()
