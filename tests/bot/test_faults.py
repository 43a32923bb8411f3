"""Faults: a full disk, a read-only location, SIGTERM/SIGKILL/SIGINT — one line, clean exit, nothing left behind.

Disk full and read-only are real filesystems (a tiny tmpfs, mounted by the test when it runs as
root; otherwise writes fail through a patched ``os.replace``/writer with the same errno).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from bot import interrupts
from bot.atomic import atomic_dir, atomic_path, atomic_write_text, sweep_stale
from bot.cli import main
from bot.data import SAMPLE_DIR
from bot.errors import UserError
from bot.store import DatasetKey, Store

EX, BTC = "binanceusdm", "BTC/USDT:USDT"
OHLCV_1H = DatasetKey(EX, BTC, "ohlcv", "1h")
OHLCV_5M = DatasetKey(EX, BTC, "ohlcv", "5m")
CASCADE = str(Path(sys.executable).parent / "cascade")


def run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code or 0, out, err


def _feather(folder: Path, key: DatasetKey, rows: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame = Store(SAMPLE_DIR).read(key)
    frame = frame if rows is None else frame.iloc[:rows]
    path = folder / f"BTC_USDT_USDT-{key.timeframe}-futures.feather"
    frame.reset_index().rename(columns={"time": "date"}).to_feather(path)
    return path


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()[:80]})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture()
def can_mount() -> bool:
    return os.geteuid() == 0 and sys.platform.startswith("linux")


def test_disk_full_import_is_one_line_and_the_old_file_survives(tmp_path, capsys, can_mount, monkeypatch):
    small = _feather(tmp_path / "small", OHLCV_1H, rows=200)
    big = _feather(tmp_path / "big", OHLCV_5M)  # ~110k rows: does not fit in 256 kB
    data = tmp_path / "disk"
    ctx = tmpfs(data, "size=256k") if can_mount else contextlib.nullcontext(data)
    with ctx:
        assert run(["import-data", str(small), "--exchange", EX, "--data-dir", str(data)], capsys)[0] == 0
        old = Store(data).path(OHLCV_1H).read_bytes()
        if not can_mount:  # same errno, by failing the parquet writer
            import pyarrow.parquet as pq

            def full(*a, **k):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            monkeypatch.setattr(pq, "write_table", full)
        code, _, err = run(["import-data", str(big), "--exchange", EX, "--data-dir", str(data)], capsys)
        assert code == 2 and err.count("\n") == 1 and "No space left on device; free disk space" in err, err
        assert Store(data).path(OHLCV_1H).read_bytes() == old
        assert not list(data.rglob(".cascade-*")) and not Store(data).exists(OHLCV_5M)


def test_disk_full_download_is_one_line(tmp_path, capsys, can_mount):
    if not can_mount:
        pytest.skip("needs root to mount a tiny tmpfs")
    from bot.replay import ReplayServer

    source = Store(tmp_path / "source")
    source.write(OHLCV_5M, Store(SAMPLE_DIR).read(OHLCV_5M).loc["2025-03-01":"2025-03-20"])
    with ReplayServer(source.root, start="2025-04-01", speed=0) as srv, tmpfs(tmp_path / "disk", "size=48k") as disk:
        code, _, err = run(["download", "--exchange-url", srv.url, "--no-rate-limit", "--data-dir", str(disk),
                            "--symbols", BTC, "--timeframe", "5m", "--kinds", "ohlcv", "--since", "2025-03-01",
                            "--until", "2025-03-20", "--no-leverage-tiers"], capsys)
        leftovers = list(disk.rglob(".cascade-*"))
    assert code == 2 and "No space left on device" in err and err.strip().count("\n") == 0, err
    assert not leftovers


def test_read_only_data_dir_is_one_line(tmp_path, capsys, can_mount):
    if not can_mount:
        pytest.skip("needs root to mount a read-only tmpfs (root ignores chmod)")
    src = _feather(tmp_path / "src", OHLCV_1H, rows=50)
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        code, _, err = run(["import-data", str(src), "--exchange", EX, "--data-dir", str(ro / "data")], capsys)
    assert code == 2 and err.count("\n") == 1 and "Read-only file system" in err, err


def test_unreadable_input_is_one_line(tmp_path, capsys):
    src = _feather(tmp_path / "src", OHLCV_1H, rows=50)
    src.write_bytes(src.read_bytes()[:100])  # truncated
    code, _, err = run(["import-data", str(src), "--exchange", EX, "--data-dir", str(tmp_path / "d")], capsys)
    assert code == 2 and err.count("\n") == 1 and "cannot be read" in err
    assert run(["import-data", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "d")], capsys)[0] == 2


def test_data_dir_that_is_a_file_is_one_line_for_writers(tmp_path, capsys):
    src = _feather(tmp_path / "src", OHLCV_1H, rows=50)
    (tmp_path / "f").write_text("x")
    code, _, err = run(["import-data", str(src), "--exchange", EX, "--data-dir", str(tmp_path / "f")], capsys)
    assert code == 2 and "is a file" in err


# ------------------------------------------------------------------------------------------ signals


def _signal_while_writing(cmd: list[str], folder: Path, pattern: str, sig: int, what: str,
                          timeout: float = 60, cleanup: Callable[[], None] = lambda: None) -> subprocess.Popen:
    """Start ``cmd`` and send ``sig`` while a temporary matching ``pattern`` exists under ``folder``;
    the write window is short, so try again (after ``cleanup``) when the command finished first."""
    for _ in range(5):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if any(folder.glob(pattern)):
                proc.send_signal(sig)
                proc.wait(60)
                return proc
            time.sleep(0.002)
        proc.wait(60)
        cleanup()
    pytest.fail(f"never caught the {what} while it was writing")


def _signal_mid_write(src: Path, data: Path, sig: int) -> subprocess.Popen:
    """Start an import and send ``sig`` while its temporary parquet file exists."""
    def drop_imported() -> None:
        for f in data.rglob("*.parquet"):
            f.unlink()

    return _signal_while_writing([CASCADE, "import-data", str(src), "--exchange", EX, "--data-dir", str(data)],
                                 data, "**/.cascade-*.tmp", sig, "import", 30, drop_imported)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_import_exits_cleanly_and_leaves_nothing(tmp_path, sig, code):
    src = _feather(tmp_path / "src", OHLCV_5M)
    data = tmp_path / "data"
    proc = _signal_mid_write(src, data, sig)
    assert proc.returncode == code and proc.stderr.read().strip() == "interrupted"
    assert not list(data.rglob(".cascade-*")) and not Store(data).exists(OHLCV_5M)


def test_sigkill_mid_import_leftovers_are_swept_by_the_next_run(tmp_path, capsys):
    src = _feather(tmp_path / "src", OHLCV_5M)
    data = tmp_path / "data"
    proc = _signal_mid_write(src, data, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert list(data.rglob(".cascade-*.tmp"))  # what a SIGKILL leaves behind ...
    small = _feather(tmp_path / "small", OHLCV_1H, rows=30)
    assert run(["import-data", str(small), "--exchange", EX, "--data-dir", str(data)], capsys)[0] == 0
    assert not list(data.rglob(".cascade-*"))  # ... the next write into that folder removes


def test_sigint_inside_a_deferred_block_is_raised_after_it(monkeypatch):
    """A numba kernel call wrapped in ``deferred`` is never interrupted inside; the signal comes after."""
    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    interrupts.install()
    try:
        reached_end = False
        with pytest.raises(KeyboardInterrupt), interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # the handler runs here: inside the block it is only remembered
            reached_end = True
        assert reached_end
        with pytest.raises(interrupts.Interrupted) as exc:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        assert exc.value.exit_code == 143
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def test_numba_systemerror_from_an_interrupt_maps_to_130():
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemError("CPUDispatcher(<function k>) returned a result with an exception set")  # noqa: B904
    except SystemError as err:
        assert interrupts.exit_code_for(err) == 130
    assert interrupts.exit_code_for(SystemError("unrelated")) is None


# ------------------------------------------------------------------------------------------ atomic helpers


def test_atomic_path_and_dir_leave_old_output_on_failure(tmp_path):
    target = tmp_path / "out" / "stats.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["stats.json"]
    run_dir = tmp_path / "runs" / "r1"
    with atomic_dir(run_dir) as tmp:
        (tmp / "equity.csv").write_text("a")
    with pytest.raises(KeyboardInterrupt), atomic_dir(run_dir) as tmp:
        (tmp / "equity.csv").write_text("trunc")
        raise KeyboardInterrupt
    assert (run_dir / "equity.csv").read_text() == "a" and [p.name for p in run_dir.parent.iterdir()] == ["r1"]
    with atomic_dir(run_dir) as tmp:
        (tmp / "equity.csv").write_text("b")
    assert (run_dir / "equity.csv").read_text() == "b" and [p.name for p in run_dir.parent.iterdir()] == ["r1"]


def test_sweep_removes_only_dead_writers_temporaries(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".cascade-{dead_pid}-0a0b0c0d.tmp").mkdir()  # a killed run's folder
    (tmp_path / f".cascade-{dead_pid}-0a0b0c0e.tmp").write_text("half")
    live = tmp_path / f".cascade-{os.getpid()}-0a0b0c0f.tmp"
    live.write_text("in flight")  # a running writer's file: never touched
    old = tmp_path / ".cascade-legacy.tmp"
    old.write_text("x")
    os.utime(old, (time.time() - 7 * 3600,) * 2)
    removed = sweep_stale(tmp_path)
    assert len(removed) == 3 and [p.name for p in tmp_path.iterdir()] == [live.name]


def test_os_errors_become_user_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder|not a directory"):
        atomic_write_text(tmp_path / "file" / "x.json", "{}")


def test_interrupted_store_write_leaves_the_old_file(tmp_path):
    """A store write interrupted by a signal leaves the previous file and no temporary."""
    store = Store(tmp_path)
    frame = Store(SAMPLE_DIR).read(OHLCV_1H).iloc[:100]
    store.write(OHLCV_1H, frame)
    import pyarrow.parquet as pq

    real = pq.write_table

    def interrupted(table, where, **kw):
        real(table, where, **kw)
        raise interrupts.Interrupted(signal.SIGTERM)

    pq.write_table = interrupted
    try:
        with pytest.raises(interrupts.Interrupted):
            store.write(OHLCV_1H, Store(SAMPLE_DIR).read(OHLCV_1H).iloc[100:200])
    finally:
        pq.write_table = real
    pd.testing.assert_frame_equal(store.read(OHLCV_1H), frame, check_freq=False)
    assert not list(tmp_path.rglob(".cascade-*"))


# a short 1h backtest with its report: writing the run folder takes long enough to be caught
BACKTEST = ["backtest", "--strategy", "funding_reversal", "--engine", "fast", "--from", "2025-09-01",
            "--to", "2025-10-01"]


def _signal_mid_backtest(out: Path, sig: int) -> subprocess.Popen:
    """Start a backtest and send ``sig`` while its hidden run folder is being written."""
    return _signal_while_writing([CASCADE, *BACKTEST, "--output-dir", str(out)], out, ".cascade-*.tmp", sig,
                                 "backtest", 120)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_backtest_exits_cleanly_and_leaves_nothing(tmp_path, sig, code):
    out = tmp_path / "results"
    proc = _signal_mid_backtest(out, sig)
    assert proc.returncode == code and proc.stderr.read().strip().splitlines()[-1] == "interrupted"
    assert not list(out.glob(".cascade-*")) and not [p for p in out.iterdir() if p.name != "_assets"]


def test_sigkill_mid_backtest_leftovers_are_swept_by_the_next_run(tmp_path, capsys):
    out = tmp_path / "results"
    proc = _signal_mid_backtest(out, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert list(out.glob(".cascade-*.tmp"))  # what a SIGKILL leaves behind ...
    assert run([*BACKTEST, "--output-dir", str(out), "--no-report"], capsys)[0] == 0
    assert not list(out.glob(".cascade-*"))  # ... the next run writing there removes
    assert len([p for p in out.iterdir() if p.name != "_assets"]) == 1
