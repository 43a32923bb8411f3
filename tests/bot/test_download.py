"""`cascade download` through ccxt's real client against the replay exchange on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bot.cli import main
from bot.data import SAMPLE_DIR
from bot.download import Downloader, leverage_tiers_path, leverage_tiers_to_brackets
from bot.errors import UserError
from bot.exchange import make_exchange
from bot.replay import FaultConfig, ReplayServer
from bot.risk.brackets import BRACKETS_FILE, load_brackets
from bot.store import DatasetKey, Store

EX, BTC, ETH = "binanceusdm", "BTC/USDT:USDT", "ETH/USDT:USDT"
T0, T1 = pd.Timestamp("2025-03-08", tz="UTC"), pd.Timestamp("2025-04-20", tz="UTC")
SINCE, UNTIL = pd.Timestamp("2025-03-10", tz="UTC"), pd.Timestamp("2025-04-10", tz="UTC")
KINDS = ("ohlcv", "mark", "funding_rate", "open_interest")
KEYS = [DatasetKey(EX, BTC, k, "" if k == "funding_rate" else "1h") for k in KINDS]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Store:
    """Real sample rows: BTC 1h candles, mark, funding, open interest (Hyperliquid's values re-keyed)."""
    sample, store = Store(SAMPLE_DIR), Store(tmp_path_factory.mktemp("source"))
    for src, dst in [(k, k) for k in KEYS[:3]] + [
        (DatasetKey("hyperliquid", "BTC/USDC:USDC", "open_interest", "1h"), KEYS[3]),
        (DatasetKey(EX, ETH, "ohlcv", "1h"), DatasetKey(EX, ETH, "ohlcv", "1h")),
    ]:
        frame = sample.read(src)
        store.write(dst, frame[(frame.index >= T0) & (frame.index < T1)])
    return store


@pytest.fixture(scope="module")
def server(source):
    with ReplayServer(source.root, start="2025-05-01", speed=0) as srv:
        yield srv


def downloader(url: str, store: Store, **kw) -> Downloader:
    kw.setdefault("page_limit", 100)
    kw.setdefault("backoff_seconds", 0.001)
    return Downloader(make_exchange(EX, url=url, rate_limit=False, timeout=5000), store, **kw)


def expected(source: Store, key: DatasetKey, since=SINCE, until=UNTIL) -> pd.DataFrame:
    frame = source.read(key)
    return frame[(frame.index >= since) & (frame.index < until)]


def assert_same_as_source(store: Store, source: Store, since=SINCE, until=UNTIL) -> None:
    for key in KEYS:
        got = store.read(key)
        assert got is not None, key
        pd.testing.assert_frame_equal(got, expected(source, key, since, until), check_freq=False)


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".cascade-")]  # temporaries, not lock/coverage files


# --------------------------------------------------------------------------------------- results


def test_month_download_equals_the_source_store(server, source, tmp_path):
    store = Store(tmp_path)
    report = downloader(server.url, store).run([BTC], "1h", KINDS, SINCE, UNTIL)
    assert_same_as_source(store, source)
    infos = {i.kind: i for i in report.written}
    assert set(infos) == set(KINDS) and infos["ohlcv"].rows == 31 * 24 and infos["ohlcv"].gaps == 0
    assert not report.warnings and not temp_files(tmp_path)


def test_rerun_fetches_only_what_is_missing(server, source, tmp_path):
    store = Store(tmp_path)
    downloader(server.url, store).run([BTC], "1h", KINDS, SINCE, UNTIL)
    again = downloader(server.url, store)
    report = again.run([BTC], "1h", KINDS, SINCE, UNTIL)
    assert sum(r.rows_fetched for r in report.results) == 0
    assert again.requests == 2  # load_markets, fetch_time: no data request at all
    later = pd.Timestamp("2025-04-12", tz="UTC")
    earlier = pd.Timestamp("2025-03-09", tz="UTC")
    report = downloader(server.url, store).run([BTC], "1h", KINDS, earlier, later)
    fetched = {r.key.kind: r.rows_fetched for r in report.results}
    assert fetched["ohlcv"] == fetched["mark"] == fetched["open_interest"] == 24 + 48
    assert fetched["funding_rate"] == 3 + 6
    assert_same_as_source(store, source, earlier, later)


def test_twenty_percent_faults_still_give_identical_data(source, tmp_path):
    faults = FaultConfig(rate=0.2, seed=1, slow_seconds=0.05, retry_after=0)
    with ReplayServer(source.root, start="2025-05-01", speed=0, faults=faults) as srv:
        store = Store(tmp_path)
        d = downloader(srv.url, store, page_limit=60, max_retries=10)
        report = d.run([BTC], "1h", KINDS, SINCE, UNTIL)
    assert_same_as_source(store, source)
    pages = sum(1 for _ in report.results)  # at least one request per dataset
    assert d.requests > pages + 2 and not temp_files(tmp_path)


def test_retries_back_off_exponentially_then_give_a_clear_error(source, tmp_path):
    sleeps: list[float] = []
    with ReplayServer(source.root, start="2025-05-01", speed=0,
                      faults=FaultConfig(rate=1.0, kinds=("5xx",))) as srv:
        d = downloader(srv.url, Store(tmp_path), max_retries=3, backoff_seconds=0.5, sleep=sleeps.append)
        with pytest.raises(UserError, match="still failing after 3 retries"):
            d.run([BTC], "1h", ["ohlcv"], SINCE, UNTIL)
    assert sleeps == [0.5, 1.0, 2.0]


def test_retry_after_is_honoured(source, tmp_path):
    sleeps: list[float] = []
    with ReplayServer(source.root, start="2025-05-01", speed=0,
                      faults=FaultConfig(rate=1.0, kinds=("429",), retry_after=4)) as srv:
        d = downloader(srv.url, Store(tmp_path), max_retries=1, backoff_seconds=0.01, sleep=sleeps.append)
        with pytest.raises(UserError, match="DDoSProtection"):
            d.run([BTC], "1h", ["ohlcv"], SINCE, UNTIL)
    assert sleeps == [4.0]


def test_years_before_the_listing_cost_one_probe(server, source, tmp_path):
    store = Store(tmp_path)
    d = downloader(server.url, store)
    until = pd.Timestamp("2025-03-12", tz="UTC")
    d.run([BTC], "1h", ["ohlcv", "funding_rate"], pd.Timestamp("2022-01-01", tz="UTC"), until)
    assert d.requests <= 10  # not ~190 windows of 100 hours: one empty window, one probe, then pages
    for key in (KEYS[0], KEYS[2]):
        pd.testing.assert_frame_equal(store.read(key), expected(source, key, T0, until), check_freq=False)


def test_funding_with_late_stamps_and_mark_price_round_trips(tmp_path):
    """Binance stamps settlements a few ms late and sends the mark price: both survive."""
    src = Store(tmp_path / "src")
    times = pd.date_range("2025-03-01", periods=60, freq="8h", tz="UTC") + pd.to_timedelta(
        [i % 7 for i in range(60)], unit="ms")
    funding = pd.DataFrame({"funding_rate": [1e-4 * ((i % 5) - 2) for i in range(60)],
                            "mark_price": [80000.0 + i * 12.345 for i in range(60)]},
                           index=pd.DatetimeIndex(times, name="time"))
    key = DatasetKey(EX, BTC, "funding_rate")
    src.write(key, funding)
    src.write(DatasetKey(EX, BTC, "ohlcv", "1h"), Store(SAMPLE_DIR).read(KEYS[0]).loc["2025-03-01":"2025-03-02"])
    with ReplayServer(src.root, start="2025-05-01", speed=0) as srv:
        store = Store(tmp_path / "dl")
        downloader(srv.url, store, page_limit=7).run([BTC], "1h", ["funding_rate"], SINCE - pd.Timedelta(days=9),
                                                     UNTIL)
    pd.testing.assert_frame_equal(store.read(key), src.read(key), check_freq=False)


def test_gaps_in_the_exchange_data_are_reported(source, tmp_path):
    holey = Store(tmp_path / "src")
    eth = DatasetKey(EX, ETH, "ohlcv", "1h")
    frame = source.read(eth)
    holey.write(eth, frame[(frame.index < "2025-03-15") | (frame.index >= "2025-03-25")])  # 10 days missing
    with ReplayServer(holey.root, start="2025-05-01", speed=0) as srv:
        report = downloader(srv.url, Store(tmp_path / "dl")).run([ETH], "1h", ["ohlcv"], SINCE, UNTIL)
    assert report.written[0].gaps == 240 and report.results[0].issues["gaps"] == 240
    assert any("240 gaps" in w for w in report.warnings)


def test_interior_gap_is_refilled_and_a_real_gap_is_asked_once(server, source, tmp_path):
    store = Store(tmp_path)
    downloader(server.url, store).run([BTC], "1h", KINDS, SINCE, UNTIL)
    lost = (pd.Timestamp("2025-03-20", tz="UTC"), pd.Timestamp("2025-03-25", tz="UTC"))
    for key in (KEYS[0], KEYS[2]):  # rows lost from the middle of candles and funding
        store.rewrite(key, lambda f: (f[(f.index < lost[0]) | (f.index >= lost[1])], ["cut"]))
    again = downloader(server.url, store)
    report = again.run([BTC], "1h", KINDS, SINCE, UNTIL)
    fetched = {r.key.kind: r.rows_fetched for r in report.results}
    assert fetched == {"ohlcv": 5 * 24, "mark": 0, "funding_rate": 15, "open_interest": 0}
    assert again.requests == 2 + 2 + 1  # markets, time; 120 candles = 2 pages of 100; 15 settlements = 1
    assert_same_as_source(store, source)


def test_known_empty_gap_is_not_asked_again_and_still_reported(source, tmp_path):
    holey = Store(tmp_path / "src")
    eth = DatasetKey(EX, ETH, "ohlcv", "1h")
    frame = source.read(eth)
    holey.write(eth, frame[(frame.index < "2025-03-15") | (frame.index >= "2025-03-25")])
    store = Store(tmp_path / "dl")
    with ReplayServer(holey.root, start="2025-05-01", speed=0) as srv:
        downloader(srv.url, store).run([ETH], "1h", ["ohlcv"], SINCE, UNTIL)
        again = downloader(srv.url, store)
        report = again.run([ETH], "1h", ["ohlcv"], SINCE, UNTIL)
    assert again.requests == 2 and report.results[0].rows_fetched == 0
    assert any("240 gaps" in w for w in report.warnings)


def test_funding_is_paged_by_rows(server, source, tmp_path):
    d = downloader(server.url, Store(tmp_path), page_limit=50)
    report = d.run([BTC], "1h", ["funding_rate"], SINCE, UNTIL)
    assert report.results[0].rows_fetched == 93
    assert d.requests == 2 + 2  # 93 settlements in pages of 50 rows (not 15 windows of 50 hours)


def test_bad_rows_from_the_exchange_are_dropped_and_reported(source, tmp_path):
    bad = Store(tmp_path / "src")
    key = KEYS[0]
    frame = source.read(key).copy()
    frame.loc["2025-03-12 05:00", "low"] = frame.loc["2025-03-12 05:00", "close"] + 50  # low above the body
    frame.loc["2025-03-13 07:00", "volume"] = -3.0
    bad.write(key, frame)
    with ReplayServer(bad.root, start="2025-05-01", speed=0) as srv:
        store = Store(tmp_path / "dl")
        report = downloader(srv.url, store).run([BTC], "1h", ["ohlcv"], SINCE, UNTIL)
    got = store.read(key)
    assert pd.Timestamp("2025-03-13 07:00", tz="UTC") not in got.index and len(got) == 31 * 24 - 1
    row = got.loc["2025-03-12 05:00"]
    assert row["low"] == min(row["open"], row["close"])
    assert any("volume" in w and "2025-03-13T07:00" in w for w in report.warnings)
    assert any("low lowered" in w and "2025-03-12T05:00" in w for w in report.warnings)


# --------------------------------------------------------------------------------------- user errors


def test_unknown_symbol_lists_close_matches(server, tmp_path):
    with pytest.raises(UserError, match=r"unknown symbol 'BTC/USDT'.*did you mean BTC/USDT:USDT"):
        downloader(server.url, Store(tmp_path)).run(["BTC/USDT"], "1h", KINDS, SINCE, UNTIL)


def test_unsupported_kind_is_skipped_with_a_warning(server, source, tmp_path):
    store = Store(tmp_path)
    d = downloader(server.url, store)
    d.exchange.has = {**d.exchange.has, "fetchOpenInterestHistory": False}
    report = d.run([BTC], "1h", ["ohlcv", "open_interest", "liquidations"], SINCE, UNTIL)
    assert [i.kind for i in report.written] == ["ohlcv"]
    assert any("does not support fetchOpenInterestHistory" in w for w in report.warnings)
    assert any("liquidations" in w for w in report.warnings)
    with pytest.raises(UserError, match="nothing to download"):
        d.run([BTC], "1h", ["open_interest"], SINCE, UNTIL)


def test_rejected_dataset_is_skipped_not_fatal(server, tmp_path):
    report = downloader(server.url, Store(tmp_path)).run([BTC], "1m", ["ohlcv", "open_interest"], SINCE, UNTIL)
    skipped = {r.key.kind: r.skipped for r in report.results}
    assert skipped["open_interest"] and "BadRequest" in skipped["open_interest"]  # ccxt: no 1m period
    assert any("returned no rows" in w for w in report.warnings)  # no 1m candles stored either


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code or 0, out, err


def test_cli_errors_are_one_line(server, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # built-in config defaults
    base = ["download", "--exchange-url", server.url, "--no-rate-limit", "--data-dir", str(tmp_path),
            "--since", "2025-03-10", "--until", "2025-03-11"]
    for extra, message in [
        (["--kinds", "candles"], "unknown data kind 'candles'"),
        (["--kinds", "liquidations"], "nothing to download"),
        (["--symbols", "ETH/USDT"], "did you mean ETH/USDT:USDT"),
        (["--exchange", "binanse"], "did you mean"),
    ]:
        code, _, err = run_cli(base + extra, capsys)
        assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_cli_json_lists_written_datasets(server, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(["download", "--exchange-url", server.url, "--no-rate-limit", "--data-dir",
                            str(tmp_path), "--since", "2025-03-10", "--until", "2025-03-12", "--symbols",
                            f"{BTC},{ETH}", "--kinds", "ohlcv,funding_rate", "--json"], capsys)
    rows = json.loads(out.strip().splitlines()[-1])
    assert code == 0
    assert {(r["symbol"], r["kind"]) for r in rows} == {(BTC, "ohlcv"), (BTC, "funding_rate"), (ETH, "ohlcv")}
    assert next(r for r in rows if r["symbol"] == ETH)["rows"] == 48


# --------------------------------------------------------------------------------------- SIGKILL


def test_sigkill_halfway_then_rerun_gives_identical_data(source, tmp_path):
    cascade = Path(sys.executable).parent / "cascade"
    data = tmp_path / "data"
    args = [str(cascade), "download", "--no-rate-limit", "--data-dir", str(data), "--symbols", BTC,
            "--timeframe", "1h", "--since", "2025-03-10", "--until", "2025-04-10", "--page-limit", "24",
            "--backoff", "0.01", "--kinds", ",".join(KINDS)]
    env = {**os.environ, "COLUMNS": "200"}
    slow = FaultConfig(rate=1.0, kinds=("slow",), slow_seconds=0.04)
    with ReplayServer(source.root, start="2025-05-01", speed=0, faults=slow) as srv:
        proc = subprocess.Popen(args + ["--exchange-url", srv.url], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mark_file = Store(data).path(KEYS[1])
        deadline = time.monotonic() + 30
        while not mark_file.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = Store(data)
    assert len(partial.read(KEYS[0])) == 31 * 24  # candles done, mark begun ...
    assert not all(partial.exists(k) and len(partial.read(k)) == len(expected(source, k)) for k in KEYS[1:])
    folder = mark_file.parent
    # as if killed mid-write: the temp name carries the dead writer's pid
    (folder / f".cascade-{proc.pid}-deadbeef.tmp").write_bytes(b"half a parquet file")

    with ReplayServer(source.root, start="2025-05-01", speed=0) as srv:
        done = subprocess.run(args + ["--exchange-url", srv.url, "--json"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert {r["kind"]: r["rows"] for r in rows} == {
        "ohlcv": 744, "mark": 744, "funding_rate": 93, "open_interest": 744}
    assert_same_as_source(Store(data), source)
    assert not temp_files(data)


# --------------------------------------------------------------------------------------- leverage tiers


def test_leverage_tiers_round_trip_through_ccxt_and_load_brackets(tmp_path):
    """Binance's leverageBracket reply for the bundled BTC tiers, parsed by ccxt's own parser,
    stored by download and read by the risk module, gives back the bundled brackets."""
    bundled = json.loads(BRACKETS_FILE.read_text())["symbols"]["BTCUSDT"]
    raw = {"symbol": "BTCUSDT", "brackets": [
        {"bracket": t["tier"], "initialLeverage": t["max_leverage"], "notionalCap": t["cap"],
         "notionalFloor": t["floor"], "maintMarginRatio": t["mmr"], "cum": 0.0} for t in bundled]}
    ex = make_exchange(EX)
    market = {"symbol": BTC, "quote": "USDT", "id": "BTCUSDT", "contract": True}
    tiers = {BTC: ex.parse_market_leverage_tiers(raw, market)}
    store = Store(tmp_path)
    path = leverage_tiers_path(store, EX)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(leverage_tiers_to_brackets(tiers, EX, pd.Timestamp("2026-01-01", tz="UTC"))))
    got, want = load_brackets(BTC, path=str(path)), load_brackets(BTC)
    for field in ("floor", "cap", "mmr", "max_leverage", "cum"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


def test_download_without_api_key_warns_about_leverage_tiers(server, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CASCADE_API_KEY", raising=False)
    code, out, _ = run_cli(["download", "--exchange-url", server.url, "--no-rate-limit", "--data-dir",
                            str(tmp_path / "d"), "--since", "2025-03-10", "--until", "2025-03-11",
                            "--kinds", "ohlcv"], capsys)
    assert code == 0
    assert "leverage brackets not fetched: leverage tiers need an API key" in " ".join(out.split())
    assert not leverage_tiers_path(Store(tmp_path / "d"), EX).exists()


def test_rerun_up_to_now_makes_at_most_one_request_per_kind(server, tmp_path):
    store = Store(tmp_path)
    downloader(server.url, store).run([BTC], "1h", KINDS, SINCE, None)  # the replay clock: 2025-05-01
    again = downloader(server.url, store)
    report = again.run([BTC], "1h", KINDS, SINCE, None)
    assert sum(r.rows_fetched for r in report.results) == 0
    # markets, time, then one request per kind for the last hours before the clock (41 requests the first time)
    assert again.requests <= 2 + len(KINDS)
