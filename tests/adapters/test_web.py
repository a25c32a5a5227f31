"""The web adapter over HTTP: aiohttp's test client against a real DreamService (real SQLite, real file store).

The engine is the NullEngine, so a dream takes milliseconds; the page's browser side is in test_web_browser.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image
from yarl import URL

from bot.adapters.web import create_web_app
from bot.adapters.web.app import redact
from bot.config import Config, MediaConfig, QueueConfig, Secrets, WebConfig
from bot.engine import NullEngine
from bot.jobqueue import JobState
from bot.options import Mode
from bot.service import DreamService
from dreamcore.networks import layer_catalog

SAMPLE = Path(__file__).parents[1] / "data" / "chelsea.png"
FINISHED = {"done", "failed", "cancelled"}

OpenApp = Callable[..., Awaitable[tuple[TestClient, DreamService]]]


@pytest_asyncio.fixture
async def open_app(tmp_path: Path) -> AsyncIterator[OpenApp]:
    """``await open_app(**config_fields, engine=..., start=True)`` -> (client, service); all closed at the end."""
    opened: list[tuple[TestClient, DreamService]] = []

    async def open_(*, engine: Any = None, start: bool = True, **fields: Any) -> tuple[TestClient, DreamService]:
        fields.setdefault("queue", QueueConfig(cooldown_seconds=0))
        config = Config(data_dir=tmp_path / f"service{len(opened)}", **fields)
        service = await DreamService.open(config, engine or NullEngine(steps=3))
        if start:
            service.start()
        client = TestClient(TestServer(create_web_app(service, config)))
        await client.start_server()
        opened.append((client, service))
        return client, service

    yield open_
    for client, service in reversed(opened):
        await client.close()
        await service.close()


@pytest_asyncio.fixture
async def app(open_app: OpenApp) -> tuple[TestClient, DreamService]:
    return await open_app()


def dream_form(
    mode: str = "dream", image: bytes | None = None, filename: str = "photo.png", subject: str = "", **options: Any
) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("mode", mode)
    if subject:
        form.add_field("subject", subject)
    for name, value in options.items():
        form.add_field(name, str(value))
    if image is not None:
        form.add_field("image", io.BytesIO(image), filename=filename, content_type="image/png")
    return form


def sample_bytes() -> bytes:
    return SAMPLE.read_bytes()


async def submit(client: TestClient, **kwargs: Any) -> aiohttp.ClientResponse:
    kwargs.setdefault("image", sample_bytes())
    return await client.post("/api/jobs", data=dream_form(**kwargs))


async def follow(client: TestClient, job_id: str) -> list[dict[str, Any]]:
    """Every view the event stream sends, until the server ends it."""
    views = []
    async with asyncio.timeout(20), client.get(f"/api/jobs/{job_id}/events") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for line in response.content:
            if line.startswith(b"data: "):
                views.append(json.loads(line[len(b"data: ") :]))
    return views


async def wait_finished(client: TestClient, job_id: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            view = await (await client.get(f"/api/jobs/{job_id}")).json()
            if view["state"] in FINISHED:
                return view
            await asyncio.sleep(0.02)


async def other_visitor(client: TestClient) -> aiohttp.ClientSession:
    """A second browser: its own cookie jar, so its own anonymous id."""
    return aiohttp.ClientSession(base_url=str(client.make_url("/")), cookie_jar=aiohttp.CookieJar(unsafe=True))


# ---------------------------------------------------------------------------------------------------- reading


@pytest.mark.asyncio
async def test_modes_describe_every_mode_with_its_options(app: tuple[TestClient, DreamService]) -> None:
    client, _ = app
    response = await client.get("/api/modes")
    assert response.status == 200
    data = await response.json()
    assert [m["mode"] for m in data["modes"]] == [mode.value for mode in Mode]
    dream = next(m for m in data["modes"] if m["mode"] == "dream")
    assert dream["needs_image"] is True
    options = {o["name"]: o for o in dream["options"]}
    assert options["octaves"]["type"] == "int" and options["octaves"]["min"] == 1
    assert "block9" in options["layer"]["choices"]
    visualize = next(m for m in data["modes"] if m["mode"] == "visualize")
    assert visualize["needs_image"] is False and visualize["subject"] == "class"
    presets = {p["name"]: p["description"] for p in data["presets"]}
    assert "deep" in presets and all(presets.values())
    assert "lite0" in [n["name"] for n in data["networks"]]
    assert data["limits"]["max_upload_mb"] == 20


@pytest.mark.asyncio
async def test_layers_come_with_thumbnails_for_lite0_only(app: tuple[TestClient, DreamService]) -> None:
    client, _ = app
    data = await (await client.get("/api/layers?network=lite0")).json()
    assert [layer["name"] for layer in data["layers"]] == layer_catalog("lite0").names()
    assert data["preset_layers"]["default"] == "block9"
    for layer in data["layers"]:
        assert layer["thumbnail"] == f"/static/layers/lite0/{layer['name']}.jpg"
        assert layer["description"] and layer["channels"] > 0
    picture = await client.get(data["layers"][0]["thumbnail"])
    assert picture.status == 200 and picture.content_type == "image/jpeg"
    with Image.open(io.BytesIO(await picture.read())) as image:
        assert max(image.size) <= 128

    other = await (await client.get("/api/layers?network=lite1")).json()
    assert other["layers"] and all(layer["thumbnail"] is None for layer in other["layers"])

    unknown = await client.get("/api/layers?network=lite9")
    assert unknown.status == 400
    assert "lite" in (await unknown.json())["error"]


# ---------------------------------------------------------------------------------------------------- dreaming


@pytest.mark.asyncio
async def test_a_photo_dreams_through_the_event_stream_to_a_served_picture(
    app: tuple[TestClient, DreamService],
) -> None:
    client, _ = app
    response = await submit(client, octaves=2)
    assert response.status == 201, await response.text()
    job = await response.json()
    assert job["mode"] == "dream" and job["options"] == {"octaves": 2}
    assert job["platform"] == "web" and job["requester"] == "web visitor"
    assert "destination" not in job  # another platform's reply address never reaches the page

    views = await follow(client, job["id"])
    assert views[-1]["state"] == "done"
    assert [v["state"] for v in views].count("done") == 1

    result = views[-1]["result"]
    picture = await client.get(f"/files/{result['key']}")
    assert picture.status == 200
    assert picture.headers["Content-Type"] == "image/png"
    assert picture.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    with Image.open(io.BytesIO(await picture.read())) as image:
        image.load()
        assert image.size == (result["width"], result["height"])

    assert (await (await client.get(f"/api/jobs/{job['id']}")).json())["state"] == "done"


@pytest.mark.asyncio
async def test_a_name_is_shown_and_a_picture_from_nothing_needs_no_photo(app: tuple[TestClient, DreamService]) -> None:
    client, service = app
    response = await client.post("/api/jobs", data=dream_form("visualize", subject="banana", name="  Ada  L. "))
    assert response.status == 201
    job = await response.json()
    assert job["requester"] == "Ada L." and job["subject"] == "banana"
    assert (await service.request_of(job["id"])).image_key is None


@pytest.mark.asyncio
async def test_an_unknown_layer_is_refused_with_suggestions(app: tuple[TestClient, DreamService]) -> None:
    client, service = app
    response = await submit(client, layer="blok9")
    assert response.status == 400
    error = (await response.json())["error"]
    assert "blok9" in error and "block9" in error
    assert sum((await service.queue.counts()).values()) == 0


@pytest.mark.asyncio
async def test_a_text_file_is_refused_with_a_sentence(app: tuple[TestClient, DreamService]) -> None:
    client, service = app
    response = await submit(client, image=b"hello, I am not a picture\n" * 20, filename="cat.png")
    assert response.status == 400
    error = (await response.json())["error"]
    assert error.startswith("That file is not an image I can read")
    assert sum((await service.queue.counts()).values()) == 0


@pytest.mark.asyncio
async def test_oversize_uploads_are_refused_with_the_limit(open_app: OpenApp) -> None:
    client, _ = await open_app(media=MediaConfig(max_upload_mb=1))
    far_over = await submit(client, image=b"\x89PNG\r\n\x1a\n" + bytes(3 * 2**20))
    assert far_over.status == 413
    assert "1 MB" in (await far_over.json())["error"]

    just_over = await submit(client, image=b"\x89PNG\r\n\x1a\n" + bytes(2**20 + 10_000))
    assert just_over.status == 400  # within the form's headroom: the service's own check explains
    assert "the limit is 1 MB" in (await just_over.json())["error"]


@pytest.mark.asyncio
async def test_a_mode_that_needs_a_photo_says_so(app: tuple[TestClient, DreamService]) -> None:
    client, _ = app
    for mode in ("dream", "zoom", "atlas"):
        response = await client.post("/api/jobs", data=dream_form(mode))
        assert response.status == 400
        assert f"{mode} needs a photo" in (await response.json())["error"]
    empty_file_input = dream_form("dream")
    empty_file_input.add_field("image", b"", filename="", content_type="application/octet-stream")
    response = await client.post("/api/jobs", data=empty_file_input)
    assert response.status == 400 and "needs a photo" in (await response.json())["error"]

    no_class = await client.post("/api/jobs", data=dream_form("visualize"))
    assert no_class.status == 400 and "visualize needs a class" in (await no_class.json())["error"]
    bad_number = await submit(client, octaves="lots")
    assert bad_number.status == 400 and "octaves needs a whole number" in (await bad_number.json())["error"]
    not_a_form = await client.post("/api/jobs", json={"mode": "dream"})
    assert not_a_form.status == 400 and "form" in (await not_a_form.json())["error"]


# ---------------------------------------------------------------------------------------------------- people


@pytest.mark.asyncio
async def test_the_per_person_limit_answers_429_with_retry_after(open_app: OpenApp) -> None:
    client, _ = await open_app(queue=QueueConfig(per_user=1, cooldown_seconds=0), start=False)
    assert (await submit(client)).status == 201
    refused = await submit(client, octaves=2)
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "already have 1 dream waiting" in (await refused.json())["error"]

    async with await other_visitor(client) as someone_else:  # the limit is per browser
        response = await someone_else.post("/api/jobs", data=dream_form(image=sample_bytes()))
        assert response.status == 201


@pytest.mark.asyncio
async def test_a_visitor_may_cancel_their_own_dream_only(open_app: OpenApp) -> None:
    client, _ = await open_app(start=False)  # no worker: the job stays queued
    job = await (await submit(client)).json()
    assert job["state"] == "queued" and job["position"] == 0

    async with await other_visitor(client) as someone_else:
        refused = await someone_else.post(f"/api/jobs/{job['id']}/cancel")
        assert refused.status == 403
        assert "Only the person who asked" in (await refused.json())["error"]

    cancelled = await client.post(f"/api/jobs/{job['id']}/cancel")
    assert cancelled.status == 200
    assert (await cancelled.json())["state"] == "cancelled"
    again = await client.post(f"/api/jobs/{job['id']}/cancel")
    assert again.status == 409 and "already finished" in (await again.json())["error"]
    missing = await client.post("/api/jobs/nosuchjob/cancel")
    assert missing.status == 404 and "can't find" in (await missing.json())["error"]


@pytest.mark.asyncio
async def test_the_visitor_cookie_is_set_once_and_http_only(app: tuple[TestClient, DreamService]) -> None:
    client, _ = app
    first = await client.get("/")
    cookie = first.cookies["dreambot_visitor"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert len(cookie.value) >= 16
    second = await client.get("/")
    assert "dreambot_visitor" not in second.cookies  # known now: not set again


# ---------------------------------------------------------------------------------------------------- after a dream


@pytest.mark.asyncio
async def test_dream_again_makes_a_new_dream_of_the_same_photo(app: tuple[TestClient, DreamService]) -> None:
    client, service = app
    original = await (await submit(client, seed=5, octaves=2)).json()
    await wait_finished(client, original["id"])

    response = await client.post(f"/api/jobs/{original['id']}/again")
    assert response.status == 201
    again = await response.json()
    assert again["id"] != original["id"]
    assert again["options"]["octaves"] == 2 and again["options"]["seed"] != 5
    assert not again["cached"]  # a new seed: dreamed anew, not the stored answer
    old_request, new_request = await service.request_of(original["id"]), await service.request_of(again["id"])
    assert new_request.image_key == old_request.image_key is not None
    assert (await wait_finished(client, again["id"]))["state"] == "done"

    changed = await client.post(f"/api/jobs/{original['id']}/again", json={"options": {"layer": "block10"}})
    assert changed.status == 201
    assert (await changed.json())["options"]["layer"] == "block10"
    wrong = await client.post(f"/api/jobs/{original['id']}/again", json={"options": {"layer": "blok10"}})
    assert wrong.status == 400 and "block10" in (await wrong.json())["error"]
    missing = await client.post("/api/jobs/nosuchjob/again")
    assert missing.status == 404


@pytest.mark.asyncio
async def test_the_gallery_lists_finished_dreams_newest_first(app: tuple[TestClient, DreamService]) -> None:
    client, _ = app
    assert (await (await client.get("/api/gallery")).json()) == {"jobs": []}
    first = await (await submit(client, octaves=1)).json()
    await wait_finished(client, first["id"])
    second = await (await submit(client, octaves=2)).json()
    await wait_finished(client, second["id"])

    jobs = (await (await client.get("/api/gallery")).json())["jobs"]
    assert [job["id"] for job in jobs] == [second["id"], first["id"]]
    assert all(job["result"]["key"] and "destination" not in job for job in jobs)


@pytest.mark.asyncio
async def test_files_and_previews_that_are_not_there_are_404(app: tuple[TestClient, DreamService]) -> None:
    client, _ = app
    for path in ("/files/not-a-key.png", "/files/" + "0" * 64 + ".png", "/files/..%2F..%2Fdreambot.sqlite3"):
        response = await client.get(path)
        assert response.status == 404, path
        assert (await response.json())["error"].endswith(".")
    assert (await client.get("/api/jobs/nosuchjob")).status == 404
    assert (await client.get("/api/jobs/nosuchjob/events")).status == 404
    preview = await client.get("/api/jobs/nosuchjob/preview.jpg")
    assert preview.status == 404 and "preview" in (await preview.json())["error"]
    unknown = await client.get("/api/nothing-here")
    assert unknown.status == 404 and (await unknown.json()) == {"error": "There is nothing at that address."}


# ---------------------------------------------------------------------------------------------------- operations


@pytest.mark.asyncio
async def test_healthz(app: tuple[TestClient, DreamService]) -> None:
    client, _ = app
    response = await client.get("/healthz")
    assert response.status == 200
    data = await response.json()
    assert data["ok"] is True
    assert data["jobs"] == {state.value: 0 for state in JobState}


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"')


def parse_metrics(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """Types by family and (name, labels, value) samples; fails on anything the text format does not allow."""
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples = []
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps.add(line.split(" ")[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "summary", "histogram", "untyped"}
            types[name] = kind
        else:
            match = METRIC_LINE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, inner, value = match.groups()
            labels = dict(LABEL.findall(inner or ""))
            if inner:
                assert ",".join(f'{k}="{v}"' for k, v in LABEL.findall(inner)) == inner, line
            family = re.sub(r"_(sum|count)$", "", name) if name not in types else name
            assert family in types and family in helps, f"{name} has no TYPE/HELP before it"
            samples.append((name, labels, float(value)))
    return types, samples


@pytest.mark.asyncio
async def test_metrics_are_prometheus_text(app: tuple[TestClient, DreamService]) -> None:
    client, service = app
    job = await (await submit(client)).json()
    await wait_finished(client, job["id"])
    async with asyncio.timeout(10):  # the loop-lag monitor has taken a sample
        while not service.loop_lag.samples:
            await asyncio.sleep(0.01)

    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    types, samples = parse_metrics(await response.text())
    assert types == {
        "dreambot_queue_depth": "gauge",
        "dreambot_jobs": "gauge",
        "dreambot_dream_seconds": "summary",
        "dreambot_event_loop_lag_seconds": "summary",
        "dreambot_workers": "gauge",
        "dreambot_workers_busy": "gauge",
        "dreambot_backend_queue_depth": "gauge",
        "dreambot_dispatched": "gauge",
    }
    values = {(name, tuple(sorted(labels.items()))): value for name, labels, value in samples}
    assert values[("dreambot_workers", (("backend", "local"), ("state", "ready")))] == 1  # the in-process worker
    assert values[("dreambot_backend_queue_depth", (("backend", "local"),))] == 0
    assert values[("dreambot_queue_depth", ())] == 0
    assert {labels["state"] for name, labels, _ in samples if name == "dreambot_jobs"} == {s.value for s in JobState}
    assert values[("dreambot_jobs", (("state", "done"),))] == 1
    assert values[("dreambot_dream_seconds_count", ())] == 1
    assert 0 <= values[("dreambot_dream_seconds_sum", ())] < 20
    lag = [labels["quantile"] for name, labels, _ in samples if name == "dreambot_event_loop_lag_seconds"]
    assert lag == ["0.5", "0.99"]
    assert values[("dreambot_event_loop_lag_seconds_count", ())] >= 1
    assert all(math.isfinite(value) and value >= 0 for _, _, value in samples)


@pytest.mark.asyncio
async def test_the_page_has_no_inline_script_and_strict_headers(app: tuple[TestClient, DreamService]) -> None:
    client, _ = app
    response = await client.get("/")
    assert response.status == 200 and response.content_type == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    html = await response.text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script would be blocked by the policy"
    assert re.search(r"\sstyle=", html) is None
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        assert (await client.get(asset)).status == 200, asset


@pytest.mark.asyncio
async def test_posts_from_other_sites_are_refused(app: tuple[TestClient, DreamService]) -> None:
    client, service = app
    headers = {"Origin": "http://evil.example"}
    response = await client.post("/api/jobs", data=dream_form(image=sample_bytes()), headers=headers)
    assert response.status == 403
    assert sum((await service.queue.counts()).values()) == 0
    same_site = {"Origin": str(client.make_url("/")).rstrip("/")}
    assert (await client.post("/api/jobs", data=dream_form(image=sample_bytes()), headers=same_site)).status == 201


@pytest.mark.asyncio
async def test_off_loopback_every_route_but_healthz_needs_the_token(open_app: OpenApp) -> None:
    token = "s3cret"
    client, _ = await open_app(web=WebConfig(host="0.0.0.0"), secrets=Secrets(web_token=token))
    seen: list[aiohttp.ClientResponse] = []

    async def get(path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        response = await client.get(path, **kwargs)
        await response.read()
        seen.append(response)
        return response

    page = await get("/")
    assert page.status == 401 and "?token=" in await page.text()
    api = await get("/api/modes")
    assert api.status == 401 and "Bearer" in (await api.json())["error"]
    for path in ("/metrics", "/api/gallery", "/static/app.js", "/files/" + "0" * 64 + ".png"):
        assert (await get(path)).status == 401, path
    assert (await get("/?token=wrong")).status == 401
    assert (await get("/healthz")).status == 200

    assert (await get("/api/modes", headers={"Authorization": f"Bearer {token}"})).status == 200
    assert (await get("/api/modes", headers={"Authorization": "Bearer wrong"})).status == 401

    redirect = await get(f"/api/gallery?token={token}&x=1", allow_redirects=False)
    assert redirect.status == 303
    assert redirect.headers["Location"] == "/api/gallery?x=1"
    cookie = redirect.cookies["dreambot_access"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert (await get("/")).status == 200  # the cookie now opens every page
    assert (await get("/metrics")).status == 200

    for response in seen:
        assert token not in await response.text()
        assert all(token not in value for value in response.headers.values())


@pytest.mark.asyncio
async def test_on_loopback_no_token_is_needed(open_app: OpenApp) -> None:
    client, _ = await open_app(secrets=Secrets(web_token="s3cret"))
    assert (await client.get("/api/modes")).status == 200


def test_a_public_host_without_a_token_is_refused(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path, web=WebConfig(host="0.0.0.0"))
    with pytest.raises(ValueError, match="DREAMBOT_WEB_TOKEN"):
        create_web_app(None, config)  # type: ignore[arg-type]  # refused before the service is touched


def test_the_access_log_hides_the_token() -> None:
    assert redact(URL("/api/gallery?token=s3cret&x=1")) == "/api/gallery?token=***&x=1"
    assert redact(URL("/api/gallery?x=1")) == "/api/gallery?x=1"
