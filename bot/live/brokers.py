"""Brokers: where the runner's intents become fills. Both book every fill through the core.

* `SimBroker` — ``cascade paper`` without an exchange: the intent decided at a close is filled at
  the next bar's open by `bot.core.bar_open` (the fast engine's own call), stops and take-profits
  inside that bar by the core's intrabar rule. No keys, no orders anywhere.
* `ExchangeBroker` — the replay exchange, a testnet or the real account, through
  `bot.gateway.Gateway`: an intent becomes market orders sent right after the close (filled at the
  next open by the exchange); each fill is booked into the core's state with
  `bot.core.open_position` / `close_position` at the exchange's fill price and quantity; the
  position's stop (and take-profit) rests on the exchange as a reduce-only conditional order kept
  at exactly one by `Gateway.protect`. At every close the broker reconciles first: a position the
  exchange closed (stop, take-profit, liquidation, a person) is booked with its real fill; a size
  that differs is adopted; an unknown position halts new entries.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from bot.core import (
    EXIT_LIQUIDATION,
    EXIT_PROTECTION,
    EXIT_STOP,
    EXIT_TAKE_PROFIT,
    Account,
    Bar,
    Intent,
    Position,
    Trade,
    bar_open,
    close_position,
    flat_position,
    open_position,
)
from bot.core.state import no_intent
from bot.gateway import Gateway, GatewayError
from bot.live.store import RunStore, decode, encode
from bot.risk.execution import EXIT_NONE

Log = Callable[..., None]


def _trades(*ts: Trade) -> list[Trade]:
    return [t for t in ts if t.reason != EXIT_NONE]


class SimBroker:
    """Fills simulated in process by the core (module docstring)."""

    name = "sim"

    def at_open(self, p: Any, br: Any, pos: Position, acct: Account, intent: Intent, k: int,
                bar: Bar) -> tuple[Position, Account, list[Trade]]:
        """The pending intent filled at this bar's open, then the intrabar exit (`bot.core.bar_open`)."""
        if pos.side == 0 and intent.side == 0:
            return pos, acct, []
        pos, acct, at_open, _, intrabar = bar_open(p, br, pos, acct, intent, k, bar)
        return pos, acct, _trades(at_open, intrabar)

    def execute(self, p: Any, br: Any, pos: Position, acct: Account, intent: Intent, next_ms: int, k_next: int,
                price_hint: float, lookup_only: bool = False) -> tuple[Position, Account, list[Trade], Intent]:
        """Keep the intent for the next bar's open (it is persisted with the state)."""
        return pos, acct, [], intent

    def wallet(self) -> float | None:
        """No exchange: the core's books are the whole truth."""
        return None


class ExchangeBroker:
    """Orders through the gateway, fills booked by the core (module docstring)."""

    name = "exchange"

    def __init__(self, gateway: Gateway, symbol: str, store: RunStore, log: Log, stop_trigger: str = "last") -> None:
        self.gw = gateway
        self.symbol = symbol
        self.store = store
        self.log = log
        if stop_trigger == "last" and gateway.venue.stop_mark:
            # the core checks stops and take-profits against the bar's last-price range (execution spec):
            # the exchange must trigger on the same price, or paper and backtest stop out on other bars
            last = {k: "CONTRACT_PRICE" for k in ("workingType",) if k in gateway.venue.stop_mark}
            gateway.venue = dataclasses.replace(gateway.venue, stop_mark=last, tp_mark=last)

    # -- reconcile -------------------------------------------------------------------------------

    def wallet(self) -> float | None:
        """The exchange's wallet balance (USDT): realised PnL, fees and funding, margins included."""
        bal = self.gw.call("fetch balance", self.gw.exchange.fetch_balance)
        info = bal.get("info") or {}
        if "totalWalletBalance" in info:
            return float(info["totalWalletBalance"])
        return float((bal.get("USDT") or {}).get("total") or 0.0)

    def _closing_fill(self, pos: Position, since_ms: int) -> tuple[int, float, str | None, int | None]:
        """(exit reason, average price, order id, fill time) of the exchange order that closed ``pos``."""
        close_side = "sell" if pos.side > 0 else "buy"
        trades = [t for t in self.gw.my_trades(self.symbol, since_ms) if t.get("side") == close_side]
        if not trades:
            return EXIT_PROTECTION, math.nan, None, None
        oid = str(trades[-1].get("order"))
        mine = [t for t in trades if str(t.get("order")) == oid]
        qty = sum(float(t["amount"]) for t in mine)
        price = sum(float(t["amount"]) * float(t["price"]) for t in mine) / qty if qty else math.nan
        reason = EXIT_PROTECTION
        try:
            order = self.gw.fetch_order(self.symbol, oid)
            info = order.get("info") or {}
            kind = str(info.get("origType") or info.get("type") or "").upper()
            cid = str(order.get("clientOrderId") or info.get("clientOrderId") or "")
            if kind == "LIQUIDATION" or cid.startswith("autoclose"):
                reason = EXIT_LIQUIDATION
            elif kind.startswith("STOP"):
                reason = EXIT_STOP
            elif kind.startswith("TAKE_PROFIT"):
                reason = EXIT_TAKE_PROFIT
        except GatewayError:
            pass
        return reason, price, oid, int(mine[-1].get("timestamp") or 0) or None

    def late_fills(self, p: Any, br: Any, pos: Position, acct: Account,
                    bar_ms: int) -> tuple[Position, Account, list[Trade]]:
        """Book orders accepted earlier and filled since (a delayed fill); cancel ones a bar old."""
        trades: list[Trade] = []
        tf_ms = int(self.store.get("tf_ms") or 0)
        for row in self.store.orders("open"):
            cid = row["cid"]
            order = self.gw.find_order(self.symbol, cid)
            filled = float((order or {}).get("filled") or 0.0)
            k_fill = int(row["bar_ms"]) // tf_ms if tf_ms else 0
            if order is not None and filled > 0:
                price = float(order.get("average") or order.get("price"))
                if row["intent"] == "entry" and pos.side == 0:
                    intent = decode(Intent, self.store.get(f"intent:{cid}"))
                    pos, acct = open_position(p, br, acct, intent._replace(qty=filled), k_fill, price)
                    self.store.put("entry_ms", int(row["bar_ms"]))
                elif row["intent"] == "exit" and pos.side != 0:
                    reason = decode(Intent, self.store.get(f"intent:{cid}")).exit
                    acct, trade = close_position(p, pos, acct, k_fill, int(row["bar_ms"]) // 1000, reason, price)
                    trades.append(trade)
                    pos = flat_position()
                self.store.put_order(cid, row["bar_ms"], row["intent"], row["side"], row["qty"],
                                     bool(row["reduce_only"]), "filled", str(order.get("id")), price, filled)
                self.store.fill(cid, int(row["bar_ms"]), 1 if row["side"] == "buy" else -1, filled, price,
                                row["intent"])
                self.log("fill", f"{row['intent']} {row['side']} {filled:g} {self.symbol} filled late at "
                                 f"{price:.2f}", int(row["bar_ms"]), cid=cid)
            elif order is None or order.get("status") in ("canceled", "expired", "rejected"):
                self.store.put_order(cid, row["bar_ms"], row["intent"], row["side"], row["qty"],
                                     bool(row["reduce_only"]), "gone")
                self.log("order_gone", f"{row['intent']} {self.symbol}: {cid} ended unfilled", bar_ms, cid=cid)
            elif bar_ms > int(row["bar_ms"]):  # still unfilled a bar later: its decision is old now
                try:
                    self.gw.call(f"cancel {cid}", self.gw.exchange.cancel_order, order["id"], self.symbol)
                except GatewayError:
                    continue
                self.store.put_order(cid, row["bar_ms"], row["intent"], row["side"], row["qty"],
                                     bool(row["reduce_only"]), "canceled")
                self.log("order_gone", f"{row['intent']} {self.symbol}: {cid} unfilled for a bar; cancelled",
                         bar_ms, cid=cid)
        return pos, acct, trades

    def at_open(self, p: Any, br: Any, pos: Position, acct: Account, intent: Intent, k: int,
                bar: Bar) -> tuple[Position, Account, list[Trade]]:
        """Reconcile the model's position with the exchange's after bar ``k`` (the intent was sent already)."""
        bar_ms = int(bar.time) * 1000
        pos, acct, late = self.late_fills(p, br, pos, acct, bar_ms)
        ex_pos = self.gw.position(self.symbol)
        if pos.side != 0 and ex_pos is None:
            reason, price, oid, when = self._closing_fill(pos, int(self.store.get("entry_ms", bar_ms)))
            if reason == EXIT_PROTECTION:
                self.log("closed_outside", f"{self.symbol}: the exchange shows no position; closed outside the "
                                           "runner (booked at the close)", bar_ms)
                price = bar.close if math.isnan(price) else price
            tf_ms = self.store.get("tf_ms") or 0
            if when and tf_ms:  # the bar it filled in (after downtime, possibly before this one); a
                # conditional fill is stamped at its bar's close, hence the millisecond back
                k = max(int(pos.entry_bar), min(k, (when - 1) // int(tf_ms)))
            acct, trade = close_position(p, pos, acct, k, k * int(tf_ms) // 1000 if tf_ms else int(bar.time),
                                         reason, price)
            name = {EXIT_STOP: "stop", EXIT_TAKE_PROFIT: "take_profit", EXIT_LIQUIDATION: "liquidation"}.get(
                reason, "outside")
            self.store.fill(None, bar_ms, -pos.side, pos.qty, price, name)
            self.log("fill", f"{self.symbol}: {name} filled {pos.qty:g} at {price:.2f} (order {oid})", bar_ms,
                     order=oid, reason=name)
            for role in ("stop", "take_profit"):
                self.store.set_protection(role, None, None, None, None)
            return flat_position(), acct, [*late, trade]
        if ex_pos is not None:
            ex_side = 1 if ex_pos.get("side") == "long" else -1
            ex_qty = float(ex_pos["contracts"])
            if pos.side == 0:
                self.store.put("halt", f"the exchange holds an unknown {ex_pos.get('side')} {ex_qty:g} "
                                       f"{self.symbol}; close it or adopt it by hand, then clear the halt")
                self.log("unknown_position", f"{self.symbol}: unknown {ex_pos.get('side')} position {ex_qty:g} on "
                                             "the exchange; new entries halted", bar_ms)
            elif ex_side != pos.side or not math.isclose(ex_qty, pos.qty, rel_tol=1e-9):
                self.log("size_adopted", f"{self.symbol}: exchange holds {ex_qty:g}, model {pos.qty:g}; adopting "
                                         "the exchange's size", bar_ms)
                pos = pos._replace(qty=ex_qty) if ex_side == pos.side else pos
        if pos.side != 0 and (late or not self.store.protection().get("stop")):
            self.protect(pos, bar_ms + int(self.store.get("tf_ms") or 0))
        return pos, acct, late

    # -- orders ----------------------------------------------------------------------------------

    def _send(self, role: str, side: str, qty: float, next_ms: int, reduce_only: bool,
              price_hint: float, lookup_only: bool = False) -> dict | None:
        cid = self.gw.client_id(next_ms, role)
        known = self.store.order(cid)
        if known is not None and known["status"] == "filled":
            # filled before a crash: the state committed with the decision does not hold the fill yet
            return {"id": known["exchange_id"], "status": "closed", "filled": known["filled"],
                    "average": known["avg_price"]}
        self.store.put_order(cid, next_ms, role, side, qty, reduce_only, "sending")
        try:
            if lookup_only:
                order = self.gw.find_order(self.symbol, cid)
                if order is None:
                    self.store.put_order(cid, next_ms, role, side, qty, reduce_only, "dropped")
                    self.log("dropped", f"{role} {side} {qty:g} {self.symbol}: never reached the exchange and its "
                                        "bar is over; not sent (old decisions are not replayed)", next_ms, cid=cid)
                    return None
            else:
                if math.isnan(price_hint):
                    price_hint = float(self.gw.ticker(self.symbol).get("last") or math.nan)
                order = self.gw.market_order(self.symbol, side, qty, bar=next_ms, intent=role,
                                             reduce_only=reduce_only, price_hint=price_hint)
        except GatewayError as err:
            self.store.put_order(cid, next_ms, role, side, qty, reduce_only, "rejected")
            self.log("order_failed", f"{role} {side} {qty:g} {self.symbol}: {err}", next_ms, cid=cid)
            return None
        for _ in range(5):  # a fill the exchange reports late (bounded look-ups)
            if order.get("status") == "closed" or order.get("filled"):
                break
            order = self.gw.find_order(self.symbol, cid) or order
        filled = float(order.get("filled") or 0.0)
        avg = float(order.get("average") or order.get("price") or math.nan)
        status = "filled" if filled > 0 else str(order.get("status") or "open")
        self.store.put_order(cid, next_ms, role, side, qty, reduce_only, status, str(order.get("id")), avg, filled)
        if status == "open":
            self.log("order_open", f"{role} {side} {qty:g} {self.symbol}: accepted, not filled yet; booked when the "
                                   "exchange fills it", next_ms, cid=cid)
        self.log("order", f"{role} {side} {filled:g}/{qty:g} {self.symbol} at {avg:.2f}: {status} (id "
                          f"{order.get('id')})", next_ms, cid=cid)
        return order if filled > 0 else None

    def execute(self, p: Any, br: Any, pos: Position, acct: Account, intent: Intent, next_ms: int, k_next: int,
                price_hint: float, lookup_only: bool = False) -> tuple[Position, Account, list[Trade], Intent]:
        """Send the intent's orders now, book their fills, keep the stop resting. Returns no pending intent.

        ``lookup_only`` (a restart after the intent's bar is over): book what reached the exchange, send
        nothing new — an old decision is never replayed.
        """
        trades: list[Trade] = []
        t_next = next_ms // 1000
        if intent.exit != EXIT_NONE and pos.side != 0:
            self.store.put(f"intent:{self.gw.client_id(next_ms, 'exit')}", encode(intent))
            order = self._send("exit", "sell" if pos.side > 0 else "buy", pos.qty, next_ms, True, price_hint,
                               lookup_only)
            if order is not None:
                price = float(order.get("average") or price_hint)
                acct, trade = close_position(p, pos, acct, k_next, t_next, intent.exit, price)
                self.store.fill(self.gw.client_id(next_ms, "exit"), next_ms, -pos.side, pos.qty, price, "exit")
                trades.append(trade)
                pos = flat_position()
        if intent.side != 0 and pos.side == 0:
            self.store.put(f"intent:{self.gw.client_id(next_ms, 'entry')}", encode(intent))
            order = self._send("entry", "buy" if intent.side > 0 else "sell", intent.qty, next_ms, False, price_hint,
                               lookup_only)
            if order is not None:
                filled = float(order["filled"])
                price = float(order.get("average") or price_hint)
                pos, acct = open_position(p, br, acct, intent._replace(qty=filled), k_next, price)
                self.store.put("entry_ms", next_ms)
                self.store.fill(self.gw.client_id(next_ms, "entry"), next_ms, intent.side, filled, price, "entry")
        self.protect(pos, next_ms)
        return pos, acct, trades, no_intent()

    def flatten(self, next_ms: int, price_hint: float) -> None:
        """End of the run: close whatever the exchange holds (reduce-only) and cancel the protection."""
        ex_pos = self.gw.position(self.symbol)
        if ex_pos is not None:
            side = "sell" if ex_pos.get("side") == "long" else "buy"
            self._send("end", side, float(ex_pos["contracts"]), next_ms, True, price_hint)
        self.protect(flat_position(), next_ms)

    def protect(self, pos: Position, bar_ms: int) -> None:
        """Exactly one resting stop (and take-profit) for ``pos``; none when flat. Failures halt new entries."""
        try:
            stop = None if pos.side == 0 or math.isnan(pos.stop) else float(pos.stop)
            tp = None if pos.side == 0 or math.isnan(pos.take_profit) else float(pos.take_profit)
            resting = self.gw.protect(self.symbol, bar=bar_ms, stop=stop if stop is not None else math.nan,
                                      take_profit=tp)
        except GatewayError as err:
            self.store.put("halt", f"cannot keep the stop resting on the exchange ({err}); new entries halted")
            self.log("protect_failed", f"{self.symbol}: stop not resting ({err}); new entries halted", bar_ms)
            return
        for role in ("stop", "take_profit"):
            order = resting.get(role)
            if order is None:
                self.store.set_protection(role, None, None, None, None)
            else:
                self.store.set_protection(role, str(order.get("id")), order.get("clientOrderId"),
                                          float(order.get("triggerPrice") or math.nan), float(order.get("amount") or 0))
        if self.store.get("halt", "").startswith("cannot keep the stop") and (pos.side == 0 or "stop" in resting):
            self.store.put("halt", "")
            self.log("protect", f"{self.symbol}: stop resting again; halt lifted", bar_ms)
