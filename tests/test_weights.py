"""Weights from the network and from a user's files, all offline: a loopback server stands in for the internet."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
from pathlib import Path

import pytest
import torch

import dreamcore.networks as networks
from dreamcore.errors import DreamError, UsageError, WeightsError
from dreamcore.networks import (
    get_spec,
    import_weights,
    list_networks,
    load_network,
    network_status,
)
from dreamcore.networks.efficientnet_lite import EfficientNetLite
from dreamcore.networks.googlenet import GoogLeNet
from dreamcore.networks.inception_v3 import InceptionV3
from dreamcore.networks.vgg import VGG16
from dreamcore.networks.weights import DownloadedWeights, cache_dir


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A random ImageNet-shaped GoogLeNet (aux heads included, like torchvision's) and a 365-class one without."""
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    imagenet, places = folder / "googlenet-random.pth", folder / "googlenet_places365.pth"
    old_style = {key: value for key, value in GoogLeNet().state_dict().items() if "num_batches" not in key}
    torch.save(old_style, imagenet)  # like checkpoints saved before BatchNorm counted its batches
    torch.save(GoogLeNet(365, aux_logits=False).state_dict(), places)
    return {"imagenet": imagenet, "places": places}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("DREAMCORE_CACHE", str(folder))
    monkeypatch.delenv("DREAMCORE_OFFLINE", raising=False)
    monkeypatch.delenv("DREAMCORE_WEIGHTS_URL", raising=False)
    networks._cache.clear()  # networks built from another test's cache must not leak in
    yield folder
    networks._cache.clear()


class Server:
    """A loopback HTTP server: ``files`` maps a name to its body; ``truncate`` names those it cuts short."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(name)
                body = server.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                promised = len(body) + 1000 if name in server.truncate else len(body)
                self.send_header("Content-Length", str(promised))
                self.end_headers()
                self.wfile.write(body)  # then the connection closes (HTTP/1.0), short of what was promised

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/models/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch) -> Server:
    running = Server()
    monkeypatch.setenv("DREAMCORE_WEIGHTS_URL", running.base)
    yield running
    running.close()


def weights_files(cache: Path) -> list[str]:
    folder = cache / "weights"
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


# --- DownloadedWeights -------------------------------------------------------------------------------


def test_download_checks_caches_and_is_reused(server, checkpoints, cache):
    server.files["googlenet-test.pth"] = checkpoints["imagenet"].read_bytes()
    digest = sha256(checkpoints["imagenet"])
    weights = DownloadedWeights("googlenet-test.pth", "https://example.invalid/unused", digest[:8])
    assert not weights.is_available()

    path = weights.path(progress=False)

    assert path == cache / "weights" / "googlenet-test.pth" and sha256(path) == digest
    assert weights_files(cache) == ["googlenet-test.pth"]  # no temporary file left beside it
    GoogLeNet().load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert weights.is_available() and weights.path(progress=True) == path
    assert server.requests == ["googlenet-test.pth"]  # the second call used the cache


def test_download_without_mirror_uses_the_given_address(server, checkpoints, cache, monkeypatch):
    monkeypatch.delenv("DREAMCORE_WEIGHTS_URL")
    server.files["g.pth"] = checkpoints["imagenet"].read_bytes()
    weights = DownloadedWeights("g.pth", server.base + "g.pth", sha256(checkpoints["imagenet"])[:8])
    assert weights.path(progress=False).is_file()


def test_wrong_hash_leaves_nothing(server, checkpoints, cache):
    server.files["googlenet-test.pth"] = checkpoints["imagenet"].read_bytes()
    weights = DownloadedWeights("googlenet-test.pth", "https://example.invalid/", "00000000")
    with pytest.raises(WeightsError, match="corrupt") as error:
        weights.path(progress=False)
    assert str(cache / "weights" / "googlenet-test.pth") in str(error.value)
    assert weights_files(cache) == []


def test_truncated_download_leaves_nothing(server, cache):
    server.files["cut.pth"] = b"x" * 5000
    server.truncate.add("cut.pth")
    weights = DownloadedWeights("cut.pth", "https://example.invalid/", hashlib.sha256(b"x" * 5000).hexdigest()[:8])
    with pytest.raises(WeightsError, match="5000 of 6000 bytes"):
        weights.path(progress=False)
    assert weights_files(cache) == []


def test_http_error_is_explained(server, cache):
    with pytest.raises(WeightsError, match="HTTP 404") as error:
        DownloadedWeights("missing.pth", "https://example.invalid/", "12345678").path(progress=False)
    assert "dreamcore models import FILE" in str(error.value)
    assert weights_files(cache) == []


def test_server_down_says_where_to_put_the_file(cache, monkeypatch):
    with socket.socket() as probe:  # a port that was free a moment ago and has nobody listening now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("DREAMCORE_WEIGHTS_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(WeightsError) as error:
        DownloadedWeights("googlenet-1378be20.pth", "https://example.invalid/", "1378be20").path(progress=False)
    message = str(error.value)
    assert str(cache / "weights" / "googlenet-1378be20.pth") in message
    assert "dreamcore models import" in message and f"127.0.0.1:{port}/googlenet-1378be20.pth" in message
    assert weights_files(cache) == []


def test_offline_never_touches_the_network(server, cache, monkeypatch):
    monkeypatch.setenv("DREAMCORE_OFFLINE", "1")
    server.files["googlenet-test.pth"] = b"anything"
    with pytest.raises(WeightsError, match="DREAMCORE_OFFLINE") as error:
        DownloadedWeights("googlenet-test.pth", "https://example.invalid/", "12345678").path(progress=False)
    assert str(cache / "weights" / "googlenet-test.pth") in str(error.value)
    assert "dreamcore models import" in str(error.value)
    assert server.requests == []


# --- import_weights ----------------------------------------------------------------------------------


def test_import_as_builtin_then_load_offline(checkpoints, cache, monkeypatch):
    spec = import_weights(checkpoints["imagenet"], as_network="googlenet")
    assert spec.name == "googlenet"
    assert sha256(cache / "weights" / "googlenet-1378be20.pth") == sha256(checkpoints["imagenet"])

    monkeypatch.setenv("DREAMCORE_OFFLINE", "1")  # proves the load below needs no network
    network = load_network("inception_v1", device="cpu")
    assert network.name == "googlenet" and len(network.labels) == 1000
    assert len(network.classify(torch.rand(1, 3, 64, 64), top=3)[0]) == 3
    status = {spec.name: available for spec, available in network_status()}
    assert status["googlenet"] is True and status["vgg16"] is False and status["lite0"] is True


def test_builtin_import_takes_no_labels(checkpoints, tmp_path):
    with pytest.raises(UsageError, match="ImageNet labels"):
        import_weights(checkpoints["imagenet"], as_network="googlenet", labels=places_labels(tmp_path, 1000))


def test_official_checkpoint_is_recognised_by_its_hash(checkpoints, cache, monkeypatch):
    monkeypatch.setattr(networks, "file_sha256", lambda path: "1378be20" + "0" * 56)
    assert import_weights(checkpoints["imagenet"]).name == "googlenet"
    assert (cache / "weights" / "googlenet-1378be20.pth").is_file()


def test_builtin_import_rejects_a_different_network(checkpoints, cache):
    with pytest.raises(WeightsError, match="--name") as error:
        import_weights(checkpoints["places"], as_network="googlenet")
    assert "googlenet" in str(error.value)
    assert weights_files(cache) == []


def places_labels(folder: Path, count: int) -> Path:
    path = folder / "categories_places365.txt"
    path.write_text("".join(f"/a/place_{i:03d}/indoor {i}\n" for i in range(count)), "utf-8")
    return path


def test_import_own_network_with_labels(checkpoints, cache, tmp_path):
    labels = places_labels(tmp_path, 365)
    spec = import_weights(checkpoints["places"], name="places", labels=labels)
    assert spec.name == "places" and spec.num_classes == 365

    folder = cache / "networks" / "places"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["arch"] == "googlenet" and manifest["num_classes"] == 365
    assert manifest["source"] == "googlenet_places365.pth" and manifest["aux_logits"] is False
    assert (folder / "weights.pth").is_file() and (folder / "labels.txt").is_file()
    assert "places" in [spec.name for spec in list_networks()]

    network = load_network("places", device="cpu")
    assert len(network.labels) == 365 and network.labels[0] == "place 000 indoor"
    assert network.catalog.resolve("logits").channels == 365
    assert network.classify(torch.rand(1, 3, 64, 64), top=1)[0][0][0].startswith("place")


def test_default_name_comes_from_the_file(checkpoints, tmp_path):
    spec = import_weights(checkpoints["places"], labels=places_labels(tmp_path, 365))
    assert spec.name == "googlenet_places365" and get_spec("googlenet_places365").num_classes == 365


def test_labels_must_match_the_classes(checkpoints, cache, tmp_path):
    with pytest.raises(UsageError, match=r"364 labels but googlenet_places365\.pth classifies 365"):
        import_weights(checkpoints["places"], name="places", labels=places_labels(tmp_path, 364))
    with pytest.raises(UsageError, match="--labels"):
        import_weights(checkpoints["places"], name="places")
    assert not (cache / "networks" / "places").exists()


@pytest.mark.parametrize("bad", ["Places", "my net", "-x", "googlenet", "inceptionv3"])
def test_names_must_be_safe_and_new(checkpoints, tmp_path, bad):
    with pytest.raises(UsageError, match="--name"):
        import_weights(checkpoints["places"], name=bad, labels=places_labels(tmp_path, 365))


def test_unusable_files_are_explained(tmp_path):
    with pytest.raises(WeightsError, match="There is no file"):
        import_weights(tmp_path / "nothing.pth")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
        import_weights(text)
    training_state = tmp_path / "epoch.pth"
    torch.save({"epoch": 3, "lr": 0.1}, training_state)
    with pytest.raises(WeightsError, match="does not hold a network's weights"):
        import_weights(training_state)
    resnet = tmp_path / "resnet.pth"
    torch.save({"layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3), "fc.weight": torch.zeros(1000, 2048)}, resnet)
    with pytest.raises(WeightsError, match="not a network dreamcore knows"):
        import_weights(resnet, name="resnet")


def meta_state(module_type, *args, **kwargs) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return module_type(*args, **kwargs).state_dict()


@pytest.mark.parametrize(
    ("state", "arch", "classes", "aux"),
    [
        (lambda: meta_state(GoogLeNet), "googlenet", 1000, True),
        (lambda: meta_state(GoogLeNet, 365, aux_logits=False), "googlenet", 365, False),
        (lambda: meta_state(VGG16, 10), "vgg16", 10, False),
        (lambda: meta_state(InceptionV3, 1000, aux_logits=False), "inception_v3", 1000, False),
        (lambda: meta_state(InceptionV3, 5), "inception_v3", 5, True),
        (lambda: meta_state(EfficientNetLite, "lite1", 20), "lite1", 20, False),
        (lambda: meta_state(EfficientNetLite, "lite2"), "lite2", 1000, False),
    ],
    ids=["googlenet", "googlenet-365", "vgg16", "inception_v3", "inception_v3-aux", "lite1", "lite2"],
)
def test_architecture_is_recognised_from_parameter_names(state, arch, classes, aux):
    state = state()
    state = {key: value for key, value in state.items() if not key.endswith("num_batches_tracked")}  # old files
    architecture, found_classes, found_aux = networks._detect(state, Path("x.pth"), None)
    assert (architecture.name, found_classes, found_aux) == (arch, classes, aux)


def test_vgg16_with_batch_norm_is_not_taken_for_vgg16():
    state = meta_state(VGG16)
    state["features.1.running_mean"] = torch.empty(64, device="meta")
    with pytest.raises(WeightsError, match="not a network dreamcore knows"):
        networks._detect(state, Path("vgg16_bn.pth"), None)


def test_broken_manifest_does_not_break_the_list(cache):
    folder = cache / "networks" / "broken"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{not json")
    with pytest.warns(UserWarning, match="broken"):
        names = [spec.name for spec in list_networks()]
    assert "broken" not in names and "lite0" in names


def test_packaged_lite_still_loads():
    network = load_network("lite0", device="cpu")
    assert not any(p.is_meta for p in network.module.parameters()) and len(network.labels) == 1000
    assert len(network.classify(torch.rand(1, 3, 64, 64), top=2)[0]) == 2


def test_errors_are_dream_errors():
    assert issubclass(WeightsError, DreamError) and issubclass(UsageError, DreamError)
    assert cache_dir().name == "cache"
