"""The Bluesky adapter: mentions and replies in, dreams out as threaded replies with the image. It only translates.

Reads poll ``app.bsky.notification.listNotifications`` (reasons mention and reply) down to the newest one already
handled, kept in the database with ``updateSeen`` told the same. The real ``atproto`` Client does every call, in an
executor. The session is made once (``createSession``, limited to 30 per 5 minutes and 300 a day) and kept in the
database; the client refreshes it and every new one is stored, so restarts do not log in again. Replies upload
the dream as a blob (fitted to 1,000,000 bytes), then create the post with an ``app.bsky.embed.images`` embed
(alt text, aspect ratio) and a reply reference (root and parent). Exactly once: the record key is derived from the
job, so a retried create finds its own record instead of making a second one. Writes are paced to Bluesky's
points (5,000 an hour, 35,000 a day; 3 per post); a 429 waits for its ``ratelimit-reset``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from atproto import Client, models
from atproto_client.exceptions import (
    BadRequestError,
    InvokeTimeoutError,
    NetworkError,
    RateLimitExceededError,
    RequestException,
    UnauthorizedError,
)
from PIL import Image

from bot.adapters.social import (
    Clock,
    RateLimited,
    RateWindow,
    SocialAdapter,
    fetch_photo,
    post_once,
    refuses_bots,
    wants_stop,
    without_mentions,
)
from bot.adapters.x import alt_text  # one wording for every platform
from bot.config import BlueskyConfig, BlueskyKeys
from bot.jobqueue import QueueError
from bot.media import MediaError, fit_result
from bot.options import OptionError, parse_command
from bot.requests import Destination, DreamRequest, Requester
from bot.service import DreamService, JobView

log = logging.getLogger(__name__)

PLATFORM = "bluesky"
IMAGE_LIMIT = 1_000_000  # bytes per image blob
TEXT_LIMIT = 300  # graphemes per post (characters here: never more graphemes than characters)
POST = "app.bsky.feed.post"
HOWTO = 'Mention me in a post with a photo (or in a reply to one) to dream it, e.g. "@{bot} deeper layer=block10".'
TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"


class BlueskyFailure(Exception):
    """Bluesky refused a call (a 4xx other than 401 and 429)."""


class SignInFailed(Exception):
    """The handle or app password was refused: a person has to fix the configuration."""


@dataclass(frozen=True)
class Post:
    uri: str
    cid: str
    text: str
    author_did: str
    author_handle: str
    author_bio: str
    root_uri: str
    root_cid: str
    photo_url: str | None
    indexed_at: str


def record_key(seed: str, at: float) -> str:
    """A TID (the record-key syntax of posts) fixed by ``seed``: the same answer always gets the same key.

    53 bits of microseconds from ``at`` (when the request came) and a 10-bit "clock id" from the seed.
    """
    clock_id = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:2], "big") & 0x3FF
    value = (int(at * 1_000_000) & ((1 << 53) - 1)) << 10 | clock_id
    return "".join(TID_ALPHABET[(value >> (5 * i)) & 31] for i in range(12, -1, -1))


def when(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


class BlueskyAdapter(SocialAdapter):
    platform = PLATFORM
    name = "Bluesky"
    settings: BlueskyConfig
    keys: BlueskyKeys

    def __init__(
        self,
        service: DreamService,
        settings: BlueskyConfig,
        keys: BlueskyKeys,
        *,
        clock: Clock = time.time,
        sleep: Any = asyncio.sleep,
    ) -> None:
        super().__init__(service, settings, keys, clock, sleep)
        self.client = Client(base_url=keys.service_url)
        self.client.on_session_change(self._session_changed)
        self._new_session: str | None = None
        self.session = requests.Session()
        self.logins = RateWindow(30, 300, clock)
        self.writes_hour = RateWindow(5000 // 3, 3600, clock)
        self.writes_day = RateWindow(35000 // 3, 86400, clock)
        self.me_did = ""
        self.me_handle = keys.handle

    # ------------------------------------------------------------------ calls and the session

    def _session_changed(self, event: Any, session: Any) -> None:
        # Called in the executor thread: only noted here, stored from the event loop after the call.
        self._new_session = session.encode()

    def _keep_session(self) -> None:
        if self._new_session is not None:
            self.store.set_cursor("session", self._new_session)  # secret-bearing: kept in the database only
            self._new_session = None

    async def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """A blocking call in the executor, with atproto's errors as ours; a refreshed session is stored."""

        def run() -> Any:
            try:
                return function(*args, **kwargs)
            except RateLimitExceededError as error:
                reset = error.reset_at
                raise RateLimited(reset.timestamp() if reset else self.clock() + 60) from None
            except UnauthorizedError as error:
                raise SignInFailed(str(error)) from None
            except (NetworkError, InvokeTimeoutError) as error:
                raise ConnectionError(str(error) or type(error).__name__) from None
            except BadRequestError as error:
                if _error_name(error) in ("ExpiredToken", "InvalidToken"):  # the refresh token is spent too
                    raise SignInFailed(str(error)) from None
                raise BlueskyFailure(str(error)) from None
            except RequestException as error:
                status = error.response.status_code if error.response is not None else 0
                if status >= 500 or status == 0:
                    raise ConnectionError(str(error)) from None
                raise BlueskyFailure(str(error)) from None

        try:
            return await asyncio.get_running_loop().run_in_executor(None, run)
        finally:
            self._keep_session()

    async def _write(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """A repository write, paced to the hourly and daily points."""
        await self.writes_hour.acquire(self.sleep)
        await self.writes_day.acquire(self.sleep)
        return await self._call(function, *args, **kwargs)

    async def sign_in(self) -> None:
        """The stored session if it still works (refreshed as needed), else one login with the app password."""
        stored = self.store.cursor("session")
        if stored:
            try:
                profile = await self._call(self.client.login, session_string=stored)
                self._signed_in(profile)
                return
            except (SignInFailed, BlueskyFailure) as error:
                log.info("Bluesky: the stored session no longer works (%s); logging in", error)
        await self.logins.acquire(self.sleep)
        try:
            profile = await self._call(self.client.login, self.keys.handle, self.keys.app_password)
        except SignInFailed:
            raise SignInFailed(
                f"Bluesky refused the handle {self.keys.handle!r} with that app password; check BLUESKY_HANDLE and "
                "BLUESKY_APP_PASSWORD (Settings > Privacy and security > App passwords)."
            ) from None
        self._signed_in(profile)

    def _signed_in(self, profile: Any) -> None:
        if profile is not None:  # the account's profile, which login() fetches
            self.me_did, self.me_handle = profile.did, profile.handle
        else:  # a PDS without app.bsky: the session itself knows the account
            session = self.client._session
            self.me_did, self.me_handle = session.did, session.handle

    # ------------------------------------------------------------------ life cycle

    async def start(self, *, poll: bool = True) -> None:
        """Sign in (reusing the stored session), post what a crash left unposted, then poll."""
        try:
            await self.sign_in()
        except Exception as error:
            self.store.record_state("stopped", str(error)[:300])
            raise
        log.info("Bluesky: signed in as @%s", self.me_handle)
        self.store.record_state("connected")
        await self._resume(poll)

    def status(self) -> dict[str, Any]:
        return self._status(account=self.me_handle)

    async def _pause_for(self, error: Exception) -> tuple[float, str] | None:
        if isinstance(error, SignInFailed):  # the session is gone: sign in again on the next turn
            wait = self.backoff.next_wait()
            self.store.record_state("backing off", str(error)[:200], self.clock() + wait)
            with contextlib.suppress(Exception):
                await self.sign_in()
            return wait, "signing in again"
        if isinstance(error, (ConnectionError, BlueskyFailure)):
            return self._back_off(error, "Bluesky unreachable or refusing")
        return await super()._pause_for(error)  # a rate limit

    # ------------------------------------------------------------------ reading

    async def poll_once(self) -> None:
        """Mentions and replies newer than the last one handled, oldest first, each once; then updateSeen."""
        seen = self.store.cursor("seen")
        # Notifications at exactly the last-seen time that were already read: two can share a timestamp.
        seen_uris = set(json.loads(self.store.cursor("seen_uris") or "[]"))

        def fresh(note: Any) -> bool:
            if seen is None:
                return True
            return when(note.indexed_at) > when(seen) or (note.indexed_at == seen and note.uri not in seen_uris)

        notes: list[Any] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 50, "reasons": ["mention", "reply"]}
            if cursor:
                params["cursor"] = cursor
            page = await self._call(self.client.app.bsky.notification.list_notifications, params=params)
            new = [n for n in page.notifications if fresh(n)]
            notes += new
            cursor = page.cursor
            if seen is None or len(new) < len(page.notifications) or not cursor:
                break  # caught up (a first start reads only the newest page)
        read = notes
        notes = [n for n in notes if n.reason in ("mention", "reply") and n.author.did != self.me_did]
        posts = await self._posts(notes)
        for post in sorted(posts, key=lambda p: when(p.indexed_at)):
            await self.handle(post)
        # Moved only once every post is handled: a crash before this reads them again (the ledger skips repeats).
        if read:
            newest = max((n.indexed_at for n in read), key=when)
            at_newest = {n.uri for n in read if n.indexed_at == newest} | (seen_uris if newest == seen else set())
            self.store.set_cursor("seen", newest)
            self.store.set_cursor("seen_uris", json.dumps(sorted(at_newest)))
            await self._call(self.client.app.bsky.notification.update_seen, {"seen_at": newest})

    async def _posts(self, notes: list[Any]) -> list[Post]:
        """The notifications as posts, with the photo of the post or, failing that, of the post it replies to."""
        parents = {n.uri: n.record.reply.parent.uri for n in notes if getattr(n.record, "reply", None)}
        uris = list(dict.fromkeys([*(n.uri for n in notes), *parents.values()]))
        views: dict[str, Any] = {}
        for start in range(0, len(uris), 25):  # getPosts takes 25 at a time
            found = await self._call(self.client.get_posts, uris[start : start + 25])
            views.update({view.uri: view for view in found.posts})
        posts = []
        for note in notes:
            if note.uri not in views:
                continue  # deleted since the notification
            reply = getattr(note.record, "reply", None)
            photo = photo_of(views[note.uri]) or (photo_of(views.get(parents.get(note.uri, ""))))
            posts.append(
                Post(
                    uri=note.uri,
                    cid=note.cid,
                    text=note.record.text or "",
                    author_did=note.author.did,
                    author_handle=note.author.handle,
                    author_bio=note.author.description or "",
                    root_uri=reply.root.uri if reply else note.uri,
                    root_cid=reply.root.cid if reply else note.cid,
                    photo_url=photo,
                    indexed_at=note.indexed_at,
                )
            )
        return posts

    async def handle(self, post: Post) -> None:
        """One post: opt-outs, #nobot and the loop guard first, then a dream, a how-to or a short error reply."""
        if post.author_did == self.me_did or self.store.entry(post.uri) is not None:
            return
        if wants_stop(post.text):
            if self.store.opt_out(post.author_did, "stop") and self.store.receive(post.uri, "optout"):
                await self._reply_text(post, "Done: I will not answer you again.")
            return
        blocked = {name.lower().lstrip("@") for name in self.settings.block_list}
        if self.store.opted_out(post.author_did) or post.author_handle.lower() in blocked or post.author_did in blocked:
            return
        if refuses_bots(post.author_bio):
            self.store.count("nobot_not_answered")
            return
        if self.store.answers_in_conversation(post.root_uri) >= self.settings.answers_per_conversation:
            self.store.count("loop_guard")
            return
        try:
            command = parse_command(without_mentions(post.text), has_image=post.photo_url is not None)
        except OptionError as error:
            if post.photo_url is None:
                if self.store.claim_howto(post.author_did) and self.store.receive(post.uri, "howto", post.root_uri):
                    await self._reply_text(post, HOWTO.format(bot=self.me_handle))
                return
            if self.store.receive(post.uri, "error", post.root_uri):
                await self._reply_text(post, f"⚠️ {error}")
            return
        address = {
            "post_id": post.uri,
            "cid": post.cid,
            "root_uri": post.root_uri,
            "root_cid": post.root_cid,
            "public": True,  # Bluesky posts are public
            "at": self.clock(),
        }
        if not self.store.receive(post.uri, "dream", post.root_uri, json.dumps(address)):
            return
        try:
            image = await self._download(post.photo_url) if post.photo_url else None
            requester = Requester(PLATFORM, post.author_did, post.author_handle)
            job = await self.service.submit(DreamRequest(command, requester, Destination(PLATFORM, address), image))
            self.store.update(post.uri, job_id=job.id)
        except (MediaError, QueueError, OptionError) as error:
            self.store.update(post.uri, kind="error")
            await self._reply_text(post, f"⚠️ {error}")

    async def _download(self, url: str) -> bytes:
        return await fetch_photo(self.session, url, self.keys.service_url, self.service.media_limits)

    # ------------------------------------------------------------------ answering

    async def _reply_text(self, post: Post, text: str) -> None:
        address = {"post_id": post.uri, "cid": post.cid, "root_uri": post.root_uri, "root_cid": post.root_cid}
        await self._answer(address, text, None, record_key(f"text:{post.uri}", when(post.indexed_at).timestamp()))

    def _reply_ref(self, address: dict[str, Any]) -> Any:
        strong = models.ComAtprotoRepoStrongRef.Main
        return models.AppBskyFeedPost.ReplyRef(
            root=strong(uri=address["root_uri"], cid=address["root_cid"]),
            parent=strong(uri=address["post_id"], cid=address["cid"]),
        )

    async def _answer(self, address: dict[str, Any] | None, text: str, embed: Any, rkey: str, own: str = "") -> str:
        """Create the post once under ``rkey``; a create whose answer was lost is found by that key."""
        ledger_id = own or address["post_id"]  # type: ignore[index]
        record = models.AppBskyFeedPost.Record(
            created_at=self.client.get_current_time_iso(),
            text=text[:TEXT_LIMIT],
            reply=self._reply_ref(address) if address else None,
            embed=embed,
            langs=["en"],
        )

        async def create() -> str:
            try:
                created = await self._write(self.client.app.bsky.feed.post.create, self.me_did, record, rkey=rkey)
                return created.uri
            except (BlueskyFailure, ConnectionError):
                existing = await find()  # "already exists", or an answer lost on the way: is it there?
                if existing:
                    return existing
                raise

        async def find() -> str | None:
            try:
                found = await self._call(self.client.app.bsky.feed.post.get, self.me_did, rkey)
                return found.uri
            except BlueskyFailure:  # RecordNotFound
                return None

        return await post_once(self.store, ledger_id, create, find)

    async def on_job(self, view: JobView) -> None:
        # A picture Bluesky will not take (MediaError) is as final as a refused call.
        await self._deliver_patiently(
            view, transient=(ConnectionError, SignInFailed), refusals=(BlueskyFailure, MediaError)
        )

    async def deliver(self, view: JobView) -> None:
        if (unanswered := self._unanswered(view)) is None:
            return
        post_id, entry = unanswered
        address = view.destination
        rkey = record_key(f"job:{view.id}", float(address.get("at") or view.created_at))
        if entry.state == "posting":  # a crash after creating: the record key tells
            with contextlib.suppress(BlueskyFailure):
                found = await self._call(self.client.app.bsky.feed.post.get, self.me_did, rkey)
                self.store.update(post_id, state="posted", reply_id=found.uri)
                return
        # Bluesky does not refuse a reply to a deleted post (it would hang alone): look first.
        if not (await self._call(self.client.get_posts, [post_id])).posts:
            log.info("Bluesky: post %s was deleted; its dream is not posted", post_id)
            self._skip(post_id, "originals_deleted")
            return
        if view.state != "done" or view.result is None:
            await self._answer(address, f"⚠️ {view.error or 'That dream was cancelled.'}", None, rkey)
            return
        key = view.result["key"]
        data = await asyncio.get_running_loop().run_in_executor(None, self.service.store.get, key)
        embed = await self.image_embed(data, key.rsplit(".", 1)[-1], alt_text(view))
        await self._answer(address, view.result.get("caption", ""), embed, rkey)

    async def image_embed(self, data: bytes, extension: str, alt: str) -> Any:
        """The picture fitted to Bluesky's 1,000,000 bytes, uploaded, as an images embed with alt and ratio."""
        data, extension = await asyncio.get_running_loop().run_in_executor(
            None, fit_result, data, extension, IMAGE_LIMIT
        )
        with Image.open(io.BytesIO(data)) as picture:
            width, height = picture.size
        uploaded = await self._call(self.client.upload_blob, data)
        image = models.AppBskyEmbedImages.Image(
            alt=alt[:2000],
            image=uploaded.blob,
            aspect_ratio=models.AppBskyEmbedDefs.AspectRatio(width=width, height=height),
        )
        return models.AppBskyEmbedImages.Main(images=[image])

    async def post_to_own_account(self, image: bytes, extension: str, text: str, alt: str, key: str) -> str:
        """A post on the bot's own feed (the dream of the day), once per ``key``."""
        own = f"own:{key}"
        # The record key is fixed at the first try (and kept in the ledger), so a retry finds that post.
        self.store.receive(own, "own", address=json.dumps({"rkey": record_key(own, self.clock())}))
        entry = self.store.entry(own)
        assert entry is not None
        if entry.state == "posted" and entry.reply_id:
            return entry.reply_id
        embed = await self.image_embed(image, extension, alt)
        return await self._answer(None, text, embed, json.loads(entry.address)["rkey"], own=own)


def _error_name(error: Any) -> str:
    """The XRPC error name of a failed call ("ExpiredToken", "RecordNotFound", ...)."""
    content = getattr(getattr(error, "response", None), "content", None)
    return getattr(content, "error", "") or ""


def photo_of(view: Any) -> str | None:
    """The first image's full-size URL of a post view (also inside a quote with media)."""
    embed = getattr(view, "embed", None)
    media = getattr(embed, "media", None) or embed  # app.bsky.embed.recordWithMedia#view holds it in .media
    for image in getattr(media, "images", None) or []:
        if getattr(image, "fullsize", None):
            return image.fullsize
    return None
