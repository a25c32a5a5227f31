"""Wiring: the service, its web page and (later) the chat adapters, started and stopped in one place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.config import Config
from bot.engine import Engine
from bot.service import DreamService

log = logging.getLogger("dreambot")


async def run_service(
    config: Config, engine: Engine | None = None, *, on_ready: Callable[[str | None], None] | None = None
) -> None:
    """Run until SIGINT/SIGTERM: the queue's worker, expiry, and the web page when enabled."""
    service = await DreamService.open(config, engine)
    service.start()
    runner: web.AppRunner | None = None
    discord_bot = discord_task = None
    x_adapter = x_task = None
    social: list[tuple[Any, asyncio.Task]] = []  # Mastodon, Bluesky: each on its own, an outage stops no other
    url = None
    try:
        if config.web.enabled:
            from bot.adapters.web.app import create_web_app  # the page's module is only needed when it is on

            runner = web.AppRunner(create_web_app(service, config), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, config.web.host, config.web.port)
            await site.start()
            port = runner.addresses[0][1] if runner.addresses else config.web.port
            url = f"http://{'127.0.0.1' if config.web.host in ('0.0.0.0', '') else config.web.host}:{port}/"
            log.info("DreamBot's page is at %s", url)
        if config.secrets.discord_token:
            from bot.adapters.discord import DiscordAdapter

            discord_bot = DiscordAdapter(
                service, config.secrets.discord_token, dev_guild_id=config.discord.dev_guild_id or None
            )
            discord_task = asyncio.create_task(discord_bot.start(), name="discord")
            log.info("Discord: connecting")
        if config.secrets.x.enabled:
            from bot.adapters.x import XAdapter

            x_adapter = XAdapter(service, config.x, config.secrets.x)
            x_task = asyncio.create_task(x_adapter.start(), name="x")
            log.info("X: signing in")
        social += _start_social(service, config)
        if on_ready is not None:
            on_ready(url)
        await _until_stopped()
    finally:
        log.info("stopping: a dream in progress goes back to the queue and continues at the next start")
        if discord_bot is not None:
            await discord_bot.close()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await discord_task
        if x_adapter is not None:
            x_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await x_task
            await x_adapter.close()
        for adapter, task in social:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await adapter.close()
        if runner is not None:
            await runner.cleanup()
        await service.close()


def _start_social(
    service: DreamService, config: Config, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
) -> list[tuple[Any, asyncio.Task]]:
    """Mastodon and Bluesky, each when its keys are set, each started on its own: an outage stops no other."""
    started: list[tuple[Any, asyncio.Task]] = []
    if config.secrets.mastodon.enabled:
        from bot.adapters.mastodon import MastodonAdapter

        mastodon = MastodonAdapter(service, config.mastodon, config.secrets.mastodon)
        started.append((mastodon, asyncio.create_task(_keep_starting(mastodon, "Mastodon", sleep), name="mastodon")))
        log.info("Mastodon: signing in to %s", config.secrets.mastodon.base_url)
    if config.secrets.bluesky.enabled:
        from bot.adapters.bluesky import BlueskyAdapter

        bluesky = BlueskyAdapter(service, config.bluesky, config.secrets.bluesky)
        started.append((bluesky, asyncio.create_task(_keep_starting(bluesky, "Bluesky", sleep), name="bluesky")))
        log.info("Bluesky: signing in as @%s", config.secrets.bluesky.handle)
    return started


async def _keep_starting(adapter: Any, name: str, sleep: Callable[[float], Awaitable[None]]) -> None:
    """Start an adapter, trying again while its platform is unreachable or rate limited; give up on a refusal."""
    from bot.adapters.social import Backoff

    backoff = Backoff()
    while True:
        try:
            await adapter.start()
            return
        except Exception as error:
            reset_at = getattr(error, "reset_at", None)
            if not isinstance(error, ConnectionError) and reset_at is None:
                # e.g. a revoked token or a wrong app password: a person has to fix it
                adapter.store.record_state("stopped", f"could not start: {error}"[:300])
                log.error("%s could not start: %s", name, error)
                return
            wait = max(1.0, reset_at - time.time()) if reset_at else backoff.next_wait()
            adapter.store.record_state("backing off", f"could not start: {error}"[:300], time.time() + wait)
            log.warning("%s could not start (%s); trying again in %.0f s", name, error, wait)
            await sleep(wait)


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows; Ctrl+C still raises there
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
