"""Open-interest history from Bybit and OKX through ccxt's own request building and parsing
(the HTTP layer ``Exchange.fetch`` answers like the venue's API; no network), and the per-venue
frames behind ``cascade liqmap --venues``."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import ccxt
import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from bot.data import SAMPLE_DIR, load_frame
from bot.errors import UserError
from bot.record.venues import download_open_interest_history, fetch_open_interest_history, venue_frames
from bot.store import DatasetKey, Store
from strategies.features.liquidation_map import LiqMapParams
from strategies.features.venues import multi_venue_liquidation_map

BTC = "BTC/USDT:USDT"
H = 3_600_000


def _truth() -> pd.DataFrame:
    """Hourly open interest to serve: the sample's real Hyperliquid BTC values (contracts), 30 days."""
    oi = Store(SAMPLE_DIR).read(DatasetKey("hyperliquid", "BTC/USDC:USDC", "open_interest", "1h"))
    return oi.iloc[1000:1720]


def _market(ex: ccxt.Exchange, mid: str, size: float) -> None:
    ex.set_markets([{"id": mid, "symbol": BTC, "base": "BTC", "quote": "USDT", "settle": "USDT", "baseId": "BTC",
                     "quoteId": "USDT", "settleId": "USDT", "type": "swap", "spot": False, "margin": False,
                     "swap": True, "future": False, "option": False, "contract": True, "linear": True,
                     "inverse": False, "contractSize": size, "active": True, "precision": {}, "limits": {},
                     "info": {}}])


class _Venue:
    """Answers ccxt's HTTP requests like the real endpoint (newest first, bounds as documented)."""

    def __init__(self, truth: pd.DataFrame, kind: str) -> None:
        self.t = (truth.index - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")
        self.oi = truth["open_interest"].to_numpy()
        self.kind = kind
        self.urls: list[str] = []

    def fetch(self, url, method="GET", headers=None, body=None):
        self.urls.append(url)
        q = dict(parse_qsl(urlsplit(url).query))
        limit = int(q.get("limit", 50 if self.kind == "bybit" else 100))
        if self.kind == "bybit":
            assert urlsplit(url).path == "/v5/market/open-interest"
            sel = (self.t >= int(q["startTime"])) & (self.t <= int(q["endTime"]))
            idx = np.flatnonzero(sel)[::-1][:limit]  # walks back from endTime
            return {"retCode": 0, "retMsg": "OK", "result": {
                "symbol": q["symbol"], "category": q["category"], "nextPageCursor": "",
                "list": [{"openInterest": f"{self.oi[i]:.8f}", "timestamp": str(self.t[i])} for i in idx]},
                "retExtInfo": {}, "time": int(self.t[-1])}
        assert urlsplit(url).path == "/api/v5/rubik/stat/contracts/open-interest-history"
        lo, hi = int(q.get("begin", 0)), int(q.get("end", 1 << 62))
        idx = np.flatnonzero((self.t > lo) & (self.t < hi))[::-1][:limit]  # exclusive bounds, newest first
        # OKX: [ts, contracts (0.01 BTC), base, usd]
        return {"code": "0", "msg": "", "data": [[str(self.t[i]), f"{self.oi[i] * 100:.2f}", f"{self.oi[i]:.4f}",
                                                  f"{self.oi[i] * 90000:.2f}"] for i in idx]}


@pytest.mark.parametrize(("venue", "mid", "size"), [("bybit", "BTCUSDT", 1.0), ("okx", "BTC-USDT-SWAP", 0.01)])
def test_open_interest_history_pages_cover_the_range_exactly(venue, mid, size, tmp_path):
    truth = _truth()
    ex = getattr(ccxt, venue)()
    _market(ex, mid, size)
    server = _Venue(truth, venue)
    ex.fetch = server.fetch
    since, until = truth.index[5], truth.index[-3]
    got = fetch_open_interest_history(ex, BTC, "1h", int(since.value // 10**6), int(until.value // 10**6))
    want = truth[(truth.index >= since) & (truth.index < until)]
    assert list(got.index) == list(want.index)
    # Bybit: base units as sent; OKX: contracts as sent × 0.01 BTC per contract
    expected = want["open_interest"].round(8) if venue == "bybit" else (want["open_interest"] * 100).round(2) * size
    np.testing.assert_allclose(got["open_interest"], expected, rtol=1e-12)
    q = dict(parse_qsl(urlsplit(server.urls[0]).query))
    page = 200 if venue == "bybit" else 100
    assert len(server.urls) == -(-(until - since).value // 10**6 // (page * H))  # one request per window
    if venue == "bybit":  # ccxt's request: category, interval, explicit window, limit
        assert (q["category"], q["intervalTime"], q["symbol"], q["limit"]) == ("linear", "1h", "BTCUSDT", "200")
        assert int(q["startTime"]) == since.value // 10**6 and int(q["endTime"]) == since.value // 10**6 + 200 * H - 1
        assert got["open_interest_value"].isna().all()
    else:
        assert (q["instId"], q["period"], q["limit"]) == ("BTC-USDT-SWAP", "1H", "100")
        assert int(q["begin"]) == since.value // 10**6 - 1
        np.testing.assert_allclose(got["open_interest_value"], (want["open_interest"] * 90000).round(2),
                                   rtol=1e-9)
    # into the store, resumable: a second call fetches nothing new
    store = Store(tmp_path)
    key = download_open_interest_history(ex, store, BTC, "1h", since, until)
    n_requests = len(server.urls)
    download_open_interest_history(ex, store, BTC, "1h", since, until)
    assert len(server.urls) == n_requests and len(store.read(key)) == len(want)
    with pytest.raises(UserError, match="not 1m"):
        fetch_open_interest_history(ex, BTC, "1m", 0, H)


def test_venue_frames_and_liqmap_over_venues(tmp_path):
    """A store with Binance candles (no open interest), Hyperliquid's open interest and a second
    venue's ('okx': Hyperliquid's real values a day later, re-keyed): the command's summed map
    equals the library's, and its total row is the sum of the venue rows."""
    sample = Store(SAMPLE_DIR)
    store = Store(tmp_path / "data")
    t0, t1 = pd.Timestamp("2025-08-01", tz="UTC"), pd.Timestamp("2025-10-01", tz="UTC")
    ohlcv = sample.read(DatasetKey("binanceusdm", BTC, "ohlcv", "1h"))
    store.write(DatasetKey("binanceusdm", BTC, "ohlcv", "1h"), ohlcv[(ohlcv.index >= t0) & (ohlcv.index < t1)])
    hl = sample.read(DatasetKey("hyperliquid", "BTC/USDC:USDC", "open_interest", "1h"))
    store.write(DatasetKey("hyperliquid", "BTC/USDC:USDC", "open_interest", "1h"), hl)
    store.write(DatasetKey("okx", BTC, "open_interest", "1h"), hl.shift(24).dropna())  # a day-lagged copy
    ref = load_frame(store.root, "binanceusdm", BTC, "1h", use_sample=False, open_interest_source=None)
    notes: list[str] = []
    frames = venue_frames(store.root, ["binanceusdm", "okx", "hyperliquid"], ref, BTC, "1h", use_sample=False,
                          note=notes.append)
    assert list(frames) == ["okx", "hyperliquid"] and any("binanceusdm: no open interest" in n for n in notes)
    for f in frames.values():
        assert f.index.equals(ref.index) and f["close"].equals(ref["close"])
    maps = multi_venue_liquidation_map(frames, LiqMapParams(), [len(ref) - 1], reference_frame=ref)

    from bot.commands.liqmap import liqmap

    app = typer.Typer()
    app.command("liqmap")(liqmap)
    app.command("noop")(lambda: None)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\ndir = "{store.root}"\nuse_sample = false\n')
    result = CliRunner().invoke(app, ["liqmap", "--config", str(cfg), "--venues", "binanceusdm,okx,hyperliquid",
                                      "--output", str(tmp_path / "m.png"), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary["venues"]) == {"okx", "hyperliquid", "total"}
    assert summary["S_up_10"] == pytest.approx(maps.features["liq_short_above_10"].iloc[-1], rel=1e-12)
    assert summary["venues"]["total"]["short_above_10"] == pytest.approx(
        summary["venues"]["okx"]["short_above_10"] + summary["venues"]["hyperliquid"]["short_above_10"], rel=1e-9)
    assert Path(summary["png"]).read_bytes()[:4] == b"\x89PNG"
