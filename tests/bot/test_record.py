"""`cascade record` and the replay websocket streams, driven by ccxt.pro's real client on 127.0.0.1.

The served events are real OKX liquidations from the bundled sample (2026-03-04/05), pushed as
Binance ``forceOrder`` frames by :class:`bot.replay.stream.StreamServer` on the replay clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ccxt.pro
import numpy as np
import pandas as pd
import pytest

from bot.data import SAMPLE_DIR
from bot.errors import UserError
from bot.record.client import make_pro_exchange
from bot.record.normalise import normalise_message
from bot.record.recorder import Recorder
from bot.record.state import RecorderLock, coverage, read_gaps, read_status
from bot.replay.server import ReplayClock, ReplayServer
from bot.replay.stream import StreamServer
from bot.store import DatasetKey, Store

EX, BTC, ETH = "binanceusdm", "BTC/USDT:USDT", "ETH/USDT:USDT"
START = "2026-03-05T03:44"  # both OKX event sets are live from here


def ms(ts: str) -> int:
    return int(pd.Timestamp(ts, tz="UTC").value // 1_000_000)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Store:
    """Binance candles (for exchangeInfo and klines) and the sample's real OKX liquidations."""
    sample, store = Store(SAMPLE_DIR), Store(tmp_path_factory.mktemp("source"))
    for sym in (BTC, ETH):
        key = DatasetKey(EX, sym, "ohlcv", "1h")
        store.write(key, sample.read(key).iloc[-200:])
        liq = DatasetKey("okx", sym, "liquidations")
        store.write(liq, sample.read(liq))
        oi = DatasetKey("hyperliquid", sym.replace("USDT", "USDC"), "open_interest", "1h")
        store.write(oi, sample.read(oi).iloc[-200:])
        # the replay serves a dataset only under the exchange it came from: the same values as Binance's
        store.write(DatasetKey(EX, sym, "open_interest", "1h"), sample.read(oi).iloc[-200:])
    return store


def _expected_snapshots(source: Store, snapshot_ms: int = 1000) -> pd.DataFrame:
    """Independent rendering of Binance's throttle: the latest event per symbol per second, due at
    the window's end."""
    parts = []
    for sym in (BTC, ETH):
        f = source.read(DatasetKey("okx", sym, "liquidations")).reset_index()
        f["t"] = (f["time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")
        f["window"] = f["t"] // snapshot_ms
        last = f.groupby("window", sort=True).tail(1).copy()
        last["due"] = (last["window"] + 1) * snapshot_ms
        last["symbol"] = sym
        parts.append(last)
    return pd.concat(parts).sort_values(["due", "symbol"]).reset_index(drop=True)


def _served_tuples(stream: StreamServer) -> list[tuple]:
    return sorted((e["o"]["s"], e["o"]["T"], e["o"]["S"], float(e["o"]["z"]), float(e["o"]["ap"]))
                  for e in stream.served_events())


def _stored_tuples(store: Store) -> list[tuple]:
    out = []
    for sym, mid in ((BTC, "BTCUSDT"), (ETH, "ETHUSDT")):
        f = store.read(DatasetKey(EX, sym, "liquidations"))
        if f is None:
            continue
        t = (f.index - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")
        for ti, side, amount, price in zip(t, f["side"], f["amount"], f["price"], strict=True):
            out.append((mid, int(ti), "SELL" if side == "long" else "BUY", float(amount), float(price)))
    return sorted(out)


def _freeze(clock: ReplayClock) -> None:
    """Stop the replay clock where it is, and give the stream's push loop (10 ms ticks) time to
    send what was already due: afterwards nothing more is served."""
    clock.set(clock.now_ms())
    clock.speed = 0.0
    time.sleep(0.2)


def _run_at(clock: ReplayClock, speed: float) -> None:
    clock.set(clock.now_ms())
    clock.speed = speed


async def _until(cond, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


# ----------------------------------------------------------------------------- stream server


def test_force_order_stream_follows_the_clock_and_binance_throttle(source):
    """ccxt.pro's watch_liquidations against the stream: nothing ahead of the clock, one event per
    symbol per second (the latest), each equal to the stored event it renders."""
    clock = ReplayClock(ms(START), speed=0)
    expected = _expected_snapshots(source)

    async def main() -> list:
        with ReplayServer(source.root, start=START, speed=0) as rest, \
                StreamServer.from_stores([source], clock, liquidation_exchanges=["okx"], tick_seconds=0.01) as s:
            ex = make_pro_exchange(EX, url=rest.url, ws_url=s.url, rate_limit=False)
            assert ex.urls["api"]["ws"]["linear"] == s.url + "/ws"
            try:
                task = asyncio.ensure_future(ex.watch_liquidations(ETH))
                await _until(lambda: s.connections == 1)
                await asyncio.sleep(0.1)
                assert not task.done()  # frozen clock: nothing is due
                assert s.served_events() == []
                target = ms("2026-03-05T06:00")
                clock.set(target)
                first = await asyncio.wait_for(task, 5)
                await asyncio.sleep(0.2)
                served = s.served_events()
            finally:
                await ex.close()
        return [first, served, target]

    first, served, target = asyncio.run(main())
    due = expected[(expected["symbol"] == ETH) & (expected["due"] > ms(START)) & (expected["due"] <= target)]
    assert len(served) == len(due) > 5
    assert all(e["E"] <= target and e["o"]["T"] < e["E"] for e in served)
    assert [e["o"]["T"] for e in served] == due["t"].tolist()
    assert [float(e["o"]["z"]) for e in served] == due["amount"].tolist()
    assert [e["o"]["S"] for e in served] == ["SELL" if s == "long" else "BUY" for s in due["side"]]
    # ccxt parsed the first pushed frame: price = ap, contracts = l (= z here), timestamp = T
    liq = first[0]
    assert (liq["symbol"], liq["timestamp"], liq["price"], liq["contracts"]) == (
        ETH, served[0]["o"]["T"], float(served[0]["o"]["ap"]), float(served[0]["o"]["l"]))


def test_kline_stream_serves_closed_bars_only(source):
    candles = source.read(DatasetKey(EX, BTC, "ohlcv", "1h"))
    t_open = candles.index[-10]
    now = int((t_open + pd.Timedelta(minutes=90)).value // 1_000_000)  # bar -10 closed, bar -9 open
    clock = ReplayClock(now, speed=0)

    async def main() -> tuple:
        with ReplayServer(source.root, start=now, speed=0) as rest, \
                StreamServer.from_stores([source], clock, tick_seconds=0.01) as s:
            ex = make_pro_exchange(EX, url=rest.url, ws_url=s.url, rate_limit=False)
            try:
                got = await asyncio.wait_for(ex.watch_ohlcv(BTC, "1h"), 5)
                clock.set(now + 30 * 60_000)  # bar -9 closes
                nxt = await asyncio.wait_for(ex.watch_ohlcv(BTC, "1h"), 5)
            finally:
                await ex.close()
        return got, nxt

    got, nxt = asyncio.run(main())
    row = candles.iloc[-10]
    assert got[-1] == [int(t_open.value // 1_000_000), row["open"], row["high"], row["low"], row["close"], row["volume"]]
    assert nxt[-1][0] == int(candles.index[-9].value // 1_000_000) and nxt[-1][4] == candles.iloc[-9]["close"]


def test_stream_rejects_unknown_streams_and_non_loopback(source):
    with pytest.raises(UserError, match="loopback"):
        StreamServer(ReplayClock(0), {}, host="0.0.0.0")

    async def main() -> None:
        import aiohttp

        with StreamServer.from_stores([source], ReplayClock(ms(START), 0), liquidation_exchanges=["okx"]) as s:
            async with aiohttp.ClientSession() as session, session.ws_connect(s.url + "/market/ws/3") as ws:
                await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": ["nosuch@depth"], "id": 1}))
                assert json.loads((await ws.receive()).data)["error"]["code"] == 2
                await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@forceOrder"], "id": 2}))
                assert json.loads((await ws.receive()).data) == {"result": None, "id": 2}
                await ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 3}))
                assert json.loads((await ws.receive()).data) == {"result": ["btcusdt@forceOrder"], "id": 3}

    asyncio.run(main())


# ----------------------------------------------------------------------------- recorder


def test_recorder_stores_every_served_event_once_and_logs_the_disconnect_gap(source, tmp_path):
    """In-process recorder, all-market stream: after a dropped socket it reconnects, logs the gap,
    and the store equals what was served (no loss, no duplicate)."""
    out = Store(tmp_path / "data")

    async def main() -> tuple:
        with ReplayServer(source.root, start=START, speed=600) as rest, \
                StreamServer.from_stores([source], rest.clock, liquidation_exchanges=["okx"], tick_seconds=0.01) as s:
            ex = make_pro_exchange(EX, url=rest.url, ws_url=s.url, rate_limit=False)
            rec = Recorder(out, [(EX, ex)], (), poll_timeframe="", flush_seconds=0.3, heartbeat_seconds=0.1,
                           log=lambda line: None)
            stop = asyncio.Event()
            task = asyncio.ensure_future(rec.run(stop))
            await _until(lambda: len(s.served_events()) >= 10)
            dropped_at = rest.clock.now_ms()
            assert s.drop_connections() == 1
            await _until(lambda: len(read_gaps(out.root)) == 1)
            n_before = len(s.served_events())
            await _until(lambda: len(s.served_events()) >= n_before + 10)
            await asyncio.sleep(0.3)
            running = read_status(out.root)
            _freeze(rest.clock)  # then let what is in flight arrive before stopping
            await _until(lambda: rec.venues[0].rows == len(s.served_events()))
            stop.set()
            await task
            return _served_tuples(s), dropped_at, s.served, running

    served, dropped_at, frames, running = asyncio.run(main())
    stored = _stored_tuples(out)
    assert stored == served and len(set(stored)) == len(stored)
    # raw message kept beside the row, byte-for-byte the frame that was served
    f = out.read(DatasetKey(EX, ETH, "liquidations"))
    eth_frames = {json.dumps(x["payload"], separators=(",", ":"), sort_keys=True) for x in frames
                  if x["payload"]["o"]["s"] == "ETHUSDT"}
    assert set(f["raw"]) == eth_frames
    (gap,) = read_gaps(out.root)
    assert gap["reason"] == "disconnect" and gap["exchange"] == EX
    assert abs(gap["start_ms"] - dropped_at) < 60_000  # 0.1 s of wall time at 600x
    times = [t for _, t, *_ in served]
    assert not any(gap["start_ms"] < t < gap["end_ms"] - 1000 for t in times)  # nothing served while down
    status = read_status(out.root)
    assert status["stopped"] and status["venues"][EX]["rows"] == len(served) and status["venues"][EX]["reconnects"] == 1
    assert 550 < running["venues"][EX]["clock_rate"] < 650  # replay speed detected from fetch_time
    (cov,) = coverage(out.root)
    assert (cov["exchange"], cov["gaps"], cov["running"]) == (EX, 1, False) and cov["gap_seconds"] == gap["seconds"]


def test_record_command_survives_sigkill_without_loss_or_duplicates(source, tmp_path):
    """`cascade record` as a process: SIGKILL, restart, SIGTERM. Every served event is stored once;
    the downtime is one 'recorder down' gap and nothing outside the gaps is missing."""
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    expected = _expected_snapshots(source)
    with ReplayServer(source.root, start=START, speed=300) as rest, \
            StreamServer.from_stores([source], rest.clock, liquidation_exchanges=["okx"], tick_seconds=0.01) as s:
        cmd = [sys.executable, "-m", "bot", "record", "--exchange-url", rest.url, "--ws-url", s.url,
               "--data-dir", str(data), "--symbols", f"{BTC},{ETH}", "--poll-interval", "1m", "--no-rate-limit",
               "--config", str(tmp_path / "none.toml")]
        (tmp_path / "none.toml").write_text("")

        def wait_for(cond, timeout: float = 20.0) -> None:
            t0 = time.monotonic()
            while not cond():
                assert time.monotonic() - t0 < timeout, "recorder did not get there in time"
                time.sleep(0.05)

        journal = data / ".record" / "journal.jsonl"
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: len(s.served_events()) >= 15)
            # kill once everything served is journaled or stored (frozen clock: nothing in flight)
            _freeze(rest.clock)
            wait_for(lambda: _journaled_or_stored(journal, data) >= len(s.served_events()))
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            killed_at = rest.clock.now_ms()
            _run_at(rest.clock, 300)
        finally:
            if first.poll() is None:
                first.kill()
        n_first = len(s.served_events())
        time.sleep(0.5)  # downtime: 150 s of replay
        second = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: s.connections == 1)
            reconnected_at = rest.clock.now_ms()
            wait_for(lambda: len(s.served_events()) >= n_first + 15)
            _freeze(rest.clock)
            wait_for(lambda: _journaled_or_stored(journal, data) >= len(s.served_events()))
            second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=20)
        finally:
            if second.poll() is None:
                second.kill()
        assert second.returncode == 0, err.decode()[-2000:]
        served = _served_tuples(s)
        last_due = max(e["E"] for e in s.served_events())
        first_due = min(e["E"] for e in s.served_events())

    stored = _stored_tuples(Store(data))
    assert stored == served and len(set(stored)) == len(stored)
    gaps = read_gaps(data)
    down = [g for g in gaps if g["reason"] == "recorder down"]
    assert len(down) == 1 and killed_at <= down[0]["end_ms"]
    # the gap is the downtime: from the last heartbeat (0.5 s = 150 s of replay) to the reconnection
    # (the clock is frozen just before the kill: the recorder's estimate may run ahead until its
    # next heartbeat re-reads it, by at most one heartbeat of replay time)
    assert killed_at - 150_000 - 30_000 <= down[0]["start_ms"] <= killed_at + 150_000
    assert abs(down[0]["end_ms"] - reconnected_at) <= 30_000
    # no gap beyond the downtime: every due event outside the recorded gaps was stored
    due = expected[(expected["due"] > first_due) & (expected["due"] <= last_due)]
    in_gap = np.zeros(len(due), dtype=bool)
    for g in gaps:
        in_gap |= (due["due"] >= g["start_ms"] - 1000).to_numpy() & (due["due"] <= g["end_ms"] + 1000).to_numpy()
    stored_keys = {(t, a) for _, t, _, a, _ in stored}
    missing = [(t, a) for t, a, g in zip(due["t"], due["amount"], in_gap, strict=True) if not g and (t, a) not in stored_keys]
    assert missing == []
    assert in_gap.any()  # the downtime did hide events
    # the REST polls landed too: open interest on the 1m grid, current funding in the premium store
    status = read_status(data)
    assert status["stopped"] and set(status["venues"][EX]["polls"]) == {
        f"{k} {s}" for k in ("funding", "open_interest") for s in (BTC, ETH)}
    oi = Store(data).read(DatasetKey(EX, BTC, "open_interest", "1m"))
    assert len(oi) >= 1 and (oi.index.as_unit("ms").asi8 % 60_000 == 0).all()
    hl = source.read(DatasetKey("hyperliquid", "BTC/USDC:USDC", "open_interest", "1h"))
    assert set(oi["open_interest"]) <= set(hl["open_interest"])
    premium = Store(data / ".record" / "premium").read(DatasetKey(EX, BTC, "funding_rate"))
    assert len(premium) >= 1 and premium["mark_price"].notna().all()


def _journaled_or_stored(journal: Path, data: Path) -> int:
    n = 0
    if journal.is_file():
        n += sum(1 for line in journal.read_text().splitlines() if '"t":"liq"' in line)
    store = Store(data)
    for sym in (BTC, ETH):
        try:
            f = store.read(DatasetKey(EX, sym, "liquidations"))
        except UserError:  # caught mid-replace: try again
            return 0
        n += 0 if f is None else len(f)
    return n


def test_record_status_and_second_recorder_refused(tmp_path, capsys):
    from bot.cli import main

    data = tmp_path / "d"
    lock = RecorderLock(data).acquire()
    try:
        assert RecorderLock.held(data)
        with pytest.raises(UserError, match="already recording"):
            RecorderLock(data).acquire()
    finally:
        lock.release()
    assert not RecorderLock.held(data)
    (tmp_path / "x.toml").write_text("")
    with pytest.raises(SystemExit) as done:
        main(["record", "--status", "--json", "--data-dir", str(data), "--config", str(tmp_path / "x.toml")])
    assert done.value.code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == {"running": False, "status": None, "gaps": []}
    with pytest.raises(SystemExit) as exc:
        main(["record", "--venues", "bybit", "--symbols", "", "--data-dir", str(data),
              "--config", str(tmp_path / "x.toml")])
    assert exc.value.code == 2
    assert "need symbols" in capsys.readouterr().err


# ----------------------------------------------------------------------------- normalisation


def _markets(ex, contract_size: float, ids: dict[str, str]) -> None:
    ex.set_markets([{"id": mid, "symbol": sym, "base": sym.split("/")[0], "quote": "USDT", "settle": "USDT",
                     "baseId": sym.split("/")[0], "quoteId": "USDT", "settleId": "USDT", "type": "swap", "spot": False,
                     "margin": False, "swap": True, "future": False, "option": False, "contract": True, "linear": True,
                     "inverse": False, "contractSize": contract_size, "active": True, "precision": {}, "limits": {},
                     "info": {}} for mid, sym in ids.items()])


def test_binance_amount_is_the_cumulative_fill_not_ccxts_last_fill():
    ex = ccxt.pro.binanceusdm()
    _markets(ex, 1.0, {"BTCUSDT": BTC})
    msg = {"e": "forceOrder", "E": 1718236860000, "o": {"s": "BTCUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC",
           "q": "0.500", "p": "66000.10", "ap": "66010.50", "X": "FILLED", "l": "0.014", "z": "0.500",
           "T": 1718236859998}}
    (row,) = normalise_message(EX, ex, msg)
    assert (row.side, row.amount, row.price, row.time_ms) == ("long", 0.5, 66010.5, 1718236859998)
    assert row.value == pytest.approx(0.5 * 66010.5, rel=1e-15)
    assert ex.parse_ws_liquidation(msg["o"])["contracts"] == 0.014  # what ccxt itself reports: o.l


def test_bybit_and_okx_messages_through_ccxts_dispatch():
    """The recorder's hook sits on ccxt's handle_liquidation: feed real-shaped frames through
    ccxt.pro's own handle_message and check every entry is normalised (OKX: all details, not
    only the first that ccxt parses)."""
    got: list = []

    def hooked(venue: str, ex) -> None:
        original = ex.handle_liquidation

        def handle(client, message):
            got.extend(normalise_message(venue, ex, message))
            return original(client, message)

        ex.handle_liquidation = handle

    async def feed() -> None:
        by = ccxt.pro.bybit()
        _markets(by, 1.0, {"ROSEUSDT": "ROSE/USDT:USDT"})
        hooked("bybit", by)
        client = by.client("ws://127.0.0.1:9/v5/public/linear")
        by.handle_message(client, {"topic": "allLiquidation.ROSEUSDT", "type": "snapshot", "ts": 1739502303204,
                                   "data": [{"T": 1739502302929, "s": "ROSEUSDT", "S": "Sell", "v": "20000", "p": "0.04499"},
                                            {"T": 1739502302930, "s": "ROSEUSDT", "S": "Buy", "v": "100", "p": "0.045"}]})
        okx = ccxt.pro.okx()
        _markets(okx, 0.01, {"BTC-USDT-SWAP": BTC})
        hooked("okx", okx)
        client = okx.client("ws://127.0.0.1:9/ws/v5/public")
        okx.handle_message(client, {"arg": {"channel": "liquidation-orders", "instType": "SWAP"}, "data": [
            {"details": [{"bkLoss": "0", "bkPx": "72431.4", "ccy": "", "posSide": "long", "side": "sell", "sz": "21",
                          "ts": "1772664343781"},
                         {"bkLoss": "0", "bkPx": "72440.0", "ccy": "", "posSide": "short", "side": "buy", "sz": "3",
                          "ts": "1772664343790"}],
             "instFamily": "BTC-USDT", "instId": "BTC-USDT-SWAP", "instType": "SWAP", "uly": "BTC-USDT"}]})
        await by.close()
        await okx.close()

    asyncio.run(feed())
    summary = [(r.symbol, r.time_ms, r.side, r.amount, r.price, r.part) for r in got]
    assert summary == [
        ("ROSE/USDT:USDT", 1739502302929, "short", 20000.0, 0.04499, 0),  # Bybit S = position side: Sell = short
        ("ROSE/USDT:USDT", 1739502302930, "long", 100.0, 0.045, 1),
        (BTC, 1772664343781, "long", 0.21, 72431.4, 0),  # 21 contracts x 0.01 BTC
        (BTC, 1772664343790, "short", 0.03, 72440.0, 1),
    ]
    assert got[2].value == pytest.approx(0.21 * 72431.4, rel=1e-12)


def test_journal_recovery_is_idempotent(tmp_path):
    """Rows journaled by a killed run are merged at the next start, once, however often it happens."""
    store = Store(tmp_path)
    ex = ccxt.pro.binanceusdm()
    _markets(ex, 1.0, {"BTCUSDT": BTC})
    msg = {"e": "forceOrder", "E": 2, "o": {"s": "BTCUSDT", "S": "BUY", "q": "1", "p": "10", "ap": "10", "X": "FILLED",
                                           "l": "1", "z": "1", "T": 1}}
    rec = Recorder(store, [(EX, ex)], poll_timeframe="", log=lambda line: None)
    for row in normalise_message(EX, ex, msg):
        rec.journal.append({"t": "liq", "exchange": EX, **row.to_json()})
    rec.journal.append({"t": "oi", "exchange": EX, "symbol": BTC, "timeframe": "1m", "time_ms": 60_000,
                        "open_interest": 5.0, "open_interest_value": 50.0})
    with open(rec.journal.path, "a") as fh:
        fh.write('{"t": "liq", "torn')  # a write cut by SIGKILL
    assert rec.recover() == 2
    for row in normalise_message(EX, ex, msg):  # the same message again (a replayed journal)
        rec.journal.append({"t": "liq", "exchange": EX, **row.to_json()})
    assert rec.recover() == 1
    f = store.read(DatasetKey(EX, BTC, "liquidations"))
    assert len(f) == 1 and f["side"].iloc[0] == "short" and f["value"].iloc[0] == 10.0
    assert store.read(DatasetKey(EX, BTC, "open_interest", "1m"))["open_interest"].tolist() == [5.0]
    rec.journal.close()


def test_unknown_symbol_stops_with_a_user_error_and_status_is_readable(source, tmp_path, capsys):
    from bot.cli import main

    data, cfg = tmp_path / "d", tmp_path / "c.toml"
    cfg.write_text("")
    with ReplayServer(source.root, start=START, speed=0) as rest, \
            StreamServer.from_stores([source], rest.clock, liquidation_exchanges=["okx"]) as s:
        with pytest.raises(SystemExit) as exc:
            main(["record", "--exchange-url", rest.url, "--ws-url", s.url, "--symbols", "DOGE/USDT:USDT",
                  "--poll-interval", "", "--data-dir", str(data), "--config", str(cfg), "--no-rate-limit"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "BadSymbol" in err and "Traceback" not in err
    assert not RecorderLock.held(data)  # released on the way out
    with pytest.raises(SystemExit) as done:
        main(["record", "--status", "--data-dir", str(data), "--config", str(cfg)])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "recorder not running" in out and "DOGE/USDT:USDT@forceOrder" in out


def test_replay_server_command_serves_streams(source, tmp_path):
    """`cascade replay-server --stream-port 0` starts the stream server on the REST server's clock."""
    import aiohttp

    (tmp_path / "x.toml").write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "bot", "replay-server", "--data-dir", str(source.root), "--port", "0",
                             "--stream-port", "0", "--start", START, "--speed", "60", "--config", str(tmp_path / "x.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        t0 = time.monotonic()
        while not any(line.startswith("streams ") for line in lines):
            assert time.monotonic() - t0 < 20 and proc.poll() is None, "".join(lines) + proc.stderr.read()
            lines.append(proc.stdout.readline())
        url = next(line for line in lines if line.startswith("streams ")).split()[1]

        async def talk() -> dict:
            async with aiohttp.ClientSession() as session, session.ws_connect(url + "/market/ws/1") as ws:
                await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@forceOrder"], "id": 1}))
                ack = json.loads((await ws.receive(timeout=5)).data)
                event = json.loads((await ws.receive(timeout=10)).data)  # OKX's events stand in
                return ack, event

        ack, event = asyncio.run(talk())
        assert ack == {"result": None, "id": 1}
        assert event["e"] == "forceOrder" and event["o"]["s"] == "ETHUSDT"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "stopped" in out


def test_a_failed_merge_keeps_the_rows_for_the_next_flush(tmp_path):
    """The store refuses a write (a corrupt file in the way): rows stay buffered and journaled,
    and land once the file is fixed."""
    store = Store(tmp_path)
    ex = ccxt.pro.binanceusdm()
    _markets(ex, 1.0, {"BTCUSDT": BTC})
    rec = Recorder(store, [(EX, ex)], poll_timeframe="", log=lambda line: None)
    msg = {"e": "forceOrder", "E": 2, "o": {"s": "BTCUSDT", "S": "SELL", "q": "2", "p": "10", "ap": "11",
                                           "X": "FILLED", "l": "2", "z": "2", "T": 1}}
    for row in normalise_message(EX, ex, msg):
        rec._record({"t": "liq", "exchange": EX, **row.to_json()})
    path = store.path(DatasetKey(EX, BTC, "liquidations"))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet")
    with pytest.raises(UserError, match="corrupt"):
        rec.flush()
    assert len(rec.journal.read()) == 1
    path.unlink()
    assert rec.flush() == 1 and rec.journal.read() == []
    f = store.read(DatasetKey(EX, BTC, "liquidations"))
    assert (f["side"].tolist(), f["amount"].tolist(), f["price"].tolist()) == (["long"], [2.0], [11.0])
    rec.journal.close()
