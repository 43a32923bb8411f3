"""Risk and cost settings packed into one float array, the form numba kernels take.

`pack_params` is the single place where `RiskConfig`/`BacktestConfig` become numbers: method names
become integer codes, basis points become fractions. Both backtest engines (and the paper broker)
pass the same packed array to the same `bot.risk` functions.
"""

from __future__ import annotations

import numpy as np

from bot.config import RiskConfig

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

# closed trades needed before Kelly sizing replaces risk-per-trade sizing
KELLY_MIN_TRADES = 20
# freqtrade's liquidation_buffer: a stop may sit no closer to LP than 5 % of |EP − LP| (§D.3.4)
LIQUIDATION_BUFFER = 0.05

# indices into the packed array
P_SIZING = 0
P_RISK_PER_TRADE = 1
P_FIXED_FRACTION = 2
P_VOL_TARGET = 3
P_KELLY_FRACTION = 4
P_KELLY_CAP = 5
P_MAX_LEVERAGE = 6
P_STOP = 7
P_STOP_PCT = 8
P_ATR_MULT = 9
P_MAX_DRAWDOWN = 10
P_REDUCE_DRAWDOWN = 11
P_DAILY_LOSS = 12
P_COOLDOWN_STOPOUTS = 13
P_COOLDOWN_BARS = 14
P_TAKER_FEE = 15
P_SLIPPAGE = 16
P_KELLY_MIN_TRADES = 17
P_LIQUIDATION_BUFFER = 18
N_PARAMS = 19


def pack_params(risk: RiskConfig, taker_fee: float = 0.0005, slippage_bps: float = 0.0) -> np.ndarray:
    """Return ``risk`` and the cost model as the float array indexed by the ``P_*`` constants."""
    p = np.zeros(N_PARAMS, dtype=np.float64)
    p[P_SIZING] = SIZING_CODES[risk.sizing]
    p[P_RISK_PER_TRADE] = risk.risk_per_trade
    p[P_FIXED_FRACTION] = risk.fixed_fraction
    p[P_VOL_TARGET] = risk.vol_target
    p[P_KELLY_FRACTION] = risk.kelly_fraction
    p[P_KELLY_CAP] = risk.kelly_cap
    p[P_MAX_LEVERAGE] = risk.max_leverage
    p[P_STOP] = STOP_CODES[risk.stop]
    p[P_STOP_PCT] = risk.stop_pct
    p[P_ATR_MULT] = risk.atr_mult
    p[P_MAX_DRAWDOWN] = risk.max_drawdown
    p[P_REDUCE_DRAWDOWN] = risk.reduce_drawdown
    p[P_DAILY_LOSS] = risk.daily_loss
    p[P_COOLDOWN_STOPOUTS] = risk.cooldown_stopouts
    p[P_COOLDOWN_BARS] = risk.cooldown_bars
    p[P_TAKER_FEE] = taker_fee
    p[P_SLIPPAGE] = slippage_bps / 10_000.0
    p[P_KELLY_MIN_TRADES] = KELLY_MIN_TRADES
    p[P_LIQUIDATION_BUFFER] = LIQUIDATION_BUFFER
    return p
