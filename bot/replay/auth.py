"""Signed requests as Binance checks them (docs/binance-usdm.md §2.4).

* ``X-MBX-APIKEY`` must be the account's key, else HTTP 401 ``-2015``.
* The HMAC-SHA256 of ``query string + body`` without the ``signature`` parameter, with the
  account's secret, must equal ``signature`` (hex, any case), else HTTP 400 ``-1022``.
* ``recvWindow`` (default 5000, at most 60000, else ``-1131``): accepted when
  ``timestamp < now + 1000`` and ``now − timestamp <= recvWindow``, else HTTP 400 ``-1021``.

``now`` is the **wall clock** by default, because ccxt signs with it. With ``replay_time=True`` the
replay clock is used instead; clients then run with ``adjustForTimeDifference: True`` so ccxt
signs replay timestamps (learnt once, from ``/fapi/v1/time``, so only at speed 1 or 0).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

from bot.replay.api import ApiError, Request, missing_param


class Authenticator:
    """Verifies a request's key, signature and timestamp; raises :class:`ApiError` like Binance."""

    def __init__(self, api_key: str, secret: str, now_ms: Callable[[], int] | None = None) -> None:
        self.api_key = api_key
        self._secret = secret.encode()
        self._now_ms = now_ms or (lambda: int(time.time() * 1000))

    def __call__(self, req: Request) -> None:
        key = next((v for k, v in req.headers.items() if k.lower() == "x-mbx-apikey"), None)
        if not key or not hmac.compare_digest(key.encode("utf-8", "replace"), self.api_key.encode()):
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        kept, signature = [], None
        for part in req.raw.split("&"):
            if part.startswith("signature="):
                signature = part[len("signature="):]
            elif part:
                kept.append(part)
        expected = hmac.new(self._secret, "&".join(kept).encode(), hashlib.sha256).hexdigest()
        if signature is None or not hmac.compare_digest(expected.encode(), signature.lower().encode("utf-8", "replace")):
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        ts, window = req.params.get("timestamp", ""), req.params.get("recvWindow", "5000")
        if not ts.isdigit():
            raise missing_param("timestamp")
        if not window.isdigit() or int(window) > 60_000:
            raise ApiError(400, -1131, "recvWindow must be less than 60000")
        now = self._now_ms()
        if not (int(ts) < now + 1000 and now - int(ts) <= int(window)):
            raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
