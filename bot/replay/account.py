"""The replay exchange's signed endpoints over the account book (:mod:`bot.replay.matching`).

Served (all signed, docs/binance-usdm.md §6–7)::

    GET  /fapi/v3/account, /fapi/v2/account          balance (ccxt fetch_balance)
    GET  /fapi/v3/positionRisk, /fapi/v2/positionRisk positions
    GET  /fapi/v1/income                              funding, commissions, realized PnL
    GET  /fapi/v1/leverageBracket                     brackets (bot/risk/brackets_binance.json)
    POST /fapi/v1/leverage, /fapi/v1/marginType
    GET/POST /fapi/v1/positionSide/dual, /fapi/v1/multiAssetsMargin
    POST/GET/DELETE /fapi/v1/order, GET /fapi/v1/openOrders, /fapi/v1/allOrders, /fapi/v1/userTrades
    POST/GET/DELETE /fapi/v1/algoOrder, GET /fapi/v1/openAlgoOrders, /fapi/v1/allAlgoOrders

Binance's validation and error codes are kept (docs/binance-usdm.md §3, §7); what the book does
with an accepted order is described in :mod:`bot.replay.matching`.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from bot.replay import accounting
from bot.replay.accounting import Costs, CostsFor
from bot.replay.api import ApiError, BinanceUsdmApi, Request, Response, Route, _num, missing_param
from bot.replay.faults import TradeFaults
from bot.replay.market import MarketData, MarketSpec
from bot.replay.matching import ASSET, Ledger, _side
from bot.replay.store import StateFile

_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_CONDITIONAL = ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")
_MAX_ALGO_ORDERS = 10


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


class Account(Ledger):
    """The replay account: the :class:`Ledger` plus the Binance endpoints registered into ``api``."""

    def __init__(self, data: MarketData, api: BinanceUsdmApi, state: StateFile, costs: Costs | CostsFor,
                 initial_balance: float = 10_000.0, timeframe: str | None = None,
                 faults: TradeFaults | None = None) -> None:
        super().__init__(data, api, state, costs, initial_balance, timeframe, faults)
        self._register()

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
            ("GET", "/fapi/v1/allOrders", self.all_orders, 5, "USER_DATA"),
            ("GET", "/fapi/v1/allAlgoOrders", self.all_algos, 5, "USER_DATA"),
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
            for v in views:  # v3 carries neither leverage nor marginType (docs/binance-usdm.md §6.2)
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
        if self.positions:
            raise ApiError(400, -4068, "Position side cannot be changed if there exists position.")
        if any(a["algoStatus"] == "NEW" for a in self.algos.values()):
            raise ApiError(400, -4067, "Position side cannot be changed if there exists open orders.")
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
                raise missing_param("quantity")
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
        price = accounting.market_price(side, *bar.bar, self.costs_for(m.symbol))
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
            need = accounting.initial_margin(opening * price, lev, b) + accounting.taker_fee(q, price, self.costs_for(m.symbol))
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

    @staticmethod
    def _history(rows: list[dict], p: dict[str, str], time_key: str) -> list[dict]:
        """Binance's all-orders selection: ``startTime``/``endTime`` on creation, ``limit`` ≤ 1000 (500)."""
        start, end = p.get("startTime"), p.get("endTime")
        raw_limit = p.get("limit", "500")
        limit = min(int(raw_limit), 1000) if raw_limit.isdigit() and int(raw_limit) > 0 else 500
        rows = [r for r in rows if (start is None or not start.isdigit() or r[time_key] >= int(start))
                and (end is None or not end.isdigit() or r[time_key] <= int(end))]
        return rows[:limit] if start is not None else rows[-limit:]

    def all_orders(self, req: Request) -> list:
        """Every order of the symbol (ccxt ``fetch_orders`` / ``fetch_closed_orders``)."""
        m = self._market(req.params)
        rows = [self._public_order(o) for _, o in sorted(self.orders.items()) if o["symbol"] == m.id]
        return self._history(rows, req.params, "time")

    def all_algos(self, req: Request) -> list:
        """Every conditional order of the symbol (``fetch_orders(params={'trigger': True})``)."""
        m = self._market(req.params)
        rows = [dict(a) for _, a in sorted(self.algos.items()) if a["symbol"] == m.id]
        return self._history(rows, req.params, "createTime")

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
            raise missing_param("triggerPrice")
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

