"""`cascade backtest`: option parsing and printing around :mod:`backtests.runner`.

The runner resolves the strategy (a registered name, ``path/to/strategy.py`` or ``module:NAME``),
loads the frame with the warm-up before ``--from``, computes features and signals, runs the engine
and writes the run folder ``<results_dir>/<run-id>/`` (``stats.json``, ``params.json``,
``trades.csv``, ``equity.parquet``, ``report.html``, and ``equity.csv`` on request) atomically.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bot.config import load_config, with_overrides
from bot.errors import UserError

SUMMARY_KEYS = ("n_trades", "final_equity", "total_return", "sharpe", "max_drawdown", "fees", "funding_pnl",
                "liquidations")
"""Keys every ``--json`` line carries (plus ``run_dir``), whatever else compute_stats adds."""

# -- Parameters ----------------------------------------------------------------------------


def parse_param_flags(items: list[str] | None) -> dict[str, Any]:
    """``["lookback=48", "z=1.5", "mode=fast"]`` -> ``{"lookback": 48, "z": 1.5, "mode": "fast"}``.

    Values are read as TOML literals (ints, floats, booleans, quoted strings, arrays); anything
    else is taken as a bare string.

    >>> parse_param_flags(["n=3", "x=0.5", "on=true", "name=abc"])
    {'n': 3, 'x': 0.5, 'on': True, 'name': 'abc'}
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UserError(f"--param '{item}': expected KEY=VALUE, e.g. --param lookback=48")
        raw = raw.strip()
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key] = value
    return out


# -- Output ----------------------------------------------------------------------------------


def _console(as_json: bool) -> Console:
    """Human output on stderr when stdout carries JSON; a fixed width when not a terminal."""
    console = Console(stderr=as_json)
    return console if console.is_terminal else Console(stderr=as_json, width=120)


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "∞" if value > 0 else "-∞"
    if kind == "pct":
        return f"{value * 100:,.2f} %"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "int":
        return f"{int(value):,}"
    return f"{value:,.2f}"


def summary_table(stats: dict[str, Any], title: str) -> Table:
    """The handful of numbers a user looks at first."""
    rows = (("period", f"{(stats.get('start') or '')[:16]} → {(stats.get('end') or '')[:16]}"),
            ("bars", _fmt(stats["n_bars"], "int")), ("trades", _fmt(stats["n_trades"], "int")),
            ("win rate", _fmt(stats["win_rate"], "pct")), ("profit factor", _fmt(stats["profit_factor"], "x")),
            ("total return", _fmt(stats["total_return"], "pct")), ("CAGR", _fmt(stats["cagr"], "pct")),
            ("Sharpe (daily, ann.)", _fmt(stats["sharpe"], "x")), ("Sortino", _fmt(stats["sortino"], "x")),
            ("max drawdown", _fmt(stats["max_drawdown"], "pct")),
            ("exposure", _fmt(stats["exposure"], "pct")), ("fees", _fmt(stats["fees"], "money")),
            ("funding PnL", _fmt(stats["funding_pnl"], "money")),
            ("liquidations", _fmt(stats["liquidations"], "int")),
            ("final equity", _fmt(stats["final_equity"], "money")))
    table = Table(title=title, show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for k, v in rows:
        table.add_row(k, v)
    return table


# -- The command -----------------------------------------------------------------------------


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Config file (default ./config.toml).")]


def backtest(
    config: ConfigOpt = None,
    strategy: Annotated[str | None, typer.Option(
        "--strategy", "-s", help="Registered name, a file path/to/strategy.py, or module:NAME.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="Strategy parameter override KEY=VALUE (repeatable).")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="backtrader (reference) or fast (numba).")] = None,
    symbol: Annotated[str | None, typer.Option("--symbol", help="ccxt unified symbol, e.g. BTC/USDT:USDT.")] = None,
    timeframe: Annotated[str | None, typer.Option("--timeframe", help="Bar size: 5m, 1h, 4h ...")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="First traded bar, UTC (inclusive); the warm-up "
                                              "is loaded before it. Default: start of data + warm-up.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="End, UTC (exclusive).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data directory.")] = None,
    exchange: Annotated[str | None, typer.Option("--exchange", help="ccxt exchange id of the dataset.")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", help="Where run folders go.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary as the last stdout line.")] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip report.html.")] = False,
    equity_csv: Annotated[bool, typer.Option("--equity-csv", help="Also write equity.csv (equity.parquet is "
                                             "always written). Default: [backtest] equity_csv.")] = False,
) -> None:
    """Backtest a strategy on stored data; write stats, trades, equity and an HTML report."""
    from backtests import runner
    from backtests.metrics import json_safe
    from bot.allocators import return_freed_memory

    return_freed_memory()
    cfg = load_config(config)
    if data_dir is not None:
        from bot.data import check_data_dir

        check_data_dir(data_dir, explicit=True)
    cfg = with_overrides(cfg, "backtest", strategy=strategy, engine=engine, start=from_, end=to,
                         results_dir=output_dir, equity_csv=equity_csv or None)
    cfg = with_overrides(cfg, "data", dir=data_dir, exchange=exchange, symbol=symbol, timeframe=timeframe)
    overrides = parse_param_flags(param)
    console = _console(as_json)
    run = runner.run(cfg, overrides, status=console.status)
    run_dir = runner.write_run(cfg, run, overrides, report=not no_report, status=console.status)
    console.print(summary_table(run.stats, f"{run.name} · {cfg.data.symbol} {cfg.data.timeframe}"))
    loud = Console(stderr=True)
    for warning in run.warnings:
        loud.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    console.print(f"run folder: {run_dir}" + ("" if no_report else f"\nreport: {run_dir / 'report.html'}"))
    if as_json:
        line = {**json_safe(run.stats), "strategy": run.name, "run_id": run_dir.name, "run_dir": str(run_dir)}
        print(json.dumps(line, allow_nan=False))
