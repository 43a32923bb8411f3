"""The backtest runner: strategy and parameters → frame with warm-up → features → signals → run → stats.

``cascade backtest`` is a thin shell around :func:`run` and :func:`write_run`; the optimiser and a
paper runner reuse the pieces:

* :func:`suggest_params` ``(cfg, spec, trial) -> Params``: an optuna trial's parameters with the
  configured values for everything the search space does not sample (use it in place of
  ``spec.suggest(trial)``, or ``[liqmap]`` and ``[strategies.<name>]`` are silently ignored).
* :func:`resolve_strategy` ``(cfg, ref=None, overrides=None) -> (StrategySpec, Params)``: a
  registered name, a user file ``path/to/my_strategy.py``, ``module:NAME`` or a name from
  ``[strategies] paths``; parameters from ``[liqmap]`` (for strategies with a ``liqmap`` field),
  ``[strategies.<name>]`` and ``overrides`` (``--param``), in that order. One-line
  :class:`~bot.errors.UserError` on any problem.
* :func:`load_history` ``(cfg, warmup, start=None, end=None) -> History``: the frame from
  ``start − warmup`` (a duration, so it is right on every timeframe) to ``end``, with open interest
  from ``[data] open_interest_source``; ``History.start`` is the first traded bar.
* :func:`backtest_range` ``(cfg, frame, signals, start=None, end=None) -> BacktestResult``: one
  engine run on ``[start, end)`` of a frame whose signals were computed over the whole frame
  (an optimiser's folds: load once, ``spec.compute_features`` once, ``spec.run`` per trial,
  ``backtest_range`` per fold).
* :func:`run` ``(cfg, overrides=None, status=None) -> Run``: all of the above for the configured
  dataset; :func:`write_run` ``(cfg, run, overrides, report=True) -> Path`` writes the run folder.
* :func:`report_layers` ``(run) -> {"zones", "heatmap"}``: what the report draws, taken from the
  features the strategy traded on (the levels it computed, the map with its ``liqmap``).

A paper or live loop reuses the same pieces: ``resolve_strategy`` once, then at each bar close
``spec.run(window, p)`` on the last ``spec.warmup(p)`` of bars (the warm-up test guarantees the last
row equals a backtest's), handing the last row's target/stop/take-profit to the core.

Warnings for degenerate runs (no trades, history shorter than the warm-up, no funding or open
interest in the range, trading stopped by a protection, brackets of another symbol) are returned in
``Run.warnings`` and written to ``stats.json`` under ``"warnings"``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import TypeAdapter, ValidationError

from backtests.report.trades import enrich_trades
from bot.atomic import atomic_dir, user_errors
from bot.config import Config, strategy_registry
from bot.errors import UserError
from bot.interrupts import deferred
from bot.timeframes import parse_utc, timeframe_to_timedelta

__all__ = ["History", "Run", "atomic_dir", "backtest_range", "load_history", "params_dict", "report_layers",
           "resolve_strategy", "run", "run_id", "strategy_params", "suggest_params", "write_equity", "write_run"]

Status = Callable[[str], AbstractContextManager[Any]]


def _quiet(_: str) -> AbstractContextManager[Any]:
    return nullcontext()


# -- Strategy and parameters -----------------------------------------------------------------


def _param_names(params_cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(params_cls)]


def _describe_param_error(err: ValidationError, name: str, params_cls: type) -> str:
    first = err.errors()[0]
    field_name = ".".join(str(p) for p in first["loc"]) or "?"
    names = _param_names(params_cls)
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        close = difflib.get_close_matches(field_name, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return (f"unknown parameter '{field_name}' for strategy '{name}'{hint}; "
                f"valid parameters: {', '.join(names) or 'none'}")
    msg = first["msg"]
    got = first.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {got!r})"
    return (f"parameter '{field_name}' of strategy '{name}': {msg[:1].lower() + msg[1:]}{got_text}; "
            f"fix --param {field_name}=... or [strategies.{name}] in the config")


def resolve_strategy(cfg: Config, ref: str | None = None, overrides: dict[str, Any] | None = None
                     ) -> tuple[Any, Any]:
    """``(spec, params)`` for ``ref`` (default ``[backtest] strategy``), see the module docstring."""
    from strategies import StrategyLoadError, load_strategy

    ref = ref or cfg.backtest.strategy
    try:
        spec = load_strategy(ref, lambda: strategy_registry(cfg))
    except StrategyLoadError as err:
        raise UserError(str(err)) from None
    return spec, strategy_params(cfg, spec, overrides)


def strategy_params(cfg: Config, spec: Any, overrides: dict[str, Any] | None = None) -> Any:
    """``spec``'s Params from ``[liqmap]`` (a ``liqmap`` field), ``[strategies.<name>]`` and ``overrides``."""
    from strategies import make_params

    raw: dict[str, Any] = {}
    if "liqmap" in _param_names(spec.Params):
        raw["liqmap"] = cfg.liqmap
    raw.update(cfg.strategies.get(spec.name, {}))
    raw.update(overrides or {})
    try:
        params = make_params(spec, raw)
    except ValidationError as err:
        raise UserError(_describe_param_error(err, spec.name, spec.Params)) from None
    except (TypeError, ValueError) as err:
        raise UserError(f"bad parameters for strategy '{spec.name}': {' '.join(str(err).split())}; "
                        f"valid parameters: {', '.join(_param_names(spec.Params))}") from None
    return params


def suggest_params(cfg: Config, spec: Any, trial: Any) -> Any:
    """``spec.suggest(trial)`` with the configured values for every field the trial did not sample.

    The search space varies a few fields; the others keep the config's values (``[liqmap]`` for a
    ``liqmap`` field, ``[strategies.<name>]``), exactly as :func:`resolve_strategy` builds them for a
    backtest, so a tuned strategy trades on the same map and fixed parameters as it was tuned with.
    """
    sampled = spec.suggest(trial)
    configured, default = strategy_params(cfg, spec), spec.Params()
    # a field suggest() left alone: not a trial parameter, and still at its default
    fixed = {f.name: getattr(configured, f.name) for f in dataclasses.fields(spec.Params)
             if f.name not in trial.params and getattr(sampled, f.name) == getattr(default, f.name)}
    return dataclasses.replace(sampled, **fixed)


def params_dict(params: Any) -> dict[str, Any]:
    """A strategy's Params (pydantic dataclass) as plain JSON-ready data."""
    return TypeAdapter(type(params)).dump_python(params, mode="json")


# -- Data ------------------------------------------------------------------------------------


def _when(ts: pd.Timestamp | None) -> str:
    return "the end of the data" if ts is None else ts.strftime("%Y-%m-%d %H:%M UTC")


def _span(td: pd.Timedelta) -> str:
    days = td / pd.Timedelta(days=1)
    return f"{days:.1f} days" if days >= 1 else f"{td / pd.Timedelta(hours=1):.1f} hours"


@dataclass(frozen=True)
class History:
    """A loaded frame: ``frame`` holds the warm-up bars before ``start`` (the first traded bar)."""

    frame: pd.DataFrame
    start: pd.Timestamp
    end: pd.Timestamp | None
    warmup: pd.Timedelta
    warnings: tuple[str, ...] = ()

    @property
    def traded(self) -> pd.DataFrame:
        """The bars from ``start`` on."""
        return self.frame.loc[self.start:]


def load_history(cfg: Config, warmup: pd.Timedelta, start: pd.Timestamp | None = None,
                 end: pd.Timestamp | None = None) -> History:
    """The configured dataset from ``start − warmup`` to ``end`` (exclusive); see the module docstring.

    Without ``start`` trading starts ``warmup`` after the first stored bar (or at the first bar, with a
    warning, when the data is shorter than that).
    """
    from bot.data import load_frame
    from bot.errors import DataError

    data = cfg.data
    timeframe_to_timedelta(data.timeframe)  # one line for a bad --timeframe
    if start is not None and end is not None and end <= start:
        raise UserError(f"--to ({_when(end)}) must be after --from ({_when(start)})")
    load_from = None if start is None else start - warmup
    try:
        frame = load_frame(data.dir, data.exchange, data.symbol, data.timeframe, load_from, end,
                           use_sample=data.use_sample, open_interest_source=data.open_interest_source or None)
    except DataError as err:
        raise UserError(str(err)) from None
    warnings: list[str] = []
    if start is None:
        first_ok = frame.index[0] + warmup
        if first_ok > frame.index[-1]:
            warnings.append(f"the data ({_span(frame.index[-1] - frame.index[0])}) is shorter than the strategy's "
                            f"warm-up ({_span(warmup)}): signals are not valid on any bar; use more data")
            first = frame.index[0]
        else:
            first = frame.index[int(frame.index.searchsorted(first_ok))]
    else:
        pos = int(frame.index.searchsorted(start))
        if pos >= len(frame):
            raise UserError(f"no {data.timeframe} bars for {data.exchange} {data.symbol} from {_when(start)} to "
                            f"{_when(end)} (loaded up to {_when(frame.index[-1])}); change --from/--to")
        first = frame.index[pos]
        history = first - frame.index[0]
        if history < warmup:
            valid = frame.index[0] + warmup
            warnings.append(f"only {_span(history)} of data before {_when(first)}, the strategy needs "
                            f"{_span(warmup)}: signals before {_when(valid)} may differ from a run with more "
                            "history; move --from later or add data")
    return History(frame, first, end, warmup, tuple(warnings))


def data_warnings(frame: pd.DataFrame, what: str = "the traded range") -> list[str]:
    """Missing auxiliary data in ``frame`` (funding, open interest)."""
    out = []
    if "funding_rate" not in frame.columns or not frame["funding_rate"].notna().any():
        out.append(f"no funding rates in {what}: funding payments are zero and funding-based rules cannot fire")
    if "open_interest" not in frame.columns or not frame["open_interest"].notna().any():
        out.append(f"no open interest in {what}: the liquidation map falls back to volume-inferred interest")
    return out


def coverage_warnings(frame: pd.DataFrame, timeframe: str, already: list[str]) -> list[str]:
    """Partial coverage the loader's validation sees in ``frame`` (funding spans not charged, missing
    mark prices, open interest with holes), minus what ``already`` says about wholly missing series."""
    from bot.validation import frame_problems

    no_funding = any(w.startswith("no funding rates") for w in already)
    return [p for p in frame_problems(frame, timeframe)
            if not p.startswith("no open interest") and not (no_funding and p.startswith("no funding data"))]


# -- Running ---------------------------------------------------------------------------------


def _window(frame: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp | None) -> np.ndarray:
    idx = frame.index
    keep = np.ones(len(idx), dtype=bool)
    if start is not None:
        keep &= idx >= start
    if end is not None:
        keep &= idx < end
    return keep


def backtest_range(cfg: Config, frame: pd.DataFrame, signals: pd.DataFrame, start: pd.Timestamp | None = None,
                   end: pd.Timestamp | None = None, engine: str | None = None) -> Any:
    """One engine run on the bars ``start <= t < end`` of ``frame`` with their ``signals``.

    ``signals`` come from the whole ``frame`` (its warm-up included), so every fold of an optimiser
    sees signals computed with all the history before it.
    """
    from backtests.engines import run_backtest

    keep = _window(frame, start, end)
    if not keep.any():
        raise UserError(f"no bars between {_when(start)} and {_when(end)}")
    with deferred():  # a Ctrl-C inside the numba kernel is raised when it returns (bot.interrupts)
        return run_backtest(frame[keep], signals[keep], cfg.backtest, cfg.risk,
                            engine=engine or cfg.backtest.engine, symbol=cfg.data.symbol, costs=cfg.costs,
                            brackets=market_brackets(cfg))


def market_brackets(cfg: Config) -> Any:
    """The leverage brackets a run of ``cfg``'s market uses: the tiers ``cascade download`` stored in
    the data directory when they cover the symbol (current), else the bundled ones."""
    from bot.risk.brackets import DOWNLOADED_FILE, brackets_for

    return brackets_for(cfg.data.symbol, Path(cfg.data.dir) / cfg.data.exchange / DOWNLOADED_FILE)


def brackets_used(cfg: Config) -> tuple[dict[str, Any], str | None]:
    """Which leverage brackets a run of ``cfg`` uses (for params.json), and a warning when they belong
    to another symbol."""
    from bot.risk.brackets import exchange_symbol

    wanted = exchange_symbol(cfg.data.symbol)
    b = market_brackets(cfg)  # the very brackets the engine gets, so params.json says what was used
    info = {"requested": wanted, "symbol": b.symbol, "as_of": b.as_of, "tiers": len(b.cap)}
    if b.symbol != wanted:
        return info, (f"no leverage brackets stored for {wanted}: liquidation prices and leverage caps use "
                      f"{b.symbol}'s (as of {b.as_of}); results for {wanted} are approximate")
    return info, None


def result_warnings(result: Any, stats: dict[str, Any]) -> list[str]:
    """Degenerate outcomes: no trades; trading stopped by a protection (and since when)."""
    out = []
    if int(stats.get("n_trades") or 0) == 0:
        out.append("0 trades: the strategy never entered in this range (check the period, the warm-up and "
                   "the parameters)")
    eq = result.equity
    if "risk_state" in eq.columns and len(eq):
        state = eq["risk_state"].astype(str).to_numpy()
        last = state[-1]
        if last != "ACTIVE":
            run_start = len(state) - 1
            while run_start > 0 and state[run_start - 1] == last:
                run_start -= 1
            share = float((state != "ACTIVE").mean())
            out.append(f"trading stopped by a protection: {last} since {_when(eq.index[run_start])} until the end "
                       f"({share:.0%} of the bars not ACTIVE); see [risk] and equity.parquet's risk_state")
        elif (state == "HALTED").any():
            share = float((state == "HALTED").mean())
            first = eq.index[int(np.argmax(state == "HALTED"))]
            out.append(f"trading was halted by a protection for {share:.0%} of the bars (first at {_when(first)})")
    return out


@dataclass
class Run:
    """One finished backtest: what ran, on what, and what came out."""

    spec: Any
    params: Any
    history: History
    features: Any
    signals: pd.DataFrame  # on history.frame (warm-up included)
    result: Any
    stats: dict[str, Any]
    brackets: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def frame(self) -> pd.DataFrame:
        """The traded bars."""
        return self.history.traded

    @property
    def traded_signals(self) -> pd.DataFrame:
        return self.signals.loc[self.history.start:]


def run(cfg: Config, overrides: dict[str, Any] | None = None, status: Status = _quiet) -> Run:
    """Backtest the configured strategy on the configured dataset (module docstring)."""
    from backtests.metrics import compute_stats
    from strategies.base import SLOWEST_TIMEFRAME

    spec, params = resolve_strategy(cfg, None, overrides)
    data, bt = cfg.data, cfg.backtest
    start, end = parse_utc(bt.start, "--from"), parse_utc(bt.end, "--to")
    warmup = spec.warmup(params)
    with status(f"loading {data.exchange} {data.symbol} {data.timeframe} …"):
        history = load_history(cfg, warmup, start, end)
    full = history.frame
    with status(f"computing {spec.name} features and signals on {len(full):,} bars …"):
        with deferred():
            features = spec.compute_features(full, params)
        try:
            signals = spec.run(full, params, features)
        except ValueError as err:
            if str(err).startswith(f"strategy '{spec.name}'"):
                raise UserError(str(err)) from None
            raise
    with status(f"running the {bt.engine} engine on {len(history.traded):,} bars …"):
        result = backtest_range(cfg, full, signals, history.start, end)
    stats = compute_stats(result, data.timeframe)
    brackets, bracket_warning = brackets_used(cfg)
    warnings = [*history.warnings, *data_warnings(history.traded)]
    warnings += coverage_warnings(history.traded, data.timeframe, warnings)
    if timeframe_to_timedelta(data.timeframe) > SLOWEST_TIMEFRAME:
        warnings.append(f"{data.timeframe} bars: declared warm-ups cover bar-counted lookbacks up to "
                        f"{SLOWEST_TIMEFRAME.components.hours}h bars only; signals early in the range may differ "
                        "from a run with more history")
    warnings += [bracket_warning] if bracket_warning else []
    warnings += result_warnings(result, stats)
    stats["warmup_days"] = warmup / pd.Timedelta(days=1)
    stats["warnings"] = warnings
    return Run(spec, params, history, features, signals, result, stats, brackets, warnings)


# -- The run folder --------------------------------------------------------------------------


def run_id(strategy: str, fingerprint: dict[str, Any], now: datetime) -> str:
    """``20250102T030405Z-<strategy>-<8 hex>``: UTC time, strategy, hash of what defines the run.

    The hash covers the parameters, the data selection, the engine, costs and risk settings, so
    two runs with the same id suffix are the same experiment.
    """
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{strategy}-{digest}"


def _unique(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def write_equity(equity: pd.DataFrame, folder: Path, csv: bool = False) -> Callable[[], None]:
    """Start writing ``equity.parquet`` (and ``equity.csv`` with ``csv``) in a thread; return the join.

    pyarrow writes without the GIL, so the file is written while the caller writes the other files.
    The join re-raises the writer's error. The CSV keeps the columns users read: ``time`` first as
    ISO-8601 UTC (``2025-01-01T00:00:00Z``, formatted by NumPy: ~8× faster than the CSV writer's).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    columns = {}
    for name, col in equity.items():
        values = col.astype(str) if isinstance(col.dtype, pd.CategoricalDtype) else col
        columns[str(name)] = pa.array(values.to_numpy())
    index = equity.index

    def write() -> None:
        pq.write_table(pa.table({"time": pa.array(index), **columns}), folder / "equity.parquet")
        if csv:
            times = index.as_unit("s").asi8.astype("datetime64[s]")
            iso = pa.array(np.datetime_as_string(times, unit="s", timezone="UTC"), type=pa.string())
            pacsv.write_csv(pa.table({"time": iso, **columns}), folder / "equity.csv")

    return _in_thread(write)


def _in_thread(fn: Callable[[], None]) -> Callable[[], None]:
    """Run ``fn`` in a thread; the returned function waits for it and re-raises what it raised."""
    import threading

    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as err:  # noqa: BLE001  (re-raised in the caller's thread)
            errors.append(err)

    thread = threading.Thread(target=target, name="cascade-writer")
    thread.start()

    def join() -> None:
        thread.join()
        if errors:
            raise errors[0]

    return join


def _selection(cfg: Config, r: Run) -> dict[str, Any]:
    data, bt = cfg.data, cfg.backtest
    return {"exchange": data.exchange, "symbol": data.symbol, "timeframe": data.timeframe,
            "open_interest_source": data.open_interest_source, "from": bt.start, "to": bt.end,
            "first_bar": str(r.frame.index[0]), "last_bar": str(r.frame.index[-1]), "n_bars": len(r.frame),
            "warmup": str(r.history.warmup), "first_loaded_bar": str(r.history.frame.index[0])}


def write_run(cfg: Config, r: Run, overrides: dict[str, Any] | None = None, report: bool = True,
              status: Status = _quiet) -> Path:
    """Write ``<results_dir>/<run-id>/`` atomically: stats.json, params.json, trades.csv, equity.parquet,
    (``[backtest] equity_csv``) equity.csv and (``report``) report.html. Returns the folder."""
    from backtests.metrics import json_safe

    bt = cfg.backtest
    pdict = params_dict(r.params)
    selection = _selection(cfg, r)
    sections = {k: getattr(cfg, k).model_dump(mode="json") for k in ("backtest", "risk", "costs")}
    sections["backtest"].pop("results_dir", None)
    fingerprint = {"strategy": r.name, "params": pdict, "data": selection, "engine": bt.engine, **sections}
    now = datetime.now(UTC)
    final = _unique(Path(bt.results_dir) / run_id(r.name, fingerprint, now))
    snapshot = {"run_id": final.name, "created": now.isoformat(timespec="seconds"), "strategy": r.name,
                "strategy_ref": bt.strategy, "params": pdict, "overrides": overrides or {}, "engine": bt.engine,
                "data": selection, "brackets": r.brackets, "config": cfg.model_dump(mode="json", by_alias=True)}
    with user_errors(final.parent), atomic_dir(final) as tmp:
        (tmp / "stats.json").write_text(json.dumps(json_safe(r.stats), indent=2, allow_nan=False) + "\n")
        (tmp / "params.json").write_text(json.dumps(json_safe(snapshot), indent=2, allow_nan=False, default=str)
                                         + "\n")
        equity_written = write_equity(r.result.equity, tmp, csv=bt.equity_csv)
        try:
            enrich_trades(r.result.trades, r.frame).to_csv(tmp / "trades.csv", index=False)
        finally:
            equity_written()  # before the folder is renamed (or removed on an error)
        if report:
            from backtests.report.html import render_report  # plotting only when a report is written

            with status("preparing the report's levels and liquidation map …"):
                layers = report_layers(r, cfg)
            with status("writing report.html …"):
                title = f"{r.name} · {cfg.data.symbol} {cfg.data.timeframe} · {bt.engine}"
                meta = [f"run {final.name}", "params: " + ", ".join(f"{k}={v}" for k, v in pdict.items()
                                                                    if k != "liqmap")]
                render_report(r.frame, r.traded_signals, r.result, r.stats, tmp / "report.html", title,
                              zones=layers["zones"], heatmap=layers["heatmap"], meta=meta)
    return final


# -- What the report draws -------------------------------------------------------------------


def report_layers(r: Run, cfg: Config | None = None, columns: int = 400) -> dict[str, Any]:
    """``{"zones", "heatmap"}`` for the report, from the features the strategy traded on.

    ``zones``: the strategy's own level features (``features["levels"]``) on the traded bars, None when
    it computes none. ``heatmap``: liquidation-map snapshots at up to ``columns`` times from the first
    traded bar, computed over the warm-up too, with the strategy's ``liqmap`` parameters (else
    ``[liqmap]``); None for a strategy whose features hold no liquidation map (a user strategy that
    does not use it draws none).
    """
    from strategies.features import liquidation_map as lm

    fe = r.features if isinstance(r.features, dict) else {}
    levels = fe.get("levels")
    zones = levels.loc[r.history.start:] if isinstance(levels, pd.DataFrame) else None
    heatmap = None
    if fe.get("liq") is not None:
        params = getattr(r.params, "liqmap", None) or (cfg.liqmap if cfg is not None else lm.LiqMapParams())
        full = r.history.frame
        first = int(full.index.searchsorted(r.history.start))
        at = full.index[first + lm.heatmap_positions(len(full) - first, columns)]
        heatmap = lm.liquidation_map_snapshots(full, params, at)
    return {"zones": zones, "heatmap": heatmap}
