"""The kill switch: ACTIVE / REDUCING / HALTED from the core's protections plus what only live trading meets.

The core's protections (drawdown, daily loss, cooldown; `bot.risk.protections`) give the state at
every close, exactly as in a backtest. On top, new exposure is refused (HALTED) while

* the halt file exists (``[live] halt_file`` in the run folder: ``touch RUN/HALT`` stops entries),
* ``[live] error_burst`` wakes in a row failed (network, exchange errors),
* the data is stale (no new closed bar when one was due),
* the broker could not keep the stop resting, or the exchange holds a position the run does not know.

The HALTED answer is the core's own (`bot.core.decide` with state HALTED: flatten an open position
at the next open, no entry); ``[live] flatten_on_halt = false`` keeps the position instead. A halt
lasts until its cause goes away or a person clears it (``cascade status RUN --clear-halt``, which
also ends a lock of the core's protections).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bot.live.store import RunStore


class KillSwitch:
    """The live-only halt reasons of one run folder (module docstring)."""

    def __init__(self, folder: Path, halt_file: str, error_burst: int) -> None:
        self.halt_path = folder / halt_file
        self.error_burst = int(error_burst)

    def reason(self, store: RunStore) -> str | None:
        """Why new exposure is refused now, or None."""
        if self.halt_path.exists():
            return f"halt file {self.halt_path.name} exists"
        if store.get("halt"):
            return str(store.get("halt"))
        if store.get("stale"):
            return "stale data"
        return None

    def error(self, store: RunStore, log: Callable[..., None], message: str) -> None:
        """Count a failed wake; the ``error_burst``-th in a row halts."""
        n = int(store.get("errors", 0)) + 1
        store.put("errors", n)
        log("error", f"wake failed ({n} in a row): {message}")
        if n >= self.error_burst and not store.get("halt"):
            store.put("halt", f"{n} failed wakes in a row (last: {message}); clear the halt once fixed")
            log("halted", f"kill switch: {n} failed wakes in a row; new exposure refused")

    def ok(self, store: RunStore) -> None:
        if store.get("errors", 0):
            store.put("errors", 0)

    def clear(self, store: RunStore) -> None:
        """A person clears every halt: the file, the recorded reason, and the core's lock (at the next bar)."""
        if self.halt_path.exists():
            self.halt_path.unlink()
        store.put("halt", "")
        store.put("errors", 0)
        store.put("clear_core_halt", True)
        store.event("cleared", "halt cleared by a person")
