"""Per-trade and per-period figures a trader reads: pure functions over the engine's tables.

* :func:`enrich_trades` adds duration, return %, R-multiple and MAE/MFE to a trades table (and
  writes ``side`` as ``long``/``short``): the columns of ``trades.csv`` and the report's trade list.
* :func:`side_split` — long/short/all summary rows.
* :func:`monthly_returns` — a year × month table of equity returns.
* :func:`risk_state_summary` — time spent in each protection state and the last episode of each
  ("HALTED since …" when the run ends halted).

Definitions (every number can be recomputed from ``trades.csv`` and the frame):

* ``duration_hours`` = ``exit_time − entry_time``; ``bars_held`` = ``exit_bar − entry_bar``.
* ``return_pct`` = 100 × ``pnl`` / (``qty`` × ``entry_price``): the net result (fees and funding
  included, as in ``pnl``) on the position's entry notional.
* ``r_multiple`` = ``pnl`` / (``qty`` × |``entry_price`` − ``stop``|): the result in units of the
  risk taken at the recorded stop; NaN when the trade had no stop.
* ``mae_pct`` / ``mfe_pct``: the worst adverse and best favourable price excursion while the
  position was open, in % of the entry price (MAE ≤ 0 ≤ MFE). "While open" is the full high/low
  of bars ``entry_bar … exit_bar − 1`` (the entry fills at the open of ``entry_bar``) plus the
  exit price itself: the exit bar's range beyond the exit price was not held.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

TRADE_COLUMNS = ("duration_hours", "bars_held", "return_pct", "r_multiple", "mae_pct", "mfe_pct")
"""Columns :func:`enrich_trades` adds."""


def side_labels(side: pd.Series) -> pd.Series:
    """``+1``/``-1`` (or already ``long``/``short``) as ``long``/``short``."""
    if side.dtype == object or pd.api.types.is_string_dtype(side):
        text = side.astype(str).str.lower()
        if text.isin(["long", "short"]).all():
            return text
        side = pd.to_numeric(side)
    return pd.Series(np.where(side.to_numpy(dtype=float) > 0, "long", "short"), index=side.index, name="side")


def _sign(side: pd.Series) -> np.ndarray:
    return np.where(side_labels(side).to_numpy() == "long", 1.0, -1.0)


def enrich_trades(trades: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """``trades`` with ``side`` as ``long``/``short`` and the columns of :data:`TRADE_COLUMNS`.

    Args:
        trades: the engine's trades (``entry_time, exit_time, side, qty, entry_price, exit_price,
            stop, pnl`` at least; ``side`` ±1 or ``long``/``short``).
        frame: the traded frame (``high``/``low`` on the bar-open ``DatetimeIndex``) for MAE/MFE.

    Returns a new DataFrame; the input is not modified. Bar positions come from the times, so a
    frame with extra warm-up bars in front gives the same answer.
    """
    out = trades.copy()
    if len(out) == 0:
        for col in TRADE_COLUMNS:
            out[col] = pd.Series(dtype=float)
        if "side" in out:
            out["side"] = out["side"].astype(object)
        return out
    sign = _sign(out["side"])
    out["side"] = side_labels(out["side"]).to_numpy()
    entry_t = pd.DatetimeIndex(pd.to_datetime(out["entry_time"], utc=True))
    exit_t = pd.DatetimeIndex(pd.to_datetime(out["exit_time"], utc=True))
    qty = out["qty"].to_numpy(dtype=float)
    entry = out["entry_price"].to_numpy(dtype=float)
    exit_ = out["exit_price"].to_numpy(dtype=float)
    pnl = out["pnl"].to_numpy(dtype=float)
    stop = out["stop"].to_numpy(dtype=float) if "stop" in out else np.full(len(out), np.nan)

    index = pd.DatetimeIndex(frame.index)
    if index.tz is None:
        index = index.tz_localize("UTC")
    first = index.searchsorted(entry_t)
    last = index.searchsorted(exit_t)  # exclusive: the exit bar's own range is not held
    out["duration_hours"] = (exit_t - entry_t).total_seconds().to_numpy() / 3600.0
    out["bars_held"] = last - first
    notional = qty * entry
    with np.errstate(divide="ignore", invalid="ignore"):
        out["return_pct"] = np.where(notional > 0, 100.0 * pnl / notional, np.nan)
        risk = qty * np.abs(entry - stop)
        out["r_multiple"] = np.where(np.isfinite(stop) & (risk > 0), pnl / np.where(risk > 0, risk, 1.0), np.nan)

    held_high, held_low = _held_extremes(frame, first, last)
    hi = np.where(exit_ > held_high, exit_, held_high)  # the exit price counts as seen
    lo = np.where(exit_ < held_low, exit_, held_low)
    long = np.asarray(sign) > 0
    mae = np.where(long, (lo - entry) / entry, (entry - hi) / entry)
    mfe = np.where(long, (hi - entry) / entry, (entry - lo) / entry)
    out["mae_pct"] = 100.0 * np.minimum(mae, 0.0)
    out["mfe_pct"] = 100.0 * np.maximum(mfe, 0.0)
    return out


def _held_extremes(frame: pd.DataFrame, first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Highest high and lowest low of the bars ``first[i] <= j < last[i]`` (−inf/+inf when none)."""
    high = np.r_[frame["high"].to_numpy(dtype=float), -np.inf]  # a sentinel: a span may end at len(frame)
    low = np.r_[frame["low"].to_numpy(dtype=float), np.inf]
    start, stop = np.asarray(first, dtype=np.int64), np.maximum(last, first).astype(np.int64)
    held_high, held_low = np.full(len(start), -np.inf), np.full(len(start), np.inf)
    some = stop > start
    if some.any():
        bounds = np.column_stack([start[some], stop[some]]).ravel()  # reduceat over [start, stop) pairs
        held_high[some] = np.maximum.reduceat(high, bounds)[::2]
        held_low[some] = np.minimum.reduceat(low, bounds)[::2]
    return held_high, held_low


def side_split(trades: pd.DataFrame) -> pd.DataFrame:
    """One row each for ``long``, ``short`` and ``all``: trades, win rate, net PnL, average return %,
    average R (trades with a stop), average duration, fees and funding. ``trades`` is
    :func:`enrich_trades` output."""
    rows: dict[str, dict[str, Any]] = {}
    labels = side_labels(trades["side"]) if len(trades) else pd.Series(dtype=object)
    for name in ("long", "short", "all"):
        t = trades if name == "all" else trades[labels.to_numpy() == name]
        n = len(t)
        rows[name] = {
            "trades": n,
            "win_rate": float((t["pnl"] > 0).mean()) if n else float("nan"),
            "net_pnl": float(t["pnl"].sum()) if n else 0.0,
            "avg_return_pct": float(t["return_pct"].mean()) if n else float("nan"),
            "avg_r": float(t["r_multiple"].mean()) if n and t["r_multiple"].notna().any() else float("nan"),
            "avg_hours": float(t["duration_hours"].mean()) if n else float("nan"),
            "fees": float(t["fees"].sum()) if n and "fees" in t else 0.0,
            "funding": float(t["funding"].sum()) if n and "funding" in t else 0.0,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def monthly_returns(equity: pd.Series, initial_cash: float) -> pd.DataFrame:
    """Equity return of each calendar month (UTC) as a fraction: rows are years, columns 1–12 plus
    ``year`` (the compounded year). A month's return is its last equity over the previous month's
    last equity (the initial cash before the first month), minus one."""
    eq = equity.astype(float).dropna()
    if eq.empty:
        return pd.DataFrame(columns=[*range(1, 13), "year"], dtype=float)
    idx = pd.DatetimeIndex(eq.index)
    idx = idx.tz_convert("UTC") if idx.tz is not None else idx
    month_end = pd.Series(eq.to_numpy(), index=idx).groupby([idx.year, idx.month]).last()
    prev = np.concatenate([[float(initial_cash)], month_end.to_numpy()[:-1]])
    ret = pd.Series(month_end.to_numpy() / prev - 1.0, index=month_end.index)
    table = ret.unstack(level=1).reindex(columns=range(1, 13))
    table["year"] = (1.0 + table[list(range(1, 13))].fillna(0.0)).prod(axis=1) - 1.0
    table.index.name = "year"
    return table


def risk_state_summary(states: pd.Series, bar: pd.Timedelta | None = None) -> list[dict[str, Any]]:
    """Time in each risk state: ``state, bars, share, episodes, last_start, last_end`` per state
    seen, plus ``ongoing`` (the run ends in it). ``states`` is the per-bar ``risk_state`` column of
    the equity table (bar-open times). ``last_end`` is the open time of the first bar after the
    last episode (``bar`` after the final bar when ongoing)."""
    if states is None or len(states) == 0:
        return []
    s = states.astype(str).to_numpy()
    times = pd.DatetimeIndex(states.index)
    step = bar if bar is not None else (times[-1] - times[-2] if len(times) > 1 else pd.Timedelta(0))
    change = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    ends = np.append(change[1:], len(s))
    out: list[dict[str, Any]] = []
    for state in pd.unique(s):
        runs = [(a, b) for a, b in zip(change, ends, strict=True) if s[a] == state]
        a, b = runs[-1]
        out.append({
            "state": str(state), "bars": int(sum(b - a for a, b in runs)),
            "share": float(sum(b - a for a, b in runs) / len(s)), "episodes": len(runs),
            "last_start": times[a], "last_end": times[b] if b < len(s) else times[-1] + step,
            "ongoing": b == len(s),
        })
    order = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}
    return sorted(out, key=lambda r: order.get(r["state"], 9))
