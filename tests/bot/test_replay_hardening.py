"""Replay server hardening (issue 11 item 5): read timeouts, strict Content-Length, loopback on the
resolved address (IPv4 and IPv6), kline fields only from the data, datasets only under their exchange."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pandas as pd
import pytest

from bot.data import SAMPLE_DIR
from bot.errors import UserError
from bot.exchange import make_exchange
from bot.replay import ReplayServer
from bot.store import DatasetKey, Store

EX, BTC = "binanceusdm", "BTC/USDT:USDT"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Store:
    """BTC 1h candles with made-up-free extra columns: taker-buy volume and trade counts as stored
    by a Binance archive import; Hyperliquid open interest under its own exchange."""
    sample, store = Store(SAMPLE_DIR), Store(tmp_path_factory.mktemp("hardening"))
    bars = sample.read(DatasetKey(EX, BTC, "ohlcv", "1h")).loc["2025-03-01":"2025-03-20"].copy()
    # a deterministic share of the stored volume, standing in for an archive's taker column
    bars["taker_buy_volume"] = (bars["volume"] * 0.4).round(3)
    bars["count"] = (bars["volume"] * 10).round().astype(float)
    store.write(DatasetKey(EX, BTC, "ohlcv", "1h"), bars)
    oi = sample.read(DatasetKey("hyperliquid", "BTC/USDC:USDC", "open_interest", "1h"))
    store.write(DatasetKey("hyperliquid", "BTC/USDC:USDC", "open_interest", "1h"), oi.loc["2025-03-01":"2025-03-20"])
    return store


def raw(host: str, port: int, payload: bytes, wait: float = 5.0) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(wait)
        s.connect((host, port))
        s.sendall(payload)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def port_of(srv: ReplayServer) -> int:
    return int(srv.url.rsplit(":", 1)[1])


def test_silent_connections_are_dropped_after_the_read_timeout(source):
    with ReplayServer(source.root, start="2025-03-10", speed=0, read_timeout=0.3) as srv:
        socks = []
        for _ in range(8):  # half-open clients that never send a byte
            s = socket.create_connection(("127.0.0.1", port_of(srv)))
            s.settimeout(5)
            socks.append(s)
        t = time.monotonic()
        for s in socks:
            assert s.recv(1) == b""  # closed by the server
            s.close()
        assert time.monotonic() - t < 3
        with urllib.request.urlopen(f"{srv.url}/fapi/v1/time", timeout=5) as resp:
            assert resp.status == 200


@pytest.mark.parametrize("length", ["-5", "abc", "1e3", "5, 5"])
def test_bad_content_length_is_a_400_not_a_hang(source, length):
    with ReplayServer(source.root, start="2025-03-10", speed=0, read_timeout=2) as srv:
        t = time.monotonic()
        reply = raw("127.0.0.1", port_of(srv), f"POST /fapi/v1/order HTTP/1.1\r\nHost: x\r\nContent-Length: {length}"
                                               "\r\n\r\nsymbol=BTCUSDT".encode())
        assert time.monotonic() - t < 1.5
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and json.loads(body)["code"] == -1100


def test_short_body_times_out_without_processing(source):
    with ReplayServer(source.root, start="2025-03-10", speed=0, read_timeout=0.3) as srv:
        reply = raw("127.0.0.1", port_of(srv), b"POST /fapi/v1/order HTTP/1.1\r\nHost: x\r\nContent-Length: 500"
                                               b"\r\n\r\nsymbol=BTCUSDT")
        assert reply == b""


def test_loopback_is_checked_on_the_resolved_address(source):
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        with pytest.raises(UserError, match="loopback only"):
            ReplayServer(source.root, host=host)
    with pytest.raises(UserError, match="cannot resolve"):
        ReplayServer(source.root, host="no-such-host.invalid")
    with ReplayServer(source.root, host="localhost", start="2025-03-10", speed=0) as srv:
        assert make_exchange(EX, url=srv.url, rate_limit=False).fetch_time() > 0


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_ipv6_loopback_serves_ccxt(source):
    with ReplayServer(source.root, host="::1", start="2025-03-10T05:00", speed=0) as srv:
        assert srv.url.startswith("http://[::1]:")
        ex = make_exchange(EX, url=srv.url, rate_limit=False, timeout=5000)
        ex.load_markets()
        assert ex.fetch_ohlcv(BTC, "1h", limit=1)[0][0] == int(pd.Timestamp("2025-03-10T04:00", tz="UTC").value // 10**6)


def test_kline_fields_come_from_the_data_or_are_zero(source):
    bars = source.read(DatasetKey(EX, BTC, "ohlcv", "1h"))
    with ReplayServer(source.root, start="2025-03-10", speed=0) as srv:
        with urllib.request.urlopen(f"{srv.url}/fapi/v1/klines?symbol=BTCUSDT&interval=1h&limit=2") as resp:
            rows = json.loads(resp.read())
    want = bars.loc[:"2025-03-09T23:00"].iloc[-2:]
    assert [float(r[9]) for r in rows] == want["taker_buy_volume"].tolist()
    assert [r[8] for r in rows] == want["count"].astype(int).tolist()
    assert [(r[7], r[10]) for r in rows] == [("0", "0")] * 2  # quote volumes are not stored: not estimated


def test_a_dataset_is_served_only_under_its_exchange(source):
    with ReplayServer(source.root, start="2025-03-10", speed=0) as srv:
        ex = make_exchange(EX, url=srv.url, rate_limit=False)
        assert ex.fetch_open_interest_history(BTC, "1h", limit=5) == []  # Hyperliquid's stays Hyperliquid's
        assert set(ex.load_markets()) == {BTC}
