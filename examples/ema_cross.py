"""EMA(20/50) reversal: long while the fast EMA is above the slow one, short while it is below.

A complete strategy file (docs/architecture.md, "The strategy contract"). Run it from anywhere with
``cascade backtest --strategy path/to/ema_cross.py --param fast=10``, or list it in config.toml
(``[strategies] paths = ["examples/ema_cross.py"]``) and use ``--strategy ema_cross``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import ConfigDict, model_validator
from pydantic.dataclasses import dataclass

from strategies.base import StrategySpec, bar_lookback


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Params:
    """``fast``/``slow``: EMA lengths in bars; ``stop_atr``: stop that far from the close in ATR(14), 0 = none."""

    fast: int = 20
    slow: int = 50
    stop_atr: float = 0.0

    @model_validator(mode="after")
    def _ordered(self) -> Params:
        if not 1 <= self.fast < self.slow:
            raise ValueError("need 1 <= fast < slow")
        return self


def signals(frame: pd.DataFrame, p: Params, features: None = None) -> pd.DataFrame:
    """``target`` = sign(EMA_fast − EMA_slow) (0 until both exist); an optional trailing ATR stop."""
    close = frame["close"]
    fast = close.ewm(span=p.fast, adjust=False, min_periods=p.fast).mean()
    slow = close.ewm(span=p.slow, adjust=False, min_periods=p.slow).mean()
    target = np.sign(fast - slow).fillna(0.0)
    stop = pd.Series(np.nan, index=frame.index)
    if p.stop_atr > 0:  # the core keeps the tightest stop seen while the position is held
        prev = close.shift(1)
        true_range = np.maximum(frame["high"], prev) - np.minimum(frame["low"], prev)
        atr = true_range.ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
        stop = (close - target * p.stop_atr * atr).where(target != 0)
    return pd.DataFrame({"target": target, "stop": stop, "take_profit": np.nan}, index=frame.index)


def suggest(trial) -> Params:
    fast = trial.suggest_int("fast", 5, 50)
    return Params(fast=fast, slow=trial.suggest_int("slow", fast + 5, 200),
                  stop_atr=trial.suggest_float("stop_atr", 0.0, 4.0))


def warmup(p: Params) -> pd.Timedelta:
    """Three slow-EMA lengths of history (its start is forgotten to ~e⁻⁶), on any timeframe."""
    return bar_lookback(3 * p.slow)


SPEC = StrategySpec(name="ema_cross", Params=Params, signals=signals, suggest=suggest, warmup=warmup,
                    description="EMA(20/50) reversal: long above, short below the slow EMA.")
