"""Only networks this bot can use are offered (bot/networks.py): on the page, in the grammar, at submit time.

dreamcore's cache is a temporary folder per test ($DREAMCORE_CACHE), so googlenet's weights are absent unless a
test puts a (tiny, random) checkpoint there; the lite networks come from their installed packages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import torch
from aiohttp.test_utils import TestClient, TestServer
from test_web import dream_form, sample_bytes

from bot.adapters.web import create_web_app
from bot.cli import main
from bot.config import Config, QueueConfig, WorkerConfig
from bot.engine import DreamcoreEngine, NullEngine
from bot.networks import network_offers, usable_networks
from bot.options import OptionError, build_command, parse_command
from bot.requests import Destination, DreamRequest, Requester
from bot.service import DreamService
from dreamcore.networks import get_spec
from dreamcore.networks.weights import weights_dir

LITE = ["lite0", "lite1", "lite2"]


@pytest.fixture(autouse=True)
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DREAMCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DREAMCORE_OFFLINE", raising=False)
    monkeypatch.delenv("DREAMCORE_WEIGHTS_URL", raising=False)
    return tmp_path / "cache"


def place_googlenet_checkpoint() -> Path:
    """A tiny random checkpoint under googlenet's file name: present, as far as offering goes."""
    path = weights_dir() / get_spec("googlenet").weights.filename  # type: ignore[attr-defined]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fc.weight": torch.randn(2, 3)}, path)
    return path


def make_config(tmp_path: Path, *, download: bool = False) -> Config:
    return Config(
        data_dir=tmp_path / "data",
        queue=QueueConfig(cooldown_seconds=0),
        worker=WorkerConfig(device="cpu", download_weights=download),
    )


@pytest_asyncio.fixture
async def web(tmp_path: Path) -> AsyncIterator[tuple[TestClient, DreamService]]:
    config = make_config(tmp_path)
    service = await DreamService.open(config, NullEngine())
    service.start()
    client = TestClient(TestServer(create_web_app(service, config)))
    await client.start_server()
    try:
        yield client, service
    finally:
        await client.close()
        await service.close()


def offered_on_page(modes: dict) -> tuple[list[str], set[str]]:
    """The page's network list, and every network choice its forms offer."""
    listed = [network["name"] for network in modes["networks"]]
    choices = {
        choice
        for mode in modes["modes"]
        for option in mode["options"]
        if option["name"] == "network"
        for choice in option["choices"] or []
    }
    return listed, choices


def for_the_person(message: str) -> None:
    """A sentence for a visitor: no server path, no command to run."""
    assert "/" not in message and "`" not in message and "dreamcore" not in message and "pip" not in message, message


# ---------------------------------------------------------------------------------------------- which networks


def test_without_weights_only_the_packaged_networks_are_usable() -> None:
    assert usable_networks(download=False) == LITE
    hints = {offer.name: offer.hint for offer in network_offers(download=False) if not offer.usable}
    assert set(hints) == {"googlenet", "vgg16", "inception_v3"}
    # the operator's hint says where to get the file and what to run
    assert "googlenet-1378be20.pth" in hints["googlenet"] and "dreamcore models import" in hints["googlenet"]
    assert "download_weights = true" in hints["googlenet"]


def test_a_checkpoint_in_the_cache_makes_a_network_usable() -> None:
    place_googlenet_checkpoint()
    assert usable_networks(download=False) == [*LITE, "googlenet"]


def test_online_bots_offer_downloadable_networks_unless_dreamcore_is_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    assert usable_networks(download=True) == [*LITE, "googlenet", "vgg16", "inception_v3"]
    monkeypatch.setenv("DREAMCORE_OFFLINE", "1")
    assert usable_networks(download=True) == LITE


# ---------------------------------------------------------------------------------------------- the grammar


def test_the_grammar_refuses_a_network_the_bot_lacks_with_a_sentence() -> None:
    with pytest.raises(OptionError) as refused:
        parse_command("network=googlenet deeper", has_image=True, networks=LITE)
    assert str(refused.value) == "googlenet is not installed on this bot; try lite0, lite1 or lite2."
    with pytest.raises(OptionError) as alias:  # an alias is the same network
        build_command("dream", "", {"network": "inception_v1"}, networks=LITE)
    assert str(alias.value).startswith("googlenet is not installed on this bot")
    with pytest.raises(OptionError) as typo:  # suggestions come from what the bot has
        build_command("dream", "", {"network": "lite9"}, networks=LITE)
    assert "googlenet" not in str(typo.value) and "lite0" in str(typo.value)
    assert build_command("dream", "", {"network": "LITE1"}, networks=LITE).options["network"] == "lite1"


# ---------------------------------------------------------------------------------------------- the page


@pytest.mark.asyncio
async def test_the_page_offers_only_usable_networks_and_refuses_others_at_submit(
    web: tuple[TestClient, DreamService],
) -> None:
    client, service = web
    modes = await (await client.get("/api/modes")).json()
    listed, choices = offered_on_page(modes)
    assert listed == LITE and choices == set(LITE)

    response = await client.post("/api/jobs", data=dream_form(image=sample_bytes(), network="googlenet"))
    assert response.status == 400
    error = (await response.json())["error"]
    assert error.startswith("googlenet is not installed on this bot")
    for_the_person(error)
    assert await service.queue.all_jobs() == []  # refused before it waited its turn

    place_googlenet_checkpoint()  # e.g. `dreamcore models import` while the bot runs: offered at once
    listed, choices = offered_on_page(await (await client.get("/api/modes")).json())
    assert "googlenet" in listed and "googlenet" in choices


@pytest.mark.asyncio
async def test_the_service_refuses_a_missing_network_whatever_the_adapter(tmp_path: Path) -> None:
    service = await DreamService.open(make_config(tmp_path), NullEngine())
    try:
        command = build_command("visualize", "banana", {"network": "vgg16"})  # an adapter that did not check
        request = DreamRequest(command, Requester("x", "u1", "u1"), Destination("x"))
        with pytest.raises(OptionError, match=r"^vgg16 is not installed on this bot"):
            await service.submit(request)
        assert await service.queue.all_jobs() == []
    finally:
        await service.close()


# ---------------------------------------------------------------------------------------------- the operator


@pytest.mark.asyncio
async def test_the_operator_gets_the_hint_in_the_log_once_and_in_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "dreambot.toml"
    config_file.write_text('data_dir = "data"\n', encoding="utf-8")
    config = make_config(tmp_path)
    with caplog.at_level(logging.INFO, logger="bot.service"):
        service = await DreamService.open(config, NullEngine())
        service.start()
        await service.close()
    hints = [r.getMessage() for r in caplog.records if "not offered to people" in r.getMessage()]
    assert len(hints) == 3 and any("googlenet-1378be20.pth" in hint for hint in hints), hints

    assert await asyncio.to_thread(main, ["--config", str(config_file), "status"]) == 0
    printed = capsys.readouterr().out
    assert "networks offered: lite0, lite1, lite2" in printed
    assert "download https://download.pytorch.org/models/googlenet-1378be20.pth" in printed


@pytest.mark.asyncio
async def test_weights_that_fail_to_load_in_the_worker_give_the_person_a_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Said to be online, but the download fails (nothing listens there): the hint goes to the log only.
    monkeypatch.setenv("DREAMCORE_WEIGHTS_URL", "http://127.0.0.1:9/models")
    service = await DreamService.open(make_config(tmp_path, download=True), DreamcoreEngine("cpu"))
    service.start()
    try:
        command = build_command("visualize", "banana", {"network": "googlenet", "steps": 16, "size": 128})
        job = await service.submit(DreamRequest(command, Requester("web", "u1", "u1"), Destination("web")))
        async with asyncio.timeout(60):
            async for view in service.subscribe(job.id):
                last = view
    finally:
        await service.close()
    assert last.state == "failed" and last.error == "googlenet is not installed on this bot right now; try lite0."
    logged = [r.getMessage() for r in caplog.records if r.name == "bot.worker"]
    assert any("127.0.0.1:9" in line and "dreamcore models import" in line for line in logged), logged
