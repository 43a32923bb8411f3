"""Confluence: weighted votes of the three strategy families (docs/methods.md §A.5, §B.2, §C.4).

Each family runs with its own default parameters: :mod:`strategies.liq_asymmetry` (A-Magnet),
:mod:`strategies.funding_reversal` (B-Reset + extreme fade), :mod:`strategies.sr_levels` (bounce +
breakout/retest) and the "cascade" family, :mod:`strategies.liq_asymmetry`'s continuation rule
(A-Cascade) with this strategy's ``realised`` setting: with realised liquidations in the frame its fuel
is the realised cascade flag, with the model's consumption as the fallback (``"auto"``), or realised
only (``"realised"``), or the model only (``"model"``); see :mod:`strategies.liq_asymmetry`. Its vote at
bar ``t`` is the side of its held target (+1, −1 or 0), and

    vote_t = w_liq·side_liq + w_funding·side_funding + w_sr·side_sr + w_cascade·side_cascade.

``w_cascade`` defaults to 0: the cascade family then neither votes nor contributes a stop or a
take-profit, and the result is the three-family confluence.

The families' signal frames do not depend on this strategy's parameters (other than the shared
``liqmap`` and ``realised``): they are the ``features`` hook, computed once by the optimiser.

Enter long on the bar where ``vote`` rises to ``≥ threshold`` (short: falls to ``≤ −threshold``); with
unit weights the default threshold 1.5 means two families agree and the third does not oppose. Hold
while the vote keeps the position's sign above ``exit_vote`` (exit when ``side·vote ≤ exit_vote``),
at most ``max_hold_hours``; flip on an opposite entry. Stop and take-profit are levels stated with the
entry, executed by the core.

Stop: the tightest stop among the families voting for the trade, but at least ``stop_atr·ATR14``
from the entry close (a family without a stop contributes none; if none has one the ATR stop is
used). Take-profit: the nearest take-profit among those families, NaN if none.

Fixed (not tuned by :func:`suggest`, which keeps to six parameters): the families' default
parameters, ``w_cascade``, ``realised``, ``exit_vote = 0``, ``atr_n = 14``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from strategies import funding_reversal, liq_asymmetry, sr_levels
from strategies.base import StrategySpec, bar_lookback, flat
from strategies.features.indicators import atr, bars_for, hold_intent, infer_timeframe
from strategies.features.liquidation_map import LiqMapParams

if TYPE_CHECKING:  # optuna is needed only by the search space
    import optuna

__all__ = ["SPEC", "Params", "family_signals", "features", "signals", "suggest", "warmup"]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Params:
    """Parameters of the confluence strategy."""

    w_liq: float = 1.0
    w_funding: float = 1.0
    w_sr: float = 1.0
    w_cascade: float = 0.0  # the continuation (cascade) family's weight; 0 = three-family confluence
    threshold: float = 1.5
    exit_vote: float = 0.0
    stop_atr: float = 1.5
    max_hold_hours: float = 72.0
    atr_n: int = 14
    liqmap: LiqMapParams = LiqMapParams()  # the estimator (config [liqmap]) the families share
    realised: Literal["auto", "model", "realised"] = "auto"  # the cascade family's fuel (liq_asymmetry)


def _family_params(p: Params) -> tuple[liq_asymmetry.Params, funding_reversal.Params, sr_levels.Params,
                                        liq_asymmetry.Params]:
    return (liq_asymmetry.Params(liqmap=p.liqmap), funding_reversal.Params(), sr_levels.Params(liqmap=p.liqmap),
            liq_asymmetry.Params(variant="continuation", liqmap=p.liqmap, realised=p.realised))


def family_signals(frame: pd.DataFrame, liqmap: LiqMapParams = LiqMapParams(),
                   realised: Literal["auto", "model", "realised"] = "auto") -> dict[str, pd.DataFrame]:
    """The four families' signal frames with their default parameters (liquidation features shared)."""
    return features(frame, Params(liqmap=liqmap, realised=realised))["families"]


def features(frame: pd.DataFrame, p: Params) -> dict:
    """``{"liq", "levels", "families"}``: the shared liquidation features, the levels and the four
    families' signal frames; depends on ``p.liqmap`` and ``p.realised`` only."""
    lp, fp, sp, cp = _family_params(p)
    lq = liq_asymmetry.liq_features(frame, p.liqmap)
    sr_fe = sr_levels.features(frame, sp, liq=lq)
    families = {
        "liq": liq_asymmetry.signals(frame, lp, {"liq": lq}),
        "funding": funding_reversal.signals(frame, fp),
        "sr": sr_levels.signals(frame, sp, sr_fe),
        "cascade": liq_asymmetry.signals(frame, cp, liq_asymmetry.features(frame, cp, liq=lq)),
    }
    return {"liq": lq, "levels": sr_fe["levels"], "families": families}


def signals(frame: pd.DataFrame, p: Params, features: dict | None = None) -> pd.DataFrame:
    """``target, stop, take_profit`` on ``frame.index`` (module docstring).

    ``features``: this frame's :func:`features` (computed here when omitted).
    """
    n = len(frame)
    if n < 6:
        return flat(frame)
    tf = infer_timeframe(frame.index)
    fam = (features if features is not None else _features(frame, p))["families"]
    weights = {"liq": p.w_liq, "funding": p.w_funding, "sr": p.w_sr, "cascade": p.w_cascade}
    sides = {k: np.sign(v["target"].to_numpy(np.float64)) for k, v in fam.items()}
    vote = sum(weights[k] * sides[k] for k in fam)
    prev = np.r_[0.0, vote[:-1]]
    entry = ((vote >= p.threshold) & (prev < p.threshold)).astype(np.float64) - (
        (vote <= -p.threshold) & (prev > -p.threshold)
    ).astype(np.float64)

    P = frame["close"].to_numpy(np.float64)
    a = atr(frame, p.atr_n).to_numpy()
    entry[~np.isfinite(a)] = 0.0
    entry[frame.index < frame.index[0] + _family_warmup(p)] = 0.0
    stops_l, stops_s, tps_l, tps_s = [], [], [], []
    for k, v in fam.items():
        if weights[k] == 0:
            continue
        s, t = v["stop"].to_numpy(np.float64), v["take_profit"].to_numpy(np.float64)
        stops_l.append(np.where(sides[k] > 0, s, np.nan))
        stops_s.append(np.where(sides[k] < 0, s, np.nan))
        tps_l.append(np.where(sides[k] > 0, t, np.nan))
        tps_s.append(np.where(sides[k] < 0, t, np.nan))

    def reduce(arrs: list[np.ndarray], fn) -> np.ndarray:
        if not arrs:
            return np.full(n, np.nan)
        stacked = np.vstack(arrs)
        out = np.full(n, np.nan)
        ok = np.isfinite(stacked).any(axis=0)
        out[ok] = fn(stacked[:, ok], axis=0)
        return out

    long_stop = np.fmin(reduce(stops_l, np.nanmax), P - p.stop_atr * a)
    short_stop = np.fmax(reduce(stops_s, np.nanmin), P + p.stop_atr * a)
    stop = np.where(entry > 0, long_stop, short_stop)
    tp = np.where(entry > 0, reduce(tps_l, np.nanmin), reduce(tps_s, np.nanmax))
    return hold_intent(
        frame,
        entry,
        stop=stop,
        take_profit=tp,
        exit_long=vote <= p.exit_vote,
        exit_short=vote >= -p.exit_vote,
        max_hold=bars_for(p.max_hold_hours, tf),
    )


def suggest(trial: optuna.Trial) -> Params:
    """Search space: the three weights, threshold, stop_atr, max_hold_hours (the rest fixed)."""
    return Params(
        w_liq=trial.suggest_float("w_liq", 0.0, 2.0),
        w_funding=trial.suggest_float("w_funding", 0.0, 2.0),
        w_sr=trial.suggest_float("w_sr", 0.0, 2.0),
        threshold=trial.suggest_float("threshold", 0.5, 3.0),
        stop_atr=trial.suggest_float("stop_atr", 0.5, 4.0),
        max_hold_hours=trial.suggest_float("max_hold_hours", 12.0, 168.0),
    )


def _family_warmup(p: Params) -> pd.Timedelta:
    lp, fp, sp, cp = _family_params(p)
    cascade = liq_asymmetry.warmup(cp) if p.w_cascade != 0 else pd.Timedelta(0)
    return max(liq_asymmetry.warmup(lp), funding_reversal.warmup(fp), sr_levels.warmup(sp), cascade,
               bar_lookback(3 * p.atr_n))


def warmup(p: Params) -> pd.Timedelta:
    """History before the first valid signal: the slowest family's warm-up plus one hold."""
    return _family_warmup(p) + pd.Timedelta(hours=p.max_hold_hours)


_features = features  # ``signals`` takes a ``features`` argument that shadows the hook

SPEC = StrategySpec(
    name="confluence",
    Params=Params,
    signals=signals,
    suggest=suggest,
    warmup=warmup,
    features=features,
    feature_params=("liqmap", "realised"),
    description="Confluence: weighted votes of the liquidation-map, funding and support/resistance "
                "families; enter when enough of them agree.",
)
