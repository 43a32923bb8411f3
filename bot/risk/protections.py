"""Protections: the ACTIVE / REDUCING / HALTED trading-state machine (docs/architecture.md, style.md §0.6).

Evaluated at every bar close on the mark-to-market equity, identically in both backtest engines and
live. Times ``t`` are seconds since 1970-01-01 UTC; a backtest stamps each close with its bar's open
time, so a bar belongs to the UTC day it opens in. Every lock is a duration, the same on any timeframe.
At each close, in this order:

1. **Day**: on a new UTC day the day's start equity becomes the equity of the previous close.
2. **Peak** (the drawdown's lookback): a peak set ``drawdown_lookback`` or longer ago is forgotten
   (the peak becomes this close's equity); a close at or above the peak becomes the peak.
3. **Max drawdown**: equity ``≤ peak·(1 − max_drawdown)`` → **HALTED** for ``halt_duration``; the
   drawdown is measured afresh from this close (the peak becomes this equity), so it releases.
4. **Daily loss**: equity ``≤ day start·(1 − daily_loss)`` → **HALTED** until the next UTC day begins.
5. **Cooldown** (`record_exit`): ``cooldown_stopouts`` consecutive stop-outs (stops and liquidations;
   any other exit resets the count) → **HALTED** for ``cooldown`` from the bar of the last stop-out.
6. The state: **HALTED** while ``t`` is before the latest lock's end; else **REDUCING** while equity
   ``≤ peak·(1 − reduce_drawdown)``; else **ACTIVE**.

HALTED refuses new entries (an open position is flattened once, at the next open, with exit reason
``"protection"``). REDUCING keeps trading with new entries scaled by ``reduce_size_factor``. Every
state can be left: locks end, peaks expire. (Live, a person may also clear a halt: `clear_halt`.)

The state is an immutable `ProtectionState` (a named tuple numba keeps in registers): every function
takes one and returns the next, so the engines and the live runner share one pure state machine.

>>> from bot.config import MarketCosts, RiskConfig
>>> from bot.risk.params import risk_params
>>> p = risk_params(RiskConfig(daily_loss=0.5), MarketCosts())
>>> s = new_state(10_000.0, 0)
>>> s, code = update_state(s, 8_400.0, 3_600, p)  # 16 % below the peak
>>> int(code)
1
>>> s, code = update_state(s, 7_400.0, 7_200, p)  # 26 %: halted for 3 days
>>> int(code), s.halt_until == 7_200 + 3 * 86_400
(2, True)
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb

from bot.risk.codes import ACTIVE, HALTED, REDUCING, STATE_NAMES, TradingState  # noqa: F401  (re-exported)
from bot.risk.params import RiskParams

DAY = 86_400


class ProtectionState(NamedTuple):
    """What the protections remember between bar closes (times in seconds since 1970-01-01 UTC)."""

    peak: float  # highest close equity of the lookback
    peak_time: int  # when the peak was set
    day: int  # UTC day (days since 1970-01-01) of the last update
    day_start: float  # equity at the last close of the previous day
    last_equity: float  # equity at the last update
    halt_until: int  # HALTED while t < halt_until
    stopouts: int  # consecutive stop-outs


@nb.njit(cache=True)
def new_state(initial_equity: float, t: int) -> ProtectionState:
    """Return the state of a fresh account of ``initial_equity`` starting at time ``t``."""
    return ProtectionState(initial_equity, t, t // DAY, initial_equity, initial_equity, t, 0)


@nb.njit(cache=True)
def update_state(s: ProtectionState, equity: float, t: int, p: RiskParams) -> tuple[ProtectionState, int]:
    """Record the close ``equity`` at time ``t``; return (new state, state code). See the module docstring.

    Drawdowns are compared as ``equity <= peak·(1 − limit)`` (no division on the hot path).
    """
    day = t // DAY
    day_start = s.day_start
    if day != s.day:
        day_start = s.last_equity
    peak = s.peak
    peak_time = s.peak_time
    if t - peak_time >= p.drawdown_lookback or equity >= peak:
        peak = equity
        peak_time = t
    halt_until = s.halt_until
    if equity <= peak * (1.0 - p.max_drawdown):
        halt_until = max(halt_until, t + p.halt_duration)
        peak = equity
        peak_time = t
    if day_start > 0.0 and equity <= day_start * (1.0 - p.daily_loss):
        halt_until = max(halt_until, (day + 1) * DAY)
    code = ACTIVE
    if t < halt_until:
        code = HALTED
    elif equity <= peak * (1.0 - p.reduce_drawdown):
        code = REDUCING
    return ProtectionState(peak, peak_time, day, day_start, equity, halt_until, s.stopouts), code


@nb.njit(cache=True)
def record_exit(s: ProtectionState, stopped_out: bool, t: int, p: RiskParams) -> ProtectionState:
    """Count a position exit in the bar of time ``t`` (``stopped_out`` for stops and liquidations)."""
    stopouts = s.stopouts + 1 if stopped_out else 0
    halt_until = s.halt_until
    if stopouts >= p.cooldown_stopouts:
        halt_until = max(halt_until, t + p.cooldown)
        stopouts = 0
    return ProtectionState(s.peak, s.peak_time, s.day, s.day_start, s.last_equity, halt_until, stopouts)


@nb.njit(cache=True)
def clear_halt(s: ProtectionState, t: int) -> ProtectionState:
    """Return ``s`` with every lock released at time ``t`` and the drawdown measured afresh (live: a
    person clears a halt). The next `update_state` decides the state from there."""
    return ProtectionState(s.last_equity, t, s.day, s.day_start, s.last_equity, t, 0)


@nb.njit(cache=True)
def entry_scale(state: int, p: RiskParams) -> float:
    """Return the factor on the size of a new entry in ``state``: 1, ``reduce_size_factor`` or 0."""
    if state == HALTED:
        return 0.0
    if state == REDUCING:
        return p.reduce_size_factor
    return 1.0


@nb.njit(cache=True)
def allows(state: int, position: float, order: float) -> bool:
    """Return whether a signed ``order`` quantity may be sent with signed ``position`` held.

    HALTED allows only orders that shrink ``|position|`` without flipping it (the flattening);
    REDUCING and ACTIVE allow everything (REDUCING scales entry sizes, `entry_scale`).
    """
    if order == 0.0 or state != HALTED:
        return True
    after = position + order
    return abs(after) < abs(position) and after * position >= 0.0
