"""The recorder's on-disk state beside the store, under ``<data dir>/.record/``.

* ``journal.jsonl``  every normalised row, appended (and flushed to the OS) as soon as its
  message arrives and before it is merged into the store. A recorder killed with SIGKILL
  loses nothing it had received: the next start merges the journal into the store first. The
  merge is de-duplicated (bot.store), so replaying a journal twice changes nothing.
* ``gaps.jsonl``     known gaps, one JSON object per line: ``exchange, stream, start, end``
  (ISO UTC, on the exchange's clock), ``reason`` (``disconnect`` or ``recorder down``).
* ``status.json``    what is being recorded, the last message time per stream and a heartbeat,
  rewritten atomically at every flush (``cascade record --status`` reads it).
* ``lock``           held (``flock``) by the running recorder: one recorder per data dir.
* ``premium/``       a :class:`bot.store.Store` of polled *current* funding/premium snapshots
  (predicted rate, mark and index price), kept apart from the settled ``funding_rate`` series
  so a prediction is never mistaken for a settlement.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from bot.errors import UserError

STATE_DIR = ".record"


def state_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / STATE_DIR


def iso(ms: int | None) -> str | None:
    return None if ms is None else pd.Timestamp(int(ms), unit="ms", tz="UTC").isoformat()


def write_json_atomic(path: Path, payload: Any) -> None:
    """Replace ``path`` with ``payload`` as JSON (temp file + rename: readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=1, sort_keys=True)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the status is not secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Journal:
    """Append-only JSON-lines file of rows not yet merged into the store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the recorder

    def append(self, record: dict[str, Any]) -> None:
        # flush() hands the line to the kernel: it survives the process being killed
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._fh.flush()

    def read(self) -> list[dict[str, Any]]:
        """Every complete line (a torn last line from a crash mid-write is skipped)."""
        self._fh.flush()
        out = []
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def clear(self) -> None:
        """Empty the journal (after its rows are safely in the store)."""
        self._fh.flush()
        self._fh.truncate(0)
        self._fh.seek(0)

    def close(self) -> None:
        self._fh.close()


class RecorderLock:
    """Exclusive ``flock`` on ``.record/lock``; :class:`UserError` if another recorder holds it."""

    def __init__(self, data_dir: Path | str) -> None:
        self.path = state_dir(data_dir) / "lock"
        self._fh: TextIO | None = None

    def acquire(self) -> RecorderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise UserError(f"another 'cascade record' is already recording into {self.path.parent.parent}; "
                            "stop it first (or use another --data-dir)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    @staticmethod
    def held(data_dir: Path | str) -> bool:
        """Whether a running recorder holds the lock of ``data_dir``."""
        path = state_dir(data_dir) / "lock"
        if not path.is_file():
            return False
        with open(path, "a+", encoding="utf-8") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False


def append_gap(data_dir: Path | str, exchange: str, stream: str, start_ms: int, end_ms: int, reason: str) -> dict:
    """Record a known gap of ``stream`` (exchange clock, epoch ms) and return it."""
    gap = {"exchange": exchange, "stream": stream, "start": iso(start_ms), "end": iso(end_ms),
           "start_ms": int(start_ms), "end_ms": int(end_ms), "seconds": round((end_ms - start_ms) / 1000, 3),
           "reason": reason}
    path = state_dir(data_dir) / "gaps.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(gap, sort_keys=True) + "\n")
    return gap


def read_gaps(data_dir: Path | str) -> list[dict]:
    path = state_dir(data_dir) / "gaps.jsonl"
    if not path.is_file():
        return []
    return list(_json_lines(path))


def _json_lines(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


def read_status(data_dir: Path | str) -> dict | None:
    path = state_dir(data_dir) / "status.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


def coverage(data_dir: Path | str) -> list[dict]:
    """Per recorded venue: its stream, last message/event, number and total length of known gaps,
    and whether a recorder is running (what ``data-info`` can show beside the datasets)."""
    status = read_status(data_dir) or {}
    gaps = read_gaps(data_dir)
    running = RecorderLock.held(data_dir)
    out = []
    for venue, v in sorted((status.get("venues") or {}).items()):
        mine = [g for g in gaps if g.get("exchange") == venue]
        out.append({"exchange": venue, "stream": v.get("stream"), "running": running,
                    "last_message": v.get("last_message"), "last_event": v.get("last_event"),
                    "gaps": len(mine), "gap_seconds": round(sum(g.get("seconds", 0.0) for g in mine), 3)})
    return out
