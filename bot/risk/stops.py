"""Protective stops: strategy stop, fixed percentage, ATR multiple, trailing ATR (only ever tightens).

Stop modes (``risk.stop``):

* ``strategy`` — the signal frame's ``stop`` price at the decision bar (NaN = no stop). While the
  position is held, a later, *tighter* signal stop is adopted; a looser one is ignored.
* ``fixed_pct`` — ``stop_pct`` away from the entry fill.
* ``atr`` — ``atr_mult × ATR`` (Wilder, ``atr_period``) at the decision bar, away from the entry fill.
* ``trailing_atr`` — starts like ``atr``; at every later close the candidate ``close ∓ atr_mult × ATR``
  replaces the stop only if it is tighter.

A stop may not sit beyond the liquidation price: it is pulled to ``LP ± buffer·|EP − LP|``
(freqtrade's ``liquidation_buffer``, docs/methods.md §D.3.4), at the entry and again whenever funding moves
the liquidation price (`bot.core`).

>>> trail_stop(95.0, 110.0, 1, 2.0, 2.0)
106.0
>>> trail_stop(106.0, 100.0, 1, 2.0, 2.0)  # never loosens
106.0
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from bot.risk.params import STOP_ATR, STOP_FIXED_PCT, STOP_STRATEGY, STOP_TRAILING_ATR


@nb.njit(cache=True)
def atr_stop(entry: float, side: int, atr: float, mult: float) -> float:
    """Return the stop ``mult × atr`` away from ``entry`` on the losing side (NaN without ATR)."""
    return entry - side * mult * atr


@nb.njit(cache=True)
def tighter(prev: float, cand: float, side: int) -> float:
    """Return whichever of ``prev`` and ``cand`` is tighter (closer to the price) for ``side``; NaN = none."""
    if math.isnan(cand):
        return prev
    if math.isnan(prev):
        return cand
    if side > 0:
        return max(prev, cand)
    return min(prev, cand)


@nb.njit(cache=True)
def trail_stop(prev: float, price: float, side: int, atr: float, mult: float) -> float:
    """Return the trailing stop after a close at ``price``: ``price ∓ mult·atr`` if tighter, else ``prev``."""
    return tighter(prev, atr_stop(price, side, atr, mult), side)


@nb.njit(cache=True)
def stop_distance(mode: int, close: float, side: int, signal_stop: float, atr: float, pct: float,
                  mult: float) -> float:
    """Return the stop distance decided at a bar close (NaN = no stop).

    For ``strategy`` stops the distance is ``side·(close − stop)``; a stop on the wrong side of the
    close counts as no stop.
    """
    if mode == STOP_STRATEGY:
        d = side * (close - signal_stop)
    elif mode == STOP_FIXED_PCT:
        d = close * pct
    elif mode == STOP_ATR or mode == STOP_TRAILING_ATR:
        d = mult * atr
    else:
        d = np.nan
    if not d > 0.0:
        return np.nan
    return d


@nb.njit(cache=True)
def entry_stop(mode: int, fill: float, side: int, signal_stop: float, distance: float) -> float:
    """Return the stop price of a position filled at ``fill``.

    ``strategy`` stops keep the signal's price; the other modes keep the decided distance from the fill.
    """
    if math.isnan(distance):
        return np.nan
    if mode == STOP_STRATEGY:
        return signal_stop
    return fill - side * distance


@nb.njit(cache=True)
def clamp_to_liquidation(stop: float, lp: float, entry: float, side: int, buffer: float) -> float:
    """Return ``stop`` pulled inside ``LP ± buffer·|entry − LP|`` (§D.3.4); NaN stop or LP is left alone."""
    if math.isnan(stop) or not (lp > 0.0) or math.isinf(lp):
        return stop
    limit = lp + side * abs(entry - lp) * buffer
    if side * (stop - limit) < 0.0:
        return limit
    return stop


@nb.njit(cache=True)
def average_true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """Return Wilder's ATR (first value: mean of the first ``period`` true ranges; NaN before)."""
    n = high.shape[0]
    out = np.full(n, np.nan)
    if n < period or period < 1:
        return out
    tr = np.empty(n)
    tr[0] = high[0] - low[0]
    for k in range(1, n):
        tr[k] = max(high[k] - low[k], abs(high[k] - close[k - 1]), abs(low[k] - close[k - 1]))
    acc = 0.0
    for k in range(period):
        acc += tr[k]
    out[period - 1] = acc / period
    for k in range(period, n):
        out[k] = (out[k - 1] * (period - 1) + tr[k]) / period
    return out
