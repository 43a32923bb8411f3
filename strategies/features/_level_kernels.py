"""Numba kernels of `strategies.features.levels` (pivots, the per-bar level scorer).

Called through `strategies.features.kernels.call`, so the host may run them precompiled; the
model is documented in `strategies.features.levels`.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def find_pivots(high, low, left, right):  # pragma: no cover - numba
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


@nb.njit(cache=True)
def levels_kernel(
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
