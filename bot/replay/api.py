"""Binance USDⓈ-M REST: errors, routing, and the public market-data endpoints (docs/binance-usdm.md §4–5).

Served::

    GET /fapi/v1/ping, /fapi/v1/time, /fapi/v1/exchangeInfo
    GET /fapi/v1/klines, /fapi/v1/markPriceKlines, /fapi/v1/fundingRate
    GET /fapi/v1/premiumIndex, /fapi/v1/openInterest, /futures/data/openInterestHist
    GET /fapi/v1/ticker/24hr, /fapi/v1/ticker/bookTicker, /fapi/v1/depth
    GET /sapi/v1/capital/config/getall, /sapi/v1/margin/allPairs       (both ``[]``)

The signed account endpoints register into the same routing table (:mod:`bot.replay.account`).

* **Nothing from after now.** A bar ``[t, t+tf)`` is served once it has closed (``t+tf <= now``).
  Binance also serves the still-open candle; building it honestly would need the trades inside
  it, so we serve closed bars only. Funding rows appear at their settlement time, open-interest
  snapshots at their timestamp. exchangeInfo lists the stored symbols regardless of the clock.
* **Params.** ``startTime``/``endTime`` are inclusive on the open (event) time. With ``startTime``
  the oldest ``limit`` rows from it are returned, otherwise the latest ``limit`` rows up to
  ``endTime`` (or now). ``limit`` default/max: klines 500/1500, fundingRate 100/1000,
  openInterestHist 30/500; larger values are clamped, values below 1 get -1130.
* **Fields the data may not hold.** Kline quote volume, trade count, taker-buy volume and
  taker-buy quote volume are served from the stored columns ``quote_volume``, ``count``,
  ``taker_buy_volume``, ``taker_buy_quote_volume`` when present. When a column is not stored the
  field is ``"0"`` (count ``0``): the same "not applicable" value Binance itself sends for the
  fields its mark-price klines do not have. Nothing is estimated (no volume/2, no typical-price
  quote volume): a zero taker-buy volume means "unknown", never "all sells", and strategies
  that use taker flow must read it from the store, where a missing column is visible.
* **Prices now.** ``ticker/24hr`` is computed from the closed finest bars of the last 24 h;
  ``bookTicker`` and ``depth`` quote one level each side around the last close, one tick apart,
  with the last closed bar's volume as size (the store holds no order book; the depth is a
  placeholder that lets a runner read a price, never a liquidity estimate). ``premiumIndex``
  reports the last *settled* funding rate (the real one is a prediction) and the last closed
  mark close as mark, index and settle price.
"""

from __future__ import annotations

import math
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from bot.replay.clock import ReplayClock
from bot.replay.market import MarketData, MarketSpec, _decimals, _Series

KLINE_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")
OI_PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
_DAY_MS = 86_400_000
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
    raw: str = ""  # the query string followed by the body, as Binance signs them (docs/binance-usdm.md §2.4)


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection instead of replying (a reply lost after acceptance)


@dataclass(frozen=True)
class Route:
    """A served endpoint. ``security`` follows Binance: NONE/MARKET_DATA are public,
    USER_DATA/TRADE need ``X-MBX-APIKEY`` and a valid signature (:mod:`bot.replay.auth`)."""

    handler: Callable[[Request], Any]
    weight: int | Callable[[dict[str, str]], int] = 1
    security: str = "NONE"


def _num(x: float) -> str:
    """Shortest decimal string that round-trips the float (Binance sends numbers as strings)."""
    s = repr(float(x))
    if "e" in s and math.isfinite(x):
        s = np.format_float_positional(x, trim="-")
    return s


def missing_param(name: str) -> ApiError:
    """Binance's answer to a mandatory parameter that is absent or empty (-1102)."""
    return ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _int_param(params: dict[str, str], name: str, required: bool = False) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise missing_param(name)
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


def _depth_weight(params: dict[str, str]) -> int:
    try:
        limit = int(params.get("limit", 500))
    except ValueError:
        return 2
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


class BinanceUsdmApi:
    """The request handlers and their routing table, over :class:`MarketData` and a clock."""

    def __init__(self, data: MarketData, clock: ReplayClock,
                 authenticate: Callable[[Request], None] | None = None) -> None:
        self.data = data
        self.clock = clock
        self.authenticate = authenticate
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
            ("/fapi/v1/ticker/24hr", self.ticker_24hr, lambda p: 1 if p.get("symbol") else 40),
            ("/fapi/v1/ticker/bookTicker", self.book_ticker, lambda p: 2 if p.get("symbol") else 5),
            ("/fapi/v1/depth", self.depth, _depth_weight),
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

    def handle(self, method: str, path: str, params: dict[str, str], headers: dict[str, str],
               raw: str = "") -> Response:
        route = self.routes.get((method, path))
        try:
            if route is None:
                raise ApiError(404, -5000, f"Path {path}, Method {method} is invalid")
            req = Request(method, path, params, headers, self.clock.now_ms(), raw)
            if route.security in ("USER_DATA", "TRADE"):
                if self.authenticate is None:
                    raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
                self.authenticate(req)
            body = route.handler(req)
        except ApiError as err:
            return Response(err.status, {"code": err.code, "msg": err.msg}, err.headers)
        except Exception as err:  # a defect of the replay exchange: say so, as Binance's -1000 does
            traceback.print_exc(file=sys.stderr)
            return Response(500, {"code": -1000, "msg": f"An unknown error occurred while processing the request "
                                                        f"(replay exchange: {type(err).__name__}: {err})."})
        if isinstance(body, Response):
            return body
        return Response(200, body)

    # -- helpers

    def _market(self, params: dict[str, str], name: str = "symbol") -> MarketSpec:
        market_id = params.get(name)
        if not market_id:
            raise missing_param(name)
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
            raise missing_param("interval")
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
        n = sl.stop - sl.start

        def stored(name: str) -> list[str]:  # module docstring: "0" when the data does not hold it
            return [_num(x) if math.isfinite(x) else "0" for x in c[name][sl].tolist()] if name in c else ["0"] * n

        quote, tbv, tbq = stored("quote_volume"), stored("taker_buy_volume"), stored("taker_buy_quote_volume")
        counts = ([int(x) if math.isfinite(x) else 0 for x in c["count"][sl].tolist()] if "count" in c else [0] * n)
        return [[t, _num(o[i]), _num(h[i]), _num(lo[i]), _num(cl[i]), _num(v[i]), closes_at - 1, quote[i], counts[i],
                 tbv[i], tbq[i], "0"]
                for i, (t, closes_at) in enumerate(zip(s.times[sl].tolist(), s.available[sl].tolist(), strict=True))]

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
            raise missing_param("period")
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

    def ticker_24hr(self, req: Request) -> Any:
        if req.params.get("symbol"):
            return self._ticker(self._market(req.params), req.now_ms)
        return [t for m in sorted(self.data.markets.values(), key=lambda m: m.id)
                if (t := self._ticker(m, req.now_ms, strict=False)) is not None]

    def _last_bars(self, m: MarketSpec, now: int, strict: bool = True) -> tuple[_Series, slice] | None:
        """The finest closed bars of the 24 h before ``now``."""
        s = self.data.finest(m.symbol, "ohlcv")
        i = s.last_before(now) if s is not None else None
        if i is None:
            if strict:
                raise ApiError(400, -1000, f"No candles stored for {m.id} before this replay time.")
            return None
        lo = int(np.searchsorted(s.available, now - _DAY_MS, side="right"))
        return s, slice(min(lo, i), i + 1)

    def _ticker(self, m: MarketSpec, now: int, strict: bool = True) -> dict | None:
        found = self._last_bars(m, now, strict)
        if found is None:
            return None
        s, sl = found
        c = s.columns
        o, last = float(c["open"][sl.start]), float(c["close"][sl.stop - 1])
        volume = float(np.sum(c["volume"][sl]))
        typical = (c["high"][sl] + c["low"][sl] + c["close"][sl]) / 3
        quote = float(np.sum(c["quote_volume"][sl])) if "quote_volume" in c else float(np.sum(c["volume"][sl] * typical))
        vwap = quote / volume if volume > 0 else last
        counts = int(np.sum(c["count"][sl])) if "count" in c else 0
        return {"symbol": m.id, "priceChange": _num(last - o), "priceChangePercent": f"{(last / o - 1) * 100:.3f}",
                "weightedAvgPrice": _num(vwap), "lastPrice": _num(last), "lastQty": "0", "openPrice": _num(o),
                "highPrice": _num(float(np.max(c["high"][sl]))), "lowPrice": _num(float(np.min(c["low"][sl]))),
                "volume": _num(volume), "quoteVolume": _num(quote), "openTime": int(s.times[sl.start]),
                "closeTime": int(s.available[sl.stop - 1]) - 1, "firstId": 0, "lastId": 0, "count": counts}

    def _quote(self, m: MarketSpec, now: int) -> tuple[float, float, float]:
        """(bid, ask, size) one tick around the last close (module docstring)."""
        found = self._last_bars(m, now)
        assert found is not None
        s, sl = found
        last = float(s.columns["close"][sl.stop - 1])
        tick = Decimal((_KNOWN_FILTERS.get(m.id) or self._inferred_filters(m))["tick"])
        size = float(s.columns["volume"][sl.stop - 1]) if "volume" in s.columns else 0.0
        bid = (Decimal(repr(last)) / tick).to_integral_value(rounding="ROUND_FLOOR") * tick
        return float(bid), float(bid + tick), size

    def book_ticker(self, req: Request) -> Any:
        markets = ([self._market(req.params)] if req.params.get("symbol")
                   else sorted(self.data.markets.values(), key=lambda m: m.id))
        out = []
        for m in markets:
            bid, ask, size = self._quote(m, req.now_ms)
            out.append({"symbol": m.id, "bidPrice": _num(bid), "bidQty": _num(size), "askPrice": _num(ask),
                        "askQty": _num(size), "time": req.now_ms, "lastUpdateId": req.now_ms})
        return out[0] if req.params.get("symbol") else out

    def depth(self, req: Request) -> dict:
        m = self._market(req.params)
        limit = _int_param(req.params, "limit")
        if limit is not None and limit not in (5, 10, 20, 50, 100, 500, 1000):
            raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        bid, ask, size = self._quote(m, req.now_ms)
        return {"lastUpdateId": req.now_ms, "E": req.now_ms, "T": req.now_ms,
                "bids": [[_num(bid), _num(size)]], "asks": [[_num(ask), _num(size)]]}

    def open_interest(self, req: Request) -> dict:
        market = self._market(req.params)
        tfs = self.data.timeframes(market.symbol, "open_interest")
        s = self.data.series(market.symbol, "open_interest", tfs[0]) if tfs else None
        i = s.last_before(req.now_ms) if s is not None else None
        if i is None:
            raise ApiError(400, -1000, f"No open interest stored for {market.id} at this replay time.")
        return {"symbol": market.id, "openInterest": _num(s.columns["open_interest"][i]), "time": req.now_ms}

