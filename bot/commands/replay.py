"""`cascade replay-server`: the replay exchange in the foreground until Ctrl-C."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from bot.config import Config, load_config, with_overrides
from bot.data import stores_for
from bot.errors import UserError
from bot.replay import FAULT_KINDS, TRADE_FAULT_KINDS, FaultConfig, ReplayServer, TradeFaults
from bot.store import Store


def _trade_fault_rates(specs: list[str]) -> dict[str, float]:
    rates: dict[str, float] = {}
    for spec in specs:
        kind, _, rate = spec.partition("=")
        try:
            rates[kind.strip()] = float(rate)
        except ValueError:
            raise UserError(f"--trade-fault '{spec}' must look like KIND=RATE, e.g. lost_reply=0.1; "
                            f"kinds: {', '.join(TRADE_FAULT_KINDS)}") from None
    return rates


def _market_costs(cfg: Config) -> Callable[[str], tuple[float, float]]:
    """Each market's (taker fee, slippage bps) as its backtest charges them (``[costs]`` per market)."""
    def per_market(symbol: str) -> tuple[float, float]:
        market = cfg.costs.for_symbol(symbol)
        return market.taker_fee, market.slippage_bps
    return per_market


def replay_server(
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data directory to serve (default: config \\[data] dir, plus the sample).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Loopback address to listen on (127.0.0.1, ::1, localhost).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="TCP port (0 = any free port).")] = None,
    start: Annotated[str | None, typer.Option("--start", help="Replay clock start, UTC (default: where --state left off, else the first stored bar).")] = None,
    speed: Annotated[float | None, typer.Option("--speed", help="Replay clock speed, x real time.")] = None,
    state: Annotated[str | None, typer.Option("--state", help="Account state file (SQLite); restarts continue from it. Default: in memory.")] = None,
    initial_balance: Annotated[float | None, typer.Option("--initial-balance", help="USDT balance of a new test account.")] = None,
    timeframe: Annotated[str | None, typer.Option("--timeframe", help="Bars the matching engine books (default: finest with candles and mark).")] = None,
    read_timeout: Annotated[float | None, typer.Option("--read-timeout", help="Seconds a silent connection is kept open.")] = None,
    fault_rate: Annotated[float, typer.Option("--fault-rate", min=0.0, max=1.0, help="Share of requests that fail (tests of retry logic).")] = 0.0,
    fault_seed: Annotated[int | None, typer.Option("--fault-seed", help="Seed of the fault injection.")] = None,
    fault_kinds: Annotated[str, typer.Option("--fault-kinds", help=f"Comma list of {','.join(FAULT_KINDS)}.")] = ",".join(FAULT_KINDS),
    slow_seconds: Annotated[float, typer.Option("--slow-seconds", min=0.0, help="Delay of a 'slow' fault.")] = 2.0,
    trade_fault: Annotated[list[str] | None, typer.Option("--trade-fault", help=f"KIND=RATE, repeatable; kinds: {', '.join(TRADE_FAULT_KINDS)}.")] = None,
    fill_delay: Annotated[float, typer.Option("--fill-delay", min=0.0, help="Replay seconds a 'delayed_fill' waits.")] = 60.0,
    clock_control: Annotated[bool, typer.Option("--clock-control", help="Let a client move the replay clock forward (POST /cascade/v1/clock?time=MS): lock-step paper runs from another process.")] = False,
    replay_timestamps: Annotated[bool, typer.Option("--replay-timestamps", help="Check signed timestamps against the replay clock (clients: adjustForTimeDifference).")] = False,
    log_requests: Annotated[bool, typer.Option("--log-requests", help="Print one line per request on stderr.")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="Config file (default ./config.toml).")] = None,
    stream_port: Annotated[int | None, typer.Option("--stream-port", help="Also serve Binance market websocket streams (forceOrder, kline) on this port (0 = any free port).")] = None,
) -> None:
    """Serve stored data over Binance USDⓈ-M's REST API with a replay clock (ccxt binanceusdm talks to it).

    The test account's API key and secret are read from the environment variables that
    \\[exchange] api_key_env / secret_env name; without them the signed endpoints answer -2015.
    """
    cfg = with_overrides(load_config(config), "replay", host=host, port=port, start=start, speed=speed, state=state,
                         initial_balance=initial_balance, timeframe=timeframe, read_timeout=read_timeout)
    r = cfg.replay
    roots: list[Path | str | Store] = ([data_dir] if data_dir is not None
                                       else [s.root for s in stores_for(cfg.data.dir, cfg.data.use_sample)])
    faults = FaultConfig(rate=fault_rate, seed=fault_seed, slow_seconds=slow_seconds,
                         kinds=tuple(k.strip() for k in fault_kinds.split(",") if k.strip()))
    trade_faults = TradeFaults(_trade_fault_rates(trade_fault or []), seed=fault_seed,
                               fill_delay_ms=int(fill_delay * 1000))
    api_key, secret = os.environ.get(cfg.exchange.api_key_env), os.environ.get(cfg.exchange.secret_env)
    server = ReplayServer(roots, host=r.host, port=r.port, start=r.start or None, speed=r.speed, faults=faults,
                          log_requests=log_requests, api_key=api_key, secret=secret, state=r.state or None,
                          initial_balance=r.initial_balance, market_costs=_market_costs(cfg), trade_faults=trade_faults,
                          timeframe=r.timeframe or None, read_timeout=r.read_timeout,
                          replay_timestamps=replay_timestamps, clock_control=clock_control).start()
    now = server.clock.now_ms()
    typer.echo(f"replay exchange (binanceusdm) serving {', '.join(sorted(m.symbol for m in server.data.markets.values()))}")
    typer.echo(f"clock {pd.Timestamp(now, unit='ms', tz='UTC').isoformat()} at {r.speed:g}x; Ctrl-C to stop")
    if api_key and secret:
        t = server.account.totals(now)
        typer.echo(f"account {t['wallet']:.2f} USDT wallet, matching on {server.account.timeframe} bars, "
                   f"state {r.state or 'in memory'}")
    else:
        typer.echo(f"no trading: set {cfg.exchange.api_key_env} and {cfg.exchange.secret_env} to enable the "
                   "signed endpoints")
    typer.echo(f"url {server.url}   e.g. cascade download --exchange-url {server.url} --no-rate-limit")
    stream = None
    if stream_port is not None:  # websocket streams on the same clock (bot/replay/stream.py)
        from bot.replay.stream import stream_server_for

        stream = stream_server_for([d if isinstance(d, Store) else Store(d) for d in roots], server.clock,
                                   host=r.host, port=stream_port).start()
        typer.echo(f"streams {stream.url}   e.g. cascade record --exchange-url {server.url} --ws-url {stream.url}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        if stream is not None:
            stream.stop()
        server.close()
