"""The replay exchange's one door into the shared trading rules (``bot.risk``).

Every number the matching engine books — fill price, fee, isolated margin, liquidation and
bankruptcy price, maintenance margin, funding payment, the intrabar order of stop / take profit /
liquidation — comes from a function here, and each of these calls the backtest's own function
(docs/architecture.md, "One core"). When the rules move into ``bot/core`` only this module changes.

Two rules have no public function in ``bot.risk`` yet: the taker fee (``qty · price · fee_rate``,
as the engines' kernels book it) and the funding payment (``−side · qty · mark · rate``,
architecture.md "Execution semantics"). They are written once, here, with those exact forms, for
the lead to point at the core's functions after the merge.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import MarketCosts, RiskConfig
from bot.risk.brackets import Brackets, bracket_index, brackets_for
from bot.risk.execution import (
    EXIT_LIQUIDATION,
    EXIT_NONE,
    EXIT_STOP,
    EXIT_TAKE_PROFIT,
    intrabar_exit,
    market_fill,
    take_profit_fill,
)
from bot.risk.liquidation import bankruptcy_price, isolated_margin, liquidation_price
from bot.risk.params import risk_params

EXITS = {EXIT_NONE: None, EXIT_STOP: "stop", EXIT_TAKE_PROFIT: "take_profit", EXIT_LIQUIDATION: "liquidation"}


@dataclass(frozen=True)
class Costs:
    """Taker fee and slippage as fractions (the backtest's ``[backtest] taker_fee, slippage_bps``)."""

    taker_fee: float
    slippage: float

    @classmethod
    def from_config(cls, taker_fee: float, slippage_bps: float) -> Costs:
        """The same conversion the backtest engines use (``bot.risk.params.pack_params``)."""
        p = risk_params(RiskConfig(), MarketCosts(taker_fee=taker_fee, slippage_bps=slippage_bps))
        return cls(float(p.taker_fee), float(p.slippage))


def brackets(symbol: str) -> Brackets:
    """The leverage brackets of ``symbol`` (methods.md §D.2), BTCUSDT's when none are stored."""
    return brackets_for(symbol)


def market_price(side: int, price: float, high: float, low: float, costs: Costs) -> float:
    """Fill of a market order of ``side`` (+1 buy) at ``price``, slipped and bounded by the bar."""
    return float(market_fill(int(side), float(price), costs.slippage))


def take_profit_price(position_side: int, tp: float, open_: float, high: float, low: float, costs: Costs) -> float:
    """Fill of the take profit closing a position of ``position_side`` (gap: slipped open, never worse)."""
    return float(take_profit_fill(int(position_side), float(tp), float(open_), costs.slippage))


def intrabar(side: int, bar: tuple[float, float, float], mark: tuple[float, float, float], stop: float,
             take_profit: float, lp: float, costs: Costs) -> tuple[str | None, float]:
    """``(exit or None, fill price)`` of a position in one bar: ``bar``/``mark`` are (open, high, low).

    The §D.3.2 order of bot.risk.execution.intrabar_exit; a liquidation's price is NaN (book it at
    the bankruptcy price).
    """
    code, price = intrabar_exit(int(side), bar[0], bar[1], bar[2], mark[0], mark[1], mark[2],
                                float(stop), float(take_profit), float(lp), costs.slippage)
    return EXITS[int(code)], float(price)


def taker_fee(qty: float, price: float, costs: Costs) -> float:
    """Fee of a taker fill: ``qty · price · fee_rate`` (module docstring)."""
    return qty * price * costs.taker_fee


def funding_payment(side: int, qty: float, mark: float, rate: float) -> float:
    """Cash flow of a funding settlement to the position: ``−side · qty · mark · rate``."""
    return -side * qty * mark * rate


def initial_margin(notional: float, leverage: float, b: Brackets) -> float:
    """Isolated margin posted for a new position at the ``leverage`` setting (bracket-capped)."""
    return float(isolated_margin(float(notional), float(leverage), b.cap, b.max_leverage))


def max_leverage(notional: float, b: Brackets) -> float:
    """The largest leverage the bracket of ``notional`` allows."""
    return b.max_leverage_at(notional)


def liq_price(side: int, qty: float, entry: float, wallet: float, b: Brackets) -> float:
    """Isolated liquidation price (methods.md §D.1, bracket re-selection)."""
    return float(liquidation_price(int(side), float(qty), float(entry), float(wallet), b.cap, b.mmr, b.cum))


def bankruptcy(side: int, qty: float, entry: float, wallet: float) -> float:
    """Price at which the isolated margin is gone (§D.1)."""
    return float(bankruptcy_price(int(side), float(qty), float(entry), float(wallet)))


def maintenance(notional: float, b: Brackets) -> tuple[float, float]:
    """``(maintenance margin, rate)`` of ``notional``: ``notional · mmr − cum`` of its bracket (§D.1)."""
    i = int(bracket_index(float(notional), b.cap))
    return float(notional * b.mmr[i] - b.cum[i]), float(b.mmr[i])
