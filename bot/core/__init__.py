"""The one trading core: the position and account state machine every engine and broker calls.

docs/architecture.md, "One core": the rules exist once, as pure numba functions over typed state
(`bot.core.state`), callable from the fast engine's kernel and, one bar at a time, from plain
Python (the backtrader engine, the paper broker, the live runner, the replay exchange's matching).
`bot.risk` holds the scalar rules they compose (sizing, stops, brackets, liquidation prices,
protections, fill prices).

Per bar: ``bar_open`` then ``bar_close`` (`bot.core.step`; from a Python loop, `Stepper` calls them
with the fast argument form); or the pieces: `open_position`,
`intrabar_exit`, `settle_funding`, `close_position`, `update_state`, `decide`, `end_price`.

The core's functions are compiled with ``inline="always"``: numba then builds them into the fast
kernel's loop, where the state stays in registers (as out-of-line calls they cost ~10x per bar).
Brackets travel as a `BracketTable` of float tuples for the same reason. numba's on-disk cache keys a
compiled function on its own file only: after editing `bot/core` or `bot/risk`, delete the stale
``__pycache__/*.nbi``/``*.nbc`` files of the callers (e.g. ``backtests/engines``).

>>> from bot.config import MarketCosts, RiskConfig
>>> from bot.risk.brackets import load_brackets
>>> p = risk_params(RiskConfig(sizing="fixed_fraction", fixed_fraction=1.0, max_leverage=10.0),
...                 MarketCosts(taker_fee=0.0, slippage_bps=0.0))
>>> br = load_brackets("BTC/USDT:USDT").table
>>> pos, acct = flat_position(), new_account(10_000.0, 0)
>>> bar = make_bar(0, 100_000.0, 100_000.0, 100_000.0, 100_000.0)
>>> pos, acct, end, equity, state, intent = bar_close(p, br, pos, acct, 0, bar, False, make_signal(1.0))
>>> intent.side, round(intent.qty, 6)
(1, 0.1)
>>> bar = make_bar(3_600, 100_000.0, 100_500.0, 90_300.0, 90_500.0)
>>> pos, acct, exit_at_open, entered, intrabar = bar_open(p, br, pos, acct, intent, 1, bar)
>>> int(intrabar.reason) == EXIT_LIQUIDATION, round(intrabar.pnl, 2)  # LP 90,361.45, on the entry bar
(True, -1000.0)
"""

from __future__ import annotations

from bot.core.book import close_position, end_price, mark_equity, open_position, settle_funding, taker_fee
from bot.core.decide import decide, next_stop
from bot.core.loop import Stepper
from bot.core.state import (
    Account,
    Bar,
    Intent,
    Position,
    Signal,
    Trade,
    flat_position,
    make_bar,
    make_signal,
    new_account,
    no_intent,
    no_trade,
)
from bot.core.step import bar_close, bar_open
from bot.risk.brackets import BracketTable
from bot.risk.execution import (
    EXIT_END,
    EXIT_LIQUIDATION,
    EXIT_NONE,
    EXIT_PROTECTION,
    EXIT_REASONS,
    EXIT_SIGNAL,
    EXIT_STOP,
    EXIT_TAKE_PROFIT,
    intrabar_exit,
    market_fill,
)
from bot.risk.params import RiskParams, risk_params
from bot.risk.protections import ACTIVE, HALTED, REDUCING, STATE_NAMES, update_state

__all__ = [
    "ACTIVE", "EXIT_END", "EXIT_LIQUIDATION", "EXIT_NONE", "EXIT_PROTECTION", "EXIT_REASONS", "EXIT_SIGNAL",
    "EXIT_STOP", "EXIT_TAKE_PROFIT", "HALTED", "REDUCING", "STATE_NAMES",
    "Account", "Bar", "BracketTable", "Intent", "Position", "RiskParams", "Signal", "Stepper", "Trade",
    "bar_close", "bar_open", "close_position", "decide", "end_price", "flat_position", "intrabar_exit",
    "make_bar", "make_signal", "mark_equity", "market_fill", "new_account", "next_stop", "no_intent", "no_trade",
    "open_position", "risk_params", "settle_funding", "taker_fee", "update_state",
]
