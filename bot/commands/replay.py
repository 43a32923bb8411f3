"""`cascade replay-server`: the replay exchange in the foreground until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from bot.config import load_config, with_overrides
from bot.data import stores_for
from bot.replay.server import FAULT_KINDS, FaultConfig, ReplayServer
from bot.store import Store


def replay_server(
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data directory to serve (default: config \\[data] dir, plus the sample).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Loopback address to listen on.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="TCP port (0 = any free port).")] = None,
    start: Annotated[str | None, typer.Option("--start", help="Replay clock start, UTC (default: first stored bar).")] = None,
    speed: Annotated[float | None, typer.Option("--speed", help="Replay clock speed, x real time.")] = None,
    fault_rate: Annotated[float, typer.Option("--fault-rate", min=0.0, max=1.0, help="Share of requests that fail (tests of retry logic).")] = 0.0,
    fault_seed: Annotated[int | None, typer.Option("--fault-seed", help="Seed of the fault injection.")] = None,
    fault_kinds: Annotated[str, typer.Option("--fault-kinds", help=f"Comma list of {','.join(FAULT_KINDS)}.")] = ",".join(FAULT_KINDS),
    slow_seconds: Annotated[float, typer.Option("--slow-seconds", min=0.0, help="Delay of a 'slow' fault.")] = 2.0,
    log_requests: Annotated[bool, typer.Option("--log-requests", help="Print one line per request on stderr.")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="Config file (default ./config.toml).")] = None,
    stream_port: Annotated[int | None, typer.Option("--stream-port", help="Also serve Binance market websocket streams (forceOrder, kline) on this port (0 = any free port).")] = None,
) -> None:
    """Serve stored data over Binance USDⓈ-M's REST API with a replay clock (ccxt binanceusdm talks to it)."""
    cfg = with_overrides(load_config(config), "replay", host=host, port=port, start=start, speed=speed)
    r = cfg.replay
    roots: list[Path | str | Store] = ([data_dir] if data_dir is not None
                                       else [s.root for s in stores_for(cfg.data.dir, cfg.data.use_sample)])
    faults = FaultConfig(rate=fault_rate, seed=fault_seed, slow_seconds=slow_seconds,
                         kinds=tuple(k.strip() for k in fault_kinds.split(",") if k.strip()))
    server = ReplayServer(roots, host=r.host, port=r.port, start=r.start or None, speed=r.speed, faults=faults,
                          log_requests=log_requests).start()
    now = server.clock.now_ms()
    typer.echo(f"replay exchange (binanceusdm) serving {', '.join(sorted(m.symbol for m in server.data.markets.values()))}")
    typer.echo(f"clock {pd.Timestamp(now, unit='ms', tz='UTC').isoformat()} at {r.speed:g}x; Ctrl-C to stop")
    typer.echo(f"url {server.url}   e.g. cascade download --exchange-url {server.url} --no-rate-limit")
    stream = None
    if stream_port is not None:  # liqdata: websocket streams on the same clock (bot/replay/stream.py)
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
