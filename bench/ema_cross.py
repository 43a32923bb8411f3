"""EMA(20/50) reversal for ``bench/whole.py``: the bench's own copy, used only until the project's
user-strategy example ``examples/ema_cross.py`` exists (``cascade backtest --strategy FILE``).

Always in the market: long while EMA(fast) > EMA(slow), short while below; reverses on the cross.
No stop and no take-profit, so sizing is the risk layer's fixed fraction. It follows the strategy
module contract of ``strategies/funding_reversal.py`` (``Params``/``signals``/``suggest``/``warmup``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

__all__ = ["Params", "signals", "suggest", "warmup"]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Params:
    """EMA spans in bars."""

    fast: int = 20
    slow: int = 50


def signals(frame: pd.DataFrame, p: Params) -> pd.DataFrame:
    """``target`` = sign(EMA(fast) − EMA(slow)) once both EMAs have ``slow`` bars; no stops."""
    close = frame["close"]
    diff = close.ewm(span=p.fast, adjust=False).mean() - close.ewm(span=p.slow, adjust=False).mean()
    target = np.sign(diff).where(np.arange(len(frame)) >= p.slow, 0.0).astype(float)
    return pd.DataFrame({"target": target, "stop": np.nan, "take_profit": np.nan}, index=frame.index)


def suggest(trial: Any) -> Params:
    """Search space: fast 5–50, slow 20–200."""
    return Params(fast=trial.suggest_int("fast", 5, 50), slow=trial.suggest_int("slow", 20, 200))


def warmup(p: Params) -> int:
    """Bars before the first valid signal."""
    return int(p.slow)
