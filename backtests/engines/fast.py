"""The fast engine: one numba-compiled pass over NumPy arrays (docs/architecture.md, "Two engines").

The kernel walks the bars once. For bar ``k`` it does, in this order (the same order the backtrader
engine's ``next_open``/``next`` follow):

1. at the open: the exit decided at close ``k−1`` (signal or protection), then the entry decided
   there (a flip does both), as market orders;
2. inside the bar: liquidation / stop / take-profit of the open position (`intrabar_exit`);
3. at the close: funding on the position still held (margin and liquidation price updated);
4. on the last bar: the end-of-data close;
5. the mark-to-market equity and the protection state;
6. trailing/tightened stops, then the decision for bar ``k+1``.

Every rule it applies is a `bot.risk` function; the kernel only keeps the books.
"""

from __future__ import annotations

import math
import time

import numba as nb
import numpy as np

from backtests.engines.common import (
    TF_ENTRY_PRICE,
    TF_EXIT_PRICE,
    TF_FEES,
    TF_FUNDING,
    TF_PNL,
    TF_QTY,
    TF_STOP,
    TI_ENTRY_BAR,
    TI_EXIT_BAR,
    TI_REASON,
    TI_SIDE,
    Prepared,
    RawRun,
)
from bot.risk.execution import (
    EXIT_END,
    EXIT_LIQUIDATION,
    EXIT_NONE,
    EXIT_PROTECTION,
    EXIT_SIGNAL,
    EXIT_STOP,
    forced_exit,
    intrabar_exit,
    market_fill,
    target_action,
    target_side,
)
from bot.risk.liquidation import bankruptcy_price, isolated_margin, liquidation_price
from bot.risk.params import (
    P_ATR_MULT,
    P_COOLDOWN_BARS,
    P_COOLDOWN_STOPOUTS,
    P_DAILY_LOSS,
    P_LIQUIDATION_BUFFER,
    P_MAX_DRAWDOWN,
    P_MAX_LEVERAGE,
    P_REDUCE_DRAWDOWN,
    P_SLIPPAGE,
    P_STOP,
    P_STOP_PCT,
    P_TAKER_FEE,
    STOP_STRATEGY,
    STOP_TRAILING_ATR,
)
from bot.risk.protections import HALTED, allows, new_state, record_exit, update_state
from bot.risk.sizing import entry_quantity
from bot.risk.stops import clamp_to_liquidation, entry_stop, stop_distance, tighter, trail_stop


@nb.njit(cache=True)
def _book_exit(ti: np.ndarray, tf: np.ndarray, nt: int, side: int, qty: float, entry: float, price: float,
               fee_rate: float, entry_fee: float, funding: float, stop0: float, entry_bar: int, bar: int,
               reason: int) -> tuple[float, float, float]:
    """Write trade ``nt``; return (cash change, exit fee, pnl)."""
    fee = 0.0 if reason == EXIT_LIQUIDATION else qty * price * fee_rate
    price_pnl = side * qty * (price - entry)
    pnl = price_pnl - entry_fee - fee + funding
    ti[nt, TI_ENTRY_BAR] = entry_bar
    ti[nt, TI_EXIT_BAR] = bar
    ti[nt, TI_SIDE] = side
    ti[nt, TI_REASON] = reason
    tf[nt, TF_QTY] = qty
    tf[nt, TF_ENTRY_PRICE] = entry
    tf[nt, TF_EXIT_PRICE] = price
    tf[nt, TF_STOP] = stop0
    tf[nt, TF_PNL] = pnl
    tf[nt, TF_FEES] = entry_fee + fee
    tf[nt, TF_FUNDING] = funding
    return price_pnl - fee, fee, pnl


@nb.njit(cache=True)
def kernel(o, h, lo, c, mo, mh, ml, mc, fr, tgt, sstop, stp, atr, vol, day, p, floor, cap, mmr, cum,
           blev, initial_cash):  # noqa: C901 - one pass, kept in one place on purpose
    """Run the backtest; return per-bar arrays, trade arrays, trade count and liquidations."""
    n = o.shape[0]
    eq_out = np.empty(n)
    cash_out = np.empty(n)
    pos_out = np.empty(n)
    fund_out = np.empty(n)
    fees_out = np.empty(n)
    state_out = np.empty(n, dtype=np.int8)
    ti = np.empty((n + 1, 4), dtype=np.int64)
    tf = np.empty((n + 1, 7))
    nt = 0

    fee_rate = p[P_TAKER_FEE]
    slip = p[P_SLIPPAGE]
    mode = int(p[P_STOP])
    pct = p[P_STOP_PCT]
    mult = p[P_ATR_MULT]
    max_lev = p[P_MAX_LEVERAGE]
    buffer = p[P_LIQUIDATION_BUFFER]
    n_stopouts = int(p[P_COOLDOWN_STOPOUTS])
    cool_bars = int(p[P_COOLDOWN_BARS])

    cash = initial_cash
    fund_cum = 0.0
    fees_cum = 0.0
    n_liq = 0
    # the open position
    side = 0
    qty = 0.0
    entry = 0.0
    stop = np.nan
    tp = np.nan
    margin = 0.0
    lp = np.nan
    bp = np.nan
    entry_bar = 0
    entry_fee = 0.0
    funding = 0.0
    stop0 = np.nan
    entry_equity = 0.0
    # the orders decided at the last close
    pend_exit = EXIT_NONE
    pend_side = 0
    pend_qty = 0.0
    pend_sstop = np.nan
    pend_dist = np.nan
    pend_tp = np.nan
    pend_equity = 0.0
    blocked = 0
    # Kelly statistics of closed trades (returns on the equity at the entry decision)
    n_win = 0
    n_loss = 0
    sum_win = 0.0
    sum_loss = 0.0
    max_drawdown = p[P_MAX_DRAWDOWN]
    reduce_drawdown = p[P_REDUCE_DRAWDOWN]
    daily_loss = p[P_DAILY_LOSS]
    # a value, not an array: stores into an array the outputs might alias would force reloads every bar
    ps = new_state(initial_cash, day[0])

    for k in range(n):
        # 1. market orders at the open (none when flat without an entry pending: most bars)
        for leg in range(2 if side != 0 or pend_side != 0 else 0):
            reason = EXIT_NONE
            price = 0.0
            if leg == 0 and pend_exit != EXIT_NONE and side != 0:
                reason = pend_exit
                price = market_fill(-side, o[k], h[k], lo[k], slip)
            elif leg == 1:
                # 2. inside the bar, after any entry at its open
                if pend_side != 0:
                    side = pend_side
                    qty = pend_qty
                    entry = market_fill(side, o[k], h[k], lo[k], slip)
                    entry_fee = qty * entry * fee_rate
                    cash -= entry_fee
                    fees_cum += entry_fee
                    margin = isolated_margin(qty * entry, max_lev, cap, blev)
                    lp = liquidation_price(side, qty, entry, margin, cap, mmr, cum)
                    bp = bankruptcy_price(side, qty, entry, margin)
                    stop = entry_stop(mode, entry, side, pend_sstop, pend_dist)
                    stop = clamp_to_liquidation(stop, lp, entry, side, buffer)
                    stop0 = stop
                    tp = pend_tp
                    entry_bar = k
                    funding = 0.0
                    entry_equity = pend_equity
                if side != 0:
                    reason, price = intrabar_exit(side, o[k], h[k], lo[k], mo[k], mh[k], ml[k], stop, tp, lp, slip)
                    if reason == EXIT_LIQUIDATION:
                        price = bp
                        n_liq += 1
            if reason != EXIT_NONE:
                delta, fee, pnl = _book_exit(ti, tf, nt, side, qty, entry, price, fee_rate, entry_fee, funding,
                                             stop0, entry_bar, k, reason)
                nt += 1
                cash += delta
                fees_cum += fee
                r = pnl / entry_equity if entry_equity > 0.0 else 0.0
                if r > 0.0:
                    n_win += 1
                    sum_win += r
                elif r < 0.0:
                    n_loss += 1
                    sum_loss -= r
                ps = record_exit(ps, reason == EXIT_STOP or reason == EXIT_LIQUIDATION, k, n_stopouts, cool_bars)
                if forced_exit(reason):
                    blocked = side
                side = 0
                qty = 0.0
        pend_exit = EXIT_NONE
        pend_side = 0

        # 3. funding settles at this bar's close on the position held then
        if side != 0 and not math.isnan(fr[k]):
            flow = -side * qty * mc[k] * fr[k]
            cash += flow
            margin += flow
            funding += flow
            fund_cum += flow
            lp = liquidation_price(side, qty, entry, margin, cap, mmr, cum)
            bp = bankruptcy_price(side, qty, entry, margin)

        # 4. end of data: close at the last close
        if k == n - 1 and side != 0:
            price = market_fill(-side, c[k], h[k], lo[k], slip)
            delta, fee, pnl = _book_exit(ti, tf, nt, side, qty, entry, price, fee_rate, entry_fee, funding,
                                         stop0, entry_bar, k, EXIT_END)
            nt += 1
            cash += delta
            fees_cum += fee
            side = 0
            qty = 0.0

        # 5. books and protections at the close
        equity = cash + side * qty * (c[k] - entry) if side != 0 else cash
        ps, state = update_state(ps, equity, day[k], k, max_drawdown, reduce_drawdown, daily_loss)
        eq_out[k] = equity
        cash_out[k] = cash
        pos_out[k] = side * qty
        fund_out[k] = fund_cum
        fees_out[k] = fees_cum
        state_out[k] = state
        if k == n - 1:
            break

        # 6. stops for the next bar, then the decision
        if side != 0:
            if mode == STOP_TRAILING_ATR:
                stop = trail_stop(stop, c[k], side, atr[k], mult)
            elif mode == STOP_STRATEGY and target_side(tgt[k]) == side and side * (c[k] - sstop[k]) > 0.0:
                stop = tighter(stop, sstop[k], side)
        if state == HALTED:
            if side != 0:
                pend_exit = EXIT_PROTECTION
            continue
        close_now, enter, blocked = target_action(side, tgt[k], blocked)
        if close_now:
            pend_exit = EXIT_SIGNAL
        if enter != 0 and allows(state, 0.0, float(enter)):
            dist = stop_distance(mode, c[k], enter, sstop[k], atr[k], pct, mult)
            q = entry_quantity(p, enter, abs(tgt[k]), equity, c[k], c[k] - enter * dist, vol[k],
                               n_win, sum_win, n_loss, sum_loss, floor, cap, blev)
            if q > 0.0:
                pend_side = enter
                pend_qty = q
                pend_dist = dist
                pend_sstop = sstop[k]
                pend_tp = stp[k] if enter * (stp[k] - c[k]) > 0.0 else np.nan
                pend_equity = equity

    return eq_out, cash_out, pos_out, fund_out, fees_out, state_out, ti[:nt], tf[:nt], n_liq


def _arrays(prep: Prepared) -> tuple:
    b = prep.brackets
    return (prep.open, prep.high, prep.low, prep.close, prep.mark_open, prep.mark_high, prep.mark_low,
            prep.mark_close, prep.funding_rate, prep.target, prep.stop, prep.take_profit, prep.atr,
            prep.volatility, prep.day, prep.params, b.floor, b.cap, b.mmr, b.cum, b.max_leverage,
            prep.initial_cash)


def run_raw(prep: Prepared) -> RawRun:
    """Run the kernel on prepared arrays; return the raw books."""
    eq, cash, pos, fund, fees, state, ti, tf, n_liq = kernel(*_arrays(prep))
    return RawRun(equity=eq, cash=cash, position=pos, funding_pnl=fund, fees=fees, risk_state=state,
                  trade_int=ti, trade_float=tf, final_equity=float(cash[-1]), n_liquidations=int(n_liq))


def warm_up() -> float:
    """Compile the kernel on a tiny frame (or load it from numba's cache); return the seconds taken."""
    import pandas as pd

    from backtests.engines.common import prepare
    from bot.config import BacktestConfig, RiskConfig

    start = time.perf_counter()
    index = pd.date_range("2025-01-01", periods=8, freq="1h", tz="UTC", name="time")
    close = np.linspace(100.0, 107.0, 8)
    frame = pd.DataFrame({"open": close, "high": close + 1, "low": close - 1, "close": close,
                          "volume": 1.0}, index=index)
    signals = pd.DataFrame({"target": [0, 1, 1, 1, -1, -1, 0, 0], "stop": np.nan, "take_profit": np.nan},
                           index=index, dtype=float)
    run_raw(prepare(frame, signals, BacktestConfig(), RiskConfig()))
    return time.perf_counter() - start
