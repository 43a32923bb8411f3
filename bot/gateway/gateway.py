"""One object over a ccxt exchange that every broker (paper, live) places its orders through.

Guarantees (docs/architecture.md "Live and paper"; tested in ``tests/bot/test_gateway.py``):

* **Retries on ``ccxt.NetworkError`` only** (429/418 ``DDoSProtection``, 5xx, timeouts, dropped
  connections), with exponential back-off (at least the server's ``Retry-After``). Anything the
  exchange *decided* (``InvalidOrder``, ``InsufficientFunds``, ``AuthenticationError``, ...) is
  never retried: it becomes one :class:`Event` and a :class:`GatewayError` the caller handles.
  ``InvalidNonce`` (-1021, a request timestamp outside ``recvWindow``) is a ``NetworkError`` in
  ccxt but resending cannot fix a wrong clock: it is reported as ``clock``, not retried.
* **Idempotent order creation.** Every order carries a client id derived from
  ``(run, bar, intent)`` (:func:`client_order_id`) — Binance's ``newClientOrderId`` for regular
  orders and ``clientAlgoId`` for conditional ones (:mod:`bot.gateway.venues`). When a placement's
  reply is lost (any ``NetworkError``), the gateway first looks the id up on the exchange and only
  resubmits when the exchange answers that no such order exists; a resubmission that meets
  "duplicate client id" (-4116) adopts the existing order. So one intent makes at most one order.
* **Precision and limits** from ``load_markets``: amounts truncated to the step, prices rounded to
  the tick, orders under the minimum amount or notional refused before anything is sent.
* **Account mode.** :meth:`Gateway.start` refuses hedge (dual-side) mode and Binance's
  multi-assets mode with a one-line message, then sets isolated margin and the leverage on every
  symbol before the first order ("no need to change margin type", -4046, counts as success; -4047/-4048,
  open orders or a position in the other mode, do not).
* **Protection.** :meth:`Gateway.protect` keeps exactly one reduce-only stop-loss (and take-profit)
  resting on the exchange for the open position: it lists conditional orders with
  ``params={'trigger': True}`` (without it ccxt cannot see Binance's Algo API orders and a bot
  re-places its stop on every pass), keeps a matching one, cancels stale copies, places what is
  missing and re-places a stop the exchange dropped.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ccxt

from bot.errors import UserError
from bot.gateway.venues import Venue, fill, venue_for

ROLES = ("stop", "take_profit")
_SIGNATURE = re.compile(r"(signature|sign|X-MBX-APIKEY|apiKey)=[^&\s\"']+", re.IGNORECASE)
EXPECTED = object()  # what Gateway._call returns for an error the caller expects (an answer, not a failure)


def client_order_id(run: str, bar: int | str, intent: str) -> str:
    """The client id of the order for ``intent`` at ``bar`` in run ``run``: ``c`` + 31 hex digits.

    32 characters of ``[0-9a-f]`` (plus the leading ``c``) pass every venue's rule (Binance 36
    characters, Bybit 36, OKX 32 alphanumerics), and the same inputs always give the same id, so
    a restarted runner re-derives the ids of the orders it may already have placed.
    """
    digest = hashlib.sha256(f"{run}|{bar}|{intent}".encode()).hexdigest()
    return "c" + digest[:31]


@dataclass(frozen=True)
class Event:
    """Something the gateway did or met: ``kind``, a one-line ``message`` and structured ``data``.

    ``started``/``config``  account checked, margin mode and leverage set (or already so)
    ``order``       an order was placed (``cid``, ``id``, ``status``)
    ``retry``       a read failed with a ``NetworkError`` and is retried after a back-off
    ``lost_reply``  a placement got no reply; the client id is looked up before anything else
    ``recovered``   ... and the order was found on the exchange: not resubmitted
    ``resubmit``    ... and the exchange has no such order: sent again with the same client id
    ``duplicate``   the exchange answered "duplicate client id": the existing order is adopted
    ``rejected``    the exchange (or a market limit) refused; ``data['error']`` is ccxt's class name
    ``auth`` / ``clock``  bad credentials / request timestamp outside the exchange's window
    ``gave_up``     network errors through every retry
    ``protect`` / ``cancel``  a stop or take-profit placed / a stale or leftover one cancelled
    """

    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


EVENT_KINDS = ("started", "config", "order", "retry", "lost_reply", "recovered", "resubmit", "duplicate",
               "rejected", "auth", "clock", "gave_up", "protect", "cancel")


class GatewayError(Exception):
    """A call the gateway could not complete; ``event`` says what happened (also in ``Gateway.events``)."""

    def __init__(self, event: Event, cause: BaseException | None = None) -> None:
        super().__init__(event.message)
        self.event = event
        self.cause = cause


class GatewayRejected(GatewayError):
    """The exchange refused the request (invalid order, insufficient margin, duplicate id, ...)."""


class GatewayAuthError(GatewayError):
    """Bad API key or signature, or a request timestamp outside the exchange's window."""


class GatewayUnavailable(GatewayError):
    """Network errors persisted through every retry."""


class GatewayRefusedStart(GatewayError, UserError):
    """The account is in a mode cascade does not trade (hedge, multi-assets)."""


def _is_duplicate(err: BaseException) -> bool:
    text = str(err)
    return "-4116" in text or "uplicate" in text


class Gateway:
    """Orders, positions and prices through one ccxt exchange (module docstring).

    ``exchange``     a ccxt exchange (e.g. from :func:`bot.exchange.make_exchange`)
    ``run``          the run's id; part of every client order id
    ``retries``      attempts after the first on a ``NetworkError``
    ``backoff``      first back-off in seconds (doubling, capped at ``max_backoff``)
    ``on_event``     called with every :class:`Event` (they are also kept in ``events``)
    ``sleep``        the sleeping function (tests pass a recorder)
    """

    def __init__(self, exchange: ccxt.Exchange, run: str, *, retries: int = 5, backoff: float = 0.5,
                 max_backoff: float = 8.0, on_event: Callable[[Event], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.exchange = exchange
        self.run = run
        self.venue: Venue = venue_for(exchange.id)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.on_event = on_event
        self.sleep = sleep
        self.events: list[Event] = []
        self.started = False

    # ------------------------------------------------------------------ events and calls

    def _event(self, kind: str, message: str, **data: Any) -> Event:
        # ccxt's messages quote request URLs: keep request signatures out of logs and databases
        event = Event(kind, _SIGNATURE.sub(r"\1=<redacted>", message), data)
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)
        return event

    def _wait(self, attempt: int, err: BaseException) -> float:
        delay = min(self.max_backoff, self.backoff * 2 ** attempt)
        # Retry-After belongs to the 429/418 just received; other failures leave stale headers behind
        limited = isinstance(err, ccxt.DDoSProtection | ccxt.RateLimitExceeded)
        headers = (getattr(self.exchange, "last_response_headers", None) or {}) if limited else {}
        retry_after = headers.get("Retry-After") or headers.get("retry-after")
        if retry_after is not None:
            try:
                delay = max(delay, min(float(retry_after), self.max_backoff * 4))
            except ValueError:
                pass
        self.sleep(delay)
        return delay

    def _fail(self, what: str, err: BaseException) -> GatewayError:
        """The event and exception for a ccxt error the exchange decided (not retried)."""
        name = type(err).__name__
        if isinstance(err, ccxt.InvalidNonce):
            event = self._event("clock", f"{what}: the exchange rejected the request timestamp ({err}); sync the "
                                         "machine clock (NTP) or enable adjustForTimeDifference", error=name)
            return GatewayAuthError(event, err)
        if isinstance(err, ccxt.AuthenticationError | ccxt.PermissionDenied):
            event = self._event("auth", f"{what}: authentication failed ({err}); check the API key and secret "
                                        "named by [exchange] api_key_env / secret_env", error=name)
            return GatewayAuthError(event, err)
        event = self._event("rejected", f"{what}: {name}: {err}", error=name)
        return GatewayRejected(event, err)

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with retries on ``NetworkError`` (never for an order placement)."""
        return self._call(what, fn, args, kwargs)

    def _call(self, what: str, fn: Callable[..., Any], args: tuple = (), kwargs: dict | None = None,
              expected: Callable[[BaseException], bool] | None = None) -> Any:
        """:meth:`call`; an error for which ``expected`` is true is an answer: returns :data:`EXPECTED`."""
        for attempt in range(self.retries + 1):
            try:
                return fn(*args, **(kwargs or {}))
            except ccxt.InvalidNonce as err:
                raise self._fail(what, err) from None
            except ccxt.NetworkError as err:
                if attempt == self.retries:
                    event = self._event("gave_up", f"{what}: {type(err).__name__} after {attempt + 1} attempts: {err}",
                                        error=type(err).__name__)
                    raise GatewayUnavailable(event, err) from None
                delay = self._wait(attempt, err)
                self._event("retry", f"{what}: {type(err).__name__}, retry {attempt + 1} in {delay:g}s",
                            error=type(err).__name__, attempt=attempt + 1)
            except ccxt.BaseError as err:
                if expected is not None and expected(err):
                    return EXPECTED
                raise self._fail(what, err) from None
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ start

    def start(self, symbols: Sequence[str], leverage: float) -> None:
        """Load markets, refuse hedge / multi-assets mode, set isolated margin and ``leverage``."""
        ex = self.exchange
        self.call("load_markets", ex.load_markets)
        unknown = [s for s in symbols if s not in ex.markets]
        if unknown:
            event = self._event("rejected", f"unknown symbol(s) {', '.join(unknown)} on {ex.id}")
            raise GatewayRefusedStart(event)
        if ex.has.get("fetchPositionMode"):
            mode = self.call("fetch_position_mode", ex.fetch_position_mode, symbols[0] if symbols else None)
            if mode.get("hedged"):
                event = self._event("rejected", f"{ex.id} account is in hedge (dual-side) position mode; cascade "
                                                "trades one-way mode: switch Position Mode to One-way on the "
                                                "exchange, then start again")
                raise GatewayRefusedStart(event)
        else:
            self._event("config", f"{ex.id} cannot report its position mode through ccxt; "
                                  "make sure the account is in one-way mode")
        if self.venue.checks_multi_assets:
            multi = self.call("multi-assets check", ex.fapiPrivateGetMultiAssetsMargin)
            if str(multi.get("multiAssetsMargin")).lower() == "true":
                event = self._event("rejected", f"{ex.id} account is in multi-assets mode; cascade trades "
                                                "single-asset isolated margin: switch Multi-Assets Mode off, "
                                                "then start again")
                raise GatewayRefusedStart(event)
        for symbol in symbols:
            self._set_margin(symbol, leverage)
            # Binance takes an integer leverage: "5.0" is answered with -4028 "Leverage 5.0 is not valid"
            lev: float | int = int(leverage) if float(leverage).is_integer() else leverage
            self.call("set_leverage", ex.set_leverage, lev, symbol, fill(self.venue.leverage_params, lev))
            self._event("config", f"{symbol}: isolated margin, leverage {leverage:g}", symbol=symbol,
                        leverage=leverage)
        self.started = True
        self._event("started", f"{ex.id} ready for {', '.join(symbols)}", symbols=list(symbols))

    def _set_margin(self, symbol: str, leverage: float) -> None:
        # "No need to change margin type" (-4046, ccxt MarginModeAlreadySet) is a success; -4067 belongs to
        # the position-mode endpoint, and -4047/-4048 (open orders/position in the other mode) are refusals
        def unchanged(err: BaseException) -> bool:
            return isinstance(err, ccxt.MarginModeAlreadySet) or "-4046" in str(err)

        answer = self._call("set_margin_mode", self.exchange.set_margin_mode,
                            ("isolated", symbol, fill(self.venue.margin_params, leverage)), expected=unchanged)
        if answer is EXPECTED:
            self._event("config", f"{symbol}: margin already isolated", symbol=symbol)

    # ------------------------------------------------------------------ orders

    def _require_started(self) -> None:
        if not self.started:
            raise GatewayRefusedStart(self._event("rejected", "call Gateway.start() before the first order: it "
                                                              "checks the account mode and sets isolated margin "
                                                              "and leverage"))

    def client_id(self, bar: int | str, intent: str) -> str:
        """:func:`client_order_id` for this run."""
        return client_order_id(self.run, bar, intent)

    def _amount(self, symbol: str, amount: float, price: float | None, reduce_only: bool) -> float:
        """``amount`` truncated to the market's step; refused under the market's minimums."""
        market = self.exchange.market(symbol)
        try:
            value = float(self.exchange.amount_to_precision(symbol, amount))
        except ccxt.BaseError as err:
            raise self._fail(f"{symbol} amount {amount}", err) from None
        limits = market.get("limits") or {}
        min_amount = (limits.get("amount") or {}).get("min")
        min_cost = (limits.get("cost") or {}).get("min")
        if min_amount is not None and value < min_amount:
            raise GatewayRejected(self._event("rejected", f"{symbol}: amount {amount} is below the minimum "
                                                          f"{min_amount}", symbol=symbol))
        if not reduce_only and min_cost is not None and price is not None and value * price < min_cost:
            raise GatewayRejected(self._event("rejected", f"{symbol}: notional {value * price:.2f} is below the "
                                                          f"minimum {min_cost}", symbol=symbol))
        return value

    def find_order(self, symbol: str, cid: str, trigger: bool = False) -> dict | None:
        """The order with client id ``cid``, or None when the exchange says it does not exist."""
        if self.venue.lookup == "scan":
            return self._scan(symbol, cid, trigger)
        params: dict[str, Any] = {"clientOrderId": cid}
        if trigger:
            params["trigger"] = True
        found = self._call(f"look up {cid}", self.exchange.fetch_order, (None, symbol, params),
                           expected=lambda err: isinstance(err, ccxt.OrderNotFound))
        return None if found is EXPECTED else found

    def _scan(self, symbol: str, cid: str, trigger: bool) -> dict | None:
        params: dict[str, Any] = {self.venue.lookup_param: cid, **({"trigger": True} if trigger else {})}
        for fn in (self.exchange.fetch_open_orders, self.exchange.fetch_closed_orders):
            for order in self.call(f"look up {cid}", fn, symbol, None, None, dict(params)):
                if order.get("clientOrderId") == cid:
                    return order
        return None

    def place(self, symbol: str, kind: str, side: str, amount: float, *, bar: int | str, intent: str,
              price: float | None = None, params: dict[str, Any] | None = None, trigger: bool = False) -> dict:
        """Create one order for ``intent`` at ``bar``, idempotently (module docstring)."""
        self._require_started()
        cid = self.client_id(bar, intent)
        params = {**self.venue.order_params, **(params or {})}
        params[self.venue.trigger_id if trigger else self.venue.regular_id] = cid
        what = f"{intent} {side} {amount} {symbol}"
        for attempt in range(self.retries + 1):
            try:
                order = self.exchange.create_order(symbol, kind, side, amount, price, params)
            except ccxt.InvalidNonce as err:
                raise self._fail(what, err) from None
            except ccxt.NetworkError as err:
                self._event("lost_reply", f"{what}: {type(err).__name__} placing {cid}; looking it up before any "
                                          "resubmission", cid=cid, error=type(err).__name__)
                delay = self._wait(attempt, err)
                found = self.find_order(symbol, cid, trigger)
                if found is not None:
                    self._event("recovered", f"{what}: {cid} exists on the exchange ({found.get('status')}); "
                                             "not resubmitted", cid=cid, id=found.get("id"))
                    return found
                if attempt == self.retries:
                    event = self._event("gave_up", f"{what}: no reply after {attempt + 1} attempts and {cid} is "
                                                   "not on the exchange", cid=cid)
                    raise GatewayUnavailable(event, err) from None
                self._event("resubmit", f"{what}: {cid} is not on the exchange; resubmitting after {delay:g}s",
                            cid=cid, attempt=attempt + 1)
            except ccxt.InvalidOrder as err:
                if _is_duplicate(err):
                    found = self.find_order(symbol, cid, trigger)
                    if found is not None:
                        self._event("duplicate", f"{what}: {cid} was already placed; adopting it", cid=cid,
                                    id=found.get("id"))
                        return found
                raise self._fail(what, err) from None
            except ccxt.BaseError as err:
                raise self._fail(what, err) from None
            else:
                self._event("order", f"{what}: {order.get('status')} id {order.get('id')}", cid=cid,
                            id=order.get("id"), status=order.get("status"))
                return order
        raise AssertionError("unreachable")

    def market_order(self, symbol: str, side: str, amount: float, *, bar: int | str, intent: str,
                     reduce_only: bool = False, price_hint: float | None = None) -> dict:
        """A market order (``price_hint``: a recent price for the minimum-notional check)."""
        self._require_started()
        qty = self._amount(symbol, amount, price_hint, reduce_only)
        params = {"reduceOnly": True} if reduce_only else {}
        return self.place(symbol, "market", side, qty, bar=bar, intent=intent, params=params)

    def contracts(self, symbol: str, base_qty: float) -> float:
        """The order amount for ``base_qty`` of the base currency (OKX counts contracts of ``contractSize``)."""
        size = self.exchange.market(symbol).get("contractSize") or 1.0
        return base_qty / float(size)

    def close(self, symbol: str, *, bar: int | str, intent: str = "exit") -> dict | None:
        """Close the whole open position with a reduce-only market order (None when already flat)."""
        position = self.position(symbol)
        if position is None:
            return None
        side = "sell" if position.get("side") == "long" else "buy"
        return self.market_order(symbol, side, float(position["contracts"]), bar=bar, intent=intent, reduce_only=True)

    def conditional_order(self, symbol: str, role: str, side: str, amount: float, trigger_price: float, *,
                          bar: int | str, intent: str | None = None) -> dict:
        """A reduce-only stop-loss (``role='stop'``) or take-profit resting on the exchange, on the mark price."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        self._require_started()
        qty = self._amount(symbol, amount, None, True)
        price = float(self.exchange.price_to_precision(symbol, trigger_price))
        key = "stopLossPrice" if role == "stop" else "takeProfitPrice"
        params = {key: price, "reduceOnly": True, **(self.venue.stop_mark if role == "stop" else self.venue.tp_mark)}
        return self.place(symbol, "market", side, qty, bar=bar, intent=intent or role, params=params, trigger=True)

    def cancel_conditional(self, symbol: str, order: dict, why: str) -> None:
        """Cancel a resting conditional order (already gone counts as done)."""
        answer = self._call(f"cancel {order.get('id')}", self.exchange.cancel_order,
                            (order["id"], symbol, {"trigger": True}),
                            expected=lambda err: isinstance(err, ccxt.OrderNotFound))
        gone = " (already gone)" if answer is EXPECTED else ""
        self._event("cancel", f"{symbol}: cancelled {order.get('id')} ({why}){gone}", id=order.get("id"))

    # ------------------------------------------------------------------ reads

    def open_conditional_orders(self, symbol: str) -> list[dict]:
        """Resting stop / take-profit orders (``params={'trigger': True}``)."""
        return self.call("fetch trigger orders", self.exchange.fetch_open_orders, symbol, None, None,
                         {"trigger": True, **self.venue.trigger_list})

    def open_orders(self, symbol: str) -> list[dict]:
        return self.call("fetch open orders", self.exchange.fetch_open_orders, symbol)

    def fetch_order(self, symbol: str, order_id: str, trigger: bool = False) -> dict:
        return self.call(f"fetch order {order_id}", self.exchange.fetch_order, order_id, symbol,
                         {"trigger": True} if trigger else {})

    def position(self, symbol: str) -> dict | None:
        """The open position of ``symbol`` (ccxt position structure) or None when flat."""
        for p in self.call("fetch positions", self.exchange.fetch_positions, [symbol]):
            if p.get("symbol") == symbol and (p.get("contracts") or 0) > 0:
                return p
        return None

    def balance(self, currency: str = "USDT") -> dict[str, float]:
        """``{'free', 'used', 'total'}`` of ``currency``."""
        bal = self.call("fetch balance", self.exchange.fetch_balance)
        entry = bal.get(currency) or {}
        return {k: float(entry.get(k) or 0.0) for k in ("free", "used", "total")}

    def ticker(self, symbol: str) -> dict:
        return self.call("fetch ticker", self.exchange.fetch_ticker, symbol)

    def order_book(self, symbol: str, limit: int | None = None) -> dict:
        return self.call("fetch order book", self.exchange.fetch_order_book, symbol, limit)

    def ohlcv(self, symbol: str, timeframe: str, since: int | None = None, limit: int | None = None,
              params: dict[str, Any] | None = None) -> list[list]:
        return self.call("fetch ohlcv", self.exchange.fetch_ohlcv, symbol, timeframe, since, limit, params or {})

    def my_trades(self, symbol: str, since: int | None = None, limit: int | None = None) -> list[dict]:
        return self.call("fetch my trades", self.exchange.fetch_my_trades, symbol, since, limit)

    # ------------------------------------------------------------------ protection

    @staticmethod
    def role_of(order: dict) -> str:
        """``'take_profit'`` or ``'stop'`` for a parsed conditional order."""
        info = order.get("info") or {}
        kind = str(info.get("orderType") or info.get("type") or "").upper()
        if order.get("takeProfitPrice") is not None or kind.startswith("TAKE_PROFIT"):
            return "take_profit"
        return "stop"

    def protect(self, symbol: str, *, bar: int | str, stop: float, take_profit: float | None = None) -> dict[str, dict]:
        """Exactly one reduce-only stop (and take-profit) resting for the open position of ``symbol``.

        Cancels leftovers when flat. Returns the resting order per role.
        """
        position = self.position(symbol)
        resting = self.open_conditional_orders(symbol)
        if position is None:
            for order in resting:
                if order.get("reduceOnly"):
                    self.cancel_conditional(symbol, order, "no position")
            return {}
        contracts = float(position["contracts"])
        close_side = "sell" if position.get("side") == "long" else "buy"
        out: dict[str, dict] = {}
        for role, price in (("stop", stop), ("take_profit", take_profit)):
            mine = [o for o in resting if self.role_of(o) == role and o.get("side") == close_side]
            if price is None or (isinstance(price, float) and math.isnan(price)):
                for order in mine:
                    self.cancel_conditional(symbol, order, f"no {role} wanted")
                continue
            want = float(self.exchange.price_to_precision(symbol, price))
            keep = next((o for o in mine if o.get("triggerPrice") is not None and
                         math.isclose(float(o["triggerPrice"]), want, rel_tol=1e-12) and
                         math.isclose(float(o.get("amount") or 0.0), contracts, rel_tol=1e-9)), None)
            if keep is None:  # the new one first: the position is never without its stop in between
                keep = self._place_protection(symbol, role, close_side, contracts, want, bar)
                self._event("protect", f"{symbol}: {role} at {want} for {contracts} resting as {keep.get('id')}",
                            role=role, id=keep.get("id"), price=want)
            for order in mine:
                if order.get("id") != keep.get("id"):
                    self.cancel_conditional(symbol, order, f"stale {role}")
            out[role] = keep
        return out

    def _place_protection(self, symbol: str, role: str, side: str, amount: float, price: float,
                          bar: int | str) -> dict:
        # the same (bar, role) may have placed an order that is gone since (triggered, vanished): a
        # numbered intent gives the replacement its own client id
        for n in range(4):
            intent = role if n == 0 else f"{role}.{n}"
            order = self.conditional_order(symbol, role, side, amount, price, bar=bar, intent=intent)
            if order.get("status") in (None, "open"):
                return order
        raise GatewayRejected(self._event("rejected", f"{symbol}: could not get a {role} resting "
                                                      f"(every attempt at bar {bar} ended closed)"))
