"""Numba kernel of `strategies.sr_levels`: bounce, break and retest entries against the zones.

Called through `strategies.features.kernels.call`, so the host may run it precompiled; the rules
are documented in `strategies.sr_levels`.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def entries_kernel(
    open_, high, low, close, volume, vol_avg, atr, up, dn, liq_up, liq_dn, do_bounce, do_break, do_retest,
    min_score, wick_frac, stop_atr, break_atr, vol_mult, retest_bars, rr, min_rr, liq_skip_atr,
):  # pragma: no cover - numba
    n = close.shape[0]
    side = np.zeros(n)
    stop = np.full(n, np.nan)
    tp = np.full(n, np.nan)
    # armed retests: long (broke up through a resistance), short (broke down through a support)
    rl_lo = np.nan
    rl_hi = np.nan
    rl_exp = -1
    rs_lo = np.nan
    rs_hi = np.nan
    rs_exp = -1
    for t in range(4, n):
        a = atr[t]
        c = close[t]
        if np.isnan(a) or np.isnan(c):
            continue
        rng = high[t] - low[t]
        L = 0  # 1 if a long entry was found
        S = 0
        ls = np.nan
        ss = np.nan
        # target edges at t: nearest resistance lo above, nearest support hi below
        res_edge = up[t, 0, 0]
        sup_edge = dn[t, 0, 1]

        # ---- bounce
        if do_bounce and rng > 0:
            for i in range(3):
                lo = dn[t, i, 0]
                hi = dn[t, i, 1]
                if np.isnan(lo) or dn[t, i, 2] < min_score:
                    continue
                if low[t] <= hi and c > hi and min(open_[t], c) - low[t] >= wick_frac * rng:
                    if close[t - 1] < lo or close[t - 2] < lo or close[t - 3] < lo:
                        continue
                    s = lo - stop_atr * a
                    if liq_dn[t] >= s - liq_skip_atr * a and liq_dn[t] <= lo:
                        continue
                    L = 1
                    ls = s
                    break
            for i in range(3):
                lo = up[t, i, 0]
                hi = up[t, i, 1]
                if np.isnan(lo) or up[t, i, 2] < min_score:
                    continue
                if high[t] >= lo and c < lo and high[t] - max(open_[t], c) >= wick_frac * rng:
                    if close[t - 1] > hi or close[t - 2] > hi or close[t - 3] > hi:
                        continue
                    s = hi + stop_atr * a
                    if liq_up[t] <= s + liq_skip_atr * a and liq_up[t] >= hi:
                        continue
                    S = 1
                    ss = s
                    break

        # ---- breakout through the zones of bar t-1, and the retest arming
        for i in range(3):
            lo = up[t - 1, i, 0]
            hi = up[t - 1, i, 1]
            if np.isnan(lo) or up[t - 1, i, 2] < min_score:
                continue
            if c > hi + break_atr * a and close[t - 1] <= hi + break_atr * atr[t - 1]:
                if do_break and L == 0 and volume[t] >= vol_mult * vol_avg[t]:
                    L = 1
                    ls = lo - break_atr * a
                if do_retest:
                    rl_lo = lo
                    rl_hi = hi
                    rl_exp = t + retest_bars
                break
        for i in range(3):
            lo = dn[t - 1, i, 0]
            hi = dn[t - 1, i, 1]
            if np.isnan(lo) or dn[t - 1, i, 2] < min_score:
                continue
            if c < lo - break_atr * a and close[t - 1] >= lo - break_atr * atr[t - 1]:
                if do_break and S == 0 and volume[t] >= vol_mult * vol_avg[t]:
                    S = 1
                    ss = hi + break_atr * a
                if do_retest:
                    rs_lo = lo
                    rs_hi = hi
                    rs_exp = t + retest_bars
                break

        # ---- retest of an armed break (not on the breaking bar itself)
        if do_retest and rl_exp >= t and rl_exp - retest_bars < t:
            if c < rl_lo:
                rl_exp = -1
            elif low[t] <= rl_hi and c > rl_hi:
                if L == 0:
                    L = 1
                    ls = rl_lo - break_atr * a
                rl_exp = -1
        if do_retest and rs_exp >= t and rs_exp - retest_bars < t:
            if c > rs_hi:
                rs_exp = -1
            elif high[t] >= rs_lo and c < rs_lo:
                if S == 0:
                    S = 1
                    ss = rs_hi + break_atr * a
                rs_exp = -1

        if L == 1 and S == 0:
            risk = c - ls
            target = res_edge if (not np.isnan(res_edge) and res_edge > c) else c + rr * risk
            if risk > 0 and target - c >= min_rr * risk:
                side[t] = 1.0
                stop[t] = ls
                tp[t] = target
        elif S == 1 and L == 0:
            risk = ss - c
            target = sup_edge if (not np.isnan(sup_edge) and sup_edge < c) else c - rr * risk
            if risk > 0 and c - target >= min_rr * risk:
                side[t] = -1.0
                stop[t] = ss
                tp[t] = target
    return side, stop, tp
