"""`cascade record`: record realised liquidations, open interest and funding until stopped."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bot.commands.data import make_console
from bot.config import load_config, with_overrides
from bot.errors import UserError
from bot.record.client import make_pro_exchange
from bot.record.recorder import Recorder
from bot.record.state import RecorderLock, read_gaps, read_status
from bot.store import Store
from bot.timeframes import timeframe_ms


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _show_status(data_dir: Path, as_json: bool) -> None:
    status = read_status(data_dir)
    gaps = read_gaps(data_dir)
    running = RecorderLock.held(data_dir)
    if as_json:
        print(json.dumps({"running": running, "status": status, "gaps": gaps}))
        return
    console = make_console(False)
    if status is None:
        console.print(f"nothing recorded into {data_dir} yet; start 'cascade record'")
        return
    state = "running" if running else "not running"
    console.print(f"recorder {state} (pid {status.get('pid')}), started {status.get('started')}, "
                  f"heartbeat {status.get('heartbeat')}, store {status.get('store')}")
    table = Table(title="streams")
    for col in ("venue", "stream", "connected", "last message", "last event", "rows", "reconnects", "gaps"):
        table.add_column(col)
    for vid, v in (status.get("venues") or {}).items():
        table.add_row(vid, v.get("stream", ""), "yes" if v.get("connected") and running else "no",
                      str(v.get("last_message") or "-")[:19], str(v.get("last_event") or "-")[:19],
                      f"{v.get('rows', 0):,}", str(v.get("reconnects", 0)), str(v.get("gaps", 0)))
        for what, last in (v.get("polls") or {}).items():
            table.add_row(vid, f"poll {what}", "", str(last)[:19], "", "", "", "")
    console.print(table)
    if gaps:
        gt = Table(title=f"known gaps ({len(gaps)}, exchange clock)")
        for col in ("venue", "start", "end", "seconds", "reason"):
            gt.add_column(col)
        for g in gaps[-20:]:
            gt.add_row(g["exchange"], g["start"][:19], g["end"][:19], f"{g['seconds']:g}", g["reason"])
        console.print(gt)
    errors = [f"{vid}: {v['last_error']}" for vid, v in (status.get("venues") or {}).items() if v.get("last_error")]
    for line in errors:
        console.print(f"[yellow]last error[/] {line}")


def record(
    venues: Annotated[str | None, typer.Option("--venues", help="Comma list of binanceusdm, bybit, okx (default: config \\[record] venues).")] = None,
    symbols: Annotated[str | None, typer.Option("--symbols", help="Comma-separated unified symbols; '' = every market.")] = None,
    poll_interval: Annotated[str | None, typer.Option("--poll-interval", help="Open-interest/funding poll period (1m, 5m ...; '' = no polls).")] = None,
    exchange_url: Annotated[str | None, typer.Option("--exchange-url", help="Send REST (and websockets unless --ws-url) to this host, e.g. the replay exchange.")] = None,
    ws_url: Annotated[str | None, typer.Option("--ws-url", help="Websocket host, e.g. ws://127.0.0.1:8766 (replay-server --stream-port).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data directory (overrides \\[data] dir).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Config file (default ./config.toml).")] = None,
    duration: Annotated[float | None, typer.Option("--duration", min=0.0, help="Stop after this many seconds (default: until Ctrl-C / SIGTERM).")] = None,
    rate_limit: Annotated[bool, typer.Option("--rate-limit/--no-rate-limit", help="ccxt's client-side throttling; disable only against a local replay server.")] = True,
    status: Annotated[bool, typer.Option("--status", help="Show what is being recorded, the last message per stream and known gaps; then exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --status: print it as JSON.")] = False,
) -> None:
    """Record realised liquidations (websocket) plus open interest and funding (REST polls) until stopped."""
    cfg = load_config(config)
    root = Path(data_dir or cfg.data.dir)
    if status:
        _show_status(root, as_json)
        return
    cfg = with_overrides(cfg, "record", venues=_split(venues), symbols=_split(symbols), poll_interval=poll_interval,
                         exchange_url=exchange_url, ws_url=ws_url)
    r = cfg.record
    if not r.venues:
        raise UserError("no venue to record: pass --venues binanceusdm,bybit,okx or set [record] venues")
    if r.poll_interval:
        timeframe_ms(r.poll_interval)
    if not r.symbols and any(v != "binanceusdm" for v in r.venues):
        raise UserError("bybit and okx streams need symbols; pass --symbols BTC/USDT:USDT,... "
                        "(every market works on binanceusdm only)")
    lock = RecorderLock(root).acquire()
    try:
        clients = [(v, make_pro_exchange(v, url=r.exchange_url or None, ws_url=r.ws_url or None,
                                         rate_limit=rate_limit)) for v in r.venues]
        recorder = Recorder(Store(root), clients, r.symbols, poll_timeframe=r.poll_interval,
                            flush_seconds=r.flush_seconds, max_backoff=r.max_backoff_seconds,
                            log=lambda line: print(line, file=sys.stderr, flush=True))
        asyncio.run(_run(recorder, duration))
    finally:
        lock.release()
    print(f"stopped; {sum(v.rows for v in recorder.venues):,} liquidation row(s) this run, "
          f"gaps in {root / '.record' / 'gaps.jsonl'}", file=sys.stderr)


async def _run(recorder: Recorder, duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await recorder.run(stop, duration)
    except Exception as err:
        import ccxt

        if isinstance(err, ccxt.BaseError):
            raise UserError(f"exchange error ({type(err).__name__}: {str(err)[:200]}); "
                            "check --exchange-url/--ws-url and the symbols") from None
        raise
