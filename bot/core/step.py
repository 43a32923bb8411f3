"""One bar, in the order every engine and broker follows: `bar_open` at the open, `bar_close` at the close.

`bar_open` (bar ``k``):

1. the exit decided at close ``k−1`` (signal or protection), a market order at the open;
2. the entry decided there (a flip does both), a market order at the open;
3. inside the bar: liquidation / stop / take-profit of the open position (`intrabar_exit`, with the
   entry bar's worst case: a liquidation price inside the entry bar's mark range liquidates).

`bar_close` (bar ``k``):

4. funding settles at this close (τ = the close time) on the position still held, at the mark price
   at τ (`Bar.funding_mark`: the open of the mark kline starting at τ, i.e. the next bar's mark open);
5. on the last bar: the end-of-data close at the last close;
6. the mark-to-market equity and the protections' state;
7. the decision for bar ``k+1`` (`decide`).

Each returns the new position and account and the trades booked (``Trade.reason == EXIT_NONE``: none).
"""

from __future__ import annotations

import numba as nb

from bot.core.book import close_position, end_price, mark_equity, open_position, settle_funding
from bot.core.decide import decide
from bot.core.state import Account, Bar, Intent, Position, Signal, Trade, flat_position, no_intent, no_trade
from bot.risk.brackets import BracketTable
from bot.risk.execution import EXIT_END, EXIT_NONE, intrabar_exit, market_fill
from bot.risk.params import RiskParams
from bot.risk.protections import update_state


@nb.njit(cache=True, inline="always")
def bar_open(p: RiskParams, br: BracketTable, pos: Position, acct: Account, intent: Intent, k: int,
             bar: Bar) -> tuple[Position, Account, Trade, bool, Trade]:
    """Run steps 1–3 of bar ``k``; return (position, account, exit at the open, entered, intrabar exit)."""
    exit_trade = no_trade()
    intrabar = no_trade()
    if pos.side == 0 and intent.side == 0:  # most bars: nothing held, nothing to send
        return pos, acct, exit_trade, False, intrabar
    if pos.side != 0 and intent.exit != EXIT_NONE:
        acct, exit_trade = close_position(p, pos, acct, k, bar.time, intent.exit,
                                          market_fill(-pos.side, bar.open, p.slippage))
        pos = flat_position()
    entered = intent.side != 0
    if entered:
        pos, acct = open_position(p, br, acct, intent, k, market_fill(intent.side, bar.open, p.slippage))
    if pos.side != 0:
        reason, price = intrabar_exit(pos.side, bar.open, bar.high, bar.low, bar.mark_open, bar.mark_high,
                                      bar.mark_low, pos.stop, pos.take_profit, pos.liq_price, p.slippage, entered)
        if reason != EXIT_NONE:
            acct, intrabar = close_position(p, pos, acct, k, bar.time, reason, price)
            pos = flat_position()
    return pos, acct, exit_trade, entered, intrabar


@nb.njit(cache=True, inline="always")
def bar_close(p: RiskParams, br: BracketTable, pos: Position, acct: Account, k: int, bar: Bar, last: bool,
              sig: Signal) -> tuple[Position, Account, Trade, float, int, Intent]:
    """Run steps 4–7 of bar ``k``; return (position, account, end-of-data trade, equity, risk state, intent)."""
    pos, acct = settle_funding(p, br, pos, acct, bar.funding_rate, bar.funding_mark)
    end = no_trade()
    if last and pos.side != 0:
        acct, end = close_position(p, pos, acct, k, bar.time, EXIT_END, end_price(p, pos, bar.close))
        pos = flat_position()
    equity = mark_equity(pos, acct, bar.close)
    protection, state = update_state(acct.protection, equity, bar.time, p)
    acct = Account(acct.cash, acct.fees, acct.funding, acct.n_liquidations, acct.blocked, acct.n_win, acct.sum_win,
                   acct.n_loss, acct.sum_loss, protection)
    if last:
        return pos, acct, end, equity, state, no_intent()
    pos, acct, intent = decide(p, br, pos, acct, state, equity, bar.close, sig)
    return pos, acct, end, equity, state, intent
