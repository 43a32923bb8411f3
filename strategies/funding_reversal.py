"""Funding reversal: the B-Reset and extreme-fade rules of docs/methods.md §B.2.

Rules (``rule``: ``"reset"``, ``"fade"`` or ``"both"``), decided at bar close:

* **B-Reset** (§B.2.4): long on the settlement bar where ``funding_reset_long`` fires (crowded longs
  cleared: funding flipped to ≤ 0.005 % after a confirmed squeeze and OI flush); short on
  ``funding_reset_short``.
* **Extreme fade** (§B.2.5): short when the funding z-score of the last settlement is
  ``≥ z_entry`` and momentum is stalling (close < EMA(``ema_n``)); long when ``z ≤ −z_entry`` and
  close > EMA. The entry fires on the bar where that combination becomes true (edge-triggered, so a
  stop-out does not re-enter the same episode on the next bar).

Holding and exit (§B.2 defaults): exit at the first settlement after entry where ``|z| < z_exit``,
after ``max_hold_hours``, or on the opposite signal (which flips); the stop ``stop_atr·ATR14`` from
the entry close and the take-profit ``tp_atr·ATR`` (when ``tp_atr > 0``, off by default) are levels
stated with the entry and executed by the core.

The ``features`` hook is the funding feature frame (it depends on ``z_window`` only).

Fixed (not tuned by :func:`suggest`): the funding feature definitions (:class:`FundingParams`
defaults: W = 90 settlements, baseline 0.01 %, crowding and squeeze thresholds), ``atr_n = 14``,
``tp_atr = 0``. On the 2025 sample funding never exceeded the 0.01 % baseline, so B-Reset (which
needs crowded longs at ≥ 0.03 %) does not fire there and ``"both"`` trades the fade rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from strategies.base import StrategySpec, bar_lookback, flat
from strategies.features.funding import FundingParams, funding_features
from strategies.features.indicators import atr, bars_for, ema, hold_intent, infer_timeframe

if TYPE_CHECKING:  # optuna is needed only by the search space
    import optuna

__all__ = ["SPEC", "Params", "features", "signals", "suggest", "warmup"]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Params:
    """Parameters of the funding-reversal strategy (docs/methods.md §B.2)."""

    rule: Literal["reset", "fade", "both"] = "both"
    z_entry: float = 2.0
    z_exit: float = 0.5
    ema_n: int = 20
    max_hold_hours: float = 72.0
    stop_atr: float = 2.0
    tp_atr: float = 0.0
    atr_n: int = 14
    z_window: int = 90


def _funding_params(p: Params) -> FundingParams:
    return FundingParams(z_window=p.z_window, z_min_periods=min(30, p.z_window))


def features(frame: pd.DataFrame, p: Params) -> dict[str, pd.DataFrame]:
    """``{"funding": funding features}``: depends on ``p.z_window`` only."""
    return {"funding": funding_features(frame, _funding_params(p))}


def signals(frame: pd.DataFrame, p: Params, features: dict | None = None) -> pd.DataFrame:
    """``target, stop, take_profit`` on ``frame.index`` (module docstring).

    ``features``: this frame's :func:`features` (computed here when omitted).
    """
    n = len(frame)
    if n < 2 or "funding_rate" not in frame.columns:
        return flat(frame)
    tf = infer_timeframe(frame.index)
    ff = (features if features is not None else _features(frame, p))["funding"]
    close = frame["close"]
    a = atr(frame, p.atr_n)
    trend = ema(close, p.ema_n)
    z = ff["funding_z"]

    entry = pd.Series(0.0, index=frame.index)
    if p.rule in ("fade", "both"):
        short_set = (z >= p.z_entry) & (close < trend)
        long_set = (z <= -p.z_entry) & (close > trend)
        entry += long_set.astype(float) * (~long_set.shift(1, fill_value=False)).astype(float)
        entry -= short_set.astype(float) * (~short_set.shift(1, fill_value=False)).astype(float)
    if p.rule in ("reset", "both"):
        entry += ff["funding_reset_long"].astype(float) - ff["funding_reset_short"].astype(float)
    entry = np.sign(entry).where(a.notna(), 0.0)

    side = np.sign(entry)
    stop = close - side * p.stop_atr * a
    tp = close + side * p.tp_atr * a if p.tp_atr > 0 else None
    calm = ff["funding_settled"] & (z.abs() < p.z_exit)
    return hold_intent(
        frame,
        entry,
        stop=stop,
        take_profit=tp,
        exit_long=calm,
        exit_short=calm,
        max_hold=bars_for(p.max_hold_hours, tf),
    )


def suggest(trial: optuna.Trial) -> Params:
    """Search space: rule, z_entry, z_exit, ema_n, max_hold_hours, stop_atr (the rest fixed)."""
    return Params(
        rule=trial.suggest_categorical("rule", ["reset", "fade", "both"]),
        z_entry=trial.suggest_float("z_entry", 1.0, 3.0),
        z_exit=trial.suggest_float("z_exit", 0.0, 1.0),
        ema_n=trial.suggest_int("ema_n", 10, 60),
        max_hold_hours=trial.suggest_float("max_hold_hours", 24.0, 168.0),
        stop_atr=trial.suggest_float("stop_atr", 1.0, 4.0),
    )


def warmup(p: Params) -> pd.Timedelta:
    """History before the first valid signal: the full z-window of settlements (8 h apart), the
    squeeze's daily ATR (three lengths, it is recursive), the EMA/ATR lookbacks, plus one hold."""
    fp = _funding_params(p)
    settlements = pd.Timedelta(hours=fp.z_window * fp.max_interval_hours)
    squeeze = pd.Timedelta(days=3 * fp.atr_days) + pd.Timedelta(hours=fp.high_hours + fp.squeeze_hours)
    return max(settlements, squeeze, bar_lookback(3 * max(p.ema_n, p.atr_n))) + pd.Timedelta(hours=p.max_hold_hours)


_features = features  # ``signals`` takes a ``features`` argument that shadows the hook

SPEC = StrategySpec(
    name="funding_reversal",
    Params=Params,
    signals=signals,
    suggest=suggest,
    warmup=warmup,
    features=features,
    feature_params=("z_window",),
    description="Funding reversal: fade extreme funding z-scores when momentum stalls, and trade the "
                "reset after crowded positioning is flushed.",
)
