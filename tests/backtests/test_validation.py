"""Model-consumed vs realised liquidations (backtests/validation.py, methods.md §A.3 calibration)."""

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
