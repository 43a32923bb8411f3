"""Putting a run together: run folder, logging, exchange, broker, feed, runner (used by the commands).

A run folder (``[live] runs_dir/<run>/``) holds ``state.sqlite`` (the truth), ``events.jsonl`` (one
JSON object per decision and order event), ``trades.csv`` (the backtest's columns) and ``run.json``
(what runs: strategy, parameters, symbol, timeframe, broker, range). Starting a run whose folder
exists resumes it, after checking it is the same run.
"""

from __future__ import annotations

import json
import secrets as _secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from bot.errors import UserError
from bot.live.brokers import ExchangeBroker, SimBroker
from bot.live.feed import Feed, stored_open_interest
from bot.live.killswitch import KillSwitch
from bot.live.runner import Runner
from bot.live.secrets import Redactor
from bot.live.store import RunStore
from bot.timeframes import timeframe_to_timedelta


class EventLog:
    """One line per event on the terminal (rich), in ``events.jsonl`` and in the state database."""

    def __init__(self, store: RunStore, redact: Redactor, console: Any | None = None, quiet: bool = False) -> None:
        self.store = store
        self.redact = redact
        self.path = store.folder / "events.jsonl"
        self.console = console
        self.quiet = quiet

    def __call__(self, kind: str, message: str, bar_ms: int | None = None, **data: Any) -> None:
        message = self.redact(message)
        data = {k: (self.redact(v) if isinstance(v, str) else v) for k, v in data.items()}
        self.store.event(kind, message, bar_ms, **data)
        line = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "kind": kind, "message": message,
                **({"bar": pd.Timestamp(bar_ms, unit="ms", tz="UTC").isoformat()} if bar_ms is not None else {}),
                **data}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, default=str) + "\n")
        if not self.quiet and self.console is not None:
            style = {"decision": "cyan", "order": "green", "fill": "green", "trade": "bold",
                     "error": "red", "stale": "yellow", "missed": "yellow", "halted": "bold red"}.get(kind, "")
            self.console.print(f"[{style}]{kind:<9}[/{style}] {message}" if style else f"{kind:<9} {message}",
                               markup=True, highlight=False, soft_wrap=True)


@dataclass
class Session:
    """Everything one run needs; close it when done."""

    runner: Runner
    store: RunStore
    log: EventLog
    folder: Path
    server: Any = None  # the replay exchange whose clock a lock-step run drives (in process or remote)
    gateway: Any = None
    lock: Any = None  # the run folder's lock file, held while the runner lives

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.store.close()
        if self.lock is not None:
            self.lock.close()  # releases the flock


def _lock(folder: Path) -> Any:
    """An exclusive lock on the run folder: two runners on one run would both trade it.

    ``flock`` is released by the kernel when the process dies, SIGKILL included, so a restart after a
    crash is never locked out.
    """
    import fcntl

    fh = (folder / "runner.lock").open("a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise UserError(f"run {folder.name} is already running in another process ({folder}); stop it first "
                        "or pick another --run") from None
    return fh


def _gateway_events(log: EventLog) -> Any:
    """The gateway's events into the run's log, as ``gw.<kind>``.

    The gateway reports every ccxt error as it meets it and retracts two kinds afterwards (it pops
    them from ``Gateway.events``): "no need to change margin type" at start and "order not found"
    while looking an order up, which are answers, not failures; they are not logged here either.
    Placements are logged by the broker with their fills.
    """
    def on_event(e: Any) -> None:
        if e.kind == "order":
            return
        if e.kind == "rejected" and any(x in e.message for x in ("MarginModeAlreadySet", "-4046", "OrderNotFound")):
            return
        log(f"gw.{e.kind}", e.message)
    return on_event


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)


def run_folder(cfg: Any, run: str | None, strategy: str) -> Path:
    if run:
        p = Path(run)
        return p if (p.is_absolute() or p.parent != Path(".")) else Path(cfg.live.runs_dir) / run
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(cfg.live.runs_dir) / f"paper-{strategy}-{stamp}"


def _check_meta(store: RunStore, meta: dict[str, Any], folder: Path) -> None:
    old = store.get("meta")
    if old is None:
        store.put("meta", meta)
        (folder / "run.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        return
    for key in ("strategy", "params", "symbol", "timeframe", "broker"):
        if old.get(key) != meta.get(key):
            raise UserError(f"run folder {folder} holds a run with another {key} ({old.get(key)!r}, now "
                            f"{meta.get(key)!r}); use a new --run name or the same settings")


def build(cfg: Any, spec: Any, params: Any, *, broker: str, run: str | None, start: pd.Timestamp | None,
          end: pd.Timestamp | None, exchange_url: str | None = None, lockstep: bool = False,
          api_key: str | None = None, secret: str | None = None, console: Any = None, quiet: bool = False,
          replay_options: dict[str, Any] | None = None) -> Session:
    """A ready `Session` (module docstring). ``lockstep`` drives a replay exchange's clock bar by bar:
    the one at ``exchange_url`` (started with ``--clock-control``), else one started in process."""
    data = cfg.data
    tf_ms = int(timeframe_to_timedelta(data.timeframe).total_seconds() * 1000)
    folder = run_folder(cfg, run, spec.name)
    fresh = not folder.exists()  # a run that fails to start leaves no folder behind
    server = lock = None
    if lockstep and (start is None or end is None):
        raise UserError("--replay needs --from and --to (the range the lock-step run plays)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = _lock(folder)  # before anything touches the folder's files
        if lockstep and exchange_url:
            server = RemoteReplay(exchange_url)
        elif lockstep:
            server, exchange_url, api_key, secret = _replay(cfg, folder, start, replay_options)
        return _assemble(cfg, spec, params, folder, server, lock, broker=broker, start=start, end=end,
                         exchange_url=exchange_url, lockstep=lockstep, api_key=api_key, secret=secret,
                         console=console, quiet=quiet, tf_ms=tf_ms)
    except BaseException:
        if server is not None:
            server.close()
        if lock is not None:
            lock.close()
        if fresh and folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        raise


class RemoteReplay:
    """A replay exchange in another process (``cascade replay-server --clock-control``) whose clock
    this process moves forward, one bar close at a time, for a lock-step run."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.clock = self  # the in-process server's ``server.clock.set(ms)`` interface

    def set(self, ms: int) -> None:
        """Move the replay clock to ``ms`` (epoch milliseconds)."""
        import urllib.error
        import urllib.request

        from bot.replay.server import CLOCK_PATH

        request = urllib.request.Request(f"{self.url}{CLOCK_PATH}?time={int(ms)}", data=b"", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                reply.read()
        except (urllib.error.URLError, OSError) as err:
            raise UserError(f"cannot move the replay clock at {self.url} ({err}); start it with "
                            "'cascade replay-server --clock-control'") from None

    def close(self) -> None:
        """Nothing to stop: the server belongs to its own process."""


def _replay(cfg: Any, folder: Path, start: pd.Timestamp,
            options: dict[str, Any] | None) -> tuple[Any, str, str, str]:
    """An in-process replay exchange over the stored data, its clock frozen at ``start`` (or where the
    run's replay account left off), with an ephemeral test account whose key never leaves this process."""
    from bot.data import stores_for
    from bot.replay import ReplayServer

    data = cfg.data
    costs = cfg.costs.for_symbol(data.symbol)
    api_key, secret = _secrets.token_hex(16), _secrets.token_hex(32)
    account = folder / "replay-account.sqlite"  # the replay account continues when the run resumes
    server = ReplayServer([s.root for s in stores_for(data.dir, data.use_sample)],
                          start=None if account.exists() else _ms(start), speed=0,
                          api_key=api_key, secret=secret, initial_balance=cfg.backtest.initial_cash,
                          taker_fee=costs.taker_fee, slippage_bps=costs.slippage_bps,
                          timeframe=data.timeframe, state=str(account), **(options or {})).start()
    return server, server.url, api_key, secret


def _assemble(cfg: Any, spec: Any, params: Any, folder: Path, server: Any, lock: Any, *, broker: str,
              start: pd.Timestamp | None, end: pd.Timestamp | None, exchange_url: str | None, lockstep: bool,
              api_key: str | None, secret: str | None, console: Any, quiet: bool, tf_ms: int) -> Session:
    from backtests.runner import params_dict
    from bot.exchange import make_exchange
    from bot.gateway import Gateway

    data = cfg.data
    store = RunStore(folder)
    log = EventLog(store, Redactor(api_key, secret), console, quiet)
    ex = make_exchange(data.exchange, url=exchange_url or None, rate_limit=not exchange_url, timeout=10_000,
                       **({"apiKey": api_key, "secret": secret} if api_key and secret else {}))
    if start is None:  # the next bar on the exchange's clock (the replay's, when replaying)
        try:
            now = int(ex.fetch_time())
        except Exception as err:  # noqa: BLE001 — any failure to reach the exchange is one line
            store.close()
            raise UserError(f"cannot reach the exchange at {exchange_url or data.exchange}: "
                            f"{type(err).__name__}") from None
        start = pd.Timestamp((now // tf_ms + 1) * tf_ms, unit="ms", tz="UTC")
    start_ms = (_ms(start) + tf_ms - 1) // tf_ms * tf_ms
    end_ms = None if end is None else _ms(end)
    anchor_ms = start_ms - int(spec.warmup(params).total_seconds() * 1000)
    meta = {"strategy": spec.name, "params": params_dict(params), "symbol": data.symbol, "timeframe": data.timeframe,
            "exchange": data.exchange, "broker": broker, "start_ms": start_ms, "end_ms": end_ms,
            "lockstep": lockstep, "created": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        _check_meta(store, meta, folder)
        meta = store.get("meta")
        # client ids derive from (run, bar, intent): the run is the folder's name plus its creation time, so a
        # restart re-derives its own ids while another run of the same name on the account never collides
        gw = Gateway(ex, f"{folder.name}@{meta['created']}", backoff=0.2 if exchange_url else 1.0,
                     on_event=_gateway_events(log))
        if broker == "exchange":
            if not (api_key and secret):
                raise UserError("trading through an exchange needs an API key and secret in the environment "
                                f"variables {cfg.exchange.api_key_env} / {cfg.exchange.secret_env}")
            lev = float(cfg.risk.max_leverage)
            gw.start([data.symbol], lev)
            b: Any = ExchangeBroker(gw, data.symbol, store, log, cfg.live.stop_trigger)
            initial = b.wallet() if store.load_core() is None else 0.0
        else:
            gw.call("load_markets", ex.load_markets)
            b = SimBroker()
            initial = cfg.backtest.initial_cash
        feed = Feed(gw, data.symbol, data.timeframe, int(meta.get("anchor_ms", anchor_ms)),
                    stored_open_interest=stored_open_interest(cfg), max_bars=cfg.live.max_window_bars)
        if store.get("meta", {}).get("anchor_ms") is None:
            store.put("meta", {**meta, "anchor_ms": anchor_ms})
        kill = KillSwitch(folder, cfg.live.halt_file, cfg.live.error_burst)
        runner = Runner(cfg, spec, params, store, b, feed, start_ms=int(meta["start_ms"]),
                        end_ms=meta.get("end_ms"), log=log, killswitch=kill, initial_cash=initial)
    except BaseException:
        store.close()
        raise
    return Session(runner, store, log, folder, server, gw, lock)
