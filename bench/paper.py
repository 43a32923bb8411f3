"""Paper replay speed: a month of 1h bars through the runner, lock-step on the replay exchange.

Runs one strategy over one month of the bundled BTC/USDT:USDT sample three ways, in this process:

* ``backtest``: `backtests.runner.run` with the fast engine (load, signals once, kernel, stats);
* ``paper_sim``: the runner with the in-process broker, prices fetched through ccxt from an
  in-process replay exchange whose clock is driven bar by bar (signals recomputed at every close);
* ``paper_exchange``: the same with the exchange broker (market orders, a resting stop, fills and the
  wallet read back through ccxt on loopback at every bar).

Prints seconds, bars per second and the ratio to the backtest, whether each paper run made the
backtest's trades (`cascade compare`'s rule), and a JSON last line (``{"bench": "paper", ...}``).
Target: a month replays in minutes (the issue's "a month in minutes").

    python bench/paper.py                                  # ema_cross with ATR stops, 2025-06
    python bench/paper.py --strategy sr_levels --month 2025-03
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backtests.runner import resolve_strategy  # noqa: E402
from backtests.runner import run as backtest_run  # noqa: E402
from bot.commands.paper import compare_trades  # noqa: E402
from bot.config import parse_config  # noqa: E402
from bot.live.runner import lockstep  # noqa: E402
from bot.live.session import build  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strategy", default=str(ROOT / "examples" / "ema_cross.py"))
    ap.add_argument("--param", action="append", default=None, help="KEY=VALUE (default stop_atr=2 for ema_cross)")
    ap.add_argument("--month", default="2025-06")
    args = ap.parse_args()
    start = pd.Timestamp(args.month + "-01", tz="UTC")
    end = start + pd.offsets.MonthBegin(1)
    params = dict(p.split("=", 1) for p in (args.param or (["stop_atr=2"] if "ema_cross" in args.strategy else [])))
    params = {k: float(v) for k, v in params.items()}
    out: dict = {"bench": "paper", "strategy": Path(args.strategy).stem, "month": args.month}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_config({"backtest": {"engine": "fast", "from": str(start.date()), "to": str(end.date()),
                                         "strategy": args.strategy, "results_dir": f"{tmp}/results"},
                            "live": {"runs_dir": tmp, "settle_seconds": 1.0}})
        t0 = time.perf_counter()
        bt = backtest_run(cfg, params).result.trades
        out["backtest_s"] = time.perf_counter() - t0
        bars = int((end - start) / pd.Timedelta("1h"))
        spec, p = resolve_strategy(cfg, args.strategy, params)
        for broker in ("sim", "exchange"):
            t0 = time.perf_counter()
            s = build(cfg, spec, p, broker=broker, run=broker, start=start, end=end, lockstep=True, quiet=True)
            try:
                wakes = lockstep(s.server, s.runner, int(end.value // 1_000_000))
                trades = pd.DataFrame(s.store.trades())
            finally:
                s.close()
            seconds = time.perf_counter() - t0
            if len(trades):
                trades["entry_time"] = pd.to_datetime(trades["entry_ms"], unit="ms", utc=True)
                trades["exit_time"] = pd.to_datetime(trades["exit_ms"], unit="ms", utc=True)
            _, diffs = compare_trades(bt, trades, 0.001) if len(trades) or len(bt) else ([], 0)
            out[f"paper_{broker}_s"] = seconds
            out[f"paper_{broker}_wakes"] = wakes
            out[f"paper_{broker}_differences"] = diffs
        out["bars"] = bars
        out["trades"] = len(bt)
    print(f"{bars} bars of BTC/USDT:USDT 1h, {args.month}, {out['strategy']}: {out['trades']} trades", file=sys.stderr)
    print(f"{'run':<16}{'seconds':>10}{'bars/s':>10}{'x backtest':>12}{'same trades':>13}", file=sys.stderr)
    print(f"{'backtest':<16}{out['backtest_s']:>10.2f}{bars / out['backtest_s']:>10.0f}{1.0:>12.1f}{'-':>13}",
          file=sys.stderr)
    for broker in ("sim", "exchange"):
        sec = out[f"paper_{broker}_s"]
        same = "yes" if out[f"paper_{broker}_differences"] == 0 else f"{out[f'paper_{broker}_differences']} diff"
        print(f"{'paper_' + broker:<16}{sec:>10.2f}{bars / sec:>10.0f}{sec / out['backtest_s']:>12.1f}{same:>13}",
              file=sys.stderr)
    ok = out["paper_exchange_s"] < 600
    print(f"  {'ok  ' if ok else 'MISS'} a month replays in minutes on the exchange broker "
          f"({out['paper_exchange_s'] / 60:.1f} min)", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
