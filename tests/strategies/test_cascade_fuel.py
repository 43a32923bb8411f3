"""Realised liquidations in the continuation rule of ``liq_asymmetry`` and the votes of ``confluence``
(issue 14 item 3): checked on the bundled sample's real Hyperliquid events (ETH, 2025-05-25 → 29,
joined to Binance 1h candles by the loader), against values derived by hand from the frame's own
``liq_short_usd`` column, and the fallback to the model everywhere else."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from strategies import STRATEGIES, confluence, liq_asymmetry
from strategies.features.liquidation_map import LiqMapParams

ENTRY = pd.Timestamp("2025-05-29 00:00", tz="UTC")  # the realised short cascade the tests follow
MODEL_ENTRY = pd.Timestamp("2025-05-29 02:00", tz="UTC")  # the model's own continuation entry
REALISED_COLS = ["liq_long_usd", "liq_short_usd"]


def cont(**kw) -> liq_asymmetry.Params:
    return liq_asymmetry.Params(variant="continuation", **kw)


@pytest.fixture(scope="module")
def eth(sample_frame) -> pd.DataFrame:
    """ETH 1h, 2025-01-20 → 06-10: the map's 90-day warm-up plus the 30-day window before the events."""
    return sample_frame("ETH/USDT:USDT", "1h").loc["2025-01-20":"2025-06-10"].copy()


@pytest.fixture(scope="module")
def bare(eth) -> pd.DataFrame:
    """The same bars without realised liquidations."""
    return eth.drop(columns=REALISED_COLS)


def hand_short_cascade(frame: pd.DataFrame, at: pd.Timestamp, q: float = 0.95, days: float = 30.0,
                       min_history: int = 20) -> float:
    """The realised short-cascade flag at ``at`` from the raw column: the bar's realised short USD
    strictly above the ``q`` quantile (NumPy, linear) of the non-zero covered values of
    ``[at − days, at)``; NaN without data or with fewer than ``min_history`` such values."""
    v = frame["liq_short_usd"]
    now = v.loc[at]
    past = v[(v.index >= at - pd.Timedelta(days=days)) & (v.index < at)].dropna()
    if np.isnan(now) or past.size < min_history:
        return np.nan
    pool = past[past > 0].to_numpy()
    if pool.size < min_history:
        return np.nan
    return float(now > np.quantile(pool, q) and now > 0)


def test_continuation_entry_follows_the_realised_cascade(eth):
    p = cont()
    fe = liq_asymmetry.features(eth, p)
    assert "realised" in fe
    flag = fe["realised"]["liq_cascade_short"]
    # the realised flag, by hand, on every covered bar around the entry
    window = eth.loc["2025-05-28 18:00":"2025-05-29 02:00"].index
    np.testing.assert_array_equal(flag.loc[window].to_numpy(), [hand_short_cascade(eth, t) for t in window])
    assert hand_short_cascade(eth, ENTRY) == 1.0 and hand_short_cascade(eth, MODEL_ENTRY) == 0.0
    bar = eth.loc[ENTRY]
    assert bar["close"] >= bar["high"] - (bar["high"] - bar["low"]) / 3.0  # the close-in-range leg holds
    # the model's own fuel did not fire at ENTRY: its continuation trade starts two bars later
    model = liq_asymmetry.signals(eth, cont(realised="model"), fe)
    auto = liq_asymmetry.signals(eth, p, fe)
    span = slice(ENTRY - pd.Timedelta(hours=1), ENTRY + pd.Timedelta(hours=6))
    assert model["target"].loc[span].tolist() == [0, 0, 0, 1, 1, 1, 1, 0]
    # auto: long on the realised cascade for the 4-bar hold; the model's entry at 02:00 (a covered bar
    # whose realised verdict is "no cascade") does not re-arm it
    assert auto["target"].loc[span].tolist() == [0, 1, 1, 1, 1, 0, 0, 0]
    # its stop and target: the rule's levels at the entry bar (the model run stated them for 02:00)
    P = bar["close"]
    assert auto["stop"].loc[ENTRY] < P < auto["take_profit"].loc[ENTRY]
    assert (auto["stop"].loc[ENTRY:ENTRY + pd.Timedelta(hours=3)] == auto["stop"].loc[ENTRY]).all()
    # "realised": trades only on realised verdicts, here the same single trade
    only = liq_asymmetry.signals(eth, cont(realised="realised"), fe)
    pd.testing.assert_frame_equal(only.loc[span], auto.loc[span])
    assert int((only["target"] != 0).sum()) == 4
    # away from the recorded span (and its hold), auto is the model, value for value
    covered = eth.index[eth["liq_short_usd"].notna()]
    outside = (eth.index < covered[0]) | (eth.index > covered[-1] + pd.Timedelta(hours=4))
    pd.testing.assert_frame_equal(auto[outside], model[outside])
    # no long has been liquidated in these events: the short side has no realised verdict and
    # falls back to the model in "auto" (and never trades in "realised")
    assert fe["realised"]["liq_cascade_long"].isna().all()
    assert (only["target"] >= 0).all()


def test_model_mode_is_the_model_only_rule(eth, bare):
    """``realised="model"`` ignores the realised columns: the same signals as on the bars without
    them, in every mode ("auto" and "model" on bars without realised data; "realised" never trades)."""
    ref = liq_asymmetry.signals(bare, cont(realised="model"))
    assert "realised" not in liq_asymmetry.features(eth, cont(realised="model"))
    pd.testing.assert_frame_equal(liq_asymmetry.signals(eth, cont(realised="model")), ref)
    pd.testing.assert_frame_equal(liq_asymmetry.signals(bare, cont()), ref)
    assert "realised" not in liq_asymmetry.features(bare, cont())
    assert (liq_asymmetry.signals(bare, cont(realised="realised"))["target"] == 0).all()
    assert (ref["target"] != 0).sum() > 20  # the model trades on this span
    # columns present but empty (no recorded span) are "no realised data" too
    empty = eth.copy()
    empty[REALISED_COLS] = np.nan
    pd.testing.assert_frame_equal(liq_asymmetry.signals(empty, cont()), ref)


@pytest.mark.parametrize("name", ["liq_asymmetry", "confluence"])
def test_default_runs_unchanged_without_realised_data(name, btc_1h):
    """On the BTC 1h sample without its realised columns, the default parameters, every
    liquidation-asymmetry variant and a voting cascade family give exactly the model-only result."""
    spec = STRATEGIES[name]
    frame = btc_1h.drop(columns=REALISED_COLS).iloc[:5000]
    if name == "liq_asymmetry":
        cases = [{}, {"variant": "continuation"}, {"variant": "exhaustion"}]
    else:
        cases = [{}, {"w_cascade": 1.0, "threshold": 1.0}]
    for kw in cases:
        p = spec.Params(**kw)
        got = spec.run(frame, p)
        ref = spec.run(frame, spec.Params(**kw, realised="model"))
        pd.testing.assert_frame_equal(got, ref, check_exact=True)


def test_confluence_cascade_family_votes_with_realised_data(eth, bare):
    fam = confluence.family_signals(eth)
    pd.testing.assert_frame_equal(fam["cascade"], liq_asymmetry.signals(eth, cont()))
    # the cascade family alone (unit weight, threshold 1): long at the realised cascade
    alone = {"w_liq": 0.0, "w_funding": 0.0, "w_sr": 0.0, "w_cascade": 1.0, "threshold": 1.0, "max_hold_hours": 168.0}
    got = confluence.signals(eth, confluence.Params(**alone))
    span = slice(ENTRY - pd.Timedelta(hours=1), ENTRY + pd.Timedelta(hours=6))
    assert got["target"].loc[span].tolist() == [0, 1, 1, 1, 1, 0, 0, 0]
    # with realised="model" the family votes the model's trade instead, as on bars without realised data
    model = confluence.signals(eth, confluence.Params(**alone, realised="model"))
    assert model["target"].loc[span].tolist() == [0, 0, 0, 1, 1, 1, 1, 0]
    pd.testing.assert_frame_equal(model, confluence.signals(bare, confluence.Params(**alone)))
    # the default weight 0: realised data change nothing
    pd.testing.assert_frame_equal(confluence.signals(eth, confluence.Params()),
                                  confluence.signals(eth, confluence.Params(realised="model")))


def test_prefix_and_features_hook_through_the_realised_span(eth):
    """No look-ahead with realised data: a prefix cut inside the recorded span gives a prefix of the
    signals; the hook's features give the same signals; the cache key holds the realised fields."""
    for name, p in (("liq_asymmetry", cont()), ("confluence", confluence.Params(w_cascade=1.0, threshold=1.0))):
        spec = STRATEGIES[name]
        full = spec.run(eth, p)
        for cut in ("2025-05-26 03:00", "2025-05-29 00:00", "2025-05-29 01:00"):
            k = int(eth.index.searchsorted(pd.Timestamp(cut, tz="UTC"))) + 1
            pd.testing.assert_frame_equal(spec.run(eth.iloc[:k], p), full.iloc[:k], check_exact=False,
                                          rtol=1e-12, atol=0.0)
        pd.testing.assert_frame_equal(spec.run(eth, p, spec.compute_features(eth, p)), full)
        assert "realised" in spec.feature_params
    assert {"cons_days", "cons_q"} <= set(liq_asymmetry.SPEC.feature_params)


def test_declared_warmup_covers_the_realised_window(sample_frame):
    """The warm-up test of test_warmup.py on the realised span (a 10-day map and window, so twice
    the warm-up fits in the sample before the events): the same signals from a start inside it."""
    frame = sample_frame("ETH/USDT:USDT", "1h")
    p = cont(cons_days=10.0, liqmap=LiqMapParams(window_days=10.0))
    w = liq_asymmetry.warmup(p)
    start = pd.Timestamp("2025-05-26", tz="UTC")
    end = pd.Timestamp("2025-06-05", tz="UTC")
    assert start - 2 * w >= frame.index[0]
    short = liq_asymmetry.SPEC.run(frame[(frame.index >= start - w) & (frame.index < end)], p).loc[start:]
    long = liq_asymmetry.SPEC.run(frame[(frame.index >= start - 2 * w) & (frame.index < end)], p).loc[start:]
    fe = liq_asymmetry.features(frame[(frame.index >= start - w) & (frame.index < end)], p)
    assert fe["realised"]["liq_cascade_short"].loc[start:].eq(1.0).any()  # realised verdicts in the span
    assert (short["target"] != 0).sum() > 0
    pd.testing.assert_frame_equal(short, long, check_exact=False, rtol=1e-9, atol=0.0)
