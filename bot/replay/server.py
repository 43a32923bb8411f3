"""The replay exchange: the store served over Binance USDⓈ-M's REST API, on loopback.

ccxt's real ``binanceusdm`` client talks to it after :func:`bot.exchange.make_exchange` has
pointed its URLs here (docs/binance-usdm.md §1.2). Served (public market data, §4–5)::

    GET /fapi/v1/ping, /fapi/v1/time, /fapi/v1/exchangeInfo
    GET /fapi/v1/klines, /fapi/v1/markPriceKlines, /fapi/v1/fundingRate
    GET /fapi/v1/premiumIndex, /fapi/v1/openInterest, /futures/data/openInterestHist
    GET /sapi/v1/capital/config/getall, /sapi/v1/margin/allPairs       (both ``[]``)

Decisions, each tested in ``tests/bot/test_replay.py``:

* **Clock.** ``now = start + elapsed wall time × speed``; ``/fapi/v1/time`` returns it. The
  default start is the first stored bar.
* **Nothing from after now.** A bar ``[t, t+tf)`` is served once it has closed (``t+tf <= now``).
  Binance also serves the still-open candle; building it honestly would need the trades inside
  it, so we serve closed bars only. Funding rows appear at their settlement time, open-interest
  snapshots at their timestamp. exchangeInfo lists the stored symbols regardless of the clock.
* **Params.** ``startTime``/``endTime`` are inclusive on the open (event) time. With ``startTime``
  the oldest ``limit`` rows from it are returned, otherwise the latest ``limit`` rows up to
  ``endTime`` (or now). ``limit`` default/max: klines 500/1500, fundingRate 100/1000,
  openInterestHist 30/500; larger values are clamped, values below 1 get -1130. Unknown extra
  params are ignored. Errors are Binance bodies ``{"code", "msg"}`` with Binance's status
  (400 for -1100/-1102/-1120/-1121/-1023/-1130, 404 + -5000 for an unknown path).
* **Intervals.** A kline interval that is not stored is aggregated from the coarsest stored
  timeframe dividing it (1h from 5m, 1d from 1h ...); open-interest periods are sampled from a
  finer stored period at aligned snapshots.
* **Fields we cannot know.** Kline quote volume and taker-buy quote volume use the bar's
  typical price; taker-buy volume is the stored ``taker_buy_volume`` or half the volume; trade
  counts are 0. ``premiumIndex`` reports the last *settled* funding rate (the real one is a
  prediction) and the last closed mark close as mark, index and settle price.
* **Faults** (:class:`FaultConfig`): on a random share of requests, 429 + ``Retry-After``,
  a gateway 502/503/504 without a JSON body (ccxt: ``ExchangeNotAvailable``/``RequestTimeout``),
  a connection closed without a response, or a slow response. Every response carries
  ``X-MBX-USED-WEIGHT-1M``; ``weight_limit`` optionally enforces Binance's 429 -1003.

Routing is a table of :class:`Route` keyed by ``(method, path)``; signed trading endpoints
register into it later (``security`` says which need an API key and signature).
"""

from __future__ import annotations

import json
import math
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd

from bot.errors import UserError
from bot.store import DatasetKey, Store
from bot.timeframes import parse_utc, timeframe_ms

EXCHANGE_ID = "binanceusdm"
FAULT_KINDS: tuple[str, ...] = ("429", "5xx", "drop", "slow")
KLINE_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")
OI_PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
_DAY_MS = 86_400_000
_WEEK_OFFSET_MS = 4 * _DAY_MS  # Binance weeks open on Monday; 1970-01-01 was a Thursday
_DEFAULT_FUNDING_MS = 8 * 3_600_000
_PERPETUAL_DELIVERY = 4133404800000  # Binance's delivery date for perpetuals

# Real exchangeInfo values for the bundled symbols; other symbols get filters inferred from data.
_KNOWN_FILTERS: dict[str, dict[str, str]] = {
    "BTCUSDT": {"tick": "0.10", "min_price": "556.80", "max_price": "4529764", "step": "0.001", "min_qty": "0.001",
                "max_qty": "1000", "market_max_qty": "120", "notional": "100"},
    "ETHUSDT": {"tick": "0.01", "min_price": "39.86", "max_price": "306177", "step": "0.001", "min_qty": "0.001",
                "max_qty": "10000", "market_max_qty": "2000", "notional": "20"},
}
_ORDER_TYPES = ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"]


# --------------------------------------------------------------------------------------- clock


class ReplayClock:
    """Replay time in epoch milliseconds: ``start + elapsed wall time × speed`` (speed 0 freezes it)."""

    def __init__(self, start_ms: int, speed: float = 1.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        if speed < 0 or not math.isfinite(speed):
            raise UserError(f"replay speed must be >= 0, got {speed}")
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._anchor_ms = int(start_ms)
        self._anchor_wall = monotonic()
        self.speed = float(speed)

    def now_ms(self) -> int:
        with self._lock:
            return self._anchor_ms + int((self._monotonic() - self._anchor_wall) * 1000 * self.speed)

    def set(self, ms: int) -> None:
        """Jump to ``ms`` (tests, or a controller driving the replay); the clock keeps running from there."""
        with self._lock:
            self._anchor_ms, self._anchor_wall = int(ms), self._monotonic()


# --------------------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class FaultConfig:
    """Fault injection: on a ``rate`` share of requests, one of ``kinds`` chosen at random.

    ``429``  status 429, ``Retry-After: retry_after``, body -1003 (ccxt: DDoSProtection)
    ``5xx``  502/503/504 with an HTML body, as a gateway sends (ExchangeNotAvailable/RequestTimeout)
    ``drop`` the connection is closed without any response (NetworkError)
    ``slow`` the normal response, after ``slow_seconds``
    """

    rate: float = 0.0
    seed: int | None = None
    kinds: tuple[str, ...] = FAULT_KINDS
    slow_seconds: float = 2.0
    retry_after: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise UserError(f"fault rate must be within [0, 1], got {self.rate}")
        unknown = [k for k in self.kinds if k not in FAULT_KINDS]
        if unknown or not self.kinds:
            raise UserError(f"unknown fault kind(s) {unknown or '(none)'}; use some of {', '.join(FAULT_KINDS)}")
        if self.slow_seconds < 0 or self.retry_after < 0:
            raise UserError("slow_seconds and retry_after must be >= 0")


class _FaultPicker:
    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()

    def pick(self) -> tuple[str | None, int]:
        """(fault kind or None, gateway status for 5xx)."""
        if self.config.rate <= 0:
            return None, 0
        with self._lock:
            if self._rng.random() >= self.config.rate:
                return None, 0
            return self._rng.choice(self.config.kinds), self._rng.choice((502, 503, 504))


# --------------------------------------------------------------------------------------- data


@dataclass
class _Series:
    """Rows of one served series: open/event times, availability times, float columns."""

    times: np.ndarray        # int64 ms, increasing
    available: np.ndarray    # int64 ms: bar close (open + tf) or the event time itself
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.times)

    def window(self, now_ms: int, start: int | None, end: int | None, limit: int) -> slice:
        """Binance row selection (see module docstring) over the rows available at ``now_ms``."""
        hi = int(np.searchsorted(self.available, now_ms, side="right"))
        if end is not None:
            hi = min(hi, int(np.searchsorted(self.times, end, side="right")))
        if start is not None:
            lo = int(np.searchsorted(self.times, start, side="left"))
            hi = min(hi, lo + limit)
        else:
            lo = max(0, hi - limit)
        return slice(lo, max(lo, hi))

    def last_before(self, now_ms: int) -> int | None:
        """Index of the last row available at ``now_ms``."""
        i = int(np.searchsorted(self.available, now_ms, side="right")) - 1
        return i if i >= 0 else None


def _interval_ms(interval: str) -> int | None:
    """Fixed length of a Binance interval; ``None`` for calendar months."""
    return None if interval == "1M" else timeframe_ms(interval)


def _buckets(times: np.ndarray, interval: str) -> tuple[np.ndarray, np.ndarray]:
    """(bucket open, bucket close) per time for Binance's interval alignment."""
    if interval == "1M":
        idx = pd.to_datetime(times, unit="ms", utc=True)
        month = idx.tz_localize(None).to_period("M")
        opens = month.start_time.as_unit("ms").asi8
        closes = (month + 1).start_time.as_unit("ms").asi8
        return opens, closes
    step = timeframe_ms(interval)
    offset = _WEEK_OFFSET_MS if interval.endswith("w") else 0
    opens = (times - offset) // step * step + offset
    return opens, opens + step


def _aggregate(series: _Series, interval: str) -> _Series:
    """OHLC(V) bars of a finer series grouped into ``interval`` bars."""
    opens, closes = _buckets(series.times, interval)
    starts = np.flatnonzero(np.r_[True, opens[1:] != opens[:-1]])
    ends = np.r_[starts[1:], len(opens)] - 1
    cols: dict[str, np.ndarray] = {}
    for name, values in series.columns.items():
        if name == "open":
            cols[name] = values[starts]
        elif name == "close":
            cols[name] = values[ends]
        elif name == "high":
            cols[name] = np.maximum.reduceat(values, starts)
        elif name == "low":
            cols[name] = np.minimum.reduceat(values, starts)
        else:  # volumes
            cols[name] = np.add.reduceat(values, starts)
    return _Series(opens[starts], closes[starts], cols)


def _decimals(values: np.ndarray, limit: int = 8) -> int:
    """Fewest decimals that represent every value (to infer tick and step sizes)."""
    sample = values[np.isfinite(values)][-500:]
    for d in range(limit + 1):
        scaled = sample * 10**d
        if np.allclose(scaled, np.round(scaled), rtol=0, atol=1e-6):
            return d
    return limit


@dataclass
class MarketSpec:
    """One served USDⓈ-M perpetual."""

    symbol: str      # unified, BTC/USDT:USDT
    id: str          # BTCUSDT
    base: str
    quote: str
    settle: str


def _market_spec(symbol: str) -> MarketSpec | None:
    """Linear perpetuals only: ``BASE/QUOTE:SETTLE`` without an expiry suffix."""
    m = re.fullmatch(r"([A-Z0-9]+)/([A-Z0-9]+):([A-Z0-9]+)", symbol)
    if not m:
        return None
    base, quote, settle = m.groups()
    return MarketSpec(symbol, f"{base}{quote}", base, quote, settle)


class MarketData:
    """Series of one exchange read from one or more stores (the first holding a dataset wins)."""

    def __init__(self, stores: Sequence[Store], exchange: str = EXCHANGE_ID,
                 open_interest_source: str | None = "hyperliquid") -> None:
        self.stores = list(stores)
        self.exchange = exchange
        # served key -> (store, stored key); they differ for borrowed open interest (below)
        self._keys: dict[DatasetKey, tuple[Store, DatasetKey]] = {}
        borrowed: dict[DatasetKey, tuple[Store, DatasetKey]] = {}
        for store in self.stores:
            if store.root.is_dir():
                for key in store.keys():
                    if key.exchange == exchange:
                        self._keys.setdefault(key, (store, key))
                    elif key.exchange == open_interest_source and key.kind == "open_interest":
                        borrowed.setdefault(key, (store, key))
        self.markets: dict[str, MarketSpec] = {}
        for key in self._keys:
            spec = _market_spec(key.symbol)
            if spec is not None:
                self.markets[spec.id] = spec
        # Like bot.data.load_frame: a symbol without its own open interest serves the
        # open_interest_source's series for the same base currency (Binance keeps only 30 days).
        for spec in self.markets.values():
            if any(k.symbol == spec.symbol and k.kind == "open_interest" for k in self._keys):
                continue
            for key, found in borrowed.items():
                if key.symbol.split("/")[0] == spec.base:
                    self._keys.setdefault(DatasetKey(exchange, spec.symbol, "open_interest", key.timeframe), found)
        self._cache: dict[tuple[str, str, str], _Series | None] = {}
        self._lock = threading.Lock()

    def timeframes(self, symbol: str, kind: str) -> list[str]:
        return sorted((k.timeframe for k in self._keys if k.symbol == symbol and k.kind == kind),
                      key=timeframe_ms)

    def first_time_ms(self) -> int | None:
        firsts = []
        for key in self._keys:
            if key.kind in ("ohlcv", "mark"):
                s = self.series(key.symbol, key.kind, key.timeframe)
                if s is not None and len(s):
                    firsts.append(int(s.times[0]))
        return min(firsts) if firsts else None

    def _load(self, key: DatasetKey) -> _Series | None:
        found = self._keys.get(key)
        frame = found[0].read(found[1]) if found is not None else None
        if frame is None:
            return None
        times = frame.index.as_unit("ms").asi8.astype(np.int64)
        step = timeframe_ms(key.timeframe) if key.kind in ("ohlcv", "mark") else 0
        cols = {c: frame[c].to_numpy(dtype=float) for c in frame.columns if c != "side"}
        return _Series(times, times + step, cols)

    def series(self, symbol: str, kind: str, timeframe: str = "") -> _Series | None:
        """The series for (symbol, kind, interval): stored, or derived from a finer stored one."""
        cache_key = (symbol, kind, timeframe)
        with self._lock:
            if cache_key in self._cache:
                return self._cache[cache_key]
        result = self._build(symbol, kind, timeframe)
        with self._lock:
            self._cache[cache_key] = result
        return result

    def _build(self, symbol: str, kind: str, timeframe: str) -> _Series | None:
        key = DatasetKey(self.exchange, symbol, kind, timeframe if kind != "funding_rate" else "")
        if key in self._keys:
            return self._load(key)
        if kind == "funding_rate":
            return None
        target = _interval_ms(timeframe) or _DAY_MS
        finer = [tf for tf in self.timeframes(symbol, kind) if target % timeframe_ms(tf) == 0 and tf != timeframe]
        if not finer:
            return None
        source = self._load(DatasetKey(self.exchange, symbol, kind, finer[-1]))
        if source is None or not len(source):
            return source
        if kind == "open_interest":  # snapshots at the coarser period's boundaries
            mask = source.times % target == 0
            return _Series(source.times[mask], source.available[mask],
                           {c: v[mask] for c, v in source.columns.items()})
        return _aggregate(source, timeframe)

    def finest(self, symbol: str, kind: str) -> _Series | None:
        tfs = self.timeframes(symbol, kind) if kind != "funding_rate" else [""]
        return self.series(symbol, kind, tfs[0]) if tfs else None


# --------------------------------------------------------------------------------------- API


class ApiError(Exception):
    """A Binance error reply: HTTP ``status`` with body ``{"code": code, "msg": msg}``."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    now_ms: int


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """A served endpoint. ``security`` follows Binance: NONE/MARKET_DATA are public,
    USER_DATA/TRADE need ``X-MBX-APIKEY`` and a signature (not served yet)."""

    handler: Callable[[Request], Any]
    weight: int | Callable[[dict[str, str]], int] = 1
    security: str = "NONE"


def _num(x: float) -> str:
    """Shortest decimal string that round-trips the float (Binance sends numbers as strings)."""
    s = repr(float(x))
    if "e" in s and math.isfinite(x):
        s = np.format_float_positional(x, trim="-")
    return s


def _int_param(params: dict[str, str], name: str, required: bool = False) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        return None
    if not re.fullmatch(r"\d{1,20}", raw):
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(raw)


def _limit(params: dict[str, str], default: int, maximum: int) -> int:
    value = _int_param(params, "limit")
    if value is None:
        return default
    if value < 1:
        raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
    return min(value, maximum)


def _range(params: dict[str, str]) -> tuple[int | None, int | None]:
    start, end = _int_param(params, "startTime"), _int_param(params, "endTime")
    if start is not None and end is not None and start > end:
        raise ApiError(400, -1023, "Start time is greater than end time.")
    return start, end


def _kline_weight(params: dict[str, str]) -> int:
    try:
        limit = int(params.get("limit", 500))
    except ValueError:
        return 1
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


class BinanceUsdmApi:
    """The request handlers and their routing table, over :class:`MarketData` and a clock."""

    def __init__(self, data: MarketData, clock: ReplayClock) -> None:
        self.data = data
        self.clock = clock
        self.routes: dict[tuple[str, str], Route] = {}
        for path, handler, weight in (
            ("/fapi/v1/ping", lambda r: {}, 1),
            ("/fapi/v1/time", self.time, 1),
            ("/fapi/v1/exchangeInfo", self.exchange_info, 1),
            ("/fapi/v1/klines", self.klines, _kline_weight),
            ("/fapi/v1/markPriceKlines", self.mark_price_klines, _kline_weight),
            ("/fapi/v1/fundingRate", self.funding_rate, 1),
            ("/fapi/v1/premiumIndex", self.premium_index, lambda p: 1 if p.get("symbol") else 10),
            ("/fapi/v1/openInterest", self.open_interest, 1),
            ("/futures/data/openInterestHist", self.open_interest_hist, 1),
            ("/sapi/v1/capital/config/getall", lambda r: [], 10),
            ("/sapi/v1/margin/allPairs", lambda r: [], 1),
        ):
            self.register("GET", path, Route(handler, weight))

    def register(self, method: str, path: str, route: Route) -> None:
        self.routes[(method.upper(), path)] = route

    def weight(self, method: str, path: str, params: dict[str, str]) -> int:
        route = self.routes.get((method, path))
        if route is None:
            return 1
        return route.weight(params) if callable(route.weight) else route.weight

    def handle(self, method: str, path: str, params: dict[str, str], headers: dict[str, str]) -> Response:
        route = self.routes.get((method, path))
        try:
            if route is None:
                raise ApiError(404, -5000, f"Path {path}, Method {method} is invalid")
            body = route.handler(Request(method, path, params, headers, self.clock.now_ms()))
        except ApiError as err:
            return Response(err.status, {"code": err.code, "msg": err.msg}, err.headers)
        return Response(200, body)

    # -- helpers

    def _market(self, params: dict[str, str], name: str = "symbol") -> MarketSpec:
        market_id = params.get(name)
        if not market_id:
            raise ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        spec = self.data.markets.get(market_id)
        if spec is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return spec

    # -- handlers

    def time(self, req: Request) -> dict:
        return {"serverTime": req.now_ms}

    def exchange_info(self, req: Request) -> dict:
        return {
            "timezone": "UTC", "serverTime": req.now_ms, "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": a, "marginAvailable": True, "autoAssetExchange": "-10000"}
                       for a in sorted({m.settle for m in self.data.markets.values()})],
            "symbols": [self._symbol_info(m) for m in sorted(self.data.markets.values(), key=lambda m: m.id)],
        }

    def _symbol_info(self, m: MarketSpec) -> dict:
        f = _KNOWN_FILTERS.get(m.id) or self._inferred_filters(m)
        price_decimals = len(f["tick"].split(".")[1]) if "." in f["tick"] else 0
        qty_decimals = len(f["step"].split(".")[1]) if "." in f["step"] else 0
        bars = self.data.finest(m.symbol, "ohlcv") or self.data.finest(m.symbol, "mark")
        onboard = int(bars.times[0]) if bars is not None and len(bars) else 1569398400000
        return {
            "symbol": m.id, "pair": m.id, "contractType": "PERPETUAL", "deliveryDate": _PERPETUAL_DELIVERY,
            "onboardDate": onboard, "status": "TRADING", "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000", "baseAsset": m.base, "quoteAsset": m.quote, "marginAsset": m.settle,
            "pricePrecision": price_decimals, "quantityPrecision": qty_decimals, "baseAssetPrecision": 8,
            "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [], "triggerProtect": "0.0500",
            "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": f["min_price"], "maxPrice": f["max_price"],
                 "tickSize": f["tick"]},
                {"filterType": "LOT_SIZE", "minQty": f["min_qty"], "maxQty": f["max_qty"], "stepSize": f["step"]},
                {"filterType": "MARKET_LOT_SIZE", "minQty": f["min_qty"], "maxQty": f["market_max_qty"],
                 "stepSize": f["step"]},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                {"filterType": "MIN_NOTIONAL", "notional": f["notional"]},
                {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                 "multiplierDecimal": "4"},
            ],
            "orderTypes": list(_ORDER_TYPES),
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }

    def _inferred_filters(self, m: MarketSpec) -> dict[str, str]:
        bars = self.data.finest(m.symbol, "ohlcv")
        if bars is None or not len(bars):
            price_d, qty_d = 2, 3
        else:
            price_d = _decimals(bars.columns["close"])
            qty_d = _decimals(bars.columns["volume"]) if "volume" in bars.columns else 3
        tick = f"{10.0 ** -price_d:.{price_d}f}" if price_d else "1"
        step = f"{10.0 ** -qty_d:.{qty_d}f}" if qty_d else "1"
        return {"tick": tick, "min_price": tick, "max_price": "1000000", "step": step, "min_qty": step,
                "max_qty": "1000000", "market_max_qty": "100000", "notional": "5"}

    def _kline_window(self, req: Request, kind: str) -> tuple[_Series, slice] | None:
        """The requested series of ``kind`` and the slice of it to serve (None: nothing stored)."""
        interval = req.params.get("interval")
        if not interval:
            raise ApiError(400, -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        if interval not in KLINE_INTERVALS:
            raise ApiError(400, -1120, "Invalid interval.")
        market = self._market(req.params)
        s = self.data.series(market.symbol, kind, interval)
        start, end = _range(req.params)
        limit = _limit(req.params, 500, 1500)
        return None if s is None else (s, s.window(req.now_ms, start, end, limit))

    def klines(self, req: Request) -> list:
        found = self._kline_window(req, "ohlcv")
        if found is None:
            return []
        s, sl = found
        c = s.columns
        o, h, lo, cl, v = (c[n][sl].tolist() for n in ("open", "high", "low", "close", "volume"))
        tbv = c["taker_buy_volume"][sl].tolist() if "taker_buy_volume" in c else [x / 2 for x in v]
        rows = []
        for i, (t, closes_at) in enumerate(zip(s.times[sl].tolist(), s.available[sl].tolist(), strict=True)):
            typical = (h[i] + lo[i] + cl[i]) / 3
            rows.append([t, _num(o[i]), _num(h[i]), _num(lo[i]), _num(cl[i]), _num(v[i]), closes_at - 1,
                         _num(v[i] * typical), 0, _num(tbv[i]), _num(tbv[i] * typical), "0"])
        return rows

    def mark_price_klines(self, req: Request) -> list:
        found = self._kline_window(req, "mark")
        if found is None:
            return []
        s, sl = found
        c = s.columns
        o, h, lo, cl = (c[n][sl].tolist() for n in ("open", "high", "low", "close"))
        basic = np.maximum(1, (s.available[sl] - s.times[sl]) // 60_000).tolist()
        return [[t, _num(o[i]), _num(h[i]), _num(lo[i]), _num(cl[i]), "0", closes_at - 1, "0", int(basic[i]),
                 "0", "0", "0"]
                for i, (t, closes_at) in enumerate(zip(s.times[sl].tolist(), s.available[sl].tolist(), strict=True))]

    def funding_rate(self, req: Request) -> list:
        start, end = _range(req.params)
        limit = _limit(req.params, 100, 1000)
        if req.params.get("symbol"):
            markets = [self._market(req.params)]
        else:
            markets = sorted(self.data.markets.values(), key=lambda m: m.id)
        rows: list[dict] = []
        for m in markets:
            s = self.data.series(m.symbol, "funding_rate")
            if s is None:
                continue
            sl = s.window(req.now_ms, start, end, limit)
            marks = s.columns.get("mark_price")
            for i in range(sl.start, sl.stop):
                mark = marks[i] if marks is not None else math.nan
                rows.append({"symbol": m.id, "fundingTime": int(s.times[i]),
                             "fundingRate": _num(s.columns["funding_rate"][i]),
                             "markPrice": _num(mark) if math.isfinite(mark) else ""})
        if len(markets) > 1:  # all symbols: one time-ordered list, Binance style
            rows.sort(key=lambda r: r["fundingTime"])
            rows = rows[:limit] if start is not None else rows[-limit:]
        return rows

    def open_interest_hist(self, req: Request) -> list:
        period = req.params.get("period")
        if not period:
            raise ApiError(400, -1102, "Mandatory parameter 'period' was not sent, was empty/null, or malformed.")
        if period not in OI_PERIODS:
            raise ApiError(400, -1130, "Data sent for parameter 'period' is not valid.")
        market = self._market(req.params)
        start, end = _range(req.params)
        limit = _limit(req.params, 30, 500)
        s = self.data.series(market.symbol, "open_interest", period)
        if s is None:
            return []
        sl = s.window(req.now_ms, start, end, limit)
        amount = s.columns["open_interest"]
        value = s.columns.get("open_interest_value")
        out = []
        for i in range(sl.start, sl.stop):
            t = int(s.times[i])
            v = value[i] if value is not None else math.nan
            if not math.isfinite(v):
                price = self._price_at(market.symbol, t)
                v = amount[i] * price if price is not None else 0.0
            out.append({"symbol": market.id, "sumOpenInterest": _num(amount[i]), "sumOpenInterestValue": _num(v),
                        "timestamp": t})
        return out

    def _price_at(self, symbol: str, now_ms: int, kind: str = "ohlcv") -> float | None:
        """Close of the last bar closed at ``now_ms`` (finest stored timeframe)."""
        s = self.data.finest(symbol, kind)
        i = s.last_before(now_ms) if s is not None else None
        return None if i is None else float(s.columns["close"][i])

    def premium_index(self, req: Request) -> Any:
        if req.params.get("symbol"):
            return self._premium(self._market(req.params), req.now_ms)
        return [self._premium(m, req.now_ms) for m in sorted(self.data.markets.values(), key=lambda m: m.id)]

    def _premium(self, m: MarketSpec, now: int) -> dict:
        mark = self._price_at(m.symbol, now, "mark")
        if mark is None:
            mark = self._price_at(m.symbol, now)
        funding = self.data.series(m.symbol, "funding_rate")
        i = funding.last_before(now) if funding is not None else None
        rate = float(funding.columns["funding_rate"][i]) if i is not None else 0.0
        interval = _DEFAULT_FUNDING_MS
        if funding is not None and i is not None and i >= 1:
            recent = np.diff(funding.times[max(0, i - 6): i + 1])
            interval = int(np.median(recent)) if len(recent) else interval
            interval = max(3_600_000, round(interval / 3_600_000) * 3_600_000)
        last = int(funding.times[i]) // 1000 * 1000 if i is not None else now // interval * interval
        next_time = last + ((now - last) // interval + 1) * interval
        price = _num(mark) if mark is not None else "0"
        return {"symbol": m.id, "markPrice": price, "indexPrice": price, "estimatedSettlePrice": price,
                "lastFundingRate": _num(rate), "interestRate": "0.00010000", "nextFundingTime": next_time,
                "time": now}

    def open_interest(self, req: Request) -> dict:
        market = self._market(req.params)
        tfs = self.data.timeframes(market.symbol, "open_interest")
        s = self.data.series(market.symbol, "open_interest", tfs[0]) if tfs else None
        i = s.last_before(req.now_ms) if s is not None else None
        if i is None:
            raise ApiError(400, -1000, f"No open interest stored for {market.id} at this replay time.")
        return {"symbol": market.id, "openInterest": _num(s.columns["open_interest"][i]), "time": req.now_ms}


# --------------------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid the 40 ms delayed-ACK stall
    server: _HTTPServer

    def version_string(self) -> str:
        return "cascade-replay"

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        replay = self.server.replay
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        if raw_body and "x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
            params.update(parse_qsl(raw_body.decode("utf-8", "replace"), keep_blank_values=True))
        method, path = self.command, parts.path.rstrip("/") or "/"
        fault, gateway_status = replay.faults.pick()
        if fault == "drop":  # close the socket without a byte of response
            self.close_connection = True
            return
        if fault == "slow":
            time.sleep(replay.faults.config.slow_seconds)
        used = replay.count_weight(replay.api.weight(method, path, params))
        if fault == "429" or (replay.weight_limit is not None and used > replay.weight_limit):
            retry_after = replay.faults.config.retry_after if fault == "429" else 60 - int(time.time()) % 60
            response = Response(429, {"code": -1003, "msg": "Too many requests; current limit of IP(127.0.0.1) is "
                                                            f"{replay.weight_limit or 2400} requests per minute."},
                                {"Retry-After": str(retry_after)})
        elif fault == "5xx":
            reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}[gateway_status]
            self._send(gateway_status, f"<html><body><h1>{gateway_status} {reason}</h1></body></html>".encode(),
                       {"Content-Type": "text/html"}, used)
            return
        else:
            response = replay.api.handle(method, path, params, dict(self.headers.items()))
        self._send(response.status, json.dumps(response.body, separators=(",", ":")).encode(),
                   {"Content-Type": "application/json", **response.headers}, used)

    def _send(self, status: int, body: bytes, headers: dict[str, str], used: int) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("X-MBX-USED-WEIGHT-1M", str(used))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.replay.log_requests:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    replay: ReplayServer

    def __init__(self, address: tuple[str, int], replay: ReplayServer) -> None:
        self.replay = replay
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Unblock keep-alive handler threads so stop() returns promptly."""
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ReplayServer:
    """The replay exchange over the stores in ``data_dir`` (a path, a :class:`Store`, or a list of
    them; the first holding a dataset wins).

    ``start``  replay clock start (UTC string, Timestamp or epoch ms; default: first stored bar)
    ``speed``  replay clock speed (× real time; 0 freezes the clock)
    ``faults`` :class:`FaultConfig` for tests of retry logic
    ``weight_limit`` answer 429 -1003 once a minute's request weight exceeds this (off by default)

    ``with ReplayServer(d, start="2025-02-01") as srv: ccxt_client_for(srv.url) ...``
    """

    def __init__(
        self,
        data_dir: Path | str | Store | Sequence[Path | str | Store],
        host: str = "127.0.0.1",
        port: int = 0,
        start: str | pd.Timestamp | int | None = None,
        speed: float = 1.0,
        faults: FaultConfig | None = None,
        exchange: str = EXCHANGE_ID,
        weight_limit: int | None = None,
        log_requests: bool = False,
    ) -> None:
        if host not in _LOOPBACK and not host.startswith("127."):
            raise UserError(f"the replay exchange listens on loopback only; got host '{host}', use 127.0.0.1")
        dirs = [data_dir] if isinstance(data_dir, (str, Path, Store)) else list(data_dir)
        stores = [d if isinstance(d, Store) else Store(d) for d in dirs]
        self.data = MarketData(stores, exchange)
        if not self.data.markets:
            roots = ", ".join(str(s.root) for s in stores)
            raise UserError(f"no {exchange} perpetual data under {roots}; run cascade download or import-data first")
        self.clock = ReplayClock(self._start_ms(start), speed)
        self.api = BinanceUsdmApi(self.data, self.clock)
        self.faults = _FaultPicker(faults or FaultConfig())
        self.weight_limit = weight_limit
        self.log_requests = log_requests
        self._host, self._port = host, port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._weight_lock = threading.Lock()
        self._weight_minute, self._weight_used = -1, 0

    def _start_ms(self, start: str | pd.Timestamp | int | None) -> int:
        if start is None or start == "":
            first = self.data.first_time_ms()
            if first is None:
                raise UserError("no stored candles to start the replay clock from; pass --start")
            return first
        if isinstance(start, (int, np.integer)):
            return int(start)
        ts = parse_utc(start, "replay start") if isinstance(start, str) else pd.Timestamp(start)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
        return int(ts.value // 1_000_000)

    def count_weight(self, weight: int) -> int:
        """Add ``weight`` to the current wall-clock minute; the minute's total."""
        minute = int(time.time() // 60)
        with self._weight_lock:
            if minute != self._weight_minute:
                self._weight_minute, self._weight_used = minute, 0
            self._weight_used += weight
            return self._weight_used

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("replay server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ReplayServer:
        """Listen and serve in a background thread."""
        if self._httpd is not None:
            return self
        try:
            self._httpd = _HTTPServer((self._host, self._port), self)
        except OSError as err:
            raise UserError(f"cannot listen on {self._host}:{self._port} ({err.strerror}); "
                            "pick another --port (0 = any free port)") from None
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="replay-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd, self._thread = None, None

    def serve_forever(self) -> None:
        """Serve in the foreground until KeyboardInterrupt (then stop cleanly and re-raise)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
