"""The one place where the optimiser meets strategies, data and engines.

Everything else in :mod:`backtests.optimize` talks to a :class:`Strategy` handle and to
:func:`load_dataset` / :func:`run_engine`, so switching to the shared ``StrategySpec`` and the
runner is a change of this module only:

* ``resolve`` accepts any strategy reference ``strategies.load_strategy`` takes (a registered name,
  a user file, ``module:NAME``) or a ``StrategySpec``-like object (``Params``, ``signals``,
  ``suggest``, ``warmup`` and optionally ``features``/``feature_params``);
* ``warmup`` may return bars (an ``int``) or a ``pd.Timedelta`` (the spec);
* parameter-independent features come from ``features(frame, p)`` when the strategy has it, keyed
  on ``feature_params`` so the cache is exact.

Features are computed once per dataset on the whole loaded frame (they are causal: the prefix test
of docs/architecture.md), sliced per window, and inherited by forked worker processes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import math
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bot.timeframes import timeframe_to_timedelta


@dataclass
class Strategy:
    """A strategy as the optimiser sees it (see the module docstring)."""

    name: str
    Params: type
    suggest: Any
    _signals: Any
    _warmup: Any
    _features: Any = None
    feature_params: tuple[str, ...] = ()
    _feature_kw: str | None = None  # keyword under which signals() takes the features
    base: Any = None  # configured Params (fields a trial does not sample keep these values)
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    def warmup_bars(self, p: Any, timeframe: str) -> int:
        """History needed before the first valid signal, in bars of ``timeframe``."""
        w = self._warmup(p)
        if isinstance(w, pd.Timedelta | np.timedelta64):
            return int(math.ceil(pd.Timedelta(w) / timeframe_to_timedelta(timeframe)))
        return int(w)

    def features(self, frame: pd.DataFrame, p: Any) -> Any:
        """Parameter-independent features of ``frame`` (None when the strategy has none), cached."""
        if self._features is None:
            return None
        key = (id(frame), len(frame), tuple(getattr(p, f) for f in self.feature_params))
        if key not in self._cache:
            self._cache[key] = self._features(frame, p)
        return self._cache[key]

    def signals(self, frame: pd.DataFrame, p: Any, features: Any = None) -> pd.DataFrame:
        """``signals(frame, p)`` with the precomputed features when the strategy takes them."""
        if features is None or self._feature_kw is None:
            return self._signals(frame, p)
        return self._signals(frame, p, **{self._feature_kw: features})

    def n_free_params(self) -> int:
        """How many parameters :attr:`suggest` tunes (docs/methods.md §E.5 item 3)."""
        import optuna

        study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
        trial = study.ask()
        self.suggest(trial)
        return len(trial.params)


def resolve(ref: Any, cfg: Any = None) -> Strategy:
    """A :class:`Strategy` for a strategy reference (registered name, ``path/to/file.py``,
    ``module:NAME``; :func:`strategies.load_strategy`) or a ``StrategySpec``-like object.

    With ``cfg``, every field a trial does not sample keeps the configured value (``[liqmap]``,
    ``[strategies.<name>]``), exactly as a backtest builds the parameters (``backtests.runner``), so
    what was tuned is what a backtest of the chosen parameters runs.

    Raises:
        KeyError: unknown registered name (message lists the choices).
        UserError: a user strategy file that cannot be loaded.
    """
    if isinstance(ref, Strategy):
        return ref
    if isinstance(ref, str):
        from strategies import load_strategy

        obj: Any = load_strategy(ref)
    else:
        obj = ref
    name = getattr(obj, "name", None) or getattr(obj, "__name__", "strategy").rsplit(".", 1)[-1]
    suggest, base = obj.suggest, None
    if cfg is not None:
        from backtests.runner import strategy_params, suggest_params

        base = strategy_params(cfg, obj)
        suggest = functools.partial(suggest_params, cfg, obj)
    features = getattr(obj, "features", None)
    if features is None or isinstance(features, types.ModuleType) or not callable(features):
        return Strategy(name, obj.Params, suggest, obj.signals, obj.warmup, base=base)
    kw = "features" if "features" in inspect.signature(obj.signals).parameters else None
    return Strategy(name, obj.Params, suggest, obj.signals, obj.warmup, features,
                    tuple(getattr(obj, "feature_params", ())), kw, base=base)


def make_params(strategy: Strategy, values: dict[str, Any]) -> Any:
    """``strategy``'s Params from ``values`` (a trial's ``params``); the other fields keep the
    configured values when the strategy was resolved with a config, else the defaults."""
    if strategy.base is None:
        return strategy.Params(**values)
    return dataclasses.replace(strategy.base, **values)


def slice_features(features: Any, start: int, stop: int, n: int) -> Any:
    """Rows ``start:stop`` of features aligned on a frame of ``n`` bars (frames, series, arrays,
    dicts/tuples of them); anything else is passed whole."""
    if features is None:
        return None
    if isinstance(features, pd.DataFrame | pd.Series):
        return features.iloc[start:stop] if len(features) == n else features
    if isinstance(features, np.ndarray):
        return features[start:stop] if features.ndim and features.shape[0] == n else features
    if isinstance(features, dict):
        return {k: slice_features(v, start, stop, n) for k, v in features.items()}
    if isinstance(features, tuple | list):
        return type(features)(slice_features(v, start, stop, n) for v in features)
    return features


def load_dataset(cfg: Any, end: pd.Timestamp | None = None) -> pd.DataFrame:
    """The frame for ``cfg.data`` with every stored bar before ``end`` (warm-up bars included)."""
    from bot.data import load_frame

    d = cfg.data
    frame = load_frame(d.dir, d.exchange, d.symbol, d.timeframe, None, end, use_sample=d.use_sample,
                       open_interest_source=d.open_interest_source)
    frame.attrs["symbol"] = d.symbol
    return frame


def frame_hash(frame: pd.DataFrame) -> str:
    """A short content hash of ``frame`` (index and values): joining workers must hold the same data."""
    h = hashlib.sha256(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    h.update(",".join(frame.columns).encode())
    return h.hexdigest()[:16]


def run_engine(frame: pd.DataFrame, signals: pd.DataFrame, cfg: Any, engine: str) -> Any:
    """``backtests.engines.run_backtest`` with the config's backtest/risk (and costs, when present)."""
    from backtests.engines import run_backtest

    kwargs: dict[str, Any] = {}
    costs = getattr(cfg, "costs", None)
    if costs is not None and _takes_costs(run_backtest):
        kwargs["costs"] = costs
    return run_backtest(frame, signals, cfg.backtest, cfg.risk, engine=engine, symbol=cfg.data.symbol, **kwargs)


@functools.lru_cache(maxsize=8)
def _takes_costs(fn: Any) -> bool:
    """Whether ``fn`` has a ``costs`` parameter (``inspect.signature`` costs more than a small backtest's
    bookkeeping, and the optimiser asks three times per trial)."""
    return "costs" in inspect.signature(fn).parameters
