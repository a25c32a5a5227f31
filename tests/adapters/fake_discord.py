"""A fake Discord on loopback, for end-to-end tests of bots built on the real discord.py client.

``FakeDiscord`` is an aiohttp server on 127.0.0.1 that speaks enough of Discord's REST API (v10) and gateway for
discord.py 2.7 to log in, sync application commands, connect, receive events and answer them.  It validates requests
the way Discord does (form-body limits, one acknowledgement per interaction, the 3 second and 15 minute deadlines,
upload size) and answers with Discord's error JSON, so a test cannot pass on a request Discord would reject.

Typical use (the ``fake_discord`` fixture starts the fake, points discord.py at it and restores discord.py)::

    async def test_dream(fake_discord):
        client = MyBot(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        async with fake_discord.run_client(client):        # login, setup_hook, READY; closes afterwards
            record = await fake_discord.send_slash_command("dream", attachments={"image": ("cat.png", data)})
            (followup,) = await record.wait_followups(1)
            assert followup.attachments[0].data == expected

API in short:

- world: ``fake.bot`` (the bot user; ``fake.application_id`` is its id), ``fake.guild`` ("Dream Lab"),
  ``fake.channel`` ("general"; ``fake.guild.channels[1]`` is "dreams"), ``fake.admin`` (alice, MANAGE_GUILD),
  ``fake.user`` (bob, plain), ``fake.owner``; ``add_user``, ``add_guild``, ``add_channel``, ``add_member``,
  ``dm_channel(user)``; ``guild.upload_limit`` (10 MiB), ``channel.bot_can_send``.
- events to the bot: ``send_slash_command(name, options, user=, channel=, attachments=)``, ``send_autocomplete``,
  ``click_button(message, custom_id)``, ``select_option``, ``submit_modal(record, values)``,
  ``post_message(channel, content, author=, attachments=[(name, bytes[, type])], mentions_bot=, reference=)``,
  ``disconnect_client(allow_resume=)``, ``dispatch(event, data)``. Interactions return an ``InteractionRecord``:
  ``response_type``, ``original``, ``original_edits``, ``followups``, ``autocomplete_choices``, ``modal``,
  ``expired``, ``events``, ``requests``; ``await record`` / ``wait_ack``, ``wait_followups(n)``,
  ``wait_original_edit(n)``, ``wait_for(pred)``.
- what the bot did: ``messages`` (id -> ``StoredMessage``: ``content``, ``embeds``, ``components``, ``custom_ids``,
  ``attachments`` with ``data``, ``flags``/``ephemeral``, ``history``, ``deleted``, ``reactions``),
  ``bot_messages(channel)``, ``messages_in(channel)``, ``requests`` (``RequestRecord``: ``method``, ``path``,
  ``route``, ``query``, ``json``, ``files``, ``status``, ``response``), ``find_requests("POST /channels/*")``,
  ``registered_commands(guild=None)``, ``gateway_log``, ``identify_count``, ``resume_count``.
- waiting: ``wait_for(pred)``, ``wait_for_request(pattern)``, ``wait_for_message(pred, channel=)``.
- trouble on purpose: ``rate_limit(pattern, times, retry_after=)``, ``expire_token(record)``,
  ``advance_time(seconds)``, ``ack_timeout`` (3 s), ``privileged_intents=("message_content",)``.
- strictness: at teardown the fixture fails the test if a request hit a route the fake does not know
  (``fake.unhandled``), the fake itself crashed (``fake.errors``) or discord.py logged an ERROR, i.e. swallowed an
  exception in one of the bot's handlers (``fake.client_errors``; ``allow_client_errors=True`` to permit).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fnmatch
import itertools
import json
import logging
import math
import mimetypes
import re
import secrets
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import pytest_asyncio
import yarl
from aiohttp import WSMsgType, web

__all__ = [
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeMember",
    "FakeRole",
    "FakeUser",
    "InteractionRecord",
    "RequestRecord",
    "StoredFile",
    "StoredMessage",
    "fake_discord",
]

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
MIB = 1024 * 1024
DEFAULT_UPLOAD_LIMIT = 10 * MIB

# permission bits
CREATE_INSTANT_INVITE = 1 << 0
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_EXTERNAL_EMOJIS = 1 << 18
USE_APPLICATION_COMMANDS = 1 << 31
ALL_PERMISSIONS = (1 << 51) - 1
EVERYONE_PERMISSIONS = (
    CREATE_INSTANT_INVITE
    | ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | USE_APPLICATION_COMMANDS
)
BOT_PERMISSIONS = EVERYONE_PERMISSIONS

# gateway intents
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = {"members": INTENT_GUILD_MEMBERS, "presences": INTENT_GUILD_PRESENCES}
PRIVILEGED_INTENTS["message_content"] = INTENT_MESSAGE_CONTENT
APP_FLAG_FOR_INTENT = {"presences": 1 << 13, "members": 1 << 15, "message_content": 1 << 19}

# message flags
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_COMPONENTS_V2 = 1 << 15
CHANNEL_MESSAGE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_COMPONENTS_V2
INTERACTION_MESSAGE_FLAGS = CHANNEL_MESSAGE_FLAGS | FLAG_EPHEMERAL
EDIT_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_COMPONENTS_V2

# interaction types and the callback types each accepts
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
ALLOWED_CALLBACKS = {
    APPLICATION_COMMAND: {4, 5, 9, 12},
    MESSAGE_COMPONENT: {4, 5, 6, 7, 9},
    AUTOCOMPLETE: {8},
    MODAL_SUBMIT: {4, 5, 6, 7},
}

COMMAND_NAME_RE = re.compile(r"^[-_\w]{1,32}$")
SELECT_TYPES = {3, 5, 6, 7, 8}
V2_TOP_LEVEL_TYPES = {1, 9, 10, 12, 13, 14, 17}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _json_response(status: int, data: Any = None, headers: dict[str, str] | None = None) -> web.Response:
    if status == 204:
        return web.Response(status=204, headers=headers)
    # Exactly "application/json": discord.py parses JSON only when the header equals that string.
    return web.Response(
        status=status,
        body=json.dumps(data).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


class ApiError(Exception):
    """An error answer in Discord's shape; raised inside handlers."""

    def __init__(self, status: int, code: int, message: str, errors: dict | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.body: dict[str, Any] = {"code": code, "message": message}
        if errors:
            self.body["errors"] = errors


class FormErrors:
    """Collects Invalid Form Body errors under their JSON paths, nested the way Discord nests them."""

    def __init__(self) -> None:
        self.errors: dict[str, Any] = {}

    def add(self, path: tuple[Any, ...], code: str, message: str) -> None:
        node = self.errors
        for key in path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def max_length(self, path: tuple[Any, ...], value: Any, limit: int) -> None:
        if value is not None and len(value) > limit:
            self.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")

    def length_between(self, path: tuple[Any, ...], value: Any, low: int, high: int) -> None:
        if not isinstance(value, str | list):
            self.add(path, "BASE_TYPE_REQUIRED", "This field is required")
        elif not low <= len(value) <= high:
            self.add(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")

    def raise_if_any(self) -> None:
        if self.errors:
            raise ApiError(400, 50035, "Invalid Form Body", self.errors)


# --------------------------------------------------------------------------------------------------------------------
# the world: users, guilds, channels


@dataclass(eq=False)
class FakeUser:
    id: str
    username: str
    bot: bool = False
    global_name: str | None = None

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> dict[str, Any]:
        data = {
            "id": self.id,
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass(eq=False)
class FakeRole:
    id: str
    name: str
    permissions: int
    position: int = 0
    managed: bool = False
    bot_id: str | None = None

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": self.managed,
            "mentionable": False,
            "flags": 0,
        }
        if self.bot_id:
            data["tags"] = {"bot_id": self.bot_id}
        return data


@dataclass(eq=False)
class FakeMember:
    user: FakeUser
    roles: list[str] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = field(default_factory=_now_iso)

    def payload(self, *, with_user: bool = True, permissions: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": list(self.roles),
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,  # discord.py requires it
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.payload()
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass(eq=False)
class FakeChannel:
    id: str
    name: str
    type: int = 0  # 0 guild text, 1 DM
    guild_id: str | None = None
    position: int = 0
    topic: str | None = None
    recipients: list[FakeUser] = field(default_factory=list)
    bot_can_send: bool = True  # False: sending answers 403 Missing Permissions
    last_message_id: str | None = None

    @property
    def is_dm(self) -> bool:
        return self.type == 1

    def payload(self, *, permissions: int | None = None) -> dict[str, Any]:
        if self.is_dm:
            return {
                "id": self.id,
                "type": 1,
                "last_message_id": self.last_message_id,
                "flags": 0,
                "recipients": [u.payload() for u in self.recipients],
            }
        data: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "guild_id": self.guild_id,
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": self.topic,
            "rate_limit_per_user": 0,
            "last_message_id": self.last_message_id,
            "flags": 0,
        }
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass(eq=False)
class FakeGuild:
    id: str
    name: str
    owner_id: str
    roles: list[FakeRole] = field(default_factory=list)
    channels: list[FakeChannel] = field(default_factory=list)
    members: dict[str, FakeMember] = field(default_factory=dict)
    upload_limit: int = DEFAULT_UPLOAD_LIMIT
    locale: str = "en-US"

    def role(self, role_id: str) -> FakeRole | None:
        return next((r for r in self.roles if r.id == role_id), None)

    def permissions_of(self, user_id: str) -> int:
        if user_id == self.owner_id:
            return ALL_PERMISSIONS
        member = self.members.get(user_id)
        if member is None:
            return 0
        perms = 0
        for role_id in [self.id, *member.roles]:
            role = self.role(role_id)
            if role is not None:
                perms |= role.permissions
        return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms

    def payload(self, *, full: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": self.owner_id,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "system_channel_id": self.channels[0].id if self.channels else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "preferred_locale": self.locale,
            "features": [],
            "roles": [r.payload() for r in self.roles],
            "emojis": [],
            "stickers": [],
            "max_members": 500000,
            "max_video_channel_users": 25,
        }
        if full:  # GUILD_CREATE extras
            data.update(
                joined_at=_now_iso(),
                large=False,
                unavailable=False,
                member_count=len(self.members),
                voice_states=[],
                members=[m.payload() for m in self.members.values()],
                channels=[c.payload() for c in self.channels],
                threads=[],
                presences=[],
                stage_instances=[],
                guild_scheduled_events=[],
                soundboard_sounds=[],
            )
        return data


# --------------------------------------------------------------------------------------------------------------------
# what the bot did


@dataclass(eq=False)
class StoredFile:
    """An attachment's bytes, served by the fake at ``url``."""

    id: str
    filename: str
    content_type: str
    data: bytes
    url: str
    description: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(eq=False)
class StoredMessage:
    """A message as Discord holds it: ``payload`` is the message JSON; ``history`` the payloads before each edit."""

    payload: dict[str, Any]
    files: list[StoredFile] = field(default_factory=list)
    deleted: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    source: str = "channel"  # channel | interaction | followup | user
    interaction_id: str | None = None
    reactions: list[str] = field(default_factory=list)  # emoji the bot added

    @property
    def id(self) -> str:
        return self.payload["id"]

    @property
    def channel_id(self) -> str:
        return self.payload["channel_id"]

    @property
    def author_id(self) -> str:
        return self.payload["author"]["id"]

    @property
    def content(self) -> str:
        return self.payload.get("content", "")

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.payload.get("embeds", [])

    @property
    def components(self) -> list[dict[str, Any]]:
        return self.payload.get("components", [])

    @property
    def flags(self) -> int:
        return self.payload.get("flags", 0)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & FLAG_LOADING)

    @property
    def edited(self) -> bool:
        return bool(self.history)

    @property
    def attachments(self) -> list[StoredFile]:
        """The files currently attached (after edits), with their bytes."""
        ids = [a["id"] for a in self.payload.get("attachments", [])]
        by_id = {f.id: f for f in self.files}
        return [by_id[i] for i in ids if i in by_id]

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in _walk_components(self.components) if "custom_id" in c]

    def component(self, custom_id: str) -> dict[str, Any] | None:
        return next((c for c in _walk_components(self.components) if c.get("custom_id") == custom_id), None)


@dataclass(eq=False)
class UploadedFile:
    index: int
    filename: str
    content_type: str | None
    data: bytes


@dataclass(eq=False)
class RequestRecord:
    """One REST request: ``json`` is the JSON body, or ``payload_json`` of a multipart body; ``files`` its uploads."""

    method: str
    path: str  # without /api/v10 and without the query
    query: dict[str, str]
    route: str | None = None  # e.g. "POST /channels/{channel_id}/messages"
    json: Any = None
    files: list[UploadedFile] = field(default_factory=list)
    multipart: bool = False
    status: int | None = None
    response: Any = None
    time: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    def matches(self, pattern: str) -> bool:
        """``pattern`` is fnmatch-style: ``"POST /channels/*/messages"`` or ``"/webhooks/*"`` (any method)."""
        return fnmatch.fnmatchcase(self.path if pattern.startswith("/") else self.key, pattern)


@dataclass(eq=False)
class InteractionRecord:
    """One interaction the fake sent, and everything the bot did with it. ``await record`` waits for the ack."""

    fake: FakeDiscord
    id: str
    token: str
    type: int
    payload: dict[str, Any]
    channel_id: str
    guild_id: str | None
    user: FakeUser
    created: float
    message_id: str | None = None  # the message a component interaction came from
    response_type: int | None = None
    response: dict[str, Any] | None = None  # callback body {"type", "data"}
    response_files: list[UploadedFile] = field(default_factory=list)
    acked_at: float | None = None
    expired: bool = False  # not acknowledged within the deadline
    token_revoked: bool = False
    original: StoredMessage | None = None
    followups: list[StoredMessage] = field(default_factory=list)  # new messages made by follow-ups
    original_edits: list[dict[str, Any]] = field(default_factory=list)  # PATCH bodies sent to @original
    autocomplete_choices: list[dict[str, Any]] | None = None
    modal: dict[str, Any] | None = None
    events: list[str] = field(default_factory=list)  # "callback:5", "edit_original", "followup", ...

    @property
    def acknowledged(self) -> bool:
        return self.response_type is not None

    @property
    def requests(self) -> list[RequestRecord]:
        return [r for r in self.fake.requests if self.token in r.path]

    async def wait_for(self, predicate: Callable[[InteractionRecord], Any], timeout: float = 5.0) -> Any:
        return await self.fake.wait_for(lambda _fake: predicate(self), timeout=timeout, what=f"interaction {self.id}")

    async def wait_ack(self, timeout: float = 5.0) -> InteractionRecord:
        await self.wait_for(lambda r: r.acknowledged or r.expired, timeout)
        return self

    async def wait_followups(self, count: int = 1, timeout: float = 5.0) -> list[StoredMessage]:
        await self.wait_for(lambda r: len(r.followups) >= count, timeout)
        return self.followups

    async def wait_original_edit(self, count: int = 1, timeout: float = 5.0) -> StoredMessage:
        await self.wait_for(lambda r: len(r.original_edits) >= count, timeout)
        assert self.original is not None
        return self.original

    def __await__(self) -> Generator[Any, None, InteractionRecord]:
        return self.wait_ack().__await__()


@dataclass(eq=False)
class _RateLimitRule:
    pattern: str
    remaining: int
    retry_after: float
    is_global: bool
    hits: int = 0


@dataclass(eq=False)
class _GatewayConnection:
    ws: web.WebSocketResponse
    query: dict[str, str]
    seq: int = 0
    intents: int = 0
    session_id: str | None = None
    identified: bool = False


class _ErrorLogHandler(logging.Handler):
    """Keeps discord.py's ERROR records: exceptions it swallowed in event handlers, commands and views."""

    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(self.format(record))


def _walk_components(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for comp in components or []:
        if not isinstance(comp, dict):
            continue
        yield comp
        yield from _walk_components(comp.get("components") or [])
        for key in ("accessory", "component"):
            if isinstance(comp.get(key), dict):
                yield from _walk_components([comp[key]])


def _sniff_content_type(filename: str, data: bytes) -> str:
    magic = {
        b"\x89PNG\r\n\x1a\n": "image/png",
        b"\xff\xd8\xff": "image/jpeg",
        b"GIF87a": "image/gif",
        b"GIF89a": "image/gif",
    }
    for prefix, ctype in magic.items():
        if data.startswith(prefix):
            return ctype
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def _image_size(data: bytes) -> tuple[int, int] | None:
    try:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:
        return None


# --------------------------------------------------------------------------------------------------------------------
# validation of what the bot sends


def _check_embeds(embeds: Any, errs: FormErrors, path: tuple[Any, ...]) -> None:
    if not isinstance(embeds, list):
        errs.add(path, "BASE_TYPE_ARRAY", "Must be an array.")
        return
    errs.max_length(path, embeds, 10)
    total = 0
    for i, e in enumerate(embeds):
        p = (*path, i)
        if not isinstance(e, dict):
            errs.add(p, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
            continue
        for key, limit in (("title", 256), ("description", 4096)):
            if e.get(key) is not None:
                errs.max_length((*p, key), str(e[key]), limit)
                total += len(str(e[key]))
        for key, sub, limit in (("footer", "text", 2048), ("author", "name", 256)):
            if isinstance(e.get(key), dict) and e[key].get(sub) is not None:
                errs.max_length((*p, key, sub), str(e[key][sub]), limit)
                total += len(str(e[key][sub]))
        fields = e.get("fields") or []
        errs.max_length((*p, "fields"), fields, 25)
        for j, f in enumerate(fields):
            for key, limit in (("name", 256), ("value", 1024)):
                value = f.get(key) if isinstance(f, dict) else None
                if value is None or value == "":
                    errs.add((*p, "fields", j, key), "BASE_TYPE_REQUIRED", "This field is required")
                else:
                    errs.max_length((*p, "fields", j, key), str(value), limit)
                    total += len(str(value))
        color = e.get("color")
        if color is not None and not (isinstance(color, int) and 0 <= color <= 0xFFFFFF):
            errs.add((*p, "color"), "NUMBER_TYPE_MAX", "int value should be less than or equal to 16777215.")
    if total > 6000:
        errs.add(path, "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")


def _check_button(b: dict[str, Any], errs: FormErrors, p: tuple[Any, ...]) -> None:
    style = b.get("style")
    if style not in (1, 2, 3, 4, 5, 6):
        errs.add((*p, "style"), "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4, 5, 6}.")
        return
    if style == 5:
        url = b.get("url")
        if not url:
            errs.add((*p, "url"), "BUTTON_COMPONENT_URL_REQUIRED", "A url is required")
        elif not str(url).startswith(("http://", "https://", "discord://")):
            errs.add((*p, "url"), "URL_TYPE_INVALID_PROTOCOL", "Scheme must be one of ('http', 'https', 'discord').")
        if "custom_id" in b:
            errs.add((*p, "custom_id"), "BUTTON_COMPONENT_CUSTOM_ID_CANNOT_BE_SET", "A custom id cannot be set")
    elif style == 6:
        if not b.get("sku_id"):
            errs.add((*p, "sku_id"), "BASE_TYPE_REQUIRED", "This field is required")
        for key in ("custom_id", "url", "label", "emoji"):
            if key in b:
                errs.add((*p, key), "BUTTON_COMPONENT_INVALID_FIELD", f"Premium buttons cannot have {key}")
    else:
        errs.length_between((*p, "custom_id"), b.get("custom_id"), 1, 100)
        if "url" in b:
            errs.add((*p, "url"), "BUTTON_COMPONENT_URL_CANNOT_BE_SET", "A url cannot be set")
    if style != 6:
        if b.get("label") is not None:
            errs.max_length((*p, "label"), str(b["label"]), 80)
        if not b.get("label") and not b.get("emoji"):
            errs.add(p, "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED", "A label or emoji is required")


def _check_select(s: dict[str, Any], errs: FormErrors, p: tuple[Any, ...]) -> None:
    errs.length_between((*p, "custom_id"), s.get("custom_id"), 1, 100)
    if s.get("placeholder") is not None:
        errs.max_length((*p, "placeholder"), str(s["placeholder"]), 150)
    low, high = s.get("min_values", 1), s.get("max_values", 1)
    if not (isinstance(low, int) and 0 <= low <= 25):
        errs.add((*p, "min_values"), "NUMBER_TYPE_MAX", "int value should be between 0 and 25.")
    if not (isinstance(high, int) and 1 <= high <= 25):
        errs.add((*p, "max_values"), "NUMBER_TYPE_MAX", "int value should be between 1 and 25.")
    elif isinstance(low, int) and low > high:
        errs.add((*p, "min_values"), "SELECT_COMPONENT_MIN_VALUES_TOO_LARGE", "min_values must not exceed max_values")
    if s.get("type") == 3:
        options = s.get("options") or []
        errs.length_between((*p, "options"), options, 1, 25)
        if isinstance(high, int) and options and high > len(options):
            errs.add((*p, "max_values"), "SELECT_COMPONENT_TOO_MANY_VALUES", "max_values exceeds the number of options")
        for j, o in enumerate(options):
            for key in ("label", "value"):
                errs.length_between((*p, "options", j, key), o.get(key) if isinstance(o, dict) else None, 1, 100)
            if isinstance(o, dict) and o.get("description") is not None:
                errs.max_length((*p, "options", j, "description"), str(o["description"]), 100)


def _check_components(components: Any, flags: int, errs: FormErrors, path: tuple[Any, ...]) -> None:
    if not isinstance(components, list):
        errs.add(path, "BASE_TYPE_ARRAY", "Must be an array.")
        return
    v2 = bool(flags & FLAG_COMPONENTS_V2)
    seen: set[str] = set()

    def check_interactive(c: dict[str, Any], p: tuple[Any, ...]) -> None:
        if c.get("type") == 2:
            _check_button(c, errs, p)
        elif c.get("type") in SELECT_TYPES:
            _check_select(c, errs, p)
        custom_id = c.get("custom_id")
        if isinstance(custom_id, str):
            if custom_id in seen:
                errs.add(
                    (*p, "custom_id"), "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated"
                )
            seen.add(custom_id)

    if not v2:
        errs.max_length(path, components, 5)
        for i, row in enumerate(components):
            p = (*path, i)
            if not isinstance(row, dict) or row.get("type") != 1:
                errs.add(p, "UNION_TYPE_CHOICES", 'Value of field "type" must be one of (1,).')
                continue
            children = row.get("components") or []
            if not children:
                errs.add((*p, "components"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
            kinds = {c.get("type") for c in children if isinstance(c, dict)}
            if kinds & SELECT_TYPES and len(children) > 1:
                errs.add(
                    (*p, "components"),
                    "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                    "The specified component exceeds the maximum width",
                )
            elif len(children) > 5:
                errs.add((*p, "components"), "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
            for j, c in enumerate(children):
                if not isinstance(c, dict) or c.get("type") not in {2} | SELECT_TYPES:
                    errs.add((*p, "components", j, "type"), "COMPONENT_TYPE_INVALID", "Invalid component type")
                    continue
                check_interactive(c, (*p, "components", j))
        return

    every = list(_walk_components(components))
    if len(every) > 40:
        errs.add(path, "COMPONENT_MAX_TOTAL_COMPONENTS_EXCEEDED", "Must be 40 or fewer in total.")
    for i, c in enumerate(components):
        if not isinstance(c, dict) or c.get("type") not in V2_TOP_LEVEL_TYPES:
            errs.add((*path, i, "type"), "COMPONENT_TYPE_INVALID", "Invalid top-level component type")
    for c in every:
        if c.get("type") == 2 or c.get("type") in SELECT_TYPES:
            check_interactive(c, (*path, "?"))


def _check_command_options(options: Any, errs: FormErrors, path: tuple[Any, ...], depth: int) -> int:
    """Validates an options array; returns the number of characters it adds to the command's size."""
    if not isinstance(options, list):
        errs.add(path, "BASE_TYPE_ARRAY", "Must be an array.")
        return 0
    errs.max_length(path, options, 25)
    size = 0
    names: set[str] = set()
    seen_optional = False
    kinds = set()
    for i, opt in enumerate(options):
        p = (*path, i)
        if not isinstance(opt, dict):
            errs.add(p, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
            continue
        otype = opt.get("type")
        if otype not in range(1, 12):
            errs.add((*p, "type"), "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}.")
            continue
        kinds.add("sub" if otype in (1, 2) else "value")
        name, description = opt.get("name"), opt.get("description")
        if not isinstance(name, str) or not COMMAND_NAME_RE.match(name) or name != name.lower():
            errs.add((*p, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        elif name in names:
            errs.add((*p, "name"), "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS", "Option name already exists")
        else:
            names.add(name)
        errs.length_between((*p, "description"), description, 1, 100)
        size += len(str(name or "")) + len(str(description or ""))
        if otype in (1, 2):
            if opt.get("required"):
                errs.add((*p, "required"), "APPLICATION_COMMAND_OPTION_INVALID", "Subcommands cannot be required")
            if depth >= (2 if otype == 2 else 3):
                errs.add((*p, "type"), "APPLICATION_COMMAND_OPTION_INVALID", "Subcommand nesting is too deep")
            children = opt.get("options") or []
            if otype == 2 and any(isinstance(c, dict) and c.get("type") != 1 for c in children):
                errs.add((*p, "options"), "APPLICATION_COMMAND_OPTION_INVALID", "Groups may only hold subcommands")
            if otype == 1 and any(isinstance(c, dict) and c.get("type") in (1, 2) for c in children):
                errs.add((*p, "options"), "APPLICATION_COMMAND_OPTION_INVALID", "Subcommands may not nest")
            size += _check_command_options(children, errs, (*p, "options"), depth + 1)
            continue
        if opt.get("required"):
            if seen_optional:
                errs.add(
                    (*p, "required"),
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            seen_optional = True
        choices = opt.get("choices")
        if choices is not None:
            if otype not in (3, 4, 10):
                errs.add((*p, "choices"), "APPLICATION_COMMAND_OPTION_INVALID", "Choices are not allowed here")
            errs.max_length((*p, "choices"), choices, 25)
            for j, ch in enumerate(choices if isinstance(choices, list) else []):
                errs.length_between((*p, "choices", j, "name"), ch.get("name"), 1, 100)
                value = ch.get("value")
                ok = {
                    3: isinstance(value, str) and len(value) <= 100,
                    4: isinstance(value, int) and not isinstance(value, bool),
                    10: isinstance(value, int | float) and not isinstance(value, bool),
                }.get(otype, True)
                if not ok:
                    errs.add(
                        (*p, "choices", j, "value"), "BASE_TYPE_BAD_TYPE", "Choice value does not match option type"
                    )
                size += len(str(ch.get("name", ""))) + len(str(value))
            if opt.get("autocomplete"):
                errs.add(
                    (*p, "autocomplete"),
                    "APPLICATION_COMMAND_OPTION_CHOICES_AND_AUTOCOMPLETE",
                    "Autocomplete cannot be set if choices are present",
                )
        if opt.get("autocomplete") and otype not in (3, 4, 10):
            errs.add((*p, "autocomplete"), "APPLICATION_COMMAND_OPTION_INVALID", "Autocomplete is not allowed here")
        for key in ("min_value", "max_value"):
            if key in opt and otype not in (4, 10):
                errs.add((*p, key), "APPLICATION_COMMAND_OPTION_INVALID", f"{key} is only allowed on numbers")
        for key in ("min_length", "max_length"):
            if key in opt:
                value = opt[key]
                if otype != 3:
                    errs.add((*p, key), "APPLICATION_COMMAND_OPTION_INVALID", f"{key} is only allowed on strings")
                elif not (isinstance(value, int) and (0 if key == "min_length" else 1) <= value <= 6000):
                    errs.add((*p, key), "NUMBER_TYPE_MAX", "int value should be between 0 and 6000.")
        if "channel_types" in opt and otype != 7:
            errs.add((*p, "channel_types"), "APPLICATION_COMMAND_OPTION_INVALID", "channel_types only on channels")
    if len(kinds) > 1:
        errs.add(path, "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID", "Subcommands cannot be mixed with other options")
    return size


def validate_command(cmd: Any, errs: FormErrors, path: tuple[Any, ...] = ()) -> None:
    """Checks one application command definition the way Discord does; errors go into ``errs``."""
    if not isinstance(cmd, dict):
        errs.add(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
        return
    ctype = cmd.get("type", 1)
    if ctype not in (1, 2, 3, 4):
        errs.add((*path, "type"), "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4}.")
        return
    name, description = cmd.get("name"), cmd.get("description", "")
    if ctype == 1:
        if not isinstance(name, str) or not COMMAND_NAME_RE.match(name) or name != name.lower():
            errs.add((*path, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        errs.length_between((*path, "description"), description, 1, 100)
    else:
        errs.length_between((*path, "name"), name, 1, 32)
        if description:
            errs.add((*path, "description"), "APPLICATION_COMMAND_INVALID_DESCRIPTION", "Must be empty for this type")
        if cmd.get("options"):
            errs.add((*path, "options"), "APPLICATION_COMMAND_OPTION_INVALID", "Only chat input commands take options")
    size = len(str(name or "")) + len(str(description or ""))
    if ctype == 1 and cmd.get("options") is not None:
        size += _check_command_options(cmd["options"], errs, (*path, "options"), 0)
    if size > 8000:
        errs.add((*path,), "APPLICATION_COMMAND_TOO_LARGE", "Command exceeds maximum size (8000)")
    perms = cmd.get("default_member_permissions")
    # documented as a string; Discord also takes an integer, which is what discord.py sends
    if perms is not None and not ((isinstance(perms, str) and perms.isdigit()) or (type(perms) is int and perms >= 0)):
        errs.add((*path, "default_member_permissions"), "BASE_TYPE_BAD_TYPE", "Must be a permission bit set string")
    for key, allowed in (("contexts", {0, 1, 2}), ("integration_types", {0, 1})):
        value = cmd.get(key)
        if value is not None and (not isinstance(value, list) or not set(value) <= allowed):
            errs.add((*path, key), "BASE_TYPE_CHOICES", f"Values must be among {sorted(allowed)}.")


# --------------------------------------------------------------------------------------------------------------------
# the server


class FakeDiscord:
    """A fake Discord for one discord.py client. See the module docstring; the public methods below are the API."""

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        ack_timeout: float = 3.0,
        token_lifetime: float = 15 * 60.0,
        heartbeat_interval_ms: int = 41250,
        privileged_intents: tuple[str, ...] = (),
        echo_bot_messages: bool = True,
        strict: bool = True,
        allow_client_errors: bool = False,
    ) -> None:
        self.token = token
        self.ack_timeout = ack_timeout
        self.token_lifetime = token_lifetime
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.privileged_intents = set(privileged_intents)  # approved in the developer portal
        self.echo_bot_messages = echo_bot_messages  # MESSAGE_CREATE/UPDATE/DELETE for what the bot itself did
        self.strict = strict  # the fixture fails a test that hit an unknown route or crashed the fake
        self.allow_client_errors = allow_client_errors  # else ERROR logs from discord.* fail the test too

        self._ids = itertools.count(1)
        self._time_offset = 0.0
        self._runner: web.AppRunner | None = None
        self.port: int = 0
        self._changed = asyncio.Event()
        self._timers: list[asyncio.TimerHandle] = []

        # recorded state
        self.requests: list[RequestRecord] = []
        self.unhandled: list[RequestRecord] = []
        self.errors: list[str] = []  # tracebacks of bugs inside the fake
        self.client_errors: list[str] = []  # ERROR records logged by discord.py (exceptions in the bot's handlers)
        self._log_handler = _ErrorLogHandler(self.client_errors)
        self.messages: dict[str, StoredMessage] = {}
        self.files: dict[str, StoredFile] = {}
        self.interactions: dict[str, InteractionRecord] = {}
        self.commands: dict[str | None, list[dict[str, Any]]] = {None: []}  # scope: None global, or guild id
        self._command_ids: dict[tuple[str | None, int, str], str] = {}
        self.gateway_log: list[tuple[str, dict[str, Any]]] = []  # ("recv"|"send", frame)
        self.gateway_connections = 0
        self.identify_count = 0
        self.resume_count = 0
        self.presence: dict[str, Any] | None = None
        self._conn: _GatewayConnection | None = None
        self._rate_limits: list[_RateLimitRule] = []
        self._allow_resume = True
        self._route_table: list[tuple[str, re.Pattern[str], Callable[..., Any], bool, str]] = []

        # the world
        self.users: dict[str, FakeUser] = {}
        self.guilds: dict[str, FakeGuild] = {}
        self.channels: dict[str, FakeChannel] = {}
        self.application_id = self.snowflake()
        self.bot = FakeUser(self.application_id, "DreamBot", bot=True)
        self.users[self.bot.id] = self.bot
        self.owner = self.add_user("owner")  # owns the application
        self.admin = self.add_user("alice", global_name="Alice")
        self.user = self.add_user("bob", global_name="Bob")
        self.guild = self.add_guild("Dream Lab", channels=("general", "dreams"))
        self.channel = self.guild.channels[0]
        self.add_member(self.guild, self.admin, admin=True)
        self.add_member(self.guild, self.user)

    # ---- world building ----------------------------------------------------------------------------------------

    def snowflake(self) -> str:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return str((ms << 22) | (next(self._ids) & 0x3FFFFF))

    def add_user(self, username: str, *, bot: bool = False, global_name: str | None = None) -> FakeUser:
        user = FakeUser(self.snowflake(), username, bot=bot, global_name=global_name)
        self.users[user.id] = user
        return user

    def add_guild(
        self, name: str, *, channels: tuple[str, ...] = ("general",), upload_limit: int = DEFAULT_UPLOAD_LIMIT
    ) -> FakeGuild:
        """A guild the bot is in: @everyone, an "Admin" role (MANAGE_GUILD), the bot's managed role and member."""
        gid = self.snowflake()
        guild = FakeGuild(gid, name, owner_id=self.owner.id, upload_limit=upload_limit)
        guild.roles.append(FakeRole(gid, "@everyone", EVERYONE_PERMISSIONS, 0))
        guild.roles.append(FakeRole(self.snowflake(), "Admin", EVERYONE_PERMISSIONS | MANAGE_GUILD, 2))
        bot_role = FakeRole(self.snowflake(), self.bot.username, BOT_PERMISSIONS, 1, managed=True, bot_id=self.bot.id)
        guild.roles.append(bot_role)
        guild.members[self.bot.id] = FakeMember(self.bot, [bot_role.id])
        self.guilds[gid] = guild
        for channel_name in channels:
            self.add_channel(guild, channel_name)
        return guild

    def add_channel(self, guild: FakeGuild, name: str) -> FakeChannel:
        channel = FakeChannel(self.snowflake(), name, 0, guild.id, position=len(guild.channels))
        guild.channels.append(channel)
        self.channels[channel.id] = channel
        return channel

    def add_member(self, guild: FakeGuild, user: FakeUser, *, admin: bool = False, roles: tuple[str, ...] = ()):
        role_ids = list(roles)
        if admin:
            role_ids.append(next(r.id for r in guild.roles if r.name == "Admin"))
        member = FakeMember(user, role_ids)
        guild.members[user.id] = member
        return member

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The DM channel between the bot and ``user`` (made on first use, as Discord does)."""
        for channel in self.channels.values():
            if channel.is_dm and channel.recipients[0] is user:
                return channel
        channel = FakeChannel(self.snowflake(), "", 1, None, recipients=[user])
        self.channels[channel.id] = channel
        return channel

    # ---- time, tokens, rate limits ---------------------------------------------------------------------------

    def now(self) -> float:
        """The fake's clock (monotonic seconds, moved by ``advance_time``)."""
        return time.monotonic() + self._time_offset

    def advance_time(self, seconds: float) -> None:
        """Moves the fake's clock: e.g. ``advance_time(15 * 60 + 1)`` expires every interaction token."""
        self._time_offset += seconds
        self._touch()

    def expire_token(self, token_or_record: str | InteractionRecord) -> None:
        """Makes an interaction token invalid now, as if 15 minutes had passed for it."""
        record = token_or_record if isinstance(token_or_record, InteractionRecord) else self._by_token(token_or_record)
        if record is None:
            raise KeyError("unknown interaction token")
        record.token_revoked = True
        self._touch()

    def rate_limit(
        self, route_pattern: str, times: int = 1, *, retry_after: float = 0.05, is_global: bool = False
    ) -> _RateLimitRule:
        """Answers the next ``times`` matching requests with 429. Pattern as in ``RequestRecord.matches``."""
        rule = _RateLimitRule(route_pattern, times, retry_after, is_global)
        self._rate_limits.append(rule)
        return rule

    # ---- lifecycle -----------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=256 * MIB)
        app.router.add_get("/gateway", self._gateway_handler)
        app.router.add_get("/attachments/{attachment_id}/{filename}", self._attachment_handler)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._api_handler)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        logging.getLogger("discord").addHandler(self._log_handler)
        return self

    async def stop(self) -> None:
        logging.getLogger("discord").removeHandler(self._log_handler)
        for timer in self._timers:
            timer.cancel()
        if self._conn is not None and not self._conn.ws.closed:
            await self._conn.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @contextlib.contextmanager
    def patch_discord(self) -> Iterator[None]:
        """Points discord.py's REST base and default gateway at this fake; restores them afterwards."""
        import discord.gateway
        import discord.http

        old_base = discord.http.Route.BASE
        old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        self._patch = self.patch_discord()
        self._patch.__enter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._patch.__exit__(None, None, None)
        await self.stop()

    def check(self) -> None:
        """Raises if the fake saw a route it does not know, or crashed; the fixture calls it at teardown."""
        problems = [f"unhandled route: {r.key}" for r in self.unhandled] + self.errors
        if not self.allow_client_errors:
            problems += [f"discord.py logged an error:\n{e}" for e in self.client_errors]
        if problems:
            raise AssertionError("FakeDiscord: " + "\n".join(problems))

    @contextlib.asynccontextmanager
    async def run_client(self, client: Any, *, timeout: float = 10.0) -> AsyncIterator[Any]:
        """Starts ``client`` (login, setup_hook, gateway) and waits until it is ready; closes it afterwards.

        Build the client with ``guild_ready_timeout=0.05`` or so: discord.py waits that long after the last
        GUILD_CREATE before it calls itself ready (default 2 s)."""
        task = asyncio.create_task(client.start(self.token), name="fake-discord-client")
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while not client.is_ready():
                if task.done():
                    task.result()  # raises the login/connect error
                    raise RuntimeError("client stopped before it was ready")
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError("client did not become ready; gateway log: " + repr(self.gateway_log[-5:]))
                await asyncio.sleep(0.01)
            yield client
        finally:
            propagating = sys.exc_info()[1] is not None
            await client.close()
            done, _ = await asyncio.wait([task], timeout=5)
            if not done:
                task.cancel()
            elif not propagating and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    # ---- waiting -------------------------------------------------------------------------------------------------

    def _touch(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[FakeDiscord], Any], timeout: float = 5.0, *, what: str = "") -> Any:
        """Waits until ``predicate(fake)`` is truthy and returns its value; TimeoutError lists recent requests."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate(self)
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = "\n".join(f"  {r.key} -> {r.status} {r.response!r:.200}" for r in self.requests[-8:])
                errors = "".join(f"\ndiscord.py logged: {e}" for e in self.client_errors[-3:])
                raise TimeoutError(
                    f"FakeDiscord.wait_for {what} timed out after {timeout}s; recent requests:\n{recent}{errors}"
                )
            event = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.25))

    async def wait_for_request(self, pattern: str, count: int = 1, timeout: float = 5.0) -> RequestRecord:
        """Waits for the ``count``-th answered request matching ``pattern`` (e.g. ``"POST /channels/*/messages"``)."""

        def find(fake: FakeDiscord) -> RequestRecord | None:
            answered = [r for r in fake.requests if r.status is not None and r.matches(pattern)]
            return answered[count - 1] if len(answered) >= count else None

        return await self.wait_for(find, timeout, what=pattern)

    async def wait_for_message(
        self,
        predicate: Callable[[StoredMessage], Any] | None = None,
        *,
        channel: FakeChannel | None = None,
        timeout: float = 5.0,
    ) -> StoredMessage:
        """Waits for a message by the bot (optionally in ``channel`` and matching ``predicate``)."""

        def find(fake: FakeDiscord) -> StoredMessage | None:
            for m in fake.bot_messages(channel):
                if predicate is None or predicate(m):
                    return m
            return None

        return await self.wait_for(find, timeout, what="bot message")

    # ---- queries -------------------------------------------------------------------------------------------------

    def find_requests(self, pattern: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.matches(pattern)]

    def messages_in(self, channel: FakeChannel | str, *, include_deleted: bool = False) -> list[StoredMessage]:
        cid = channel.id if isinstance(channel, FakeChannel) else channel
        return [m for m in self.messages.values() if m.channel_id == cid and (include_deleted or not m.deleted)]

    def bot_messages(
        self, channel: FakeChannel | str | None = None, *, include_deleted: bool = False
    ) -> list[StoredMessage]:
        cid = channel.id if isinstance(channel, FakeChannel) else channel
        return [
            m
            for m in self.messages.values()
            if m.author_id == self.bot.id
            and (cid is None or m.channel_id == cid)
            and (include_deleted or not m.deleted)
        ]

    def registered_commands(self, guild: FakeGuild | str | None = None) -> dict[str, dict[str, Any]]:
        """Commands registered globally (``guild=None``) or for a guild, by name."""
        scope = guild.id if isinstance(guild, FakeGuild) else guild
        return {c["name"]: c for c in self.commands.get(scope, [])}

    # ---- events pushed to the client -----------------------------------------------------------------------------

    async def send_slash_command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: FakeUser | None = None,
        guild: FakeGuild | None = None,
        channel: FakeChannel | None = None,
        attachments: dict[str, Any] | None = None,
        locale: str = "en-US",
        force: bool = False,
    ) -> InteractionRecord:
        """Sends INTERACTION_CREATE (type 2) for a registered command, as a user invoking it would.

        ``name`` may name a subcommand: ``"dream zoom"``. ``options`` maps option names to values: str/int/float/bool,
        a ``FakeUser``/``FakeChannel``/``FakeRole`` for those types, and for attachment options a
        ``(filename, bytes[, content_type])`` tuple (``attachments=`` takes the same, merged into ``options``).
        Raises ValueError for what Discord's own client would not let a user send (unknown command or option,
        missing required option, wrong type, out of range, not a choice, no permission) unless ``force``."""
        values = {**(options or {}), **(attachments or {})}
        channel = channel or (guild.channels[0] if guild else self.channel)
        guild = self.guilds.get(channel.guild_id) if channel.guild_id else None
        user = self._actor(channel, user)
        parts = name.split()
        cmd = self._lookup_command(parts[0], guild, 1)
        if cmd is None:
            raise ValueError(f"no chat command {parts[0]!r} is registered for this guild or globally; sync first")
        if not force:
            self._check_command_usable(cmd, user, guild, channel)
        resolved: dict[str, dict[str, Any]] = {}
        defs = cmd.get("options") or []
        path: list[tuple[str, int]] = []
        for part in parts[1:]:
            sub = next((o for o in defs if o["name"] == part and o["type"] in (1, 2)), None)
            if sub is None:
                raise ValueError(f"{name!r}: no subcommand {part!r}")
            path.append((part, sub["type"]))
            defs = sub.get("options") or []
        if any(o["type"] in (1, 2) for o in defs):
            raise ValueError(f"{name!r} is a group: name one of its subcommands")
        opts = self._build_options(defs, values, resolved, guild, focused=None, force=force)
        for sub_name, sub_type in reversed(path):
            opts = [{"name": sub_name, "type": sub_type, "options": opts}]
        data: dict[str, Any] = {"id": cmd["id"], "name": cmd["name"], "type": 1}
        if opts:
            data["options"] = opts
        if resolved:
            data["resolved"] = resolved
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        return await self._send_interaction(APPLICATION_COMMAND, data, user, channel, locale=locale)

    async def send_autocomplete(
        self,
        name: str,
        options: dict[str, Any],
        focused: str,
        *,
        user: FakeUser | None = None,
        channel: FakeChannel | None = None,
    ) -> InteractionRecord:
        """Sends an autocomplete interaction (type 4): ``options`` as typed so far, ``focused`` the option typed in.
        The bot's choices land in ``record.autocomplete_choices``."""
        channel = channel or self.channel
        guild = self.guilds.get(channel.guild_id) if channel.guild_id else None
        parts = name.split()
        cmd = self._lookup_command(parts[0], guild, 1)
        if cmd is None:
            raise ValueError(f"no chat command {parts[0]!r} is registered; sync first")
        defs = cmd.get("options") or []
        path = []
        for part in parts[1:]:
            sub = next(o for o in defs if o["name"] == part and o["type"] in (1, 2))
            path.append((part, sub["type"]))
            defs = sub.get("options") or []
        focused_def = next((o for o in defs if o["name"] == focused), None)
        if focused_def is None or not focused_def.get("autocomplete"):
            raise ValueError(f"option {focused!r} of {name!r} does not have autocomplete")
        opts = self._build_options(defs, options, {}, guild, focused=focused, force=True)
        for sub_name, sub_type in reversed(path):
            opts = [{"name": sub_name, "type": sub_type, "options": opts}]
        data: dict[str, Any] = {"id": cmd["id"], "name": cmd["name"], "type": 1, "options": opts}
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        return await self._send_interaction(AUTOCOMPLETE, data, self._actor(channel, user), channel)

    async def click_button(
        self, message: StoredMessage | str, custom_id: str, *, user: FakeUser | None = None
    ) -> InteractionRecord:
        """A user presses the button ``custom_id`` on one of the bot's messages (component interaction, type 3)."""
        msg = self._message(message)
        comp = msg.component(custom_id)
        if comp is None or comp.get("type") != 2:
            raise ValueError(f"message {msg.id} has no button {custom_id!r}; custom ids: {msg.custom_ids}")
        if comp.get("disabled"):
            raise ValueError(f"button {custom_id!r} is disabled")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": 2}
        if "id" in comp:
            data["id"] = comp["id"]
        return await self._send_interaction(
            MESSAGE_COMPONENT,
            data,
            self._actor(self.channels[msg.channel_id], user),
            self.channels[msg.channel_id],
            message=msg,
        )

    async def select_option(
        self, message: StoredMessage | str, custom_id: str, values: list[str], *, user: FakeUser | None = None
    ) -> InteractionRecord:
        """A user picks ``values`` in the string select ``custom_id`` on one of the bot's messages."""
        msg = self._message(message)
        comp = msg.component(custom_id)
        if comp is None or comp.get("type") not in SELECT_TYPES:
            raise ValueError(f"message {msg.id} has no select {custom_id!r}; custom ids: {msg.custom_ids}")
        if comp.get("disabled"):
            raise ValueError(f"select {custom_id!r} is disabled")
        if comp["type"] == 3:
            allowed = {o["value"] for o in comp.get("options", [])}
            if not set(values) <= allowed:
                raise ValueError(f"values {values} not among the options {sorted(allowed)}")
        if not comp.get("min_values", 1) <= len(values) <= comp.get("max_values", 1):
            raise ValueError("number of values outside min_values..max_values")
        data = {"custom_id": custom_id, "component_type": comp["type"], "values": list(values)}
        return await self._send_interaction(
            MESSAGE_COMPONENT,
            data,
            self._actor(self.channels[msg.channel_id], user),
            self.channels[msg.channel_id],
            message=msg,
        )

    async def submit_modal(
        self, record: InteractionRecord, values: dict[str, Any], *, user: FakeUser | None = None
    ) -> InteractionRecord:
        """A user fills in and submits the modal the bot showed in answer to ``record`` (type 5 interaction)."""
        if record.modal is None:
            raise ValueError("the bot did not answer this interaction with a modal")

        def fill(comp: dict[str, Any]) -> dict[str, Any] | None:
            ctype = comp.get("type")
            if ctype == 1:
                return {"type": 1, "components": [c for c in map(fill, comp.get("components", [])) if c]}
            if ctype == 18 and isinstance(comp.get("component"), dict):
                inner = fill(comp["component"])
                return {"type": 18, "component": inner} if inner else None
            if ctype == 4:
                return {"type": 4, "custom_id": comp["custom_id"], "value": str(values.get(comp["custom_id"], ""))}
            if ctype in SELECT_TYPES:
                return {
                    "type": ctype,
                    "custom_id": comp["custom_id"],
                    "values": list(values.get(comp["custom_id"], [])),
                }
            return None

        components = [c for c in map(fill, record.modal.get("components", [])) if c]
        data = {"custom_id": record.modal["custom_id"], "components": components}
        msg = self.messages.get(record.message_id) if record.message_id else None
        return await self._send_interaction(
            MODAL_SUBMIT, data, user or record.user, self.channels[record.channel_id], message=msg
        )

    async def post_message(
        self,
        channel: FakeChannel | None = None,
        content: str = "",
        *,
        author: FakeUser | None = None,
        attachments: list[tuple[Any, ...]] | tuple[()] = (),
        mentions_bot: bool = True,
        reference: StoredMessage | str | None = None,
        embeds: list[dict[str, Any]] | tuple[()] = (),
    ) -> StoredMessage:
        """A user posts a message (MESSAGE_CREATE). ``attachments``: ``(filename, bytes[, content_type])``;
        ``embeds``: embed payloads, e.g. the picture Discord shows for a posted link (see :meth:`media_url`).

        With ``mentions_bot`` the content starts with the bot's mention (added if missing). As on Discord, a bot
        without the message-content intent receives content, embeds and attachments only for messages that
        mention it and for DMs; otherwise they arrive empty."""
        channel = channel or self.channel
        author = self._actor(channel, author)
        if mentions_bot and self.bot.mention not in content:
            content = f"{self.bot.mention} {content}".strip()
        guild = self.guilds.get(channel.guild_id) if channel.guild_id else None
        mentions = self._mentioned_users(content, guild)
        payload = self._message_skeleton(channel, author)
        payload.update(content=content, mentions=mentions)
        if reference is not None:
            ref = self._message(reference)
            payload["type"] = 19
            payload["message_reference"] = {
                "type": 0,
                "message_id": ref.id,
                "channel_id": ref.channel_id,
                **({"guild_id": channel.guild_id} if channel.guild_id else {}),
            }
            payload["referenced_message"] = copy.deepcopy(ref.payload)
            if mentions_bot and ref.author_id == self.bot.id and not any(m["id"] == self.bot.id for m in mentions):
                mentions.append(self._mention_payload(self.bot, guild))
        files = []
        for item in attachments:
            stored = self._store_file(*item)
            files.append(stored)
        payload["attachments"] = [self._attachment_payload(f) for f in files]
        payload["embeds"] = [copy.deepcopy(embed) for embed in embeds]
        msg = StoredMessage(payload, files=files, source="user")
        self._save(msg, channel)
        await self._dispatch_message("MESSAGE_CREATE", msg)
        return msg

    def media_url(self, filename: str, data: bytes, content_type: str | None = None) -> str:
        """Serves ``data`` like Discord's media proxy serves a linked picture; returns its address."""
        return self._store_file(filename, data, content_type).url

    async def disconnect_client(self, *, code: int = 4000, allow_resume: bool = True) -> None:
        """Closes the gateway socket. discord.py reconnects; with ``allow_resume`` its RESUME is answered with
        RESUMED, otherwise with INVALID_SESSION (it then identifies afresh and gets READY again)."""
        self._allow_resume = allow_resume
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.ws.close(code=code)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Sends any gateway DISPATCH event to the connected client."""
        await self._dispatch(event, data, required=True)

    # ---- internals: interactions --------------------------------------------------------------------------------

    def _actor(self, channel: FakeChannel, user: FakeUser | None) -> FakeUser:
        """Who acts: ``user``, else the DM's recipient, else the plain member ``fake.user``."""
        if channel.is_dm:
            if user is not None and user not in channel.recipients:
                raise ValueError(f"{user.username} is not in this DM")
            return channel.recipients[0]
        return user or self.user

    def _lookup_command(self, name: str, guild: FakeGuild | None, ctype: int) -> dict[str, Any] | None:
        scopes = ([guild.id] if guild else []) + [None]
        for scope in scopes:
            for cmd in self.commands.get(scope, []):
                if cmd["name"] == name and cmd.get("type", 1) == ctype:
                    return cmd
        return None

    def _check_command_usable(
        self, cmd: dict[str, Any], user: FakeUser, guild: FakeGuild | None, channel: FakeChannel
    ) -> None:
        contexts = cmd.get("contexts")
        if guild is None:
            if (contexts is not None and 1 not in contexts) or cmd.get("dm_permission") is False or cmd.get("guild_id"):
                raise ValueError(f"command {cmd['name']!r} cannot be used in DMs")
            return
        if contexts is not None and 0 not in contexts:
            raise ValueError(f"command {cmd['name']!r} cannot be used in guilds")
        if user.id not in guild.members:
            raise ValueError(f"{user.username} is not a member of {guild.name}")
        required = cmd.get("default_member_permissions")
        if required is not None:
            have = guild.permissions_of(user.id)
            if have & int(required) != int(required):
                raise ValueError(f"{user.username} lacks the permissions command {cmd['name']!r} requires")

    def _build_options(
        self,
        defs: list[dict[str, Any]],
        values: dict[str, Any],
        resolved: dict[str, dict[str, Any]],
        guild: FakeGuild | None,
        *,
        focused: str | None,
        force: bool,
    ) -> list[dict[str, Any]]:
        out = []
        by_name = {d["name"]: d for d in defs}
        for name, value in values.items():
            d = by_name.get(name)
            if d is None:
                raise ValueError(f"no option {name!r}; options are {sorted(by_name)}")
            otype = d["type"]
            opt: dict[str, Any] = {"name": name, "type": otype}
            if name == focused:
                opt.update(value=value, focused=True)
            elif otype == 11:
                stored = value if isinstance(value, StoredFile) else self._store_file(*self._as_file_tuple(name, value))
                att = self._attachment_payload(stored, ephemeral=True)
                resolved.setdefault("attachments", {})[stored.id] = att
                opt["value"] = stored.id
            elif otype in (6, 9) and isinstance(value, FakeUser):
                resolved.setdefault("users", {})[value.id] = value.payload()
                if guild and value.id in guild.members:
                    member = guild.members[value.id].payload(
                        with_user=False, permissions=guild.permissions_of(value.id)
                    )
                    resolved.setdefault("members", {})[value.id] = member
                opt["value"] = value.id
            elif otype in (8, 9) and isinstance(value, FakeRole):
                resolved.setdefault("roles", {})[value.id] = value.payload()
                opt["value"] = value.id
            elif otype == 7 and isinstance(value, FakeChannel):
                perms = guild.permissions_of(self.user.id) if guild else 0
                resolved.setdefault("channels", {})[value.id] = value.payload(permissions=perms)
                opt["value"] = value.id
            elif otype in (3, 4, 5, 10):
                if not force:
                    self._check_option_value(d, value)
                opt["value"] = value
            else:
                raise ValueError(f"option {name!r} (type {otype}) cannot take {value!r}")
            out.append(opt)
        if focused is None and not force:
            missing = [d["name"] for d in defs if d.get("required") and d["name"] not in values]
            if missing:
                raise ValueError(f"missing required options {missing}")
        return out

    @staticmethod
    def _as_file_tuple(name: str, value: Any) -> tuple[Any, ...]:
        if isinstance(value, bytes | bytearray):
            return (f"{name}.png", bytes(value))
        if isinstance(value, tuple) and 2 <= len(value) <= 3:
            return value
        raise ValueError(f"attachment option {name!r} takes (filename, bytes[, content_type]), not {type(value)}")

    @staticmethod
    def _check_option_value(d: dict[str, Any], value: Any) -> None:
        otype, name = d["type"], d["name"]
        ok = {
            3: isinstance(value, str),
            4: isinstance(value, int) and not isinstance(value, bool),
            5: isinstance(value, bool),
            10: isinstance(value, int | float) and not isinstance(value, bool),
        }[otype]
        if not ok:
            raise ValueError(f"option {name!r} is of type {otype}; {value!r} does not fit")
        if d.get("choices") is not None and value not in [c["value"] for c in d["choices"]]:
            raise ValueError(f"option {name!r}: {value!r} is not one of the choices")
        too_low = "min_value" in d and value < d["min_value"]
        too_high = "max_value" in d and value > d["max_value"]
        if otype in (4, 10) and (too_low or too_high):
            raise ValueError(f"option {name!r}: {value!r} out of range")
        if otype == 3 and not d.get("min_length", 0) <= len(value) <= d.get("max_length", 6000):
            raise ValueError(f"option {name!r}: length of {value!r} out of range")

    async def _send_interaction(
        self,
        itype: int,
        data: dict[str, Any],
        user: FakeUser,
        channel: FakeChannel,
        *,
        message: StoredMessage | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        guild = self.guilds.get(channel.guild_id) if channel.guild_id else None
        iid = self.snowflake()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        payload: dict[str, Any] = {
            "id": iid,
            "application_id": self.application_id,
            "type": itype,
            "data": data,
            "channel_id": channel.id,
            "token": token,
            "version": 1,
            "locale": locale,
            "entitlements": [],
            "attachment_size_limit": guild.upload_limit if guild else DEFAULT_UPLOAD_LIMIT,
        }
        if guild is not None:
            perms = guild.permissions_of(user.id)
            payload.update(
                guild_id=guild.id,
                guild={"id": guild.id, "locale": guild.locale, "features": []},
                guild_locale=guild.locale,
                member=guild.members[user.id].payload(permissions=perms),
                channel=channel.payload(permissions=perms),
                app_permissions=str(guild.permissions_of(self.bot.id)),
                authorizing_integration_owners={"0": guild.id},
                context=0,
            )
        else:
            payload.update(
                user=user.payload(),
                channel=channel.payload(),
                app_permissions=str(EVERYONE_PERMISSIONS),
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        if message is not None:
            payload["message"] = self._visible(message, full=True)
        record = InteractionRecord(
            fake=self,
            id=iid,
            token=token,
            type=itype,
            payload=payload,
            channel_id=channel.id,
            guild_id=guild.id if guild else None,
            user=user,
            created=self.now(),
            message_id=message.id if message else None,
        )
        self.interactions[iid] = record
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self.ack_timeout, self._ack_deadline, record))
        await self._dispatch("INTERACTION_CREATE", payload, required=True)
        return record

    def _ack_deadline(self, record: InteractionRecord) -> None:
        if not record.acknowledged:
            record.expired = True
            record.events.append("expired")
            self._touch()

    def _by_token(self, token: str) -> InteractionRecord | None:
        return next((r for r in self.interactions.values() if r.token == token), None)

    def _token_valid(self, record: InteractionRecord) -> bool:
        return not record.token_revoked and self.now() - record.created < self.token_lifetime

    # ---- internals: messages ---------------------------------------------------------------------------------------

    def _message(self, message: StoredMessage | str) -> StoredMessage:
        if isinstance(message, StoredMessage):
            return message
        try:
            return self.messages[str(message)]
        except KeyError:
            raise ValueError(f"no message {message}") from None

    def _mention_payload(self, user: FakeUser, guild: FakeGuild | None) -> dict[str, Any]:
        data = user.payload()
        if guild is not None and user.id in guild.members:
            data["member"] = guild.members[user.id].payload(with_user=False)
        return data

    def _mentioned_users(self, content: str, guild: FakeGuild | None, allowed: dict | None = None) -> list[dict]:
        ids = list(dict.fromkeys(re.findall(r"<@!?(\d+)>", content or "")))
        if allowed is not None and "users" not in (allowed.get("parse") or []):
            ids = [i for i in ids if i in set(map(str, allowed.get("users") or []))]
        return [self._mention_payload(self.users[i], guild) for i in ids if i in self.users]

    def _message_skeleton(self, channel: FakeChannel, author: FakeUser) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": self.snowflake(),
            "channel_id": channel.id,
            "author": author.payload(),
            "content": "",
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        guild = self.guilds.get(channel.guild_id) if channel.guild_id else None
        if guild is not None:
            payload["guild_id"] = guild.id
            if author.id in guild.members:
                payload["member"] = guild.members[author.id].payload(with_user=False)
        return payload

    def _store_file(
        self, filename: str, data: bytes, content_type: str | None = None, description: str | None = None
    ) -> StoredFile:
        fid = self.snowflake()
        ctype = content_type or _sniff_content_type(filename, data)
        exp = int(time.time()) + 86400
        url = f"{self.base_url}/attachments/{fid}/{filename}?ex={exp:x}&is={exp - 86400:x}&hm={secrets.token_hex(32)}&"
        stored = StoredFile(fid, filename, ctype, bytes(data), url, description)
        self.files[fid] = stored
        return stored

    def _attachment_payload(self, f: StoredFile, *, ephemeral: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": f.id,
            "filename": f.filename,
            "size": f.size,
            "url": f.url,
            "proxy_url": f.url,
            "content_type": f.content_type,
        }
        if f.description:
            data["description"] = f.description
        if f.content_type.startswith("image/"):
            size = _image_size(f.data)
            if size:
                data["width"], data["height"] = size
        if ephemeral:
            data["ephemeral"] = True
        return data

    def _save(self, msg: StoredMessage, channel: FakeChannel) -> None:
        self.messages[msg.id] = msg
        channel.last_message_id = msg.id
        self._touch()

    def _visible(self, msg: StoredMessage, *, full: bool = False) -> dict[str, Any]:
        """The message as the bot sees it: without the message-content intent, content, embeds, attachments and
        components are empty unless the bot wrote it, is mentioned, or it is a DM."""
        payload = copy.deepcopy(msg.payload)
        conn_intents = self._conn.intents if self._conn else 0
        content_ok = (
            full
            or msg.author_id == self.bot.id
            or "guild_id" not in payload
            or any(m["id"] == self.bot.id for m in payload.get("mentions", []))
            or (conn_intents & INTENT_MESSAGE_CONTENT and "message_content" in self.privileged_intents)
        )
        if not content_ok:
            payload.update(content="", embeds=[], attachments=[], components=[])
            payload.pop("poll", None)
        return payload

    async def _dispatch_message(self, event: str, msg: StoredMessage) -> None:
        if self._conn is None or msg.ephemeral:
            return
        if msg.author_id == self.bot.id and not self.echo_bot_messages:
            return
        needed = INTENT_GUILD_MESSAGES if "guild_id" in msg.payload else INTENT_DIRECT_MESSAGES
        if not self._conn.intents & needed:
            return
        if event == "MESSAGE_DELETE":
            data = {"id": msg.id, "channel_id": msg.channel_id}
            if "guild_id" in msg.payload:
                data["guild_id"] = msg.payload["guild_id"]
        else:
            data = self._visible(msg)
        await self._dispatch(event, data)

    def _check_and_build(
        self,
        payload: dict[str, Any],
        files: list[UploadedFile],
        *,
        channel: FakeChannel,
        creating: bool,
        allowed_flags: int,
        existing: StoredMessage | None = None,
        path: tuple[Any, ...] = (),
    ) -> dict[str, Any]:
        """Validates a create/edit body; returns the fields to set (attachments resolved to StoredFiles)."""
        if not isinstance(payload, dict):
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {"_errors": [{"code": "DICT_TYPE_CONVERT", "message": "Only dictionaries may be used in a DictType"}]},
            )
        guild = self.guilds.get(channel.guild_id) if channel.guild_id else None
        limit = guild.upload_limit if guild else DEFAULT_UPLOAD_LIMIT
        if sum(len(f.data) for f in files) > limit:
            raise ApiError(413, 40005, "Request entity too large")
        errs = FormErrors()
        out: dict[str, Any] = {}
        content = payload.get("content")
        if content is not None:
            if not isinstance(content, str):
                errs.add((*path, "content"), "BASE_TYPE_STRING", "Must be a string.")
            else:
                errs.max_length((*path, "content"), content, 2000)
                out["content"] = content
        elif "content" in payload:
            out["content"] = ""
        if payload.get("embeds") is not None:
            _check_embeds(payload["embeds"], errs, (*path, "embeds"))
            out["embeds"] = payload["embeds"]
        elif "embeds" in payload:
            out["embeds"] = []
        flags = payload.get("flags")
        if flags is not None:
            if not isinstance(flags, int):
                errs.add((*path, "flags"), "BASE_TYPE_INTEGER", "Must be an integer.")
                flags = 0
            out["flags"] = flags & allowed_flags
            if existing is not None:  # only the settable bits change on edit
                out["flags"] |= existing.flags & ~allowed_flags
        effective_flags = out.get("flags", existing.flags if existing else 0)
        if payload.get("components") is not None:
            _check_components(payload["components"], effective_flags, errs, (*path, "components"))
            out["components"] = payload["components"]
        elif "components" in payload:
            out["components"] = []
        if effective_flags & FLAG_COMPONENTS_V2:
            for key in ("content", "embeds"):
                if out.get(key):
                    errs.add(
                        (*path, key),
                        "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                        "The 'content' and 'embeds' fields cannot be used when using the IS_COMPONENTS_V2 flag",
                    )
        # attachments: new uploads referenced by their files[n] index, kept ones by their id
        by_index = {f.index: f for f in files}
        if len(by_index) != len(files):
            errs.add(("files",), "DUPLICATE_FILE_INDEX", "Two parts have the same files[n] index")
        kept_ids = [a["id"] for a in existing.payload.get("attachments", [])] if existing else []
        entries = payload.get("attachments")
        new_files: list[tuple[UploadedFile, dict]] = []
        kept: list[str] = kept_ids if entries is None else []
        if entries is None:
            new_files = [(f, {}) for f in sorted(files, key=lambda f: f.index)]
        elif not isinstance(entries, list):
            errs.add((*path, "attachments"), "BASE_TYPE_ARRAY", "Must be an array.")
        else:
            referenced = set()
            for i, entry in enumerate(entries):
                aid = str(entry.get("id")) if isinstance(entry, dict) else None
                if aid is not None and aid.isdigit() and int(aid) in by_index and aid not in kept_ids:
                    new_files.append((by_index[int(aid)], entry))
                    referenced.add(int(aid))
                elif aid is not None and aid in kept_ids:
                    kept.append(aid)
                else:
                    errs.add((*path, "attachments", i, "id"), "ATTACHMENT_NOT_FOUND", "Unknown attachment id")
            for f in files:
                if f.index not in referenced:
                    errs.add(
                        ("files", f.index), "ATTACHMENT_NOT_REFERENCED", f"files[{f.index}] has no attachments entry"
                    )
        if len(kept) + len(new_files) > 10:
            errs.add((*path, "attachments"), "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        for _f, entry in new_files:
            if entry.get("description") is not None:
                errs.max_length((*path, "attachments", entry.get("id"), "description"), entry["description"], 1024)
        if payload.get("sticker_ids"):
            errs.add((*path, "sticker_ids"), "STICKER_UNKNOWN", "The fake knows no stickers")
        ref = payload.get("message_reference")
        if creating and isinstance(ref, dict) and ref.get("message_id") is not None:
            target = self.messages.get(str(ref["message_id"]))
            if target is None or target.deleted:
                if ref.get("fail_if_not_exists", True):
                    errs.add((*path, "message_reference"), "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
            else:
                out["message_reference"] = {
                    "type": ref.get("type", 0),
                    "message_id": target.id,
                    "channel_id": target.channel_id,
                }
                if target.payload.get("guild_id"):
                    out["message_reference"]["guild_id"] = target.payload["guild_id"]
                out["referenced_message"] = copy.deepcopy(target.payload)
                out["type"] = 19
        errs.raise_if_any()
        stored_new = []
        for f, entry in new_files:
            filename = entry.get("filename") or f.filename
            stored_new.append(self._store_file(filename, f.data, None, entry.get("description")))
        out["_new_files"] = stored_new
        out["_kept_ids"] = kept
        has_attachments = bool(stored_new or kept)
        final = {
            k: out.get(k, existing.payload.get(k) if existing else None) for k in ("content", "embeds", "components")
        }
        if not (final["content"] or final["embeds"] or final["components"] or has_attachments or payload.get("poll")):
            raise ApiError(400, 50006, "Cannot send an empty message")
        mentions_source = out.get("content", existing.content if existing else "")
        mentioned = self._mentioned_users(mentions_source, guild, payload.get("allowed_mentions"))
        out["mentions"] = mentioned
        return out

    def _apply(self, msg_payload: dict[str, Any], fields: dict[str, Any], files: list[StoredFile]) -> None:
        for key in (
            "content",
            "embeds",
            "components",
            "flags",
            "mentions",
            "message_reference",
            "referenced_message",
            "type",
        ):
            if key in fields:
                msg_payload[key] = fields[key]
        by_id = {a["id"]: a for a in msg_payload.get("attachments", [])}
        msg_payload["attachments"] = [by_id[i] for i in fields["_kept_ids"] if i in by_id] + [
            self._attachment_payload(f) for f in fields["_new_files"]
        ]
        files.extend(fields["_new_files"])

    def _create_bot_message(
        self,
        channel: FakeChannel,
        body: dict[str, Any],
        uploads: list[UploadedFile],
        *,
        allowed_flags: int,
        source: str,
        record: InteractionRecord | None = None,
        path: tuple[Any, ...] = (),
    ) -> StoredMessage:
        fields = self._check_and_build(
            body, uploads, channel=channel, creating=True, allowed_flags=allowed_flags, path=path
        )
        payload = self._message_skeleton(channel, self.bot)
        msg = StoredMessage(payload, source=source, interaction_id=record.id if record else None)
        self._apply(payload, fields, msg.files)
        if record is not None:
            payload["webhook_id"] = self.application_id
            payload["application_id"] = self.application_id
            payload["interaction_metadata"] = {
                "id": record.id,
                "type": record.type,
                "user": record.user.payload(),
                "authorizing_integration_owners": record.payload.get("authorizing_integration_owners", {}),
            }
            if record.message_id:
                payload["interaction_metadata"]["interacted_message_id"] = record.message_id
            if record.type == APPLICATION_COMMAND and source == "interaction":
                payload["type"] = 20
        self._save(msg, channel)
        return msg

    def _edit_bot_message(
        self,
        msg: StoredMessage,
        body: dict[str, Any],
        uploads: list[UploadedFile],
        *,
        allowed_flags: int,
        path: tuple[Any, ...] = (),
    ) -> StoredMessage:
        channel = self.channels[msg.channel_id]
        fields = self._check_and_build(
            body, uploads, channel=channel, creating=False, allowed_flags=allowed_flags, existing=msg, path=path
        )
        msg.history.append(copy.deepcopy(msg.payload))
        self._apply(msg.payload, fields, msg.files)
        if msg.loading:
            msg.payload["flags"] &= ~FLAG_LOADING
        msg.payload["edited_timestamp"] = _now_iso()
        self._touch()
        return msg

    # ---- gateway ---------------------------------------------------------------------------------------------------

    async def _gateway_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        conn = _GatewayConnection(ws, dict(request.query))
        self.gateway_connections += 1
        await self._ws_send(conn, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                self.gateway_log.append(("recv", frame))
                await self._gateway_op(conn, frame)
                self._touch()
        finally:
            if self._conn is conn:
                self._conn = None
            self._touch()
        return ws

    async def _ws_send(self, conn: _GatewayConnection, frame: dict[str, Any]) -> None:
        self.gateway_log.append(("send", frame))
        if not conn.ws.closed:
            await conn.ws.send_str(json.dumps(frame))

    async def _gateway_op(self, conn: _GatewayConnection, frame: dict[str, Any]) -> None:
        op, d = frame.get("op"), frame.get("d")
        if op == 1:  # heartbeat
            await self._ws_send(conn, {"op": 11})
        elif op == 2:  # identify
            if not isinstance(d, dict) or d.get("token") != self.token:
                await conn.ws.close(code=4004, message=b"Authentication failed.")
                return
            if "intents" not in d:
                await conn.ws.close(code=4013, message=b"Invalid intent(s).")
                return
            intents = int(d["intents"])
            for name, bit in PRIVILEGED_INTENTS.items():
                if intents & bit and name not in self.privileged_intents:
                    await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
                    return
            self.identify_count += 1
            conn.intents, conn.identified, conn.session_id = intents, True, secrets.token_hex(16)
            if d.get("presence"):
                self.presence = d["presence"]
            self._conn = conn
            await self._dispatch(
                "READY",
                {
                    "v": 10,
                    "user": {**self.bot.payload(), "verified": True, "mfa_enabled": False, "email": None},
                    "guilds": [{"id": gid, "unavailable": True} for gid in self.guilds],
                    "session_id": conn.session_id,
                    "session_type": "normal",
                    "resume_gateway_url": self.gateway_url,
                    "application": {"id": self.application_id, "flags": self._app_flags()},
                    "private_channels": [],
                    "relationships": [],
                    "presences": [],
                    "guild_join_requests": [],
                    "geo_ordered_rtc_regions": [],
                    "user_settings": {},
                    "auth": {},
                },
            )
            if intents & INTENT_GUILDS:
                for guild in self.guilds.values():
                    await self._dispatch("GUILD_CREATE", guild.payload(full=True))
        elif op == 6:  # resume
            self.resume_count += 1
            if self._allow_resume and isinstance(d, dict) and d.get("token") == self.token:
                previous = d.get("session_id")
                conn.session_id, conn.identified, conn.seq = previous, True, int(d.get("seq") or 0)
                conn.intents = self._last_intents()
                self._conn = conn
                await self._dispatch("RESUMED", {})
            else:
                await self._ws_send(conn, {"op": 9, "d": False})
        elif op == 3:  # presence update
            self.presence = d
        elif op == 8:  # request guild members
            guild = self.guilds.get(str(d.get("guild_id")))
            if guild is not None:
                await self._dispatch(
                    "GUILD_MEMBERS_CHUNK",
                    {
                        "guild_id": guild.id,
                        "members": [m.payload() for m in guild.members.values()],
                        "chunk_index": 0,
                        "chunk_count": 1,
                        "not_found": [],
                        "nonce": d.get("nonce"),
                    },
                )

    def _last_intents(self) -> int:
        for direction, frame in reversed(self.gateway_log):
            if direction == "recv" and frame.get("op") == 2:
                return int(frame["d"].get("intents", 0))
        return 0

    def _app_flags(self) -> int:
        flags = 1 << 23  # APPLICATION_COMMAND_BADGE
        for name in self.privileged_intents:
            flags |= APP_FLAG_FOR_INTENT[name]
        return flags

    async def _dispatch(self, event: str, data: dict[str, Any], *, required: bool = False) -> None:
        conn = self._conn
        if conn is None or conn.ws.closed:
            if required:
                raise RuntimeError(f"no client is connected to the fake gateway; cannot send {event}")
            return
        conn.seq += 1
        await self._ws_send(conn, {"op": 0, "t": event, "s": conn.seq, "d": data})

    # ---- REST --------------------------------------------------------------------------------------------------------

    async def _attachment_handler(self, request: web.Request) -> web.Response:
        stored = self.files.get(request.match_info["attachment_id"])
        if stored is None or stored.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=stored.data, headers={"Content-Type": stored.content_type})

    def _routes(self) -> list[tuple[str, re.Pattern[str], Callable[..., Any], bool, str]]:
        if self._route_table:
            return self._route_table
        table = [
            ("GET", "/gateway", self._r_gateway, False),
            ("GET", "/gateway/bot", self._r_gateway_bot, True),
            ("GET", "/users/@me", self._r_me, True),
            ("POST", "/users/@me/channels", self._r_create_dm, True),
            ("GET", "/users/{user_id}", self._r_user, True),
            ("GET", "/oauth2/applications/@me", self._r_application, True),
            ("GET", "/applications/@me", self._r_application, True),
            ("GET", "/applications/{app_id}/commands", self._r_get_commands, True),
            ("PUT", "/applications/{app_id}/commands", self._r_put_commands, True),
            ("POST", "/applications/{app_id}/commands", self._r_post_command, True),
            ("GET", "/applications/{app_id}/commands/{command_id}", self._r_get_command, True),
            ("PATCH", "/applications/{app_id}/commands/{command_id}", self._r_patch_command, True),
            ("DELETE", "/applications/{app_id}/commands/{command_id}", self._r_delete_command, True),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._r_get_commands, True),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._r_put_commands, True),
            ("POST", "/applications/{app_id}/guilds/{guild_id}/commands", self._r_post_command, True),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}", self._r_get_command, True),
            ("PATCH", "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}", self._r_patch_command, True),
            ("DELETE", "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}", self._r_delete_command, True),
            ("GET", "/channels/{channel_id}", self._r_channel, True),
            ("GET", "/channels/{channel_id}/messages", self._r_get_messages, True),
            ("POST", "/channels/{channel_id}/messages", self._r_post_message, True),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._r_get_message, True),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._r_patch_message, True),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._r_delete_message, True),
            ("POST", "/channels/{channel_id}/typing", self._r_typing, True),
            ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._r_react, True),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._r_unreact, True),
            ("GET", "/guilds/{guild_id}", self._r_guild, True),
            ("GET", "/guilds/{guild_id}/channels", self._r_guild_channels, True),
            ("GET", "/guilds/{guild_id}/roles", self._r_guild_roles, True),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._r_guild_member, True),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._r_callback, False),
            ("GET", "/webhooks/{app_id}/{token}/messages/@original", self._r_wh_get_original, False),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/@original", self._r_wh_edit_original, False),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/@original", self._r_wh_delete_original, False),
            ("POST", "/webhooks/{app_id}/{token}", self._r_wh_followup, False),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self._r_wh_get_message, False),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self._r_wh_edit_message, False),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self._r_wh_delete_message, False),
        ]
        compiled = []
        for method, template, handler, auth in table:
            pattern = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(template))
            compiled.append((method, re.compile(pattern + "$"), handler, auth, f"{method} {template}"))
        self._route_table = compiled
        return compiled

    async def _api_handler(self, request: web.Request) -> web.Response:
        path = request.path[len(API_PREFIX) :] or "/"
        record = RequestRecord(request.method, path, dict(request.query), time=self.now())
        self.requests.append(record)
        headers: dict[str, str] = {}
        try:
            for route in self._routes():
                match = route[1].match(path)
                if match and route[0] == request.method:
                    _, _, handler, auth, key = route
                    break
            else:
                self.unhandled.append(record)
                raise ApiError(404, 0, "404: Not Found")
            record.route = key
            if auth and request.headers.get("Authorization") != f"Bot {self.token}":
                raise ApiError(401, 0, "401: Unauthorized")
            record.json, record.files, record.multipart = await self._read_body(request)
            limited = self._take_rate_limit(record)
            if limited is not None:
                status, body, headers = limited
            else:
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                result = await handler(record, **params)
                status, body = result if isinstance(result, tuple) else (200 if result is not None else 204, result)
        except ApiError as exc:
            status, body = exc.status, exc.body
        except Exception:
            self.errors.append(traceback.format_exc())
            # not 5xx: discord.py retries those with long sleeps; fail fast instead
            status, body = 400, {"code": 0, "message": "FakeDiscord internal error (see fake.errors)"}
        record.status, record.response = status, body
        self._touch()
        return _json_response(status, body, headers)

    async def _read_body(self, request: web.Request) -> tuple[Any, list[UploadedFile], bool]:
        if request.content_type == "multipart/form-data":
            payload, files = None, []
            reader = await request.multipart()
            async for part in reader:
                data = bytes(await part.read(decode=False))  # type: ignore[union-attr]
                name = part.name or ""
                if name == "payload_json":
                    try:
                        payload = json.loads(data)
                    except ValueError:
                        raise ApiError(400, 50109, "The request body contains invalid JSON.") from None
                elif m := re.fullmatch(r"files\[(\d+)\]", name):
                    if not part.filename:
                        raise ApiError(
                            400,
                            50035,
                            "Invalid Form Body",
                            {name: {"_errors": [{"code": "BASE_TYPE_REQUIRED", "message": "A filename is required"}]}},
                        )
                    files.append(UploadedFile(int(m[1]), part.filename, part.headers.get("Content-Type"), data))
                else:
                    raise ApiError(
                        400,
                        50035,
                        "Invalid Form Body",
                        {
                            name: {
                                "_errors": [
                                    {
                                        "code": "UNKNOWN_FIELD",
                                        "message": "Unexpected multipart field; use payload_json and files[n]",
                                    }
                                ]
                            }
                        },
                    )
            return payload, files, True
        raw = await request.read()
        if not raw:
            return None, [], False
        if request.content_type != "application/json":
            raise ApiError(400, 50109, "The request body contains invalid JSON.")
        try:
            return json.loads(raw), [], False
        except ValueError:
            raise ApiError(400, 50109, "The request body contains invalid JSON.") from None

    def _take_rate_limit(self, record: RequestRecord) -> tuple[int, dict, dict[str, str]] | None:
        for rule in self._rate_limits:
            if rule.remaining > 0 and record.matches(rule.pattern):
                rule.remaining -= 1
                rule.hits += 1
                retry = rule.retry_after
                headers = {
                    "Retry-After": str(max(1, math.ceil(retry))),
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": f"{time.time() + retry:.3f}",
                    "X-RateLimit-Reset-After": f"{retry:.3f}",
                    "X-RateLimit-Bucket": "fake" + secrets.token_hex(8),
                    "X-RateLimit-Scope": "global" if rule.is_global else "user",
                    "Via": "1.1 google",  # discord.py treats a 429 without Via as a Cloudflare ban
                }
                if rule.is_global:
                    headers["X-RateLimit-Global"] = "true"
                body = {"message": "You are being rate limited.", "retry_after": retry, "global": rule.is_global}
                return 429, body, headers
        return None

    # REST handlers: (record, **path params) -> body | (status, body) | None for 204

    def _guild_or_404(self, guild_id: str) -> FakeGuild:
        guild = self.guilds.get(guild_id)
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        return guild

    def _channel_or_404(self, channel_id: str) -> FakeChannel:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return channel

    def _message_or_404(self, channel: FakeChannel, message_id: str) -> StoredMessage:
        msg = self.messages.get(message_id)
        if msg is None or msg.deleted or msg.channel_id != channel.id or msg.ephemeral:
            raise ApiError(404, 10008, "Unknown Message")
        return msg

    async def _r_gateway(self, record: RequestRecord) -> Any:
        return {"url": self.gateway_url}

    async def _r_gateway_bot(self, record: RequestRecord) -> Any:
        limit = {"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}
        return {"url": self.gateway_url, "shards": 1, "session_start_limit": limit}

    async def _r_me(self, record: RequestRecord) -> Any:
        return {**self.bot.payload(), "verified": True, "mfa_enabled": False, "locale": "en-US", "email": None}

    async def _r_user(self, record: RequestRecord, user_id: str) -> Any:
        if user_id not in self.users:
            raise ApiError(404, 10013, "Unknown User")
        return self.users[user_id].payload()

    async def _r_create_dm(self, record: RequestRecord) -> Any:
        user = self.users.get(str((record.json or {}).get("recipient_id")))
        if user is None or user is self.bot:
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {"recipient_id": {"_errors": [{"code": "BASE_TYPE_REQUIRED", "message": "Unknown user"}]}},
            )
        return self.dm_channel(user).payload()

    async def _r_application(self, record: RequestRecord) -> Any:
        return {
            "id": self.application_id,
            "name": self.bot.username,
            "icon": None,
            "description": "A DeepDream bot (fake)",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": secrets.token_hex(32),
            "flags": self._app_flags(),
            "owner": self.owner.payload(),
            "team": None,
            "bot": self.bot.payload(),
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "tags": [],
            "approximate_guild_count": len(self.guilds),
            "integration_types_config": {"0": {}},
        }

    def _command_scope(self, app_id: str, guild_id: str | None) -> str | None:
        if app_id != self.application_id:
            raise ApiError(403, 50001, "Missing Access")
        if guild_id is not None and guild_id not in self.guilds:
            raise ApiError(403, 50001, "Missing Access")
        return guild_id

    def _store_command(self, scope: str | None, data: dict[str, Any]) -> dict[str, Any]:
        ctype = data.get("type", 1)
        key = (scope, ctype, data["name"])
        cid = self._command_ids.setdefault(key, self.snowflake())
        perms = data.get("default_member_permissions")
        cmd = {
            "id": cid,
            "application_id": self.application_id,
            "version": self.snowflake(),
            "type": ctype,
            "name": data["name"],
            "name_localizations": data.get("name_localizations"),
            "description": data.get("description", ""),
            "description_localizations": data.get("description_localizations"),
            "default_member_permissions": None if perms is None else str(perms),
            "nsfw": data.get("nsfw", False),
            "integration_types": data.get("integration_types", [0]),
            "contexts": data.get("contexts"),
        }
        if data.get("options"):
            cmd["options"] = data["options"]
        if scope is None:
            cmd["dm_permission"] = data.get("dm_permission", True)
        else:
            cmd["guild_id"] = scope
        return cmd

    def _validate_command_list(self, commands: Any) -> None:
        errs = FormErrors()
        if not isinstance(commands, list):
            errs.add((), "BASE_TYPE_ARRAY", "Must be an array.")
            errs.raise_if_any()
        seen: set[tuple[int, str]] = set()
        for i, cmd in enumerate(commands):
            validate_command(cmd, errs, (i,))
            if isinstance(cmd, dict):
                key = (cmd.get("type", 1), cmd.get("name"))
                if key in seen:
                    errs.add(
                        (i, "name"), "APPLICATION_COMMANDS_DUPLICATE_NAME", "Application command names must be unique"
                    )
                seen.add(key)
        if sum(1 for c in commands if isinstance(c, dict) and c.get("type", 1) == 1) > 100:
            errs.add((), "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        errs.raise_if_any()

    async def _r_get_commands(self, record: RequestRecord, app_id: str, guild_id: str | None = None) -> Any:
        return self.commands.get(self._command_scope(app_id, guild_id), [])

    async def _r_put_commands(self, record: RequestRecord, app_id: str, guild_id: str | None = None) -> Any:
        scope = self._command_scope(app_id, guild_id)
        self._validate_command_list(record.json)
        self.commands[scope] = [self._store_command(scope, c) for c in record.json]
        return self.commands[scope]

    async def _r_post_command(self, record: RequestRecord, app_id: str, guild_id: str | None = None) -> Any:
        scope = self._command_scope(app_id, guild_id)
        errs = FormErrors()
        validate_command(record.json, errs)
        errs.raise_if_any()
        cmd = self._store_command(scope, record.json)
        existing = self.commands.setdefault(scope, [])
        replaced = [i for i, c in enumerate(existing) if c["id"] == cmd["id"]]
        if replaced:
            existing[replaced[0]] = cmd
            return cmd
        existing.append(cmd)
        return 201, cmd

    def _find_command(self, scope: str | None, command_id: str) -> dict[str, Any]:
        for cmd in self.commands.get(scope, []):
            if cmd["id"] == command_id:
                return cmd
        raise ApiError(404, 10063, "Unknown application command")

    async def _r_get_command(self, record: RequestRecord, app_id: str, command_id: str, guild_id: str | None = None):
        return self._find_command(self._command_scope(app_id, guild_id), command_id)

    async def _r_patch_command(self, record: RequestRecord, app_id: str, command_id: str, guild_id: str | None = None):
        scope = self._command_scope(app_id, guild_id)
        cmd = self._find_command(scope, command_id)
        merged = {**cmd, **(record.json or {})}
        errs = FormErrors()
        validate_command(merged, errs)
        errs.raise_if_any()
        cmd.update(self._store_command(scope, merged))
        return cmd

    async def _r_delete_command(self, record: RequestRecord, app_id: str, command_id: str, guild_id: str | None = None):
        scope = self._command_scope(app_id, guild_id)
        cmd = self._find_command(scope, command_id)
        self.commands[scope].remove(cmd)
        return None

    def _bot_perms(self, channel: FakeChannel) -> int:
        if channel.is_dm:
            return EVERYONE_PERMISSIONS
        return self.guilds[channel.guild_id].permissions_of(self.bot.id)  # type: ignore[index]

    async def _r_channel(self, record: RequestRecord, channel_id: str) -> Any:
        return self._channel_or_404(channel_id).payload()

    async def _r_get_messages(self, record: RequestRecord, channel_id: str) -> Any:
        channel = self._channel_or_404(channel_id)
        limit = int(record.query.get("limit", 50))
        msgs = [m for m in self.messages_in(channel) if not m.ephemeral]
        before, after = record.query.get("before"), record.query.get("after")
        if before:
            msgs = [m for m in msgs if int(m.id) < int(before)]
        if after:
            msgs = [m for m in msgs if int(m.id) > int(after)][:limit]
        msgs = sorted(msgs, key=lambda m: int(m.id), reverse=True)[:limit]
        return [self._visible(m) for m in msgs]

    async def _r_post_message(self, record: RequestRecord, channel_id: str) -> Any:
        channel = self._channel_or_404(channel_id)
        perms = self._bot_perms(channel)
        if not channel.bot_can_send or not perms & SEND_MESSAGES:
            raise ApiError(403, 50013, "Missing Permissions")
        if record.files and not perms & ATTACH_FILES:
            raise ApiError(403, 50013, "Missing Permissions")
        msg = self._create_bot_message(
            channel, record.json or {}, record.files, allowed_flags=CHANNEL_MESSAGE_FLAGS, source="channel"
        )
        await self._dispatch_message("MESSAGE_CREATE", msg)
        return msg.payload

    async def _r_get_message(self, record: RequestRecord, channel_id: str, message_id: str) -> Any:
        return self._visible(self._message_or_404(self._channel_or_404(channel_id), message_id))

    async def _r_patch_message(self, record: RequestRecord, channel_id: str, message_id: str) -> Any:
        msg = self._message_or_404(self._channel_or_404(channel_id), message_id)
        if msg.author_id != self.bot.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        self._edit_bot_message(msg, record.json or {}, record.files, allowed_flags=CHANNEL_MESSAGE_FLAGS)
        await self._dispatch_message("MESSAGE_UPDATE", msg)
        return msg.payload

    async def _r_delete_message(self, record: RequestRecord, channel_id: str, message_id: str) -> Any:
        channel = self._channel_or_404(channel_id)
        msg = self._message_or_404(channel, message_id)
        if msg.author_id != self.bot.id and not self._bot_perms(channel) & MANAGE_MESSAGES:
            raise ApiError(403, 50013, "Missing Permissions")
        await self._delete(msg)
        return None

    async def _delete(self, msg: StoredMessage) -> None:
        msg.deleted = True
        self._touch()
        await self._dispatch_message("MESSAGE_DELETE", msg)

    async def _r_typing(self, record: RequestRecord, channel_id: str) -> Any:
        self._channel_or_404(channel_id)
        return None

    async def _r_react(self, record: RequestRecord, channel_id: str, message_id: str, emoji: str) -> Any:
        msg = self._message_or_404(self._channel_or_404(channel_id), message_id)
        if emoji not in msg.reactions:
            msg.reactions.append(emoji)
        return None

    async def _r_unreact(self, record: RequestRecord, channel_id: str, message_id: str, emoji: str) -> Any:
        msg = self._message_or_404(self._channel_or_404(channel_id), message_id)
        if emoji in msg.reactions:
            msg.reactions.remove(emoji)
        return None

    async def _r_guild(self, record: RequestRecord, guild_id: str) -> Any:
        return self._guild_or_404(guild_id).payload(full=False)

    async def _r_guild_channels(self, record: RequestRecord, guild_id: str) -> Any:
        return [c.payload() for c in self._guild_or_404(guild_id).channels]

    async def _r_guild_roles(self, record: RequestRecord, guild_id: str) -> Any:
        return [r.payload() for r in self._guild_or_404(guild_id).roles]

    async def _r_guild_member(self, record: RequestRecord, guild_id: str, user_id: str) -> Any:
        member = self._guild_or_404(guild_id).members.get(user_id)
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return member.payload()

    # interactions

    async def _r_callback(self, record: RequestRecord, interaction_id: str, token: str) -> Any:
        inter = self.interactions.get(interaction_id)
        if inter is None or inter.token != token:
            raise ApiError(404, 10062, "Unknown interaction")
        if inter.acknowledged:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if self.now() - inter.created > self.ack_timeout or inter.expired or not self._token_valid(inter):
            inter.expired = True
            raise ApiError(404, 10062, "Unknown interaction")
        body = record.json
        if not isinstance(body, dict) or not isinstance(body.get("type"), int):
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {"type": {"_errors": [{"code": "BASE_TYPE_REQUIRED", "message": "This field is required"}]}},
            )
        ctype, data = body["type"], body.get("data") or {}
        if ctype not in ALLOWED_CALLBACKS.get(inter.type, set()):
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "type": {
                        "_errors": [
                            {
                                "code": "INTERACTION_RESPONSE_TYPE_INVALID",
                                "message": f"Response type {ctype} is not valid for interaction type {inter.type}",
                            }
                        ]
                    }
                },
            )
        if record.files and ctype not in (4, 7):
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {"files": {"_errors": [{"code": "UNKNOWN_FIELD", "message": "This response type takes no files"}]}},
            )
        channel = self.channels[inter.channel_id]
        resource: dict[str, Any] = {"type": ctype}
        if ctype == 4:
            inter.original = self._create_bot_message(
                channel,
                data,
                record.files,
                allowed_flags=INTERACTION_MESSAGE_FLAGS,
                source="interaction",
                record=inter,
                path=("data",),
            )
        elif ctype == 5:
            flags = FLAG_LOADING | (int(data.get("flags", 0)) & FLAG_EPHEMERAL)
            payload = self._message_skeleton(channel, self.bot)
            payload.update(flags=flags, webhook_id=self.application_id, application_id=self.application_id)
            payload["interaction_metadata"] = {"id": inter.id, "type": inter.type, "user": inter.user.payload()}
            if inter.type == APPLICATION_COMMAND:
                payload["type"] = 20
            inter.original = StoredMessage(payload, source="interaction", interaction_id=inter.id)
            self._save(inter.original, channel)
        elif ctype in (6, 7):
            inter.original = self.messages[inter.message_id] if inter.message_id else None
            if inter.original is None:
                raise ApiError(
                    400,
                    50035,
                    "Invalid Form Body",
                    {
                        "type": {
                            "_errors": [
                                {"code": "INTERACTION_RESPONSE_TYPE_INVALID", "message": "No message to update"}
                            ]
                        }
                    },
                )
            if ctype == 7:
                self._edit_bot_message(inter.original, data, record.files, allowed_flags=EDIT_FLAGS, path=("data",))
        elif ctype == 8:
            choices = data.get("choices")
            errs = FormErrors()
            if not isinstance(choices, list):
                errs.add(("data", "choices"), "BASE_TYPE_REQUIRED", "This field is required")
            else:
                errs.max_length(("data", "choices"), choices, 25)
                for j, ch in enumerate(choices):
                    errs.length_between(("data", "choices", j, "name"), ch.get("name"), 1, 100)
            errs.raise_if_any()
            inter.autocomplete_choices = choices
        elif ctype == 9:
            errs = FormErrors()
            errs.length_between(("data", "custom_id"), data.get("custom_id"), 1, 100)
            errs.length_between(("data", "title"), data.get("title"), 1, 45)
            errs.length_between(("data", "components"), data.get("components"), 1, 5)
            errs.raise_if_any()
            inter.modal = data
        inter.response_type, inter.response, inter.response_files = ctype, body, record.files
        inter.acked_at = self.now()
        inter.events.append(f"callback:{ctype}")
        if ctype in (4, 5) and inter.original is not None:
            await self._dispatch_message("MESSAGE_CREATE", inter.original)
        elif ctype == 7 and inter.original is not None:
            await self._dispatch_message("MESSAGE_UPDATE", inter.original)
        if record.query.get("with_response") not in ("1", "true", "True"):
            return None
        answer: dict[str, Any] = {
            "interaction": {
                "id": inter.id,
                "type": inter.type,
                "activity_instance_id": None,
                "response_message_id": inter.original.id if inter.original and ctype in (4, 5, 7) else None,
                "response_message_loading": ctype == 5,
                "response_message_ephemeral": bool(inter.original and inter.original.ephemeral and ctype in (4, 5)),
            }
        }
        if ctype in (4, 5, 7) and inter.original is not None:
            resource["message"] = inter.original.payload
        if ctype not in (8,):
            answer["resource"] = resource
        return answer

    def _webhook_interaction(self, app_id: str, token: str) -> InteractionRecord:
        if app_id != self.application_id:
            raise ApiError(404, 10015, "Unknown Webhook")
        inter = self._by_token(token)
        if inter is None or not self._token_valid(inter):
            raise ApiError(401, 50027, "Invalid Webhook Token")
        if not inter.acknowledged:
            raise ApiError(404, 10015, "Unknown Webhook")
        return inter

    def _original_or_404(self, inter: InteractionRecord) -> StoredMessage:
        if inter.original is None or inter.original.deleted:
            raise ApiError(404, 10008, "Unknown Message")
        return inter.original

    async def _r_wh_get_original(self, record: RequestRecord, app_id: str, token: str) -> Any:
        return self._original_or_404(self._webhook_interaction(app_id, token)).payload

    async def _r_wh_edit_original(self, record: RequestRecord, app_id: str, token: str) -> Any:
        inter = self._webhook_interaction(app_id, token)
        msg = self._original_or_404(inter)
        self._edit_bot_message(msg, record.json or {}, record.files, allowed_flags=EDIT_FLAGS)
        inter.original_edits.append(record.json or {})
        inter.events.append("edit_original")
        await self._dispatch_message("MESSAGE_UPDATE", msg)
        return msg.payload

    async def _r_wh_delete_original(self, record: RequestRecord, app_id: str, token: str) -> Any:
        inter = self._webhook_interaction(app_id, token)
        await self._delete(self._original_or_404(inter))
        inter.events.append("delete_original")
        return None

    async def _r_wh_followup(self, record: RequestRecord, app_id: str, token: str) -> Any:
        inter = self._webhook_interaction(app_id, token)
        body = record.json or {}
        original = inter.original
        if inter.response_type == 5 and original is not None and original.loading and not original.deleted:
            # Discord: the first follow-up after a deferred "thinking" response edits that message instead
            self._edit_bot_message(original, body, record.files, allowed_flags=EDIT_FLAGS)
            inter.events.append("followup_edited_original")
            await self._dispatch_message("MESSAGE_UPDATE", original)
            msg = original
        else:
            channel = self.channels[inter.channel_id]
            msg = self._create_bot_message(
                channel, body, record.files, allowed_flags=INTERACTION_MESSAGE_FLAGS, source="followup", record=inter
            )
            inter.followups.append(msg)
            inter.events.append("followup")
            await self._dispatch_message("MESSAGE_CREATE", msg)
        self._touch()
        return msg.payload if record.query.get("wait") in ("1", "true", "True") else None

    def _webhook_message(self, inter: InteractionRecord, message_id: str) -> StoredMessage:
        msg = self.messages.get(message_id)
        if msg is None or msg.deleted or msg.interaction_id != inter.id:
            raise ApiError(404, 10008, "Unknown Message")
        return msg

    async def _r_wh_get_message(self, record: RequestRecord, app_id: str, token: str, message_id: str) -> Any:
        return self._webhook_message(self._webhook_interaction(app_id, token), message_id).payload

    async def _r_wh_edit_message(self, record: RequestRecord, app_id: str, token: str, message_id: str) -> Any:
        inter = self._webhook_interaction(app_id, token)
        msg = self._webhook_message(inter, message_id)
        self._edit_bot_message(msg, record.json or {}, record.files, allowed_flags=EDIT_FLAGS)
        inter.events.append(f"edit:{message_id}")
        await self._dispatch_message("MESSAGE_UPDATE", msg)
        return msg.payload

    async def _r_wh_delete_message(self, record: RequestRecord, app_id: str, token: str, message_id: str) -> Any:
        inter = self._webhook_interaction(app_id, token)
        await self._delete(self._webhook_message(inter, message_id))
        inter.events.append(f"delete:{message_id}")
        return None


@pytest_asyncio.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A started FakeDiscord with discord.py pointed at it; restores discord.py and checks the fake afterwards."""
    fake = FakeDiscord()
    async with fake:
        yield fake
    if fake.strict:
        fake.check()
