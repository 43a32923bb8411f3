"""Shared frame builders: the bundled sample's frames (loaded once per session) and hand-built bars.

Fixtures rather than importable helpers, because the suite runs with ``--import-mode=importlib``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import cache

import numpy as np
import pandas as pd
import pytest

if "CASCADE_CACHE_DIR" not in os.environ:
    # precompiled kernels (bot/aot.py) are built once per test session, here, and shared by the
    # tests' child processes; never in the user's ~/.cache
    os.environ["CASCADE_CACHE_DIR"] = tempfile.mkdtemp(prefix="cascade-test-cache-")
    atexit.register(shutil.rmtree, os.environ["CASCADE_CACHE_DIR"], True)
# The suite runs numba's JIT functions (a build per new argument-type set would cost seconds each);
# tests/backtests/test_compiled.py and tests/bot/test_aot.py turn precompiled kernels on and prove
# them bit for bit equal to the JIT on every strategy and engine set-up.
os.environ.setdefault("CASCADE_AOT", "0")
# Commands the tests run as processes run in those processes: a warm server (bot/warm.py) would
# outlive the test. tests/bot/test_warm.py turns it on, each test with its own server.
os.environ["CASCADE_WARM"] = "0"


@cache
def _sample(symbol: str, timeframe: str) -> pd.DataFrame:
    from backtests.sample import load_sample_frame

    return load_sample_frame(symbol, timeframe)


@pytest.fixture(scope="session")
def sample_frame() -> Callable[[str, str], pd.DataFrame]:
    """``sample_frame(symbol, timeframe)``: a bundled frame (frame contract), loaded once; copy before mutating."""
    return _sample


@pytest.fixture(scope="session")
def btc_1h() -> pd.DataFrame:
    """The bundled BTC/USDT:USDT 1h frame (candles, mark, funding, open interest, liquidations)."""
    return _sample("BTC/USDT:USDT", "1h")


@pytest.fixture(scope="session")
def btc_5m() -> pd.DataFrame:
    """The bundled BTC/USDT:USDT 5m frame (about a year)."""
    return _sample("BTC/USDT:USDT", "5m")


def _bars(close: np.ndarray | list[float], freq: str = "1h", spread: float = 0.2,
          start: str = "2025-01-01") -> pd.DataFrame:
    close = np.asarray(close, dtype=np.float64)
    idx = pd.date_range(start, periods=len(close), freq=freq, tz="UTC", name="time")
    open_ = np.r_[close[0], close[:-1]]
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) + spread,
                         "low": np.minimum(open_, close) - spread, "close": close,
                         "volume": np.full(len(close), 5.0)}, index=idx)


@pytest.fixture(scope="session")
def make_bars() -> Callable[..., pd.DataFrame]:
    """``make_bars(close, freq="1h", spread=0.2)``: bars opening at the previous close, high/low ± spread."""
    return _bars


@pytest.fixture(scope="session")
def btc_trading_store(tmp_path_factory) -> Callable[[str, str], object]:
    """``btc_trading_store(first, last)``: a store holding the sample's Binance BTC/USDT:USDT 1h candles,
    mark candles and funding from ``first`` to ``last`` — what the replay exchange trades on."""
    from bot.data import SAMPLE_DIR
    from bot.store import DatasetKey, Store

    def build(first: str, last: str) -> Store:
        sample, store = Store(SAMPLE_DIR), Store(tmp_path_factory.mktemp("btc-trading"))
        for kind, tf in (("ohlcv", "1h"), ("mark", "1h"), ("funding_rate", "")):
            key = DatasetKey("binanceusdm", "BTC/USDT:USDT", kind, tf)
            store.write(key, sample.read(key).loc[first:last])
        return store

    return build
