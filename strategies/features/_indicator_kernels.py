"""Numba kernels of `strategies.features.indicators` (rolling statistics, holding an intent).

Called through `strategies.features.kernels.call`, so the host may run them precompiled; the
documented behaviour is on the wrappers in `strategies.features.indicators`.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def zscore_kernel(x, window, min_periods, robust, sigma_floor):  # pragma: no cover - numba
    n = x.shape[0]
    out = np.full(n, np.nan)
    buf = np.empty(window)
    for k in range(n):
        if np.isnan(x[k]):
            continue
        m = 0
        for j in range(max(0, k - window), k):
            if not np.isnan(x[j]):
                buf[m] = x[j]
                m += 1
        if m < min_periods or m < 2:
            continue
        vals = buf[:m]
        if robust:
            centre = np.median(vals)
            scale = 1.4826 * np.median(np.abs(vals - centre))
        else:
            centre = vals.mean()
            ss = 0.0
            for v in vals:
                ss += (v - centre) * (v - centre)
            scale = np.sqrt(ss / (m - 1))
        if scale < sigma_floor:
            scale = sigma_floor
        if scale == 0.0:
            out[k] = 0.0 if x[k] == centre else np.sign(x[k] - centre) * np.inf
        else:
            out[k] = (x[k] - centre) / scale
    return out


@nb.njit(cache=True)
def percentile_kernel(x, window, min_periods):  # pragma: no cover - numba
    n = x.shape[0]
    out = np.full(n, np.nan)
    for k in range(n):
        if np.isnan(x[k]):
            continue
        less = 0
        equal = 0
        m = 0
        for j in range(max(0, k - window), k):
            v = x[j]
            if np.isnan(v):
                continue
            m += 1
            if v < x[k]:
                less += 1
            elif v == x[k]:
                equal += 1
        if m < min_periods or m == 0:
            continue
        out[k] = (less + 0.5 * equal) / m
    return out


@nb.njit(cache=True)
def intent_kernel(
    entry, size, stop_px, tp_px, exit_long, exit_short, prog_long, prog_short, prog_cap, max_hold, close,
):  # pragma: no cover - numba
    n = entry.shape[0]
    target = np.zeros(n)
    stop = np.full(n, np.nan)
    tp = np.full(n, np.nan)
    pos = 0
    mag = 0.0
    cur_stop = np.nan
    cur_tp = np.nan
    t_entry = -1
    acc = 0.0
    cap = np.inf
    for t in range(n):
        side = entry[t]
        c = close[t]
        s = stop_px[t]
        valid = side != 0 and not np.isnan(c) and size[t] > 0
        if valid and not np.isnan(s):
            valid = (side > 0 and s < c) or (side < 0 and s > c)
        if valid:  # a new entry event replaces whatever was held (same side: re-armed; opposite: flip)
            pos = side
            mag = min(size[t], 1.0)
            cur_stop = s
            cur_tp = tp_px[t]
            if not np.isnan(cur_tp) and ((side > 0 and cur_tp <= c) or (side < 0 and cur_tp >= c)):
                cur_tp = np.nan
            t_entry = t
            acc = 0.0
            cap = prog_cap[t] if not np.isnan(prog_cap[t]) else np.inf
        elif pos != 0:
            done = False
            if pos > 0:
                if not np.isnan(prog_long[t]):
                    acc += prog_long[t]
                done = exit_long[t]
            else:
                if not np.isnan(prog_short[t]):
                    acc += prog_short[t]
                done = exit_short[t]
            if acc >= cap or (max_hold > 0 and t - t_entry >= max_hold):
                done = True
            if done:
                pos = 0
                cur_stop = np.nan
                cur_tp = np.nan
        if pos != 0:
            target[t] = pos * mag
            stop[t] = cur_stop
            tp[t] = cur_tp
    return target, stop, tp
