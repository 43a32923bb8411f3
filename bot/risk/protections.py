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

The state lives in a small float array (numba-friendly); `TradingState` names the codes.

>>> s = new_state(10_000.0, 20_000)
>>> int(update_state(s, 8_400.0, 20_000, 5, 0.25, 0.15, 0.5))  # 16 % down
1
>>> bool(allows(HALTED, 0.0, 1.0)), bool(allows(REDUCING, 2.0, -1.0)), bool(allows(REDUCING, 2.0, 1.0))
(False, True, False)
"""

from __future__ import annotations

from enum import IntEnum

import numba as nb
import numpy as np

ACTIVE = 0
REDUCING = 1
HALTED = 2


class TradingState(IntEnum):
    """The risk state codes, named."""

    ACTIVE = ACTIVE
    REDUCING = REDUCING
    HALTED = HALTED


STATE_NAMES = ("ACTIVE", "REDUCING", "HALTED")

# slots of the state array
S_PEAK = 0
S_DAY_START = 1
S_DAY = 2
S_HALT_DAY = 3
S_KILLED = 4
S_STOPOUTS = 5
S_COOL_UNTIL = 6
S_LAST_EQUITY = 7
N_STATE = 8


def new_state(initial_equity: float, day: int) -> np.ndarray:
    """Return a fresh state array for an account of ``initial_equity`` starting on UTC day ``day``."""
    s = np.zeros(N_STATE, dtype=np.float64)
    init_state(s, initial_equity, day)
    return s


@nb.njit(cache=True)
def init_state(s: np.ndarray, initial_equity: float, day: int) -> None:
    """Reset ``s`` in place (``day`` = days since 1970-01-01, UTC)."""
    s[S_PEAK] = initial_equity
    s[S_DAY_START] = initial_equity
    s[S_DAY] = day
    s[S_HALT_DAY] = -1.0
    s[S_KILLED] = 0.0
    s[S_STOPOUTS] = 0.0
    s[S_COOL_UNTIL] = -1.0
    s[S_LAST_EQUITY] = initial_equity


@nb.njit(cache=True)
def update_state(s: np.ndarray, equity: float, day: int, bar: int, max_drawdown: float,
                 reduce_drawdown: float, daily_loss: float) -> int:
    """Record the close ``equity`` of bar ``bar`` (on UTC day ``day``) and return the new state code."""
    if day != s[S_DAY]:
        s[S_DAY_START] = s[S_LAST_EQUITY]
        s[S_DAY] = day
    s[S_LAST_EQUITY] = equity
    if equity > s[S_PEAK]:
        s[S_PEAK] = equity
    peak = s[S_PEAK]
    drawdown = 1.0 - equity / peak if peak > 0.0 else 1.0
    if drawdown >= max_drawdown:
        s[S_KILLED] = 1.0
    if s[S_KILLED] > 0.0:
        return HALTED
    start = s[S_DAY_START]
    if start > 0.0 and equity <= start * (1.0 - daily_loss):
        s[S_HALT_DAY] = day
    if s[S_HALT_DAY] == day:
        return HALTED
    if drawdown >= reduce_drawdown or bar < s[S_COOL_UNTIL]:
        return REDUCING
    return ACTIVE


@nb.njit(cache=True)
def record_exit(s: np.ndarray, stopped_out: bool, bar: int, cooldown_stopouts: int, cooldown_bars: int) -> None:
    """Count a position exit at bar ``bar``; ``stopped_out`` for stops and liquidations."""
    if not stopped_out:
        s[S_STOPOUTS] = 0.0
        return
    s[S_STOPOUTS] += 1.0
    if s[S_STOPOUTS] >= cooldown_stopouts:
        s[S_COOL_UNTIL] = bar + cooldown_bars
        s[S_STOPOUTS] = 0.0


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
