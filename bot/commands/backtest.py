"""`cascade backtest`: load a frame, compute a strategy's signals, run an engine, write a run folder.

The run folder ``<results_dir>/<run-id>/`` holds ``stats.json``, ``trades.csv``, ``equity.csv``,
``params.json`` (strategy, parameters, command-line overrides, data selection and a snapshot of
the whole config) and ``report.html``. It is written into a hidden temporary folder next to it
and renamed into place at the end, so an error never leaves a partial run folder behind.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table

from bot.config import Config, load_config, with_overrides
from bot.errors import UserError
from bot.timeframes import parse_utc, timeframe_to_timedelta

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


def _param_names(params_cls: type) -> list[str]:
    fields = getattr(params_cls, "__pydantic_fields__", None) or getattr(params_cls, "model_fields", None) or {}
    return list(fields)


def _describe_param_error(err: ValidationError, name: str, params_cls: type) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "?"
    names = _param_names(params_cls)
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        close = difflib.get_close_matches(field, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return (f"unknown parameter '{field}' for strategy '{name}'{hint}; "
                f"valid parameters: {', '.join(names) or 'none'}")
    msg = first["msg"]
    got = first.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {got!r})"
    return (f"parameter '{field}' of strategy '{name}': {msg[:1].lower() + msg[1:]}{got_text}; "
            f"fix --param {field}=... or [strategies.{name}] in the config")


def resolve_strategy(cfg: Config, overrides: dict[str, Any]) -> tuple[str, Any, Any]:
    """(name, module, Params) for the configured strategy, config params overridden by flags."""
    from strategies import STRATEGIES, make_params

    name = cfg.backtest.strategy
    if name not in STRATEGIES:
        close = difflib.get_close_matches(name, list(STRATEGIES), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown strategy '{name}'{hint}; choose one of: {', '.join(STRATEGIES)}")
    module = STRATEGIES[name]
    raw = {**cfg.strategies.get(name, {}), **overrides}
    try:
        params = make_params(name, raw)
    except ValidationError as err:
        raise UserError(_describe_param_error(err, name, module.Params)) from None
    except (TypeError, ValueError) as err:
        raise UserError(f"bad parameters for strategy '{name}': {err}; "
                        f"valid parameters: {', '.join(_param_names(module.Params))}") from None
    return name, module, params


def params_dict(params: Any) -> dict[str, Any]:
    """A strategy's Params (pydantic model or dataclass) as plain JSON-ready data."""
    return TypeAdapter(type(params)).dump_python(params, mode="json")


# -- Run identity and the run folder ---------------------------------------------------------


def run_id(strategy: str, fingerprint: dict[str, Any], now: datetime) -> str:
    """``20250102T030405Z-<strategy>-<8 hex>``: UTC time, strategy, hash of what defines the run.

    The hash covers the parameters, the data selection, the engine, costs and risk settings, so
    two runs with the same id suffix are the same experiment.
    """
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{strategy}-{digest}"


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; rename it to ``final`` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".cascade-{final.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.rename(tmp, final)


def _unique(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists() or (candidate.parent / f".cascade-{candidate.name}.tmp").exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


# -- Report extras (levels, liquidation map) -------------------------------------------------


def _zones_for_report(frame: pd.DataFrame, strategy_params: Any) -> pd.DataFrame | None:
    """Support/resistance zones as known at each bar's close (one pass of level_features)."""
    try:
        from strategies.features import levels
    except ImportError:
        return None
    level_params = _feature_params(levels, strategy_params, ("LevelParams",))
    return levels.level_features(frame, level_params) if level_params is not None and len(frame) > 2 else None


def _feature_params(module: Any, strategy_params: Any, class_names: tuple[str, ...]) -> Any:
    """The feature's params: taken from the strategy's params when it embeds them, else defaults."""
    for cls_name in class_names:
        cls = getattr(module, cls_name, None)
        if cls is None:
            continue
        for value in vars(strategy_params).values() if hasattr(strategy_params, "__dict__") else ():
            if isinstance(value, cls):
                return value
        return cls()
    return None


def _heatmap_for_report(full: pd.DataFrame, start: pd.Timestamp, cfg: Config, columns: int = 400) -> Any:
    """The estimated liquidation map at up to ``columns`` times from ``start`` (volume-inferred when
    open interest is absent), computed over ``full`` so that the warm-up bars feed it."""
    try:
        from strategies.features import liquidation_map as lm
    except ImportError:
        return None
    params = lm.LiqMapParams(**cfg.liqmap)
    first = int(full.index.searchsorted(start))
    at = full.index[first + lm.heatmap_positions(len(full) - first, columns)]
    return lm.liquidation_map_snapshots(full, params, at)


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


@dataclass
class _Run:
    name: str
    params: Any
    full: pd.DataFrame  # the traded frame plus the warm-up bars before it
    frame: pd.DataFrame
    signals: pd.DataFrame
    result: Any
    stats: dict[str, Any]


def _when(ts: pd.Timestamp | None) -> str:
    return "the end of the data" if ts is None else ts.strftime("%Y-%m-%d %H:%M UTC")


def _load_and_run(cfg: Config, overrides: dict[str, Any], console: Console) -> _Run:
    from bot.data import load_frame

    name, module, params = resolve_strategy(cfg, overrides)
    data, bt = cfg.data, cfg.backtest
    timeframe_to_timedelta(data.timeframe)  # validate early: one line for a bad --timeframe
    start, end = parse_utc(bt.start, "--from"), parse_utc(bt.end, "--to")
    if start is not None and end is not None and end <= start:
        raise UserError(f"--to ({_when(end)}) must be after --from ({_when(start)})")
    with console.status(f"loading {data.exchange} {data.symbol} {data.timeframe} …"):
        stored = load_frame(data.dir, data.exchange, data.symbol, data.timeframe, None, end,
                            use_sample=data.use_sample)
    first = int(stored.index.searchsorted(start)) if start is not None else 0
    if first >= len(stored):
        raise UserError(f"no {data.timeframe} bars for {data.exchange} {data.symbol} from {_when(start)} to "
                        f"{_when(end)} (stored: {_when(stored.index[0])} to {_when(stored.index[-1])}); "
                        "change --from/--to")
    # keep warm-up bars before --from so that signals are valid from the first traded bar
    full = stored.iloc[max(0, first - int(module.warmup(params))):]
    with console.status(f"computing {name} signals on {len(full):,} bars …"):
        signals = module.signals(full, params)
    frame, signals = full.loc[stored.index[first]:], signals.loc[stored.index[first]:]
    from backtests.engines import run_backtest
    from backtests.metrics import compute_stats

    with console.status(f"running the {bt.engine} engine on {len(frame):,} bars …"):
        result = run_backtest(frame, signals, bt, cfg.risk, engine=bt.engine, symbol=data.symbol, costs=cfg.costs)
    return _Run(name, params, full, frame, signals, result, compute_stats(result, data.timeframe))


def _write_run(cfg: Config, run: _Run, overrides: dict[str, Any], no_report: bool, console: Console) -> Path:
    from backtests.metrics import json_safe

    data, bt = cfg.data, cfg.backtest
    pdict = params_dict(run.params)
    selection = {"exchange": data.exchange, "symbol": data.symbol, "timeframe": data.timeframe,
                 "from": bt.start, "to": bt.end, "first_bar": str(run.frame.index[0]),
                 "last_bar": str(run.frame.index[-1]), "n_bars": len(run.frame)}
    fingerprint = {"strategy": run.name, "params": pdict, "data": selection, "engine": bt.engine,
                   "costs": [bt.initial_cash, cfg.costs.for_symbol(data.symbol).model_dump()],
                   "risk": cfg.risk.model_dump(mode="json")}
    now = datetime.now(UTC)
    final = _unique(Path(bt.results_dir) / run_id(run.name, fingerprint, now))
    snapshot = {"run_id": final.name, "created": now.isoformat(timespec="seconds"), "strategy": run.name,
                "params": pdict, "overrides": overrides, "engine": bt.engine, "data": selection,
                "config": cfg.model_dump(mode="json", by_alias=True)}
    with atomic_dir(final) as tmp:
        (tmp / "stats.json").write_text(json.dumps(json_safe(run.stats), indent=2, allow_nan=False) + "\n")
        (tmp / "params.json").write_text(json.dumps(json_safe(snapshot), indent=2, allow_nan=False, default=str) + "\n")
        run.result.trades.to_csv(tmp / "trades.csv", index=False)
        run.result.equity.to_csv(tmp / "equity.csv", index_label="time")
        if not no_report:
            from backtests.report.html import render_report

            with console.status("computing levels and the liquidation map for the report …"):
                # computed over the warm-up bars too, so both are settled when the traded range starts
                zones = _zones_for_report(run.full, run.params)
                zones = zones.loc[run.frame.index[0]:] if zones is not None else None
                heatmap = _heatmap_for_report(run.full, run.frame.index[0], cfg)
            with console.status("writing report.html …"):
                title = f"{run.name} · {data.symbol} {data.timeframe} · {bt.engine}"
                meta = [f"run {final.name}", "params: " + ", ".join(f"{k}={v}" for k, v in pdict.items())]
                render_report(run.frame, run.signals, run.result, run.stats, tmp / "report.html", title,
                              zones=zones, heatmap=heatmap, meta=meta)
    return final


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Config file (default ./config.toml).")]


def backtest(
    config: ConfigOpt = None,
    strategy: Annotated[str | None, typer.Option("--strategy", "-s", help="Registered strategy name.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="Strategy parameter override KEY=VALUE (repeatable).")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="backtrader (reference) or fast (numba).")] = None,
    symbol: Annotated[str | None, typer.Option("--symbol", help="ccxt unified symbol, e.g. BTC/USDT:USDT.")] = None,
    timeframe: Annotated[str | None, typer.Option("--timeframe", help="Bar size: 5m, 1h, 4h ...")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="First bar, UTC (inclusive).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="End, UTC (exclusive).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data directory.")] = None,
    exchange: Annotated[str | None, typer.Option("--exchange", help="ccxt exchange id of the dataset.")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", help="Where run folders go.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary as the last stdout line.")] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip report.html.")] = False,
) -> None:
    """Backtest a strategy on stored data; write stats, trades, equity and an HTML report."""
    cfg = load_config(config)
    cfg = with_overrides(cfg, "backtest", strategy=strategy, engine=engine, start=from_, end=to,
                         results_dir=output_dir)
    cfg = with_overrides(cfg, "data", dir=data_dir, exchange=exchange, symbol=symbol, timeframe=timeframe)
    overrides = parse_param_flags(param)
    console = _console(as_json)
    run = _load_and_run(cfg, overrides, console)
    run_dir = _write_run(cfg, run, overrides, no_report, console)
    console.print(summary_table(run.stats, f"{run.name} · {cfg.data.symbol} {cfg.data.timeframe}"))
    console.print(f"run folder: {run_dir}" + ("" if no_report else f"\nreport: {run_dir / 'report.html'}"))
    if as_json:
        from backtests.metrics import json_safe

        line = {**json_safe(run.stats), "strategy": run.name, "run_id": run_dir.name, "run_dir": str(run_dir)}
        print(json.dumps(line, allow_nan=False))
