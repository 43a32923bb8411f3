"""`cascade optimize`: optuna walk-forward tuning of a strategy's ``suggest`` space with overfitting gates.

The study folder ``<optimize.results_dir>/<study>/`` holds ``study.db`` (the SQLite storage, unless
``--storage`` names another), and after the analysis ``result.json``, ``best_params.toml`` (a
``[strategies.<name>]`` fragment), ``oos_equity.csv``, ``folds.csv`` and ``report.html``. Inputs are
validated before anything is written; the artefacts are written to a temporary folder and moved in.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bot.config import Config, load_config, parse_config, with_overrides
from bot.errors import UserError
from bot.timeframes import parse_utc, timeframe_to_timedelta
from strategies.loader import StrategyLoadError


def _console(as_json: bool) -> Console:
    console = Console(stderr=as_json)
    return console if console.is_terminal else Console(stderr=as_json, width=120)


def redact(url: str) -> str:
    """The storage URL without credentials (optuna is imported only when the command runs)."""
    from backtests.optimize.study import redact as _redact

    return _redact(url)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def default_study_name(strategy: str, cfg: Config, meta: dict[str, Any]) -> str:
    """``<strategy>-<symbol>-<tf>-<objective>-<8 hex of everything that defines the study>``."""
    ident = {k: meta.get(k) for k in ("strategy", "data", "data_hash", "folds", "objective", "seed", "n_blocks",
                                      "min_trades", "dd_weight", "engine", "trading")}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{strategy}-{_slug(cfg.data.symbol)}-{cfg.data.timeframe}-{_slug('-'.join(meta['objective']))}-{digest}"


class _Bar:
    """A rich progress bar with trials/s and ETA over all folds."""

    def __init__(self, console: Console, total: int, quiet: bool) -> None:
        self.progress = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console,
                                 disable=quiet)
        self.task = self.progress.add_task("trials", total=total, rate="")
        self.t0 = time.perf_counter()
        self.start: int | None = None

    def update(self, done: int) -> None:
        if self.start is None:
            self.start = done
        dt = time.perf_counter() - self.t0
        rate = (done - self.start) / dt if dt > 0 else 0.0
        self.progress.update(self.task, completed=done, rate=f"{rate:.1f} trials/s")


def _settings(o: Any, objective: tuple[str, ...]) -> Any:
    from backtests.optimize.walkforward import Settings

    return Settings(n_trials=o.trials, objective=objective, seed=o.seed, engine=o.engine,
                    walk_forward=o.walk_forward, anchored=o.anchored, is_days=o.is_days, oos_days=o.oos_days,
                    step_days=o.step_days, embargo_days=o.embargo_days, n_blocks=o.sub_blocks,
                    min_trades=o.min_trades, dd_weight=o.dd_weight, prune=o.prune, top_frac=o.top_frac,
                    plateau_step=o.plateau_step, pbo_blocks=o.pbo_blocks, minbtl_sharpe=o.minbtl_sharpe)


def _load(cfg: Config, end: pd.Timestamp | None, console: Console) -> pd.DataFrame:
    from backtests.optimize.adapter import load_dataset

    timeframe_to_timedelta(cfg.data.timeframe)
    with console.status(f"loading {cfg.data.exchange} {cfg.data.symbol} {cfg.data.timeframe} …"):
        return load_dataset(cfg, end)


def _storage_url(cfg: Config, storage: str | None, run_dir: Path) -> str:
    url = storage or cfg.optimize.storage
    if url:
        if "://" not in url:
            raise UserError(f"--storage '{url}': expected a database URL such as sqlite:///path/study.db or "
                            "postgresql://user@host/db")
        return url
    return f"sqlite:///{run_dir / 'study.db'}"


def _open_storage(url: str) -> Any:
    from backtests.optimize.study import make_storage

    try:
        return make_storage(url)
    except Exception as err:  # sqlalchemy/driver errors: a bad URL or an unreachable server
        raise UserError(f"cannot open storage {redact(url)}: {str(err).splitlines()[0][:200]}; "
                        "check --storage") from None


def _join(cfg_path: Path | None, name: str, storage: str | None, workers: int, data_dir: Path | None,
          as_json: bool, console: Console) -> None:
    from backtests.optimize import adapter
    from backtests.optimize import walkforward as W
    from backtests.optimize.objective import Evaluator, parse_objective
    from backtests.optimize.study import read_meta

    if not storage:
        raise UserError("--join needs --storage URL (the database the study lives in)")
    url = _storage_url(load_config(cfg_path), storage, Path("."))
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise UserError(f"--storage {url}: no such database file; pass the URL of the study's database")
    meta = read_meta(_open_storage(url), name)
    if meta is None:
        raise UserError(f"no cascade optimisation named '{name}' in that storage; check --join and --storage")
    cfg = parse_config(meta["config"], source=f"study {name}")
    local = load_config(cfg_path)
    cfg = with_overrides(cfg, "data", dir=data_dir or local.data.dir)
    try:
        strategy = adapter.resolve(meta.get("strategy_ref") or meta["strategy"], cfg)
    except StrategyLoadError as err:
        raise UserError(f"study {name}: {err}") from None
    frame = _load(cfg, parse_utc(meta["data"].get("to") or None, "--to"), console)
    if adapter.frame_hash(frame) != meta["data_hash"]:
        raise UserError(f"the local {cfg.data.symbol} {cfg.data.timeframe} data differs from the study's "
                        "(content hash); copy the same data here or pass --data-dir")
    objective = parse_objective(",".join(meta["objective"]))
    settings = W.Settings(n_trials=meta["n_trials"], objective=objective, seed=meta["seed"], engine=meta["engine"],
                          n_blocks=meta["n_blocks"], min_trades=meta["min_trades"], dd_weight=meta["dd_weight"],
                          prune=meta.get("prune", False))
    evaluator = Evaluator(frame, strategy, cfg, settings.engine, objective, settings.n_blocks, settings.min_trades,
                          settings.dd_weight, settings.prune)
    folds = W.folds_from_meta(meta)
    bar = _Bar(console, settings.n_trials * len(folds), as_json)
    with bar.progress:
        ran = W.run_workers(url, name, evaluator, strategy, folds, settings, workers, join=True, progress=bar.update)
    console.print(f"joined study {name}: ran {ran} trial(s)")
    if as_json:
        print(json.dumps({"joined": name, "trials_run": ran, "pid": os.getpid()}))


def optimize(
    config: Annotated[Path | None, typer.Option("--config", help="Config file (default ./config.toml).")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", "-s", help="Registered name, a file path/to/strategy.py, or module:NAME.")] = None,
    trials: Annotated[int | None, typer.Option("--trials", "-n", help="Trials per fold.")] = None,
    objective: Annotated[str | None, typer.Option(
        "--objective", help="sharpe, sortino, calmar, return-with-drawdown-penalty, or return,drawdown.")] = None,
    min_trades: Annotated[int | None, typer.Option("--min-trades", help="In-sample trades below which a trial "
                                                    "scores -inf.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Sampler seed (reproducible studies).")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="fast (default) or backtrader.")] = None,
    symbol: Annotated[str | None, typer.Option("--symbol", help="ccxt unified symbol.")] = None,
    timeframe: Annotated[str | None, typer.Option("--timeframe", help="Bar size: 5m, 1h, 4h ...")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="First in-sample bar, UTC (warm-up bars before it "
                                              "are used).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="End of the data, UTC (exclusive).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data directory.")] = None,
    walk_forward: Annotated[bool | None, typer.Option("--walk-forward/--no-walk-forward",
                                                      help="Walk-forward folds (default) or the whole range.")] = None,
    anchored: Annotated[bool | None, typer.Option("--anchored/--rolling", help="Anchored or rolling folds.")] = None,
    is_days: Annotated[float | None, typer.Option("--is-days", help="In-sample days per fold.")] = None,
    oos_days: Annotated[float | None, typer.Option("--oos-days", help="Out-of-sample days per fold.")] = None,
    step_days: Annotated[float | None, typer.Option("--step-days", help="Fold step in days.")] = None,
    embargo_days: Annotated[float | None, typer.Option("--embargo-days", help="Embargo days.")] = None,
    prune: Annotated[bool | None, typer.Option("--prune/--no-prune", help="WilcoxonPruner over sub-blocks.")] = None,
    sub_blocks: Annotated[int | None, typer.Option("--sub-blocks", help="In-sample sub-blocks per trial.")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="optuna storage URL (default: SQLite in the "
                                                 "study folder).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Local worker processes.")] = None,
    join: Annotated[str | None, typer.Option("--join", help="Add workers to an existing STUDY in --storage.")] = None,
    study_name: Annotated[str | None, typer.Option("--study-name", help="Study name (default derived from "
                                                   "the settings).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an existing study.")] = False,
    write_config: Annotated[bool, typer.Option("--write-config", help="Write the chosen parameters into the "
                                               "config file (comments kept).")] = False,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", help="Where study folders go.")] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip report.html.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary as the last stdout line.")] = False,
) -> None:
    """Tune a strategy with optuna: walk-forward folds, plateau choice, DSR/PBO/MinBTL gates."""
    console = _console(as_json)
    if join:
        _join(config, join, storage, workers or 1, data_dir, as_json, console)
        return
    from backtests.optimize import adapter
    from backtests.optimize import walkforward as W
    from backtests.optimize.objective import Evaluator, directions, parse_objective
    from backtests.optimize.study import StudyError, create_or_resume

    cfg = load_config(config)
    cfg = with_overrides(cfg, "optimize", trials=trials, objective=objective, min_trades=min_trades, seed=seed,
                         engine=engine, walk_forward=walk_forward, anchored=anchored, is_days=is_days,
                         oos_days=oos_days, step_days=step_days, embargo_days=embargo_days, prune=prune,
                         sub_blocks=sub_blocks, workers=workers, results_dir=output_dir)
    cfg = with_overrides(cfg, "data", dir=data_dir, symbol=symbol, timeframe=timeframe)
    cfg = with_overrides(cfg, "backtest", strategy=strategy, start=from_, end=to)
    o = cfg.optimize
    try:
        obj = parse_objective(o.objective)
    except ValueError as err:
        raise UserError(f"--objective: {err}") from None
    try:
        strat = adapter.resolve(cfg.backtest.strategy, cfg)
    except StrategyLoadError as err:
        raise UserError(str(err)) from None
    start, end = parse_utc(cfg.backtest.start, "--from"), parse_utc(cfg.backtest.end, "--to")
    if start is not None and end is not None and end <= start:
        raise UserError("--to must be after --from")
    frame = _load(cfg, end, console)
    settings = _settings(o, obj)
    try:
        folds = W.plan_folds(frame, cfg.data.timeframe, strat, settings, start)
    except ValueError as err:
        raise UserError(str(err)) from None
    selection = {"exchange": cfg.data.exchange, "symbol": cfg.data.symbol, "timeframe": cfg.data.timeframe,
                 "from": cfg.backtest.start, "to": cfg.backtest.end}
    meta = W.study_meta(strat, frame, folds, settings, cfg, selection)
    meta["strategy_ref"] = cfg.backtest.strategy  # a registered name (or, after the spec lands, a file)
    name = study_name or default_study_name(strat.name, cfg, meta)
    run_dir = Path(o.results_dir) / name
    url = _storage_url(cfg, storage, run_dir)
    if url.startswith("sqlite") and not storage and not o.storage:
        if run_dir.exists() and not resume and (run_dir / "study.db").exists():
            raise UserError(f"study '{name}' already exists in {run_dir}; pass --resume to continue it or "
                            "--study-name NEW to start another")
        run_dir.mkdir(parents=True, exist_ok=True)
    store = _open_storage(url)
    try:
        meta = create_or_resume(store, name, meta, directions(obj), resume)
    except StudyError as err:
        raise UserError(str(err)) from None
    settings = _settings(o, obj).__class__(**{**settings.__dict__, "n_trials": meta["n_trials"]})
    evaluator = Evaluator(frame, strat, cfg, settings.engine, obj, settings.n_blocks, settings.min_trades,
                          settings.dd_weight, settings.prune)
    console.print(f"study {name}: {len(folds)} fold(s) × {settings.n_trials} trials, objective "
                  f"{','.join(obj)}, storage {redact(url)}")
    console.print(f"dashboard: optuna-dashboard {redact(url)}")
    bar = _Bar(console, settings.n_trials * len(folds), as_json)
    t0 = time.perf_counter()
    with bar.progress:
        W.run_workers(url, name, evaluator, strat, folds, settings, o.workers, progress=bar.update)
    elapsed = time.perf_counter() - t0
    with console.status("choosing parameters, running out-of-sample, checking engines …"):
        outcome, check = W.analyse(url, name, evaluator, strat, folds, settings, o.check_engine or None)
    _finish(cfg, config, name, url, run_dir, strat.name, outcome, check, write_config, no_report, as_json,
            console, elapsed, evaluator.evaluations)


def _finish(cfg: Config, config_path: Path | None, name: str, url: str, run_dir: Path, strategy: str, outcome: Any,
            check: dict[str, Any], write_config: bool, no_report: bool, as_json: bool, console: Console,
            elapsed: float, evaluations: int) -> None:
    import optuna

    from backtests.optimize import report
    from backtests.optimize.study import fold_name, make_storage

    line = report.summary(outcome, check, name, redact(url), run_dir, strategy)
    line["elapsed_s"] = round(elapsed, 3)
    line["evals_per_s"] = round(evaluations / elapsed, 3) if elapsed > 0 and evaluations else None
    note = (f"cascade optimize: study {name}, {outcome.n_trials} trials, gates "
            f"{'passed' if outcome.passed else 'FAILED'}")
    fragment = report.config_fragment(strategy, outcome.best_params, note)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / ".artifacts.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        report.write_artifacts(tmp, outcome, check, line, fragment)
        if not no_report:
            last = optuna.load_study(study_name=fold_name(name, outcome.folds[-1].fold.k), storage=make_storage(url))
            report.render(tmp / "report.html", outcome, check, last,
                          f"cascade optimize · {strategy} · {cfg.data.symbol} {cfg.data.timeframe}",
                          [f"study {name}", f"storage {redact(url)}", f"{outcome.n_trials} trials"])
        for f in tmp.iterdir():
            f.replace(run_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for g in outcome.gates:
        console.print(g.line(), markup=False, highlight=False)
    console.print("best parameters (last fold): " + ", ".join(f"{k}={v}" for k, v in outcome.best_params.items()))
    m = outcome.metrics
    if "oos_sharpe" in m:
        console.print(f"OOS Sharpe {m['oos_sharpe']:.3f}, WFE {m['wfe']:.3f}, DSR {m['dsr']:.3f}, "
                      f"PBO {m['pbo']:.3f}, {outcome.n_trials} trials", markup=False)
    if check:
        console.print(f"engine check ({check['engine']}): {'agree' if check['agree'] else 'DISAGREE'}")
    console.print(f"study folder: {run_dir}")
    if write_config:
        path = config_path or Path("config.toml")
        report.write_config(path, strategy, outcome.best_params, note)
        console.print(f"wrote [strategies.{strategy}] into {path}")
    if as_json:
        print(json.dumps(line, allow_nan=False, default=str))
