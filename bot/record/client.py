"""ccxt.pro clients for the recorder, optionally pointed at another host (the replay exchange).

REST base URLs are swapped exactly as :func:`bot.exchange.point_at` does for ``download``;
websocket base URLs (``urls['api']['ws']``, any nesting) get the same treatment with a
``ws://`` base, keeping their path (Binance ``/ws`` — which ccxt.pro rewrites to
``/market/ws/<n>`` —, Bybit ``/v5/public/linear``, OKX ``/ws/v5/public``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import ccxt.pro

from bot.errors import UserError
from bot.exchange import client_settings, point_at


def ws_base_for(url: str) -> str:
    """``http://127.0.0.1:8765`` -> ``ws://127.0.0.1:8765`` (``https`` -> ``wss``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise UserError(f"invalid stream URL '{url}'; use a form like ws://127.0.0.1:8766")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _redirect_ws(urls: Any, base: str) -> Any:
    if isinstance(urls, dict):
        return {k: _redirect_ws(v, base) for k, v in urls.items()}
    if isinstance(urls, str) and urls.startswith(("ws://", "wss://")):
        parts = urlsplit(urls)
        return base + parts.path.rstrip("/") + (f"?{parts.query}" if parts.query else "")
    return urls


def point_ws_at(exchange: Any, ws_url: str) -> Any:
    """Redirect every websocket base URL of ``exchange`` to ``ws_url`` (scheme+host[:port]), in place."""
    base = ws_base_for(ws_url)
    exchange.urls["api"]["ws"] = _redirect_ws(exchange.urls["api"].get("ws"), base)
    return exchange


def make_pro_exchange(exchange_id: str, url: str | None = None, ws_url: str | None = None,
                      rate_limit: bool = True, **config: Any) -> Any:
    """An async ccxt.pro client; ``url`` redirects REST (and websockets unless ``ws_url`` is given)."""
    if exchange_id not in ccxt.pro.exchanges:
        raise UserError(f"ccxt.pro has no websocket client for '{exchange_id}'; use binanceusdm, bybit or okx")
    exchange = getattr(ccxt.pro, exchange_id)(client_settings(rate_limit, url, config))
    if url:
        point_at(exchange, url)
    if ws_url or url:
        point_ws_at(exchange, ws_url or url)  # type: ignore[arg-type]
    return exchange
