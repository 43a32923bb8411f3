"""Realised-liquidation features: what the exchanges reported, per bar, against its own past.

Input: the frame contract's ``liq_long_usd`` / ``liq_short_usd`` (USD liquidated in the bar, by
liquidated side; NaN on bars outside every recorded span, 0 on covered bars without events),
and, for the calibration, the map's modelled consumption ``liq_consumed_long`` /
``liq_consumed_short`` (:mod:`strategies.features.liquidation_map`, docs/methods.md §A.3).

Every value at bar k uses bars ≤ k only (the realised sums of bar k are known at its close, like
the map's consumption), and every "distribution" is past-only: the trailing window
``[t_k − W, t_k)`` **excludes** bar k itself. So a prefix of the frame gives a prefix of the
features, exactly.

Columns of :func:`realised_features`:

* ``liq_real_long``, ``liq_real_short``, ``liq_real_total``: the realised USD (NaN = no data);
* ``liq_real_long_share``: long / total (NaN when nothing was liquidated). The articles' "over
  70 % of it longs";
* ``liq_real_long_pct``, ``liq_real_short_pct``, ``liq_real_total_pct``: the share of covered
  bars in the trailing ``window_days`` whose value is ≤ this bar's (an empirical CDF of the
  past; NaN until ``min_history`` covered bars exist);
* ``liq_cascade_long``, ``liq_cascade_short``: 1.0 when the side's realised notional is
  positive and strictly above the ``cascade_quantile`` (linear) quantile of its own trailing
  window (of the bars with liquidations, by default), else 0.0; NaN without data or history. A long cascade is longs being liquidated
  (a sell-off), a short cascade a squeeze;
* ``liq_cascade``: ``liq_cascade_short − liq_cascade_long`` (+1 squeeze, −1 flush, 0 none);
* calibration (only when the frame or ``consumed`` has the map's consumption):
  ``liq_calib_long``, ``liq_calib_short``, ``liq_calib_total`` = trailing sum of realised over
  trailing sum of modelled consumption, over the covered bars of the window **including** bar k
  (both are known at its close); NaN until ``min_history`` covered bars or while the model
  consumed nothing. ``liq_calib_rank`` = Spearman rank correlation of modelled vs realised
  per-bar totals over the same window (ranks computed inside the window; re-evaluated every
  ``calibration_rank_hours`` and held in between). And
  ``liq_consumed_long_cal``, ``liq_consumed_short_cal`` = the model's consumption × the *previous*
  bar's calibration ratio (the map rescaled to what venues report, never with this bar's own
  realised value in the scale).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

REALISED_COLUMNS: tuple[str, ...] = (
    "liq_real_long", "liq_real_short", "liq_real_total", "liq_real_long_share",
    "liq_real_long_pct", "liq_real_short_pct", "liq_real_total_pct",
    "liq_cascade_long", "liq_cascade_short", "liq_cascade",
)
CALIBRATION_COLUMNS: tuple[str, ...] = (
    "liq_calib_long", "liq_calib_short", "liq_calib_total", "liq_calib_rank",
    "liq_consumed_long_cal", "liq_consumed_short_cal",
)


class RealisedParams(BaseModel):
    """Windows and thresholds of the realised-liquidation features."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_days: float = Field(default=30.0, gt=0.0)
    """Trailing window of the past-only distributions (percentiles, cascade quantile)."""
    cascade_quantile: float = Field(default=0.95, gt=0.0, lt=1.0)
    """A side cascades when its realised notional exceeds this quantile of its own past."""
    cascade_nonzero: bool = True
    """The cascade quantile is taken over the past bars that *had* liquidations (as the map's
    continuation rule does with modelled consumption); False includes the quiet bars (zeros)."""
    min_history: int = Field(default=24, ge=2)
    """Covered bars needed in the window before a percentile/quantile/ratio is reported."""
    calibration_days: float = Field(default=30.0, gt=0.0)
    """Trailing window of the map-vs-reality calibration."""
    calibration_rank_hours: float = Field(default=24.0, ge=0.0)
    """The rolling rank correlation is re-evaluated on bars opening on this epoch-aligned grid and
    held in between (0 = every bar); each evaluation costs O(window)."""


def has_realised(frame: pd.DataFrame) -> bool:
    """Whether the frame carries realised liquidations on at least one bar."""
    return ("liq_long_usd" in frame.columns and "liq_short_usd" in frame.columns
            and bool(frame["liq_long_usd"].notna().any()))


def _past_stats(values: pd.Series, window: pd.Timedelta, q: float, min_history: int,
                nonzero: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per bar: (share of past covered values ≤ current, ``q`` (linear) quantile of the past — of
    its non-zero values with ``nonzero``), over the window ``[t − W, t)``; NaN where the current
    value is NaN or fewer than ``min_history`` values exist. Rolling skip-lists: O(n log w), and
    causal, so a prefix gives a prefix."""
    count = values.rolling(window, closed="left").count()
    at_most = values.rolling(window, closed="both").rank(method="max")  # [t − W, t]: with the bar itself
    current = values.notna()
    pct = ((at_most - 1.0) / count).where(current & (count >= min_history))
    pool = values.where(values > 0) if nonzero else values
    qua = pool.rolling(window, closed="left", min_periods=min_history).quantile(q).where(current & (count >= min_history))
    return pct.to_numpy(dtype=np.float64), qua.to_numpy(dtype=np.float64)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 3:
        return math.nan
    rx = pd.Series(x).rank().to_numpy()
    ry = pd.Series(y).rank().to_numpy()
    sx, sy = rx.std(), ry.std()
    if sx == 0.0 or sy == 0.0:
        return math.nan
    return float(((rx - rx.mean()) * (ry - ry.mean())).mean() / (sx * sy))


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    return frame[name].to_numpy(dtype=np.float64, na_value=np.nan)


def realised_features(frame: pd.DataFrame, params: RealisedParams = RealisedParams(),
                      consumed: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-bar realised-liquidation features (:data:`REALISED_COLUMNS`, plus
    :data:`CALIBRATION_COLUMNS` when the model's consumption is available).

    ``consumed``: a frame on ``frame.index`` with ``liq_consumed_long``/``liq_consumed_short``
    (e.g. :func:`strategies.features.liquidation_map.liquidation_features`); when omitted, those
    columns of ``frame`` are used if present.
    """
    if not isinstance(frame.index, pd.DatetimeIndex) or not frame.index.is_monotonic_increasing:
        raise ValueError("frame index must be an increasing DatetimeIndex of bar open times")
    times = frame.index.as_unit("ns").asi8
    long_ = _column(frame, "liq_long_usd")
    short = _column(frame, "liq_short_usd")
    covered = np.isfinite(long_) & np.isfinite(short)
    long_ = np.where(covered, long_, np.nan)
    short = np.where(covered, short, np.nan)
    total = long_ + short
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, long_ / total, np.nan)

    window = pd.Timedelta(params.window_days, "D")
    out: dict[str, np.ndarray] = {"liq_real_long": long_, "liq_real_short": short, "liq_real_total": total,
                                  "liq_real_long_share": share}
    flags = {}
    for name, values in (("long", long_), ("short", short), ("total", total)):
        series = pd.Series(values, index=frame.index)
        pct, qua = _past_stats(series, window, params.cascade_quantile, params.min_history, params.cascade_nonzero)
        out[f"liq_real_{name}_pct"] = pct
        if name != "total":
            flag = np.where(np.isfinite(qua), ((values > qua) & (values > 0)).astype(float), np.nan)
            flags[name] = flag
    out["liq_cascade_long"] = flags["long"]
    out["liq_cascade_short"] = flags["short"]
    out["liq_cascade"] = flags["short"] - flags["long"]
    result = pd.DataFrame({c: out[c] for c in REALISED_COLUMNS}, index=frame.index)

    source = consumed if consumed is not None else frame
    if "liq_consumed_long" in source.columns and "liq_consumed_short" in source.columns:
        m_long = source["liq_consumed_long"].reindex(frame.index).to_numpy(dtype=np.float64, na_value=np.nan)
        m_short = source["liq_consumed_short"].reindex(frame.index).to_numpy(dtype=np.float64, na_value=np.nan)
        for c, v in _calibration(times, covered, long_, short, m_long, m_short, params).items():
            result[c] = v
    return result


def _calibration(times: np.ndarray, covered: np.ndarray, r_long: np.ndarray, r_short: np.ndarray,
                 m_long: np.ndarray, m_short: np.ndarray, params: RealisedParams) -> dict[str, np.ndarray]:
    n = times.shape[0]
    ok = covered & np.isfinite(m_long) & np.isfinite(m_short)
    starts = np.searchsorted(times, times - int(params.calibration_days * 86_400e9), side="right")
    # window sums as differences of prefix sums over covered bars: the prefix values do not
    # depend on the frame's length (prefix-stable), and an all-zero window differences to 0 exactly
    count = np.concatenate([[0], np.cumsum(ok)])
    enough = (count[1:] - count[starts]) >= params.min_history
    pairs = {"long": (r_long, m_long), "short": (r_short, m_short), "total": (r_long + r_short, m_long + m_short)}
    ratio = {}
    for side, (r, m) in pairs.items():
        cum_r = np.concatenate([[0.0], np.cumsum(np.where(ok, r, 0.0))])
        cum_m = np.concatenate([[0.0], np.cumsum(np.where(ok, m, 0.0))])
        real, model = cum_r[1:] - cum_r[starts], cum_m[1:] - cum_m[starts]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio[side] = np.where(enough & (model > 0), real / np.where(model > 0, model, 1.0), np.nan)
    # the rank correlation (ranks inside the window) is O(window) per evaluation: evaluated on the
    # bars opening on the calibration_rank_hours grid (epoch-aligned, so the same bars for any
    # slice) and held until the next one — still past-only
    rank = np.full(n, np.nan)
    r_tot, m_tot = pairs["total"]
    step = int(params.calibration_rank_hours * 3_600e9)
    grid = np.flatnonzero(times % step == 0) if step > 0 else np.arange(n)
    last = np.nan
    g = 0
    for k in range(n):
        if g < grid.size and grid[g] == k:
            g += 1
            lo = starts[k]
            last = _spearman(m_tot[lo:k + 1][ok[lo:k + 1]], r_tot[lo:k + 1][ok[lo:k + 1]]) if enough[k] else np.nan
        rank[k] = last
    prev_long = np.r_[np.nan, ratio["long"][:-1]]
    prev_short = np.r_[np.nan, ratio["short"][:-1]]
    return {"liq_calib_long": ratio["long"], "liq_calib_short": ratio["short"], "liq_calib_total": ratio["total"],
            "liq_calib_rank": rank, "liq_consumed_long_cal": m_long * prev_long,
            "liq_consumed_short_cal": m_short * prev_short}
