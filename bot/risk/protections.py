"""Protections: the ACTIVE / REDUCING / HALTED trading-state machine (docs/architecture.md, style.md §0.6).

Evaluated at every bar close on the mark-to-market equity, identically in both backtest engines and
live:

* drawdown from the peak equity ``≥ max_drawdown`` → **HALTED** for good (a kill switch: a person
  restarts it);
* loss since the UTC day's start ``≥ daily_loss`` → **HALTED** until the next UTC day (the day's start
  equity is the equity at the last close of the previous day);
* drawdown ``≥ reduce_drawdown`` → **REDUCING**;
* ``cooldown_stopouts`` consecutive stop-outs (stops and liquidations; any other exit resets the
  count) → **REDUCING** for the ``cooldown_bars`` bar closes starting with the one of the last
  stop-out.

HALTED refuses every order (the engines flatten an open position once, at the next open, with exit
reason ``"protection"``). REDUCING refuses any order that would grow ``|position|`` or flip it. These
are nautilus_trader's ``TradingState`` semantics.

The state is an immutable `ProtectionState` (a named tuple numba keeps in registers): every function
takes one and returns the next, so the engines and the live runner share one pure state machine.

>>> s = new_state(10_000.0, 20_000)
>>> s, code = update_state(s, 8_400.0, 20_000, 5, 0.25, 0.15, 0.5)  # 16 % down
>>> int(code)
1
>>> bool(allows(HALTED, 0.0, 1.0)), bool(allows(REDUCING, 2.0, -1.0)), bool(allows(REDUCING, 2.0, 1.0))
(False, True, False)
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import numba as nb

ACTIVE = 0
REDUCING = 1
HALTED = 2


class TradingState(IntEnum):
    """The risk state codes, named."""

    ACTIVE = ACTIVE
    REDUCING = REDUCING
    HALTED = HALTED


STATE_NAMES = ("ACTIVE", "REDUCING", "HALTED")


class ProtectionState(NamedTuple):
    """What the protections remember between bar closes (days are days since 1970-01-01, UTC)."""

    peak: float  # highest close equity so far
    day: int  # UTC day of the last update
    day_start: float  # equity at the last close of the previous day
    last_equity: float  # equity at the last update
    killed: bool  # the max-drawdown kill switch has fired
    halt_day: int  # UTC day halted by the daily-loss limit, or -1
    stopouts: int  # consecutive stop-outs
    cool_until: int  # REDUCING while the bar index is below this


@nb.njit(cache=True)
def new_state(initial_equity: float, day: int) -> ProtectionState:
    """Return the state of a fresh account of ``initial_equity`` starting on UTC day ``day``."""
    return ProtectionState(initial_equity, day, initial_equity, initial_equity, False, -1, 0, -1)


@nb.njit(cache=True)
def update_state(s: ProtectionState, equity: float, day: int, bar: int, max_drawdown: float,
                 reduce_drawdown: float, daily_loss: float) -> tuple[ProtectionState, int]:
    """Record the close ``equity`` of bar ``bar`` (on UTC day ``day``); return (new state, state code).

    Drawdowns are compared as ``equity <= peak·(1 − limit)`` (no division on the hot path).
    """
    day_start = s.day_start
    if day != s.day:
        day_start = s.last_equity
    peak = equity if equity > s.peak else s.peak
    killed = s.killed or equity <= peak * (1.0 - max_drawdown)
    halt_day = s.halt_day
    if not killed and day_start > 0.0 and equity <= day_start * (1.0 - daily_loss):
        halt_day = day
    code = ACTIVE
    if killed or halt_day == day:
        code = HALTED
    elif equity <= peak * (1.0 - reduce_drawdown) or bar < s.cool_until:
        code = REDUCING
    return ProtectionState(peak, day, day_start, equity, killed, halt_day, s.stopouts, s.cool_until), code


@nb.njit(cache=True)
def record_exit(s: ProtectionState, stopped_out: bool, bar: int, cooldown_stopouts: int,
                cooldown_bars: int) -> ProtectionState:
    """Count a position exit at bar ``bar`` (``stopped_out`` for stops and liquidations); return the new state."""
    stopouts = s.stopouts + 1 if stopped_out else 0
    cool_until = s.cool_until
    if stopouts >= cooldown_stopouts:
        cool_until = bar + cooldown_bars
        stopouts = 0
    return ProtectionState(s.peak, s.day, s.day_start, s.last_equity, s.killed, s.halt_day, stopouts, cool_until)


@nb.njit(cache=True)
def allows(state: int, position: float, order: float) -> bool:
    """Return whether a signed ``order`` quantity may be sent with signed ``position`` held.

    HALTED refuses every order; REDUCING allows only orders that shrink ``|position|`` without
    flipping it; ACTIVE allows everything.
    """
    if order == 0.0:
        return True
    if state == HALTED:
        return False
    if state == REDUCING:
        after = position + order
        return abs(after) < abs(position) and after * position >= 0.0
    return True
