"""Warm start (bot/warm.py): the real ``python -m bot`` against a real warm server, forked per command.

Every test gets its own server (a private ``CASCADE_WARM_TEST`` value is part of the identity) and
stops it at the end. What is proven: a warm run's output files and terminal text equal the cold
run's; the worker has the caller's working directory, environment, umask and arguments; exit codes,
Ctrl-C, SIGTERM, death by a signal and a killed caller behave as in one process; two commands at
once; a changed source file or environment gives another server; idle servers exit; another user's
connection is refused; ``CASCADE_WARM=0`` starts nothing.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import warm

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "backtests" / "sample_data"
EXAMPLE = REPO / "examples" / "ema_cross.py"
SHORT = ["--from", "2025-06-01", "--to", "2025-06-15"]  # two weeks of the sample's 1h bars

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract UNIX sockets")

PROBE = '''
import json, os, signal, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic.dataclasses import dataclass

from strategies.base import StrategySpec


@dataclass(frozen=True)
class Params:
    pass


def signals(frame, p, features=None):
    mask = os.umask(0)
    os.umask(mask)
    Path(os.environ["WARM_PROBE"]).write_text(json.dumps({
        "pid": os.getpid(), "cwd": os.getcwd(), "argv": sys.argv, "umask": mask,
        "value": os.environ.get("WARM_PROBE_VALUE"), "stdin": sys.stdin.read()}))
    action = os.environ.get("WARM_PROBE_ACTION", "")
    if action == "sleep":
        time.sleep(120)
    elif action == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return pd.DataFrame({"target": 0.0, "stop": np.nan, "take_profit": np.nan}, index=frame.index)


SPEC = StrategySpec(name="probe", Params=Params, signals=signals, description="test probe")
'''


def _stop_new(before: set[str]) -> None:
    for info in warm.servers():
        if info["key"] not in before:
            warm.control(info["key"], "stop")


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    """The environment of a caller with warm start on and a server of its own; stopped afterwards."""
    before = {info["key"] for info in warm.servers()}
    yield {**os.environ, "CASCADE_WARM": "1", "CASCADE_WARM_TEST": uuid.uuid4().hex, "CASCADE_WARM_IDLE": "120",
           "COLUMNS": "120"}
    _stop_new(before)


def cascade(*args: str, env: dict[str, str], cwd: Path = REPO, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=env, input=stdin, capture_output=True,
                          text=True, timeout=180)


def start(*args: str, env: dict[str, str], cwd: Path = REPO) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bot", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def server_for(env: dict[str, str], cwd: Path = REPO, timeout: float = 60.0) -> dict:
    """The status of the server started for ``env`` and ``cwd`` (waits until it has imported and answers)."""
    key = _key(env, cwd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for info in warm.servers():
            if info["key"] == key:
                return info
        time.sleep(0.1)
    raise AssertionError(f"no warm server started for {key}; running: {warm.servers()}")


def _key(env: dict[str, str], cwd: Path = REPO) -> str:
    """The identity ``python -m bot`` computes in ``cwd`` with ``env`` (``-c`` has the same sys.path there)."""
    code = "from bot import warm; print(warm.identity())"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def backtest_args(out: Path, *extra: str) -> list[str]:
    return ["backtest", "--strategy", str(EXAMPLE), "--engine", "fast", *SHORT, "--no-report", "--json",
            "--data-dir", str(SAMPLE), "--output-dir", str(out), *extra]


def _without_run_folder(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("run folder:")]


def test_warm_run_equals_the_cold_run(env: dict[str, str], tmp_path: Path) -> None:
    cold = cascade(*backtest_args(tmp_path / "cold"), env=env)  # no server yet: runs here, starts one
    assert cold.returncode == 0, cold.stderr
    assert server_for(env)["served"] == 0
    hot = cascade(*backtest_args(tmp_path / "warm"), env=env)
    assert hot.returncode == 0, hot.stderr
    assert server_for(env)["served"] == 1
    summary = {k: v for k, v in json.loads(cold.stdout).items() if k not in ("run_id", "run_dir")}
    assert {k: v for k, v in json.loads(hot.stdout).items() if k not in ("run_id", "run_dir")} == summary
    assert _without_run_folder(hot.stderr) == _without_run_folder(cold.stderr)
    (cold_dir,), (warm_dir,) = (list((tmp_path / d).iterdir()) for d in ("cold", "warm"))
    for name in ("trades.csv", "stats.json", "equity.parquet"):
        assert (warm_dir / name).read_bytes() == (cold_dir / name).read_bytes(), name


def test_warm_liqmap_and_strategies_equal_the_cold_ones(env: dict[str, str], tmp_path: Path) -> None:
    liqmap = ["liqmap", "--from", "2025-06-01", "--to", "2025-06-08", "--json", "--data-dir", str(SAMPLE)]
    cold = cascade(*liqmap, "--output", str(tmp_path / "cold.html"), env=env)
    assert cold.returncode == 0, cold.stderr
    server_for(env)
    hot = cascade(*liqmap, "--output", str(tmp_path / "warm.html"), env=env)
    assert hot.returncode == 0, hot.stderr
    assert json.loads(hot.stdout.splitlines()[-1]) == json.loads(cold.stdout.splitlines()[-1].replace("cold.html",
                                                                                                     "warm.html"))
    uuid_pattern = rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # plotly's div ids: random
    html = [re.sub(uuid_pattern, b"ID", (tmp_path / f"{name}.html").read_bytes()) for name in ("cold", "warm")]
    assert html[0] == html[1]
    strategies = [cascade("strategies", "--json", env=env) for _ in range(2)]
    assert strategies[0].returncode == 0 and strategies[0].stdout == strategies[1].stdout
    assert server_for(env)["served"] == 3


def test_worker_takes_the_callers_directory_environment_umask_and_stdin(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE)
    env = {**env, "WARM_PROBE": str(tmp_path / "probe.json")}
    args = ["backtest", "--strategy", "probe.py", "--engine", "fast", *SHORT, "--no-report", "--data-dir",
            str(SAMPLE), "--output-dir", "out"]
    assert cascade(*args, env=env, cwd=tmp_path).returncode == 0
    server_for(env, tmp_path)
    env["WARM_PROBE_VALUE"] = "only-in-this-call"  # not part of the identity: the same server runs it
    old = os.umask(0o027)
    try:
        hot = cascade(*args, env=env, cwd=tmp_path, stdin="piped text")
    finally:
        os.umask(old)
    assert hot.returncode == 0, hot.stderr
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert server_for(env, tmp_path)["served"] == 1
    assert probe["cwd"] == str(tmp_path) and probe["value"] == "only-in-this-call" and probe["umask"] == 0o027
    assert probe["argv"][1:] == args and probe["stdin"] == "piped text"
    assert len(list((tmp_path / "out").iterdir())) == 2  # relative --output-dir: the caller's folder


def test_errors_and_usage_are_the_same_warm(env: dict[str, str], tmp_path: Path) -> None:
    bad = ["backtest", "--symbol", "NOPE/USDT:USDT", "--data-dir", str(SAMPLE), "--output-dir", str(tmp_path)]
    cold = cascade(*bad, env=env)
    server_for(env)
    hot = cascade(*bad, env=env)
    assert cold.returncode == hot.returncode == 2
    assert hot.stderr == cold.stderr and len(hot.stderr.strip().splitlines()) == 1 and "Traceback" not in hot.stderr
    usage = cascade("backtest", "--no-such-flag", env=env)
    assert usage.returncode == 2 and "Usage: python -m bot backtest [OPTIONS]" in usage.stderr
    assert server_for(env)["served"] == 2
    assert not list(tmp_path.iterdir())


def _sleeping_command(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen[str], int, dict[str, str],
                                                                     list[str]]:
    """A warm command whose strategy sleeps: (its caller, the worker's pid, the env and args used).

    A first (cold) run of the same command starts the server and is waited for.
    """
    (tmp_path / "probe.py").write_text(PROBE)
    env = {**env, "WARM_PROBE": str(tmp_path / "probe.json")}
    args = ["backtest", "--strategy", "probe.py", *SHORT, "--no-report", "--data-dir", str(SAMPLE),
            "--output-dir", "out"]
    assert cascade(*args, env=env, cwd=tmp_path).returncode == 0
    server_for(env, tmp_path)
    (tmp_path / "probe.json").unlink()
    client = start(*args, env={**env, "WARM_PROBE_ACTION": "sleep"}, cwd=tmp_path)
    return client, _probe_pid(tmp_path / "probe.json"), env, args


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_reach_the_worker(env: dict[str, str], tmp_path: Path, sig: int, code: int) -> None:
    client, worker, env, args = _sleeping_command(env, tmp_path)
    client.send_signal(sig)
    _, err = client.communicate(timeout=30)
    assert client.returncode == code and err.strip().endswith("interrupted")
    _gone(worker)
    assert len(list((tmp_path / "out").iterdir())) == 1  # the interrupted run left no folder


def test_a_killed_caller_stops_its_command_and_a_killed_worker_kills_the_caller(env: dict[str, str],
                                                                                tmp_path: Path) -> None:
    client, worker, env, args = _sleeping_command(env, tmp_path)
    client.kill()
    client.wait(timeout=10)
    _gone(worker)
    died = cascade(*args, env={**env, "WARM_PROBE_ACTION": "die"}, cwd=tmp_path)
    assert died.returncode == -signal.SIGKILL
    assert server_for(env, tmp_path)["running"] == 0


def test_ctrl_z_stops_the_worker_and_fg_resumes_it(env: dict[str, str], tmp_path: Path) -> None:
    client, worker, env, args = _sleeping_command(env, tmp_path)
    client.send_signal(signal.SIGTSTP)
    _wait_state(client.pid, "T")
    _wait_state(worker, "T")
    client.send_signal(signal.SIGCONT)  # what the shell's fg does
    _wait_state(worker, "S")
    client.send_signal(signal.SIGTSTP)
    _wait_state(client.pid, "T")
    _wait_state(worker, "T")
    client.send_signal(signal.SIGCONT)  # and Ctrl-C at once: it arrives while fg's handler runs
    client.send_signal(signal.SIGINT)
    assert client.wait(timeout=30) == 130


def _wait_state(pid: int, state: str) -> None:
    """Wait until ``/proc/<pid>/stat`` shows ``state`` (T stopped, S sleeping)."""
    deadline = time.monotonic() + 15
    while (now := Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != state:
        assert time.monotonic() < deadline, f"process {pid} is {now}, not {state}"
        time.sleep(0.05)


def test_two_commands_at_once(env: dict[str, str], tmp_path: Path) -> None:
    assert cascade(*backtest_args(tmp_path / "first"), env=env).returncode == 0
    server_for(env)
    clients = [start(*backtest_args(tmp_path / f"run{i}"), env=env) for i in range(2)]
    outs = [c.communicate(timeout=120) for c in clients]
    assert [c.returncode for c in clients] == [0, 0], outs
    trades = {(next((tmp_path / f"run{i}").iterdir()) / "trades.csv").read_bytes() for i in range(2)}
    assert trades == {(next((tmp_path / "first").iterdir()) / "trades.csv").read_bytes()}
    assert server_for(env)["served"] == 2


def test_identity_follows_sources_and_import_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    package = tmp_path / "bot"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(warm, "_package_roots", lambda: [package])
    base = {"PATH": "/usr/bin", "CASCADE_X": "1"}
    first = warm.identity(base)
    assert warm.identity({**base, "PATH": "/bin", "TERM": "xterm"}) == first  # read at run time, not import
    assert warm.identity({**base, "CASCADE_X": "2"}) != first
    assert warm.identity({**base, "PYTHONHASHSEED": "0"}) != first
    st = (package / "a.py").stat()
    os.utime(package / "a.py", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = warm.identity(base)
    assert second != first
    (package / "b.py").write_text("")
    assert warm.identity(base) not in (first, second)
    second = warm.identity(base)
    assert warm.identity(base, path=["/nowhere"]) != warm.identity(base)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft // 2, 64), hard))  # a server inherits the limits
    try:
        assert warm.identity(base) != second
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_idle_server_exits_and_off_starts_none(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "CASCADE_WARM_IDLE": "4"}
    assert cascade(*backtest_args(tmp_path / "a"), env=env).returncode == 0
    key = server_for(env)["key"]
    deadline = time.monotonic() + 30
    while any(info["key"] == key for info in warm.servers()):
        assert time.monotonic() < deadline, "an idle server did not exit"
        time.sleep(0.2)
    off = {**env, "CASCADE_WARM": "0"}
    assert cascade(*backtest_args(tmp_path / "b"), env=off).returncode == 0
    time.sleep(1.0)
    assert not any(info["key"] == _key(off) for info in warm.servers())


def test_status_and_stop_command(env: dict[str, str], tmp_path: Path) -> None:
    assert cascade(*backtest_args(tmp_path), env=env).returncode == 0
    info = server_for(env)
    listed = json.loads(cascade("warm", "--json", env=env).stdout)
    assert any(s["key"] == info["key"] and s["checkout"] == str(REPO) for s in listed)
    assert "serving" in cascade("warm", env=env).stdout
    cascade("warm", "--stop", env=env)
    _gone(info["pid"])


OTHER_PYTHON = shutil.which("python3", path="/usr/bin:/bin")  # one the user 'nobody' may run (not under /root)


@pytest.mark.skipif(os.getuid() != 0 or OTHER_PYTHON is None, reason="needs root (and a system python3) to "
                    "connect as another user")
def test_another_users_connection_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    assert cascade(*backtest_args(tmp_path), env=env).returncode == 0
    info = server_for(env)
    name = f"cascade-warm-{os.getuid()}-{info['key']}"  # abstract: the child prepends the NUL
    code = ("import socket, struct, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0' + sys.argv[1])\n"
            "body = b'{\"control\": \"status\"}'\ns.sendall(struct.pack('!I', len(body)) + body)\n"
            "try:\n    print(repr(s.recv(100)))\nexcept ConnectionResetError:\n    print(repr(b''))")
    done = subprocess.run([OTHER_PYTHON, "-I", "-c", code, name], user=65534, capture_output=True, text=True,
                          timeout=30, cwd="/")
    assert done.stdout.strip() == "b''", done
    assert server_for(env)["served"] == 0


def _probe_pid(path: Path) -> int:
    deadline = time.monotonic() + 60
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    return json.loads(path.read_text())["pid"]


def _gone(pid: int) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.05)


def test_a_request_sent_whole_sends_nothing_more() -> None:
    """A server may answer and close as soon as it has the request: a trailing empty send would raise EPIPE."""
    class Sock:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def sendmsg(self, buffers, ancillary):
            self.sent.append(buffers[0])
            return len(buffers[0])

        def sendall(self, data):
            raise BrokenPipeError(32, "Broken pipe")

    sock = Sock()
    warm._send(sock, {"control": "status"})  # type: ignore[arg-type]
    assert sock.sent == [b'\x00\x00\x00\x15{"control": "status"}']
