"""What both engines share: input checks, derived series, and the result tables.

`prepare` turns a frame and its signal frame into plain read-only arrays once (missing mark prices
replaced by last prices; the funding mark at each settlement; ATR computed by `bot.risk` when the
stop mode uses it, realised volatility when the sizing uses it, NaN otherwise) and resolves the
market's costs and brackets, so both engines read identical numbers. `trades_frame` and
`equity_frame` turn raw per-trade and per-bar arrays into the result tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bot.config import BacktestConfig, CostsConfig, MarketCosts, RiskConfig
from bot.errors import UserError
from bot.risk.brackets import DEFAULT_SYMBOL, Brackets, brackets_for
from bot.risk.codes import EXIT_REASONS, STATE_NAMES
from bot.risk.params import RiskParams, risk_params

if TYPE_CHECKING:  # this module imports no numba: the precompiled fast kernel runs without it
    from bot.core.state import Trade

TRADE_COLUMNS = ["entry_time", "exit_time", "entry_bar", "exit_bar", "side", "qty", "entry_price",
                 "exit_price", "stop", "exit_reason", "pnl", "fees", "funding"]
EQUITY_COLUMNS = ["equity", "cash", "position", "funding_pnl", "fees", "risk_state"]

# integer / float columns of the raw trade arrays the engines fill
TI_ENTRY_BAR, TI_EXIT_BAR, TI_SIDE, TI_REASON = range(4)
TF_QTY, TF_ENTRY_PRICE, TF_EXIT_PRICE, TF_STOP, TF_PNL, TF_FEES, TF_FUNDING = range(7)

_YEAR_SECONDS = 365.0 * 86_400.0


@dataclass(frozen=True)
class Prepared:
    """The arrays every engine consumes (one row per bar)."""

    index: pd.DatetimeIndex
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    mark_open: np.ndarray
    mark_high: np.ndarray
    mark_low: np.ndarray
    mark_close: np.ndarray
    funding_rate: np.ndarray
    target: np.ndarray
    stop: np.ndarray
    take_profit: np.ndarray
    funding_mark: np.ndarray
    atr: np.ndarray
    volatility: np.ndarray
    time: np.ndarray  # bar open, int64 seconds since 1970-01-01 UTC
    params: RiskParams
    costs: MarketCosts
    brackets: Brackets
    initial_cash: float

    def __len__(self) -> int:
        return len(self.index)


class ContractError(UserError, ValueError):
    """The frame or a strategy's signals break their contract (docs/architecture.md): a ``ValueError``
    for API callers, a `UserError` (one line, exit 2) on the command line."""


def _frozen(values: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    # C-contiguous and read-only, without a copy where possible: pandas hands out read-only views,
    # and numba compiles one specialisation per array flavour, so every run passes the same kind
    out = np.ascontiguousarray(values, dtype=dtype)
    out.setflags(write=False)
    return out


def _nans(n: int) -> np.ndarray:
    return _frozen(np.full(n, np.nan))


def _series(frame: pd.DataFrame, name: str) -> np.ndarray:
    return frame[name].to_numpy(dtype=np.float64, na_value=np.nan)


def _column(frame: pd.DataFrame, name: str, fallback: np.ndarray) -> np.ndarray:
    if name not in frame.columns:
        return fallback
    values = _series(frame, name)
    return _frozen(np.where(np.isnan(values), fallback, values))


def periods_per_year(index: pd.DatetimeIndex) -> float:
    """Return how many bars of ``index``'s (median) spacing make a 365-day year."""
    if len(index) < 2:
        return 365.0
    step = float(np.median(np.diff(index.as_unit("ns").asi8))) / 1e9
    return _YEAR_SECONDS / step if step > 0 else 365.0


def resolve_costs(costs: MarketCosts | CostsConfig | None, symbol: str | None) -> MarketCosts:
    """Return the costs of ``symbol``: as given, looked up in a `CostsConfig`, or the config defaults."""
    if isinstance(costs, MarketCosts):
        return costs
    return (costs if costs is not None else CostsConfig()).for_symbol(symbol)


def funding_marks(mark_open: np.ndarray, mark_close: np.ndarray) -> np.ndarray:
    """Return the mark price at each bar's close time τ: the next bar's mark open (docs/methods.md §B.3).

    The mark kline starting at τ opens at the mark price at τ; the last bar has no next bar and uses
    its own mark close.
    """
    out = np.empty_like(mark_open)
    out[:-1] = mark_open[1:]
    out[-1] = mark_close[-1]
    return _frozen(out)


def _check_target(target: np.ndarray, index: pd.DatetimeIndex) -> None:
    bad = np.isnan(target) | (np.abs(target) > 1.0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ContractError(f"signals: target must be a number in [-1, 1] (exposure, sign = side, 0 = flat); "
                         f"found {target[i]} at {index[i]}: a strategy states exposure, not leverage "
                         "(leverage is [risk] max_leverage)")


def _series_function(name: str, brackets: Brackets):  # noqa: ANN202  (a numba function)
    """``average_true_range`` or ``realized_volatility``: precompiled if available, else numba's JIT."""
    from backtests.engines.compiled import series_function

    compiled = series_function(name, len(brackets.floor))
    if compiled is not None:
        return compiled
    if name == "average_true_range":
        from bot.risk.stops import average_true_range

        return average_true_range
    from bot.risk.sizing import realized_volatility

    return realized_volatility


def prepare(frame: pd.DataFrame, signals: pd.DataFrame, backtest: BacktestConfig, risk: RiskConfig,
            symbol: str | None = None, costs: MarketCosts | CostsConfig | None = None,
            brackets: Brackets | None = None) -> Prepared:
    """Check the inputs and return the arrays both engines run on.

    Raises `ContractError` (a ``ValueError``) with the fix when the frame or the signals break the
    contracts.
    """
    missing = [c for c in ("open", "high", "low", "close") if c not in frame.columns]
    if missing:
        raise ContractError(f"frame lacks column(s) {', '.join(missing)}; the frame contract needs open high low close")
    if len(frame) == 0:
        raise ContractError("frame is empty; select a period with bars")
    if not isinstance(frame.index, pd.DatetimeIndex) or frame.index.tz is None:
        raise ContractError("frame index must be a UTC DatetimeIndex of bar open times")
    if not frame.index.is_monotonic_increasing or frame.index.has_duplicates:
        raise ContractError("frame index must be unique and increasing")
    if "target" not in signals.columns:
        raise ContractError("signals lack the 'target' column; strategies return target, stop, take_profit")
    if not signals.index.equals(frame.index):
        raise ContractError("signals must be indexed like the frame (same bars); compute them on this frame "
                         "or slice both the same way")
    o, h, lo, c = (_frozen(_series(frame, name)) for name in ("open", "high", "low", "close"))
    if np.isnan(o + h + lo + c).any():  # one pass: a NaN anywhere survives the sum
        raise ContractError("open/high/low/close contain NaN; drop or fill those bars first")
    n = len(frame)

    def sig(name: str) -> np.ndarray:
        return _frozen(_series(signals, name)) if name in signals.columns else _nans(n)

    target = _frozen(_series(signals, "target"))
    _check_target(target, frame.index)
    funding = _frozen(_series(frame, "funding_rate")) if "funding_rate" in frame.columns else _nans(n)
    index = frame.index
    mark_open, mark_close = _column(frame, "mark_open", o), _column(frame, "mark_close", c)
    symbol = symbol if symbol is not None else frame.attrs.get("symbol", DEFAULT_SYMBOL)
    brackets = brackets_for(symbol) if brackets is None else brackets
    # ATR only for ATR stops, volatility only for volatility-target sizing (the costliest series)
    atr = (_frozen(_series_function("average_true_range", brackets)(h, lo, c, int(risk.atr_period)))
           if risk.stop in ("atr", "trailing_atr") else _nans(n))
    volatility = (_frozen(_series_function("realized_volatility", brackets)(c, int(risk.atr_period),
                                                                           periods_per_year(index)))
                  if risk.sizing == "volatility_target" else _nans(n))
    market = resolve_costs(costs, symbol)
    return Prepared(
        index=frame.index,
        open=o, high=h, low=lo, close=c,
        mark_open=mark_open,
        mark_high=_column(frame, "mark_high", h),
        mark_low=_column(frame, "mark_low", lo),
        mark_close=mark_close,
        funding_rate=funding,
        target=target,
        stop=sig("stop"),
        take_profit=sig("take_profit"),
        funding_mark=funding_marks(mark_open, mark_close),
        atr=atr,
        volatility=volatility,
        time=_frozen(index.as_unit("s").asi8, np.int64),
        params=risk_params(risk, market),
        costs=market,
        brackets=brackets,
        initial_cash=float(backtest.initial_cash),
    )


@dataclass(frozen=True)
class RawRun:
    """An engine's raw output: per-bar arrays and the filled rows of the trade arrays."""

    equity: np.ndarray
    cash: np.ndarray
    position: np.ndarray
    funding_pnl: np.ndarray
    fees: np.ndarray
    risk_state: np.ndarray
    trade_int: np.ndarray
    trade_float: np.ndarray
    final_equity: float
    n_liquidations: int


def kernel_args(prep: Prepared) -> tuple:
    """The fast kernel's positional arguments (`backtests.engines.fast.kernel`), from ``prep``."""
    return (prep.time, prep.open, prep.high, prep.low, prep.close, prep.mark_open, prep.mark_high, prep.mark_low,
            prep.funding_rate, prep.funding_mark, prep.target, prep.stop, prep.take_profit, prep.atr,
            prep.volatility, prep.params, prep.brackets.table, prep.initial_cash)


def raw_from_kernel(out: tuple) -> RawRun:
    """The `RawRun` of the fast kernel's return tuple."""
    eq, cash, pos, fund, fees, state, ti, tf, n_liq = out
    return RawRun(equity=eq, cash=cash, position=pos, funding_pnl=fund, fees=fees, risk_state=state,
                  trade_int=ti, trade_float=tf, final_equity=float(cash[-1]), n_liquidations=int(n_liq))


def trade_rows(trades: list[Trade]) -> tuple[np.ndarray, np.ndarray]:
    """Return the raw (int, float) trade arrays of a list of `Trade` records."""
    ti = np.array([t[:4] for t in trades], dtype=np.int64).reshape(len(trades), 4)
    tf = np.array([t[4:] for t in trades], dtype=np.float64).reshape(len(trades), 7)
    return ti, tf


def trades_frame(index: pd.DatetimeIndex, trade_int: np.ndarray, trade_float: np.ndarray) -> pd.DataFrame:
    """Return the trade table (`TRADE_COLUMNS`) from raw trade arrays."""
    if len(trade_int) == 0:
        out = pd.DataFrame({c: pd.Series(dtype=float) for c in TRADE_COLUMNS})
        out["entry_time"] = pd.Series(dtype=index.dtype)
        out["exit_time"] = pd.Series(dtype=index.dtype)
        for c in ("entry_bar", "exit_bar", "side"):
            out[c] = out[c].astype(np.int64)
        out["exit_reason"] = out["exit_reason"].astype(object)
        return out[TRADE_COLUMNS]
    entry_bar = trade_int[:, TI_ENTRY_BAR].astype(np.int64)
    exit_bar = trade_int[:, TI_EXIT_BAR].astype(np.int64)
    return pd.DataFrame({
        "entry_time": index[entry_bar],
        "exit_time": index[exit_bar],
        "entry_bar": entry_bar,
        "exit_bar": exit_bar,
        "side": trade_int[:, TI_SIDE].astype(np.int64),
        "qty": trade_float[:, TF_QTY],
        "entry_price": trade_float[:, TF_ENTRY_PRICE],
        "exit_price": trade_float[:, TF_EXIT_PRICE],
        "stop": trade_float[:, TF_STOP],
        "exit_reason": [EXIT_REASONS[int(r)] for r in trade_int[:, TI_REASON]],
        "pnl": trade_float[:, TF_PNL],
        "fees": trade_float[:, TF_FEES],
        "funding": trade_float[:, TF_FUNDING],
    })[TRADE_COLUMNS]


def equity_frame(index: pd.DatetimeIndex, raw: RawRun) -> pd.DataFrame:
    """Return the per-bar account table (`EQUITY_COLUMNS`) indexed by bar open time."""
    return pd.DataFrame({
        "equity": raw.equity,
        "cash": raw.cash,
        "position": raw.position,
        "funding_pnl": raw.funding_pnl,
        "fees": raw.fees,
        "risk_state": pd.Categorical.from_codes(raw.risk_state.astype(np.int64), categories=list(STATE_NAMES)),
    }, index=index)

