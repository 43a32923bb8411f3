"""Bad data at the edge: every corrupt import or store file is one line and exit 2, or repaired with a report.

Inputs are real rows of the bundled sample (BTC 1h candles and funding), each broken in one way.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bot.cli import main
from bot.data import SAMPLE_DIR, load_frame
from bot.errors import DataError
from bot.store import DatasetKey, Store
from bot.validation import check, frame_problems, repair

EX, SYM = "binanceusdm", "BTC/USDT:USDT"
OHLCV = DatasetKey(EX, SYM, "ohlcv", "1h")
FUNDING = DatasetKey(EX, SYM, "funding_rate")
SAMPLE = Store(SAMPLE_DIR)
N = 48


def candles() -> pd.DataFrame:
    """48 real BTC 1h bars in freqtrade's layout (``date`` column)."""
    f = SAMPLE.read(OHLCV).loc["2025-03-10":].iloc[:N]
    return f.reset_index().rename(columns={"time": "date"})


def funding() -> pd.DataFrame:
    f = SAMPLE.read(FUNDING).loc["2025-03-10":].iloc[:12]
    return pd.DataFrame({"date": f.index, "open": f["funding_rate"].to_numpy(), "high": 0.0, "low": 0.0,
                         "close": 0.0, "volume": 0.0})


def run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code or 0, " ".join(out.split()), err


def _set(col: str, row: int, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(f: pd.DataFrame) -> pd.DataFrame:
        f = f.copy()
        if isinstance(value, str) and f[col].dtype != object:
            f[col] = f[col].astype(object)
        f.loc[f.index[row], col] = value
        return f
    return mutate


def _dup(f):
    return pd.concat([f, f.iloc[[5]]]).reset_index(drop=True)


def _unsorted(f):
    return f.iloc[[*range(10, 20), *range(0, 10), *range(20, N)]].reset_index(drop=True)


def _shift(minutes):
    def mutate(f):
        f = f.copy()
        f.loc[f.index[7], "date"] += pd.Timedelta(minutes=minutes)
        return f
    return mutate


def _stray(when):
    def mutate(f):
        row = f.iloc[[3]].copy()
        row["date"] = pd.Timestamp(when, tz="UTC")
        return pd.concat([f, row]).reset_index(drop=True)
    return mutate


def _spike(f):
    f = f.copy()
    f.loc[f.index[20], ["open", "high", "low", "close"]] *= 1000
    return f


def _high_below(f):
    f = f.copy()
    f.loc[f.index[9], "high"] = np.maximum(f["open"], f["close"]).iloc[9] - 5
    return f


def _low_above(f):
    f = f.copy()
    f.loc[f.index[11], "low"] = np.minimum(f["open"], f["close"]).iloc[11] + 5
    return f


# (id, builder over the real candles or funding, message fragment, rows left after --repair or None)
CANDLE_CASES = [
    ("duplicate-time", _dup, "has a repeated time", N),
    ("unsorted", _unsorted, "has times out of order", N),
    ("off-grid", _shift(7), "off the timeframe's grid at 2025-03-10T07:07", N - 1),
    ("nan-close", _set("close", 4, np.nan), "price that is not finite and > 0 at 2025-03-10T04:00", N - 1),
    ("inf-high", _set("high", 4, np.inf), "price that is not finite and > 0", N - 1),
    ("zero-open", _set("open", 6, 0.0), "price that is not finite and > 0 at 2025-03-10T06:00", N - 1),
    ("negative-low", _set("low", 8, -1.0), "price that is not finite and > 0", N - 1),
    ("high-below-body", _high_below, "high < max(open, close) at 2025-03-10T09:00", N),
    ("low-above-body", _low_above, "low > min(open, close) at 2025-03-10T11:00", N),
    ("price-x1000", _spike, "close more than 5x away", N - 1),
    ("negative-volume", _set("volume", 13, -2.0), "volume that is negative or not finite", N - 1),
    ("nan-volume", _set("volume", 14, np.nan), "volume that is negative or not finite", N - 1),
    ("bar-in-2100", _stray("2100-01-01"), "far outside the dataset's range", N),
    ("bar-in-1999", _stray("1999-01-01"), "far outside the dataset's range", N),
    ("isolated-2019-bar", _stray("2019-06-01"), "far outside the dataset's range", N),
]
FUNDING_CASES = [
    ("funding+500%", _set("open", 3, 5.0), "funding rate beyond the exchange's cap", 11),
    ("funding-50%", _set("open", 5, -0.5), "funding rate beyond the exchange's cap", 11),
    ("funding-nan", _set("open", 2, np.nan), "funding rate that is not finite", 11),
]


def _freqtrade_file(folder: Path, frame: pd.DataFrame, candle: str) -> Path:
    path = folder / f"BTC_USDT_USDT-{'8h' if candle == 'funding_rate' else '1h'}-{candle}.feather"
    frame.reset_index(drop=True).to_feather(path)
    return path


@pytest.mark.parametrize(("case", "mutate", "message", "rows"),
                         CANDLE_CASES + FUNDING_CASES,
                         ids=[c[0] for c in CANDLE_CASES + FUNDING_CASES])
def test_bad_import_is_one_line_or_repaired_with_a_report(tmp_path, capsys, case, mutate, message, rows):
    candle = "funding_rate" if case.startswith("funding") else "futures"
    source = candles() if candle == "futures" else funding()
    path = _freqtrade_file(tmp_path, mutate(source), candle)
    data = tmp_path / "data"
    code, _, err = run(["import-data", str(path), "--exchange", EX, "--data-dir", str(data)], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err and path.name in err and "--repair" in err
    assert not list(data.rglob("*.parquet"))  # nothing half-written

    code, out, err = run(["import-data", str(path), "--exchange", EX, "--data-dir", str(data), "--repair"], capsys)
    assert code == 0, err
    assert "repaired:" in out
    key = FUNDING if candle == "funding_rate" else OHLCV
    stored = Store(data).read(key)
    assert len(stored) == rows and stored.index.is_monotonic_increasing and stored.index.is_unique
    assert check(stored, key.kind, key.timeframe, EX) == []


def _csv_zip(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{name}.csv", text)
    path.write_bytes(buf.getvalue())
    return path


def _kline_text(letters: bool) -> str:
    rows = candles()
    lines = ["open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
             "taker_buy_quote_volume,ignore"]
    for i, r in rows.iterrows():
        ms = int(r["date"].value // 1_000_000)
        close = "12x.5" if letters and i == 3 else r["close"]
        lines.append(f"{ms},{r['open']},{r['high']},{r['low']},{close},{r['volume']},{ms + 3599999},0,0,0,0,0")
    return "\n".join(lines) + "\n"


def _metrics(header: str, value: str = "80000.5") -> str:
    return f"{header}\n2025-03-10 00:05:00,BTCUSDT,{value},6.9e9,1.2\n2025-03-10 00:10:00,BTCUSDT,80010.0,6.9e9,1.2\n"


GOOD_METRICS = "create_time,symbol,sum_open_interest,sum_open_interest_value,count_toptrader_long_short_ratio"
PARSE_CASES = [
    ("kline-letters-in-number", lambda d: _csv_zip(d, "BTCUSDT-1h-2025-03", _kline_text(True)), "cannot parse"),
    ("metrics-wrong-header", lambda d: _csv_zip(d, "BTCUSDT-metrics-2025-03-10",
                                                _metrics(GOOD_METRICS.replace("sum_open_interest,", "oi,"))),
     "column 'sum_open_interest' is missing"),
    ("metrics-letters", lambda d: _csv_zip(d, "BTCUSDT-metrics-2025-03-10", _metrics(GOOD_METRICS, "8e4x")),
     "cannot parse"),
    ("funding-csv-wrong-header", lambda d: _csv_zip(d, "BTCUSDT-fundingRate-2025-03",
                                                    "time,interval,rate\n1741564800000,8,0.0001\n"),
     "column 'last_funding_rate' is missing"),
    ("truncated-zip", lambda d: (d / "BTCUSDT-1h-2025-03.zip").write_bytes(b"PK\x03\x04 truncated") and
     d / "BTCUSDT-1h-2025-03.zip", "cannot be read"),
    ("garbage-feather", lambda d: (d / "BTC_USDT_USDT-1h-futures.feather").write_bytes(b"not arrow") and
     d / "BTC_USDT_USDT-1h-futures.feather", "cannot be read"),
    ("freqtrade-no-date", lambda d: _write_feather(d, candles().drop(columns="date")), "has no 'date' column"),
    ("freqtrade-string-price", lambda d: _write_feather(d, _strings(candles(), "close", 2, "abc")), "cannot parse"),
    ("long-negative-oi", lambda d: _long(d, -5.0), "open interest that is negative"),
    ("liquidation-negative-size", lambda d: _liq(d), "liquidation with an unknown side or a bad price/amount"),
    ("empty-csv", lambda d: _csv_zip(d, "BTCUSDT-1h-2025-03", ""), "nothing importable"),
]


def _strings(frame: pd.DataFrame, col: str, row: int, value: str) -> pd.DataFrame:
    """``col`` as text (as a CSV-to-parquet tool writes it), with ``value`` in one row."""
    text = frame[col].map(repr).tolist()
    text[row] = value
    return frame.assign(**{col: text})


def _write_feather(folder: Path, frame: pd.DataFrame) -> Path:
    return _freqtrade_file(folder, frame, "futures")


def _long(folder: Path, oi_usd: float) -> Path:
    SAMPLE_STORE = Store(folder / "data")
    SAMPLE_STORE.write(OHLCV, SAMPLE.read(OHLCV).loc["2025-03-10":].iloc[:N])
    times = pd.date_range("2025-03-10", periods=5, freq="1h", tz="UTC")
    path = folder / "oi.parquet"
    pd.DataFrame({"timestamp": times, "venue": "hyperliquid", "coin": "BTC",
                  "oi_usd": [1e9, 1.1e9, oi_usd, 1.2e9, 1.3e9]}).to_parquet(path)
    return path


def _liq(folder: Path) -> Path:
    path = folder / "liq.parquet"
    times = pd.date_range("2025-03-10", periods=3, freq="1min", tz="UTC")
    pd.DataFrame({"timestamp": times, "venue": "okx", "coin": "BTC", "side": ["sell", "buy", "sell"],
                  "size_usd": [1000.0, -50.0, 300.0], "price": [80000.0, 80010.0, 79990.0]}).to_parquet(path)
    return path


@pytest.mark.parametrize(("case", "build", "message"), PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_unparsable_import_is_one_line_exit_2(tmp_path, capsys, case, build, message):
    path = build(tmp_path)
    data = tmp_path / "data"
    before = {p: p.read_bytes() for p in data.rglob("*.parquet")} if data.exists() else {}
    code, _, err = run(["import-data", str(path), "--exchange", EX, "--data-dir", str(data)], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err
    after = {p: p.read_bytes() for p in data.rglob("*.parquet")} if data.exists() else {}
    assert after == before  # the store is untouched


# ------------------------------------------------------------------------------------------ the store


def _store_with(tmp_path: Path, key: DatasetKey, frame: pd.DataFrame) -> Store:
    """Write ``frame`` as the stored file of ``key`` bypassing the store's merge (as a broken tool would)."""
    store = Store(tmp_path / "data")
    store.write(key, frame.iloc[:2])
    raw = frame.copy()
    raw.index.name = "time"
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(raw, preserve_index=True)
    meta = {**(table.schema.metadata or {}), **pq.read_schema(store.path(key)).metadata}
    pq.write_table(table.replace_schema_metadata(meta), store.path(key))
    return store


def _stored_candles() -> pd.DataFrame:
    return SAMPLE.read(OHLCV).loc["2025-03-10":].iloc[:N].copy()


STORE_CASES = [
    ("store-duplicates", lambda: pd.concat([_stored_candles(), _stored_candles().iloc[[3]]]), OHLCV,
     "has a repeated time", N),
    ("store-unsorted", lambda: _stored_candles().iloc[::-1], OHLCV, "has times out of order", N),
    ("store-string-price", lambda: _strings(_stored_candles(), "close", 5, "n/a"), OHLCV, "not a number", N - 1),
    ("store-zero-price", lambda: _stored_candles().assign(low=lambda f: f["low"].where(f.index != f.index[7], 0.0)),
     OHLCV, "price that is not finite and > 0", N - 1),
    ("store-empty", lambda: _stored_candles().iloc[:0], OHLCV, "has no rows", None),
    ("store-funding-500%", lambda: SAMPLE.read(FUNDING).iloc[:30].assign(
        funding_rate=lambda f: f["funding_rate"].where(np.arange(len(f)) % 3 != 0, 5.0)), FUNDING,
     "beyond the exchange's cap", 20),
]


@pytest.mark.parametrize(("case", "build", "key", "message", "rows"), STORE_CASES, ids=[c[0] for c in STORE_CASES])
def test_bad_store_file_is_refused_on_load_shown_by_data_info_and_repairable(tmp_path, capsys, case, build, key,
                                                                             message, rows):
    store = _store_with(tmp_path, key, build())
    if key != OHLCV:
        store.write(OHLCV, _stored_candles())
    with pytest.raises(DataError, match="data-info --repair") as err:
        load_frame(store.root, EX, SYM, "1h", use_sample=False)
    assert message in str(err.value) and str(store.path(key)) in str(err.value) and "\n" not in str(err.value)
    code, out, _ = run(["data-info", "--data-dir", str(store.root), "--no-sample"], capsys)
    assert code == 0 and f"problem: {EX} {SYM} {key.kind}" in out and message in out
    if rows is None:
        return
    code, out, _ = run(["data-info", "--data-dir", str(store.root), "--no-sample", "--repair"], capsys)
    assert code == 0 and "repaired:" in out and "problem:" not in out
    assert len(store.read(key)) == rows
    load_frame(store.root, EX, SYM, "1h", use_sample=False)


def test_corrupt_bytes_in_the_store_are_one_line(tmp_path, capsys):
    store = Store(tmp_path)
    store.write(OHLCV, _stored_candles())
    store.path(OHLCV).write_bytes(b"PAR1 garbage")
    with pytest.raises(DataError, match=r"corrupt or unreadable"):
        load_frame(tmp_path, EX, SYM, "1h", use_sample=False)
    code, _, err = run(["data-info", "--data-dir", str(tmp_path), "--no-sample"], capsys)
    assert code == 2 and "corrupt" in err and err.count("\n") == 1


def test_data_info_ranges_are_true_for_unsorted_duplicated_files(tmp_path):
    frame = pd.concat([_stored_candles().iloc[::-1], _stored_candles().iloc[[0]]])
    store = _store_with(tmp_path, OHLCV, frame)
    info = store.info(OHLCV)
    assert info.start == "2025-03-10T00:00:00+00:00" and info.end == "2025-03-11T23:00:00+00:00"
    assert any("repeated time" in p for p in info.problems) and any("out of order" in p for p in info.problems)


def test_repair_reports_exactly_what_changed():
    f = _stored_candles()
    f.loc[f.index[9], "high"] = min(f["open"].iloc[9], f["close"].iloc[9]) - 1
    f.loc[f.index[12], "volume"] = -1.0
    fixed, report = repair(pd.concat([f, f.iloc[[2]]]), "ohlcv", "1h", EX)
    assert report == [
        "repeated time: kept the newest of each, dropped 1 rows (first 2025-03-10T02:00:00+00:00)",
        "times out of order: sorted 48 rows by time",
        "volume that is negative or not finite: dropped 1 rows (2025-03-10T12:00:00+00:00)",
        "high < max(open, close): high raised to max(open, close) on 1 rows (2025-03-10T09:00:00+00:00)",
    ]
    assert len(fixed) == N - 1 and check(fixed, "ohlcv", "1h", EX) == []


def test_missing_funding_is_reported_for_the_runner(tmp_path):
    store = Store(tmp_path)
    store.write(OHLCV, SAMPLE.read(OHLCV).loc["2025-03-01":"2025-04-30"])
    store.write(FUNDING, SAMPLE.read(FUNDING).loc["2025-03-01":"2025-03-31"])
    frame = load_frame(tmp_path, EX, SYM, "1h", use_sample=False)
    problems = frame.attrs["data_problems"]
    assert problems == frame_problems(frame, "1h")
    # the last settlement (03-31 16:00) is charged; nothing after it is
    assert any(p.startswith("no funding data from 2025-03-31T16:00:00+00:00 to 2025-05-01T00:00:00+00:00")
               and "NOT charged" in p for p in problems)
    full = load_frame(SAMPLE_DIR, EX, SYM, "1h", use_sample=False)
    assert not any("funding" in p for p in full.attrs["data_problems"])


@pytest.mark.parametrize("kind", ["missing", "empty", "file"])
def test_data_dir_missing_empty_or_a_file_is_an_error(tmp_path, capsys, kind):
    target = tmp_path / "d"
    if kind == "empty":
        target.mkdir()
    elif kind == "file":
        target.write_text("x")
    code, _, err = run(["data-info", "--data-dir", str(target)], capsys)
    assert code == 2 and err.count("\n") == 1 and str(target) in err


def test_a_stray_row_far_from_the_stored_dataset_is_refused(tmp_path, capsys):
    data = tmp_path / "data"
    Store(data).write(OHLCV, _stored_candles())
    stray = candles().iloc[[0]].assign(date=pd.Timestamp("2019-06-01", tz="UTC"))
    path = _freqtrade_file(tmp_path, stray, "futures")
    code, _, err = run(["import-data", str(path), "--exchange", EX, "--data-dir", str(data)], capsys)
    assert code == 2 and "far outside the dataset's range" in err and "at 2019-06-01T00:00:00+00:00" in err
    assert "next to the stored ohlcv rows" in err and len(Store(data).read(OHLCV)) == N
    code, out, _ = run(["import-data", str(path), "--exchange", EX, "--data-dir", str(data), "--repair"], capsys)
    assert code == 0 and "far outside the stored range: dropped 1 rows (2019-06-01T00:00:00+00:00)" in out
    assert len(Store(data).read(OHLCV)) == N


def test_spike_check_shortcut_equals_the_rolling_median_rule(sample_frame):
    """The candidate pre-test (window min/max) never hides a spike the rolling-median rule finds."""
    from bot.validation import SPIKE_FACTOR, SPIKE_WINDOW, _price_spikes

    close = sample_frame("BTC/USDT:USDT", "5m")["close"].to_numpy()[:4000]
    rng = np.random.default_rng(7)
    found = 0
    for trial in range(300):
        x = close.copy()
        for i in rng.integers(0, len(x), rng.integers(0, 5)):
            x[i] *= rng.choice([5.0, 5.0 * (1 + 1e-12), 5.0 * (1 - 1e-12), 0.2, 0.2 * (1 - 1e-12), 7.0, 0.1, -1.0,
                                0.0, np.nan])
        if trial % 10 == 0:  # a flat path: the window's min, max and median coincide
            x[:] = 100.0
            x[rng.integers(0, len(x))] = 500.0 * (1 + rng.choice([-1e-12, 0.0, 1e-12]))
        median = pd.Series(x).rolling(SPIKE_WINDOW, center=True, min_periods=3).median().to_numpy()
        with np.errstate(invalid="ignore"):
            expected = (x / median > SPIKE_FACTOR) | (x / median < 1 / SPIKE_FACTOR)
        assert np.array_equal(_price_spikes(x), expected), trial
        found += int(expected.sum())
    assert found > 100  # the perturbations did produce spikes
