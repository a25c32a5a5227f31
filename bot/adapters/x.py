"""The X (Twitter) adapter: mentions and hashtag posts in, dreams out as replies. It only translates.

Reads poll (streaming needs a paid plan): the bot's mentions and a recent search for the configured hashtags,
each from its persisted cursor. Every call is priced and charged to the budget in :mod:`bot.adapters.social`;
when it is spent, reading and answering wait for the next day or month. tweepy's real ``Client`` does the reads
and ``create_tweet``; media go through X's v2 upload (which tweepy 4.17 lacks), signed with the same OAuth 1.0a
user keys. Blocking HTTP runs in an executor, so the event loop never waits on X.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import tweepy
from requests_oauthlib import OAuth1

from bot.adapters import social
from bot.adapters.social import Budget, BudgetExhausted, Clock, SocialAdapter, post_once, wants_stop
from bot.config import XConfig, XKeys
from bot.jobqueue import QueueError
from bot.media import MediaError, check_size, fit_result
from bot.options import OptionError, parse_command
from bot.requests import Destination, DreamRequest, Requester
from bot.service import DreamService, JobView

log = logging.getLogger(__name__)

PLATFORM = "x"
UPLOAD_HOST = "https://api.x.com"
MEDIA_HOSTS = ("pbs.twimg.com",)  # photos are fetched from X's media host only
IMAGE_LIMIT = 5 * 1000 * 1000
GIF_LIMIT = 15 * 1000 * 1000
CHUNK = 1024 * 1024
HOWTO = 'Mention me on a post with a photo (or in a reply to one) to dream it, e.g. "@{bot} deeper layer=block10".'
POST_FIELDS = {
    "expansions": [
        "attachments.media_keys",
        "author_id",
        "referenced_tweets.id",
        "referenced_tweets.id.attachments.media_keys",
    ],
    "media_fields": ["url", "type", "width", "height"],
    "tweet_fields": ["conversation_id", "entities", "in_reply_to_user_id", "referenced_tweets", "author_id"],
    "user_fields": ["description", "username"],
}


class XError(Exception):
    """X answered with something other than success."""


class RateLimited(social.RateLimited, XError):
    """A 429 from X: a wait, not a refusal (``except XError`` sees it too, so it is handled first)."""


@dataclass(frozen=True)
class Post:
    id: str
    text: str
    author_id: str
    author_name: str
    author_bio: str
    conversation_id: str
    mentions_bot: bool
    photo_url: str | None
    is_reply_to_bot: bool


class XAdapter(SocialAdapter):
    platform = PLATFORM
    name = "X"
    records_state = False  # X's status is its budget
    settings: XConfig
    keys: XKeys

    def __init__(
        self,
        service: DreamService,
        settings: XConfig,
        keys: XKeys,
        *,
        clock: Clock = time.time,
        sleep: Any = asyncio.sleep,
    ) -> None:
        super().__init__(service, settings, keys, clock, sleep)
        self.budget = Budget(
            self.store, prices_of(settings), settings.daily_budget_dollars, settings.monthly_budget_dollars
        )
        self.client = tweepy.Client(
            bearer_token=keys.bearer_token or None,
            consumer_key=keys.api_key,
            consumer_secret=keys.api_secret,
            access_token=keys.access_token,
            access_token_secret=keys.access_token_secret,
            return_type=dict,
        )
        self.session = requests.Session()
        self.auth = OAuth1(keys.api_key, keys.api_secret, keys.access_token, keys.access_token_secret)
        self.me_id = ""
        self.me_name = ""

    # ------------------------------------------------------------------ life cycle

    async def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """A blocking call in the executor, with X's errors as ours (429 with its reset time)."""

        def run() -> Any:
            try:
                return function(*args, **kwargs)
            except tweepy.TooManyRequests as error:
                raise RateLimited(float(error.reset_time or self.clock() + 60)) from None
            except (tweepy.TwitterServerError, requests.ConnectionError, requests.Timeout) as error:
                raise ConnectionError(str(error)) from None

        return await asyncio.get_running_loop().run_in_executor(None, run)

    async def start(self, *, poll: bool = True) -> None:
        """Sign in, post what a crash left unposted, then poll (``poll=False``: the caller polls, as tests do)."""
        me = await self._call(self.client.get_me, user_auth=True)
        self.budget.charge("owned_read")
        self.me_id, self.me_name = me["data"]["id"], me["data"]["username"]
        log.info("X: signed in as @%s", self.me_name)
        await self._resume(poll)

    def status(self) -> dict[str, Any]:
        return {**self.budget.status(), **self._pause(), **self.store.counters()}

    async def _pause_for(self, error: Exception) -> tuple[float, str] | None:
        if isinstance(error, BudgetExhausted):
            log.warning("X: the budget is spent; reading and answering resume at %s", error)
            return error.resumes_at - self.clock(), "budget"
        if (pause := await super()._pause_for(error)) is not None:  # a rate limit, before the XError it also is
            return pause
        if isinstance(error, ConnectionError):
            return self._back_off(error, "X unreachable")
        if isinstance(error, (XError, tweepy.HTTPException)):  # X refused one call: the loop, and the others, go on
            return self._back_off(error, "X refused a call")
        return None

    # ------------------------------------------------------------------ reading

    async def poll_once(self) -> None:
        """Read mentions and the hashtag search from their cursors, oldest first, and handle each post once."""
        self.budget.check("owned_read")
        mentions, newest_mention = await self._read(
            "mentions", self.client.get_users_mentions, "owned_read", self.me_id
        )
        tags = " OR ".join(self.settings.hashtags)
        query = f"({tags}) has:images -is:retweet -from:{self.me_name}"
        self.budget.check("read_post")
        found, newest_found = await self._read("search", self.client.search_recent_tweets, "read_post", query)
        posts = {post.id: post for post in [*mentions, *found]}
        for post_id in sorted(posts, key=int):
            await self.handle(posts[post_id])
        # Moved only once every post is handled: a crash before this reads them again (the ledger skips repeats).
        for stream, newest in (("mentions", newest_mention), ("search", newest_found)):
            if newest:
                self.store.set_cursor(stream, newest)

    async def _read(self, stream: str, method: Any, price: str, *args: Any) -> tuple[list[Post], str | None]:
        since = self.store.cursor(stream)
        posts: list[Post] = []
        token: str | None = None
        newest = since
        while True:
            params: dict[str, Any] = {**POST_FIELDS, "max_results": 100}
            if since:
                params["since_id"] = since
            if token:
                params["pagination_token" if stream == "mentions" else "next_token"] = token
            page = await self._call(method, *args, user_auth=True, **params)
            data = page.get("data") or []
            self.budget.charge(price, max(1, len(data)))
            posts += [self._post(item, page.get("includes") or {}) for item in data]
            meta = page.get("meta") or {}
            if newest is None or (meta.get("newest_id") and int(meta["newest_id"]) > int(newest)):
                newest = meta.get("newest_id") or newest
            token = meta.get("next_token")
            if not token:
                break
        return posts, newest

    def _post(self, item: dict[str, Any], includes: dict[str, Any]) -> Post:
        media = {m["media_key"]: m for m in includes.get("media", [])}
        users = {u["id"]: u for u in includes.get("users", [])}
        tweets = {t["id"]: t for t in includes.get("tweets", [])}

        def photo_of(tweet: dict[str, Any]) -> str | None:
            for key in (tweet.get("attachments") or {}).get("media_keys", []):
                if media.get(key, {}).get("type") == "photo" and media[key].get("url"):
                    return media[key]["url"]
            return None

        photo = photo_of(item)
        replied_to_bot = item.get("in_reply_to_user_id") == self.me_id
        for reference in item.get("referenced_tweets") or []:
            if reference.get("type") == "replied_to" and photo is None and reference["id"] in tweets:
                photo = photo_of(tweets[reference["id"]])
        mentioned = [m.get("username", "").lower() for m in (item.get("entities") or {}).get("mentions", [])]
        author = users.get(item.get("author_id", ""), {})
        return Post(
            id=item["id"],
            text=item.get("text", ""),
            author_id=item.get("author_id", ""),
            author_name=author.get("username", ""),
            author_bio=author.get("description", ""),
            conversation_id=item.get("conversation_id", item["id"]),
            mentions_bot=self.me_name.lower() in mentioned,
            photo_url=photo,
            is_reply_to_bot=replied_to_bot,
        )

    async def handle(self, post: Post) -> None:
        """One post: opt-outs and the loop guard first, then a dream, a how-to or a short error reply."""
        if post.author_id == self.me_id or self.store.entry(post.id) is not None:
            return
        if wants_stop(post.text) and (post.mentions_bot or post.is_reply_to_bot):
            if self.store.opt_out(post.author_id, "stop") and self.store.receive(post.id, "optout"):
                await self._reply_text(post, "Done: I will not answer you again.")
            return
        blocked = {name.lower().lstrip("@") for name in self.settings.block_list}
        if (
            self.store.opted_out(post.author_id)
            or post.author_name.lower() in blocked
            or post.author_id in blocked
            or "#nobot" in post.author_bio.lower()
        ):
            return
        if not post.mentions_bot and not self.settings.reply_to_any_post:
            # X's 2026 rule for self-serve plans: replies only to posts that mention (or quote) the account.
            self.store.count("hashtag_posts_not_answered")
            log.info("X: post %s has the hashtag but does not mention @%s; not answered", post.id, self.me_name)
            return
        if self.store.answers_in_conversation(post.conversation_id) >= self.settings.answers_per_conversation:
            self.store.count("loop_guard")
            return
        text = " ".join(w for w in post.text.split() if w.lower() not in {t.lower() for t in self.settings.hashtags})
        try:
            command = parse_command(text, has_image=post.photo_url is not None, networks=self.service.networks())
        except OptionError as error:
            if post.photo_url is None:
                if self.store.claim_howto(post.author_id) and self.store.receive(
                    post.id, "howto", post.conversation_id
                ):
                    await self._reply_text(post, HOWTO.format(bot=self.me_name))
                return
            if self.store.receive(post.id, "error", post.conversation_id):
                await self._reply_text(post, f"⚠️ {error}"[:280])
            return
        if not self.store.receive(post.id, "dream", post.conversation_id, json.dumps({"author": post.author_id})):
            return
        try:
            image = await self._download(post.photo_url) if post.photo_url else None
            address = {"post_id": post.id, "conversation_id": post.conversation_id, "public": True}
            requester = Requester(PLATFORM, post.author_id, post.author_name)
            job = await self.service.submit(DreamRequest(command, requester, Destination(PLATFORM, address), image))
            self.store.update(post.id, job_id=job.id)
        except (MediaError, QueueError, OptionError) as error:
            self.store.update(post.id, kind="error")
            await self._reply_text(post, f"⚠️ {error}"[:280])

    async def _download(self, url: str) -> bytes:
        if urlsplit(url).scheme != "https" or urlsplit(url).hostname not in MEDIA_HOSTS:
            raise MediaError("I can only dream photos posted on X itself.")

        def fetch() -> bytes:
            with self.session.get(url, stream=True, timeout=30) as response:
                if response.status_code != 200:
                    raise MediaError("I could not fetch that photo from X; please post it again.")
                data = b""
                for chunk in response.iter_content(65536):
                    data += chunk
                    check_size(len(data), self.service.media_limits)
                return data

        return await asyncio.get_running_loop().run_in_executor(None, fetch)

    # ------------------------------------------------------------------ answering

    async def _reply_text(self, post: Post, text: str) -> None:
        try:
            await self._answer(post.id, post.conversation_id, text, [])
        except RateLimited:
            raise  # not a refusal: the poll loop waits for the reset
        except (tweepy.Forbidden, XError) as error:  # refused for this post: the other posts still get answers
            self._refused(post.id, error)

    def _refused(self, post_id: str, error: Exception) -> None:
        """X refused an answer for good (its reply rule, a protected or suspended account, a read-only app):
        never retried, and the operator hears X's own words."""
        log.warning("X refused the answer to post %s: %s", post_id, error)
        self._skip(post_id, "answers_refused")

    async def _answer(self, post_id: str, conversation_id: str, text: str, media_ids: list[str]) -> str:
        async def create() -> str:
            self.budget.check("reply")
            kwargs: dict[str, Any] = {"text": text, "in_reply_to_tweet_id": post_id, "user_auth": True}
            if media_ids:
                kwargs["media_ids"] = media_ids
            created = await self._call(self.client.create_tweet, **kwargs)
            self.budget.charge("reply")
            return created["data"]["id"]

        return await post_once(self.store, post_id, create, lambda: self._find_reply(post_id, conversation_id))

    async def _find_reply(self, post_id: str, conversation_id: str) -> str | None:
        """The bot's reply to ``post_id``, if X has one (a crash after posting, before recording it)."""
        self.budget.check("read_post")
        found = await self._call(
            self.client.search_recent_tweets,
            f"conversation_id:{conversation_id} from:{self.me_name}",
            tweet_fields=["referenced_tweets"],
            user_auth=True,
        )
        data = found.get("data") or []
        self.budget.charge("read_post", max(1, len(data)))
        for tweet in data:
            if any(r.get("id") == post_id for r in tweet.get("referenced_tweets") or []):
                return tweet["id"]
        return None

    async def on_job(self, view: JobView) -> None:
        if view.finished and not self._closed:
            try:
                await self.deliver(view)
            except (BudgetExhausted, RateLimited, ConnectionError) as error:
                log.warning("X: the answer to job %s waits (%s); it goes out at the next start", view.id, error)
            except (tweepy.Forbidden, XError) as error:
                # X's reply rule (the post does not mention the bot), a protected account, an app without
                # write permission, or an upload X would not take: never retried.
                post_id = view.destination.get("post_id")
                if post_id:
                    self._refused(post_id, error)

    async def _answer_unfinished(self, view: JobView) -> None:
        await self.deliver(view)  # at start: a budget, rate-limit or network failure reaches start() itself

    async def deliver(self, view: JobView) -> None:
        post_id = view.destination.get("post_id")
        entry = self.store.entry_of_job(view.id)
        if not post_id or entry is None or entry.state == "posted":
            return
        conversation = view.destination.get("conversation_id", post_id)
        if view.state != "done" or view.result is None:
            await self._answer(post_id, conversation, f"⚠️ {view.error or 'That dream was cancelled.'}"[:280], [])
            return
        if entry.state == "posting":  # a crash after uploading: look for the reply before uploading again
            existing = await self._find_reply(post_id, conversation)
            if existing:
                self.store.update(post_id, state="posted", reply_id=existing)
                return
        key = view.result["key"]
        data = await asyncio.get_running_loop().run_in_executor(None, self.service.store.get, key)
        extension = key.rsplit(".", 1)[-1]
        limit = GIF_LIMIT if extension == "gif" else IMAGE_LIMIT
        data, extension = await asyncio.get_running_loop().run_in_executor(None, fit_result, data, extension, limit)
        alt = alt_text(view)
        media_id = await self.upload(data, extension, alt)
        caption = f"{view.result.get('caption', '')}"[:250]
        await self._answer(post_id, conversation, caption, [media_id])

    async def post_to_own_account(self, image: bytes, extension: str, text: str, alt: str, key: str) -> str:
        """A post on the bot's own timeline (the dream of the day), once per ``key``, within the budget."""
        own, posted = self._own_post(key)
        if posted:
            return posted
        self.budget.check("create_post")
        media_id = await self.upload(image, extension, alt)

        async def create() -> str:
            self.budget.check("create_post")
            created = await self._call(self.client.create_tweet, text=text[:280], media_ids=[media_id], user_auth=True)
            self.budget.charge("create_post")
            return created["data"]["id"]

        async def find() -> str | None:
            return None  # an own post has no conversation to search; the intent row keeps it from doubling

        return await post_once(self.store, own, create, find)

    # ------------------------------------------------------------------ v2 media upload

    async def upload(self, data: bytes, extension: str, alt: str) -> str:
        media_type = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}[extension]
        media_id = await self._call(self._upload_blocking, data, media_type)
        self.budget.check("media_metadata")
        await self._call(
            self._v2, "POST", "/2/media/metadata", json={"id": media_id, "metadata": {"alt_text": {"text": alt[:1000]}}}
        )
        self.budget.charge("media_metadata")
        return media_id

    def _v2(self, method: str, route: str, **kwargs: Any) -> dict[str, Any]:
        response = self.session.request(method, UPLOAD_HOST + route, auth=self.auth, timeout=60, **kwargs)
        if response.status_code == 429:
            raise RateLimited(float(response.headers.get("x-rate-limit-reset", self.clock() + 60)))
        if response.status_code >= 500:
            raise ConnectionError(f"X answered {response.status_code}")
        if not 200 <= response.status_code < 300:
            raise XError(f"X refused {route}: {response.status_code} {response.text[:200]}")
        return response.json() if response.content else {}

    def _upload_blocking(self, data: bytes, media_type: str) -> str:
        if media_type != "image/gif":
            files = {"media": ("media", data, media_type)}
            answer = self._v2("POST", "/2/media/upload", files=files, data={"media_category": "tweet_image"})
            return answer["data"]["id"]
        started = self._v2(
            "POST",
            "/2/media/upload/initialize",
            json={"media_type": media_type, "total_bytes": len(data), "media_category": "tweet_gif"},
        )
        media_id = started["data"]["id"]
        for index, offset in enumerate(range(0, len(data), CHUNK)):
            chunk = {"media": ("chunk", data[offset : offset + CHUNK], "application/octet-stream")}
            self._v2("POST", f"/2/media/upload/{media_id}/append", files=chunk, data={"segment_index": str(index)})
        info = self._v2("POST", f"/2/media/upload/{media_id}/finalize")["data"].get("processing_info")
        while info and info.get("state") in ("pending", "in_progress"):
            time.sleep(min(5, info.get("check_after_secs", 1)))
            status = self._v2("GET", "/2/media/upload", params={"media_id": media_id, "command": "STATUS"})
            info = status["data"].get("processing_info")
        if info and info.get("state") == "failed":
            raise XError(f"X could not process the animation: {info}")
        return media_id


def prices_of(settings: XConfig) -> dict[str, float]:
    """The configured price of each kind of call, by the names the budget charges."""
    return {
        "read_post": settings.price_read_post,
        "owned_read": settings.price_owned_read,
        "create_post": settings.price_create_post,
        "reply": settings.price_reply,
        "media_metadata": settings.price_media_metadata,
    }


def alt_text(view: JobView) -> str:
    """ "DeepDream of your photo: lite0 block9, default look" from the job's settings."""
    options = view.options
    network = options.get("network") or "lite0"
    layer = options.get("layer") or "default layer"
    look = f"{options['preset']} look" if options.get("preset") else "default look"
    what = "zoom animation" if view.mode == "zoom" else "DeepDream"
    return f"{what} of your photo: {network} {layer}, {look}"
