"""Dreams their owners chose to share, and the likes they get: what the "most-liked dream" schedule picks from.

A result is never shared without its owner's choice (the tick box on the page, the Share button on Discord); a
like is one per person per dream. Kept in the service's own SQLite file (tables ``shared_dreams`` and
``dream_likes``), with a connection of its own (WAL lets the queue write beside it).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shared_dreams (
    job_id TEXT PRIMARY KEY, owner TEXT NOT NULL, shared_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dream_likes (
    job_id TEXT NOT NULL, user TEXT NOT NULL, liked_at REAL NOT NULL, PRIMARY KEY (job_id, user)
) WITHOUT ROWID;
"""


class SharedDreams:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:  # opened on first use: the service's folder exists by then
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def share(self, job_id: str, owner: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO shared_dreams VALUES (?, ?, ?)", (job_id, owner, self.clock()))

    def unshare(self, job_id: str) -> None:
        self.db.execute("DELETE FROM shared_dreams WHERE job_id = ?", (job_id,))

    def is_shared(self, job_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM shared_dreams WHERE job_id = ?", (job_id,)).fetchone() is not None

    def like(self, job_id: str, user: str) -> int:
        """One like per person (liking twice counts once); returns the dream's likes."""
        self.db.execute("INSERT OR IGNORE INTO dream_likes VALUES (?, ?, ?)", (job_id, user, self.clock()))
        return self.likes(job_id)

    def likes(self, job_id: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM dream_likes WHERE job_id = ?", (job_id,)).fetchone()[0]

    def most_liked(self, since: float, exclude: set[str] = frozenset()) -> list[str]:
        """Shared dreams shared since ``since``, most liked first (then the newest): their job ids."""
        rows = self.db.execute(
            "SELECT s.job_id FROM shared_dreams s LEFT JOIN dream_likes l ON l.job_id = s.job_id "
            "WHERE s.shared_at >= ? GROUP BY s.job_id ORDER BY COUNT(l.user) DESC, s.shared_at DESC LIMIT 50",
            (since,),
        ).fetchall()
        return [row[0] for row in rows if row[0] not in exclude]
