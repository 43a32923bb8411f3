"""Walk-forward optimisation: per-fold studies on in-sample bars, plateau choice, stitched OOS (§E.1).

:func:`prepare` plans the folds and the study metadata; :func:`run_workers` runs the trials (in this
process, in forked local workers, or as a joining worker); :func:`analyse` turns the finished
studies into the result: per fold the chosen parameters (plateau selection), their in-sample run and
their out-of-sample run; the out-of-sample runs stitched into one equity curve (each block starts
flat; block k's equity is scaled by the growth of blocks < k) from which every OOS number comes;
walk-forward efficiency per fold and pooled; parameter stability; and the overfitting gates.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd

from backtests.metrics import YEAR, drawdown, period_returns, sharpe_ratio, sortino_ratio
from backtests.optimize import gates as G
from backtests.optimize import study as S
from backtests.optimize.adapter import Strategy, frame_hash, make_params
from backtests.optimize.folds import Fold, make_folds, whole_range
from backtests.optimize.objective import Evaluator, WindowRun
from backtests.optimize.selection import Choice, pareto_select, plateau_select

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class Settings:
    """What defines an optimisation (the identity of a study) and how it is judged."""

    n_trials: int = 100
    objective: tuple[str, ...] = ("sharpe",)
    seed: int = 0
    engine: str = "fast"
    walk_forward: bool = True
    anchored: bool = False
    is_days: float = 180.0
    oos_days: float = 30.0
    step_days: float = 30.0
    embargo_days: float = 3.0
    n_blocks: int = 3
    min_trades: int = 15
    dd_weight: float = 1.0
    prune: bool = False
    top_frac: float = 0.1
    plateau_step: float = 0.1
    pbo_blocks: int = 16
    minbtl_sharpe: float = 1.0
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))


DEFAULT_THRESHOLDS = {"oos_sharpe": 0.0, "wfe": 0.5, "positive_folds": 0.6, "trades_per_year": 30.0,
                      "pbo": 0.2, "dsr": 0.95, "plateau": 0.7, "free_params": 5.0}


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def plan_folds(frame: pd.DataFrame, timeframe: str, strategy: Strategy, settings: Settings,
               start: pd.Timestamp | None) -> list[Fold]:
    """The folds for ``frame`` after the default parameters' warm-up (``ValueError`` if none fit)."""
    first = min(len(frame) - 1, strategy.warmup_bars(strategy.Params(), timeframe))
    if settings.walk_forward:
        t0 = frame.index[first].ceil("D")
        begin = t0 if start is None else max(t0, start)
        return make_folds(frame.index, first, settings.is_days, settings.oos_days, settings.step_days,
                          settings.embargo_days, settings.anchored, begin)
    return whole_range(frame.index, first, start)


def study_meta(strategy: Strategy, frame: pd.DataFrame, folds: list[Fold], settings: Settings, cfg: Any,
               selection: dict[str, Any]) -> dict[str, Any]:
    """Everything that identifies the optimisation, and what a joining worker needs to rebuild it."""
    trading = {"backtest": cfg.backtest.model_dump(mode="json", by_alias=True),
               "risk": cfg.risk.model_dump(mode="json")}
    if getattr(cfg, "costs", None) is not None:
        trading["costs"] = cfg.costs.model_dump(mode="json")
    trading["backtest"].pop("strategy", None)
    trading["backtest"].pop("engine", None)
    trading["backtest"].pop("results_dir", None)
    return {"strategy": strategy.name, "data": selection, "data_hash": frame_hash(frame),
            "folds": [f.as_dict(frame.index) | {"pos": [f.is_start, f.is_stop, f.oos_start, f.oos_stop]}
                      for f in folds],
            "objective": list(settings.objective), "seed": settings.seed, "n_trials": settings.n_trials,
            "n_blocks": settings.n_blocks, "min_trades": settings.min_trades, "dd_weight": settings.dd_weight,
            "engine": settings.engine, "prune": settings.prune, "walk_forward": settings.walk_forward,
            "trading": trading, "config": cfg.model_dump(mode="json", by_alias=True), "code_commit": _commit()}


def folds_from_meta(meta: dict[str, Any]) -> list[Fold]:
    """The folds recorded in a study's metadata."""
    return [Fold(f["fold"], *f["pos"]) for f in meta["folds"]]


@dataclass(frozen=True)
class TrialObjective:
    """The optuna objective of a fold: suggest, then evaluate on in-sample bars only (two steps, see
    :class:`backtests.optimize.study.FoldObjective`; calling it does both)."""

    evaluator: Evaluator
    strategy: Strategy
    fold: Fold

    def suggest(self, trial: optuna.Trial) -> Any:
        return self.strategy.suggest(trial)

    def evaluate(self, p: Any, trial: optuna.Trial) -> Any:
        ev = self.evaluator.evaluate(p, self.fold.is_start, self.fold.is_stop, trial)
        return ev.values if len(ev.values) > 1 else ev.values[0]

    def __call__(self, trial: optuna.Trial) -> Any:
        return self.evaluate(self.suggest(trial), trial)


def make_objective(evaluator: Evaluator, strategy: Strategy, fold: Fold) -> TrialObjective:
    """The optuna objective of ``fold``: suggest, evaluate on in-sample bars only."""
    return TrialObjective(evaluator, strategy, fold)


def run_worker(url: str, name: str, evaluator: Evaluator, strategy: Strategy, folds: list[Fold],
               settings: Settings, on_trial: Callable[[], None] | None = None) -> int:
    """Run the missing trials of ``folds`` (in order) of optimisation ``name``; return how many ran."""
    storage = S.make_storage(url)
    multi = len(settings.objective) == 2
    ran = 0
    for fold in folds:
        if S.STOP.is_set():
            break
        study = optuna.load_study(study_name=S.fold_name(name, fold.k), storage=storage,
                                  sampler=S.make_sampler(settings.objective, settings.seed, fold.k,
                                                         settings.n_trials),
                                  pruner=S.make_pruner(settings.prune, multi))
        ran += S.run_fold(study, storage, make_objective(evaluator, strategy, fold), settings.n_trials, on_trial)
    return ran


def _child(url: str, name: str, evaluator: Evaluator, strategy: Strategy, folds: list[Fold],
           settings: Settings, ran: Any) -> None:
    try:
        n = run_worker(url, name, evaluator, strategy, folds, settings)
    except KeyboardInterrupt:
        os._exit(130)
    with ran.get_lock():
        ran.value += n


def run_workers(url: str, name: str, evaluator: Evaluator, strategy: Strategy, folds: list[Fold],
                settings: Settings, workers: int = 1, join: bool = False,
                progress: Callable[[int], None] | None = None) -> int:
    """Run the optimisation's trials with ``workers`` processes (see :mod:`backtests.optimize.study`).

    ``join``: every worker works on every fold (a worker added from elsewhere). ``progress`` is called
    with the number of finished trials over all folds. Returns the trials run by these workers.

    Raises:
        KeyboardInterrupt: after a Ctrl-C, once the running trials have finished.
    """
    with S.graceful_interrupt() as stop:
        ran = _run_workers(url, name, evaluator, strategy, folds, settings, workers, join, progress)
    if stop.is_set():
        raise KeyboardInterrupt
    return ran


def _run_workers(url: str, name: str, evaluator: Evaluator, strategy: Strategy, folds: list[Fold],
                 settings: Settings, workers: int, join: bool, progress: Callable[[int], None] | None) -> int:
    storage = S.make_storage(url)
    evaluator.warm()
    if not join:
        for fold in folds:
            S.requeue_interrupted(optuna.load_study(study_name=S.fold_name(name, fold.k), storage=storage))

    # one study object per fold, kept: optuna caches finished trials, so a poll reads only new rows
    studies = [optuna.load_study(study_name=S.fold_name(name, f.k), storage=storage) for f in folds]

    def finished() -> int:
        return sum(len(st.get_trials(deepcopy=False, states=S.FINISHED)) for st in studies)

    if workers <= 1:
        done = [finished()]

        def tick() -> None:
            done[0] += 1
            if progress is not None:
                progress(done[0])

        if progress is not None:
            progress(done[0])
        return run_worker(url, name, evaluator, strategy, folds, settings, tick)
    return _run_forked(url, name, evaluator, strategy, folds, settings, workers, join, progress, finished)


def _run_forked(url: str, name: str, evaluator: Evaluator, strategy: Strategy, folds: list[Fold],
                settings: Settings, workers: int, join: bool, progress: Callable[[int], None] | None,
                finished: Callable[[], int]) -> int:
    """``workers`` forked processes on the folds (each runs whole folds, so results do not depend on
    how many); returns the trials they ran (counted by them: reading every finished trial back, with
    its return series, to count them cost about 0.7 s for 1000 trials)."""
    ctx = multiprocessing.get_context("fork")  # children inherit the frame and its cached features
    ran = ctx.Value("q", 0)
    shares = [folds if join else folds[w::workers] for w in range(workers)]
    procs = [ctx.Process(target=_child, args=(url, name, evaluator, strategy, share, settings, ran), daemon=False)
             for share in shares if share]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            if progress is not None:
                progress(finished())
            for p in procs:
                p.join(timeout=1.0 / len(procs))
    finally:
        for p in procs:  # after a Ctrl-C the children finish their trial and stop too
            p.join(timeout=120)
    bad = [p.exitcode for p in procs if p.exitcode not in (0, 130)]
    if bad:
        raise RuntimeError(f"optimisation worker(s) exited with code(s) {bad}")
    if progress is not None:
        progress(finished())
    return int(ran.value)


# -- Analysis ------------------------------------------------------------------------------------


def _shift(value: Any, dist: Any, delta: float) -> Any:
    """``value`` moved by ``delta`` of ``dist``'s range (log scale for log distributions), clipped."""
    lo, hi = float(dist.low), float(dist.high)
    if getattr(dist, "log", False):
        u = (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo)) + delta
        out = math.exp(math.log(lo) + min(1.0, max(0.0, u)) * (math.log(hi) - math.log(lo)))
    else:
        out = min(hi, max(lo, float(value) + delta * (hi - lo)))
    if isinstance(dist, optuna.distributions.IntDistribution):
        step = int(dist.step or 1)
        moved = int(round(out))
        if moved == value:  # at least one integer step
            moved = value + (step if delta > 0 else -step)
        return int(min(hi, max(lo, moved)))
    return out


def sensitivity(evaluator: Evaluator, strategy: Strategy, fold: Fold, trial: Any, step: float) -> float:
    """§E.5 item 7: the in-sample objective at ±``step`` of every numeric parameter of the chosen
    trial (one at a time), as the worst ratio to the chosen value; NaN when the value is not > 0."""
    base = trial.values[0]
    if not (math.isfinite(base) and base > 0):
        return math.nan
    worst = math.inf
    for name, dist in trial.distributions.items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            continue
        for delta in (-step, step):
            moved = _shift(trial.params[name], dist, delta)
            if moved == trial.params[name]:
                continue
            p = make_params(strategy, {**trial.params, name: moved})
            v = evaluator.evaluate(p, fold.is_start, fold.is_stop).values[0]
            worst = min(worst, v / base if math.isfinite(v) else -math.inf)
    return worst if math.isfinite(worst) else (math.nan if worst == math.inf else -math.inf)


@dataclass
class FoldOutcome:
    """One fold's choice and its in-sample / out-of-sample runs."""

    fold: Fold
    choice: Choice
    params: dict[str, Any]
    is_run: WindowRun
    oos_run: WindowRun | None
    n_trials: int
    n_pruned: int
    pbo: G.PBOResult | None
    returns_matrix: np.ndarray
    pareto: list[Any]
    sensitivity: float = math.nan

    def wfe(self) -> float:
        if self.oos_run is None or not self.is_run.ann_return > 0:
            return math.nan
        return self.oos_run.ann_return / self.is_run.ann_return


@dataclass
class Outcome:
    """The whole optimisation result (see :func:`analyse`)."""

    folds: list[FoldOutcome]
    stitched: pd.Series | None
    oos_returns: pd.Series | None
    metrics: dict[str, Any]
    gates: list[G.Gate]
    best_params: dict[str, Any]
    stability: dict[str, dict[str, float]]
    n_trials: int
    n_trials_eff: float
    index: pd.DatetimeIndex

    @property
    def passed(self) -> bool:
        return all(g.passed is not False for g in self.gates) and any(g.passed for g in self.gates)


def _returns_matrix(trials: list[Any]) -> np.ndarray:
    cols = [np.asarray(t.user_attrs.get("eval", {}).get("returns", []), dtype=float) for t in trials]
    if not cols:
        return np.empty((0, 0))
    n = max(len(c) for c in cols)
    cols = [c for c in cols if len(c) == n]
    return np.column_stack(cols) if cols else np.empty((0, 0))


def stitch(runs: list[WindowRun], initial_cash: float) -> pd.Series:
    """One equity curve from consecutive OOS runs: block k scaled by the growth of blocks < k."""
    parts, scale = [], 1.0
    for run in runs:
        eq = run.result.equity["equity"].astype(float)
        parts.append(eq * scale)
        scale *= float(run.result.final_equity) / float(run.result.initial_cash)
    out = pd.concat(parts)
    return out.rename("equity") if initial_cash else out


def _stability(outcomes: list[FoldOutcome]) -> dict[str, dict[str, float]]:
    """Per parameter: fold-to-fold coefficient of variation and the spread as a share of its range."""
    if not outcomes:
        return {}
    out: dict[str, dict[str, float]] = {}
    dists = outcomes[0].choice.trial.distributions
    for name, dist in dists.items():
        vals = [o.params.get(name) for o in outcomes]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            mode = max(set(map(str, vals)), key=[str(v) for v in vals].count)
            out[name] = {"mode_share": [str(v) for v in vals].count(mode) / len(vals)}
            continue
        arr = np.asarray(vals, dtype=float)
        mean = float(arr.mean())
        cv = float(arr.std(ddof=0) / abs(mean)) if mean != 0 else math.nan
        span = float((arr.max() - arr.min()) / (dist.high - dist.low)) if dist.high > dist.low else 0.0
        out[name] = {"cv": cv, "range_share": span}
    return out


def analyse(url: str, name: str, evaluator: Evaluator, strategy: Strategy, folds: list[Fold],
            settings: Settings, check_engine: str | None = "backtrader") -> tuple[Outcome, dict[str, Any]]:
    """Choose per fold, run OOS, stitch, compute metrics and gates. Returns (outcome, engine check)."""
    storage = S.make_storage(url)
    multi = len(settings.objective) == 2
    outcomes: list[FoldOutcome] = []
    all_is_sharpes: list[float] = []
    n_total = 0
    n_eff_total = 0.0
    for fold in folds:
        study = optuna.load_study(study_name=S.fold_name(name, fold.k), storage=storage)
        fin = S.finished_trials(study)
        complete = [t for t in fin if t.state == optuna.trial.TrialState.COMPLETE]
        n_total += len(fin)
        if not complete:
            raise ValueError(f"fold {fold.k} has no completed trial; run more trials")
        if multi:
            front = [t for t in study.best_trials if S.is_finite_values(t)] or study.best_trials
            choice = pareto_select(front)
        else:
            front = []
            choice = plateau_select(complete, settings.top_frac, settings.plateau_step)
        params = dict(choice.trial.params)
        p = make_params(strategy, params)
        is_run = evaluator.run_window(p, fold.is_start, fold.is_stop)
        oos_run = (evaluator.run_window(p, fold.oos_start, fold.oos_stop)
                   if fold.oos_start is not None and fold.oos_stop is not None else None)
        mat = _returns_matrix(complete)
        pbo = None
        if mat.shape[1] >= 2 and mat.shape[0] >= 2 * settings.pbo_blocks:
            pbo = G.pbo_cscv(mat, settings.pbo_blocks)
        if mat.size:
            all_is_sharpes.extend(G.sharpe(mat[:, j]) for j in range(mat.shape[1]))
            n_eff, _rho = G.effective_trials(mat)
            n_eff_total += n_eff * len(fin) / max(1, mat.shape[1])
        outcomes.append(FoldOutcome(fold, choice, params, is_run, oos_run, len(fin),
                                    sum(t.state == optuna.trial.TrialState.PRUNED for t in fin), pbo, mat, front))
    sr_var = float(np.var([s for s in all_is_sharpes if math.isfinite(s)], ddof=1)) if len(all_is_sharpes) > 1 \
        else 0.0
    walk = all(o.oos_run is not None for o in outcomes)
    initial = float(evaluator.cfg.backtest.initial_cash)
    metrics: dict[str, Any] = {}
    stitched = oos_rets = None
    if walk:
        stitched = stitch([o.oos_run for o in outcomes], initial)  # type: ignore[misc]
        oos_rets, periods = period_returns(stitched, initial, evaluator.timeframe)
        years = evaluator.step * len(stitched) / YEAR
        growth = float(stitched.iloc[-1]) / initial
        n_trades = sum(o.oos_run.n_trades for o in outcomes)  # type: ignore[union-attr]
        ann = growth ** (1 / years) - 1 if growth > 0 else -1.0
        is_ann = [o.is_run.ann_return for o in outcomes]
        mean_is = float(np.mean(is_ann))
        wfes = [o.wfe() for o in outcomes]
        metrics = {
            "oos_sharpe": sharpe_ratio(oos_rets, periods), "oos_sortino": sortino_ratio(oos_rets, periods),
            "oos_total_return": growth - 1.0, "oos_cagr": ann,
            "oos_max_drawdown": float(drawdown(stitched, initial).max()), "oos_trades": n_trades,
            "oos_trades_per_year": n_trades / years if years > 0 else math.nan, "oos_days": years * 365.0,
            "wfe": ann / mean_is if mean_is > 0 else math.nan, "wfe_per_fold": wfes,
            "positive_folds": float(np.mean([o.oos_run.sharpe > 0 for o in outcomes])),  # type: ignore[union-attr]
            "is_mean_cagr": mean_is,
        }
        daily = oos_rets.to_numpy(dtype=float)
        metrics["dsr"] = G.dsr(daily, n_total, sr_var)
        metrics["dsr_neff"] = G.dsr(daily, n_eff_total, sr_var)
        sk, ku = G.moments(daily)
        metrics["oos_min_trl_days"] = G.min_trl(G.sharpe(daily), 0.0, sk, ku)
    else:
        is_daily = outcomes[0].is_run.returns.to_numpy(dtype=float)
        metrics["dsr"] = G.dsr(is_daily, n_total, sr_var)  # the IS winner's DSR: a diagnostic
        metrics["dsr_neff"] = G.dsr(is_daily, n_eff_total, sr_var)
        metrics["is_sharpe"] = outcomes[0].is_run.sharpe
    pbos = [o.pbo.pbo for o in outcomes if o.pbo is not None]
    metrics["pbo"] = float(np.mean(pbos)) if pbos else math.nan
    metrics["pbo_per_fold"] = [o.pbo.pbo if o.pbo is not None else None for o in outcomes]
    metrics["n_trials"] = n_total
    metrics["n_trials_eff"] = n_eff_total
    metrics["sr_variance"] = sr_var
    per_fold = max(1, n_total // len(outcomes))
    is_years = float(np.mean([(o.fold.is_stop - o.fold.is_start) * evaluator.step / YEAR for o in outcomes]))
    metrics["min_btl_years"] = G.min_btl(per_fold, settings.minbtl_sharpe)
    metrics["is_years"] = is_years
    metrics["max_trials_for_data"] = G.max_trials_for(is_years, settings.minbtl_sharpe)
    ratios = [sensitivity(evaluator, strategy, o.fold, o.choice.trial, settings.plateau_step)
              for o in outcomes] if not multi else []
    for o, r in zip(outcomes, ratios, strict=False):
        o.sensitivity = r
    metrics["sensitivity_per_fold"] = ratios
    finite = [r for r in ratios if not math.isnan(r)]
    plateau = float(np.median(finite)) if finite else math.nan
    metrics["plateau"] = plateau
    metrics["free_params"] = strategy.n_free_params()
    metrics["evaluations"] = evaluator.evaluations
    th = settings.thresholds
    gates = [
        G.Gate("oos_sharpe", metrics.get("oos_sharpe"), ">", th["oos_sharpe"],
               "pooled out-of-sample Sharpe (daily, annualised) (§E.5.4)"),
        G.Gate("wfe", metrics.get("wfe"), ">=", th["wfe"], "walk-forward efficiency, pooled (§E.1)"),
        G.Gate("positive_folds", metrics.get("positive_folds"), ">=", th["positive_folds"],
               "share of folds with OOS Sharpe > 0 (§E.1)"),
        G.Gate("trades_per_year", metrics.get("oos_trades_per_year"), ">=", th["trades_per_year"],
               "out-of-sample trades per year (§E.5.4)"),
        G.Gate("pbo", metrics["pbo"], "<=", th["pbo"], f"PBO by CSCV, S={settings.pbo_blocks}, mean over folds (§E.2)"),
        G.Gate("dsr", metrics["dsr"], ">=", th["dsr"],
               f"deflated Sharpe of the {'pooled OOS' if walk else 'IS-winner'} returns, N={n_total} trials (§E.3)"),
        G.Gate("min_btl", is_years, ">=", round(metrics["min_btl_years"], 4),
               f"in-sample years vs MinBTL for {per_fold} trials at Sharpe {settings.minbtl_sharpe:g} (§E.3)"),
        G.Gate("plateau", plateau if not multi else None, ">=", th["plateau"],
               f"worst IS objective at ±{settings.plateau_step:g} of each parameter / chosen, median over folds (§E.5.7)"),
        G.Gate("free_params", float(metrics["free_params"]), "<=", th["free_params"],
               "parameters tuned by suggest (§E.5.3)"),
    ]
    if not walk:
        gates = [g for g in gates if g.name not in ("oos_sharpe", "wfe", "positive_folds", "trades_per_year")]
    best = dict(outcomes[-1].params)  # the most recent in-sample window's choice is the one to trade
    outcome = Outcome(outcomes, stitched, oos_rets, metrics, gates, best, _stability(outcomes), n_total,
                      n_eff_total, evaluator.frame.index)
    check = engine_check(evaluator, strategy, outcomes, check_engine) if check_engine else {}
    return outcome, check


def engine_check(evaluator: Evaluator, strategy: Strategy, outcomes: list[FoldOutcome], engine: str) -> dict[str, Any]:
    """Re-run each fold's chosen parameters on ``engine`` over the same bars and compare with the
    optimiser's engine (trades and final equity must agree, docs/architecture.md "Two engines")."""
    rows = []
    for o in outcomes:
        lo, hi = ((o.fold.oos_start, o.fold.oos_stop) if o.oos_run is not None else (o.fold.is_start, o.fold.is_stop))
        mine = o.oos_run if o.oos_run is not None else o.is_run
        p = make_params(strategy, o.params)
        other = evaluator.run_window(p, lo, hi, engine=engine)
        rel = abs(other.result.final_equity - mine.result.final_equity) / abs(mine.result.final_equity)
        same = len(other.result.trades) == len(mine.result.trades)
        if same and len(mine.result.trades):
            a, b = mine.result.trades, other.result.trades
            same = bool((a["entry_bar"].to_numpy() == b["entry_bar"].to_numpy()).all()
                        and (a["exit_bar"].to_numpy() == b["exit_bar"].to_numpy()).all()
                        and (a["side"].to_numpy() == b["side"].to_numpy()).all())
        rows.append({"fold": o.fold.k, evaluator.engine: mine.result.final_equity, engine: other.result.final_equity,
                     "trades": len(mine.result.trades), f"trades_{engine}": len(other.result.trades),
                     "rel_diff": rel, "agree": bool(same and rel <= 1e-6)})
    return {"engine": engine, "folds": rows, "agree": all(r["agree"] for r in rows)}
