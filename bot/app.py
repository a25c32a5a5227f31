"""Wiring: the service, its web page and (later) the chat adapters, started and stopped in one place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.config import Config
from bot.engine import Engine
from bot.service import DreamService

if TYPE_CHECKING:
    from bot.schedule import DreamScheduler

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
    scheduler = None
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
        if config.schedules:
            adapters = {"discord": discord_bot, "x": x_adapter, **{task.get_name(): a for a, task in social}}
            scheduler = await start_schedules(service, config, adapters)
        if on_ready is not None:
            on_ready(url)
        await _until_stopped()
    finally:
        log.info("stopping: a dream in progress goes back to the queue and continues at the next start")
        if scheduler is not None:
            await scheduler.close()  # a run in progress carries on at the next start, posting only what is missing
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


async def start_schedules(service: DreamService, config: Config, adapters: dict[str, object | None]) -> DreamScheduler:
    """The scheduled posts, with every running adapter that has an own-account path as a destination.

    Destinations are keyed by platform name; an adapter plugs in by having ``post_to_own_account`` and being
    passed here under its name (``{"mastodon": mastodon_adapter}``). The web page is one whenever it is on.
    """
    from bot.schedule import DreamScheduler, WebGallery

    destinations: dict[str, Any] = {
        name: adapter for name, adapter in adapters.items() if hasattr(adapter, "post_to_own_account")
    }
    if config.web.enabled:
        destinations["web"] = WebGallery()
    scheduler = DreamScheduler(service, config.schedules, destinations, public_url=config.web.public_url)
    service.featured = scheduler.featured
    service.platform_status["schedule"] = scheduler.status
    for adapter in adapters.values():
        if hasattr(adapter, "schedule_preview"):
            adapter.schedule_preview = scheduler.preview  # /dreambot preview on Discord
    await scheduler.start()
    log.info("schedules: %s", ", ".join(f"{s.name} ({s.cron} {s.timezone})" for s in config.schedules))
    return scheduler


async def run_schedule_once(
    config: Config, name: str, engine: Engine | None = None, *, preview: bool = False
) -> tuple[Any, list[Any]]:
    """`dreambot schedule run|preview NAME` when no service runs: a service of its own for one run.

    Returns the run (or the preview picture) and the destinations' results. Discord posts over REST only
    (a login without the gateway); X, Mastodon and Bluesky sign in without polling.
    """
    from bot.schedule import DreamScheduler, WebGallery

    service = await DreamService.open(config, engine)
    service.start()
    adapters: dict[str, Any] = {}
    try:
        if not preview and config.secrets.discord_token:
            from bot.adapters.discord import DiscordAdapter

            adapters["discord"] = DiscordAdapter(service, config.secrets.discord_token)
            await adapters["discord"].client.login(config.secrets.discord_token)
        if not preview and config.secrets.x.enabled:
            from bot.adapters.x import XAdapter

            adapters["x"] = XAdapter(service, config.x, config.secrets.x)
            await adapters["x"].start(poll=False)
        if not preview and config.secrets.mastodon.enabled:
            from bot.adapters.mastodon import MastodonAdapter

            adapters["mastodon"] = MastodonAdapter(service, config.mastodon, config.secrets.mastodon)
            await adapters["mastodon"].start(poll=False)
        if not preview and config.secrets.bluesky.enabled:
            from bot.adapters.bluesky import BlueskyAdapter

            adapters["bluesky"] = BlueskyAdapter(service, config.bluesky, config.secrets.bluesky)
            await adapters["bluesky"].start(poll=False)
        destinations = dict(adapters)
        if config.web.enabled:
            destinations["web"] = WebGallery()
        scheduler = DreamScheduler(service, config.schedules, destinations, public_url=config.web.public_url)
        try:
            if preview:
                return await scheduler.preview(name), []
            run = await scheduler.run_now(name)
            return run, scheduler.store.posts(run.schedule, run.slot)
        finally:
            await scheduler.close()
    finally:
        for adapter in adapters.values():
            await adapter.close()
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
    from bot.backoff import Backoff

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
