"""The replay exchange's one door into the shared trading rules (``bot.core``, ``bot.risk``).

Every number the matching engine books — fill price, fee, isolated margin, liquidation and
bankruptcy price, maintenance margin, funding payment, the intrabar order of stop / take profit /
liquidation — comes from a function here, and each of these calls the backtest's own function
(docs/architecture.md, "One core"): slipped fills never clipped to the bar's range, the entry-bar
liquidation rule, funding at the mark price at the settlement time τ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.config import MarketCosts, RiskConfig
from bot.core.book import funding_flow
from bot.core.book import taker_fee as core_taker_fee
from bot.risk.brackets import Brackets, brackets_for
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
from bot.risk.params import RiskParams, risk_params
from bot.risk.tiers import bracket_index

EXITS = {EXIT_NONE: None, EXIT_STOP: "stop", EXIT_TAKE_PROFIT: "take_profit", EXIT_LIQUIDATION: "liquidation"}


@dataclass(frozen=True)
class Costs:
    """One market's taker fee and slippage as the core reads them (``[costs]``, fractions)."""

    params: RiskParams

    @property
    def taker_fee(self) -> float:
        return self.params.taker_fee

    @property
    def slippage(self) -> float:
        return self.params.slippage

    @classmethod
    def from_config(cls, taker_fee: float, slippage_bps: float) -> Costs:
        """From the config's units (a fee fraction, slippage in basis points), converted by the one
        conversion every engine uses (``bot.risk.params.risk_params``)."""
        return cls(risk_params(RiskConfig(), MarketCosts(taker_fee=taker_fee, slippage_bps=slippage_bps)))


# one market's costs by unified symbol ([costs] is per market)
CostsFor = Callable[[str], Costs]


def brackets(symbol: str) -> Brackets:
    """The leverage brackets of ``symbol`` (docs/methods.md §D.2), BTCUSDT's when none are stored."""
    return brackets_for(symbol)


def market_price(side: int, price: float, high: float, low: float, costs: Costs) -> float:
    """Fill of a market order of ``side`` (+1 buy) at ``price``, slipped (a cost: not bounded by the
    bar's ``high``/``low``, which are accepted for the callers' convenience)."""
    return float(market_fill(int(side), float(price), costs.slippage))


def take_profit_price(position_side: int, tp: float, open_: float, high: float, low: float, costs: Costs) -> float:
    """Fill of the take profit closing a position of ``position_side`` (gap: slipped open, never worse)."""
    return float(take_profit_fill(int(position_side), float(tp), float(open_), costs.slippage))


def intrabar(side: int, bar: tuple[float, float, float], mark: tuple[float, float, float], stop: float,
             take_profit: float, lp: float, costs: Costs, entry_bar: bool = False) -> tuple[str | None, float]:
    """``(exit or None, fill price)`` of a position in one bar: ``bar``/``mark`` are (open, high, low).

    The §D.3.2 order of bot.risk.execution.intrabar_exit (``entry_bar``: the position was opened in
    this bar, for the core's entry-bar liquidation rule); a liquidation's price is NaN (book it at
    the bankruptcy price).
    """
    args = (int(side), bar[0], bar[1], bar[2], mark[0], mark[1], mark[2], float(stop), float(take_profit),
            float(lp), costs.slippage)
    code, price = intrabar_exit(*args, bool(entry_bar))
    return EXITS[int(code)], float(price)


def taker_fee(qty: float, price: float, costs: Costs) -> float:
    """Fee of a taker fill (the core's ``taker_fee``: on notional)."""
    return float(core_taker_fee(costs.params, float(qty), float(price)))


def funding_mark(mark_close: float, next_mark_open: float) -> float:
    """The mark price a settlement at a bar's close is charged at: the mark at τ, i.e. the next mark
    kline's open (the settling bar's mark close when there is none), as the core's ``Bar.funding_mark``."""
    return next_mark_open if next_mark_open == next_mark_open else mark_close  # NaN check


def funding_payment(side: int, qty: float, mark: float, rate: float) -> float:
    """Cash flow of a funding settlement to the position (the core's ``funding_flow``)."""
    return float(funding_flow(int(side), float(qty), float(mark), float(rate)))


def initial_margin(notional: float, leverage: float, b: Brackets) -> float:
    """Isolated margin posted for a new position at the ``leverage`` setting (bracket-capped)."""
    return float(isolated_margin(float(notional), float(leverage), b.cap, b.max_leverage))


def max_leverage(notional: float, b: Brackets) -> float:
    """The largest leverage the bracket of ``notional`` allows."""
    return b.max_leverage_at(notional)


def liq_price(side: int, qty: float, entry: float, wallet: float, b: Brackets) -> float:
    """Isolated liquidation price (docs/methods.md §D.1, bracket re-selection)."""
    return float(liquidation_price(int(side), float(qty), float(entry), float(wallet), b.cap, b.mmr, b.cum))


def bankruptcy(side: int, qty: float, entry: float, wallet: float) -> float:
    """Price at which the isolated margin is gone (§D.1)."""
    return float(bankruptcy_price(int(side), float(qty), float(entry), float(wallet)))


def maintenance(notional: float, b: Brackets) -> tuple[float, float]:
    """``(maintenance margin, rate)`` of ``notional``: ``notional · mmr − cum`` of its bracket (§D.1)."""
    i = int(bracket_index(float(notional), b.cap))
    return float(notional * b.mmr[i] - b.cum[i]), float(b.mmr[i])
