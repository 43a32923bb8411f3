"""compute_stats: hand-computed cases, and Sharpe/Sortino/drawdown against independent code.

The independent references are (1) vectorbt's returns accessor and (2) plain Python loops
written here from the textbook formulas, sharing nothing with backtests/metrics.py.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtests.metrics import compute_stats, drawdown, json_safe, sharpe_ratio, sortino_ratio

TRADE_COLUMNS = ["entry_time", "exit_time", "entry_bar", "exit_bar", "side", "qty", "entry_price",
                 "exit_price", "stop", "exit_reason", "pnl", "fees", "funding"]


def make_result(equity: np.ndarray, index: pd.DatetimeIndex, initial: float = 10_000.0,
                trades: pd.DataFrame | None = None, position: np.ndarray | None = None,
                fees: np.ndarray | None = None, funding: np.ndarray | None = None,
                n_liquidations: int = 0) -> SimpleNamespace:
    n = len(index)
    frame = pd.DataFrame({
        "equity": equity,
        "cash": equity,
        "position": np.zeros(n) if position is None else position,
        "funding_pnl": np.zeros(n) if funding is None else funding,
        "fees": np.zeros(n) if fees is None else fees,
        "risk_state": "ACTIVE",
    }, index=index)
    return SimpleNamespace(trades=pd.DataFrame(columns=TRADE_COLUMNS) if trades is None else trades,
                           equity=frame, final_equity=float(equity[-1]), initial_cash=initial,
                           n_liquidations=n_liquidations, engine="test")


def hourly(days: int, start: str = "2025-03-01") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=24 * days, freq="1h", tz="UTC", name="time")


# -- Independent references ----------------------------------------------------------------


def loop_daily_values(index: pd.DatetimeIndex, values: np.ndarray) -> list[float]:
    """Last equity of each UTC calendar day of the bar open times, by a plain loop."""
    out: list[float] = []
    current = None
    for t, v in zip(index, values, strict=True):
        day = (t.year, t.month, t.day)
        if day != current:
            out.append(float(v))
            current = day
        else:
            out[-1] = float(v)
    return out


def loop_returns(initial: float, values: list[float]) -> list[float]:
    prev, out = initial, []
    for v in values:
        out.append(v / prev - 1.0)
        prev = v
    return out


def loop_sharpe(rets: list[float], periods: float) -> float:
    n = len(rets)
    mean = sum(rets) / n
    var = sum((r - mean) ** 2 for r in rets) / (n - 1)
    return mean / math.sqrt(var) * math.sqrt(periods)


def loop_sortino(rets: list[float], periods: float) -> float:
    n = len(rets)
    mean = sum(rets) / n
    down = math.sqrt(sum(min(r, 0.0) ** 2 for r in rets) / n)
    return mean * periods / (down * math.sqrt(periods))


def loop_max_drawdown(initial: float, values: np.ndarray) -> float:
    peak, worst = initial, 0.0
    for v in values:
        peak = max(peak, v)
        worst = max(worst, (peak - v) / peak)
    return worst


def random_equity(seed: int, n: int, vol: float = 0.002) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 10_000.0 * np.cumprod(1.0 + rng.normal(0.00005, vol, n))


# -- Hand-computed ---------------------------------------------------------------------------


@pytest.fixture
def three_days() -> SimpleNamespace:
    """Hourly equity: 10k -> 11k (day 1) -> 9.9k (day 2) -> 10.89k (day 3), linear inside days.

    Daily returns +10 %, -10 %, +10 %: Sharpe = sqrt(365/12), Sortino = sqrt(365/3).
    """
    idx = hourly(3)
    ends = [10_000.0, 11_000.0, 9_900.0, 10_890.0]
    eq = np.concatenate([np.linspace(a, b, 25)[1:] for a, b in zip(ends[:-1], ends[1:], strict=True)])
    pos = np.zeros(len(idx))
    pos[10:40] = 0.5
    trades = pd.DataFrame({
        "entry_time": idx[[0, 5, 10, 20]], "exit_time": idx[[2, 9, 40, 21]],
        "entry_bar": [0, 5, 10, 20], "exit_bar": [2, 9, 40, 21], "side": [1, -1, 1, 1],
        "qty": [0.1] * 4, "entry_price": [100.0] * 4, "exit_price": [100.0] * 4,
        "stop": [np.nan] * 4, "exit_reason": ["signal", "stop", "take_profit", "stop"],
        "pnl": [100.0, -50.0, 30.0, -20.0], "fees": [1.0, 2.0, 3.0, 4.0], "funding": [0.0] * 4,
    })
    fees = np.linspace(0, 12.5, len(idx))
    funding = np.linspace(0, -3.25, len(idx))
    return make_result(eq, idx, trades=trades, position=pos, fees=fees, funding=funding, n_liquidations=1)


def test_hand_computed_returns_and_ratios(three_days: SimpleNamespace) -> None:
    s = compute_stats(three_days, "1h")
    assert s["total_return"] == pytest.approx(0.089)
    assert s["cagr"] == pytest.approx(1.089 ** (365 / 3) - 1)
    assert s["sharpe"] == pytest.approx(math.sqrt(365 / 12))
    assert s["sortino"] == pytest.approx(math.sqrt(365 / 3))
    assert s["max_drawdown"] == pytest.approx(0.1)
    assert s["calmar"] == pytest.approx(s["cagr"] / 0.1)
    # peak at the close of day 1, never regained: under water for the last two days
    assert s["max_drawdown_duration_days"] == pytest.approx(2.0)
    assert s["longest_drawdown_days"] == pytest.approx(2.0)
    assert s["final_equity"] == pytest.approx(10_890.0)
    assert s["n_bars"] == 72
    assert s["start"] == "2025-03-01T00:00:00+00:00" and s["end"] == "2025-03-04T00:00:00+00:00"


def test_hand_computed_trades_and_costs(three_days: SimpleNamespace) -> None:
    s = compute_stats(three_days, "1h")
    assert s["n_trades"] == 4
    assert s["win_rate"] == pytest.approx(0.5)
    assert s["profit_factor"] == pytest.approx(130 / 70)
    assert s["expectancy"] == pytest.approx(15.0)
    assert s["avg_win"] == pytest.approx(65.0) and s["avg_loss"] == pytest.approx(-35.0)
    assert s["best_trade"] == 100.0 and s["worst_trade"] == -50.0
    assert s["avg_hold_bars"] == pytest.approx((2 + 4 + 30 + 1) / 4)
    assert s["avg_hold_hours"] == pytest.approx((2 + 4 + 30 + 1) / 4)
    assert s["n_stop_exits"] == 2
    assert s["exposure"] == pytest.approx(30 / 72)
    assert s["fees"] == pytest.approx(12.5)  # cumulative column, open positions included
    assert s["funding_pnl"] == pytest.approx(-3.25)
    assert s["liquidations"] == 1


def test_drawdown_durations_recovered_and_longest() -> None:
    # 1d bars: peak 100 -> 80 -> 100 (recovered after 2 bars) -> 95 -> 94 -> 93 -> 99 -> 101
    idx = pd.date_range("2025-01-01", periods=8, freq="1D", tz="UTC")
    eq = np.array([100, 80, 100, 95, 94, 93, 99, 101], dtype=float)
    s = compute_stats(make_result(eq, idx, initial=100.0), "1d")
    assert s["max_drawdown"] == pytest.approx(0.2)
    # deepest: peak at close of bar 0 (Jan 2), back at close of bar 2 (Jan 4)
    assert s["max_drawdown_duration_days"] == pytest.approx(2.0)
    # longest: peak at close of bar 2 (Jan 4), regained at close of bar 7 (Jan 9)
    assert s["longest_drawdown_days"] == pytest.approx(5.0)


def test_first_bar_under_water_counts_from_initial_cash() -> None:
    idx = pd.date_range("2025-01-01", periods=3, freq="1D", tz="UTC")
    s = compute_stats(make_result(np.array([90.0, 95.0, 99.0]), idx, initial=100.0), "1d")
    assert s["max_drawdown"] == pytest.approx(0.1)
    assert s["max_drawdown_duration_days"] == pytest.approx(3.0)


def test_flat_run_without_trades() -> None:
    idx = hourly(5)
    s = compute_stats(make_result(np.full(len(idx), 10_000.0), idx), "1h")
    assert s["n_trades"] == 0 and s["total_return"] == 0.0 and s["max_drawdown"] == 0.0
    assert s["sharpe"] == 0.0 and s["sortino"] == 0.0
    assert math.isnan(s["win_rate"]) and math.isnan(s["profit_factor"]) and math.isnan(s["calmar"])
    safe = json_safe(s)
    assert safe["win_rate"] is None and safe["calmar"] is None
    json.dumps(safe, allow_nan=False)


def test_profit_factor_without_losses_is_inf_and_json_null() -> None:
    idx = hourly(2)
    trades = pd.DataFrame({"entry_time": idx[[0]], "exit_time": idx[[3]], "entry_bar": [0], "exit_bar": [3],
                           "side": [1], "qty": [1.0], "entry_price": [1.0], "exit_price": [2.0],
                           "stop": [np.nan], "exit_reason": ["signal"], "pnl": [5.0], "fees": [0.1],
                           "funding": [0.0]})
    s = compute_stats(make_result(np.linspace(10_000, 10_005, len(idx)), idx, trades=trades), "1h")
    assert s["profit_factor"] == math.inf and s["win_rate"] == 1.0
    assert json_safe(s)["profit_factor"] is None


def test_sharpe_undefined_with_one_period() -> None:
    assert math.isnan(sharpe_ratio([0.01], 365)) and math.isnan(sortino_ratio([0.01], 365))


# -- Against independent implementations ------------------------------------------------------


def five_minute_run(seed: int) -> tuple[pd.DatetimeIndex, np.ndarray, dict]:
    n = 288 * 40 + 77  # 41 calendar days, starting and ending mid-day
    idx = pd.date_range("2025-05-03 13:05", periods=n, freq="5min", tz="UTC", name="time")
    eq = random_equity(seed, n)
    return idx, eq, compute_stats(make_result(eq, idx), "5m")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_against_plain_loops_on_5m(seed: int) -> None:
    idx, eq, s = five_minute_run(seed)
    rets = loop_returns(10_000.0, loop_daily_values(idx, eq))
    assert len(rets) == 41  # partial first and last days included
    assert s["sharpe"] == pytest.approx(loop_sharpe(rets, 365), rel=1e-9)
    assert s["sortino"] == pytest.approx(loop_sortino(rets, 365), rel=1e-9)
    assert s["max_drawdown"] == pytest.approx(loop_max_drawdown(10_000.0, eq), rel=1e-12)
    assert s["total_return"] == pytest.approx(eq[-1] / 10_000.0 - 1.0, rel=1e-12)


def test_daily_bars_use_per_bar_returns() -> None:
    idx = pd.date_range("2025-01-01", periods=200, freq="1D", tz="UTC")
    eq = random_equity(7, 200, vol=0.03)
    s = compute_stats(make_result(eq, idx), "1d")
    rets = loop_returns(10_000.0, list(eq))
    assert s["sharpe"] == pytest.approx(loop_sharpe(rets, 365), rel=1e-9)
    assert s["sortino"] == pytest.approx(loop_sortino(rets, 365), rel=1e-9)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_against_vectorbt_on_5m(seed: int) -> None:
    """vectorbt is a bench extra (`pip install -e '.[bench]'`); CI runs the loop checks above."""
    pytest.importorskip("vectorbt")
    from vectorbt.returns.accessors import ReturnsAccessor

    idx, eq, s = five_minute_run(seed)
    # daily closes by resample (another code path), returns from values with init value
    daily = pd.Series(eq, index=idx).resample("1D").last()
    vrets = ReturnsAccessor.from_value(daily, init_value=10_000.0, freq="1D", year_freq="365 days")
    assert s["sharpe"] == pytest.approx(vrets.sharpe_ratio(), rel=1e-9)
    assert s["sortino"] == pytest.approx(vrets.sortino_ratio(), rel=1e-9)
    # per-bar max drawdown (initial value prepended, so it can be the first peak)
    values = pd.Series(np.concatenate([[10_000.0], eq]),
                       index=pd.date_range("2025-01-01", periods=len(eq) + 1, freq="5min"))
    bar_rets = ReturnsAccessor.from_value(values, init_value=10_000.0, freq="5min")
    assert s["max_drawdown"] == pytest.approx(-bar_rets.max_drawdown(), rel=1e-9)
    assert s["total_return"] == pytest.approx(bar_rets.total(), rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=-0.2, max_value=0.2, allow_nan=False), min_size=2, max_size=60))
def test_drawdown_and_ratios_property(steps: list[float]) -> None:
    eq = 1_000.0 * np.cumprod(1.0 + np.asarray(steps))
    idx = pd.date_range("2025-01-01", periods=len(eq), freq="1D", tz="UTC")
    assert drawdown(pd.Series(eq, index=idx), 1_000.0).max() == pytest.approx(
        loop_max_drawdown(1_000.0, eq), abs=1e-12)
    rets = loop_returns(1_000.0, list(eq))
    if np.std(rets) > 1e-9:
        assert sharpe_ratio(rets, 365) == pytest.approx(loop_sharpe(rets, 365), rel=1e-7)
    if any(r < -1e-9 for r in rets):
        assert sortino_ratio(rets, 365) == pytest.approx(loop_sortino(rets, 365), rel=1e-7)


def test_drawdown_spells_equal_a_plain_loop_with_flat_and_missing_bars():
    from backtests.metrics import _drawdown_spells

    def loop(dd):
        spells, start = [], -1
        for i, v in enumerate(dd):
            if v > 0.0 and start < 0:
                start = i
            elif v <= 0.0 and start >= 0:
                spells.append((start, i, True))
                start = -1
        return spells + ([(start, len(dd), False)] if start >= 0 else [])

    rng = np.random.default_rng(3)
    for _ in range(2000):
        dd = rng.choice([0.0, -0.0, 0.1, 0.5, np.nan], size=int(rng.integers(0, 40)))
        assert _drawdown_spells(dd) == loop(dd)
