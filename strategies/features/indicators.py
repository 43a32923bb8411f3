"""Small causal helpers shared by the features and the strategies.

Every function here is causal: the value at row ``t`` depends on rows ``<= t`` only, so it passes the
prefix test of docs/architecture.md (computed on ``x[:k]`` it equals the full result at ``k - 1``).
Point-in-time rules follow docs/methods.md §0.2: rolling statistics use data up to the decision only, and
"past-only" statistics (z-score baselines, trailing quantiles) exclude the current row.

Contents
--------
* time helpers: :func:`infer_timeframe`, :func:`bars_for`
* classic indicators: :func:`atr` (Wilder, TA-Lib), :func:`ema` (TA-Lib), :func:`daily_atr_pct`
* rolling statistics: :func:`rolling_zscore`, :func:`rolling_percentile`, :func:`past_quantile`
* :func:`hold_intent`: turns entry events into a held ``target`` with its ``stop`` and ``take_profit``
  levels (the strategy's intent; stops and take-profits are executed by the core, not here).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import talib

from strategies.features import kernels

__all__ = [
    "atr",
    "bars_for",
    "daily_atr_pct",
    "ema",
    "hold_intent",
    "infer_timeframe",
    "past_quantile",
    "rolling_percentile",
    "rolling_zscore",
]


# --------------------------------------------------------------------------------------------------
# time helpers
# --------------------------------------------------------------------------------------------------


def infer_timeframe(index: pd.DatetimeIndex) -> pd.Timedelta:
    """Bar duration of a frame: the most common step among its first 64 steps.

    Only the head of the index is looked at, so a prefix of the frame (longer than 64 bars) infers the
    same timeframe as the whole frame, and a later data gap cannot change it.

    Raises ``ValueError`` on fewer than two bars.
    """
    if len(index) < 2:
        raise ValueError("cannot infer the timeframe of a frame with fewer than 2 bars")
    steps = pd.Series(index[: 65]).diff().dropna()
    steps = steps[steps > pd.Timedelta(0)]
    if steps.empty:
        raise ValueError("index is not increasing")
    return pd.Timedelta(steps.mode().iloc[0])


def bars_for(duration: pd.Timedelta | str | float, timeframe: pd.Timedelta) -> int:
    """Number of bars (at least 1) spanning ``duration``; a float is read as hours."""
    if isinstance(duration, (int, float)):
        duration = pd.Timedelta(hours=float(duration))
    return max(1, int(round(pd.Timedelta(duration) / timeframe)))


# --------------------------------------------------------------------------------------------------
# classic indicators
# --------------------------------------------------------------------------------------------------


def atr(frame: pd.DataFrame, n: int = 14) -> pd.Series:
    """Wilder's average true range (TA-Lib ``ATR``, seeded with the mean of the first ``n`` true ranges).

    NaN for the first ``n`` rows. Recursive from the first bar, hence causal and prefix-stable.
    """
    out = talib.ATR(
        frame["high"].to_numpy(np.float64),
        frame["low"].to_numpy(np.float64),
        frame["close"].to_numpy(np.float64),
        timeperiod=n,
    )
    return pd.Series(out, index=frame.index, name=f"atr{n}")


def ema(x: pd.Series, n: int) -> pd.Series:
    """Exponential moving average (TA-Lib ``EMA``: alpha = 2/(n+1), seeded with the SMA of ``n`` values)."""
    out = talib.EMA(x.to_numpy(np.float64), timeperiod=n)
    return pd.Series(out, index=x.index, name=f"ema{n}")


def daily_atr_pct(frame: pd.DataFrame, n: int = 14) -> pd.Series:
    """ATR(n) of *completed* UTC daily candles divided by the close, mapped onto the bars.

    Daily candles are resampled from the frame (a day ``[d, d+1)`` is known at ``d+1``). A bar whose close
    time is ``t1`` sees the ATR of the last day that ended at or before ``t1``, divided by its own close.
    Used for the squeeze threshold of docs/methods.md §B.2.4 (``3·ATR14_daily/P``). A partial first day is
    kept as a day (the same in every prefix, so the prefix test still holds).
    """
    if len(frame) < 2:
        return pd.Series(np.nan, index=frame.index, name="daily_atr_pct")
    tf = infer_timeframe(frame.index)
    daily = frame[["high", "low", "close"]].resample("1D", label="left", closed="left").agg(
        {"high": "max", "low": "min", "close": "last"}
    )
    daily = daily.dropna()
    d_atr = pd.Series(
        talib.ATR(
            daily["high"].to_numpy(np.float64),
            daily["low"].to_numpy(np.float64),
            daily["close"].to_numpy(np.float64),
            timeperiod=n,
        ),
        index=daily.index + pd.Timedelta(days=1),  # availability time of each daily value
    )
    bar_close = frame.index + tf
    pos = d_atr.index.searchsorted(bar_close, side="right") - 1
    vals = np.where(pos >= 0, d_atr.to_numpy()[np.clip(pos, 0, None)], np.nan) if len(d_atr) else np.nan
    return pd.Series(np.asarray(vals, dtype=np.float64) / frame["close"].to_numpy(np.float64),
                     index=frame.index, name="daily_atr_pct")


# --------------------------------------------------------------------------------------------------
# rolling statistics
# --------------------------------------------------------------------------------------------------


def rolling_zscore(
    x: pd.Series,
    window: int,
    min_periods: int | None = None,
    *,
    robust: bool = False,
    sigma_floor: float = 0.0,
) -> pd.Series:
    """Past-only z-score: ``z_k = (x_k − μ)/σ`` with μ, σ over ``x_{k−window..k−1}`` (docs/methods.md §B.2.1).

    The current value is *not* in its own baseline. σ is the sample standard deviation (ddof = 1); the
    robust variant uses the median and ``1.4826·MAD``. σ is floored at ``sigma_floor`` (a step-like
    series such as funding pinned at its 0.01 % baseline has σ = 0). NaN values are skipped and do not
    count toward ``min_periods`` (default ``window``). Exact two-pass sums over the window: O(n·window),
    meant for short series (settlements) or moderate windows.
    """
    mp = window if min_periods is None else int(min_periods)
    out = kernels.call("strategies.features._indicator_kernels:zscore_kernel", x.to_numpy(np.float64), int(window), mp, bool(robust), float(sigma_floor))
    return pd.Series(out, index=x.index, name=x.name)


def rolling_percentile(x: pd.Series, window: int, min_periods: int | None = None) -> pd.Series:
    """Percentile of ``x_k`` among the window ``x_{k−window..k}`` (docs/methods.md §B.2.2), in [0, 1].

    ``p_k = (#{j: x_j < x_k} + ½·#{j: x_j = x_k}) / m`` over the ``m`` non-NaN *other* values
    ``x_{k−window}, …, x_{k−1}``: 1 when ``x_k`` exceeds all of them, 0 when below all, ties count half
    (funding often sits exactly on its baseline). ``min_periods`` (default ``window``) counts those others.
    """
    mp = window if min_periods is None else int(min_periods)
    out = kernels.call("strategies.features._indicator_kernels:percentile_kernel", x.to_numpy(np.float64), int(window), mp)
    return pd.Series(out, index=x.index, name=x.name)


def past_quantile(x: pd.Series, window: int, q: float, min_periods: int | None = None) -> pd.Series:
    """Quantile ``q`` of ``x_{k−window..k−1}`` (excluding row ``k``; NaN values skipped).

    The trailing threshold for "this bar is extreme relative to the recent past" (docs/methods.md §0.2:
    thresholds use only data before the decision). Linear interpolation, as pandas.
    """
    mp = max(1, window // 4) if min_periods is None else int(min_periods)
    return x.shift(1).rolling(window, min_periods=mp).quantile(q)


# --------------------------------------------------------------------------------------------------
# holding an intent
# --------------------------------------------------------------------------------------------------


def hold_intent(
    frame: pd.DataFrame,
    entry: pd.Series | np.ndarray,
    *,
    stop: pd.Series | np.ndarray | None = None,
    take_profit: pd.Series | np.ndarray | None = None,
    size: pd.Series | np.ndarray | float = 1.0,
    exit_long: pd.Series | np.ndarray | None = None,
    exit_short: pd.Series | np.ndarray | None = None,
    max_hold: int = 0,
    progress_long: pd.Series | np.ndarray | None = None,
    progress_short: pd.Series | np.ndarray | None = None,
    progress_cap: pd.Series | np.ndarray | None = None,
) -> pd.DataFrame:
    """Turn entry events into a held intent: the ``target, stop, take_profit`` frame of a strategy.

    This is the strategy's intent, not a simulated position: it never checks its own stop or
    take-profit against prices (the core executes those, docs/architecture.md "Execution semantics").
    At each bar ``t``:

    1. An entry event ``entry_t`` (+1 long, −1 short) whose stop is on the protective side of the
       close (NaN stop = none) starts a new intent of magnitude ``size_t`` (clipped to 1): the side,
       the stop and take-profit prices (frozen; a take-profit on the wrong side becomes NaN) and the
       ``progress_cap`` are captured. It replaces whatever was held: a same-side event re-arms the
       hold, an opposite one flips.
    2. Otherwise a held intent ends when its exit flag (``exit_long``/``exit_short``) is set at ``t``,
       when the progress accumulated since the entry (``progress_long``/``progress_short`` summed
       over ``t_e < t' <= t``) reaches the captured cap, or ``max_hold`` bars after the entry
       (0 = no limit).

    Held rows carry the intent's target and frozen prices; flat rows are ``target = 0`` with NaN
    prices. Because every event resets the state, the row at ``t`` depends only on the events of the
    last ``max_hold`` bars: a warm-up that covers the features plus ``max_hold`` gives the same
    signals as any longer one.
    """
    n = len(frame)

    def arr(x, fill: float) -> np.ndarray:
        if x is None:
            return np.full(n, fill)
        if np.isscalar(x):
            return np.full(n, float(x))
        return np.asarray(x, dtype=np.float64)

    def flags(x) -> np.ndarray:
        if x is None:
            return np.zeros(n, dtype=np.bool_)
        a = np.asarray(x)
        if a.dtype != np.bool_:
            a = np.nan_to_num(a.astype(np.float64), nan=0.0) != 0.0
        return a

    e = np.nan_to_num(np.asarray(entry, dtype=np.float64), nan=0.0)
    target, stp, tp = kernels.call(
        "strategies.features._indicator_kernels:intent_kernel",
        np.sign(e).astype(np.int64),
        arr(size, 1.0),
        arr(stop, np.nan),
        arr(take_profit, np.nan),
        flags(exit_long),
        flags(exit_short),
        arr(progress_long, 0.0),
        arr(progress_short, 0.0),
        arr(progress_cap, np.nan),
        int(max_hold),
        frame["close"].to_numpy(np.float64),
    )
    return pd.DataFrame({"target": target, "stop": stp, "take_profit": tp}, index=frame.index)
