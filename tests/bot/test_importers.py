"""import-data: freqtrade feather, long parquet (OI USD -> contracts), Binance bulk CSV/zip; data-info."""

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest

from backtests.sample import load_sample_frame
from bot.errors import UserError
from bot.importers import Importer, binance_symbol_to_unified
from bot.store import DatasetKey, Store


def cascade(*args, cwd):
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def freqtrade_dir(tmp_path_factory):
    """A freqtrade futures data dir written from the bundled (real) sample."""
    root = tmp_path_factory.mktemp("ft") / "binance" / "futures"
    root.mkdir(parents=True)
    f = load_sample_frame("BTC/USDT:USDT", "1h")
    ohlcv = f[["open", "high", "low", "close", "volume"]].rename_axis("date").reset_index()
    ohlcv.to_feather(root / "BTC_USDT_USDT-1h-futures.feather")
    mark = f[["mark_open", "mark_high", "mark_low", "mark_close"]].dropna()
    mark.columns = ["open", "high", "low", "close"]
    mark.assign(volume=0.0).rename_axis("date").reset_index().to_feather(root / "BTC_USDT_USDT-1h-mark.feather")
    fr = pd.DataFrame({"date": pd.DatetimeIndex(["2025-01-01 00:00", "2025-01-01 08:00"], tz="UTC"),
                       "open": [0.0001, -0.0002], "high": 0.0, "low": 0.0, "close": 0.0, "volume": 0.0})
    fr.to_feather(root / "BTC_USDT_USDT-1h-funding_rate.feather")
    return root.parent.parent, f


def test_freqtrade_import_roundtrip(tmp_path, freqtrade_dir):
    src, f = freqtrade_dir
    report = Importer(Store(tmp_path)).import_path(src)
    keys = {(k.exchange, k.kind, k.timeframe) for k in report.written}
    assert keys == {("binanceusdm", "ohlcv", "1h"), ("binanceusdm", "mark", "1h"), ("binanceusdm", "funding_rate", "")}
    stored = Store(tmp_path).read(DatasetKey("binanceusdm", "BTC/USDT:USDT", "ohlcv", "1h"))
    pd.testing.assert_frame_equal(stored, f[["open", "high", "low", "close", "volume"]], check_freq=False,
                                  check_index_type=False)
    funding = Store(tmp_path).read(DatasetKey("binanceusdm", "BTC/USDT:USDT", "funding_rate"))
    assert funding["funding_rate"].tolist() == [0.0001, -0.0002]


def test_cli_import_then_data_info_json(tmp_path, freqtrade_dir):
    src, f = freqtrade_dir
    proc = cascade("import-data", str(src), "--data-dir", str(tmp_path / "d"), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {w["kind"] for w in written} == {"ohlcv", "mark", "funding_rate"}
    proc = cascade("data-info", "--data-dir", str(tmp_path / "d"), "--no-sample", "--json", cwd=tmp_path)
    infos = {(i["kind"], i["timeframe"]): i for i in json.loads(proc.stdout.strip().splitlines()[-1])}
    ohlcv = infos[("ohlcv", "1h")]
    assert ohlcv["rows"] == len(f) and ohlcv["gaps"] == 0 and ohlcv["symbol"] == "BTC/USDT:USDT"
    assert ohlcv["start"] == f.index[0].isoformat() and ohlcv["end"] == f.index[-1].isoformat()


def test_hyperliquid_open_interest_usd_becomes_contracts(tmp_path):
    store = Store(tmp_path)
    idx = pd.date_range("2025-01-01", periods=4, freq="1h", tz="UTC", name="time")
    store.write(DatasetKey("binanceusdm", "BTC/USDT:USDT", "ohlcv", "1h"),
                pd.DataFrame({"open": 1.0, "high": 1.0, "low": 1.0, "close": [100.0, 200.0, 400.0, 800.0],
                              "volume": 1.0}, index=idx))
    long = pd.DataFrame({"timestamp": pd.DatetimeIndex(["2025-01-01 01:00", "2025-01-01 02:00", "2025-01-01 04:00"],
                                                       tz="UTC"),
                         "venue": "hyperliquid", "coin": "BTC", "oi_usd": [1000.0, 3000.0, 8000.0]})
    path = tmp_path / "oi.parquet"
    long.to_parquet(path)
    Importer(store).import_path(path)
    oi = store.read(DatasetKey("hyperliquid", "BTC/USDC:USDC", "open_interest", "1h"))
    # each row describes the hour starting at its stamp, so it is known one spacing (1h) later:
    # 02:00 -> last close known then is bar [01:00, 02:00): 200; 03:00 -> 400; 05:00 -> the last bar
    # [03:00, 04:00) closed at 04:00: 800 (the gap does not change the usual spacing)
    assert [t.strftime("%H:%M") for t in oi.index] == ["02:00", "03:00", "05:00"]
    np.testing.assert_allclose(oi["open_interest"], [5.0, 7.5, 10.0])
    np.testing.assert_allclose(oi["open_interest_value"], [1000.0, 3000.0, 8000.0])


def test_liquidation_events_sides(tmp_path):
    ev = pd.DataFrame({"timestamp": pd.DatetimeIndex(["2026-03-05 01:00", "2026-03-05 01:00", "2026-03-05 02:00"],
                                                     tz="UTC"),
                       "venue": "okx", "coin": "BTC", "side": ["sell", "buy", "sell"],
                       "size_usd": [1000.0, 500.0, 1000.0], "price": [100.0, 100.0, 50.0]})
    ev.to_parquet(tmp_path / "ev.parquet")
    store = Store(tmp_path / "s")
    Importer(store).import_path(tmp_path / "ev.parquet")
    got = store.read(DatasetKey("okx", "BTC/USDT:USDT", "liquidations"))
    assert got["side"].tolist() == ["long", "short", "long"]  # a sell order closes a liquidated long
    assert got["amount"].tolist() == [10.0, 5.0, 20.0]


KLINES = [
    [1735689600000, "93576.00", "94509.40", "93489.60", "94401.10", "10021.1", 1735693199999, "9.4e8", 1000, "5000.5",
     "4.7e8", "0"],
    [1735693200000, "94401.10", "94600.00", "94300.00", "94500.00", "8000.0", 1735696799999, "7.5e8", 900, "4000.0",
     "3.7e8", "0"],
]


@pytest.mark.parametrize("header", [True, False])
def test_binance_bulk_klines_zip(tmp_path, header):
    text = io.StringIO()
    if header:
        text.write("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
                   "taker_buy_quote_volume,ignore\n")
    for row in KLINES:
        text.write(",".join(str(x) for x in row) + "\n")
    z = tmp_path / "BTCUSDT-1h-2025-01.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("BTCUSDT-1h-2025-01.csv", text.getvalue())
    store = Store(tmp_path / "s")
    Importer(store).import_path(z)
    got = store.read(DatasetKey("binanceusdm", "BTC/USDT:USDT", "ohlcv", "1h"))
    assert got.index[0] == pd.Timestamp("2025-01-01", tz="UTC")
    assert got["close"].tolist() == [94401.1, 94500.0]
    assert got["taker_buy_volume"].tolist() == [5000.5, 4000.0]


def test_binance_bulk_metrics_and_liquidation_snapshot(tmp_path):
    (tmp_path / "BTCUSDT-metrics-2025-01-01.csv").write_text(
        "create_time,symbol,sum_open_interest,sum_open_interest_value,count_toptrader_long_short_ratio\n"
        "2025-01-01 00:05:00,BTCUSDT,80000.5,7.5e9,1.2\n2025-01-01 00:10:00,BTCUSDT,80010.0,7.6e9,1.1\n")
    (tmp_path / "BTCUSDT-liquidationSnapshot-2025-01-01.csv").write_text(
        "time,side,order_type,time_in_force,original_quantity,price,average_price,order_status,"
        "last_fill_quantity,accumulated_fill_quantity\n"
        "1735689700000,SELL,LIMIT,IOC,0.5,93000,93100,FILLED,0.5,0.5\n")
    store = Store(tmp_path / "s")
    Importer(store).import_path(tmp_path)
    oi = store.read(DatasetKey("binanceusdm", "BTC/USDT:USDT", "open_interest", "5m"))
    assert oi["open_interest"].tolist() == [80000.5, 80010.0]
    liq = store.read(DatasetKey("binanceusdm", "BTC/USDT:USDT", "liquidations"))
    assert liq.iloc[0].to_dict() == {"side": "long", "price": 93100.0, "amount": 0.5, "value": 46550.0}


def test_symbols_and_errors(tmp_path):
    assert binance_symbol_to_unified("ETHUSDC") == "ETH/USDC:USDC"
    with pytest.raises(UserError, match="does not exist"):
        Importer(Store(tmp_path)).import_path(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="nothing importable"):
        Importer(Store(tmp_path / "s")).import_path(tmp_path)


def test_corrupt_store_file_gives_exit_2(tmp_path):
    d = tmp_path / "d" / "binanceusdm" / "BTC_USDT_USDT"
    d.mkdir(parents=True)
    (d / "ohlcv-1h.parquet").write_bytes(b"not parquet at all")
    proc = cascade("data-info", "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "corrupt" in proc.stderr
