"""Raw liquidation messages (as the exchange sent them) -> normalised store rows.

The recorder hooks ccxt.pro's ``handle_liquidation`` so it sees every raw websocket message
(ccxt's own ``watch_liquidations`` return value drops messages that arrive while the caller is
busy, and parses only the first entry of an OKX message). Each row keeps the whole raw
message beside the normalised columns of the ``liquidations`` kind (bot/store.py):

* ``side``: the **liquidated position** (``long``/``short``);
* ``price``, ``amount`` (base currency), ``value`` = price × amount (USD);
* ``raw``: the exchange's message, JSON text; ``part``: the entry's index inside it.

Per venue (which fields are read):

* **Binance** ``forceOrder`` (``{"e","E","o":{...}}``): ``S = SELL`` closes a long.
  ``amount`` is the **cumulative filled quantity ``o.z``** (the whole liquidation order filled
  so far), ``price`` the average fill price ``o.ap``. ccxt's own ``contracts`` is ``o.l``, the
  *last* fill only (ccxt/pro/binance.py ``parse_ws_liquidation``), which under-states orders
  filled in several trades; both are in ``raw``. Binance pushes at most one liquidation per
  symbol per second (the latest), so the stream under-counts cascades.
* **Bybit** ``allLiquidation.<symbol>`` (``data`` list of ``{T, s, S, v, p}``): ``S`` is the
  side of the liquidated *position* (``Buy`` = a long was liquidated, Bybit v5 docs);
  ``amount = v`` × contract size. The all-liquidation stream is complete (every liquidation).
* **OKX** ``liquidation-orders`` (``data[i].details[j]``): ``side`` is the liquidation order's
  side (``sell`` closes a long; ``posSide`` agrees), ``amount = sz`` × contract size (0.01 BTC
  for BTC-USDT-SWAP), ``price = bkPx`` (bankruptcy price). OKX pushes at most one per
  instrument per second, like Binance.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

SUPPORTED: tuple[str, ...] = ("binanceusdm", "bybit", "okx")


@dataclass(frozen=True)
class LiquidationRow:
    """One normalised liquidation (time in epoch ms) with the raw message it came from."""

    symbol: str
    time_ms: int
    side: str
    price: float
    amount: float
    value: float
    raw: str
    part: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "time_ms": self.time_ms, "side": self.side, "price": self.price,
                "amount": self.amount, "value": self.value, "raw": self.raw, "part": self.part}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LiquidationRow:
        return cls(str(d["symbol"]), int(d["time_ms"]), str(d["side"]), float(d["price"]), float(d["amount"]),
                   float(d["value"]), str(d["raw"]), int(d.get("part", 0)))


def _f(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _symbol_and_size(exchange: Any, market_id: str | None, market_type: str = "contract") -> tuple[str | None, float]:
    """Unified symbol and contract size of ``market_id`` from the loaded ccxt markets."""
    if not market_id:
        return None, math.nan
    market = exchange.safe_market(market_id, None, None, market_type)
    symbol = market.get("symbol")
    if not symbol or symbol == market_id:  # unknown to the loaded markets
        return None, math.nan
    size = market.get("contractSize")
    return symbol, float(size) if size is not None else 1.0


def _binance(exchange: Any, message: dict, raw: str) -> list[LiquidationRow]:
    o = message.get("o") or {}
    symbol, size = _symbol_and_size(exchange, o.get("s"), "swap")
    side = {"SELL": "long", "BUY": "short"}.get(str(o.get("S", "")).upper())
    qty = _f(o.get("z"))
    if not qty > 0:
        qty = _f(o.get("l"))
    price = _f(o.get("ap"))
    if not price > 0:
        price = _f(o.get("p"))
    t = o.get("T", message.get("E"))
    if symbol is None or side is None or t is None or not (qty > 0 and price > 0):
        return []
    amount = qty * size
    return [LiquidationRow(symbol, int(t), side, price, amount, price * amount, raw, 0)]


def _bybit(exchange: Any, message: dict, raw: str) -> list[LiquidationRow]:
    data = message.get("data")
    entries = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
    rows = []
    for part, e in enumerate(entries):
        symbol, size = _symbol_and_size(exchange, e.get("s", e.get("symbol")))
        side = {"BUY": "long", "SELL": "short"}.get(str(e.get("S", e.get("side", ""))).upper())
        qty, price = _f(e.get("v", e.get("size"))), _f(e.get("p", e.get("price")))
        t = e.get("T", e.get("updatedTime"))
        if symbol is None or side is None or t is None or not (qty > 0 and price > 0):
            continue
        amount = qty * size
        rows.append(LiquidationRow(symbol, int(t), side, price, amount, price * amount, raw, part))
    return rows


def _okx(exchange: Any, message: dict, raw: str) -> list[LiquidationRow]:
    rows = []
    part = 0
    for entry in message.get("data") or []:
        symbol, size = _symbol_and_size(exchange, entry.get("instId"))
        for d in entry.get("details") or []:
            side = {"sell": "long", "buy": "short"}.get(str(d.get("side", "")).lower())
            qty, price, t = _f(d.get("sz")), _f(d.get("bkPx")), d.get("ts")
            if symbol is not None and side is not None and t is not None and qty > 0 and price > 0:
                amount = qty * size
                rows.append(LiquidationRow(symbol, int(t), side, price, amount, price * amount, raw, part))
            part += 1
    return rows


_PARSERS = {"binanceusdm": _binance, "binance": _binance, "bybit": _bybit, "okx": _okx}


def normalise_message(exchange_id: str, exchange: Any, message: dict) -> list[LiquidationRow]:
    """Rows of one raw liquidation message of ``exchange_id`` (markets of ``exchange`` loaded)."""
    parser = _PARSERS.get(exchange_id)
    if parser is None:
        raise ValueError(f"no liquidation parser for {exchange_id}; supported: {', '.join(SUPPORTED)}")
    raw = json.dumps(message, separators=(",", ":"), sort_keys=True)
    return parser(exchange, message, raw)
