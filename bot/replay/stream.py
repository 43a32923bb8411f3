"""Binance USDⓈ-M market websocket streams on the replay clock (``forceOrder``, ``kline``).

A separate component from the REST replay server: it takes a clock (anything with
``now_ms()``, e.g. :class:`bot.replay.server.ReplayClock`) and the stored events, and listens
on its own loopback port. ccxt.pro's ``binanceusdm`` reaches it with
``urls['api']['ws']['linear'] = stream.url + '/ws'``; ccxt rewrites that to
``/market/ws/<n>`` for kline and forceOrder (docs/binance-usdm.md §9.1), and every path of
the form ``/ws``, ``/ws/<n>``, ``/{market|public}/ws[/<n>]`` is accepted.

Protocol (§9.2–§9.6): ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` frames are
answered ``{"result": ..., "id": ...}``; an unknown stream gets the error frame
``{"error": {"code": 2, ...}}``. Pings are answered (aiohttp ``autoping``).

What is served, never ahead of the clock:

* ``<symbol>@forceOrder`` and ``!forceOrder@arr``: one ``forceOrder`` event per stored
  liquidation, pushed once the clock has passed it. With ``snapshot_ms`` (default 1000, as
  Binance does) only the *latest* liquidation of each symbol in each ``snapshot_ms`` window is
  pushed, at the window's end (the server cannot know it is the latest before then); the other
  events of the window are never sent — exactly the under-count a real recorder sees. The
  all-market stream pushes individual objects, not arrays (ccxt ignores arrays, §9.5). A stored
  row that carries the raw Binance message (column ``raw``, from ``cascade record``) is served
  verbatim; other rows are rendered with ``S = SELL`` for a liquidated long, ``q = l = z =
  amount`` and ``p = ap = price``.
* ``<symbol>@kline_<interval>``: closed bars only (``x: true``), pushed when the bar closes;
  the last closed bar is pushed on subscribe. Like the REST replay, the still-open candle is
  not served (building it honestly needs the trades inside it).

Events appear from the moment of subscription: nothing before it is replayed, so a client that
was away misses what happened meanwhile, as on the real exchange. Every pushed frame is
appended to :attr:`StreamServer.served` (tests compare it with what a client stored).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from bot.errors import UserError
from bot.store import Store
from bot.timeframes import timeframe_ms

_PATH = re.compile(r"^/(?:(?:market|public)/)?ws(?:/\d+)?/?$")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Clock(Protocol):
    """The replay clock's interface: epoch milliseconds."""

    def now_ms(self) -> int: ...


def market_id(symbol: str) -> str:
    """``BTC/USDT:USDT`` -> ``BTCUSDT`` (Binance USDⓈ-M id of a linear perpetual)."""
    base, rest = symbol.split("/", 1)
    return base + rest.split(":", 1)[0]


def _num(x: float) -> str:
    s = repr(float(x))
    if "e" in s and math.isfinite(x):
        s = np.format_float_positional(x, trim="-")
    return s


def force_order_event(market: str, row: Mapping[str, Any], time_ms: int, event_ms: int) -> dict:
    """The Binance ``forceOrder`` payload for one stored liquidation row."""
    raw = row.get("raw")
    if isinstance(raw, str) and raw:
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = None
        if isinstance(msg, dict) and msg.get("e") == "forceOrder" and isinstance(msg.get("o"), dict):
            return msg
    qty, price = _num(row["amount"]), _num(row["price"])
    return {"e": "forceOrder", "E": int(event_ms),
            "o": {"s": market, "S": "SELL" if row["side"] == "long" else "BUY", "o": "LIMIT", "f": "IOC",
                  "q": qty, "p": price, "ap": price, "X": "FILLED", "l": qty, "z": qty, "T": int(time_ms)}}


@dataclass
class _EventSeries:
    available: np.ndarray  # int64 ms, increasing: when the frame may be pushed
    payloads: list[dict]

    def between(self, after: int, upto: int) -> range:
        lo = int(np.searchsorted(self.available, after, side="right"))
        hi = int(np.searchsorted(self.available, upto, side="right"))
        return range(lo, hi)


def _liquidation_series(market: str, frame: pd.DataFrame, snapshot_ms: int) -> _EventSeries:
    times = frame.index.as_unit("ms").asi8.astype(np.int64)
    order = np.argsort(times, kind="stable")
    times = times[order]
    rows = frame.iloc[order].to_dict("records")
    if snapshot_ms > 0 and len(times):
        window = times // snapshot_ms
        last = np.r_[window[1:] != window[:-1], True]  # the latest event of each window
        keep = np.flatnonzero(last)
        available = (window[keep] + 1) * snapshot_ms
        payloads = [force_order_event(market, rows[i], int(times[i]), int(available[j])) for j, i in enumerate(keep)]
        return _EventSeries(available.astype(np.int64), payloads)
    return _EventSeries(times, [force_order_event(market, r, int(t), int(t)) for r, t in zip(rows, times, strict=True)])


def _kline_series(market: str, interval: str, frame: pd.DataFrame) -> _EventSeries:
    step = timeframe_ms(interval)
    opens = frame.index.as_unit("ms").asi8.astype(np.int64)
    closes = opens + step
    payloads = []
    for t, c, r in zip(opens.tolist(), closes.tolist(), frame.to_dict("records"), strict=True):
        vol = float(r.get("volume", 0.0))
        # fields the data does not hold are "0", never estimated (as the REST klines serve them)
        tbv = r.get("taker_buy_volume")
        tbv = float(tbv) if tbv is not None and tbv == tbv else 0.0
        payloads.append({"e": "kline", "E": c, "s": market, "k": {
            "t": t, "T": c - 1, "s": market, "i": interval, "f": 0, "L": 0, "o": _num(r["open"]), "c": _num(r["close"]),
            "h": _num(r["high"]), "l": _num(r["low"]), "v": _num(vol), "n": 0, "x": True, "q": "0",
            "V": _num(tbv), "Q": "0", "B": "0"}})
    return _EventSeries(closes, payloads)


@dataclass
class _Connection:
    id: int
    path: str
    ws: Any
    cursors: dict[str, int] = field(default_factory=dict)  # stream -> last availability time pushed


class StreamServer:
    """Binance USDⓈ-M market streams over ``liquidations`` and ``candles`` on ``clock``.

    ``liquidations``  market id (``BTCUSDT``) -> liquidation frame (store columns, ``time`` index)
    ``candles``       (market id, interval) -> ohlcv frame (bar open ``time`` index)
    ``snapshot_ms``   Binance's one-liquidation-per-symbol-per-window throttle (0 = push all)
    ``tick_seconds``  how often each connection checks the clock for due events

    ``with StreamServer(clock, liqs) as s: ex.urls['api']['ws']['linear'] = s.url + '/ws'``
    """

    def __init__(self, clock: Clock, liquidations: Mapping[str, pd.DataFrame],
                 candles: Mapping[tuple[str, str], pd.DataFrame] | None = None, host: str = "127.0.0.1",
                 port: int = 0, snapshot_ms: int = 1000, tick_seconds: float = 0.05) -> None:
        if host not in _LOOPBACK and not host.startswith("127."):
            raise UserError(f"the replay stream server listens on loopback only; got host '{host}', use 127.0.0.1")
        self.clock = clock
        self.snapshot_ms = int(snapshot_ms)
        self.tick_seconds = float(tick_seconds)
        self._liq = {m.upper(): _liquidation_series(m.upper(), f, self.snapshot_ms)
                     for m, f in liquidations.items() if f is not None and len(f)}
        self._klines = {(m.upper(), i): _kline_series(m.upper(), i, f) for (m, i), f in (candles or {}).items()
                        if f is not None and len(f)}
        everything = [(int(t), p) for s in self._liq.values() for t, p in zip(s.available, s.payloads, strict=True)]
        everything.sort(key=lambda x: x[0])
        self._all = _EventSeries(np.array([t for t, _ in everything], dtype=np.int64), [p for _, p in everything])
        self._host, self._port = host, port
        self.served: list[dict] = []
        self._served_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._conns: dict[int, _Connection] = {}
        self._next_id = 0
        self._bound_port: int | None = None

    @classmethod
    def from_stores(cls, stores: Sequence[Store], clock: Clock, exchange: str = "binanceusdm",
                    liquidation_exchanges: Sequence[str] | None = None, **kwargs: Any) -> StreamServer:
        """Serve the stores' ``exchange`` candles and liquidations (first store holding a dataset wins).

        ``liquidation_exchanges`` also serves events recorded on other venues (e.g. ``okx``) under
        the Binance market of the same base/quote, for replays of venues Binance lacks.
        """
        venues = [exchange, *(liquidation_exchanges or ())]
        liqs: dict[str, pd.DataFrame] = {}
        candles: dict[tuple[str, str], pd.DataFrame] = {}
        for store in stores:
            if not store.root.is_dir():
                continue
            for key in store.keys():
                if not re.fullmatch(r"[A-Z0-9]+/[A-Z0-9]+:[A-Z0-9]+", key.symbol):
                    continue
                mid = market_id(key.symbol)
                if key.kind == "liquidations" and key.exchange in venues:
                    liqs.setdefault(mid, store.read(key))
                elif key.kind == "ohlcv" and key.exchange == exchange:
                    candles.setdefault((mid, key.timeframe), store.read(key))
        return cls(clock, liqs, candles, **kwargs)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """``ws://host:port``; ccxt's base is ``url + '/ws'``."""
        if self._bound_port is None:
            raise RuntimeError("stream server not started")
        return f"ws://{self._host}:{self._bound_port}"

    def start(self) -> StreamServer:
        """Listen and serve in a background thread (its own asyncio loop)."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
            except BaseException as err:  # noqa: BLE001 - reported to start()
                failure.append(err)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=run, name="replay-stream", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            self._thread.join(2)
            self._thread = None
            err = failure[0]
            raise UserError(f"cannot listen on {self._host}:{self._port} ({err}); pick another port") from None
        return self

    async def _open(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._bound_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _close(self) -> None:
        for conn in list(self._conns.values()):
            await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread, self._loop, self._bound_port = None, None, None

    def __enter__(self) -> StreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drop_connections(self) -> int:
        """Close every client socket (as a network failure would); the number closed."""
        if self._loop is None:
            return 0

        async def drop() -> int:
            conns = list(self._conns.values())
            for conn in conns:
                await conn.ws.close(code=1006)
            return len(conns)

        return asyncio.run_coroutine_threadsafe(drop(), self._loop).result(10)

    @property
    def connections(self) -> int:
        return len(self._conns)

    def served_events(self, event: str = "forceOrder") -> list[dict]:
        """Payloads of every pushed frame of ``event`` type, in push order."""
        with self._served_lock:
            return [s["payload"] for s in self.served if s["payload"].get("e") == event]

    # ------------------------------------------------------------------ protocol

    async def _handle(self, request: Any) -> Any:
        from aiohttp import WSMsgType, web

        if not _PATH.match(request.path):
            return web.Response(status=404, text="not a market stream path")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._next_id += 1
        conn = _Connection(self._next_id, request.path, ws)
        self._conns[conn.id] = conn
        pusher = asyncio.ensure_future(self._push_loop(conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(conn, msg.data)
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            pusher.cancel()
            self._conns.pop(conn.id, None)
        return ws

    def _series(self, stream: str) -> _EventSeries | None:
        if stream == "!forceOrder@arr":
            return self._all
        m = re.fullmatch(r"([a-z0-9]+)@(forceOrder|kline_(\w+))", stream)
        if not m:
            return None
        market = m.group(1).upper()
        if m.group(2) == "forceOrder":
            return self._liq.get(market, _EventSeries(np.zeros(0, dtype=np.int64), []))
        return self._klines.get((market, m.group(3)))

    async def _on_text(self, conn: _Connection, text: str) -> None:
        try:
            req = json.loads(text)
        except ValueError:
            await conn.ws.send_str(json.dumps({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}))
            return
        method, params, rid = req.get("method"), req.get("params") or [], req.get("id")
        if method == "LIST_SUBSCRIPTIONS":
            await conn.ws.send_str(json.dumps({"result": sorted(conn.cursors), "id": rid}))
            return
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            await conn.ws.send_str(json.dumps({"error": {"code": 2, "msg": f"Invalid request: unknown method {method}"},
                                               "id": rid}))
            return
        if method == "UNSUBSCRIBE":
            for stream in params:
                conn.cursors.pop(stream, None)
            await conn.ws.send_str(json.dumps({"result": None, "id": rid}))
            return
        bad = [s for s in params if not isinstance(s, str) or self._series(s) is None]
        if bad:
            await conn.ws.send_str(json.dumps({"error": {"code": 2, "msg": "Invalid request: invalid stream"},
                                               "id": rid}))
            return
        now = self.clock.now_ms()
        await conn.ws.send_str(json.dumps({"result": None, "id": rid}))
        for stream in params:
            series = self._series(stream)
            assert series is not None
            if "@kline_" in stream:  # the last closed bar at once, as a fresh subscriber would see
                i = int(np.searchsorted(series.available, now, side="right")) - 1
                if i >= 0:
                    await self._send(conn, stream, series.payloads[i])
            conn.cursors[stream] = now

    async def _send(self, conn: _Connection, stream: str, payload: dict) -> None:
        await conn.ws.send_str(json.dumps(payload, separators=(",", ":")))
        with self._served_lock:
            self.served.append({"conn": conn.id, "stream": stream, "payload": payload})

    async def _push_loop(self, conn: _Connection) -> None:
        while not conn.ws.closed:
            now = self.clock.now_ms()
            for stream, cursor in list(conn.cursors.items()):
                series = self._series(stream)
                if series is None or now <= cursor:
                    continue
                for i in series.between(cursor, now):
                    if conn.ws.closed or stream not in conn.cursors:
                        return
                    await self._send(conn, stream, series.payloads[i])
                if stream in conn.cursors:
                    conn.cursors[stream] = now
            await asyncio.sleep(self.tick_seconds)


def stream_server_for(stores: Sequence[Store], clock: Clock, exchange: str = "binanceusdm",
                      **kwargs: Any) -> StreamServer:
    """:meth:`StreamServer.from_stores` for ``cascade replay-server --stream-port``.

    When no liquidations of ``exchange`` itself are stored (the bundled sample holds OKX and
    Hyperliquid events only), the other venues' events stand in, under the Binance market of the
    same base/quote, so the replay still has liquidations to stream.
    """
    if "liquidation_exchanges" not in kwargs:
        venues = {k.exchange for st in stores if st.root.is_dir() for k in st.keys() if k.kind == "liquidations"}
        if exchange not in venues:
            kwargs["liquidation_exchanges"] = sorted(venues)
    return StreamServer.from_stores(stores, clock, exchange, **kwargs)


__all__ = ["StreamServer", "force_order_event", "market_id", "stream_server_for"]
