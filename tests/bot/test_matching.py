"""The replay exchange's account and matching engine, driven by ccxt's real client over loopback HTTP.

Expected numbers are derived here from the stored bars and the documented formulas
(docs/architecture.md "Execution semantics", docs/methods.md §D.1), with the bracket table read
straight from its JSON file, never from the code under test.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import ccxt
import numpy as np
import pandas as pd
import pytest

from backtests.engines import run_backtest
from bot.config import BacktestConfig, RiskConfig
from bot.data import SAMPLE_DIR, load_frame
from bot.errors import UserError
from bot.exchange import make_exchange
from bot.replay import ReplayServer
from bot.store import DatasetKey, Store

EX, BTC = "binanceusdm", "BTC/USDT:USDT"
KEY, SECRET = "test-key", "test-secret"
FEE, SLIP = 0.0005, 1.0 / 10_000
T_ENTRY = "2025-03-10T00:00"
BRACKETS = json.loads((Path(__file__).parents[2] / "bot/risk/brackets_binance.json").read_text())["symbols"]["BTCUSDT"]


def ms(ts: str | pd.Timestamp) -> int:
    return int(pd.Timestamp(ts, tz="UTC").value // 1_000_000) if isinstance(ts, str) else int(ts.value // 1_000_000)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Store:
    """Real sample rows: BTC 1h candles, mark candles and funding, March to mid-April 2025."""
    sample, store = Store(SAMPLE_DIR), Store(tmp_path_factory.mktemp("matching"))
    for kind, tf in (("ohlcv", "1h"), ("mark", "1h"), ("funding_rate", "")):
        key = DatasetKey(EX, BTC, kind, tf)
        frame = sample.read(key)
        store.write(key, frame.loc["2025-03-01":"2025-04-15"])
    return store


def bars(source: Store) -> pd.DataFrame:
    o = source.read(DatasetKey(EX, BTC, "ohlcv", "1h"))
    m = source.read(DatasetKey(EX, BTC, "mark", "1h")).add_prefix("mark_")
    return o.join(m, how="inner")


# With bot/core installed, funding is charged at the mark price at the settlement τ (the open of the
# mark kline starting at τ); before it, at the settling bar's mark close (docs/architecture.md).
CORE = importlib.util.find_spec("bot.core") is not None


def settle_mark(b: pd.DataFrame, t: pd.Timestamp) -> float:
    nxt = t + pd.Timedelta("1h")
    if CORE and nxt in b.index:
        return float(b.loc[nxt, "mark_open"])
    return float(b.loc[t, "mark_close"])


def funding(source: Store) -> pd.Series:
    f = source.read(DatasetKey(EX, BTC, "funding_rate", ""))["funding_rate"]
    f.index = f.index.floor("s")
    return f


def server(source: Store, **kw) -> ReplayServer:
    kw.setdefault("start", T_ENTRY)
    kw.setdefault("speed", 0)
    return ReplayServer(source.root, api_key=KEY, secret=SECRET, taker_fee=FEE, slippage_bps=1.0, **kw)


def client(srv: ReplayServer, **kw) -> ccxt.Exchange:
    kw.setdefault("apiKey", KEY)
    kw.setdefault("secret", SECRET)
    ex = make_exchange(EX, url=srv.url, rate_limit=False, timeout=5000, **kw)
    ex.load_markets()
    return ex


def isolated(ex: ccxt.Exchange, leverage: int) -> None:
    ex.set_margin_mode("isolated", BTC)
    ex.set_leverage(leverage, BTC)


def tier(notional: float) -> tuple[float, float]:
    """(mmr, cum) of the bracket holding ``notional``: cum by the §D.1 recursion, from the JSON."""
    tiers = sorted(BRACKETS, key=lambda t: t["tier"])
    cum, prev = 0.0, None
    for t in tiers:
        if prev is not None:
            cum += t["floor"] * (t["mmr"] - prev["mmr"])
        if notional <= t["cap"]:
            return t["mmr"], cum
        prev = t
    return tiers[-1]["mmr"], cum


def long_lp(qty: float, entry: float, wallet: float) -> float:
    """docs/methods.md §D.1 for a long: LP = (WB + cum − Q·EP) / (Q·(m − 1))."""
    mmr, cum = tier(qty * entry)
    return (wallet + cum - qty * entry) / (qty * (mmr - 1))


# --------------------------------------------------------------------------------------- trading


def test_open_stop_take_profit_then_stop_fills_with_backtest_fees_and_funding(source):
    b, f = bars(source), funding(source)
    qty = 0.05
    with server(source) as srv:
        ex = client(srv)
        isolated(ex, 5)
        order = ex.create_order(BTC, "market", "buy", qty, params={"newClientOrderId": "entry-1"})
        bar0 = b.loc[T_ENTRY]
        entry = min(bar0["open"] * (1 + SLIP), bar0["high"])
        assert order["status"] == "closed" and order["average"] == pytest.approx(entry, rel=1e-15)
        fee_in = qty * entry * FEE
        pos = ex.fetch_positions([BTC])[0]
        margin = qty * entry / 5
        assert (pos["side"], pos["contracts"], pos["marginMode"]) == ("long", qty, "isolated")
        assert pos["liquidationPrice"] == pytest.approx(long_lp(qty, entry, margin), rel=1e-12)
        assert ex.fetch_balance()["USDT"]["free"] == pytest.approx(10_000 - margin - fee_in, abs=1e-9)

        stop = float(ex.price_to_precision(BTC, entry * 0.97))
        take = float(ex.price_to_precision(BTC, entry * 1.10))
        sl = ex.create_order(BTC, "market", "sell", qty, params={"stopLossPrice": stop, "reduceOnly": True,
                                                                "workingType": "MARK_PRICE"})
        tp = ex.create_order(BTC, "market", "sell", qty, params={"takeProfitPrice": take, "reduceOnly": True,
                                                                "workingType": "MARK_PRICE"})
        resting = ex.fetch_open_orders(BTC, params={"trigger": True})
        assert sorted(o["id"] for o in resting) == sorted([sl["id"], tp["id"]])
        assert ex.fetch_open_orders(BTC) == []  # the Algo API book is separate (docs/binance-usdm.md §0.2)

        # independently: the first bar whose mark low reaches the stop, funding on the bars before it
        after = b.loc[T_ENTRY:]
        hit = after.index[after["mark_low"] <= stop][0]
        assert (after.loc[:hit, "mark_high"] < take).all()
        row = after.loc[hit]
        ref = row["open"] if row["mark_open"] <= stop else stop
        fill = max(ref * (1 - SLIP), row["low"])
        flows = 0.0
        for t in after.loc[:hit].index[:-1]:
            rates = f[(f.index > t) & (f.index <= t + pd.Timedelta("1h"))]
            if len(rates):
                flows += -1 * qty * settle_mark(b, t) * rates.sum()
        assert flows != 0.0
        fee_out = qty * fill * FEE
        expected = 10_000 - fee_in + qty * (fill - entry) - fee_out + flows

        srv.clock.set(ms(hit) + 3_600_000)
        assert ex.fetch_positions([BTC]) == []
        assert ex.fetch_balance()["USDT"]["total"] == pytest.approx(expected, abs=1e-9)
        fired = ex.fetch_order(sl["id"], BTC, params={"trigger": True})
        assert fired["status"] == "closed" and fired["info"]["actualOrderId"]
        assert ex.fetch_order(tp["id"], BTC, params={"trigger": True})["status"] == "expired"
        trades = ex.fetch_my_trades(BTC, since=ms(T_ENTRY))
        assert [t["side"] for t in trades] == ["buy", "sell"]
        assert trades[1]["order"] == fired["info"]["actualOrderId"]
        assert trades[1]["price"] == pytest.approx(fill, rel=1e-15)
        assert [t["fee"]["cost"] for t in trades] == pytest.approx([fee_in, fee_out], rel=1e-12)
        assert trades[1]["timestamp"] == ms(hit) + 3_600_000
        actual = ex.fetch_order(fired["info"]["actualOrderId"], BTC)
        assert actual["info"]["origType"] == "STOP_MARKET" and actual["status"] == "closed"
        assert [o["status"] for o in ex.fetch_orders(BTC, since=ms(T_ENTRY))] == ["closed", "closed"]
        assert sorted(o["status"] for o in ex.fetch_orders(BTC, since=ms(T_ENTRY), params={"trigger": True})) == \
            ["closed", "expired"]
        history = ex.fetch_funding_history(BTC, since=ms(T_ENTRY))
        assert len(history) >= 1 and sum(h["amount"] for h in history) == pytest.approx(flows, abs=1e-12)


def test_position_is_liquidated_by_the_isolated_formula(source):
    b, f = bars(source), funding(source)
    qty, lev = 0.05, 20
    with server(source) as srv:
        ex = client(srv)
        isolated(ex, lev)
        ex.create_order(BTC, "market", "buy", qty)
        bar0 = b.loc[T_ENTRY]
        entry = min(bar0["open"] * (1 + SLIP), bar0["high"])
        wallet0 = wallet = qty * entry / lev
        fee_in = qty * entry * FEE
        liquidated_at = None
        for t, r in b.loc[T_ENTRY:].iterrows():
            if r["mark_low"] <= long_lp(qty, entry, wallet):
                liquidated_at = t
                break
            rates = f[(f.index > t) & (f.index <= t + pd.Timedelta("1h"))]
            if len(rates):
                wallet += -qty * settle_mark(b, t) * rates.sum()
        assert liquidated_at is not None
        srv.clock.set(ms(liquidated_at) + 3_600_000 - 1)
        assert ex.fetch_positions([BTC])[0]["contracts"] == qty  # the bar has not closed yet
        srv.clock.set(ms(liquidated_at) + 3_600_000)
        assert ex.fetch_positions([BTC]) == []
        assert ex.fetch_balance()["USDT"]["total"] == pytest.approx(10_000 - fee_in - wallet0, abs=1e-9)
        last = ex.fetch_my_trades(BTC, since=ms(T_ENTRY))[-1]
        assert last["fee"]["cost"] == 0 and last["price"] == pytest.approx(entry - wallet / qty, rel=1e-12)


def test_exchange_side_faults_liquidation_vanishing_stop_delayed_fill(source):
    b = bars(source)
    with server(source) as srv:
        ex = client(srv)
        isolated(ex, 5)
        srv.trade_faults.fill_delay_ms = 2 * 3_600_000
        srv.trade_faults.arm("delayed_fill")
        order = ex.create_order(BTC, "market", "buy", 0.05)
        assert order["status"] == "open" and ex.fetch_positions([BTC]) == []
        srv.clock.set(ms("2025-03-10T02:30"))
        filled = ex.fetch_order(order["id"], BTC)
        bar2 = b.loc["2025-03-10T02:00"]
        assert filled["status"] == "closed"
        assert filled["average"] == pytest.approx(min(bar2["open"] * (1 + SLIP), bar2["high"]), rel=1e-15)

        sl = ex.create_order(BTC, "market", "sell", 0.05, params={"stopLossPrice": 70_000, "reduceOnly": True})
        assert srv.account.vanish_stops("BTCUSDT") == 1
        assert ex.fetch_order(sl["id"], BTC, params={"trigger": True})["status"] == "expired"
        assert ex.fetch_open_orders(BTC, params={"trigger": True}) == []

        before = float(ex.fetch_balance()["info"]["totalWalletBalance"])  # "total" adds the unrealized PnL
        margin = float(ex.fetch_positions([BTC])[0]["info"]["isolatedWallet"])
        assert srv.account.liquidate("BTCUSDT")
        assert ex.fetch_positions([BTC]) == []
        assert ex.fetch_balance()["USDT"]["total"] == pytest.approx(before - margin, abs=1e-9)


def test_account_survives_a_restart(source, tmp_path):
    state = tmp_path / "account.sqlite"
    with server(source, state=state) as srv:
        ex = client(srv)
        isolated(ex, 5)
        ex.create_order(BTC, "market", "buy", 0.05)
        ex.create_order(BTC, "market", "sell", 0.05, params={"stopLossPrice": 70_000, "reduceOnly": True,
                                                             "clientAlgoId": "keep-stop"})
        srv.clock.set(ms("2025-03-10T03:00"))
        before = (ex.fetch_balance()["USDT"], ex.fetch_positions([BTC]), ex.fetch_open_orders(BTC, params={"trigger": True}))
    with server(source, state=state, start=None) as again:
        ex = client(again)
        assert again.clock.now_ms() == ms("2025-03-10T03:00")
        after = (ex.fetch_balance()["USDT"], ex.fetch_positions([BTC]), ex.fetch_open_orders(BTC, params={"trigger": True}))
        assert after[0] == before[0]
        assert [(p["contracts"], p["entryPrice"], p["liquidationPrice"]) for p in after[1]] == \
            [(p["contracts"], p["entryPrice"], p["liquidationPrice"]) for p in before[1]]
        assert [(o["id"], o["clientOrderId"], o["triggerPrice"]) for o in after[2]] == \
            [(o["id"], o["clientOrderId"], o["triggerPrice"]) for o in before[2]]
        with pytest.raises(ccxt.InvalidOrder, match="-4116"):  # ids stay used across the restart
            ex.create_order(BTC, "market", "sell", 0.05, params={"stopLossPrice": 70_000, "reduceOnly": True,
                                                                 "clientAlgoId": "keep-stop"})
    with pytest.raises(UserError, match="start at or after it"):
        server(source, state=state, start="2025-03-01")


# --------------------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def trading(source):
    with server(source) as srv:
        ex = client(srv)
        isolated(ex, 5)
        yield srv, ex


@pytest.mark.parametrize(("call", "error", "code"), [
    (lambda ex: ex.create_order(BTC, "STOP_MARKET", "sell", 0.05, params={"stopPrice": 70_000}), None, None),
    (lambda ex: ex.fapiPrivatePostOrder({"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET",
                                         "quantity": "0.05", "stopPrice": "70000"}), ccxt.InvalidOrder, -4120),
    (lambda ex: ex.create_order(BTC, "market", "buy", 50), ccxt.InsufficientFunds, -2019),
    (lambda ex: ex.create_order(BTC, "market", "buy", 0.001), ccxt.InvalidOrder, -4164),
    (lambda ex: ex.create_order(BTC, "market", "sell", 0.01, params={"reduceOnly": True}), ccxt.InvalidOrder, -2022),
    (lambda ex: ex.create_order(BTC, "limit", "buy", 0.01, 70_000), ccxt.BadRequest, -1116),
    (lambda ex: ex.cancel_order("12345", BTC), ccxt.OrderNotFound, -2011),
    (lambda ex: ex.fetch_order("12345", BTC), ccxt.OrderNotFound, -2013),
    (lambda ex: ex.fetch_order("12345", BTC, params={"trigger": True}), ccxt.OrderNotFound, -2013),
    (lambda ex: ex.set_margin_mode("isolated", BTC), ccxt.MarginModeAlreadySet, -4046),
    (lambda ex: ex.create_order(BTC, "market", "buy", 0.01, params={"positionSide": "LONG"}),
     ccxt.OperationRejected, -4061),
    (lambda ex: ex.create_order(BTC, "market", "sell", 0.01, params={"stopLossPrice": 99_000,
                                                                     "reduceOnly": True}), ccxt.OrderImmediatelyFillable, -2021),
])
def test_binance_errors_raise_ccxt_exceptions(trading, call, error, code):
    _, ex = trading
    if error is None:  # a conditional type through create_order goes to the Algo API and rests
        assert call(ex)["status"] == "open"
        return
    with pytest.raises(error, match=str(code)):
        call(ex)


def test_duplicate_client_order_id(trading):
    _, ex = trading
    ex.create_order(BTC, "market", "buy", 0.01, params={"newClientOrderId": "dup-1"})
    with pytest.raises(ccxt.InvalidOrder, match="-4116"):
        ex.create_order(BTC, "market", "buy", 0.01, params={"newClientOrderId": "dup-1"})
    ex.create_order(BTC, "market", "sell", 0.01, params={"reduceOnly": True})


def test_signatures_keys_and_timestamps_are_checked(trading):
    srv, _ = trading
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        client(srv, secret="wrong").fetch_balance()
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        client(srv, apiKey="someone-else").fetch_balance()
    old = client(srv, options={"timeDifference": 11_000})  # ccxt signs 11 s in the past; recvWindow 10 s
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        old.fetch_balance()
    ahead = client(srv, options={"timeDifference": -2_000})  # 2 s ahead: beyond Binance's 1 s allowance
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        ahead.fetch_balance()
    assert client(srv, options={"timeDifference": 9_000}).fetch_balance()["USDT"]["total"] > 0


def test_account_modes_are_reported_and_refused(source):
    with server(source) as srv:
        ex = client(srv)
        isolated(ex, 5)
        modes_and_tiers(srv, ex)


def modes_and_tiers(srv: ReplayServer, ex: ccxt.Exchange) -> None:
    assert ex.fetch_position_mode(BTC)["hedged"] is False
    assert ex.fapiPrivateGetMultiAssetsMargin()["multiAssetsMargin"] is False
    ex.set_position_mode(True)
    try:
        assert ex.fetch_position_mode(BTC)["hedged"] is True
        with pytest.raises(ccxt.OperationRejected, match="-4061"):
            ex.create_order(BTC, "market", "buy", 0.01)
    finally:
        ex.set_position_mode(False)
    tiers = ex.fetch_leverage_tiers([BTC])[BTC]
    assert [t["maintenanceMarginRate"] for t in tiers] == [t["mmr"] for t in sorted(BRACKETS, key=lambda t: t["tier"])]
    assert math.isclose(ex.fetch_ticker(BTC)["last"], bars_at(srv, "2025-03-09T23:00")["close"])


def bars_at(srv: ReplayServer, ts: str) -> dict:
    s = srv.data.series(BTC, "ohlcv", "1h")
    i = int((s.times == ms(ts)).nonzero()[0][0])
    return {k: float(v[i]) for k, v in s.columns.items()}


def test_no_credentials_means_no_trading(source):
    with ReplayServer(source.root, start=T_ENTRY, speed=0) as srv:
        with pytest.raises(ccxt.AuthenticationError, match="-2015"):
            client(srv).fetch_balance()


def backtest_costs() -> tuple[BacktestConfig, dict]:
    """FEE and 1 bp for ``run_backtest``: the replay server's costs in this module."""
    from bot.config import MarketCosts

    return BacktestConfig(), {"costs": MarketCosts(taker_fee=FEE, slippage_bps=1.0), "symbol": BTC}


def test_replay_account_agrees_with_the_backtest(source):
    """Same entry, same stop: the replay account books what the backtest engine books (per unit,
    since the backtest's size is not a multiple of the exchange's step)."""
    frame = load_frame(source.root, EX, BTC, "1h", start=pd.Timestamp("2025-03-05", tz="UTC"),
                       end=pd.Timestamp("2025-03-20", tz="UTC"), use_sample=False)
    stop = 78_277.8
    signals = pd.DataFrame({"target": 0.0, "stop": np.nan, "take_profit": np.nan}, index=frame.index)
    signals.loc["2025-03-09T23:00":, ["target", "stop"]] = [1.0, stop]  # decided at that close
    backtest, costs = backtest_costs()
    result = run_backtest(frame, signals, backtest, RiskConfig(max_leverage=5), engine="backtrader", **costs)
    trade = result.trades.iloc[0]
    assert trade["exit_reason"] == "stop" and trade["entry_time"] == pd.Timestamp(T_ENTRY, tz="UTC")

    qty = 0.05
    with server(source) as srv:
        ex = client(srv)
        isolated(ex, 5)
        entry = ex.create_order(BTC, "market", "buy", qty)
        ex.create_order(BTC, "market", "sell", qty, params={"stopLossPrice": stop, "reduceOnly": True,
                                                            "workingType": "CONTRACT_PRICE"})
        srv.clock.set(ms(trade["exit_time"]) + 3_600_000)
        trades = ex.fetch_my_trades(BTC, since=ms(T_ENTRY))
        total = ex.fetch_balance()["USDT"]["total"]
        assert ex.fetch_positions([BTC]) == []
    exit_price = trades[1]["price"]
    assert entry["average"] == trade["entry_price"] and exit_price == trade["exit_price"]
    assert trades[1]["timestamp"] == ms(trade["exit_time"]) + 3_600_000
    fees = sum(t["fee"]["cost"] for t in trades)
    funding_paid = total - 10_000 + fees - qty * (exit_price - entry["average"])
    assert fees / qty == pytest.approx(trade["fees"] / trade["qty"], rel=1e-12)
    assert funding_paid / qty == pytest.approx(trade["funding"] / trade["qty"], rel=1e-9)
    assert trade["funding"] != 0


def test_replay_timestamps_need_ccxt_to_learn_the_replay_clock(source):
    with server(source, replay_timestamps=True) as srv:
        with pytest.raises(ccxt.InvalidNonce):
            client(srv).fetch_balance()  # ccxt signs with the wall clock, years after the replay time
        synced = client(srv, options={"adjustForTimeDifference": True})
        assert synced.fetch_balance()["USDT"]["total"] == 10_000
