"""The map over several venues: the summed map is the sum of the per-venue maps, features add up
where the venues share a price path, one venue reproduces the single-venue estimator, and the
summed features pass the prefix test.

Venues are built from real pieces of the sample: Binance BTC 1h last-price candles and Binance
BTC 1h mark-price candles (two different real paths), each with Hyperliquid's real open
interest, one of them listed a month later (a shorter history, so a different map).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtests.sample import load_sample_frame
from strategies.features.liquidation_map import LiqMapParams, compute_liquidation_map
from strategies.features.venues import multi_venue_liquidation_map

T0, T1 = pd.Timestamp("2025-06-01", tz="UTC"), pd.Timestamp("2025-09-01", tz="UTC")


@pytest.fixture(scope="module")
def venues() -> dict[str, pd.DataFrame]:
    frame = load_sample_frame("BTC/USDT:USDT", "1h", T0, T1)
    last = frame[["open", "high", "low", "close", "volume", "open_interest", "funding_rate"]]
    mark = frame[["mark_open", "mark_high", "mark_low", "mark_close", "volume", "open_interest"]].rename(
        columns=lambda c: c.replace("mark_", ""))
    late = mark[mark.index >= T0 + pd.Timedelta(days=30)].drop(index=mark.index[800:803], errors="ignore")
    return {"last": last, "mark_late": late}


def _on_union(prices: np.ndarray, snap_prices: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Place a venue's own snapshot row onto the union grid by bin price."""
    pos = np.searchsorted(prices, snap_prices)
    assert np.allclose(prices[pos], snap_prices, rtol=1e-12, atol=0)
    out = np.zeros(len(prices))
    out[pos] = values
    return out


def test_summed_map_equals_the_sum_of_per_venue_maps(venues):
    ref = venues["last"]
    positions = [100, 1200, len(ref) - 1]
    maps = multi_venue_liquidation_map(venues, positions=positions)
    total_l = sum(maps.per_venue_snapshots[v].long_usd for v in venues)
    total_s = sum(maps.per_venue_snapshots[v].short_usd for v in venues)
    np.testing.assert_array_equal(maps.snapshot.long_usd, total_l)
    np.testing.assert_array_equal(maps.snapshot.short_usd, total_s)
    # independently: each venue's own estimator run, as of the reference bar, on the union grid
    for row, p in enumerate(positions):
        t = ref.index[p]
        want_l = np.zeros(len(maps.snapshot.prices))
        want_s = np.zeros(len(maps.snapshot.prices))
        for frame in venues.values():
            own = int(frame.index.searchsorted(t, side="right")) - 1
            if own < 0:
                continue
            _, snap = compute_liquidation_map(frame, LiqMapParams(), [own])
            want_l += _on_union(maps.snapshot.prices, snap.prices, snap.long_usd[0])
            want_s += _on_union(maps.snapshot.prices, snap.prices, snap.short_usd[0])
        np.testing.assert_allclose(maps.snapshot.long_usd[row], want_l, rtol=1e-12, atol=1e-6)
        np.testing.assert_allclose(maps.snapshot.short_usd[row], want_s, rtol=1e-12, atol=1e-6)
    assert maps.snapshot.long_usd[0].sum() == pytest.approx(maps.per_venue_snapshots["last"].long_usd[0].sum())
    assert (maps.per_venue_snapshots["mark_late"].long_usd[0] == 0).all()  # not listed yet at bar 100
    assert (maps.per_venue_snapshots["mark_late"].long_usd[-1] > 0).any()


def test_band_sums_add_up_when_venues_share_the_path(venues):
    """Same candles, different open-interest histories: S_up, L_dn and consumption of the summed
    map are the per-venue values added (the bands are read at the same close)."""
    ref = venues["last"]
    late = ref.copy()
    late.loc[late.index < T0 + pd.Timedelta(days=20), "open_interest"] = np.nan  # listed 20 days later
    maps = multi_venue_liquidation_map({"a": ref, "b": late})
    for col in ("liq_short_above_10", "liq_long_below_5", "liq_long_below_20", "liq_consumed_long",
                "liq_consumed_short"):
        np.testing.assert_allclose(maps.features[col], maps.per_venue["a"][col] + maps.per_venue["b"][col],
                                   rtol=1e-9, atol=1e-3)
    bd = maps.breakdown(-1)
    assert bd.loc["total", "short_above_10"] == pytest.approx(bd.loc[["a", "b"], "short_above_10"].sum(), rel=1e-9)


def test_one_venue_reproduces_the_single_venue_estimator(venues):
    ref = venues["last"]
    single, _ = compute_liquidation_map(ref)
    maps = multi_venue_liquidation_map({"only": ref})
    np.testing.assert_allclose(maps.features.to_numpy(), single.to_numpy(), rtol=1e-9, atol=1e-6)


def test_summed_features_have_no_look_ahead(venues):
    full = multi_venue_liquidation_map(venues).features
    for cut in (50, 900, 1500):
        part = {v: f[f.index < venues["last"].index[cut]] for v, f in venues.items()}
        part = {v: f for v, f in part.items() if len(f)}
        got = multi_venue_liquidation_map(part, reference="last").features
        pd.testing.assert_frame_equal(got, full.iloc[:cut], check_exact=False, rtol=1e-12, atol=1e-9)


def test_venues_must_share_one_grid_and_have_open_interest(venues):
    with pytest.raises(ValueError, match="bucket_pct"):
        multi_venue_liquidation_map(venues, {"last": LiqMapParams(), "mark_late": LiqMapParams(bucket_pct=0.2)})
    no_oi = venues["last"].drop(columns=["open_interest"])
    with pytest.raises(ValueError, match="no open interest"):
        multi_venue_liquidation_map({"a": venues["last"], "b": no_oi})
