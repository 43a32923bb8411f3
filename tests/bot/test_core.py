"""bot.core from plain Python, one bar at a time (as the paper broker and live runner will call it),
against the fast engine's kernel on real data, and the core's worked example."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import bot.core as core
from backtests.engines import run_backtest
from backtests.engines.common import prepare
from backtests.sample import load_sample_frame
from bot.config import BacktestConfig, MarketCosts, RiskConfig
from bot.core import (
    EXIT_NONE,
    EXIT_REASONS,
    STATE_NAMES,
    Bar,
    Signal,
    Stepper,
    bar_close,
    bar_open,
    flat_position,
    new_account,
    no_intent,
)
from bot.risk.stops import average_true_range


def test_core_docstring_example() -> None:
    failures, tried = doctest.testmod(core)
    assert tried > 0 and failures == 0


def test_stepping_from_python_reproduces_the_kernel() -> None:
    frame = load_sample_frame("ETH/USDT:USDT", "1h").iloc[-1500:]
    close = frame["close"]
    side = np.sign(close.ewm(span=6, adjust=False).mean() - close.ewm(span=24, adjust=False).mean()).fillna(0.0)
    atr = average_true_range(frame["high"].to_numpy(), frame["low"].to_numpy(), close.to_numpy(), 14)
    signals = frame[[]].assign(target=side, stop=close - side * 2.0 * atr, take_profit=close + side * 3.0 * atr)
    risk = RiskConfig(max_leverage=10.0, risk_per_trade=0.03, stop="trailing_atr", reduce_drawdown=0.05,
                      max_drawdown=0.2, drawdown_lookback="7d", halt_duration="1d")
    costs = MarketCosts(taker_fee=0.0005, slippage_bps=2.0)
    result = run_backtest(frame, signals, BacktestConfig(), risk, engine="fast", costs=costs)

    prep = prepare(frame, signals, BacktestConfig(), risk, "ETH/USDT:USDT", costs)
    p, br = prep.params, prep.brackets.table
    pos, acct, intent = flat_position(), new_account(prep.initial_cash, int(prep.time[0])), no_intent()
    trades, equity, states = [], [], []
    stepper = Stepper(p, br, prep.initial_cash, int(prep.time[0]))
    stepped = []
    n = len(prep)
    for k in range(n):
        bar = Bar(int(prep.time[k]), prep.open[k], prep.high[k], prep.low[k], prep.close[k], prep.mark_open[k],
                  prep.mark_high[k], prep.mark_low[k], prep.funding_rate[k], prep.funding_mark[k])
        pos, acct, at_open, _, intrabar = bar_open(p, br, pos, acct, intent, k, bar)
        sig = Signal(prep.target[k], prep.stop[k], prep.take_profit[k], prep.atr[k], prep.volatility[k])
        pos, acct, end, eq, state, intent = bar_close(p, br, pos, acct, k, bar, k == n - 1, sig)
        trades += [t for t in (at_open, intrabar, end) if t.reason != EXIT_NONE]
        stepper.bar_open(k, tuple(bar))
        stepped.append(stepper.bar_close(k, tuple(bar), k == n - 1, tuple(sig))[1])
        assert (repr(stepper.pos), repr(stepper.acct), repr(stepper.intent)) == (repr(pos), repr(acct), repr(intent))
        equity.append(eq)
        states.append(STATE_NAMES[state])
    assert len(trades) == len(result.trades) > 20
    assert [EXIT_REASONS[t.reason] for t in trades] == result.trades["exit_reason"].tolist()
    assert [t.exit_bar for t in trades] == result.trades["exit_bar"].tolist()
    np.testing.assert_array_equal([t.pnl for t in trades], result.trades["pnl"].to_numpy())
    np.testing.assert_array_equal(equity, result.equity["equity"].to_numpy())
    assert states == result.equity["risk_state"].tolist()
    assert acct.cash == pytest.approx(result.final_equity, rel=0, abs=0)
    assert {"ACTIVE", "REDUCING"} <= set(states)  # the protections moved and came back
