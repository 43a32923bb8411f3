"""Who owns the stop (docs/architecture.md, "The strategy contract"): the strategy states its levels, the
core executes them; ``[risk] stop`` other than ``strategy`` replaces the strategy's stop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtests.engines import run_backtest
from bot.config import BacktestConfig, RiskConfig
from strategies import STRATEGIES

OPEN = {"max_drawdown": 1.0, "reduce_drawdown": 1.0, "daily_loss": 1.0}  # protections out of the way


@pytest.fixture(scope="module")
def sr(btc_1h) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = btc_1h.loc["2025-04-01":]
    spec = STRATEGIES["sr_levels"]
    return frame, spec.run(frame, spec.Params())


def test_strategy_stop_levels_are_the_stops(sr):
    frame, sig = sr
    res = run_backtest(frame, sig, BacktestConfig(), RiskConfig(stop="strategy", **OPEN), engine="fast")
    trades = res.trades
    stops = trades[trades["exit_reason"] == "stop"]
    assert len(stops) >= 10
    sig_stop = sig["stop"].to_numpy()
    for _, t in trades.iterrows():
        decided = sig_stop[int(t["entry_bar"]) - 1]  # decided at the close before the entry fill
        assert t["stop"] == pytest.approx(decided, rel=1e-9), t
    # a stop exit fills at the tightest level the strategy stated while holding (slipped), or at a gapping open
    for _, t in stops.iterrows():
        held = sig_stop[int(t["entry_bar"]) - 1: int(t["exit_bar"])]
        active = np.nanmax(held) if t["side"] > 0 else np.nanmin(held)
        bar = frame.iloc[int(t["exit_bar"])]
        fill = bar["open"] if t["side"] * (bar["open"] - active) <= 0 else active
        assert t["exit_price"] == pytest.approx(fill, rel=2e-4), t


def test_fixed_pct_stop_replaces_the_strategy_stop(sr):
    frame, sig = sr
    res = run_backtest(frame, sig, BacktestConfig(), RiskConfig(stop="fixed_pct", stop_pct=0.02, **OPEN),
                       engine="fast")
    trades = res.trades
    assert (trades["exit_reason"] == "stop").sum() >= 5
    expected = trades["entry_price"] * (1.0 - trades["side"] * 0.02)
    np.testing.assert_allclose(trades["stop"], expected, rtol=1e-5)
    sig_stop = sig["stop"].to_numpy()[trades["entry_bar"].to_numpy() - 1]
    assert not np.isclose(trades["stop"].to_numpy(), sig_stop).any()  # not the strategy's level
