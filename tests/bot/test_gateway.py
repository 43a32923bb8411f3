"""The gateway against the replay exchange, through ccxt's real HTTP client on loopback."""

from __future__ import annotations

import re

import ccxt
import pandas as pd
import pytest

from bot.errors import UserError
from bot.exchange import make_exchange
from bot.gateway import (
    Gateway,
    GatewayAuthError,
    GatewayRefusedStart,
    GatewayRejected,
    GatewayUnavailable,
    client_order_id,
)
from bot.replay import FaultConfig, ReplayServer
from bot.store import Store

EX, BTC = "binanceusdm", "BTC/USDT:USDT"
KEY, SECRET = "gw-key", "gw-secret"
T0 = "2025-03-10T00:00"
BAR = int(pd.Timestamp(T0, tz="UTC").value // 1_000_000)


def ms(ts: str) -> int:
    return int(pd.Timestamp(ts, tz="UTC").value // 1_000_000)


@pytest.fixture(scope="module")
def source(btc_trading_store) -> Store:
    return btc_trading_store("2025-03-01", "2025-04-15")


def replay(source: Store, **kw) -> ReplayServer:
    return ReplayServer(source.root, start=T0, speed=0, api_key=KEY, secret=SECRET, **kw)


def gateway(srv: ReplayServer, start: bool = True, sleeps: list | None = None, **kw) -> Gateway:
    options = kw.pop("options", {})
    ex = make_exchange(EX, url=srv.url, rate_limit=False, timeout=3000, apiKey=kw.pop("apiKey", KEY),
                       secret=kw.pop("secret", SECRET), options=options)
    gw = Gateway(ex, "run-1", backoff=0.01, sleep=(sleeps.append if sleeps is not None else lambda s: None), **kw)
    if start:
        gw.start([BTC], 5)
    return gw


def orders_with(srv: ReplayServer, cid: str) -> list[dict]:
    return [o for o in list(srv.account.orders.values()) + list(srv.account.algos.values())
            if cid in (o.get("clientOrderId"), o.get("clientAlgoId"))]


def kinds(gw: Gateway) -> list[str]:
    return [e.kind for e in gw.events]


def test_client_ids_are_deterministic_and_fit_every_venue():
    a = client_order_id("run-1", BAR, "entry")
    assert a == client_order_id("run-1", BAR, "entry") and len(a) == 32 and re.fullmatch(r"c[0-9a-f]{31}", a)
    assert len({a, client_order_id("run-2", BAR, "entry"), client_order_id("run-1", BAR + 1, "entry"),
                client_order_id("run-1", BAR, "stop")}) == 4


def test_start_sets_isolated_margin_and_leverage_no_change_is_success(source):
    with replay(source) as srv:
        early = gateway(srv, start=False)
        with pytest.raises(GatewayRefusedStart, match="start"):
            early.market_order(BTC, "buy", 0.05, bar=BAR, intent="entry")
        gw = gateway(srv)
        assert srv.account.settings("BTCUSDT") == {"leverage": 5, "margin": "ISOLATED"}
        gw.start([BTC], 3)  # margin already isolated: -4046 is a success
        assert srv.account.settings("BTCUSDT")["leverage"] == 3
        assert "rejected" not in kinds(gw) and kinds(gw).count("started") == 2


@pytest.mark.parametrize(("switch", "word"), [
    (lambda ex: ex.set_position_mode(True), "hedge"),
    (lambda ex: ex.fapiPrivatePostMultiAssetsMargin({"multiAssetsMargin": "true"}), "multi-assets"),
])
def test_start_refuses_hedge_and_multi_assets_mode(source, switch, word):
    with replay(source) as srv:
        gw = gateway(srv, start=False)
        switch(gw.exchange)
        with pytest.raises(GatewayRefusedStart, match=word) as info:
            gw.start([BTC], 5)
        assert isinstance(info.value, UserError) and "\n" not in str(info.value)
        assert gw.events[-1].kind == "rejected" and srv.account.orders == {}


def test_margin_that_cannot_become_isolated_stops_the_start(source):
    """-4048 (a position in cross margin) is a refusal, not the "no need to change" (-4046) success."""
    with replay(source) as srv:
        gw = gateway(srv)
        gw.market_order(BTC, "buy", 0.05, bar=BAR, intent="entry", price_hint=80_000)
        srv.account._put_settings("BTCUSDT", dict(srv.account.settings("BTCUSDT"), margin="CROSSED"))
        with pytest.raises(GatewayRejected, match="-4048"):
            gw.start([BTC], 5)
        assert srv.account.settings("BTCUSDT")["margin"] == "CROSSED"
        assert gw.events[-1].kind == "rejected" and "-4048" in gw.events[-1].message


def test_entry_protection_and_stop_out_end_to_end(source):
    with replay(source) as srv:
        gw = gateway(srv)
        entry = gw.market_order(BTC, "buy", 0.05, bar=BAR, intent="entry", price_hint=80_000)
        assert entry["status"] == "closed" and gw.position(BTC)["contracts"] == 0.05
        price = entry["average"]
        stop, take = price * 0.97, price * 1.10
        placed = gw.protect(BTC, bar=BAR, stop=stop, take_profit=take)
        assert set(placed) == {"stop", "take_profit"}
        again = gw.protect(BTC, bar=BAR + 3_600_000, stop=stop, take_profit=take)  # nothing changes
        assert {k: v["id"] for k, v in again.items()} == {k: v["id"] for k, v in placed.items()}
        assert len(srv.account.algos) == 2
        resting = gw.open_conditional_orders(BTC)
        assert sorted(gw.role_of(o) for o in resting) == ["stop", "take_profit"]
        assert all(o["reduceOnly"] and o["info"]["workingType"] == "MARK_PRICE" for o in resting)

        srv.clock.set(ms("2025-03-12"))  # BTC fell through the stop on March 10
        assert gw.position(BTC) is None
        fired = gw.fetch_order(BTC, placed["stop"]["id"], trigger=True)
        assert fired["status"] == "closed"
        assert gw.open_conditional_orders(BTC) == []  # the take profit expired with the position
        assert gw.protect(BTC, bar=ms("2025-03-12"), stop=stop) == {}
        trades = gw.my_trades(BTC, since=BAR)
        assert [t["side"] for t in trades] == ["buy", "sell"]
        assert gw.balance()["total"] < 10_000


@pytest.mark.parametrize("fault", ["lost_reply", "status_unknown", "429", "5xx", "drop"])
def test_exactly_one_order_per_intent_under_faults(source, fault):
    sleeps: list[float] = []
    with replay(source, faults=FaultConfig(retry_after=1)) as srv:
        gw = gateway(srv, sleeps=sleeps)

        def arm() -> None:
            if fault in ("lost_reply", "status_unknown"):
                srv.trade_faults.arm(fault)
            else:
                srv.faults.arm(fault, 3)  # a burst: the placement and the first look-ups fail

        arm()
        entry = gw.market_order(BTC, "buy", 0.05, bar=BAR, intent="entry", price_hint=80_000)
        cid = gw.client_id(BAR, "entry")
        assert len(orders_with(srv, cid)) == 1 and entry["clientOrderId"] == cid
        assert srv.account.positions["BTCUSDT"]["qty"] == pytest.approx(0.05)
        arm()
        gw.protect(BTC, bar=BAR, stop=entry["average"] * 0.97)
        assert len(orders_with(srv, gw.client_id(BAR, "stop"))) == 1
        assert len(gw.open_conditional_orders(BTC)) == 1
        expected = {"lost_reply": "recovered", "status_unknown": "recovered"}.get(fault)
        if expected:
            assert expected in kinds(gw) and "resubmit" not in kinds(gw)
        else:  # the request never reached the account: looked up, not found, resubmitted once
            assert "resubmit" in kinds(gw) or "retry" in kinds(gw)
        if fault == "429":
            assert max(sleeps) >= 1  # Retry-After honoured


def test_delayed_fill_is_not_doubled(source):
    with replay(source) as srv:
        gw = gateway(srv)
        srv.trade_faults.arm("delayed_fill")
        first = gw.market_order(BTC, "buy", 0.05, bar=BAR, intent="entry", price_hint=80_000)
        assert first["status"] == "open"
        second = gw.market_order(BTC, "buy", 0.05, bar=BAR, intent="entry", price_hint=80_000)  # a runner's retry
        assert second["id"] == first["id"] and "duplicate" in kinds(gw)
        srv.clock.set(ms("2025-03-10T01:30"))
        assert gw.fetch_order(BTC, first["id"])["status"] == "closed"
        assert gw.position(BTC)["contracts"] == 0.05


def test_vanished_stop_is_replaced_once(source):
    with replay(source) as srv:
        gw = gateway(srv)
        entry = gw.market_order(BTC, "buy", 0.05, bar=BAR, intent="entry", price_hint=80_000)
        first = gw.protect(BTC, bar=BAR, stop=entry["average"] * 0.97)["stop"]
        srv.account.vanish_stops("BTCUSDT")
        second = gw.protect(BTC, bar=BAR, stop=entry["average"] * 0.97)["stop"]
        assert second["id"] != first["id"] and second["clientOrderId"] != first["clientOrderId"]
        assert [o["id"] for o in gw.open_conditional_orders(BTC)] == [second["id"]]
        moved = gw.protect(BTC, bar=BAR + 3_600_000, stop=entry["average"] * 0.98)["stop"]
        assert [o["id"] for o in gw.open_conditional_orders(BTC)] == [moved["id"]]
        assert "cancel" in kinds(gw)


@pytest.mark.parametrize(("fault", "amount"), [(None, 50), ("reject_margin", 0.05)])
def test_insufficient_margin_is_an_event_never_a_retry(source, fault, amount):
    with replay(source) as srv:
        gw = gateway(srv)
        if fault:
            srv.trade_faults.arm(fault)
        with pytest.raises(GatewayRejected) as info:  # 50 BTC on a 10 000 USDT account at 5x
            gw.market_order(BTC, "buy", amount, bar=BAR, intent="entry", price_hint=80_000)
        assert info.value.event.kind == "rejected" and info.value.event.data["error"] == "InsufficientFunds"
        assert "retry" not in kinds(gw) and srv.account.positions == {}


def test_auth_and_clock_failures_are_clear_events(source):
    with replay(source) as srv:
        bad = gateway(srv, start=False, secret="wrong")
        with pytest.raises(GatewayAuthError, match="authentication failed"):
            bad.start([BTC], 5)
        assert bad.events[-1].kind == "auth" and "-1022" in bad.events[-1].message
        gw = gateway(srv)
        gw.exchange.options["timeDifference"] = 30_000  # the machine clock runs 30 s ahead
        with pytest.raises(GatewayAuthError, match="clock"):
            gw.market_order(BTC, "buy", 0.05, bar=BAR, intent="entry")
        assert gw.events[-1].kind == "clock" and srv.account.orders == {}
        assert "retry" not in kinds(gw)


def test_amounts_follow_market_precision_and_limits(source):
    with replay(source) as srv:
        gw = gateway(srv)
        with pytest.raises(GatewayRejected, match="minimum"):
            gw.market_order(BTC, "buy", 0.0004, bar=BAR, intent="tiny")
        with pytest.raises(GatewayRejected, match="notional"):
            gw.market_order(BTC, "buy", 0.001, bar=BAR, intent="small", price_hint=80_000)
        order = gw.market_order(BTC, "buy", 0.0509, bar=BAR, intent="entry", price_hint=80_000)
        assert order["amount"] == 0.05  # truncated to the 0.001 step
        assert srv.account.orders and all(o["origQty"] == "0.050" for o in srv.account.orders.values())


def test_network_errors_are_retried_then_reported(source):
    with replay(source) as srv:
        gw = gateway(srv, retries=2)
        srv.faults.arm("5xx", 3)  # the first try and both retries
        with pytest.raises(GatewayUnavailable) as info:
            gw.balance()
        assert info.value.event.kind == "gave_up" and kinds(gw).count("retry") == 2
        assert "signature=<redacted>" in info.value.event.message  # ccxt quoted the signed URL
        srv.faults.arm("429", 1)
        assert gw.ticker(BTC)["last"] > 0  # one retry, then the answer
        assert isinstance(gw.exchange, ccxt.binanceusdm)


def test_close_flattens_and_protect_clears_leftovers(source):
    with replay(source) as srv:
        gw = gateway(srv)
        entry = gw.market_order(BTC, "sell", gw.contracts(BTC, 0.05), bar=BAR, intent="entry", price_hint=80_000)
        gw.protect(BTC, bar=BAR, stop=entry["average"] * 1.03, take_profit=entry["average"] * 0.9)
        assert gw.position(BTC)["side"] == "short"
        srv.clock.set(BAR + 3_600_000)
        closed = gw.close(BTC, bar=BAR + 3_600_000)
        assert closed["side"] == "buy" and closed["reduceOnly"] and gw.position(BTC) is None
        assert gw.open_conditional_orders(BTC) == []  # expired with the position
        assert gw.close(BTC, bar=BAR + 7_200_000) is None


def test_unanswerable_placement_is_never_resubmitted_blind(source):
    with replay(source) as srv:
        gw = gateway(srv, retries=2)
        srv.faults.arm("5xx", 4)  # the placement and all three look-ups of its client id fail
        with pytest.raises(GatewayUnavailable) as info:
            gw.market_order(BTC, "buy", 0.05, bar=BAR, intent="entry", price_hint=80_000)
        assert info.value.event.kind == "gave_up"
        assert kinds(gw)[-4:] == ["lost_reply", "retry", "retry", "gave_up"] and "resubmit" not in kinds(gw)
        assert srv.account.orders == {}
        order = gw.market_order(BTC, "buy", 0.05, bar=BAR, intent="entry", price_hint=80_000)  # the runner retries
        assert len(orders_with(srv, gw.client_id(BAR, "entry"))) == 1 and order["status"] == "closed"
