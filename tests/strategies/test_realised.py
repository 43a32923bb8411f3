"""Realised-liquidation features: hand-computed values, and the prefix test (no look-ahead) on
real event sets of two venues (Hyperliquid on Binance candles with the map's consumption, OKX on
its own minute bars)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backtests.sample import load_sample_frame
from bot.data import SAMPLE_DIR, join_liquidations
from bot.store import DatasetKey, Store
from strategies.features.liquidation_map import liquidation_features
from strategies.features.realised import (
    CALIBRATION_COLUMNS,
    REALISED_COLUMNS,
    RealisedParams,
    has_realised,
    realised_features,
)

P = RealisedParams(window_days=1.0, min_history=3, cascade_quantile=0.5, calibration_days=1.0, cascade_nonzero=False,
                   calibration_rank_hours=0.0)


def _frame(long_: list[float], short: list[float], **extra) -> pd.DataFrame:
    idx = pd.date_range("2025-01-01", periods=len(long_), freq="1h", tz="UTC", name="time")
    f = pd.DataFrame({"liq_long_usd": long_, "liq_short_usd": short}, index=idx)
    for k, v in extra.items():
        f[k] = v
    return f


def test_hand_computed_share_percentile_and_cascade():
    nan = math.nan
    f = _frame([nan, 0.0, 10.0, 20.0, 30.0, 5.0], [nan, 0.0, 10.0, 0.0, 10.0, 100.0])
    out = realised_features(f, P)
    assert np.isnan(out["liq_real_long"].iloc[0]) and np.isnan(out["liq_real_long_share"].iloc[0])
    assert np.isnan(out["liq_real_long_share"].iloc[1])  # nothing liquidated
    assert out["liq_real_long_share"].iloc[2:].tolist() == [0.5, 1.0, 0.75, 5.0 / 105.0]
    # bar 4: past covered longs [0, 10, 20] (bar 0 uncovered): 3 values <= 30 -> pct 1; median 10 < 30 -> cascade
    assert out["liq_real_long_pct"].iloc[4] == 1.0 and out["liq_cascade_long"].iloc[4] == 1.0
    # bar 5: past longs [0, 10, 20, 30] -> 5 is above 1 of 4; median 15 > 5 -> no long cascade
    assert out["liq_real_long_pct"].iloc[5] == 0.25 and out["liq_cascade_long"].iloc[5] == 0.0
    # shorts at bar 5: past [0, 10, 0, 10], median 5 < 100 -> squeeze
    assert out["liq_cascade_short"].iloc[5] == 1.0 and out["liq_cascade"].iloc[5] == 1.0
    assert out["liq_cascade"].iloc[4] == -1.0 + out["liq_cascade_short"].iloc[4]
    # fewer than min_history covered bars before bar 3: no percentile yet
    assert out["liq_real_long_pct"].iloc[:4].isna().all()
    assert list(out.columns) == list(REALISED_COLUMNS) and not has_realised(_frame([nan], [nan]))
    # default: the quantile of the past bars that had liquidations (zeros left out)
    nz = realised_features(f, P.model_copy(update={"cascade_nonzero": True}))
    # bar 5 longs: past non-zero [10, 20, 30] -> median 20 > 5: no cascade; shorts: only 2 non-zero -> NaN
    assert nz["liq_cascade_long"].iloc[5] == 0.0 and np.isnan(nz["liq_cascade_short"].iloc[5])
    assert nz["liq_real_long_pct"].equals(out["liq_real_long_pct"])


def test_hand_computed_calibration():
    f = _frame([0.0, 10.0, 0.0, 30.0], [5.0, 0.0, 5.0, 0.0],
               liq_consumed_long=[0.0, 20.0, 0.0, 40.0], liq_consumed_short=[10.0, 0.0, 0.0, 10.0])
    out = realised_features(f, P)
    assert out["liq_calib_long"].iloc[:2].isna().all()  # min_history 3 covered bars
    assert out["liq_calib_long"].iloc[2] == 10.0 / 20.0
    assert out["liq_calib_long"].iloc[3] == 40.0 / 60.0
    assert out["liq_calib_short"].iloc[3] == 10.0 / 20.0
    assert out["liq_calib_total"].iloc[3] == 50.0 / 80.0
    # calibrated consumption uses the previous bar's ratio only
    assert out["liq_consumed_long_cal"].iloc[3] == 40.0 * 0.5
    assert np.isnan(out["liq_consumed_long_cal"].iloc[2])
    # rank correlation of per-bar totals over bars 0..3: model [10,20,0,50], real [5,10,5,30]
    mx = pd.Series([10.0, 20.0, 0.0, 50.0]).rank()
    ry = pd.Series([5.0, 10.0, 5.0, 30.0]).rank()
    assert out["liq_calib_rank"].iloc[3] == pytest.approx(np.corrcoef(mx, ry)[0, 1], rel=1e-12)
    assert set(CALIBRATION_COLUMNS) <= set(out.columns)
    # on a 2-hour grid: evaluated at 02:00 (bars 0..2) and held at 03:00
    held = realised_features(f, P.model_copy(update={"calibration_rank_hours": 2.0}))
    mx2, ry2 = pd.Series([10.0, 20.0, 0.0]).rank(), pd.Series([5.0, 10.0, 5.0]).rank()
    assert held["liq_calib_rank"].iloc[2] == pytest.approx(np.corrcoef(mx2, ry2)[0, 1], rel=1e-12)
    assert held["liq_calib_rank"].iloc[3] == held["liq_calib_rank"].iloc[2]


def _assert_prefix(frame: pd.DataFrame, params: RealisedParams, cuts: list[int], with_map: bool) -> None:
    full = realised_features(frame, params, liquidation_features(frame) if with_map else None)
    for cut in cuts:
        part = frame.iloc[:cut]
        got = realised_features(part, params, liquidation_features(part) if with_map else None)
        pd.testing.assert_frame_equal(got, full.iloc[:cut], check_exact=True)


def test_prefix_hyperliquid_events_on_binance_5m_with_the_map():
    """Hyperliquid's realised events (2025-05-25 → 29) on Binance 5m candles: every feature of a
    prefix equals the same rows computed on the whole frame (calibration included)."""
    frame = load_sample_frame("BTC/USDT:USDT", "5m", pd.Timestamp("2025-05-10", tz="UTC"),
                              pd.Timestamp("2025-06-01", tz="UTC"))
    assert has_realised(frame)
    params = RealisedParams(window_days=2.0, min_history=6, calibration_days=2.0)
    covered = np.flatnonzero(frame["liq_long_usd"].notna().to_numpy())
    cuts = [int(covered[0]) + 1, int(covered[0]) + 40, int(covered[len(covered) // 2]), int(covered[-1]) + 1]
    _assert_prefix(frame, params, cuts, with_map=True)
    full = realised_features(frame, params, liquidation_features(frame))
    assert full["liq_calib_total"].notna().sum() > 100  # the calibration is actually exercised
    assert full["liq_cascade_short"].eq(1.0).any()


def test_prefix_okx_events_on_minute_bars():
    """OKX BTC and ETH events (2026-03-04/05), per-minute sums: the prefix property, and the
    totals equal the raw events."""
    store = Store(SAMPLE_DIR)
    for symbol in ("BTC/USDT:USDT", "ETH/USDT:USDT"):
        ev = store.read(DatasetKey("okx", symbol, "liquidations"))
        idx = pd.date_range(ev.index[0].floor("1min"), ev.index[-1].floor("1min"), freq="1min", name="time")
        frame = pd.DataFrame(index=idx)
        frame[["liq_long_usd", "liq_short_usd"]] = join_liquidations(frame, [ev], "1m")
        params = RealisedParams(window_days=0.25, min_history=10)
        _assert_prefix(frame, params, [31, 200, len(frame) // 2, len(frame) - 1], with_map=False)
        out = realised_features(frame, params)
        assert out["liq_real_total"].sum() == pytest.approx(ev["value"].sum(), rel=1e-12)
        assert out["liq_real_long"].sum() == pytest.approx(ev.loc[ev["side"] == "long", "value"].sum(), rel=1e-12)
        assert (out["liq_cascade_long"].eq(1.0) | out["liq_cascade_short"].eq(1.0)).sum() > 0


def _reference_past_stats(values: np.ndarray, times_ns: np.ndarray, window_ns: int, q: float, min_history: int,
                          nonzero: bool) -> tuple[np.ndarray, np.ndarray]:
    """Independent plain loop: window [t − W, t) per bar, NumPy's linear quantile."""
    starts = np.searchsorted(times_ns, times_ns - window_ns, side="left")
    pct, qua = np.full(len(values), np.nan), np.full(len(values), np.nan)
    for k, v in enumerate(values):
        past = values[starts[k]:k]
        past = past[np.isfinite(past)]
        if not math.isfinite(v) or past.size < min_history:
            continue
        pct[k] = np.count_nonzero(past <= v) / past.size
        pool = past[past > 0] if nonzero else past
        if pool.size >= min_history:
            qua[k] = np.quantile(pool, q)
    return pct, qua


@pytest.mark.parametrize("nonzero", [True, False])
def test_rolling_percentile_and_cascade_match_a_plain_loop(nonzero):
    frame = load_sample_frame("BTC/USDT:USDT", "5m", pd.Timestamp("2025-05-20", tz="UTC"),
                              pd.Timestamp("2025-06-01", tz="UTC"))
    params = RealisedParams(window_days=0.5, min_history=6, cascade_nonzero=nonzero, cascade_quantile=0.9)
    out = realised_features(frame, params)
    times = frame.index.as_unit("ns").asi8
    for side in ("long", "short"):
        v = out[f"liq_real_{side}"].to_numpy()
        pct, qua = _reference_past_stats(v, times, int(0.5 * 86_400e9), 0.9, 6, nonzero)
        np.testing.assert_allclose(out[f"liq_real_{side}_pct"], pct, rtol=0, atol=1e-15)
        flag = np.where(np.isfinite(qua), ((v > qua) & (v > 0)).astype(float), np.nan)
        np.testing.assert_array_equal(out[f"liq_cascade_{side}"].to_numpy(), flag)
    assert out["liq_real_short_pct"].notna().sum() > 50


def test_window_boundary_includes_the_bar_exactly_w_before():
    """[t − W, t): with W = 3 h, bar 3 sees bars 0, 1, 2."""
    f = _frame([1.0, 2.0, 3.0, 2.5], [0.0] * 4)
    out = realised_features(f, RealisedParams(window_days=3 / 24, min_history=3, cascade_nonzero=False))
    assert out["liq_real_long_pct"].iloc[3] == 2 / 3


def _join_by_timestamps(frame, events, timeframe):
    """The join written plainly with pandas (per-bar groupby on timestamps, reindex, NaN-aware add)."""
    step = pd.Timedelta(timeframe)
    out = pd.DataFrame(np.nan, index=frame.index, columns=["liq_long_usd", "liq_short_usd"])
    for ev in events:
        bar = ev.index.floor(step)
        covered = (frame.index >= bar[0]) & (frame.index <= bar[-1])
        for side, col in (("long", "liq_long_usd"), ("short", "liq_short_usd")):
            sums = ev["value"].where(ev["side"] == side, 0.0).groupby(bar).sum()
            out[col] = out[col].add(sums.reindex(frame.index).fillna(0.0).where(covered), fill_value=0.0)
    return out


@pytest.mark.parametrize("timeframe", ["5m", "1h"])
def test_join_equals_the_plain_pandas_join_on_both_venues(timeframe):
    store = Store(SAMPLE_DIR)
    events = [store.read(DatasetKey("hyperliquid", "BTC/USDC:USDC", "liquidations")),
              store.read(DatasetKey("okx", "BTC/USDT:USDT", "liquidations"))]
    frame = store.read(DatasetKey("binanceusdm", "BTC/USDT:USDT", "ohlcv", timeframe))
    frame = frame.drop(frame.index[5::7])  # bars missing from the frame: their events are dropped
    for subset in (events, events[::-1], events[:1]):
        got = join_liquidations(frame, subset, timeframe)
        want = _join_by_timestamps(frame, subset, timeframe)
        assert np.array_equal(got.to_numpy(), want.to_numpy(), equal_nan=True)
    assert np.isfinite(got.to_numpy()).sum() > 20  # the venues cover some bars
