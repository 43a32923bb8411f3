"""Whole-command speed and memory: ``cascade backtest`` against backtesting.py, as whole processes.

Side by side in one run, on the same year of 5m BTC/USDT:USDT bars of the bundled sample and the
same EMA(20/50) reversal, each as its own process (start-up, imports, data loading, the run,
statistics and output files all included — what a user waits for):

* ``cascade_off``: ``cascade backtest --engine fast --no-report`` with the EMA strategy, as a user
  runs it: the warm server (bot/warm.py) that the first command started runs it in a forked worker;
* ``cascade_off_cold``: the same with ``CASCADE_WARM=0``: the whole import in the command's own
  process (the first command after boot, or warm start turned off);
* ``cascade_report`` / ``cascade_report_cold``: the same with the HTML report;
* ``backtesting_py``: backtesting.py's ``Backtest.run()`` on the same parquet file
  (``bench/_backtesting_py_ema.py``);
* ``help``: ``cascade --help``;
* ``default_liq``: ``cascade backtest --engine fast --no-report`` with the default strategy
  (liq_asymmetry, liquidation-map features) on the bundled 1h BTC sample — not a target, the number
  a user sees first.

The EMA strategy is the project's user-strategy example ``examples/ema_cross.py`` run as
``cascade backtest --strategy examples/ema_cross.py``. Every command runs once untimed first (the
fast engine is precompiled on first use, the OS caches files, the first warm command starts the
server), then ``--repeat`` times interleaved; the median wall time is reported. Peak memory is the
largest ``ru_maxrss`` of the process that did the work: the child itself (from ``wait4``) for cold
runs and backtesting.py, the forked worker for warm runs (its server reports the worker's
``ru_maxrss``; a fork starts from the server's resident size, so preloaded modules are counted).
The warm server this bench started is stopped at the end.

Targets (2-core machine): ``cascade_off`` ≤ 1/3 of backtesting.py's wall time and ≤ 200 MiB;
``cascade_report`` ≤ 1.5 × backtesting.py's time and ≤ 350 MiB; ``cascade --help`` ≤ 0.3 s.
The last stdout line is JSON (``{"bench": "whole", ...}``).

    python bench/whole.py               # needs the `bench` extra (backtesting)
    python bench/whole.py --repeat 5
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_5M = ROOT / "backtests" / "sample_data" / "binanceusdm" / "BTC_USDT_USDT" / "ohlcv-5m.parquet"
EXAMPLE = ROOT / "examples" / "ema_cross.py"
DAYS = 365


def year_window() -> tuple[str, str]:
    """The last 365 days of the bundled 5m BTC sample as ISO UTC strings (from inclusive, to exclusive).

    Read in a child process: this process stays small, because a child's ``ru_maxrss`` starts from
    the size of the process it was forked from (Linux carries the pre-exec peak over).
    """
    code = ("import sys, pandas as pd, pyarrow.parquet as pq\n"
            "last = pd.Timestamp(pq.read_table(sys.argv[1], columns=['time']).column('time').to_pandas().max())\n"
            f"end = last + pd.Timedelta(minutes=5); start = end - pd.Timedelta(days={DAYS})\n"
            "print(start.strftime('%Y-%m-%dT%H:%M'), end.strftime('%Y-%m-%dT%H:%M'))")
    out = subprocess.run([sys.executable, "-c", code, str(SAMPLE_5M)], check=True, capture_output=True, text=True)
    start, end = out.stdout.split()
    return start, end


def commands(start: str, end: str, out_dir: Path) -> tuple[dict[str, tuple[list[str], dict[str, str]]], str]:
    """The command lines to time (with their extra environment), and where the EMA strategy comes from."""
    py = sys.executable
    cascade = [py, "-m", "bot", "backtest", "--strategy", str(EXAMPLE.relative_to(ROOT))]
    source = "examples/ema_cross.py"
    common = ["--engine", "fast", "--symbol", "BTC/USDT:USDT", "--timeframe", "5m", "--from", start, "--to", end,
              "--output-dir", str(out_dir), "--json"]
    warm, cold = {"CASCADE_WARM": "1"}, {"CASCADE_WARM": "0"}
    return {
        "cascade_off": ([*cascade, *common, "--no-report"], warm),
        "cascade_off_cold": ([*cascade, *common, "--no-report"], cold),
        "cascade_report": ([*cascade, *common], warm),
        "cascade_report_cold": ([*cascade, *common], cold),
        "backtesting_py": ([py, str(ROOT / "bench" / "_backtesting_py_ema.py"), str(SAMPLE_5M), start, end], {}),
        "help": ([py, "-m", "bot", "--help"], {}),
        # what `cascade backtest --engine fast` runs with no other flag: liq_asymmetry on the sample's 1h BTC
        "default_liq": ([py, "-m", "bot", "backtest", "--engine", "fast", "--output-dir", str(out_dir), "--json",
                         "--no-report"], warm),
    }, source


def warm_server() -> dict[str, Any] | None:
    """The status of the warm server serving this checkout's commands (started by this bench's runs)."""
    from bot import warm

    for info in warm.servers():
        if info["checkout"] == str(ROOT) and info["key"] == _warm_key():
            return info
    return None


@functools.cache
def _warm_key() -> str:
    """The identity `python -m bot` computes in ROOT, asked once of a child (its sys.path is what counts)."""
    code = "from bot import warm; print(warm.identity())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env({"CASCADE_WARM": "1"}), check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "120", "CASCADE_WARM_IDLE": "300", **extra}


def run_measured(cmd: list[str], extra_env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd`` from the repository root: wall seconds, the peak RSS (MiB) of the process that did the
    work (module docstring) and its last stdout line."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as fout, tempfile.TemporaryFile("w+") as ferr:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fout, stderr=ferr, text=True, env=_env(extra_env))
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        fout.seek(0)
        ferr.seek(0)
        out, err = fout.read(), ferr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    lines = [ln for ln in out.splitlines() if ln.strip()]
    peak = usage.ru_maxrss / 1024.0
    if extra_env.get("CASCADE_WARM") == "1":
        server = warm_server()
        if server is not None and server["served"]:  # served by a worker: its peak, not the caller's
            peak = max(peak, server["last_peak_rss_mib"])
    return {"wall_s": wall, "maxrss_mib": peak, "last": lines[-1] if lines else ""}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per command (median reported)")
    args = ap.parse_args(argv)
    start, end = year_window()
    from bot import warm

    before = {info["key"] for info in warm.servers()}
    try:
        with tempfile.TemporaryDirectory(prefix="cascade-bench-whole-") as tmp:
            cmds, source = commands(start, end, Path(tmp))
            first: dict[str, float] = {}
            for name, (cmd, extra) in cmds.items():  # untimed: kernels precompiled, page cache, warm server
                first[name] = run_measured(cmd, extra)["wall_s"]
            server = warm_server() or {}
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cmds}
            for _ in range(max(args.repeat, 1)):
                for name, (cmd, extra) in cmds.items():
                    runs[name].append(run_measured(cmd, extra))
            served = (warm_server() or {}).get("served", 0) - server.get("served", 0)
            report_dirs = [p for p in Path(tmp).iterdir() if (p / "report.html").exists()]
            report_kib = (report_dirs[0] / "report.html").stat().st_size / 1024 if report_dirs else None
            assets = Path(tmp) / "_assets"
            assets_kib = sum(f.stat().st_size for f in assets.rglob("*") if f.is_file()) / 1024 if assets.exists() \
                else 0
    finally:
        for info in warm.servers():
            if info["key"] not in before:
                warm.control(info["key"], "stop")
    n_warm = sum(1 for _, extra in cmds.values() if extra.get("CASCADE_WARM") == "1") * max(args.repeat, 1)
    if served != n_warm:
        raise SystemExit(f"the warm server ran {served} of the {n_warm} warm runs; is warm start available here?")

    wall = {n: statistics.median(r["wall_s"] for r in rs) for n, rs in runs.items()}
    rss = {n: max(r["maxrss_mib"] for r in rs) for n, rs in runs.items()}
    summaries = {n: rs[-1]["last"] for n, rs in runs.items()}
    btpy = wall["backtesting_py"]
    result = {
        "bench": "whole", "strategy_source": source, "from": start, "to": end, "repeat": args.repeat,
        "wall_s": {n: round(v, 3) for n, v in wall.items()},
        "first_run_s": {n: round(v, 3) for n, v in first.items()},
        "peak_rss_mib": {n: round(v, 1) for n, v in rss.items()},
        "ratio_off_vs_backtesting_py": round(wall["cascade_off"] / btpy, 3),
        "ratio_report_vs_backtesting_py": round(wall["cascade_report"] / btpy, 3),
        "ratio_report_vs_off": round(wall["cascade_report"] / wall["cascade_off"], 3),
        "ratio_off_cold_vs_backtesting_py": round(wall["cascade_off_cold"] / btpy, 3),
        "ratio_report_cold_vs_backtesting_py": round(wall["cascade_report_cold"] / btpy, 3),
        "warm_server_rss_mib": server.get("rss_mib"),
        "report_html_kib": None if report_kib is None else round(report_kib, 1),
        "report_assets_kib": round(assets_kib, 1),
        "targets": {
            "off_le_third_of_backtesting_py": wall["cascade_off"] <= btpy / 3,
            "off_le_200_mib": max(rss["cascade_off"], rss["cascade_off_cold"]) <= 200,
            "report_le_1.5x_backtesting_py": wall["cascade_report"] <= 1.5 * btpy,
            "report_le_350_mib": max(rss["cascade_report"], rss["cascade_report_cold"]) <= 350,
            "help_le_0.3_s": wall["help"] <= 0.3,
        },
    }
    try:
        off, bt = json.loads(summaries["cascade_off"]), json.loads(summaries["backtesting_py"])
        result["trades"] = {"cascade": off.get("n_trades"), "backtesting_py": bt.get("trades"), "bars": bt.get("bars")}
    except (json.JSONDecodeError, TypeError):
        pass
    print(f"{'command':<20}{'median s':>10}{'first s':>10}{'peak MiB':>10}")
    for n in cmds:
        print(f"{n:<20}{wall[n]:>10.3f}{first[n]:>10.3f}{rss[n]:>10.1f}")
    print(f"cascade (report off) / backtesting.py: {result['ratio_off_vs_backtesting_py']:.3f}  (target <= 0.333; "
          f"cold {result['ratio_off_cold_vs_backtesting_py']:.3f})")
    print(f"cascade (report on)  / backtesting.py: {result['ratio_report_vs_backtesting_py']:.3f}  (target <= 1.5; "
          f"cold {result['ratio_report_cold_vs_backtesting_py']:.3f})")
    print(f"warm server resident: {result['warm_server_rss_mib']} MiB")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
