"""Files by content: results, previews and uploaded inputs, each stored once under its SHA-256.

The database rows point at keys; the same bytes (a cached answer, a re-posted photo) are one file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path

from dreamcore.images import write_atomically

KEY = re.compile(r"^[0-9a-f]{64}\.(png|jpg|webp|gif|mp4)$")
MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "gif": "image/gif", "mp4": "video/mp4"}


class FileStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, extension: str) -> str:
        """Store ``data``; returns its key ("<sha256>.<extension>")."""
        key = f"{hashlib.sha256(data).hexdigest()}.{extension.lower().lstrip('.')}"
        path = self.path(key)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, data)
        return key

    def path(self, key: str) -> Path:
        """Where a key's file lives; refuses anything that is not a key (no path tricks from URLs)."""
        if not KEY.match(key):
            raise KeyError(key)
        return self.root / key[:2] / key

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        try:
            return self.path(key).is_file()
        except KeyError:
            return False

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, KeyError):
            os.unlink(self.path(key))

    def all_keys(self) -> list[str]:
        return [path.name for path in self.root.glob("??/*") if KEY.match(path.name)]

    def remove_partials(self, older_than: float) -> None:
        """Half-written files (a crash during a write) older than the timestamp ``older_than``."""
        for path in self.root.glob("??/.*.partial"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < older_than:
                    path.unlink()

    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.root.glob("??/*"))


def media_type(key: str) -> str:
    return MEDIA_TYPES[key.rsplit(".", 1)[-1]]
