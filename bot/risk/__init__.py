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

import importlib
from typing import Any

_HOMES = {
    "Brackets": "brackets", "brackets_for": "brackets", "load_brackets": "brackets",
    "bankruptcy_price": "liquidation", "isolated_liquidation_price": "liquidation", "liquidation_price": "liquidation",
    "RiskParams": "params", "risk_params": "params",
    "ACTIVE": "codes", "HALTED": "codes", "REDUCING": "codes", "TradingState": "codes", "allows": "protections",
    "entry_quantity": "sizing", "fixed_fraction_size": "sizing", "risk_size": "sizing",
    "average_true_range": "stops", "trail_stop": "stops",
}


def __getattr__(name: str) -> Any:
    # resolved on first use: importing `bot.risk.brackets` or `bot.risk.codes` must not load numba
    if name in _HOMES:
        return getattr(importlib.import_module(f"bot.risk.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'bot.risk' has no attribute '{name}'")


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
