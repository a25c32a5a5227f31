"""A strict fake Bluesky (PDS and AppView in one XRPC server on loopback) for the real ``atproto`` Client.

What it checks, as the real service does:

- ``com.atproto.server.createSession`` takes the handle and the app password only (the account password is
  refused, as a bot must never hold it); logins are counted. Access tokens are JWTs with an ``exp`` the client
  reads; ``refreshSession`` rotates the refresh token, so an old one is refused (``ExpiredToken``);
- every other call needs a live access token (401 ``ExpiredToken`` / ``InvalidToken`` otherwise);
- ``app.bsky.notification.listNotifications`` newest first, ``reasons`` filtered, paged by ``cursor``;
  ``updateSeen`` records ``seenAt``; ``app.bsky.feed.getPosts`` leaves out deleted posts;
- ``com.atproto.repo.uploadBlob`` refuses more than 1,000,000 bytes (``BlobTooLarge``) and anything that is not
  an image; ``createRecord`` of an ``app.bsky.feed.post`` is checked against the lexicon's required fields
  (``text``, ``createdAt``; a reply's ``root`` and ``parent`` strong refs with ``uri`` and ``cid``; an
  ``app.bsky.embed.images`` embed with at most 4 images, each with ``alt`` and a blob uploaded by this account,
  an ``aspectRatio`` with ``width`` and ``height`` of at least 1), text of at most 300 characters, an ``rkey`` in
  TID syntax, and an existing rkey refused; ``getRecord`` answers ``RecordNotFound`` for a missing one;
- injected failures for any method (429 with ``ratelimit-reset``), and a created record whose answer is lost.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web
from fake_server import ThreadedFake

HANDLE = "dreambot.test"
APP_PASSWORD = "abcd-efgh-ijkl-mnop"
ACCOUNT_PASSWORD = "hunter2-the-real-one"
BOT_DID = "did:plc:dreambotdreambotdreambot"
IMAGE_LIMIT = 1_000_000
TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def cid_of(data: bytes) -> str:
    return "bafkrei" + base64.b32encode(hashlib.sha256(data).digest()).decode().lower().rstrip("=")[:52]


@dataclass
class Actor:
    did: str
    handle: str
    description: str = ""


@dataclass
class Post:
    uri: str
    cid: str
    author: Actor
    record: dict[str, Any]
    indexed_at: str
    image: bytes | None = None  # an image the author posted (served on the fake CDN)
    deleted: bool = False

    @property
    def rkey(self) -> str:
        return self.uri.rsplit("/", 1)[-1]


@dataclass
class Notification:
    post: Post
    reason: str
    indexed_at: str


@dataclass
class Blob:
    cid: str
    data: bytes
    mime: str


@dataclass
class Failure:
    method: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1


class FakeBluesky(ThreadedFake):
    thread_name = "fake-bluesky"

    def __init__(self, *, access_lifetime: float = 7200, page_size: int = 50) -> None:
        self.access_lifetime = access_lifetime  # seconds; under 15 minutes makes the client refresh at once
        self.page_size = page_size
        self.ids = itertools.count(1)
        self.clock = itertools.count(1)
        self.me = Actor(BOT_DID, HANDLE)
        self.actors: dict[str, Actor] = {BOT_DID: self.me}
        self.posts: dict[str, Post] = {}
        self.notifications: list[Notification] = []
        self.blobs: dict[str, Blob] = {}
        self.access_tokens: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.logins = 0
        self.refreshes = 0
        self.seen_at: str | None = None
        self.calls: list[str] = []
        self.refused: list[tuple[str, int, str]] = []
        self.failures: list[Failure] = []
        self.lose_answer_of_create = 0

    # ------------------------------------------------------------------ running

    def _application(self) -> web.Application:
        return web.Application(client_max_size=16 * 1024 * 1024)

    # ------------------------------------------------------------------ the world, for tests

    def _now(self) -> str:
        """Strictly increasing timestamps, so "newer than" is never ambiguous in a test."""
        at = datetime(2026, 3, 10, 12, tzinfo=UTC) + timedelta(milliseconds=next(self.clock))
        return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def user(self, name: str, description: str = "") -> Actor:
        actor = Actor(f"did:plc:{name:a<24}"[:32], f"{name}.test", description)
        self.actors[actor.did] = actor
        return actor

    def post(self, author: Actor, text: str, *, photo: bytes | None = None, reply_to: Post | None = None) -> Post:
        """A post by ``author``; one mentioning @dreambot.test notifies "mention", one replying to the bot "reply"."""
        rkey = self._tid()
        record: dict[str, Any] = {"$type": "app.bsky.feed.post", "text": text, "createdAt": self._now()}
        if reply_to is not None:
            root = reply_to.record.get("reply", {}).get("root") or {"uri": reply_to.uri, "cid": reply_to.cid}
            record["reply"] = {"root": root, "parent": {"uri": reply_to.uri, "cid": reply_to.cid}}
        if photo is not None:
            blob = {"$type": "blob", "ref": {"$link": cid_of(photo)}, "mimeType": "image/jpeg", "size": len(photo)}
            record["embed"] = {"$type": "app.bsky.embed.images", "images": [{"alt": "", "image": blob}]}
        post = Post(
            f"at://{author.did}/app.bsky.feed.post/{rkey}",
            cid_of(json.dumps(record).encode()),
            author,
            record,
            self._now(),
            photo,
        )
        self.posts[post.uri] = post
        if f"@{HANDLE}" in text:
            self.notifications.append(Notification(post, "mention", post.indexed_at))
        elif reply_to is not None and reply_to.author.did == BOT_DID:
            self.notifications.append(Notification(post, "reply", post.indexed_at))
        return post

    def like(self, author: Actor, post: Post) -> None:
        """A notification of another reason, which a mentions-and-replies read must not return."""
        self.notifications.append(Notification(post, "like", self._now()))

    def delete(self, post: Post) -> None:
        post.deleted = True

    def replies_by_bot(self, post: Post | None = None) -> list[Post]:
        found = []
        for candidate in self.posts.values():
            if candidate.author.did != BOT_DID or candidate.deleted:
                continue
            parent = (candidate.record.get("reply") or {}).get("parent", {}).get("uri")
            if parent == (post.uri if post else None):
                found.append(candidate)
        return found

    def revoke_sessions(self) -> None:
        """Every token stops working (a password change, or the app password revoked and made again)."""
        self.access_tokens.clear()
        self.refresh_tokens.clear()

    def fail(self, method: str, status: int, headers: dict[str, str] | None = None, times: int = 1) -> None:
        self.failures.append(Failure(method, status, headers or {}, times))

    def _tid(self) -> str:
        alphabet = "234567abcdefghijklmnopqrstuvwxyz"
        value = (int(time.time() * 1_000_000) + next(self.ids)) << 10
        return "".join(alphabet[(value >> (5 * i)) & 31] for i in range(12, -1, -1))

    # ------------------------------------------------------------------ sessions

    def _session(self) -> dict[str, Any]:
        serial = next(self.ids)
        now = int(time.time())
        header = _b64({"typ": "at+jwt", "alg": "ES256K"})
        access_claims = {"scope": "com.atproto.appPass", "sub": BOT_DID, "iat": now, "jti": f"a{serial}"}
        access_claims["exp"] = now + int(self.access_lifetime)
        refresh_claims = {"scope": "com.atproto.refresh", "sub": BOT_DID, "iat": now, "jti": f"r{serial}"}
        refresh_claims["exp"] = now + 90 * 86400
        access = f"{header}.{_b64(access_claims)}.c2ln"
        refresh = f"{header}.{_b64(refresh_claims)}.c2ln"
        self.access_tokens.add(access)
        self.refresh_tokens.add(refresh)
        return {"accessJwt": access, "refreshJwt": refresh, "handle": HANDLE, "did": BOT_DID, "active": True}

    # ------------------------------------------------------------------ HTTP

    def _json(self, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            body=json.dumps(value).encode(),
            status=status,
            headers={"Content-Type": "application/json; charset=utf-8", **(headers or {})},
        )

    def _error(
        self, method: str, status: int, error: str, message: str = "", headers: dict[str, str] | None = None
    ) -> web.Response:
        if 400 <= status < 500:
            self.refused.append((method, status, error))
        return self._json({"error": error, "message": message or error}, status, headers)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/img/"):
            post = self.posts.get(request.query.get("uri", ""))
            if post is None or post.image is None or post.deleted:
                return web.Response(status=404)
            return web.Response(body=post.image, content_type="image/jpeg")
        if not request.path.startswith("/xrpc/"):
            return web.Response(status=404)
        method = request.path[len("/xrpc/") :]
        self.calls.append(method)
        for failure in self.failures:
            if failure.method == method and failure.times > 0:
                failure.times -= 1
                return self._error(
                    method,
                    failure.status,
                    "RateLimitExceeded" if failure.status == 429 else "Injected",
                    headers=failure.headers,
                )
        auth = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if method == "com.atproto.server.createSession":
            body = await request.json()
            if body.get("identifier") not in (HANDLE, BOT_DID) or body.get("password") != APP_PASSWORD:
                return self._error(method, 401, "AuthenticationRequired", "Invalid identifier or password")
            self.logins += 1
            return self._json(self._session())
        if method == "com.atproto.server.refreshSession":
            if auth not in self.refresh_tokens:
                return self._error(method, 400, "ExpiredToken", "Token has been revoked")
            self.refresh_tokens.discard(auth)  # rotated: the old refresh token is spent
            self.refreshes += 1
            return self._json(self._session())
        if auth not in self.access_tokens:
            return self._error(method, 401, "InvalidToken", "Bad token")
        if _expired(auth):
            return self._error(method, 400, "ExpiredToken", "Token has expired")
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return self._error(method, 501, "MethodNotImplemented", f"{method} is not served here")
        return await handler(request)

    async def _app_bsky_actor_getProfile(self, request: web.Request) -> web.Response:
        actor = next((a for a in self.actors.values() if request.query.get("actor") in (a.did, a.handle)), None)
        if actor is None:
            return self._error("app.bsky.actor.getProfile", 400, "InvalidRequest", "Profile not found")
        return self._json(self._profile(actor))

    async def _app_bsky_notification_listNotifications(self, request: web.Request) -> web.Response:
        reasons = request.query.getall("reasons", [])
        limit = min(int(request.query.get("limit", 50)), self.page_size)
        start = int(request.query.get("cursor") or 0)
        chosen = [
            n for n in reversed(self.notifications) if (not reasons or n.reason in reasons) and not n.post.deleted
        ]
        page = chosen[start : start + limit]
        answer: dict[str, Any] = {"notifications": [self._notification(n) for n in page]}
        if start + limit < len(chosen):
            answer["cursor"] = str(start + limit)
        if self.seen_at:
            answer["seenAt"] = self.seen_at
        return self._json(answer)

    async def _app_bsky_notification_updateSeen(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "seenAt" not in body:
            return self._error(
                "app.bsky.notification.updateSeen", 400, "InvalidRequest", 'Input must have the property "seenAt"'
            )
        self.seen_at = body["seenAt"]
        return web.Response(status=200)

    async def _app_bsky_feed_getPosts(self, request: web.Request) -> web.Response:
        uris = request.query.getall("uris", [])
        if len(uris) > 25:
            return self._error(
                "app.bsky.feed.getPosts", 400, "InvalidRequest", "uris must not have more than 25 elements"
            )
        found = [self._post_view(self.posts[u]) for u in uris if u in self.posts and not self.posts[u].deleted]
        return self._json({"posts": found})

    async def _com_atproto_repo_uploadBlob(self, request: web.Request) -> web.Response:
        data = await request.read()
        method = "com.atproto.repo.uploadBlob"
        if len(data) > IMAGE_LIMIT:
            return self._error(
                method,
                400,
                "BlobTooLarge",
                f"This file is too large. It is {len(data)} bytes, the limit is {IMAGE_LIMIT}.",
            )
        mime = request.content_type
        if not data.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF")):
            return self._error(method, 400, "InvalidMimeType", f"Wrong type of file. It is {mime}.")
        blob = Blob(cid_of(data), data, "image/png" if data.startswith(b"\x89PNG") else "image/jpeg")
        self.blobs[blob.cid] = blob
        return self._json(
            {"blob": {"$type": "blob", "ref": {"$link": blob.cid}, "mimeType": blob.mime, "size": len(data)}}
        )

    async def _com_atproto_repo_getRecord(self, request: web.Request) -> web.Response:
        uri = f"at://{request.query.get('repo')}/{request.query.get('collection')}/{request.query.get('rkey')}"
        post = self.posts.get(uri)
        if post is None or post.deleted:
            return self._error("com.atproto.repo.getRecord", 400, "RecordNotFound", f"Could not locate record: {uri}")
        return self._json({"uri": post.uri, "cid": post.cid, "value": post.record})

    async def _com_atproto_repo_createRecord(self, request: web.Request) -> web.Response:
        method = "com.atproto.repo.createRecord"
        body = await request.json()
        if body.get("repo") not in (BOT_DID, HANDLE):
            return self._error(method, 400, "InvalidRequest", "Can only write to your own repo")
        if body.get("collection") != "app.bsky.feed.post":
            return self._error(method, 400, "InvalidRequest", "This fake only takes posts")
        rkey = body.get("rkey") or self._tid()
        if not TID.match(rkey):
            return self._error(method, 400, "InvalidRequest", f"Invalid record key: {rkey}")
        uri = f"at://{BOT_DID}/app.bsky.feed.post/{rkey}"
        if uri in self.posts:
            return self._error(method, 400, "InvalidRequest", f"Record already exists: {uri}")
        record = body.get("record") or {}
        problem = self._check_post(record)
        if problem:
            return self._error(method, 400, "InvalidRecord", problem)
        post = Post(uri, cid_of(json.dumps(record, sort_keys=True).encode()), self.me, record, self._now())
        self.posts[uri] = post
        if self.lose_answer_of_create:
            self.lose_answer_of_create -= 1
            return self._error(method, 504, "UpstreamTimeout", "the answer was lost")
        return self._json({"uri": uri, "cid": post.cid, "validationStatus": "valid"})

    def _check_post(self, record: dict[str, Any]) -> str | None:
        """The lexicon's required fields of app.bsky.feed.post, its reply and images embed."""
        if record.get("$type") != "app.bsky.feed.post":
            return "Record/$type must be app.bsky.feed.post"
        if not isinstance(record.get("text"), str):
            return 'Record must have the property "text"'
        if len(record["text"]) > 300:
            return "Record/text must not be longer than 300 graphemes"
        if not isinstance(record.get("createdAt"), str):
            return 'Record must have the property "createdAt"'
        reply = record.get("reply")
        if reply is not None:
            for side in ("root", "parent"):
                ref = reply.get(side)
                if not isinstance(ref, dict) or not ref.get("uri", "").startswith("at://") or not ref.get("cid"):
                    return f'Record/reply must have the property "{side}" with uri and cid'
        embed = record.get("embed")
        if embed is not None:
            if embed.get("$type") != "app.bsky.embed.images":
                return "This fake only takes app.bsky.embed.images"
            images = embed.get("images")
            if not isinstance(images, list) or not 1 <= len(images) <= 4:
                return "Record/embed/images must have 1 to 4 elements"
            for index, image in enumerate(images):
                if "alt" not in image or not isinstance(image["alt"], str):
                    return f'Record/embed/images/{index} must have the property "alt"'
                blob = image.get("image") or {}
                if blob.get("$type") != "blob" or (blob.get("ref") or {}).get("$link") not in self.blobs:
                    return f"Record/embed/images/{index}/image must be a blob uploaded by this account"
                ratio = image.get("aspectRatio")
                if ratio is not None and not (
                    isinstance(ratio.get("width"), int)
                    and isinstance(ratio.get("height"), int)
                    and ratio["width"] >= 1
                    and ratio["height"] >= 1
                ):
                    return f"Record/embed/images/{index}/aspectRatio must have width and height of at least 1"
        return None

    # ------------------------------------------------------------------ views

    def _profile(self, actor: Actor) -> dict[str, Any]:
        return {
            "did": actor.did,
            "handle": actor.handle,
            "displayName": actor.handle,
            "description": actor.description,
            "labels": [],
        }

    def _notification(self, notification: Notification) -> dict[str, Any]:
        post = notification.post
        return {
            "uri": post.uri,
            "cid": post.cid,
            "author": self._profile(post.author),
            "reason": notification.reason,
            "record": post.record,
            "isRead": bool(self.seen_at and notification.indexed_at <= self.seen_at),
            "indexedAt": notification.indexed_at,
            "labels": [],
        }

    def _post_view(self, post: Post) -> dict[str, Any]:
        view: dict[str, Any] = {
            "uri": post.uri,
            "cid": post.cid,
            "author": {"did": post.author.did, "handle": post.author.handle},
            "record": post.record,
            "indexedAt": post.indexed_at,
        }
        if post.image is not None:
            url = f"{self.base_url}/img/feed_fullsize?uri={quote(post.uri, safe='')}"
            view["embed"] = {
                "$type": "app.bsky.embed.images#view",
                "images": [{"thumb": url, "fullsize": url, "alt": ""}],
            }
        return view


def _expired(token: str) -> bool:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims["exp"] < time.time()
