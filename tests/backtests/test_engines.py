"""The engines' API: dispatch, input checks, result tables, bookkeeping identities, speed."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backtests.engines import (
    ENGINES,
    EQUITY_COLUMNS,
    TRADE_COLUMNS,
    BacktestResult,
    compile_fast_engine,
    run_backtest,
)
from backtests.sample import load_sample_frame
from bot.config import BacktestConfig, MarketCosts, RiskConfig, parse_config
from bot.errors import UserError
from bot.risk.brackets import load_brackets
from bot.risk.stops import average_true_range


def ema_cross(frame: pd.DataFrame, fast: int = 12, slow: int = 48, stop_atr: float = 2.0,
              tp_atr: float = 3.0) -> pd.DataFrame:
    """A plain EMA-cross signal with ATR stop and take-profit, built here for the engine tests."""
    close = frame["close"]
    side = np.sign(close.ewm(span=fast, adjust=False).mean() - close.ewm(span=slow, adjust=False).mean())
    atr = pd.Series(average_true_range(frame["high"].to_numpy(), frame["low"].to_numpy(), close.to_numpy(), 14),
                    index=frame.index)
    held = side != 0
    return pd.DataFrame({"target": side.fillna(0.0),
                         "stop": (close - side * stop_atr * atr).where(held),
                         "take_profit": (close + side * tp_atr * atr).where(held)}, index=frame.index)


@pytest.fixture(scope="module")
def btc_1h() -> pd.DataFrame:
    return load_sample_frame("BTC/USDT:USDT", "1h").iloc[-3000:]


def tiny_frame(n: int = 6) -> pd.DataFrame:
    index = pd.date_range("2025-01-01", periods=n, freq="1h", tz="UTC", name="time")
    close = 100.0 + np.arange(n, dtype=float)
    return pd.DataFrame({"open": close, "high": close + 1, "low": close - 1, "close": close, "volume": 1.0},
                        index=index)


def test_unknown_engine_names_the_choices() -> None:
    frame = tiny_frame()
    signals = pd.DataFrame({"target": 0.0}, index=frame.index)
    with pytest.raises(ValueError, match="backtrader, fast"):
        run_backtest(frame, signals, BacktestConfig(), RiskConfig(), engine="vectorbt")


def test_default_engine_comes_from_the_config() -> None:
    frame = tiny_frame()
    signals = pd.DataFrame({"target": 0.0}, index=frame.index)
    assert run_backtest(frame, signals, BacktestConfig(engine="fast"), RiskConfig()).engine == "fast"
    assert run_backtest(frame, signals, BacktestConfig(), RiskConfig()).engine == "backtrader"


@pytest.mark.parametrize(("change", "message"), [
    (lambda f, s: (f, s.iloc[1:]), "indexed like the frame"),
    (lambda f, s: (f.assign(close=[np.nan] + f["close"].tolist()[1:]), s), "NaN"),
    (lambda f, s: (f.drop(columns="high"), s), "high"),
    (lambda f, s: (f, s.drop(columns="target")), "target"),
    (lambda f, s: (f.tz_convert(None), s.tz_convert(None)), "UTC"),
])
def test_bad_inputs_are_refused_with_the_fix(change, message: str) -> None:
    frame = tiny_frame()
    signals = pd.DataFrame({"target": 1.0, "stop": np.nan, "take_profit": np.nan}, index=frame.index)
    bad_frame, bad_signals = change(frame, signals)
    with pytest.raises(ValueError, match=message):
        run_backtest(bad_frame, bad_signals, BacktestConfig(), RiskConfig(), engine="fast")


@pytest.mark.parametrize("engine", ENGINES)
def test_no_trades_gives_empty_typed_tables(engine: str) -> None:
    frame = tiny_frame()
    result = run_backtest(frame, pd.DataFrame({"target": 0.0}, index=frame.index), BacktestConfig(),
                          RiskConfig(), engine=engine)
    assert isinstance(result, BacktestResult)
    assert list(result.trades.columns) == TRADE_COLUMNS and result.trades.empty
    assert list(result.equity.columns) == EQUITY_COLUMNS
    assert result.equity.index.equals(frame.index)
    assert (result.equity["equity"] == 10_000.0).all()
    assert result.final_equity == 10_000.0 and result.n_liquidations == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_books_balance_on_real_data(engine: str, btc_1h: pd.DataFrame) -> None:
    risk = RiskConfig(max_leverage=10.0, risk_per_trade=0.02, max_drawdown=0.9, reduce_drawdown=0.8)
    result = run_backtest(btc_1h, ema_cross(btc_1h, 6, 24), BacktestConfig(), risk, engine=engine,
                          costs=MarketCosts(slippage_bps=2.0))
    trades, equity = result.trades, result.equity
    assert len(trades) > 20
    assert list(trades.columns) == TRADE_COLUMNS
    assert set(trades["exit_reason"]) <= {"signal", "stop", "take_profit", "liquidation", "end", "protection"}
    assert set(trades["side"]) <= {1, -1}
    assert trades["entry_time"].dt.tz is not None
    # every trade: pnl = side·qty·(exit − entry) − fees + funding
    implied = trades["side"] * trades["qty"] * (trades["exit_price"] - trades["entry_price"]) \
        - trades["fees"] + trades["funding"]
    np.testing.assert_allclose(trades["pnl"], implied, rtol=0, atol=1e-6)
    assert math.isclose(trades["pnl"].sum(), result.final_equity - result.initial_cash, abs_tol=1e-6)
    assert math.isclose(trades["fees"].sum(), equity["fees"].iloc[-1], rel_tol=1e-9)
    assert math.isclose(trades["funding"].sum(), equity["funding_pnl"].iloc[-1], rel_tol=1e-9, abs_tol=1e-9)
    assert equity["funding_pnl"].abs().iloc[-1] > 0  # the sample has 8h funding
    assert equity["equity"].iloc[-1] == pytest.approx(result.final_equity, rel=1e-12)
    # trades do not overlap, entries follow exits
    assert (trades["entry_bar"].to_numpy()[1:] >= trades["exit_bar"].to_numpy()[:-1]).all()
    # flat bars: equity is the cash
    flat = equity["position"] == 0
    np.testing.assert_allclose(equity.loc[flat, "equity"], equity.loc[flat, "cash"], rtol=1e-12)
    assert set(equity["risk_state"]) <= {"ACTIVE", "REDUCING", "HALTED"}


@pytest.mark.parametrize("engine", ENGINES)
def test_leverage_bracket_caps_a_large_account(engine: str) -> None:
    frame = tiny_frame(4) * 1_000.0
    frame["volume"] = 1.0
    signals = pd.DataFrame({"target": [1.0, 1.0, 1.0, 1.0]}, index=frame.index)
    risk = RiskConfig(sizing="fixed_fraction", fixed_fraction=10.0, max_leverage=125.0, max_drawdown=1.0,
                      reduce_drawdown=0.99, daily_loss=1.0)
    result = run_backtest(frame, signals, BacktestConfig(initial_cash=50_000_000.0), risk, engine=engine,
                          costs=MarketCosts(taker_fee=0.0, slippage_bps=0.0))
    notional = result.trades["qty"].iloc[0] * frame["close"].iloc[0]
    # 10 × 50M = 500M would sit in tier 8 (max 5x = 250M); tier 7 stops at 230M: the cap is 250M
    assert notional == pytest.approx(250_000_000.0, rel=1e-12)
    assert load_brackets("BTC/USDT:USDT").max_leverage_at(notional) == 5.0


def test_bracket_cap_binds_when_leverage_asks_for_more() -> None:
    b = load_brackets("BTC/USDT:USDT")
    # 100k equity at 125x = 12.5M: tier 3 allows 75x only up to 3M, tier 4 allows 50x = 5M
    assert b.max_notional(100_000.0, 125.0) == pytest.approx(5_000_000.0)
    assert b.max_notional(100_000.0, 5.0) == pytest.approx(500_000.0)


@pytest.mark.parametrize(("bad", "shown"), [(3.0, "3.0"), (-1.5, "-1.5"), (np.nan, "nan")])
def test_target_outside_the_contract_is_an_error(bad: float, shown: str) -> None:
    # |target| > 1 would silently change the leverage, a NaN silently mean flat: both are refused
    frame = tiny_frame(5)
    signals = pd.DataFrame({"target": [0.0, 1.0, bad, 0.0, 0.0]}, index=frame.index)
    with pytest.raises(ValueError, match=rf"target must be a number in \[-1, 1\].*found {shown} at 2025-01-01 02:00") \
            as err:
        run_backtest(frame, signals, BacktestConfig(), RiskConfig(), engine="fast")
    assert isinstance(err.value, UserError)  # the CLI prints it on one line and exits 2


def test_costs_resolve_per_market_from_the_config_defaults() -> None:
    from backtests.engines.common import prepare

    frame = tiny_frame(5)
    signals = pd.DataFrame({"target": 0.0}, index=frame.index)
    # docs/methods.md §D.3.6: 1 bp on BTC, 2 bp on ETH; taker 0.05 % on both
    btc = prepare(frame, signals, BacktestConfig(), RiskConfig(), "BTC/USDT:USDT")
    eth = prepare(frame, signals, BacktestConfig(), RiskConfig(), "ETH/USDT:USDT")
    assert (btc.params.slippage, eth.params.slippage) == (0.0001, 0.0002)
    assert btc.params.taker_fee == eth.params.taker_fee == 0.0005
    own = prepare(frame, signals, BacktestConfig(), RiskConfig(), "ETH/USDT:USDT",
                  MarketCosts(taker_fee=0.0, slippage_bps=5.0))
    assert (own.params.taker_fee, own.params.slippage) == (0.0, 0.0005)
    # a [costs] table: unlisted markets take its defaults, listed ones (unified or exchange id) override
    cfg = parse_config({"costs": {"taker_fee": 0.0004, "slippage_bps": 3.0,
                                  "markets": {"SOLUSDT": {"slippage_bps": 6.0}}}}).costs
    assert cfg.for_symbol("SOL/USDT:USDT") == MarketCosts(taker_fee=0.0004, slippage_bps=6.0)
    assert cfg.for_symbol("BTC/USDT:USDT") == MarketCosts(taker_fee=0.0004, slippage_bps=3.0)
    result = run_backtest(frame, signals, BacktestConfig(), RiskConfig(), engine="fast", symbol="SOL/USDT:USDT",
                          costs=cfg)
    assert result.costs == MarketCosts(taker_fee=0.0004, slippage_bps=6.0)


def test_compile_fast_engine_returns_seconds() -> None:
    assert compile_fast_engine() >= 0.0


def test_fast_engine_runs_the_whole_5m_sample() -> None:
    """Every bar of a year of 5m data gets a row (speed is measured in bench/engines.py, not here)."""
    frame = load_sample_frame("BTC/USDT:USDT", "5m")
    result = run_backtest(frame, ema_cross(frame), BacktestConfig(),
                          RiskConfig(max_drawdown=1.0, reduce_drawdown=0.99, daily_loss=1.0), engine="fast")
    assert len(result.equity) == len(frame) > 100_000
