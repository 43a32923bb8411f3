"""`cascade import-data` and `cascade data-info`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bot.atomic import user_errors
from bot.config import load_config
from bot.data import check_data_dir, stores_for
from bot.errors import UserError
from bot.importers import Importer
from bot.store import DatasetInfo, Store
from bot.validation import repair

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
    for col in ("exchange", "symbol", "kind", "tf", "start", "end", "rows", "gaps", "problems", "source"):
        table.add_column(col, justify="right" if col in ("rows", "gaps", "problems") else "left")
    for i in infos:
        table.add_row(i.exchange, i.symbol, i.kind, i.timeframe or "-", (i.start or "-")[:16], (i.end or "-")[:16],
                      f"{i.rows:,}", str(i.gaps), str(len(i.problems)), i.source)
    return table


def writable_data_dir(path: Path) -> Path:
    """A data directory to write into: created when missing; a file there is a one-line error."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"data directory {path} is a file; pass a folder to --data-dir")
    with user_errors(path, "creating"):
        path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise UserError(f"data directory {path} is not writable; choose a location you can write to")
    return path


def repair_store(store: Store) -> list[str]:
    """Rewrite every dataset of ``store`` that breaks a rule (under its lock); one line per change."""
    lines: list[str] = []
    for key in store.keys():
        changes = store.rewrite(key, lambda f, k=key: repair(f, k.kind, k.timeframe, k.exchange))
        lines.extend(f"{store.path(key)}: {c}" for c in changes)
    return lines


def import_data(
    path: Annotated[Path, typer.Argument(help="File or directory: freqtrade data dir, long parquet, Binance bulk CSV/zip.")],
    exchange: Annotated[str | None, typer.Option("--exchange", help="ccxt exchange id for freqtrade files.")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Drop or clip rows that break a data rule (each change "
                                                          "is reported) instead of refusing the import.")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import files from other tools into the data store (formats: see bot/importers.py / README)."""
    cfg = load_config(config)
    store = Store(writable_data_dir(data_dir or cfg.data.dir))
    console = make_console(as_json)
    with console.status(f"importing {path} …"):
        report = Importer(store, exchange=exchange, repair=repair).import_path(path)
    infos = sorted(report.written.values(), key=lambda i: (i.exchange, i.symbol, i.kind, i.timeframe or ""))
    console.print(dataset_table(infos, f"imported into {store.root}"))
    for line in report.repairs:
        console.print(f"[yellow]repaired:[/] {line}")
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
    repair: Annotated[bool, typer.Option("--repair", help="Rewrite the data directory's datasets that break a data "
                                                          "rule: drop or clip the bad rows, report each change.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List stored datasets with their ranges, row counts, gaps and problems (``--repair`` fixes them)."""
    cfg = load_config(config)
    use_sample = cfg.data.use_sample if sample is None else sample
    root = check_data_dir(data_dir or cfg.data.dir, explicit=data_dir is not None)
    console = make_console(as_json)
    if repair:
        for line in repair_store(Store(root)):
            console.print(f"[yellow]repaired:[/] {line}")
    infos: list[DatasetInfo] = []
    seen = set()
    for store in stores_for(root, use_sample):
        for key in store.keys() if store.root.is_dir() else []:
            if key in seen:  # the user's data shadows the sample
                continue
            seen.add(key)
            infos.append(store.info(key))
    console.print(dataset_table(infos, "stored datasets") if infos else "no datasets stored")
    for i in infos:
        for line in i.problems:
            label = f"{i.exchange} {i.symbol} {i.kind}{' ' + i.timeframe if i.timeframe else ''}"
            console.print(f"[red]problem:[/] {label}: {line}")
    if any(i.problems for i in infos) and not repair:
        console.print("run 'cascade data-info --repair' to drop/clip the bad rows (each change is reported)")
    from bot.record.state import coverage

    for c in coverage(root):  # what `cascade record` has written here (details: cascade record --status)
        console.print(f"recorded: {c['exchange']} {c['stream']} — last message {c['last_message'] or 'none'}, "
                      f"{c['gaps']} known gap(s) ({c['gap_seconds']:.0f} s){', recorder running' if c['running'] else ''}")
    if as_json:
        print(json.dumps([i.to_json() for i in infos]))
