"""The installable package: a wheel built from the source, installed into a fresh venv, backtests the
bundled sample from another directory (no repository, no config file, no network).

The venv sees the current interpreter's site-packages for the dependencies
(``--system-site-packages``) and the wheel is installed with ``--no-deps --no-index``, so this runs
offline; the build uses the installed backend (``--no-build-isolation``, setuptools from ``.[dev]``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "results", "data", "build", "dist", "*.egg-info", "__pycache__",
                              ".pytest_cache", ".ruff_cache", "bench", "tests")


def run(cmd: list[str], cwd: Path, timeout: float = 240, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")} | extra
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def test_wheel_installs_and_backtests_the_bundled_sample(tmp_path: Path) -> None:
    import setuptools

    major = int(setuptools.__version__.split(".")[0])
    assert major >= 77, f"setuptools {setuptools.__version__} cannot build this project; pip install -e '.[dev]'"
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=SKIP)
    built = run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
                 "-w", str(tmp_path / "dist"), str(src)], cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("cascade-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    sample = [n for n in names if n.startswith("backtests/sample_data/") and n.endswith(".parquet")]
    assert len(sample) >= 10 and "bot/risk/brackets_binance.json" in names
    assert "backtests/sample_data/binanceusdm/BTC_USDT_USDT/ohlcv-1h.parquet" in names

    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    made = run([base, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    installed = run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
                     str(wheel)], cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-2000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run([str(py), "-c", "import bot, backtests; print(bot.__file__)"], cwd=elsewhere)
    assert str(venv) in where.stdout, where.stdout + where.stderr  # the wheel, not the source tree
    proc = run([str(venv / "bin" / "cascade"), "backtest", "--json", "--engine", "fast", "--from", "2025-06-01",
                "--to", "2025-06-15", "--no-report"], cwd=elsewhere,
               NUMBA_DISABLE_JIT="1")  # a fresh install compiles every kernel (~30 s); this checks packaging
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["n_bars"] == 14 * 24 and summary["strategy"] == "liq_asymmetry"
    assert (elsewhere / summary["run_dir"] / "equity.parquet").exists()


def test_package_data_names_the_sample_folder() -> None:
    import tomllib

    pattern = "sample_data/**/*.parquet"
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pattern in cfg["tool"]["setuptools"]["package-data"]["backtests"]
    assert list((REPO / "backtests").glob(pattern)), "the sample folder moved: fix package-data"
