"""Booking: open a position, settle funding on it, close it (docs/architecture.md, "Execution semantics").

* `open_position` — a market entry filled at ``price``: taker fee on the notional; the isolated margin
  ``WB = notional / L`` with ``L = min(max_leverage, bracket max)`` (docs/methods.md §D.3.7); the
  liquidation price (§D.1, brackets re-selected at LP) and the bankruptcy price; the stop (from the
  strategy or the risk stop mode) pulled inside ``LP ± buffer·|EP − LP|`` (§D.3.4).
* `settle_funding` — at a settlement τ on the position held then: ``flow = −side·qty·MP(τ)·rate``
  is added to the cash and to the isolated margin, LP and BP are recomputed, and the stop is
  re-clamped to the new LP (§B.3, §D.3.4, §D.3.5).
* `close_position` — books an exit: taker fee (none for a liquidation, which is booked at the
  bankruptcy price: the whole margin is lost, §D.3.3), the trade's PnL, the Kelly counters, the
  protections' stop-out count (stops and liquidations) and the re-entry block after a forced exit.
"""

from __future__ import annotations

import math

import numba as nb

from bot.core.state import Account, Intent, Position, Trade
from bot.risk.brackets import BracketTable
from bot.risk.execution import EXIT_LIQUIDATION, EXIT_STOP, forced_exit, market_fill
from bot.risk.liquidation import bankruptcy_price, isolated_margin, liquidation_price
from bot.risk.params import RiskParams
from bot.risk.protections import record_exit
from bot.risk.stops import clamp_to_liquidation, entry_stop


@nb.njit(cache=True, inline="always")
def taker_fee(p: RiskParams, qty: float, price: float) -> float:
    """Return the taker fee of a fill of ``qty`` at ``price`` (on notional, docs/methods.md §D.3.6)."""
    return qty * price * p.taker_fee


@nb.njit(cache=True, inline="always")
def funding_flow(side: int, qty: float, mark: float, rate: float) -> float:
    """Return the cash a position of ``side`` and ``qty`` receives at a funding settlement:
    ``−side · qty · mark · rate`` (longs pay a positive rate, docs/methods.md §B.3)."""
    return -side * qty * mark * rate


@nb.njit(cache=True, inline="always")
def open_position(p: RiskParams, br: BracketTable, acct: Account, intent: Intent, bar: int,
                  price: float) -> tuple[Position, Account]:
    """Open ``intent``'s position filled at ``price`` in bar ``bar``; return (position, account)."""
    side = intent.side
    qty = intent.qty
    fee = taker_fee(p, qty, price)
    margin = isolated_margin(qty * price, p.max_leverage, br.cap, br.max_leverage)
    lp = liquidation_price(side, qty, price, margin, br.cap, br.mmr, br.cum)
    bp = bankruptcy_price(side, qty, price, margin)
    stop = entry_stop(p.stop_mode, price, side, intent.signal_stop, intent.stop_distance)
    stop = clamp_to_liquidation(stop, lp, price, side, p.liquidation_buffer)
    pos = Position(side, qty, price, margin, lp, bp, stop, stop, intent.take_profit, bar, fee, 0.0, intent.equity)
    acct = Account(acct.cash - fee, acct.fees + fee, acct.funding, acct.n_liquidations, acct.blocked,
                   acct.n_win, acct.sum_win, acct.n_loss, acct.sum_loss, acct.protection)
    return pos, acct


@nb.njit(cache=True, inline="always")
def settle_funding(p: RiskParams, br: BracketTable, pos: Position, acct: Account, rate: float,
                   mark: float) -> tuple[Position, Account]:
    """Settle a funding ``rate`` at mark price ``mark`` on ``pos`` (nothing when flat or ``rate`` is NaN)."""
    if pos.side == 0 or math.isnan(rate):
        return pos, acct
    side = pos.side
    flow = funding_flow(side, pos.qty, mark, rate)
    margin = pos.margin + flow
    lp = liquidation_price(side, pos.qty, pos.entry, margin, br.cap, br.mmr, br.cum)
    bp = bankruptcy_price(side, pos.qty, pos.entry, margin)
    stop = clamp_to_liquidation(pos.stop, lp, pos.entry, side, p.liquidation_buffer)
    pos = Position(side, pos.qty, pos.entry, margin, lp, bp, stop, pos.stop0, pos.take_profit, pos.entry_bar,
                   pos.entry_fee, pos.funding + flow, pos.entry_equity)
    acct = Account(acct.cash + flow, acct.fees, acct.funding + flow, acct.n_liquidations, acct.blocked,
                   acct.n_win, acct.sum_win, acct.n_loss, acct.sum_loss, acct.protection)
    return pos, acct


@nb.njit(cache=True, inline="always")
def close_position(p: RiskParams, pos: Position, acct: Account, bar: int, t: int, reason: int,
                   price: float) -> tuple[Account, Trade]:
    """Book the exit of ``pos`` for ``reason`` at ``price`` in bar ``bar`` (time ``t``); return (account, trade).

    A liquidation ignores ``price``: it is booked at the bankruptcy price without exit fee. The
    caller's position is flat afterwards.
    """
    liquidated = reason == EXIT_LIQUIDATION
    if liquidated:
        price = pos.bankruptcy_price
    fee = 0.0 if liquidated else taker_fee(p, pos.qty, price)
    price_pnl = pos.side * pos.qty * (price - pos.entry)
    pnl = price_pnl - pos.entry_fee - fee + pos.funding
    trade = Trade(pos.entry_bar, bar, pos.side, reason, pos.qty, pos.entry, price, pos.stop0, pnl,
                  pos.entry_fee + fee, pos.funding)
    n_win, sum_win, n_loss, sum_loss = acct.n_win, acct.sum_win, acct.n_loss, acct.sum_loss
    r = pnl / pos.entry_equity if pos.entry_equity > 0.0 else 0.0
    if r > 0.0:
        n_win += 1
        sum_win += r
    elif r < 0.0:
        n_loss += 1
        sum_loss -= r
    protection = record_exit(acct.protection, reason == EXIT_STOP or liquidated, t, p)
    blocked = pos.side if forced_exit(reason) else acct.blocked
    acct = Account(acct.cash + price_pnl - fee, acct.fees + fee, acct.funding, acct.n_liquidations + (1 if liquidated else 0),
                   blocked, n_win, sum_win, n_loss, sum_loss, protection)
    return acct, trade


@nb.njit(cache=True, inline="always")
def end_price(p: RiskParams, pos: Position, close: float) -> float:
    """Return the fill of the end-of-data close: a market order at the last close."""
    return market_fill(-pos.side, close, p.slippage)


@nb.njit(cache=True, inline="always")
def mark_equity(pos: Position, acct: Account, close: float) -> float:
    """Return the mark-to-market equity at ``close`` (last price): cash plus the open PnL."""
    if pos.side == 0:
        return acct.cash
    return acct.cash + pos.side * pos.qty * (close - pos.entry)
