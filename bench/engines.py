"""Engine speed: one signal frame on a year of 5m BTC through every way we can run it.

Runs the same precomputed signal frame (the default strategy, or an EMA cross with ATR stops when
``--signals ema``) over the last 105,120 5m bars of the bundled BTC/USDT:USDT sample through:

* ``fast``: our numba engine via ``backtests.engines.run_backtest(..., engine="fast")`` (the whole
  call, input checks, ATR/volatility preparation and result frames included: what a user pays);
* ``fast_kernel``: the same engine's numba kernel alone on arrays prepared once;
* ``backtrader``: our backtrader engine (risk layer, funding, liquidation, protections);
* ``plain_backtrader``: a trivial ``bt.Strategy`` over ``PandasData`` placing the same kind of
  orders (market entries sized from the stop, a resting stop order, market exits), no extras:
  the floor our backtrader engine's overhead is measured against;
* ``vectorbt``: ``Portfolio.from_signals`` with the signals shifted one bar and filled at the open,
  ``sl_stop``/``tp_stop`` from the strategy's stop/take-profit distances, fees and slippage;
* ``bare``: a minimal numba position loop over the same arrays (entry at next open, stop and
  take-profit checks against high/low, exit on signal change, fees): the speed ceiling.

Timings are warm (best of ``--repeat``); numba compile time is reported separately (``*_compile_s``:
first call minus warm call; small when numba's on-disk cache already holds the kernel). Prints a
table and, as the last line, a JSON object (``{"bench": "engines", ...}``). Targets: fast >= 1,000x
our backtrader engine and >= 3x vectorbt (the whole call: like those peers it takes a DataFrame and
returns result tables); within 3x of bare (loop against loop: the kernel, since the bare loop takes
prepared arrays and returns no tables; the whole call's ratio is printed too); our backtrader engine
<= 50 % over plain backtrader. ``fast_bars_per_s`` in the JSON is always the whole call.

    python bench/engines.py                 # full run (backtrader takes a minute or two)
    python bench/engines.py --bars 20000    # quicker
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba as nb
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SYMBOL, TIMEFRAME, BARS = "BTC/USDT:USDT", "5m", 105_120


# -- Data and signals --------------------------------------------------------------------------


def load_frame(bars: int) -> pd.DataFrame:
    from backtests.sample import load_sample_frame

    frame = load_sample_frame(SYMBOL, TIMEFRAME)
    return frame.iloc[-bars:]


def ema_atr_signals(frame: pd.DataFrame, fast: int = 48, slow: int = 192, atr_n: int = 14,
                    atr_mult: float = 3.0) -> pd.DataFrame:
    """EMA cross, always in the market, stop ``atr_mult`` ATRs from the close (fallback signals)."""
    close = frame["close"]
    diff = close.ewm(span=fast, adjust=False).mean() - close.ewm(span=slow, adjust=False).mean()
    prev = close.shift()
    tr = pd.concat([frame["high"] - frame["low"], (frame["high"] - prev).abs(), (frame["low"] - prev).abs()],
                   axis=1).max(axis=1)
    atr = tr.ewm(alpha=1 / atr_n, adjust=False).mean()
    target = np.sign(diff).where(np.arange(len(frame)) >= slow, 0.0)
    stop = (close - atr_mult * atr * target).where(target != 0)
    return pd.DataFrame({"target": target.astype(float), "stop": stop, "take_profit": np.nan}, index=frame.index)


def make_signals(frame: pd.DataFrame, which: str) -> tuple[str, pd.DataFrame]:
    if which == "ema":
        return "ema_cross_atr", ema_atr_signals(frame)
    from strategies import DEFAULT_STRATEGY, get_strategy, make_params

    name = DEFAULT_STRATEGY if which == "default" else which
    module = get_strategy(name)
    return name, module.signals(frame, make_params(name, {}))


# -- Bare numba loop ---------------------------------------------------------------------------


@nb.njit(cache=False)
def bare_loop(o, h, lo, c, target, stop, take, fee, slip, cash0, risk, max_lev):  # pragma: no cover
    """Minimal position loop: returns (equity per bar, number of trades)."""
    n = o.shape[0]
    eq = np.empty(n)
    cash, pos, entry, st, tp = cash0, 0.0, 0.0, np.nan, np.nan
    trades = 0
    eq[0] = cash
    for i in range(1, n):
        want = 0.0 if np.isnan(target[i - 1]) else np.sign(target[i - 1])
        side = np.sign(pos)
        if side != want and pos != 0.0:  # signal exit at the open
            px = o[i] * (1.0 - slip * side)
            cash += pos * (px - entry) - abs(pos) * px * fee
            pos = 0.0
            side = 0.0
        if pos == 0.0 and want != 0.0:  # entry at the open, sized from the stop
            px = o[i] * (1.0 + slip * want)
            st, tp = stop[i - 1], take[i - 1]
            qty = cash * max_lev / px
            if not np.isnan(st) and abs(px - st) > 0.0:
                qty = min(cash * risk / abs(px - st), qty)
            pos = want * qty
            entry = px
            cash -= qty * px * fee
            trades += 1
        if pos > 0.0:
            if not np.isnan(st) and lo[i] <= st:
                px = min(o[i], st) * (1.0 - slip)
                cash += pos * (px - entry) - pos * px * fee
                pos = 0.0
            elif not np.isnan(tp) and h[i] >= tp:
                px = max(o[i], tp)
                cash += pos * (px - entry) - pos * px * fee
                pos = 0.0
        elif pos < 0.0:
            if not np.isnan(st) and h[i] >= st:
                px = max(o[i], st) * (1.0 + slip)
                cash += pos * (px - entry) + pos * px * fee
                pos = 0.0
            elif not np.isnan(tp) and lo[i] <= tp:
                px = min(o[i], tp)
                cash += pos * (px - entry) + pos * px * fee
                pos = 0.0
        eq[i] = cash + pos * (c[i] - entry)
    return eq, trades


def run_bare(frame: pd.DataFrame, signals: pd.DataFrame, fee: float, slip: float, cash: float) -> int:
    arrays = [frame[k].to_numpy(np.float64) for k in ("open", "high", "low", "close")]
    arrays += [signals[k].to_numpy(np.float64) for k in ("target", "stop", "take_profit")]
    _, trades = bare_loop(*arrays, fee, slip, cash, 0.01, 5.0)
    return int(trades)


# -- vectorbt ------------------------------------------------------------------------------------


def run_vectorbt(frame: pd.DataFrame, signals: pd.DataFrame, fee: float, slip: float, cash: float) -> int:
    import vectorbt as vbt

    target = signals["target"].shift(1).fillna(0.0)  # decided at the close, filled at the next open
    close_prev = frame["close"].shift(1)
    sl = ((close_prev - signals["stop"].shift(1)).abs() / close_prev).to_numpy()
    tp = ((signals["take_profit"].shift(1) - close_prev).abs() / close_prev).to_numpy()
    pf = vbt.Portfolio.from_signals(
        frame["close"], entries=target > 0, exits=target <= 0, short_entries=target < 0, short_exits=target >= 0,
        price=frame["open"], open=frame["open"], high=frame["high"], low=frame["low"],
        sl_stop=np.where(np.isfinite(sl), sl, np.inf), tp_stop=np.where(np.isfinite(tp), tp, np.inf),
        fees=fee, slippage=slip, init_cash=cash, freq="5min")
    return int(pf.trades.count())


# -- Plain backtrader --------------------------------------------------------------------------


def _side(target: float) -> int:
    return 0 if math.isnan(target) else (target > 0) - (target < 0)


def _plain_qty(equity: float, price: float, stop: float) -> float:
    qty = equity * 5.0 / price
    if not math.isnan(stop) and stop != price:
        qty = min(equity * 0.01 / abs(price - stop), qty)
    return qty


def run_plain_backtrader(frame: pd.DataFrame, signals: pd.DataFrame, fee: float, slip: float, cash: float) -> int:
    import backtrader as bt

    class Feed(bt.feeds.PandasData):
        lines = ("target", "stop_price")  # "stop" would shadow the feed's stop() method
        params = (("target", -1), ("stop_price", -1), ("openinterest", None))

    class Plain(bt.Strategy):
        def __init__(self) -> None:
            self.stop_order = None
            self.trades = 0

        def notify_trade(self, trade: Any) -> None:
            if trade.isclosed:
                self.trades += 1

        def next(self) -> None:
            want = _side(self.data.target[0])
            size = self.position.size
            side = (size > 0) - (size < 0)
            if side == want:
                return
            if self.stop_order is not None:
                self.cancel(self.stop_order)
                self.stop_order = None
            if size:
                self.close()
            if want:
                stop, price = self.data.stop_price[0], self.data.close[0]
                qty = _plain_qty(self.broker.getvalue(), price, stop)
                if want > 0:
                    self.buy(size=qty)
                    if not math.isnan(stop):
                        self.stop_order = self.sell(size=qty, exectype=bt.Order.Stop, price=stop)
                else:
                    self.sell(size=qty)
                    if not math.isnan(stop):
                        self.stop_order = self.buy(size=qty, exectype=bt.Order.Stop, price=stop)

    data = frame[["open", "high", "low", "close", "volume"]].copy()
    data["target"] = signals["target"].to_numpy()
    data["stop_price"] = signals["stop"].to_numpy()
    data.index = data.index.tz_convert(None)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(Feed(dataname=data))
    cerebro.addstrategy(Plain)
    cerebro.broker.setcash(cash)
    cerebro.broker.setcommission(commission=fee, leverage=5.0)
    cerebro.broker.set_slippage_perc(slip)
    strat = cerebro.run()[0]
    return int(strat.trades)


# -- Our engines -------------------------------------------------------------------------------


def engine_runner(name: str) -> Callable[..., int]:
    from backtests.engines import run_backtest
    from bot.config import BacktestConfig, MarketCosts, RiskConfig

    def run(frame: pd.DataFrame, signals: pd.DataFrame, fee: float, slip: float, cash: float) -> int:
        cfg = BacktestConfig(engine=name, initial_cash=cash)
        result = run_backtest(frame, signals, cfg, RiskConfig(), engine=name, symbol=SYMBOL,
                              costs=MarketCosts(taker_fee=fee, slippage_bps=slip * 1e4))
        return len(result.trades)

    return run


def fast_kernel_runner() -> Callable[..., int]:
    """Only the numba kernel of the fast engine, on arrays prepared once (no input checks, no
    ATR/volatility preparation, no result frames): the part comparable with the bare loop."""
    from backtests.engines.common import prepare
    from backtests.engines.fast import run_raw
    from bot.config import BacktestConfig, MarketCosts, RiskConfig

    cache: dict[int, Any] = {}

    def run(frame: pd.DataFrame, signals: pd.DataFrame, fee: float, slip: float, cash: float) -> int:
        key = id(signals)
        if key not in cache:
            cfg = BacktestConfig(engine="fast", initial_cash=cash)
            cache[key] = prepare(frame, signals, cfg, RiskConfig(), SYMBOL,
                                 MarketCosts(taker_fee=fee, slippage_bps=slip * 1e4))
        return len(run_raw(cache[key]).trade_int)

    return run


# -- Timing --------------------------------------------------------------------------------------


def timed(fn: Callable[..., int], args: tuple[Any, ...], repeat: int, warmup: bool) -> dict[str, float]:
    """First-call time (includes numba compilation), best warm time, and the trade count."""
    first = None
    if warmup:
        t0 = time.perf_counter()
        fn(*args)
        first = time.perf_counter() - t0
    best, trades = math.inf, 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        trades = fn(*args)
        best = min(best, time.perf_counter() - t0)
    out = {"seconds": best, "trades": trades}
    if first is not None:
        out["compile_s"] = max(first - best, 0.0)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=BARS)
    ap.add_argument("--signals", default="default", help="default | ema | a strategy name")
    ap.add_argument("--repeat", type=int, default=3, help="warm repetitions for the fast runs")
    ap.add_argument("--skip-backtrader", action="store_true", help="skip both backtrader runs")
    args = ap.parse_args(argv)

    frame = load_frame(args.bars)
    try:
        sig_name, signals = make_signals(frame, args.signals)
    except ImportError as err:  # strategies not importable: fall back to the EMA cross
        print(f"strategies unavailable ({err}); using the EMA cross with ATR stops", file=sys.stderr)
        sig_name, signals = make_signals(frame, "ema")
    from bot.config import CostsConfig

    costs = CostsConfig().for_symbol(SYMBOL)  # the [costs] defaults for BTC: taker 0.05 %, 1 bp
    fee, slip, cash = costs.taker_fee, costs.slippage_bps / 10_000.0, 10_000.0
    n = len(frame)
    call = (frame, signals, fee, slip, cash)
    print(f"{n:,} bars of {SYMBOL} {TIMEFRAME} ({frame.index[0]} → {frame.index[-1]}), signals: {sig_name}",
          file=sys.stderr)

    runs: dict[str, dict[str, float]] = {}
    runs["fast"] = timed(engine_runner("fast"), call, args.repeat, warmup=True)
    runs["fast_kernel"] = timed(fast_kernel_runner(), call, args.repeat, warmup=True)
    runs["bare"] = timed(run_bare, call, args.repeat, warmup=True)
    try:
        runs["vectorbt"] = timed(run_vectorbt, call, args.repeat, warmup=True)
    except ImportError:  # the optional `bench` extra is not installed
        print("vectorbt not installed (pip install .[bench]); its comparison is skipped", file=sys.stderr)
    if not args.skip_backtrader:
        runs["backtrader"] = timed(engine_runner("backtrader"), call, 1, warmup=False)
        runs["plain_backtrader"] = timed(run_plain_backtrader, call, 1, warmup=False)

    print(f"{'engine':<18}{'seconds':>10}{'bars/s':>16}{'compile s':>11}{'trades':>8}", file=sys.stderr)
    for name, r in runs.items():
        print(f"{name:<18}{r['seconds']:>10.4f}{n / r['seconds']:>16,.0f}"
              f"{r.get('compile_s', float('nan')):>11.2f}{r['trades']:>8}", file=sys.stderr)

    out: dict[str, Any] = {"bench": "engines", "bars": n, "signals": sig_name}
    for name, r in runs.items():
        out[f"{name}_bars_per_s"] = round(n / r["seconds"], 1)
        out[f"{name}_seconds"] = round(r["seconds"], 6)
        out[f"{name}_trades"] = int(r["trades"])
        if "compile_s" in r:
            out[f"{name}_compile_s"] = round(r["compile_s"], 3)
    fast = runs["fast"]["seconds"]
    targets: dict[str, bool] = {}
    if "vectorbt" in runs:
        out["fast_vs_vectorbt"] = round(runs["vectorbt"]["seconds"] / fast, 2)
        out["fast_kernel_vs_vectorbt"] = round(runs["vectorbt"]["seconds"] / runs["fast_kernel"]["seconds"], 2)
        targets["fast_vs_vectorbt >= 3"] = out["fast_vs_vectorbt"] >= 3
    # "x slower than bare": the whole call, and the kernel alone (the loop-for-loop comparison)
    out["fast_vs_bare"] = round(fast / runs["bare"]["seconds"], 2)
    out["fast_kernel_vs_bare"] = round(runs["fast_kernel"]["seconds"] / runs["bare"]["seconds"], 2)
    if "backtrader" in runs:
        out["fast_vs_backtrader"] = round(runs["backtrader"]["seconds"] / fast, 1)
        out["fast_kernel_vs_backtrader"] = round(runs["backtrader"]["seconds"] / runs["fast_kernel"]["seconds"], 1)
        out["backtrader_overhead_vs_plain"] = round(
            runs["backtrader"]["seconds"] / runs["plain_backtrader"]["seconds"] - 1.0, 3)
    targets["fast kernel within 3x of bare"] = out["fast_kernel_vs_bare"] <= 3
    if "backtrader" in runs:
        targets["fast_vs_backtrader >= 1000"] = out["fast_vs_backtrader"] >= 1000
        targets["backtrader overhead <= 50 %"] = out["backtrader_overhead_vs_plain"] <= 0.5
    for label, ok in targets.items():
        print(f"  {'ok  ' if ok else 'MISS'} {label}", file=sys.stderr)
    out["targets_met"] = all(targets.values())
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
