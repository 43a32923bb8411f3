"""Risk: sizing, stops, leverage brackets, liquidation prices, protections and fill rules.

Pure functions, no I/O except reading the bundled bracket file. The scalar cores are
``numba.njit(cache=True)``: `bot.core` composes them into the position and account state machine that
the fast engine's kernel, the backtrader engine, the paper broker and the live runner all call
(docs/architecture.md, "One core").

Modules:

* `sizing` — risk per trade, fixed fraction, volatility target, capped Kelly; leverage and bracket caps.
* `stops` — fixed %, ATR, trailing ATR (only tightens), strategy stops; ATR itself.
* `brackets` — Binance tiered brackets (docs/methods.md §D.2) and ``brackets_binance.json``.
* `liquidation` — isolated-margin liquidation and bankruptcy prices (docs/methods.md §D.1).
* `protections` — the ACTIVE / REDUCING / HALTED state machine.
* `execution` — fill prices, intrabar exit order (docs/methods.md §D.3.2), the target → order rule.
* `params` — `RiskConfig` and a market's costs as the typed `RiskParams` the numba functions take.
"""

from __future__ import annotations

from bot.risk.brackets import Brackets, brackets_for, load_brackets
from bot.risk.liquidation import bankruptcy_price, isolated_liquidation_price, liquidation_price
from bot.risk.params import RiskParams, risk_params
from bot.risk.protections import ACTIVE, HALTED, REDUCING, TradingState, allows
from bot.risk.sizing import entry_quantity, fixed_fraction_size, risk_size
from bot.risk.stops import average_true_range, trail_stop

__all__ = [
    "ACTIVE",
    "HALTED",
    "REDUCING",
    "RiskParams",
    "Brackets",
    "TradingState",
    "allows",
    "average_true_range",
    "bankruptcy_price",
    "brackets_for",
    "entry_quantity",
    "fixed_fraction_size",
    "isolated_liquidation_price",
    "liquidation_price",
    "load_brackets",
    "risk_params",
    "risk_size",
    "trail_stop",
]
