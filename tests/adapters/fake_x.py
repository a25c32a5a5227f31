"""A strict fake X for tests, on ``responses``: it refuses what real X refuses.

Checked on every call: an OAuth 1.0a Authorization header with every oauth_* field and a signature verified
with the test's keys (or the bearer token on app-only reads); JSON shapes of posts; media type and size limits
(5 MB still, 15 MB GIF, at most 4 media per post); media ids that were uploaded and finalised; and X's reply
rule for self-serve plans: a reply to a post that does not mention the bot is a 403.
"""

from __future__ import annotations

import email.parser
import io
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
import responses
from oauthlib.oauth1.rfc5849 import signature, utils
from PIL import Image

KEYS = {
    "X_API_KEY": "test-api-key",
    "X_API_SECRET": "test-api-secret",
    "X_ACCESS_TOKEN": "test-access-token",
    "X_ACCESS_TOKEN_SECRET": "test-access-secret",
}
OAUTH_FIELDS = {
    "oauth_consumer_key",
    "oauth_nonce",
    "oauth_signature",
    "oauth_signature_method",
    "oauth_timestamp",
    "oauth_token",
    "oauth_version",
}
API = re.compile(r"https://api\.(x|twitter)\.com(/2/.*)")
IMAGE_LIMIT, GIF_LIMIT = 5 * 1000 * 1000, 15 * 1000 * 1000


@dataclass
class Media:
    id: str
    media_type: str
    size: int
    data: bytes = b""
    finalised: bool = False
    alt: str = ""


@dataclass
class Tweet:
    id: str
    text: str
    author_id: str
    conversation_id: str
    media_keys: list[str] = field(default_factory=list)
    in_reply_to: str | None = None
    media_ids: list[str] = field(default_factory=list)


class FakeX:
    def __init__(self, bot_name: str = "DreamBot", page_size: int = 2) -> None:
        self.bot_id, self.bot_name = "1000", bot_name
        self.page_size = page_size
        self.users: dict[str, dict[str, str]] = {self.bot_id: {"id": self.bot_id, "username": bot_name, "name": "Bot"}}
        self.tweets: dict[str, Tweet] = {}
        self.media: dict[str, Media] = {}
        self.photos: dict[str, bytes] = {}  # pbs.twimg.com URL -> bytes
        self.photo_of_key: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.failures: dict[str, list[tuple[int, dict[str, str]]]] = {}  # route -> statuses to answer first
        self.drop_answer_of_create = False  # record the post, then lose the answer (a crash on the way back)
        self.refused: list[str] = []
        self._ids = itertools.count(2000)
        self.lock = threading.Lock()
        self.mock = responses.RequestsMock(assert_all_requests_are_fired=False)

    # ------------------------------------------------------------------ the world

    def next_id(self) -> str:
        return str(next(self._ids))

    def user(self, name: str, bio: str = "") -> str:
        user_id = self.next_id()
        self.users[user_id] = {"id": user_id, "username": name, "name": name, "description": bio}
        return user_id

    def post(self, author: str, text: str, photo: bytes | None = None, reply_to: str | None = None) -> str:
        tweet_id = self.next_id()
        keys = []
        if photo is not None:
            key = f"3_{tweet_id}"
            url = f"https://pbs.twimg.com/media/{tweet_id}.jpg"
            self.photos[url] = photo
            self.photo_of_key[key] = url
            keys.append(key)
        conversation = self.tweets[reply_to].conversation_id if reply_to else tweet_id
        self.tweets[tweet_id] = Tweet(tweet_id, text, author, conversation, keys, reply_to)
        return tweet_id

    def replies_by_bot(self, to: str | None = None) -> list[Tweet]:
        return [t for t in self.tweets.values() if t.author_id == self.bot_id and (to is None or t.in_reply_to == to)]

    def fail(self, route: str, status: int, headers: dict[str, str] | None = None, times: int = 1) -> None:
        self.failures.setdefault(route, []).extend([(status, headers or {})] * times)

    # ------------------------------------------------------------------ serving

    def __enter__(self) -> FakeX:
        self.mock.start()
        self.mock.add_callback(responses.GET, API, callback=self._serve)
        self.mock.add_callback(responses.POST, API, callback=self._serve)
        self.mock.add_callback(responses.GET, re.compile(r"https://pbs\.twimg\.com/.*"), callback=self._photo)
        return self

    def __exit__(self, *exc: object) -> None:
        self.mock.stop()
        self.mock.reset()

    def _photo(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        data = self.photos.get(request.url)
        return (200, {"Content-Type": "image/jpeg"}, data) if data is not None else (404, {}, b"")

    def _serve(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        path = API.match(request.url.split("?")[0])[2]
        query = dict(parse_qsl(urlsplit(request.url).query))
        with self.lock:
            self.calls.append((request.method, path))
            for route, queue in self.failures.items():
                if path == route and queue:
                    status, headers = queue.pop(0)
                    return status, headers, json.dumps({"title": "Failure", "status": status}).encode()
            problem = self._check_auth(request, path)
            if problem:
                self.refused.append(problem)
                return 401, {}, _json({"title": "Unauthorized", "detail": problem})
            try:
                status, answer = self._route(request, path, query)
            except AssertionError as error:
                self.refused.append(str(error))
                return 400, {}, _json({"title": "Invalid Request", "detail": str(error)})
        if self.drop_answer_of_create and (request.method, path) == ("POST", "/2/tweets"):
            self.drop_answer_of_create = False
            raise requests.ConnectionError("connection reset after the post was made")
        return status, {"Content-Type": "application/json"}, _json(answer)

    def _check_auth(self, request: Any, path: str) -> str | None:
        header = _header(request, "Authorization")
        if header.startswith("Bearer ") and request.method == "GET" and path == "/2/tweets/search/recent":
            return None if header == f"Bearer {KEYS.get('X_BEARER_TOKEN', 'test-bearer')}" else "bad bearer token"
        if not header.startswith("OAuth "):
            return "no OAuth 1.0a Authorization header"
        fields = dict(utils.parse_authorization_header(header))
        missing = OAUTH_FIELDS - set(fields)
        if missing:
            return f"missing {sorted(missing)}"
        if fields["oauth_consumer_key"] != KEYS["X_API_KEY"] or fields["oauth_token"] != KEYS["X_ACCESS_TOKEN"]:
            return "unknown keys"
        body = request.body if isinstance(request.body, str | bytes) else None
        form = "application/x-www-form-urlencoded" in _header(request, "Content-Type")
        params = signature.collect_parameters(
            uri_query=urlsplit(request.url).query,
            body=body.decode() if form and isinstance(body, bytes) else (body if form else None),
            headers={"Authorization": header},
            exclude_oauth_signature=True,
        )
        base = signature.signature_base_string(
            request.method, signature.base_string_uri(request.url), signature.normalize_parameters(params)
        )
        keys = SimpleNamespace(client_secret=KEYS["X_API_SECRET"], resource_owner_secret=KEYS["X_ACCESS_TOKEN_SECRET"])
        expected = signature.sign_hmac_sha1_with_client(base, keys)
        return None if expected == utils.unescape(fields["oauth_signature"]) else "bad signature"

    # ------------------------------------------------------------------ endpoints

    def _route(self, request: Any, path: str, query: dict[str, str]) -> tuple[int, Any]:
        method = request.method
        if (method, path) == ("GET", "/2/users/me"):
            return 200, {"data": self.users[self.bot_id]}
        if method == "GET" and (m := re.fullmatch(r"/2/users/(\d+)/mentions", path)):
            assert m[1] == self.bot_id, "mentions of another account"
            found = [t for t in self.tweets.values() if f"@{self.bot_name.lower()}" in t.text.lower()]
            return 200, self._page(found, query, "pagination_token")
        if (method, path) == ("GET", "/2/tweets/search/recent"):
            return 200, self._page(self._search(query["query"]), query, "next_token")
        if (method, path) == ("POST", "/2/tweets"):
            return self._create(json.loads(request.body))
        if (method, path) == ("POST", "/2/media/upload"):
            form, files = _multipart(request)
            media_type = files["media"][1]
            data = files["media"][0]
            assert media_type in ("image/png", "image/jpeg", "image/webp"), f"{media_type} needs the chunked upload"
            assert len(data) <= IMAGE_LIMIT, "images are limited to 5 MB"
            assert form.get("media_category") == "tweet_image", "media_category"
            Image.open(io.BytesIO(data)).verify()
            media = Media(self.next_id(), media_type, len(data), data, finalised=True)
            self.media[media.id] = media
            return 200, {"data": {"id": media.id, "media_key": f"3_{media.id}", "size": media.size}}
        if (method, path) == ("POST", "/2/media/upload/initialize"):
            body = json.loads(request.body)
            assert body["media_type"] == "image/gif" and body["media_category"] == "tweet_gif", "initialize"
            assert 0 < body["total_bytes"] <= GIF_LIMIT, "GIFs are limited to 15 MB"
            media = Media(self.next_id(), body["media_type"], body["total_bytes"])
            self.media[media.id] = media
            return 200, {"data": {"id": media.id, "media_key": f"16_{media.id}", "expires_after_secs": 86400}}
        if method == "POST" and (m := re.fullmatch(r"/2/media/upload/(\d+)/(append|finalize)", path)):
            media = self.media.get(m[1])
            assert media is not None and not media.finalised, "unknown or finished upload"
            if m[2] == "append":
                form, files = _multipart(request)
                assert int(form["segment_index"]) == len(getattr(media, "segments", [])), "segments out of order"
                media.__dict__.setdefault("segments", []).append(files["media"][0])
                media.data += files["media"][0]
                return 200, {}
            assert len(media.data) == media.size, "finalize before every byte was appended"
            Image.open(io.BytesIO(media.data)).verify()
            media.finalised = True
            info = {"state": "pending", "check_after_secs": 0}
            return 200, {"data": {"id": media.id, "size": media.size, "processing_info": info}}
        if (method, path) == ("GET", "/2/media/upload"):
            assert query.get("command") == "STATUS" and query["media_id"] in self.media, "status"
            return 200, {"data": {"id": query["media_id"], "processing_info": {"state": "succeeded"}}}
        if (method, path) == ("POST", "/2/media/metadata"):
            body = json.loads(request.body)
            media = self.media.get(body["id"])
            assert media is not None and media.finalised, "metadata for media not uploaded"
            media.alt = body["metadata"]["alt_text"]["text"]
            assert 0 < len(media.alt) <= 1000, "alt text length"
            return 200, {"data": {"id": media.id, "associated_metadata": body["metadata"]}}
        return 404, {"title": "Not Found Error", "detail": f"no route {method} {path}"}

    def _search(self, query: str) -> list[Tweet]:
        if m := re.fullmatch(r"conversation_id:(\d+) from:(\S+)", query):
            return [t for t in self.tweets.values() if t.conversation_id == m[1] and t.author_id == self.bot_id]
        tags = re.findall(r"#\w+", query)
        assert "has:images" in query and "-is:retweet" in query and f"-from:{self.bot_name}" in query, query
        return [
            t
            for t in self.tweets.values()
            if any(tag.lower() in t.text.lower() for tag in tags) and t.media_keys and t.author_id != self.bot_id
        ]

    def _page(self, found: list[Tweet], query: dict[str, str], token_name: str) -> dict[str, Any]:
        if not query.get("query", "").startswith("conversation_id:"):
            assert "attachments.media_keys" in query.get("expansions", ""), "expansions"
        since = int(query.get("since_id", 0))
        newest_first = sorted((t for t in found if int(t.id) > since), key=lambda t: -int(t.id))
        start = int(query.get(token_name, 0))
        page = newest_first[start : start + self.page_size]
        answer: dict[str, Any] = {"meta": {"result_count": len(page)}}
        if not page:
            return answer
        answer["data"] = [self._tweet_json(t) for t in page]
        answer["meta"].update(newest_id=page[0].id, oldest_id=page[-1].id)
        if start + self.page_size < len(newest_first):
            answer["meta"]["next_token"] = str(start + self.page_size)
        referenced = [self.tweets[t.in_reply_to] for t in page if t.in_reply_to]
        keys = [k for t in [*page, *referenced] for k in t.media_keys]
        answer["includes"] = {
            "users": [self.users[t.author_id] for t in page],
            "media": [{"media_key": k, "type": "photo", "url": self.photo_of_key[k]} for k in keys],
            "tweets": [self._tweet_json(t) for t in referenced],
        }
        return answer

    def _tweet_json(self, tweet: Tweet) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": tweet.id,
            "text": tweet.text,
            "author_id": tweet.author_id,
            "conversation_id": tweet.conversation_id,
            "edit_history_tweet_ids": [tweet.id],
        }
        mentions = re.findall(r"@(\w+)", tweet.text)
        if mentions:
            data["entities"] = {"mentions": [{"username": name} for name in mentions]}
        if tweet.media_keys:
            data["attachments"] = {"media_keys": tweet.media_keys}
        if tweet.in_reply_to:
            data["referenced_tweets"] = [{"type": "replied_to", "id": tweet.in_reply_to}]
            data["in_reply_to_user_id"] = self.tweets[tweet.in_reply_to].author_id
        return data

    def _create(self, body: dict[str, Any]) -> tuple[int, Any]:
        assert set(body) <= {"text", "reply", "media"}, f"unexpected fields {set(body)}"
        assert isinstance(body.get("text"), str) and 0 < len(body["text"]) <= 280, "text"
        media_ids = (body.get("media") or {}).get("media_ids", [])
        assert len(media_ids) <= 4, "at most 4 media"
        for media_id in media_ids:
            assert media_id in self.media and self.media[media_id].finalised, f"media {media_id} not uploaded"
        reply_to = (body.get("reply") or {}).get("in_reply_to_tweet_id")
        if reply_to is not None:
            target = self.tweets.get(reply_to)
            assert target is not None, "reply to a post that does not exist"
            if f"@{self.bot_name.lower()}" not in target.text.lower():
                return 403, {"title": "Forbidden", "detail": "Reply to this conversation is not allowed."}
        tweet = Tweet(self.next_id(), body["text"], self.bot_id, "", [], reply_to, list(media_ids))
        tweet.conversation_id = self.tweets[reply_to].conversation_id if reply_to else tweet.id
        self.tweets[tweet.id] = tweet
        return 201, {"data": {"id": tweet.id, "text": tweet.text, "edit_history_tweet_ids": [tweet.id]}}


def _header(request: Any, name: str) -> str:
    value = request.headers.get(name, "")
    return value.decode() if isinstance(value, bytes) else value


def _json(data: Any) -> bytes:
    return json.dumps(data).encode()


def _multipart(request: Any) -> tuple[dict[str, str], dict[str, tuple[bytes, str]]]:
    """The form fields and files of a multipart body."""
    content_type = _header(request, "Content-Type")
    assert content_type.startswith("multipart/form-data"), "media uploads are multipart"
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.body
    )
    form, files = {}, {}
    for part in message.get_payload():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if part.get_param("filename", header="content-disposition"):
            files[name] = (payload, part.get_content_type())
        else:
            form[name] = payload.decode()
    return form, files
