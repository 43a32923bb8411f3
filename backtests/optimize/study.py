"""Studies on optuna's RDB storage: SQLite by default, PostgreSQL for many workers and machines.

An optimisation named ``NAME`` is a group of optuna studies in one storage: ``NAME`` itself holds the
metadata (strategy, data selection and hash, folds, objective, seed, config snapshot, code commit:
everything a joining worker needs) and ``NAME.foldKK`` is fold K's study over its in-sample window.

Consistency (what a Ctrl-C or a SIGKILL leaves behind):

* every trial is a row of optuna's storage, numbered by it, created RUNNING with its parameters before
  it is evaluated; its return series is written before its final state: nothing is lost or numbered
  twice, and a finished trial always has its series;
* running trials send heartbeats; a trial whose worker died (SIGKILL) goes stale and is marked FAIL by
  ``optuna.storages.fail_stale_trials`` (or by :func:`fail_heartbeatless_trials` if it died before
  its first beat), and ``RetryHeartbeatStaleTrialCallback`` enqueues a copy with the same parameters,
  which the next worker runs;
* Ctrl-C lets the running trial finish and stops (:func:`graceful_interrupt`); a trial that failed
  any other way without a retry is re-enqueued when the optimisation resumes (:func:`requeue_interrupted`);
* budgets count finished trials (COMPLETE + PRUNED) and reserve running/waiting ones, so a resumed
  study runs exactly the missing trials (concurrent workers may overshoot by at most one trial each).

Reproducibility: fold K's sampler is seeded with ``seed·1000 + K``; with local ``--workers N`` each fold
is run start to finish by one worker (worker w takes folds w, w+N, …), so the trials and the chosen
parameters do not depend on N. Workers joining from elsewhere (``--join``) add trials to every
unfinished fold: counts still add up, but the order TPE sees them in depends on timing.

Speed: :func:`run_fold` drives the trials itself with optuna's public storage API rather than
``study.optimize``, whose bookkeeping (each parameter written in its own transaction, the history
read again for every suggestion, a heartbeat thread started per trial) cost more than the evaluation.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

# heartbeats and stale-trial retry are marked experimental by optuna; they are what we rely on
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module=r"optuna\..*")
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module=__name__)

HEARTBEAT_SECONDS = 2
GRACE_SECONDS = 6
MAX_RETRY = 3
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class StudyError(Exception):
    """A study exists when it should not, is missing, or does not match the request."""


def make_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS, grace: int = GRACE_SECONDS) -> RDBStorage:
    """optuna's RDB storage at ``url`` with heartbeats and retry of failed (stale) trials."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}  # several local workers share one file
    else:
        kwargs = {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat, grace_period=grace,
                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
    if url.startswith("sqlite"):
        _sqlite_wal(storage)
    return storage


def _sqlite_wal(storage: RDBStorage) -> None:
    """Write-ahead log with ``synchronous=NORMAL``: readers do not block the writer and a commit costs no
    fsync of the main file. Still atomic and consistent after a process crash or SIGKILL (a power cut
    may lose the last commits, never corrupt the file)."""
    from sqlalchemy import event

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # connections opened while creating the tables pick the pragmas up again


def fold_name(name: str, k: int) -> str:
    """The optuna study of fold ``k`` of optimisation ``name``."""
    return f"{name}.fold{k:02d}"


def read_meta(storage: RDBStorage, name: str) -> dict[str, Any] | None:
    """The metadata of optimisation ``name`` (None when it does not exist)."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None
    raw = study.user_attrs.get("cascade")
    return json.loads(raw) if isinstance(raw, str) else None


IDENTITY_KEYS = ("strategy", "data", "data_hash", "folds", "objective", "seed", "n_blocks", "min_trades",
                 "dd_weight", "engine", "trading")


def create_or_resume(storage: RDBStorage, name: str, meta: dict[str, Any], directions: list[str],
                     resume: bool) -> dict[str, Any]:
    """Create optimisation ``name`` (meta + one study per fold) or check it matches ``meta`` on resume.

    Raises:
        StudyError: exists without ``resume``, missing with ``resume``, or a different experiment.
    """
    old = read_meta(storage, name)
    if old is not None and not resume:
        raise StudyError(f"study '{name}' already exists in {_safe_url(storage)}; pass --resume to continue it "
                         "or --study-name NEW to start another")
    if old is None and resume and name in optuna.get_all_study_names(storage):
        raise StudyError(f"'{name}' in {_safe_url(storage)} is not a cascade optimisation")
    if old is not None:
        diff = [k for k in IDENTITY_KEYS if json.dumps(old.get(k), sort_keys=True) != json.dumps(
            meta.get(k), sort_keys=True)]
        if diff:
            raise StudyError(f"study '{name}' was started with different {', '.join(diff)}; resume it with the "
                             "same settings or pass --study-name NEW")
        if meta.get("n_trials", 0) > old.get("n_trials", 0):  # resuming with a larger budget extends it
            old["n_trials"] = meta["n_trials"]
            optuna.load_study(study_name=name, storage=storage).set_user_attr("cascade", json.dumps(old))
        return old
    head = optuna.create_study(study_name=name, storage=storage, directions=directions)
    for fold in meta["folds"]:
        optuna.create_study(study_name=fold_name(name, fold["fold"]), storage=storage, directions=directions)
    head.set_user_attr("cascade", json.dumps(meta))  # written last: a half-created group is not "resumable"
    return meta


def redact(url: str) -> str:
    """``url`` without its user and password (never printed or written)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://…@{rest.rsplit('@', 1)[1]}"
    return url


def _safe_url(storage: RDBStorage) -> str:
    return redact(str(storage.url))


def make_sampler(objective: tuple[str, ...], seed: int, k: int, n_trials: int) -> optuna.samplers.BaseSampler:
    """TPE (single objective) or NSGA-II (``return,drawdown``), seeded per fold."""
    s = int(seed) * 1000 + int(k)
    if len(objective) == 2:
        return optuna.samplers.NSGAIISampler(seed=s, population_size=max(4, min(50, n_trials // 4)))
    return optuna.samplers.TPESampler(seed=s, n_startup_trials=max(1, min(10, n_trials // 4)))


def make_pruner(enabled: bool, multi: bool) -> optuna.pruners.BasePruner:
    """optuna's WilcoxonPruner over the in-sample sub-blocks (off for multi-objective)."""
    if enabled and not multi:
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
    return optuna.pruners.NopPruner()


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state name."""
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def requeue_interrupted(study: optuna.Study) -> int:
    """Re-enqueue FAIL trials that have no retry yet (Ctrl-C marks a trial FAIL without one)."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    cb = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    n = 0
    for t in trials:
        if t.state == TrialState.FAIL and t.number not in retried and t.params:
            cb(study, t)
            n += 1
    return n


STOP = threading.Event()
"""Set by the first Ctrl-C inside :func:`graceful_interrupt`: workers finish their trial and stop."""


@contextmanager
def graceful_interrupt() -> Iterator[threading.Event]:
    """Turn Ctrl-C into "finish the running trial, then stop" (a second Ctrl-C exits at once, leaving
    a running trial that goes stale and is retried on resume). A KeyboardInterrupt raised in the
    middle of optuna's bookkeeping could leave its heartbeat thread running; this avoids that."""
    STOP.clear()
    if threading.current_thread() is not threading.main_thread():
        yield STOP
        return

    def handler(_sig: int, _frame: Any) -> None:
        if STOP.is_set():
            os._exit(130)
        STOP.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield STOP
    finally:
        signal.signal(signal.SIGINT, previous)


class FoldObjective(Protocol):
    """A trial in two steps, so that its storage row (with the parameters) exists before it runs."""

    def suggest(self, trial: optuna.Trial) -> Any:
        """Draw the trial's parameters."""

    def evaluate(self, params: Any, trial: optuna.Trial) -> float | Sequence[float]:
        """Score them (may report to ``trial`` and raise ``optuna.TrialPruned``)."""


class _Heartbeat:
    """One thread per worker that records a heartbeat every ``heartbeat_interval`` seconds for the trial
    the worker is running (optuna's ``study.optimize`` starts and joins a thread per trial, and beats
    at its start: with trials of a few milliseconds that is a write per trial for nothing).

    A trial shorter than the interval may finish without a heartbeat; if its worker is killed first,
    :func:`fail_heartbeatless_trials` fails and retries it after the grace period, as optuna's stale
    check does for a trial whose heartbeats stopped.
    """

    def __init__(self, storage: RDBStorage) -> None:
        self.storage = storage
        self.interval = storage.get_heartbeat_interval()
        self.current: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Heartbeat:
        if self.interval:
            self._thread = threading.Thread(target=self._run, name="cascade-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.current = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def beat(self, trial_id: int) -> None:
        """``trial_id`` is running: beat for it until :meth:`idle`."""
        self.current = trial_id

    def idle(self) -> None:
        self.current = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            trial_id = self.current
            if trial_id is not None:
                self.storage.record_heartbeat(trial_id)  # a beat just after the trial ended is harmless


def _mirror_copy(t: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    """What a sampler or pruner reads of a finished trial (its attributes stay in the storage)."""
    return optuna.trial.create_trial(state=t.state, values=t.values, params=t.params, distributions=t.distributions,
                                     system_attrs=t.system_attrs, intermediate_values=t.intermediate_values)


@dataclass
class _View:
    """A fold's trial counts as of the last read, advanced by this worker's own trials."""

    total: int = 0
    finished: int = 0
    running: int = 0
    waiting: int = 0
    exact: bool = False  # no other worker can have changed it since (see run_fold)


def _read(study: optuna.Study, mirror: optuna.Study, mirrored: set[int]) -> _View:
    """The fold's counts; new finished trials of other workers are added to the mirror."""
    view = _View()
    for t in study.get_trials(deepcopy=False):  # optuna's cache fetches only new and unfinished rows
        view.total += 1
        if t.state in FINISHED:
            view.finished += 1
            if t.number not in mirrored:
                mirror.add_trial(_mirror_copy(t))
                mirrored.add(t.number)
        elif t.state == TrialState.RUNNING:
            view.running += 1
        elif t.state == TrialState.WAITING:
            view.waiting += 1
    return view


def run_fold(study: optuna.Study, storage: RDBStorage, objective: FoldObjective, n_trials: int,
             on_trial: Callable[[], None] | None = None, poll: float = 0.5) -> int:
    """Run trials on ``study`` (kept in ``storage``) until it holds ``n_trials`` finished ones; return
    how many ran here.

    The budget counts finished, running and waiting trials (so a resumed study runs exactly the missing
    trials, and concurrent workers overshoot by at most one trial each):

    * waiting (retried) trials run first, through ``study.ask``/``study.tell`` (they carry their
      parameters);
    * otherwise the study's sampler draws the parameters on an in-memory **mirror** of the study's
      finished trials (their parameters, values, intermediate values and system attributes, in
      order, so it draws what it would draw on the storage itself), the trial is created in the
      storage as RUNNING with those parameters in one transaction and beats while it runs, and its
      attributes (the return series), intermediate values and final state are written when it ends:
      a few storage round trips per trial instead of optuna's dozen (each parameter, each read of the
      history, a heartbeat thread per trial);
    * while only other workers' (or dead workers') trials are running it waits, failing stale ones so
      that their retries can run here.

    The counts come from reading the fold's trials, except while this worker has the fold to itself:
    trials are numbered in creation order, so when this worker's new trial got the next number after
    its view, and no other worker's trial was running or waiting, nobody else has touched the fold and
    the view advanced by its own trial is exact. Any other number (a trial created elsewhere) sends
    it back to reading before every trial. optuna's stale-trial check runs at most once per heartbeat
    interval (``study.optimize`` runs it before every trial).
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    mirror = optuna.create_study(storage=optuna.storages.InMemoryStorage(), sampler=study.sampler,
                                 pruner=study.pruner, directions=study.directions)
    mirrored: set[int] = set()  # storage trial numbers the mirror holds
    view = _View()
    ran = 0
    fail_heartbeatless_trials(study)  # a resumed fold's dead trials are retried first, not waited for
    with _Heartbeat(storage) as heartbeat:
        checked = -math.inf
        while not STOP.is_set():
            if time.monotonic() - checked >= (heartbeat.interval or 0):  # nothing goes stale faster
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    fail_stale_trials(study)
                checked = time.monotonic()
            if not view.exact:
                view = _read(study, mirror, mirrored)
            if view.waiting:
                _run_waiting(study, storage, study_id, objective, heartbeat)
                view.exact = False
            elif n_trials - view.finished - view.running > 0:
                number, state = _run_mirrored(mirror, storage, study_id, objective, heartbeat, view.total)
                mirrored.add(number)
                view.exact = number == view.total and view.running == 0
                view.total += 1
                view.finished += state in FINISHED
            elif view.running == 0 or view.finished >= n_trials:
                break
            else:
                time.sleep(poll)  # someone's trial is running: it finishes, or goes stale and is retried
                fail_heartbeatless_trials(study)
                view.exact = False
                continue
            ran += 1
            if on_trial is not None:
                on_trial()
    storage.remove_session()
    return ran


def _run_mirrored(mirror: optuna.Study, storage: RDBStorage, study_id: int, objective: FoldObjective,
                  heartbeat: _Heartbeat, expected: int) -> tuple[int, TrialState]:
    """A new trial sampled on the mirror, stored as it runs; returns its number in the storage (the
    ``expected`` one unless another worker created trials meanwhile) and its final state."""
    mt = mirror.ask()
    try:
        params = objective.suggest(mt)
    except BaseException:
        mirror.tell(mt, state=TrialState.FAIL)
        raise
    drawn = mirror.get_trials(deepcopy=False)[mt.number]  # parameters and the sampler's system attributes
    template = optuna.trial.create_trial(state=TrialState.RUNNING, params=drawn.params,
                                         distributions=drawn.distributions, system_attrs=drawn.system_attrs)
    trial_id = storage.create_new_trial(study_id, template_trial=template)
    # a one-row query (optuna's number lookup loads the whole trial)
    number = expected
    if storage.get_trial_id_from_study_id_trial_number(study_id, expected) != trial_id:
        number = storage.get_trial_number_from_id(trial_id)
    heartbeat.beat(trial_id)
    try:
        try:
            values = objective.evaluate(params, mt)
        except optuna.TrialPruned:
            done = mirror.tell(mt, state=TrialState.PRUNED)  # optuna's value of a pruned trial
        else:
            done = mirror.tell(mt, values)  # validated as study.optimize does (NaN -> FAIL)
    except BaseException:
        mirror.tell(mt, state=TrialState.FAIL)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        heartbeat.idle()
        raise
    for key, value in done.user_attrs.items():  # the return series before the state: a COMPLETE
        storage.set_trial_user_attr(trial_id, key, value)  # trial always has its series
    for step, value in done.intermediate_values.items():
        storage.set_trial_intermediate_value(trial_id, step, value)
    storage.set_trial_state_values(trial_id, done.state, done.values)
    heartbeat.idle()
    return number, done.state


def _run_waiting(study: optuna.Study, storage: RDBStorage, study_id: int, objective: FoldObjective,
                 heartbeat: _Heartbeat) -> None:
    """A waiting (retried) trial, through optuna's ask and tell (``ask`` claims it atomically)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with study.optimize": we beat
        trial = study.ask()
    heartbeat.beat(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))
    try:
        try:
            values = objective.evaluate(objective.suggest(trial), trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, values)
    except BaseException:
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        raise
    finally:
        heartbeat.idle()


def fail_heartbeatless_trials(study: optuna.Study, grace: float = GRACE_SECONDS) -> int:
    """Fail RUNNING trials older than ``grace`` seconds that never recorded a heartbeat, and run the
    stale-trial callback on them (their retry); return how many.

    A worker killed before its trial's first heartbeat (most trials finish within one heartbeat
    interval, see :class:`_Heartbeat`) leaves a RUNNING trial that optuna's ``fail_stale_trials`` never
    fails (it skips trials without a heartbeat), so a resumed study would wait for it forever. A live
    trial beats within one heartbeat interval, well inside the grace period.
    """
    from datetime import datetime

    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    storage = getattr(study._storage, "_backend", study._storage)  # optuna wraps RDB in a cache
    if not isinstance(storage, RDBStorage) or not storage.get_heartbeat_interval():
        return 0  # without heartbeats a long live trial has none either
    now = datetime.now()  # optuna stamps datetime_start with the client's local clock, naive
    with _create_scoped_session(storage.scoped_session) as session:
        orphans = [t.trial_id for t in session.query(models.TrialModel)
                   .filter(models.TrialModel.state == TrialState.RUNNING,
                           models.TrialModel.study_id == study._study_id).all()
                   if not t.heartbeats and t.datetime_start is not None
                   and (now - t.datetime_start).total_seconds() > grace]
    failed = []
    for trial_id in orphans:
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker got there first
            pass
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial_id in failed if callback is not None else ():
        callback(study, storage.get_trial(trial_id))
    return len(failed)


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """COMPLETE and PRUNED trials in number order."""
    return [t for t in study.get_trials(deepcopy=False, states=FINISHED)]


def is_finite_values(t: optuna.trial.FrozenTrial) -> bool:
    """A completed trial with finite objective value(s)."""
    return t.values is not None and all(math.isfinite(v) for v in t.values)
