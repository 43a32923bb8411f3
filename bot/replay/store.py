"""The replay account's durable state: one SQLite file (WAL), JSON documents keyed by (kind, id).

The matching engine keeps its state in memory and writes every changed document in one
transaction at the end of each request, so a server killed between requests restarts with
exactly the state the last reply described (balances, positions, orders, trades, clock).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from bot.errors import UserError


class StateFile:
    """``kind`` → ``id`` → JSON document, in SQLite (``:memory:`` when ``path`` is None)."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path is not None else None
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path) if self.path is not None else ":memory:",
                                       check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS docs (kind TEXT NOT NULL, id TEXT NOT NULL, "
                             "doc TEXT NOT NULL, PRIMARY KEY (kind, id))")
        except (sqlite3.Error, OSError) as err:
            raise UserError(f"cannot open the replay account state '{path}' ({err}); "
                            "pass a writable --state path") from None
        self._lock = threading.Lock()

    def load(self) -> dict[str, dict[str, Any]]:
        """Every stored document, by kind and id."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for kind, key, doc in self._db.execute("SELECT kind, id, doc FROM docs"):
                out.setdefault(kind, {})[key] = json.loads(doc)
        return out

    def write(self, changes: dict[tuple[str, str], Any | None]) -> None:
        """Store (or, for ``None``, delete) documents in one transaction."""
        if not changes:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for (kind, key), doc in changes.items():
                    if doc is None:
                        self._db.execute("DELETE FROM docs WHERE kind = ? AND id = ?", (kind, key))
                    else:
                        self._db.execute("INSERT OR REPLACE INTO docs (kind, id, doc) VALUES (?, ?, ?)",
                                         (kind, key, json.dumps(doc, separators=(",", ":"))))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()
