"""Data-level look-ahead: an auxiliary series must not know the price path after its bar close.

The prefix test (tests/strategies) proves the *code* looks only backwards; it cannot see a data
source whose stamps are earlier than the moment the values were known. This test can: on the
bundled sample, regress the change of each auxiliary series at a bar close on the return over the
next 30 minutes (controlling for the return since the series' previous update). A series stamped
at its availability time has no loading on the future (|t| ≈ 0–2); the Hyperliquid open interest
stamped at the *start* of its hour, as the sample held it before the importer applied its lag,
loads on ``(t, t+30 min]`` with t-statistics of 13–25 and fails.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bot.importers as importers
from backtests.sample import load_sample_frame
from bot.data import SAMPLE_DIR, load_frame
from bot.importers import Importer
from bot.store import DatasetKey, Store
from bot.timeframes import timeframe_to_timedelta

T_MAX = 4.0  # |t| above this = the series explains returns after its stamp (p < 1e-4 under no leak)
HORIZON = pd.Timedelta(minutes=30)
AUX = ("open_interest", "funding_rate", "liquidations")


def forward_tstat(frame: pd.DataFrame, series: str, timeframe: str) -> tuple[float, int]:
    """t-statistic of the forward return in ``OLS: y ~ 1 + past return + forward return``.

    ``y`` is the change of ``series`` at the bars where it updates: Δlog for open interest,
    Δrate between settlements for funding, signed log net liquidations (short − long) per bar.
    The forward return is ``log close`` from the bar's close to 30 minutes later (one bar on 1h).
    """
    step = timeframe_to_timedelta(timeframe)
    h = max(1, int(HORIZON / step))
    lc = np.log(frame["close"].to_numpy(dtype=float))
    fwd = np.full(len(lc), np.nan)
    fwd[:-h] = lc[h:] - lc[:-h]
    if series == "liquidations":
        net = (frame["liq_short_usd"] - frame["liq_long_usd"]).to_numpy(dtype=float)
        at = np.flatnonzero(np.isfinite(net))
        y = np.sign(net[at]) * np.log1p(np.abs(net[at]))
        past = np.r_[np.nan, np.diff(lc)][at]
    else:
        values = frame[series].to_numpy(dtype=float)
        if series == "open_interest":
            level = np.log(values)
            d = np.diff(level, prepend=np.nan)
            at = np.flatnonzero(np.isfinite(d) & (d != 0))
        else:
            at = np.flatnonzero(np.isfinite(values))
            level = values
        y = np.r_[np.nan, np.diff(level[at])]
        past = np.r_[np.nan, lc[at[1:]] - lc[at[:-1]]]
    X = np.column_stack([np.ones(len(at)), past, fwd[at]])
    ok = np.isfinite(y) & np.isfinite(X).all(axis=1)
    X, y = X[ok], y[ok]
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    resid = y - X @ beta
    cov = resid @ resid / (len(y) - X.shape[1]) * np.linalg.inv(X.T @ X)
    return float(beta[-1] / np.sqrt(cov[-1, -1])), len(y)


def _present(frame: pd.DataFrame, series: str) -> int:
    col = "liq_long_usd" if series == "liquidations" else series
    return int(np.isfinite(frame[col]).sum()) if col in frame else 0


@pytest.fixture(scope="module")
def sample_frames() -> dict[tuple[str, str], pd.DataFrame]:
    return {(s, tf): load_sample_frame(s, tf) for s in ("BTC/USDT:USDT", "ETH/USDT:USDT") for tf in ("5m", "1h")}


@pytest.mark.parametrize("series", AUX)
@pytest.mark.parametrize("symbol", ["BTC/USDT:USDT", "ETH/USDT:USDT"])
@pytest.mark.parametrize("timeframe", ["5m", "1h"])
def test_sample_aux_series_do_not_know_the_future(sample_frames, symbol, timeframe, series):
    frame = sample_frames[(symbol, timeframe)]
    if _present(frame, series) < 30:  # e.g. ETH 5m covers no liquidation window
        assert series == "liquidations"
        return
    t, n = forward_tstat(frame, series, timeframe)
    assert n >= 15
    assert abs(t) < T_MAX, f"{symbol} {timeframe} {series}: t={t:.1f} on returns after the close (n={n})"


def _reimport_open_interest(tmp_path, symbol: str) -> pd.DataFrame:
    """Re-import the sample's Hyperliquid USD open interest at its original (interval-start) stamps."""
    coin = symbol.split("/")[0]
    sample = Store(SAMPLE_DIR)
    oi = sample.read(DatasetKey("hyperliquid", f"{coin}/USDC:USDC", "open_interest", "1h"))
    store = Store(tmp_path)
    for tf in ("1h", "5m"):
        key = DatasetKey("binanceusdm", symbol, "ohlcv", tf)
        store.write(key, sample.read(key))
    long = pd.DataFrame({"timestamp": oi.index - pd.Timedelta(hours=1), "venue": "hyperliquid", "coin": coin,
                         "oi_usd": oi["open_interest_value"].to_numpy()})
    path = tmp_path / "oi_usd.parquet"
    long.to_parquet(path)
    Importer(store).import_path(path)
    return load_frame(tmp_path, "binanceusdm", symbol, "5m", use_sample=False)


def test_importer_reproduces_the_sample_and_old_stamping_fails(tmp_path, monkeypatch):
    """The sample is what the importer makes of the source rows; without the lag the test fails."""
    symbol = "BTC/USDT:USDT"
    fixed = _reimport_open_interest(tmp_path / "fixed", symbol)
    sample = load_sample_frame(symbol, "5m")
    np.testing.assert_allclose(fixed["open_interest"].to_numpy(), sample["open_interest"].to_numpy(), rtol=1e-12)
    monkeypatch.setitem(importers.AVAILABILITY_LAGS, ("long_parquet", "open_interest"), pd.Timedelta(0))
    old = _reimport_open_interest(tmp_path / "old", symbol)
    t, n = forward_tstat(old, "open_interest", "5m")
    assert t > T_MAX and n > 8000, f"old stamping should fail the leak test, got t={t:.1f}"
