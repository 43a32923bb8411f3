"""Creating real ccxt clients, optionally pointed at another host (the replay exchange).

``make_exchange("binanceusdm", url="http://127.0.0.1:8765")`` returns a normal
``ccxt.binanceusdm`` whose every REST base URL has its scheme and host swapped for ``url``
while keeping the path suffix (``/fapi/v1``, ``/futures/data``, ``/sapi/v1`` ...), so the
server sees the real Binance paths (docs/binance-usdm.md §1.2). The same swap works for any
ccxt exchange (bybit, okx: ``https://api.{hostname}`` becomes ``http://127.0.0.1:8765``).

Secrets come only from environment variables whose *names* the caller passes.
"""

from __future__ import annotations

import difflib
import os
from typing import Any
from urllib.parse import urlsplit

import ccxt

from bot.errors import UserError


def exchange_class(exchange_id: str) -> type[ccxt.Exchange]:
    """The ccxt class for ``exchange_id``; :class:`UserError` with a did-you-mean otherwise."""
    if exchange_id not in ccxt.exchanges:
        close = difflib.get_close_matches(exchange_id.lower(), ccxt.exchanges, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise UserError(f"unknown exchange '{exchange_id}'{hint}; use a ccxt exchange id such as binanceusdm")
    return getattr(ccxt, exchange_id)


def _swap_host(url: str, base: str) -> str:
    """``https://fapi.binance.com/fapi/v1`` + ``http://127.0.0.1:9`` -> ``http://127.0.0.1:9/fapi/v1``."""
    parts = urlsplit(url)
    return base + parts.path.rstrip("/") + (f"?{parts.query}" if parts.query else "")


def _redirect(urls: Any, base: str) -> Any:
    """Recursively swap scheme+host of every http(s) URL in a (nested) ``urls['api']`` structure."""
    if isinstance(urls, dict):
        return {k: _redirect(v, base) for k, v in urls.items()}
    if isinstance(urls, str) and urls.startswith(("http://", "https://")):
        return _swap_host(urls, base)
    return urls


def point_at(exchange: ccxt.Exchange, url: str) -> ccxt.Exchange:
    """Redirect every REST base URL of ``exchange`` to ``url`` (scheme+host[:port]), in place.

    Also restores Binance's fapi-only error table, which ccxt applies only to URLs starting
    with ``https://fapi.binance.com`` (docs/binance-usdm.md §0.3), so codes such as -2019 still map
    to ``InsufficientFunds`` against a local server.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"invalid exchange URL '{url}'; use a form like http://127.0.0.1:8765")
    base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    exchange.urls["api"] = _redirect(exchange.urls["api"], base)
    linear = exchange.exceptions.get("linear") if isinstance(exchange.exceptions, dict) else None
    if isinstance(linear, dict) and isinstance(linear.get("exact"), dict):
        exchange.exceptions["exact"].update(linear["exact"])
    return exchange


def client_settings(rate_limit: bool, url: str | None, config: dict[str, Any]) -> dict[str, Any]:
    """ccxt constructor settings: client-side throttling, ``config``'s own settings and options, and
    no currency listing (an endpoint other hosts lack) when ``url`` redirects the client."""
    config = dict(config)
    settings: dict[str, Any] = {"enableRateLimit": rate_limit}
    options = dict(config.pop("options", None) or {})
    if url:
        options.setdefault("fetchCurrencies", False)
    if options:
        settings["options"] = options
    settings.update(config)
    return settings


def make_exchange(
    exchange_id: str,
    url: str | None = None,
    api_key_env: str | None = None,
    secret_env: str | None = None,
    rate_limit: bool = True,
    **config: Any,
) -> ccxt.Exchange:
    """A real ccxt client for ``exchange_id``.

    ``url``            point every REST endpoint at this host (the replay exchange); also sets
                       ``options['fetchCurrencies'] = False`` (no signed SAPI calls in load_markets).
    ``api_key_env``    name of the environment variable holding the API key (the secret itself
    ``secret_env``     never passes through config files, arguments or logs).
    ``rate_limit``     ccxt's client-side throttling (``enableRateLimit``); turn off only for tests.
    ``config``         any other ccxt constructor setting (``timeout=5000``, ``options={...}``).
    """
    cls = exchange_class(exchange_id)
    settings = client_settings(rate_limit, url, config)
    for field, env in (("apiKey", api_key_env), ("secret", secret_env)):
        if env and os.environ.get(env):
            settings[field] = os.environ[env]
    exchange = cls(settings)
    if url:
        point_at(exchange, url)
    return exchange
