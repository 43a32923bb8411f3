"""The replay exchange's account: signed endpoints and the matching engine on the replay clock.

Served (all signed, docs/binance-usdm.md §6–7)::

    GET  /fapi/v3/account, /fapi/v2/account          balance (ccxt fetch_balance)
    GET  /fapi/v3/positionRisk, /fapi/v2/positionRisk positions
    GET  /fapi/v1/income                              funding, commissions, realized PnL
    GET  /fapi/v1/leverageBracket                     brackets (bot/risk/brackets_binance.json)
    POST /fapi/v1/leverage, /fapi/v1/marginType
    GET/POST /fapi/v1/positionSide/dual, /fapi/v1/multiAssetsMargin
    POST/GET/DELETE /fapi/v1/order, GET /fapi/v1/openOrders, GET /fapi/v1/userTrades
    POST/GET/DELETE /fapi/v1/algoOrder, GET /fapi/v1/openAlgoOrders

Matching, decided once and tested in ``tests/bot/test_matching.py``:

* **Bars.** The engine steps through the bars of one timeframe (``timeframe``; default the finest
  stored timeframe that has both candles and mark-price candles) and books a bar when it has
  closed on the replay clock: conditional orders, own liquidation, then funding, in the order of
  the backtest (docs/architecture.md "Execution semantics", methods.md §D.3.2).
* **Market orders** fill at the open of the bar that contains *now* (the backtest's "next bar's
  open" for an order sent at a bar close), slipped by the backtest's slippage and bounded by that
  bar's range, and pay the backtest's taker fee on the fill's notional. Only ``MARKET`` is
  served on ``/fapi/v1/order`` (there is no order book to rest a limit order in: ``LIMIT`` gets
  ``-1116``); conditional types get ``-4120`` as on Binance since 2025-12-09.
* **Conditional orders** (``STOP_MARKET``, ``TAKE_PROFIT_MARKET`` on the Algo API) trigger on the
  bar's mark range (``workingType=MARK_PRICE``) or last-price range (``CONTRACT_PRICE``, Binance's
  default). A stop fills like a market order at its trigger (at the open on a gap), a take
  profit as the backtest's take-profit fill; the stop wins when both could trigger (pessimistic).
  A triggered order becomes ``FINISHED`` with ``actualOrderId`` naming the regular ``MARKET``
  order it created (``origType`` the conditional type). An order placed inside a bar is checked
  against that whole bar (as the backtest's stop is active from the entry at the open).
* **Reduce-only** orders need an opposite position and are cut to its size (``-2022``
  otherwise); ``closePosition`` closes whatever is open. When a position goes flat, the
  symbol's reduce-only and close-position conditional orders expire, as Binance cancels them.
* **Margin.** Positions are isolated, one-way (``BOTH``): an order while the symbol is in cross
  margin, or the account in hedge or multi-assets mode, is refused (``-2010`` naming the setting,
  ``-4061`` for a position side that does not match). The margin of a new position is
  ``notional / leverage`` (``-2027`` when the leverage exceeds the bracket's maximum); an order
  whose margin plus fee exceeds the available balance gets ``-2019``. Funding settles into the
  isolated margin at each settlement inside a bar, on the bar's mark close; the liquidation price
  follows methods.md §D.1; a liquidation loses the whole isolated margin. Every formula is called
  through :mod:`bot.replay.accounting`.
* **Client ids** (``newClientOrderId``, ``clientAlgoId``) are unique per account for the whole
  life of the state file: reusing one gets ``-4116`` (Binance only promises uniqueness among open
  orders; a replay account is stricter so that a double submission can never pass unnoticed).
* **State** lives in a SQLite file (:class:`bot.replay.store.StateFile`): restart the server on
  the same file and the account, its orders and the replay clock continue.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from bot.replay import accounting
from bot.replay.accounting import Costs
from bot.replay.api import ApiError, BinanceUsdmApi, Request, Response, Route, _num
from bot.replay.faults import TradeFaults
from bot.replay.market import MarketData, MarketSpec, _Series
from bot.replay.store import StateFile

ASSET = "USDT"
DEFAULT_LEVERAGE = 20
_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_CONDITIONAL = ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")
_MAX_ALGO_ORDERS = 10


@dataclass
class _Bar:
    open_ms: int
    close_ms: int
    bar: tuple[float, float, float]     # open, high, low
    mark: tuple[float, float, float]
    mark_close: float


def _side(value: str) -> int:
    if value == "BUY":
        return 1
    if value == "SELL":
        return -1
    raise ApiError(400, -1117, "Invalid side.")


def _bool(params: dict[str, str], name: str) -> bool:
    raw = params.get(name, "false").lower()
    if raw not in ("true", "false"):
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is 'true, false'.")
    return raw == "true"


def _param(params: dict[str, str], *names: str) -> str | None:
    """A parameter by any of ``names``, case-insensitively (Binance's algo docs spell them both ways)."""
    lowered = {k.lower(): v for k, v in params.items()}
    for name in names:
        if lowered.get(name.lower()):
            return lowered[name.lower()]
    return None


def _decimal(params: dict[str, str], name: str) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None
    if not value.is_finite():
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.")
    return value


class Account:
    """One replay account over :class:`MarketData`, its state in a :class:`StateFile`."""

    def __init__(self, data: MarketData, api: BinanceUsdmApi, state: StateFile, costs: Costs,
                 initial_balance: float = 10_000.0, timeframe: str | None = None,
                 faults: TradeFaults | None = None) -> None:
        self.data = data
        self.api = api
        self.state = state
        self.costs = costs
        self.faults = faults or TradeFaults()
        self.lock = threading.RLock()
        self.timeframe = timeframe or self._default_timeframe()
        self._dirty: dict[tuple[str, str], Any | None] = {}
        docs = state.load()
        self.kv: dict[str, Any] = docs.get("kv", {})
        self.symbols: dict[str, dict] = docs.get("symbol", {})
        self.positions: dict[str, dict] = docs.get("position", {})
        self.orders: dict[int, dict] = {int(k): v for k, v in docs.get("order", {}).items()}
        self.algos: dict[int, dict] = {int(k): v for k, v in docs.get("algo", {}).items()}
        self.trades: dict[int, dict] = {int(k): v for k, v in docs.get("trade", {}).items()}
        self.incomes: dict[int, dict] = {int(k): v for k, v in docs.get("income", {}).items()}
        self._cids = {o["clientOrderId"] for o in self.orders.values()} | {a["clientAlgoId"] for a in self.algos.values()}
        if "cash" not in self.kv:
            self._set("cash", float(initial_balance))
            for key, value in (("next_order", 4_000_000_001), ("next_algo", 1_000_001), ("next_trade", 5_000_001),
                               ("next_income", 9_000_001),
                               ("dual", False), ("multi_assets", False), ("processed", {}), ("clock_ms", 0)):
                self._set(key, value)
            self.flush()
        self._register()

    # ------------------------------------------------------------------ state

    def _default_timeframe(self) -> str:
        for spec in sorted(self.data.markets.values(), key=lambda m: m.id):
            marks = set(self.data.timeframes(spec.symbol, "mark"))
            both = [tf for tf in self.data.timeframes(spec.symbol, "ohlcv") if tf in marks]
            if both:
                return both[0]
        for spec in self.data.markets.values():
            tfs = self.data.timeframes(spec.symbol, "ohlcv")
            if tfs:
                return tfs[0]
        return "1h"

    def _set(self, key: str, value: Any) -> None:
        self.kv[key] = value
        self._dirty[("kv", key)] = value

    def _save(self, kind: str, key: Any, doc: dict | None) -> None:
        self._dirty[(kind, str(key))] = doc

    def _next(self, name: str) -> int:
        value = int(self.kv[name])
        self._set(name, value + 1)
        return value

    def flush(self) -> None:
        """Write every change of this request in one transaction."""
        changes, self._dirty = self._dirty, {}
        self.state.write(changes)

    @property
    def clock_ms(self) -> int:
        """The replay time of the last request that touched the account (0 for a new one)."""
        return int(self.kv.get("clock_ms", 0))

    def settings(self, symbol_id: str) -> dict:
        return self.symbols.get(symbol_id) or {"leverage": DEFAULT_LEVERAGE, "margin": "CROSSED"}

    def _put_settings(self, symbol_id: str, doc: dict) -> None:
        self.symbols[symbol_id] = doc
        self._save("symbol", symbol_id, doc)

    # ------------------------------------------------------------------ prices

    def _series(self, m: MarketSpec) -> tuple[_Series | None, _Series | None]:
        return self.data.series(m.symbol, "ohlcv", self.timeframe), self.data.series(m.symbol, "mark", self.timeframe)

    def _bar(self, m: MarketSpec, i: int, bars: _Series, marks: _Series | None) -> _Bar:
        c = bars.columns
        bar = (float(c["open"][i]), float(c["high"][i]), float(c["low"][i]))
        mark, mark_close = bar, float(c["close"][i])  # no mark data: the last price stands in (architecture.md)
        if marks is not None:
            j = int(np.searchsorted(marks.times, bars.times[i]))
            if j < len(marks) and marks.times[j] == bars.times[i]:
                mc = marks.columns
                mark, mark_close = (float(mc["open"][j]), float(mc["high"][j]), float(mc["low"][j])), float(mc["close"][j])
        return _Bar(int(bars.times[i]), int(bars.available[i]), bar, mark, mark_close)

    def _current_bar(self, m: MarketSpec, now: int) -> _Bar:
        bars, marks = self._series(m)
        if bars is None:
            raise ApiError(400, -1000, f"No {self.timeframe} candles stored for {m.id}.")
        i = int(np.searchsorted(bars.times, now, side="right")) - 1
        if i < 0 or bars.available[i] <= now:
            raise ApiError(400, -1000, f"No {self.timeframe} candle of {m.id} contains this replay time; "
                                       "nothing to fill at.")
        return self._bar(m, i, bars, marks)

    def _mark_now(self, m: MarketSpec, now: int) -> float:
        """Mark price now: the last closed mark close (last price close without mark data)."""
        bars, marks = self._series(m)
        for s in (marks, bars):
            i = s.last_before(now) if s is not None else None
            if i is not None:
                return float(s.columns["close"][i])
        return math.nan

    # ------------------------------------------------------------------ books

    def _market(self, params: dict[str, str]) -> MarketSpec:
        return self.api._market(params)

    def _step(self, m: MarketSpec) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
        """(step, min qty, max market qty, tick, min notional) from the served exchangeInfo filters."""
        info = self.api._symbol_info(m)
        f = {x["filterType"]: x for x in info["filters"]}
        return (Decimal(f["LOT_SIZE"]["stepSize"]), Decimal(f["LOT_SIZE"]["minQty"]),
                Decimal(f["MARKET_LOT_SIZE"]["maxQty"]), Decimal(f["PRICE_FILTER"]["tickSize"]),
                Decimal(f["MIN_NOTIONAL"]["notional"]))

    def _qty_str(self, m: MarketSpec, qty: float) -> str:
        step = self._step(m)[0]
        decimals = max(0, -step.normalize().as_tuple().exponent)
        return f"{qty:.{decimals}f}"

    def _client_id_used(self, cid: str) -> bool:
        return cid in self._cids

    def _check_mode(self, m: MarketSpec, params: dict[str, str]) -> None:
        side = params.get("positionSide", "BOTH")
        if self.kv["dual"] or side != "BOTH":
            raise ApiError(400, -4061, "Order's position side does not match user's setting.")
        if self.kv["multi_assets"]:
            raise ApiError(400, -2010, "The replay exchange trades single-asset mode only; "
                                       "switch multi-assets mode off (POST /fapi/v1/multiAssetsMargin).")
        if self.settings(m.id)["margin"] != "ISOLATED":
            raise ApiError(400, -2010, f"The replay exchange margins positions isolated only; set {m.id} to "
                                       "ISOLATED first (ccxt set_margin_mode('isolated')).")

    # ------------------------------------------------------------------ booking

    def _new_trade(self, m: MarketSpec, order: dict, side: int, qty: float, price: float, fee: float,
                   pnl: float, when: int) -> None:
        tid = self._next("next_trade")
        trade = {"buyer": side > 0, "commission": _num(fee), "commissionAsset": ASSET, "id": tid, "maker": False,
                 "orderId": order["orderId"], "price": _num(price), "qty": self._qty_str(m, qty),
                 "quoteQty": _num(qty * price), "realizedPnl": _num(pnl), "side": "BUY" if side > 0 else "SELL",
                 "positionSide": "BOTH", "symbol": m.id, "time": when}
        self.trades[tid] = trade
        self._save("trade", tid, trade)
        if pnl != 0.0:
            self._income(m, "REALIZED_PNL", pnl, when, str(tid))
        if fee != 0.0:
            self._income(m, "COMMISSION", -fee, when, str(tid))

    def _fill(self, m: MarketSpec, order: dict, side: int, qty: float, price: float, when: int,
              fee: float | None = None) -> None:
        """Book a taker fill of ``qty`` at ``price`` into the position and the cash (isolated)."""
        fee = accounting.taker_fee(qty, price, self.costs) if fee is None else fee
        cash = float(self.kv["cash"])
        pos = self.positions.get(m.id)
        pnl_total = 0.0
        remaining = qty
        if pos is not None and pos["side"] != side:  # reduce / close / flip
            closed = min(remaining, pos["qty"])
            pnl = pos["side"] * closed * (price - pos["entry"])
            released = pos["wallet"] * closed / pos["qty"]
            cash += released + pnl
            pnl_total += pnl
            pos["qty"] -= closed
            pos["wallet"] -= released
            remaining -= closed
            if pos["qty"] <= 1e-12:
                self._close_position(m, when)
                pos = None
            else:
                pos["update"] = when
                self.positions[m.id] = pos
                self._save("position", m.id, pos)
        if remaining > 1e-12:
            b = accounting.brackets(m.id)
            margin = accounting.initial_margin(remaining * price, self.settings(m.id)["leverage"], b)
            cash -= margin
            if pos is None:
                pos = {"side": side, "qty": remaining, "entry": price, "wallet": margin, "update": when,
                       "funding": 0.0}
            else:
                total = pos["qty"] + remaining
                pos["entry"] = (pos["entry"] * pos["qty"] + price * remaining) / total
                pos["qty"], pos["wallet"], pos["update"] = total, pos["wallet"] + margin, when
            self.positions[m.id] = pos
            self._save("position", m.id, pos)
        cash -= fee
        self._set("cash", cash)
        order.update(status="FILLED", executedQty=self._qty_str(m, qty), cumQty=self._qty_str(m, qty),
                     cumQuote=_num(qty * price), avgPrice=_num(price), updateTime=when)
        self._save("order", order["orderId"], order)
        self._new_trade(m, order, side, qty, price, fee, pnl_total, when)  # realizedPnl: before fees, as Binance

    def _add_order(self, order: dict) -> None:
        self.orders[order["orderId"]] = order
        self._cids.add(order["clientOrderId"])
        self._save("order", order["orderId"], order)

    def _close_position(self, m: MarketSpec, when: int) -> None:
        self.positions.pop(m.id, None)
        self._save("position", m.id, None)
        for algo in self.algos.values():  # Binance cancels reduce-only/close-position orders of a flat position
            if algo["symbol"] == m.id and algo["algoStatus"] == "NEW" and (algo["reduceOnly"] or algo["closePosition"]):
                algo.update(algoStatus="EXPIRED", updateTime=when)
                self._save("algo", algo["algoId"], algo)

    def _order_doc(self, m: MarketSpec, side: int, qty: float, cid: str, reduce_only: bool, when: int,
                   orig_type: str = "MARKET", stop_price: float = 0.0, working: str = "CONTRACT_PRICE",
                   close_position: bool = False) -> dict:
        oid = self._next("next_order")
        return {"orderId": oid, "symbol": m.id, "status": "NEW", "clientOrderId": cid, "price": "0",
                "avgPrice": "0", "origQty": self._qty_str(m, qty), "executedQty": "0", "cumQty": "0",
                "cumQuote": "0", "timeInForce": "GTC", "type": "MARKET", "reduceOnly": reduce_only,
                "closePosition": close_position, "side": "BUY" if side > 0 else "SELL", "positionSide": "BOTH",
                "stopPrice": _num(stop_price), "workingType": working, "priceProtect": False, "origType": orig_type,
                "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0, "time": when,
                "updateTime": when}

    def liquidate(self, symbol_id: str, when: int | None = None) -> bool:
        """The exchange liquidates the open position of ``symbol_id`` now (a fault; True if there was one).

        Booked like a real liquidation: closed at the bankruptcy price, no fee, the whole isolated
        margin lost.
        """
        with self.lock:
            pos = self.positions.get(symbol_id)
            m = self.data.markets.get(symbol_id)
            if pos is None or m is None:
                return False
            self._liquidate(m, pos, self.clock_ms if when is None else when)
            self.flush()
            return True

    def _liquidate(self, m: MarketSpec, pos: dict, when: int) -> None:
        price = accounting.bankruptcy(pos["side"], pos["qty"], pos["entry"], pos["wallet"])
        order = self._order_doc(m, -pos["side"], pos["qty"], f"autoclose-{when}", True, when, "LIQUIDATION")
        self._add_order(order)
        self._fill(m, order, -pos["side"], pos["qty"], price, when, fee=0.0)

    def vanish_stops(self, symbol_id: str, when: int | None = None) -> int:
        """The exchange cancels every resting conditional order of ``symbol_id`` (a fault); how many."""
        with self.lock:
            n = self._vanish(symbol_id, self.clock_ms if when is None else when)
            self.flush()
            return n

    def _vanish(self, symbol_id: str, when: int) -> int:
        n = 0
        for algo in self.algos.values():
            if algo["symbol"] == symbol_id and algo["algoStatus"] == "NEW":
                algo.update(algoStatus="EXPIRED", updateTime=when)
                self._save("algo", algo["algoId"], algo)
                n += 1
        return n

    # ------------------------------------------------------------------ the clock moves

    def advance(self, now: int) -> None:
        """Book every bar closed up to ``now`` (conditional orders, liquidation, funding), then due fills."""
        processed: dict[str, int] = dict(self.kv["processed"])
        # the open books, scanned once per request (all orders ever placed stay in self.orders)
        waiting = sorted((o for o in self.orders.values() if o["status"] == "NEW"), key=lambda o: o["orderId"])
        resting = sorted((a for a in self.algos.values() if a["algoStatus"] == "NEW"), key=lambda a: a["algoId"])
        for m in self.data.markets.values():
            bars, marks = self._series(m)
            if bars is None or not len(bars):
                continue
            done = processed.get(m.id, 0)
            hi = int(np.searchsorted(bars.available, now, side="right"))
            lo = int(np.searchsorted(bars.available, done, side="right"))
            orders = [o for o in waiting if o["symbol"] == m.id]
            algos = [a for a in resting if a["symbol"] == m.id]
            if m.id in self.positions or orders or algos:
                funding = self.data.series(m.symbol, "funding_rate")
                for i in range(lo, hi):
                    self._book_bar(m, self._bar(m, i, bars, marks), funding, orders, algos)
            if hi > 0 and bars.available[hi - 1] > done:
                processed[m.id] = int(bars.available[hi - 1])
            for order in orders:  # delayed fills due inside the bar still open now: at its open
                if order["status"] == "NEW" and order.get("fill_at", math.inf) <= now:
                    try:
                        bar = self._current_bar(m, int(order["fill_at"]))
                    except ApiError:
                        order.update(status="EXPIRED", updateTime=now)
                        self._save("order", order["orderId"], order)
                        continue
                    self._execute_market(m, order, bar, int(order["fill_at"]))
        self._set("processed", processed)
        if now > self.clock_ms:
            self._set("clock_ms", int(now))

    def _execute_market(self, m: MarketSpec, order: dict, bar: _Bar, when: int) -> None:
        side = _side(order["side"])
        qty = float(order["origQty"])
        if order["reduceOnly"]:
            pos = self.positions.get(m.id)
            if pos is None or pos["side"] == side:
                order.update(status="EXPIRED", updateTime=when)
                self._save("order", order["orderId"], order)
                return
            qty = min(qty, pos["qty"])
        price = accounting.market_price(side, bar.bar[0], bar.bar[1], bar.bar[2], self.costs)
        self._fill(m, order, side, qty, price, when)

    def _book_bar(self, m: MarketSpec, bar: _Bar, funding: _Series | None, orders: list[dict],
                  algos: list[dict]) -> None:
        # delayed fills due inside this bar happen at its open, before the bar's exits
        for order in orders:
            if order["status"] == "NEW" and order.get("fill_at", math.inf) < bar.close_ms:
                self._execute_market(m, order, bar, max(int(order["fill_at"]), bar.open_ms))
        if any(a["algoStatus"] == "NEW" for a in algos) and self.faults.take("vanish_stop"):
            self._vanish(m.id, bar.close_ms)
        pos = self.positions.get(m.id)
        if pos is not None and self.faults.take("liquidate"):
            self._liquidate(m, pos, bar.close_ms)
            pos = None
        resting = [a for a in algos if a["algoStatus"] == "NEW" and a["createTime"] < bar.close_ms]
        if pos is not None:
            self._position_exits(m, pos, bar, resting)
        self._entry_triggers(m, bar, resting)
        pos = self.positions.get(m.id)
        if pos is not None and funding is not None and len(funding):
            tau = funding.times // 1000 * 1000  # Binance stamps settlements a few ms late (bot.data.join_funding)
            lo = int(np.searchsorted(tau, bar.open_ms, side="right"))
            hi = int(np.searchsorted(tau, bar.close_ms, side="right"))
            if hi > lo:
                # several settlements inside one bar are summed, as the backtest's frame joins them
                rate = float(np.sum(funding.columns["funding_rate"][lo:hi]))
                flow = accounting.funding_payment(pos["side"], pos["qty"], bar.mark_close, rate)
                pos["wallet"] += flow
                pos["funding"] = pos.get("funding", 0.0) + flow
                pos["update"] = bar.close_ms
                self._save("position", m.id, pos)
                self._income(m, "FUNDING_FEE", flow, bar.close_ms, "")

    def _income(self, m: MarketSpec, kind: str, amount: float, when: int, trade_id: str) -> None:
        iid = self._next("next_income")
        doc = {"symbol": m.id, "incomeType": kind, "income": _num(amount), "asset": ASSET, "info": "",
               "time": when, "tranId": iid, "tradeId": trade_id}
        self.incomes[iid] = doc
        self._save("income", iid, doc)

    def _position_exits(self, m: MarketSpec, pos: dict, bar: _Bar, resting: list[dict]) -> None:
        side = pos["side"]
        closing = [a for a in resting if _side(a["side"]) == -side and
                   (a["reduceOnly"] or a["closePosition"])]
        stops = [a for a in closing if a["orderType"] == "STOP_MARKET"]
        tps = [a for a in closing if a["orderType"] == "TAKE_PROFIT_MARKET"]
        pick = max if side > 0 else min  # the stop met first on the way against the position
        stop = pick(stops, key=lambda a: float(a["triggerPrice"])) if stops else None
        tp = (min if side > 0 else max)(tps, key=lambda a: float(a["triggerPrice"])) if tps else None
        working = (stop or tp or {}).get("workingType", "CONTRACT_PRICE")
        detect = bar.mark if working == "MARK_PRICE" else bar.bar
        b = accounting.brackets(m.id)
        lp = accounting.liq_price(side, pos["qty"], pos["entry"], pos["wallet"], b)
        reason, _ = accounting.intrabar(side, detect, bar.mark, float(stop["triggerPrice"]) if stop else math.nan,
                                        float(tp["triggerPrice"]) if tp else math.nan, lp, self.costs)
        if reason == "liquidation":
            self._liquidate(m, pos, bar.close_ms)
        elif reason == "stop" and stop is not None:
            trigger = float(stop["triggerPrice"])
            gap = detect[0] <= trigger if side > 0 else detect[0] >= trigger
            ref = bar.bar[0] if gap else trigger
            self._trigger(m, stop, accounting.market_price(-side, ref, bar.bar[1], bar.bar[2], self.costs), bar)
        elif reason == "take_profit" and tp is not None:
            price = accounting.take_profit_price(side, float(tp["triggerPrice"]), *bar.bar, self.costs)
            self._trigger(m, tp, price, bar)

    def _trigger(self, m: MarketSpec, algo: dict, price: float, bar: _Bar) -> None:
        """A conditional order fires: the regular MARKET order Binance creates, filled at ``price``."""
        side = _side(algo["side"])
        pos = self.positions.get(m.id)
        reduce = algo["reduceOnly"] or algo["closePosition"]
        if reduce and (pos is None or pos["side"] == side):
            algo.update(algoStatus="EXPIRED", updateTime=bar.close_ms)
            self._save("algo", algo["algoId"], algo)
            return
        qty = pos["qty"] if algo["closePosition"] else float(algo["quantity"])
        if reduce:
            qty = min(qty, pos["qty"])
        order = self._order_doc(m, side, qty, f"{algo['clientAlgoId'][:27]}-fired"[:36], reduce, bar.close_ms,
                                algo["orderType"], float(algo["triggerPrice"]), algo["workingType"],
                                algo["closePosition"])
        self._add_order(order)
        algo.update(algoStatus="FINISHED", actualOrderId=str(order["orderId"]), triggerTime=bar.close_ms,
                    updateTime=bar.close_ms, actualPrice=_num(price))
        self._save("algo", algo["algoId"], algo)
        self._fill(m, order, side, qty, price, bar.close_ms)

    def _entry_triggers(self, m: MarketSpec, bar: _Bar, resting: list[dict]) -> None:
        """Conditional orders that open or add (not reduce-only): fire when the range crosses the trigger."""
        for algo in resting:
            if algo["reduceOnly"] or algo["closePosition"] or algo["algoStatus"] != "NEW":
                continue
            side, trigger = _side(algo["side"]), float(algo["triggerPrice"])
            detect = bar.mark if algo["workingType"] == "MARK_PRICE" else bar.bar
            rising = (side > 0) == (algo["orderType"] == "STOP_MARKET")  # buy stop / sell take profit
            hit = detect[1] >= trigger if rising else detect[2] <= trigger
            if hit:
                gap = detect[0] >= trigger if rising else detect[0] <= trigger
                ref = bar.bar[0] if gap else trigger
                self._trigger(m, algo, accounting.market_price(side, ref, bar.bar[1], bar.bar[2], self.costs), bar)

    # ------------------------------------------------------------------ routes

    def _register(self) -> None:
        for method, path, handler, weight, security in (
            ("GET", "/fapi/v3/account", self.account, 5, "USER_DATA"),
            ("GET", "/fapi/v2/account", self.account, 5, "USER_DATA"),
            ("GET", "/fapi/v3/positionRisk", self.position_risk, 5, "USER_DATA"),
            ("GET", "/fapi/v2/positionRisk", self.position_risk, 5, "USER_DATA"),
            ("GET", "/fapi/v1/leverageBracket", self.leverage_bracket, 1, "USER_DATA"),
            ("POST", "/fapi/v1/leverage", self.set_leverage, 1, "TRADE"),
            ("POST", "/fapi/v1/marginType", self.set_margin_type, 1, "TRADE"),
            ("GET", "/fapi/v1/positionSide/dual", self.get_dual, 30, "USER_DATA"),
            ("POST", "/fapi/v1/positionSide/dual", self.set_dual, 1, "TRADE"),
            ("GET", "/fapi/v1/multiAssetsMargin", self.get_multi_assets, 30, "USER_DATA"),
            ("POST", "/fapi/v1/multiAssetsMargin", self.set_multi_assets, 1, "TRADE"),
            ("POST", "/fapi/v1/order", self.new_order, 1, "TRADE"),
            ("GET", "/fapi/v1/order", self.query_order, 1, "USER_DATA"),
            ("DELETE", "/fapi/v1/order", self.cancel_order, 1, "TRADE"),
            ("GET", "/fapi/v1/openOrders", self.open_orders, 1, "USER_DATA"),
            ("GET", "/fapi/v1/userTrades", self.user_trades, 5, "USER_DATA"),
            ("GET", "/fapi/v1/income", self.income, 30, "USER_DATA"),
            ("POST", "/fapi/v1/algoOrder", self.new_algo, 0, "TRADE"),
            ("GET", "/fapi/v1/algoOrder", self.query_algo, 1, "USER_DATA"),
            ("DELETE", "/fapi/v1/algoOrder", self.cancel_algo, 1, "TRADE"),
            ("GET", "/fapi/v1/openAlgoOrders", self.open_algos, 1, "USER_DATA"),
        ):
            self.api.register(method, path, Route(self._locked(handler), weight, security))

    def _locked(self, handler: Any) -> Any:
        def run(req: Request) -> Any:
            with self.lock:
                try:
                    self.advance(req.now_ms)
                    return handler(req)
                finally:
                    self.flush()
        return run

    # -- account

    def _position_view(self, m: MarketSpec, now: int) -> dict:
        pos = self.positions.get(m.id)
        s = self.settings(m.id)
        if pos is None:
            return {"symbol": m.id, "positionSide": "BOTH", "positionAmt": self._qty_str(m, 0.0), "entryPrice": "0.0",
                    "breakEvenPrice": "0.0", "markPrice": _num(self._mark_now(m, now)), "unRealizedProfit": "0",
                    "liquidationPrice": "0", "isolatedMargin": "0", "notional": "0", "marginAsset": ASSET,
                    "isolatedWallet": "0", "initialMargin": "0", "maintMargin": "0", "positionInitialMargin": "0",
                    "openOrderInitialMargin": "0", "adl": 0, "bidNotional": "0", "askNotional": "0",
                    "updateTime": 0, "leverage": str(s["leverage"]),
                    "marginType": "isolated" if s["margin"] == "ISOLATED" else "cross"}
        side, qty, entry, wallet = pos["side"], pos["qty"], pos["entry"], pos["wallet"]
        mark = self._mark_now(m, now)
        upnl = side * qty * (mark - entry)
        notional = qty * mark
        b = accounting.brackets(m.id)
        maint, _ = accounting.maintenance(notional, b)
        lp = accounting.liq_price(side, qty, entry, wallet, b)
        fee = self.costs.taker_fee
        breakeven = entry * (1 + fee) / (1 - fee) if side > 0 else entry * (1 - fee) / (1 + fee)
        return {"symbol": m.id, "positionSide": "BOTH", "positionAmt": self._qty_str(m, side * qty),
                "entryPrice": _num(entry), "breakEvenPrice": _num(breakeven), "markPrice": _num(mark),
                "unRealizedProfit": _num(upnl), "liquidationPrice": _num(max(lp, 0.0)),
                "isolatedMargin": _num(wallet + upnl), "notional": _num(side * notional), "marginAsset": ASSET,
                "isolatedWallet": _num(wallet), "initialMargin": _num(notional / s["leverage"]),
                "maintMargin": _num(maint), "positionInitialMargin": _num(notional / s["leverage"]),
                "openOrderInitialMargin": "0", "adl": 1, "bidNotional": "0", "askNotional": "0",
                "updateTime": int(pos["update"]), "leverage": str(s["leverage"]), "marginType": "isolated"}

    def totals(self, now: int) -> dict[str, float]:
        """Wallet, unrealized PnL, margin and available balance in USDT at replay time ``now``."""
        cash = float(self.kv["cash"])
        wallets = sum(p["wallet"] for p in self.positions.values())
        upnl = 0.0
        for mid, p in self.positions.items():
            upnl += p["side"] * p["qty"] * (self._mark_now(self.data.markets[mid], now) - p["entry"])
        return {"wallet": cash + wallets, "unrealized": upnl, "margin": wallets, "available": cash}

    def account(self, req: Request) -> dict:
        t = self.totals(req.now_ms)
        views = [self._position_view(m, req.now_ms) for m in sorted(self.data.markets.values(), key=lambda m: m.id)]
        asset = {"asset": ASSET, "walletBalance": _num(t["wallet"]), "unrealizedProfit": _num(t["unrealized"]),
                 "marginBalance": _num(t["wallet"] + t["unrealized"]), "maintMargin": _num(sum(
                     float(v["maintMargin"]) for v in views)), "initialMargin": _num(t["margin"]),
                 "positionInitialMargin": _num(t["margin"]), "openOrderInitialMargin": "0",
                 "crossWalletBalance": _num(t["available"]), "crossUnPnl": "0",
                 "availableBalance": _num(t["available"]), "maxWithdrawAmount": _num(t["available"]),
                 "updateTime": max(1, self.clock_ms)}
        return {"totalInitialMargin": asset["initialMargin"], "totalMaintMargin": asset["maintMargin"],
                "totalWalletBalance": asset["walletBalance"], "totalUnrealizedProfit": asset["unrealizedProfit"],
                "totalMarginBalance": asset["marginBalance"], "totalPositionInitialMargin": asset["initialMargin"],
                "totalOpenOrderInitialMargin": "0", "totalCrossWalletBalance": asset["crossWalletBalance"],
                "totalCrossUnPnl": "0", "availableBalance": asset["availableBalance"],
                "maxWithdrawAmount": asset["maxWithdrawAmount"], "assets": [asset],
                "positions": [{k: v[k] for k in ("symbol", "positionSide", "positionAmt", "unRealizedProfit",
                                                   "isolatedMargin", "notional", "isolatedWallet", "initialMargin",
                                                   "maintMargin", "updateTime")} for v in views]}

    def position_risk(self, req: Request) -> list:
        markets = ([self._market(req.params)] if req.params.get("symbol")
                   else sorted(self.data.markets.values(), key=lambda m: m.id))
        views = [self._position_view(m, req.now_ms) for m in markets]
        if req.path.startswith("/fapi/v3"):
            for v in views:  # v3 carries neither leverage nor marginType (binance-usdm.md §6.2)
                v.pop("leverage")
                v.pop("marginType")
        return views

    def leverage_bracket(self, req: Request) -> Any:
        markets = ([self._market(req.params)] if req.params.get("symbol")
                   else sorted(self.data.markets.values(), key=lambda m: m.id))
        out = []
        for m in markets:
            b = accounting.brackets(m.id)
            out.append({"symbol": m.id, "notionalCoef": 1.0, "brackets": [
                {"bracket": i + 1, "initialLeverage": int(b.max_leverage[i]), "notionalCap": float(b.cap[i]),
                 "notionalFloor": float(b.floor[i]), "maintMarginRatio": float(b.mmr[i]), "cum": float(b.cum[i])}
                for i in range(len(b.cap))]})
        return out[0] if req.params.get("symbol") else out

    def set_leverage(self, req: Request) -> dict:
        m = self._market(req.params)
        raw = req.params.get("leverage", "")
        b = accounting.brackets(m.id)
        if not raw.isdigit() or not 1 <= int(raw) <= int(b.max_leverage[0]):
            raise ApiError(400, -4028, f"Leverage {raw} is not valid")
        lev = int(raw)
        pos = self.positions.get(m.id)
        if pos is not None and accounting.max_leverage(pos["qty"] * pos["entry"], b) < lev:
            raise ApiError(400, -2027, "Exceeded the maximum allowable position at current leverage.")
        s = dict(self.settings(m.id), leverage=lev)
        self._put_settings(m.id, s)
        cap = max(float(b.cap[i]) for i in range(len(b.cap)) if b.max_leverage[i] >= lev)
        return {"leverage": lev, "maxNotionalValue": _num(cap), "symbol": m.id}

    def set_margin_type(self, req: Request) -> dict:
        m = self._market(req.params)
        mode = req.params.get("marginType", "").upper()
        if mode not in ("ISOLATED", "CROSSED"):
            raise ApiError(400, -1116, "Invalid marginType.")
        s = self.settings(m.id)
        if s["margin"] == mode:
            raise ApiError(400, -4046, "No need to change margin type.")
        if m.id in self.positions:
            raise ApiError(400, -4048, "Margin type cannot be changed if there exists position.")
        if any(a["symbol"] == m.id and a["algoStatus"] == "NEW" for a in self.algos.values()):
            raise ApiError(400, -4047, "Margin type cannot be changed if there exists open orders.")
        self._put_settings(m.id, dict(s, margin=mode))
        return {"code": 200, "msg": "success"}

    def get_dual(self, req: Request) -> dict:
        return {"dualSidePosition": bool(self.kv["dual"])}

    def set_dual(self, req: Request) -> dict:
        want = _bool(req.params, "dualSidePosition")
        if want == bool(self.kv["dual"]):
            raise ApiError(400, -4059, "No need to change position side.")
        if self.positions or any(a["algoStatus"] == "NEW" for a in self.algos.values()):
            raise ApiError(400, -4068, "Position side cannot be changed if there exists position.")
        self._set("dual", want)
        return {"code": 200, "msg": "success"}

    def get_multi_assets(self, req: Request) -> dict:
        return {"multiAssetsMargin": bool(self.kv["multi_assets"])}

    def set_multi_assets(self, req: Request) -> dict:
        want = _bool(req.params, "multiAssetsMargin")
        if want == bool(self.kv["multi_assets"]):
            raise ApiError(400, -4171, "Adjusted asset mode is currently set and does not need to be adjusted.")
        self._set("multi_assets", want)
        return {"code": 200, "msg": "success"}

    # -- orders

    def _validate_qty(self, m: MarketSpec, params: dict[str, str], required: bool = True) -> Decimal | None:
        qty = _decimal(params, "quantity")
        if qty is None:
            if required:
                raise ApiError(400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
            return None
        step, min_qty, max_qty, _, _ = self._step(m)
        if qty <= 0:
            raise ApiError(400, -4003, "Quantity less than or equal to zero.")
        if qty % step != 0:
            raise ApiError(400, -1111, "Precision is over the maximum defined for this asset.")
        if qty < min_qty or qty > max_qty:
            raise ApiError(400, -1013, "Filter failure: MARKET_LOT_SIZE")
        return qty

    def _client_id(self, params: dict[str, str], *names: str) -> str:
        cid = _param(params, *names)
        if cid is None:
            return f"replay-{self._next('next_order')}"
        if not _CLIENT_ID.match(cid):
            raise ApiError(400, -1100, f"Illegal characters found in parameter '{names[0]}'; legal range is "
                                       "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
        if self._client_id_used(cid):
            raise ApiError(400, -4116, "ClientOrderId is duplicated.")
        return cid

    def _accepted(self, body: dict) -> Any:
        """The reply to an accepted order placement, unless a trading fault swallows it."""
        if self.faults.take("lost_reply"):
            return Response(200, body, drop=True)
        if self.faults.take("status_unknown"):
            return Response(408, {"code": -1007, "msg": "Timeout waiting for response from backend server. "
                                                        "Send status unknown; execution status unknown."})
        return body

    def new_order(self, req: Request) -> Any:
        p = req.params
        m = self._market(p)
        side = _side(p.get("side", ""))
        kind = p.get("type", "")
        if kind in _CONDITIONAL:
            raise ApiError(400, -4120, "Order type not supported for this endpoint. "
                                       "Please use the Algo Order API endpoints instead.")
        if kind != "MARKET":
            raise ApiError(400, -1116, "Invalid orderType." if kind != "LIMIT" else
                           "Invalid orderType: the replay exchange has no order book and fills MARKET orders only.")
        self._check_mode(m, p)
        qty = self._validate_qty(m, p)
        assert qty is not None
        reduce_only = _bool(p, "reduceOnly")
        cid = self._client_id(p, "newClientOrderId")
        if self.faults.take("reject_margin"):
            raise ApiError(400, -2019, "Margin is insufficient.")
        bar = self._current_bar(m, req.now_ms)
        pos = self.positions.get(m.id)
        q = float(qty)
        if reduce_only:
            if pos is None or pos["side"] == side:
                raise ApiError(400, -2022, "ReduceOnly Order is rejected.")
            q = min(q, pos["qty"])
        price = accounting.market_price(side, *bar.bar, self.costs)
        opening = q - (pos["qty"] if pos is not None and pos["side"] != side else 0.0)
        if not reduce_only and opening > 1e-12:
            min_notional = float(self._step(m)[4])
            if q * price < min_notional:
                raise ApiError(400, -4164, f"Order's notional must be no smaller than {min_notional:g} "
                                           "(unless you choose reduce only).")
            b = accounting.brackets(m.id)
            lev = self.settings(m.id)["leverage"]
            new_qty = opening + (pos["qty"] if pos is not None and pos["side"] == side else 0.0)
            if accounting.max_leverage(new_qty * price, b) < lev:
                raise ApiError(400, -2027, "Exceeded the maximum allowable position at current leverage.")
            need = accounting.initial_margin(opening * price, lev, b) + accounting.taker_fee(q, price, self.costs)
            released = 0.0
            if pos is not None and pos["side"] != side:
                released = pos["wallet"] + pos["side"] * pos["qty"] * (price - pos["entry"])
            if need > float(self.kv["cash"]) + released + 1e-9:
                raise ApiError(400, -2019, "Margin is insufficient.")
        order = self._order_doc(m, side, q, cid, reduce_only, req.now_ms)
        self._add_order(order)
        if self.faults.take("delayed_fill"):
            order["fill_at"] = req.now_ms + self.faults.fill_delay_ms
            self._save("order", order["orderId"], order)
        else:
            self._execute_market(m, order, bar, req.now_ms)
        return self._accepted(self._public_order(order))

    def _public_order(self, order: dict) -> dict:
        return {k: v for k, v in order.items() if k != "fill_at"}

    def _find_order(self, p: dict[str, str], code: int, msg: str) -> dict:
        m = self._market(p)
        oid, cid = p.get("orderId"), p.get("origClientOrderId")
        if oid is None and cid is None:
            raise ApiError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        for order in self.orders.values():
            if order["symbol"] == m.id and ((oid is not None and str(order["orderId"]) == oid) or
                                            (oid is None and order["clientOrderId"] == cid)):
                return order
        raise ApiError(400, code, msg)

    def query_order(self, req: Request) -> dict:
        return self._public_order(self._find_order(req.params, -2013, "Order does not exist."))

    def cancel_order(self, req: Request) -> dict:
        order = self._find_order(req.params, -2011, "Unknown order sent.")
        if order["status"] != "NEW":
            raise ApiError(400, -2011, "Unknown order sent.")
        order.update(status="CANCELED", updateTime=req.now_ms)
        self._save("order", order["orderId"], order)
        return self._public_order(order)

    def open_orders(self, req: Request) -> list:
        sym = self._market(req.params).id if req.params.get("symbol") else None
        return [self._public_order(o) for o in sorted(self.orders.values(), key=lambda o: o["orderId"])
                if o["status"] == "NEW" and (sym is None or o["symbol"] == sym)]

    def user_trades(self, req: Request) -> list:
        m = self._market(req.params)
        start, end = req.params.get("startTime"), req.params.get("endTime")
        from_id = req.params.get("fromId")
        raw_limit = req.params.get("limit", "500")
        limit = min(int(raw_limit), 1000) if raw_limit.isdigit() and int(raw_limit) > 0 else 500
        rows = sorted((t for t in self.trades.values() if t["symbol"] == m.id), key=lambda t: t["id"])
        if from_id is not None and from_id.isdigit():
            rows = [t for t in rows if t["id"] >= int(from_id)][:limit]
        else:
            if start is not None and start.isdigit():
                rows = [t for t in rows if t["time"] >= int(start)]
            if end is not None and end.isdigit():
                rows = [t for t in rows if t["time"] <= int(end)]
            rows = rows[:limit] if start is not None else rows[-limit:]
        return rows

    def income(self, req: Request) -> list:
        """Income history (ccxt ``fetch_funding_history``): FUNDING_FEE, COMMISSION, REALIZED_PNL."""
        p = req.params
        sym = self._market(p).id if p.get("symbol") else None
        kind = p.get("incomeType")
        start, end = p.get("startTime"), p.get("endTime")
        raw_limit = p.get("limit", "100")
        limit = min(int(raw_limit), 1000) if raw_limit.isdigit() and int(raw_limit) > 0 else 100
        rows = [r for _, r in sorted(self.incomes.items())
                if (sym is None or r["symbol"] == sym) and (kind is None or r["incomeType"] == kind)
                and (start is None or not start.isdigit() or r["time"] >= int(start))
                and (end is None or not end.isdigit() or r["time"] <= int(end))]
        return rows[:limit] if start is not None else rows[-limit:]

    # -- algo orders

    def new_algo(self, req: Request) -> Any:
        p = req.params
        m = self._market(p)
        if p.get("algoType") != "CONDITIONAL":
            raise ApiError(400, -1116, "Invalid algoType: only CONDITIONAL is supported.")
        side = _side(p.get("side", ""))
        kind = p.get("type", "")
        if kind not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise ApiError(400, -1116, "Invalid orderType: the replay exchange serves STOP_MARKET and "
                                       "TAKE_PROFIT_MARKET conditional orders.")
        self._check_mode(m, p)
        close_position = _bool(p, "closePosition")
        reduce_only = _bool(p, "reduceOnly")
        if close_position and reduce_only:
            raise ApiError(400, -1106, "Parameter 'reduceOnly' sent when not required.")
        qty = self._validate_qty(m, p, required=not close_position)
        if close_position and qty is not None:
            raise ApiError(400, -1106, "Parameter 'quantity' sent when not required.")
        trigger = _decimal(p, "triggerPrice")
        if trigger is None:
            raise ApiError(400, -1102, "Mandatory parameter 'triggerPrice' was not sent, was empty/null, or malformed.")
        tick = self._step(m)[3]
        if trigger <= 0 or trigger % tick != 0:
            raise ApiError(400, -4014, "Price not increased by tick size.")
        working = p.get("workingType", "CONTRACT_PRICE")
        if working not in ("MARK_PRICE", "CONTRACT_PRICE"):
            raise ApiError(400, -1116, "Invalid workingType.")
        cid = self._client_id(p, "clientAlgoId")
        if self.faults.take("reject_margin"):
            raise ApiError(400, -2019, "Margin is insufficient.")
        if sum(1 for a in self.algos.values() if a["symbol"] == m.id and a["algoStatus"] == "NEW") >= _MAX_ALGO_ORDERS:
            raise ApiError(400, -4045, "Reach max stop order limit.")
        if working == "MARK_PRICE":
            current = self._mark_now(m, req.now_ms)
        else:
            current = self._current_bar(m, req.now_ms).bar[0]
        rising = (side > 0) == (kind == "STOP_MARKET")
        if math.isfinite(current) and (float(trigger) <= current if rising else float(trigger) >= current):
            raise ApiError(400, -2021, "Order would immediately trigger.")
        aid = self._next("next_algo")
        algo = {"algoId": aid, "clientAlgoId": cid, "algoType": "CONDITIONAL", "orderType": kind, "symbol": m.id,
                "side": p["side"], "positionSide": "BOTH", "timeInForce": p.get("timeInForce", "GTC"),
                "quantity": self._qty_str(m, float(qty)) if qty is not None else "0", "algoStatus": "NEW",
                "triggerPrice": str(trigger), "price": "0", "icebergQuantity": None,
                "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": working, "priceMatch": "NONE",
                "closePosition": close_position, "priceProtect": _bool(p, "priceProtect"), "reduceOnly": reduce_only,
                "createTime": req.now_ms, "updateTime": req.now_ms, "triggerTime": 0, "goodTillDate": 0}
        self.algos[aid] = algo
        self._cids.add(cid)
        self._save("algo", aid, algo)
        return self._accepted(dict(algo))

    def _find_algo(self, p: dict[str, str], code: int, msg: str) -> dict:
        self._market(p)
        aid, cid = _param(p, "algoId"), _param(p, "clientAlgoId")
        if aid is None and cid is None:
            raise ApiError(400, -1102, "Param 'algoId' or 'clientAlgoId' must be sent, but both were empty/null!")
        for algo in self.algos.values():
            if (aid is not None and str(algo["algoId"]) == aid) or (aid is None and algo["clientAlgoId"] == cid):
                if algo["symbol"] == p.get("symbol"):
                    return algo
        raise ApiError(400, code, msg)

    def query_algo(self, req: Request) -> dict:
        return dict(self._find_algo(req.params, -2013, "Order does not exist."))

    def cancel_algo(self, req: Request) -> dict:
        algo = self._find_algo(req.params, -2011, "Unknown order sent.")
        if algo["algoStatus"] != "NEW":
            raise ApiError(400, -2011, "Unknown order sent.")
        algo.update(algoStatus="CANCELED", updateTime=req.now_ms)
        self._save("algo", algo["algoId"], algo)
        return {"algoId": algo["algoId"], "clientAlgoId": algo["clientAlgoId"], "code": "200", "msg": "success"}

    def open_algos(self, req: Request) -> list:
        sym = self._market(req.params).id if req.params.get("symbol") else None
        return [dict(a) for a in sorted(self.algos.values(), key=lambda a: a["algoId"])
                if a["algoStatus"] == "NEW" and (sym is None or a["symbol"] == sym)]

