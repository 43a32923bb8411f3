"""The replay exchange: the store served over Binance USDⓈ-M's REST API, on loopback.

ccxt's real ``binanceusdm`` client talks to it after :func:`bot.exchange.make_exchange` has
pointed its URLs here (docs/binance-usdm.md §1.2). The pieces, one module each:

* :mod:`bot.replay.clock` — ``now = start + elapsed wall time × speed``; ``/fapi/v1/time`` returns it.
* :mod:`bot.replay.market` — stored series, availability (nothing from after now), aggregation.
* :mod:`bot.replay.api` — routing, Binance errors, the public market-data endpoints.
* :mod:`bot.replay.auth` — API key, HMAC signature and ``timestamp``/``recvWindow`` checks.
* :mod:`bot.replay.account` — the signed endpoints; :mod:`bot.replay.matching` — the account book
  and the matching engine on the replay clock,
  every formula through :mod:`bot.replay.accounting` (the backtest's own functions).
* :mod:`bot.replay.store` — the account state in SQLite (WAL), so a restart continues.
* :mod:`bot.replay.faults` — transport faults (429, 5xx, drops, slow replies) and trading faults
  (lost replies after acceptance, -1007, delayed fills, margin rejects, vanishing stops,
  liquidations).
* :mod:`bot.replay.http` — loopback-only listening, read timeouts, strict Content-Length.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bot.config import CostsConfig
from bot.errors import UserError
from bot.replay.account import Account
from bot.replay.accounting import Costs
from bot.replay.api import ApiError, BinanceUsdmApi, Request, Route, missing_param
from bot.replay.auth import Authenticator
from bot.replay.clock import ReplayClock
from bot.replay.faults import FAULT_KINDS, FaultConfig, FaultPicker, TradeFaults
from bot.replay.http import _HTTPServer, resolve_loopback
from bot.replay.market import EXCHANGE_ID, MarketData
from bot.replay.store import StateFile
from bot.store import Store
from bot.timeframes import parse_utc

CLOCK_PATH = "/cascade/v1/clock"
"""The replay's own clock-control endpoint (not Binance's; served only with ``clock_control``)."""

__all__ = ["CLOCK_PATH", "FAULT_KINDS", "FaultConfig", "ReplayClock", "ReplayServer", "TradeFaults"]


class ReplayServer:
    """The replay exchange over the stores in ``data_dir`` (a path, a :class:`Store`, or a list of
    them; the first holding a dataset wins).

    ``start``  replay clock start (UTC string, Timestamp or epoch ms; default: where the account
               state left off, else the first stored bar)
    ``speed``  replay clock speed (× real time; 0 freezes the clock)
    ``faults`` :class:`FaultConfig` for tests of retry logic
    ``weight_limit`` answer 429 -1003 once a minute's request weight exceeds this (off by default)
    ``api_key``, ``secret``  the test account's credentials (signed endpoints answer -2015 without)
    ``state``  SQLite file of the account (None: in memory, gone at stop)
    ``initial_balance``  USDT of a new account
    ``taker_fee``, ``slippage_bps``  one cost model for every market (fee fraction, basis points);
               default: each market's ``[costs]`` defaults, as the backtest charges them
    ``market_costs``  unified symbol -> (taker fee, slippage bps) per market; overrides the two above
    ``trade_faults``  :class:`TradeFaults` (switch them per test with ``server.trade_faults.arm``)
    ``timeframe``  the bars the matching engine books (default: finest with candles and mark)
    ``read_timeout``  seconds a connection may stay silent before it is dropped
    ``replay_timestamps``  check signed timestamps against the replay clock instead of the wall clock
    ``clock_control``  also serve ``POST /cascade/v1/clock?time=MS`` (loopback, like every endpoint):
               moves the replay clock forward to ``MS``, so a runner in another process can drive
               it bar by bar (lock-step: ``cascade paper --exchange-url URL --replay``)

    ``with ReplayServer(d, start="2025-02-01") as srv: ccxt_client_for(srv.url) ...``
    """

    def __init__(
        self,
        data_dir: Path | str | Store | Sequence[Path | str | Store],
        host: str = "127.0.0.1",
        port: int = 0,
        start: str | pd.Timestamp | int | None = None,
        speed: float = 1.0,
        faults: FaultConfig | None = None,
        exchange: str = EXCHANGE_ID,
        weight_limit: int | None = None,
        log_requests: bool = False,
        api_key: str | None = None,
        secret: str | None = None,
        state: Path | str | None = None,
        initial_balance: float = 10_000.0,
        taker_fee: float | None = None,
        slippage_bps: float | None = None,
        market_costs: Callable[[str], tuple[float, float]] | None = None,
        trade_faults: TradeFaults | None = None,
        timeframe: str | None = None,
        read_timeout: float = 10.0,
        replay_timestamps: bool = False,
        clock_control: bool = False,
    ) -> None:
        self._family, self._bind = resolve_loopback(host, port)
        if not initial_balance > 0:
            raise UserError(f"initial balance must be > 0, got {initial_balance}")
        if not read_timeout > 0:
            raise UserError(f"read timeout must be > 0 seconds, got {read_timeout}")
        dirs = [data_dir] if isinstance(data_dir, (str, Path, Store)) else list(data_dir)
        stores = [d if isinstance(d, Store) else Store(d) for d in dirs]
        self.data = MarketData(stores, exchange)
        if not self.data.markets:
            roots = ", ".join(str(s.root) for s in stores)
            raise UserError(f"no {exchange} perpetual data under {roots}; run cascade download or import-data first")
        self.state = StateFile(state)
        self.clock = ReplayClock(0, speed)
        self.api = BinanceUsdmApi(self.data, self.clock)
        self.trade_faults = trade_faults or TradeFaults()
        if market_costs is None:  # each market's [costs] defaults, unless one fee/slippage is given
            defaults = CostsConfig()

            def market_costs(symbol: str) -> tuple[float, float]:
                market = defaults.for_symbol(symbol)
                return (market.taker_fee if taker_fee is None else taker_fee,
                        market.slippage_bps if slippage_bps is None else slippage_bps)

        def costs(symbol: str) -> Costs:
            return Costs.from_config(*market_costs(symbol))
        self.account = Account(self.data, self.api, self.state, costs, initial_balance, timeframe,
                               self.trade_faults)
        self.clock.set(self._start_ms(start))
        if api_key and secret:
            self.api.authenticate = Authenticator(api_key, secret, self.clock.now_ms if replay_timestamps else None)
        if clock_control:
            self.api.register("POST", CLOCK_PATH, Route(self._set_clock))
        self.faults = FaultPicker(faults or FaultConfig())
        self.weight_limit = weight_limit
        self.log_requests = log_requests
        self.read_timeout = float(read_timeout)
        self._port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._weight_lock = threading.Lock()
        self._weight_minute, self._weight_used = -1, 0

    def _set_clock(self, req: Request) -> dict[str, int]:
        """``POST /cascade/v1/clock?time=MS``: the replay clock to ``MS`` (forward only, as time goes)."""
        raw = req.params.get("time", "")
        if not raw.isdigit():
            raise missing_param("time")
        ms = int(raw)
        if ms < self.clock.now_ms():
            raise ApiError(400, -1100, f"time {ms} is before the replay clock ({self.clock.now_ms()}); "
                                       "the clock only moves forward")
        with self.account.lock:  # not while a request books the account up to "now"
            self.clock.set(ms)
        return {"serverTime": self.clock.now_ms()}

    def _start_ms(self, start: str | pd.Timestamp | int | None) -> int:
        resumed = self.account.clock_ms
        if start is None or start == "":
            if resumed:
                return resumed
            first = self.data.first_time_ms()
            if first is None:
                raise UserError("no stored candles to start the replay clock from; pass --start")
            return first
        if isinstance(start, (int, np.integer)):
            ms = int(start)
        else:
            ts = parse_utc(start, "replay start") if isinstance(start, str) else pd.Timestamp(start)
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
            ms = int(ts.value // 1_000_000)
        if resumed and ms < resumed:
            at = pd.Timestamp(resumed, unit="ms", tz="UTC").isoformat()
            raise UserError(f"the account state is at {at}; start at or after it (or omit --start), "
                            "or use a new --state file")
        return ms

    def count_weight(self, weight: int) -> int:
        """Add ``weight`` to the current wall-clock minute; the minute's total."""
        minute = int(time.time() // 60)
        with self._weight_lock:
            if minute != self._weight_minute:
                self._weight_minute, self._weight_used = minute, 0
            self._weight_used += weight
            return self._weight_used

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("replay server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> ReplayServer:
        """Listen and serve in a background thread."""
        if self._httpd is not None:
            return self
        try:
            self._httpd = _HTTPServer((self._bind, self._port), self, self._family)
        except OSError as err:
            raise UserError(f"cannot listen on {self._bind}:{self._port} ({err.strerror}); "
                            "pick another --port (0 = any free port)") from None
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="replay-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd, self._thread = None, None
        with self.account.lock:
            self.account.flush()

    def close(self) -> None:
        """Stop and close the state file."""
        self.stop()
        self.state.close()

    def serve_forever(self) -> None:
        """Serve in the foreground until KeyboardInterrupt (then stop cleanly and re-raise)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
