"""Simulated fills and the target → order rule (docs/architecture.md, "Execution semantics").

Composed by `bot.core` into the per-bar rules every engine and broker calls, so all of them fill alike.

**Fill prices** (slippage ``slip`` is a fraction and always adverse; it is a cost, so a slipped fill
may lie outside the bar's traded range):

* market orders fill at the open: buys ``open·(1 + slip)``, sells ``open·(1 − slip)``;
* stop-market orders fill at the stop ``S`` slipped the same way, or at the slipped open if the bar
  gaps through ``S``;
* take-profit limits fill at their price ``T``, or on a gap at the slipped open but never worse than
  ``T``;
* the end-of-data close is a market order at the last close.

**Intrabar order** for an open position (long shown; shorts mirror), docs/methods.md §D.3.2:

1. mark open at or beyond the liquidation price → liquidation (gap);
2. on the entry bar, mark low at or beyond LP → liquidation (entry and liquidation in one bar: the
   worst case, whatever the stop);
3. open at or beyond the stop → stop at the open (gap);
4. stop touched (``low ≤ S``) and either ``S`` lies before LP or the mark never reached LP → stop;
5. mark low at or beyond LP → liquidation;
6. take-profit touched → take profit. When stop and take-profit could both fill in one bar the stop
   wins (pessimistic).

A liquidation loses the whole isolated margin: it is booked at the bankruptcy price without exit fee.

**Target → order** (decided at each close, filled at the next open): an open position is closed
when the target's sign differs from its side (0 or opposite); a new position opens only from flat (or
right after that close, i.e. a flip) on the target's side. Resizing a held position on a changed
``|target|`` is ignored. After an exit the engine forced (stop, take profit, liquidation,
protection), re-entry on the same side waits until the target's sign has changed (so a held target
does not re-enter on the next bar).
"""

from __future__ import annotations

import math

import numba as nb

from bot.risk.codes import (  # noqa: F401  (re-exported: the exit codes belong to these rules)
    EXIT_END,
    EXIT_LIQUIDATION,
    EXIT_NONE,
    EXIT_PROTECTION,
    EXIT_REASONS,
    EXIT_SIGNAL,
    EXIT_STOP,
    EXIT_TAKE_PROFIT,
)


@nb.njit(cache=True)
def slip_buy(price: float, slip: float) -> float:
    """Return a buy at ``price`` slipped up by ``slip``."""
    return price * (1.0 + slip)


@nb.njit(cache=True)
def slip_sell(price: float, slip: float) -> float:
    """Return a sell at ``price`` slipped down by ``slip``."""
    return price * (1.0 - slip)


@nb.njit(cache=True)
def market_fill(side: int, price: float, slip: float) -> float:
    """Return the fill of a market order of ``side`` (+1 buy, −1 sell) at ``price``."""
    if side > 0:
        return slip_buy(price, slip)
    return slip_sell(price, slip)


@nb.njit(cache=True)
def take_profit_fill(side: int, tp: float, open_: float, slip: float) -> float:
    """Return the fill of the take-profit limit closing a position of ``side`` (gap: slipped open, ≥ ``tp``)."""
    if side > 0:  # a sell limit
        if open_ >= tp:
            return max(slip_sell(open_, slip), tp)
        return tp
    if open_ <= tp:  # a buy limit
        return min(slip_buy(open_, slip), tp)
    return tp


@nb.njit(cache=True)
def intrabar_exit(side: int, open_: float, high: float, low: float, mark_open: float, mark_high: float,
                  mark_low: float, stop: float, take_profit: float, lp: float, slip: float,
                  entry_bar: bool = False) -> tuple[int, float]:
    """Return ``(exit code, fill price)`` of an open position in one bar (module docstring).

    ``entry_bar`` marks the bar the position was opened in (at its open). The price of a liquidation
    is NaN here: the caller books it at the bankruptcy price.
    """
    has_stop = not math.isnan(stop)
    has_tp = not math.isnan(take_profit)
    has_lp = not math.isnan(lp)
    if side > 0:
        liq_hit = has_lp and mark_low <= lp
        if has_lp and mark_open <= lp or entry_bar and liq_hit:
            return EXIT_LIQUIDATION, math.nan
        if has_stop and open_ <= stop:
            return EXIT_STOP, slip_sell(open_, slip)
        if has_stop and low <= stop and (stop > lp or not liq_hit):
            return EXIT_STOP, slip_sell(stop, slip)
        if liq_hit:
            return EXIT_LIQUIDATION, math.nan
        if has_tp and high >= take_profit:
            return EXIT_TAKE_PROFIT, take_profit_fill(side, take_profit, open_, slip)
        return EXIT_NONE, math.nan
    liq_hit = has_lp and mark_high >= lp
    if has_lp and mark_open >= lp or entry_bar and liq_hit:
        return EXIT_LIQUIDATION, math.nan
    if has_stop and open_ >= stop:
        return EXIT_STOP, slip_buy(open_, slip)
    if has_stop and high >= stop and (stop < lp or not liq_hit):
        return EXIT_STOP, slip_buy(stop, slip)
    if liq_hit:
        return EXIT_LIQUIDATION, math.nan
    if has_tp and low <= take_profit:
        return EXIT_TAKE_PROFIT, take_profit_fill(side, take_profit, open_, slip)
    return EXIT_NONE, math.nan


@nb.njit(cache=True)
def target_side(target: float) -> int:
    """Return the side a target asks for: +1, −1 or 0 (NaN = 0)."""
    if target > 0.0:
        return 1
    if target < 0.0:
        return -1
    return 0


@nb.njit(cache=True)
def target_action(position_side: int, target: float, blocked_side: int) -> tuple[bool, int, int]:
    """Return ``(close the position, side to open or 0, new blocked side)`` for a target at a close.

    ``blocked_side`` is the side of the last engine-forced exit, cleared once the target's sign differs.
    """
    want = target_side(target)
    if want != blocked_side:
        blocked_side = 0
    close = position_side != 0 and want != position_side
    enter = 0
    if want != 0 and want != position_side and want != blocked_side:
        enter = want
    return close, enter, blocked_side


@nb.njit(cache=True)
def forced_exit(reason: int) -> bool:
    """Return whether an exit was forced by the engine (blocks same-side re-entry)."""
    return reason == EXIT_STOP or reason == EXIT_TAKE_PROFIT or reason == EXIT_LIQUIDATION \
        or reason == EXIT_PROTECTION
