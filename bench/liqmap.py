"""Benchmark: the numba liquidation-map estimator against the plain NumPy reference of the same model.

One year of 5m BTC/USDT:USDT from the bundled sample (the last 105,000 bars), five default
tiers, a 0.05 % grid (≥ 2,000 bins). The kernel is timed warm, after a compile run, as the best
of three runs. The reference runs in the same process. It costs about a millisecond per bar, so
by default it runs on the first ``--reference-bars`` bars only. Its full-year time is then
extrapolated: the measured time, plus the bars left times the per-bar rate of its last 20 %. That
rate is the steady state once the 30-day window has filled.
``--full-reference`` runs it on every bar instead. The kernel's results are checked against the
reference on the bars both ran.

Usage: ``python bench/liqmap.py [--bars 105000] [--reference-bars 20000] [--full-reference]``.
The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _liqmap_reference import reference_run  # noqa: E402

from backtests.sample import load_sample_frame  # noqa: E402
from strategies.features.liquidation_map import (  # noqa: E402
    FEATURE_COLUMNS,
    LiqMapParams,
    prepare_inputs,
    run_kernel,
)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=105_000)
    ap.add_argument("--bucket-pct", type=float, default=0.05)
    ap.add_argument("--reference-bars", type=int, default=20_000)
    ap.add_argument("--full-reference", action="store_true")
    args = ap.parse_args(argv)

    frame = load_sample_frame("BTC/USDT:USDT", "5m").iloc[-args.bars:]
    params = LiqMapParams(bucket_pct=args.bucket_pct)
    inputs = prepare_inputs(frame, params)
    n, bins = len(frame), int(inputs.centres.size)
    print(f"data: {n:,} bars of 5m BTC/USDT:USDT, {frame.index[0]} .. {frame.index[-1]}")
    print(f"grid: {bins:,} bins of {args.bucket_pct} %, tiers {[lev for lev, _ in params.tiers]}")

    t0 = time.perf_counter()
    run_kernel(inputs)
    print(f"kernel first call (compile or cache load): {time.perf_counter() - t0:.2f} s")
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        feats, _, _ = run_kernel(inputs)
        runs.append(time.perf_counter() - t0)
    seconds = min(runs)
    print(f"kernel warm: {seconds:.3f} s (best of 3: {', '.join(f'{r:.3f}' for r in runs)}), "
          f"{seconds / n * 1e6:.2f} µs/bar")

    m = n if args.full_reference else min(args.reference_bars, n)
    clock: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    ref, _, _ = reference_run(inputs, n_bars=m, clock=clock)
    ref_time = time.perf_counter() - t0
    if m < n:
        # steady-state rate over the last 20 % of the measured bars (the window has filled by then)
        k0, c0 = next((k, c) for k, c in clock if k >= 0.8 * m)
        k1, c1 = clock[-1]
        rate = (c1 - c0) / max(k1 - k0, 1)
        reference_seconds = ref_time + rate * (n - m)
        how = (f"EXTRAPOLATED: measured {ref_time:.1f} s on the first {m:,} bars, then the rate of their "
               f"last 20 % ({rate * 1e3:.3f} ms/bar) for the other {n - m:,}")
    else:
        reference_seconds = ref_time
        how = f"measured on all {n:,} bars"
    print(f"reference (NumPy): {reference_seconds:.1f} s ({how})")

    got = feats[:m]
    same_nan = bool(np.array_equal(np.isnan(got), np.isnan(ref)))
    unitless = np.array([("asym" in c or "imbalance" in c or "dist" in c) for c in FEATURE_COLUMNS])
    diff = np.abs(np.nan_to_num(got) - np.nan_to_num(ref))
    usd_scale = np.maximum(np.abs(np.nan_to_num(ref)), 1e-9 * np.nanmax(np.abs(ref), axis=0))
    max_rel_usd = float(np.max(diff[:, ~unitless] / np.maximum(usd_scale[:, ~unitless], 1e-300)))
    max_abs_unitless = float(np.max(diff[:, unitless]))
    print(f"kernel vs reference on {m:,} bars: NaN pattern equal={same_nan}, USD columns max relative "
          f"difference {max_rel_usd:.1e}, log-ratio/distance columns max absolute difference {max_abs_unitless:.1e}")

    speedup = reference_seconds / seconds
    print(f"speedup: {speedup:,.0f}x   (targets: < 1 s warm, >= 20x)")
    result = {"bench": "liqmap", "bars": n, "bins": bins, "seconds": round(seconds, 4),
              "reference_seconds": round(reference_seconds, 2), "speedup": round(speedup, 1),
              "reference_extrapolated": m < n}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
