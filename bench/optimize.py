"""Optimisation speed: walk-forward studies of every registered strategy on the bundled 1h BTC sample.

* ``liq_asymmetry``: ``--trials`` (200) trials per fold, walk-forward over the whole sample (≈ 14
  months, the first 90 days are the liquidation map's warm-up) with ``--is-days`` 100 / 30 / 30 and a
  3-day embargo: 6 folds, the issue's "about 6" (the default 180-day in-sample window leaves room for
  3; 120 days give 5, which two workers split 3 : 2, one of them idle for the last fold), fast engine,
  ``--workers`` (2) processes, SQLite storage in a temporary folder;
* every other registered strategy: ``--other-trials`` (50) per fold, same folds settings;
* the same evaluation (a trial on fold 0's in-sample window) on the backtrader engine for
  ``--bt-trials`` (3) parameter sets, against the fast engine on the same parameter sets: the ratio.

An **evaluation** is one trial on one fold's in-sample window (signals once, a backtest per
sub-block). ``evals_per_s`` = evaluations / wall time of the trial phase (optuna storage and sampling
included); ``cpu_ms_per_eval`` = CPU time of the trial phase (its workers included) per evaluation,
which other load on the machine moves far less than the wall-clock rate; ``trials_per_s`` = trials /
wall time of the whole study (data load, features, trials, plateau choice, sensitivity, out-of-sample
runs: what ``cascade optimize`` costs end to end).
Targets on a 2-core machine: ≥ 50 evaluations/s for liq_asymmetry, ≥ 10 for every strategy.
Prints a table, then the JSON line ``{"bench": "optimize", ...}``.

    python bench/optimize.py                  # about a minute or two on 2 cores
    python bench/optimize.py --trials 50 --other-trials 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402

from backtests.optimize import adapter  # noqa: E402
from backtests.optimize import study as S  # noqa: E402
from backtests.optimize import walkforward as W  # noqa: E402
from backtests.optimize.objective import Evaluator, directions  # noqa: E402
from bot.config import Config  # noqa: E402


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished (forked) workers: what an evaluation costs whatever
    else the machine is running (wall-clock rates fall with the other load, this barely moves)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def study_speed(name: str, n_trials: int, workers: int, is_days: float, folder: Path) -> dict[str, Any]:
    """One walk-forward study end to end; timings per phase."""
    cfg = Config()
    t0 = time.perf_counter()
    strat = adapter.resolve(name)
    frame = adapter.load_dataset(cfg)
    settings = W.Settings(n_trials=n_trials, seed=0, is_days=is_days, oos_days=30, step_days=30, embargo_days=3)
    folds = W.plan_folds(frame, cfg.data.timeframe, strat, settings, None)
    url = f"sqlite:///{folder / name}.db"
    meta = W.study_meta(strat, frame, folds, settings, cfg, {"symbol": cfg.data.symbol})
    S.create_or_resume(S.make_storage(url), name, meta, directions(settings.objective), False)
    ev = Evaluator(frame, strat, cfg, "fast", settings.objective, settings.n_blocks, settings.min_trades)
    t1 = time.perf_counter()
    ev.warm()  # features + compile, inherited by the forked workers
    t2 = time.perf_counter()
    cpu0 = _cpu_seconds()
    W.run_workers(url, name, ev, strat, folds, settings, workers)
    t3 = time.perf_counter()
    cpu = _cpu_seconds() - cpu0
    outcome, _check = W.analyse(url, name, ev, strat, folds, settings, check_engine=None)
    t4 = time.perf_counter()
    n_evals = outcome.n_trials
    # the evaluation alone (no optuna storage, one process): what the trial phase costs beyond it is
    # optuna's RDB bookkeeping (trial rows, parameters, heartbeats, sampling)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2), storage=optuna.storages.InMemoryStorage())
    ps = [strat.suggest(study.ask()) for _ in range(10)]
    t = time.perf_counter()
    for p in ps:
        ev.evaluate(p, folds[0].is_start, folds[0].is_stop)
    bare = len(ps) / (time.perf_counter() - t)
    return {"bare_evals_per_s": bare, "folds": len(folds), "trials": outcome.n_trials, "evaluations": n_evals,
            "load_s": t1 - t0, "features_s": t2 - t1, "trials_s": t3 - t2, "analysis_s": t4 - t3,
            "evals_per_s": n_evals / (t3 - t2), "trials_per_s": outcome.n_trials / (t4 - t0),
            "cpu_ms_per_eval": 1000 * cpu / n_evals,
            "oos_sharpe": outcome.metrics.get("oos_sharpe"), "passed": outcome.passed}


def backtrader_ratio(name: str, n: int, is_days: float) -> dict[str, Any]:
    """The same evaluations on both engines (fold 0, ``n`` sampled parameter sets)."""
    cfg = Config()
    strat = adapter.resolve(name)
    frame = adapter.load_dataset(cfg)
    settings = W.Settings(is_days=is_days)
    fold = W.plan_folds(frame, cfg.data.timeframe, strat, settings, None)[0]
    sampler = optuna.samplers.RandomSampler(seed=1)
    study = optuna.create_study(sampler=sampler, storage=optuna.storages.InMemoryStorage())
    params = [strat.suggest(study.ask()) for _ in range(n)]
    out: dict[str, Any] = {}
    for engine in ("fast", "backtrader"):
        ev = Evaluator(frame, strat, cfg, engine, settings.objective, settings.n_blocks, settings.min_trades)
        ev.warm()
        t = time.perf_counter()
        values = [ev.evaluate(p, fold.is_start, fold.is_stop).values for p in params]
        out[engine] = {"evals_per_s": n / (time.perf_counter() - t), "values": values}
    out["same_values"] = all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or a == b
                             for va, vb in zip(out["fast"]["values"], out["backtrader"]["values"], strict=True)
                             for a, b in zip(va, vb, strict=True))
    out["ratio"] = out["fast"]["evals_per_s"] / out["backtrader"]["evals_per_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--other-trials", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--is-days", type=float, default=100.0)
    ap.add_argument("--bt-trials", type=int, default=3)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from strategies import STRATEGIES

    load_start = os.getloadavg()[0]
    folder = Path(tempfile.mkdtemp(prefix="cascade-bench-opt-"))
    per: dict[str, Any] = {}
    try:
        for name in STRATEGIES:
            n = args.trials if name == "liq_asymmetry" else args.other_trials
            per[name] = study_speed(name, n, args.workers, args.is_days, folder)
            r = per[name]
            print(f"{name:<18} {r['folds']} folds × {n:>3} trials  {r['evals_per_s']:7.1f} evals/s  "
                  f"(evaluation alone, 1 process: {r['bare_evals_per_s']:.1f}/s)  "
                  f"{r['cpu_ms_per_eval']:.1f} CPU ms/eval  {r['trials_per_s']:6.1f} trials/s end to end  (features {r['features_s']:.2f} s, "
                  f"analysis {r['analysis_s']:.2f} s)", flush=True)
        bt = backtrader_ratio("liq_asymmetry", args.bt_trials, args.is_days)
        print(f"liq_asymmetry evaluation: fast {bt['fast']['evals_per_s']:.1f}/s, backtrader "
              f"{bt['backtrader']['evals_per_s']:.2f}/s, ratio {bt['ratio']:.0f}x, same objective values (rel 1e-9): "
              f"{bt['same_values']}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    targets = {name: (50.0 if name == "liq_asymmetry" else 10.0) for name in per}
    line = {"bench": "optimize", "evals_per_s": per["liq_asymmetry"]["evals_per_s"],
            "trials_per_s": per["liq_asymmetry"]["trials_per_s"], "workers": args.workers,
            "cpus": os.cpu_count(),
            "per_strategy": {k: {kk: v[kk] for kk in ("folds", "trials", "evals_per_s", "trials_per_s",
                                                       "bare_evals_per_s", "cpu_ms_per_eval", "features_s",
                                                       "analysis_s")} for k, v in per.items()},
            "targets_evals_per_s": targets,
            "meets_targets": {k: per[k]["evals_per_s"] >= t for k, t in targets.items()},
            "backtrader_evals_per_s": bt["backtrader"]["evals_per_s"], "fast_vs_backtrader": bt["ratio"],
            "engines_same_values": bt["same_values"],
            "load_average": os.getloadavg()[0], "load_average_start": load_start}
    print(f"load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} CPUs (other work on the machine slows "
          "every number here)")
    print(json.dumps(line))


if __name__ == "__main__":
    main()
