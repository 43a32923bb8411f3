"""Support/resistance: the bounce and breakout/retest rules of docs/methods.md §C.4.

Zones come from :func:`strategies.features.levels.level_features` (§C.1–C.3: confirmed pivots,
tolerance clustering, strength score, top 3 zones above and below the close). At bar close ``t``:

* **Bounce long** at a support zone ``Z = [lo, hi]`` (one of the 3 zones below the close, score
  ``≥ min_score``): ``low_t ≤ hi``, ``close_t > hi``, lower wick ``≥ wick_frac`` of the bar's range and
  no close below ``lo`` in the previous 3 bars. Stop ``lo − stop_atr·ATR``. Skipped when a dense
  long-liquidation cluster (liquidation-map feature) sits between ``stop − liq_skip_atr·ATR`` and ``lo``:
  a stop hunt there would take the stop (§C.4).
* **Breakout long** through a resistance zone of bar ``t−1``: ``close_t > hi + break_atr·ATR`` (first
  close beyond) with ``volume_t ≥ vol_mult ×`` the mean of the previous 20 bars. Stop
  ``lo − break_atr·ATR``.
* **Retest long**: after such a break (volume not required) enter on the first bar within
  ``retest_bars`` that touches ``hi`` and closes above it; a close below ``lo`` cancels. Same stop.
* Shorts mirror all three. ``rule`` picks ``"bounce"``, ``"breakout"``, ``"retest"`` or ``"all"``.

Take-profit: the near edge of the next zone on the trade's side (nearest resistance ``lo`` for a
long) when it exists, else ``rr`` times the risk; an entry whose reward is below ``min_rr`` times the
risk is skipped. The stop and take-profit are levels stated with the entry, executed by the core; the
intent ends after ``max_hold_hours`` or on an opposite entry (flip).

The ``features`` hook holds the liquidation features (when ``use_liq``) and the level features; they
depend on ``liqmap``, ``pivot_n``, ``window``, ``break_atr`` and ``use_liq`` only.

Fixed (not tuned by :func:`suggest`): ``window = 500`` bars and the other :class:`LevelParams`
defaults, ``wick_frac = 0.5``, ``break_atr = 0.25``, ``vol_mult = 1.5``, ``retest_bars = 12``,
``liq_skip_atr = 0.5``, ``min_rr = 1.0``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from strategies.base import StrategySpec, bar_lookback, flat
from strategies.features import kernels
from strategies.features.indicators import bars_for, hold_intent, infer_timeframe
from strategies.features.levels import LevelParams, level_features, liq_cluster_prices
from strategies.features.liquidation_map import LiqMapParams, warmup_days
from strategies.liq_asymmetry import liq_features

if TYPE_CHECKING:  # optuna is needed only by the search space
    import optuna

__all__ = ["SPEC", "Params", "features", "signals", "suggest", "warmup"]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Params:
    """Parameters of the support/resistance strategy (docs/methods.md §C.4)."""

    rule: Literal["bounce", "breakout", "retest", "all"] = "all"
    pivot_n: int = 5  # pivot left = right
    window: int = 500
    min_score: float = 5.0
    wick_frac: float = 0.5
    stop_atr: float = 0.5
    break_atr: float = 0.25
    vol_mult: float = 1.5
    retest_bars: int = 12
    rr: float = 2.0
    min_rr: float = 1.0
    max_hold_hours: float = 48.0
    liq_skip_atr: float = 0.5
    use_liq: bool = True
    liqmap: LiqMapParams = LiqMapParams()  # the estimator (config [liqmap]), when use_liq


def _zone_array(lf: pd.DataFrame, side: str) -> np.ndarray:
    out = np.empty((len(lf), 3, 3))
    for i in range(3):
        for k, f in enumerate(("lo", "hi", "score")):
            out[:, i, k] = lf[f"level_{side}_{i + 1}_{f}"].to_numpy(np.float64)
    return out


def level_params(p: Params) -> LevelParams:
    """The level-feature parameters of ``p`` (pivot length, window, break threshold)."""
    return LevelParams(pivot_left=p.pivot_n, pivot_right=p.pivot_n, window=p.window, break_atr=p.break_atr)


def features(frame: pd.DataFrame, p: Params, liq: pd.DataFrame | None = None) -> dict[str, pd.DataFrame | None]:
    """``{"liq": liquidation features or None, "levels": level features}`` (module docstring).

    ``liq``: liquidation features already computed for this frame with ``p.liqmap`` (shared with
    other strategies); computed here when omitted and ``use_liq``.
    """
    if not p.use_liq:
        liq = None
    elif liq is None:
        liq = liq_features(frame, p.liqmap)
    return {"liq": liq, "levels": level_features(frame, level_params(p), liq)}


def signals(frame: pd.DataFrame, p: Params, features: dict | None = None) -> pd.DataFrame:
    """``target, stop, take_profit`` on ``frame.index`` (module docstring).

    ``features``: this frame's :func:`features` (computed here when omitted).
    """
    n = len(frame)
    if n < 6:
        return flat(frame)
    tf = infer_timeframe(frame.index)
    fe = features if features is not None else _features(frame, p)
    liq, lf = fe["liq"], fe["levels"]
    liq_up, liq_dn = liq_cluster_prices(frame, liq)
    vol = frame["volume"].astype(np.float64)
    vol_avg = vol.shift(1).rolling(20, min_periods=20).mean().to_numpy()
    side, stop, tp = kernels.call(
        "strategies._sr_kernels:entries_kernel",
        frame["open"].to_numpy(np.float64),
        frame["high"].to_numpy(np.float64),
        frame["low"].to_numpy(np.float64),
        frame["close"].to_numpy(np.float64),
        vol.to_numpy(),
        vol_avg,
        lf["level_atr"].to_numpy(np.float64),
        _zone_array(lf, "up"),
        _zone_array(lf, "dn"),
        liq_up,
        liq_dn,
        p.rule in ("bounce", "all"),
        p.rule in ("breakout", "all"),
        p.rule in ("retest", "all"),
        float(p.min_score),
        float(p.wick_frac),
        float(p.stop_atr),
        float(p.break_atr),
        float(p.vol_mult),
        int(p.retest_bars),
        float(p.rr),
        float(p.min_rr),
        float(p.liq_skip_atr),
    )
    side[: p.window + p.pivot_n + 1] = 0.0  # the first pivot window is incomplete
    return hold_intent(frame, side, stop=stop, take_profit=tp, max_hold=bars_for(p.max_hold_hours, tf))


def suggest(trial: optuna.Trial) -> Params:
    """Search space: rule, pivot_n, min_score, stop_atr, rr, max_hold_hours (the rest fixed)."""
    return Params(
        rule=trial.suggest_categorical("rule", ["bounce", "breakout", "retest", "all"]),
        pivot_n=trial.suggest_int("pivot_n", 3, 10),
        min_score=trial.suggest_float("min_score", 0.0, 30.0),
        stop_atr=trial.suggest_float("stop_atr", 0.25, 1.5),
        rr=trial.suggest_float("rr", 1.0, 4.0),
        max_hold_hours=trial.suggest_float("max_hold_hours", 12.0, 120.0),
    )


def warmup(p: Params) -> pd.Timedelta:
    """History before the first valid signal: a full pivot window plus the confirmation delay and the
    ATR's settling (bar-counted), the volume profile's window, the liquidation map's warm-up when
    ``use_liq``, plus one hold."""
    levels = bar_lookback(p.window + p.pivot_n + 1 + 3 * LevelParams().atr_n)
    need = max(levels, pd.Timedelta(hours=LevelParams().vp_hours))
    if p.use_liq:
        need = max(need, pd.Timedelta(days=warmup_days(p.liqmap)))
    return need + pd.Timedelta(hours=p.max_hold_hours)


_features = features  # ``signals`` takes a ``features`` argument that shadows the hook

SPEC = StrategySpec(
    name="sr_levels",
    Params=Params,
    signals=signals,
    suggest=suggest,
    warmup=warmup,
    features=features,
    feature_params=("liqmap", "pivot_n", "window", "break_atr", "use_liq"),
    description="Support/resistance: bounce off scored zones, or trade the breakout and its retest; "
                "stops that a liquidation cluster would hunt are skipped.",
)
