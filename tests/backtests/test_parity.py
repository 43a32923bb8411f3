"""Two engines, one answer: every registered strategy through both engines on the real sample.

Required (docs/architecture.md): the same trades — entry and exit bar, side, exit reason, quantity —
and final equity within 1e-6 relative. A difference is a bug in one engine, never a tolerance to widen.

Quantities are compared to 1e-9 relative, prices to 1e-12: the engines keep independent books
(backtrader's broker settles price changes to cash bar by bar, the kernel values the position from its
entry), so the equity a size is computed from agrees only to floating-point round-off (~1e-15
observed). Everything discrete — bars, sides, reasons, risk states — must be identical.

5m data are sliced to their last 20,000 bars to keep backtrader's share of the suite short.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtests.engines import BacktestResult, run_backtest
from backtests.sample import load_sample_frame
from bot.config import BacktestConfig, MarketCosts, RiskConfig
from bot.risk.stops import average_true_range
from strategies import STRATEGIES

DATASETS = [("BTC/USDT:USDT", "1h"), ("ETH/USDT:USDT", "1h"), ("BTC/USDT:USDT", "5m"), ("ETH/USDT:USDT", "5m")]
SLICE_5M = 20_000
CASH = BacktestConfig()
COSTS = MarketCosts(taker_fee=0.0005, slippage_bps=1.0)
STRESSED = RiskConfig(max_leverage=10.0, risk_per_trade=0.02, stop="trailing_atr", max_drawdown=0.6,
                      reduce_drawdown=0.5, daily_loss=0.2, cooldown_stopouts=2, cooldown="6h")


@pytest.fixture(scope="module")
def frames() -> dict[tuple[str, str], pd.DataFrame]:
    out = {}
    for symbol, timeframe in DATASETS:
        frame = load_sample_frame(symbol, timeframe)
        out[(symbol, timeframe)] = frame.iloc[-SLICE_5M:] if timeframe == "5m" else frame
    return out


def assert_same(fast: BacktestResult, ref: BacktestResult) -> None:
    a, b = fast.trades, ref.trades
    assert len(a) == len(b), f"{len(a)} trades (fast) vs {len(b)} (backtrader)"
    for column in ("entry_bar", "exit_bar", "side", "exit_reason"):
        same = a[column].to_numpy() == b[column].to_numpy()
        assert same.all(), f"{column} differs first at trade {np.argmin(same)}:\n{a.iloc[np.argmin(same)]}\n" \
                           f"{b.iloc[np.argmin(same)]}"
    np.testing.assert_allclose(a["qty"], b["qty"], rtol=1e-9, atol=0)
    np.testing.assert_allclose(a["entry_price"], b["entry_price"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(a["exit_price"], b["exit_price"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(a["pnl"], b["pnl"], rtol=1e-9, atol=1e-6)
    assert fast.n_liquidations == ref.n_liquidations
    assert fast.final_equity == pytest.approx(ref.final_equity, rel=1e-6)
    np.testing.assert_allclose(fast.equity["equity"], ref.equity["equity"], rtol=1e-6)
    assert (fast.equity["risk_state"] == ref.equity["risk_state"]).all()


def both(frame: pd.DataFrame, signals: pd.DataFrame, risk: RiskConfig,
         costs: MarketCosts = COSTS) -> tuple[BacktestResult, BacktestResult]:
    return (run_backtest(frame, signals, CASH, risk, engine="fast", costs=costs),
            run_backtest(frame, signals, CASH, risk, engine="backtrader", costs=costs))


@pytest.mark.parametrize("dataset", DATASETS, ids=lambda d: f"{d[0][:3]}-{d[1]}")
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_registered_strategy_parity(name: str, dataset: tuple[str, str], frames) -> None:
    frame = frames[dataset]
    module = STRATEGIES[name]
    signals = module.signals(frame, module.Params())
    fast, ref = both(frame, signals, RiskConfig())
    assert_same(fast, ref)
    if dataset[1] == "1h":  # a second, busier risk set-up: trailing stops, 10x, looser protections
        assert_same(*both(frame, signals, STRESSED))


def ema_cross(frame: pd.DataFrame, fast: int, slow: int, with_stops: bool = True) -> pd.DataFrame:
    close = frame["close"]
    side = np.sign(close.ewm(span=fast, adjust=False).mean() - close.ewm(span=slow, adjust=False).mean())
    atr = pd.Series(average_true_range(frame["high"].to_numpy(), frame["low"].to_numpy(), close.to_numpy(), 14),
                    index=frame.index)
    held = (side != 0) & with_stops
    return pd.DataFrame({"target": side.fillna(0.0), "stop": (close - side * 2.0 * atr).where(held),
                         "take_profit": (close + side * 3.0 * atr).where(held)}, index=frame.index)


OPEN = {"max_drawdown": 1.0, "reduce_drawdown": 0.99, "daily_loss": 1.0}
RISK_SETS = {
    "liquidations": (False, RiskConfig(sizing="fixed_fraction", fixed_fraction=10.0, max_leverage=50.0, **OPEN)),
    "stop_beyond_lp": (False, RiskConfig(sizing="fixed_fraction", fixed_fraction=2.0, max_leverage=25.0,
                                         stop="fixed_pct", stop_pct=0.1, **OPEN)),
    "kelly": (True, RiskConfig(sizing="kelly", stop="fixed_pct", stop_pct=0.01, kelly_cap=0.05, **OPEN)),
    "vol_target_atr": (True, RiskConfig(sizing="volatility_target", stop="atr", max_leverage=3.0)),
    "protections": (True, RiskConfig(risk_per_trade=0.05, max_drawdown=0.3, reduce_drawdown=0.1,
                                     daily_loss=0.03, cooldown_stopouts=2, cooldown="10h",
                                     halt_duration="2d", drawdown_lookback="10d")),
}


@pytest.mark.parametrize("risk_set", list(RISK_SETS))
def test_engine_stress_parity(risk_set: str, frames) -> None:
    """Test signals that exercise liquidations, funding, every sizing method and the protections."""
    with_stops, risk = RISK_SETS[risk_set]
    frame = frames[("BTC/USDT:USDT", "1h")]
    fast, ref = both(frame, ema_cross(frame, 6, 24, with_stops), risk, MarketCosts(slippage_bps=2.0))
    assert len(fast.trades) > 10
    if risk_set == "liquidations":
        assert fast.n_liquidations > 10
    assert_same(fast, ref)
