"""What differs between venues behind ccxt's unified calls: parameter names, trigger price types.

ccxt unifies the calls (``create_order`` with ``stopLossPrice``/``takeProfitPrice``,
``fetch_open_orders(params={'trigger': True})``); the parameter *names* for a client order id and
for "trigger on the mark price" still differ per venue. One small record per venue keeps the
gateway's code identical for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Venue:
    """Per-venue parameter names.

    ``regular_id``    client-id parameter of a regular order
    ``trigger_id``    client-id parameter of a conditional (stop / take-profit) order
    ``stop_mark``     params that make a stop-loss trigger on the mark price
    ``tp_mark``       params that make a take-profit trigger on the mark price
    ``margin_params`` extra params of ``set_margin_mode`` / ``set_leverage`` (``{lev}`` → leverage)
    ``order_params``  params every order carries (OKX: isolated margin per order, ``tdMode``)
    ``trigger_list``  params that list the resting conditional orders (with ``trigger: True``)
    ``lookup``        how an order is found by client id: ``fetch_order`` (by ``clientOrderId``) or
                      ``scan`` (open then closed orders filtered by ``lookup_param``)
    ``checks_multi_assets``  Binance's multi-assets (portfolio-style) mode must be off
    """

    regular_id: str = "clientOrderId"
    trigger_id: str = "clientOrderId"
    stop_mark: dict[str, Any] = field(default_factory=dict)
    tp_mark: dict[str, Any] = field(default_factory=dict)
    margin_params: dict[str, str] = field(default_factory=dict)
    leverage_params: dict[str, str] = field(default_factory=dict)
    order_params: dict[str, Any] = field(default_factory=dict)
    trigger_list: dict[str, Any] = field(default_factory=dict)
    lookup: str = "fetch_order"
    lookup_param: str = "clientOrderId"
    checks_multi_assets: bool = False


VENUES: dict[str, Venue] = {
    # docs/binance-usdm.md §7.1: newClientOrderId on /fapi/v1/order, clientAlgoId on /fapi/v1/algoOrder
    "binanceusdm": Venue("newClientOrderId", "clientAlgoId", {"workingType": "MARK_PRICE"},
                         {"workingType": "MARK_PRICE"}, checks_multi_assets=True),
    # ccxt's bybit fetch_order sends orderId=None with a client id: scan by orderLinkId instead
    "bybit": Venue(stop_mark={"triggerBy": "MarkPrice"}, tp_mark={"triggerBy": "MarkPrice"},
                   margin_params={"leverage": "{lev}"}, lookup="scan", lookup_param="orderLinkId"),
    # OKX: margin mode travels with every order (tdMode); stop-loss/take-profit orders are algo
    # orders of ordType "conditional", listed only when asked for that type
    "okx": Venue(trigger_id="algoClOrdId", stop_mark={"slTriggerPxType": "mark"},
                 tp_mark={"tpTriggerPxType": "mark"}, margin_params={"lever": "{lev}"},
                 leverage_params={"marginMode": "isolated"}, order_params={"marginMode": "isolated"},
                 trigger_list={"ordType": "conditional"}),
}


def venue_for(exchange_id: str) -> Venue:
    """The venue record of a ccxt exchange id (``binance`` shares ``binanceusdm``'s)."""
    if exchange_id == "binance":
        return VENUES["binanceusdm"]
    return VENUES.get(exchange_id, Venue())


def fill(params: dict[str, str], leverage: float) -> dict[str, Any]:
    """``params`` with ``{lev}`` replaced by the leverage (an int where it is whole)."""
    lev: Any = int(leverage) if float(leverage).is_integer() else leverage
    return {k: (lev if v == "{lev}" else v) for k, v in params.items()}
