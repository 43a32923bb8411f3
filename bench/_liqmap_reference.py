"""Straightforward NumPy reference of the liquidation-map estimator (docs/methods.md §A.3, §A.4).

It implements the same model as :mod:`strategies.features.liquidation_map`, written the obvious
way: a flat array of lots, and every step of every bar is a vectorised NumPy operation over
all lots created within the window. Each bar rebuilds the binned map with ``np.bincount``, and
the features come from masks over bin centres. It shares the input preparation
(``prepare_inputs``: columns, grid, tier factors) and nothing else. The test suite checks the
numba kernel against it, and ``bench/liqmap.py`` times it.
"""

from __future__ import annotations

import math
import time

import numpy as np

from strategies.features.liquidation_map import BANDS, LiqMapInputs

_EIGHT_HOURS_NS = 8.0 * 3600.0 * 1e9


def _features(p: float, v_long: np.ndarray, n_long: np.ndarray, v_short: np.ndarray, n_short: np.ndarray,
              centres: np.ndarray, range_frac: float, h: float, q: float, eps: float) -> list[float]:
    up = (centres > p) & (centres <= p * (1.0 + range_frac)) & (n_short > 0)
    dn = (centres < p) & (centres >= p * (1.0 - range_frac)) & (n_long > 0)
    s_up = [float(v_short[up & (centres <= p * (1.0 + x))].sum()) for x in BANDS]
    l_dn = [float(v_long[dn & (centres >= p * (1.0 - x))].sum()) for x in BANDS]
    asym = [math.log((s + eps) / (ll + eps)) for s, ll in zip(s_up, l_dn, strict=True)]
    tot = s_up[1] + l_dn[1]
    imb = (s_up[1] - l_dn[1]) / tot if tot > 0 else 0.0
    dist = np.abs(np.log(centres / p))
    g_up = float((v_short[up] * np.exp(-dist[up] / h)).sum())
    g_dn = float((v_long[dn] * np.exp(-dist[dn] / h)).sum())
    out = s_up + l_dn + asym + [imb, g_up, g_dn, math.log((g_up + eps) / (g_dn + eps))]
    for mask, vals, order in ((up, v_short, 1), (dn, v_long, -1)):
        idx = np.flatnonzero(mask)[::order]  # nearest to price first
        if idx.size == 0:
            out += [math.nan, math.nan]
            continue
        thr = np.quantile(vals[idx], q)
        dense = vals[idx] >= thr
        first = int(np.argmax(dense))
        i0 = idx[first]
        run = 0.0
        # contiguous in bin index: same side, non-empty, dense
        i = i0
        while mask[i] and vals[i] >= thr:
            run += vals[i]
            i += order
            if i < 0 or i >= centres.size:
                break
        d = centres[i0] / p - 1.0 if order == 1 else 1.0 - centres[i0] / p
        out += [float(d), float(run)]
    return out


def reference_run(inputs: LiqMapInputs, snapshot_positions: np.ndarray | None = None,
                  n_bars: int | None = None,
                  clock: list[tuple[int, float]] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the reference over the first ``n_bars`` bars (all by default).

    Returns ``(features [n, 19], long map [len(snapshot_positions), bins], short map)``. When
    ``clock`` is a list, ``(bars done, perf_counter())`` is appended every 1,000 bars.
    """
    prm = inputs.params
    n = len(inputs.open_ns) if n_bars is None else min(n_bars, len(inputs.open_ns))
    nb = inputs.centres.size
    n_tiers = inputs.f_long.size
    cap = n * n_tiers
    level = np.zeros((2, cap))
    amount = np.zeros((2, cap))
    born = np.zeros((2, cap), dtype=np.int64)
    alive = np.zeros((2, cap), dtype=bool)
    count = [0, 0]
    snaps = [] if snapshot_positions is None else list(snapshot_positions)
    snap_l = np.zeros((len(snaps), nb))
    snap_s = np.zeros((len(snaps), nb))
    feats = np.full((n, 19), np.nan)

    oi_prev = math.nan
    last_rate = math.nan
    last_settle = None
    min_interval = math.inf
    interval_param = 0.0 if prm.funding_interval_hours is None else prm.funding_interval_hours * 3600e9
    range_frac = prm.range_pct / 100.0
    first = [0, 0]  # first lot index that can still be inside the window

    for k in range(n):
        if clock is not None and k % 1000 == 0:
            clock.append((k, time.perf_counter()))
        t = int(inputs.open_ns[k])
        sl = [slice(first[s], count[s]) for s in range(2)]
        if k > 0 and math.isfinite(inputs.tau_ns):
            dec = math.exp(-(t - int(inputs.open_ns[k - 1])) / inputs.tau_ns)
            for s in range(2):
                amount[s, sl[s]] *= dec
        for s in range(2):
            old = (t - born[s, sl[s]]) > inputs.window_ns
            alive[s, sl[s]] &= ~old
            first[s] += int(np.argmin(old)) if not old.all() else int(old.size)
            sl[s] = slice(first[s], count[s])

        hit_l = alive[0, sl[0]] & (level[0, sl[0]] >= inputs.cons_low[k])
        c_long = float(amount[0, sl[0]][hit_l].sum())
        alive[0, sl[0]] &= ~hit_l
        hit_s = alive[1, sl[1]] & (level[1, sl[1]] <= inputs.cons_high[k])
        c_short = float(amount[1, sl[1]][hit_s].sum())
        alive[1, sl[1]] &= ~hit_s

        c = inputs.close[k]
        d_oi = 0.0
        q = inputs.open_interest[k]
        oi_before = oi_prev * c
        if np.isfinite(q):
            if np.isfinite(oi_prev):
                d_oi = (q - oi_prev) * c
            oi_prev = q
        elif not np.isfinite(oi_prev):  # no open interest seen yet: infer entries from volume
            v = inputs.volume[k]
            if np.isfinite(v) and v > 0:
                d_oi = prm.volume_oi_fraction * v * c
        r = inputs.funding[k]
        if np.isfinite(r):
            if last_settle is not None and t > last_settle:
                min_interval = min(min_interval, float(t - last_settle))
            last_settle = t
            last_rate = float(r)

        if d_oi < 0:
            resid = -d_oi - c_long - c_short
            if resid > 0:
                tot = [float(amount[s, sl[s]][alive[s, sl[s]]].sum()) for s in range(2)]
                if prm.removal_scale == "relative":
                    resid = (min(resid / oi_before, 1.0) if oi_before > 0 else 1.0) * (tot[0] + tot[1])
                if prm.removal == "proportional":
                    frac = resid / (tot[0] + tot[1]) if tot[0] + tot[1] > 0 else 0.0
                    for s in range(2):
                        if frac >= 1.0:
                            alive[s, sl[s]] = False
                        elif frac > 0:
                            amount[s, sl[s]] *= 1.0 - frac
                else:
                    o = inputs.open[k]
                    if c > o:
                        r_s = prm.close_share * resid
                        r_l = resid - r_s
                    elif c < o:
                        r_l = prm.close_share * resid
                        r_s = resid - r_l
                    else:
                        r_l = 0.5 * resid
                        r_s = resid - r_l
                    take = [min(tot[0], r_l + max(0.0, r_s - tot[1])), min(tot[1], r_s + max(0.0, r_l - tot[0]))]
                    for s in range(2):
                        if tot[s] > 0 and take[s] > 0:
                            if take[s] >= tot[s]:
                                alive[s, sl[s]] = False
                            else:
                                amount[s, sl[s]] *= 1.0 - take[s] / tot[s]

        if d_oi > 0:
            o, h, lw = inputs.open[k], inputs.high[k], inputs.low[k]
            tb, v = inputs.taker_buy[k], inputs.volume[k]
            if np.isfinite(tb) and np.isfinite(v) and v > 0:
                x = min(max(tb / v, 0.0), 1.0) - 0.5
                w_long = 0.5 if x == 0 else min(max(0.5 + prm.kappa * x, 0.0), 1.0)
            elif prm.side_rule == "colour":
                w_long = 1.0 if c > o else (0.0 if c < o else 0.5)
            else:
                x = 0.5 * (c - o) / (h - lw) if h > lw else 0.0
                w_long = 0.5 if x == 0 else min(max(0.5 + prm.kappa * x, 0.0), 1.0)
            if prm.funding_tilt and math.isfinite(last_rate):
                interval = interval_param
                if interval <= 0:
                    interval = min_interval if math.isfinite(min_interval) else _EIGHT_HOURS_NS
                r8 = last_rate * (_EIGHT_HOURS_NS / interval)
                w_long = min(max(w_long + prm.funding_tilt_max
                                 * math.tanh(prm.funding_tilt_scale * (r8 - prm.funding_baseline)), 0.0), 1.0)
            ep = c if prm.entry_price == "close" else (h + lw + c) / 3.0
            for s, share, fac in ((0, w_long, inputs.f_long), (1, 1.0 - w_long, inputs.f_short)):
                a = d_oi * share * inputs.weights
                keep = a > 0
                m = int(keep.sum())
                j = count[s]
                level[s, j:j + m] = ep * fac[keep]
                amount[s, j:j + m] = a[keep]
                born[s, j:j + m] = t
                alive[s, j:j + m] = True
                count[s] += m

        maps = []
        for s in range(2):
            live = np.flatnonzero(alive[s, first[s]:count[s]]) + first[s]
            b = np.clip(np.searchsorted(inputs.edges, level[s, live], side="right") - 1, 0, nb - 1)
            maps.append((np.bincount(b, weights=amount[s, live], minlength=nb), np.bincount(b, minlength=nb)))
        (v_long, n_long), (v_short, n_short) = maps
        if np.isfinite(oi_prev):
            oi_usd = oi_prev * c
        else:
            oi_usd = 0.5 * (v_long.sum() + v_short.sum())
        eps = max(1e-6 * oi_usd, 1.0)
        feats[k, :17] = _features(c, v_long, n_long, v_short, n_short, inputs.centres, range_frac,
                                  prm.kernel_h, prm.dense_quantile, eps)
        feats[k, 17] = c_long
        feats[k, 18] = c_short
        for row, pos in enumerate(snaps):
            if pos == k:
                snap_l[row] = v_long
                snap_s[row] = v_short
    if clock is not None:
        clock.append((n, time.perf_counter()))
    return feats, snap_l, snap_s
