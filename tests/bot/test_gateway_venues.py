"""Bybit and OKX through the same gateway code: ccxt builds the real requests, no network.

The exchange's ``fetch`` (ccxt's single HTTP entry point) is replaced by a recorder that keeps
each request and answers with a response in the venue's documented shape, so what is checked is
ccxt's own request building and parsing as the gateway drives it.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

import ccxt
import pytest

from bot.exchange import make_exchange
from bot.gateway import Gateway

BTC = "BTC/USDT:USDT"
LIMITS = {"amount": {"min": 0.001, "max": 100.0}, "price": {"min": 0.1, "max": 1e6}, "cost": {"min": 5.0, "max": None},
          "leverage": {"min": 1, "max": 100}}


def market(exchange_id: str) -> dict:
    common = dict(symbol=BTC, base="BTC", quote="USDT", settle="USDT", baseId="BTC", quoteId="USDT", settleId="USDT",
                  type="swap", spot=False, margin=False, swap=True, future=False, option=False, contract=True,
                  linear=True, inverse=False, active=True, taker=0.0005, maker=0.0002)
    if exchange_id == "bybit":
        return dict(common, id="BTCUSDT", contractSize=1.0, precision={"amount": 0.001, "price": 0.1}, limits=LIMITS,
                    info={"category": "linear"})
    # OKX trades contracts of 0.01 BTC: amounts are contract counts
    return dict(common, id="BTC-USDT-SWAP", contractSize=0.01, precision={"amount": 1.0, "price": 0.1},
                limits=dict(LIMITS, amount={"min": 1.0, "max": None}), info={"instType": "SWAP", "ctVal": "0.01"})


class Recorder:
    """Stands in for ``exchange.fetch``: records (method, path, query, body), answers by path."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, str, dict, object]] = []
        self.fail_next: list[BaseException] = []

    def __call__(self, url: str, method: str = "GET", headers: dict | None = None, body: str | None = None):
        parts = urlsplit(url)
        parsed = json.loads(body) if body else None
        self.requests.append((method, parts.path, dict(parse_qsl(parts.query)), parsed))
        if self.fail_next:
            raise self.fail_next.pop(0)
        answer = self.answers[parts.path]
        return answer(parsed) if callable(answer) else answer

    def paths(self) -> list[str]:
        return [p for _, p, _, _ in self.requests]


def venue(exchange_id: str, answers: dict[str, object]) -> tuple[Gateway, Recorder]:
    # a unified (UTA) Bybit account, stated up front: otherwise ccxt asks /v5/user/query-api first
    options = {"enableUnifiedMargin": False, "enableUnifiedAccount": True} if exchange_id == "bybit" else {}
    ex = make_exchange(exchange_id, rate_limit=False, apiKey="k", secret="s", password="p", options=options)
    ex.set_markets([market(exchange_id)])
    rec = Recorder(answers)
    ex.fetch = rec
    return Gateway(ex, "run-1", backoff=0.0, sleep=lambda s: None), rec


BYBIT_OK = {"retCode": 0, "retMsg": "OK", "retExtInfo": {}, "time": 1741568400000}


def bybit_answers(cid_holder: dict) -> dict[str, object]:
    return {
        "/v5/market/kline": dict(BYBIT_OK, result={"category": "linear", "symbol": "BTCUSDT", "list": [
            ["1741568400000", "81242", "81500", "81000", "81400.5", "120.5", "9800000"],
            ["1741564800000", "80690.7", "81468.9", "80001", "81242", "19691.299", "1590000000"]]}),
        "/v5/market/tickers": dict(BYBIT_OK, result={"category": "linear", "list": [{
            "symbol": "BTCUSDT", "lastPrice": "81242", "bid1Price": "81241.9", "ask1Price": "81242",
            "highPrice24h": "82000", "lowPrice24h": "79000", "volume24h": "100", "turnover24h": "8000000",
            "prevPrice24h": "80000", "price24hPcnt": "0.0155", "markPrice": "81240", "indexPrice": "81230"}]}),
        "/v5/order/create": lambda body: dict(BYBIT_OK, result={"orderId": f"id-{body['orderLinkId']}",
                                                                "orderLinkId": body["orderLinkId"]}),
        "/v5/order/realtime": lambda body: dict(BYBIT_OK, result={"category": "linear", "nextPageCursor": "",
                                                                  "list": cid_holder.get("open", [])}),
        "/v5/order/history": dict(BYBIT_OK, result={"category": "linear", "nextPageCursor": "", "list": []}),
        "/v5/order/cancel": dict(BYBIT_OK, result={"orderId": "id-1", "orderLinkId": ""}),
    }


def test_bybit_market_data_and_order_routing():
    gw, rec = venue("bybit", bybit_answers({}))
    bars = gw.ohlcv(BTC, "1h", limit=2)
    assert [b[0] for b in bars] == [1741564800000, 1741568400000] and bars[0][1:] == [80690.7, 81468.9, 80001.0,
                                                                                        81242.0, 19691.299]
    assert rec.requests[-1][1:3] == ("/v5/market/kline", {"symbol": "BTCUSDT", "limit": "2", "interval": "60",
                                                          "category": "linear"})
    assert gw.ticker(BTC)["last"] == 81242.0

    entry = gw.market_order(BTC, "buy", 0.0509, bar=1, intent="entry", price_hint=81_000)
    method, path, _, body = rec.requests[-1]
    assert (method, path) == ("POST", "/v5/order/create")
    assert body == {"symbol": "BTCUSDT", "side": "Buy", "orderType": "Market", "orderLinkId": gw.client_id(1, "entry"),
                    "category": "linear", "qty": "0.05"}
    assert entry["clientOrderId"] == gw.client_id(1, "entry")

    gw.conditional_order(BTC, "stop", "sell", 0.05, 78_000.04, bar=1)
    body = rec.requests[-1][3]
    assert body["triggerPrice"] == "78000" and body["triggerDirection"] == 2 and body["reduceOnly"] is True
    assert body["triggerBy"] == "MarkPrice" and body["orderLinkId"] == gw.client_id(1, "stop")
    gw.conditional_order(BTC, "take_profit", "sell", 0.05, 90_000, bar=1)
    assert rec.requests[-1][3]["triggerDirection"] == 1  # a take profit of a long triggers on the way up

    assert gw.open_conditional_orders(BTC) == []
    assert rec.requests[-1][1:3] == ("/v5/order/realtime", {"symbol": "BTCUSDT", "category": "linear",
                                                            "orderFilter": "StopOrder"})
    gw.cancel_conditional(BTC, {"id": "id-1"}, "test")
    assert rec.requests[-1][1] == "/v5/order/cancel"


def test_bybit_lost_reply_is_looked_up_not_resubmitted():
    holder: dict = {}
    gw, rec = venue("bybit", bybit_answers(holder))
    cid = gw.client_id(7, "entry")
    holder["open"] = [{"orderId": "id-x", "orderLinkId": cid, "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market",
                       "orderStatus": "Filled", "qty": "0.05", "cumExecQty": "0.05", "avgPrice": "81000",
                       "createdTime": "1741568400000", "updatedTime": "1741568400000", "reduceOnly": False}]
    rec.fail_next.append(ccxt.RequestTimeout("read timed out"))
    order = gw.market_order(BTC, "buy", 0.05, bar=7, intent="entry", price_hint=81_000)
    assert order["id"] == "id-x" and rec.paths().count("/v5/order/create") == 1
    lookup = [q for _, p, q, _ in rec.requests if p == "/v5/order/realtime"][0]
    assert lookup["orderLinkId"] == cid
    assert [e.kind for e in gw.events] == ["lost_reply", "recovered"]


def okx_answers() -> dict[str, object]:
    ok = {"code": "0", "msg": ""}
    return {
        "/api/v5/market/candles": dict(ok, data=[
            ["1741568400000", "81242", "81500", "81000", "81400.5", "12050", "120.5", "9800000", "0"],
            ["1741564800000", "80690.7", "81468.9", "80001", "81242", "1969129", "19691.29", "1590000000", "1"]]),
        "/api/v5/market/ticker": dict(ok, data=[{"instType": "SWAP", "instId": "BTC-USDT-SWAP", "last": "81242",
                                                 "askPx": "81242.1", "bidPx": "81242", "open24h": "80000",
                                                 "high24h": "82000", "low24h": "79000", "volCcy24h": "100",
                                                 "vol24h": "10000", "ts": "1741568400000"}]),
        "/api/v5/trade/batch-orders": lambda body: dict(ok, data=[{"clOrdId": body[0]["clOrdId"], "ordId": "3122",
                                                                   "tag": "", "sCode": "0", "sMsg": ""}]),
        "/api/v5/trade/order-algo": lambda body: dict(ok, data=[{"algoId": "9001", "algoClOrdId": body["algoClOrdId"],
                                                                 "clOrdId": "", "sCode": "0", "sMsg": ""}]),
        "/api/v5/trade/orders-algo-pending": dict(ok, data=[]),
        "/api/v5/trade/cancel-algos": dict(ok, data=[{"algoId": "9001", "sCode": "0", "sMsg": ""}]),
    }


def test_okx_market_data_and_order_routing():
    gw, rec = venue("okx", okx_answers())
    bars = gw.ohlcv(BTC, "1h", limit=2)
    assert [b[0] for b in bars] == [1741564800000, 1741568400000] and bars[0][4] == 81242.0
    assert rec.requests[-1][1:3] == ("/api/v5/market/candles", {"instId": "BTC-USDT-SWAP", "bar": "1H", "limit": "2"})
    assert gw.ticker(BTC)["last"] == 81242.0

    gw.market_order(BTC, "buy", 5, bar=1, intent="entry", price_hint=81_000)  # 5 contracts = 0.05 BTC
    method, path, _, body = rec.requests[-1]
    assert (method, path) == ("POST", "/api/v5/trade/batch-orders")
    assert body[0] == {"instId": "BTC-USDT-SWAP", "side": "buy", "ordType": "market", "sz": "5", "tdMode": "isolated",
                       "clOrdId": gw.client_id(1, "entry")}

    stop = gw.conditional_order(BTC, "stop", "sell", 5, 78_000, bar=1)
    body = rec.requests[-1][3]
    assert rec.requests[-1][1] == "/api/v5/trade/order-algo"
    assert (body["ordType"], body["slTriggerPx"], body["slOrdPx"], body["slTriggerPxType"]) == (
        "conditional", "78000", "-1", "mark")
    assert body["reduceOnly"] is True and body["tdMode"] == "isolated"
    assert body["algoClOrdId"] == gw.client_id(1, "stop") and stop["id"] == "9001"

    gw.conditional_order(BTC, "take_profit", "sell", 5, 90_000, bar=1)
    body = rec.requests[-1][3]
    assert (body["tpTriggerPx"], body["tpTriggerPxType"]) == ("90000", "mark")

    assert gw.open_conditional_orders(BTC) == []
    assert rec.requests[-1][1:3] == ("/api/v5/trade/orders-algo-pending", {"instId": "BTC-USDT-SWAP",
                                                                           "ordType": "conditional"})
    gw.cancel_conditional(BTC, {"id": "9001"}, "test")
    assert rec.requests[-1][1] == "/api/v5/trade/cancel-algos"
    assert rec.requests[-1][3] == [{"algoId": "9001", "instId": "BTC-USDT-SWAP"}]


@pytest.mark.parametrize("exchange_id", ["bybit", "okx"])
def test_venues_refuse_amounts_under_the_market_minimum(exchange_id):
    gw, rec = venue(exchange_id, {})
    with pytest.raises(Exception, match="minimum"):
        gw.market_order(BTC, "buy", 0.0001, bar=1, intent="entry")
    assert rec.requests == []
