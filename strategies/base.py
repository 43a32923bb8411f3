"""The strategy contract (docs/architecture.md, "The strategy contract") as one typed value.

A strategy is a :class:`StrategySpec`: its ``Params`` (a frozen pydantic dataclass, unknown keys
rejected), a pure ``signals(frame, p, features=None)`` returning ``target, stop, take_profit`` on
``frame.index``, an optuna search space ``suggest(trial) -> Params``, the history it needs
``warmup(p) -> pd.Timedelta`` and, optionally, a ``features(frame, p)`` hook returning the
parameter-independent part of its computation (liquidation map, levels...).

``features`` may only read the ``Params`` fields named in ``feature_params``: the optimiser caches
its result keyed on those fields (:func:`feature_key`) and passes it back as
``signals(frame, p, features=...)``; the backtest report draws exactly the features the strategy
traded on. ``signals(frame, p)`` without features computes them itself and must give the same
frame.

Decisions are made at bar close and filled by the core at the next open; a strategy states its
intent (a held ``target``, its protective ``stop`` and ``take_profit`` levels) and never simulates
its own fills or stops: the core executes them (``[risk] stop`` other than ``strategy`` replaces
the strategy's stop).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["SIGNAL_COLUMNS", "SLOWEST_TIMEFRAME", "StrategySpec", "bar_lookback", "feature_key", "flat"]

SIGNAL_COLUMNS: tuple[str, ...] = ("target", "stop", "take_profit")

SLOWEST_TIMEFRAME = pd.Timedelta(hours=4)
"""Bar-counted lookbacks (an EMA length, a pivot window) are turned into a warm-up duration at this
bar size, so a declared warm-up covers them on every timeframe from 1m to 4h."""


def bar_lookback(bars: int | float) -> pd.Timedelta:
    """The duration of ``bars`` bars at :data:`SLOWEST_TIMEFRAME` (the warm-up of a bar-counted lookback)."""
    return float(bars) * SLOWEST_TIMEFRAME


def flat(frame: pd.DataFrame) -> pd.DataFrame:
    """A signal frame that never trades (``target = 0``, no stop, no take-profit)."""
    n = len(frame)
    return pd.DataFrame({"target": np.zeros(n), "stop": np.full(n, np.nan), "take_profit": np.full(n, np.nan)},
                        index=frame.index)


def _no_search_space(trial: Any) -> Any:
    raise ValueError("this strategy defines no search space: add suggest(trial) -> Params")


@dataclass(frozen=True)
class StrategySpec:
    """One strategy: its parameters, its signal function and what an optimiser or a runner needs.

    Attributes:
        name: registry name (``[strategies.<name>]`` table, ``--strategy``).
        Params: frozen pydantic dataclass of the parameters, extra keys rejected.
        signals: ``signals(frame, p, features=None) -> DataFrame[target, stop, take_profit]``.
        suggest: ``suggest(trial) -> Params``, the optuna define-by-run search space.
        warmup: ``warmup(p) -> pd.Timedelta``, history needed before the first valid signal, on any
            timeframe up to :data:`SLOWEST_TIMEFRAME`.
        features: ``features(frame, p)``, the parameter-independent features (or None).
        feature_params: the ``Params`` fields ``features`` reads (the exact cache key).
        description: one paragraph for ``cascade strategies`` (default: the module docstring's first line).
    """

    name: str
    Params: type
    signals: Callable[..., pd.DataFrame]
    suggest: Callable[[Any], Any] = _no_search_space
    warmup: Callable[[Any], pd.Timedelta] = lambda p: pd.Timedelta(0)
    features: Callable[[pd.DataFrame, Any], Any] | None = None
    feature_params: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.Params):
            raise TypeError(f"strategy '{self.name}': Params must be a (pydantic) dataclass")
        fields = {f.name for f in dataclasses.fields(self.Params)}
        unknown = [f for f in self.feature_params if f not in fields]
        if unknown:
            raise TypeError(f"strategy '{self.name}': feature_params {unknown} are not fields of Params")

    def compute_features(self, frame: pd.DataFrame, p: Any) -> Any:
        """``features(frame, p)``, or None for a strategy without the hook."""
        return None if self.features is None else self.features(frame, p)

    def run(self, frame: pd.DataFrame, p: Any, features: Any = None) -> pd.DataFrame:
        """``signals`` checked against the contract: the three columns on ``frame.index``, ``|target| <= 1``.

        Raises ``ValueError`` naming the strategy and the broken rule (a target of 2 is an error, not
        a silent leverage change).
        """
        out = self.signals(frame, p, features) if features is not None else self.signals(frame, p)
        if not isinstance(out, pd.DataFrame):
            raise ValueError(f"strategy '{self.name}': signals() returned {type(out).__name__}, not a DataFrame")
        missing = [c for c in SIGNAL_COLUMNS if c not in out.columns]
        if missing:
            raise ValueError(f"strategy '{self.name}': signals() lacks column(s) {', '.join(missing)}")
        if not out.index.equals(frame.index):
            raise ValueError(f"strategy '{self.name}': signals() must be indexed like the frame")
        target = out["target"].to_numpy(np.float64)
        bad = ~np.isfinite(target) | (np.abs(target) > 1.0 + 1e-12)
        if bad.any():
            at = out.index[int(np.argmax(bad))]
            raise ValueError(f"strategy '{self.name}': target {target[bad][0]!r} at {at} is not in [-1, 1]")
        return out[list(SIGNAL_COLUMNS)].astype(np.float64)


def feature_key(spec: StrategySpec, p: Any) -> tuple[Any, ...]:
    """The cache key of ``spec.features(frame, p)`` for one frame: the values of ``feature_params``."""
    return tuple(getattr(p, f) for f in spec.feature_params)
