"""The Mastodon adapter: mentions in, dreams out as replies that keep the post's visibility. It only translates.

Reads poll the bot's mention notifications from a persisted cursor (``min_id``, then the newer pages until
caught up), and, when configured, hashtag timelines. When the instance has a streaming server, the user stream
only wakes the poll at once (reading stays in one place); any stream error leaves polling alone.
Mastodon.py's real client does every call; blocking HTTP runs in an executor, paced to Mastodon's published
limits (300 requests per 5 minutes, 30 media uploads per 30 minutes), and a 429 pauses until its
``X-RateLimit-Reset``. Replies upload the dream with its alt text (``/api/v2/media``, waiting out "still
processing"), then post it with the job id as the ``Idempotency-Key``, the original's visibility (never more
public), ``sensitive`` flag and content warning. The bookkeeping (cursor, ledger, opt-outs, daily how-to) is
:mod:`bot.adapters.social`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from mastodon import (
    Mastodon,
    MastodonAPIError,
    MastodonNetworkError,
    MastodonNotFoundError,
    MastodonRatelimitError,
    MastodonServerError,
    StreamListener,
)

from bot.adapters.social import (
    Clock,
    RateLimited,
    RateWindow,
    SocialAdapter,
    fetch_photo,
    plain_text,
    post_once,
    refuses_bots,
    wants_stop,
    without_mentions,
)
from bot.adapters.x import alt_text  # one wording for every platform
from bot.config import VISIBILITIES, MastodonConfig, MastodonKeys
from bot.jobqueue import QueueError
from bot.media import DESTINATION_LIMITS, MediaError, fit_result
from bot.options import OptionError, parse_command
from bot.requests import Destination, DreamRequest, Requester
from bot.service import DreamService, JobView

log = logging.getLogger(__name__)

PLATFORM = "mastodon"
HOWTO = 'Mention me in a post with a photo (or in a reply to one) to dream it, e.g. "@{bot} deeper layer=block10".'
MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}


class MastodonFailure(Exception):
    """The instance refused a call (a 4xx other than 404 and 429)."""


class NotFound(Exception):
    """The post (or media) is gone, e.g. deleted before the answer was ready."""


@dataclass(frozen=True)
class Limits:
    """The instance's own limits, read once from ``instance_v2()``."""

    image_bytes: int = DESTINATION_LIMITS["mastodon"]
    description: int = 1500
    characters: int = 500

    @classmethod
    def of(cls, instance: Any) -> Limits:
        configuration = instance.get("configuration") or {}
        media = configuration.get("media_attachments") or {}
        statuses = configuration.get("statuses") or {}
        return cls(
            image_bytes=int(media.get("image_size_limit") or cls.image_bytes),
            description=int(media.get("description_limit") or cls.description),
            characters=int(statuses.get("max_characters") or cls.characters),
        )


@dataclass(frozen=True)
class Post:
    id: str
    text: str  # HTML stripped, mentions kept (for "stop")
    author_id: str
    author_acct: str
    author_bio: str
    author_is_bot: bool
    visibility: str
    sensitive: bool
    spoiler_text: str
    conversation_id: str
    photo_url: str | None
    addressed: bool  # mentions the bot or replies to it


def less_public(a: str, b: str) -> str:
    """The less public of two visibilities: a reply is never more public than what it answers."""
    return max(a, b, key=lambda v: VISIBILITIES.index(v) if v in VISIBILITIES else len(VISIBILITIES))


class MastodonAdapter(SocialAdapter):
    platform = PLATFORM
    name = "Mastodon"
    settings: MastodonConfig
    keys: MastodonKeys

    def __init__(
        self,
        service: DreamService,
        settings: MastodonConfig,
        keys: MastodonKeys,
        *,
        clock: Clock = time.time,
        sleep: Any = asyncio.sleep,
        media_check_seconds: float = 1.0,
    ) -> None:
        super().__init__(service, settings, keys, clock, sleep)
        self.media_check_seconds = media_check_seconds
        # "throw": a 429 comes back to us, and we wait in the event loop rather than block an executor thread.
        self.client = Mastodon(
            access_token=keys.access_token,
            api_base_url=keys.base_url,
            ratelimit_method="throw",
            request_timeout=60,
        )
        self.session = requests.Session()
        self.requests_window = RateWindow(300, 300, clock)
        self.uploads_window = RateWindow(30, 1800, clock)
        self.limits = Limits()
        self.streaming_url = ""
        self.me_id = ""
        self.me_acct = ""
        self._stream: Any = None  # Mastodon.py's stream handle while the user stream is open
        self._stream_retry_at = 0.0
        self._wake = asyncio.Event()  # set by the stream: a notification came, poll now

    # ------------------------------------------------------------------ calls

    async def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """A blocking call in the executor, paced, with Mastodon.py's errors as ours."""
        await self.requests_window.acquire(self.sleep)

        def run() -> Any:
            try:
                return function(*args, **kwargs)
            except MastodonRatelimitError:
                raise RateLimited(float(self.client.ratelimit_reset or self.clock() + 60)) from None
            except MastodonNotFoundError as error:
                raise NotFound(str(error)) from None
            except (MastodonServerError, MastodonNetworkError) as error:
                raise ConnectionError(str(error)) from None
            except MastodonAPIError as error:
                raise MastodonFailure(str(error)) from None

        return await asyncio.get_running_loop().run_in_executor(None, run)

    # ------------------------------------------------------------------ life cycle

    async def start(self, *, poll: bool = True) -> None:
        """Sign in, read the instance's limits, set the bot flag, post what a crash left, then poll."""
        me = await self._call(self.client.account_verify_credentials)
        self.me_id, self.me_acct = str(me["id"]), me["acct"]
        instance = await self._call(self.client.instance_v2)
        self.limits = Limits.of(instance)
        self.streaming_url = streaming_url_of(instance)
        if self.settings.mark_as_bot and not me.get("bot"):
            await self._call(self.client.account_update_credentials, bot=True)
        log.info("Mastodon: signed in as @%s on %s", self.me_acct, self.keys.base_url)
        self.store.record_state("connected")
        await self._resume(poll)

    async def close(self) -> None:
        self._closed = True
        self._close_stream()
        await super().close()

    def status(self) -> dict[str, Any]:
        return self._status(account=self.me_acct)

    async def _poll_turn(self) -> None:
        """A read, then the stream (re)opened when it is due: it only wakes the next read."""
        self._wake.clear()  # before reading: a notification during the read wakes the next turn at once
        await self.poll_once()
        if self.settings.streaming and self._stream is None and self.clock() >= self._stream_retry_at:
            await self._open_stream()
        if self._stream is not None and not self._stream.is_alive():
            self._stream_lost(ConnectionError("the stream ended"))
        self.store.record_state("streaming" if self._stream is not None else "polling")

    async def _pause_for(self, error: Exception) -> tuple[float, str] | None:
        if isinstance(error, (ConnectionError, MastodonFailure, NotFound)):
            return self._back_off(error, "Mastodon unreachable or refusing")
        return await super()._pause_for(error)  # a rate limit

    async def _rest(self, wait: float) -> None:
        """Until the next read: the interval, cut short by the stream when one is open (and all is well)."""
        if self._stream is None or self.pause_reason:
            await self.sleep(wait)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait)

    # ------------------------------------------------------------------ streaming (a wake-up call for polling)

    async def _open_stream(self) -> None:
        """The user stream, when the instance allows it; it only says "read now": reading stays the poll's."""
        loop = asyncio.get_running_loop()
        connected = asyncio.Event()
        adapter = self

        class Wake(StreamListener):
            def on_notification(self, notification: Any) -> None:
                loop.call_soon_threadsafe(adapter._wake.set)

            def on_abort(self, err: Exception) -> None:  # in the stream's thread: closed there, polling goes on
                loop.call_soon_threadsafe(adapter._stream_lost, err)

            def handle_heartbeat(self) -> None:  # the server's ":)" on connecting, then its heartbeats
                loop.call_soon_threadsafe(connected.set)

            def on_unknown_event(self, name: str, unknown_event: Any = None) -> None:
                pass  # new kinds of event must not end the stream

        try:
            await self._stream_health()
            self._stream = await self._call(
                self.client.stream_user, Wake(), run_async=True, reconnect_async=True, reconnect_async_wait_sec=30
            )
            try:
                await asyncio.wait_for(connected.wait(), 30)
            except TimeoutError:
                raise ConnectionError("the streaming server did not answer") from None
            log.info("Mastodon: streaming, and polling every %.0f s besides", self.settings.poll_interval_seconds)
        except (ConnectionError, MastodonFailure, NotFound, RateLimited) as error:
            self._stream_lost(error)

    async def _stream_health(self) -> None:
        """Mastodon's streaming server answers /api/v1/streaming/health with OK; an instance without one does not."""
        base = self.streaming_url or self.keys.base_url

        def probe() -> None:
            try:
                answer = self.session.get(f"{base}/api/v1/streaming/health", timeout=10)
            except requests.RequestException as error:
                raise ConnectionError(f"the streaming server is unreachable ({type(error).__name__})") from None
            if answer.status_code != 200:
                raise ConnectionError(f"this instance serves no stream (health check: {answer.status_code})")

        await asyncio.get_running_loop().run_in_executor(None, probe)

    def _stream_lost(self, error: Exception) -> None:
        """Any stream error: back to polling alone; the stream is tried again in five minutes."""
        self._close_stream()
        self._stream_retry_at = self.clock() + 300
        log.info("Mastodon: no stream (%s); polling", error)
        with contextlib.suppress(Exception):
            self.store.record_state("polling", f"stream: {error}"[:200])
        self._wake.set()  # read now: something may have come while the stream was failing

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            # Closing waits for the stream thread's read to return (at the server's next heartbeat): not here.
            threading.Thread(target=_quietly, args=(stream.close,), daemon=True).start()

    # ------------------------------------------------------------------ reading

    async def poll_once(self) -> None:
        """Mentions (and configured hashtags) from their cursors, oldest first, each post handled once."""
        notes, newest = await self._read("mentions", self.client.notifications, types=["mention"])
        statuses = {str(n["status"]["id"]): n["status"] for n in notes if n.get("status")}
        cursors = {"mentions": newest}
        for tag in self.settings.hashtags:
            found, cursors[f"tag:{tag}"] = await self._read(f"tag:{tag}", self.client.timeline_hashtag, tag.lstrip("#"))
            statuses.update({str(s["id"]): s for s in found})
        for status_id in sorted(statuses, key=int):
            await self.handle(await self._post(statuses[status_id]))
        # Moved only once every post is handled: a crash before this reads them again (the ledger skips repeats).
        for stream, value in cursors.items():
            if value:
                self.store.set_cursor(stream, value)

    async def _read(self, stream: str, method: Any, *args: Any, **kwargs: Any) -> tuple[list[Any], str | None]:
        """Everything newer than the cursor: ``min_id`` gives the oldest page above it; its "prev" link the next.

        (Mastodon.py's ``fetch_next`` walks to *older* pages, ``max_id``; catching up is ``fetch_previous``.)
        """
        since = self.store.cursor(stream)
        page = await self._call(method, *args, min_id=since, limit=40, **kwargs)
        items = list(page)
        while since is not None and page and getattr(page, "_pagination_prev", None):
            page = await self._call(self.client.fetch_previous, page)
            items += list(page or [])
        # No cursor and nothing yet: "0", so that everything from now on is read, however many pages it takes.
        newest = max((str(item["id"]) for item in items), key=int, default=since or "0")
        return items, newest

    async def _post(self, status: Any) -> Post:
        account = status["account"]
        mentioned = {str(m["id"]) for m in status.get("mentions") or []}
        replies_to_bot = str(status.get("in_reply_to_account_id") or "") == self.me_id
        photo = photo_of(status)
        if photo is None and status.get("in_reply_to_id"):
            # "@bot deeper" in a reply to someone's photo dreams that photo.
            with contextlib.suppress(NotFound, MastodonFailure):
                photo = photo_of(await self._call(self.client.status, status["in_reply_to_id"]))
        return Post(
            id=str(status["id"]),
            text=plain_text(status.get("content") or ""),
            author_id=str(account["id"]),
            author_acct=account["acct"],
            author_bio=plain_text(account.get("note") or ""),
            author_is_bot=bool(account.get("bot")),
            visibility=status.get("visibility") or "public",
            sensitive=bool(status.get("sensitive")),
            spoiler_text=status.get("spoiler_text") or "",
            conversation_id=str(status.get("in_reply_to_id") or status["id"]),
            photo_url=photo,
            addressed=self.me_id in mentioned or replies_to_bot,
        )

    async def handle(self, post: Post) -> None:
        """One post: opt-outs, #nobot and the loop guard first, then a dream, a how-to or a short error reply."""
        if post.author_id == self.me_id or self.store.entry(post.id) is not None:
            return
        if wants_stop(post.text) and post.addressed:
            if self.store.opt_out(post.author_id, "stop") and self.store.receive(post.id, "optout"):
                await self._reply_text(post, "Done: I will not answer you again.")
            return
        blocked = {name.lower().lstrip("@") for name in self.settings.block_list}
        if self.store.opted_out(post.author_id) or post.author_acct.lower() in blocked or post.author_id in blocked:
            return
        if refuses_bots(post.author_bio):
            self.store.count("nobot_not_answered")
            return
        if post.author_is_bot:  # two bots answering each other forever is the loop to avoid
            self.store.count("bot_accounts_not_answered")
            return
        if self.store.answers_in_conversation(post.conversation_id) >= self.settings.answers_per_conversation:
            self.store.count("loop_guard")
            return
        tags = {t.lower() for t in self.settings.hashtags}
        text = " ".join(w for w in without_mentions(post.text).split() if w.lower() not in tags)
        if not post.addressed and post.photo_url is None:
            return  # a hashtag post without a photo, which nobody asked us about
        try:
            command = parse_command(text, has_image=post.photo_url is not None)
        except OptionError as error:
            if post.addressed:
                if post.photo_url is None:
                    if self.store.claim_howto(post.author_id) and self.store.receive(
                        post.id, "howto", post.conversation_id
                    ):
                        await self._reply_text(post, HOWTO.format(bot=self.me_acct))
                    return
                if self.store.receive(post.id, "error", post.conversation_id):
                    await self._reply_text(post, f"⚠️ {error}")
                return
            command = parse_command("", has_image=True)  # a hashtag post's words describe the photo: defaults
        if not self.store.receive(post.id, "dream", post.conversation_id, json.dumps({"author": post.author_id})):
            return
        try:
            image = await self._download(post.photo_url) if post.photo_url else None
            visibility = less_public(post.visibility, self.settings.max_visibility)
            address = {
                "post_id": post.id,
                "conversation_id": post.conversation_id,
                "acct": post.author_acct,
                "visibility": visibility,
                "sensitive": post.sensitive,
                "spoiler_text": post.spoiler_text,
                "public": visibility == "public",
            }
            requester = Requester(PLATFORM, post.author_id, post.author_acct)
            job = await self.service.submit(DreamRequest(command, requester, Destination(PLATFORM, address), image))
            self.store.update(post.id, job_id=job.id)
        except (MediaError, QueueError, OptionError) as error:
            self.store.update(post.id, kind="error")
            await self._reply_text(post, f"⚠️ {error}")

    async def _download(self, url: str) -> bytes:
        return await fetch_photo(self.session, url, self.keys.base_url, self.service.media_limits)

    # ------------------------------------------------------------------ answering

    def _text(self, acct: str, text: str) -> str:
        """A reply starts with the person's @: Mastodon delivers (and a direct post goes) only to those mentioned."""
        return f"@{acct} {text}"[: self.limits.characters]

    async def _reply_text(self, post: Post, text: str) -> None:
        await self._answer(
            post.id,
            self._text(post.author_acct, text),
            [],
            visibility=less_public(post.visibility, self.settings.max_visibility),
            sensitive=post.sensitive,
            spoiler_text=post.spoiler_text,
            key=f"{PLATFORM}:{post.id}",
        )

    async def _answer(
        self,
        post_id: str,
        text: str,
        media_ids: list[str],
        *,
        visibility: str,
        sensitive: bool,
        spoiler_text: str,
        key: str,
    ) -> str:
        async def create() -> str:
            status = await self._call(
                self.client.status_post,
                text,
                in_reply_to_id=post_id,
                media_ids=media_ids or None,
                visibility=visibility,
                sensitive=sensitive,
                spoiler_text=spoiler_text or None,
                idempotency_key=key,
            )
            return str(status["id"])

        return await post_once(self.store, post_id, create, lambda: self._find_reply(post_id))

    async def _find_reply(self, post_id: str) -> str | None:
        """The bot's reply to ``post_id``, if the instance has one (a crash after posting, before recording it)."""
        context = await self._call(self.client.status_context, post_id)
        for status in context.get("descendants") or []:
            if str(status["account"]["id"]) == self.me_id and str(status.get("in_reply_to_id")) == post_id:
                return str(status["id"])
        return None

    async def on_job(self, view: JobView) -> None:
        # A 404 (the post was deleted) or another refusal of the answer is final.
        await self._deliver_patiently(view, transient=(ConnectionError,), refusals=(NotFound, MastodonFailure))

    async def deliver(self, view: JobView) -> None:
        if (unanswered := self._unanswered(view)) is None:
            return
        post_id, entry = unanswered
        address = view.destination
        kwargs = {
            "visibility": address.get("visibility", "direct"),
            "sensitive": bool(address.get("sensitive")),
            "spoiler_text": address.get("spoiler_text", ""),
            "key": view.id,  # the job id: a retried post lands once
        }
        acct = address.get("acct", "")
        if view.state != "done" or view.result is None:
            await self._answer(
                post_id, self._text(acct, f"⚠️ {view.error or 'That dream was cancelled.'}"), [], **kwargs
            )
            return
        if entry.state == "posting":  # a crash after uploading: look for the reply before uploading again
            existing = await self._find_reply(post_id)
            if existing:
                self.store.update(post_id, state="posted", reply_id=existing)
                return
        key = view.result["key"]
        data = await asyncio.get_running_loop().run_in_executor(None, self.service.store.get, key)
        media_id = await self.upload(data, key.rsplit(".", 1)[-1], alt_text(view))
        caption = view.result.get("caption", "")
        await self._answer(post_id, self._text(acct, caption), [media_id], **kwargs)

    async def post_to_own_account(self, image: bytes, extension: str, text: str, alt: str, key: str) -> str:
        """A post on the bot's own timeline (the dream of the day), once per ``key``."""
        own, posted = self._own_post(key)
        if posted:
            return posted
        media_id = await self.upload(image, extension, alt)

        async def create() -> str:
            status = await self._call(
                self.client.status_post,
                text[: self.limits.characters],
                media_ids=[media_id],
                visibility=less_public("public", self.settings.max_visibility),
                idempotency_key=f"{PLATFORM}:{own}",
            )
            return str(status["id"])

        async def find() -> str | None:
            return None  # the idempotency key (kept an hour by the instance) and the intent row keep it single

        return await post_once(self.store, own, create, find)

    async def upload(self, data: bytes, extension: str, alt: str) -> str:
        """The picture fitted to the instance's limit, uploaded with its description; waits until processed."""
        data, extension = await asyncio.get_running_loop().run_in_executor(
            None, fit_result, data, extension, self.limits.image_bytes
        )
        await self.uploads_window.acquire(self.sleep)
        media = await self._call(
            self.client.media_post,
            data,
            mime_type=MEDIA_TYPES[extension],
            description=alt[: self.limits.description],
            file_name=f"dream.{extension}",
        )
        for _look in range(120):  # v2 upload: 202 with no url while the instance processes it
            if media.get("url"):
                break
            await self.sleep(self.media_check_seconds)
            media = await self._call(self.client.media, media["id"])
        else:
            raise ConnectionError("the instance did not finish processing the picture")
        return str(media["id"])


def streaming_url_of(instance: Any) -> str:
    """The streaming server's https address from ``instance_v2()`` (it gives wss://), or "" for the API's own."""
    url = ((instance.get("configuration") or {}).get("urls") or {}).get("streaming") or ""
    parts = urlsplit(url)
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}" if scheme in ("http", "https") and parts.netloc else ""


def _quietly(function: Any) -> None:
    with contextlib.suppress(Exception):
        function()


def photo_of(status: Any) -> str | None:
    for attachment in status.get("media_attachments") or []:
        if attachment.get("type") == "image" and attachment.get("url"):
            return attachment["url"]
    return None
