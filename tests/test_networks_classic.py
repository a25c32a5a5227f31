"""GoogLeNet, VGG16 and Inception v3: torchvision-compatible parameters, stages and layer names."""

from __future__ import annotations

import pytest
import torch
from tiny import frozen_random
from torch import nn

from dreamcore.networks import Network, get_spec, layer_catalog
from dreamcore.networks.base import LayerCatalog
from dreamcore.networks.googlenet import GoogLeNet
from dreamcore.networks.inception_v3 import InceptionV3
from dreamcore.networks.vgg import VGG16

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

# Written out from torchvision's definitions (googlenet.py, vgg.py, inception.py), not from our modules:
# key count of the full state_dict (auxiliary heads included) and a few keys with their shapes.
EXPECTED_KEYS = {
    GoogLeNet: (
        364,  # 57 BasicConv2d x 6 keys, 2 aux heads x 10, fc x 2
        {
            "conv1.conv.weight": (64, 3, 7, 7),
            "conv1.bn.running_var": (64,),
            "conv3.conv.weight": (192, 64, 3, 3),
            "inception3a.branch1.conv.weight": (64, 192, 1, 1),
            "inception4c.branch2.1.conv.weight": (256, 128, 3, 3),
            "inception4e.branch3.1.conv.weight": (128, 32, 3, 3),  # the 3x3 "5x5" quirk
            "inception5b.branch4.1.bn.weight": (128,),
            "aux1.conv.conv.weight": (128, 512, 1, 1),
            "aux2.conv.conv.weight": (128, 528, 1, 1),
            "aux1.fc1.weight": (1024, 2048),
            "aux2.fc2.weight": (1000, 1024),
            "fc.weight": (1000, 1024),
            "fc.bias": (1000,),
        },
    ),
    VGG16: (
        32,  # 13 convolutions and 3 linear layers, weight and bias each
        {
            "features.0.weight": (64, 3, 3, 3),
            "features.2.weight": (64, 64, 3, 3),
            "features.5.weight": (128, 64, 3, 3),
            "features.28.weight": (512, 512, 3, 3),
            "features.28.bias": (512,),
            "classifier.0.weight": (4096, 25088),
            "classifier.3.weight": (4096, 4096),
            "classifier.6.weight": (1000, 4096),
        },
    ),
    InceptionV3: (
        580,  # 96 BasicConv2d x 6 keys, AuxLogits.fc and fc x 2
        {
            "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
            "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
            "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
            "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
            "Mixed_6e.branch7x7_2.conv.weight": (192, 192, 1, 7),
            "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
            "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
            "AuxLogits.conv0.conv.weight": (128, 768, 1, 1),
            "AuxLogits.conv1.conv.weight": (768, 128, 5, 5),
            "AuxLogits.fc.weight": (1000, 768),
            "fc.weight": (1000, 2048),
        },
    ),
}

ARCHITECTURES = [GoogLeNet, VGG16, InceptionV3]


def on_meta(cls: type[nn.Module], *args: object, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return cls(*args, **kwargs)


@pytest.fixture(scope="module")
def real() -> dict[type[nn.Module], nn.Module]:
    """One randomly initialised module of each architecture, in eval mode with BN statistics that matter."""
    return {cls: frozen_random(cls) for cls in ARCHITECTURES}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMCORE_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("cls", ARCHITECTURES, ids=lambda c: c.__name__)
def test_state_dict_matches_torchvision(cls):
    count, samples = EXPECTED_KEYS[cls]
    state = on_meta(cls).state_dict()
    assert len(state) == count
    for key, shape in samples.items():
        assert tuple(state[key].shape) == shape, key


def test_auxiliary_heads_are_optional_and_classes_configurable():
    googlenet = on_meta(GoogLeNet, 365, aux_logits=False).state_dict()
    assert len(googlenet) == 364 - 20 and not any(key.startswith("aux") for key in googlenet)
    assert tuple(googlenet["fc.weight"].shape) == (365, 1024)
    assert tuple(on_meta(GoogLeNet, 365).state_dict()["aux2.fc2.weight"].shape) == (365, 1024)
    inception = on_meta(InceptionV3, 10, aux_logits=False).state_dict()
    assert len(inception) == 580 - 14 and tuple(inception["fc.weight"].shape) == (10, 2048)
    assert tuple(on_meta(VGG16, 365).state_dict()["classifier.6.weight"].shape) == (365, 4096)
    for cls in ARCHITECTURES:
        assert on_meta(cls, 7).stages()[-1].info.channels == 7


@pytest.mark.parametrize(
    ("cls", "size"),
    [(GoogLeNet, (64, 77)), (VGG16, (48, 40)), (InceptionV3, (80, 96))],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_stages_add_up_to_forward(real, cls, size):
    module = real[cls]
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = module(x)
        y = x
        for stage in module.stages():
            y = stage.run(y)
            assert y.shape[1] == stage.info.channels, stage.info.name
    assert y.shape == (2, 1000)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)


@pytest.mark.parametrize("cls", ARCHITECTURES, ids=lambda c: c.__name__)
def test_smallest_supported_input(real, cls):
    with torch.no_grad():
        assert real[cls](torch.rand(1, 3, cls.min_size, cls.min_size + 5)).shape == (1, 1000)


def test_transform_input_is_torchvisions(real):
    """ImageNet-normalised input is re-scaled to [-1, 1], which the ported TensorFlow weights expect."""
    module = real[GoogLeNet]
    plain = GoogLeNet(transform_input=False).eval()
    plain.load_state_dict(module.state_dict())
    images = torch.rand(1, 3, 40, 40)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(module((images - mean) / std), plain(images * 2 - 1), rtol=1e-4, atol=1e-4)


def make_network(module: nn.Module, name: str) -> Network:
    return Network(name, module, module.stages(), [str(i) for i in range(1000)], MEAN, STD, 224)


def test_activations_stop_at_the_deepest_layer_asked_for(real):
    network = make_network(real[GoogLeNet], "googlenet")
    calls = []
    hook = real[GoogLeNet].inception4d.register_forward_hook(lambda *_: calls.append(1))
    try:
        found = network.activations(torch.rand(1, 3, 64, 64), ["mixed4c", "inception_3b/output"])
    finally:
        hook.remove()
    assert sorted(tuple(value.shape) for value in found.values()) == [(1, 480, 8, 8), (1, 512, 4, 4)]
    assert calls == []


@pytest.mark.parametrize(
    ("cls", "layer", "size"),
    [(GoogLeNet, "inception_4c", 48), (VGG16, "conv4_2", 40), (InceptionV3, "mixed6", 80)],
    ids=["googlenet", "vgg16", "inception_v3"],
)
def test_gradients_reach_the_image(real, cls, layer, size):
    """DeepDream ascends the gradient with respect to the image, through the in-place ReLUs."""
    network = make_network(real[cls], cls.__name__)
    image = torch.rand(1, 3, size, size + 8, requires_grad=True)
    (activation,) = network.activations(image, [layer]).values()
    activation.square().mean().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", ARCHITECTURES, ids=lambda c: c.__name__)
def test_every_name_and_alias_finds_its_own_layer(cls):
    catalog = LayerCatalog(cls.__name__, [stage.info for stage in on_meta(cls).stages()])
    assert catalog.names()[-1] == "logits"
    assert len(set(catalog.names())) == len(catalog)
    for layer in catalog:
        for key in (layer.name, *layer.aliases):
            assert catalog.resolve(key).name == layer.name, key


@pytest.mark.parametrize(
    ("network", "typed", "layer"),
    [
        ("googlenet", "inception4c", "inception_4c"),
        ("googlenet", "mixed4c", "inception_4c"),
        ("googlenet", "inception_4c/output", "inception_4c"),
        ("googlenet", "Inception-4C", "inception_4c"),
        ("googlenet", "pool3", "maxpool3"),
        ("googlenet", "conv2/3x3", "conv3"),
        ("vgg16", "conv5_2", "conv5_2"),
        ("vgg16", "relu4_1", "conv4_1"),
        ("vgg16", "block3_pool", "pool3"),
        ("vgg16", "fc6", "fc6"),
        ("inception_v3", "mixed0", "mixed_5b"),
        ("inception_v3", "mixed4", "mixed_6b"),
        ("inception_v3", "mixed10", "mixed_7c"),
        ("inception_v3", "Mixed_6e", "mixed_6e"),
        ("inception_v3", "Conv2d_4a_3x3", "conv2d_4a"),
    ],
)
def test_names_people_type(network, typed, layer):
    assert layer_catalog(network).resolve(typed).name == layer


def test_layer_order_and_strides():
    googlenet = layer_catalog("inception_v1")
    assert googlenet.names()[:5] == ["conv1", "maxpool1", "conv2", "conv3", "maxpool2"]
    assert googlenet.depth("inception_4c") < googlenet.depth("inception_4d") < googlenet.depth("logits")
    assert googlenet.resolve("inception_4c").stride == 16 and googlenet.resolve("inception_4c").channels == 512
    vgg = layer_catalog("vgg16")
    assert len(vgg) == 13 + 5 + 3 and vgg.resolve("conv5_3").stride == 16 and vgg.resolve("pool5").stride == 32
    inception = layer_catalog("inceptionv3")
    assert [info.name for info in inception][7:10] == ["mixed_5b", "mixed_5c", "mixed_5d"]
    assert inception.resolve("mixed_7c").channels == 2048 and inception.resolve("mixed_7c").stride == 32


def test_registry_keeps_the_lite_networks():
    for name in ("lite0", "lite1", "lite2", "googlenet", "vgg16", "inception_v3"):
        assert get_spec(name).name == name
    assert get_spec("efficientnet-lite0").name == "lite0"
    assert get_spec("InceptionV3").native_size == 299
