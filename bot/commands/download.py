"""`cascade download`: candles, mark prices, funding and open interest through ccxt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from bot.commands.data import dataset_table, make_console, writable_data_dir
from bot.config import load_config, with_overrides
from bot.download import DOWNLOADABLE_KINDS, Downloader, download_leverage_tiers
from bot.errors import UserError
from bot.exchange import make_exchange
from bot.store import Store
from bot.timeframes import parse_utc


class RichProgress:
    """One progress bar per (symbol, kind), advancing through the requested time range."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<32}"), BarColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rows]:>8,} rows"), TimeElapsedColumn(),
            console=console, transient=False,
        )
        self._totals: dict[Any, int] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def begin(self, label: str, total: int) -> Any:
        task = self._progress.add_task(label, total=total, rows=0)
        self._totals[task] = total
        return task

    def update(self, task: Any, completed: int, rows: int) -> None:
        self._progress.update(task, completed=completed, rows=rows)

    def end(self, task: Any) -> None:
        self._progress.update(task, completed=self._totals.get(task))


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    return items or None


def download(
    symbols: Annotated[str | None, typer.Option("--symbols", help="Comma-separated ccxt symbols, e.g. BTC/USDT:USDT,ETH/USDT:USDT.")] = None,
    exchange: Annotated[str | None, typer.Option("--exchange", help="ccxt exchange id (default: config \\[data] exchange, binanceusdm).")] = None,
    timeframe: Annotated[str | None, typer.Option("--timeframe", help="Candle timeframe, also the open-interest period.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="First UTC date fetched when nothing is stored.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Exclusive UTC end date (default: now).")] = None,
    kinds: Annotated[str | None, typer.Option("--kinds", help=f"Comma list of {','.join(DOWNLOADABLE_KINDS)}.")] = None,
    exchange_url: Annotated[str | None, typer.Option("--exchange-url", help="Send every request to this host (e.g. the replay exchange).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data directory (overrides config \\[data] dir).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Config file (default ./config.toml).")] = None,
    max_retries: Annotated[int | None, typer.Option("--max-retries", help="Retries per request on network errors, 429 and 5xx.")] = None,
    backoff: Annotated[float | None, typer.Option("--backoff", help="First retry delay in seconds (doubles each retry).")] = None,
    page_limit: Annotated[int | None, typer.Option("--page-limit", min=1, help="Rows per request (default: the endpoint's maximum).")] = None,
    rate_limit: Annotated[bool, typer.Option("--rate-limit/--no-rate-limit", help="ccxt's client-side throttling; disable only against a local replay server.")] = True,
    leverage_tiers: Annotated[bool, typer.Option("--leverage-tiers/--no-leverage-tiers", help="Also fetch the symbols' leverage brackets (fetch_leverage_tiers; Binance needs an API key).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the written datasets as JSON on the last line.")] = False,
) -> None:
    """Download market data through ccxt into the store; re-runs fetch only what is missing."""
    cfg = load_config(config)
    kind_list = _split(kinds)
    for kind in kind_list or ():
        if kind not in (*DOWNLOADABLE_KINDS, "liquidations"):
            raise UserError(f"unknown data kind '{kind}' in --kinds; use some of {', '.join(DOWNLOADABLE_KINDS)}")
    cfg = with_overrides(cfg, "download", symbols=_split(symbols), timeframe=timeframe, since=since, until=until,
                         kinds=kind_list, exchange_url=exchange_url, max_retries=max_retries, backoff_seconds=backoff)
    d = cfg.download
    start = parse_utc(d.since, "--since")
    if start is None:
        raise UserError("no start date: pass --since or set [download] since")
    end = parse_utc(d.until, "--until")
    client = make_exchange(exchange or cfg.data.exchange, url=d.exchange_url or None, rate_limit=rate_limit,
                           api_key_env=cfg.exchange.api_key_env, secret_env=cfg.exchange.secret_env)
    store = Store(writable_data_dir(data_dir or cfg.data.dir))
    console = make_console(as_json)
    with RichProgress(console) as progress:
        downloader = Downloader(client, store, max_retries=d.max_retries, backoff_seconds=d.backoff_seconds,
                                page_limit=page_limit, progress=progress)
        report = downloader.run(list(d.symbols), d.timeframe, list(d.kinds), start, end)
    if leverage_tiers:
        try:
            path = download_leverage_tiers(client, store, list(d.symbols))
            console.print(f"leverage brackets stored in {path}")
        except UserError as err:
            report.warnings.append(f"leverage brackets not fetched: {err}")
    infos = report.written
    console.print(dataset_table(infos, f"downloaded into {store.root} ({downloader.requests} requests)"))
    for line in report.warnings:
        console.print(f"[yellow]warning:[/] {line}")
    if as_json:
        print(json.dumps([i.to_json() for i in infos]))
