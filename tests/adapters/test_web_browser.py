"""The page in a real headless Chromium (Debian's, driven by Playwright) against the real app on loopback.

The first test dreams for real (dreamcore on the CPU, a 96 px photo, one octave of three steps); the others use the
NullEngine, since what they check is the page, not the dream.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from PIL import Image

from bot.adapters.web import AccessLogger, create_web_app
from bot.config import Config, MediaConfig, QueueConfig, WorkerConfig
from bot.engine import DreamcoreEngine, NullEngine
from bot.service import DreamService

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "Debian's chromium is not installed at /usr/bin/chromium (the test command installs it)",
        allow_module_level=True,
    )

from playwright.async_api import Browser, Page, async_playwright, expect  # noqa: E402

SAMPLE = Path(__file__).parents[1] / "data" / "chelsea.png"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, engine: Any) -> AsyncIterator[str]:
    """The real app on a free loopback port, as `dreambot serve` runs it; yields its address."""
    config = Config(
        data_dir=tmp_path,
        media=MediaConfig(working_side=96),
        queue=QueueConfig(cooldown_seconds=0),
        worker=WorkerConfig(progress_interval_seconds=0.2),
    )
    service = await DreamService.open(config, engine)
    service.start()
    runner = web.AppRunner(create_web_app(service, config), access_log_class=AccessLogger, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await service.close()


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_page(chromium: Browser, url: str) -> tuple[Page, list[str]]:
    """The page, loaded and its form built; the list collects script errors (each test ends expecting none)."""
    page = await chromium.new_page(viewport={"width": 1100, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(url)
    await page.wait_for_selector("body[data-ready=true]")
    return page, errors


async def dream_button_answer(page: Page) -> dict[str, Any]:
    """Click Dream and return the JSON the server answered the form with."""
    async with page.expect_response(lambda r: r.url.endswith("/api/jobs") and r.request.method == "POST") as answer:
        await page.click("#dream-button")
    return await (await answer.value).json()


async def wait_done(page: Page) -> str:
    """Wait for the job card to show a finished result; returns the result image's address."""
    await page.wait_for_selector("#job-card[data-state=done]")
    await page.wait_for_function(
        "() => { const i = document.getElementById('result-image'); return i.complete && i.naturalWidth > 0; }"
    )
    return await page.get_attribute("#result-image", "src")


@pytest.mark.asyncio
async def test_a_photo_is_dreamed_and_shown_and_joins_the_gallery(tmp_path: Path) -> None:
    async with serve(tmp_path, DreamcoreEngine("cpu")) as url, browser() as chromium:
        page, errors = await open_page(chromium, url)
        await page.click("#tab-dream")
        await expect(page.locator("#tab-dream")).to_have_attribute("aria-selected", "true")
        await page.set_input_files("#image-input", SAMPLE)
        await expect(page.locator("#chosen-name")).to_have_text("chelsea.png")
        await expect(page.locator("#chosen-preview")).to_be_visible()
        await page.fill("#opt-octaves", "1")
        await page.fill("#opt-iterations", "3")
        # Every state the job card goes through, as the page shows it.
        await page.evaluate(
            """() => {
              window.seen = [];
              const card = document.getElementById('job-card');
              new MutationObserver(() => window.seen.push({
                state: card.dataset.state,
                status: document.getElementById('job-status').textContent,
                progress: document.getElementById('job-progress').getAttribute('aria-valuenow'),
              })).observe(card, {attributes: true, childList: true, subtree: true, characterData: true});
            }"""
        )

        job = await dream_button_answer(page)
        assert job["options"] == {"octaves": 1, "iterations": 3, "preset": "default"}
        await expect(page.locator("#job-card")).to_be_visible()
        await expect(page.locator("#job-status")).not_to_be_empty()
        src = await wait_done(page)

        seen = await page.evaluate("window.seen")
        states = [entry["state"] for entry in seen]
        assert states[0] in ("queued", "running") and states[-1] == "done"
        first = seen[0]["status"]
        assert first == "Dreaming…" or first.startswith("You're next"), first
        assert seen[-1]["progress"] == "100"
        await expect(page.locator("#job-status")).to_have_text(re.compile(r"^Done in [0-9.]+ s\.$"))
        await expect(page.locator("#result-caption")).to_contain_text("lite0 block9")
        await expect(page.locator("#download-link")).to_have_attribute("href", src)

        response = await page.request.get(url + src)
        assert response.ok and response.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(await response.body())) as result:
            dreamed = np.asarray(result.convert("RGB"), dtype=np.float32)
        with Image.open(SAMPLE) as sample:
            original = np.asarray(sample.convert("RGB").resize(result.size, Image.LANCZOS), dtype=np.float32)
        assert max(result.size) == 96
        assert np.abs(dreamed - original).mean() > 2.0, "the result should differ from the photo"

        await expect(page.locator(f'#gallery-grid .gallery-item[data-job-id="{job["id"]}"] img')).to_be_visible()
        assert errors == []


@pytest.mark.asyncio
async def test_a_bad_file_is_refused_with_the_services_sentence_and_the_page_keeps_working(tmp_path: Path) -> None:
    async with serve(tmp_path, NullEngine(steps=2)) as url, browser() as chromium:
        page, errors = await open_page(chromium, url)
        not_a_picture = {"name": "holiday.png", "mimeType": "image/png", "buffer": b"just some text\n" * 50}
        await page.set_input_files("#image-input", files=[not_a_picture])

        job = await dream_button_answer(page)
        assert set(job) == {"error"} and job["error"].startswith("That file is not an image I can read; send a photo")
        alert = page.locator("#form-error")
        await expect(alert).to_be_visible()
        await expect(alert).to_have_attribute("role", "alert")
        await expect(alert).to_have_text(job["error"])
        await expect(page.locator("#job-card")).to_be_hidden()

        await page.set_input_files("#image-input", SAMPLE)
        await expect(alert).to_be_hidden()
        job = await dream_button_answer(page)
        assert job["state"] in ("queued", "running", "done")
        await wait_done(page)
        await expect(alert).to_be_hidden()
        assert errors == []


@pytest.mark.asyncio
async def test_the_layer_picker_shows_pictures_and_sends_the_chosen_layer(tmp_path: Path) -> None:
    async with serve(tmp_path, NullEngine()) as url, browser() as chromium:
        page, errors = await open_page(chromium, url)
        tiles = page.locator("#layer-grid .layer-tile img.thumb")
        await expect(tiles).to_have_count(19)  # every layer of lite0
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#layer-grid img.thumb')]"
            ".every((img) => img.complete && img.naturalWidth > 0)"
        )

        tile = page.locator('#layer-grid .layer-tile[data-layer="block5"]')
        await tile.click()
        await expect(tile).to_have_attribute("aria-pressed", "true")
        await expect(page.locator("#opt-layer")).to_have_value("block5")
        await page.click('#preset-picker .preset[data-preset="deep"]')
        await page.set_input_files("#image-input", SAMPLE)
        job = await dream_button_answer(page)
        assert job["options"]["layer"] == "block5"
        assert job["options"]["preset"] == "deep"
        await wait_done(page)

        # A network without shipped pictures: the tiles name the layer and its channels instead.
        await page.select_option("#opt-network", "lite1")
        await expect(page.locator('#layer-grid .layer-tile[data-layer="block16"]')).to_be_visible()
        await expect(page.locator("#layer-grid img.thumb")).to_have_count(0)
        await expect(page.locator("#opt-layer")).to_have_value("block5")  # lite1 has a block5 too
        assert errors == []


@pytest.mark.asyncio
async def test_the_share_tick_box_and_the_gallery_like_button(tmp_path: Path) -> None:
    async with serve(tmp_path, NullEngine()) as url, browser() as chromium:
        page, errors = await open_page(chromium, url)
        await page.set_input_files("#image-input", SAMPLE)
        await page.check("#share")
        job = await dream_button_answer(page)
        await wait_done(page)
        gallery = await (await page.request.get(url + "/api/gallery")).json()
        assert [(j["id"], j["shared"]) for j in gallery["jobs"]] == [(job["id"], True)]
        cell = page.locator(".gallery-cell", has=page.locator(f'.gallery-item[data-job-id="{job["id"]}"]'))
        like = cell.locator("[data-testid=like]")
        await expect(like).to_have_text("♥ 0")
        await like.click()
        await expect(like).to_have_text("♥ 1")
        await like.click()  # one like per browser
        await expect(like).to_have_text("♥ 1")
        assert errors == []
