"""Objectives: the algebra, the string grammar and its errors, the guide objective."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_network

from dreamcore.errors import UnknownNameError, UsageError
from dreamcore.objectives import channel, class_logit, guide, layer, parse


@pytest.fixture
def acts() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "first": torch.randn(1, 8, 6, 6, generator=generator),
        "second": torch.randn(1, 16, 3, 3, generator=generator),
        "logits": torch.randn(1, 10, generator=generator),
    }


def test_objectives_add_and_scale_like_numbers(acts) -> None:
    a, b = layer("first"), channel("second", [1, 3])
    combined = a + 0.5 * b - layer("second")
    expected = a(acts) + 0.5 * b(acts) - layer("second")(acts)
    assert torch.allclose(combined(acts), expected)
    assert combined.layers == {"first", "second"}
    assert torch.allclose(sum([a, b])(acts), a(acts) + b(acts))


def test_layer_channel_and_class_values(acts) -> None:
    assert torch.allclose(layer("first")(acts), acts["first"].square().mean())
    assert torch.allclose(channel("second", [2])(acts), acts["second"][:, 2].mean())
    assert torch.allclose(class_logit(4)(acts), acts["logits"][:, 4].mean())


def test_parse_reads_layers_channels_and_weights(acts) -> None:
    catalog = tiny_network().catalog
    objective = parse("first + 0.25*second:1,3", catalog)
    assert objective.layers == {"first", "second"}
    expected = layer("first")(acts) + 0.25 * channel("second", [1, 3])(acts)
    assert torch.allclose(objective(acts), expected)
    assert parse("ONE", catalog).layers == {"first"}  # aliases and case are forgiven


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("", "Could not read"),
        ("first+", "Could not read"),
        ("first:99", "channels 0 to 7"),
        ("2*first:x", "expected [weight*]layer[:channels]"),
    ],
)
def test_parse_errors_are_sentences(spec: str, words: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(spec, tiny_network().catalog)
    assert words in str(caught.value)


def test_unknown_layer_lists_the_closest_names() -> None:
    with pytest.raises(UnknownNameError) as caught:
        parse("secnd", tiny_network().catalog)
    assert caught.value.suggestions[0] == "second"
    assert "dreamcore layers tiny" in str(caught.value)


def test_guide_pulls_each_position_toward_its_best_matching_guide_feature() -> None:
    guide_features = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)  # two guide vectors: e0, e1
    x = torch.tensor([[[[2.0, -1.0]], [[1.0, 3.0]]]], requires_grad=True)  # positions (2, 1) and (-1, 3)
    objective = guide("first", guide_features)
    (gradient,) = torch.autograd.grad(objective({"first": x}), x)
    # position 0 matches e0 best (2 > 1), position 1 matches e1 best (3 > -1); gradient = that vector / numel
    assert torch.allclose(gradient.flatten(2)[0], torch.tensor([[1.0, 0.0], [0.0, 1.0]]) / 4)
