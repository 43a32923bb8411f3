"""Find a strategy by reference: a registered name, a file ``path/to/my_strategy.py``, or ``module:NAME``.

A strategy file follows the contract of :mod:`strategies.base`. It either defines a
:class:`~strategies.base.StrategySpec` (``SPEC = StrategySpec(...)``; any single module-level
spec is found), or the parts at module level and the spec is built from them:

* ``Params`` (required): a frozen pydantic dataclass;
* ``signals(frame, p)`` or ``signals(frame, p, features=None)`` (required);
* ``warmup(p) -> pd.Timedelta`` (required: the history the signals need);
* ``suggest(trial) -> Params``, ``features(frame, p)``, ``feature_params``, ``NAME`` (optional; the
  name defaults to the file's stem, the description to the module docstring).

A broken file raises :class:`StrategyLoadError` whose message is one line naming the file and the
problem (missing file, syntax error, failing import, missing part, wrong warm-up type).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from strategies.base import StrategySpec

__all__ = ["StrategyLoadError", "load_strategy", "spec_from_module"]

_MODULES: dict[Path, types.ModuleType] = {}  # each file is executed once per process


class StrategyLoadError(ValueError):
    """A strategy reference that cannot be loaded; the message is one line naming the file and problem."""


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _accepts_features(fn: Any) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return "features" in params or len(params) >= 3 or any(
        p.kind is inspect.Parameter.VAR_POSITIONAL for p in params.values())


def spec_from_module(module: types.ModuleType, where: str, attr: str | None = None) -> StrategySpec:
    """The strategy a module defines (module docstring); ``attr`` names a spec attribute explicitly."""
    if attr is not None:
        value = getattr(module, attr, None)
        if not isinstance(value, StrategySpec):
            raise StrategyLoadError(f"{where}: has no StrategySpec named '{attr}'")
        return value
    specs = [v for v in vars(module).values() if isinstance(v, StrategySpec)
             and getattr(v.signals, "__module__", module.__name__) == module.__name__]
    if len(specs) == 1:
        return specs[0]
    if len(specs) > 1:
        names = ", ".join(sorted(s.name for s in specs))
        raise StrategyLoadError(f"{where}: defines several strategies ({names}); pick one with {where}:NAME")
    missing = [n for n in ("Params", "signals", "warmup") if not callable(getattr(module, n, None))]
    if missing:
        raise StrategyLoadError(f"{where}: missing {', '.join(missing)} (a strategy file defines Params, "
                                "signals(frame, p) and warmup(p); see examples/ema_cross.py)")
    signals = module.signals
    if not _accepts_features(signals):
        plain = signals

        def signals(frame: pd.DataFrame, p: Any, features: Any = None) -> pd.DataFrame:
            return plain(frame, p)

        signals.__module__ = module.__name__
    kwargs: dict[str, Any] = {}
    if callable(getattr(module, "suggest", None)):
        kwargs["suggest"] = module.suggest
    if callable(getattr(module, "features", None)):
        kwargs["features"] = module.features
        kwargs["feature_params"] = tuple(getattr(module, "feature_params", ()))
    name = str(getattr(module, "NAME", "") or Path(where).stem)
    try:
        spec = StrategySpec(name=name, Params=module.Params, signals=signals, warmup=module.warmup,
                            description=_first_paragraph(module.__doc__), **kwargs)
    except TypeError as err:
        raise StrategyLoadError(f"{where}: {err}") from None
    return spec


def _check(spec: StrategySpec, where: str) -> StrategySpec:
    """The defaults must build and the warm-up must be a duration (one line otherwise)."""
    try:
        p = spec.Params()
    except Exception as err:  # noqa: BLE001 - a user's Params may raise anything
        raise StrategyLoadError(f"{where}: Params() with the defaults fails: {_one_line(err)}") from None
    try:
        w = spec.warmup(p)
    except Exception as err:  # noqa: BLE001
        raise StrategyLoadError(f"{where}: warmup(Params()) raised {_one_line(err)}") from None
    if not isinstance(w, pd.Timedelta) or w < pd.Timedelta(0):
        raise StrategyLoadError(f"{where}: warmup(p) must return a pd.Timedelta >= 0 "
                                f"(e.g. pd.Timedelta(hours=50)), got {w!r}")
    return spec


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _load_file(path: Path, attr: str | None) -> StrategySpec:
    where = str(path)
    if not path.is_file():
        raise StrategyLoadError(f"strategy file {where} not found; check the path")
    resolved = path.resolve()
    if resolved in _MODULES:
        return _check(spec_from_module(_MODULES[resolved], where, attr), where)
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
    mod_name = f"cascade_user_{resolved.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(mod_name, resolved)
    if spec is None or spec.loader is None:
        raise StrategyLoadError(f"{where}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and pydantic look their module up by name
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        sys.modules.pop(mod_name, None)
        raise StrategyLoadError(f"{where}:{err.lineno}: syntax error: {err.msg}") from None
    except Exception as err:  # noqa: BLE001 - whatever a user's module raises is reported on one line
        sys.modules.pop(mod_name, None)
        raise StrategyLoadError(f"{where}: importing it failed: {_one_line(err)}") from None
    _MODULES[resolved] = module
    return _check(spec_from_module(module, where, attr), where)


def load_strategy(ref: str | Path,
                  registry: dict[str, StrategySpec] | Callable[[], dict[str, StrategySpec]] | None = None
                  ) -> StrategySpec:
    """The strategy ``ref`` names: a key of ``registry`` (default: the registered strategies), a file
    ``path/to/my_strategy.py`` (optionally ``path.py:NAME``) or an importable ``module:NAME``.

    ``registry`` may be a function returning it: a file or module reference then never imports the
    registered strategies (and the numba kernels of their features).

    Raises :class:`StrategyLoadError` (a ``ValueError``) with one line naming the problem.
    """
    text = str(ref).strip()
    target, attr = text, None
    head, sep, tail = text.rpartition(":")
    if sep and tail.isidentifier() and len(head) > 1:  # not a Windows drive letter
        target, attr = head, tail
    if target.endswith(".py") or "/" in target or "\\" in target:  # strategy names are identifiers
        return _load_file(Path(target), attr)
    if attr is not None:
        try:
            module = importlib.import_module(target)
        except Exception as err:  # noqa: BLE001
            raise StrategyLoadError(f"{text}: cannot import module '{target}': {_one_line(err)}") from None
        return _check(spec_from_module(module, text, attr), text)
    if registry is None:
        from strategies import STRATEGIES as registry
    elif callable(registry):
        registry = registry()
    if text in registry:
        return registry[text]
    import difflib

    close = difflib.get_close_matches(text, list(registry), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise StrategyLoadError(f"unknown strategy '{text}'{hint}; choose one of: {', '.join(registry)}, "
                            "or give a file path/to/strategy.py or module:NAME")
