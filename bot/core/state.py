"""The typed values the core passes around: bars, signals, the position, the account, intents, trades.

All are `typing.NamedTuple`s that numba compiles into register-held structs, so every core function
is pure — it takes values and returns new ones — and callable from plain Python one bar at a time.
Times are integer seconds since 1970-01-01 UTC. Build them with the constructors below (they give
numba the exact field types; a hand-built tuple with an ``int`` where a ``float`` belongs compiles
another specialisation).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba as nb

from bot.risk.execution import EXIT_NONE
from bot.risk.protections import ProtectionState, new_state


class Bar(NamedTuple):
    """One bar as the core reads it (mark prices default to last prices when a market has none)."""

    time: int  # bar open time, s; a close is stamped with its bar's open time
    open: float
    high: float
    low: float
    close: float
    mark_open: float
    mark_high: float
    mark_low: float
    funding_rate: float  # settled at this bar's close (NaN = no settlement)
    funding_mark: float  # the mark price at that settlement time (docs/methods.md §B.3)


class Signal(NamedTuple):
    """The strategy's intent at a bar close, plus the derived series the risk layer may use."""

    target: float  # desired exposure in [-1, 1], sign = side
    stop: float  # the strategy's protective stop price (NaN = none)
    take_profit: float  # NaN = none
    atr: float  # for atr / trailing_atr stops (NaN when unused)
    volatility: float  # annualised, for volatility-target sizing (NaN when unused)


class Position(NamedTuple):
    """The open isolated position (``side == 0``: flat, other fields meaningless)."""

    side: int  # +1 long, −1 short, 0 flat
    qty: float  # > 0
    entry: float  # fill price
    margin: float  # isolated wallet balance WB (funding is taken from / added to it)
    liq_price: float  # docs/methods.md §D.1, recomputed after every funding payment
    bankruptcy_price: float  # where WB is gone: a liquidation is booked here
    stop: float  # current protective stop (NaN = none)
    stop0: float  # stop at the entry (reported in the trade)
    take_profit: float  # NaN = none
    entry_bar: int
    entry_fee: float
    funding: float  # funding received (+) / paid (−) while held
    entry_equity: float  # equity at the entry decision (Kelly returns)


class Account(NamedTuple):
    """The wallet and what the rules remember across trades."""

    cash: float  # wallet balance: realised PnL, fees and funding included
    fees: float  # cumulative fees
    funding: float  # cumulative funding
    n_liquidations: int
    blocked: int  # side of the last forced exit; same-side re-entry waits for a target change
    n_win: int  # Kelly counters over closed trades (returns on the equity at entry)
    sum_win: float
    n_loss: int
    sum_loss: float  # sum of the magnitudes of losing returns
    protection: ProtectionState


class Intent(NamedTuple):
    """The orders decided at a close, sent at the next open (``exit``/``side`` 0: none)."""

    exit: int  # EXIT_SIGNAL or EXIT_PROTECTION: close the position at market; EXIT_NONE: keep it
    side: int  # side of a new position to open at market (after the exit on a flip), 0 = none
    qty: float
    stop_distance: float  # for stop modes other than ``strategy`` (NaN = no stop)
    signal_stop: float  # the strategy's stop (``strategy`` mode)
    take_profit: float
    equity: float  # equity at the decision


class Trade(NamedTuple):
    """A closed trade (``reason == EXIT_NONE``: no trade). ``pnl = side·qty·(exit − entry) − fees + funding``."""

    entry_bar: int
    exit_bar: int
    side: int
    reason: int  # EXIT_* code
    qty: float
    entry_price: float
    exit_price: float
    stop: float  # at the entry
    pnl: float
    fees: float
    funding: float


@nb.njit(cache=True, inline="always")
def make_bar(time: int, open_: float, high: float, low: float, close: float, mark_open: float = math.nan,
             mark_high: float = math.nan, mark_low: float = math.nan, funding_rate: float = math.nan,
             funding_mark: float = math.nan) -> Bar:
    """Return a `Bar`; missing mark prices are the last prices, a missing funding mark the close."""
    mo = open_ if math.isnan(mark_open) else mark_open
    mh = high if math.isnan(mark_high) else mark_high
    ml = low if math.isnan(mark_low) else mark_low
    fm = close if math.isnan(funding_mark) else funding_mark
    return Bar(time, open_, high, low, close, mo, mh, ml, funding_rate, fm)


@nb.njit(cache=True, inline="always")
def make_signal(target: float, stop: float = math.nan, take_profit: float = math.nan, atr: float = math.nan,
                volatility: float = math.nan) -> Signal:
    """Return a `Signal` with float fields."""
    return Signal(float(target), float(stop), float(take_profit), float(atr), float(volatility))


@nb.njit(cache=True, inline="always")
def flat_position() -> Position:
    """Return the flat position."""
    nan = math.nan
    return Position(0, 0.0, 0.0, 0.0, nan, nan, nan, nan, nan, 0, 0.0, 0.0, 0.0)


@nb.njit(cache=True, inline="always")
def new_account(cash: float, t: int) -> Account:
    """Return a fresh account holding ``cash`` whose protections start at time ``t``."""
    return Account(cash, 0.0, 0.0, 0, 0, 0, 0.0, 0, 0.0, new_state(cash, t))


@nb.njit(cache=True, inline="always")
def no_intent() -> Intent:
    """Return the intent that sends nothing."""
    return Intent(EXIT_NONE, 0, 0.0, math.nan, math.nan, math.nan, 0.0)


@nb.njit(cache=True, inline="always")
def no_trade() -> Trade:
    """Return the empty trade record (``reason == EXIT_NONE``)."""
    nan = math.nan
    return Trade(0, 0, 0, EXIT_NONE, 0.0, nan, nan, nan, 0.0, 0.0, 0.0)
