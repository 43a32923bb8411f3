"""``cascade record``'s engine: liquidation streams and polled open interest/funding into the store.

One asyncio loop; per venue one ccxt.pro client:

* **Liquidations** through ``watch_liquidations_for_symbols`` (Binance ``!forceOrder@arr`` when
  no symbols are given, else ``<symbol>@forceOrder``; OKX ``liquidation-orders``) or one
  ``watch_liquidations`` per symbol (Bybit ``allLiquidation.<symbol>``). The raw messages are
  taken from ccxt's ``handle_liquidation`` (see :mod:`bot.record.normalise`), written to the
  journal at once and merged into the store every ``flush_seconds``.
* **Open interest** (``fetch_open_interest``) and **current funding/premium**
  (``fetch_funding_rate``) every ``poll_timeframe``. An open-interest snapshot observed at τ is
  stored at τ rounded *up* to the poll grid, so a bar closing at that label never sees a value
  observed after its close.
* **Gaps.** A stream that errors (disconnect, timeout) is marked down at the moment the error
  surfaces; ccxt redials on the next watch call, which the recorder makes after an exponential
  backoff (1 s doubling to ``max_backoff``). When ccxt reports the socket connected again, the
  interval is appended to ``gaps.jsonl``. A restart adds the gap from the previous run's last
  heartbeat (``status.json``, every ``heartbeat_seconds``) to the new connection. Times are on
  the exchange's clock (local time + the offset measured with ``fetch_time``), which is the
  replay clock against the replay exchange.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ccxt
import pandas as pd

from bot.record.normalise import LiquidationRow, normalise_message
from bot.record.state import (
    Journal,
    append_gap,
    iso,
    read_status,
    state_dir,
    write_json_atomic,
)
from bot.store import DatasetKey, Store
from bot.timeframes import timeframe_ms

PREMIUM_DIR = "premium"
_RETRYABLE = (ccxt.NetworkError, ccxt.ExchangeError, OSError, asyncio.TimeoutError)
# errors no reconnect can fix: stop the recorder and say why
_FATAL = (ccxt.BadSymbol, ccxt.BadRequest, ccxt.NotSupported, ccxt.AuthenticationError, ccxt.ArgumentsRequired)


@dataclass
class _Venue:
    id: str
    exchange: Any
    symbols: tuple[str, ...]
    anchor_local: float = 0.0
    anchor_venue: float = 0.0
    rate: float = 1.0
    connected: bool = False
    down_since: int | None = None
    down_reason: str = ""
    last_message_ms: int | None = None
    last_event_ms: int | None = None
    messages: int = 0
    rows: int = 0
    reconnects: int = 0
    gaps: int = 0
    last_error: str = ""
    polls: dict[str, str] = field(default_factory=dict)

    def now_ms(self) -> int:
        """The venue's clock: the last ``fetch_time`` sample advanced at the measured rate."""
        if not self.anchor_local:
            return int(time.time() * 1000)
        return int(self.anchor_venue + (time.time() * 1000 - self.anchor_local) * self.rate)

    def sample_clock(self, local_ms: float, venue_ms: float) -> None:
        """Anchor the clock on a sample; a replay clock running at another speed is detected from
        two samples (a rate within 5 % of 1 is taken as 1: a real exchange's clock)."""
        if self.anchor_local and local_ms - self.anchor_local > 100:
            r = (venue_ms - self.anchor_venue) / (local_ms - self.anchor_local)
            self.rate = 1.0 if abs(r - 1.0) < 0.05 else max(0.0, r)
        self.anchor_local, self.anchor_venue = local_ms, venue_ms

    @property
    def stream(self) -> str:
        if self.id == "binanceusdm":
            return "!forceOrder@arr" if not self.symbols else " ".join(f"{s}@forceOrder" for s in self.symbols)
        if self.id == "bybit":
            return " ".join(f"allLiquidation.{s}" for s in self.symbols)
        return "liquidation-orders SWAP" + (f" ({', '.join(self.symbols)})" if self.symbols else "")


class Recorder:
    """Record ``venues`` (``[(exchange id, ccxt.pro client)]``) into ``store`` until stopped.

    ``symbols``         unified symbols (empty: every market, where the venue's stream allows it)
    ``poll_timeframe``  period of the open-interest/funding polls (``""`` disables polling)
    ``flush_seconds``   how often journaled rows are merged into the store
    ``log``             one-line progress/diagnostic messages (stderr in the command)
    """

    def __init__(self, store: Store, venues: Sequence[tuple[str, Any]], symbols: Sequence[str] = (),
                 poll_timeframe: str = "1m", flush_seconds: float = 2.0, heartbeat_seconds: float = 0.5,
                 max_backoff: float = 60.0, log: Callable[[str], None] = print) -> None:
        self.store = store
        self.premium = Store(state_dir(store.root) / PREMIUM_DIR)
        self.symbols = tuple(symbols)
        self.venues = [_Venue(v, ex, self.symbols) for v, ex in venues]
        self.poll_timeframe = poll_timeframe
        self.poll_ms = timeframe_ms(poll_timeframe) if poll_timeframe else 0
        self.flush_seconds = flush_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.max_backoff = max_backoff
        self.log = log
        self.journal = Journal(state_dir(store.root) / "journal.jsonl")
        self._buffer: list[dict[str, Any]] = []
        self._started = int(time.time() * 1000)
        self._stopping = False
        self._stop: asyncio.Event | None = None
        self.fatal: BaseException | None = None

    # ------------------------------------------------------------------ journal -> store

    def recover(self) -> int:
        """Merge what a previous run journaled but did not store; the number of rows."""
        pending = self.journal.read()
        if pending:
            self._merge(pending)
            self.log(f"recovered {len(pending)} journaled row(s) from the previous run")
        self.journal.clear()
        return len(pending)

    def _merge(self, records: list[dict[str, Any]]) -> None:
        liq: dict[DatasetKey, list[dict]] = {}
        oi: dict[DatasetKey, list[dict]] = {}
        prem: dict[DatasetKey, list[dict]] = {}
        for r in records:
            if r["t"] == "liq":
                row = LiquidationRow.from_json(r)
                liq.setdefault(DatasetKey(r["exchange"], row.symbol, "liquidations"), []).append(
                    {"time": row.time_ms, "side": row.side, "price": row.price, "amount": row.amount,
                     "value": row.value, "raw": row.raw, "part": row.part})
            elif r["t"] == "oi":
                oi.setdefault(DatasetKey(r["exchange"], r["symbol"], "open_interest", r["timeframe"]), []).append(
                    {"time": r["time_ms"], "open_interest": r["open_interest"],
                     "open_interest_value": r["open_interest_value"]})
            elif r["t"] == "premium":
                prem.setdefault(DatasetKey(r["exchange"], r["symbol"], "funding_rate"), []).append(
                    {"time": r["time_ms"], "funding_rate": r["funding_rate"], "mark_price": r["mark_price"],
                     "index_price": r["index_price"], "next_funding_ms": r["next_funding_ms"]})
        for groups, store in ((liq, self.store), (oi, self.store), (prem, self.premium)):
            for key, rows in groups.items():
                frame = pd.DataFrame(rows)
                frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("time"), unit="ms", utc=True), name="time")
                store.write(key, frame)

    def _record(self, record: dict[str, Any]) -> None:
        self.journal.append(record)
        self._buffer.append(record)

    def flush(self) -> int:
        """Merge the buffered rows into the store, then empty the journal."""
        if not self._buffer:
            return 0
        rows, self._buffer = self._buffer, []
        try:
            self._merge(rows)
        except BaseException:
            self._buffer = rows + self._buffer  # still journaled: retried at the next flush or start
            raise
        self.journal.clear()
        return len(rows)

    # ------------------------------------------------------------------ ccxt hooks

    def _hook(self, venue: _Venue) -> None:
        ex = venue.exchange
        original_handle = ex.handle_liquidation
        original_connected = ex.on_connected

        def handle_liquidation(client: Any, message: dict) -> Any:
            venue.messages += 1
            venue.last_message_ms = venue.now_ms()
            try:
                rows = normalise_message(venue.id, ex, message)
            except Exception as err:  # noqa: BLE001 - a bad message must not stop the recording
                venue.last_error = f"unparsed message ({type(err).__name__}: {err})"
                rows = []
            for row in rows:
                if self.symbols and row.symbol not in self.symbols:
                    continue
                venue.rows += 1
                venue.last_event_ms = row.time_ms
                self._record({"t": "liq", "exchange": venue.id, **row.to_json()})
            return original_handle(client, message)

        def on_connected(client: Any, message: Any = None) -> Any:
            result = original_connected(client, message)
            self._connected(venue)
            return result

        ex.handle_liquidation = handle_liquidation
        ex.on_connected = on_connected

    def _connected(self, venue: _Venue) -> None:
        now = venue.now_ms()
        if venue.down_since is not None:
            gap = append_gap(self.store.root, venue.id, venue.stream, venue.down_since, now, venue.down_reason)
            venue.gaps += 1
            self.log(f"{venue.id}: connected; known gap {gap['start']} -> {gap['end']} ({gap['seconds']:g} s, "
                     f"{gap['reason']})")
        else:
            self.log(f"{venue.id}: connected, recording {venue.stream}")
        venue.connected, venue.down_since = True, None

    def _disconnected(self, venue: _Venue, err: BaseException) -> None:
        venue.last_error = f"{type(err).__name__}: {err}"[:300]
        if venue.connected:
            venue.connected = False
            venue.down_since, venue.down_reason = venue.now_ms(), "disconnect"
            venue.reconnects += 1
            self.log(f"{venue.id}: stream lost at {iso(venue.down_since)} ({venue.last_error}); reconnecting")

    # ------------------------------------------------------------------ tasks

    async def _measure_offset(self, venue: _Venue) -> None:
        if not venue.exchange.has.get("fetchTime"):
            return
        try:
            before = time.time() * 1000
            server = await venue.exchange.fetch_time()
            after = time.time() * 1000
            if server:
                venue.sample_clock((before + after) / 2, float(server))
        except _RETRYABLE as err:
            venue.last_error = f"fetch_time: {type(err).__name__}: {err}"[:300]

    def _watch_calls(self, venue: _Venue) -> list[Callable[[], Any]]:
        ex = venue.exchange
        if venue.id == "bybit":
            return [lambda s=s: ex.watch_liquidations(s) for s in venue.symbols]
        return [lambda: ex.watch_liquidations_for_symbols(list(venue.symbols))]

    async def _watch(self, venue: _Venue, call: Callable[[], Any]) -> None:
        delay = 1.0
        while not self._stopping:
            try:
                await call()
                delay = 1.0
            except asyncio.CancelledError:
                raise
            except _FATAL as err:
                self.fatal = err
                self.log(f"{venue.id}: {type(err).__name__}: {err}; stopping")
                if self._stop is not None:
                    self._stop.set()
                return
            except _RETRYABLE as err:
                self._disconnected(venue, err)
                await asyncio.sleep(delay)
                delay = min(self.max_backoff, delay * 2)
                await self._measure_offset(venue)

    async def _poll(self, venue: _Venue) -> None:
        ex = venue.exchange
        if not self.poll_ms or not venue.symbols:
            if self.poll_ms:
                self.log(f"{venue.id}: no --symbols, so open interest and funding are not polled")
            return
        while not self._stopping:
            await self._measure_offset(venue)
            for symbol in venue.symbols:
                await self._poll_symbol(venue, ex, symbol)
            await asyncio.sleep(self.poll_ms / 1000)

    async def _poll_symbol(self, venue: _Venue, ex: Any, symbol: str) -> None:
        premium: dict[str, Any] = {}
        if ex.has.get("fetchFundingRate"):
            try:
                fr = await ex.fetch_funding_rate(symbol)
                t = fr.get("timestamp") or venue.now_ms()
                premium = fr
                self._record({"t": "premium", "exchange": venue.id, "symbol": symbol, "time_ms": int(t),
                              "funding_rate": _float(fr.get("fundingRate")), "mark_price": _float(fr.get("markPrice")),
                              "index_price": _float(fr.get("indexPrice")),
                              "next_funding_ms": _float(fr.get("fundingTimestamp"))})
                venue.polls[f"funding {symbol}"] = iso(int(t)) or ""
            except _RETRYABLE as err:
                venue.last_error = f"fetch_funding_rate {symbol}: {type(err).__name__}: {err}"[:300]
        if ex.has.get("fetchOpenInterest"):
            try:
                oi = await ex.fetch_open_interest(symbol)
                t = int(oi.get("timestamp") or venue.now_ms())
                label = -(-t // self.poll_ms) * self.poll_ms  # round up: never earlier than observed
                amount = _float(oi.get("openInterestAmount"))
                value = _float(oi.get("openInterestValue"))
                mark = _float(premium.get("markPrice"))
                if not math.isfinite(value) and math.isfinite(amount) and math.isfinite(mark):
                    value = amount * mark
                self._record({"t": "oi", "exchange": venue.id, "symbol": symbol, "timeframe": self.poll_timeframe,
                              "time_ms": label, "open_interest": amount, "open_interest_value": value})
                venue.polls[f"open_interest {symbol}"] = iso(t) or ""
            except _RETRYABLE as err:
                venue.last_error = f"fetch_open_interest {symbol}: {type(err).__name__}: {err}"[:300]

    def status(self, stopped: bool = False) -> dict[str, Any]:
        return {
            "pid": os.getpid(), "started": iso(self._started), "heartbeat": iso(int(time.time() * 1000)),
            "stopped": stopped, "store": str(self.store.root), "poll_timeframe": self.poll_timeframe,
            "venues": {v.id: {
                "stream": v.stream, "symbols": list(v.symbols), "connected": v.connected,
                "alive_ms": v.now_ms(), "down_since_ms": v.down_since, "down_reason": v.down_reason,
                "last_message": iso(v.last_message_ms), "last_event": iso(v.last_event_ms),
                "messages": v.messages, "rows": v.rows, "reconnects": v.reconnects, "gaps": v.gaps,
                "last_error": v.last_error, "polls": dict(v.polls), "clock_rate": v.rate,
            } for v in self.venues},
        }

    def _write_status(self, stopped: bool = False) -> None:
        write_json_atomic(state_dir(self.store.root) / "status.json", self.status(stopped))

    async def _housekeeping(self) -> None:
        last_flush = last_sample = time.monotonic()
        while not self._stopping:
            await asyncio.sleep(self.heartbeat_seconds)
            if time.monotonic() - last_flush >= self.flush_seconds:
                try:
                    self.flush()
                except Exception as err:  # noqa: BLE001 - keep recording; the rows stay journaled
                    self.log(f"merging into the store failed ({type(err).__name__}: {err}); retrying")
                last_flush = time.monotonic()
            # a replay clock (rate != 1) can change speed or jump: follow it at every heartbeat;
            # a real exchange's clock is re-anchored twice a minute
            if any(v.rate != 1.0 for v in self.venues) or time.monotonic() - last_sample >= 30:
                for venue in self.venues:
                    await self._measure_offset(venue)
                last_sample = time.monotonic()
            self._write_status()

    def _resume_gaps(self) -> None:
        """A previous run's downtime becomes a pending gap, closed when the stream connects."""
        previous = read_status(self.store.root) or {}
        for venue in self.venues:
            prev = (previous.get("venues") or {}).get(venue.id)
            if not prev:
                continue
            if prev.get("down_since_ms") is not None:  # it was already disconnected when it stopped
                venue.down_since, venue.down_reason = int(prev["down_since_ms"]), prev.get("down_reason") or "disconnect"
            elif prev.get("alive_ms") is not None:
                venue.down_since, venue.down_reason = int(prev["alive_ms"]), "recorder down"

    async def run(self, stop: asyncio.Event, duration: float | None = None) -> None:
        """Record until ``stop`` is set (or ``duration`` seconds pass), then flush and close."""
        self._stop = stop
        self.recover()
        self._resume_gaps()
        for venue in self.venues:
            self._hook(venue)
        tasks: list[asyncio.Task] = []
        try:
            for venue in self.venues:
                await venue.exchange.load_markets()
                await self._measure_offset(venue)
                await asyncio.sleep(0.25)  # a second sample gives the clock's rate (replay speed)
                await self._measure_offset(venue)
                for call in self._watch_calls(venue):
                    tasks.append(asyncio.ensure_future(self._watch(venue, call)))
                tasks.append(asyncio.ensure_future(self._poll(venue)))
            tasks.append(asyncio.ensure_future(self._housekeeping()))
            self._write_status()
            waiter = asyncio.ensure_future(stop.wait())
            await asyncio.wait([waiter], timeout=duration)
            waiter.cancel()
        finally:
            self._stopping = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.flush()
            self._write_status(stopped=True)
            for venue in self.venues:
                try:
                    await venue.exchange.close()
                except Exception:  # noqa: BLE001 - closing a broken client must not hide the flush
                    pass
            self.journal.close()
        if self.fatal is not None:
            raise self.fatal


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan

