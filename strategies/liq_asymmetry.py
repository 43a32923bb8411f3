"""Liquidation-map asymmetry: the A-Magnet, A-Cascade and A-Exhaustion rules of docs/methods.md §A.5.

Features come from :func:`strategies.features.liquidation_map.liquidation_features` (§A.3–A.4, default
:class:`LiqMapParams`). At bar close ``t`` with price ``P``, per ``variant``:

* ``"magnet"`` (A-Magnet, trade toward the heavier side): long when ``A(X) ≥ theta_a`` (default ln 3),
  its past-only z-score over ``z_days`` (§A.4 scale-free version) ``≥ z_min`` and the trend agrees
  (close > EMA(``ema_n``) or the 24 h return > 0). Take-profit at the nearest dense short cluster
  ``P(1 + d*_up)`` less ``cluster_buf`` (0.1 %). Exit early when ``A < 0`` or when the short notional
  consumed since entry reaches ``consumed_exit`` (80 %) of the target cluster's size at entry.
  Shorts mirror this (target = the dense long cluster below).
* ``"continuation"`` (A-Cascade): the bar consumed short liquidations ``C^S_t ≥`` the past-only
  ``cons_q`` quantile of the non-zero consumptions of the last ``cons_days``, and it closed in the top
  third of its range (above the consumed lots): long for ``hold_hours`` (default 4 bars of 1 h) or until
  the next dense cluster above (take-profit). Mirror on long consumption.
  With realised liquidations in the frame (``liq_long_usd``/``liq_short_usd``, issue 14) the "fuel"
  leg reads what the venues reported instead of the model, per ``realised``: ``"auto"`` (default)
  takes the realised short-cascade flag (:func:`~strategies.features.realised.realised_features`:
  the bar's realised short notional strictly above the ``cons_q`` quantile of the non-zero realised
  short notionals of the past ``cons_days``, at least 20 of them) on the bars where that flag exists
  and the model's rule above elsewhere (outside the recorded spans, or before 20 past bars had
  liquidations); ``"realised"`` enters only where the flag exists; ``"model"`` ignores realised
  data. The close-in-range leg, stop, target and hold are unchanged. Mirror with the long cascade.
* ``"exhaustion"`` (A-Exhaustion): the long fuel within 5 % ``L_dn(5 %)`` fell by ``≥ fuel_drop``
  (60 %) from its 24 h maximum, OI fell ``≥ oi_drop`` (3 %) in 24 h and the close is ``≥ 2·ATR`` below
  the close 24 h ago; the first bar closing above its open within ``arm_hours`` of the latest such
  setup enters long. Without open interest (NaN change) the OI leg is not required. Take-profit at
  the dense short cluster above, else 2R. Mirror for shorts.

Stop (all variants): beyond the nearest dense cluster on the adverse side (its edge less
``cluster_buf``) and at least ``stop_atr·ATR14`` away, but never more than ``max_stop_atr·ATR`` (a
far cluster is replaced by that cap). Exhaustion uses the 24 h extreme ± 0.25·ATR in place of the
cluster. A magnet or exhaustion entry whose take-profit is closer than ``min_rr`` (0.5) times its
stop distance is skipped (a magnet 0.2 % away does not pay for a 2·ATR stop). Every variant also exits after
``hold_hours`` and flips on an opposite entry (a same-side entry re-arms the hold). The stop and
take-profit are levels stated with the entry; the core executes them. No entries during the
features' warm-up: the map's (:func:`~strategies.features.liquidation_map.warmup_days`, 90 days)
plus the z-score or quantile window.

The ``features`` hook is the liquidation map's per-bar features (``liqmap``: the estimator's
parameters, ``[liqmap]`` in the config) plus, when the frame has realised liquidations and
``realised != "model"``, the realised-liquidation features (window ``cons_days``, quantile
``cons_q``): parameter-independent, computed once by the optimiser. The magnet's consumed-exit and
the exhaustion rule always use the model.

Fixed (not tuned by :func:`suggest`): the map parameters, ``ema_n = 50``, ``z_days = 30``,
``cluster_buf``, ``max_stop_atr = 6``, ``consumed_exit``, ``min_rr``, the continuation and exhaustion
thresholds, ``realised``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from strategies.base import StrategySpec, bar_lookback, flat
from strategies.features.indicators import (
    atr,
    bars_for,
    ema,
    hold_intent,
    infer_timeframe,
    past_quantile,
    rolling_zscore,
)
from strategies.features.liquidation_map import LiqMapParams, liquidation_features, warmup_days
from strategies.features.realised import RealisedParams, has_realised, realised_features

if TYPE_CHECKING:  # optuna is needed only by the search space
    import optuna

__all__ = ["SPEC", "Params", "continuation_fuel", "features", "liq_features", "realised_params", "signals",
           "suggest", "warmup"]

_DEFAULT_HOLD_HOURS = {"magnet": 72.0, "continuation": 4.0, "exhaustion": 48.0}
_CONS_MIN_HISTORY = 20  # past non-zero consumptions (model) / liquidations (realised) before a quantile


def liq_features(frame: pd.DataFrame, params: LiqMapParams = LiqMapParams()) -> pd.DataFrame:
    """The liquidation-map features of ``frame`` (shared by the strategies that filter on them)."""
    return liquidation_features(frame, params)


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Params:
    """Parameters of the liquidation-asymmetry strategy (docs/methods.md §A.5)."""

    variant: Literal["magnet", "continuation", "exhaustion"] = "magnet"
    band: Literal[5, 10, 20] = 10  # X in percent for A(X)
    theta_a: float = math.log(3.0)
    z_min: float = 1.0
    z_days: float = 30.0
    ema_n: int = 50
    stop_atr: float = 2.0
    max_stop_atr: float = 6.0
    cluster_buf: float = 0.001
    consumed_exit: float = 0.8
    min_rr: float = 0.5  # skip entries whose take-profit is closer than min_rr × the stop distance
    hold_hours: float | None = None  # None: 72 (magnet), 4 (continuation), 48 (exhaustion)
    cons_q: float = 0.95
    cons_days: float = 30.0
    fuel_drop: float = 0.6
    oi_drop: float = 0.03
    drop_atr: float = 2.0
    arm_hours: float = 12.0
    atr_n: int = 14
    liqmap: LiqMapParams = LiqMapParams()  # the estimator (config [liqmap])
    realised: Literal["auto", "model", "realised"] = "auto"  # continuation fuel: realised liquidations or the map


def _first_after(setup: pd.Series, trigger: pd.Series, within: int) -> pd.Series:
    """True on the first ``trigger`` bar at or after the latest ``setup`` bar, at most ``within`` bars
    after it (one entry per setup episode; a new setup re-arms)."""
    n = len(setup)
    pos = np.arange(n)
    last = pd.Series(np.where(setup.to_numpy(dtype=bool), pos, np.nan)).ffill().to_numpy()
    trig = trigger.to_numpy(dtype=bool)
    count = np.cumsum(trig)
    start = np.where(np.isnan(last), 0, last).astype(np.int64)
    before = np.where(start > 0, count[np.maximum(start - 1, 0)], 0)
    ok = ~np.isnan(last) & (pos - start < within) & trig & (count - before == 1)
    return pd.Series(ok, index=setup.index)


def realised_params(p: Params) -> RealisedParams:
    """The realised-liquidation features the continuation rule reads: its own window and quantile."""
    return RealisedParams(window_days=p.cons_days, cascade_quantile=p.cons_q, min_history=_CONS_MIN_HISTORY)


class AsymmetryZ:
    """The magnet's past-only z-score of ``A(band)`` over ``z_days``, per band, computed on first use
    over the whole frame and kept (the optimiser's trials share it: 9 ms a trial otherwise).

    The z-score at a bar reads only the ``z_days`` before it, so the values on any slice of the frame
    that keeps its warm-up equal the slice's own z-score there.
    """

    def __init__(self, liq: pd.DataFrame, z_days: float) -> None:
        self.liq, self.z_days = liq, z_days
        self._z: dict[int, pd.Series] = {}

    def on(self, band: int, index: pd.DatetimeIndex) -> pd.Series:
        """The z-score of band ``band`` on the bars ``index`` (a subset of the frame's)."""
        if band not in self._z:
            tf = infer_timeframe(self.liq.index)
            self._z[band] = rolling_zscore(self.liq[f"liq_asym_{band}"], bars_for(self.z_days * 24.0, tf),
                                           bars_for(self.z_days * 6.0, tf))
        z = self._z[band]
        return z if z.index.equals(index) else z.reindex(index)


def features(frame: pd.DataFrame, p: Params, liq: pd.DataFrame | None = None) -> dict[str, Any]:
    """``{"liq": liquidation features, "asym_z": AsymmetryZ}``, plus ``"realised"`` (realised-liquidation
    features) when the frame has realised liquidations and ``p.realised != "model"``: depends on
    ``p.liqmap``, ``p.z_days``, ``p.realised``, ``p.cons_days`` and ``p.cons_q`` only (:data:`SPEC`'s
    ``feature_params``).

    ``liq``: this frame's :func:`liq_features` for ``p.liqmap`` when already computed (confluence).
    """
    out: dict[str, Any] = {"liq": liq if liq is not None else liq_features(frame, p.liqmap)}
    out["asym_z"] = AsymmetryZ(out["liq"], p.z_days)
    if p.realised != "model" and has_realised(frame):
        out["realised"] = realised_features(frame, realised_params(p))
    return out


def continuation_fuel(model: pd.Series, flag: pd.Series | None, mode: str) -> pd.Series:
    """The continuation rule's fuel leg per bar: the realised cascade ``flag`` (1.0/0.0, NaN = no
    verdict) where it has a verdict, else the ``model`` leg (``"auto"``) or no entry (``"realised"``)."""
    fallback = pd.Series(False, index=model.index) if mode == "realised" else model
    if mode == "model" or flag is None:
        return fallback
    return flag.eq(1.0).where(flag.notna(), fallback).astype(bool)


def _hold_hours(p: Params) -> float:
    return p.hold_hours if p.hold_hours is not None else _DEFAULT_HOLD_HOURS[p.variant]


def _feature_warmup(p: Params) -> pd.Timedelta:
    """History before the first entry: the map's warm-up plus the z-score / quantile window."""
    window = {"magnet": p.z_days, "continuation": p.cons_days, "exhaustion": 1.0}[p.variant]
    return max(pd.Timedelta(days=warmup_days(p.liqmap) + window), bar_lookback(3 * max(p.ema_n, p.atr_n)))


def signals(frame: pd.DataFrame, p: Params, features: dict | None = None) -> pd.DataFrame:
    """``target, stop, take_profit`` on ``frame.index`` (module docstring).

    ``features``: this frame's :func:`features` (computed here when omitted).
    """
    n = len(frame)
    if n < 3:
        return flat(frame)
    tf = infer_timeframe(frame.index)
    fe = features if features is not None else _features(frame, p)
    lq = fe["liq"]
    close = frame["close"]
    P = close.to_numpy(np.float64)
    a = atr(frame, p.atr_n).to_numpy()
    day = bars_for(24.0, tf)
    hold = bars_for(_hold_hours(p), tf)
    buf = p.cluster_buf

    up_px = (P * (1.0 + lq["liq_cluster_up_dist"])).to_numpy(np.float64)
    dn_px = (P * (1.0 - lq["liq_cluster_dn_dist"])).to_numpy(np.float64)

    def long_stop(anchor: np.ndarray) -> np.ndarray:
        s = np.fmin(anchor * (1.0 - buf), P - p.stop_atr * a)  # beyond the cluster, >= stop_atr away
        return np.maximum(s, P - p.max_stop_atr * a)

    def short_stop(anchor: np.ndarray) -> np.ndarray:
        s = np.fmax(anchor * (1.0 + buf), P + p.stop_atr * a)
        return np.minimum(s, P + p.max_stop_atr * a)

    zero = np.zeros(n, dtype=bool)
    exit_long = exit_short = zero
    prog_long = prog_short = cap = None
    if p.variant == "magnet":
        A = lq[f"liq_asym_{p.band}"]
        zs = fe.get("asym_z")
        zA = (zs.on(p.band, frame.index) if isinstance(zs, AsymmetryZ) and zs.z_days == p.z_days
              else rolling_zscore(A, bars_for(p.z_days * 24.0, tf), bars_for(p.z_days * 6.0, tf)))
        ema_c = ema(close, p.ema_n)
        ret24 = close / close.shift(day) - 1.0
        up_trend = (close > ema_c) | (ret24 > 0)
        dn_trend = (close < ema_c) | (ret24 < 0)
        go_long = (A >= p.theta_a) & (zA >= p.z_min) & up_trend & np.isfinite(up_px)
        go_short = (A <= -p.theta_a) & (zA <= -p.z_min) & dn_trend & np.isfinite(dn_px)
        long_tp, short_tp = up_px * (1.0 - buf), dn_px * (1.0 + buf)
        long_sl, short_sl = long_stop(dn_px), short_stop(up_px)
        exit_long, exit_short = (A < 0).to_numpy(), (A > 0).to_numpy()
        prog_long = lq["liq_consumed_short"].to_numpy(np.float64)
        prog_short = lq["liq_consumed_long"].to_numpy(np.float64)
        cap_long = p.consumed_exit * lq["liq_cluster_up_size"].to_numpy(np.float64)
        cap_short = p.consumed_exit * lq["liq_cluster_dn_size"].to_numpy(np.float64)
    elif p.variant == "continuation":
        w = bars_for(p.cons_days * 24.0, tf)
        cs, cl = lq["liq_consumed_short"], lq["liq_consumed_long"]
        q_s = past_quantile(cs.where(cs > 0), w, p.cons_q, min_periods=_CONS_MIN_HISTORY)
        q_l = past_quantile(cl.where(cl > 0), w, p.cons_q, min_periods=_CONS_MIN_HISTORY)
        rf = fe.get("realised") if p.realised != "model" else None
        fuel_long = continuation_fuel((cs > 0) & (cs >= q_s), None if rf is None else rf["liq_cascade_short"],
                                      p.realised)
        fuel_short = continuation_fuel((cl > 0) & (cl >= q_l), None if rf is None else rf["liq_cascade_long"],
                                       p.realised)
        hi, lo = frame["high"], frame["low"]
        rng = hi - lo
        go_long = fuel_long & (close >= hi - rng / 3.0) & (rng > 0)
        go_short = fuel_short & (close <= lo + rng / 3.0) & (rng > 0)
        long_tp, short_tp = up_px * (1.0 - buf), dn_px * (1.0 + buf)
        long_sl, short_sl = long_stop(dn_px), short_stop(up_px)
    else:  # exhaustion
        arm = bars_for(p.arm_hours, tf)
        fuel_l, fuel_s = lq["liq_long_below_5"], lq["liq_short_above_5"]
        collapse_l = fuel_l <= (1.0 - p.fuel_drop) * fuel_l.rolling(day, min_periods=1).max()
        collapse_s = fuel_s <= (1.0 - p.fuel_drop) * fuel_s.rolling(day, min_periods=1).max()
        if "open_interest" in frame.columns:
            oi = frame["open_interest"].astype(np.float64)
            oi_chg = oi / oi.shift(day) - 1.0
        else:
            oi_chg = pd.Series(np.nan, index=frame.index)
        oi_ok = (oi_chg <= -p.oi_drop) | oi_chg.isna()
        move = close - close.shift(day)
        atr_s = pd.Series(a, index=frame.index)
        setup_l = collapse_l & oi_ok & (move <= -p.drop_atr * atr_s)
        setup_s = collapse_s & oi_ok & (move >= p.drop_atr * atr_s)
        go_long = _first_after(setup_l, close > frame["open"], arm)
        go_short = _first_after(setup_s, close < frame["open"], arm)
        low24 = frame["low"].rolling(day, min_periods=1).min().to_numpy() - 0.25 * a
        high24 = frame["high"].rolling(day, min_periods=1).max().to_numpy() + 0.25 * a
        long_sl = np.maximum(np.fmin(low24, P - p.stop_atr * a), P - p.max_stop_atr * a)
        short_sl = np.minimum(np.fmax(high24, P + p.stop_atr * a), P + p.max_stop_atr * a)
        long_tp = np.where(np.isfinite(up_px), up_px * (1.0 - buf), P + 2.0 * (P - long_sl))
        short_tp = np.where(np.isfinite(dn_px), dn_px * (1.0 + buf), P - 2.0 * (short_sl - P))

    gl = go_long.to_numpy(dtype=bool) & np.isfinite(a)
    gs = go_short.to_numpy(dtype=bool) & np.isfinite(a)
    entry = gl.astype(np.float64) - gs.astype(np.float64)
    entry[frame.index < frame.index[0] + _feature_warmup(p)] = 0.0
    stop = np.where(entry > 0, long_sl, short_sl)
    tp = np.where(entry > 0, long_tp, short_tp)
    if p.variant != "continuation":  # a cascade trade is a short time-boxed hold, its target an exit
        short_reward = np.abs(tp - P) < p.min_rr * np.abs(P - stop)  # NaN take-profit: no filter
        entry[short_reward] = 0.0
    if p.variant == "magnet":
        cap = np.where(entry > 0, cap_long, cap_short)
    return hold_intent(
        frame,
        entry,
        stop=stop,
        take_profit=tp,
        exit_long=exit_long,
        exit_short=exit_short,
        max_hold=hold,
        progress_long=prog_long,
        progress_short=prog_short,
        progress_cap=cap,
    )


def suggest(trial: optuna.Trial) -> Params:
    """Search space: variant, band, theta_a, z_min, stop_atr, hold_hours (the rest fixed)."""
    return Params(
        variant=trial.suggest_categorical("variant", ["magnet", "continuation", "exhaustion"]),
        band=trial.suggest_categorical("band", [5, 10, 20]),
        theta_a=trial.suggest_float("theta_a", 0.3, 2.5),
        z_min=trial.suggest_float("z_min", 0.0, 2.5),
        stop_atr=trial.suggest_float("stop_atr", 1.0, 4.0),
        hold_hours=trial.suggest_float("hold_hours", 4.0, 168.0, log=True),
    )


def warmup(p: Params) -> pd.Timedelta:
    """History before the first valid signal: the features' warm-up plus one hold."""
    return _feature_warmup(p) + pd.Timedelta(hours=_hold_hours(p))


_features = features  # ``signals`` takes a ``features`` argument that shadows the hook

SPEC = StrategySpec(
    name="liq_asymmetry",
    Params=Params,
    signals=signals,
    suggest=suggest,
    warmup=warmup,
    features=features,
    feature_params=("liqmap", "z_days", "realised", "cons_days", "cons_q"),
    description="Liquidation-map asymmetry: trade toward the heavier side of the map (magnet), with a "
                "liquidation cascade (continuation), or after a long/short flush (exhaustion).",
)
