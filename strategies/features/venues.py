"""The liquidation map over several venues: one estimator run per venue, summed on one grid.

Coinglass-style aggregate maps add Binance, Bybit, OKX … Each venue's map is the estimator of
:mod:`strategies.features.liquidation_map` (docs/methods.md §A.3) run on *that venue's* frame: its
candles (its own path consumes its own levels), its open interest and its parameters (first
bracket MMR, tiers). The grid is the estimator's global log grid (bin i has edges
``exp(i·Δ)``, ``exp((i+1)·Δ)`` for every venue and every slice), so summing is adding bin i to
bin i: the summed map is, by construction and exactly, the sum of the per-venue maps.

Bars are aligned on the *reference* venue's index (the first venue unless named): at the
reference bar opening at t, each venue contributes its map after its own last bar opening at or
before t (never a later one), so nothing from the future enters. The §A.4 features of the summed
map are computed with the estimator's own compiled feature routine at the reference close, with
ε from the summed open interest; ``liq_consumed_*`` are the per-venue consumptions summed.

Cost: the summed features need the summed map after every bar, which the estimator exposes only
as snapshots, so each venue's estimator is re-run (on the prefix up to each chunk of ``chunk``
bars) per chunk: work grows as n²/chunk while memory stays at 2·chunk·bins floats. Measured on
this project's 2-core machine: a year of 1h BTC bars ≈ 1 s per venue, a year of 5m bars ≈ 30 s
(one estimator pass: 1.8 s). A single-pass kernel over several venues would remove the factor.

A venue's frame must carry its own ``open_interest``; without it the estimator falls back to the
volume inference (relative magnitudes), and summing relative magnitudes with USD ones would be
meaningless, so :func:`multi_venue_liquidation_map` refuses such a venue unless
``allow_volume_inference`` is set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from strategies.features._liqmap_kernel import _features_at
from strategies.features.liqmap_params import N_FEATURES
from strategies.features.liquidation_map import (
    BANDS,
    FEATURE_COLUMNS,
    LiqMapParams,
    LiqMapSnapshot,
    compute_liquidation_map,
    prepare_inputs,
)

_CONS_L = FEATURE_COLUMNS.index("liq_consumed_long")
_CONS_S = FEATURE_COLUMNS.index("liq_consumed_short")


@dataclass(frozen=True)
class VenueMaps:
    """The summed map, its features and the per-venue breakdown."""

    venues: tuple[str, ...]
    reference: str
    features: pd.DataFrame
    """§A.4 features of the summed map on the reference index (:data:`FEATURE_COLUMNS`)."""
    per_venue: dict[str, pd.DataFrame]
    """Each venue's own features (on the reference index, as-of aligned)."""
    snapshot: LiqMapSnapshot
    """The summed map at the requested positions (union grid)."""
    per_venue_snapshots: dict[str, LiqMapSnapshot]
    """Each venue's map at the same positions on the same union grid."""

    def breakdown(self, position: int = -1, band: int = 10) -> pd.DataFrame:
        """Per venue and total: shorts above / longs below within ``band`` % at a bar position."""
        rows = {v: f.iloc[position] for v, f in self.per_venue.items()}
        rows["total"] = self.features.iloc[position]
        return pd.DataFrame({
            f"short_above_{band}": {v: r[f"liq_short_above_{band}"] for v, r in rows.items()},
            f"long_below_{band}": {v: r[f"liq_long_below_{band}"] for v, r in rows.items()},
            "consumed_long": {v: r["liq_consumed_long"] for v, r in rows.items()},
            "consumed_short": {v: r["liq_consumed_short"] for v, r in rows.items()},
        })


def _grid_index(centres: np.ndarray, delta: float) -> int:
    """Global index i of the first bin (centre = exp((i + 0.5)·Δ))."""
    return int(round(math.log(centres[0]) / delta - 0.5))


def _asof_positions(ref: pd.DatetimeIndex, index: pd.DatetimeIndex) -> np.ndarray:
    """Per reference bar: position of the venue's last bar opening at or before it (-1: none)."""
    return np.searchsorted(index.as_unit("ns").asi8, ref.as_unit("ns").asi8, side="right") - 1


def _params_for(params: LiqMapParams | Mapping[str, LiqMapParams], venue: str) -> LiqMapParams:
    if isinstance(params, LiqMapParams):
        return params
    return params.get(venue, LiqMapParams())


def _check_venues(frames: Mapping[str, pd.DataFrame], params: LiqMapParams | Mapping[str, LiqMapParams],
                  reference: str | None, allow_volume_inference: bool) -> tuple[tuple[str, ...], str]:
    """The venues and the reference venue, after checking they share one grid and carry open interest."""
    if not frames:
        raise ValueError("no venue frames given")
    venues = tuple(frames)
    reference = reference or venues[0]
    if reference not in frames:
        raise ValueError(f"reference venue '{reference}' is not among {venues}")
    ref_p = _params_for(params, reference)
    for v in venues:
        p = _params_for(params, v)
        if (p.bucket_pct, p.range_pct, p.kernel_h, p.dense_quantile) != (
                ref_p.bucket_pct, ref_p.range_pct, ref_p.kernel_h, ref_p.dense_quantile):
            raise ValueError(f"venue '{v}': bucket_pct, range_pct, kernel_h and dense_quantile must equal the "
                             f"reference's (one grid, one feature definition)")
        f = frames[v]
        if not allow_volume_inference and ("open_interest" not in f.columns or not f["open_interest"].notna().any()):
            raise ValueError(f"venue '{v}' has no open interest: its map would be volume-inferred (relative), "
                             "not USD; drop the venue or load its open interest")
    return venues, reference


def _summed_oi_usd(frames: Mapping[str, pd.DataFrame], asof: Mapping[str, np.ndarray],
                   n: int) -> tuple[np.ndarray, np.ndarray]:
    """Open interest in USD summed over venues on the reference bars, and where any venue has one."""
    oi_usd = np.zeros(n)
    have_oi = np.zeros(n, dtype=bool)
    for v, f in frames.items():
        pos = asof[v]
        oi = f["open_interest"].to_numpy(dtype=np.float64, na_value=np.nan) if "open_interest" in \
            f.columns else np.full(len(f), np.nan)
        last = pd.Series(oi).ffill().to_numpy()  # the estimator's "last finite value"
        vc = f["close"].to_numpy(dtype=np.float64)
        val = np.where(pos >= 0, last[np.clip(pos, 0, None)] * vc[np.clip(pos, 0, None)], np.nan)
        have_oi |= np.isfinite(val)
        oi_usd += np.where(np.isfinite(val), val, 0.0)
    return oi_usd, have_oi


def multi_venue_liquidation_map(
    frames: Mapping[str, pd.DataFrame],
    params: LiqMapParams | Mapping[str, LiqMapParams] = LiqMapParams(),
    positions: Sequence[int] = (),
    reference: str | None = None,
    chunk: int = 1024,
    allow_volume_inference: bool = False,
    reference_frame: pd.DataFrame | None = None,
) -> VenueMaps:
    """Run the estimator per venue and sum the maps (see module docstring).

    ``frames``     venue -> frame contract (candles + ``open_interest`` of that venue)
    ``params``     one :class:`LiqMapParams` for all venues, or one per venue (missing: defaults).
                   The grid step ``bucket_pct`` and the feature settings (``range_pct``,
                   ``kernel_h``, ``dense_quantile``) are the reference venue's and must agree
    ``positions``  reference bar positions for the snapshots (as in ``compute_liquidation_map``)
    ``chunk``      bars per pass when building the summed features (bounds memory)
    ``reference_frame``  bars (index and close) to align on instead of the reference venue's
                   own frame, e.g. the candles a command draws; the reference venue still
                   supplies the feature settings
    """
    venues, reference = _check_venues(frames, params, reference, allow_volume_inference)
    ref_p = _params_for(params, reference)
    ref_frame = frames[reference] if reference_frame is None else reference_frame
    ref_index = ref_frame.index
    n = len(ref_index)
    delta = math.log1p(ref_p.bucket_pct / 100.0)

    # each venue's own run: inputs (grid) and features, as-of aligned on the reference bars
    inputs = {v: prepare_inputs(frames[v], _params_for(params, v)) for v in venues}
    lo = min(_grid_index(inputs[v].centres, delta) for v in venues)
    hi = max(_grid_index(inputs[v].centres, delta) + len(inputs[v].centres) for v in venues)
    centres = np.array([math.exp((i + 0.5) * delta) for i in range(lo, hi)])
    asof = {v: _asof_positions(ref_index, frames[v].index) for v in venues}

    per_venue: dict[str, pd.DataFrame] = {}
    for v in venues:
        feats, _ = compute_liquidation_map(frames[v], _params_for(params, v))
        pos = asof[v]
        aligned = feats.to_numpy()[np.clip(pos, 0, None)]
        aligned[pos < 0] = np.nan
        per_venue[v] = pd.DataFrame(aligned, index=ref_index, columns=list(FEATURE_COLUMNS))

    close = ref_frame["close"].to_numpy(dtype=np.float64)
    oi_usd, have_oi = _summed_oi_usd(frames, asof, n)

    feats = np.full((n, N_FEATURES), np.nan)
    kern = np.array([math.exp(-j * delta / ref_p.kernel_h) for j in range(len(centres))])
    buf = np.empty(len(centres))
    heap = np.empty(len(centres))
    prev_thr = np.zeros(2)
    ones = np.ones(2)
    bands = np.array(BANDS)
    bin_u = np.zeros((2, len(centres)))
    want = np.asarray(positions, dtype=np.int64).reshape(-1)
    want = np.where(want < 0, want + n, want)
    snap_rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    snap_venue: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {v: {} for v in venues}
    wanted = set(want.tolist())
    nb = len(centres)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        acc = np.zeros((2, stop - start, nb))  # summed map after each reference bar of the chunk
        for v in venues:
            own = asof[v][start:stop]
            valid = own >= 0
            if not valid.any():
                continue
            need = np.unique(own[valid])
            # the estimator on the venue's bars up to the last one needed: a prefix run gives the
            # same map as a full run (no look-ahead), for a fraction of the work
            last = int(need[-1])
            _, snap = compute_liquidation_map(frames[v].iloc[:last + 1], _params_for(params, v), need)
            o = _grid_index(snap.prices, delta) - lo
            rows = np.searchsorted(need, own[valid])
            acc[0, valid, o:o + snap.prices.size] += snap.long_usd[rows]
            acc[1, valid, o:o + snap.prices.size] += snap.short_usd[rows]
            for k in wanted:
                if start <= k < stop and own[k - start] >= 0:
                    row = int(np.searchsorted(need, own[k - start]))
                    placed_l, placed_s = np.zeros(nb), np.zeros(nb)
                    placed_l[o:o + snap.prices.size] = snap.long_usd[row]
                    placed_s[o:o + snap.prices.size] = snap.short_usd[row]
                    snap_venue[v][k] = (placed_l, placed_s)
            del snap
        for k in range(start, stop):
            bin_u[0] = acc[0, k - start]
            bin_u[1] = acc[1, k - start]
            tot_oi = oi_usd[k] if have_oi[k] else 0.5 * float(bin_u.sum())
            eps = max(1e-6 * tot_oi, 1.0)
            _features_at(k, close[k], centres, bin_u, kern, buf, heap, prev_thr, bands, ref_p.range_pct / 100.0,
                         float(ref_p.kernel_h), float(ref_p.dense_quantile), ones, eps, feats)
            if k in wanted:
                snap_rows[k] = (bin_u[0].copy(), bin_u[1].copy())
    cons = np.zeros((n, 2))
    for v in venues:
        f = per_venue[v]
        cons[:, 0] += np.nan_to_num(f["liq_consumed_long"].to_numpy())
        cons[:, 1] += np.nan_to_num(f["liq_consumed_short"].to_numpy())
    feats[:, _CONS_L] = cons[:, 0]
    feats[:, _CONS_S] = cons[:, 1]

    summed_l = np.array([snap_rows[k][0] for k in want]).reshape(-1, nb)
    summed_s = np.array([snap_rows[k][1] for k in want]).reshape(-1, nb)
    per_snaps = {}
    for v in venues:
        zero = (np.zeros(nb), np.zeros(nb))
        ll = np.array([snap_venue[v].get(k, zero)[0] for k in want]).reshape(-1, nb)
        ss_ = np.array([snap_venue[v].get(k, zero)[1] for k in want]).reshape(-1, nb)
        per_snaps[v] = LiqMapSnapshot(times=ref_index[want], prices=centres, long_usd=ll, short_usd=ss_)
    return VenueMaps(
        venues=venues, reference=reference,
        features=pd.DataFrame(feats, index=ref_index, columns=list(FEATURE_COLUMNS)),
        per_venue=per_venue,
        snapshot=LiqMapSnapshot(times=ref_index[want], prices=centres, long_usd=summed_l, short_usd=summed_s),
        per_venue_snapshots=per_snaps,
    )
