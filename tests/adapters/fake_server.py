"""An aiohttp fake of a platform, served on 127.0.0.1 from a thread of its own (fake_mastodon, fake_bluesky).

The adapters' clients (Mastodon.py, atproto) block, in executor threads: the fake answers from its own loop.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Self

from aiohttp import web


class ThreadedFake:
    """``with Fake() as fake``: serving at ``fake.base_url`` until the block ends; routes go to ``_route``."""

    thread_name = "fake-server"

    loop: asyncio.AbstractEventLoop | None = None
    runner: web.AppRunner | None = None
    base_url = ""

    def _application(self) -> web.Application:
        """The aiohttp application (its size limit, middlewares); every path goes to ``_route``."""
        raise NotImplementedError

    async def _route(self, request: web.Request) -> Any:
        raise NotImplementedError

    def __enter__(self) -> Self:
        ready = threading.Event()

        def serve() -> None:
            self.loop = asyncio.new_event_loop()
            app = self._application()
            app.router.add_route("*", "/{tail:.*}", self._route)
            self.runner = web.AppRunner(app, access_log=None)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.base_url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.runner.cleanup())
            self.loop.close()

        self.thread = threading.Thread(target=serve, name=self.thread_name, daemon=True)
        self.thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
