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

import numba as nb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

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


@nb.njit(cache=True)
def _find_pivots(high, low, left, right):  # pragma: no cover - numba
    n = high.shape[0]
    ph = np.zeros(n, dtype=np.bool_)
    pl = np.zeros(n, dtype=np.bool_)
    for j in range(left, n - right):
        h = high[j]
        ok = True
        for i in range(j - left, j):
            if not high[i] < h:
                ok = False
                break
        if ok:
            for i in range(j + 1, j + right + 1):
                if high[i] > h:
                    ok = False
                    break
        ph[j] = ok
        lw = low[j]
        ok = True
        for i in range(j - left, j):
            if not low[i] > lw:
                ok = False
                break
        if ok:
            for i in range(j + 1, j + right + 1):
                if low[i] < lw:
                    ok = False
                    break
        pl[j] = ok
    return ph, pl


def pivots(frame: pd.DataFrame, left: int = 5, right: int = 5) -> pd.DataFrame:
    """Confirmed pivots of ``frame`` (docs/methods.md §C.1), one row per pivot, in order of the pivot bar.

    Columns: ``kind`` ("high"/"low"), ``price``, ``pivot_time`` (open time of bar ``j``),
    ``confirm_time`` (open time of bar ``j + right``: the pivot is known at that bar's close and may be
    used from that row on), ``pivot_idx``, ``confirm_idx``. Pivots whose right window is not complete
    in ``frame`` are not listed.
    """
    ph, pl = _find_pivots(
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


@nb.njit(cache=True)
def _levels_kernel(
    open_, high, low, close, volume, atr, medvol, rng_hi, rng_lo, vp_lo, vp_hi, tdays, ph, pl,
    liq_up, liq_dn, right, window, eps_atr, zone_atr, min_pivots, tau_days, break_atr, flip_keep,
    vp_delta, vp_window, b_off, nbins, hvn_mult, lvn_mult, round_bonus, hvn_bonus, liq_bonus, dump,
):  # pragma: no cover - numba
    n = close.shape[0]
    up = np.full((n, 3, 3), np.nan)  # [t, rank, (lo, hi, score)]
    dn = np.full((n, 3, 3), np.nan)
    poc = np.full(n, np.nan)
    node = np.full(n, np.nan)
    nz_out = np.zeros(n)
    hist = np.zeros(max(nbins, 1))
    total = 0.0
    cap = 2 * window + 2
    p_logp = np.empty(cap)
    p_idx = np.empty(cap, dtype=np.int64)
    z_lo = np.empty(cap)
    z_hi = np.empty(cap)
    z_lvl = np.empty(cap)
    z_sc = np.empty(cap)
    z_np = np.empty(cap, dtype=np.int64)
    z_nr = np.empty(cap, dtype=np.int64)
    z_fl = np.empty(cap, dtype=np.int64)
    z_rd = np.zeros(cap, dtype=np.bool_)
    z_hv = np.zeros(cap, dtype=np.bool_)
    z_lq = np.zeros(cap, dtype=np.bool_)
    mark = np.full(n, -1, dtype=np.int64)
    stamp = 0
    dump_n = 0
    for t in range(n):
        # ---- volume profile: add bar t, drop the bar leaving the window
        for k in (t, t - vp_window):
            if k < 0 or np.isnan(volume[k]) or not (low[k] > 0.0) or np.isnan(high[k]):
                continue
            b0 = int(np.floor(np.log(low[k]) / vp_delta)) - b_off
            b1 = int(np.floor(np.log(high[k]) / vp_delta)) - b_off
            share = volume[k] / (b1 - b0 + 1)
            sgn = 1.0 if k == t else -1.0
            for b in range(b0, b1 + 1):
                hist[b] += sgn * share
            total += sgn * volume[k]
        r0 = int(np.floor(np.log(vp_lo[t]) / vp_delta)) - b_off
        r1 = int(np.floor(np.log(vp_hi[t]) / vp_delta)) - b_off
        mean_bin = total / (r1 - r0 + 1)
        best = r0
        for b in range(r0, r1 + 1):
            if hist[b] > hist[best]:
                best = b
        poc[t] = np.exp((best + b_off + 0.5) * vp_delta)
        bc = int(np.floor(np.log(close[t]) / vp_delta)) - b_off
        if hist[bc] >= hvn_mult * mean_bin:
            node[t] = 1.0
        elif hist[bc] <= lvn_mult * mean_bin:
            node[t] = -1.0
        else:
            node[t] = 0.0

        a = atr[t]
        if np.isnan(a) or a <= 0.0:
            continue
        # ---- active confirmed pivots
        npv = 0
        start = max(0, t - window + 1)
        for j in range(start, t - right + 1):
            if ph[j]:
                p_logp[npv] = np.log(high[j])
                p_idx[npv] = j
                npv += 1
            if pl[j]:
                p_logp[npv] = np.log(low[j])
                p_idx[npv] = j
                npv += 1
        if npv == 0:
            continue
        order = np.argsort(p_logp[:npv], kind="mergesort")
        eps = eps_atr * a / close[t]
        P = close[t]
        step = 10.0 ** (np.floor(np.log10(P)) - 1.0)
        major = 5.0 * step
        rng = rng_hi[t] - rng_lo[t]
        nz = 0
        c0 = 0
        for c in range(1, npv + 1):
            if c < npv and p_logp[order[c]] - p_logp[order[c - 1]] <= eps:
                continue
            m = c - c0  # members order[c0:c]
            if m >= min_pivots:
                lo_m = np.exp(p_logp[order[c0]])
                hi_m = np.exp(p_logp[order[c - 1]])
                if m % 2 == 1:
                    lvl = np.exp(p_logp[order[c0 + m // 2]])
                else:
                    lvl = 0.5 * (np.exp(p_logp[order[c0 + m // 2 - 1]]) + np.exp(p_logp[order[c0 + m // 2]]))
                zlo = min(lo_m, lvl - zone_atr * a)
                zhi = max(hi_m, lvl + zone_atr * a)
                stamp += 1
                s = 0.0
                ntouch = 0
                tmin = t
                tmax = 0
                jlast = -1
                for q in range(c0, c):
                    j = p_idx[order[q]]
                    mark[j] = stamp
                    s += np.exp(-(tdays[t] - tdays[j]) / tau_days) * (1.0 + np.log1p(volume[j] / medvol[t]))
                    ntouch += 1
                    tmin = min(tmin, j)
                    tmax = max(tmax, j)
                    jlast = max(jlast, j)
                nrej = 0
                side = 0
                flips = 0
                for i in range(start, t + 1):
                    if mark[i] != stamp:
                        if (open_[i] > zhi and low[i] <= zhi and close[i] > zhi) or (
                            open_[i] < zlo and high[i] >= zlo and close[i] < zlo
                        ):
                            s += np.exp(-(tdays[t] - tdays[i]) / tau_days) * (
                                1.0 + np.log1p(volume[i] / medvol[t])
                            )
                            ntouch += 1
                            nrej += 1
                            tmin = min(tmin, i)
                            tmax = max(tmax, i)
                    if i > jlast and not np.isnan(atr[i]):
                        new = 0
                        if close[i] > zhi + break_atr * atr[i]:
                            new = 1
                        elif close[i] < zlo - break_atr * atr[i]:
                            new = -1
                        if new != 0:
                            if side != 0 and new != side:
                                flips += 1
                            side = new
                hs = (tmax - tmin) / window
                vt = ((zhi - zlo) / rng) / ntouch if rng > 0 else 0.0
                base = s * (0.5 + hs) / (1.0 + 10.0 * vt)
                rd = np.ceil(zlo / major) * major <= zhi
                hv = False
                b0 = max(int(np.floor(np.log(zlo) / vp_delta)) - b_off, 0)
                b1 = min(int(np.floor(np.log(zhi) / vp_delta)) - b_off, nbins - 1)
                for b in range(b0, b1 + 1):
                    if hist[b] >= hvn_mult * mean_bin and hist[b] > 0.0:
                        left_ok = b == 0 or hist[b] >= hist[b - 1]
                        right_ok = b == nbins - 1 or hist[b] >= hist[b + 1]
                        if left_ok and right_ok:
                            hv = True
                            break
                lq = (liq_up[t] >= zlo and liq_up[t] <= zhi) or (liq_dn[t] >= zlo and liq_dn[t] <= zhi)
                bonus = 0.0
                if rd:
                    bonus += round_bonus
                if hv:
                    bonus += hvn_bonus
                if lq:
                    bonus += liq_bonus
                z_lo[nz] = zlo
                z_hi[nz] = zhi
                z_lvl[nz] = lvl
                z_sc[nz] = (base + bonus) * flip_keep**flips
                z_np[nz] = m
                z_nr[nz] = nrej
                z_fl[nz] = flips
                z_rd[nz] = rd
                z_hv[nz] = hv
                z_lq[nz] = lq
                nz += 1
            c0 = c
        nz_out[t] = nz
        if dump and t == n - 1:
            dump_n = nz
        # ---- top 3 by score on each side, then ordered by distance
        for sgn in (1, -1):
            cand = np.empty(nz, dtype=np.int64)
            nc = 0
            for z in range(nz):
                if (sgn > 0 and z_lvl[z] > P) or (sgn < 0 and z_lvl[z] <= P):
                    cand[nc] = z
                    nc += 1
            if nc == 0:
                continue
            cs = cand[:nc]
            top = cs[np.argsort(-z_sc[cs], kind="mergesort")[:3]]
            dist = np.abs(z_lvl[top] - P)
            top = top[np.argsort(dist, kind="mergesort")]
            outp = up if sgn > 0 else dn
            for r in range(top.shape[0]):
                outp[t, r, 0] = z_lo[top[r]]
                outp[t, r, 1] = z_hi[top[r]]
                outp[t, r, 2] = z_sc[top[r]]
    zones = np.empty((dump_n, 10))
    for z in range(dump_n):
        zones[z, 0] = z_lo[z]
        zones[z, 1] = z_hi[z]
        zones[z, 2] = z_lvl[z]
        zones[z, 3] = z_sc[z]
        zones[z, 4] = z_np[z]
        zones[z, 5] = z_nr[z]
        zones[z, 6] = z_fl[z]
        zones[z, 7] = 1.0 if z_rd[z] else 0.0
        zones[z, 8] = 1.0 if z_hv[z] else 0.0
        zones[z, 9] = 1.0 if z_lq[z] else 0.0
    return up, dn, poc, node, nz_out, zones


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
    ph, pl = _find_pivots(h, lw, int(p.pivot_left), int(p.pivot_right))
    liq_up, liq_dn = liq_cluster_prices(frame, liq)
    return a, _levels_kernel(
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
