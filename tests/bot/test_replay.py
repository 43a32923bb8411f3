"""The replay exchange driven by ccxt's real binanceusdm client over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import ccxt
import numpy as np
import pandas as pd
import pytest

from bot.data import SAMPLE_DIR
from bot.errors import UserError
from bot.exchange import make_exchange, point_at
from bot.replay import FaultConfig, ReplayServer
from bot.store import DatasetKey, Store

EX, BTC, ETH = "binanceusdm", "BTC/USDT:USDT", "ETH/USDT:USDT"
T0, T1 = pd.Timestamp("2025-03-08", tz="UTC"), pd.Timestamp("2025-04-20", tz="UTC")
H = 3_600_000


def ms(ts: str | pd.Timestamp) -> int:
    return int(pd.Timestamp(ts).value // 1_000_000)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Store:
    """A small real store: BTC 1h candles, mark, funding, open interest (Hyperliquid's values
    re-keyed), a few days of 5m candles; ETH 1h candles."""
    sample, store = Store(SAMPLE_DIR), Store(tmp_path_factory.mktemp("source"))

    def copy(src: DatasetKey, dst: DatasetKey, start=T0, end=T1) -> None:
        frame = sample.read(src)
        store.write(dst, frame[(frame.index >= start) & (frame.index < end)])

    for kind, tf in (("ohlcv", "1h"), ("mark", "1h"), ("funding_rate", "")):
        copy(DatasetKey(EX, BTC, kind, tf), DatasetKey(EX, BTC, kind, tf))
    copy(DatasetKey(EX, BTC, "ohlcv", "5m"), DatasetKey(EX, BTC, "ohlcv", "5m"), T0, T0 + pd.Timedelta(days=3))
    copy(DatasetKey("hyperliquid", "BTC/USDC:USDC", "open_interest", "1h"), DatasetKey(EX, BTC, "open_interest", "1h"))
    copy(DatasetKey(EX, ETH, "ohlcv", "1h"), DatasetKey(EX, ETH, "ohlcv", "1h"))
    return store


@pytest.fixture(scope="module")
def server(source):
    """Frozen clock at 2025-04-01 00:30 (speed 0): the 23:00 bar of March 31 is the last closed 1h bar."""
    with ReplayServer(source.root, start="2025-04-01T00:30", speed=0) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    ex = make_exchange(EX, url=server.url, rate_limit=False, timeout=5000)
    ex.load_markets()
    return ex


def frame(source: Store, kind: str, tf: str = "1h", symbol: str = BTC) -> pd.DataFrame:
    return source.read(DatasetKey(EX, symbol, kind, tf))


def raw_get(url: str) -> tuple[int, dict, object]:
    """(status, headers, parsed JSON body or the raw text)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            status, headers, body = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        status, headers, body = err.code, dict(err.headers), err.read()
    try:
        return status, headers, json.loads(body)
    except ValueError:
        return status, headers, body.decode()


# --------------------------------------------------------------------------------------- markets


def test_load_markets_parses_linear_perpetuals(client):
    assert set(client.markets) == {BTC, ETH}
    m = client.market(BTC)
    assert (m["id"], m["type"], m["linear"], m["settle"], m["active"]) == ("BTCUSDT", "swap", True, "USDT", True)
    assert m["precision"]["price"] == 0.1 and m["precision"]["amount"] == 0.001
    assert m["limits"]["cost"]["min"] == 100 and "MARKET" in m["info"]["orderTypes"]
    assert client.market(ETH)["precision"]["price"] == 0.01


def test_load_markets_with_keys_gets_empty_sapi_answers(server):
    ex = point_at(ccxt.binanceusdm({"apiKey": "dummy", "secret": "dummy", "enableRateLimit": False}), server.url)
    assert set(ex.load_markets()) == {BTC, ETH}  # capital/config/getall and margin/allPairs answered []


def test_fetch_time_is_the_replay_clock(client):
    assert client.fetch_time() == ms("2025-04-01T00:30")


# --------------------------------------------------------------------------------------- market data


def test_fetch_ohlcv_returns_stored_rows_exactly(client, source):
    since = ms("2025-03-10")
    got = client.fetch_ohlcv(BTC, "1h", since=since, limit=200)
    want = frame(source, "ohlcv").loc["2025-03-10":].iloc[:200]
    assert [r[0] for r in got] == [ms(t) for t in want.index]
    assert np.array_equal(np.array([r[1:] for r in got]), want[["open", "high", "low", "close", "volume"]].to_numpy())


def test_mark_funding_and_open_interest_history_exact(client, source):
    since = ms("2025-03-12")
    mark = client.fetch_mark_ohlcv(BTC, "1h", since=since, limit=50)
    want = frame(source, "mark").loc["2025-03-12":].iloc[:50]
    assert np.array_equal(np.array([r[1:5] for r in mark]), want.to_numpy())
    assert all(r[5] == 0 for r in mark)

    funding = client.fetch_funding_rate_history(BTC, since=since, limit=20)
    want_f = frame(source, "funding_rate", "").loc["2025-03-12":].iloc[:20]
    assert [f["timestamp"] for f in funding] == [ms(t) for t in want_f.index]
    assert [f["fundingRate"] for f in funding] == want_f["funding_rate"].tolist()

    oi = client.fetch_open_interest_history(BTC, "1h", since=since, limit=40)
    want_oi = frame(source, "open_interest").loc["2025-03-12":].iloc[:40]
    assert [o["timestamp"] for o in oi] == [ms(t) for t in want_oi.index]
    assert [o["openInterestAmount"] for o in oi] == want_oi["open_interest"].tolist()
    assert [o["openInterestValue"] for o in oi] == want_oi["open_interest_value"].tolist()


def test_kline_wire_shape_and_binance_param_semantics(server, source):
    url = f"{server.url}/fapi/v1/klines?symbol=BTCUSDT&interval=1h"
    status, headers, rows = raw_get(url + f"&startTime={ms('2025-03-10')}&endTime={ms('2025-03-10T05:00')}")
    assert status == 200 and int(headers["X-MBX-USED-WEIGHT-1M"]) >= 1
    assert len(rows) == 6  # both ends inclusive on the open time
    r = rows[0]
    assert len(r) == 12 and isinstance(r[0], int) and isinstance(r[6], int) and isinstance(r[8], int)
    assert r[6] == r[0] + H - 1 and all(isinstance(x, str) for x in r[1:6] + r[7:8] + r[9:])
    assert (r[7], r[8], r[9], r[10]) == ("0", 0, "0", "0")  # not stored: zero, never estimated
    _, _, latest = raw_get(url + "&limit=3")
    assert [x[0] for x in latest] == [ms("2025-03-31T21:00"), ms("2025-03-31T22:00"), ms("2025-03-31T23:00")]
    _, _, upto = raw_get(url + f"&endTime={ms('2025-03-20')}&limit=2")
    assert [x[0] for x in upto] == [ms("2025-03-19T23:00"), ms("2025-03-20")]
    _, _, default = raw_get(url)
    assert len(default) == 500
    _, _, big = raw_get(url + f"&startTime={ms(T0)}&limit=5000")
    assert len(big) == min(1500, len(frame(source, "ohlcv").loc[:"2025-03-31T23:00"]))


@pytest.mark.parametrize(("query", "status", "code"), [
    ("symbol=NOPEUSDT&interval=1h", 400, -1121),
    ("symbol=BTCUSDT&interval=7h", 400, -1120),
    ("interval=1h", 400, -1102),
    ("symbol=BTCUSDT&interval=1h&limit=0", 400, -1130),
    ("symbol=BTCUSDT&interval=1h&startTime=abc", 400, -1100),
    ("symbol=BTCUSDT&interval=1h&startTime=20&endTime=10", 400, -1023),
])
def test_bad_params_get_binance_errors(server, query, status, code):
    got_status, _, body = raw_get(f"{server.url}/fapi/v1/klines?{query}")
    assert (got_status, body["code"]) == (status, code) and body["msg"]


def test_errors_map_to_ccxt_exceptions(server, client):
    with pytest.raises(ccxt.BadSymbol):
        client.fapiPublicGetKlines({"symbol": "NOPEUSDT", "interval": "1h"})
    with pytest.raises(ccxt.BadRequest):
        client.fapiPublicGetKlines({"symbol": "BTCUSDT", "interval": "7h"})
    status, _, body = raw_get(f"{server.url}/fapi/v1/nothing")
    assert status == 404 and body["code"] == -5000


def test_coarser_intervals_are_aggregated_from_finer_bars(client, source):
    got = client.fetch_ohlcv(BTC, "4h", since=ms("2025-03-10"), limit=6)
    hourly = frame(source, "ohlcv").loc["2025-03-10":"2025-03-10T23:00"]
    want = hourly.resample("4h").agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    assert [r[0] for r in got] == [ms(t) for t in want.index]
    assert np.allclose(np.array([r[1:] for r in got]), want.to_numpy(), rtol=1e-12)
    fifteen = client.fetch_ohlcv(BTC, "15m", since=ms("2025-03-09"), limit=4)  # from the stored 5m bars
    assert [r[0] for r in fifteen] == [ms("2025-03-09") + i * 900_000 for i in range(4)]


def test_current_funding_and_open_interest_are_as_of_now(client, source):
    rate = client.fetch_funding_rate(BTC)
    last = frame(source, "funding_rate", "").loc[:"2025-04-01T00:30"].iloc[-1]
    assert rate["fundingRate"] == last["funding_rate"]
    assert rate["fundingTimestamp"] == ms("2025-04-01T08:00") and rate["timestamp"] == ms("2025-04-01T00:30")
    assert rate["markPrice"] == frame(source, "mark").loc["2025-03-31T23:00", "close"]
    oi = client.fetch_open_interest(BTC)
    assert oi["openInterestAmount"] == frame(source, "open_interest").loc["2025-04-01T00:00", "open_interest"]


# --------------------------------------------------------------------------------------- the clock


def test_clock_never_serves_future_data(source):
    with ReplayServer(source.root, start="2025-03-20T10:59:59.999", speed=0) as srv:
        ex = make_exchange(EX, url=srv.url, rate_limit=False)
        bars = ex.fetch_ohlcv(BTC, "1h", limit=5)
        assert bars[-1][0] == ms("2025-03-20T09:00")  # the 10:00 bar closes at 11:00
        assert ex.fetch_ohlcv(BTC, "1h", since=ms("2025-03-20T10:00")) == []
        assert ex.fetch_mark_ohlcv(BTC, "1h", limit=1)[0][0] == ms("2025-03-20T09:00")
        assert ex.fetch_ohlcv(BTC, "1d", limit=1)[0][0] == ms("2025-03-19")  # the 20th is not over
        assert ex.fetch_funding_rate_history(BTC, limit=1)[0]["timestamp"] == ms("2025-03-20T08:00")
        assert ex.fetch_open_interest_history(BTC, "1h", limit=1)[0]["timestamp"] == ms("2025-03-20T10:00")
        srv.clock.set(ms("2025-03-20T11:00"))
        assert ex.fetch_ohlcv(BTC, "1h", limit=1)[0][0] == ms("2025-03-20T10:00")
        assert ex.fetch_open_interest_history(BTC, "1h", limit=1)[0]["timestamp"] == ms("2025-03-20T11:00")


def test_clock_runs_at_speed(source):
    with ReplayServer(source.root, start="2025-03-20", speed=3600) as srv:
        ex = make_exchange(EX, url=srv.url, rate_limit=False)
        first = ex.fetch_time()
        time.sleep(0.3)
        assert ex.fetch_time() - first >= 0.3 * 3600 * 1000


# --------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize(("kind", "error"), [
    ("429", ccxt.DDoSProtection), ("5xx", ccxt.NetworkError), ("drop", ccxt.NetworkError),
])
def test_injected_faults_surface_as_ccxt_network_errors(source, kind, error):
    with ReplayServer(source.root, start="2025-04-01", speed=0,
                      faults=FaultConfig(rate=1.0, seed=3, kinds=(kind,), retry_after=7)) as srv:
        ex = make_exchange(EX, url=srv.url, rate_limit=False, timeout=3000)
        with pytest.raises(error):
            ex.fetch_time()
        if kind == "429":
            assert ex.last_response_headers["Retry-After"] == "7"


def test_slow_fault_delays_but_answers(source):
    with ReplayServer(source.root, start="2025-04-01", speed=0,
                      faults=FaultConfig(rate=1.0, kinds=("slow",), slow_seconds=0.2)) as srv:
        ex = make_exchange(EX, url=srv.url, rate_limit=False)
        t = time.monotonic()
        assert ex.fetch_time() == ms("2025-04-01")
        assert time.monotonic() - t >= 0.2


def test_fault_rate_is_a_share_of_requests(source):
    with ReplayServer(source.root, start="2025-04-01", speed=0,
                      faults=FaultConfig(rate=0.2, seed=1, kinds=("429", "5xx"))) as srv:
        failures = sum(raw_get(f"{srv.url}/fapi/v1/time")[0] != 200 for _ in range(200))
    assert 20 <= failures <= 60


def test_weight_limit_answers_429_with_retry_after(source):
    with ReplayServer(source.root, start="2025-04-01", speed=0, weight_limit=3) as srv:
        codes = [raw_get(f"{srv.url}/fapi/v1/time") for _ in range(5)]
    assert [c[0] for c in codes[:3]] == [200] * 3 and codes[4][0] == 429
    assert codes[4][2]["code"] == -1003 and int(codes[4][1]["Retry-After"]) >= 0


# --------------------------------------------------------------------------------------- lifecycle, CLI


def test_server_refuses_non_loopback_and_empty_stores(tmp_path, source):
    with pytest.raises(UserError, match="loopback"):
        ReplayServer(source.root, host="0.0.0.0")
    with pytest.raises(UserError, match="no binanceusdm"):
        ReplayServer(tmp_path)


def test_stop_releases_the_port_even_with_keep_alive_clients(source):
    srv = ReplayServer(source.root, start="2025-04-01", speed=0).start()
    ex = make_exchange(EX, url=srv.url, rate_limit=False)
    ex.fetch_time()  # leaves a keep-alive connection open
    port = int(srv.url.rsplit(":", 1)[1])
    t = time.monotonic()
    srv.stop()
    assert time.monotonic() - t < 2
    with ReplayServer(source.root, port=port, start="2025-04-01", speed=0) as again:
        assert again.url.endswith(f":{port}")


def test_replay_server_command_runs_until_ctrl_c(source):
    cascade = Path(sys.executable).parent / "cascade"
    proc = subprocess.Popen([str(cascade), "replay-server", "--data-dir", str(source.root), "--port", "0",
                             "--start", "2025-04-01", "--speed", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    try:
        url = None
        for _ in range(5):
            line = proc.stdout.readline()
            if line.startswith("url "):
                url = line.split()[1]
                break
        assert url and url.startswith("http://127.0.0.1:")
        ex = make_exchange(EX, url=url, rate_limit=False)
        assert abs(ex.fetch_time() - ms("2025-04-01")) < 60_000
        assert len(ex.fetch_ohlcv(BTC, "1h", limit=2)) == 2
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------------------- bot.exchange


def test_unknown_exchange_suggests_close_ids():
    with pytest.raises(UserError, match="did you mean 'binanceusdm'"):
        make_exchange("binanceusd")


@pytest.mark.parametrize("exchange_id", ["binanceusdm", "bybit", "okx"])
def test_url_override_redirects_every_rest_url(exchange_id):
    ex = make_exchange(exchange_id, url="http://127.0.0.1:9")

    def urls(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from urls(v)
        elif isinstance(node, str) and node.startswith("http"):
            yield node

    found = list(urls(ex.urls["api"]))
    assert found and all(u.startswith("http://127.0.0.1:9") for u in found)
    if exchange_id == "binanceusdm":
        assert ex.urls["api"]["fapiPublic"] == "http://127.0.0.1:9/fapi/v1"
        assert ex.urls["api"]["fapiData"] == "http://127.0.0.1:9/futures/data"
        assert ex.exceptions["exact"]["-2019"] is ccxt.InsufficientFunds
        assert ex.options["fetchCurrencies"] is False


def test_secrets_come_only_from_environment(monkeypatch):
    monkeypatch.setenv("TEST_CASCADE_KEY", "k-123")
    monkeypatch.setenv("TEST_CASCADE_SECRET", "s-456")
    ex = make_exchange(EX, api_key_env="TEST_CASCADE_KEY", secret_env="TEST_CASCADE_SECRET")
    assert (ex.apiKey, ex.secret) == ("k-123", "s-456")
    assert not make_exchange(EX, api_key_env="TEST_CASCADE_MISSING").apiKey
