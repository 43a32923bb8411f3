"""The precompiled fast kernel (`backtests.engines.compiled`) against numba's JIT kernel: bit for bit.

The compiled module is built once per test session into the session's ``CASCADE_CACHE_DIR``
(tests/conftest.py); the build, failure and concurrency tests use their own cache folders.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtests.engines import compiled, fast
from backtests.engines.common import kernel_args, prepare
from bot import aot
from bot.config import BacktestConfig, RiskConfig
from bot.risk.brackets import load_brackets
from bot.risk.sizing import realized_volatility
from bot.risk.stops import average_true_range

REPO = Path(__file__).resolve().parents[2]
HAVE_COMPILER = bool(shutil.which(os.environ.get("CC", "cc"))) and (
    Path(sysconfig.get_paths()["include"]) / "Python.h").exists()
needs_compiler = pytest.mark.skipif(not HAVE_COMPILER, reason="no C compiler or Python headers (.ci/run installs them)")

RISKS = {
    "defaults": RiskConfig(),
    "fixed stop, protections that bite": RiskConfig(stop="fixed_pct", stop_pct=0.01, max_drawdown=0.08,
                                                    reduce_drawdown=0.04, daily_loss=0.02, cooldown_stopouts=2,
                                                    cooldown="6h", halt_duration="1d"),
    "ATR stop, fixed fraction": RiskConfig(stop="atr", sizing="fixed_fraction", fixed_fraction=0.5),
    "Kelly": RiskConfig(sizing="kelly", kelly_min_trades=5),
    "100x, own liquidations": RiskConfig(sizing="fixed_fraction", fixed_fraction=10.0, max_leverage=100.0,
                                        max_drawdown=0.99, reduce_drawdown=0.98, daily_loss=0.99),
    "trailing ATR, volatility target": RiskConfig(stop="trailing_atr", sizing="volatility_target",
                                                  max_leverage=50.0),
}


@pytest.fixture(autouse=True)
def precompiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Precompiled kernels on (tests/conftest.py turns them off for the rest of the suite)."""
    monkeypatch.setenv("CASCADE_AOT", "1")


def compiled_module(tiers: int):  # noqa: ANN201
    """The precompiled module for ``tiers``; skips only when this machine has no C compiler (.ci/run
    installs one), any other build failure fails the test."""
    module = compiled.kernel_module(tiers)
    if module is None:
        failed = list(aot.cache_dir().glob(f"{compiled.module_name(tiers)}.failed"))
        reason = failed[0].read_text() if failed else "no build was attempted"
        if "without the compiler" in reason:
            pytest.skip(f"no precompiled kernel here: {aot.error_line(reason)}")
        pytest.fail(f"the precompiled module did not build: {reason[-2000:]}")
    return module


def ema_signals(frame: pd.DataFrame) -> pd.DataFrame:
    """EMA(20/50) reversal with a 2 % strategy stop and a 3 % take-profit."""
    close = frame["close"]
    up = close.ewm(span=20, adjust=False).mean() > close.ewm(span=50, adjust=False).mean()
    target = np.where(up, 1.0, -1.0)
    return pd.DataFrame({"target": target, "stop": close * np.where(up, 0.98, 1.02),
                         "take_profit": close * np.where(up, 1.03, 0.97)}, index=frame.index)


def assert_same(a: tuple, b: tuple) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape
            assert np.array_equal(x, y, equal_nan=True)
        else:
            assert x == y


@pytest.mark.parametrize("risk_name", list(RISKS))
def test_compiled_kernel_equals_the_jit_kernel_bit_for_bit(btc_5m: pd.DataFrame, risk_name: str) -> None:
    frame = btc_5m.iloc[-60_000:]
    prep = prepare(frame, ema_signals(frame), BacktestConfig(), RISKS[risk_name], symbol="BTC/USDT:USDT")
    compiled_module(len(prep.brackets.floor))
    args = kernel_args(prep)
    out = compiled.call_kernel(args)
    assert out is not None
    assert len(out[6]) >= 5  # trades (Kelly sizes this losing strategy down to nothing after 5)
    if "liquidations" in risk_name:
        assert out[8] > 0
    assert_same(out, fast.kernel(*args))


def test_other_tier_counts_get_their_own_module(sample_frame) -> None:
    """SOL's 9 tiers (BTC has 12): the tiers are fixed-length tuples, so another module is built."""
    frame = sample_frame("ETH/USDT:USDT", "1h")
    brackets = load_brackets("SOL/USDT:USDT")
    prep = prepare(frame, ema_signals(frame), BacktestConfig(), RISKS["ATR stop, fixed fraction"], brackets=brackets)
    args = kernel_args(prep)
    module = compiled_module(9)
    assert module is not compiled_module(12)
    assert_same(compiled.call_kernel(args), fast.kernel(*args))


def test_compiled_series_equal_the_jit_series(btc_5m: pd.DataFrame) -> None:
    h, lo, c = (np.ascontiguousarray(btc_5m[k].to_numpy()) for k in ("high", "low", "close"))
    for a in (h, lo, c):
        a.setflags(write=False)
    compiled_module(12)
    atr = compiled.series_function("average_true_range", 12)
    vol = compiled.series_function("realized_volatility", 12)
    assert np.array_equal(atr(h, lo, c, 14), average_true_range(h, lo, c, 14), equal_nan=True)
    assert np.array_equal(vol(c, 14, 105_120.0), realized_volatility(c, 14, 105_120.0), equal_nan=True)


def test_arrays_the_compiled_wrapper_cannot_take_go_to_the_jit(btc_5m: pd.DataFrame) -> None:
    frame = btc_5m.iloc[-2_000:]
    prep = prepare(frame, ema_signals(frame), BacktestConfig(), RiskConfig(), symbol="BTC/USDT:USDT")
    args = list(kernel_args(prep))
    args[4] = np.asarray(args[4], dtype=np.float32)  # the wrapper would misread float32
    assert compiled.call_kernel(tuple(args)) is None
    args[4] = np.repeat(kernel_args(prep)[4], 2)[::2]  # strided
    assert compiled.call_kernel(tuple(args)) is None


def test_disabled_means_the_jit_kernel(monkeypatch: pytest.MonkeyPatch, btc_5m: pd.DataFrame) -> None:
    monkeypatch.setenv("CASCADE_AOT", "0")
    assert compiled.kernel_module(12) is None
    frame = btc_5m.iloc[-2_000:]
    prep = prepare(frame, ema_signals(frame), BacktestConfig(), RiskConfig(), symbol="BTC/USDT:USDT")
    assert compiled.run_raw(prep).final_equity == fast.run_raw(prep).final_equity


def test_the_key_follows_the_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for entry in compiled.SOURCES:
        src = REPO / entry
        dst = tmp_path / entry
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            dst.mkdir(exist_ok=True)
            for f in src.glob("*.py"):
                (dst / f.name).write_bytes(f.read_bytes())
        else:
            dst.write_bytes(src.read_bytes())
    monkeypatch.setattr(aot, "ROOT", tmp_path)
    compiled.source_key.cache_clear()
    try:
        before = compiled.source_key()
        (tmp_path / "bot" / "risk" / "stops.py").write_text((tmp_path / "bot/risk/stops.py").read_text() + "\n# x\n")
        compiled.source_key.cache_clear()
        assert compiled.source_key() != before
    finally:
        compiled.source_key.cache_clear()


def _child_env(cache: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "CASCADE_CACHE_DIR": str(cache), "CASCADE_AOT": "1", **extra}


BUILD = "from backtests.engines import compiled; print(compiled.kernel_module(12) is not None)"


@needs_compiler
def test_two_processes_build_once_and_both_load(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", BUILD], cwd=REPO, env=_child_env(tmp_path), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [out.strip() for out, _ in results] == ["True", "True"]
    notes = [err for _, err in results if "compiling the fast engine" in err]
    assert len(notes) == 1  # the second waited on the lock, then loaded the first one's module
    built = sorted(p.name for p in (tmp_path / "kernels").iterdir() if not p.name.endswith(".lock"))
    assert len(built) == 1 and built[0].startswith(compiled.PREFIX) and built[0].endswith(".so")


def test_without_a_c_compiler_the_run_falls_back_to_the_jit_once(tmp_path: Path) -> None:
    env = _child_env(tmp_path, CC="/bin/false", CXX="/bin/false")
    first = subprocess.run([sys.executable, "-c", BUILD], cwd=REPO, env=env, text=True, capture_output=True,
                           timeout=300)
    assert first.stdout.strip() == "False"
    note = [line for line in first.stderr.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "could not precompile the fast engine" in note[0] and "delete it to retry" in note[0]
    assert list((tmp_path / "kernels").glob("*.failed"))
    again = subprocess.run([sys.executable, "-c", BUILD], cwd=REPO, env=env, text=True, capture_output=True,
                           timeout=300)
    assert again.stdout.strip() == "False" and again.stderr == ""  # remembered: no retry, no noise


@needs_compiler
@pytest.mark.parametrize("strategy", ["examples/ema_cross.py", "liq_asymmetry", "sr_levels"])
def test_a_backtest_process_never_imports_numba(tmp_path: Path, strategy: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[data]\ndir = "{(tmp_path / "data").as_posix()}"\n'
                      f'[backtest]\nresults_dir = "{(tmp_path / "results").as_posix()}"\n')
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "bot", "backtest", "--config", str(config),
                           "--strategy", strategy, "--engine", "fast", "--from", "2025-06-01",
                           "--to", "2025-06-08", "--no-report"], cwd=REPO, text=True, capture_output=True,
                          timeout=300, env={**os.environ, "CASCADE_AOT": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert "pandas" in imported and "numba" not in imported and "scipy" not in imported


def test_an_unusable_cache_folder_or_module_falls_back_to_the_jit(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = subprocess.run([sys.executable, "-c", BUILD], cwd=REPO, env=_child_env(blocker), text=True,
                          capture_output=True, timeout=300)
    assert proc.stdout.strip() == "False" and "set CASCADE_CACHE_DIR to a writable folder" in proc.stderr
    damaged = tmp_path / "cache" / "kernels"
    damaged.mkdir(parents=True)
    name = subprocess.run([sys.executable, "-c", "from backtests.engines import compiled as c; "
                           "from bot import aot; print(aot.module_path(c.module_name(12)))"], cwd=REPO, env=_child_env(tmp_path / "cache"),
                          text=True, capture_output=True, timeout=60).stdout.strip()
    Path(name).write_bytes(b"\x7fELF truncated")
    proc = subprocess.run([sys.executable, "-c", BUILD], cwd=REPO, env=_child_env(tmp_path / "cache"), text=True,
                          capture_output=True, timeout=300)
    assert proc.stdout.strip() == "False" and "rebuilding next run" in proc.stderr
    assert not Path(name).exists()
