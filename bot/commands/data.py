"""`cascade import-data` and `cascade data-info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bot.config import load_config
from bot.data import stores_for
from bot.importers import Importer
from bot.store import DatasetInfo, Store

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Config file (default ./config.toml).")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (overrides \\[data] dir).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary as the last line.")]


def make_console(as_json: bool = False) -> Console:
    """Human output goes to stderr when stdout carries JSON; wide enough for a table when piped."""
    console = Console(stderr=as_json)
    if not console.is_terminal:
        console = Console(stderr=as_json, width=150)
    return console


def dataset_table(infos: list[DatasetInfo], title: str) -> Table:
    """A rich table of datasets: ranges, rows and gaps."""
    table = Table(title=title)
    for col in ("exchange", "symbol", "kind", "tf", "start", "end", "rows", "gaps", "source"):
        table.add_column(col, justify="right" if col in ("rows", "gaps") else "left")
    for i in infos:
        table.add_row(i.exchange, i.symbol, i.kind, i.timeframe or "-", (i.start or "-")[:16], (i.end or "-")[:16],
                      f"{i.rows:,}", str(i.gaps), i.source)
    return table


def import_data(
    path: Annotated[Path, typer.Argument(help="File or directory: freqtrade data dir, long parquet, Binance bulk CSV/zip.")],
    exchange: Annotated[str | None, typer.Option("--exchange", help="ccxt exchange id for freqtrade files.")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import files from other tools into the data store (formats: see bot/importers.py / README)."""
    cfg = load_config(config)
    store = Store(data_dir or cfg.data.dir)
    console = make_console(as_json)
    with console.status(f"importing {path} …"):
        report = Importer(store, exchange=exchange).import_path(path)
    infos = sorted(report.written.values(), key=lambda i: (i.exchange, i.symbol, i.kind, i.timeframe or ""))
    console.print(dataset_table(infos, f"imported into {store.root}"))
    for line in report.problems:
        console.print(f"[yellow]warning:[/] {line}")
    for line in report.skipped:
        console.print(f"[dim]skipped: {line}[/]")
    if as_json:
        print(json.dumps([i.to_json() for i in infos]))


def data_info(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    sample: Annotated[bool | None, typer.Option("--sample/--no-sample",
                                                help="Also list the bundled sample (default: \\[data] use_sample).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List stored datasets with their ranges, row counts and gaps."""
    cfg = load_config(config)
    use_sample = cfg.data.use_sample if sample is None else sample
    infos: list[DatasetInfo] = []
    seen = set()
    for store in stores_for(data_dir or cfg.data.dir, use_sample):
        for key in store.keys() if store.root.is_dir() else []:
            if key in seen:  # the user's data shadows the sample
                continue
            seen.add(key)
            infos.append(store.info(key))
    console = make_console(as_json)
    console.print(dataset_table(infos, "stored datasets") if infos else "no datasets stored")
    if as_json:
        print(json.dumps([i.to_json() for i in infos]))
