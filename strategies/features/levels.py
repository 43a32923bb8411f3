"""Support/resistance zones without look-ahead (docs/methods.md §C.1–C.3).

Pipeline, recomputed at every bar ``t`` from data up to its close:

1. **Pivots** (§C.1). Pivot high at ``j`` with ``(L, R)``: ``H_j > max(H_{j−L..j−1})`` and
   ``H_j ≥ max(H_{j+1..j+R})`` (pivot lows mirror this). It is known only at the close of ``j+R``; the
   level set at ``t`` uses pivots with ``j + R ≤ t`` and ``j > t − W`` (the last ``window`` bars).
2. **Zones** (§C.2, tolerance clustering). Pivot highs and lows together, in log price, single-linkage
   with threshold ``ε = eps_atr·ATR14_t/P_t`` (consecutive sorted pivots closer than ε join). A cluster
   with at least ``min_pivots`` members is a zone: level = median member, ``[lo, hi]`` = member range
   widened to at least ``level ± zone_atr·ATR``.
3. **Volume profile** (§C.2). Each bar's volume is spread uniformly over the log-price bins
   (width ``vp_bin`` = 0.1 %) that its ``[low, high]`` spans, over the trailing ``vp_hours``. POC = the
   fullest bin; an HVN is a local maximum with ``≥ hvn_mult ×`` the mean bin of the window's price
   range, an LVN a bin ``≤ lvn_mult ×`` that mean. The histogram is kept incrementally (add the new bar,
   subtract the one leaving), on an absolute bin grid ``⌊ln P/δ⌋``, so every prefix gives the same bins.
4. **Score** (§C.3). Touches = member pivots + rejections (bars of the window, not member pivots, that
   open beyond the zone, wick into it and close back outside on the same side). With ``w_i =
   exp(−age_i/τ)`` (τ = ``tau_days``), ``v_i = 1 + ln(1 + vol_i/median_vol_W)``, ``hs`` = bar span of the
   touches / W, ``vt = ((hi − lo)/range_W)/n``::

       score = [(Σ w_i·v_i)·(0.5 + hs)/(1 + 10·vt)
                + round_bonus·1[major round number in zone] + hvn_bonus·1[HVN bin in zone]
                + liq_bonus·1[dense liquidation cluster in zone]] · flip_keep^flips

   where major round numbers are multiples of ``5·10^{⌊log10 P⌋−1}`` (§C.2), the liquidation clusters
   are the nearest dense clusters above/below of :mod:`strategies.features.liquidation_map` when given.
5. **Role reversal** (§C.3). After the zone's last member pivot, a close beyond ``hi + break_atr·ATR``
   (or below ``lo − break_atr·ATR``) decides the side of price; each change of that side is a confirmed
   break that flips support ↔ resistance and multiplies the score by ``flip_keep`` (50 %). The role at
   ``t`` is simply the side of price: zones whose level is above the close are resistance, below are
   support.
6. **Output**: the 3 best-scored zones above and the 3 best below the close, each triple ordered by
   distance (``_1`` = nearest of the three).

The per-bar loop is compiled with numba; a year of 5m bars takes seconds. Everything at row ``t``
depends on rows ``≤ t`` only (prefix test of docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from strategies.features import kernels
from strategies.features.indicators import atr as atr_wilder
from strategies.features.indicators import bars_for, infer_timeframe

__all__ = [
    "LEVEL_COLUMNS",
    "LevelParams",
    "Zone",
    "level_features",
    "liq_cluster_prices",
    "pivots",
    "zones_at",
]

N_LEVELS = 3
LEVEL_COLUMNS: tuple[str, ...] = tuple(
    f"level_{side}_{i}_{f}" for side in ("up", "dn") for i in range(1, N_LEVELS + 1) for f in ("lo", "hi", "score")
) + ("level_atr", "level_n_zones", "vp_poc", "vp_node")


class LevelParams(BaseModel):
    """Parameters of :func:`level_features`; defaults are the project defaults of docs/methods.md §C."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pivot_left: int = 5
    pivot_right: int = 5
    window: int = 500  # bars of pivots and touches (W)
    atr_n: int = 14
    eps_atr: float = 0.5  # clustering threshold ε = eps_atr·ATR/P
    zone_atr: float = 0.25  # zone at least level ± zone_atr·ATR
    min_pivots: int = 2
    tau_days: float = 30.0
    break_atr: float = 0.25
    flip_keep: float = 0.5
    vp_hours: float = 720.0  # 30 d
    vp_bin: float = 0.001
    hvn_mult: float = 1.5
    lvn_mult: float = 0.5
    round_bonus: float = 0.5
    hvn_bonus: float = 0.5
    liq_bonus: float = 0.5


@dataclass(frozen=True)
class Zone:
    """One support/resistance zone at a given bar (see :func:`zones_at`)."""

    lo: float
    hi: float
    level: float
    score: float
    n_pivots: int
    n_rejections: int
    flips: int
    role: str  # "support" (below the close) or "resistance" (above)
    round_major: bool
    hvn: bool
    liq_cluster: bool


# --------------------------------------------------------------------------------------------------
# pivots
# --------------------------------------------------------------------------------------------------


def pivots(frame: pd.DataFrame, left: int = 5, right: int = 5) -> pd.DataFrame:
    """Confirmed pivots of ``frame`` (docs/methods.md §C.1), one row per pivot, in order of the pivot bar.

    Columns: ``kind`` ("high"/"low"), ``price``, ``pivot_time`` (open time of bar ``j``),
    ``confirm_time`` (open time of bar ``j + right``: the pivot is known at that bar's close and may be
    used from that row on), ``pivot_idx``, ``confirm_idx``. Pivots whose right window is not complete
    in ``frame`` are not listed.
    """
    ph, pl = kernels.call(
        "strategies.features._level_kernels:find_pivots",
        frame["high"].to_numpy(np.float64), frame["low"].to_numpy(np.float64), int(left), int(right)
    )
    rows = []
    for kind, mask, col in (("high", ph, "high"), ("low", pl, "low")):
        for j in np.flatnonzero(mask):
            rows.append((kind, float(frame[col].iat[j]), frame.index[j], frame.index[j + right], j, j + right))
    out = pd.DataFrame(rows, columns=["kind", "price", "pivot_time", "confirm_time", "pivot_idx", "confirm_idx"])
    if out.empty:
        out = out.astype({"price": np.float64, "pivot_idx": np.int64, "confirm_idx": np.int64})
    return out.sort_values(["pivot_idx", "kind"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# the per-bar kernel
# --------------------------------------------------------------------------------------------------


def liq_cluster_prices(frame: pd.DataFrame, liq: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """Prices of the nearest dense liquidation clusters above and below the close (NaN if none).

    ``liq`` holds the ``liq_cluster_up_dist``/``liq_cluster_dn_dist`` columns of
    :func:`strategies.features.liquidation_map.liquidation_features` (relative distances from the close,
    positive on both sides).
    """
    n = len(frame)
    if liq is None or "liq_cluster_up_dist" not in liq.columns:
        return np.full(n, np.nan), np.full(n, np.nan)
    c = frame["close"].to_numpy(np.float64)
    up = c * (1.0 + np.abs(liq["liq_cluster_up_dist"].to_numpy(np.float64)))
    dn = c * (1.0 - np.abs(liq["liq_cluster_dn_dist"].to_numpy(np.float64)))
    return up, dn


def _run(frame: pd.DataFrame, p: LevelParams, liq: pd.DataFrame | None, dump: bool):
    h = frame["high"].to_numpy(np.float64)
    lw = frame["low"].to_numpy(np.float64)
    vol = frame["volume"].astype(np.float64)
    tf = infer_timeframe(frame.index)
    vp_window = bars_for(p.vp_hours, tf)
    a = atr_wilder(frame, p.atr_n).to_numpy()
    medvol = vol.rolling(p.window, min_periods=1).median().to_numpy()
    medvol = np.where(medvol > 0, medvol, np.inf)  # no volume: every volume weight is 1
    rng_hi = frame["high"].rolling(p.window, min_periods=1).max().to_numpy(np.float64)
    rng_lo = frame["low"].rolling(p.window, min_periods=1).min().to_numpy(np.float64)
    vp_hi = frame["high"].rolling(vp_window, min_periods=1).max().to_numpy(np.float64)
    vp_lo = frame["low"].rolling(vp_window, min_periods=1).min().to_numpy(np.float64)
    delta = float(np.log1p(p.vp_bin))
    b_off = int(np.floor(np.log(np.nanmin(lw)) / delta)) - 2
    nbins = int(np.floor(np.log(np.nanmax(h)) / delta)) - b_off + 3
    tdays = (frame.index - frame.index[0]) / pd.Timedelta(days=1)
    ph, pl = kernels.call("strategies.features._level_kernels:find_pivots", h, lw, int(p.pivot_left), int(p.pivot_right))
    liq_up, liq_dn = liq_cluster_prices(frame, liq)
    return a, kernels.call(
        "strategies.features._level_kernels:levels_kernel",
        frame["open"].to_numpy(np.float64), h, lw, frame["close"].to_numpy(np.float64), vol.to_numpy(),
        a, medvol, rng_hi, rng_lo, vp_lo, vp_hi, np.asarray(tdays, dtype=np.float64), ph, pl,
        liq_up, liq_dn, int(p.pivot_right), int(p.window), float(p.eps_atr), float(p.zone_atr),
        int(p.min_pivots), float(p.tau_days), float(p.break_atr), float(p.flip_keep), delta, int(vp_window),
        b_off, nbins, float(p.hvn_mult), float(p.lvn_mult), float(p.round_bonus), float(p.hvn_bonus),
        float(p.liq_bonus), dump,
    )


def level_features(
    frame: pd.DataFrame, params: LevelParams = LevelParams(), liq: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Top support/resistance zones at every bar (module docstring; docs/methods.md §C).

    Columns ``level_{up,dn}_{1,2,3}_{lo,hi,score}`` (zones above / below the close, ``_1`` nearest of
    the three best-scored; NaN when fewer exist), ``level_atr`` (the ATR used), ``level_n_zones``,
    ``vp_poc`` (volume-profile point of control) and ``vp_node`` (+1 HVN / −1 LVN / 0 at the close's bin).
    ``liq``: optional liquidation features on the same index for the liquidation-cluster bonus.
    """
    n = len(frame)
    if n < 2:
        return pd.DataFrame(np.nan, index=frame.index, columns=list(LEVEL_COLUMNS))
    a, (up, dn, poc, node, nz, _) = _run(frame, params, liq, dump=False)
    data: dict[str, np.ndarray] = {}
    for side, arr in (("up", up), ("dn", dn)):
        for i in range(N_LEVELS):
            for f, col in (("lo", 0), ("hi", 1), ("score", 2)):
                data[f"level_{side}_{i + 1}_{f}"] = arr[:, i, col]
    data["level_atr"] = a
    data["level_n_zones"] = nz
    data["vp_poc"] = poc
    data["vp_node"] = node
    return pd.DataFrame(data, index=frame.index)


def zones_at(
    frame: pd.DataFrame,
    params: LevelParams = LevelParams(),
    at: pd.Timestamp | str | int | None = None,
    liq: pd.DataFrame | None = None,
) -> list[Zone]:
    """All zones known at the close of bar ``at`` (a timestamp of the index, or a position; default the
    last bar), sorted by level, for reports and plots. Same computation as :func:`level_features`."""
    if at is None:
        k = len(frame) - 1
    elif isinstance(at, (int, np.integer)):
        k = int(at) % len(frame)
    else:
        k = int(frame.index.get_loc(pd.Timestamp(at)))
    sub = frame.iloc[: k + 1]
    if len(sub) < 2:
        return []
    sub_liq = liq.iloc[: k + 1] if liq is not None else None
    _, (*_, zones) = _run(sub, params, sub_liq, dump=True)
    price = float(sub["close"].iat[-1])
    out = [
        Zone(
            lo=float(z[0]), hi=float(z[1]), level=float(z[2]), score=float(z[3]), n_pivots=int(z[4]),
            n_rejections=int(z[5]), flips=int(z[6]), role="resistance" if z[2] > price else "support",
            round_major=bool(z[7]), hvn=bool(z[8]), liq_cluster=bool(z[9]),
        )
        for z in zones
    ]
    return sorted(out, key=lambda z: z.level)
