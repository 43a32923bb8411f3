"""Funding-rate features (docs/methods.md §B.1–B.2), computed on the settlement series.

The frame carries ``funding_rate`` on the bar whose *close* is the settlement time (NaN elsewhere;
docs/architecture.md frame contract), so a settlement is known at that bar's close. Every statistic is
computed on the series of settlements ``r_k`` first, then forward-filled onto the bars, never the other
way round: a rolling std of a forward-filled step function mostly measures the fill pattern (§B.2.1).

Per settlement ``k`` at time ``τ_k`` (close of its bar):

* interval ``h_k = τ_k − τ_{k−1}`` in hours, clipped to ``max_interval_hours`` (a missing settlement
  would otherwise halve the normalised rate); the first settlement uses ``default_interval_hours``;
* ``r8_k = r_k·8/h_k`` and the excess over the formula's baseline ``e_k = r8_k − 0.0001`` (§B.1: the
  0.01 %/8 h baseline is an artefact of the rate formula, not crowding);
* ``z_k``: past-only z-score of ``e`` over the previous ``z_window`` settlements (§B.2.1; median/MAD when
  ``z_robust``), ``pct_k``: percentile of ``e_k`` among the previous ``pct_window`` settlements (§B.2.2);
* persistence ``n⁺_k`` / ``n⁻_k``: consecutive settlements with ``r8 ≥ θ_hi`` / ``r8 ≤ θ_lo`` (§B.2.3);
  ``crowded_long`` if ``n⁺ ≥ crowd_long_n`` or the 72 h sum of excess (``Σ e_j·h_j/8``, the excess
  actually paid) ``≥ crowd_long_sum``; ``crowded_short`` if ``n⁻ ≥ crowd_short_n`` (plus an optional sum
  rule, off by default);
* the **reset** event (§B.2.4): ``crowded_long`` at one of the previous ``reset_lookback`` settlements,
  ``r8_k ≤ θ_reset_long`` now, and a squeeze confirmed inside the last ``squeeze_hours``: a drawdown of a
  bar's low from the trailing ``high_hours`` high of at least ``max(squeeze_min, squeeze_atr_mult·
  ATR14_daily/P)`` **and** an open-interest flush ``OI_t/OI_{t−24h} − 1 ≤ −oi_drop`` at some bar of
  that window. The mirror (crowded shorts, a rally of the high from the trailing low, funding back to
  ``≥ θ_reset_short``, OI down) is ``reset_short``.

**Without open interest** (no ``open_interest`` column, or only NaN OI changes inside the window) the
OI leg cannot be checked. ``oi_missing="ignore"`` (default) then confirms the squeeze on price alone and
says so in ``funding_oi_flush`` (NaN = not checked); ``oi_missing="block"`` suppresses the reset.

Reset flags are true only on the bar where that settlement happens; every other column is
forward-filled from the last settlement (NaN/False before the first one). Everything uses data up to
the bar's close, so the result passes the prefix test.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from strategies.features.indicators import (
    bars_for,
    daily_atr_pct,
    infer_timeframe,
    rolling_percentile,
    rolling_zscore,
)

__all__ = ["FUNDING_COLUMNS", "FundingParams", "funding_features", "settlement_features"]

FUNDING_COLUMNS: tuple[str, ...] = (
    "funding_settled",
    "funding_r8",
    "funding_excess",
    "funding_z",
    "funding_pct",
    "funding_n_pos",
    "funding_n_neg",
    "funding_sum72",
    "funding_crowded_long",
    "funding_crowded_short",
    "funding_squeeze_long",
    "funding_squeeze_short",
    "funding_oi_flush",
    "funding_reset_long",
    "funding_reset_short",
)


class FundingParams(BaseModel):
    """Parameters of :func:`funding_features`; defaults are the project defaults of docs/methods.md §B.2."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    baseline: float = 0.0001  # interest component per 8 h (§B.1)
    default_interval_hours: float = 8.0
    max_interval_hours: float = 8.0
    z_window: int = 90  # settlements (30 d at 8 h)
    z_min_periods: int = 30
    z_robust: bool = False
    z_sigma_floor: float = 1e-6  # funding pinned at its baseline has zero dispersion
    pct_window: int = 270  # settlements (90 d)
    pct_min_periods: int = 90
    theta_hi: float = 0.0003  # r8 threshold for n⁺ (3× baseline)
    theta_lo: float = -0.0001  # r8 threshold for n⁻
    crowd_long_n: int = 6
    crowd_short_n: int = 3
    crowd_sum_hours: float = 72.0
    crowd_long_sum: float = 0.0015
    crowd_short_sum: float | None = None  # e.g. -0.0015 to mirror the sum rule; off by default
    reset_lookback: int = 1  # crowded at one of the previous settlements
    theta_reset_long: float = 0.00005  # r8 ≤ this after crowded longs
    theta_reset_short: float = 0.00005  # r8 ≥ this after crowded shorts
    squeeze_hours: float = 24.0
    high_hours: float = 72.0
    squeeze_min: float = 0.06
    squeeze_atr_mult: float = 3.0
    atr_days: int = 14
    oi_hours: float = 24.0
    oi_drop: float = 0.05
    oi_missing: Literal["ignore", "block"] = "ignore"


def _run_length(flag: np.ndarray) -> np.ndarray:
    """Length of the run of consecutive True values ending at each position."""
    out = np.zeros(len(flag), dtype=np.int64)
    run = 0
    for i, f in enumerate(flag):
        run = run + 1 if f else 0
        out[i] = run
    return out


def settlement_features(frame: pd.DataFrame, params: FundingParams = FundingParams()) -> pd.DataFrame:
    """Statistics on the settlement series only: one row per settlement, indexed by its bar's open time.

    Columns ``interval_h, r8, excess, z, pct, n_pos, n_neg, sum72, crowded_long, crowded_short``.
    """
    p = params
    cols = ["interval_h", "r8", "excess", "z", "pct", "n_pos", "n_neg", "sum72", "crowded_long",
            "crowded_short"]
    if "funding_rate" not in frame.columns or len(frame) < 2:
        return pd.DataFrame(columns=cols, index=frame.index[:0], dtype=np.float64)
    tf = infer_timeframe(frame.index)
    r = frame["funding_rate"].dropna().astype(np.float64)
    tau = r.index + tf  # settlement (= availability) time
    h = pd.Series(tau, index=r.index).diff().dt.total_seconds().to_numpy() / 3600.0
    if len(h):
        h[0] = p.default_interval_hours
    h = np.minimum(h, p.max_interval_hours)
    r8 = r.to_numpy() * 8.0 / h
    e = pd.Series(r8 - p.baseline, index=r.index)
    z = rolling_zscore(e, p.z_window, p.z_min_periods, robust=p.z_robust, sigma_floor=p.z_sigma_floor)
    pct = rolling_percentile(e, p.pct_window, p.pct_min_periods)
    n_pos = _run_length(r8 >= p.theta_hi)
    n_neg = _run_length(r8 <= p.theta_lo)
    paid = pd.Series(e.to_numpy() * h / 8.0, index=pd.DatetimeIndex(tau))
    sum72 = paid.rolling(pd.Timedelta(hours=p.crowd_sum_hours)).sum().to_numpy()
    crowded_long = (n_pos >= p.crowd_long_n) | (sum72 >= p.crowd_long_sum)
    crowded_short = n_neg >= p.crowd_short_n
    if p.crowd_short_sum is not None:
        crowded_short |= sum72 <= p.crowd_short_sum
    return pd.DataFrame(
        {
            "interval_h": h,
            "r8": r8,
            "excess": e.to_numpy(),
            "z": z.to_numpy(),
            "pct": pct.to_numpy(),
            "n_pos": n_pos,
            "n_neg": n_neg,
            "sum72": sum72,
            "crowded_long": crowded_long,
            "crowded_short": crowded_short,
        },
        index=r.index,
    )


def _recent_any(flag: pd.Series, bars: int) -> pd.Series:
    """True where ``flag`` (NaN = unknown) was True in the last ``bars`` bars; NaN if all unknown."""
    return flag.astype(np.float64).rolling(bars, min_periods=1).max()


def funding_features(frame: pd.DataFrame, params: FundingParams = FundingParams()) -> pd.DataFrame:
    """Bar-level funding features on ``frame.index`` (see the module docstring for the definitions).

    Columns: ``funding_settled`` (bool, settlement on this bar), ``funding_r8``, ``funding_excess``,
    ``funding_z``, ``funding_pct``, ``funding_n_pos``, ``funding_n_neg``, ``funding_sum72`` (forward-filled
    from the last settlement), ``funding_crowded_long/short`` (bool, forward-filled),
    ``funding_squeeze_long/short`` (bool, per bar: price squeeze inside the last ``squeeze_hours``),
    ``funding_oi_flush`` (per bar: 1.0/0.0 if an OI flush happened inside the window, NaN if OI unknown),
    ``funding_reset_long/short`` (bool, only on the settlement bar of the event).
    """
    p = params
    idx = frame.index
    out = pd.DataFrame(index=idx)
    n = len(frame)
    if n < 2 or "funding_rate" not in frame.columns:
        for c in FUNDING_COLUMNS:
            is_flag = c in ("funding_settled", "funding_crowded_long", "funding_crowded_short",
                            "funding_squeeze_long", "funding_squeeze_short", "funding_reset_long",
                            "funding_reset_short")
            out[c] = np.zeros(n, dtype=bool) if is_flag else np.full(n, np.nan)
        return out
    tf = infer_timeframe(idx)
    s = settlement_features(frame, p)
    settled = pd.Series(False, index=idx)
    settled.loc[s.index] = True

    # price squeeze (bar level, data up to each bar's close)
    hi72 = frame["high"].rolling(bars_for(p.high_hours, tf), min_periods=1).max()
    lo72 = frame["low"].rolling(bars_for(p.high_hours, tf), min_periods=1).min()
    dd = 1.0 - frame["low"] / hi72
    ru = frame["high"] / lo72 - 1.0
    thr = np.maximum(p.squeeze_min, p.squeeze_atr_mult * daily_atr_pct(frame, p.atr_days).fillna(0.0))
    w = bars_for(p.squeeze_hours, tf)
    sq_long = _recent_any(dd >= thr, w).fillna(0.0) > 0  # longs squeezed (price dumped)
    sq_short = _recent_any(ru >= thr, w).fillna(0.0) > 0  # shorts squeezed (price ripped)

    # open-interest flush inside the same window
    if "open_interest" in frame.columns:
        oi = frame["open_interest"].astype(np.float64)
        chg = oi / oi.shift(bars_for(p.oi_hours, tf)) - 1.0
        flush_bar = (chg <= -p.oi_drop).astype(np.float64).where(chg.notna())
        flush = _recent_any(flush_bar, w)
    else:
        flush = pd.Series(np.nan, index=idx)
    oi_ok = (flush > 0) if p.oi_missing == "block" else (flush > 0) | flush.isna()

    # settlement-level reset events
    look = max(1, p.reset_lookback)
    prev_cl = s["crowded_long"].astype(np.float64).shift(1).rolling(look, min_periods=1).max() > 0
    prev_cs = s["crowded_short"].astype(np.float64).shift(1).rolling(look, min_periods=1).max() > 0
    reset_long = prev_cl & (s["r8"] <= p.theta_reset_long) & sq_long.loc[s.index] & oi_ok.loc[s.index]
    reset_short = prev_cs & (s["r8"] >= p.theta_reset_short) & sq_short.loc[s.index] & oi_ok.loc[s.index]

    def ffill(col: str) -> pd.Series:
        return s[col].astype(np.float64).reindex(idx).ffill()

    out["funding_settled"] = settled.to_numpy()
    out["funding_r8"] = ffill("r8")
    out["funding_excess"] = ffill("excess")
    out["funding_z"] = ffill("z")
    out["funding_pct"] = ffill("pct")
    out["funding_n_pos"] = ffill("n_pos")
    out["funding_n_neg"] = ffill("n_neg")
    out["funding_sum72"] = ffill("sum72")
    out["funding_crowded_long"] = ffill("crowded_long").fillna(0.0).to_numpy() > 0
    out["funding_crowded_short"] = ffill("crowded_short").fillna(0.0).to_numpy() > 0
    out["funding_squeeze_long"] = sq_long.to_numpy()
    out["funding_squeeze_short"] = sq_short.to_numpy()
    out["funding_oi_flush"] = flush.to_numpy()
    out["funding_reset_long"] = reset_long.reindex(idx, fill_value=False).to_numpy(dtype=bool)
    out["funding_reset_short"] = reset_short.reindex(idx, fill_value=False).to_numpy(dtype=bool)
    return out
