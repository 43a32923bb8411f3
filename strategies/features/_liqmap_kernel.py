"""Numba kernel of the liquidation-map estimator (docs/methods.md §A.3, metrics §A.4).

The model and its conventions are documented in :mod:`strategies.features.liquidation_map`;
this module holds only the compiled bar loop. Everything here takes NumPy arrays and scalars.

Data structure (why it is fast and exact):

* every *lot* (one side, one leverage tier, one bar) keeps its exact liquidation price, so the
  consumption test ``level >= low`` / ``level <= high`` is exact, not rounded to a bin;
* lots live in one ring buffer per side, in creation order, so the window ``W_map`` is exact
  (the oldest lots leave from the front) in amortised O(1) per lot;
* lots are also threaded into a linked list per price bin (creation order), and each bin keeps
  the sum of its lots, so features read bins and consumption clears whole bins: bins strictly
  beyond the bar's low/high are dropped wholesale, only the bin holding the low/high is walked
  lot by lot;
* decay and proportional removal multiply every lot of a side by the same factor, so they are
  one multiplication of a per-side ``scale``: a lot stores ``u = notional / scale(t_created)``
  and its notional now is ``u * scale(t)``. ``scale`` is renormalised to 1 before it underflows.

Per-bar cost is O(bins within ``range_pct`` of the close + lots touched).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from strategies.features.liqmap_params import N_FEATURES

LONG = 0
SHORT = 1
# Feature column positions (kept in sync with liquidation_map.FEATURE_COLUMNS).
F_S_UP = 0  # 0, 1, 2: S_up(5 %, 10 %, 20 %)
F_L_DN = 3  # 3, 4, 5: L_dn(5 %, 10 %, 20 %)
F_ASYM = 6  # 6, 7, 8: A(X)
F_IMB10 = 9
F_PULL_UP = 10
F_PULL_DN = 11
F_PULL_ASYM = 12
F_CL_UP_DIST = 13
F_CL_UP_SIZE = 14
F_CL_DN_DIST = 15
F_CL_DN_SIZE = 16
F_CONS_L = 17
F_CONS_S = 18

_RENORM_BELOW = 1e-100
_EIGHT_HOURS_NS = 8.0 * 3600.0 * 1e9


@njit(cache=True)
def bin_right(edges, x):
    """``searchsorted(edges, x, 'right') - 1``: bin ``i`` with ``edges[i] <= x < edges[i+1]``."""
    lo = 0
    hi = edges.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if edges[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@njit(cache=True)
def _bin_left(a, x):
    """``searchsorted(a, x, 'left')``."""
    lo = 0
    hi = a.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _kill_bin(s, b, head, tail, nxt, alive, bin_u, bin_n):
    """Consume every lot of bin ``b``; return the bin's stored (scaled) notional."""
    j = head[s, b]
    while j >= 0:
        alive[s, j] = False
        j = nxt[s, j]
    head[s, b] = -1
    tail[s, b] = -1
    u = bin_u[s, b]
    bin_u[s, b] = 0.0
    bin_n[s, b] = 0
    return u


@njit(cache=True)
def _consume_partial(s, b, price, head, tail, nxt, alive, level, lot_u, bin_u, bin_n):
    """Consume the lots of bin ``b`` crossed by ``price`` (inclusive); return their scaled sum."""
    prev = -1
    j = head[s, b]
    consumed = 0.0
    rest = 0.0
    n = 0
    while j >= 0:
        nj = nxt[s, j]
        if s == LONG:
            hit = level[s, j] >= price
        else:
            hit = level[s, j] <= price
        if hit:
            consumed += lot_u[s, j]
            alive[s, j] = False
            if prev < 0:
                head[s, b] = nj
            else:
                nxt[s, prev] = nj
        else:
            rest += lot_u[s, j]
            n += 1
            prev = j
        j = nj
    tail[s, b] = prev
    bin_u[s, b] = rest
    bin_n[s, b] = n
    return consumed


@njit(cache=True)
def _side_total(s, bin_u, bin_n, bound_lo, bound_hi):
    """Scaled notional of a side; shrinks the side's non-empty bounds lazily."""
    lo = bound_lo[s]
    hi = bound_hi[s]
    while lo <= hi and bin_n[s, lo] == 0:
        lo += 1
    while hi >= lo and bin_n[s, hi] == 0:
        hi -= 1
    bound_lo[s] = lo
    bound_hi[s] = hi
    total = 0.0
    for b in range(lo, hi + 1):
        total += bin_u[s, b]
    return total


@njit(cache=True)
def _clear_side(s, cap, r_start, r_end, alive, head, tail, bin_u, bin_n, bound_lo, bound_hi, scale):
    for c in range(r_start[s], r_end[s]):
        alive[s, c % cap] = False
    for b in range(max(bound_lo[s], 0), min(bound_hi[s], bin_u.shape[1] - 1) + 1):
        head[s, b] = -1
        tail[s, b] = -1
        bin_u[s, b] = 0.0
        bin_n[s, b] = 0
    bound_lo[s] = bin_u.shape[1]
    bound_hi[s] = -1
    scale[s] = 1.0


@njit(cache=True)
def liqmap_kernel(open_ns, open_, high, low, close, cons_high, cons_low, volume, open_interest,
                  taker_buy, funding, edges, centres, f_long, f_short, weights,
                  tau_ns, window_ns, kappa, side_rule, funding_tilt, tilt_max, tilt_scale,
                  funding_baseline, funding_interval_ns, proportional, relative, close_share, volume_fraction,
                  entry_close, range_frac, kernel_h, dense_q, bands, log_step, capacity, snap_row, n_snap):
    """Run the estimator over all bars; return ``(features [n, 19], long map, short map)``.

    ``side_rule``: 0 taker-buy share where present, else candle body; 1 taker share, else candle
    colour. Bars before the first finite ``open_interest`` use the volume-based inference.
    ``log_step`` is the grid's Δ. ``snap_row[k] >= 0`` stores the map after bar ``k`` in that row.
    """
    n = open_ns.shape[0]
    nb = centres.shape[0]
    n_tiers = f_long.shape[0]
    feats = np.full((n, N_FEATURES), np.nan)
    snap_l = np.zeros((n_snap, nb))
    snap_s = np.zeros((n_snap, nb))

    cap = capacity
    level = np.zeros((2, cap))
    lot_u = np.zeros((2, cap))
    lot_bin = np.zeros((2, cap), dtype=np.int64)
    lot_t = np.zeros((2, cap), dtype=np.int64)
    nxt = np.full((2, cap), -1, dtype=np.int64)
    alive = np.zeros((2, cap), dtype=np.bool_)
    r_start = np.zeros(2, dtype=np.int64)
    r_end = np.zeros(2, dtype=np.int64)
    head = np.full((2, nb), -1, dtype=np.int64)
    tail = np.full((2, nb), -1, dtype=np.int64)
    bin_u = np.zeros((2, nb))
    bin_n = np.zeros((2, nb), dtype=np.int64)
    bound_lo = np.full(2, nb, dtype=np.int64)
    bound_hi = np.full(2, -1, dtype=np.int64)
    scale = np.ones(2)
    hi_long = -1  # no long lot above this bin
    lo_short = nb  # no short lot below this bin

    # kernel weights by bin offset: exp(-j * Δ / h), Δ = log bin width
    kern = np.empty(nb)
    for j in range(nb):
        kern[j] = math.exp(-j * log_step / kernel_h)
    buf = np.empty(nb)
    heap = np.empty(nb)
    prev_thr = np.zeros(2)  # last dense threshold per side (scaled units): a pivot, not a result


    have_oi = False
    oi_prev = 0.0
    last_rate = np.nan
    last_settle = np.int64(0)
    seen_settle = False
    min_interval = np.inf

    for k in range(n):
        t = open_ns[k]
        # 1. ageing: decay, then drop lots older than the window
        if k > 0 and tau_ns < np.inf:
            dec = math.exp(-(t - open_ns[k - 1]) / tau_ns)
            scale[0] *= dec
            scale[1] *= dec
        for s in range(2):
            while r_start[s] < r_end[s]:
                j = r_start[s] % cap
                if t - lot_t[s, j] <= window_ns:
                    break
                if alive[s, j]:
                    b = lot_bin[s, j]
                    head[s, b] = nxt[s, j]
                    if head[s, b] < 0:
                        tail[s, b] = -1
                    bin_n[s, b] -= 1
                    if bin_n[s, b] == 0:
                        bin_u[s, b] = 0.0
                    else:
                        bin_u[s, b] -= lot_u[s, j]
                        if bin_u[s, b] <= 1e-9 * lot_u[s, j]:
                            # cancellation: re-add the survivors (a non-empty bin stays > 0)
                            total = 0.0
                            jj = head[s, b]
                            while jj >= 0:
                                total += lot_u[s, jj]
                                jj = nxt[s, jj]
                            bin_u[s, b] = total
                    alive[s, j] = False
                r_start[s] += 1
            if scale[s] < _RENORM_BELOW:
                for c in range(r_start[s], r_end[s]):
                    j = c % cap
                    if alive[s, j]:
                        lot_u[s, j] *= scale[s]
                for b in range(max(bound_lo[s], 0), min(bound_hi[s], nb - 1) + 1):
                    bin_u[s, b] *= scale[s]
                scale[s] = 1.0

        # 2. consume levels crossed by the bar's path (inclusive)
        lo_p = cons_low[k]
        b_lo = bin_right(edges, lo_p)
        cons_u = 0.0
        b = min(hi_long, nb - 1)
        while b > b_lo and b >= 0:
            if bin_n[LONG, b] > 0:
                cons_u += _kill_bin(LONG, b, head, tail, nxt, alive, bin_u, bin_n)
            b -= 1
        if 0 <= b_lo < nb and b_lo <= hi_long and bin_n[LONG, b_lo] > 0:
            cons_u += _consume_partial(LONG, b_lo, lo_p, head, tail, nxt, alive, level, lot_u, bin_u, bin_n)
        hi_long = min(hi_long, b_lo)
        consumed_long = cons_u * scale[LONG]

        hi_p = cons_high[k]
        b_hi = bin_right(edges, hi_p)
        cons_u = 0.0
        b = max(lo_short, 0)
        while b < b_hi and b < nb:
            if bin_n[SHORT, b] > 0:
                cons_u += _kill_bin(SHORT, b, head, tail, nxt, alive, bin_u, bin_n)
            b += 1
        if 0 <= b_hi < nb and b_hi >= lo_short and bin_n[SHORT, b_hi] > 0:
            cons_u += _consume_partial(SHORT, b_hi, hi_p, head, tail, nxt, alive, level, lot_u, bin_u, bin_n)
        lo_short = max(lo_short, b_hi)
        consumed_short = cons_u * scale[SHORT]

        # 3. open-interest change, USD at this close
        c = close[k]
        d_oi = 0.0
        q = open_interest[k]
        oi_before = oi_prev * c
        if q == q:
            if have_oi:
                d_oi = (q - oi_prev) * c
            oi_prev = q
            have_oi = True
        elif not have_oi:
            v = volume[k]
            if v == v and v > 0.0:
                d_oi = volume_fraction * v * c

        # funding settled at this close (known now)
        r = funding[k]
        if r == r:
            if seen_settle and t > last_settle:
                min_interval = min(min_interval, float(t - last_settle))
            last_settle = t
            seen_settle = True
            last_rate = r

        # 3b. closes: remove what consumption has not already explained
        if d_oi < 0.0:
            resid = -d_oi - consumed_long - consumed_short
            if resid > 0.0:
                tot_l = _side_total(LONG, bin_u, bin_n, bound_lo, bound_hi) * scale[LONG]
                tot_s = _side_total(SHORT, bin_u, bin_n, bound_lo, bound_hi) * scale[SHORT]
                if relative:
                    # the map holds only part of the open interest: close the same fraction of it
                    frac = min(resid / oi_before, 1.0) if oi_before > 0.0 else 1.0
                    resid = frac * (tot_l + tot_s)
                if proportional:
                    tot = tot_l + tot_s
                    if tot > 0.0:
                        if resid >= tot:
                            for s in range(2):
                                _clear_side(s, cap, r_start, r_end, alive, head, tail, bin_u, bin_n,
                                            bound_lo, bound_hi, scale)
                        else:
                            f = 1.0 - resid / tot
                            scale[0] *= f
                            scale[1] *= f
                else:
                    o = open_[k]
                    if c > o:
                        r_s = close_share * resid
                        r_l = resid - r_s
                    elif c < o:
                        r_l = close_share * resid
                        r_s = resid - r_l
                    else:
                        r_l = 0.5 * resid
                        r_s = resid - r_l
                    # what one side cannot give is taken from the other
                    r_l2 = min(tot_l, r_l + max(0.0, r_s - tot_s))
                    r_s2 = min(tot_s, r_s + max(0.0, r_l - tot_l))
                    for s in range(2):
                        tot_side = tot_l if s == LONG else tot_s
                        take = r_l2 if s == LONG else r_s2
                        if tot_side > 0.0 and take > 0.0:
                            if take >= tot_side:
                                _clear_side(s, cap, r_start, r_end, alive, head, tail, bin_u, bin_n,
                                            bound_lo, bound_hi, scale)
                            else:
                                scale[s] *= 1.0 - take / tot_side

        # 4-5. opens: split by side, then over leverage tiers at the exact Binance price
        if d_oi > 0.0:
            o = open_[k]
            h = high[k]
            lw = low[k]
            tb = taker_buy[k]
            v = volume[k]
            if tb == tb and v == v and v > 0.0:
                x = min(max(tb / v, 0.0), 1.0) - 0.5
                w_long = 0.5 if x == 0.0 else min(max(0.5 + kappa * x, 0.0), 1.0)
            elif side_rule == 1:
                w_long = 1.0 if c > o else (0.0 if c < o else 0.5)
            else:
                x = 0.5 * (c - o) / (h - lw) if h > lw else 0.0
                w_long = 0.5 if x == 0.0 else min(max(0.5 + kappa * x, 0.0), 1.0)
            if funding_tilt and last_rate == last_rate:
                interval = funding_interval_ns
                if interval <= 0.0:
                    interval = min_interval if min_interval < np.inf else _EIGHT_HOURS_NS
                r8 = last_rate * (_EIGHT_HOURS_NS / interval)
                w_long = min(max(w_long + tilt_max * math.tanh(tilt_scale * (r8 - funding_baseline)), 0.0), 1.0)
            ep = c if entry_close else (h + lw + c) / 3.0
            for side in range(2):
                amount = d_oi * (w_long if side == LONG else 1.0 - w_long)
                if amount <= 0.0:
                    continue
                for ti in range(n_tiers):
                    a = amount * weights[ti]
                    if a <= 0.0:
                        continue
                    lv = ep * (f_long[ti] if side == LONG else f_short[ti])
                    bb = min(max(bin_right(edges, lv), 0), nb - 1)
                    if r_end[side] - r_start[side] >= cap:
                        raise RuntimeError("liquidation map: lot capacity exceeded")
                    j = r_end[side] % cap
                    r_end[side] += 1
                    level[side, j] = lv
                    lot_u[side, j] = a / scale[side]
                    lot_bin[side, j] = bb
                    lot_t[side, j] = t
                    nxt[side, j] = -1
                    alive[side, j] = True
                    if tail[side, bb] >= 0:
                        nxt[side, tail[side, bb]] = j
                    else:
                        head[side, bb] = j
                    tail[side, bb] = j
                    bin_u[side, bb] += lot_u[side, j]
                    bin_n[side, bb] += 1
                    bound_lo[side] = min(bound_lo[side], bb)
                    bound_hi[side] = max(bound_hi[side], bb)
                    if side == LONG:
                        hi_long = max(hi_long, bb)
                    else:
                        lo_short = min(lo_short, bb)

        # 7. features at this close (§A.4)
        if have_oi:
            oi_usd = oi_prev * c
        else:
            oi_usd = 0.5 * (_side_total(LONG, bin_u, bin_n, bound_lo, bound_hi) * scale[LONG]
                            + _side_total(SHORT, bin_u, bin_n, bound_lo, bound_hi) * scale[SHORT])
        eps = max(1e-6 * oi_usd, 1.0)
        _features_at(k, c, centres, bin_u, kern, buf, heap, prev_thr, bands, range_frac, kernel_h, dense_q,
                     scale, eps, feats)
        feats[k, F_CONS_L] = consumed_long
        feats[k, F_CONS_S] = consumed_short

        row = snap_row[k]
        if row >= 0:
            for b in range(nb):
                snap_l[row, b] = bin_u[LONG, b] * scale[LONG]
                snap_s[row, b] = bin_u[SHORT, b] * scale[SHORT]
    return feats, snap_l, snap_s


@njit(cache=True)
def _sift_down(heap, i, size):
    while True:
        left = 2 * i + 1
        if left >= size:
            return
        small = left
        right = left + 1
        if right < size and heap[right] < heap[left]:
            small = right
        if heap[small] < heap[i]:
            t = heap[i]
            heap[i] = heap[small]
            heap[small] = t
            i = small
        else:
            return


@njit(cache=True)
def _quantile_from_top(vals, n, size, frac, heap):
    """Interpolate between the ``size``-th and ``(size-1)``-th largest of ``vals[:n]`` (numpy's
    ``linear`` rule with fraction ``frac``), keeping the ``size`` largest in a min-heap: its root
    is the first and the smaller child of the root the second."""
    for i in range(size):
        heap[i] = vals[i]
    for i in range(size // 2 - 1, -1, -1):
        _sift_down(heap, i, size)
    for i in range(size, n):
        if vals[i] > heap[0]:
            heap[0] = vals[i]
            _sift_down(heap, 0, size)
    lo_val = heap[0]
    if frac <= 0.0 or size < 2:
        return lo_val
    hi_val = heap[1]
    if size > 2 and heap[2] < hi_val:
        hi_val = heap[2]
    # same interpolation as numpy's _lerp
    diff = hi_val - lo_val
    if frac >= 0.5:
        return hi_val - diff * (1.0 - frac)
    return lo_val + diff * frac


@njit(cache=True)
def _scan(s, start, stop, step, bin_u, kern, koff, buf, m, pivot):
    """One pass over bins ``start, start+step, ...`` (excluding ``stop``) of side ``s``.

    Returns ``(total, pull, m, nonempty)``: the sum of ``bin_u``, the sum weighted by
    ``kern[koff + j]`` (j = position in the run), ``m`` advanced past the values ``> pivot``
    appended to ``buf``, and the number of non-empty bins. An empty bin holds exactly 0 and a
    non-empty one a positive value, so the loop is branch-free with four accumulators.
    """
    count = (stop - start) * step
    t0 = t1 = t2 = t3 = 0.0
    g0 = g1 = g2 = g3 = 0.0
    nonempty = 0
    j = 0
    while j + 4 <= count:
        i = start + j * step
        u0 = bin_u[s, i]
        u1 = bin_u[s, i + step]
        u2 = bin_u[s, i + 2 * step]
        u3 = bin_u[s, i + 3 * step]
        t0 += u0
        t1 += u1
        t2 += u2
        t3 += u3
        g0 += u0 * kern[koff + j]
        g1 += u1 * kern[koff + j + 1]
        g2 += u2 * kern[koff + j + 2]
        g3 += u3 * kern[koff + j + 3]
        nonempty += (u0 > 0.0) + (u1 > 0.0) + (u2 > 0.0) + (u3 > 0.0)
        buf[m] = u0
        m += u0 > pivot
        buf[m] = u1
        m += u1 > pivot
        buf[m] = u2
        m += u2 > pivot
        buf[m] = u3
        m += u3 > pivot
        j += 4
    while j < count:
        u0 = bin_u[s, start + j * step]
        t0 += u0
        g0 += u0 * kern[koff + j]
        nonempty += u0 > 0.0
        buf[m] = u0
        m += u0 > pivot
        j += 1
    return (t0 + t1) + (t2 + t3), (g0 + g1) + (g2 + g3), m, nonempty


@njit(cache=True)
def _features_at(k, p, centres, bin_u, kern, buf, heap, prev_thr, bands, range_frac, kernel_h, dense_q,
                 scale, eps, feats):
    """§A.4 features at close ``p`` from the bins within ``range_frac`` of it."""
    n_bands = bands.shape[0]
    out_sum = np.zeros(n_bands)
    for side in range(2):
        if side == SHORT:  # shorts above: centres in (p, p(1+X)], bins first, first+1, ...
            first = bin_right(centres, p) + 1
            step = 1
            end_win = bin_right(centres, p * (1.0 + range_frac)) + 1
        else:  # longs below: centres in [p(1-X), p), bins first, first-1, ...
            first = _bin_left(centres, p) - 1
            step = -1
            end_win = _bin_left(centres, p * (1.0 - range_frac)) - 1
        if (end_win - first) * step < 0:
            end_win = first
        # The dense threshold moves little from bar to bar: gather only values above 0.8 × the
        # last one as candidates; if they cannot hold the answer, gather all (below).
        pivot = 0.8 * prev_thr[side]
        m = 0
        n_vals = 0
        pull_u = 0.0
        acc = 0.0
        seg = first
        for x in range(n_bands + 1):
            if x == n_bands:
                edge = end_win
            elif side == SHORT:
                edge = bin_right(centres, p * (1.0 + bands[x])) + 1
            else:
                edge = _bin_left(centres, p * (1.0 - bands[x])) - 1
            if (edge - seg) * step < 0:
                edge = seg
            if (edge - end_win) * step > 0:
                edge = end_win
            t, g, m, nn = _scan(side, seg, edge, step, bin_u, kern, (seg - first) * step, buf, m, pivot)
            acc += t
            pull_u += g
            n_vals += nn
            if x < n_bands:
                out_sum[x] = acc * scale[side]
            seg = edge

        f_band = F_S_UP if side == SHORT else F_L_DN
        for x in range(n_bands):
            feats[k, f_band + x] = out_sum[x]
        pull = 0.0
        if first != end_win:
            d0 = math.log(centres[first] / p) if side == SHORT else math.log(p / centres[first])
            pull = pull_u * scale[side] * math.exp(-d0 / kernel_h)
        feats[k, F_PULL_UP if side == SHORT else F_PULL_DN] = pull

        f_dist = F_CL_UP_DIST if side == SHORT else F_CL_DN_DIST
        feats[k, f_dist] = np.nan
        feats[k, f_dist + 1] = np.nan
        if n_vals == 0:
            continue
        pos = dense_q * (n_vals - 1)
        kk = min(int(math.floor(pos)), n_vals - 1)
        need = n_vals - kk  # the threshold is the need-th largest (and the next larger one)
        if m < need or pivot <= 0.0:
            m = 0
            i = first
            while i != end_win:
                u = bin_u[side, i]
                buf[m] = u
                m += u > 0.0
                i += step
        thr = _quantile_from_top(buf, m, need, pos - kk, heap)
        prev_thr[side] = thr
        i = first
        while i != end_win and bin_u[side, i] < thr:
            i += step
        if i != end_win:
            feats[k, f_dist] = centres[i] / p - 1.0 if side == SHORT else 1.0 - centres[i] / p
            size = 0.0
            while i != end_win and bin_u[side, i] >= thr:
                size += bin_u[side, i]
                i += step
            feats[k, f_dist + 1] = size * scale[side]

    for x in range(n_bands):
        feats[k, F_ASYM + x] = math.log((feats[k, F_S_UP + x] + eps) / (feats[k, F_L_DN + x] + eps))
    s_up = feats[k, F_S_UP + 1]
    l_dn = feats[k, F_L_DN + 1]
    tot = s_up + l_dn
    feats[k, F_IMB10] = (s_up - l_dn) / tot if tot > 0.0 else 0.0
    g_up = feats[k, F_PULL_UP]
    g_dn = feats[k, F_PULL_DN]
    feats[k, F_PULL_ASYM] = math.log((g_up + eps) / (g_dn + eps))
