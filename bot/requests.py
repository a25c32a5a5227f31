"""The platform-neutral request: what to do, on which image, for whom, and where the answer goes.

Adapters build one of these from a chat message or a form; everything after them (queue, worker,
store) sees only this. It travels through the queue as JSON, without the image bytes, which are
stored once (content-addressed) and named by ``image_key``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

from bot.options import Command

ENGINE_VERSION = 1  # bump when the same settings would give a different picture, so cached answers expire


@dataclass(frozen=True)
class Requester:
    """Who asked."""

    platform: str  # "web", "discord", "mastodon", "x", "schedule"
    user_id: str
    display_name: str = ""
    admin: bool = False

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.user_id}"


@dataclass(frozen=True)
class Destination:
    """Where the answer goes: the platform, and whatever its adapter needs to find the conversation again."""

    platform: str
    address: dict[str, Any] = field(default_factory=dict)  # e.g. {"channel_id": ..., "interaction_token": ...}


@dataclass(frozen=True)
class DreamRequest:
    command: Command
    requester: Requester
    destination: Destination
    image: bytes | None = None  # as uploaded; replaced by image_key once the service has stored the ingested image
    image_key: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "command": self.command.to_dict(),
                "requester": vars(self.requester),
                "destination": {"platform": self.destination.platform, "address": self.destination.address},
                "image_key": self.image_key,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> DreamRequest:
        data = json.loads(text)
        return cls(
            command=Command.from_dict(data["command"]),
            requester=Requester(**data["requester"]),
            destination=Destination(**data["destination"]),
            image_key=data.get("image_key"),
        )

    def with_image_key(self, key: str | None) -> DreamRequest:
        return replace(self, image=None, image_key=key)

    def fingerprint(self) -> str:
        """Same picture and same options: the stored result is the answer (a new seed asks for a new dream)."""
        what = {"engine": ENGINE_VERSION, "command": self.command.to_dict(), "image": self.image_key}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()
