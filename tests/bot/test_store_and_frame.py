"""Store (atomic, incremental, validated) and the frame loader's availability-time joins."""

import errno

import numpy as np
import pandas as pd
import pytest

from bot.data import load_frame
from bot.errors import DataError, UserError
from bot.store import DatasetKey, Store, count_gaps, validate_series

EX, SYM = "binanceusdm", "BTC/USDT:USDT"


def bars(start: str, n: int, freq: str = "1h") -> pd.DataFrame:
    idx = pd.date_range(start, periods=n, freq=freq, tz="UTC", name="time")
    close = 100.0 + np.arange(n)
    return pd.DataFrame({"open": close - 0.5, "high": close + 1, "low": close - 1, "close": close,
                         "volume": np.full(n, 10.0)}, index=idx)


def test_write_is_incremental_and_deduplicates(tmp_path):
    store = Store(tmp_path)
    key = DatasetKey(EX, SYM, "ohlcv", "1h")
    store.write(key, bars("2025-01-01", 10))
    later = bars("2025-01-01 08:00", 5)
    later["close"] += 1000  # overlapping rows: the newest write wins
    merged = store.write(key, later)
    assert len(merged) == 13 and merged.index.is_monotonic_increasing and merged.index.is_unique
    assert merged.loc["2025-01-01 09:00", "close"] == 1101.0
    assert merged.loc["2025-01-01 07:00", "close"] == 107.0
    # no temp files; the lock file stays (deleting a lock file others may hold would break the lock)
    assert sorted(p.name for p in store.path(key).parent.iterdir()) == [".ohlcv-1h.parquet.lock", "ohlcv-1h.parquet"]
    assert store.keys() == [key]
    info = store.info(key)
    assert (info.rows, info.gaps, info.start[:16]) == (13, 0, "2025-01-01T00:00")


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    store = Store(tmp_path)
    key = DatasetKey(EX, SYM, "ohlcv", "1h")
    store.write(key, bars("2025-01-01", 3))
    import pyarrow.parquet as pq

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(UserError, match=r"No space left on device; free disk space"):
        store.write(key, bars("2025-01-02", 3))
    monkeypatch.undo()
    assert len(store.read(key)) == 3
    assert not list(store.path(key).parent.glob(".cascade-*"))


def test_corrupt_file_is_a_clear_data_error(tmp_path):
    store = Store(tmp_path)
    key = DatasetKey(EX, SYM, "ohlcv", "1h")
    store.write(key, bars("2025-01-01", 3))
    store.path(key).write_bytes(b"PAR1 garbage")
    with pytest.raises(DataError, match=r"corrupt.*delete it and re-import"):
        store.read(key)


def test_validation_counts_gaps_duplicates_and_order():
    f = bars("2025-01-01", 6).drop(pd.Timestamp("2025-01-01 02:00", tz="UTC"))
    f = pd.concat([f, f.iloc[[0]]])
    checks = validate_series(f, "1h")
    assert checks == {"duplicates": 1, "out_of_order": 1, "gaps": 1, "misaligned": 0}
    assert count_gaps(f.index.unique().sort_values(), "1h") == 1


@pytest.fixture()
def store_with_aux(tmp_path):
    store = Store(tmp_path)
    store.write(DatasetKey(EX, SYM, "ohlcv", "1h"), bars("2025-01-01 00:00", 24))
    # settlements: 08:00 exactly, and 16:00 stamped 4 ms late as Binance does
    funding = pd.DataFrame({"funding_rate": [0.0003, -0.0002]},
                           index=pd.DatetimeIndex(["2025-01-01 08:00", "2025-01-01 16:00:00.004"], tz="UTC",
                                                  name="time"))
    store.write(DatasetKey(EX, SYM, "funding_rate"), funding)
    oi = pd.DataFrame({"open_interest": [10.0, 15.0, 20.0, 30.0], "open_interest_value": [1e3, 1.5e3, 2e3, 3e3]},
                      index=pd.DatetimeIndex(["2025-01-01 05:00", "2025-01-01 07:00", "2025-01-01 08:30",
                                              "2025-01-01 09:00"],
                                             tz="UTC", name="time"))
    store.write(DatasetKey(EX, SYM, "open_interest", "1h"), oi)
    liqs = pd.DataFrame({"side": ["long", "short", "long"], "price": [100.0, 101.0, 99.0], "amount": [1.0, 2.0, 3.0],
                         "value": [100.0, 202.0, 297.0]},
                        index=pd.DatetimeIndex(["2025-01-01 07:59:59.999", "2025-01-01 08:00", "2025-01-01 08:10"],
                                               tz="UTC", name="time"))
    store.write(DatasetKey("okx", SYM, "liquidations"), liqs)
    return tmp_path


def test_funding_settled_at_0800_is_invisible_to_bars_closing_before(store_with_aux):
    f = load_frame(store_with_aux, EX, SYM, "1h", use_sample=False)
    fr = f["funding_rate"]
    # the bar [07:00, 08:00) closes at 08:00: the first bar allowed to see the 08:00 settlement
    assert fr.loc["2025-01-01 07:00"] == 0.0003
    assert fr.loc[:"2025-01-01 06:00"].isna().all()
    assert fr.loc["2025-01-01 08:00":"2025-01-01 14:00"].isna().all()
    # 16:00:00.004 is floored to the second -> the bar closing at 16:00
    assert fr.loc["2025-01-01 15:00"] == -0.0002
    assert fr.notna().sum() == 2


def test_open_interest_joined_backward_on_bar_close(store_with_aux):
    oi = load_frame(store_with_aux, EX, SYM, "1h", use_sample=False)["open_interest"]
    assert np.isnan(oi.loc["2025-01-01 03:00"])          # closes 04:00, before the first snapshot
    assert oi.loc["2025-01-01 04:00"] == 10.0             # closes 05:00 = snapshot time
    assert oi.loc["2025-01-01 07:00"] == 15.0             # closes 08:00: the 08:30 snapshot is future
    assert oi.loc["2025-01-01 08:00"] == 30.0             # closes 09:00: sees 08:30 and 09:00
    assert np.isnan(oi.loc["2025-01-01 12:00"])           # stale beyond the tolerance (2 bars)


def test_liquidations_summed_per_bar_by_side(store_with_aux):
    f = load_frame(store_with_aux, EX, SYM, "1h", use_sample=False)
    assert f.loc["2025-01-01 07:00", "liq_long_usd"] == 100.0
    assert f.loc["2025-01-01 08:00", "liq_long_usd"] == 297.0
    assert f.loc["2025-01-01 08:00", "liq_short_usd"] == 202.0
    assert np.isnan(f.loc["2025-01-01 06:00", "liq_long_usd"])   # outside the recorded span
    assert np.isnan(f.loc["2025-01-01 09:00", "liq_long_usd"])


def test_range_filter_and_missing_data_errors(store_with_aux):
    f = load_frame(store_with_aux, EX, SYM, "1h", pd.Timestamp("2025-01-01 05:00", tz="UTC"),
                   pd.Timestamp("2025-01-01 07:00", tz="UTC"), use_sample=False)
    assert list(f.index.hour) == [5, 6]
    with pytest.raises(DataError, match="no 5m candles stored"):
        load_frame(store_with_aux, EX, SYM, "5m", use_sample=False)
    with pytest.raises(DataError, match="change --from/--to"):
        load_frame(store_with_aux, EX, SYM, "1h", pd.Timestamp("2026-01-01", tz="UTC"), use_sample=False)


def test_sample_frame_contract():
    from backtests.sample import load_sample_frame

    f = load_sample_frame("BTC/USDT:USDT", "1h")
    assert f.index.name == "time" and str(f.index.tz) == "UTC" and f.index.is_unique
    assert f.index.is_monotonic_increasing
    for col in ("open", "high", "low", "close", "volume", "mark_close", "funding_rate", "open_interest"):
        assert col in f.columns
    settled = f["funding_rate"].dropna()
    # Binance settles at 00/08/16 UTC: the rate sits on the bar whose close is the settlement
    assert set((settled.index + pd.Timedelta("1h")).hour) == {0, 8, 16}
    assert f["open_interest"].first_valid_index() >= pd.Timestamp("2025-03-08 07:00", tz="UTC")
