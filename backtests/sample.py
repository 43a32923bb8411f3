"""The bundled sample: real Binance USDT-M and Hyperliquid data, small enough to ship.

``backtests/sample_data/`` is a read-only store (see :mod:`bot.store`) holding

* binanceusdm BTC/USDT:USDT and ETH/USDT:USDT: 1h candles, 1h mark candles and 8h funding
  (2024-12-31 → 2026-02-19); 5m candles, BTC from 2025-02-01 (≈ 1 year, for benchmarks) and
  ETH for the last 60 days;
* hyperliquid BTC/USDC:USDC and ETH/USDC:USDC 1h open interest (contracts, converted from USD
  with the Binance close), 2025-03-08 onwards;
* realised liquidation events (Hyperliquid 2025-05-25 → 29, OKX 2026-03-04 → 05).

It is rebuilt with :func:`build_sample` from a folder holding the public source files (the layout,
origins and licences are in README "Data"). The wheel ships it (``package-data`` in pyproject.toml),
so an installed ``cascade`` backtests without any download.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd

from bot.data import SAMPLE_DIR, load_frame
from bot.importers import Importer
from bot.store import DatasetKey, Store

SAMPLE_EXCHANGE = "binanceusdm"
BTC_5M_FROM = pd.Timestamp("2025-02-01", tz="UTC")
ETH_5M_DAYS = 60


def load_sample_frame(symbol: str = "BTC/USDT:USDT", timeframe: str = "1h",
                      start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> pd.DataFrame:
    """The frame contract for a bundled dataset (candles + mark + funding + open interest + liquidations)."""
    return load_frame(SAMPLE_DIR, SAMPLE_EXCHANGE, symbol, timeframe, start, end, use_sample=False)


def build_sample(source: Path, out: Path = SAMPLE_DIR) -> Store:
    """Rebuild the sample store from ``source`` (the public source files, README "Data"), trimming 5m candles."""
    staging = Path(tempfile.mkdtemp(prefix="cascade-sample-"))
    try:
        store = Store(staging)
        importer = Importer(store)
        for sub in ("binance_usdm", "hyperliquid/open_interest_1h.parquet", "liquidations/events_okx_hyperliquid.parquet"):
            importer.import_path(source / sub)
        for symbol in ("BTC/USDT:USDT", "ETH/USDT:USDT"):
            key = DatasetKey(SAMPLE_EXCHANGE, symbol, "ohlcv", "5m")
            frame = store.read(key)
            assert frame is not None
            cut = BTC_5M_FROM if symbol.startswith("BTC") else frame.index[-1] - pd.Timedelta(days=ETH_5M_DAYS)
            store.path(key).unlink()
            store.write(key, frame[frame.index >= cut])
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(staging, out)
        return Store(out, source="sample")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":  # python -m backtests.sample SOURCE_DIR
    import sys

    built = build_sample(Path(sys.argv[1]))
    for k in built.keys():
        print(built.info(k))
