"""Walk-forward optimisation end to end on real data and on a random walk: OOS numbers only from OOS
bars, reproducibility across runs and worker counts, SIGKILL + resume, the overfit search failing the
gates, and the command line (JSON line, config fragment, --write-config keeping comments, bad input)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from backtests.engines import run_backtest
from backtests.metrics import period_returns, sharpe_ratio
from backtests.optimize import adapter
from backtests.optimize import study as S
from backtests.optimize import walkforward as W
from backtests.optimize.objective import Evaluator, directions
from bot.config import Config
from strategies.features.indicators import ema

REPO = Path(__file__).resolve().parents[2]


# -- a small strategy following the contract (EMA cross), fast enough for many trials ----------------


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class CrossParams:
    fast: int = 10
    slow: int = 50
    band: float = 0.0


def cross_signals(frame: pd.DataFrame, p: CrossParams) -> pd.DataFrame:
    c = frame["close"]
    gap = ema(c, p.fast) / ema(c, p.slow) - 1.0
    target = np.where(gap > p.band, 1.0, np.where(gap < -p.band, -1.0, 0.0))
    target[: p.slow] = 0.0
    return pd.DataFrame({"target": target, "stop": np.nan, "take_profit": np.nan}, index=frame.index)


def cross_suggest(trial: optuna.Trial) -> CrossParams:
    return CrossParams(fast=trial.suggest_int("fast", 3, 40), slow=trial.suggest_int("slow", 45, 200),
                       band=trial.suggest_float("band", 0.0, 0.01))


CROSS = types.SimpleNamespace(name="ema_cross", Params=CrossParams, signals=cross_signals, suggest=cross_suggest,
                              warmup=lambda p: p.slow + 1)


def random_walk(days: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = days * 24
    idx = pd.date_range("2023-01-01", periods=n, freq="1h", tz="UTC", name="time")
    close = 30000 * np.exp(np.cumsum(rng.normal(0, 0.006, n)))
    opn = np.r_[close[0], close[:-1]]
    wig = np.abs(rng.normal(0, 0.002, n)) * close
    return pd.DataFrame({"open": opn, "high": np.maximum(opn, close) + wig, "low": np.minimum(opn, close) - wig,
                         "close": close, "volume": rng.uniform(100, 200, n)}, index=idx)


def optimise(frame, strategy, settings, url, name="t", workers=1, check_engine=None, cfg=None):
    cfg = cfg or Config()
    strat = adapter.resolve(strategy)
    folds = W.plan_folds(frame, "1h", strat, settings, None)
    meta = W.study_meta(strat, frame, folds, settings, cfg, {"symbol": "test"})
    S.create_or_resume(S.make_storage(url), name, meta, directions(settings.objective), False)
    ev = Evaluator(frame, strat, cfg, settings.engine, settings.objective, settings.n_blocks, settings.min_trades)
    W.run_workers(url, name, ev, strat, folds, settings, workers)
    outcome, check = W.analyse(url, name, ev, strat, folds, settings, check_engine)
    return strat, folds, ev, outcome, check


@pytest.fixture(scope="module")
def sample():
    cfg = Config()
    return adapter.load_dataset(cfg).loc["2025-08-01":]  # three folds of 90 + 3 + 30 days


SMALL = W.Settings(n_trials=6, seed=3, is_days=90, oos_days=30, step_days=30, embargo_days=3, min_trades=3)


def test_oos_metrics_come_only_from_oos_bars(sample, tmp_path):
    strat, folds, ev, out, check = optimise(sample, CROSS, SMALL, f"sqlite:///{tmp_path}/s.db",
                                            check_engine="backtrader")
    assert len(folds) >= 3
    cfg = Config()
    idx = sample.index
    oos_bars = idx[np.concatenate([np.arange(f.oos_start, f.oos_stop) for f in folds])]
    assert out.stitched.index.equals(oos_bars)
    for f in folds:  # no in-sample or embargo bar of a fold is in the curve's own block
        assert not out.stitched.index.isin(idx[f.is_start:f.oos_start]).any() or f.k > 0
        assert idx[f.is_stop] < idx[f.oos_start]  # embargo
    # recompute each OOS block independently from the chosen parameters and chain the growth
    parts, scale = [], 1.0
    for fo in out.folds:
        f = fo.fold
        p = CrossParams(**fo.params)
        lo = f.oos_start - CROSS.warmup(p)
        sig = cross_signals(sample.iloc[lo:f.oos_stop], p).iloc[f.oos_start - lo:]
        res = run_backtest(sample.iloc[f.oos_start:f.oos_stop], sig, cfg.backtest, cfg.risk, engine="fast")
        parts.append(res.equity["equity"] * scale)
        scale *= res.final_equity / res.initial_cash
    again = pd.concat(parts)
    assert np.allclose(again.to_numpy(), out.stitched.to_numpy(), rtol=1e-12)
    rets, periods = period_returns(again, cfg.backtest.initial_cash, "1h")
    assert out.metrics["oos_sharpe"] == pytest.approx(sharpe_ratio(rets, periods), rel=1e-12)
    assert out.metrics["oos_total_return"] == pytest.approx(scale - 1.0, rel=1e-12)
    # the fast and backtrader engines agree on every chosen parameter set
    assert check["agree"] and len(check["folds"]) == len(folds)


def test_same_seed_same_trials_for_any_worker_count(sample, tmp_path):
    runs = []
    for i, workers in enumerate((1, 2)):  # two runs, and the second on two worker processes
        url = f"sqlite:///{tmp_path}/r{i}.db"
        _s, folds, _e, out, _c = optimise(sample, CROSS, SMALL, url, workers=workers)
        storage = S.make_storage(url)
        trials = [[(t.number, t.params, t.values) for t in
                   optuna.load_study(study_name=S.fold_name("t", f.k), storage=storage).trials] for f in folds]
        runs.append((trials, out.best_params, [fo.params for fo in out.folds]))
    assert runs[0] == runs[1]


def test_overfit_search_on_a_random_walk_fails_the_gates(tmp_path):
    frame = random_walk(270, seed=11)
    settings = W.Settings(n_trials=30, seed=1, is_days=120, oos_days=30, step_days=30, embargo_days=1,
                          min_trades=5)
    _s, folds, _e, out, _c = optimise(frame, CROSS, settings, f"sqlite:///{tmp_path}/rw.db")
    gates = {g.name: g for g in out.gates}
    assert out.n_trials == 30 * len(folds)
    assert gates["dsr"].passed is False, gates["dsr"].line()
    assert gates["min_btl"].passed is False
    assert not out.passed


def _cli(*args, cwd: Path, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot", "optimize", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=240, env=env)


CLI_ARGS = ("--strategy", "funding_reversal", "--is-days", "90", "--oos-days", "30", "--step-days", "30",
            "--from", "2025-10-01", "--min-trades", "2", "--seed", "5")  # one fold


def test_cli_json_fragment_report_and_write_config(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text((REPO / "config.toml").read_text())
    proc = _cli(*CLI_ARGS, "--trials", "5", "--json", "--write-config", "--config", str(cfg), "--output-dir",
                str(tmp_path / "res"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("best_params", "n_trials", "oos_sharpe", "wfe", "dsr", "pbo", "gates"):
        assert key in line
    assert set(line["gates"]) >= {"dsr", "pbo", "min_btl", "wfe", "oos_sharpe"}
    assert all("threshold" in g and "pass" in g for g in line["gates"].values())
    assert line["engine_check"]["agree"] is True
    run_dir = Path(line["run_dir"])
    import tomllib

    frag = tomllib.loads((run_dir / "best_params.toml").read_text())
    assert frag["strategies"]["funding_reversal"] == line["best_params"]
    html = (run_dir / "report.html").read_text()
    assert html.count("Plotly=") + html.count("plotly.js v") >= 1 and "Optimisation history" in html
    assert html.count("<script type='text/javascript'>") == 1  # plotly.js once
    written = cfg.read_text()
    assert "# cascade configuration" in written and "# bar size" in written  # comments kept
    assert tomllib.loads(written)["strategies"]["funding_reversal"] == line["best_params"]


def test_cli_bad_input_one_line_exit_2_no_files(tmp_path, capsys, monkeypatch):
    from bot.cli import main

    monkeypatch.chdir(tmp_path)
    for args in (("--objective", "profit"), ("--strategy", "nope"), ("--is-days", "400"),
                 ("--storage", "nonsense")):
        with pytest.raises(SystemExit) as exc:
            main(["optimize", *args, "--output-dir", str(tmp_path / "res")])
        err = capsys.readouterr().err
        assert exc.value.code == 2, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error:"), err
    assert not (tmp_path / "res").exists()
    # a second run with the same settings refuses to touch the study without --resume
    args = ["optimize", *CLI_ARGS, "--trials", "2", "--no-report", "--output-dir", str(tmp_path / "res")]
    with pytest.raises(SystemExit) as first:  # click exits 0 after a successful command
        main(args)
    assert first.value.code in (0, None), capsys.readouterr().err
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1


def _states(db: Path) -> list[tuple[int, int, str]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT study_id, number, state FROM trials ORDER BY study_id, number").fetchall()
    finally:
        con.close()


def _run_until(args, db: Path, n_complete: int, sig: int, cwd: Path) -> int:
    """Start ``cascade optimize args``, send ``sig`` once ``n_complete`` trials are COMPLETE; its exit code."""
    proc = subprocess.Popen([sys.executable, "-m", "bot", "optimize", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    if sum(s == "COMPLETE" for *_x, s in _states(db)) >= n_complete:
                        break
                except sqlite3.Error:
                    pass
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        try:
            code = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:  # never leave a hung process behind
            proc.kill()
            proc.wait(timeout=30)
            raise
    return code


def test_ctrl_c_and_sigkill_mid_study_then_resume_lose_and_duplicate_nothing(tmp_path):
    out = tmp_path / "res"
    args = (*CLI_ARGS, "--trials", "10", "--output-dir", str(out), "--study-name", "kill", "--no-report")
    db = out / "kill" / "study.db"
    assert _run_until(args, db, 3, signal.SIGINT, tmp_path) == 130  # Ctrl-C: "interrupted", exit 130
    after_int = _states(db)
    assert not [x for x in after_int if x[2] in ("RUNNING", "FAIL")]  # Ctrl-C let the running trial finish
    assert _run_until((*args, "--resume"), db, 6, signal.SIGKILL, tmp_path) == -signal.SIGKILL
    before = _states(db)
    n_before = sum(s == "COMPLETE" for *_x, s in before)
    assert n_before >= 6
    resumed = _cli(*args, "--resume", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    storage = S.make_storage(f"sqlite:///{db}")
    meta = S.read_meta(storage, "kill")
    assert n_before < 10 * len(meta["folds"])  # killed mid-study
    for fold in meta["folds"]:
        study = optuna.load_study(study_name=S.fold_name("kill", fold["fold"]), storage=storage)
        trials = study.get_trials()
        finished = [t for t in trials if t.state in S.FINISHED]
        assert len(finished) == 10  # exactly the budget: nothing lost, nothing run twice
        assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING,
                                                     optuna.trial.TrialState.WAITING)]
        numbers = [t.number for t in trials]
        assert numbers == list(range(len(trials)))
        for failed in (t for t in trials if t.state == optuna.trial.TrialState.FAIL):
            retries = [t for t in trials if failed.number in t.system_attrs.get("retry_history", [])]
            if failed.params:  # killed after its first suggest: retried once with the parameters it had drawn
                assert len(retries) == 1 and failed.params.items() <= retries[0].params.items()
            else:  # killed before it drew anything: nothing to retry, its slot is sampled anew
                assert len(retries) <= 1
    # what was finished before each interruption is untouched
    after = {(sid, n): s for sid, n, s in _states(db)}
    assert all(after[(sid, n)] == s for sid, n, s in before if s == "COMPLETE")
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["n_trials"] == 10 * len(meta["folds"])


def test_features_are_computed_once_per_dataset(sample, tmp_path, monkeypatch):
    calls = []

    def features(frame, p):  # parameter-independent part of the EMA cross: log prices
        calls.append(len(frame))
        return np.log(frame["close"])

    def signals(frame, p, features=None):
        assert features is not None and features.index.equals(frame.index)  # sliced with the frame
        return cross_signals(frame, p)

    spec = types.SimpleNamespace(name="ema_cross_f", Params=CrossParams, signals=signals, suggest=cross_suggest,
                                 warmup=lambda p: pd.Timedelta(hours=p.slow + 1), features=features,
                                 feature_params=())
    _s, folds, ev, out, _c = optimise(sample, spec, SMALL, f"sqlite:///{tmp_path}/f.db")
    assert ev.evaluations >= SMALL.n_trials * len(folds)
    assert calls == [len(sample)]  # once, on the whole frame, for every trial, fold and OOS run
    # today's modules: the liquidation map is the cached part of liq_asymmetry / sr_levels
    import strategies.liq_asymmetry as la

    n = []
    real = la.liq_features
    monkeypatch.setattr(la, "liq_features", lambda frame, *a: n.append(1) or real(frame, *a))
    strat = adapter.resolve("liq_asymmetry")
    evl = Evaluator(sample, strat, Config(), "fast", ("sharpe",), 3, 1)
    for seed in range(3):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        evl.evaluate(strat.suggest(study.ask()), len(sample) - 2000, len(sample))
    assert n == [1]


def test_pruned_trials_count_in_the_deflation(sample, tmp_path):
    settings = W.Settings(n_trials=14, seed=4, is_days=90, oos_days=30, step_days=30, embargo_days=3,
                          min_trades=1, n_blocks=8, prune=True)
    strat = adapter.resolve(CROSS)
    frame = sample.loc["2025-10-01":]  # one fold
    folds = W.plan_folds(frame, "1h", strat, settings, None)
    url = f"sqlite:///{tmp_path}/p.db"
    meta = W.study_meta(strat, frame, folds, settings, Config(), {})
    S.create_or_resume(S.make_storage(url), "p", meta, directions(settings.objective), False)
    ev = Evaluator(frame, strat, Config(), "fast", settings.objective, settings.n_blocks, settings.min_trades,
                   prune=True)
    W.run_workers(url, "p", ev, strat, folds, settings)
    out, _ = W.analyse(url, "p", ev, strat, folds, settings, None)
    pruned = sum(o.n_pruned for o in out.folds)
    assert pruned > 0  # WilcoxonPruner stopped some trials after a few sub-blocks
    assert out.n_trials == 14 * len(folds)  # N of the DSR counts them
    study = optuna.load_study(study_name=S.fold_name("p", 0), storage=S.make_storage(url))
    for t in study.get_trials(states=(optuna.trial.TrialState.PRUNED,)):
        assert len(t.intermediate_values) < 8 and t.user_attrs["eval"]["returns"]  # partial series stored


def test_multi_objective_pareto_front_and_report(sample, tmp_path):
    from backtests.optimize import report

    settings = W.Settings(n_trials=12, seed=2, objective=("return", "drawdown"), is_days=90, oos_days=30,
                          step_days=30, embargo_days=3, min_trades=3)
    frame = sample.loc["2025-10-01":]
    url = f"sqlite:///{tmp_path}/mo.db"
    _s, folds, _e, out, _c = optimise(frame, CROSS, settings, url, name="mo")
    study = optuna.load_study(study_name=S.fold_name("mo", 0), storage=S.make_storage(url))
    front = study.best_trials
    chosen = out.folds[0].choice.trial
    assert chosen.number in {t.number for t in front}  # the choice is on the Pareto front
    for t in front:  # nothing on the front is dominated by another finished trial
        for u in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
            assert not (u.values[0] >= t.values[0] and u.values[1] <= t.values[1] and u.values != t.values)
    ratio = lambda t: t.values[0] / max(t.values[1], 1e-9)  # noqa: E731
    assert ratio(chosen) == max(ratio(t) for t in front)
    path = tmp_path / "r.html"
    report.render(path, out, {}, study, "mo", [])
    text = path.read_text()
    assert "Pareto front" in text and "Gates:" in text and "Out-of-sample equity" in text


def test_a_trial_killed_before_its_first_heartbeat_is_failed_and_retried(tmp_path):
    """optuna's stale check skips RUNNING trials without a heartbeat (a worker SIGKILLed between
    creating its trial and the first beat): they are failed here, and retried, instead of a resumed
    study waiting for them forever."""
    import time

    storage = S.make_storage(f"sqlite:///{tmp_path / 'hb.db'}")
    study = optuna.create_study(study_name="hb", storage=storage)
    orphan = study.ask()  # RUNNING, never beats (no heartbeat thread): what the kill leaves behind
    orphan.suggest_float("x", 0.0, 1.0)
    alive = study.ask()
    storage.record_heartbeat(alive._trial_id)  # a live trial beats
    time.sleep(0.2)
    assert S.fail_heartbeatless_trials(study, grace=0.1) == 1
    states = {t.number: t.state for t in study.get_trials()}
    assert states[orphan.number] == optuna.trial.TrialState.FAIL
    assert states[alive.number] == optuna.trial.TrialState.RUNNING
    retry = [t for t in study.get_trials() if orphan.number in t.system_attrs.get("retry_history", [])]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.WAITING
    assert retry[0].params == orphan.params


# -- the fold runner (backtests.optimize.study.run_fold) against optuna's own loop and storage --------


def _rows(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state, t.params, t.values, t.intermediate_values, t.system_attrs,
             t.user_attrs["eval"]["returns"], t.user_attrs["eval"]["block_scores"]) for t in study.get_trials()]


@pytest.mark.parametrize("objective,prune", [(("sharpe",), True), (("return", "drawdown"), False)])
def test_the_fold_runner_draws_and_stores_what_study_optimize_does(tmp_path, objective, prune):
    """The sampler runs on an in-memory mirror of the fold and the trial is written in a few round trips:
    trial for trial, the stored study must be the one optuna's ``study.optimize`` builds with the same
    seeded sampler and pruner (TPE + WilcoxonPruner with pruned trials; NSGA-II with its generations)."""
    frame = random_walk(100, seed=5)
    n, n_blocks, multi = 24, (6 if prune else 3), len(objective) == 2
    strat = adapter.resolve(CROSS)
    fold = W.plan_folds(frame, "1h", strat, W.Settings(walk_forward=False), None)[0]
    ev = Evaluator(frame, strat, Config(), "fast", objective, n_blocks, 1, prune=prune)
    storage = S.make_storage(f"sqlite:///{tmp_path / 'm.db'}")
    optuna.create_study(study_name="m", storage=storage, directions=directions(objective))
    study = optuna.load_study(study_name="m", storage=storage, sampler=S.make_sampler(objective, 7, 0, n),
                              pruner=S.make_pruner(prune, multi))
    assert S.run_fold(study, storage, W.make_objective(ev, strat, fold), n) == n
    ref = optuna.create_study(directions=directions(objective), sampler=S.make_sampler(objective, 7, 0, n),
                              pruner=S.make_pruner(prune, multi))
    ref.optimize(W.make_objective(ev, strat, fold), n_trials=n)
    stored = _rows(optuna.load_study(study_name="m", storage=storage))
    assert stored == _rows(ref)
    states = [r[1] for r in stored]
    if prune:
        assert optuna.trial.TrialState.PRUNED in states and optuna.trial.TrialState.COMPLETE in states
    else:
        assert {r[5].get("NSGAIISampler:generation") for r in stored} >= {0, 1}  # its generations kept


def test_workers_sharing_a_fold_keep_the_budget_and_every_series(sample, tmp_path):
    """Two workers on every fold of a SQLite study (what --join does): each sees the other's trials, so
    the budget holds (each may overshoot by one), numbers are unique, and every trial has its series."""
    settings = W.Settings(n_trials=60, seed=1, is_days=90, oos_days=30, step_days=30, embargo_days=3, min_trades=3)
    frame = sample.loc["2025-10-01":]  # one fold
    strat = adapter.resolve(CROSS)
    folds = W.plan_folds(frame, "1h", strat, settings, None)
    url = f"sqlite:///{tmp_path}/j.db"
    meta = W.study_meta(strat, frame, folds, settings, Config(), {})
    S.create_or_resume(S.make_storage(url), "j", meta, directions(settings.objective), False)
    ev = Evaluator(frame, strat, Config(), "fast", settings.objective, settings.n_blocks, settings.min_trades)
    W.run_workers(url, "j", ev, strat, folds, settings, workers=2, join=True)
    trials = optuna.load_study(study_name=S.fold_name("j", 0), storage=S.make_storage(url)).get_trials()
    finished = [t for t in trials if t.state in S.FINISHED]
    assert 60 <= len(finished) <= 62 and len(finished) == len(trials)  # each worker may overshoot by one
    assert [t.number for t in trials] == list(range(len(trials)))
    assert all(len(t.user_attrs["eval"]["returns"]) == len(finished[0].user_attrs["eval"]["returns"]) > 0
               for t in finished)
    assert len({t.user_attrs["eval"]["worker"] for t in finished}) == 2


class _SlowObjective:
    def suggest(self, trial: optuna.Trial) -> float:
        return trial.suggest_float("x", 0.0, 1.0)

    def evaluate(self, x: float, trial: optuna.Trial) -> float:
        time.sleep(60)  # killed long before
        return x


def _slow_worker(url: str) -> None:
    storage = S.make_storage(url, heartbeat=1, grace=2)
    study = optuna.load_study(study_name="hb", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    S.run_fold(study, storage, _SlowObjective(), 1)


def test_a_long_trial_beats_so_optunas_stale_check_fails_and_retries_it(tmp_path):
    """One heartbeat thread per worker beats for the running trial: when the worker is SIGKILLed, optuna's
    own stale-trial check (which ignores trials that never beat) fails the trial and the retry callback
    enqueues it with its parameters."""
    import multiprocessing
    import warnings

    url = f"sqlite:///{tmp_path / 'hb.db'}"
    storage = S.make_storage(url, heartbeat=1, grace=2)
    study = optuna.create_study(study_name="hb", storage=storage)
    proc = multiprocessing.get_context("fork").Process(target=_slow_worker, args=(url,))
    proc.start()
    try:
        deadline = time.monotonic() + 60
        while not study.get_trials(states=(optuna.trial.TrialState.RUNNING,)) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.8)  # the running trial's first beat comes within one interval (1 s)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=30)
    time.sleep(2.5)  # past the grace period since the last beat
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    killed, retry = study.get_trials()
    assert killed.state == optuna.trial.TrialState.FAIL and retry.state == optuna.trial.TrialState.WAITING
    assert retry.params == killed.params and retry.system_attrs["retry_history"] == [killed.number]
