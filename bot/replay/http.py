"""The HTTP layer of the replay exchange: loopback-only listening, strict request reading, faults.

* **Loopback, checked on the resolved address.** The host is resolved (``getaddrinfo``) and every
  address it resolves to must be a loopback address (``127.0.0.0/8`` or ``::1``); the socket is
  bound with the family of that address, so ``::1`` listens on IPv6 and ``localhost`` on what it
  resolves to first.
* **Per-connection read timeout** (``read_timeout`` seconds): a client that opens a connection and
  sends nothing, or stops mid-request, is dropped when the timeout passes, so half-open
  connections cannot hold handler threads.
* **Strict Content-Length**: absent means an empty body; a negative, non-numeric or repeated value
  answers 400 ``-1100`` and closes the connection; more than 1 MiB answers 413. A body shorter
  than announced runs into the read timeout (connection closed, nothing processed).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from bot.errors import UserError
from bot.replay.api import Response

if TYPE_CHECKING:
    from bot.replay.server import ReplayServer

MAX_BODY_BYTES = 1 << 20


def resolve_loopback(host: str, port: int) -> tuple[int, str]:
    """``(address family, address)`` to bind for ``host``; :class:`UserError` unless it is loopback."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise UserError(f"cannot resolve replay host '{host}' ({err.strerror}); use 127.0.0.1 or ::1") from None
    addresses = [(info[0], info[4][0]) for info in infos]
    bad = [a for _, a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
    if not addresses or bad:
        raise UserError(f"the replay exchange listens on loopback only; '{host}' resolves to "
                        f"{', '.join(bad or ['nothing'])}, use 127.0.0.1 or ::1")
    return addresses[0]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid the 40 ms delayed-ACK stall
    server: _HTTPServer

    def setup(self) -> None:
        self.timeout = self.server.replay.read_timeout  # applied to the socket by StreamRequestHandler
        super().setup()

    def version_string(self) -> str:
        return "cascade-replay"

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _body(self) -> bytes | None:
        """The request body, or None after an error reply (bad Content-Length)."""
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return b""
        raw = values[0].strip()
        if len(values) > 1 or not raw.isdigit():
            self.close_connection = True
            self._send_json(Response(400, {"code": -1100, "msg": "Illegal Content-Length header."}), 0)
            return None
        length = int(raw)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_json(Response(413, {"code": -1100, "msg": "Request body too large."}), 0)
            return None
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        replay = self.server.replay
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        raw_body = self._body()
        if raw_body is None:
            return
        body_text = raw_body.decode("utf-8", "replace")
        if raw_body and "x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
            params.update(parse_qsl(body_text, keep_blank_values=True))
        method, path = self.command, parts.path.rstrip("/") or "/"
        fault, gateway_status = replay.faults.pick()
        if fault == "drop":  # close the socket without a byte of response
            self.close_connection = True
            return
        if fault == "slow":
            time.sleep(replay.faults.config.slow_seconds)
        used = replay.count_weight(replay.api.weight(method, path, params))
        if fault == "429" or (replay.weight_limit is not None and used > replay.weight_limit):
            retry_after = replay.faults.config.retry_after if fault == "429" else 60 - int(time.time()) % 60
            response = Response(429, {"code": -1003, "msg": "Too many requests; current limit of IP(127.0.0.1) is "
                                                            f"{replay.weight_limit or 2400} requests per minute."},
                                {"Retry-After": str(retry_after)})
        elif fault == "5xx":
            reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}[gateway_status]
            self._send(gateway_status, f"<html><body><h1>{gateway_status} {reason}</h1></body></html>".encode(),
                       {"Content-Type": "text/html"}, used)
            return
        else:
            response = replay.api.handle(method, path, params, dict(self.headers.items()), parts.query + body_text)
        if response.drop:  # accepted, but the reply never arrives
            self.close_connection = True
            return
        self._send_json(response, used)

    def _send_json(self, response: Response, used: int) -> None:
        self._send(response.status, json.dumps(response.body, separators=(",", ":")).encode(),
                   {"Content-Type": "application/json", **response.headers}, used)

    def _send(self, status: int, body: bytes, headers: dict[str, str], used: int) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("X-MBX-USED-WEIGHT-1M", str(used))
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.replay.log_requests:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    replay: ReplayServer

    def __init__(self, address: tuple[str, int], replay: ReplayServer, family: int = socket.AF_INET) -> None:
        self.address_family = family
        self.replay = replay
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Unblock keep-alive handler threads so stop() returns promptly."""
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
