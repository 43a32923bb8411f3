"""Pure signal logic: features (:mod:`strategies.features`) and the registered strategies.

Every strategy is a :class:`~strategies.base.StrategySpec` (docs/architecture.md, "The strategy
contract"): ``Params``, ``signals(frame, p, features=None)``, ``suggest(trial)``,
``warmup(p) -> pd.Timedelta`` and the optional ``features(frame, p)`` hook.

The registry is explicit: a new strategy is a new file with a ``SPEC`` plus one line in
:data:`STRATEGIES`. A strategy file outside the package follows the same contract and is loaded by
:func:`load_strategy` (``path/to/my_strategy.py`` or ``module:NAME``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strategies.base import StrategySpec

__all__ = ["DEFAULT_STRATEGY", "STRATEGIES", "StrategyLoadError", "StrategySpec", "get_strategy",
           "load_strategy", "make_params"]

DEFAULT_STRATEGY = "liq_asymmetry"

_REGISTRY: dict[str, StrategySpec] = {}


def _registry() -> dict[str, StrategySpec]:
    """The registered strategies, imported on first use (``import strategies.features.x`` stays light)."""
    if not _REGISTRY:
        from strategies import confluence, funding_reversal, liq_asymmetry, sr_levels

        _REGISTRY.update({spec.name: spec for spec in (liq_asymmetry.SPEC, funding_reversal.SPEC,
                                                       sr_levels.SPEC, confluence.SPEC)})
    return _REGISTRY


def __getattr__(name: str) -> Any:
    # imported on first use, so that ``import strategies.features.liqmap_params`` (the config does)
    # loads neither pandas nor numba
    if name == "STRATEGIES":  # ``STRATEGIES: dict[str, StrategySpec]``, the explicit registry
        return _registry()
    if name == "StrategySpec":
        from strategies.base import StrategySpec

        return StrategySpec
    if name in ("load_strategy", "StrategyLoadError"):
        from strategies import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'strategies' has no attribute '{name}'")


def get_strategy(name: str) -> StrategySpec:
    """The strategy registered as ``name``; ``KeyError`` with a "did you mean" hint otherwise."""
    STRATEGIES = _registry()
    try:
        return STRATEGIES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(STRATEGIES), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise KeyError(f"unknown strategy '{name}'{hint}; choose one of: {', '.join(STRATEGIES)}") from None


_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}
_NONE = {"none", "null", ""}


def _to_bool(text: str) -> bool | str:
    low = text.lower()
    return True if low in _TRUE else False if low in _FALSE else text  # pydantic reports a bad value


def _to_int(text: str) -> int | str:
    try:
        return int(float(text)) if float(text).is_integer() else text
    except ValueError:
        return text


def _to_float(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


_SCALARS = ((bool, _to_bool), (int, _to_int), (float, _to_float))


def _convert(value: Any, annotation: Any) -> Any:
    """Convert a command-line string to ``annotation``'s type; other values are left to pydantic."""
    if not isinstance(value, str):
        return value
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    text = value.strip()
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.lower() in _NONE:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0]) if len(inner) == 1 else text
    for scalar, to_scalar in _SCALARS:  # by identity: annotations need not be hashable
        if annotation is scalar:
            return to_scalar(text)
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == text:
                return choice
    return text  # pydantic reports the bad value / checks membership


def make_params(spec: StrategySpec | str, overrides: dict[str, Any] | None = None) -> Any:
    """Build a strategy's ``Params`` from defaults plus ``overrides`` (e.g. ``--param k=v`` pairs).

    ``spec``: a :class:`StrategySpec` or a registered name. String values are converted by the
    field's type (``"3"`` → 3, ``"true"`` → True, ``"none"`` → None for optional fields). Unknown keys
    and invalid values raise pydantic's ``ValidationError`` (a ``ValueError``) naming the field; an
    unknown strategy name raises ``KeyError``.
    """
    cls = (get_strategy(spec) if isinstance(spec, str) else spec).Params
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: (_convert(v, hints[k]) if k in fields else v) for k, v in (overrides or {}).items()}
    return cls(**kwargs)
