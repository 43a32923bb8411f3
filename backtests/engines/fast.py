"""The fast engine: one numba-compiled loop over NumPy arrays (docs/architecture.md, "Two engines").

The kernel walks the bars once and calls the core for each: `bot.core.bar_open` at the open (exit and
entry decided at the last close, then the intrabar rule) and `bot.core.bar_close` at the close
(funding, the end-of-data close, equity and protections, the next decision). It only writes the
per-bar outputs and the trade records; every rule is in `bot.core` / `bot.risk`.

``engine="fast"`` runs this kernel precompiled (`backtests.engines.compiled`: the same source, no
numba at run time); `run_raw` here is the JIT form, the fallback and the reference the precompiled
one is tested against.
"""

from __future__ import annotations

import time

import numba as nb
import numpy as np

from backtests.engines.common import Prepared, RawRun, kernel_args, raw_from_kernel
from bot.core.state import Bar, Signal, Trade, flat_position, new_account, no_intent
from bot.core.step import bar_close, bar_open
from bot.risk.execution import EXIT_NONE


@nb.njit(cache=True)
def _write(ti: np.ndarray, tf: np.ndarray, nt: int, t: Trade) -> int:
    """Store trade ``t`` as row ``nt`` if it is one; return the new trade count."""
    if t.reason == EXIT_NONE:
        return nt
    ti[nt, 0] = t.entry_bar
    ti[nt, 1] = t.exit_bar
    ti[nt, 2] = t.side
    ti[nt, 3] = t.reason
    tf[nt, 0] = t.qty
    tf[nt, 1] = t.entry_price
    tf[nt, 2] = t.exit_price
    tf[nt, 3] = t.stop
    tf[nt, 4] = t.pnl
    tf[nt, 5] = t.fees
    tf[nt, 6] = t.funding
    return nt + 1


@nb.njit(cache=True)
def kernel(tm, o, h, lo, c, mo, mh, ml, fr, fm, tgt, sstop, stp, atr, vol, p, br, initial_cash):
    """Run the backtest; return per-bar arrays, trade arrays and the liquidation count."""
    n = o.shape[0]
    eq_out = np.empty(n)
    cash_out = np.empty(n)
    pos_out = np.empty(n)
    fund_out = np.empty(n)
    fees_out = np.empty(n)
    state_out = np.empty(n, dtype=np.int8)
    ti = np.empty((n + 1, 4), dtype=np.int64)  # every trade needs its own entry
    tf = np.empty((n + 1, 7))
    nt = 0
    pos = flat_position()
    acct = new_account(initial_cash, tm[0])
    intent = no_intent()
    for k in range(n):
        bar = Bar(tm[k], o[k], h[k], lo[k], c[k], mo[k], mh[k], ml[k], fr[k], fm[k])
        if pos.side != 0 or intent.side != 0:  # idle bars skip the open entirely
            pos, acct, at_open, _, intrabar = bar_open(p, br, pos, acct, intent, k, bar)
            nt = _write(ti, tf, nt, at_open)
            nt = _write(ti, tf, nt, intrabar)
        pos, acct, end, equity, state, intent = bar_close(p, br, pos, acct, k, bar, k == n - 1,
                                                          Signal(tgt[k], sstop[k], stp[k], atr[k], vol[k]))
        nt = _write(ti, tf, nt, end)
        eq_out[k] = equity
        cash_out[k] = acct.cash
        pos_out[k] = pos.side * pos.qty
        fund_out[k] = acct.funding
        fees_out[k] = acct.fees
        state_out[k] = state
    return eq_out, cash_out, pos_out, fund_out, fees_out, state_out, ti[:nt], tf[:nt], acct.n_liquidations


def run_raw(prep: Prepared) -> RawRun:
    """Run the JIT kernel on prepared arrays; return the raw books (`backtests.engines.compiled.run_raw`
    runs the same kernel precompiled, which is what ``engine="fast"`` uses)."""
    return raw_from_kernel(kernel(*kernel_args(prep)))


def warm_up() -> float:
    """Compile the kernel on a tiny frame (or load it from numba's cache); return the seconds taken."""
    import pandas as pd

    from backtests.engines.common import prepare
    from bot.config import BacktestConfig, MarketCosts, RiskConfig

    start = time.perf_counter()
    index = pd.date_range("2025-01-01", periods=8, freq="1h", tz="UTC", name="time")
    close = np.linspace(100.0, 107.0, 8)
    frame = pd.DataFrame({"open": close, "high": close + 1, "low": close - 1, "close": close,
                          "volume": 1.0}, index=index)
    signals = pd.DataFrame({"target": [0, 1, 1, 1, -1, -1, 0, 0], "stop": np.nan, "take_profit": np.nan},
                           index=index, dtype=float)
    run_raw(prepare(frame, signals, BacktestConfig(), RiskConfig(), costs=MarketCosts()))
    return time.perf_counter() - start
