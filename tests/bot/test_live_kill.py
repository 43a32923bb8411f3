"""SIGKILL of `cascade paper --exchange-url` mid-run, restarts on the same run folder, against a replay
exchange running on its own (wall-clock) clock: after each restart one position at most, exactly one
resting stop for it within a bar, no duplicate orders, the books equal to the exchange's; and the API key
and secret set in the environment appear in no file of the run and in no output."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.live.store import RunStore
from bot.replay import ReplayServer
from bot.store import Store

ROOT = Path(__file__).resolve().parents[2]
EMA = str(ROOT / "examples" / "ema_cross.py")
EX, BTC = "binanceusdm", "BTC/USDT:USDT"
KEY, SECRET = "k9f3a1c07be24d5e8a6f", "s7d2e9b4c1a06f83e5d2b7c9a4f1e6d3"
SPEED = 900.0  # one 1h bar every 4 s


@pytest.fixture(scope="module")
def source(btc_trading_store) -> Store:
    return btc_trading_store("2025-02-25", "2025-04-05")


def invariants(srv: ReplayServer) -> None:
    with srv.account.lock:
        orders = list(srv.account.orders.values())
        algos = list(srv.account.algos.values())
        positions = dict(srv.account.positions)
    cids = [o["clientOrderId"] for o in orders] + [a["clientAlgoId"] for a in algos]
    assert len(cids) == len(set(cids))
    opening: dict[int, int] = {}
    for o in orders:
        if not o["reduceOnly"] and o["origType"] == "MARKET":
            opening[o["time"] // 3_600_000] = opening.get(o["time"] // 3_600_000, 0) + 1
    assert all(n == 1 for n in opening.values()), opening
    assert sum(a["algoStatus"] == "NEW" and a["orderType"] == "STOP_MARKET" for a in algos) <= 1
    assert len(positions) <= 1


def protected(srv: ReplayServer) -> bool:
    """Flat, or exactly one resting reduce-only stop for the position's size."""
    with srv.account.lock:
        pos = srv.account.positions.get("BTCUSDT")
        stops = [a for a in srv.account.algos.values() if a["algoStatus"] == "NEW" and a["orderType"] == "STOP_MARKET"]
    if pos is None:
        return True
    return len(stops) == 1 and stops[0]["reduceOnly"] and abs(float(stops[0]["quantity"]) - pos["qty"]) < 1e-9


def last_bar(folder: Path) -> int | None:
    if not (folder / "state.sqlite").exists():
        return None
    store = RunStore(folder)
    try:
        return store.get("last_bar_ms")
    finally:
        store.close()


def wait_for(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def run_kills(source: Store, tmp_path: Path, kills: int) -> None:
    (tmp_path / "cfg.toml").write_text(
        f'[data]\ndir = "{source.root}"\nuse_sample = false\n'
        f'[live]\nruns_dir = "{tmp_path / "runs"}"\nsettle_seconds = 1.0\npoll_seconds = 0.1\n'
        '[risk]\nstop = "fixed_pct"\nstop_pct = 0.01\n')
    env = {**os.environ, "CASCADE_API_KEY": KEY, "CASCADE_API_SECRET": SECRET}
    args = [sys.executable, "-m", "bot.cli", "paper", "--exchange-url", "", "--run", "k", "--config",
            str(tmp_path / "cfg.toml"), "--strategy", EMA, "--param", "slow=30", "--param", "fast=5", "--quiet"]
    folder = tmp_path / "runs" / "k"
    outputs: list[str] = []
    rng = random.Random(11)
    with ReplayServer(source.root, start="2025-03-27T00:00", speed=SPEED, api_key=KEY, secret=SECRET) as srv:
        args[5] = srv.url
        for n in range(kills + 1):
            final = n == kills
            before = last_bar(folder)
            proc = subprocess.Popen(args + (["--max-wakes", "3"] if final else []), cwd=tmp_path, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                # it reconciles and books a bar (restoring the stop within that bar) ...
                assert wait_for(lambda b=before or 0: (last_bar(folder) or 0) > b, 90), "no bar booked"
                assert wait_for(lambda: protected(srv), 3600 / SPEED), "no resting stop within a bar"
                invariants(srv)
                if final:
                    out, err = proc.communicate(timeout=60)
                    assert proc.returncode == 0, err
                else:
                    time.sleep(rng.uniform(0.0, 3600 / SPEED))  # ... and dies at a random moment
                    proc.send_signal(signal.SIGKILL)
                    out, err = proc.communicate(timeout=30)
                outputs += [out, err]
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            invariants(srv)
        store = RunStore(folder)
        try:
            rows = store.db.execute("SELECT cash, exchange_equity FROM equity WHERE exchange_equity IS NOT NULL "
                                    "ORDER BY bar_ms DESC LIMIT 1").fetchall()
            assert rows and abs(rows[0][0] - rows[0][1]) < 1e-6  # the books equal the exchange's wallet
            assert store.get("sending") is None
            kinds = {r[0] for r in store.db.execute("SELECT kind FROM events")}
        finally:
            store.close()
    assert "trade" in kinds or "order" in kinds
    # the secrets: nowhere on disk, nowhere in the output
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY.encode() not in data and SECRET.encode() not in data, path
    for text in outputs:
        assert KEY not in text and SECRET not in text


def test_sigkill_twice_mid_run(source, tmp_path):
    run_kills(source, tmp_path, kills=2)


@pytest.mark.slow
def test_sigkill_ten_times_mid_run(source, tmp_path):
    run_kills(source, tmp_path, kills=10)
