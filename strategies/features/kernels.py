"""How strategies call their numba kernels: by reference, so the host decides how they run.

A kernel is named ``"module:function"`` (e.g. ``"strategies.features._level_kernels:find_pivots"``)
and called with ``call(ref, *args)``. By default that imports the module and calls the numba
function (JIT, with numba's on-disk cache). A host may install a runner that runs the same
function precompiled instead (``cascade`` does: `bot.aot`), so a process that only backtests never
imports numba (about a second of a short run). The runner answers `NOT_RUN` when it cannot run a
call, and the JIT function runs it. Either way the result is the same machine code's.

Strategy modules therefore import no numba; the kernels live in ``_*_kernels.py`` modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from typing import Any

NOT_RUN = object()
"""What a runner returns for a call it does not run."""

Runner = Callable[[str, tuple[Any, ...]], Any]
_runner: list[Runner] = []


def set_runner(runner: Runner | None) -> None:
    """Install ``runner`` for every `call` (None removes it)."""
    _runner.clear()
    if runner is not None:
        _runner.append(runner)


@cache
def jitted(ref: str) -> Callable[..., Any]:
    """The numba function ``ref`` (``"module:function"``)."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def call(ref: str, *args: Any) -> Any:
    """Run kernel ``ref`` on ``args``: through the installed runner when it can, else the JIT function."""
    if _runner:
        out = _runner[0](ref, args)
        if out is not NOT_RUN:
            return out
    return jitted(ref)(*args)
