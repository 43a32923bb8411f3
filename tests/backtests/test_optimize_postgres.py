"""Many workers on one study through optuna's RDB storage on a real PostgreSQL server, started here on
loopback from the Debian ``postgresql`` package (initdb/pg_ctl into a temporary folder). Skipped, with
the reason, where those binaries are absent; ``.ci/run`` installs them."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from backtests.optimize import study as S

BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    if not BINS or not os.path.exists(os.path.join(BINS[-1], "initdb")):
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin "
                    "(apt-get install postgresql; .ci/run does this)")
    bin_dir = BINS[-1]
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the package's user
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run the server as")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="cascade-pg-", dir="/tmp"))
    if prefix:
        shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()
    run = lambda *a: subprocess.run([*prefix, *a], check=True, capture_output=True, timeout=120)  # noqa: E731
    run(f"{bin_dir}/initdb", "-D", str(data), "-U", "cascade", "--auth=trust", "-E", "UTF8")
    run(f"{bin_dir}/pg_ctl", "-D", str(data), "-w", "-l", str(root / "log"), "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=50", "start")
    try:
        run(f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "cascade", "opt")
        yield f"postgresql+psycopg2://cascade@127.0.0.1:{port}/opt"
    finally:
        subprocess.run([*prefix, f"{bin_dir}/pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


ARGS = ("--strategy", "funding_reversal", "--is-days", "90", "--oos-days", "30", "--step-days", "30",
        "--from", "2025-09-01", "--min-trades", "2", "--seed", "2", "--no-report")


def test_two_workers_and_a_joining_process_share_one_study(postgres_url, tmp_path):
    n_trials = 300  # enough work (a few seconds) for the joining process to start and take part
    cmd = [sys.executable, "-m", "bot", "optimize", *ARGS, "--trials", str(n_trials), "--storage", postgres_url,
           "--workers", "2", "--study-name", "pg", "--output-dir", str(tmp_path / "res"), "--json"]
    main = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = S.make_storage(postgres_url)
    deadline = time.monotonic() + 120
    while S.read_meta(storage, "pg") is None and time.monotonic() < deadline and main.poll() is None:
        time.sleep(0.2)
    try:
        joiner = subprocess.run([sys.executable, "-m", "bot", "optimize", "--join", "pg", "--storage",
                                 postgres_url, "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        out, err = main.communicate(timeout=300)
    finally:
        if main.poll() is None:  # never leave a worker behind
            main.kill()
            main.wait(timeout=30)
    assert main.returncode == 0, err
    assert joiner.returncode == 0, joiner.stderr
    joined = json.loads(joiner.stdout.strip().splitlines()[-1])
    line = json.loads(out.strip().splitlines()[-1])
    meta = S.read_meta(storage, "pg")
    per_worker: Counter[str] = Counter()
    total = 0
    for fold in meta["folds"]:
        trials = optuna.load_study(study_name=S.fold_name("pg", fold["fold"]), storage=storage).get_trials()
        finished = [t for t in trials if t.state in S.FINISHED]
        # every worker stops at the budget; concurrent ones may each overshoot by at most one trial
        assert n_trials <= len(finished) <= n_trials + 2
        assert [t.number for t in trials] == list(range(len(trials)))  # no number twice, none skipped
        assert not [t for t in trials if t.state not in S.FINISHED]
        per_worker.update(t.user_attrs["eval"]["worker"] for t in finished)
        total += len(finished)
    assert line["n_trials"] == total == sum(per_worker.values())  # the counts add up
    assert len(per_worker) >= 3  # two local worker processes and the joining one
    joiner_counts = [c for w, c in per_worker.items() if w.endswith(f":{_pid_of(joined)}")]
    assert joined["trials_run"] >= 1 and joiner_counts == [joined["trials_run"]]


def _pid_of(joined: dict) -> int:
    return joined["pid"]
