"""Backtest engines: ``backtrader`` (event-driven reference) and ``fast`` (numba kernel), one answer.

Both are thin loops over the one core (`bot.core`: docs/architecture.md, "Execution semantics" and
"One core") and are held to identical trades by tests/backtests/test_parity.py. In short:

* decisions at each bar close from ``target``/``stop``/``take_profit`` of that bar; orders fill at the
  next open ± slippage (enter from flat, exit when the target's sign changes, resizing ignored, flips
  close then open); ``|target| > 1`` or a NaN target is a contract error;
* sizing at the decision with the close as expected entry, scaled by ``|target|`` and by the risk
  state (REDUCING: ``reduce_size_factor``);
* each position is isolated with leverage ``min(risk.max_leverage, bracket max)``; its liquidation
  price follows docs/methods.md §D.1 and is recomputed after every funding payment, which is taken from
  (or added to) its margin, and the stop is re-clamped to it (§B.3, §D.3.4, §D.3.5). A liquidation
  price inside the entry bar's mark range liquidates; a liquidation loses the margin: it is booked at
  the bankruptcy price without exit fee (§D.3.2, §D.3.3);
* funding at bars with a ``funding_rate`` (settled at the bar's close τ) on the position held then:
  ``cash −= side × qty × MP(τ) × rate`` with ``MP(τ)`` the next bar's mark open (the last bar: its mark
  close; last prices without mark data);
* protections are evaluated at each close on the mark-to-market equity (`bot.risk.protections`);
  locks are durations, a bar's close is stamped with its open time; HALTED flattens an open position
  at the next open (exit reason ``"protection"``) and refuses entries;
* costs (taker fee, slippage) are the market's, from ``[costs]`` (`bot.config.CostsConfig`); slippage
  is never clipped to the bar's range;
* at the end of data an open position is closed at the last close (market, slipped, with fee) after
  that bar's funding; the last equity row is then the final equity, flat.

Example:

    >>> result = run_backtest(frame, signals, cfg.backtest, cfg.risk, engine="fast", costs=cfg.costs)  # doctest: +SKIP
    >>> result.trades[["entry_time", "side", "qty", "pnl", "exit_reason"]]  # doctest: +SKIP
"""

from __future__ import annotations

from functools import cached_property

import pandas as pd

from backtests.engines.common import (
    EQUITY_COLUMNS,
    TRADE_COLUMNS,
    ContractError,
    RawRun,
    equity_frame,
    prepare,
    trades_frame,
)
from bot.config import BacktestConfig, CostsConfig, MarketCosts, RiskConfig
from bot.risk.brackets import Brackets

__all__ = ["ENGINES", "EQUITY_COLUMNS", "TRADE_COLUMNS", "BacktestResult", "ContractError", "compile_fast_engine",
           "run_backtest"]

ENGINES = ("backtrader", "fast")


class BacktestResult:
    """A finished backtest. The tables are built from the engine's raw arrays on first access, so
    an optimisation trial that reads only ``final_equity`` never pays for them.

    Attributes:
        trades: one row per closed trade: ``entry_time exit_time entry_bar exit_bar side (+1/−1) qty
            entry_price exit_price stop (at entry) exit_reason (signal, stop, take_profit,
            liquidation, end, protection) pnl (net of fees, with funding) fees funding``.
            ``pnl = side·qty·(exit_price − entry_price) − fees + funding`` for every trade.
        equity: per bar (index = bar open time): ``equity`` (mark-to-market at the close), ``cash``,
            ``position`` (signed qty), ``funding_pnl`` and ``fees`` (cumulative), ``risk_state``.
        final_equity: cash after the end-of-data close.
        initial_cash: starting wallet balance.
        n_liquidations: positions liquidated.
        engine: ``"backtrader"`` or ``"fast"``.
        costs: the market costs the run used (`bot.config.MarketCosts`).
    """

    def __init__(self, raw: RawRun, index: pd.DatetimeIndex, initial_cash: float, engine: str,
                 costs: MarketCosts | None = None) -> None:
        self.raw = raw
        self.costs = costs
        self.index = index
        self.final_equity = raw.final_equity
        self.initial_cash = initial_cash
        self.n_liquidations = raw.n_liquidations
        self.engine = engine

    @cached_property
    def trades(self) -> pd.DataFrame:
        return trades_frame(self.index, self.raw.trade_int, self.raw.trade_float)

    @cached_property
    def equity(self) -> pd.DataFrame:
        return equity_frame(self.index, self.raw)

    def __repr__(self) -> str:
        return (f"BacktestResult(engine={self.engine!r}, trades={len(self.raw.trade_int)}, "
                f"final_equity={self.final_equity:.2f}, liquidations={self.n_liquidations})")


def run_backtest(frame: pd.DataFrame, signals: pd.DataFrame, backtest: BacktestConfig, risk: RiskConfig,
                 engine: str | None = None, symbol: str | None = None,
                 costs: MarketCosts | CostsConfig | None = None, brackets: Brackets | None = None) -> BacktestResult:
    """Run ``signals`` over ``frame`` on ``engine`` (default ``backtest.engine``).

    Args:
        frame: the frame contract (UTC bar-open index; open high low close, optional mark_*,
            funding_rate).
        signals: ``target`` (and optional ``stop``, ``take_profit``) on ``frame.index``.
        backtest: initial cash (and the default engine).
        risk: sizing, stops, leverage and protections.
        engine: ``"backtrader"`` or ``"fast"``.
        symbol: unified symbol for the leverage brackets and the costs (default
            ``frame.attrs["symbol"]``, else BTC/USDT:USDT).
        costs: the market's costs, or a ``[costs]`` config to look ``symbol`` up in; None = the
            built-in ``[costs]`` defaults for ``symbol``.
        brackets: the leverage brackets; None = ``bot.risk.brackets.brackets_for(symbol)``.

    Raises:
        ValueError: unknown engine, or inputs that break the frame/strategy contracts (e.g. a
            target outside [-1, 1]).
    """
    name = backtest.engine if engine is None else engine
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
    prepared = prepare(frame, signals, backtest, risk, symbol, costs, brackets)
    if name == "fast":
        from backtests.engines.compiled import run_raw
    else:
        from backtests.engines.backtrader_engine import run_raw
    return BacktestResult(run_raw(prepared), prepared.index, prepared.initial_cash, name, prepared.costs)


def compile_fast_engine() -> float:
    """Compile (or load from numba's cache) the fast kernel; return the seconds it took."""
    from backtests.engines.fast import warm_up

    return warm_up()
