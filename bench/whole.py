"""Whole-command speed and memory: ``cascade backtest`` against backtesting.py, as whole processes.

Side by side in one run, on the same year of 5m BTC/USDT:USDT bars of the bundled sample and the
same EMA(20/50) reversal, each as its own process (start-up, imports, data loading, the run,
statistics and output files all included — what a user waits for):

* ``cascade_off``: ``cascade backtest --engine fast --no-report`` with the EMA strategy;
* ``cascade_report``: the same with the HTML report;
* ``backtesting_py``: backtesting.py's ``Backtest.run()`` on the same parquet file
  (``bench/_backtesting_py_ema.py``);
* ``help``: ``cascade --help``;
* ``default_liq``: ``cascade backtest --engine fast --no-report`` with the default strategy
  (liq_asymmetry, liquidation-map features) on the bundled 1h BTC sample — not a target, the number
  a user sees first.

The EMA strategy is the project's user-strategy example ``examples/ema_cross.py`` run as
``cascade backtest --strategy examples/ema_cross.py``. Every command runs once untimed first (the fast engine is precompiled on first use, the OS
caches files), then ``--repeat`` times interleaved; the median wall time and the largest peak
resident memory (``ru_maxrss`` of the child, from ``wait4``) are reported.

Targets (2-core machine): ``cascade_off`` ≤ 1/3 of backtesting.py's wall time and ≤ 200 MiB;
``cascade_report`` ≤ 1.5 × backtesting.py's time and ≤ 350 MiB; ``cascade --help`` ≤ 0.3 s.
The last stdout line is JSON (``{"bench": "whole", ...}``).

    python bench/whole.py               # needs the `bench` extra (backtesting)
    python bench/whole.py --repeat 5
"""

from __future__ import annotations

import argparse
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


def commands(start: str, end: str, out_dir: Path) -> tuple[dict[str, list[str]], str]:
    """The command lines to time, and where the EMA strategy comes from."""
    py = sys.executable
    cascade = [py, "-m", "bot", "backtest", "--strategy", str(EXAMPLE.relative_to(ROOT))]
    source = "examples/ema_cross.py"
    common = ["--engine", "fast", "--symbol", "BTC/USDT:USDT", "--timeframe", "5m", "--from", start, "--to", end,
              "--output-dir", str(out_dir), "--json"]
    return {
        "cascade_off": [*cascade, *common, "--no-report"],
        "cascade_report": [*cascade, *common],
        "backtesting_py": [py, str(ROOT / "bench" / "_backtesting_py_ema.py"), str(SAMPLE_5M), start, end],
        "help": [py, "-m", "bot", "--help"],
        # what `cascade backtest --engine fast` runs with no other flag: liq_asymmetry on the sample's 1h BTC
        "default_liq": [py, "-m", "bot", "backtest", "--engine", "fast", "--output-dir", str(out_dir), "--json",
                        "--no-report"],
    }, source


def run_measured(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd`` from the repository root: wall seconds, the child's own peak RSS (``ru_maxrss``
    from ``os.wait4``, MiB) and its last stdout line."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as fout, tempfile.TemporaryFile("w+") as ferr:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fout, stderr=ferr, text=True,
                                env={**os.environ, "COLUMNS": "120"})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        fout.seek(0)
        ferr.seek(0)
        out, err = fout.read(), ferr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return {"wall_s": wall, "maxrss_mib": usage.ru_maxrss / 1024.0, "last": lines[-1] if lines else ""}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per command (median reported)")
    args = ap.parse_args(argv)
    start, end = year_window()
    with tempfile.TemporaryDirectory(prefix="cascade-bench-whole-") as tmp:
        cmds, source = commands(start, end, Path(tmp))
        first: dict[str, float] = {}
        for name, cmd in cmds.items():  # untimed: kernels are precompiled, files enter the page cache
            first[name] = run_measured(cmd)["wall_s"]
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cmds}
        for _ in range(max(args.repeat, 1)):
            for name, cmd in cmds.items():
                runs[name].append(run_measured(cmd))
        report_dirs = [p for p in Path(tmp).iterdir() if (p / "report.html").exists()]
        report_kib = (report_dirs[0] / "report.html").stat().st_size / 1024 if report_dirs else None
        assets = Path(tmp) / "_assets"
        assets_kib = sum(f.stat().st_size for f in assets.rglob("*") if f.is_file()) / 1024 if assets.exists() else 0

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
        "report_html_kib": None if report_kib is None else round(report_kib, 1),
        "report_assets_kib": round(assets_kib, 1),
        "targets": {
            "off_le_third_of_backtesting_py": wall["cascade_off"] <= btpy / 3,
            "off_le_200_mib": rss["cascade_off"] <= 200,
            "report_le_1.5x_backtesting_py": wall["cascade_report"] <= 1.5 * btpy,
            "report_le_350_mib": rss["cascade_report"] <= 350,
            "help_le_0.3_s": wall["help"] <= 0.3,
        },
    }
    try:
        off, bt = json.loads(summaries["cascade_off"]), json.loads(summaries["backtesting_py"])
        result["trades"] = {"cascade": off.get("n_trades"), "backtesting_py": bt.get("trades"), "bars": bt.get("bars")}
    except (json.JSONDecodeError, TypeError):
        pass
    print(f"{'command':<16}{'median s':>10}{'first s':>10}{'peak MiB':>10}")
    for n in cmds:
        print(f"{n:<16}{wall[n]:>10.3f}{first[n]:>10.3f}{rss[n]:>10.1f}")
    print(f"cascade (report off) / backtesting.py: {result['ratio_off_vs_backtesting_py']:.3f}  (target <= 0.333)")
    print(f"cascade (report on)  / backtesting.py: {result['ratio_report_vs_backtesting_py']:.3f}  (target <= 1.5)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
