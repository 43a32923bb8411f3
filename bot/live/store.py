"""The run's state in SQLite (WAL) under its folder: nothing is lost on SIGKILL.

Every bar's work is committed in one transaction (core state, equity row, closed trades, events),
so a restart finds either the state before that bar or the state after it, never half of it.
Orders are written *before* they are sent (status ``sending``, with their deterministic client
id) and updated after, so a restart knows which placements may have reached the exchange.

Tables: ``kv`` (the core's Position / Account / pending Intent as JSON, last bar, halt), ``orders``,
``fills``, ``trades``, ``equity``, ``protection`` (resting stop / take-profit), ``events``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from bot.core.state import Account, Intent, Position
from bot.risk.protections import ProtectionState

DB_NAME = "state.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (cid TEXT PRIMARY KEY, bar_ms INTEGER NOT NULL, intent TEXT NOT NULL,
    side TEXT NOT NULL, qty REAL NOT NULL, reduce_only INTEGER NOT NULL, status TEXT NOT NULL,
    exchange_id TEXT, avg_price REAL, filled REAL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS fills (id INTEGER PRIMARY KEY AUTOINCREMENT, cid TEXT, bar_ms INTEGER NOT NULL,
    side INTEGER NOT NULL, qty REAL NOT NULL, price REAL NOT NULL, what TEXT NOT NULL, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS trades (entry_ms INTEGER NOT NULL, exit_ms INTEGER NOT NULL, side INTEGER NOT NULL,
    qty REAL NOT NULL, entry_price REAL NOT NULL, exit_price REAL NOT NULL, stop REAL, exit_reason TEXT NOT NULL,
    pnl REAL NOT NULL, fees REAL NOT NULL, funding REAL NOT NULL, PRIMARY KEY (entry_ms, exit_ms, side));
CREATE TABLE IF NOT EXISTS equity (bar_ms INTEGER PRIMARY KEY, equity REAL NOT NULL, cash REAL NOT NULL,
    position REAL NOT NULL, state TEXT NOT NULL, exchange_equity REAL);
CREATE TABLE IF NOT EXISTS protection (role TEXT PRIMARY KEY, order_id TEXT, cid TEXT, price REAL,
    qty REAL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, bar_ms INTEGER,
    kind TEXT NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL);
"""


def _cast(annotation: Any, value: Any) -> Any:
    if annotation is int:
        return int(value)
    if annotation is float:
        return math.nan if value is None else float(value)
    if annotation is ProtectionState:
        return decode(ProtectionState, value)
    raise TypeError(f"cannot decode field of type {annotation}")


def encode(value: NamedTuple) -> list[Any]:
    """A core state tuple as JSON-ready nested lists (numbers as Python ints/floats)."""
    out: list[Any] = []
    for v in value:
        if isinstance(v, tuple):
            out.append(encode(v))  # type: ignore[arg-type]
        elif isinstance(v, float) and math.isnan(v):
            out.append(None)
        else:
            out.append(v.item() if hasattr(v, "item") else v)
    return out


def decode(cls: type, data: list[Any]) -> Any:
    """The inverse of :func:`encode` for one of the core's NamedTuple types (exact field types)."""
    fields = typing.get_type_hints(cls)
    return cls(*(_cast(fields[name], v) for name, v in zip(cls._fields, data, strict=True)))


class RunStore:
    """The SQLite state of one run folder (WAL, synchronous=FULL: a committed bar survives power loss)."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / DB_NAME
        # one runner thread at a time uses it (tests drive it from a worker thread)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self._depth = 0

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit (nested calls join the outer one)."""
        if self._depth:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._depth = 0

    # -- key/value -------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, json.dumps(value)))

    def load_core(self) -> tuple[Position, Account, Intent | None] | None:
        """The persisted (position, account, pending intent), or None for a new run."""
        raw = self.get("core")
        if raw is None:
            return None
        intent = decode(Intent, raw["intent"]) if raw.get("intent") is not None else None
        return decode(Position, raw["position"]), decode(Account, raw["account"]), intent

    def save_core(self, pos: Position, acct: Account, intent: Intent | None) -> None:
        self.put("core", {"position": encode(pos), "account": encode(acct),
                          "intent": None if intent is None else encode(intent)})

    # -- rows ------------------------------------------------------------------------------------

    def event(self, kind: str, message: str, bar_ms: int | None = None, **data: Any) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO events (time, bar_ms, kind, message, data) VALUES (?, ?, ?, ?, ?)",
                       (time.time(), bar_ms, kind, message, json.dumps(data, default=str)))

    def events(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT time, bar_ms, kind, message FROM events ORDER BY id DESC LIMIT ?",
                               (limit,)).fetchall()
        return [{"time": r[0], "bar_ms": r[1], "kind": r[2], "message": r[3]} for r in reversed(rows)]

    def order(self, cid: str) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM orders WHERE cid = ?", (cid,))
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))

    def orders(self, status: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT * FROM orders" + (" WHERE status = ?" if status else "") + " ORDER BY created"
        cur = self.db.execute(q, (status,) if status else ())
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def put_order(self, cid: str, bar_ms: int, intent: str, side: str, qty: float, reduce_only: bool,
                  status: str, exchange_id: str | None = None, avg_price: float | None = None,
                  filled: float | None = None) -> None:
        now = time.time()
        with self.transaction() as db:
            old = db.execute("SELECT created FROM orders WHERE cid = ?", (cid,)).fetchone()
            db.execute("INSERT OR REPLACE INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                       (cid, bar_ms, intent, side, qty, int(reduce_only), status, exchange_id, avg_price, filled,
                        old[0] if old else now, now))

    def fill(self, cid: str | None, bar_ms: int, side: int, qty: float, price: float, what: str) -> None:
        """Record a fill (once per client id: a fill booked again after a crash is not a second fill)."""
        with self.transaction() as db:
            if cid is not None and db.execute("SELECT 1 FROM fills WHERE cid = ?", (cid,)).fetchone():
                return
            db.execute("INSERT INTO fills (cid, bar_ms, side, qty, price, what, time) VALUES (?,?,?,?,?,?,?)",
                       (cid, bar_ms, side, qty, price, what, time.time()))

    def trade(self, row: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO trades VALUES (:entry_ms, :exit_ms, :side, :qty, :entry_price, "
                       ":exit_price, :stop, :exit_reason, :pnl, :fees, :funding)", row)

    def trades(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM trades ORDER BY entry_ms, exit_ms")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def equity(self, bar_ms: int, equity: float, cash: float, position: float, state: str,
               exchange_equity: float | None = None) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO equity VALUES (?,?,?,?,?,?)",
                       (bar_ms, equity, cash, position, state, exchange_equity))

    def last_equity(self) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM equity ORDER BY bar_ms DESC LIMIT 1")
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))

    def set_protection(self, role: str, order_id: str | None, cid: str | None, price: float | None,
                       qty: float | None) -> None:
        with self.transaction() as db:
            if order_id is None:
                db.execute("DELETE FROM protection WHERE role = ?", (role,))
            else:
                db.execute("INSERT OR REPLACE INTO protection VALUES (?,?,?,?,?,?)",
                           (role, order_id, cid, price, qty, time.time()))

    def protection(self) -> dict[str, dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM protection")
        names = [d[0] for d in cur.description]
        return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}
