"""Model-consumed vs realised liquidations (backtests/validation.py, docs/methods.md §A.3 calibration)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from backtests.sample import load_sample_frame
from backtests.validation import validate_against_realised
from strategies.features.liquidation_map import LiqMapParams


def test_validation_on_the_sample_realised_window():
    frame = load_sample_frame("BTC/USDT:USDT", "1h")
    out = validate_against_realised(frame, LiqMapParams())
    realised = frame["liq_long_usd"].notna() & frame["liq_short_usd"].notna()
    assert out["bars"] == int(realised.sum()) > 0
    assert pd.Timestamp(out["first"]) == frame.index[realised][0]
    for key in ("spearman_long", "spearman_short", "spearman_combined", "spearman_total"):
        assert key in out and (math.isnan(out[key]) or -1.0 <= out[key] <= 1.0)
    # the model's liquidations line up with the realised ones in rank (side-agnostic)
    assert out["spearman_total"] > 0.3
    assert out["realised_long_usd"] + out["realised_short_usd"] > 0


def test_constant_series_give_nan_and_missing_columns_are_reported():
    idx = pd.date_range("2025-01-01", periods=30, freq="1h", tz="UTC", name="time")
    price = 100_000 + 500 * np.sin(np.arange(30))
    frame = pd.DataFrame({"open": price, "high": price * 1.01, "low": price * 0.99, "close": price,
                          "volume": 10.0, "open_interest": np.linspace(100, 130, 30)}, index=idx)
    assert validate_against_realised(frame)["bars"] == 0
    frame["liq_long_usd"] = 0.0
    frame["liq_short_usd"] = np.nan
    assert validate_against_realised(frame)["bars"] == 0
    frame["liq_short_usd"] = 0.0
    out = validate_against_realised(frame)
    assert out["bars"] == 30 and math.isnan(out["spearman_long"])


def test_zone_scores_by_hand():
    from backtests.validation import zone_scores

    model = np.array([0.0, 5.0, 50.0, 500.0, 0.0, 20.0])
    real = np.array([1.0, 0.0, 3.0, 2.0, 0.0, 0.0])
    z = zone_scores(model, real, 10.0)  # fires on 50, 500, 20 -> hits on 50, 500
    assert (z["fired"], z["hits"], z["realised"]) == (3, 2, 3)
    assert z["precision"] == 2 / 3 and z["recall"] == 2 / 3 and z["base_rate"] == 0.5
    z0 = zone_scores(model, real, 0.0)  # any consumption > 0
    assert (z0["fired"], z0["hits"]) == (4, 2)
    assert math.isnan(zone_scores(np.zeros(3), real[:3], 0.0)["precision"])


def test_every_sample_event_set_per_venue_and_pooled(capsys):
    """Both venues' sets are listed; those without covering candles say so; the pooled row is the
    members' pairs together; the command prints the same rows."""
    import json

    from backtests.validation import main, validate_event_sets
    from bot.data import SAMPLE_DIR
    from bot.store import Store

    rows = validate_event_sets([Store(SAMPLE_DIR)], ["1h"])
    sets = {(r["venue"], r["symbol"]) for r in rows}
    assert {("hyperliquid", "BTC/USDC:USDC"), ("hyperliquid", "ETH/USDC:USDC"), ("okx", "BTC/USDT:USDT"),
            ("okx", "ETH/USDT:USDT")} <= sets
    okx = [r for r in rows if r["venue"] == "okx"]
    assert all(r["bars"] == 0 and "no 1h candles cover" in r["note"] for r in okx)
    members = [r for r in rows if r["venue"] == "hyperliquid"]
    (pooled,) = [r for r in rows if r["venue"] == "pooled"]
    assert pooled["bars"] == sum(r["bars"] for r in members) > 0
    for i, z in enumerate(pooled["zones"]):
        assert z["fired"] == sum(r["zones"][i]["fired"] for r in members)
        assert z["hits"] == sum(r["zones"][i]["hits"] for r in members)
    # the per-venue row of Hyperliquid BTC, independently: its events only, Hyperliquid's open interest
    btc = next(r for r in members if r["symbol"].startswith("BTC"))
    frame = load_sample_frame("BTC/USDT:USDT", "1h")  # sums every venue: only Hyperliquid's overlaps
    ref = validate_against_realised(frame, LiqMapParams())
    assert btc["bars"] == ref["bars"] and btc["spearman_total"] == ref["spearman_total"]
    assert btc["zones"] == ref["zones"]
    main(["--timeframes", "1h", "--json", "--no-sample", "--data-dir", str(SAMPLE_DIR)])
    printed = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [(p["venue"], p["symbol"], p["bars"]) for p in printed] == [(r["venue"], r["symbol"], r["bars"]) for r in rows]
