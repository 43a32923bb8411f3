"""Performance statistics of a backtest, for 24/7 markets (a year is 365 days).

`compute_stats` is pure: it reads a `BacktestResult` and returns a flat dict of JSON-friendly
scalars. Conventions, fixed here so every report and objective agrees:

* **Returns for Sharpe/Sortino** are *daily* simple returns of the mark-to-market equity: the
  equity at the last bar close of each UTC day, with ``initial_cash`` as the value before the
  first day. They are annualised with ``sqrt(365)``. Daily sampling avoids the intraday
  autocorrelation that inflates per-bar Sharpe on 5m bars, and makes figures comparable across
  timeframes. For timeframes of a day or longer, per-bar returns are used with
  ``365 days / timeframe`` periods a year.
* **Sharpe** = mean / std (ddof=1) x sqrt(periods per year), risk-free rate 0.
  **Sortino** = mean x periods / (sqrt(mean(min(r, 0)^2)) x sqrt(periods)): the downside
  deviation is taken over *all* periods (zeros for up periods), the usual quantstats/vectorbt
  definition.
* **Drawdowns** come from per-bar equity, with ``initial_cash`` as the first peak, and are
  reported as *positive* fractions (``0.25`` = 25 % below the peak), like ``risk.max_drawdown``.
  ``max_drawdown_duration_days`` is the time from the peak before the deepest trough until the
  equity first regains that peak (or the end of the test if it never does);
  ``longest_drawdown_days`` is the longest such underwater spell of any depth.
* **Undefined** values (no trades, fewer than two return periods) are NaN; a profit factor
  without losing trades is ``inf``. Serialise with `json_safe`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bot.timeframes import timeframe_to_timedelta

if TYPE_CHECKING:
    from backtests.engines import BacktestResult

YEAR = pd.Timedelta(days=365)
DAY = pd.Timedelta(days=1)


# -- Return series and ratios -------------------------------------------------------------


def period_returns(equity: pd.Series, initial_cash: float, timeframe: str) -> tuple[pd.Series, float]:
    """Return the returns used for Sharpe/Sortino and how many such periods make a year.

    Daily (UTC) returns for intraday timeframes, per-bar returns otherwise; see the module
    docstring. ``equity`` is indexed by bar open time.
    """
    step = timeframe_to_timedelta(timeframe)
    if equity.empty:
        return pd.Series(dtype=float), float(YEAR / max(step, DAY))
    if step >= DAY:
        values = equity
        periods = YEAR / step
    else:
        # a bar opening on day D closes at or before D+1 00:00, so it belongs to day D
        values = equity.groupby(equity.index.floor("D")).last()
        values = values.asfreq("D").ffill()
        periods = YEAR / DAY
    prev = np.concatenate([[initial_cash], values.to_numpy(dtype=float)[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        rets = values.to_numpy(dtype=float) / prev - 1.0
    return pd.Series(rets, index=values.index, name="returns"), float(periods)


def sharpe_ratio(returns: np.ndarray | pd.Series, periods_per_year: float) -> float:
    """Annualised Sharpe ratio (risk-free 0, ddof 1); 0 for a flat series, NaN if undefined.

    >>> round(sharpe_ratio([0.01, -0.005, 0.02], 365), 4)
    12.6526
    """
    r = np.asarray(returns, dtype=float)
    r = r[np.isfinite(r)]
    if r.size < 2:
        return math.nan
    mean, std = r.mean(), r.std(ddof=1)
    if std == 0.0:
        return 0.0 if mean == 0.0 else math.nan
    return float(mean / std * math.sqrt(periods_per_year))


def sortino_ratio(returns: np.ndarray | pd.Series, periods_per_year: float) -> float:
    """Annualised Sortino ratio (target 0; downside deviation over all periods)."""
    r = np.asarray(returns, dtype=float)
    r = r[np.isfinite(r)]
    if r.size < 2:
        return math.nan
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    mean = float(r.mean())
    if downside == 0.0:
        return 0.0 if mean == 0.0 else math.inf
    return float(mean * periods_per_year / (downside * math.sqrt(periods_per_year)))


def drawdown(equity: pd.Series, initial_cash: float) -> pd.Series:
    """Per-bar drawdown as a positive fraction of the running peak (initial cash included)."""
    values = equity.to_numpy(dtype=float)
    peak = np.maximum.accumulate(np.concatenate([[initial_cash], values]))[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, 1.0 - values / peak, 0.0)
    return pd.Series(dd, index=equity.index, name="drawdown")


def _drawdown_spells(dd: np.ndarray) -> list[tuple[int, int, bool]]:
    """(first underwater bar, first recovered bar or len, recovered?) for each underwater spell."""
    n = len(dd)
    known = ~np.isnan(dd)  # a NaN bar neither starts nor ends a spell: the state before it holds
    last_known = np.maximum.accumulate(np.where(known, np.arange(n), 0)) if n else np.zeros(0, int)
    under = (dd > 0.0)[last_known] & known[last_known] if n else np.zeros(0, bool)
    edges = np.diff(np.r_[0, under.astype(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(a), int(b), bool(b < n)) for a, b in zip(starts, ends, strict=True)]


def _drawdown_durations(equity: pd.Series, dd: pd.Series, step: pd.Timedelta) -> tuple[float, float]:
    """(duration of the deepest drawdown, longest drawdown) in days.

    A spell starts at the peak: the close of the bar before the first underwater bar (the
    start of the test when the first bar is already under water). It ends at the close of the
    first bar back at the peak, or at the close of the last bar when never recovered.
    """
    values = dd.to_numpy(dtype=float)
    spells = _drawdown_spells(values)
    if not spells:
        return 0.0, 0.0
    closes = equity.index + step
    start_of_test = equity.index[0]

    def days(spell: tuple[int, int, bool]) -> float:
        first, end, recovered = spell
        peak_time = closes[first - 1] if first > 0 else start_of_test
        end_time = closes[end] if recovered else closes[-1]
        return float((end_time - peak_time) / DAY)

    deepest = max(spells, key=lambda s: values[s[0]:s[1]].max())
    return days(deepest), max(days(s) for s in spells)


# -- Trades ------------------------------------------------------------------------------


def _trade_stats(trades: pd.DataFrame) -> dict[str, float]:
    n = len(trades)
    if n == 0:
        nan = math.nan
        return {"n_trades": 0, "win_rate": nan, "profit_factor": nan, "expectancy": nan,
                "avg_win": nan, "avg_loss": nan, "best_trade": nan, "worst_trade": nan,
                "avg_hold_hours": nan, "avg_hold_bars": nan, "n_stop_exits": 0}
    pnl = trades["pnl"].to_numpy(dtype=float)
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    gross_win, gross_loss = float(wins.sum()), float(-losses.sum())
    if gross_loss > 0:
        profit_factor = gross_win / gross_loss
    else:
        profit_factor = math.inf if gross_win > 0 else math.nan
    hold = (pd.to_datetime(trades["exit_time"]) - pd.to_datetime(trades["entry_time"])) / pd.Timedelta(hours=1)
    bars = trades["exit_bar"].to_numpy(dtype=float) - trades["entry_bar"].to_numpy(dtype=float)
    return {
        "n_trades": int(n),
        "win_rate": float(len(wins) / n),
        "profit_factor": float(profit_factor),
        "expectancy": float(pnl.mean()),
        "avg_win": float(wins.mean()) if len(wins) else math.nan,
        "avg_loss": float(losses.mean()) if len(losses) else math.nan,
        "best_trade": float(pnl.max()),
        "worst_trade": float(pnl.min()),
        "avg_hold_hours": float(np.mean(hold.to_numpy(dtype=float))),
        "avg_hold_bars": float(bars.mean()),
        "n_stop_exits": int((trades["exit_reason"] == "stop").sum()),
    }


# -- The summary -------------------------------------------------------------------------


def compute_stats(result: BacktestResult, timeframe: str) -> dict[str, Any]:
    """Summarise a backtest: returns, risk-adjusted ratios, drawdowns, trades and costs.

    Args:
        result: a finished run (`backtests.engines.BacktestResult`).
        timeframe: the bar length of the frame it ran on (``"5m"``, ``"1h"``...).

    Returns:
        A flat dict: ``total_return cagr sharpe sortino calmar max_drawdown
        max_drawdown_duration_days longest_drawdown_days win_rate profit_factor expectancy
        exposure n_trades avg_hold_hours avg_hold_bars fees funding_pnl liquidations
        final_equity`` and a few descriptive extras. Fractions are plain (0.1 = 10 %),
        money is in the quote currency.
    """
    step = timeframe_to_timedelta(timeframe)
    initial = float(result.initial_cash)
    final = float(result.final_equity)
    eq_frame = result.equity
    equity = eq_frame["equity"].astype(float)

    total_return = final / initial - 1.0
    span = step * len(equity)
    years = span / YEAR if len(equity) else 0.0
    if years <= 0:
        cagr = math.nan
    elif final <= 0:
        cagr = -1.0
    else:
        cagr = (final / initial) ** (1.0 / years) - 1.0

    rets, periods = period_returns(equity, initial, timeframe)
    dd = drawdown(equity, initial)
    max_dd = float(dd.max()) if len(dd) else 0.0
    dd_days, longest_days = _drawdown_durations(equity, dd, step) if len(dd) else (0.0, 0.0)
    calmar = cagr / max_dd if max_dd > 0 and math.isfinite(cagr) else math.nan

    if "position" in eq_frame and len(eq_frame):
        exposure = float((eq_frame["position"].to_numpy(dtype=float) != 0).mean())
    else:
        exposure = math.nan
    trades = result.trades
    fees = float(eq_frame["fees"].iloc[-1]) if "fees" in eq_frame and len(eq_frame) else float(
        trades["fees"].sum() if len(trades) else 0.0)
    if "funding_pnl" in eq_frame and len(eq_frame):
        funding = float(eq_frame["funding_pnl"].iloc[-1])
    else:
        funding = float(trades["funding"].sum() if len(trades) else 0.0)

    stats: dict[str, Any] = {
        "start": equity.index[0].isoformat() if len(equity) else None,
        "end": (equity.index[-1] + step).isoformat() if len(equity) else None,
        "timeframe": timeframe,
        "engine": getattr(result, "engine", None),
        "n_bars": int(len(equity)),
        "initial_cash": initial,
        "final_equity": final,
        "total_return": float(total_return),
        "cagr": float(cagr),
        "sharpe": sharpe_ratio(rets, periods),
        "sortino": sortino_ratio(rets, periods),
        "calmar": float(calmar),
        "max_drawdown": max_dd,
        "max_drawdown_duration_days": dd_days,
        "longest_drawdown_days": longest_days,
        "exposure": exposure,
    }
    stats.update(_trade_stats(trades))
    stats.update({
        "fees": fees,
        "funding_pnl": funding,
        "liquidations": int(result.n_liquidations),
    })
    return stats


def json_safe(value: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by ``None`` recursively; numpy scalars become Python ones."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
