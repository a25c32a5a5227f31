"""`dreambot schedule list|run|preview`: through a running service, or on its own when none runs.

The engine is the NullEngine (the dream itself is not the point); the database, the scheduler and the web
gallery destination are real.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import bot.engine
from bot.cli import main
from bot.config import load_config
from bot.engine import NullEngine
from bot.schedule import DreamScheduler, ScheduleStore, WebGallery
from bot.service import DreamService


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(bot.engine, "DreamcoreEngine", lambda device="auto": NullEngine())
    for name in ("DISCORD_TOKEN", "X_API_KEY", "X_API_SECRET", "X_ACCESS_TOKEN", "X_ACCESS_TOKEN_SECRET"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "dreambot.toml"
    path.write_text(
        'data_dir = "data"\n[[schedule]]\nname = "daily"\nsource = "class"\nclasses = ["banana", "goldfish"]\n'
        'destinations = ["web", "x"]\nretry_seconds = 0.01\n',
        encoding="utf-8",
    )
    return path


def test_list_before_any_run(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config_file), "schedule", "list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("daily: class at 0 9 * * * (UTC), next ")
    assert "  last run: never" in out and "  web       not yet" in out


def test_run_and_preview_on_their_own(config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config_file), "schedule", "run", "daily"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("daily manual-") and ": done" in out.splitlines()[0]
    assert "  web       posted" in out and "  x         skipped (not set up)" in out

    assert main(["--config", str(config_file), "schedule", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["last_run"]["state"] == "done" and row["destinations"]["web"]["state"] == "posted"

    picture = tmp_path / "next.png"
    assert main(["--config", str(config_file), "schedule", "preview", "daily", "--out", str(picture)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Wrote {picture} (") and "nothing was posted" in out
    assert picture.read_bytes().startswith(b"\x89PNG")

    assert main(["--config", str(config_file), "schedule", "run", "weekly"]) == 2
    assert "There is no schedule 'weekly'; the schedules are: daily." in capsys.readouterr().err


@pytest.mark.asyncio
async def test_run_goes_through_the_running_service(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(config_file, environ={})
    service = await DreamService.open(config, NullEngine())
    service.start()
    scheduler = DreamScheduler(service, config.schedules, {"web": WebGallery()}, poll_seconds=0.05)
    await scheduler.start()
    try:
        code = await asyncio.to_thread(main, ["--config", str(config_file), "schedule", "run", "daily"])
    finally:
        await scheduler.close()
        await service.close()
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("Asked the running service to post daily now")
    store = ScheduleStore(config.database_path)
    try:
        (run,) = store.runs("daily")
        assert run.manual and run.state == "done" and run.job_id is not None
    finally:
        store.close()
    assert "  web       posted" in out


@pytest.mark.asyncio
async def test_preview_goes_through_the_running_service(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(config_file, environ={})
    service = await DreamService.open(config, NullEngine())
    service.start()
    scheduler = DreamScheduler(service, config.schedules, {"web": WebGallery()}, poll_seconds=0.05)
    await scheduler.start()
    picture = tmp_path / "next.png"
    try:
        command = ["--config", str(config_file), "schedule", "preview", "daily", "--out", str(picture)]
        code = await asyncio.to_thread(main, command)
        jobs = await service.queue.all_jobs(limit=10)
    finally:
        await scheduler.close()
        await service.close()
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("Asked the running service to make the next picture of daily now")
    assert f"Wrote {picture} (" in out and picture.read_bytes().startswith(b"\x89PNG")
    assert [job.user for job in jobs] == ["schedule:daily-preview"]  # the running service made it, not a second one


def test_status_reports_a_destination_that_failed(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(config_file, environ={})
    config.data_dir.mkdir(parents=True)
    store = ScheduleStore(config.database_path)
    store.claim("daily", "2026-03-10T09:00", 1773133200.0, state="partial")
    store.post("daily", "2026-03-10T09:00", "x")
    store.update_post("daily", "2026-03-10T09:00", "x", state="failed", error="X answered 503", attempt=True)
    store.close()
    assert main(["--config", str(config_file), "status"]) == 0
    assert "⚠️  schedule daily: posting to x failed: X answered 503" in capsys.readouterr().out
