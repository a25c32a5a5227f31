"""A strict fake Mastodon instance on loopback (aiohttp, in a thread of its own), for the real Mastodon.py client.

It speaks the parts of Mastodon's REST API the adapter uses, with Mastodon's own answers and refusals:

- ``/api/v1/instance`` and ``/api/v2/instance`` (the limits: image size, description length, characters);
- the bearer token on every call (401 otherwise), ``verify_credentials`` and ``update_credentials`` (the bot flag);
- notifications filtered by ``types[]`` and paged by ``min_id`` / ``max_id`` / ``since_id`` with a ``Link`` header;
- statuses, their context, a hashtag timeline; a deleted status is 404 ``Record not found``;
- media upload through ``/api/v2/media``: 202 with ``url: null``, then 206 on the first look, 200 after
  (the "still processing" moment); files over ``image_size_limit`` and descriptions over ``description_limit``
  are 422, as is posting media still processing, more than 4 media, an unknown media id or one already attached;
- ``POST /api/v1/statuses`` honouring ``Idempotency-Key`` (the same key gives back the same status), refusing text
  over ``max_characters`` (422) and a reply to a deleted status (404);
- injected failures: any status code for a route (429 comes with ``X-RateLimit-Reset``), and a created status whose
  answer is lost (504 after the status is made), as after a crash or a gateway timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from fake_server import ThreadedFake

TOKEN = "test-mastodon-token"
BOT_ID = "1000"


@dataclass
class Account:
    id: str
    username: str
    note: str = ""  # HTML, as Mastodon serves a bio
    bot: bool = False


@dataclass
class Media:
    id: str
    data: bytes
    mime: str
    description: str | None
    looks: int = 0  # GET /api/v1/media/:id calls; the first answers "still processing"
    status_id: str | None = None

    @property
    def processed(self) -> bool:
        return self.looks >= 1


@dataclass
class Status:
    id: str
    account: Account
    text: str
    visibility: str = "public"
    in_reply_to_id: str | None = None
    media_ids: list[str] = field(default_factory=list)
    sensitive: bool = False
    spoiler_text: str = ""
    deleted: bool = False
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


class FakeMastodon(ThreadedFake):
    thread_name = "fake-mastodon"

    def __init__(
        self,
        *,
        image_size_limit: int = 16 * 1024 * 1024,
        description_limit: int = 1500,
        max_characters: int = 500,
        page_size: int = 40,
    ) -> None:
        self.image_size_limit = image_size_limit
        self.description_limit = description_limit
        self.max_characters = max_characters
        self.page_size = page_size  # the most a page holds, whatever limit is asked for
        self.ids = itertools.count(2000)
        self.accounts: dict[str, Account] = {BOT_ID: Account(BOT_ID, "dreambot")}
        self.statuses: dict[str, Status] = {}
        self.notifications: list[tuple[str, str, str, str]] = []  # (id, type, account id, status id)
        self.media: dict[str, Media] = {}
        self.idempotency: dict[str, str] = {}
        self.files: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []
        self.refused: list[tuple[str, int, str]] = []  # (route, status, error) of every 4xx the fake gave
        self.failures: list[tuple[str, str, int, dict[str, str], int]] = []
        self.streaming = True  # False: the instance serves no stream (404), as some do
        self.streams: list[web.StreamResponse] = []  # open user streams
        self.lose_answer_of_create = 0  # this many created statuses get a 504 instead of their answer

    # ------------------------------------------------------------------ running

    def _application(self) -> web.Application:
        return web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)

    # ------------------------------------------------------------------ the world, for tests

    def user(self, username: str, note: str = "", bot: bool = False) -> Account:
        account = Account(str(next(self.ids)), username, f"<p>{html.escape(note)}</p>" if note else "", bot)
        self.accounts[account.id] = account
        return account

    def post(
        self,
        account: Account,
        text: str,
        *,
        photo: bytes | None = None,
        visibility: str = "public",
        reply_to: str | None = None,
        sensitive: bool = False,
        spoiler_text: str = "",
    ) -> str:
        """A status by ``account``; one that mentions @dreambot (or replies to it) notifies the bot."""
        status = Status(str(next(self.ids)), account, text, visibility, reply_to, [], sensitive, spoiler_text)
        if photo is not None:
            media = Media(str(next(self.ids)), photo, "image/jpeg", None, looks=1, status_id=status.id)
            self.media[media.id] = media
            self.files[f"{media.id}.jpg"] = photo
            status.media_ids.append(media.id)
        self.statuses[status.id] = status
        replied = self.statuses.get(reply_to or "")
        if self._mentions(text, "dreambot") or (replied is not None and replied.account.id == BOT_ID):
            note_id = str(next(self.ids))
            self.notifications.append((note_id, "mention", account.id, status.id))
            self._push(note_id)
        return status.id

    def _push(self, note_id: str) -> None:
        """The notification to every open user stream, as Mastodon's streaming server sends it."""
        assert self.loop is not None
        [item] = [self._notification_entity(n) for n in self.notifications if n[0] == note_id]
        frame = f"event: notification\ndata: {json.dumps(item)}\n\n".encode()

        async def send() -> None:
            for stream in list(self.streams):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await stream.write(frame)

        asyncio.run_coroutine_threadsafe(send(), self.loop).result(10)

    def break_streams(self) -> None:
        """Every open stream is cut mid-way (a restart of the streaming server, a proxy timing out)."""
        assert self.loop is not None

        def cut() -> None:
            for stream in self.streams:
                transport = stream._req.transport if stream._req is not None else None  # type: ignore[attr-defined]
                if transport is not None:
                    transport.abort()
            self.streams.clear()

        self.loop.call_soon_threadsafe(cut)

    def favourite(self, account: Account, status_id: str) -> None:
        """A notification of another type, which a mentions-only read must not return."""
        self.notifications.append((str(next(self.ids)), "favourite", account.id, status_id))

    def delete(self, status_id: str) -> None:
        self.statuses[status_id].deleted = True

    def replies_by_bot(self, status_id: str | None = None) -> list[Status]:
        return [
            s
            for s in self.statuses.values()
            if s.account.id == BOT_ID and s.in_reply_to_id == status_id and not s.deleted
        ]

    def fail(self, method: str, path: str, status: int, headers: dict[str, str] | None = None, times: int = 1) -> None:
        self.failures.append((method, path, status, headers or {}, times))

    @staticmethod
    def _mentions(text: str, username: str) -> bool:
        return any(word.lower().lstrip("@").split("@")[0] == username for word in text.split() if word.startswith("@"))

    # ------------------------------------------------------------------ HTTP

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls.append((request.method, request.path))
        for index, (method, path, status, headers, times) in enumerate(self.failures):
            if method == request.method and path == request.path and times > 0:
                self.failures[index] = (method, path, status, headers, times - 1)
                return self._error(request.path, status, "injected", headers)
        public = not request.path.startswith("/api/") or request.path.rstrip("/") in (
            "/api/v1/instance",
            "/api/v2/instance",
            "/api/v1/streaming/health",
        )
        if not public and request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._error(request.path, 401, "The access token is invalid")
        return await handler(request)

    def _json(self, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            body=json.dumps(value).encode(),
            status=status,
            headers={"Content-Type": "application/json", **(headers or {})},
        )

    def _error(self, route: str, status: int, error: str, headers: dict[str, str] | None = None) -> web.Response:
        if 400 <= status < 500:
            self.refused.append((route, status, error))
        return self._json({"error": error}, status, headers)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        """Query and form (or JSON) parameters, with Rails' ``key[]`` lists."""
        values: dict[str, Any] = {}
        sources: list[Any] = [request.query]
        if request.method in ("POST", "PATCH", "PUT"):
            if request.content_type == "application/json":
                return {**dict(request.query), **(await request.json())}
            sources.append(await request.post())
        for source in sources:
            for key in set(source.keys()):
                if key.endswith("[]"):
                    values[key[:-2]] = source.getall(key)
                else:
                    values[key] = source.get(key)
        return values

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path, method = request.path.rstrip("/") or "/", request.method  # Rails takes a trailing slash
        params = await self._params(request)
        parts = path.strip("/").split("/")
        if path.startswith("/files/"):
            data = self.files.get(parts[-1])
            return web.Response(body=data, content_type="image/jpeg") if data else web.Response(status=404)
        if path == "/api/v1/instance":
            return self._json({"uri": "127.0.0.1", "title": "Fake", "version": "4.4.0", "urls": {}})
        if path == "/api/v2/instance":
            return self._json(self._instance_v2())
        if path == "/api/v1/accounts/verify_credentials":
            return self._json(self._account(self.accounts[BOT_ID]))
        if path == "/api/v1/accounts/update_credentials" and method == "PATCH":
            if "bot" in params:
                self.accounts[BOT_ID].bot = str(params["bot"]).lower() in ("1", "true")
            return self._json(self._account(self.accounts[BOT_ID]))
        if path == "/api/v1/streaming/health" and method == "GET":
            return web.Response(text="OK") if self.streaming else self._error(path, 404, "Not found")
        if path == "/api/v1/streaming/user" and method == "GET":
            return await self._stream(request)
        if path == "/api/v1/timelines/public" and method == "GET":
            return self._json([])
        if path == "/api/v1/notifications" and method == "GET":
            return self._notifications(params)
        if path.startswith("/api/v1/timelines/tag/") and method == "GET":
            tag = parts[-1].lower()
            found = [s for s in self.statuses.values() if not s.deleted and f"#{tag}" in s.text.lower()]
            return self._page(path, params, [(s.id, self._status(s)) for s in found])
        if path == "/api/v2/media" and method == "POST":
            return self._upload(params)
        if len(parts) == 4 and parts[:3] == ["api", "v1", "media"] and method == "GET":
            media = self.media.get(parts[3])
            if media is None or media.status_id is not None:
                return self._error(path, 404, "Record not found")
            media.looks += 1
            return self._json(self._media(media, ready=media.looks > 1), 200 if media.looks > 1 else 206)
        if path == "/api/v1/statuses" and method == "POST":
            return self._create(path, params, request.headers.get("Idempotency-Key"))
        if len(parts) >= 4 and parts[:3] == ["api", "v1", "statuses"] and method == "GET":
            status = self.statuses.get(parts[3])
            if status is None or status.deleted:
                return self._error(path, 404, "Record not found")
            if len(parts) == 5 and parts[4] == "context":
                return self._json(
                    {"ancestors": [], "descendants": [self._status(s) for s in self._descendants(status)]}
                )
            return self._json(self._status(status))
        return self._error(path, 404, "Endpoint not found")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if not self.streaming:
            return self._error(request.path, 404, "Not found")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b":)\n")
        self.streams.append(response)
        try:
            while response in self.streams:
                await asyncio.sleep(0.05)
                if request.transport is None or request.transport.is_closing():
                    break
                await response.write(b":thump\n")  # the heartbeat (every 15 s on Mastodon; quicker here)
        finally:
            if response in self.streams:
                self.streams.remove(response)
        return response

    def _instance_v2(self) -> dict[str, Any]:
        return {
            "domain": "127.0.0.1",
            "title": "Fake",
            "version": "4.4.0",
            "api_versions": {"mastodon": 6},
            "configuration": {
                "urls": {"streaming": ""},
                "statuses": {"max_characters": self.max_characters, "max_media_attachments": 4},
                "media_attachments": {
                    "supported_mime_types": ["image/jpeg", "image/png", "image/gif", "image/webp"],
                    "image_size_limit": self.image_size_limit,
                    "image_matrix_limit": 33177600,
                    "description_limit": self.description_limit,
                },
            },
        }

    def _notifications(self, params: dict[str, Any]) -> web.Response:
        types = params.get("types")
        chosen = [n for n in self.notifications if not types or n[1] in types]
        items = []
        for note in chosen:
            if self.statuses[note[3]].deleted:
                continue  # Mastodon removes the notification with its status
            items.append((note[0], self._notification_entity(note)))
        return self._page("/api/v1/notifications", params, items)

    def _page(self, path: str, params: dict[str, Any], items: list[tuple[str, dict[str, Any]]]) -> web.Response:
        """Mastodon's paging: newest first; ``min_id`` gives the page just above it, ``max_id`` the one below."""
        limit = min(int(params.get("limit") or 20), self.page_size)
        items = sorted(items, key=lambda item: int(item[0]))
        if params.get("max_id"):
            items = [i for i in items if int(i[0]) < int(params["max_id"])]
        if params.get("since_id"):
            items = [i for i in items if int(i[0]) > int(params["since_id"])]
        if params.get("min_id"):
            items = [i for i in items if int(i[0]) > int(params["min_id"])][:limit]
        else:
            items = items[-limit:]
        items.reverse()
        headers = {}
        if items:
            base = f"{self.base_url}{path}?limit={limit}"
            headers["Link"] = f'<{base}&max_id={items[-1][0]}>; rel="next", <{base}&min_id={items[0][0]}>; rel="prev"'
        return self._json([item for _, item in items], headers=headers)

    def _upload(self, params: dict[str, Any]) -> web.Response:
        upload = params.get("file")
        if upload is None or not hasattr(upload, "file"):
            return self._error("/api/v2/media", 422, "Validation failed: File can't be blank")
        data = upload.file.read()
        description = params.get("description")
        if len(data) > self.image_size_limit:
            return self._error(
                "/api/v2/media", 422, f"Validation failed: File file size must be less than {self.image_size_limit}"
            )
        if description is not None and len(description) > self.description_limit:
            return self._error(
                "/api/v2/media",
                422,
                f"Validation failed: Description is too long (maximum is {self.description_limit} characters)",
            )
        media = Media(str(next(self.ids)), data, upload.content_type, description)
        self.media[media.id] = media
        return self._json(self._media(media, ready=False), 202)

    def _create(self, path: str, params: dict[str, Any], key: str | None) -> web.Response:
        if key and key in self.idempotency:
            return self._json(self._status(self.statuses[self.idempotency[key]]))
        text = params.get("status") or ""
        media_ids = params.get("media_ids") or []
        if not text and not media_ids:
            return self._error(path, 422, "Validation failed: Text can't be blank")
        if len(text) > self.max_characters:
            return self._error(path, 422, f"Validation failed: Text character limit of {self.max_characters} exceeded")
        if len(media_ids) > 4:
            return self._error(path, 422, "Validation failed: Cannot attach more than 4 files")
        missing = [m for m in media_ids if m not in self.media or self.media[m].status_id is not None]
        if missing:
            return self._error(
                path, 422, f"Validation failed: Media with ID(s) {', '.join(missing)} could not be found"
            )
        if any(not self.media[m].processed for m in media_ids):
            return self._error(
                path, 422, "Cannot attach files that have not finished processing. Try again in a moment!"
            )
        visibility = params.get("visibility") or "public"
        if visibility not in ("public", "unlisted", "private", "direct"):
            return self._error(path, 422, "Validation failed: Visibility is not included in the list")
        reply_to = params.get("in_reply_to_id")
        if reply_to and (reply_to not in self.statuses or self.statuses[reply_to].deleted):
            return self._error(path, 404, "Record not found")
        status = Status(
            str(next(self.ids)),
            self.accounts[BOT_ID],
            text,
            visibility,
            reply_to,
            list(media_ids),
            str(params.get("sensitive", "0")).lower() in ("1", "true"),
            params.get("spoiler_text") or "",
        )
        for media_id in media_ids:
            self.media[media_id].status_id = status.id
        self.statuses[status.id] = status
        if key:
            self.idempotency[key] = status.id
        if self.lose_answer_of_create:
            self.lose_answer_of_create -= 1
            return self._json({"error": "Gateway timeout"}, 504)
        return self._json(self._status(status))

    def _descendants(self, status: Status) -> list[Status]:
        found, frontier = [], [status.id]
        while frontier:
            children = [s for s in self.statuses.values() if s.in_reply_to_id in frontier and not s.deleted]
            found += children
            frontier = [s.id for s in children]
        return found

    # ------------------------------------------------------------------ entities

    def _account(self, account: Account) -> dict[str, Any]:
        return {
            "id": account.id,
            "username": account.username,
            "acct": account.username,
            "display_name": account.username,
            "note": account.note,
            "bot": account.bot,
            "locked": False,
            "url": f"{self.base_url}/@{account.username}",
            "created_at": "2024-01-01T00:00:00.000Z",
            "fields": [],
            "emojis": [],
        }

    def _notification_entity(self, note: tuple[str, str, str, str]) -> dict[str, Any]:
        note_id, kind, account_id, status_id = note
        status = self.statuses[status_id]
        return {
            "id": note_id,
            "type": kind,
            "created_at": status.created_at,
            "account": self._account(self.accounts[account_id]),
            "status": self._status(status),
        }

    def _media(self, media: Media, *, ready: bool = True) -> dict[str, Any]:
        url = f"{self.base_url}/files/{media.id}.jpg" if ready else None
        return {"id": media.id, "type": "image", "url": url, "preview_url": url, "description": media.description}

    def _content(self, text: str) -> str:
        """The text as Mastodon renders it: mentions as h-cards, hashtags as links, in a paragraph."""
        words = []
        for word in text.split():
            if word.startswith("@") and len(word) > 1:
                name = word[1:]
                words.append(
                    f'<span class="h-card"><a href="{self.base_url}/@{name}" class="u-url mention">'
                    f"@<span>{html.escape(name)}</span></a></span>"
                )
            elif word.startswith("#") and len(word) > 1:
                words.append(
                    f'<a href="{self.base_url}/tags/{word[1:]}" class="mention hashtag">#<span>{word[1:]}</span></a>'
                )
            else:
                words.append(html.escape(word))
        return f"<p>{' '.join(words)}</p>"

    def _status(self, status: Status) -> dict[str, Any]:
        mentioned = [
            self._account(a)
            for a in self.accounts.values()
            if any(w.startswith("@") and w[1:].lower() == a.username for w in status.text.split())
        ]
        replied = self.statuses.get(status.in_reply_to_id or "")
        return {
            "id": status.id,
            "uri": f"{self.base_url}/statuses/{status.id}",
            "url": f"{self.base_url}/@{status.account.username}/{status.id}",
            "created_at": status.created_at,
            "account": self._account(status.account),
            "content": self._content(status.text),
            "visibility": status.visibility,
            "sensitive": status.sensitive,
            "spoiler_text": status.spoiler_text,
            "in_reply_to_id": status.in_reply_to_id,
            "in_reply_to_account_id": replied.account.id if replied else None,
            "media_attachments": [self._media(self.media[m]) for m in status.media_ids],
            "mentions": [
                {"id": m["id"], "username": m["username"], "acct": m["acct"], "url": m["url"]} for m in mentioned
            ],
            "tags": [],
            "emojis": [],
            "reblog": None,
        }
