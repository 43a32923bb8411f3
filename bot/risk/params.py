"""Risk and cost settings as one typed value the numba functions take: `RiskParams`.

`risk_params` is the single place where `RiskConfig` and a market's `MarketCosts` become numbers:
method names become integer codes, basis points become fractions, durations become seconds. The
defaults themselves live once, in `bot.config`. Both backtest engines, the paper broker and the live
runner pass the same `RiskParams` to the same `bot.core` / `bot.risk` functions.

>>> from bot.config import MarketCosts, RiskConfig
>>> p = risk_params(RiskConfig(), MarketCosts(taker_fee=0.0005, slippage_bps=1.0))
>>> p.sizing == SIZING_RISK_PER_TRADE, p.slippage, p.cooldown
(True, 0.0001, 86400)
"""

from __future__ import annotations

from typing import NamedTuple

from bot.config import MarketCosts, RiskConfig, duration_seconds

# sizing methods
SIZING_RISK_PER_TRADE = 0
SIZING_FIXED_FRACTION = 1
SIZING_VOLATILITY_TARGET = 2
SIZING_KELLY = 3
SIZING_CODES = {"risk_per_trade": SIZING_RISK_PER_TRADE, "fixed_fraction": SIZING_FIXED_FRACTION,
                "volatility_target": SIZING_VOLATILITY_TARGET, "kelly": SIZING_KELLY}

# stop modes
STOP_STRATEGY = 0
STOP_FIXED_PCT = 1
STOP_ATR = 2
STOP_TRAILING_ATR = 3
STOP_CODES = {"strategy": STOP_STRATEGY, "fixed_pct": STOP_FIXED_PCT, "atr": STOP_ATR,
              "trailing_atr": STOP_TRAILING_ATR}


class RiskParams(NamedTuple):
    """Every number the core's rules read (fractions, not percent or basis points; times in seconds)."""

    sizing: int  # SIZING_* code
    risk_per_trade: float
    fixed_fraction: float
    vol_target: float
    kelly_fraction: float
    kelly_cap: float
    kelly_min_trades: int
    max_leverage: float
    stop_mode: int  # STOP_* code
    stop_pct: float
    atr_mult: float
    liquidation_buffer: float
    taker_fee: float
    slippage: float  # fraction of the price
    max_drawdown: float
    reduce_drawdown: float
    drawdown_lookback: int  # s
    halt_duration: int  # s
    reduce_size_factor: float
    daily_loss: float
    cooldown_stopouts: int
    cooldown: int  # s


def risk_params(risk: RiskConfig, costs: MarketCosts) -> RiskParams:
    """Return ``risk`` and one market's ``costs`` as the `RiskParams` the core takes."""
    return RiskParams(
        sizing=SIZING_CODES[risk.sizing],
        risk_per_trade=float(risk.risk_per_trade),
        fixed_fraction=float(risk.fixed_fraction),
        vol_target=float(risk.vol_target),
        kelly_fraction=float(risk.kelly_fraction),
        kelly_cap=float(risk.kelly_cap),
        kelly_min_trades=int(risk.kelly_min_trades),
        max_leverage=float(risk.max_leverage),
        stop_mode=STOP_CODES[risk.stop],
        stop_pct=float(risk.stop_pct),
        atr_mult=float(risk.atr_mult),
        liquidation_buffer=float(risk.liquidation_buffer),
        taker_fee=float(costs.taker_fee),
        slippage=float(costs.slippage_bps) / 10_000.0,
        max_drawdown=float(risk.max_drawdown),
        reduce_drawdown=float(risk.reduce_drawdown),
        drawdown_lookback=duration_seconds(risk.drawdown_lookback),
        halt_duration=duration_seconds(risk.halt_duration),
        reduce_size_factor=float(risk.reduce_size_factor),
        daily_loss=float(risk.daily_loss),
        cooldown_stopouts=int(risk.cooldown_stopouts),
        cooldown=duration_seconds(risk.cooldown),
    )
