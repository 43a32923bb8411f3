"""Strategy evaluations per second: a trial with the features hook cached against recomputing everything.

For every registered strategy, on the last year of the bundled BTC/USDT:USDT 1h sample:

* ``cached``: ``spec.run(frame, p, features)`` with ``features = spec.compute_features(frame, p)``
  computed once (what the optimiser does for trials that share the ``feature_params``);
* ``full``: ``spec.signals(frame, p)``, which computes its features itself (the peer: what every
  trial cost before the hook).

Warm timings (best of ``--repeat``), the parameters drawn by each strategy's ``suggest`` with a
seeded sampler but with the default ``feature_params`` (so the cache applies). Prints a table and,
as the last line, JSON (``{"bench": "strategies", ...}``). Target: >= 10 cached evaluations/s per
strategy.

    python bench/strategy_trials.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import optuna
import pandas as pd

from backtests.sample import load_sample_frame
from strategies import STRATEGIES


def best(fn, repeat: int) -> float:
    out = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    frame = load_sample_frame("BTC/USDT:USDT", "1h")
    frame = frame[frame.index >= frame.index[-1] - pd.Timedelta(days=365)]
    result: dict[str, dict[str, float]] = {}
    print(f"{'strategy':18} {'features s':>10} {'cached ms':>10} {'full ms':>9} {'ratio':>7} {'evals/s':>8}")
    for name, spec in STRATEGIES.items():
        base = spec.Params()
        t = time.perf_counter()
        features = spec.compute_features(frame, base)
        feat_s = time.perf_counter() - t
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
        trials = []
        for _ in range(args.trials):  # suggested parameters, with the cached feature parameters kept
            p = spec.suggest(study.ask())
            trials.append(dataclasses.replace(p, **{f: getattr(base, f) for f in spec.feature_params}))
        spec.run(frame, trials[0], features)  # compile
        cached = sum(best(lambda p=p, s=spec, fe=features: s.run(frame, p, fe), args.repeat) for p in trials) / len(trials)
        full = sum(best(lambda p=p, s=spec: s.signals(frame, p), max(1, args.repeat // 2)) for p in trials) / len(trials)
        result[name] = {"features_s": feat_s, "cached_s": cached, "full_s": full, "ratio": full / cached,
                        "cached_evals_per_s": 1.0 / cached}
        print(f"{name:18} {feat_s:10.3f} {cached * 1e3:10.1f} {full * 1e3:9.1f} {full / cached:7.1f} "
              f"{1.0 / cached:8.1f}")
    ok = all(r["cached_evals_per_s"] >= 10 for r in result.values())
    print(json.dumps({"bench": "strategies", "bars": len(frame), "target_met": ok, "strategies": result}))


if __name__ == "__main__":
    main()
