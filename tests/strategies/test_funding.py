"""Funding features (docs/methods.md §B.2): hand-built reset cases, independent statistics, prefix test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from strategies.features.funding import FUNDING_COLUMNS, FundingParams, funding_features
from strategies.features.indicators import rolling_percentile, rolling_zscore

CUTS = (300, 1200, 2500, 4100, 6000, 7700, 9000, 9978)


@pytest.fixture(scope="module", params=["BTC/USDT:USDT", "ETH/USDT:USDT"])
def sample(request, sample_frame) -> pd.DataFrame:
    return sample_frame(request.param, "1h").copy()


def assert_same_row(a: pd.Series, b: pd.Series) -> None:
    for col in a.index:
        x, y = a[col], b[col]
        if pd.isna(x) and pd.isna(y):
            continue
        if isinstance(x, (bool, np.bool_)):
            assert x == y, col
        else:
            assert x == pytest.approx(y, rel=1e-12, abs=0.0), col


# --------------------------------------------------------------------------------------------------
# a constructed market: baseline funding, a crowded stretch, a squeeze, a flip
# --------------------------------------------------------------------------------------------------

N_BARS = 24 * 20


def base_frame(n: int = N_BARS, freq: str = "1h") -> pd.DataFrame:
    idx = pd.date_range("2025-01-01", periods=n, freq=freq, tz="UTC", name="time")
    close = np.full(n, 100.0)
    frame = pd.DataFrame({"open": close, "high": close * 1.001, "low": close * 0.999, "close": close,
                          "volume": np.full(n, 10.0)}, index=idx)
    frame["funding_rate"] = np.nan
    frame["open_interest"] = 1000.0
    return frame


def settlement_rows(frame: pd.DataFrame) -> np.ndarray:
    """Bars whose close is 00:00, 08:00 or 16:00 UTC."""
    close_t = frame.index + pd.Timedelta(hours=1)
    return np.flatnonzero((close_t.hour % 8 == 0) & (close_t.minute == 0))


def set_path(frame: pd.DataFrame, rows: np.ndarray, closes: np.ndarray) -> None:
    frame.iloc[rows, frame.columns.get_loc("close")] = closes
    frame.iloc[rows, frame.columns.get_loc("open")] = closes
    frame.iloc[rows, frame.columns.get_loc("high")] = closes * 1.001
    frame.iloc[rows, frame.columns.get_loc("low")] = closes * 0.999


def squeeze_frame(direction: int = -1, flip_rate: float = 0.00002, dump_end_offset: int = 0,
                  with_oi: bool = True) -> tuple[pd.DataFrame, int, list[int]]:
    """Crowded longs (direction −1: price dumps) or shorts (+1: rips), then funding flips.

    Returns the frame, the bar of the flip settlement and the bars of all settlements.
    """
    frame = base_frame()
    srows = settlement_rows(frame)
    k_flip = 45  # settlement number of the flip (day 15)
    crowded = 0.0005 if direction < 0 else -0.0003
    rates = np.full(len(srows), 0.0001)
    rates[k_flip - 8:k_flip] = crowded
    rates[k_flip] = flip_rate if direction < 0 else 0.0001
    frame.iloc[srows, frame.columns.get_loc("funding_rate")] = rates
    s = int(srows[k_flip])
    end = s - dump_end_offset
    path = np.linspace(100.0, 100.0 * (1 + 0.10 * direction), 12)
    set_path(frame, np.arange(end - 11, end + 1), path)
    set_path(frame, np.arange(end + 1, len(frame)), np.full(len(frame) - end - 1, path[-1]))
    oi = frame["open_interest"].to_numpy().copy()
    oi[end - 11:end + 1] = np.linspace(1000.0, 900.0, 12)
    oi[end + 1:] = 900.0
    frame["open_interest"] = oi
    if not with_oi:
        frame = frame.drop(columns="open_interest")
    return frame, s, [int(r) for r in srows]


def test_reset_long_fires_at_the_flip_settlement_only():
    frame, s, _ = squeeze_frame(-1)
    ff = funding_features(frame)
    assert ff["funding_crowded_long"].iloc[s - 1]  # crowded at the previous settlement, carried forward
    assert ff["funding_squeeze_long"].iloc[s]
    assert ff["funding_oi_flush"].iloc[s] == 1.0
    fired = np.flatnonzero(ff["funding_reset_long"].to_numpy())
    assert fired.tolist() == [s]
    assert not ff["funding_reset_short"].any()
    # not before: the frame cut just before the flip settlement has no reset at all
    assert not funding_features(frame.iloc[:s])["funding_reset_long"].any()


def test_reset_short_mirror():
    frame, s, _ = squeeze_frame(+1)
    ff = funding_features(frame)
    assert np.flatnonzero(ff["funding_reset_short"].to_numpy()).tolist() == [s]
    assert not ff["funding_reset_long"].any()


def test_no_reset_without_flip_or_without_recent_squeeze():
    frame, _, _ = squeeze_frame(-1, flip_rate=0.0003)  # funding stays high: no flip
    assert not funding_features(frame)["funding_reset_long"].any()
    # the drawdown is measured from the trailing 72 h high: 30 h after the dump it still counts,
    # 96 h after it the high has left the window and the squeeze is over
    frame, s, _ = squeeze_frame(-1, dump_end_offset=30)
    ff = funding_features(frame)
    assert ff["funding_reset_long"].iloc[s] and ff["funding_squeeze_long"].iloc[s]
    frame, s, _ = squeeze_frame(-1, dump_end_offset=96)
    ff = funding_features(frame)
    assert not ff["funding_squeeze_long"].iloc[s] and not ff["funding_reset_long"].any()


def test_reset_without_open_interest():
    frame, s, _ = squeeze_frame(-1, with_oi=False)
    ff = funding_features(frame)  # oi_missing="ignore": price squeeze alone confirms
    assert np.flatnonzero(ff["funding_reset_long"].to_numpy()).tolist() == [s]
    assert ff["funding_oi_flush"].isna().all()
    blocked = funding_features(frame, FundingParams(oi_missing="block"))
    assert not blocked["funding_reset_long"].any()


def test_reset_blocked_when_open_interest_rises():
    frame, s, _ = squeeze_frame(-1)
    frame["open_interest"] = np.linspace(1000.0, 2000.0, len(frame))
    assert not funding_features(frame)["funding_reset_long"].any()


def test_persistence_counts_and_crowding():
    frame = base_frame(24 * 6)
    srows = settlement_rows(frame)
    rates = np.full(len(srows), 0.0001)
    rates[3:10] = 0.0004  # 7 settlements at 0.04 %
    rates[12:15] = -0.0002  # 3 settlements at -0.02 %
    frame.iloc[srows, frame.columns.get_loc("funding_rate")] = rates
    ff = funding_features(frame).iloc[srows]
    assert ff["funding_n_pos"].tolist()[2:11] == [0, 1, 2, 3, 4, 5, 6, 7, 0]
    assert ff["funding_n_neg"].tolist()[11:16] == [0, 1, 2, 3, 0]
    # n⁺ >= 6 at settlement 8; the 72 h excess sum (9 settlements × 0.03 % = 0.27 % > 0.15 %) also
    # crowds once 5 high settlements are in the window
    crowded = ff["funding_crowded_long"].tolist()
    assert crowded[:7] == [False] * 7 and crowded[7] and crowded[8]
    assert ff["funding_crowded_short"].tolist()[12:16] == [False, False, True, False]
    assert ff["funding_excess"].iloc[3] == pytest.approx(0.0003)


def test_interval_normalisation_to_8h():
    frame = base_frame(24 * 3)
    close_t = frame.index + pd.Timedelta(hours=1)
    rows = np.flatnonzero(close_t.hour % 4 == 0)  # a 4-hour funding interval
    frame.iloc[rows, frame.columns.get_loc("funding_rate")] = 0.0001
    ff = funding_features(frame).iloc[rows]
    assert ff["funding_r8"].iloc[0] == pytest.approx(0.0001)  # first settlement: default 8 h
    assert np.allclose(ff["funding_r8"].iloc[1:], 0.0002)


def test_forward_fill_and_flags_only_on_settlement_bars(sample):
    ff = funding_features(sample)
    assert list(ff.columns) == list(FUNDING_COLUMNS)
    assert ff.index.equals(sample.index)
    settled = sample["funding_rate"].notna().to_numpy()
    assert (ff["funding_settled"].to_numpy() == settled).all()
    assert not (ff["funding_reset_long"] & ~ff["funding_settled"]).any()
    first = np.flatnonzero(settled)[0]
    assert ff["funding_r8"].iloc[:first].isna().all()
    # between settlements the value is the last settlement's
    seg = ff["funding_r8"].iloc[first:].to_numpy()
    last = sample["funding_rate"].iloc[first:].ffill().to_numpy()
    assert np.allclose(seg, last)  # all sample intervals are 8 h


def test_z_and_percentile_match_independent_pandas(sample):
    p = FundingParams()
    r = sample["funding_rate"].dropna()
    steps = pd.Series(r.index).diff().dropna()
    assert (steps == pd.Timedelta(hours=8)).all()
    e = r - p.baseline
    past = e.shift(1).rolling(p.z_window, min_periods=p.z_min_periods)
    z_ref = (e - past.mean()) / past.std().clip(lower=p.z_sigma_floor)
    ref_pct = e.rolling(p.pct_window + 1, min_periods=p.pct_min_periods + 1).apply(
        lambda w: ((w[:-1] < w[-1]).sum() + 0.5 * (w[:-1] == w[-1]).sum()) / (len(w) - 1), raw=True
    )
    ff = funding_features(sample, p).loc[r.index]
    assert (ff["funding_z"].isna() == z_ref.isna()).all()
    assert np.allclose(ff["funding_z"].dropna(), z_ref.dropna(), rtol=1e-9, atol=1e-9)
    assert (ff["funding_pct"].isna() == ref_pct.isna()).all()
    assert np.allclose(ff["funding_pct"].dropna(), ref_pct.dropna(), rtol=0, atol=1e-12)


def test_rolling_helpers_are_past_only():
    x = pd.Series([1.0, 2.0, 3.0, 4.0, 100.0])
    z = rolling_zscore(x, 3, 3)
    assert z.iloc[:3].isna().all()
    assert z.iloc[3] == pytest.approx((4.0 - 2.0) / 1.0)
    assert z.iloc[4] == pytest.approx((100.0 - 3.0) / 1.0)
    robust = rolling_zscore(x, 3, 3, robust=True)
    assert robust.iloc[4] == pytest.approx((100.0 - 3.0) / 1.4826)
    pct = rolling_percentile(pd.Series([1.0, 1.0, 3.0, 2.0]), 3, 1)
    assert np.isnan(pct.iloc[0])
    assert pct.tolist()[1:] == [0.5, 1.0, pytest.approx(2 / 3)]


def test_prefix(sample):
    full = funding_features(sample)
    for k in CUTS:
        assert_same_row(funding_features(sample.iloc[:k]).iloc[-1], full.iloc[k - 1])


def test_params_frozen_and_strict():
    with pytest.raises(ValidationError):
        FundingParams(z_windw=10)
    p = FundingParams()
    with pytest.raises(ValidationError):
        p.z_window = 5


def test_frame_without_funding():
    frame = base_frame(50).drop(columns="funding_rate")
    ff = funding_features(frame)
    assert list(ff.columns) == list(FUNDING_COLUMNS)
    assert ff["funding_z"].isna().all() and not ff["funding_reset_long"].any()
