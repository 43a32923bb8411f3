"""Support/resistance features (docs/methods.md §C): pivot confirmation, zones, role reversal, prefix test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from strategies.features.levels import LEVEL_COLUMNS, LevelParams, level_features, pivots, zones_at

CUTS = (200, 800, 2000, 3500, 5200, 7000, 8800, 9978)


@pytest.fixture(scope="module", params=["BTC/USDT:USDT", "ETH/USDT:USDT"])
def sample(request, sample_frame) -> pd.DataFrame:
    return sample_frame(request.param, "1h").copy()


def frame_from(close: np.ndarray, spread: float = 0.2, high: np.ndarray | None = None) -> pd.DataFrame:
    idx = pd.date_range("2025-01-01", periods=len(close), freq="1h", tz="UTC", name="time")
    open_ = np.r_[close[0], close[:-1]]
    hi = np.maximum(open_, close) + spread if high is None else high
    lo = np.minimum(open_, close) - spread if high is None else high - 1.0
    return pd.DataFrame({"open": open_, "high": hi, "low": lo, "close": close,
                         "volume": np.full(len(close), 5.0)}, index=idx)


def triangle(periods: int, lo: float = 100.0, hi: float = 110.0, half: int = 10) -> np.ndarray:
    up = np.linspace(lo, hi, half + 1)[:-1]
    down = np.linspace(hi, lo, half + 1)[:-1]
    return np.tile(np.r_[up, down], periods)


def test_pivots_hand_computed():
    highs = np.array([1, 2, 3, 5, 4, 3, 2, 3, 4, 6, 6, 5, 4], dtype=float)
    frame = frame_from(highs, high=highs)
    pv = pivots(frame, 2, 2)
    got = [(r.kind, r.pivot_idx, r.confirm_idx, r.price) for r in pv.itertuples()]
    # j=9 ties j=10 on the right (allowed), j=10 ties j=9 on the left (not allowed)
    assert got == [("high", 3, 5, 5.0), ("low", 6, 8, 1.0), ("high", 9, 11, 6.0)]
    assert pv["confirm_time"].iloc[0] == frame.index[5]
    assert pv["pivot_time"].iloc[0] == frame.index[3]
    # a pivot is not known before its confirmation bar
    assert pivots(frame.iloc[:11], 2, 2)["pivot_idx"].tolist() == [3, 6]
    assert pivots(frame.iloc[:12], 2, 2)["pivot_idx"].tolist() == [3, 6, 9]


def test_zone_appears_at_the_confirmation_of_its_second_pivot():
    frame = frame_from(triangle(4))
    p = LevelParams(pivot_left=3, pivot_right=3, min_pivots=2)
    pv = pivots(frame, 3, 3)
    peaks = pv[pv["kind"] == "high"]
    assert peaks["pivot_idx"].tolist()[:2] == [10, 30]
    lf = level_features(frame, p)
    confirm = int(peaks["confirm_idx"].iloc[1])  # 33
    assert confirm == 33
    assert lf["level_up_1_lo"].iloc[: confirm].isna().all()
    z_lo, z_hi = lf["level_up_1_lo"].iloc[confirm], lf["level_up_1_hi"].iloc[confirm]
    a = lf["level_atr"].iloc[confirm]
    assert (z_lo + z_hi) / 2 == pytest.approx(110.2)
    assert z_hi - z_lo == pytest.approx(0.5 * a)  # two identical pivots: zone = level ± 0.25·ATR
    # the computation on the frame cut at the bar before confirmation has no zone either
    assert level_features(frame.iloc[:confirm], p)["level_up_1_lo"].isna().all()


def test_role_reversal_halves_the_score():
    base = triangle(3)
    rally = np.linspace(100.0, 125.0, 26)
    close = np.r_[base, rally, np.full(30, 125.0) + np.sin(np.arange(30)) * 0.05]
    frame = frame_from(close)
    p = LevelParams(pivot_left=3, pivot_right=3)
    zones = zones_at(frame, p)
    top = [z for z in zones if abs(z.level - 110.2) < 1e-9]
    assert len(top) == 1
    zone = top[0]
    assert zone.flips == 1 and zone.role == "support"
    same = [z for z in zones_at(frame, p.model_copy(update={"flip_keep": 1.0})) if abs(z.level - 110.2) < 1e-9]
    assert zone.score == pytest.approx(0.5 * same[0].score, rel=1e-12)
    # before the break the zone was resistance with no flip
    before = [z for z in zones_at(frame, p, at=len(base) + 5) if abs(z.level - 110.2) < 1e-9]
    assert before[0].role == "resistance" and before[0].flips == 0


def test_columns_and_shape(sample):
    lf = level_features(sample)
    assert list(lf.columns) == list(LEVEL_COLUMNS)
    assert lf.index.equals(sample.index)
    close = sample["close"]
    for i in (1, 2, 3):
        up_lo, up_hi = lf[f"level_up_{i}_lo"], lf[f"level_up_{i}_hi"]
        dn_lo, dn_hi = lf[f"level_dn_{i}_lo"], lf[f"level_dn_{i}_hi"]
        assert (up_hi > close)[up_lo.notna()].all()  # level (median pivot) above the close
        assert (dn_lo <= close)[dn_lo.notna()].all()
        assert (up_hi > up_lo)[up_lo.notna()].all() and (dn_hi > dn_lo)[dn_lo.notna()].all()
    # each triple is ordered by distance from the close
    for a, b in (("level_up_1_lo", "level_up_2_lo"), ("level_up_2_lo", "level_up_3_lo")):
        ok = lf[a].notna() & lf[b].notna()
        assert (lf[a] < lf[b])[ok].all()
    for a, b in (("level_dn_1_hi", "level_dn_2_hi"), ("level_dn_2_hi", "level_dn_3_hi")):
        ok = lf[a].notna() & lf[b].notna()
        assert (lf[a] > lf[b])[ok].all()
    assert lf["level_up_1_score"].notna().mean() > 0.8


def test_zones_at_agrees_with_level_features(sample):
    lf = level_features(sample)
    for k in (3000, 8000):
        zones = zones_at(sample, at=sample.index[k])
        row = lf.iloc[k]
        keyed = {(round(z.lo, 6), round(z.hi, 6)): z for z in zones}
        for side in ("up", "dn"):
            for i in (1, 2, 3):
                lo = row[f"level_{side}_{i}_lo"]
                if np.isnan(lo):
                    continue
                z = keyed[(round(lo, 6), round(row[f"level_{side}_{i}_hi"], 6))]
                assert z.score == row[f"level_{side}_{i}_score"]
                assert z.role == ("resistance" if side == "up" else "support")
        for z in zones:
            major = 5 * 10 ** (math.floor(math.log10(sample["close"].iloc[k])) - 1)
            assert z.round_major == (math.ceil(z.lo / major) * major <= z.hi)


def test_prefix(sample):
    full = level_features(sample)
    for k in CUTS:
        part = level_features(sample.iloc[:k]).iloc[-1]
        ref = full.iloc[k - 1]
        for col in full.columns:
            x, y = part[col], ref[col]
            assert (np.isnan(x) and np.isnan(y)) or x == pytest.approx(y, rel=1e-12, abs=0.0), (k, col)


def test_future_bars_do_not_change_the_past(sample):
    k = 5000
    changed = sample.copy()
    changed.iloc[k:, changed.columns.get_loc("high")] *= 1.5
    changed.iloc[k:, changed.columns.get_loc("volume")] *= 10
    a = level_features(sample).iloc[:k]
    b = level_features(changed).iloc[:k]
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)
