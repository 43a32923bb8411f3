"""The replay account's book and matching engine on the replay clock.

Matching, decided once and tested in ``tests/bot/test_matching.py``:

* **Bars.** The engine steps through the bars of one timeframe (``timeframe``; default the finest
  stored timeframe that has both candles and mark-price candles) and books a bar when it has
  closed on the replay clock: conditional orders, own liquidation, then funding, in the order of
  the backtest (docs/architecture.md "Execution semantics", docs/methods.md §D.3.2).
* **Market orders** fill at the open of the bar that contains *now* (the backtest's "next bar's
  open" for an order sent at a bar close), slipped by the backtest's slippage and bounded by that
  bar's range (as in the backtest, the bound uses that bar's high/low, which are complete only at
  its close; it moves a fill only when the slippage would leave the bar), and pay the backtest's
  taker fee on the fill's notional. Only ``MARKET`` is
  served on ``/fapi/v1/order`` (there is no order book to rest a limit order in: ``LIMIT`` gets
  ``-1116``); conditional types get ``-4120`` as on Binance since 2025-12-09.
* **Conditional orders** (``STOP_MARKET``, ``TAKE_PROFIT_MARKET`` on the Algo API) trigger on the
  bar's mark range (``workingType=MARK_PRICE``) or last-price range (``CONTRACT_PRICE``, Binance's
  default). A stop fills like a market order at its trigger (at the open on a gap), a take
  profit as the backtest's take-profit fill; the stop wins when both could trigger (pessimistic).
  A triggered order becomes ``FINISHED`` with ``actualOrderId`` naming the regular ``MARKET``
  order it created (``origType`` the conditional type). An order placed inside a bar is checked
  against that whole bar (as the backtest's stop is active from the entry at the open). A
  position's stop and take profit are judged on the stop's working type (the take profit's when
  there is no stop); for a long the highest stop and the lowest take profit count (shorts mirror).
* **Reduce-only** orders need an opposite position and are cut to its size (``-2022``
  otherwise); ``closePosition`` closes whatever is open. When a position goes flat, the
  symbol's reduce-only and close-position conditional orders expire, as Binance cancels them.
* **Margin.** Positions are isolated, one-way (``BOTH``): an order while the symbol is in cross
  margin, or the account in hedge or multi-assets mode, is refused (``-2010`` naming the setting,
  ``-4061`` for a position side that does not match). The margin of a new position is
  ``notional / leverage`` (``-2027`` when the leverage exceeds the bracket's maximum); an order
  whose margin plus fee exceeds the available balance gets ``-2019``. Funding settles into the
  isolated margin at each settlement inside a bar, on the bar's mark close; the liquidation price
  follows docs/methods.md §D.1; a liquidation loses the whole isolated margin. Every formula is called
  through :mod:`bot.replay.accounting`.
* **Client ids** (``newClientOrderId``, ``clientAlgoId``) are unique per account for the whole
  life of the state file: reusing one gets ``-4116`` (Binance only promises uniqueness among open
  orders; a replay account is stricter so that a double submission can never pass unnoticed).
* **State** lives in a SQLite file (:class:`bot.replay.store.StateFile`): restart the server on
  the same file and the account, its orders and the replay clock continue.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from bot.replay import accounting
from bot.replay.accounting import Costs, CostsFor
from bot.replay.api import ApiError, BinanceUsdmApi, _num
from bot.replay.faults import TradeFaults
from bot.replay.market import MarketData, MarketSpec, _Series
from bot.replay.store import StateFile

ASSET = "USDT"
DEFAULT_LEVERAGE = 20


@dataclass
class _Bar:
    open_ms: int
    close_ms: int
    bar: tuple[float, float, float]     # open, high, low
    mark: tuple[float, float, float]
    mark_close: float
    next_mark_open: float  # the mark at the bar's close time τ (NaN when not stored)


def _side(value: str) -> int:
    if value == "BUY":
        return 1
    if value == "SELL":
        return -1
    raise ApiError(400, -1117, "Invalid side.")


class Ledger:
    """The book of one replay account over :class:`MarketData`, its state in a :class:`StateFile`:
    balances, positions, orders, trades, and the matching engine that moves them on the replay clock."""

    def __init__(self, data: MarketData, api: BinanceUsdmApi, state: StateFile, costs: Costs | CostsFor,
                 initial_balance: float = 10_000.0, timeframe: str | None = None,
                 faults: TradeFaults | None = None) -> None:
        self.data = data
        self.api = api
        self.state = state
        # one market's fee and slippage, as the backtest of that market charges them ([costs] per market)
        self.costs_for: CostsFor = costs if callable(costs) else (lambda symbol, c=costs: c)
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
        mark, mark_close = bar, float(c["close"][i])  # no mark data: the last price stands in (docs/architecture.md)
        next_open = float(c["open"][i + 1]) if i + 1 < len(bars) and bars.times[i + 1] == bars.available[i] \
            else math.nan
        if marks is not None:
            j = int(np.searchsorted(marks.times, bars.times[i]))
            if j < len(marks) and marks.times[j] == bars.times[i]:
                mc = marks.columns
                mark, mark_close = (float(mc["open"][j]), float(mc["high"][j]), float(mc["low"][j])), float(mc["close"][j])
                next_open = float(mc["open"][j + 1]) if j + 1 < len(marks) and \
                    marks.times[j + 1] == bars.available[i] else math.nan
        return _Bar(int(bars.times[i]), int(bars.available[i]), bar, mark, mark_close, next_open)

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
        if (side == "BOTH") == bool(self.kv["dual"]):  # BOTH in hedge mode, LONG/SHORT in one-way mode
            raise ApiError(400, -4061, "Order's position side does not match user's setting.")
        if self.kv["dual"]:
            raise ApiError(400, -2010, "The replay exchange trades one-way mode only; switch hedge mode off "
                                       "(POST /fapi/v1/positionSide/dual dualSidePosition=false).")
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
        fee = accounting.taker_fee(qty, price, self.costs_for(m.symbol)) if fee is None else fee
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
                       "funding": 0.0, "opened": when}
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
        price = accounting.market_price(side, bar.bar[0], bar.bar[1], bar.bar[2], self.costs_for(m.symbol))
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
                mark = accounting.funding_mark(bar.mark_close, bar.next_mark_open)
                flow = accounting.funding_payment(pos["side"], pos["qty"], mark, rate)
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
        entry_bar = bar.open_ms <= pos.get("opened", -1) < bar.close_ms
        reason, _ = accounting.intrabar(side, detect, bar.mark, float(stop["triggerPrice"]) if stop else math.nan,
                                        float(tp["triggerPrice"]) if tp else math.nan, lp, self.costs_for(m.symbol),
                                        entry_bar)
        if reason == "liquidation":
            self._liquidate(m, pos, bar.close_ms)
        elif reason == "stop" and stop is not None:
            trigger = float(stop["triggerPrice"])
            gap = detect[0] <= trigger if side > 0 else detect[0] >= trigger
            ref = bar.bar[0] if gap else trigger
            self._trigger(m, stop, accounting.market_price(-side, ref, bar.bar[1], bar.bar[2], self.costs_for(m.symbol)), bar)
        elif reason == "take_profit" and tp is not None:
            price = accounting.take_profit_price(side, float(tp["triggerPrice"]), *bar.bar, self.costs_for(m.symbol))
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
                self._trigger(m, algo, accounting.market_price(side, ref, bar.bar[1], bar.bar[2], self.costs_for(m.symbol)), bar)

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
        fee = self.costs_for(m.symbol).taker_fee
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

