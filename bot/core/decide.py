"""The decision at a bar close: position, account, risk state and the bar's signal → order intents.

In this order (docs/architecture.md, "Execution semantics"):

1. the held position's stop for the next bar: ``trailing_atr`` trails (only tightens); in ``strategy``
   mode a tighter signal stop on the held side is adopted, a looser one ignored;
2. the target rule (`bot.risk.execution.target_action`): close when the target's sign differs from
   the position's side, open from flat (or on a flip) on the target's side, no same-side re-entry
   after a forced exit until the target's sign changes (a change seen while HALTED counts); resizing
   a held position is ignored;
3. HALTED instead: flatten an open position at the next open (exit reason ``protection``), no entry;
4. an entry is sized at the close as the expected entry price (`bot.risk.sizing.entry_quantity`:
   ``|target|``, the stop distance of the stop mode, the leverage and bracket caps), then scaled by
   the risk state (REDUCING: ``reduce_size_factor``). Its take-profit is kept only on the profitable
   side of the close. With ``risk.stop`` other than ``strategy`` the risk stop replaces the signal's.
"""

from __future__ import annotations

import math

import numba as nb

from bot.core.state import Account, Intent, Position, Signal
from bot.risk.brackets import BracketTable
from bot.risk.execution import EXIT_NONE, EXIT_PROTECTION, EXIT_SIGNAL, target_action, target_side
from bot.risk.params import STOP_STRATEGY, STOP_TRAILING_ATR, RiskParams
from bot.risk.protections import HALTED, entry_scale
from bot.risk.sizing import entry_quantity
from bot.risk.stops import stop_distance, tighter, trail_stop


@nb.njit(cache=True, inline="always")
def next_stop(p: RiskParams, pos: Position, close: float, sig: Signal) -> Position:
    """Return ``pos`` with its stop for the next bar (trailed or tightened; see the module docstring)."""
    if pos.side == 0:
        return pos
    stop = pos.stop
    if p.stop_mode == STOP_TRAILING_ATR:
        stop = trail_stop(stop, close, pos.side, sig.atr, p.atr_mult)
    elif p.stop_mode == STOP_STRATEGY and target_side(sig.target) == pos.side and pos.side * (close - sig.stop) > 0.0:
        stop = tighter(stop, sig.stop, pos.side)
    if stop == pos.stop or (math.isnan(stop) and math.isnan(pos.stop)):
        return pos
    return Position(pos.side, pos.qty, pos.entry, pos.margin, pos.liq_price, pos.bankruptcy_price, stop, pos.stop0,
                    pos.take_profit, pos.entry_bar, pos.entry_fee, pos.funding, pos.entry_equity)


@nb.njit(cache=True, inline="always")
def decide(p: RiskParams, br: BracketTable, pos: Position, acct: Account, state: int, equity: float,
           close: float, sig: Signal) -> tuple[Position, Account, Intent]:
    """Return (position with its next stop, account, the intent for the next open) at a bar close.

    ``state`` is the risk state of this close and ``equity`` its mark-to-market equity.
    """
    pos = next_stop(p, pos, close, sig)
    close_now, enter, blocked = target_action(pos.side, sig.target, acct.blocked)
    if blocked != acct.blocked:  # a target change while HALTED re-arms the side too
        acct = Account(acct.cash, acct.fees, acct.funding, acct.n_liquidations, blocked, acct.n_win, acct.sum_win,
                       acct.n_loss, acct.sum_loss, acct.protection)
    if state == HALTED:
        exit_ = EXIT_PROTECTION if pos.side != 0 else EXIT_NONE
        return pos, acct, Intent(exit_, 0, 0.0, math.nan, math.nan, math.nan, equity)
    exit_ = EXIT_SIGNAL if close_now else EXIT_NONE
    qty = 0.0
    dist = math.nan
    if enter != 0:
        dist = stop_distance(p.stop_mode, close, enter, sig.stop, sig.atr, p.stop_pct, p.atr_mult)
        qty = entry_quantity(p, enter, abs(sig.target), equity, close, close - enter * dist, sig.volatility,
                             acct.n_win, acct.sum_win, acct.n_loss, acct.sum_loss, br.floor, br.cap,
                             br.max_leverage) * entry_scale(state, p)
    if not qty > 0.0:
        return pos, acct, Intent(exit_, 0, 0.0, math.nan, math.nan, math.nan, equity)
    tp = sig.take_profit if enter * (sig.take_profit - close) > 0.0 else math.nan
    return pos, acct, Intent(exit_, enter, qty, dist, sig.stop, tp, equity)
