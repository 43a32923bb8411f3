"""Liquidation-map estimator (docs/methods.md §A.3, §A.4, §D.1): hand-computed cases, no look-ahead,
warm-up convergence (§0.2), and the numba kernel against the plain NumPy reference."""

from __future__ import annotations

import ast
import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from strategies.features.liquidation_map import (
    FEATURE_COLUMNS,
    LiqMapParams,
    compute_liquidation_map,
    liquidation_features,
    liquidation_heatmap,
    liquidation_map_snapshots,
    prepare_inputs,
    warmup_days,
)

ROOT = Path(__file__).resolve().parents[2]
INF = math.inf
ONE_TIER = ((10.0, 1.0),)


def _reference():
    spec = importlib.util.spec_from_file_location("_liqmap_reference", ROOT / "bench" / "_liqmap_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_run


def make_frame(rows: list[tuple[float, float, float, float, float]], freq: str = "1h", **extra) -> pd.DataFrame:
    """Bars from (open, high, low, close, open_interest) tuples; volume 1."""
    idx = pd.date_range("2025-01-01", periods=len(rows), freq=freq, tz="UTC", name="time")
    frame = pd.DataFrame(rows, index=idx, columns=["open", "high", "low", "close", "open_interest"])
    frame.insert(4, "volume", 1.0)
    for name, values in extra.items():
        frame[name] = values
    return frame


def flat(price: float, oi: float, low: float | None = None, high: float | None = None):
    return (price, price if high is None else high, price if low is None else low, price, oi)


def bin_value(snapshot, row: int, price: float, side: str) -> float:
    """Notional in the bin whose edges bracket ``price``."""
    i = int(np.searchsorted(snapshot.edges, price, side="right")) - 1
    return float((snapshot.long_usd if side == "long" else snapshot.short_usd)[row, i])


@pytest.fixture(scope="module")
def btc_1h(sample_frame) -> pd.DataFrame:
    return sample_frame("BTC/USDT:USDT", "1h").copy()


# --- hand-computed cases -------------------------------------------------------------------------

LONG_10X = 100_000 * ((1 - 1 / 10) / (1 - 0.004))
SHORT_10X = 100_000 * ((1 + 1 / 10) / (1 + 0.004))


def test_exact_binance_levels_land_in_their_bins():
    """§D.1 worked example: 10x at 100,000, MMR 0.4 % → long 90,361.45, short 109,561.75."""
    assert LONG_10X == pytest.approx(90_361.45, abs=0.005)
    assert SHORT_10X == pytest.approx(109_561.75, abs=0.005)
    # bar 1 opens 1 contract at 100,000 (doji: half long, half short)
    frame = make_frame([flat(100_000, 10.0), flat(100_000, 11.0)])
    p = LiqMapParams(tiers=ONE_TIER, half_life_days=INF, funding_tilt=False)
    snap = liquidation_map_snapshots(frame, p, [frame.index[1]])
    assert snap.long_usd.sum() == pytest.approx(50_000.0, rel=1e-12)
    assert snap.short_usd.sum() == pytest.approx(50_000.0, rel=1e-12)
    assert bin_value(snap, 0, LONG_10X, "long") == pytest.approx(50_000.0, rel=1e-12)
    assert bin_value(snap, 0, SHORT_10X, "short") == pytest.approx(50_000.0, rel=1e-12)
    i = int(np.argmax(snap.long_usd[0]))
    assert snap.edges[i] <= LONG_10X < snap.edges[i + 1]
    assert snap.prices[i] == pytest.approx(LONG_10X, rel=0.0006)  # bucket 0.1 %
    # never the wrong approximations of §A.2 (EP(1 - 1/L + m/L) = 90,040)
    assert not snap.edges[i] <= 100_000 * (1 - 0.1 + 0.004 / 10) < snap.edges[i + 1]


def test_consumed_exactly_when_the_low_reaches_the_level():
    """Inclusive boundary: low == level consumes; a low one tick above does not, even in the same bin."""
    above = np.nextafter(LONG_10X, INF)
    frame = make_frame([
        flat(100_000, 10.0),
        flat(100_000, 11.0),                   # creates the lots
        flat(100_000, 11.0, low=above),         # same bin, not crossed
        flat(100_000, 11.0, low=LONG_10X),      # touches the level exactly
        flat(100_000, 11.0, low=80_000),        # nothing left
    ])
    p = LiqMapParams(tiers=ONE_TIER, half_life_days=INF, funding_tilt=False)
    feats = liquidation_features(frame, p)
    assert feats["liq_consumed_long"].tolist() == [0.0, 0.0, 0.0, pytest.approx(50_000.0, rel=1e-12), 0.0]
    assert (feats["liq_consumed_short"] == 0.0).all()
    assert feats["liq_long_below_10"].iloc[2] == pytest.approx(50_000.0, rel=1e-12)
    assert feats["liq_long_below_10"].iloc[3] == 0.0


def test_consumption_uses_mark_prices_when_present():
    """The mark low crosses the level, the last-price low does not (and vice versa for shorts)."""
    rows = [flat(100_000, 10.0), flat(100_000, 11.0), flat(100_000, 11.0, low=95_000, high=115_000)]
    mark_low = [100_000, 100_000, 90_000]
    mark_high = [100_000, 100_000, 105_000]
    frame = make_frame(rows, mark_low=mark_low, mark_high=mark_high)
    p = LiqMapParams(tiers=ONE_TIER, half_life_days=INF, funding_tilt=False)
    feats = liquidation_features(frame, p)
    assert feats["liq_consumed_long"].iloc[2] == pytest.approx(50_000.0, rel=1e-12)
    assert feats["liq_consumed_short"].iloc[2] == 0.0


def test_short_consumed_by_the_high_not_before_creation():
    """A lot created at bar k's close is not consumed by bar k's own high, only by a later bar."""
    rows = [flat(100_000, 10.0), (100_000, 110_000, 100_000, 100_000, 11.0), flat(100_000, 11.0, high=SHORT_10X)]
    p = LiqMapParams(tiers=ONE_TIER, half_life_days=INF, funding_tilt=False, entry_price="close")
    consumed = liquidation_features(make_frame(rows), p)["liq_consumed_short"]
    assert consumed.iloc[1] == 0.0  # bar 1's high (110,000) is above the level it created
    assert consumed.iloc[2] == pytest.approx(50_000.0, rel=1e-12)  # high == level: inclusive


def test_decay_halves_after_one_half_life():
    rows = [flat(100_000, 10.0), flat(100_000, 11.0)] + [flat(100_000, 11.0)] * 24
    frame = make_frame(rows)
    p = LiqMapParams(tiers=ONE_TIER, half_life_days=1.0, funding_tilt=False)
    snap = liquidation_map_snapshots(frame, p, [frame.index[1], frame.index[25]])
    total = snap.long_usd.sum(axis=1) + snap.short_usd.sum(axis=1)
    assert total[0] == pytest.approx(100_000.0, rel=1e-12)
    assert total[1] == pytest.approx(50_000.0, rel=1e-12)


def test_window_drops_lots_older_than_w():
    """W = 1 day on hourly bars: a lot aged exactly 24 h is kept, at 25 h it is gone."""
    rows = [flat(100_000, 10.0), flat(100_000, 11.0)] + [flat(100_000, 11.0)] * 25
    frame = make_frame(rows)
    p = LiqMapParams(tiers=ONE_TIER, half_life_days=INF, window_days=1.0, funding_tilt=False)
    snap = liquidation_map_snapshots(frame, p, [frame.index[24], frame.index[25], frame.index[26]])
    total = snap.long_usd.sum(axis=1) + snap.short_usd.sum(axis=1)
    assert total.tolist() == [pytest.approx(100_000.0), pytest.approx(100_000.0), 0.0]


def test_oi_drop_does_not_remove_consumed_notional_twice():
    """Bar 2 liquidates the long lot (50k) and OI falls by exactly that: nothing else is removed.
    Bar 4 falls by 30k more with nothing consumed: 30k leaves the shorts (absolute scale)."""
    rows = [
        flat(100_000, 10.0),
        flat(100_000, 11.0),                   # +100k: 50k long, 50k short
        flat(100_000, 10.5, low=LONG_10X),     # consumes 50k of longs, OI -50k
        flat(100_000, 10.5),
        (100_000, 100_000, 100_000, 100_000, 10.2),   # doji, OI -30k, side-aware 50/50 → spill
    ]
    p = LiqMapParams(tiers=ONE_TIER, half_life_days=INF, funding_tilt=False, removal_scale="absolute")
    frame = make_frame(rows)
    feats, snap = compute_liquidation_map(frame, p, [2, 4])
    assert feats["liq_consumed_long"].iloc[2] == pytest.approx(50_000.0, rel=1e-12)
    assert snap.short_usd[0].sum() == pytest.approx(50_000.0, rel=1e-12)
    assert snap.long_usd[0].sum() == 0.0
    # doji: 15k asked of each side; longs are empty, so their share spills to the shorts
    assert snap.short_usd[1].sum() == pytest.approx(20_000.0, rel=1e-9)


def test_relative_removal_closes_the_same_fraction_of_the_map():
    rows = [flat(100_000, 10.0), flat(100_000, 11.0), flat(100_000, 11.0), flat(100_000, 9.9)]
    p = LiqMapParams(tiers=ONE_TIER, half_life_days=INF, funding_tilt=False, removal="proportional")
    snap = liquidation_map_snapshots(make_frame(rows), p, [make_frame(rows).index[-1]])
    # OI fell 10 % (1.1 of 11 contracts): the map (100k) loses 10 %
    assert snap.long_usd.sum() + snap.short_usd.sum() == pytest.approx(90_000.0, rel=1e-9)


def test_side_split_taker_share_and_excess_funding_tilt():
    base = [flat(100_000, 10.0), flat(100_000, 11.0)]
    p = LiqMapParams(tiers=ONE_TIER, half_life_days=INF)
    # taker-buy share 0.7, κ = 1 → w_L = 0.7
    snap = liquidation_map_snapshots(make_frame(base, taker_buy_volume=[0.5, 0.7]), p.model_copy(
        update={"funding_tilt": False}), [pd.Timestamp("2025-01-01 01:00", tz="UTC")])
    assert snap.long_usd.sum() == pytest.approx(70_000.0, rel=1e-12)
    # baseline funding 0.01 % adds no tilt; 0.03 % adds 0.2·tanh(5000·0.0002) = 0.2·tanh(1)
    for rate, w_long in ((0.0001, 0.5), (0.0003, 0.5 + 0.2 * math.tanh(1.0))):
        frame = make_frame(base, funding_rate=[rate, np.nan])
        snap = liquidation_map_snapshots(frame, p, [frame.index[1]])
        assert snap.long_usd.sum() == pytest.approx(100_000.0 * w_long, rel=1e-12)


def test_candle_rules_without_taker_volume():
    up = [flat(100_000, 10.0), (100_000, 100_400, 99_900, 100_300, 11.0)]
    for rule, w_long in (("body", 0.5 + 0.5 * 300 / 500), ("colour", 1.0)):
        frame = make_frame(up)
        p = LiqMapParams(tiers=ONE_TIER, half_life_days=INF, funding_tilt=False, side_rule=rule)
        snap = liquidation_map_snapshots(frame, p, [frame.index[1]])
        assert snap.long_usd.sum() == pytest.approx(100_300.0 * w_long, rel=1e-12)


def test_missing_open_interest_falls_back_to_volume():
    frame = make_frame([flat(100_000, np.nan)] * 3)
    frame = frame.drop(columns="open_interest")
    p = LiqMapParams(tiers=ONE_TIER, half_life_days=INF, funding_tilt=False)
    snap = liquidation_map_snapshots(frame, p, [frame.index[-1]])
    # 3 bars × 3 % of 1 BTC × 100,000
    assert snap.long_usd.sum() + snap.short_usd.sum() == pytest.approx(9_000.0, rel=1e-12)


def test_asymmetry_features_by_hand():
    """§A.4 on a map of two lots: 100k of shorts at 105,000 and 100k of longs at 95,000 (20x,
    m = 0), read at a close of 101,000 (shorts +3.96 %, longs -5.94 %)."""
    p = LiqMapParams(tiers=((20.0, 1.0),), half_life_days=INF, funding_tilt=False, mmr=0.0)
    frame = make_frame([flat(100_000, 10.0), flat(100_000, 12.0), flat(101_000, 12.0)])
    feats, snap = compute_liquidation_map(frame, p, [2])
    f = feats.iloc[-1]
    price = 101_000.0
    eps = 1e-6 * 12 * price
    c_short = snap.prices[np.argmax(snap.short_usd[0])]
    c_long = snap.prices[np.argmax(snap.long_usd[0])]
    assert abs(math.log(c_short / 105_000)) < 0.0005 and abs(math.log(c_long / 95_000)) < 0.0005
    assert [f["liq_short_above_5"], f["liq_short_above_10"], f["liq_short_above_20"]] == [100_000.0] * 3
    assert [f["liq_long_below_5"], f["liq_long_below_10"], f["liq_long_below_20"]] == [0.0, 100_000.0, 100_000.0]
    assert f["liq_asym_5"] == pytest.approx(math.log((100_000 + eps) / eps), rel=1e-12)
    assert f["liq_asym_10"] == 0.0 and f["liq_asym_20"] == 0.0 and f["liq_imbalance_10"] == 0.0
    g_up = 100_000 * math.exp(-math.log(c_short / price) / 0.03)
    g_dn = 100_000 * math.exp(-math.log(price / c_long) / 0.03)
    assert f["liq_pull_up"] == pytest.approx(g_up, rel=1e-9)
    assert f["liq_pull_dn"] == pytest.approx(g_dn, rel=1e-9)
    assert f["liq_pull_asym"] == pytest.approx(math.log((g_up + eps) / (g_dn + eps)), rel=1e-9)
    assert f["liq_cluster_up_dist"] == pytest.approx(c_short / price - 1, rel=1e-12)
    assert f["liq_cluster_dn_dist"] == pytest.approx(1 - c_long / price, rel=1e-12)
    assert f["liq_cluster_up_size"] == f["liq_cluster_dn_size"] == pytest.approx(100_000.0, rel=1e-12)
    # an empty side has no cluster
    assert math.isnan(feats["liq_cluster_up_dist"].iloc[0]) and math.isnan(feats["liq_cluster_dn_size"].iloc[0])


def test_feature_frame_shape_and_params_contract(btc_1h):
    feats = liquidation_features(btc_1h.iloc[:500])
    assert list(feats.columns) == list(FEATURE_COLUMNS)
    assert feats.index.equals(btc_1h.index[:500])
    assert all(dt == np.float64 for dt in feats.dtypes)
    with pytest.raises(ValidationError):
        LiqMapParams(bucket_pc=0.1)
    with pytest.raises(ValidationError):
        LiqMapParams(tiers=((1.0, 1.0),))
    p = LiqMapParams()
    with pytest.raises(ValidationError):
        p.kappa = 2.0  # frozen
    assert hash(p) == hash(LiqMapParams())
    assert warmup_days(p) == 90.0


def test_snapshots_and_heatmap(btc_1h):
    frame = btc_1h.iloc[-2000:]
    at = [frame.index[-1], frame.index[100], frame.index[-1]]
    snap = liquidation_map_snapshots(frame, LiqMapParams(), at)
    assert snap.long_usd.shape == (3, snap.prices.size) == snap.short_usd.shape
    assert np.array_equal(snap.long_usd[0], snap.long_usd[2])
    assert snap.prices.size >= 400 and np.all(np.diff(snap.prices) > 0)
    heat = liquidation_heatmap(frame, LiqMapParams(), max_columns=50)
    assert len(heat.times) == 50 and heat.times[-1] == frame.index[-1]
    assert np.array_equal(heat.long_usd[-1], snap.long_usd[0])
    with pytest.raises(KeyError):
        liquidation_map_snapshots(frame, LiqMapParams(), [frame.index[0] + pd.Timedelta(minutes=1)])


# --- no look-ahead, warm-up, kernel == reference -------------------------------------------------

def test_prefix_features_equal_full_frame_features(btc_1h):
    full = liquidation_features(btc_1h).to_numpy()
    for k in (1, 2, 24, 1_500, 1_620, 1_621, 3_000, 4_444, 6_000, 8_000, 9_000, len(btc_1h) - 1):
        part = liquidation_features(btc_1h.iloc[:k]).to_numpy()
        np.testing.assert_array_equal(part, full[:k], err_msg=f"prefix {k}")


def test_prefix_on_5m_with_mark_free_frame(btc_5m):
    frame = btc_5m.iloc[-20_000:].copy()
    full = liquidation_features(frame).to_numpy()
    for k in (7, 5_000, 12_345, 19_999):
        np.testing.assert_array_equal(liquidation_features(frame.iloc[:k]).to_numpy(), full[:k])


def test_warm_up_converges(btc_1h):
    """docs/methods.md §0.2: the map at t after warm-ups W, 2W, 4W agrees to 1e-3 relative L1."""
    p = LiqMapParams()
    delta = math.log1p(p.bucket_pct / 100.0)
    warm = warmup_days(p)
    t = btc_1h.index[-1]

    def state(days: float) -> pd.Series:
        sub = btc_1h[btc_1h.index > t - pd.Timedelta(days=days)]
        s = liquidation_map_snapshots(sub, p, [t])
        key = np.round(np.log(s.prices) / delta - 0.5).astype(np.int64)  # global bin number
        return pd.concat([pd.Series(s.long_usd[0], key), pd.Series(s.short_usd[0], -key)])

    w1, w2, w4 = state(warm), state(2 * warm), state(4 * warm)
    for a in (w1, w2):
        diff = a.sub(w4, fill_value=0.0).abs().sum() / w4.abs().sum()
        assert diff < 1e-3


@pytest.mark.parametrize("update", [
    {},
    {"removal": "proportional", "removal_scale": "absolute", "side_rule": "colour", "entry_price": "close"},
])
def test_kernel_matches_numpy_reference(btc_1h, update):
    reference_run = _reference()
    p = LiqMapParams().model_copy(update=update)
    frame = btc_1h if not update else btc_1h.iloc[2_000:6_000]
    pos = np.array([len(frame) // 2, len(frame) - 1])
    feats, snap = compute_liquidation_map(frame, p, pos)
    ref, ref_l, ref_s = reference_run(prepare_inputs(frame, p), pos)
    got = feats.to_numpy()
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    for j, name in enumerate(FEATURE_COLUMNS):
        a, b = np.nan_to_num(got[:, j]), np.nan_to_num(ref[:, j])
        log_like = "asym" in name or "imbalance" in name or "dist" in name
        atol = 1e-9 if log_like else 1e-9 * max(np.abs(b).max(), 1.0)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=atol, err_msg=name)
    for mine, theirs in ((snap.long_usd, ref_l), (snap.short_usd, ref_s)):
        assert np.abs(mine - theirs).sum() <= 1e-9 * np.abs(theirs).sum()


def test_kernel_matches_reference_with_taker_volume_and_no_oi(btc_1h):
    reference_run = _reference()
    frame = btc_1h.iloc[:1_500].drop(columns=["open_interest", "mark_high", "mark_low"]).copy()
    frame["taker_buy_volume"] = frame["volume"] * (0.5 + 0.3 * np.sin(np.arange(len(frame))))
    p = LiqMapParams(kappa=2.0, window_days=5.0, half_life_days=3.0)
    got = liquidation_features(frame, p).to_numpy()
    ref, _, _ = reference_run(prepare_inputs(frame, p))
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(ref), rtol=1e-9, atol=1e-6)


def test_features_module_imports_no_io():
    banned = {"ccxt", "backtrader", "bot", "backtests", "requests", "urllib", "socket"}
    for name in ("liquidation_map.py", "_liqmap_kernel.py"):
        tree = ast.parse((ROOT / "strategies" / "features" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & banned, (name, roots)
