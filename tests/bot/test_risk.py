"""bot.risk: hand-computed liquidation prices and brackets, and hypothesis properties of sizing,
stops, protections and fills."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bot.config import MarketCosts, RiskConfig
from bot.risk import TradingState
from bot.risk.brackets import load_brackets, maintenance_amounts
from bot.risk.execution import (
    EXIT_LIQUIDATION,
    EXIT_NONE,
    EXIT_STOP,
    EXIT_TAKE_PROFIT,
    intrabar_exit,
    market_fill,
    target_action,
)
from bot.risk.liquidation import (
    bankruptcy_price,
    isolated_liquidation_price,
    isolated_margin,
    liquidation_price,
)
from bot.risk.params import SIZING_CODES, risk_params
from bot.risk.protections import (
    ACTIVE,
    HALTED,
    REDUCING,
    ProtectionState,
    allows,
    clear_halt,
    entry_scale,
    new_state,
    record_exit,
    update_state,
)
from bot.risk.sizing import entry_quantity, kelly_fraction, loss_per_unit, risk_size
from bot.risk.stops import average_true_range, clamp_to_liquidation, trail_stop
from bot.risk.tiers import bracket_index

BTC = load_brackets("BTC/USDT:USDT")
ETH = load_brackets("ETH/USDT:USDT")

prices = st.floats(min_value=1.0, max_value=1e6, allow_nan=False)
fractions = st.floats(min_value=0.0005, max_value=0.5)
sides = st.sampled_from([1, -1])


# -- Liquidation prices (docs/methods.md §D.2 worked examples) --------------------------------------


@pytest.mark.parametrize(("side", "qty", "leverage", "expected"), [
    (1, 0.1, 10, 90_361.45),   # 9,000 / (0.1 · 0.996)
    (-1, 0.1, 10, 109_561.75),  # 11,000 / (0.1 · 1.004)
    (1, 1.0, 10, 90_402.01),   # tier 2: (100,000 − 10,000 − 50) / 0.995
    (1, 0.1, 50, 98_393.57),
    (1, 0.1, 100, 99_397.59),
])
def test_liquidation_price_worked_examples(side: int, qty: float, leverage: float, expected: float) -> None:
    wallet = qty * 100_000.0 / leverage
    assert round(isolated_liquidation_price(side, qty, 100_000.0, wallet), 2) == expected


def test_bankruptcy_price_is_where_the_margin_is_gone() -> None:
    assert bankruptcy_price(1, 0.1, 100_000.0, 1_000.0) == pytest.approx(90_000.0)
    assert bankruptcy_price(-1, 0.1, 100_000.0, 1_000.0) == pytest.approx(110_000.0)


def test_one_x_long_cannot_be_liquidated() -> None:
    assert liquidation_price(1, 1.0, 100_000.0, 100_000.0, BTC.cap, BTC.mmr, BTC.cum) <= 0.0


def test_bracket_reselection_at_the_liquidation_price() -> None:
    # 31 BTC at 100k = 3.1M opens in tier 4 (1 %, cum 11,450) with LP ≈ 80,435; the notional there,
    # 2.49M, is tier 3, so LP is recomputed with tier 3's 0.65 % and cum 950
    qty = 31.0
    lp = liquidation_price(1, qty, 100_000.0, qty * 100_000.0 / 5, BTC.cap, BTC.mmr, BTC.cum)
    i = bracket_index(qty * lp, BTC.cap)
    assert i == 2
    assert lp == pytest.approx((qty * 100_000.0 * 0.8 - BTC.cum[2]) / (qty * (1 - BTC.mmr[2])))


@settings(deadline=None)  # the first call may compile numba code
@given(side=sides, qty=st.floats(0.001, 5_000.0), lev=st.floats(1.5, 125.0), entry=st.floats(1_000.0, 200_000.0))
def test_at_the_liquidation_price_margin_balance_equals_maintenance(side: int, qty: float, lev: float,
                                                                     entry: float) -> None:
    assume(lev <= BTC.max_leverage_at(qty * entry))  # the bracket allows this leverage
    wallet = qty * entry / lev
    lp = liquidation_price(side, qty, entry, wallet, BTC.cap, BTC.mmr, BTC.cum)
    assume(lp > 0)
    i = bracket_index(qty * lp, BTC.cap)
    balance = wallet + side * qty * (lp - entry)
    maintenance = qty * lp * BTC.mmr[i] - BTC.cum[i]
    assert balance == pytest.approx(maintenance, rel=1e-9, abs=1e-6 * qty * entry)
    # the liquidation price lies between the entry and the bankruptcy price
    bp = bankruptcy_price(side, qty, entry, wallet)
    assert side * (entry - lp) > 0 and side * (lp - bp) >= -1e-9 * entry


# -- Brackets -----------------------------------------------------------------------------------


def test_maintenance_amounts_follow_the_recursion() -> None:
    # freqtrade's binance_leverage_tiers.json lists these cum values
    assert BTC.cum.tolist()[:7] == [0.0, 50.0, 950.0, 11_450.0, 131_450.0, 481_450.0, 2_981_450.0]
    assert BTC.cum[-1] == 421_481_450.0
    assert ETH.cum[-1] == 280_506_450.0
    assert maintenance_amounts(np.array([0.0, 10.0]), np.array([0.01, 0.02])).tolist() == [0.0, 0.1]


def test_bracket_lookup_is_cap_inclusive() -> None:
    assert BTC.tier(0.0) == 1 and BTC.tier(50_000.0) == 1 and BTC.tier(50_000.01) == 2
    assert BTC.tier(1e12) == 12
    assert BTC.max_leverage_at(600_000.0) == 100.0 and BTC.max_leverage_at(600_001.0) == 75.0
    assert BTC.as_of == "2024-10-24"


def test_isolated_margin_uses_the_capped_leverage() -> None:
    assert isolated_margin(10_000.0, 10.0, BTC.cap, BTC.max_leverage) == pytest.approx(1_000.0)
    # 20M notional is tier 5 (25x max): margin at 25x even if 125x was asked for
    assert isolated_margin(20e6, 125.0, BTC.cap, BTC.max_leverage) == pytest.approx(20e6 / 25)


# -- Sizing -------------------------------------------------------------------------------------


def packed(**kwargs):
    fee = kwargs.pop("fee", 0.0005)
    slippage_bps = kwargs.pop("slippage_bps", 1.0)
    return risk_params(RiskConfig(**kwargs), MarketCosts(taker_fee=fee, slippage_bps=slippage_bps))


@settings(max_examples=300, deadline=None)
@given(equity=st.floats(100.0, 1e8), entry=prices, distance=st.floats(1e-4, 0.5), side=sides,
       risk=st.floats(0.001, 0.2), fee=st.floats(0.0, 0.002), slip_bps=st.floats(0.0, 50.0),
       magnitude=st.floats(0.01, 1.0), lev=st.floats(1.0, 125.0))
def test_risk_at_the_stop_never_exceeds_the_budget(equity: float, entry: float, distance: float, side: int,
                                                    risk: float, fee: float, slip_bps: float, magnitude: float,
                                                    lev: float) -> None:
    stop = entry * (1 - side * distance)
    p = packed(sizing="risk_per_trade", risk_per_trade=risk, max_leverage=lev, fee=fee, slippage_bps=slip_bps)
    qty = entry_quantity(p, side, magnitude, equity, entry, stop, np.nan, 0, 0.0, 0, 0.0,
                         BTC.floor, BTC.cap, BTC.max_leverage)
    slip = slip_bps / 10_000
    # independent arithmetic: fill entry and stop with adverse slippage, pay the fee on both fills
    fill_in, fill_out = entry * (1 + side * slip), stop * (1 - side * slip)
    loss = qty * (side * (fill_in - fill_out) + fee * fill_in + fee * fill_out)
    assert loss <= risk * equity * (1 + 1e-9)
    uncapped = risk * equity / loss_per_unit(entry, stop, side, fee, slip)
    if qty * entry < min(lev * equity, BTC.max_notional(equity, lev)) * (1 - 1e-9):
        assert qty == pytest.approx(uncapped * magnitude, rel=1e-9)  # not capped: the full budget


@settings(max_examples=300, deadline=None)
@given(method=st.sampled_from(list(SIZING_CODES)), equity=st.floats(10.0, 1e9), entry=prices,
       distance=st.one_of(st.just(math.nan), st.floats(1e-5, 0.9)), side=sides, lev=st.floats(0.5, 125.0),
       fraction=st.floats(0.01, 10.0), vol=st.floats(0.01, 5.0), wins=st.integers(0, 50),
       losses=st.integers(0, 50))
def test_leverage_never_exceeds_the_caps(method: str, equity: float, entry: float, distance: float, side: int,
                                         lev: float, fraction: float, vol: float, wins: int, losses: int) -> None:
    p = packed(sizing=method, max_leverage=lev, fixed_fraction=fraction, vol_target=fraction,
               kelly_cap=1.0, kelly_fraction=1.0)
    stop = entry * (1 - side * distance)
    qty = entry_quantity(p, side, 1.0, equity, entry, stop, vol, wins, wins * 0.03, losses, losses * 0.01,
                         BTC.floor, BTC.cap, BTC.max_leverage)
    notional = qty * entry
    assert qty >= 0.0
    assert notional <= lev * equity * (1 + 1e-9)
    assert notional <= BTC.max_leverage_at(notional) * equity * (1 + 1e-9)


def test_sizing_methods_by_hand() -> None:
    args = (1, 1.0, 10_000.0, 100.0, 98.0, 0.5, 0, 0.0, 0, 0.0, BTC.floor, BTC.cap, BTC.max_leverage)
    costless = {"fee": 0.0, "slippage_bps": 0.0}
    assert entry_quantity(packed(sizing="risk_per_trade", **costless), *args) == pytest.approx(50.0)
    assert entry_quantity(packed(sizing="fixed_fraction", fixed_fraction=0.5, **costless), *args) == pytest.approx(50.0)
    # volatility target 0.5 with realised 0.5 → notional = equity
    assert entry_quantity(packed(sizing="volatility_target", vol_target=0.5, **costless), *args) == pytest.approx(100.0)
    # no stop: risk per trade falls back to fixed fraction
    no_stop = (1, 1.0, 10_000.0, 100.0, math.nan) + args[5:]
    assert entry_quantity(packed(sizing="risk_per_trade", fixed_fraction=0.5, **costless), *no_stop) == pytest.approx(50.0)
    # max leverage caps: 5 × 10,000 / 100
    big = packed(sizing="fixed_fraction", fixed_fraction=10.0, max_leverage=5.0, **costless)
    assert entry_quantity(big, *args) == pytest.approx(500.0)
    # a stop on the wrong side is no stop
    assert risk_size(10_000.0, 100.0, 101.0, 1, 0.01, 0.0, 0.0) == 0.0


def test_kelly_fraction_by_hand() -> None:
    # 60 % winners paying 2 % against losers of 1 %: f* = 0.6 − 0.4 / 2 = 0.4; a quarter Kelly = 0.1
    assert kelly_fraction(12, 12 * 0.02, 8, 8 * 0.01, 0.25, 0.25, 20) == pytest.approx(0.1)
    assert kelly_fraction(12, 12 * 0.02, 8, 8 * 0.01, 1.0, 0.25, 20) == pytest.approx(0.25)  # capped
    assert kelly_fraction(5, 0.1, 5, 0.3, 0.25, 0.25, 20) == -1.0  # too few trades yet
    assert kelly_fraction(5, 0.05, 15, 0.3, 0.25, 0.25, 20) == 0.0  # no edge: no bet


# -- Stops ---------------------------------------------------------------------------------------


@settings(deadline=None)  # the first call may compile numba code
@given(side=sides, start=st.floats(1_000.0, 100_000.0), moves=st.lists(st.floats(-0.05, 0.05), min_size=1,
                                                                          max_size=60),
       atrs=st.lists(st.one_of(st.just(math.nan), st.floats(1.0, 5_000.0)), min_size=60, max_size=60),
       mult=st.floats(0.5, 5.0))
def test_trailing_stop_never_loosens(side: int, start: float, moves: list[float], atrs: list[float],
                                     mult: float) -> None:
    price = start
    stop = start - side * mult * 1_000.0
    for move, atr in zip(moves, atrs, strict=False):
        price *= 1 + move
        new = trail_stop(stop, price, side, atr, mult)
        assert side * (new - stop) >= 0.0
        stop = new


def test_stop_is_pulled_inside_the_liquidation_buffer() -> None:
    # long at 100k, LP 90k: stops below 90.5k (LP + 5 % of 10k) are pulled up to it
    assert clamp_to_liquidation(85_000.0, 90_000.0, 100_000.0, 1, 0.05) == pytest.approx(90_500.0)
    assert clamp_to_liquidation(95_000.0, 90_000.0, 100_000.0, 1, 0.05) == 95_000.0
    assert clamp_to_liquidation(115_000.0, 110_000.0, 100_000.0, -1, 0.05) == pytest.approx(109_500.0)
    assert math.isnan(clamp_to_liquidation(math.nan, 90_000.0, 100_000.0, 1, 0.05))


def test_average_true_range_by_hand() -> None:
    high = np.array([10.0, 12.0, 11.0, 13.0])
    low = np.array([8.0, 9.0, 9.0, 10.0])
    close = np.array([9.0, 11.0, 10.0, 12.0])
    atr = average_true_range(high, low, close, 2)
    # TR: 2, 3, 2, 3; first ATR = mean(2, 3) = 2.5; then (2.5 + 2) / 2, (2.25 + 3) / 2
    assert np.isnan(atr[0])
    np.testing.assert_allclose(atr[1:], [2.5, 2.25, 2.625])


# -- Protections --------------------------------------------------------------------------------------

H = 3_600


def params(**kwargs):
    base = {"max_drawdown": 1.0, "reduce_drawdown": 0.99, "daily_loss": 1.0}
    return packed(**{**base, **kwargs})


@settings(deadline=None)  # the first call may compile numba code
@given(state=st.sampled_from([ACTIVE, REDUCING, HALTED]), position=st.floats(-10.0, 10.0),
       order=st.floats(-10.0, 10.0))
def test_halted_allows_only_flattening_orders(state: int, position: float, order: float) -> None:
    ok = allows(state, position, order)
    if order == 0.0 or state != HALTED:
        assert ok
    elif ok:
        assert abs(position + order) < abs(position) and (position + order) * position >= 0.0
    else:
        assert abs(position + order) >= abs(position) or (position + order) * position < 0.0


def test_entry_scale_by_state() -> None:
    p = params(reduce_size_factor=0.25)
    assert (entry_scale(ACTIVE, p), entry_scale(REDUCING, p), entry_scale(HALTED, p)) == (1.0, 0.25, 0.0)


def run_states(s: ProtectionState, p, steps: list[tuple[float, int]]) -> list[int]:
    """Feed (equity, time) closes; return the state codes."""
    codes = []
    for equity, t in steps:
        s, code = update_state(s, equity, t, p)
        codes.append(int(code))
    return codes


@pytest.mark.parametrize("step", [H, 300])  # 1h and 5m bars: the locks are times
def test_drawdown_halt_releases_after_its_lock_and_restarts_the_peak(step: int) -> None:
    p = params(max_drawdown=0.25, reduce_drawdown=0.15, halt_duration="2h")
    per_hour = H // step
    closes = [(10_000.0, 0), (7_400.0, step)]  # 26 % down at t = step: HALTED until step + 2 h
    closes += [(7_400.0, step + i * step) for i in range(1, 2 * per_hour + 2)]
    codes = run_states(new_state(10_000.0, 0), p, closes)
    # t = step .. step + 2h − step are HALTED (2·per_hour closes), then the peak is 7,400: ACTIVE
    assert codes == [ACTIVE] + [HALTED] * (2 * per_hour) + [ACTIVE] * 2


def test_reducing_releases_when_the_peak_is_older_than_the_lookback() -> None:
    p = params(max_drawdown=0.25, reduce_drawdown=0.15, drawdown_lookback="5h")
    # peak 10,000 at t = 0; 8,400 is 16 % down → REDUCING until the peak is 5 h old, then 8,400 is the peak
    closes = [(10_000.0, 0)] + [(8_400.0, k * H) for k in range(1, 7)]
    assert run_states(new_state(10_000.0, 0), p, closes) == [ACTIVE] + [REDUCING] * 4 + [ACTIVE] * 2
    # a new high resets the clock: 10,500 at 1 h keeps the peak alive until 6 h
    closes = [(10_000.0, 0), (10_500.0, H)] + [(8_900.0, k * H) for k in range(2, 8)]
    assert run_states(new_state(10_000.0, 0), p, closes) == [ACTIVE] * 2 + [REDUCING] * 4 + [ACTIVE] * 2


def test_daily_loss_halts_until_the_next_day() -> None:
    p = params(daily_loss=0.05)
    day = 86_400
    codes = run_states(new_state(10_000.0, 0), p, [
        (9_800.0, 0),
        (9_400.0, H),  # 6 % down since the day began: HALTED until 00:00 tomorrow
        (9_900.0, 2 * H),  # still the same day
        (9_500.0, day),  # new day, start = 9,900
        (9_400.0, day + H),  # 9,405 is 5 % below 9,900
        (9_400.0, 2 * day - 300),
        (9_400.0, 2 * day),
    ])
    assert codes == [ACTIVE, HALTED, HALTED, ACTIVE, HALTED, HALTED, ACTIVE]


def test_cooldown_after_consecutive_stopouts_releases_after_its_duration() -> None:
    p = params(cooldown_stopouts=2, cooldown="3h")
    s = new_state(10_000.0, 0)
    s = record_exit(s, True, 5 * H, p)
    s = record_exit(s, False, 6 * H, p)  # any other exit resets the count
    s = record_exit(s, True, 7 * H, p)
    assert run_states(s, p, [(10_000.0, 7 * H)]) == [ACTIVE]
    s = record_exit(s, True, 8 * H, p)
    assert run_states(s, p, [(10_000.0, t * H) for t in range(8, 13)]) == [HALTED] * 3 + [ACTIVE] * 2


@settings(deadline=None)
@given(equities=st.lists(st.floats(1_000.0, 20_000.0), min_size=1, max_size=80),
       halt_h=st.integers(1, 10), lookback_h=st.integers(1, 50))
def test_every_state_is_left_once_the_account_is_flat(equities: list[float], halt_h: int, lookback_h: int) -> None:
    # whatever happened before, a flat account (constant equity) is ACTIVE again after the longest lock
    p = params(max_drawdown=0.25, reduce_drawdown=0.15, daily_loss=0.05, halt_duration=f"{halt_h}h",
               drawdown_lookback=f"{lookback_h}h")
    s = new_state(10_000.0, 0)
    for k, equity in enumerate(equities):
        s, _ = update_state(s, equity, k * H, p)
    t = len(equities) * H + max(halt_h, lookback_h) * H + 86_400
    s, code = update_state(s, equities[-1], t, p)
    assert code == ACTIVE


def test_a_person_can_clear_a_halt() -> None:
    p = params(max_drawdown=0.25, reduce_drawdown=0.15, halt_duration="7d")
    s, code = update_state(new_state(10_000.0, 0), 7_000.0, H, p)
    assert code == HALTED
    s = clear_halt(s, 2 * H)
    s, code = update_state(s, 7_000.0, 2 * H, p)
    assert code == ACTIVE and s.peak == 7_000.0


def test_inconsistent_levels_exit_2_from_the_cli(tmp_path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "config.toml"
    bad.write_text("[risk]\nmax_drawdown = 0.1\nreduce_drawdown = 0.2\n")
    proc = subprocess.run([sys.executable, "-m", "bot", "data-info", "--config", str(bad)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "reduce_drawdown (0.2) must be below max_drawdown (0.1)" in line


def test_state_is_a_value() -> None:
    p = params()
    s0 = new_state(10_000.0, 0)
    s1, _ = update_state(s0, 12_000.0, 0, p)
    assert s0.peak == 10_000.0 and s1.peak == 12_000.0 and isinstance(s1, ProtectionState)


def test_trading_state_names() -> None:
    assert TradingState(HALTED).name == "HALTED" and int(TradingState.REDUCING) == REDUCING


def test_inconsistent_levels_are_refused_at_config_load() -> None:
    from bot.config import parse_config
    from bot.errors import UserError

    with pytest.raises(UserError, match=r"reduce_drawdown \(0.3\) must be below max_drawdown \(0.25\)"):
        parse_config({"risk": {"reduce_drawdown": 0.3}})
    with pytest.raises(UserError, match="risk.cooldown: .*invalid duration '24'"):
        parse_config({"risk": {"cooldown": "24"}})


# -- Fills, intrabar order, target rule ----------------------------------------------------------


def test_intrabar_order_long() -> None:
    # open, high, low, mark open/high/low, stop, take profit, LP, slippage
    both_hit = intrabar_exit(1, 100.0, 110.0, 90.0, 100.0, 110.0, 90.0, 95.0, 105.0, 80.0, 0.0)
    assert both_hit == (EXIT_STOP, 95.0)
    gap = intrabar_exit(1, 94.0, 96.0, 93.0, 94.0, 96.0, 93.0, 95.0, 105.0, 80.0, 0.0)
    assert gap == (EXIT_STOP, 94.0)
    stop_first = intrabar_exit(1, 100.0, 101.0, 70.0, 100.0, 101.0, 70.0, 95.0, math.nan, 80.0, 0.0)
    assert stop_first == (EXIT_STOP, 95.0)
    beyond_lp = intrabar_exit(1, 100.0, 101.0, 70.0, 100.0, 101.0, 70.0, 75.0, math.nan, 80.0, 0.0)
    assert beyond_lp[0] == EXIT_LIQUIDATION
    gap_both = intrabar_exit(1, 79.0, 81.0, 70.0, 79.0, 81.0, 70.0, 95.0, math.nan, 80.0, 0.0)
    assert gap_both[0] == EXIT_LIQUIDATION
    tp = intrabar_exit(1, 100.0, 106.0, 99.0, 100.0, 106.0, 99.0, 95.0, 105.0, 80.0, 0.0)
    assert tp == (EXIT_TAKE_PROFIT, 105.0)
    nothing = intrabar_exit(1, 100.0, 101.0, 99.0, 100.0, 101.0, 99.0, 95.0, 105.0, 80.0, 0.0)
    assert nothing[0] == EXIT_NONE
    # the entry bar: LP inside its mark range liquidates even though the stop lies before LP
    assert stop_first[0] == EXIT_STOP
    entry_bar = intrabar_exit(1, 100.0, 101.0, 70.0, 100.0, 101.0, 70.0, 95.0, math.nan, 80.0, 0.0, True)
    assert entry_bar[0] == EXIT_LIQUIDATION
    assert intrabar_exit(1, 100.0, 101.0, 90.0, 100.0, 101.0, 90.0, 95.0, math.nan, 80.0, 0.0, True)[0] == EXIT_STOP


@settings(deadline=None)  # the first call may compile numba code
@given(side=sides, o=st.floats(90.0, 110.0), up=st.floats(0.0, 20.0), down=st.floats(0.0, 20.0),
       stop_d=st.floats(0.1, 15.0), tp_d=st.floats(0.1, 15.0), lp_d=st.floats(5.0, 30.0), slip=st.floats(0.0, 0.01))
def test_intrabar_mirror_symmetry(side: int, o: float, up: float, down: float, stop_d: float, tp_d: float,
                                  lp_d: float, slip: float) -> None:
    h, lo = o + up, o - down
    long = intrabar_exit(1, o, h, lo, o, h, lo, 100.0 - stop_d, 100.0 + tp_d, 100.0 - lp_d, slip)
    m = 200.0
    short = intrabar_exit(-1, m - o, m - lo, m - h, m - o, m - lo, m - h, 100.0 + stop_d, 100.0 - tp_d,
                          100.0 + lp_d, 0.0)
    assert long[0] == short[0]
    for entry_bar in (False, True):
        a = intrabar_exit(1, o, h, lo, o, h, lo, 100.0 - stop_d, 100.0 + tp_d, 100.0 - lp_d, slip, entry_bar)
        b = intrabar_exit(-1, m - o, m - lo, m - h, m - o, m - lo, m - h, 100.0 + stop_d, 100.0 - tp_d,
                          100.0 + lp_d, slip, entry_bar)
        assert a[0] == b[0]
        if a[0] != EXIT_LIQUIDATION and a[0] != EXIT_NONE:
            assert a[1] - 100.0 == pytest.approx(100.0 - b[1], abs=1e-9) or slip > 0.0


@settings(deadline=None)  # the first call may compile numba code
@given(side=sides, price=prices, spread=st.floats(0.0, 0.05), slip=st.floats(0.0, 0.01))
def test_market_fills_are_adverse_by_the_slippage(side: int, price: float, spread: float, slip: float) -> None:
    fill = market_fill(side, price, slip)
    assert fill == price * (1 + side * slip)  # a cost: never clipped to a bar's range
    assert side * (fill - price) >= 0.0


@pytest.mark.parametrize(("position", "target", "blocked", "expected"), [
    (0, 1.0, 0, (False, 1, 0)),
    (0, -0.3, 0, (False, -1, 0)),
    (1, 1.0, 0, (False, 0, 0)),      # held: resizing is ignored
    (1, 0.0, 0, (True, 0, 0)),
    (1, -1.0, 0, (True, -1, 0)),     # flip: close then open
    (0, 1.0, 1, (False, 0, 1)),      # stopped out long, target still long: wait
    (0, 0.0, 1, (False, 0, 0)),      # target went flat: re-armed
    (0, -1.0, 1, (False, -1, 0)),    # opposite side is allowed at once
    (0, math.nan, 0, (False, 0, 0)),
])
def test_target_rule(position: int, target: float, blocked: int, expected: tuple) -> None:
    assert target_action(position, target, blocked) == expected


@pytest.mark.parametrize("module", ["brackets", "liquidation", "params", "protections", "sizing", "stops"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    failures, tried = doctest.testmod(importlib.import_module(f"bot.risk.{module}"))
    assert tried > 0 and failures == 0
